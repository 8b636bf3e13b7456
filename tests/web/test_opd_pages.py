"""OPD pages through the Flask client: check-in with the big token, the doctor's queue,
the waiting-room display, appointments, schedules and the clinical record, including
their empty states, CSRF and ways back."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from departments.opd import routes, services
from tests.integration.test_opd_support import actor_for, add_schedule, at, check_in, make_patient

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf(client, url: str) -> str:
    return CSRF_RE.search(client.get(url).get_data(as_text=True)).group(1)


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
def started(monkeypatch):
    """Stands in for the pathway start that answers "opd.checked_in" (journeys/opd.py):
    records the encounters it was given."""
    from hms import events

    calls = []
    monkeypatch.setitem(events._SUBSCRIBERS, "opd.checked_in",
                        [lambda session, actor, encounter, **_: calls.append((encounter.id, actor.username))])
    return calls


# --- check-in --------------------------------------------------------------------------------

def test_checkin_page_has_the_form_and_an_empty_state(as_role, opd):
    page = as_role("reception").get("/opd/checkin").get_data(as_text=True)
    assert CSRF_RE.search(page) and 'name="patient_q"' in page and "General Medicine" in page
    assert "No booked appointments are waiting for check-in today." in page
    assert 'href="/"' in page  # a way back


def test_checkin_issues_the_token_and_starts_the_pathway(as_role, database, opd, started):
    reception = as_role("reception")
    patient = make_patient(database, "Ahmed Khan")
    token = csrf(reception, "/opd/checkin")
    resp = reception.post("/opd/checkin", data={"csrf_token": token, "patient_id": patient,
                                                "department_id": opd.department, "payer_class": "cash"})
    assert resp.status_code == 302 and "done=" in resp.headers["Location"]
    page = reception.get(resp.headers["Location"]).get_data(as_text=True)
    assert 'data-token>1<' in page and "Ahmed Khan" in page and "General Medicine" in page
    assert [encounter_id for encounter_id, _ in started] == [1]
    assert started[0][1].startswith("u_reception")
    # Without scripts the MRN typed in the search box is enough.
    second = make_patient(database, "Sana Bibi", sex="female")
    mrn = reception.get(f"/api/v1/patients/{second}").get_json()["mrn"]
    resp = reception.post("/opd/checkin", data={"csrf_token": token, "patient_q": mrn, "department_id": opd.department})
    assert "data-token>2<" in reception.get(resp.headers["Location"]).get_data(as_text=True)
    # Checking the same patient in again shows the token they already have.
    resp = reception.post("/opd/checkin", data={"csrf_token": token, "patient_id": patient,
                                                "department_id": opd.department})
    assert resp.status_code == 409
    text = resp.get_data(as_text=True)
    assert "already checked in" in text and "Token <strong>1</strong>" in text
    assert len(started) == 2


def test_checkin_form_errors_are_shown_and_csrf_is_required(as_role, opd, started):
    reception = as_role("reception")
    resp = reception.post("/opd/checkin", data={"csrf_token": csrf(reception, "/opd/checkin")})
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    assert "Choose the patient." in page and "Choose the department." in page
    assert reception.post("/opd/checkin", data={"department_id": opd.department}).status_code == 400
    assert started == []


def test_checkin_works_without_a_pathway(as_role, database, opd, monkeypatch):
    from hms import events

    monkeypatch.setitem(events._SUBSCRIBERS, "opd.checked_in", [])
    reception = as_role("reception")
    resp = reception.post("/opd/checkin", data={"csrf_token": csrf(reception, "/opd/checkin"),
                                                "patient_id": make_patient(database), "department_id": opd.department})
    assert resp.status_code == 302


def test_todays_appointments_are_listed_for_check_in(as_role, database, opd, monkeypatch):
    add_schedule(database, opd.doctor, opd.department)
    day = opd.today + timedelta(days=1)
    with database.transaction() as s:
        services.book_appointment(s, opd.clerk, patient_id=make_patient(database, "Booked Patient"),
                                  doctor_id=opd.doctor, department_id=opd.department, starts_at=at(day, "09:30"))
    monkeypatch.setattr(routes, "local_today", lambda session: day)
    page = as_role("reception").get("/opd/checkin").get_data(as_text=True)
    assert "Booked Patient" in page and "09:30" in page and 'name="appointment_id" value="1"' in page


# --- doctor's queue and display ------------------------------------------------------------------

def test_doctor_page_empty_state_and_call_next(as_role, database, opd):
    doctor = as_role("doctor", department_ids=[opd.department])
    page = doctor.get("/opd/doctor").get_data(as_text=True)
    assert "Nobody is waiting in General Medicine." in page and "Call next patient" in page
    first = check_in(database, opd.clerk, make_patient(database, "Ahmed Khan"), opd.department)
    sick = check_in(database, opd.clerk, make_patient(database, "Bashir Ahmad"), opd.department)
    with database.transaction() as s:
        services.record_triage(s, actor_for(opd.doctor, "nurse"), sick.id, {"temperature_c": 39.8, "pulse": 118})
    page = doctor.get(f"/opd/doctor?department_id={opd.department}").get_data(as_text=True)
    assert page.index("Bashir Ahmad") < page.index("Ahmed Khan")  # urgent first
    assert "High fever" in page and "Tachycardia" in page and "Not triaged" in page
    resp = doctor.post(f"/opd/queue/{opd.department}/call-next", data={"csrf_token": csrf(doctor, "/opd/doctor")})
    assert resp.status_code == 302
    page = doctor.get(resp.headers["Location"]).get_data(as_text=True)
    assert f"Token {sick.token_no} called." in page and "Start consultation" in page
    assert first.token_no == 1


def test_display_page_is_big_tokens_without_names(as_role, database, opd):
    tv = as_role("housekeeping")
    page = tv.get(f"/opd/display/{opd.department}").get_data(as_text=True)
    assert "Now serving" in page and "Please wait for your token to be called." in page
    assert f"/api/v1/opd/queue/{opd.department}" in page and "setInterval(tick, 10000)" in page
    check_in(database, opd.clerk, make_patient(database, "Ahmed Khan"), opd.department)
    with database.transaction() as s:
        services.call_next(s, opd.doctor_actor, opd.department)
    page = tv.get(f"/opd/display/{opd.department}").get_data(as_text=True)
    assert '<span class="num">1</span>' in page and "Dr. Ayesha Siddiqui" in page and "Ahmed" not in page
    index = tv.get("/opd/display").get_data(as_text=True)
    assert f"/opd/display/{opd.department}" in index
    assert tv.get("/opd/display/999").status_code == 404


# --- appointments and schedules -------------------------------------------------------------------

def test_appointments_page_books_and_cancels(as_role, database, opd):
    reception = as_role("reception")
    page = reception.get("/opd/appointments").get_data(as_text=True)
    assert "No appointments on" in page and "Choose a doctor" in page
    add_schedule(database, opd.doctor, opd.department, start_time="09:00", end_time="10:00", daily_limit=4)
    day = opd.today + timedelta(days=1)
    url = f"/opd/appointments?date={day}&doctor_id={opd.doctor}&department_id={opd.department}"
    page = reception.get(url).get_data(as_text=True)
    assert f'value="{at(day, "09:45")}"' in page
    patient = make_patient(database, "Ahmed Khan")
    token = csrf(reception, url)
    resp = reception.post("/opd/appointments", data={"csrf_token": token, "patient_id": patient,
                                                     "doctor_id": opd.doctor, "department_id": opd.department,
                                                     "starts_at": at(day, "09:15")})
    assert resp.status_code == 302
    page = reception.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Appointment booked for" in page and "Ahmed Khan" in page
    assert f'value="{at(day, "09:15")}"' not in page  # no longer offered
    resp = reception.post("/opd/appointments", data={"csrf_token": token, "patient_id": make_patient(database, "Bilal"),
                                                     "doctor_id": opd.doctor, "department_id": opd.department,
                                                     "starts_at": at(day, "09:15")})
    assert resp.status_code == 422 and "already booked" in resp.get_data(as_text=True)
    resp = reception.post("/opd/appointments/1/cancel", data={"csrf_token": token, "reason": ""})
    assert "Required." in reception.get(resp.headers["Location"]).get_data(as_text=True)
    resp = reception.post("/opd/appointments/1/cancel", data={"csrf_token": token, "reason": "Unwell"})
    assert "Appointment cancelled." in reception.get(resp.headers["Location"]).get_data(as_text=True)


def test_schedules_page_lists_and_adds(as_role, opd):
    admin = as_role("admin")
    page = admin.get("/opd/schedules").get_data(as_text=True)
    assert "No doctor schedules yet. Add one below." in page
    token = csrf(admin, "/opd/schedules")
    resp = admin.post("/opd/schedules", data={"csrf_token": token, "doctor_id": opd.doctor,
                                              "department_id": opd.department, "weekdays": ["0", "2", "4"],
                                              "start_time": "09:00", "end_time": "12:00", "slot_minutes": "15",
                                              "daily_limit": "12", "room": "Room 9"})
    assert resp.status_code == 302
    page = admin.get("/opd/schedules").get_data(as_text=True)
    assert "Mon, Wed, Fri" in page and "09:00–12:00" in page and "Room 9" in page
    resp = admin.post("/opd/schedules", data={"csrf_token": token, "doctor_id": opd.doctor,
                                              "department_id": opd.department, "weekdays": ["2"],
                                              "start_time": "11:00", "end_time": "13:00", "slot_minutes": "15",
                                              "daily_limit": "4"})
    assert resp.status_code == 409 and "overlaps" in resp.get_data(as_text=True)
    viewer = as_role("reception").get("/opd/schedules").get_data(as_text=True)
    assert "Add a schedule" not in viewer and "Room 9" in viewer


# --- clinical record -----------------------------------------------------------------------------

def test_record_page_empty_states(as_role, database):
    patient = make_patient(database, "Ahmed Khan")
    page = as_role("doctor").get(f"/patients/{patient}/record").get_data(as_text=True)
    for text in ("No OPD visits yet.", "No vital signs recorded yet.", "No medicines prescribed yet.",
                 "No verified lab results.", "Back to the patient"):
        assert text in page
    assert as_role("reception").get(f"/patients/{patient}/record").status_code == 403


def test_record_page_shows_visits_trend_and_takes_addenda(as_role, database, opd):
    patient = make_patient(database, "Ahmed Khan")
    e = check_in(database, opd.clerk, patient, opd.department)
    nurse = actor_for(opd.doctor, "nurse")
    with database.transaction() as s:
        services.record_triage(s, nurse, e.id, {"pulse": 110, "temperature_c": 38.9, "systolic_bp": 130,
                                                "diastolic_bp": 85})
        services.record_triage(s, nurse, e.id, {"pulse": 96, "temperature_c": 37.9, "systolic_bp": 126,
                                                "diastolic_bp": 80})
        services.save_consultation(s, opd.doctor_actor, e.id, {
            "chief_complaint": "Fever for 3 days", "examination": "Coated tongue", "diagnoses": [{"code": "A01.0"}],
            "prescriptions": [{"item_code": "PCM500T", "dose": 1, "frequency": "TDS", "duration_days": 3}],
            "lab_tests": ["CBC"]})
    doctor = as_role("doctor")
    page = doctor.get(f"/patients/{patient}/record").get_data(as_text=True)
    assert "A01.0" in page and "Typhoid fever" in page and "Coated tongue" in page
    assert "<polyline" in page and "Pulse trend, from 96 to 110" in page
    assert "PCM500T" in page and "CBC" in page and "Add an addendum" in page
    resp = doctor.post(f"/opd/encounters/{e.id}/addenda", data={"csrf_token": CSRF_RE.search(page).group(1),
                                                               "text": "Widal not needed."})
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"#visit-{e.id}")
    page = doctor.get(f"/patients/{patient}/record").get_data(as_text=True)
    assert "Addendum signed and added." in page and "Widal not needed." in page
    assert "Add an addendum" not in as_role("nurse").get(f"/patients/{patient}/record").get_data(as_text=True)
