"""Admissions through the Flask client: the list and detail API, cancelling a transfer,
stopping an order, the admission pages and the bed board's links to them."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hms.audit import Actor, AuditLog
from hms.patients.services import register_patient
from wards import services
from wards.models import Bed, Ward

SYSTEM = Actor.system("test")


@pytest.fixture
def stay(app, database, make_ward):
    """Zainab admitted in MW1-01 with a diet order and a pending transfer to the ICU; Imran's
    admission only ordered."""
    ward_id = make_ward(code="MW1", name="Medical Ward 1", beds=2)
    with database.transaction() as s:
        department_id = s.get(Ward, ward_id).department_id
    icu = make_ward(code="ICU", name="Medical ICU", department_id=department_id, beds=1)
    with database.transaction() as s:
        zainab = register_patient(s, SYSTEM, {"name": "Zainab Fatima", "sex": "female", "date_of_birth": "1992-08-14"})
        imran = register_patient(s, SYSTEM, {"name": "Imran Khan", "sex": "male", "date_of_birth": "1980-01-02"})
        bed = s.execute(select(Bed.id).where(Bed.ward_id == ward_id).order_by(Bed.label)).scalars().first()
        a = services.create_admission(s, SYSTEM, patient_id=zainab.id, department_id=department_id,
                                      ward_id=ward_id, reason="Pneumonia")
        services.reserve_bed(s, SYSTEM, bed, admission_id=a.id, patient_id=zainab.id)
        services.accept_admission(s, SYSTEM, a.id)
        order = services.place_order(s, SYSTEM, a.id, kind="diet", description="Soft diet")
        transfer = services.request_transfer(s, SYSTEM, a.id, to_ward_id=icu, reason="Needs monitoring")
        ordered = services.create_admission(s, SYSTEM, patient_id=imran.id, department_id=department_id)
        return {"admission_id": a.id, "admission_no": a.admission_no, "ordered_id": ordered.id,
                "ward_id": ward_id, "icu": icu, "bed": bed, "patient_id": zainab.id, "mrn": zainab.mrn,
                "order_id": order.id, "transfer_id": transfer.id}


def test_list_admissions_with_filters(as_role, stay):
    cashier = as_role("cashier")
    body = cashier.get("/api/v1/admissions").get_json()
    assert [i["id"] for i in body["items"]] == [stay["ordered_id"], stay["admission_id"]]
    first = body["items"][1]
    assert first["admission_no"] == "ADM-000001" and first["state"] == "admitted"
    assert first["patient"] == {"id": stay["patient_id"], "mrn": stay["mrn"], "name": "Zainab Fatima"}
    assert first["bed"]["label"] == "MW1-01" and first["ward"]["name"] == "Medical Ward 1"
    only = cashier.get("/api/v1/admissions?state=ordered").get_json()["items"]
    assert [i["id"] for i in only] == [stay["ordered_id"]]
    assert [i["id"] for i in cashier.get(f"/api/v1/admissions?ward_id={stay['ward_id']}").get_json()["items"]] == [
        stay["admission_id"]]
    assert cashier.get(f"/api/v1/admissions?patient_id={stay['patient_id']}&state=active").get_json()["items"][0][
        "id"] == stay["admission_id"]
    bad = cashier.get("/api/v1/admissions?state=asleep")
    assert bad.status_code == 422 and "state" in bad.get_json()["error"]["fields"]
    assert cashier.get("/api/v1/admissions?ward_id=x").status_code == 422


def test_admission_detail_is_complete_and_audited(as_role, database, stay):
    doctor = as_role("doctor")
    resp = doctor.get(f"/api/v1/admissions/{stay['admission_id']}")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["state"] == "admitted" and body["days_admitted"] == 0 and body["reason"] == "Pneumonia"
    assert body["patient"]["mrn"] == stay["mrn"] and body["bed"]["id"] == stay["bed"]
    assert [o["description"] for o in body["orders"]] == ["Soft diet"]
    assert [(t["state"], t["to_ward_id"]) for t in body["transfers"]] == [("requested", stay["icu"])]
    assert body["assessment"] == {"recorded": False, "recorded_at": None}
    assert body["discharge_summary"] is None
    missing = doctor.get("/api/v1/admissions/999")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "admission_not_found"
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(AuditLog.patient_id).where(AuditLog.action == "admission.read")) == stay["patient_id"]


def test_cancel_a_transfer(as_role, stay):
    other_nurse = as_role("nurse", ward_ids=[stay["icu"]])
    url = f"/api/v1/transfers/{stay['transfer_id']}/cancel"
    refused = other_nurse.post(url, json={})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "out_of_scope"
    nurse = as_role("nurse", ward_ids=[stay["ward_id"]])
    resp = nurse.post(url, json={"reason": "Improving"})
    assert resp.status_code == 200 and resp.get_json()["state"] == "cancelled"
    again = nurse.post(url, json={})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "transfer_state"
    assert nurse.post("/api/v1/transfers/999/cancel", json={}).status_code == 404


def test_stop_an_order(as_role, stay):
    doctor = as_role("doctor")
    url = f"/api/v1/orders/{stay['order_id']}/stop"
    assert doctor.post(url, json={}).status_code == 422  # a reason is required
    resp = doctor.post(url, json={"reason": "Nil by mouth"})
    assert resp.status_code == 200
    assert resp.get_json()["state"] == "stopped" and resp.get_json()["stop_reason"] == "Nil by mouth"
    again = doctor.post(url, json={"reason": "again"})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "order_state"
    assert as_role("nurse").post(url, json={"reason": "x"}).status_code == 403


def test_admission_pages_and_board_links(as_role, stay):
    reception = as_role("reception")
    listing = reception.get("/wards/admissions")
    html = listing.get_data(as_text=True)
    assert listing.status_code == 200
    assert "ADM-000001" in html and "ADM-000002" in html and "Zainab Fatima" in html
    assert f"/wards/admissions/{stay['admission_id']}" in html and "Back to the bed board" in html
    filtered = reception.get(f"/wards/admissions?state=discharged").get_data(as_text=True)
    assert "No admissions match these filters" in filtered
    assert reception.get("/wards/admissions?state=asleep").status_code == 422

    page = reception.get(f"/wards/admissions/{stay['admission_id']}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Admission ADM-000001" in html and stay["mrn"] in html and "MW1-01" in html
    assert "Soft diet" in html and "Needs monitoring" in html and "Medical ICU" in html
    assert "has not recorded the admission assessment yet" in html and "Not signed yet" in html
    assert "Back to admissions" in html and "Bed board" in html
    assert reception.get("/wards/admissions/999").status_code == 404

    board = reception.get("/wards/board").get_data(as_text=True)
    assert f'href="/wards/admissions/{stay["admission_id"]}"' in board and "0 days admitted" in board


def test_admission_list_empty_state(app, as_role):
    html = as_role("nurse").get("/wards/admissions").get_data(as_text=True)
    assert "No admissions yet." in html


def test_discharged_admission_shows_its_summary(as_role, database, stay):
    with database.transaction() as s:
        services.cancel_transfer(s, SYSTEM, stay["transfer_id"])
        services.record_assessment(s, SYSTEM, stay["admission_id"], {"pain_score": 2})
        services.sign_discharge_summary(s, SYSTEM, stay["admission_id"], {
            "diagnoses": [{"text": "Pneumonia", "code": "J18.9"}], "condition": "improved",
            "discharge_medicines": [{"name": "Amoxicillin", "dose": "500 mg", "frequency": "TDS", "days": 5}],
            "follow_up": "OPD in one week"})
        services.pass_nursing_gate(s, SYSTEM, stay["admission_id"], [])
        services.discharge_patient(s, SYSTEM, stay["admission_id"])
    body = as_role("doctor").get(f"/api/v1/admissions/{stay['admission_id']}").get_json()
    assert body["state"] == "discharged" and body["discharge_summary"]["condition"] == "improved"
    assert body["assessment"]["recorded"] is True
    html = as_role("doctor").get(f"/wards/admissions/{stay['admission_id']}").get_data(as_text=True)
    assert "Pneumonia (J18.9)" in html and "Amoxicillin 500 mg, TDS for 5 days" in html
    assert "OPD in one week" in html and "Discharged" in html and "Pain score" in html
