"""OPD blueprint: the JSON API (schedules, appointments, slots, queue, encounters, addenda,
the clinical record, ICD-10 lookup, departments) and the pages (check-in, doctor's queue,
waiting-room display, appointments, schedules, clinical record). Thin: parsing,
permissions and rendering; the rules are in services.

Who sees what:
- the clinical record and an encounter's clinical fields: doctor, nurse, admin (the read
  is audited). Reception gets an encounter's queue fields only (token, status, department,
  doctor): GET /api/v1/encounters/<id> serializes by role under one permission.
- the waiting-room display and its queue API: every staff role (opd.queue.display). A TV
  logs in with any staff account; the board shows tokens, doctors and rooms, never names.
"""

from __future__ import annotations

from datetime import date, timedelta

from flask import Blueprint, current_app, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select

from departments.opd import icd10, services
from departments.opd.models import FREQUENCIES, PAYER_CLASSES, WEEKDAY_NAMES, DoctorSchedule, Encounter
from departments.opd.schemas import (AddendumIn, AppointmentIn, CallNextIn, CancelIn, LeftIn, NoShowIn,
                                     RescheduleIn, ScheduleIn, addendum_json, appointment_json, schedule_json)
from hms import events
from hms.auth.permissions import define, require_scope, requires, roles_for
from hms.auth.roles import ALL_ROLES, CLINICIANS
from hms.db import config_of
from hms.errors import BadRequest, Conflict, Invalid, NotFound
from hms.patients.models import Patient
from hms.patients.services import age_text, local_today, search_patients
from hms.web.context import current_actor, db_session, json_body, mark_failed

bp = Blueprint("opd", __name__, template_folder="templates")

icd10.register()

DEPARTMENTS_VIEW = define("org.departments.view", *sorted(ALL_ROLES))
ICD10_LOOKUP = define("opd.icd10.lookup", *sorted(CLINICIANS | {"department_head", "admin"}))
SCHEDULE_VIEW = define("opd.schedules.view", "reception", "nurse", "doctor", "department_head", "admin")
SCHEDULE_MANAGE = define("opd.schedules.manage", "department_head", "admin")
APPOINTMENT_VIEW = define("opd.appointments.view", "reception", "nurse", "doctor", "department_head", "admin")
APPOINTMENT_BOOK = define("opd.appointments.book", "reception", "admin")
CHECKIN = define("opd.checkin", "reception", "nurse", "admin")
QUEUE_DISPLAY = define("opd.queue.display", *sorted(ALL_ROLES))
QUEUE_WORK = define("opd.queue.work", "doctor", "nurse", "admin")
QUEUE_CALL = define("opd.queue.call", "doctor", "admin")
QUEUE_MANAGE = define("opd.queue.manage", "reception", "nurse", "doctor", "admin")
CONSULT = define("opd.consultation.start", "doctor")
ENCOUNTER_VIEW = define("opd.encounters.view", "reception", "nurse", "doctor", "admin")
CLINICAL_READ = define("opd.clinical_record.read", "doctor", "nurse", "admin")
ADDENDUM_WRITE = define("opd.addenda.write", "doctor")

MAX_SEARCH = 100


# =========================================================================== helpers

@bp.app_template_filter("opd_local")
def _opd_local(value, fmt: str = "%d %b %Y %H:%M") -> str:
    """An ISO date-time string (as the record dict holds them) in local time."""
    if not value:
        return ""
    from datetime import datetime

    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        return moment.strftime(fmt)
    return moment.astimezone(current_app.extensions["hms_config"].tz).strftime(fmt)


def _can(permission: str) -> bool:
    return current_actor().has_role(*roles_for(permission))


def _tz():
    return config_of(db_session()).tz


def _int_arg(name: str, source=None) -> int | None:
    source = request.args if source is None else source
    raw = (source.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 9:
        raise BadRequest(f"{name} must be a whole number.", code="invalid_parameter")
    return int(raw)


def _date_arg(name: str = "date", default: date | None = None) -> date | None:
    raw = (request.args.get(name) or "").strip()
    if not raw:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a date (YYYY-MM-DD).", code="invalid_parameter") from None


def _scope_department(department_id: int) -> None:
    """Department heads act on their own departments only (admins on all)."""
    actor = current_actor()
    if actor.has_role("department_head") and not actor.has_role("admin"):
        require_scope("department", department_id)


def _patients(ids) -> dict[int, Patient]:
    ids = {i for i in ids if i}
    if not ids:
        return {}
    return {p.id: p for p in db_session().scalars(select(Patient).where(Patient.id.in_(ids)))}


def _doctor_names(ids) -> dict[int, str]:
    return services._names(db_session(), ids)


def _appointments_json(items) -> list[dict]:
    tz = _tz()
    patients = _patients({a.patient_id for a in items})
    names = _doctor_names({a.doctor_id for a in items})
    return [appointment_json(a, tz, patient=patients.get(a.patient_id), doctor_name=names.get(a.doctor_id))
            for a in items]


def _record_sections(session, actor, patient_id: int) -> dict:
    """Other departments' parts of the clinical record (lab results ...), answered by the
    app's composition layer to the question "patient_record.sections"; OPD imports no
    other department."""
    sections: dict = {}
    for answer in events.publish(session, actor, "patient_record.sections", patient_id=patient_id):
        sections.update(answer or {})
    return sections


def _default_department(departments) -> int | None:
    actor = current_actor()
    ids = {d.id for d in departments}
    for department_id in sorted(actor.department_ids):
        if department_id in ids:
            return department_id
    clinical = [d for d in departments if d.kind == "clinical"]
    return (clinical or departments)[0].id if departments else None


# =========================================================================== API: reference

@bp.get("/api/v1/departments")
@requires(DEPARTMENTS_VIEW)
def api_departments():
    items = services.list_departments(db_session())
    return jsonify({"items": [{"id": d.id, "code": d.code, "name": d.name, "kind": d.kind} for d in items]})


@bp.get("/api/v1/icd10")
@requires(ICD10_LOOKUP)
def api_icd10():
    q = (request.args.get("q") or "")[:MAX_SEARCH]
    limit = _int_arg("limit") or 20
    items = icd10.search_icd10(q, min(limit, icd10.MAX_LIMIT))
    return jsonify({"items": [{"value": i["code"], "label": f"{i['code']} — {i['title']}", **i} for i in items]})


@bp.get("/api/v1/opd/doctors")
@requires(SCHEDULE_VIEW)
def api_doctors():
    doctors = services.list_doctors(db_session(), _int_arg("department_id"))
    return jsonify({"items": [{"id": u.id, "name": u.full_name, "department_ids": sorted(u.department_ids)}
                              for u in doctors]})


# =========================================================================== API: schedules

@bp.get("/api/v1/opd/schedules")
@requires(SCHEDULE_VIEW)
def api_schedules():
    items = services.list_schedules(db_session(), doctor_id=_int_arg("doctor_id"),
                                    department_id=_int_arg("department_id"))
    names = _doctor_names({s.doctor_id for s in items})
    return jsonify({"items": [schedule_json(s, names.get(s.doctor_id)) for s in items]})


@bp.post("/api/v1/opd/schedules")
@requires(SCHEDULE_MANAGE)
def api_create_schedule():
    data = ScheduleIn().load(json_body())
    _scope_department(data["department_id"])
    schedule = services.create_schedule(db_session(), current_actor(), data)
    return jsonify(schedule_json(schedule, _doctor_names([schedule.doctor_id]).get(schedule.doctor_id))), 201


@bp.post("/api/v1/opd/schedules/<int:schedule_id>/deactivate")
@requires(SCHEDULE_MANAGE)
def api_deactivate_schedule(schedule_id: int):
    session = db_session()
    schedule = session.get(DoctorSchedule, schedule_id)
    if schedule is None:
        raise NotFound(f"No schedule with id {schedule_id}.", code="schedule_not_found")
    _scope_department(schedule.department_id)
    schedule = services.deactivate_schedule(session, current_actor(), schedule_id)
    return jsonify(schedule_json(schedule))


# =========================================================================== API: appointments

@bp.get("/api/v1/opd/appointments")
@requires(APPOINTMENT_VIEW)
def api_appointments():
    items = services.list_appointments(db_session(), day=_date_arg(), doctor_id=_int_arg("doctor_id"),
                                       patient_id=_int_arg("patient_id"), department_id=_int_arg("department_id"),
                                       status=request.args.get("status") or None)
    return jsonify({"items": _appointments_json(items)})


@bp.post("/api/v1/opd/appointments")
@requires(APPOINTMENT_BOOK)
def api_book():
    data = AppointmentIn().load(json_body())
    appointment = services.book_appointment(db_session(), current_actor(), **data)
    return jsonify(_appointments_json([appointment])[0]), 201


@bp.post("/api/v1/opd/appointments/<int:appointment_id>/reschedule")
@requires(APPOINTMENT_BOOK)
def api_reschedule(appointment_id: int):
    data = RescheduleIn().load(json_body())
    appointment = services.reschedule_appointment(db_session(), current_actor(), appointment_id, data["starts_at"])
    return jsonify(_appointments_json([appointment])[0])


@bp.post("/api/v1/opd/appointments/<int:appointment_id>/cancel")
@requires(APPOINTMENT_BOOK)
def api_cancel(appointment_id: int):
    data = CancelIn().load(json_body())
    appointment = services.cancel_appointment(db_session(), current_actor(), appointment_id, data["reason"])
    return jsonify(_appointments_json([appointment])[0])


@bp.post("/api/v1/opd/appointments/<int:appointment_id>/no-show")
@requires(APPOINTMENT_BOOK)
def api_no_show(appointment_id: int):
    NoShowIn().load(request.get_json(silent=True) or {})
    appointment = services.mark_no_show(db_session(), current_actor(), appointment_id)
    return jsonify(_appointments_json([appointment])[0])


@bp.get("/api/v1/opd/doctors/<int:doctor_id>/slots")
@requires(APPOINTMENT_VIEW)
def api_slots(doctor_id: int):
    session = db_session()
    day = _date_arg(default=local_today(session))
    slots = services.free_slots(session, doctor_id, day, department_id=_int_arg("department_id"))
    return jsonify({"doctor_id": doctor_id, "date": day.isoformat(), "items": slots})


# =========================================================================== API: queue and encounters

@bp.get("/api/v1/opd/queue/<int:department_id>")
@requires(QUEUE_DISPLAY)
def api_queue(department_id: int):
    return jsonify(services.queue_board(db_session(), department_id))


@bp.post("/api/v1/opd/queue/<int:department_id>/call-next")
@requires(QUEUE_CALL)
def api_call_next(department_id: int):
    data = CallNextIn().load(request.get_json(silent=True) or {})
    session = db_session()
    encounter = services.call_next(session, current_actor(), department_id, doctor_id=data.get("doctor_id"))
    if encounter is None:
        return jsonify({"encounter": None, "message": "Nobody is waiting."})
    return jsonify({"encounter": services.encounter_dict(session, encounter, clinical=False)})


@bp.get("/api/v1/encounters/<int:encounter_id>")
@requires(ENCOUNTER_VIEW)
def api_encounter(encounter_id: int):
    """Doctors, nurses and admins get the whole encounter (audited as a clinical read);
    reception gets the queue fields only."""
    session = db_session()
    clinical = current_actor().has_role(*services.CLINICAL_READ_ROLES)
    encounter = services.get_encounter(session, current_actor(), encounter_id, clinical=clinical)
    return jsonify(services.encounter_dict(session, encounter, clinical=clinical))


@bp.post("/api/v1/encounters/<int:encounter_id>/start")
@requires(CONSULT)
def api_start(encounter_id: int):
    session = db_session()
    encounter = services.start_consultation(session, current_actor(), encounter_id)
    return jsonify(services.encounter_dict(session, encounter, clinical=False))


@bp.post("/api/v1/encounters/<int:encounter_id>/left")
@requires(QUEUE_MANAGE)
def api_left(encounter_id: int):
    data = LeftIn().load(request.get_json(silent=True) or {})
    session = db_session()
    encounter = services.mark_left(session, current_actor(), encounter_id, data.get("reason"))
    return jsonify(services.encounter_dict(session, encounter, clinical=False))


@bp.post("/api/v1/encounters/<int:encounter_id>/addenda")
@requires(ADDENDUM_WRITE)
def api_addendum(encounter_id: int):
    data = AddendumIn().load(json_body())
    addendum = services.add_addendum(db_session(), current_actor(), encounter_id, data.get("text"))
    return jsonify(addendum_json(addendum, current_actor().username)), 201


@bp.get("/api/v1/patients/<int:patient_id>/record")
@requires(CLINICAL_READ)
def api_record(patient_id: int):
    session = db_session()
    record = services.get_clinical_record(session, current_actor(), patient_id)
    record.update({"lab_results": []} | _record_sections(session, current_actor(), patient_id))
    return jsonify(record)


# =========================================================================== pages: check-in

def _checkin_context(**context):
    session = db_session()
    departments = [d for d in services.list_departments(session) if d.kind == "clinical"] or \
        services.list_departments(session)
    doctors = services.list_doctors(session)
    today_appointments = services.list_appointments(session, day=local_today(session), status="booked")
    patients = _patients({a.patient_id for a in today_appointments})
    context.setdefault("values", {})
    context.setdefault("errors", {})
    return render_template("opd/checkin.html", departments=departments, doctors=doctors,
                           appointments=today_appointments, appointment_patients=patients,
                           doctor_names={d.id: d.full_name for d in doctors},
                           department_names={d.id: d.name for d in departments},
                           payer_classes=PAYER_CLASSES, tz=_tz(), **context)


@bp.get("/opd/checkin")
@requires(CHECKIN)
def checkin_page():
    session = db_session()
    done = None
    encounter_id = _int_arg("done")
    if encounter_id:
        encounter = session.get(Encounter, encounter_id)
        if encounter is not None:
            done = services.encounter_dict(session, encounter, clinical=False)
            patient = session.get(Patient, encounter.patient_id)
            done["patient"] = {"id": patient.id, "mrn": patient.mrn, "name": patient.name}
    return _checkin_context(done=done)


def _patient_from_form(form, errors: dict) -> int | None:
    """The patient chosen in the picker (patient_id), or the one patient matching the typed
    MRN / CNIC / mobile / name when scripts are off."""
    raw = (form.get("patient_id") or "").strip()
    if raw.isdigit():
        return int(raw)
    q = (form.get("patient_q") or "").strip()
    if not q:
        errors["patient_id"] = ["Choose the patient."]
        return None
    items, total = search_patients(db_session(), current_actor(), q, 1, 2)
    if total == 1:
        return items[0].id
    errors["patient_id"] = ["No patient matches." if total == 0 else
                            "More than one patient matches; type the MRN or choose from the list."]
    return None


@bp.post("/opd/checkin")
@requires(CHECKIN)
def checkin_submit():
    form = request.form
    errors: dict = {}
    patient_id = _patient_from_form(form, errors)
    department_id = _int_arg("department_id", form)
    if department_id is None:
        errors["department_id"] = ["Choose the department."]
    if errors:
        mark_failed()
        return _checkin_context(values=form.to_dict(), errors=errors, message="Check the fields below."), 422
    session, actor = db_session(), current_actor()
    try:
        encounter = services.check_in(session, actor, patient_id=patient_id, department_id=department_id,
                                      doctor_id=_int_arg("doctor_id", form),
                                      appointment_id=_int_arg("appointment_id", form),
                                      payer_class=(form.get("payer_class") or "cash").strip())
    except (Invalid, Conflict, NotFound) as err:
        mark_failed()
        return _checkin_context(values=form.to_dict(), errors=_flat_errors(err.fields), message=err.message,
                                existing_token=(err.fields or {}).get("token")), err.http_status
    # The app's composition layer starts the OPD pathway for the visit (journeys/opd.py).
    events.publish(session, actor, "opd.checked_in", encounter=encounter)
    return redirect(url_for("opd.checkin_page", done=encounter.id))


def _flat_errors(fields: dict) -> dict:
    return {k: v for k, v in (fields or {}).items() if isinstance(v, (list, str))}


# =========================================================================== pages: doctor's queue

@bp.get("/opd/doctor")
@requires(QUEUE_WORK)
def doctor_page():
    session = db_session()
    actor = current_actor()
    departments = services.list_departments(session)
    department_id = _int_arg("department_id") or _default_department(departments)
    queue, flags, patients, mine = [], {}, {}, []
    department = None
    if department_id is not None:
        department = next((d for d in departments if d.id == department_id), None)
        if department is None:
            raise NotFound(f"No active department with id {department_id}.", code="department_not_found")
        queue = services.list_queue(session, department_id)
        flags = services.latest_flags(session, [e.id for e in queue])
        patients = _patients({e.patient_id for e in queue})
        mine = [e for e in queue if e.status in ("called", "in_consultation")
                and (e.doctor_id == actor.user_id or not actor.has_role("doctor"))]
    waiting = [e for e in queue if e.status == "waiting"]
    return render_template("opd/doctor.html", departments=departments, department=department, waiting=waiting,
                           mine=mine, flags=flags, patients=patients, flag_labels=services.FLAG_LABELS,
                           doctor_names=_doctor_names({e.doctor_id for e in queue}),
                           today=local_today(session), age_of=age_text, tz=_tz(),
                           can_call=_can(QUEUE_CALL), can_start=_can(CONSULT), can_read=_can(CLINICAL_READ))


@bp.post("/opd/queue/<int:department_id>/call-next")
@requires(QUEUE_CALL)
def call_next_submit(department_id: int):
    encounter = services.call_next(db_session(), current_actor(), department_id)
    if encounter is None:
        flash("Nobody is waiting.", "warning")
    else:
        flash(f"Token {encounter.token_no} called.")
    return redirect(url_for("opd.doctor_page", department_id=department_id))


@bp.post("/opd/encounters/<int:encounter_id>/start")
@requires(CONSULT)
def start_submit(encounter_id: int):
    encounter = services.start_consultation(db_session(), current_actor(), encounter_id)
    flash(f"Consultation started for token {encounter.token_no}.")
    return redirect(url_for("opd.doctor_page", department_id=encounter.department_id))


@bp.post("/opd/encounters/<int:encounter_id>/left")
@requires(QUEUE_MANAGE)
def left_submit(encounter_id: int):
    encounter = services.mark_left(db_session(), current_actor(), encounter_id, request.form.get("reason"))
    flash(f"Token {encounter.token_no} marked as left.")
    target = request.form.get("back")
    if target == "checkin":
        return redirect(url_for("opd.checkin_page"))
    return redirect(url_for("opd.doctor_page", department_id=encounter.department_id))


# =========================================================================== pages: display

@bp.get("/opd/display")
@requires(QUEUE_DISPLAY)
def display_index():
    departments = [d for d in services.list_departments(db_session()) if d.kind == "clinical"]
    return render_template("opd/display_index.html", departments=departments)


@bp.get("/opd/display/<int:department_id>")
@requires(QUEUE_DISPLAY)
def display_page(department_id: int):
    board = services.queue_board(db_session(), department_id)
    return render_template("opd/display.html", board=board, department_id=department_id)


# =========================================================================== pages: appointments

def _appointments_context(**context):
    session = db_session()
    departments = services.list_departments(session)
    doctors = services.list_doctors(session)
    day = context.pop("day", None) or _date_arg(default=local_today(session))
    doctor_id = context.pop("doctor_id", None) or _int_arg("doctor_id")
    department_id = context.pop("department_id", None) or _int_arg("department_id")
    items = services.list_appointments(session, day=day, doctor_id=doctor_id, department_id=department_id)
    patients = _patients({a.patient_id for a in items})
    slots = []
    if doctor_id:
        try:
            slots = services.free_slots(session, doctor_id, day, department_id=department_id)
        except NotFound:
            slots = []
    return render_template("opd/appointments.html", day=day, doctor_id=doctor_id, department_id=department_id,
                           departments=departments, doctors=doctors, items=items, patients=patients,
                           slots=slots, doctor_names={d.id: d.full_name for d in doctors},
                           department_names={d.id: d.name for d in departments},
                           can_book=_can(APPOINTMENT_BOOK), now=services.utcnow(), tz=_tz(),
                           values=context.pop("values", {}), errors=context.pop("errors", {}),
                           prev_day=day - timedelta(days=1), next_day=day + timedelta(days=1), **context)


@bp.get("/opd/appointments")
@requires(APPOINTMENT_VIEW)
def appointments_page():
    return _appointments_context()


@bp.post("/opd/appointments")
@requires(APPOINTMENT_BOOK)
def book_submit():
    form = request.form
    errors: dict = {}
    patient_id = _patient_from_form(form, errors)
    doctor_id = _int_arg("doctor_id", form)
    department_id = _int_arg("department_id", form)
    starts_at = (form.get("starts_at") or "").strip()
    for name, value in (("doctor_id", doctor_id), ("department_id", department_id), ("starts_at", starts_at)):
        if not value:
            errors[name] = ["Required."]
    day = _form_day(starts_at)
    if not errors:
        try:
            appointment = services.book_appointment(db_session(), current_actor(), patient_id=patient_id,
                                                    doctor_id=doctor_id, department_id=department_id,
                                                    starts_at=starts_at)
        except (Invalid, Conflict, NotFound) as err:
            errors = _flat_errors(err.fields) or {"starts_at": [err.message]}
        else:
            local = appointment.starts_at.astimezone(_tz())
            flash(f"Appointment booked for {local:%a %d %b %Y %H:%M}.")
            return redirect(url_for("opd.appointments_page", date=local.date().isoformat(),
                                    doctor_id=doctor_id, department_id=department_id))
    mark_failed()
    return _appointments_context(values=form.to_dict(), errors=errors, day=day, doctor_id=doctor_id,
                                 department_id=department_id, message="The appointment was not booked."), 422


def _form_day(starts_at: str) -> date | None:
    try:
        return date.fromisoformat(starts_at[:10]) if starts_at else None
    except ValueError:
        return None


def _appointment_action(appointment_id: int, action):
    session = db_session()
    appointment = services.get_appointment(session, appointment_id)
    back = url_for("opd.appointments_page", date=appointment.appointment_date.isoformat())
    try:
        action(session, appointment_id)
    except (Invalid, Conflict) as err:
        mark_failed()
        messages = [m for v in _flat_errors(err.fields).values() for m in (v if isinstance(v, list) else [v])]
        flash(" ".join(messages) or err.message, "error")
        return redirect(back)
    return redirect(back)


@bp.post("/opd/appointments/<int:appointment_id>/cancel")
@requires(APPOINTMENT_BOOK)
def cancel_submit(appointment_id: int):
    def action(session, appointment_id):
        services.cancel_appointment(session, current_actor(), appointment_id, request.form.get("reason"))
        flash("Appointment cancelled.")
    return _appointment_action(appointment_id, action)


@bp.post("/opd/appointments/<int:appointment_id>/no-show")
@requires(APPOINTMENT_BOOK)
def no_show_submit(appointment_id: int):
    def action(session, appointment_id):
        services.mark_no_show(session, current_actor(), appointment_id)
        flash("Marked as no-show.")
    return _appointment_action(appointment_id, action)


@bp.post("/opd/appointments/<int:appointment_id>/reschedule")
@requires(APPOINTMENT_BOOK)
def reschedule_submit(appointment_id: int):
    def action(session, appointment_id):
        a = services.reschedule_appointment(session, current_actor(), appointment_id, request.form.get("starts_at"))
        flash(f"Appointment moved to {a.starts_at.astimezone(_tz()):%a %d %b %Y %H:%M}.")
    return _appointment_action(appointment_id, action)


# =========================================================================== pages: schedules

@bp.get("/opd/schedules")
@requires(SCHEDULE_VIEW)
def schedules_page(values=None, errors=None, message=None, status=200):
    session = db_session()
    departments = services.list_departments(session)
    doctors = services.list_doctors(session)
    items = services.list_schedules(session)
    return render_template("opd/schedules.html", items=items, departments=departments, doctors=doctors,
                           doctor_names={d.id: d.full_name for d in doctors},
                           department_names={d.id: d.name for d in departments},
                           weekday_names=WEEKDAY_NAMES, can_manage=_can(SCHEDULE_MANAGE),
                           values=values or {}, errors=errors or {}, message=message), status


@bp.post("/opd/schedules")
@requires(SCHEDULE_MANAGE)
def schedule_submit():
    form = request.form
    data = {"doctor_id": form.get("doctor_id") or None, "department_id": form.get("department_id") or None,
            "weekdays": form.getlist("weekdays"), "start_time": form.get("start_time"),
            "end_time": form.get("end_time"), "slot_minutes": form.get("slot_minutes"),
            "daily_limit": form.get("daily_limit"), "room": form.get("room")}
    try:
        if (data["department_id"] or "").isdigit():
            _scope_department(int(data["department_id"]))
        services.create_schedule(db_session(), current_actor(), data)
    except (Invalid, Conflict, NotFound) as err:
        mark_failed()
        values = form.to_dict()
        values["weekdays"] = form.getlist("weekdays")
        return schedules_page(values=values, errors=_flat_errors(err.fields), message=err.message,
                              status=err.http_status)
    flash("Schedule added.")
    return redirect(url_for("opd.schedules_page"))


@bp.post("/opd/schedules/<int:schedule_id>/deactivate")
@requires(SCHEDULE_MANAGE)
def schedule_deactivate_submit(schedule_id: int):
    session = db_session()
    schedule = session.get(DoctorSchedule, schedule_id)
    if schedule is None:
        raise NotFound(f"No schedule with id {schedule_id}.", code="schedule_not_found")
    _scope_department(schedule.department_id)
    services.deactivate_schedule(session, current_actor(), schedule_id)
    flash("Schedule stopped.")
    return redirect(url_for("opd.schedules_page"))


# =========================================================================== pages: clinical record

@bp.get("/patients/<int:patient_id>/record")
@requires(CLINICAL_READ)
def record_page(patient_id: int):
    session = db_session()
    actor = current_actor()
    record = services.get_clinical_record(session, actor, patient_id)
    lab_results = _record_sections(session, actor, patient_id).get("lab_results", [])
    return render_template("opd/record.html", record=record, patient=record["patient"], lab_results=lab_results,
                           flag_labels=services.FLAG_LABELS, sparklines=_sparklines(record["vitals_trend"]),
                           can_addend=_can(ADDENDUM_WRITE), tz=_tz(), frequencies=FREQUENCIES)


@bp.post("/opd/encounters/<int:encounter_id>/addenda")
@requires(ADDENDUM_WRITE)
def addendum_submit(encounter_id: int):
    session = db_session()
    encounter = services.get_encounter(session, current_actor(), encounter_id, clinical=False)
    try:
        services.add_addendum(session, current_actor(), encounter_id, request.form.get("text"))
    except (Invalid, Conflict) as err:
        mark_failed()
        flash(" ".join(m for v in _flat_errors(err.fields).values() for m in v) or err.message, "error")
    else:
        flash("Addendum signed and added.")
    return redirect(url_for("opd.record_page", patient_id=encounter.patient_id) + f"#visit-{encounter_id}")


# --------------------------------------------------------------------------- sparklines

SPARK_WIDTH, SPARK_HEIGHT = 160, 36


def _sparkline(values: list[float | None]) -> dict | None:
    """An SVG polyline (points attribute) for the non-empty values, oldest to newest."""
    points = [(i, v) for i, v in enumerate(values) if v is not None]
    if len(points) < 2:
        return None
    low, high = min(v for _, v in points), max(v for _, v in points)
    span = (high - low) or 1
    last_index = len(values) - 1 or 1
    coords = " ".join(f"{2 + i * (SPARK_WIDTH - 4) / last_index:.1f},"
                      f"{SPARK_HEIGHT - 3 - (v - low) * (SPARK_HEIGHT - 6) / span:.1f}" for i, v in points)
    return {"points": coords, "low": low, "high": high, "last": points[-1][1],
            "width": SPARK_WIDTH, "height": SPARK_HEIGHT}


def _sparklines(trend: list[dict]) -> dict:
    return {key: _sparkline([row.get(key) for row in trend])
            for key in ("pulse", "temperature_c", "systolic_bp", "diastolic_bp", "spo2", "weight_kg")}
