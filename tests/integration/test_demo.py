"""The demo hospital: what `load_demo` creates, that it is idempotent and deterministic,
and that the generated patients look like real Pakistani registrations."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from sqlalchemy import select, text

from hms import demo_data
from hms.audit import Actor, verify
from hms.auth.models import User
from hms.auth.passwords import verify_password
from hms.demo import load_demo
from hms.org.models import Department
from tests.conftest import login
from wards.models import Bed, Ward

CITIES = {"Lahore", "Karachi", "Islamabad", "Rawalpindi", "Faisalabad", "Multan", "Peshawar", "Quetta"}
CNIC_RE = re.compile(r"^[1-7]\d{4}-\d{7}-\d$")
MOBILE_RE = re.compile(r"^03([0-4]\d)-\d{7}$")


@pytest.fixture
def demo(database):
    with database.transaction() as s:
        summary = load_demo(s)
    return summary


def digits(value: str) -> str:
    return re.sub(r"\D", "", value)


# --- the generated patients (no database) -----------------------------------------------

PATIENTS = demo_data.demo_patients()


def test_patients_are_the_same_on_every_call():
    assert demo_data.demo_patients() == PATIENTS
    assert len(PATIENTS) == 50


def test_identity_numbers_are_valid_unique_and_match_the_sex():
    numbers = [demo_data.identity_of(p) for p in PATIENTS]
    assert len(set(numbers)) == 50
    for p, number in zip(PATIENTS, numbers):
        assert CNIC_RE.match(number), number
        assert int(number[-1]) % 2 == (1 if p["sex"] == "male" else 0), (p["sex"], number)
        assert number[:5] in demo_data.CITIES[p["city"]][0]


def test_mobiles_use_real_network_prefixes_and_do_not_repeat():
    mobiles = [p["mobile"] for p in PATIENTS]
    assert len(set(mobiles)) == 50
    assert all(MOBILE_RE.match(m) and 0 <= int(m[2:4]) <= 49 for m in mobiles), mobiles


def test_patients_mix_sexes_relations_cities_children_and_allergies():
    sexes = Counter(p["sex"] for p in PATIENTS)
    assert sexes["male"] >= 15 and sexes["female"] >= 15
    assert {p["relation"] for p in PATIENTS} == {"S/O", "D/O", "W/O"}
    assert all(p["relation"] == "S/O" for p in PATIENTS if p["sex"] == "male")
    assert all(p["relation"] in ("D/O", "W/O") for p in PATIENTS if p["sex"] == "female")
    assert all(p["guardian_name"] for p in PATIENTS)
    assert {p["city"] for p in PATIENTS} == CITIES
    children = [p for p in PATIENTS if "age_years" in p]
    assert len(children) >= 5
    assert all("form_b" in c and "cnic" not in c and "date_of_birth" not in c and c["age_years"] < 18
               for c in children)
    assert {c["sex"] for c in children} == {"male", "female"}
    adults = [p for p in PATIENTS if "age_years" not in p]
    assert all("cnic" in a and "date_of_birth" in a for a in adults)
    allergic = [p for p in PATIENTS if p["allergies"]]
    assert 5 <= len(allergic) <= 25
    substances = {a["substance"] for p in allergic for a in p["allergies"]}
    assert "Penicillin" in substances or any("NSAID" in s or "Sulfa" in s for s in substances)
    assert all(a["severity"] in ("mild", "moderate", "severe") for p in allergic for a in p["allergies"])


# --- what load_demo creates --------------------------------------------------------------

def test_departments(demo, database):
    with database.transaction(readonly=True) as s:
        rows = {d.code: (d.name, d.kind) for d in s.execute(select(Department)).scalars()}
    assert rows == {"GM": ("General Medicine", "clinical"), "PAED": ("Paediatrics", "clinical"),
                    "GYN": ("Gynaecology", "clinical"), "SURG": ("Surgery", "clinical"),
                    "PATH": ("Pathology", "diagnostic"), "PHARM": ("Pharmacy", "pharmacy")}


def test_wards_beds_and_rooms(demo, database):
    with database.transaction(readonly=True) as s:
        deps = {d.id: d.code for d in s.execute(select(Department)).scalars()}
        wards = {w.name: w for w in s.execute(select(Ward)).scalars()}
        got = {name: (deps[w.department_id], w.ward_type, w.gender, len(w.beds)) for name, w in wards.items()}
        male_rooms = {r.name: sum(1 for b in wards["Medical Ward Male"].beds if b.room_id == r.id)
                      for r in wards["Medical Ward Male"].rooms}
        private_rooms = len(wards["Private Rooms"].rooms)
        states = set(s.execute(select(Bed.state)).scalars())
        labels = [b.label for b in wards["ICU"].beds]
    assert got == {
        "Medical Ward Male": ("GM", "general", "male", 10),
        "Medical Ward Female": ("GM", "general", "female", 10),
        "Paediatric Ward": ("PAED", "general", "mixed", 8),
        "Gynae & Maternity": ("GYN", "maternity", "female", 8),
        "Surgical Ward": ("SURG", "general", "mixed", 8),
        "Private Rooms": ("GM", "private", "mixed", 6),
        "ICU": ("GM", "icu", "mixed", 4),
    }
    assert male_rooms == {"Room 1": 5, "Room 2": 5}
    assert private_rooms == 6
    assert states == {"free"}
    assert labels == ["ICU-01", "ICU-02", "ICU-03", "ICU-04"]


def _scopes(s, user):
    deps = {d.id: d.code for d in s.execute(select(Department)).scalars()}
    wards = {w.id: w.name for w in s.execute(select(Ward)).scalars()}
    return ({deps[i] for i in user.department_ids}, {wards[i] for i in user.ward_ids})


def test_one_demo_user_per_role_with_scopes(demo, database):
    with database.transaction(readonly=True) as s:
        users = {u.username: u for u in s.execute(select(User)).scalars()}
        scopes = {name: _scopes(s, u) for name, u in users.items()}
        all_wards = set(s.execute(select(Ward.name)).scalars())
    assert set(users) == {"admin", "reception", "nurse", "ward_nurse", "charge_nurse", "doctor", "lab",
                          "pathologist", "pharmacist", "cashier", "finance", "head_medicine", "housekeeping"}
    roles = {name: set(u.role_names) for name, u in users.items()}
    assert set().union(*roles.values()) == {"admin", "reception", "nurse", "doctor", "lab_technician",
                                            "pathologist", "pharmacist", "cashier", "finance_manager",
                                            "department_head", "housekeeping", "charge_nurse"}
    assert roles["charge_nurse"] == {"nurse", "charge_nurse"}
    assert scopes["charge_nurse"] == ({"GM"}, {"Medical Ward Male", "Medical Ward Female"})
    assert roles["lab"] == {"lab_technician"} and roles["head_medicine"] == {"department_head"}
    assert scopes["nurse"] == ({"GM"}, {"Medical Ward Male", "Medical Ward Female"})
    assert scopes["ward_nurse"] == (set(), {"Surgical Ward", "Paediatric Ward"})
    assert scopes["housekeeping"] == (set(), all_wards)
    assert scopes["head_medicine"] == ({"GM"}, set())
    assert scopes["reception"][0] == scopes["doctor"][0] == {"GM"}
    assert scopes["lab"][0] == scopes["pathologist"][0] == {"PATH"}
    assert scopes["pharmacist"][0] == {"PHARM"}
    assert users["doctor"].full_name == "Dr. Ayesha Siddiqui"
    assert all(u.is_demo and u.active for u in users.values())
    assert all(verify_password(u.password_hash, "hms-demo") for u in users.values())


def test_demo_users_log_in_with_the_demo_password(demo, app):
    client = app.test_client()
    me = login(client, "head_medicine", "hms-demo").get_json()["user"]
    assert me["full_name"] == "Dr. Tariq Mahmood" and me["roles"] == ["department_head"]


def test_fifty_patients_registered_in_order(demo, database):
    from hms.patients.models import Patient

    with database.transaction(readonly=True) as s:
        patients = list(s.execute(select(Patient).order_by(Patient.id)).scalars())
        with_allergies = sum(1 for p in patients if p.allergies)
    assert len(patients) == 50
    # Registered in the order of the data, so ids and MRNs are the same on every install.
    assert [p.cnic or p.form_b for p in patients] == [digits(demo_data.identity_of(d)) for d in PATIENTS]
    assert [p.mrn for p in patients] == [database.config.mrn_format.format(n=n) for n in range(1, 51)]
    assert [p.name for p in patients] == [d["name"] for d in PATIENTS]
    assert with_allergies == sum(1 for d in PATIENTS if d["allergies"])
    assert all(p.dob_estimated == ("age_years" in d) for p, d in zip(patients, PATIENTS))


def test_summary_lines(demo):
    assert demo[:4] == ["departments: 6 created, 0 already present",
                        "wards: 7 created (54 beds), 0 already present",
                        "users: 13 created, 0 already present",
                        "patients: 50 registered, 0 already present"]
    # The departments' own demo data follows (tariffs, formulary, lab catalogue ...).
    assert len(demo) > 4 and all(": " in line for line in demo[4:])


# --- idempotent, audited, no personal data in the audit log ------------------------------

def _snapshot(database) -> dict[str, list]:
    tables = ("department", "ward", "room", "bed", "app_user", "user_role", "user_department",
              "user_ward", "patient", "allergy", "audit_log", "counter")
    with database.engine.connect() as conn:
        return {t: [tuple(r) for r in conn.execute(text(f'SELECT * FROM "{t}" ORDER BY 1'))] for t in tables}


def test_running_twice_changes_nothing(demo, database):
    before = _snapshot(database)
    with database.transaction() as s:
        again = load_demo(s)
    assert again[:4] == ["departments: 0 created, 6 already present",
                         "wards: 0 created, 7 already present",
                         "users: 0 created, 13 already present",
                         "patients: 0 registered, 50 already present"]
    assert not [line for line in again[4:] if re.search(r"\b[1-9]\d* (created|added|registered)", line)]
    assert _snapshot(database) == before


def test_fills_in_what_is_missing(database):
    """A database with some of the demo already (one patient, one user) gets the rest."""
    from hms.auth.services import create_user
    from hms.patients.services import register_patient

    with database.transaction() as s:
        register_patient(s, Actor.system("test"), dict(PATIENTS[7]))
        create_user(s, Actor.system("test"), username="doctor", full_name="Dr. Someone Else",
                    password="different-pass-1", roles=["doctor"])
    with database.transaction() as s:
        summary = load_demo(s)
        doctor = s.execute(select(User).where(User.username == "doctor")).scalar_one()
        assert doctor.full_name == "Dr. Someone Else"  # an existing account is left alone
    assert "users: 12 created, 1 already present" in summary
    assert "patients: 49 registered, 1 already present" in summary


def test_demo_is_audited_by_the_demo_actor_without_names_or_cnics(demo, database):
    with database.transaction(readonly=True) as s:
        assert verify(s).ok
    with database.engine.connect() as conn:
        rows = conn.execute(text("SELECT actor_name, action, detail FROM audit_log")).all()
    actions = Counter(r.action for r in rows)
    assert actions["user.create"] == 13 and actions["patient.register"] == 50
    assert {r.actor_name for r in rows} == {"demo"}
    stored = " ".join(json.dumps(r.detail) for r in rows if r.detail)
    for p in PATIENTS:
        number = demo_data.identity_of(p)
        assert p["name"] not in stored
        assert number not in stored and digits(number) not in stored
