"""The OPD JSON API through the Flask client: who sees the clinical record, what reception
sees of an encounter, appointments end to end, the queue, ICD-10 lookup and departments."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from departments.opd import services
from hms.audit import AuditLog
from tests.integration.test_opd_support import actor_for, add_schedule, at, check_in, make_patient


@pytest.fixture
def opd(database, make_department, make_user):
    department = make_department("GM", "General Medicine")
    doctor = make_user("dr_ayesha", "doctor", department_ids=[department], full_name="Dr. Ayesha Siddiqui")
    clerk = make_user("rubina", "reception")
    with database.transaction(readonly=True) as s:
        today = services.local_today(s)
    return type("Opd", (), {"department": department, "doctor": doctor, "today": today,
                            "doctor_actor": actor_for(doctor, "doctor"), "clerk": actor_for(clerk, "reception")})


@pytest.fixture
def seen_patient(database, opd):
    """A patient with one signed consultation."""
    patient = make_patient(database)
    e = check_in(database, opd.clerk, patient, opd.department)
    with database.transaction() as s:
        services.record_triage(s, actor_for(opd.doctor, "nurse"), e.id, {"pulse": 92, "temperature_c": 38.4,
                                                                         "systolic_bp": 124, "diastolic_bp": 82})
        services.save_consultation(s, opd.doctor_actor, e.id, {
            "chief_complaint": "Fever", "diagnoses": [{"code": "A01.0"}],
            "prescriptions": [{"item_code": "PCM500T", "dose": 1, "frequency": "TDS", "duration_days": 3}]})
    return patient, e.id


def record_reads(database) -> list[AuditLog]:
    with database.transaction(readonly=True) as s:
        return list(s.scalars(select(AuditLog).where(AuditLog.action == "opd.clinical_record.read")))


@pytest.mark.parametrize("role", ["reception", "cashier", "housekeeping", "pharmacist", "lab_technician"])
def test_non_clinicians_are_refused_the_clinical_record(as_role, database, seen_patient, role):
    patient, _ = seen_patient
    resp = as_role(role).get(f"/api/v1/patients/{patient}/record")
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"
    assert record_reads(database) == []


@pytest.mark.parametrize("role", ["doctor", "nurse", "admin"])
def test_clinicians_read_the_record_and_the_read_is_audited(as_role, database, seen_patient, role):
    patient, encounter_id = seen_patient
    resp = as_role(role).get(f"/api/v1/patients/{patient}/record")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["visits"][0]["encounter_id"] == encounter_id
    assert body["visits"][0]["diagnoses"][0]["code"] == "A01.0"
    assert body["vitals_trend"][0]["pulse"] == 92 and "fever" in body["vitals_trend"][0]["flags"]
    assert body["prescriptions"][0]["quantity"] == 9
    assert isinstance(body["lab_results"], list)
    [read] = record_reads(database)
    assert read.patient_id == patient and read.actor_name.startswith("u_")


def test_reception_sees_only_the_queue_fields_of_an_encounter(as_role, database, seen_patient):
    _, encounter_id = seen_patient
    body = as_role("reception").get(f"/api/v1/encounters/{encounter_id}").get_json()
    assert set(body) == {"id", "patient_id", "token", "status", "visit_date", "department", "doctor",
                         "appointment_id", "payer_class", "checked_in_at", "called_at", "process_instance_id"}
    assert body["status"] == "consulted" and body["doctor"]["name"] == "Dr. Ayesha Siddiqui"
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(AuditLog.id).where(AuditLog.action == "opd.encounter.read")) is None
    full = as_role("doctor").get(f"/api/v1/encounters/{encounter_id}").get_json()
    assert full["note"]["chief_complaint"] == "Fever" and full["diagnoses"][0]["code"] == "A01.0"
    assert full["vitals"][0]["pulse"] == 92
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(AuditLog.id).where(AuditLog.action == "opd.encounter.read")) is not None


def test_addenda_through_the_api(as_role, seen_patient):
    _, encounter_id = seen_patient
    doctor = as_role("doctor")
    resp = doctor.post(f"/api/v1/encounters/{encounter_id}/addenda", json={"text": "Typhidot positive."})
    assert resp.status_code == 201 and resp.get_json()["text"] == "Typhidot positive."
    assert doctor.post(f"/api/v1/encounters/{encounter_id}/addenda", json={}).status_code == 422
    record = doctor.get(f"/api/v1/patients/{seen_patient[0]}/record").get_json()
    assert [a["text"] for a in record["visits"][0]["note"]["addenda"]] == ["Typhidot positive."]


def test_appointments_end_to_end(as_role, database, opd):
    add_schedule(database, opd.doctor, opd.department)
    patient = make_patient(database)
    reception = as_role("reception")
    day = opd.today + timedelta(days=1)
    slots = reception.get(f"/api/v1/opd/doctors/{opd.doctor}/slots?date={day}").get_json()["items"]
    assert slots[0]["starts_at"] == at(day, "09:00") and len(slots) == 16
    resp = reception.post("/api/v1/opd/appointments", json={"patient_id": patient, "doctor_id": opd.doctor,
                                                             "department_id": opd.department,
                                                             "starts_at": at(day, "09:00")})
    assert resp.status_code == 201, resp.get_json()
    appointment = resp.get_json()
    assert appointment["starts_at"] == at(day, "09:00") and appointment["patient"]["id"] == patient
    again = reception.post("/api/v1/opd/appointments", json={"patient_id": make_patient(database, "Other One"),
                                                              "doctor_id": opd.doctor, "department_id": opd.department,
                                                              "starts_at": at(day, "09:00")})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "slot_taken"
    outside = reception.post("/api/v1/opd/appointments", json={"patient_id": patient, "doctor_id": opd.doctor,
                                                                "department_id": opd.department,
                                                                "starts_at": at(day, "07:00")})
    assert outside.status_code == 422 and outside.get_json()["error"]["fields"]["starts_at"]
    listed = reception.get(f"/api/v1/opd/appointments?date={day}&doctor_id={opd.doctor}").get_json()["items"]
    assert [a["id"] for a in listed] == [appointment["id"]]
    assert reception.get(f"/api/v1/opd/appointments?patient_id={patient}").get_json()["items"][0]["id"] == appointment["id"]
    moved = reception.post(f"/api/v1/opd/appointments/{appointment['id']}/reschedule",
                           json={"starts_at": at(day, "10:30")})
    assert moved.status_code == 200 and moved.get_json()["reschedule_count"] == 1
    assert reception.post(f"/api/v1/opd/appointments/{appointment['id']}/no-show", json={}).status_code == 409
    no_reason = reception.post(f"/api/v1/opd/appointments/{appointment['id']}/cancel", json={})
    assert no_reason.status_code == 422 and no_reason.get_json()["error"]["fields"] == {"reason": ["Required."]}
    cancelled = reception.post(f"/api/v1/opd/appointments/{appointment['id']}/cancel", json={"reason": "Unwell"})
    assert cancelled.get_json()["status"] == "cancelled"


def test_schedules_api_and_department_head_scope(as_role, database, opd, make_department):
    other = make_department("ENT", "ENT")
    head = as_role("department_head", department_ids=[opd.department])
    body = {"doctor_id": opd.doctor, "department_id": other, "weekdays": ["Mon", "Wed"], "start_time": "15:00",
            "end_time": "17:00", "slot_minutes": 20, "daily_limit": 6}
    resp = head.post("/api/v1/opd/schedules", json=body)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "out_of_scope"
    resp = head.post("/api/v1/opd/schedules", json={**body, "department_id": opd.department, "room": "Room 2"})
    assert resp.status_code == 201 and resp.get_json()["weekdays"] == [0, 2]
    listed = as_role("reception").get(f"/api/v1/opd/schedules?doctor_id={opd.doctor}").get_json()["items"]
    assert listed[0]["doctor"] == "Dr. Ayesha Siddiqui" and listed[0]["start_time"] == "15:00"
    assert head.post(f"/api/v1/opd/schedules/{listed[0]['id']}/deactivate").get_json()["active"] is False
    doctors = as_role("reception").get(f"/api/v1/opd/doctors?department_id={opd.department}").get_json()["items"]
    assert [d["name"] for d in doctors] == ["Dr. Ayesha Siddiqui"]


def test_queue_call_next_and_the_board(as_role, database, opd):
    add_schedule(database, opd.doctor, opd.department, room="Room 3")
    display = as_role("housekeeping")  # the TV logs in with any staff account
    board = display.get(f"/api/v1/opd/queue/{opd.department}").get_json()
    assert board["now_serving"] == [] and board["waiting"] == 0
    doctor = as_role("doctor")
    assert doctor.post(f"/api/v1/opd/queue/{opd.department}/call-next", json={}).get_json() == {
        "encounter": None, "message": "Nobody is waiting."}
    check_in(database, opd.clerk, make_patient(database), opd.department)
    check_in(database, opd.clerk, make_patient(database, "Second Patient"), opd.department)
    called = doctor.post(f"/api/v1/opd/queue/{opd.department}/call-next").get_json()["encounter"]
    assert called["token"] == 1 and called["status"] == "called" and "note" not in called
    board = display.get(f"/api/v1/opd/queue/{opd.department}").get_json()
    assert board["now_serving"][0]["token"] == 1 and [n["token"] for n in board["next"]] == [2]
    assert doctor.post(f"/api/v1/encounters/{called['id']}/start").get_json()["status"] == "in_consultation"
    left = as_role("reception").post(f"/api/v1/encounters/{called['id'] + 1}/left", json={"reason": "went home"})
    assert left.get_json()["status"] == "left"


def test_icd10_lookup_and_departments(as_role, opd):
    nurse = as_role("nurse")
    items = nurse.get("/api/v1/icd10?q=J06").get_json()["items"]
    assert items[0] == {"value": "J06", "label": items[0]["label"], "code": "J06",
                        "title": "Acute upper respiratory infections of multiple and unspecified sites"}
    assert nurse.get("/api/v1/icd10?q=typhoid&limit=1").get_json()["items"][0]["code"] == "A01"
    assert nurse.get("/api/v1/icd10").get_json() == {"items": []}
    assert as_role("reception").get("/api/v1/icd10?q=J06").status_code == 403
    departments = as_role("housekeeping").get("/api/v1/departments").get_json()["items"]
    assert departments == [{"id": opd.department, "code": "GM", "name": "General Medicine", "kind": "clinical"}]
