"""OPD services on a real database: schedules, appointments, check-in tokens (also under
concurrency), the queue, triage, the signed consultation and its addenda, the clinical
record and what the audit log holds."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from departments.opd import services
from departments.opd.models import (Appointment, ClinicalNote, Diagnosis, Encounter, LabTestRequest,
                                    NoteAddendum, PrescriptionItem, Vitals)
from hms import jobs
from hms.db import utcnow
from hms.errors import Conflict, Forbidden, Invalid, NotFound
from tests.integration.test_opd_support import (actor_for, add_schedule, at, audit_actions, check_in, make_patient,
                                                tomorrow)


@pytest.fixture
def opd(database, config, make_department, make_user):
    jobs.init(config, database)
    department = make_department("GM", "General Medicine")
    other_department = make_department("PAED", "Paediatrics")
    doctor = make_user("dr_ayesha", "doctor", department_ids=[department], full_name="Dr. Ayesha Siddiqui")
    doctor2 = make_user("dr_bilal", "doctor", department_ids=[department], full_name="Dr. Bilal Ahmed")
    nurse = make_user("nurse_sana", "nurse", department_ids=[department])
    clerk = make_user("rubina", "reception")
    yield SimpleNamespace(
        department=department, other_department=other_department, doctor=doctor, doctor2=doctor2,
        doctor_actor=actor_for(doctor, "doctor", username="dr_ayesha"),
        doctor2_actor=actor_for(doctor2, "doctor", username="dr_bilal"),
        nurse_actor=actor_for(nurse, "nurse", username="nurse_sana"),
        clerk=actor_for(clerk, "reception", username="rubina"))
    jobs.reset()


def book(database, actor, patient, doctor, department, starts_at):
    with database.transaction() as s:
        return services.book_appointment(s, actor, patient_id=patient, doctor_id=doctor, department_id=department,
                                         starts_at=starts_at)


def refusal(database, exc_type, fn, *args, **kwargs):
    with pytest.raises(exc_type) as exc:
        with database.transaction() as s:
            fn(s, *args, **kwargs)
    return exc.value


# =========================================================================== schedules

def test_schedules_are_validated_and_may_not_overlap(database, opd):
    schedule_id = add_schedule(database, opd.doctor, opd.department)
    err = refusal(database, Conflict, services.create_schedule, opd.clerk, {
        "doctor_id": opd.doctor, "department_id": opd.other_department, "weekdays": ["Mon"],
        "start_time": "12:00", "end_time": "15:00", "slot_minutes": 15, "daily_limit": 5})
    assert err.code == "schedule_overlap" and f"#{schedule_id}" in err.message
    err = refusal(database, Invalid, services.create_schedule, opd.clerk, {
        "doctor_id": opd.doctor, "department_id": opd.department, "weekdays": [9], "start_time": "15:00",
        "end_time": "14:00", "slot_minutes": 2, "daily_limit": 0})
    assert set(err.fields) == {"weekdays", "end_time", "slot_minutes", "daily_limit"}
    err = refusal(database, Invalid, services.create_schedule, opd.clerk, {
        "doctor_id": opd.doctor, "department_id": opd.department, "weekdays": ["Sun"], "start_time": "15:00",
        "end_time": "15:20", "slot_minutes": 30, "daily_limit": 5})
    assert err.fields == {"slot_minutes": ["The session is shorter than one slot."]}
    err = refusal(database, NotFound, services.create_schedule, opd.clerk, {
        "doctor_id": opd.nurse_actor.user_id, "department_id": opd.department, "weekdays": ["Sun"],
        "start_time": "15:00", "end_time": "16:00", "slot_minutes": 15, "daily_limit": 4})
    assert err.code == "doctor_not_found"  # a nurse has no OPD schedule
    assert [a.entity_id for a in audit_actions(database, "opd.schedule.create")] == [str(schedule_id)]


# =========================================================================== appointments

def test_booking_a_free_slot(database, opd):
    add_schedule(database, opd.doctor, opd.department)
    patient = make_patient(database)
    day = tomorrow(database)
    appointment = book(database, opd.clerk, patient, opd.doctor, opd.department, at(day, "09:15"))
    with database.transaction(readonly=True) as s:
        a = s.get(Appointment, appointment.id)
        assert a.status == "booked" and a.appointment_date == day
        assert (a.ends_at - a.starts_at) == timedelta(minutes=15)
        local = a.starts_at.astimezone(s.info["config"].tz)
        assert (local.hour, local.minute) == (9, 15)
    [row] = audit_actions(database, "opd.appointment.book")
    assert row.patient_id == patient and row.detail["doctor_id"] == opd.doctor


def test_double_booking_is_refused(database, opd):
    add_schedule(database, opd.doctor, opd.department)
    day = tomorrow(database)
    book(database, opd.clerk, make_patient(database), opd.doctor, opd.department, at(day, "10:00"))
    err = refusal(database, Conflict, services.book_appointment, opd.clerk, patient_id=make_patient(database, "Sana"),
                  doctor_id=opd.doctor, department_id=opd.department, starts_at=at(day, "10:00"))
    assert err.code == "slot_taken" and err.fields["starts_at"]


@pytest.mark.parametrize("hhmm", ["08:45", "09:10", "13:00", "12:50"])
def test_a_time_outside_the_schedule_or_off_the_slot_grid_is_refused(database, opd, hhmm):
    add_schedule(database, opd.doctor, opd.department)
    err = refusal(database, Invalid, services.book_appointment, opd.clerk, patient_id=make_patient(database),
                  doctor_id=opd.doctor, department_id=opd.department, starts_at=at(tomorrow(database), hhmm))
    assert err.code == "outside_schedule" and "no slot" in err.fields["starts_at"][0]


def test_a_slot_in_another_department_or_on_a_day_off_is_refused(database, opd):
    day = tomorrow(database)
    add_schedule(database, opd.doctor, opd.department, weekdays=[(day.weekday() + 1) % 7])
    err = refusal(database, Invalid, services.book_appointment, opd.clerk, patient_id=make_patient(database),
                  doctor_id=opd.doctor, department_id=opd.department, starts_at=at(day, "09:00"))
    assert err.code == "outside_schedule"
    err = refusal(database, Invalid, services.book_appointment, opd.clerk, patient_id=make_patient(database),
                  doctor_id=opd.doctor, department_id=opd.other_department,
                  starts_at=at(day + timedelta(days=1), "09:00"))
    assert err.code == "outside_schedule"


def test_a_past_slot_is_refused(database, opd):
    add_schedule(database, opd.doctor, opd.department)
    yesterday = tomorrow(database) - timedelta(days=2)
    err = refusal(database, Invalid, services.book_appointment, opd.clerk, patient_id=make_patient(database),
                  doctor_id=opd.doctor, department_id=opd.department, starts_at=at(yesterday, "09:00"))
    assert err.code == "slot_in_past"


def test_the_daily_limit_holds(database, opd):
    add_schedule(database, opd.doctor, opd.department, daily_limit=2)
    day = tomorrow(database)
    book(database, opd.clerk, make_patient(database, "Patient A"), opd.doctor, opd.department, at(day, "09:00"))
    book(database, opd.clerk, make_patient(database, "Patient B"), opd.doctor, opd.department, at(day, "11:00"))
    with database.transaction(readonly=True) as s:
        assert services.free_slots(s, opd.doctor, day) == []  # limit reached: nothing offered
    err = refusal(database, Conflict, services.book_appointment, opd.clerk, patient_id=make_patient(database, "Patient C"),
                  doctor_id=opd.doctor, department_id=opd.department, starts_at=at(day, "12:00"))
    assert err.code == "daily_limit_reached"
    # The next day has its own limit.
    book(database, opd.clerk, make_patient(database, "Patient D"), opd.doctor, opd.department,
         at(day + timedelta(days=1), "12:00"))


def test_one_active_appointment_per_patient_doctor_and_day(database, opd):
    add_schedule(database, opd.doctor, opd.department)
    patient, day = make_patient(database), tomorrow(database)
    book(database, opd.clerk, patient, opd.doctor, opd.department, at(day, "09:00"))
    err = refusal(database, Conflict, services.book_appointment, opd.clerk, patient_id=patient, doctor_id=opd.doctor,
                  department_id=opd.department, starts_at=at(day, "10:00"))
    assert err.code == "already_booked"


def test_free_slots_leave_out_booked_ones(database, opd):
    add_schedule(database, opd.doctor, opd.department, start_time="09:00", end_time="10:00", daily_limit=4)
    day = tomorrow(database)
    book(database, opd.clerk, make_patient(database), opd.doctor, opd.department, at(day, "09:15"))
    with database.transaction(readonly=True) as s:
        slots = services.free_slots(s, opd.doctor, day)
    assert [x["starts_at"][11:] for x in slots] == ["09:00", "09:30", "09:45"]
    assert slots[0]["ends_at"] == at(day, "09:15") and slots[0]["room"] == "Room 4"


def test_reschedule_moves_the_appointment_and_frees_the_old_slot(database, opd):
    add_schedule(database, opd.doctor, opd.department)
    day = tomorrow(database)
    first = book(database, opd.clerk, make_patient(database, "Patient A"), opd.doctor, opd.department, at(day, "09:00"))
    book(database, opd.clerk, make_patient(database, "Patient B"), opd.doctor, opd.department, at(day, "10:00"))
    err = refusal(database, Conflict, services.reschedule_appointment, opd.clerk, first.id, at(day, "10:00"))
    assert err.code == "slot_taken"
    with database.transaction() as s:
        moved = services.reschedule_appointment(s, opd.clerk, first.id, at(day, "11:30"))
        assert moved.reschedule_count == 1
    book(database, opd.clerk, make_patient(database, "Patient C"), opd.doctor, opd.department, at(day, "09:00"))
    [row] = audit_actions(database, "opd.appointment.reschedule")
    assert row.detail["from"] < row.detail["to"]


def test_cancel_needs_a_reason(database, opd):
    add_schedule(database, opd.doctor, opd.department)
    a = book(database, opd.clerk, make_patient(database), opd.doctor, opd.department, at(tomorrow(database), "09:00"))
    err = refusal(database, Invalid, services.cancel_appointment, opd.clerk, a.id, "  ")
    assert err.fields == {"reason": ["Required."]}
    with database.transaction() as s:
        cancelled = services.cancel_appointment(s, opd.clerk, a.id, "Patient travelling to Karachi")
        assert cancelled.status == "cancelled" and cancelled.cancel_reason == "Patient travelling to Karachi"
    assert refusal(database, Conflict, services.cancel_appointment, opd.clerk, a.id, "again").code == "not_booked"
    [row] = audit_actions(database, "opd.appointment.cancel")
    assert "Karachi" not in json.dumps(row.detail)
    # The slot is free again.
    book(database, opd.clerk, make_patient(database, "Other"), opd.doctor, opd.department, at(tomorrow(database), "09:00"))


def test_no_show_only_after_the_slot(database, opd, monkeypatch):
    add_schedule(database, opd.doctor, opd.department)
    a = book(database, opd.clerk, make_patient(database), opd.doctor, opd.department, at(tomorrow(database), "09:00"))
    err = refusal(database, Conflict, services.mark_no_show, opd.clerk, a.id)
    assert err.code == "slot_not_over" and "09:15" in err.message
    monkeypatch.setattr(services, "utcnow", lambda: a.ends_at + timedelta(minutes=1))
    with database.transaction() as s:
        assert services.mark_no_show(s, opd.clerk, a.id).status == "no_show"
    assert refusal(database, Conflict, services.mark_no_show, opd.clerk, a.id).code == "not_booked"


def test_check_in_with_the_appointment_of_the_day(database, opd, monkeypatch):
    add_schedule(database, opd.doctor, opd.department)
    patient, day = make_patient(database), tomorrow(database)
    a = book(database, opd.clerk, patient, opd.doctor, opd.department, at(day, "09:30"))
    err = refusal(database, Invalid, services.check_in, opd.clerk, patient_id=patient, department_id=opd.department,
                  appointment_id=a.id)
    assert err.code == "wrong_appointment" and "not today" in err.fields["appointment_id"][0]
    monkeypatch.setattr(services, "local_today", lambda session: day)
    other = make_patient(database, "Someone Else")
    err = refusal(database, Invalid, services.check_in, opd.clerk, patient_id=other, department_id=opd.department,
                  appointment_id=a.id)
    assert "another patient" in err.fields["appointment_id"][0]
    encounter = check_in(database, opd.clerk, patient, opd.department, appointment_id=a.id)
    assert encounter.doctor_id == opd.doctor and encounter.token_scope == f"doctor:{opd.doctor}"
    with database.transaction(readonly=True) as s:
        assert s.get(Appointment, a.id).status == "checked_in"


# =========================================================================== check-in and tokens

def test_tokens_count_up_per_department_and_per_doctor(database, opd):
    tokens = [check_in(database, opd.clerk, make_patient(database, f"P{i}"), opd.department).token_no
              for i in range(3)]
    assert tokens == [1, 2, 3]
    assert check_in(database, opd.clerk, make_patient(database), opd.other_department).token_no == 1
    assert check_in(database, opd.clerk, make_patient(database), opd.department, doctor_id=opd.doctor).token_no == 1
    assert check_in(database, opd.clerk, make_patient(database), opd.department, doctor_id=opd.doctor).token_no == 2
    [first, *_] = audit_actions(database, "opd.check_in")
    assert first.detail == {"department_id": opd.department, "doctor_id": None, "appointment_id": None, "token": 1}


def test_a_second_check_in_the_same_day_is_refused_with_the_token(database, opd):
    patient = make_patient(database)
    encounter = check_in(database, opd.clerk, patient, opd.department)
    check_in(database, opd.clerk, make_patient(database, "Next"), opd.department)
    err = refusal(database, Conflict, services.check_in, opd.clerk, patient_id=patient, department_id=opd.department)
    assert err.code == "already_checked_in" and err.http_status == 409
    assert err.fields == {"token": encounter.token_no, "encounter_id": encounter.id}
    assert str(encounter.token_no) in err.message
    # The refused check-in took no token: the next one is 3.
    assert check_in(database, opd.clerk, make_patient(database, "Third"), opd.department).token_no == 3
    # Another department is another queue.
    assert check_in(database, opd.clerk, patient, opd.other_department).token_no == 1
    # Once the visit is over, the patient may come back the same day.
    with database.transaction() as s:
        services.mark_left(s, opd.clerk, encounter.id, "went home")
    assert check_in(database, opd.clerk, patient, opd.department).token_no == 4


def test_tokens_restart_every_day(database, opd, monkeypatch):
    day = tomorrow(database)
    assert check_in(database, opd.clerk, make_patient(database), opd.department).token_no == 1
    assert check_in(database, opd.clerk, make_patient(database), opd.department).token_no == 2
    monkeypatch.setattr(services, "local_today", lambda session: day)
    later = check_in(database, opd.clerk, make_patient(database), opd.department)
    assert later.token_no == 1 and later.visit_date == day


def test_check_in_refuses_unknown_ids_and_payer_classes(database, opd):
    patient = make_patient(database)
    assert refusal(database, NotFound, services.check_in, opd.clerk, patient_id=999999,
                   department_id=opd.department).code == "patient_not_found"
    assert refusal(database, NotFound, services.check_in, opd.clerk, patient_id=patient,
                   department_id=999999).code == "department_not_found"
    assert refusal(database, NotFound, services.check_in, opd.clerk, patient_id=patient, department_id=opd.department,
                   doctor_id=opd.clerk.user_id).code == "doctor_not_found"
    assert "payer_class" in refusal(database, Invalid, services.check_in, opd.clerk, patient_id=patient,
                                    department_id=opd.department, payer_class="vip").fields


THREADS = 8


def race(database, work) -> tuple[list, list]:
    """work(n, session) in THREADS threads released together, each in its own transaction."""
    barrier = threading.Barrier(THREADS)
    results: list = [None] * THREADS
    errors: list = [None] * THREADS

    def run(n):
        try:
            barrier.wait(timeout=30)
            with database.transaction() as s:
                results[n] = work(n, s)
        except Exception as exc:  # collected for the test thread
            errors[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results, errors


def concurrent_check_ins_get_unique_tokens(database, opd):
    patients = [make_patient(database, f"Patient {n}") for n in range(THREADS)]
    results, errors = race(database, lambda n, s: services.check_in(
        s, opd.clerk, patient_id=patients[n], department_id=opd.department).token_no)
    assert errors == [None] * THREADS
    assert sorted(results) == list(range(1, THREADS + 1))
    with database.transaction(readonly=True) as s:
        stored = sorted(s.scalars(select(Encounter.token_no)))
    assert stored == list(range(1, THREADS + 1))


def concurrent_check_ins_of_one_patient_make_one_encounter(database, opd):
    patient = make_patient(database)
    results, errors = race(database, lambda n, s: services.check_in(
        s, opd.clerk, patient_id=patient, department_id=opd.department).token_no)
    assert [r for r in results if r is not None] == [1]
    refused = [e for e in errors if e is not None]
    assert len(refused) == THREADS - 1
    assert all(isinstance(e, Conflict) and e.code == "already_checked_in" and e.fields["token"] == 1 for e in refused)


def concurrent_calls_take_different_patients(database, opd):
    for n in range(THREADS):
        check_in(database, opd.clerk, make_patient(database, f"Q{n}"), opd.department)
    doctors = [opd.doctor_actor, opd.doctor2_actor]
    results, errors = race(database, lambda n, s: services.call_next(s, doctors[n % 2], opd.department).id)
    assert errors == [None] * THREADS
    assert len(set(results)) == THREADS


def test_concurrent_check_ins_get_unique_tokens(database, opd):
    concurrent_check_ins_get_unique_tokens(database, opd)


def test_concurrent_check_ins_of_one_patient_make_one_encounter(database, opd):
    concurrent_check_ins_of_one_patient_make_one_encounter(database, opd)


def test_concurrent_calls_take_different_patients(database, opd):
    concurrent_calls_take_different_patients(database, opd)


@pytest.mark.postgres
def test_concurrent_check_ins_get_unique_tokens_on_postgresql(database, opd):
    assert database.dialect == "postgresql"
    concurrent_check_ins_get_unique_tokens(database, opd)


@pytest.mark.postgres
def test_concurrent_check_ins_of_one_patient_on_postgresql(database, opd):
    assert database.dialect == "postgresql"
    concurrent_check_ins_of_one_patient_make_one_encounter(database, opd)


@pytest.mark.postgres
def test_concurrent_calls_on_postgresql(database, opd):
    assert database.dialect == "postgresql"
    concurrent_calls_take_different_patients(database, opd)


def test_attach_instance_links_once(database, opd):
    encounter = check_in(database, opd.clerk, make_patient(database), opd.department)
    with database.transaction() as s:
        services.attach_instance(s, encounter.id, 41)
        services.attach_instance(s, encounter.id, 41)  # the same instance again: no change
    assert refusal(database, Conflict, services.attach_instance, encounter.id, 42).code == "instance_attached"
    assert len(audit_actions(database, "opd.encounter.attach_instance")) == 1


# =========================================================================== queue

def test_call_next_takes_emergencies_first_then_first_come(database, opd):
    first = check_in(database, opd.clerk, make_patient(database, "First"), opd.department)
    second = check_in(database, opd.clerk, make_patient(database, "Second"), opd.department)
    mine = check_in(database, opd.clerk, make_patient(database, "Bilal's"), opd.department, doctor_id=opd.doctor2)
    sick = check_in(database, opd.clerk, make_patient(database, "Sick"), opd.department)
    with database.transaction() as s:
        services.record_triage(s, opd.nurse_actor, sick.id, {"spo2": 86, "chief_complaint": "breathless"})
    called = []
    for _ in range(4):
        with database.transaction() as s:
            e = services.call_next(s, opd.doctor_actor, opd.department)
            called.append(e.id if e else None)
    # Dr Ayesha never gets Dr Bilal's patient; the queue is then empty for her.
    assert called == [sick.id, first.id, second.id, None]
    with database.transaction() as s:
        e = services.call_next(s, opd.doctor2_actor, opd.department)
        assert e.id == mine.id and e.status == "called" and e.called_by_id == opd.doctor2
    with database.transaction(readonly=True) as s:
        assert s.get(Encounter, first.id).doctor_id == opd.doctor  # assigned to the caller
    assert len(audit_actions(database, "opd.queue.call")) == 4


def test_the_board_shows_tokens_doctors_and_rooms_never_names(database, opd):
    add_schedule(database, opd.doctor, opd.department, room="Room 7")
    with database.transaction(readonly=True) as s:
        empty = services.queue_board(s, opd.department)
    assert empty["now_serving"] == [] and empty["next"] == [] and empty["waiting"] == 0
    for name in ("Ahmed Khan", "Sana Bibi", "Imran Ali"):
        check_in(database, opd.clerk, make_patient(database, name), opd.department)
    with database.transaction() as s:
        services.call_next(s, opd.doctor_actor, opd.department)
    with database.transaction(readonly=True) as s:
        board = services.queue_board(s, opd.department)
    assert board["now_serving"][0]["token"] == 1
    assert board["now_serving"][0]["doctor"] == "Dr. Ayesha Siddiqui" and board["now_serving"][0]["room"] == "Room 7"
    assert [n["token"] for n in board["next"]] == [2, 3] and board["waiting"] == 2
    text = json.dumps(board)
    assert "Ahmed" not in text and "Sana" not in text and "HMS-" not in text


def test_start_and_left(database, opd):
    e = check_in(database, opd.clerk, make_patient(database), opd.department)
    with database.transaction() as s:
        started = services.start_consultation(s, opd.doctor_actor, e.id)
        assert started.status == "in_consultation" and started.doctor_id == opd.doctor
    assert refusal(database, Conflict, services.mark_left, opd.clerk, e.id).code == "encounter_not_waiting"


# =========================================================================== triage

def test_record_triage_stores_vitals_flags_and_priority(database, opd):
    e = check_in(database, opd.clerk, make_patient(database), opd.department)
    with database.transaction() as s:
        result = services.record_triage(s, opd.nurse_actor, e.id, {
            "temperature_c": 38.6, "pulse": 112, "systolic_bp": 150, "diastolic_bp": 95, "respiratory_rate": 20,
            "spo2": 97, "weight_kg": 72, "height_cm": 168, "chief_complaint": "Fever for 3 days",
            "pain_score": 3, "priority": "routine"})
    assert result["bmi"] == 25.5 and result["bmi_category"] == "obese"
    assert result["flags"] == ["fever", "tachycardia", "hypertension", "bmi_obese"]
    assert result["priority"] == "urgent"
    with database.transaction(readonly=True) as s:
        row = s.get(Vitals, result["vitals_id"])
        assert row.pulse == 112 and float(row.temperature_c) == 38.6 and row.recorded_by_id == opd.nurse_actor.user_id
        enc = s.get(Encounter, e.id)
        assert enc.priority == "urgent" and enc.chief_complaint == "Fever for 3 days"
    [row] = audit_actions(database, "opd.triage.record")
    assert "Fever" not in json.dumps(row.detail) and row.detail["flags"][0] == "fever"


def test_triage_refuses_implausible_values_and_closed_encounters(database, opd):
    e = check_in(database, opd.clerk, make_patient(database), opd.department)
    err = refusal(database, Invalid, services.record_triage, opd.nurse_actor, e.id,
                  {"temperature_c": 53, "systolic_bp": 70, "diastolic_bp": 90})
    assert set(err.fields) == {"temperature_c", "diastolic_bp"}
    with database.transaction() as s:
        services.mark_left(s, opd.clerk, e.id)
    assert refusal(database, Conflict, services.record_triage, opd.nurse_actor, e.id,
                   {"pulse": 80}).code == "encounter_closed"


# =========================================================================== consultation

def consultation(**overrides) -> dict:
    data = {"chief_complaint": "Fever for 3 days", "history": "Fever with chills; no travel.",
            "examination": "Febrile, chest clear.", "notes": "Paracetamol, fluids, review with report.",
            "diagnoses": [{"code": "A01.0", "note": "suspected"}, {"code": "r50.9"}],
            "lab_tests": ["CBC", "TYPHIDOT", "CBC"],
            "prescriptions": [
                {"item_code": "PCM500T", "dose": 2, "frequency": "TDS", "duration_days": 5, "route": "oral"},
                {"item_code": "ors", "dose": 1, "frequency": "PRN", "duration_days": 3, "quantity": 6,
                 "instructions": "after each loose stool"},
                {"item_code": "CEFTRIAXONE1G", "dose": 1, "frequency": "STAT", "duration_days": 1, "route": "IM"}],
            "follow_up_date": None, "referral_department": None, "referral_reason": None}
    data.update(overrides)
    return data


def consult(database, actor, encounter_id, data=None, **kwargs):
    with database.transaction() as s:
        return services.save_consultation(s, actor, encounter_id, data or consultation(), **kwargs)


def test_save_consultation_signs_the_note_and_returns_what_the_pathway_needs(database, opd):
    e = check_in(database, opd.clerk, make_patient(database), opd.department)
    result = consult(database, opd.doctor_actor, e.id)
    assert result["lab_tests"] == ["CBC", "TYPHIDOT"] and result["has_lab"] is True
    assert [(line["item_code"], line["quantity"]) for line in result["prescription_lines"]] == [
        ("PCM500T", 30), ("ORS", 6), ("CEFTRIAXONE1G", 1)]
    assert result["has_meds"] is True and result["follow_up_date"] is None
    with database.transaction(readonly=True) as s:
        enc = s.get(Encounter, e.id)
        assert enc.status == "consulted" and enc.consultation_ended_at is not None and enc.doctor_id == opd.doctor
        note = s.scalar(select(ClinicalNote).where(ClinicalNote.encounter_id == e.id))
        assert note.signed_at is not None and note.signed_by_id == opd.doctor
        assert [(d.rank, d.code) for d in s.scalars(select(Diagnosis).order_by(Diagnosis.rank))] == [
            (1, "A01.0"), (2, "R50.9")]
        assert s.scalar(select(func.count()).select_from(LabTestRequest)) == 2
        item = s.get(PrescriptionItem, result["prescription_lines"][0]["prescription_item_id"])
        assert item.frequency == "TDS" and item.duration_days == 5 and item.allergy_alert is None
    [row] = audit_actions(database, "opd.consultation.sign")
    assert row.detail["diagnoses"] == ["A01.0", "R50.9"] and row.detail["lab_tests"] == ["CBC", "TYPHIDOT"]
    text = json.dumps(row.detail)
    assert "Fever" not in text and "chills" not in text and "Paracetamol" not in text


def test_a_signed_note_is_never_edited(database, opd):
    e = check_in(database, opd.clerk, make_patient(database), opd.department)
    consult(database, opd.doctor_actor, e.id)
    with pytest.raises(Conflict) as exc:
        consult(database, opd.doctor_actor, e.id, consultation(history="changed"))
    assert exc.value.code == "note_signed"
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(ClinicalNote.history)) == "Fever with chills; no travel."
        assert s.scalar(select(func.count()).select_from(Diagnosis)) == 2


def test_addenda_follow_a_signed_note_and_are_signed_and_audited(database, opd):
    e = check_in(database, opd.clerk, make_patient(database), opd.department)
    assert refusal(database, Conflict, services.add_addendum, opd.doctor_actor, e.id,
                   "Typhidot positive").code == "note_not_signed"
    consult(database, opd.doctor_actor, e.id)
    assert refusal(database, Forbidden, services.add_addendum, opd.nurse_actor, e.id, "x").code == "forbidden"
    assert refusal(database, Invalid, services.add_addendum, opd.doctor_actor, e.id, " ").fields == {"text": ["Required."]}
    with database.transaction() as s:
        first = services.add_addendum(s, opd.doctor2_actor, e.id, "Typhidot IgM positive; continue treatment.")
        services.add_addendum(s, opd.doctor_actor, e.id, "Phoned the patient.")
        assert first.signed_by_id == opd.doctor2 and first.signed_at is not None
    with database.transaction(readonly=True) as s:
        assert [a.text for a in s.scalars(select(NoteAddendum).order_by(NoteAddendum.id))] == [
            "Typhidot IgM positive; continue treatment.", "Phoned the patient."]
        assert s.scalar(select(ClinicalNote.history)) == "Fever with chills; no travel."
    rows = audit_actions(database, "opd.note.addendum")
    assert len(rows) == 2 and all("Typhidot" not in json.dumps(r.detail) for r in rows)


def test_consultation_errors_are_named_per_field_and_row(database, opd):
    e = check_in(database, opd.clerk, make_patient(database), opd.department)
    with database.transaction(readonly=True) as s:
        today = services.local_today(s)
    with pytest.raises(Invalid) as exc:
        consult(database, opd.doctor_actor, e.id, consultation(
            chief_complaint="", diagnoses=[{"code": "X99.9"}, {"code": "I10"}, {"code": "i10"}],
            prescriptions=[{"item_code": "PCM500T", "dose": -1, "frequency": "TDS", "duration_days": 5}],
            follow_up_date=today.isoformat(), referral_department="Cardiology"))
    fields = exc.value.fields
    assert fields["chief_complaint"] == ["Required."]
    assert fields["diagnoses"] == {0: {"code": ["Unknown ICD-10 code: X99.9."]}, 2: {"code": ["I10 is listed twice."]}}
    assert fields["prescriptions"] == {0: {"dose": ["Must be greater than 0 (and at most 10000)."]}}
    assert fields["follow_up_date"] == ["Must be a date after today."]
    assert fields["referral_reason"] == ["Give the reason for the referral."]
    with pytest.raises(Invalid) as exc:
        consult(database, opd.doctor_actor, e.id, consultation(diagnoses=[]))
    assert exc.value.fields == {"diagnoses": ["Record at least one diagnosis (ICD-10)."]}
    with database.transaction(readonly=True) as s:
        assert s.get(Encounter, e.id).status == "waiting" and s.scalar(select(func.count()).select_from(ClinicalNote)) == 0


def test_referral_and_follow_up_are_kept(database, opd):
    e = check_in(database, opd.clerk, make_patient(database), opd.department)
    with database.transaction(readonly=True) as s:
        follow_up = services.local_today(s) + timedelta(days=7)
    result = consult(database, opd.doctor_actor, e.id, consultation(
        follow_up_date=follow_up.isoformat(), referral_department="paed", referral_reason="Child's asthma review",
        lab_tests=[], prescriptions=[]))
    assert result["follow_up_date"] == follow_up.isoformat() and result["has_lab"] is False and result["has_meds"] is False
    with database.transaction(readonly=True) as s:
        enc = s.get(Encounter, e.id)
        assert enc.follow_up_date == follow_up and enc.referral_department_id == opd.other_department


def test_allergy_alerts_need_an_override_reason_which_is_audited(database, opd):
    e = check_in(database, opd.clerk, make_patient(database), opd.department)
    alerts = [{"item_code": "AMOX500C", "item_name": "Amoxicillin 500 mg", "allergy_substance": "Penicillin",
               "severity": "severe", "match": "class"}]
    data = consultation(prescriptions=[
        {"item_code": "amox500c", "dose": 1, "frequency": "TDS", "duration_days": 5},
        {"item_code": "PCM500T", "dose": 1, "frequency": "TDS", "duration_days": 5}])
    with pytest.raises(Invalid) as exc:
        consult(database, opd.doctor_actor, e.id, data, allergy_alerts=alerts)
    assert exc.value.fields == {"allergy_override_reason": [
        "Required when an allergy alert was shown (AMOX500C)."]}
    result = consult(database, opd.doctor_actor, e.id, data, allergy_alerts=alerts,
                     allergy_override_reason="Tolerated amoxicillin in 2023; rash was viral")
    amox, pcm = result["prescription_lines"]
    with database.transaction(readonly=True) as s:
        item = s.get(PrescriptionItem, amox["prescription_item_id"])
        assert item.allergy_alert == alerts and item.allergy_override_reason.startswith("Tolerated")
        other = s.get(PrescriptionItem, pcm["prescription_item_id"])
        assert other.allergy_alert is None and other.allergy_override_reason is None
    [row] = audit_actions(database, "opd.allergy_override")
    assert row.entity_id == str(amox["prescription_item_id"])
    assert row.detail == {"encounter_id": e.id, "item_code": "AMOX500C", "alerts": 1}


def test_complete_encounter_after_the_consultation_only(database, opd):
    e = check_in(database, opd.clerk, make_patient(database), opd.department)
    assert refusal(database, Conflict, services.complete_encounter, opd.doctor_actor, e.id).code == "not_consulted"
    consult(database, opd.doctor_actor, e.id)
    with database.transaction() as s:
        assert services.complete_encounter(s, opd.doctor_actor, e.id).status == "completed"
        assert services.complete_encounter(s, opd.doctor_actor, e.id).status == "completed"
    assert len(audit_actions(database, "opd.encounter.complete")) == 1
    with database.transaction(readonly=True) as s:
        info = services.encounter_info(s, e.id)
    assert info["department_code"] == "GM" and info["doctor_id"] == opd.doctor and info["payer_class"] == "cash"
    assert info["token"] == e.token_no and info["status"] == "completed"


# =========================================================================== clinical record

def test_the_clinical_record_is_for_clinicians_and_its_read_is_audited(database, opd):
    patient = make_patient(database)
    e = check_in(database, opd.clerk, patient, opd.department)
    with database.transaction() as s:
        services.record_triage(s, opd.nurse_actor, e.id, {"pulse": 88, "temperature_c": 38.2, "systolic_bp": 120,
                                                          "diastolic_bp": 80})
    consult(database, opd.doctor_actor, e.id)
    with database.transaction() as s:
        services.add_addendum(s, opd.doctor_actor, e.id, "Report reviewed.")
    assert refusal(database, Forbidden, services.get_clinical_record, opd.clerk, patient).code == "forbidden"
    assert audit_actions(database, "opd.clinical_record.read") == []
    with database.transaction() as s:
        record = services.get_clinical_record(s, opd.doctor_actor, patient)
    [visit] = record["visits"]
    assert visit["department"]["code"] == "GM" and visit["doctor"]["name"] == "Dr. Ayesha Siddiqui"
    assert [d["code"] for d in visit["diagnoses"]] == ["A01.0", "R50.9"]
    assert visit["note"]["signed_by"] == "Dr. Ayesha Siddiqui"
    assert [a["text"] for a in visit["note"]["addenda"]] == ["Report reviewed."]
    assert record["vitals_trend"][0]["pulse"] == 88 and record["vitals_trend"][0]["flags"] == ["fever"]
    assert [p["item_code"] for p in record["prescriptions"]] == ["CEFTRIAXONE1G", "ORS", "PCM500T"]
    assert record["patient"]["mrn"].startswith("HMS-")
    json.dumps(record)  # the API returns it as is
    [row] = audit_actions(database, "opd.clinical_record.read")
    assert row.patient_id == patient and row.actor_id == opd.doctor
    with database.transaction() as s:
        assert services.get_clinical_record(s, opd.nurse_actor, patient)["visits"]
