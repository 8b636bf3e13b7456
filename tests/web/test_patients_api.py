"""The patients JSON API through the Flask client: status codes, bodies, permissions."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from hms.audit import AuditLog
from tests.web.matrix_patients import ROWS

VIEWERS = {"reception", "nurse", "doctor", "lab_technician", "pathologist", "pharmacist", "cashier",
           "finance_manager", "admin"}


def payload(**overrides) -> dict:
    data = {"name": "Ahmed Khan", "sex": "male", "date_of_birth": "1985-06-15", "cnic": "35202-1234567-1",
            "mobile": "0300-1234567", "relation": "S/O", "guardian_name": "Abdul Rehman",
            "address": "House 12, Gulberg", "city": "Lahore",
            "allergies": [{"substance": "Penicillin", "reaction": "Rash", "severity": "severe"}]}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture
def reception(as_role):
    return as_role("reception")


def post(client, **overrides):
    return client.post("/api/v1/patients", json=payload(**overrides))


def error(resp) -> dict:
    return resp.get_json()["error"]


# --- registration ----------------------------------------------------------------------

def test_register_returns_201_with_id_mrn_and_normalised_values(reception):
    resp = post(reception)
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["id"] == 1 and body["mrn"] == "HMS-000001"
    assert resp.headers["Location"].endswith("/api/v1/patients/1")
    assert body["cnic"] == "3520212345671" and body["mobile"] == "+923001234567"
    assert body["relation"] == "S/O" and body["guardian_name"] == "Abdul Rehman"
    assert body["date_of_birth"] == "1985-06-15" and body["dob_estimated"] is False
    assert body["age"].endswith(" y") and body["version"] == 1 and body["form_b"] is None
    assert [(a["substance"], a["severity"]) for a in body["allergies"]] == [("Penicillin", "severe")]
    assert post(reception, cnic="3520276543211", name="Sana").get_json()["mrn"] == "HMS-000002"


def test_register_with_age_instead_of_birth_date(reception):
    body = post(reception, date_of_birth=None, age_years=34).get_json()
    assert body["dob_estimated"] is True and body["age"] == "~34 y"


@pytest.mark.parametrize("field, value, message", [
    ("cnic", "35202-123456-1", "CNIC must be 13 digits, like 35202-1234567-1."),
    ("cnic", "352021234567", "CNIC must be 13 digits, like 35202-1234567-1."),
    ("mobile", "0300-12345AB", "Enter a Pakistani mobile number like 0300-1234567."),
    ("mobile", "042-35761234", "Enter a Pakistani mobile number like 0300-1234567."),
    ("date_of_birth", (date.today() + timedelta(days=5)).isoformat(), "Date of birth cannot be in the future."),
    ("date_of_birth", "12-31-1990", "Enter the date of birth as DD-MM-YYYY, e.g. 14-03-1990."),
    ("name", "", "Enter the patient's name."),
    ("guardian_name", "", "Enter the father's or husband's name."),
    ("sex", "unknown", "Choose the sex: male, female or other."),
])
def test_each_bad_field_gets_its_own_message(reception, field, value, message):
    resp = post(reception, **{field: value})
    assert resp.status_code == 422
    assert error(resp)["code"] == "invalid"
    assert error(resp)["fields"] == {field: [message]}


@pytest.mark.parametrize("age, message", [(200, "Age must be between 0 and 130 years."),
                                          ("abc", "Age must be a whole number of years.")])
def test_bad_age_gets_its_message(reception, age, message):
    resp = post(reception, date_of_birth=None, age_years=age)
    assert resp.status_code == 422 and error(resp)["fields"] == {"age_years": [message]}


def test_missing_name_and_relation_without_guardian_are_reported_together(reception):
    resp = reception.post("/api/v1/patients", json={"sex": "female", "age_years": 30, "relation": "W/O"})
    assert resp.status_code == 422
    assert error(resp)["fields"] == {"name": ["Enter the patient's name."],
                                     "guardian_name": ["Enter the father's or husband's name."]}


def test_wrong_shapes_are_422_not_500(reception):
    resp = post(reception, blood_group="B+")
    assert resp.status_code == 422 and "blood_group" in error(resp)["fields"]
    resp = post(reception, allergies="penicillin")
    assert resp.status_code == 422 and "allergies" in error(resp)["fields"]
    resp = post(reception, allergies=[{"substance": "Latex", "severity": "deadly"}])
    assert resp.status_code == 422
    assert error(resp)["fields"] == {"allergies.0.severity": ["Severity must be mild, moderate or severe."]}
    resp = reception.post("/api/v1/patients", data="not json", content_type="application/json")
    assert resp.status_code == 400


def test_same_cnic_is_409_naming_the_existing_mrn(reception):
    post(reception)
    resp = post(reception, name="Someone Else", cnic="3520212345671", mobile="0321-0000000")
    assert resp.status_code == 409
    err = error(resp)
    assert err["code"] == "duplicate_cnic"
    assert err["message"] == "A patient with this CNIC is already registered: HMS-000001."
    assert err["fields"]["cnic"] == ["A patient with this CNIC is already registered: HMS-000001."]
    assert err["fields"]["existing"] == [{"id": 1, "mrn": "HMS-000001"}]


def test_possible_duplicate_must_be_confirmed(reception):
    post(reception, cnic=None)
    resp = post(reception, cnic=None, name="ahmed KHAN", mobile="+923001234567")
    assert resp.status_code == 409
    assert error(resp)["code"] == "possible_duplicate"
    assert error(resp)["fields"]["candidates"] == [
        {"id": 1, "mrn": "HMS-000001", "name": "Ahmed Khan", "date_of_birth": "1985-06-15"}]
    resp = post(reception, cnic=None, name="ahmed KHAN", mobile="+923001234567", confirm_duplicate=True)
    assert resp.status_code == 201 and resp.get_json()["mrn"] == "HMS-000002"


# --- search and read -------------------------------------------------------------------

def test_search_by_mrn_cnic_phone_and_name_with_pagination(reception):
    post(reception)
    post(reception, name="Sana Ahmed", sex="female", relation="D/O", cnic=None, mobile="0333-2222222",
         allergies=[])
    for i in range(3):
        post(reception, name=f"Khan {i}", cnic=None, mobile=f"0300-000000{i}", allergies=[])

    def q(text, **params):
        resp = reception.get("/api/v1/patients", query_string={"q": text, **params})
        assert resp.status_code == 200
        return resp.get_json()

    assert [p["mrn"] for p in q("hms-000002")["items"]] == ["HMS-000002"]
    assert [p["name"] for p in q("35202 1234567 1")["items"]] == ["Ahmed Khan"]
    assert [p["name"] for p in q("+92 333 2222222")["items"]] == ["Sana Ahmed"]
    assert [p["name"] for p in q("AHMED")["items"]] == ["Ahmed Khan", "Sana Ahmed"]
    page = q("khan", page=2, size=2)
    assert (page["page"], page["size"], page["total"]) == (2, 2, 4)
    assert [p["name"] for p in page["items"]] == ["Khan 1", "Khan 2"]
    assert "allergies" not in page["items"][0] and page["items"][0]["age"]
    assert q("nobody")["items"] == [] and q("nobody")["total"] == 0
    assert reception.get("/api/v1/patients?size=1000").status_code == 400


def test_get_patient_is_audited(app, reception, database):
    post(reception)
    resp = reception.get("/api/v1/patients/1")
    assert resp.status_code == 200 and resp.get_json()["allergies"][0]["substance"] == "Penicillin"
    with database.transaction(readonly=True) as s:
        reads = s.scalars(select(AuditLog).where(AuditLog.action == "patient.read")).all()
    assert [(r.patient_id, r.actor_name) for r in reads] == [(1, "u_reception_0")]
    assert reception.get("/api/v1/patients/999").status_code == 404


# --- edits -----------------------------------------------------------------------------

def test_patch_edits_with_history_and_version_check(reception, database):
    post(reception)
    resp = reception.patch("/api/v1/patients/1", json={"mobile": "0345-7654321", "city": "Multan", "version": 1})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["mobile"] == "+923457654321" and resp.get_json()["version"] == 2
    stale = reception.patch("/api/v1/patients/1", json={"city": "Karachi", "version": 1})
    assert stale.status_code == 409 and error(stale)["code"] == "stale_version"
    bad = reception.patch("/api/v1/patients/1", json={"cnic": "123"})
    assert bad.status_code == 422 and error(bad)["fields"] == {"cnic": ["CNIC must be 13 digits, like 35202-1234567-1."]}
    history = reception.get("/api/v1/patients/1/history").get_json()["items"]
    assert len(history) == 1
    assert history[0]["fields"] == ["city", "mobile"] and history[0]["changed_by"] == "u_reception_0"
    assert history[0]["changes"]["city"] == ["Lahore", "Multan"]
    with database.transaction(readonly=True) as s:
        (row,) = s.scalars(select(AuditLog).where(AuditLog.action == "patient.update")).all()
    assert row.detail == {"fields": ["city", "mobile"], "version": 2}


def test_patch_to_an_existing_cnic_is_409_naming_the_mrn(reception):
    post(reception)
    post(reception, name="Sana", cnic="3520276543211", mobile="0333-2222222")
    resp = reception.patch("/api/v1/patients/2", json={"cnic": "35202-1234567-1"})
    assert resp.status_code == 409 and "HMS-000001" in error(resp)["message"]


# --- allergies -------------------------------------------------------------------------

def test_allergies_are_added_by_clinical_roles_not_reception(reception, as_role):
    post(reception, allergies=[])
    allergy = {"substance": "Aspirin", "reaction": "Wheeze", "severity": "moderate"}
    assert reception.post("/api/v1/patients/1/allergies", json=allergy).status_code == 403
    nurse = as_role("nurse")
    resp = nurse.post("/api/v1/patients/1/allergies", json=allergy)
    assert resp.status_code == 201 and resp.get_json()["substance"] == "Aspirin"
    again = as_role("pharmacist").post("/api/v1/patients/1/allergies", json=allergy)
    assert again.status_code == 409 and error(again)["code"] == "duplicate_allergy"
    bad = nurse.post("/api/v1/patients/1/allergies", json={"substance": "Dust", "severity": "lots"})
    assert bad.status_code == 422 and error(bad)["fields"] == {"severity": ["Severity must be mild, moderate or severe."]}
    listed = reception.get("/api/v1/patients/1/allergies").get_json()["items"]
    assert [(a["substance"], a["reaction"]) for a in listed] == [("Aspirin", "Wheeze")]


# --- permissions -----------------------------------------------------------------------

@pytest.mark.parametrize("role", ["housekeeping", "department_head"])
def test_roles_without_patient_access_get_403_everywhere(as_role, role, reception):
    post(reception)
    client = as_role(role)
    for method, url, _allowed in ROWS:
        resp = client.open(url, method=method, json={})
        assert resp.status_code == 403, (method, url, resp.status_code)


def test_viewers_can_search_but_only_registering_roles_can_register(as_role):
    for role in sorted(VIEWERS - {"reception", "nurse", "doctor", "admin"}):
        client = as_role(role)
        assert client.get("/api/v1/patients?q=khan").status_code == 200
        assert client.post("/api/v1/patients", json=payload()).status_code == 403
    assert as_role("doctor").post("/api/v1/patients", json=payload()).status_code == 201


def test_anonymous_callers_must_log_in(client):
    assert client.get("/api/v1/patients").status_code == 401
    assert client.post("/api/v1/patients", json=payload()).status_code == 401


def test_the_matrix_lists_every_patient_api_route(app):
    routes = {(method, rule.rule.replace("<int:patient_id>", "1"))
              for rule in app.url_map.iter_rules() if rule.endpoint.startswith("patients.api_")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes == {(method, url) for method, url, _ in ROWS}
