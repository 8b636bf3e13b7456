"""The nursing API, the ward's nursing page and the MAR through the Flask client."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from hms.audit import Actor
from hms.db import utcnow
from hms.patients.services import register_patient
from wards import nursing
from wards.models import Admission, Bed, Ward

SYSTEM = Actor.system("test")


@pytest.fixture
def ward(app, database, make_ward):
    """Ward A with an admitted patient (bed MA-01, admitted 7 hours ago) and an empty ward B."""
    a = make_ward(code="MA", name="Medical A", beds=2)
    b = make_ward(code="SB", name="Surgical B", beds=1)
    with database.transaction() as s:
        patient = register_patient(s, SYSTEM, {"name": "Zainab Fatima", "sex": "female",
                                               "date_of_birth": "1992-08-14"})
        bed = s.execute(select(Bed).where(Bed.ward_id == a).order_by(Bed.label)).scalars().first()
        admission = Admission(admission_no="ADM-T00001", patient_id=patient.id,
                              department_id=s.get(Ward, a).department_id, ward_id=a, bed_id=bed.id,
                              state="admitted", admitted_at=utcnow() - timedelta(hours=7))
        s.add(admission)
        s.flush()
        return {"ward_a": a, "ward_b": b, "admission_id": admission.id, "patient_id": patient.id,
                "mrn": patient.mrn, "bed_label": bed.label}


def _schedule(database, now=None):
    with database.transaction() as s:
        now = now or utcnow()
        return len(nursing.open_due_rounds(s, now)), len(nursing.open_due_slots(s, now))


def _prescribe(doctor, ward, **overrides):
    body = {"item_code": "pcm500", "medicine_name": "Paracetamol 500 mg", "dose": "1 g", "route": "oral",
            "every_hours": 6, **overrides}
    return doctor.post(f"/api/v1/admissions/{ward['admission_id']}/medication-orders", json=body)


def test_doctor_changes_the_round_interval_nurse_cannot(as_role, ward):
    url = f"/api/v1/admissions/{ward['admission_id']}/round-interval"
    resp = as_role("doctor").post(url, json={"hours": 4})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["round_interval_hours"] == 4
    bad = as_role("doctor").post(url, json={"hours": 48})
    assert bad.status_code == 422 and "hours" in bad.get_json()["error"]["fields"]
    assert as_role("nurse", ward_ids=[ward["ward_a"]]).post(url, json={"hours": 2}).status_code == 403
    assert as_role("doctor").post("/api/v1/admissions/999/round-interval", json={"hours": 4}).status_code == 404


def test_vitals_are_listed_newest_first_with_the_interval(as_role, database, ward):
    _schedule(database)
    _schedule(database, utcnow() + timedelta(hours=6))
    body = as_role("charge_nurse", ward_ids=[ward["ward_a"]]).get(
        f"/api/v1/admissions/{ward['admission_id']}/vitals").get_json()
    assert body["round_interval_hours"] == 6
    dues = [r["due_at"] for r in body["items"]]
    assert len(dues) == 2 and dues == sorted(dues, reverse=True)
    assert {r["state"] for r in body["items"]} == {"due"}


def test_prescribing_listing_and_stopping_a_medicine(as_role, database, ward):
    doctor = as_role("doctor")
    resp = _prescribe(doctor, ward)
    assert resp.status_code == 201, resp.get_json()
    order = resp.get_json()
    assert order["state"] == "active" and order["item_code"] == "PCM500" and order["slots"] == []

    refused = _prescribe(doctor, ward, route="rectal", every_hours=0)
    assert refused.status_code == 422 and "route" in refused.get_json()["error"]["fields"]
    assert _prescribe(as_role("nurse", ward_ids=[ward["ward_a"]]), ward).status_code == 403

    _schedule(database)
    listed = as_role("pharmacist").get(f"/api/v1/admissions/{ward['admission_id']}/medication-orders").get_json()
    assert [o["id"] for o in listed["items"]] == [order["id"]]
    assert [s["status"] for s in listed["items"][0]["slots"]] == ["pending"]

    no_reason = doctor.post(f"/api/v1/medication-orders/{order['id']}/stop", json={})
    assert no_reason.status_code == 422
    stopped = doctor.post(f"/api/v1/medication-orders/{order['id']}/stop", json={"reason": "Afebrile 48 h"})
    assert stopped.status_code == 200 and stopped.get_json()["state"] == "stopped"
    again = doctor.post(f"/api/v1/medication-orders/{order['id']}/stop", json={"reason": "again"})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "order_stopped"


def test_medication_slots_are_scoped_to_the_nurses_wards(as_role, database, ward):
    _prescribe(as_role("doctor"), ward)
    _schedule(database)
    nurse_a = as_role("nurse", ward_ids=[ward["ward_a"]])
    items = nurse_a.get("/api/v1/medication-slots").get_json()["items"]
    assert len(items) == 1 and items[0]["medicine_name"] == "Paracetamol 500 mg"
    assert items[0]["ward_id"] == ward["ward_a"] and items[0]["status"] == "pending"
    assert nurse_a.get(f"/api/v1/medication-slots?ward_id={ward['ward_a']}&status=given").get_json()["items"] == []
    assert nurse_a.get("/api/v1/medication-slots?status=sleeping").status_code == 422

    nurse_b = as_role("nurse", ward_ids=[ward["ward_b"]])
    assert nurse_b.get("/api/v1/medication-slots").get_json()["items"] == []
    other = nurse_b.get(f"/api/v1/medication-slots?ward_id={ward['ward_a']}")
    assert other.status_code == 403 and other.get_json()["error"]["code"] == "out_of_scope"
    assert len(as_role("admin").get("/api/v1/medication-slots").get_json()["items"]) == 1


def test_the_wards_nursing_page_shows_due_work_with_patient_bed_and_mar_link(as_role, database, ward):
    _prescribe(as_role("doctor"), ward)
    _schedule(database)
    page = as_role("nurse", ward_ids=[ward["ward_a"]]).get(f"/wards/{ward['ward_a']}/nursing")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Zainab Fatima" in html and ward["bed_label"] in html and "Paracetamol 500 mg" in html
    assert f"/wards/admissions/{ward['admission_id']}/mar" in html
    assert "Back to the bed board" in html and "overdue" in html  # the first round was due an hour ago

    nurse_b = as_role("nurse", ward_ids=[ward["ward_b"]])
    assert nurse_b.get(f"/wards/{ward['ward_a']}/nursing").status_code == 403
    empty = nurse_b.get(f"/wards/{ward['ward_b']}/nursing").get_data(as_text=True)
    assert "No vitals rounds are due on this ward." in empty and "No doses are due" in empty
    assert as_role("doctor").get(f"/wards/{ward['ward_a']}/nursing").status_code == 200


def test_the_mar_shows_a_days_doses_with_their_status_and_day_links(as_role, database, ward):
    now = utcnow()
    _prescribe(as_role("doctor"), ward, every_hours=24, first_due_at=now.isoformat())
    _schedule(database, now)
    with database.transaction() as s:
        slot = s.execute(select(nursing.DoseSlot)).scalar_one()
        nursing.record_dose(s, SYSTEM, slot.id, "held", "BP 85/50")
        day = slot.due_at.astimezone(s.info["config"].tz).date()
    nurse = as_role("nurse", ward_ids=[ward["ward_a"]])
    page = nurse.get(f"/wards/admissions/{ward['admission_id']}/mar?day={day.isoformat()}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Paracetamol 500 mg" in html and "slot-held" in html and "BP 85/50" in html
    for other in (day - timedelta(days=1), day + timedelta(days=1)):
        assert f"day={other.isoformat()}" in html
    assert f'href="/wards/admissions/{ward["admission_id"]}"' in html

    earlier = nurse.get(f"/wards/admissions/{ward['admission_id']}/mar?day={(day - timedelta(days=3)).isoformat()}")
    assert "No medicines were prescribed for this day." in earlier.get_data(as_text=True)
    bad = nurse.get(f"/wards/admissions/{ward['admission_id']}/mar?day=yesterday")
    assert bad.status_code == 422 and "is not a date" in bad.get_data(as_text=True)
    assert nurse.get("/wards/admissions/999/mar").status_code == 404
