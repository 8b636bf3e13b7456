"""OPD services: doctor schedules and appointments, check-in with queue tokens, the queue
(call next), triage vitals, the signed consultation (diagnoses, prescriptions, lab test
requests, follow-up, referral), addenda, and the patient's clinical record.

The only code that writes the opd_* tables. Functions flush, never commit. Every write is
audited, and so is every read of clinical data (audit detail: ids and codes only, never
names or clinical text). Times are stored in UTC; "today", visit dates and schedule times
are local (HMS_TIMEZONE).

Locks (PostgreSQL; on SQLite every write transaction is IMMEDIATE, which serialises
writers and gives the same guarantees):
- booking and rescheduling lock the schedule row: the daily-limit count and the slot
  check see every booking committed before ours; a partial unique index on (doctor,
  start time) of active appointments is the backstop;
- appointment changes (reschedule, cancel, no-show, check-in) lock the appointment row;
- check-in draws the token from the locked counter `token:<scope>:<date>` (hms.db.next_number)
  and a partial unique index allows one open encounter per patient, department and day;
- queue moves, triage, consultation, completion and addenda lock the encounter row;
  call-next takes the first waiting row with FOR UPDATE SKIP LOCKED, so two doctors calling
  at once get two different patients.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from departments.opd import icd10, notify
from departments.opd.models import (ACTIVE_APPOINTMENT_STATUSES, FREQUENCIES, OPEN_ENCOUNTER_STATUSES,
                                    PAYER_CLASSES, PRIORITIES, ROUTES, Appointment, ClinicalNote,
                                    Diagnosis, DoctorSchedule, Encounter, LabTestRequest, NoteAddendum,
                                    PrescriptionItem, Vitals)
from hms import audit
from hms.audit import Actor
from hms.auth.models import User, UserRole
from hms.db import config_of, next_number, utcnow
from hms.errors import Conflict, Forbidden, Invalid, NotFound, record_id
from hms.org.models import Department
from hms.patients.models import Patient
from hms.patients.services import get_patient, local_today, patient_banner

CLINICAL_READ_ROLES = ("doctor", "nurse", "admin")
# Encounters in which the queue still moves (triage, call, consultation).
ACTIVE_QUEUE_STATUSES = ("waiting", "called", "in_consultation")
RECORD_MAX_VISITS = 50
RECORD_MAX_VITALS = 200
RECORD_MAX_PRESCRIPTIONS = 300


# =========================================================================== helpers

def _as_id(value: Any, what: str = "record") -> int:
    return record_id(value, what)


def _tz(session: Session):
    return config_of(session).tz


def local_now(session: Session) -> datetime:
    return datetime.now(_tz(session))


def _local_date_of(session: Session, moment: datetime) -> date:
    return moment.astimezone(_tz(session)).date()


def parse_local_datetime(session: Session, value: Any, field: str = "starts_at") -> datetime:
    """A local ISO date-time ("2025-05-03T09:15", as a datetime-local input sends it), or
    one with an offset; returned as aware UTC. Invalid names the field."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise Invalid("Some fields are not valid.",
                          fields={field: ["Must be a date and time (YYYY-MM-DDTHH:MM)."]}) from None
    else:
        raise Invalid("Some fields are not valid.", fields={field: ["Required."]})
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_tz(session))
    return moment.astimezone(timezone.utc)


def parse_date(value: Any, field: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and value.strip():
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise Invalid("Some fields are not valid.", fields={field: ["Must be a date (YYYY-MM-DD)."]})


def _text(value: Any, field: str, errors: dict, *, max_length: int, required: bool = False) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            errors[field] = ["Required."]
        return None
    if not isinstance(value, str):
        errors[field] = ["Must be text."]
        return None
    value = value.strip()
    if len(value) > max_length:
        errors[field] = [f"Must be at most {max_length} characters."]
        return None
    return value


def _department(session: Session, department_id: Any) -> Department:
    department = session.get(Department, _as_id(department_id, "department"))
    if department is None or not department.active:
        raise NotFound(f"No active department with id {department_id}.", code="department_not_found")
    return department


def _is_doctor(session: Session, user_id: int) -> bool:
    return session.scalar(select(UserRole.user_id).where(UserRole.user_id == user_id,
                                                         UserRole.role == "doctor")) is not None


def _doctor(session: Session, doctor_id: Any, *, lock: bool = False) -> User:
    stmt = select(User).where(User.id == _as_id(doctor_id, "doctor"))
    if lock:
        stmt = stmt.with_for_update()
    doctor = session.scalar(stmt)
    if doctor is None or not doctor.active or not _is_doctor(session, doctor.id):
        raise NotFound(f"No active doctor with id {doctor_id}.", code="doctor_not_found")
    return doctor


def list_doctors(session: Session, department_id: int | None = None) -> list[User]:
    """Active users with the doctor role (of a department when given), by name. Reads only."""
    stmt = (select(User).join(UserRole, UserRole.user_id == User.id)
            .where(UserRole.role == "doctor", User.active.is_(True)).order_by(User.full_name, User.id))
    users = list(session.scalars(stmt))
    if department_id is not None:
        scheduled = set(session.scalars(select(DoctorSchedule.doctor_id).where(
            DoctorSchedule.department_id == department_id, DoctorSchedule.active.is_(True))))
        users = [u for u in users if department_id in u.department_ids or u.id in scheduled]
    return users


def list_departments(session: Session, *, active_only: bool = True) -> list[Department]:
    stmt = select(Department).order_by(Department.name)
    if active_only:
        stmt = stmt.where(Department.active.is_(True))
    return list(session.scalars(stmt))


def _names(session: Session, user_ids: Iterable[int | None]) -> dict[int, str]:
    ids = {i for i in user_ids if i}
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.full_name).where(User.id.in_(ids))).all())


# =========================================================================== schedules

_TIME_RE = re.compile(r"^\d{1,2}:\d{2}$")


def _parse_time(value: Any, field: str, errors: dict) -> time | None:
    if isinstance(value, time):
        return value
    if isinstance(value, str) and _TIME_RE.match(value.strip()):
        hours, minutes = (int(p) for p in value.strip().split(":"))
        if hours < 24 and minutes < 60:
            return time(hours, minutes)
    errors[field] = ["Must be a time of day (HH:MM)."]
    return None


def _int_in(value: Any, field: str, errors: dict, low: int, high: int, *, required: bool = True) -> int | None:
    if value is None or value == "":
        if required:
            errors[field] = ["Required."]
        return None
    if isinstance(value, bool):
        errors[field] = ["Must be a whole number."]
        return None
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        errors[field] = ["Must be a whole number."]
        return None
    if number != number.to_integral_value():
        errors[field] = ["Must be a whole number."]
        return None
    if not low <= number <= high:
        errors[field] = [f"Must be between {low} and {high}."]
        return None
    return int(number)


def _weekdays(value: Any, errors: dict) -> list[int] | None:
    names = {n.lower(): i for i, n in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))}
    if not isinstance(value, (list, tuple)) or not value:
        errors["weekdays"] = ["Choose at least one weekday (0 = Monday ... 6 = Sunday)."]
        return None
    days = set()
    for item in value:
        if isinstance(item, str) and item.strip()[:3].lower() in names:
            days.add(names[item.strip()[:3].lower()])
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 6:
            days.add(item)
        elif isinstance(item, str) and item.strip().isdigit() and 0 <= int(item) <= 6:
            days.add(int(item))
        else:
            errors["weekdays"] = ["Weekdays are 0 (Monday) to 6 (Sunday), or Mon ... Sun."]
            return None
    return sorted(days)


def create_schedule(session: Session, actor: Actor, data: dict) -> DoctorSchedule:
    """Add a doctor's OPD session: {doctor_id, department_id, weekdays, start_time "09:00",
    end_time "14:00", slot_minutes, daily_limit, room?}.

    Locks the doctor's user row, so two schedules for one doctor are created one after
    the other; a schedule overlapping another active one of the same doctor (same weekday,
    overlapping hours, any department) is refused (Conflict `schedule_overlap`). The
    session must hold at least one slot. The daily limit caps the appointments booked in
    the session; a limit above the number of slots simply never bites.
    Writes the schedule and audit "opd.schedule.create".
    """
    if not isinstance(data, dict):
        raise Invalid("Send the schedule as an object of fields.")
    errors: dict = {}
    weekdays = _weekdays(data.get("weekdays"), errors)
    start = _parse_time(data.get("start_time"), "start_time", errors)
    end = _parse_time(data.get("end_time"), "end_time", errors)
    slot = _int_in(data.get("slot_minutes"), "slot_minutes", errors, 5, 240)
    limit = _int_in(data.get("daily_limit"), "daily_limit", errors, 1, 500)
    room = _text(data.get("room"), "room", errors, max_length=40)
    if start and end and end <= start:
        errors["end_time"] = ["Must be after the start time."]
    if not errors and start and end and slot and (_minutes(end) - _minutes(start)) < slot:
        errors["slot_minutes"] = ["The session is shorter than one slot."]
    if data.get("doctor_id") in (None, ""):
        errors["doctor_id"] = ["Required."]
    if data.get("department_id") in (None, ""):
        errors["department_id"] = ["Required."]
    if errors:
        raise Invalid("Some fields are not valid.", fields=errors)
    doctor = _doctor(session, data["doctor_id"], lock=True)
    department = _department(session, data["department_id"])
    for other in session.scalars(select(DoctorSchedule).where(DoctorSchedule.doctor_id == doctor.id,
                                                              DoctorSchedule.active.is_(True))):
        if set(other.weekdays) & set(weekdays) and other.start_time < end and start < other.end_time:
            message = (f"This overlaps the doctor's schedule #{other.id} "
                       f"({other.start_time:%H:%M}-{other.end_time:%H:%M}).")
            raise Conflict(message, code="schedule_overlap", fields={"start_time": [message]})
    schedule = DoctorSchedule(doctor_id=doctor.id, department_id=department.id, weekdays=weekdays,
                              start_time=start, end_time=end, slot_minutes=slot, daily_limit=limit,
                              room=room, created_by_id=actor.user_id)
    session.add(schedule)
    session.flush()
    audit.record(session, actor, "opd.schedule.create", "opd_schedule", schedule.id,
                 detail={"doctor_id": doctor.id, "department_id": department.id, "weekdays": weekdays})
    return schedule


def deactivate_schedule(session: Session, actor: Actor, schedule_id: Any) -> DoctorSchedule:
    """Stop offering a schedule's slots (booked appointments stay). Locks the schedule row.
    Writes audit "opd.schedule.deactivate"."""
    schedule = session.scalar(select(DoctorSchedule).where(
        DoctorSchedule.id == _as_id(schedule_id, "schedule")).with_for_update())
    if schedule is None:
        raise NotFound(f"No schedule with id {schedule_id}.", code="schedule_not_found")
    if schedule.active:
        schedule.active = False
        session.flush()
        audit.record(session, actor, "opd.schedule.deactivate", "opd_schedule", schedule.id)
    return schedule


def list_schedules(session: Session, *, doctor_id: int | None = None, department_id: int | None = None,
                   active_only: bool = True) -> list[DoctorSchedule]:
    stmt = select(DoctorSchedule).order_by(DoctorSchedule.doctor_id, DoctorSchedule.start_time,
                                           DoctorSchedule.id)
    if doctor_id is not None:
        stmt = stmt.where(DoctorSchedule.doctor_id == doctor_id)
    if department_id is not None:
        stmt = stmt.where(DoctorSchedule.department_id == department_id)
    if active_only:
        stmt = stmt.where(DoctorSchedule.active.is_(True))
    return list(session.scalars(stmt))


def _minutes(t: time) -> int:
    return t.hour * 60 + t.minute


def _slot_starts(schedule: DoctorSchedule, day: date, tz) -> list[datetime]:
    """The local start times of a schedule's slots on `day` (aware, local)."""
    if not schedule.covers(day.weekday()):
        return []
    first, last = _minutes(schedule.start_time), _minutes(schedule.end_time)
    return [datetime.combine(day, time(m // 60, m % 60), tzinfo=tz)
            for m in range(first, last - schedule.slot_minutes + 1, schedule.slot_minutes)]


def _schedule_for(session: Session, doctor_id: int, department_id: int, starts_local: datetime,
                  *, lock: bool) -> DoctorSchedule | None:
    """The active schedule of this doctor and department with a slot starting exactly then."""
    stmt = select(DoctorSchedule).where(DoctorSchedule.doctor_id == doctor_id,
                                        DoctorSchedule.department_id == department_id,
                                        DoctorSchedule.active.is_(True)).order_by(DoctorSchedule.id)
    if lock:
        stmt = stmt.with_for_update()
    for schedule in session.scalars(stmt):
        if starts_local in _slot_starts(schedule, starts_local.date(), starts_local.tzinfo):
            return schedule
    return None


def free_slots(session: Session, doctor_id: Any, day: date, *, department_id: int | None = None) -> list[dict]:
    """The doctor's bookable slots on local `day`: in an active schedule, not in the past,
    not taken, and only while the schedule's daily limit is not reached. Reads only.
    Each slot: {starts_at (local ISO), ends_at, schedule_id, department_id, room}."""
    doctor = _doctor(session, doctor_id)
    tz = _tz(session)
    now = utcnow()
    stmt = select(DoctorSchedule).where(DoctorSchedule.doctor_id == doctor.id, DoctorSchedule.active.is_(True))
    if department_id is not None:
        stmt = stmt.where(DoctorSchedule.department_id == department_id)
    schedules = [s for s in session.scalars(stmt.order_by(DoctorSchedule.start_time)) if s.covers(day.weekday())]
    if not schedules:
        return []
    booked = session.execute(select(Appointment.schedule_id, Appointment.starts_at).where(
        Appointment.doctor_id == doctor.id, Appointment.appointment_date == day,
        Appointment.status.in_(ACTIVE_APPOINTMENT_STATUSES))).all()
    taken = {starts for _, starts in booked}
    per_schedule: dict[int, int] = {}
    for schedule_id, _ in booked:
        per_schedule[schedule_id] = per_schedule.get(schedule_id, 0) + 1
    slots = []
    for schedule in schedules:
        if per_schedule.get(schedule.id, 0) >= schedule.daily_limit:
            continue
        for start in _slot_starts(schedule, day, tz):
            start_utc = start.astimezone(timezone.utc)
            if start_utc < now or start_utc in taken:
                continue
            end = start + timedelta(minutes=schedule.slot_minutes)
            slots.append({"starts_at": start.replace(tzinfo=None).isoformat(timespec="minutes"),
                          "ends_at": end.replace(tzinfo=None).isoformat(timespec="minutes"),
                          "schedule_id": schedule.id, "department_id": schedule.department_id,
                          "room": schedule.room})
    return slots


# =========================================================================== appointments

def _locked_appointment(session: Session, appointment_id: Any) -> Appointment:
    appointment = session.scalar(select(Appointment).where(
        Appointment.id == _as_id(appointment_id, "appointment")).with_for_update())
    if appointment is None:
        raise NotFound(f"No appointment with id {appointment_id}.", code="appointment_not_found")
    return appointment


def get_appointment(session: Session, appointment_id: Any) -> Appointment:
    appointment = session.get(Appointment, _as_id(appointment_id, "appointment"))
    if appointment is None:
        raise NotFound(f"No appointment with id {appointment_id}.", code="appointment_not_found")
    return appointment


def _claim_slot(session: Session, *, doctor_id: int, department_id: int, starts_at: datetime,
                exclude_id: int | None = None) -> tuple[DoctorSchedule, datetime]:
    """Check that `starts_at` is a free slot of the doctor in the department; return its
    schedule (locked) and end time. Raises Invalid (past, outside the schedule) or
    Conflict (taken, daily limit reached)."""
    tz = _tz(session)
    local = starts_at.astimezone(tz)
    if starts_at < utcnow():
        raise Invalid("Some fields are not valid.", code="slot_in_past",
                      fields={"starts_at": ["This time has passed; choose a later slot."]})
    schedule = _schedule_for(session, doctor_id, department_id, local, lock=True)
    if schedule is None:
        message = (f"The doctor has no slot in this department at {local:%a %d %b %Y %H:%M}. "
                   "Choose one of the free slots.")
        raise Invalid("Some fields are not valid.", code="outside_schedule", fields={"starts_at": [message]})
    active = select(Appointment).where(Appointment.status.in_(ACTIVE_APPOINTMENT_STATUSES))
    if exclude_id is not None:
        active = active.where(Appointment.id != exclude_id)
    taken = session.scalar(active.where(Appointment.doctor_id == doctor_id,
                                        Appointment.starts_at == starts_at).limit(1))
    if taken is not None:
        message = f"The {local:%H:%M} slot is already booked."
        raise Conflict(message, code="slot_taken", fields={"starts_at": [message]})
    count = session.scalar(select(func.count()).select_from(active.where(
        Appointment.schedule_id == schedule.id, Appointment.appointment_date == local.date()).subquery()))
    if count >= schedule.daily_limit:
        message = f"The doctor's limit of {schedule.daily_limit} appointments on {local:%d %b} is reached."
        raise Conflict(message, code="daily_limit_reached", fields={"starts_at": [message]})
    return schedule, starts_at + timedelta(minutes=schedule.slot_minutes)


def _flush_slot(session: Session, change) -> None:
    """Apply and flush in a savepoint: the unique index on (doctor, start) of active
    appointments refuses a booking that raced ours past the checks."""
    try:
        with session.begin_nested():
            change()
            session.flush()
    except IntegrityError:
        message = "This slot was booked a moment ago; choose another."
        raise Conflict(message, code="slot_taken", fields={"starts_at": [message]}) from None


def book_appointment(session: Session, actor: Actor, *, patient_id: Any, doctor_id: Any,
                     department_id: Any, starts_at: Any) -> Appointment:
    """Book a slot: {patient_id, doctor_id, department_id, starts_at (local ISO)}.

    Locks the schedule row of the slot (see the module docstring). Refused: a time that has
    passed or is not a slot of the doctor's active schedule in that department (Invalid
    `slot_in_past` / `outside_schedule`), a slot already booked (Conflict `slot_taken`), the
    schedule's daily limit reached (Conflict `daily_limit_reached`), and a second active
    appointment of the patient with the same doctor that day (Conflict `already_booked`).
    Writes the appointment and audit "opd.appointment.book".
    """
    patient = get_patient(session, actor, patient_id, audit_read=False)
    doctor = _doctor(session, doctor_id)
    department = _department(session, department_id)
    moment = parse_local_datetime(session, starts_at)
    schedule, ends_at = _claim_slot(session, doctor_id=doctor.id, department_id=department.id, starts_at=moment)
    day = _local_date_of(session, moment)
    same_day = session.scalar(select(Appointment).where(
        Appointment.patient_id == patient.id, Appointment.doctor_id == doctor.id,
        Appointment.appointment_date == day, Appointment.status.in_(ACTIVE_APPOINTMENT_STATUSES)).limit(1))
    if same_day is not None:
        message = f"The patient already has an appointment with this doctor that day (#{same_day.id})."
        raise Conflict(message, code="already_booked", fields={"starts_at": [message]})
    appointment = Appointment(patient_id=patient.id, doctor_id=doctor.id, department_id=department.id,
                              schedule_id=schedule.id, starts_at=moment, ends_at=ends_at,
                              appointment_date=day, booked_by_id=actor.user_id)
    _flush_slot(session, lambda: session.add(appointment))
    audit.record(session, actor, "opd.appointment.book", "opd_appointment", appointment.id,
                 patient_id=patient.id, detail={"doctor_id": doctor.id, "department_id": department.id,
                                                "starts_at": moment.isoformat()})
    return appointment


def reschedule_appointment(session: Session, actor: Actor, appointment_id: Any, starts_at: Any) -> Appointment:
    """Move a booked appointment to another free slot of the same doctor and department.

    Locks the appointment and the new slot's schedule. Same refusals as booking; only a
    booked appointment can move (Conflict `not_booked`). Writes the new time (reschedule
    count + 1) and audit "opd.appointment.reschedule" with the old and new times.
    """
    appointment = _locked_appointment(session, appointment_id)
    if appointment.status != "booked":
        raise Conflict(f"Only a booked appointment can be rescheduled; this one is {appointment.status}.",
                       code="not_booked")
    moment = parse_local_datetime(session, starts_at)
    if moment == appointment.starts_at:
        raise Invalid("Some fields are not valid.", fields={"starts_at": ["This is the current time of the appointment."]})
    schedule, ends_at = _claim_slot(session, doctor_id=appointment.doctor_id,
                                    department_id=appointment.department_id, starts_at=moment,
                                    exclude_id=appointment.id)
    old = appointment.starts_at

    def change():
        appointment.starts_at, appointment.ends_at = moment, ends_at
        appointment.appointment_date = _local_date_of(session, moment)
        appointment.schedule_id = schedule.id
        appointment.reschedule_count += 1

    _flush_slot(session, change)
    audit.record(session, actor, "opd.appointment.reschedule", "opd_appointment", appointment.id,
                 patient_id=appointment.patient_id, detail={"from": old.isoformat(), "to": moment.isoformat()})
    return appointment


def cancel_appointment(session: Session, actor: Actor, appointment_id: Any, reason: Any) -> Appointment:
    """Cancel a booked appointment; a reason is required (at most 300 characters). Locks
    the appointment. Writes status cancelled and audit "opd.appointment.cancel" (the
    reason stays in the table, not in the audit detail)."""
    errors: dict = {}
    reason = _text(reason, "reason", errors, max_length=300, required=True)
    if errors:
        raise Invalid("Give the reason for cancelling.", fields=errors)
    appointment = _locked_appointment(session, appointment_id)
    if appointment.status != "booked":
        raise Conflict(f"Only a booked appointment can be cancelled; this one is {appointment.status}.",
                       code="not_booked")
    appointment.status = "cancelled"
    appointment.cancel_reason = reason
    appointment.cancelled_at, appointment.cancelled_by_id = utcnow(), actor.user_id
    session.flush()
    audit.record(session, actor, "opd.appointment.cancel", "opd_appointment", appointment.id,
                 patient_id=appointment.patient_id)
    return appointment


def mark_no_show(session: Session, actor: Actor, appointment_id: Any) -> Appointment:
    """Record that the patient did not come: only for a booked appointment whose slot has
    ended (Conflict `slot_not_over` before that). Locks the appointment; frees nothing
    (the slot is in the past). Writes status no_show and audit "opd.appointment.no_show"."""
    appointment = _locked_appointment(session, appointment_id)
    if appointment.status != "booked":
        raise Conflict(f"Only a booked appointment can be marked no-show; this one is {appointment.status}.",
                       code="not_booked")
    if utcnow() < appointment.ends_at:
        end = appointment.ends_at.astimezone(_tz(session))
        raise Conflict(f"The slot is not over yet; mark no-show after {end:%H:%M}.", code="slot_not_over")
    appointment.status = "no_show"
    appointment.no_show_at, appointment.no_show_by_id = utcnow(), actor.user_id
    session.flush()
    audit.record(session, actor, "opd.appointment.no_show", "opd_appointment", appointment.id,
                 patient_id=appointment.patient_id)
    return appointment


def list_appointments(session: Session, *, day: date | None = None, doctor_id: int | None = None,
                      patient_id: int | None = None, department_id: int | None = None,
                      status: str | None = None, limit: int = 500) -> list[Appointment]:
    """Appointments by start time. Without a day, patient or doctor: today's. Reads only."""
    stmt = select(Appointment)
    if day is None and patient_id is None and doctor_id is None:
        day = local_today(session)
    if day is not None:
        stmt = stmt.where(Appointment.appointment_date == day)
    if doctor_id is not None:
        stmt = stmt.where(Appointment.doctor_id == doctor_id)
    if patient_id is not None:
        stmt = stmt.where(Appointment.patient_id == patient_id)
    if department_id is not None:
        stmt = stmt.where(Appointment.department_id == department_id)
    if status is not None:
        stmt = stmt.where(Appointment.status == status)
    return list(session.scalars(stmt.order_by(Appointment.starts_at, Appointment.id).limit(limit)))


# =========================================================================== check-in

def token_scope(department_id: int, doctor_id: int | None) -> str:
    return f"doctor:{doctor_id}" if doctor_id else f"department:{department_id}"


def _open_encounter(session: Session, patient_id: int, department_id: int, day: date) -> Encounter | None:
    return session.scalar(select(Encounter).where(
        Encounter.patient_id == patient_id, Encounter.department_id == department_id,
        Encounter.visit_date == day, Encounter.status.in_(OPEN_ENCOUNTER_STATUSES)).limit(1))


def _already_checked_in(encounter: Encounter) -> Conflict:
    return Conflict(f"The patient is already checked in to this department today with token "
                    f"{encounter.token_no}.", code="already_checked_in",
                    fields={"token": encounter.token_no, "encounter_id": encounter.id})


def check_in(session: Session, actor: Actor, *, patient_id: Any, department_id: Any,
             doctor_id: Any = None, appointment_id: Any = None, payer_class: str = "cash") -> Encounter:
    """Check a patient in to a department's OPD (a walk-in, or with today's appointment)
    and issue the next token; return the encounter (status waiting).

    The token comes from the counter `token:<scope>:<local date>`, scope "doctor:<id>" when
    a doctor is given (or taken from the appointment), else "department:<id>": numbers
    start at 1 every day and never repeat, whatever the concurrency (the counter row is
    locked until the transaction ends). One open encounter per patient, department and
    day: a second check-in is refused with Conflict `already_checked_in` whose fields hold
    the token. With an appointment: it is locked, must be the patient's, booked, for today
    and this department (and this doctor when one is given); it becomes checked_in.
    Writes the encounter, the counter, and audit "opd.check_in".
    """
    patient = get_patient(session, actor, patient_id, audit_read=False)
    department = _department(session, department_id)
    if payer_class not in PAYER_CLASSES:
        raise Invalid("Some fields are not valid.",
                      fields={"payer_class": [f"Must be one of: {', '.join(PAYER_CLASSES)}."]})
    doctor = _doctor(session, doctor_id) if doctor_id not in (None, "") else None
    today = local_today(session)
    appointment = None
    if appointment_id not in (None, ""):
        appointment = _locked_appointment(session, appointment_id)
        problem = None
        if appointment.patient_id != patient.id:
            problem = "This appointment is for another patient."
        elif appointment.department_id != department.id:
            problem = "This appointment is in another department."
        elif doctor is not None and appointment.doctor_id != doctor.id:
            problem = "This appointment is with another doctor."
        elif appointment.appointment_date != today:
            problem = f"This appointment is on {appointment.appointment_date:%d %b %Y}, not today."
        if problem:
            raise Invalid("Some fields are not valid.", code="wrong_appointment", fields={"appointment_id": [problem]})
        if appointment.status != "booked":
            raise Conflict(f"This appointment is {appointment.status.replace('_', ' ')}.", code="not_booked")
        if doctor is None:
            doctor = session.get(User, appointment.doctor_id)
    existing = _open_encounter(session, patient.id, department.id, today)
    if existing is not None:
        raise _already_checked_in(existing)
    scope = token_scope(department.id, doctor.id if doctor else None)
    encounter = Encounter(patient_id=patient.id, department_id=department.id,
                          doctor_id=doctor.id if doctor else None,
                          appointment_id=appointment.id if appointment else None,
                          token_scope=scope, visit_date=today, status="waiting",
                          payer_class=payer_class, checked_in_by_id=actor.user_id)
    try:
        # A savepoint: when a concurrent check-in of the same patient wins the race, the
        # token drawn here is given back with the refused row.
        with session.begin_nested():
            encounter.token_no = next_number(session, f"token:{scope}:{today.isoformat()}")
            session.add(encounter)
            session.flush()
    except IntegrityError:
        existing = _open_encounter(session, patient.id, department.id, today)
        if existing is not None:
            raise _already_checked_in(existing) from None
        raise
    if appointment is not None:
        appointment.status = "checked_in"
        session.flush()
    audit.record(session, actor, "opd.check_in", "opd_encounter", encounter.id, patient_id=patient.id,
                 detail={"department_id": department.id, "doctor_id": encounter.doctor_id,
                         "appointment_id": encounter.appointment_id, "token": encounter.token_no})
    return encounter


def attach_instance(session: Session, encounter_id: Any, instance_id: int, actor: Actor | None = None) -> Encounter:
    """Link the encounter to its pathway instance (set by the check-in route after it
    starts the pathway). Locks the encounter; attaching the same instance again changes
    nothing, another one is refused (Conflict `instance_attached`). Audit
    "opd.encounter.attach_instance" (by `actor`, else the system)."""
    encounter = _locked_encounter(session, encounter_id)
    if encounter.process_instance_id == int(instance_id):
        return encounter
    if encounter.process_instance_id is not None:
        raise Conflict(f"Encounter {encounter.id} already belongs to pathway instance "
                       f"{encounter.process_instance_id}.", code="instance_attached")
    encounter.process_instance_id = int(instance_id)
    session.flush()
    audit.record(session, actor or Actor.system("opd"), "opd.encounter.attach_instance", "opd_encounter",
                 encounter.id, patient_id=encounter.patient_id, detail={"instance_id": int(instance_id)})
    return encounter


# =========================================================================== encounters

def _locked_encounter(session: Session, encounter_id: Any) -> Encounter:
    encounter = session.scalar(select(Encounter).where(
        Encounter.id == _as_id(encounter_id, "encounter")).with_for_update()
        .execution_options(populate_existing=True))
    if encounter is None:
        raise NotFound(f"No encounter with id {encounter_id}.", code="encounter_not_found")
    return encounter


def get_encounter(session: Session, actor: Actor, encounter_id: Any, *, clinical: bool = True) -> Encounter:
    """The encounter, or NotFound. With `clinical` (the caller will show vitals, notes,
    diagnoses or prescriptions) the read is audited "opd.encounter.read"; the queue view
    (token, status, department, doctor) is not clinical and is not."""
    encounter = session.get(Encounter, _as_id(encounter_id, "encounter"))
    if encounter is None:
        raise NotFound(f"No encounter with id {encounter_id}.", code="encounter_not_found")
    if clinical:
        audit.record(session, actor, "opd.encounter.read", "opd_encounter", encounter.id,
                     patient_id=encounter.patient_id)
    return encounter


_PRIORITY_RANK = {"emergency": 0, "urgent": 1, "routine": 2}


def _call_order():
    return (case(_PRIORITY_RANK, value=Encounter.priority, else_=2), Encounter.checked_in_at, Encounter.id)


def list_queue(session: Session, department_id: Any, day: date | None = None, *,
               statuses: tuple[str, ...] = ACTIVE_QUEUE_STATUSES) -> list[Encounter]:
    """The department's encounters of the day in these statuses, in call order:
    emergencies, then urgent, then routine; within each, first come first served.
    Reads only (not audited: token, status and priority are not the clinical record)."""
    department = _department(session, department_id)
    day = day or local_today(session)
    return list(session.scalars(
        select(Encounter).where(Encounter.department_id == department.id, Encounter.visit_date == day,
                                Encounter.status.in_(statuses)).order_by(*_call_order())))


def latest_flags(session: Session, encounter_ids: list[int]) -> dict[int, Vitals]:
    """The latest vitals of each encounter (for triage badges on the queue). Reads only."""
    if not encounter_ids:
        return {}
    rows = session.scalars(select(Vitals).where(Vitals.encounter_id.in_(encounter_ids)).order_by(Vitals.id))
    return {v.encounter_id: v for v in rows}


def queue_board(session: Session, department_id: Any, day: date | None = None, *, next_count: int = 8) -> dict:
    """What the waiting-room screen shows: tokens only, never names. Reads only.

    {"department": {id, code, name}, "date", "now_serving": [{token, doctor, room, status,
    called_at}] (the latest call of each doctor, newest first), "next": [{token, doctor,
    priority}] (the next `next_count` in call order), "waiting": count}."""
    department = _department(session, department_id)
    day = day or local_today(session)
    tz = _tz(session)
    active = list_queue(session, department.id, day)
    waiting = [e for e in active if e.status == "waiting"]
    serving = sorted((e for e in active if e.status in ("called", "in_consultation")),
                     key=lambda e: e.called_at or e.checked_in_at, reverse=True)
    names = _names(session, [e.doctor_id for e in active])
    rooms = {}
    for schedule in list_schedules(session, department_id=department.id):
        if schedule.covers(day.weekday()) and schedule.room:
            rooms.setdefault(schedule.doctor_id, schedule.room)
    now_serving, seen_doctors = [], set()
    for e in serving:
        if e.doctor_id in seen_doctors:
            continue
        seen_doctors.add(e.doctor_id)
        now_serving.append({"token": e.token_no, "doctor": names.get(e.doctor_id), "room": rooms.get(e.doctor_id),
                            "status": e.status,
                            "called_at": e.called_at.astimezone(tz).isoformat() if e.called_at else None})
    return {
        "department": {"id": department.id, "code": department.code, "name": department.name},
        "date": day.isoformat(),
        "now_serving": now_serving,
        "next": [{"token": e.token_no, "doctor": names.get(e.doctor_id), "priority": e.priority}
                 for e in waiting[:next_count]],
        "waiting": len(waiting),
    }


def call_next(session: Session, actor: Actor, department_id: Any, *, doctor_id: int | None = None) -> Encounter | None:
    """Call the next waiting patient of the department's queue today; None when nobody waits.

    The caller is the doctor (`doctor_id`, default the actor when a doctor): they get the
    first waiting encounter, in call order, that is theirs or not yet assigned to a
    doctor, and it becomes theirs. Without a doctor (an admin at the desk) the first of
    any. Locks that row (FOR UPDATE SKIP LOCKED on PostgreSQL, so a concurrent call takes
    the next one). Writes status called, called_at/by, and audit "opd.queue.call".
    """
    department = _department(session, department_id)
    if doctor_id is None and actor.has_role("doctor") and actor.user_id is not None:
        doctor_id = actor.user_id
    stmt = (select(Encounter).where(Encounter.department_id == department.id,
                                    Encounter.visit_date == local_today(session),
                                    Encounter.status == "waiting").order_by(*_call_order()).limit(1))
    if doctor_id is not None:
        stmt = stmt.where((Encounter.doctor_id == doctor_id) | Encounter.doctor_id.is_(None))
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=Encounter)
    encounter = session.scalar(stmt.execution_options(populate_existing=True))
    if encounter is None:
        return None
    encounter.status = "called"
    encounter.called_at, encounter.called_by_id = utcnow(), actor.user_id
    if encounter.doctor_id is None and doctor_id is not None:
        encounter.doctor_id = doctor_id
    session.flush()
    audit.record(session, actor, "opd.queue.call", "opd_encounter", encounter.id,
                 patient_id=encounter.patient_id, detail={"token": encounter.token_no,
                                                          "department_id": department.id})
    return encounter


def start_consultation(session: Session, actor: Actor, encounter_id: Any) -> Encounter:
    """The doctor starts seeing the patient (from waiting or called). Locks the encounter.
    Writes status in_consultation, the start time, the doctor when unassigned, and audit
    "opd.consultation.start"."""
    encounter = _locked_encounter(session, encounter_id)
    if encounter.status == "in_consultation":
        return encounter
    if encounter.status not in ("waiting", "called"):
        raise Conflict(f"The encounter is {encounter.status.replace('_', ' ')}.", code="encounter_not_waiting")
    encounter.status = "in_consultation"
    encounter.consultation_started_at = utcnow()
    if encounter.doctor_id is None and actor.has_role("doctor"):
        encounter.doctor_id = actor.user_id
    session.flush()
    audit.record(session, actor, "opd.consultation.start", "opd_encounter", encounter.id,
                 patient_id=encounter.patient_id)
    return encounter


def mark_left(session: Session, actor: Actor, encounter_id: Any, reason: Any = None) -> Encounter:
    """The patient left before being seen (waiting or called). Locks the encounter. Writes
    status left and audit "opd.encounter.left" (the reason stays in the table)."""
    errors: dict = {}
    reason = _text(reason, "reason", errors, max_length=200)
    if errors:
        raise Invalid("Some fields are not valid.", fields=errors)
    encounter = _locked_encounter(session, encounter_id)
    if encounter.status not in ("waiting", "called"):
        raise Conflict(f"The encounter is {encounter.status.replace('_', ' ')}; only a waiting or called "
                       "patient can be marked as left.", code="encounter_not_waiting")
    encounter.status = "left"
    encounter.left_at, encounter.left_reason = utcnow(), reason
    session.flush()
    audit.record(session, actor, "opd.encounter.left", "opd_encounter", encounter.id,
                 patient_id=encounter.patient_id)
    return encounter


# =========================================================================== triage

# (field, label, unit, low, high, whole number?) — the plausible range of each vital sign;
# a value outside it is a typing error, not a finding.
VITAL_RANGES = (
    ("temperature_c", "Temperature", "°C", Decimal("30"), Decimal("45"), False),
    ("pulse", "Pulse", "beats/min", 20, 250, True),
    ("systolic_bp", "Systolic pressure", "mmHg", 50, 260, True),
    ("diastolic_bp", "Diastolic pressure", "mmHg", 30, 160, True),
    ("respiratory_rate", "Respiratory rate", "breaths/min", 4, 80, True),
    ("spo2", "SpO₂", "%", 50, 100, True),
    ("weight_kg", "Weight", "kg", Decimal("0.3"), Decimal("350"), False),
    ("height_cm", "Height", "cm", 30, 250, False),
    ("pain_score", "Pain score", "", 0, 10, True),
)
VITAL_FIELDS = tuple(f for f, *_ in VITAL_RANGES)

FLAG_LABELS = {
    "fever": "Fever",
    "high_fever": "High fever",
    "hypothermia": "Hypothermia",
    "tachycardia": "Tachycardia",
    "bradycardia": "Bradycardia",
    "hypotension": "Hypotension",
    "hypertension": "High BP",
    "severe_hypertension": "Severe hypertension",
    "tachypnoea": "Fast breathing",
    "low_spo2": "Low SpO₂",
    "critical_spo2": "Critical SpO₂",
    "severe_pain": "Severe pain",
    "bmi_underweight": "Underweight",
    "bmi_overweight": "Overweight",
    "bmi_obese": "Obese",
}
# Flags that make a patient urgent or an emergency whatever the nurse chose.
URGENT_FLAGS = frozenset({"high_fever", "hypothermia", "tachycardia", "bradycardia", "hypotension",
                          "severe_hypertension", "tachypnoea", "low_spo2", "severe_pain"})
BMI_CATEGORIES = ("underweight", "normal", "overweight", "obese")


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError
        return Decimal(str(value))
    if isinstance(value, str):
        return Decimal(value.strip())
    raise ValueError


def clean_vitals(values: Any) -> dict:
    """Check each vital sign for plausibility; return them typed. Invalid names every bad
    field ("Temperature must be between 30 and 45 °C."). Keys that are not vital signs,
    the complaint or the priority are ignored (the triage task may carry more data)."""
    if not isinstance(values, dict):
        raise Invalid("Send the vital signs as an object of fields.")
    errors: dict = {}
    clean: dict = {}
    for field, label, unit, low, high, whole in VITAL_RANGES:
        raw = values.get(field)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            clean[field] = None
            continue
        try:
            number = _number(raw)
        except (ValueError, InvalidOperation, ArithmeticError):
            errors[field] = [f"{label} must be a number."]
            continue
        if not number.is_finite():
            errors[field] = [f"{label} must be a number."]
            continue
        if whole and number != number.to_integral_value():
            errors[field] = [f"{label} must be a whole number."]
            continue
        if not low <= number <= high:
            errors[field] = [f"{label} must be between {low} and {high}{' ' + unit if unit else ''}."]
            continue
        clean[field] = int(number) if whole else number
    sbp, dbp = clean.get("systolic_bp"), clean.get("diastolic_bp")
    if (sbp is None) != (dbp is None) and "systolic_bp" not in errors and "diastolic_bp" not in errors:
        missing = "diastolic_bp" if dbp is None else "systolic_bp"
        errors[missing] = ["Record both systolic and diastolic pressure."]
    elif sbp is not None and dbp is not None and sbp <= dbp:
        errors["diastolic_bp"] = [f"Diastolic pressure ({dbp}) must be lower than systolic ({sbp})."]
    clean["chief_complaint"] = _text(values.get("chief_complaint"), "chief_complaint", errors, max_length=500)
    priority = values.get("priority")
    if priority in (None, ""):
        clean["priority"] = None
    elif isinstance(priority, str) and priority.strip().lower() in PRIORITIES:
        clean["priority"] = priority.strip().lower()
    else:
        errors["priority"] = ["Must be one of: routine, urgent, emergency."]
    if not errors and all(clean[f] is None for f in VITAL_FIELDS) and not clean["chief_complaint"]:
        errors["_schema"] = ["Record at least one vital sign or the complaint."]
    if errors:
        raise Invalid("Some vital signs are not plausible.", fields=errors)
    return clean


def compute_bmi(weight_kg: Decimal | None, height_cm: Decimal | None) -> Decimal | None:
    if weight_kg is None or height_cm is None:
        return None
    metres = Decimal(height_cm) / 100
    return (Decimal(weight_kg) / (metres * metres)).quantize(Decimal("0.1"))


def bmi_category(bmi: Decimal | None) -> str | None:
    """WHO cut-offs for Asian populations (WHO expert consultation, Lancet 2004): under
    18.5 underweight, 18.5-22.9 normal, 23-24.9 overweight, 25 and above obese."""
    if bmi is None:
        return None
    if bmi < Decimal("18.5"):
        return "underweight"
    if bmi < 23:
        return "normal"
    if bmi < 25:
        return "overweight"
    return "obese"


def _age_years(dob: date | None, today: date) -> float | None:
    if dob is None:
        return None
    return (today - dob).days / 365.25


def assess_vitals(clean: dict, age_years: float | None = None) -> dict:
    """Flags, BMI and the computed priority of cleaned vital signs.

    Adult thresholds (12 years and over, or age unknown): fever >= 37.8 °C (high >= 39.5),
    hypothermia < 35, tachycardia > 100, bradycardia < 50, hypotension systolic < 90,
    hypertension >= 140/90 (severe >= 180/120), tachypnoea > 24, low SpO₂ < 94 (critical
    < 90), severe pain >= 7; BMI categories (adults, 18 and over) with the Asian cut-offs.
    Children under 12: heart and breathing rates by age band (WHO fast-breathing counts:
    >= 60 under 2 months, >= 50 to 12 months, >= 40 to 5 years, > 30 to 12 years; pulse
    > 160 / 140 / 120), hypotension by the PALS rule (systolic < 70 + 2 x age in years),
    no adult hypertension flag (children need centile tables).

    The computed priority is "emergency" for critical values (SpO₂ < 90, systolic < 80,
    pulse > 140 or < 40 in adults, respiratory rate > 30 in adults, temperature >= 41 or
    < 35), "urgent" when any URGENT_FLAGS flag is raised, else "routine". The nurse's
    priority is never lowered by it: the result is the higher of the two.
    """
    t, p = clean.get("temperature_c"), clean.get("pulse")
    sbp, dbp = clean.get("systolic_bp"), clean.get("diastolic_bp")
    rr, spo2, pain = clean.get("respiratory_rate"), clean.get("spo2"), clean.get("pain_score")
    child = age_years is not None and age_years < 12
    flags: list[str] = []
    critical = False
    if t is not None:
        if t >= Decimal("37.8"):
            flags.append("fever")
        if t >= Decimal("39.5"):
            flags.append("high_fever")
        if t < 35:
            flags.append("hypothermia")
        critical |= t >= 41 or t < 35
    if p is not None:
        fast, slow = 100, 50
        if child:
            fast = 160 if age_years < 1 else 140 if age_years < 5 else 120
            slow = 100 if age_years < 1 else 70 if age_years < 5 else 60
        if p > fast:
            flags.append("tachycardia")
        if p < slow:
            flags.append("bradycardia")
        critical |= not child and (p > 140 or p < 40)
    if sbp is not None:
        if child:
            floor = 60 if age_years < 1 / 12 else 70 if age_years < 1 else 70 + 2 * int(age_years)
            if sbp < floor:
                flags.append("hypotension")
                critical = True
        else:
            if sbp < 90:
                flags.append("hypotension")
            if sbp >= 140 or dbp >= 90:
                flags.append("hypertension")
            if sbp >= 180 or dbp >= 120:
                flags.append("severe_hypertension")
            critical |= sbp < 80
    if rr is not None:
        if child and age_years < 5:
            if rr >= (60 if age_years < 2 / 12 else 50 if age_years < 1 else 40):
                flags.append("tachypnoea")
        elif child:
            if rr > 30:
                flags.append("tachypnoea")
        else:
            if rr > 24:
                flags.append("tachypnoea")
            critical |= rr > 30
    if spo2 is not None:
        if spo2 < 94:
            flags.append("low_spo2")
        if spo2 < 90:
            flags.append("critical_spo2")
            critical = True
    if pain is not None and pain >= 7:
        flags.append("severe_pain")
    bmi = compute_bmi(clean.get("weight_kg"), clean.get("height_cm"))
    category = bmi_category(bmi) if bmi is not None and (age_years is None or age_years >= 18) else None
    if category in ("underweight", "overweight", "obese"):
        flags.append(f"bmi_{category}")
    computed = "emergency" if critical else "urgent" if URGENT_FLAGS.intersection(flags) else "routine"
    chosen = clean.get("priority") or "routine"
    priority = min((computed, chosen), key=lambda x: _PRIORITY_RANK[x])
    return {"bmi": bmi, "bmi_category": category, "flags": flags, "priority": priority,
            "computed_priority": computed}


def record_triage(session: Session, actor: Actor, encounter_id: Any, vitals: Any) -> dict:
    """Record triage vital signs for an encounter in the queue (waiting, called or in
    consultation); return {"vitals_id", "bmi" (float or None), "bmi_category", "flags",
    "priority"}.

    Implausible values are refused field by field (Invalid, see clean_vitals). Locks the
    encounter; sets its priority (the queue's order) and, when given, its chief complaint.
    Writes a Vitals row and audit "opd.triage.record" (flags are codes; no values).
    """
    clean = clean_vitals(vitals)
    encounter = _locked_encounter(session, encounter_id)
    if encounter.status not in ACTIVE_QUEUE_STATUSES:
        raise Conflict(f"The encounter is {encounter.status.replace('_', ' ')}; triage is recorded while the "
                       "patient is in the queue.", code="encounter_closed")
    patient = session.get(Patient, encounter.patient_id)
    assessment = assess_vitals(clean, _age_years(patient.date_of_birth, local_today(session)))
    row = Vitals(encounter_id=encounter.id, patient_id=encounter.patient_id, recorded_by_id=actor.user_id,
                 bmi=assessment["bmi"], priority=assessment["priority"], flags=assessment["flags"],
                 **{f: clean[f] for f in VITAL_FIELDS})
    session.add(row)
    encounter.priority = assessment["priority"]
    if clean["chief_complaint"]:
        encounter.chief_complaint = clean["chief_complaint"]
    session.flush()
    audit.record(session, actor, "opd.triage.record", "opd_encounter", encounter.id,
                 patient_id=encounter.patient_id,
                 detail={"vitals_id": row.id, "flags": assessment["flags"], "priority": assessment["priority"]})
    return {"vitals_id": row.id, "bmi": float(assessment["bmi"]) if assessment["bmi"] is not None else None,
            "bmi_category": assessment["bmi_category"], "flags": assessment["flags"],
            "priority": assessment["priority"]}


# =========================================================================== prescriptions

# Doses a day for the regular frequencies; STAT is one dose in all, weekly one a week,
# PRN (as needed) has no schedule, so its quantity must be given.
DOSES_PER_DAY = {"OD": 1, "BD": 2, "TDS": 3, "QID": 4, "HS": 1, "Q6H": 4, "Q8H": 3}
_FREQUENCY_BY_UPPER = {f.upper(): f for f in FREQUENCIES}
_ROUTE_BY_LOWER = {r.lower(): r for r in ROUTES}


def number_of_doses(frequency: str, duration_days: int) -> int | None:
    """How many doses a course has; None for PRN (as needed)."""
    if frequency == "STAT":
        return 1
    if frequency == "weekly":
        return math.ceil(duration_days / 7)
    if frequency == "PRN":
        return None
    return DOSES_PER_DAY[frequency] * duration_days


def compute_quantity(dose: Any, frequency: str, duration_days: int) -> int | None:
    """Units to dispense: ceil(dose x number of doses), e.g. 1 tab BD x 5 days = 10,
    5 ml TDS x 3 days = 45, 0.5 tab OD x 7 days = 4, STAT = ceil(dose), weekly x 28 days
    = 4 doses. None for PRN: its quantity must be given explicitly. Exact decimal arithmetic."""
    doses = number_of_doses(frequency, duration_days)
    if doses is None:
        return None
    return int((Decimal(str(dose)) * doses).to_integral_value(rounding="ROUND_CEILING"))


def _clean_prescriptions(items: Any, errors: dict) -> list[dict]:
    if items is None:
        return []
    if not isinstance(items, list):
        errors["prescriptions"] = ["Must be a list of medicines."]
        return []
    clean, row_errors = [], {}
    for i, item in enumerate(items):
        e: dict = {}
        if not isinstance(item, dict):
            row_errors[i] = {"_schema": ["Must be an object of fields."]}
            continue
        code = _text(item.get("item_code"), "item_code", e, max_length=40, required=True)
        code = code.upper() if code else code  # formulary codes are upper-case
        dose = None
        try:
            dose = _number(item.get("dose")) if item.get("dose") not in (None, "") else None
        except (ValueError, InvalidOperation, ArithmeticError):
            e["dose"] = ["Must be a number."]
        if dose is None and "dose" not in e:
            e["dose"] = ["Required."]
        elif dose is not None and not (Decimal(0) < dose <= 10000):
            e["dose"] = ["Must be greater than 0 (and at most 10000)."]
        raw_frequency = item.get("frequency")
        frequency = _FREQUENCY_BY_UPPER.get(raw_frequency.strip().upper()) if isinstance(raw_frequency, str) else None
        if frequency is None:
            e["frequency"] = ["Required." if raw_frequency in (None, "") else
                              f"Must be one of: {', '.join(FREQUENCIES)}."]
        days = _int_in(item.get("duration_days"), "duration_days", e, 1, 365)
        raw_route = item.get("route")
        route = "oral"
        if raw_route not in (None, ""):
            route = _ROUTE_BY_LOWER.get(raw_route.strip().lower()) if isinstance(raw_route, str) else None
            if route is None:
                e["route"] = [f"Must be one of: {', '.join(ROUTES)}."]
        instructions = _text(item.get("instructions"), "instructions", e, max_length=500)
        quantity = _int_in(item.get("quantity"), "quantity", e, 1, 100000, required=False)
        if not e:
            computed = compute_quantity(dose, frequency, days)
            if computed is None and quantity is None:
                e["quantity"] = ["Give the quantity to dispense for a PRN (as needed) medicine."]
            quantity = quantity if quantity is not None else computed
        if e:
            row_errors[i] = e
            continue
        clean.append({"item_code": code, "dose": dose, "frequency": frequency, "duration_days": days,
                      "route": route, "instructions": instructions, "quantity": quantity})
    if row_errors:
        errors["prescriptions"] = row_errors
    return clean


# =========================================================================== consultation

_LAB_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,39}$")


def _clean_diagnoses(items: Any, errors: dict) -> list[dict]:
    if not isinstance(items, list) or not items:
        errors["diagnoses"] = ["Record at least one diagnosis (ICD-10)."]
        return []
    clean, row_errors, seen = [], {}, set()
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"code": item}
        if not isinstance(item, dict):
            row_errors[i] = {"_schema": ["Must be an object with a code."]}
            continue
        e: dict = {}
        code = _text(item.get("code"), "code", e, max_length=10, required=True)
        note = _text(item.get("note"), "note", e, max_length=500)
        row = None
        if code:
            row = icd10.get_icd10(code)
            if row is None:
                e["code"] = [f"Unknown ICD-10 code: {code}."]
            elif row["code"] in seen:
                e["code"] = [f"{row['code']} is listed twice."]
        if e:
            row_errors[i] = e
            continue
        seen.add(row["code"])
        clean.append({"code": row["code"], "title": row["title"][:255], "note": note})
    if row_errors:
        errors["diagnoses"] = row_errors
    return clean


def _clean_lab_tests(items: Any, errors: dict) -> list[str]:
    if items in (None, ""):
        return []
    if not isinstance(items, list):
        errors["lab_tests"] = ["Must be a list of test codes."]
        return []
    codes, bad = [], {}
    for i, code in enumerate(items):
        if not isinstance(code, str) or not _LAB_CODE.match(code.strip()):
            bad[i] = ["Must be a lab test code."]
            continue
        code = code.strip()
        if code not in codes:
            codes.append(code)
    if bad:
        errors["lab_tests"] = bad
    return codes


def _clean_alerts(alerts: Any) -> list[dict]:
    """The allergy alerts the caller showed (from inventory.check_allergies), kept as
    plain JSON: dicts of short scalar values (at most 20 alerts, 12 keys each)."""
    if not alerts:
        return []
    if not isinstance(alerts, list):
        alerts = [alerts]
    clean = []
    for alert in alerts[:20]:
        if isinstance(alert, str):
            alert = {"message": alert}
        if not isinstance(alert, dict):
            continue
        kept = {}
        for key, value in list(alert.items())[:12]:
            if isinstance(value, (str, int, float, bool)) or value is None:
                kept[str(key)[:40]] = value[:200] if isinstance(value, str) else value
        clean.append(kept)
    return clean


def _alerts_for(item_code: str, alerts: list[dict]) -> list[dict]:
    """Alerts naming this item (key item_code), plus those naming no item."""
    return [a for a in alerts if str(a.get("item_code") or "").upper() in ("", item_code.upper())]


def _resolve_department(session: Session, value: str | None) -> Department | None:
    if not value:
        return None
    key = value.strip().lower()
    for department in list_departments(session):
        if key in (department.code.lower(), department.name.lower()) or key == str(department.id):
            return department
    return None


def save_consultation(session: Session, actor: Actor, encounter_id: Any, consultation: Any, *,
                      allergy_alerts: Any = None, allergy_override_reason: Any = None) -> dict:
    """Record and sign the consultation of an encounter; return the pathway's result:
    {"lab_tests": [codes], "has_lab", "prescription_lines": [{"prescription_item_id",
    "item_code", "quantity"}], "has_meds", "follow_up_date": ISO or None, "note_id",
    "referral": bool}.

    `consultation` is the consultation form's data (forms/consultation.json): chief_complaint
    (required), history, examination, notes, diagnoses [{code, note?}] (at least one;
    ICD-10 codes of the shipped list), lab_tests [codes], prescriptions [{item_code, dose,
    frequency, duration_days, route?, instructions?, quantity?}] (quantity computed unless
    given; PRN needs it), follow_up_date (after today), referral_department and
    referral_reason (both or neither). Every bad field is named at once (Invalid, nested
    by row like the form validator).

    `allergy_alerts` are the alerts the prescriber was shown (inventory.check_allergies);
    each prescription item keeps those naming it (or naming no item), and then
    `allergy_override_reason` (or the form's field of that name) is required; each
    override is audited "opd.allergy_override".

    Locks the encounter; refuses one whose note is already signed (Conflict `note_signed`:
    changes are addenda) or which is not in the queue. Writes the note (signed now, by the
    actor), diagnoses, prescription items, lab test requests, the follow-up and referral,
    status consulted with the consultation times, and audit "opd.consultation.sign"
    (codes and counts only). A follow-up due tomorrow has its reminder queued at once; later
    ones are picked up by the daily notify.send_due_reminders run.
    """
    if not isinstance(consultation, dict):
        raise Invalid("Send the consultation as an object of fields.")
    encounter = _locked_encounter(session, encounter_id)
    note = session.scalar(select(ClinicalNote).where(ClinicalNote.encounter_id == encounter.id))
    if note is not None and note.signed_at is not None:
        raise Conflict("The consultation note is signed; add an addendum instead of editing it.",
                       code="note_signed")
    if encounter.status not in ACTIVE_QUEUE_STATUSES:
        raise Conflict(f"The encounter is {encounter.status.replace('_', ' ')}.", code="encounter_closed")
    errors: dict = {}
    chief = _text(consultation.get("chief_complaint") or encounter.chief_complaint, "chief_complaint", errors,
                  max_length=500, required=True)
    history = _text(consultation.get("history"), "history", errors, max_length=10000)
    examination = _text(consultation.get("examination"), "examination", errors, max_length=10000)
    notes = _text(consultation.get("notes"), "notes", errors, max_length=10000)
    diagnoses = _clean_diagnoses(consultation.get("diagnoses"), errors)
    lab_tests = _clean_lab_tests(consultation.get("lab_tests"), errors)
    prescriptions = _clean_prescriptions(consultation.get("prescriptions"), errors)
    follow_up = None
    if consultation.get("follow_up_date") not in (None, ""):
        try:
            follow_up = parse_date(consultation["follow_up_date"], "follow_up_date")
        except Invalid as exc:
            errors.update(exc.fields)
        else:
            if follow_up <= local_today(session):
                errors["follow_up_date"] = ["Must be a date after today."]
            elif follow_up > local_today(session) + timedelta(days=730):
                errors["follow_up_date"] = ["Must be within two years."]
    referral_to = _text(consultation.get("referral_department"), "referral_department", errors, max_length=120)
    referral_reason = _text(consultation.get("referral_reason"), "referral_reason", errors, max_length=1000)
    if referral_to and not referral_reason and "referral_reason" not in errors:
        errors["referral_reason"] = ["Give the reason for the referral."]
    if referral_reason and not referral_to and "referral_department" not in errors:
        errors["referral_department"] = ["Say where the patient is referred to."]
    override = allergy_override_reason if allergy_override_reason not in (None, "") else \
        consultation.get("allergy_override_reason")
    override = _text(override, "allergy_override_reason", errors, max_length=500)
    alerts = _clean_alerts(allergy_alerts)
    alerted = {p["item_code"] for p in prescriptions if _alerts_for(p["item_code"], alerts)}
    if alerted and not override and "allergy_override_reason" not in errors:
        errors["allergy_override_reason"] = [
            f"Required when an allergy alert was shown ({', '.join(sorted(alerted))})."]
    if errors:
        raise Invalid("Some fields are not valid.", fields=errors)

    now = utcnow()
    if note is None:
        note = ClinicalNote(encounter_id=encounter.id, patient_id=encounter.patient_id)
        session.add(note)
    note.chief_complaint, note.history, note.examination, note.notes = chief, history, examination, notes
    note.author_id = actor.user_id
    note.signed_at, note.signed_by_id = now, actor.user_id
    for rank, d in enumerate(diagnoses, 1):
        session.add(Diagnosis(encounter_id=encounter.id, patient_id=encounter.patient_id, rank=rank, **d))
    items = []
    for p in prescriptions:
        item_alerts = _alerts_for(p["item_code"], alerts)
        item = PrescriptionItem(encounter_id=encounter.id, patient_id=encounter.patient_id,
                                prescribed_by_id=actor.user_id, allergy_alert=item_alerts or None,
                                allergy_override_reason=override if item_alerts else None, **p)
        session.add(item)
        items.append(item)
    for code in lab_tests:
        session.add(LabTestRequest(encounter_id=encounter.id, patient_id=encounter.patient_id,
                                   test_code=code, requested_by_id=actor.user_id))
    referral_department = _resolve_department(session, referral_to)
    encounter.chief_complaint = chief
    encounter.follow_up_date = follow_up
    encounter.referral_to = referral_to
    encounter.referral_department_id = referral_department.id if referral_department else None
    encounter.referral_reason = referral_reason
    encounter.status = "consulted"
    encounter.consultation_started_at = encounter.consultation_started_at or now
    encounter.consultation_ended_at = now
    if encounter.doctor_id is None and actor.has_role("doctor"):
        encounter.doctor_id = actor.user_id
    session.flush()
    for item in items:
        if item.allergy_alert:
            audit.record(session, actor, "opd.allergy_override", "opd_prescription_item", item.id,
                         patient_id=encounter.patient_id,
                         detail={"encounter_id": encounter.id, "item_code": item.item_code,
                                 "alerts": len(item.allergy_alert)})
    audit.record(session, actor, "opd.consultation.sign", "opd_encounter", encounter.id,
                 patient_id=encounter.patient_id,
                 detail={"note_id": note.id, "diagnoses": [d["code"] for d in diagnoses],
                         "prescription_items": [i.id for i in items], "lab_tests": lab_tests,
                         "follow_up": follow_up is not None, "referral": bool(referral_to)})
    if follow_up is not None:
        notify.enqueue_if_due(session, encounter, local_today(session))
    return {
        "note_id": note.id,
        "lab_tests": lab_tests,
        "has_lab": bool(lab_tests),
        "prescription_lines": [{"prescription_item_id": i.id, "item_code": i.item_code, "quantity": i.quantity}
                               for i in items],
        "has_meds": bool(items),
        "follow_up_date": follow_up.isoformat() if follow_up else None,
        "referral": bool(referral_to),
    }


def complete_encounter(session: Session, actor: Actor, encounter_id: Any) -> Encounter:
    """Close the visit once the consultation is signed (the pathway's last step). Locks the
    encounter; completing twice changes nothing; an encounter not yet consulted is refused
    (Conflict `not_consulted`). Writes status completed and audit "opd.encounter.complete"."""
    encounter = _locked_encounter(session, encounter_id)
    if encounter.status == "completed":
        return encounter
    if encounter.status != "consulted":
        raise Conflict(f"The encounter is {encounter.status.replace('_', ' ')}; it can be completed after the "
                       "consultation is signed.", code="not_consulted")
    encounter.status = "completed"
    encounter.completed_at = utcnow()
    session.flush()
    audit.record(session, actor, "opd.encounter.complete", "opd_encounter", encounter.id,
                 patient_id=encounter.patient_id)
    return encounter


def encounter_info(session: Session, encounter_id: Any) -> dict:
    """What a pathway needs to route and bill a visit: {"encounter_id", "department_id",
    "department_code", "doctor_id", "payer_class", "token", "status", "visit_date"}. No
    clinical data; reads only."""
    encounter = session.get(Encounter, _as_id(encounter_id, "encounter"))
    if encounter is None:
        raise NotFound(f"No encounter with id {encounter_id}.", code="encounter_not_found")
    department = session.get(Department, encounter.department_id)
    return {"encounter_id": encounter.id, "department_id": department.id, "department_code": department.code,
            "doctor_id": encounter.doctor_id, "payer_class": encounter.payer_class, "token": encounter.token_no,
            "status": encounter.status, "visit_date": encounter.visit_date.isoformat()}


def add_addendum(session: Session, actor: Actor, encounter_id: Any, text: Any) -> NoteAddendum:
    """Append a signed addendum to a signed consultation note (the note itself is never
    edited). Doctors only (Forbidden otherwise); the note must be signed (Conflict
    `note_not_signed`); text required, at most 5,000 characters. Locks the encounter.
    Writes the addendum (signed now, by the actor) and audit "opd.note.addendum"."""
    if not actor.has_role("doctor"):
        raise Forbidden("Only a doctor can add an addendum to a consultation note.", code="forbidden")
    errors: dict = {}
    text = _text(text, "text", errors, max_length=5000, required=True)
    if errors:
        raise Invalid("Write the addendum.", fields=errors)
    encounter = _locked_encounter(session, encounter_id)
    note = session.scalar(select(ClinicalNote).where(ClinicalNote.encounter_id == encounter.id))
    if note is None or note.signed_at is None:
        raise Conflict("There is no signed note on this encounter yet; addenda follow a signed note.",
                       code="note_not_signed")
    addendum = NoteAddendum(note_id=note.id, encounter_id=encounter.id, text=text,
                            signed_at=utcnow(), signed_by_id=actor.user_id)
    session.add(addendum)
    session.flush()
    audit.record(session, actor, "opd.note.addendum", "opd_encounter", encounter.id,
                 patient_id=encounter.patient_id, detail={"note_id": note.id, "addendum_id": addendum.id})
    return addendum


# =========================================================================== clinical record

def _iso(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _num(value: Decimal | int | None) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def vitals_dict(v: Vitals) -> dict:
    return {"id": v.id, "encounter_id": v.encounter_id, "recorded_at": _iso(v.recorded_at),
            **{f: _num(getattr(v, f)) for f in VITAL_FIELDS}, "bmi": _num(v.bmi),
            "priority": v.priority, "flags": list(v.flags or [])}


def prescription_dict(p: PrescriptionItem) -> dict:
    return {"id": p.id, "encounter_id": p.encounter_id, "prescribed_at": _iso(p.prescribed_at),
            "item_code": p.item_code, "dose": _num(p.dose), "route": p.route, "frequency": p.frequency,
            "duration_days": p.duration_days, "quantity": p.quantity, "instructions": p.instructions,
            "allergy_alert": p.allergy_alert, "allergy_override_reason": p.allergy_override_reason}


def note_dict(note: ClinicalNote | None, names: dict[int, str]) -> dict | None:
    if note is None:
        return None
    return {"id": note.id, "chief_complaint": note.chief_complaint, "history": note.history,
            "examination": note.examination, "notes": note.notes, "signed_at": _iso(note.signed_at),
            "signed_by": names.get(note.signed_by_id), "signed_by_id": note.signed_by_id,
            "addenda": [{"id": a.id, "text": a.text, "signed_at": _iso(a.signed_at),
                         "signed_by": names.get(a.signed_by_id), "signed_by_id": a.signed_by_id}
                        for a in note.addenda]}


def require_clinical_reader(actor: Actor) -> None:
    if not actor.is_system and not actor.has_role(*CLINICAL_READ_ROLES):
        raise Forbidden("Only doctors, nurses and administrators may read the clinical record.",
                        code="forbidden")


def encounter_dict(session: Session, encounter: Encounter, *, clinical: bool) -> dict:
    """An encounter as JSON. Without `clinical`: the queue fields only (token, status,
    department, doctor, times) — what reception may see."""
    names = _names(session, [encounter.doctor_id] + ([encounter.note.signed_by_id] + [
        a.signed_by_id for a in encounter.note.addenda] if clinical and encounter.note else []))
    department = session.get(Department, encounter.department_id)
    data = {"id": encounter.id, "patient_id": encounter.patient_id, "token": encounter.token_no,
            "status": encounter.status, "visit_date": _iso(encounter.visit_date),
            "department": {"id": department.id, "code": department.code, "name": department.name},
            "doctor": {"id": encounter.doctor_id, "name": names.get(encounter.doctor_id)}
            if encounter.doctor_id else None,
            "appointment_id": encounter.appointment_id, "payer_class": encounter.payer_class,
            "checked_in_at": _iso(encounter.checked_in_at), "called_at": _iso(encounter.called_at),
            "process_instance_id": encounter.process_instance_id}
    if not clinical:
        return data
    data.update({
        "priority": encounter.priority,
        "chief_complaint": encounter.chief_complaint,
        "consultation_started_at": _iso(encounter.consultation_started_at),
        "consultation_ended_at": _iso(encounter.consultation_ended_at),
        "completed_at": _iso(encounter.completed_at),
        "vitals": [vitals_dict(v) for v in encounter.vitals],
        "note": note_dict(encounter.note, names),
        "diagnoses": [{"code": d.code, "title": d.title, "note": d.note, "rank": d.rank} for d in encounter.diagnoses],
        "prescriptions": [prescription_dict(p) for p in encounter.prescription_items],
        "lab_tests": [r.test_code for r in encounter.lab_requests],
        "follow_up_date": _iso(encounter.follow_up_date),
        "referral": {"to": encounter.referral_to, "department_id": encounter.referral_department_id,
                     "reason": encounter.referral_reason} if encounter.referral_to else None,
    })
    return data


def get_clinical_record(session: Session, actor: Actor, patient_id: Any) -> dict:
    """A patient's OPD clinical record for clinicians (doctor, nurse, admin; Forbidden
    otherwise). Reads only; audited "opd.clinical_record.read".

    {"patient": the banner (MRN, name, age, sex, allergies),
     "visits": newest first, at most 50: encounter id, date, department, doctor, status,
               token, chief complaint, diagnoses, the note with its addenda, vitals,
               prescriptions, lab test codes, follow-up, referral,
     "vitals_trend": oldest first, at most the last 200 sets, each timestamped,
     "prescriptions": newest first, at most 300,
     "diagnoses": newest first: code, title, encounter id, date,
     "truncated": whether older visits were left out}
    """
    require_clinical_reader(actor)
    patient = get_patient(session, actor, patient_id, audit_read=False)
    encounters = list(session.scalars(
        select(Encounter).where(Encounter.patient_id == patient.id)
        .order_by(Encounter.visit_date.desc(), Encounter.id.desc()).limit(RECORD_MAX_VISITS + 1)
        .options(selectinload(Encounter.note).selectinload(ClinicalNote.addenda),
                 selectinload(Encounter.diagnoses), selectinload(Encounter.prescription_items),
                 selectinload(Encounter.lab_requests), selectinload(Encounter.vitals))))
    truncated = len(encounters) > RECORD_MAX_VISITS
    encounters = encounters[:RECORD_MAX_VISITS]
    departments = {d.id: d for d in session.scalars(select(Department).where(
        Department.id.in_({e.department_id for e in encounters} or {0})))}
    user_ids = {e.doctor_id for e in encounters}
    for e in encounters:
        if e.note:
            user_ids.add(e.note.signed_by_id)
            user_ids.update(a.signed_by_id for a in e.note.addenda)
    names = _names(session, user_ids)
    visits = []
    for e in encounters:
        d = departments.get(e.department_id)
        visits.append({
            "encounter_id": e.id, "date": _iso(e.visit_date), "status": e.status, "token": e.token_no,
            "department": {"id": d.id, "code": d.code, "name": d.name} if d else None,
            "doctor": {"id": e.doctor_id, "name": names.get(e.doctor_id)} if e.doctor_id else None,
            "chief_complaint": e.chief_complaint, "priority": e.priority,
            "diagnoses": [{"code": x.code, "title": x.title, "note": x.note} for x in e.diagnoses],
            "note": note_dict(e.note, names),
            "vitals": [vitals_dict(v) for v in e.vitals],
            "prescriptions": [prescription_dict(p) for p in e.prescription_items],
            "lab_tests": [r.test_code for r in e.lab_requests],
            "follow_up_date": _iso(e.follow_up_date),
            "referral": {"to": e.referral_to, "reason": e.referral_reason} if e.referral_to else None,
        })
    vitals = list(session.scalars(select(Vitals).where(Vitals.patient_id == patient.id)
                                  .order_by(Vitals.recorded_at.desc(), Vitals.id.desc()).limit(RECORD_MAX_VITALS)))
    prescriptions = list(session.scalars(
        select(PrescriptionItem).where(PrescriptionItem.patient_id == patient.id)
        .order_by(PrescriptionItem.prescribed_at.desc(), PrescriptionItem.id.desc()).limit(RECORD_MAX_PRESCRIPTIONS)))
    audit.record(session, actor, "opd.clinical_record.read", "patient", patient.id, patient_id=patient.id,
                 detail={"visits": len(visits)})
    return {
        "patient": patient_banner(session, patient.id),
        "visits": visits,
        "vitals_trend": [vitals_dict(v) for v in reversed(vitals)],
        "prescriptions": [prescription_dict(p) for p in prescriptions],
        "diagnoses": [{"code": x["code"], "title": x["title"], "encounter_id": v["encounter_id"], "date": v["date"]}
                      for v in visits for x in v["diagnoses"]],
        "truncated": truncated,
    }
