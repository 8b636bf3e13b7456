"""A clinic ready for a day of OPD: demo catalogues (formulary, lab tests, tariffs), the
shipped pathways, one account per role and clients logged in as each."""

from __future__ import annotations

import pytest

from hms.audit import Actor
from tests.conftest import login


@pytest.fixture
def clinic(app, database, make_user, shipped_pathways):
    import finance.demo
    import inventory.demo
    from departments.lab import demo as lab_demo
    from hms.org.models import Department

    actor = Actor.system("test")
    with database.transaction() as s:
        gm = Department(code="GM", name="General Medicine", kind="clinical")
        path = Department(code="PATH", name="Pathology", kind="diagnostic")
        s.add_all([gm, path])
        s.flush()
        gm_id = gm.id
        finance.demo.load(s, actor)
        inventory.demo.load(s, actor)
        lab_demo.load(s, actor)
    roles = {"rec": ("reception", [gm_id]), "nurse": ("nurse", [gm_id]), "doc": ("doctor", [gm_id]),
             "lab": ("lab_technician", []), "path": ("pathologist", []), "pharm": ("pharmacist", []),
             "cash": ("cashier", []), "keeper": ("housekeeping", [])}
    clients = {}
    for name, (role, deps) in roles.items():
        make_user(name, role, department_ids=deps)
        c = app.test_client()
        login(c, name)
        clients[name] = c
    clients["department_id"] = gm_id
    clients["pathways"] = shipped_pathways
    return clients


@pytest.fixture
def patient(clinic):
    resp = clinic["rec"].post("/api/v1/patients", json={
        "name": "Bilal Ahmed", "sex": "male", "date_of_birth": "1988-04-12", "cnic": "35202-1234567-1",
        "mobile": "0300-1234567", "relation": "S/O", "guardian_name": "Ahmed Khan", "city": "Lahore",
        "allergies": [{"substance": "Penicillin", "reaction": "rash", "severity": "severe"}]})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()
