"""The wards API and the bed board page through the Flask client."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from hms.audit import Actor
from hms.patients.services import register_patient
from wards import services
from wards.models import Bed, Ward

SYSTEM = Actor.system("test")


@pytest.fixture
def ward(app, database, make_ward):
    ward_id = make_ward(code="MW1", name="Medical Ward 1", beds=3)
    other = make_ward(code="SW2", name="Surgical Ward 2", beds=1)
    with database.transaction() as s:
        patient = register_patient(s, SYSTEM, {"name": "Zainab Fatima", "sex": "female",
                                               "date_of_birth": "1992-08-14"})
        beds = list(s.execute(select(Bed.id).where(Bed.ward_id == ward_id).order_by(Bed.label)).scalars())
        other_bed = s.execute(select(Bed.id).where(Bed.ward_id == other)).scalar_one()
        # Bed assignments belong to admissions: admission 1 is Zainab's, 2 another patient's.
        second = register_patient(s, SYSTEM, {"name": "Imran Khan", "sex": "male", "date_of_birth": "1980-01-02"})
        department_id = s.get(Ward, ward_id).department_id
        admissions = [services.create_admission(s, SYSTEM, patient_id=p.id, department_id=department_id).id
                      for p in (patient, second)]
    assert admissions == [1, 2]
    return {"ward_id": ward_id, "other_id": other, "beds": beds, "other_bed": other_bed,
            "patient_id": patient.id, "mrn": patient.mrn}


def test_list_wards_json_shape_and_filters(as_role, ward):
    reception = as_role("reception")
    resp = reception.post(f"/api/v1/beds/{ward['beds'][0]}/reserve",
                          json={"admission_id": 1, "patient_id": ward["patient_id"]})
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["state"] == "reserved" and body["patient"]["mrn"] == ward["mrn"]
    assert body["assignment"]["admission_id"] == 1 and body["assignment"]["state"] == "reserved"

    doctor = as_role("doctor")
    items = doctor.get("/api/v1/wards").get_json()["items"]
    assert [w["name"] for w in items] == ["Medical Ward 1", "Surgical Ward 2"]
    beds = items[0]["beds"]
    assert set(beds[0]) >= {"id", "label", "state", "patient"}
    assert beds[0] == {**beds[0], "id": ward["beds"][0], "label": "MW1-01", "state": "reserved",
                       "patient": {"id": ward["patient_id"], "mrn": ward["mrn"], "name": "Zainab Fatima"}}
    assert beds[1]["patient"] is None and beds[1]["state"] == "free"
    assert items[0]["counts"] == {"free": 2, "reserved": 1, "occupied": 0, "to_clean": 0, "blocked": 0}

    only = doctor.get(f"/api/v1/wards?ward_id={ward['ward_id']}&state=free").get_json()["items"]
    assert len(only) == 1 and [b["state"] for b in only[0]["beds"]] == ["free", "free"]
    bad = doctor.get("/api/v1/wards?state=dirty")
    assert bad.status_code == 422 and bad.get_json()["error"]["fields"]["state"]
    assert doctor.get("/api/v1/wards?ward_id=x").status_code == 422


def test_reserving_a_taken_bed_is_409(as_role, ward):
    reception = as_role("reception")
    url = f"/api/v1/beds/{ward['beds'][0]}/reserve"
    assert reception.post(url, json={"admission_id": 1, "patient_id": ward["patient_id"]}).status_code == 201
    resp = reception.post(url, json={"admission_id": 2, "patient_id": ward["patient_id"]})
    assert resp.status_code == 409
    err = resp.get_json()["error"]
    assert err["code"] == "bed_not_free" and "reserved" in err["message"]
    assert reception.post(url, json={"admission_id": "x"}).status_code == 422
    assert reception.post("/api/v1/beds/999/reserve", json={"admission_id": 1,
                                                            "patient_id": ward["patient_id"]}).status_code == 404


def test_full_cycle_through_the_api(as_role, ward):
    nurse = as_role("nurse", ward_ids=[ward["ward_id"]])
    keeper = as_role("housekeeping", ward_ids=[ward["ward_id"]])
    bed = ward["beds"][0]
    assert nurse.post(f"/api/v1/beds/{bed}/reserve", json={"admission_id": 1,
                                                          "patient_id": ward["patient_id"]}).status_code == 201
    assert nurse.post(f"/api/v1/beds/{bed}/release", json={}).status_code == 422
    assert nurse.post(f"/api/v1/beds/{bed}/release", json={"reason": "moved"}).get_json()["state"] == "free"
    nurse.post(f"/api/v1/beds/{bed}/reserve", json={"admission_id": 1, "patient_id": ward["patient_id"]})
    occupied = nurse.post(f"/api/v1/beds/{bed}/occupy").get_json()
    assert occupied["state"] == "occupied" and occupied["days"] == 0
    vacated = nurse.post(f"/api/v1/beds/{bed}/vacate").get_json()
    assert vacated["state"] == "to_clean" and vacated["patient"] is None
    again = nurse.post(f"/api/v1/beds/{bed}/vacate")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "bed_state"
    assert keeper.post(f"/api/v1/beds/{bed}/clean").get_json()["state"] == "free"
    assert nurse.post(f"/api/v1/beds/{bed}/block", json={"reason": "repair"}).get_json()["state"] == "blocked"
    refused = nurse.post(f"/api/v1/beds/{bed}/reserve", json={"admission_id": 2, "patient_id": ward["patient_id"]})
    assert refused.status_code == 409 and "blocked" in refused.get_json()["error"]["message"]
    assert nurse.post(f"/api/v1/beds/{bed}/unblock").get_json()["state"] == "free"


def test_nurse_of_another_ward_gets_403(as_role, ward):
    nurse = as_role("nurse", ward_ids=[ward["other_id"]])
    resp = nurse.post(f"/api/v1/beds/{ward['beds'][0]}/block", json={"reason": "repair"})
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "out_of_scope"
    resp = nurse.post(f"/api/v1/beds/{ward['beds'][0]}/reserve",
                      json={"admission_id": 1, "patient_id": ward["patient_id"]})
    assert resp.status_code == 403
    assert nurse.post(f"/api/v1/beds/{ward['other_bed']}/block", json={"reason": "repair"}).status_code == 200
    admin = as_role("admin")
    assert admin.post(f"/api/v1/beds/{ward['beds'][0]}/block", json={"reason": "repair"}).status_code == 200


def test_board_page_counts_tiles_and_empty_state(as_role, ward):
    reception = as_role("reception")
    reception.post(f"/api/v1/beds/{ward['beds'][0]}/reserve",
                   json={"admission_id": 1, "patient_id": ward["patient_id"]})
    reception.post(f"/api/v1/beds/{ward['beds'][0]}/occupy")
    page = reception.get("/wards/board")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Medical Ward 1" in html and "Surgical Ward 2" in html
    assert 'class="bed bed-occupied"' in html and "Occupied" in html
    assert ward["mrn"] in html and "Zainab Fatima" in html and "0 days admitted" in html
    assert "Free: <strong>3</strong>" in html and "Occupied: <strong>1</strong>" in html
    assert "fragment=1" in html and "setInterval(refresh, 20000)" in html
    assert "Back to home" in html

    fragment = reception.get(f"/wards/board?fragment=1&state=free&ward_id={ward['ward_id']}")
    text = fragment.get_data(as_text=True)
    assert fragment.status_code == 200 and "<html" not in text
    assert "Surgical Ward 2" not in text
    assert 'class="bed bed-occupied"' not in text and "MW1-02" in text

    filtered = reception.get(f"/wards/board?state=blocked&ward_id={ward['ward_id']}").get_data(as_text=True)
    assert "No blocked beds in this ward." in filtered
    assert f"fragment=1" in filtered and "state=blocked" in filtered
    assert reception.get("/wards/board?state=dirty").status_code == 422


def test_board_empty_without_wards(app, as_role):
    html = as_role("nurse").get("/wards/board").get_data(as_text=True)
    assert "No wards yet." in html


def test_housekeeping_marks_clean_from_the_board(as_role, ward):
    nurse = as_role("nurse", ward_ids=[ward["ward_id"]])
    bed = ward["beds"][0]
    nurse.post(f"/api/v1/beds/{bed}/reserve", json={"admission_id": 1, "patient_id": ward["patient_id"]})
    nurse.post(f"/api/v1/beds/{bed}/occupy")
    nurse.post(f"/api/v1/beds/{bed}/vacate")
    outsider = as_role("housekeeping", ward_ids=[ward["other_id"]])
    assert "Mark clean" not in outsider.get("/wards/board").get_data(as_text=True)
    keeper = as_role("housekeeping", ward_ids=[ward["ward_id"]])
    html = keeper.get("/wards/board").get_data(as_text=True)
    assert "Mark clean" in html
    token = re.search(r'name="csrf_token" value="([^"]+)"', html.split("Mark clean")[0].rsplit("<form", 1)[1]).group(1)
    resp = keeper.post(f"/wards/beds/{bed}/clean", data={"csrf_token": token, "ward_id": "", "state": ""})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/wards/board")
    after = keeper.get("/wards/board").get_data(as_text=True)
    assert "is clean and free" in after and "Free: <strong>4</strong>" in after
