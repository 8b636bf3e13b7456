"""OPD API shapes: input schemas check shape and types only (the rules and their messages
live in services, so pages and the API say the same thing); output functions turn rows
into JSON; operation parameter schemas for the BPMN service tasks."""

from __future__ import annotations

from datetime import datetime

from marshmallow import Schema, fields

from departments.opd.models import Appointment, DoctorSchedule, NoteAddendum


# --------------------------------------------------------------------------- API input

class ScheduleIn(Schema):
    doctor_id = fields.Integer(required=True)
    department_id = fields.Integer(required=True)
    weekdays = fields.List(fields.Raw(), required=True)
    start_time = fields.String(required=True)
    end_time = fields.String(required=True)
    slot_minutes = fields.Integer(required=True)
    daily_limit = fields.Integer(required=True)
    room = fields.String(load_default=None, allow_none=True)


class AppointmentIn(Schema):
    patient_id = fields.Integer(required=True)
    doctor_id = fields.Integer(required=True)
    department_id = fields.Integer(required=True)
    starts_at = fields.String(required=True)


class RescheduleIn(Schema):
    starts_at = fields.String(required=True)


class CancelIn(Schema):
    # Optional here so that a missing reason gets the service's message, like the page.
    reason = fields.String(load_default=None, allow_none=True)


class NoShowIn(Schema):
    pass


class CallNextIn(Schema):
    doctor_id = fields.Integer(load_default=None, allow_none=True)


class LeftIn(Schema):
    reason = fields.String(load_default=None, allow_none=True)


class AddendumIn(Schema):
    text = fields.String(load_default=None, allow_none=True)


# --------------------------------------------------------------------------- operation params

class EncounterParams(Schema):
    encounter_id = fields.Integer(required=True)


class RecordTriageParams(EncounterParams):
    vitals = fields.Dict(required=True)


class SaveConsultationParams(EncounterParams):
    consultation = fields.Dict(required=True)
    allergy_alerts = fields.List(fields.Raw(), load_default=list, allow_none=True)
    allergy_override_reason = fields.String(load_default=None, allow_none=True)


# --------------------------------------------------------------------------- output

def _local(value: datetime | None, tz) -> str | None:
    return value.astimezone(tz).replace(tzinfo=None).isoformat(timespec="minutes") if value else None


def schedule_json(s: DoctorSchedule, doctor_name: str | None = None) -> dict:
    return {"id": s.id, "doctor_id": s.doctor_id, "doctor": doctor_name, "department_id": s.department_id,
            "weekdays": list(s.weekdays), "start_time": s.start_time.strftime("%H:%M"),
            "end_time": s.end_time.strftime("%H:%M"), "slot_minutes": s.slot_minutes,
            "daily_limit": s.daily_limit, "room": s.room, "active": s.active}


def appointment_json(a: Appointment, tz, *, patient=None, doctor_name: str | None = None) -> dict:
    data = {"id": a.id, "patient_id": a.patient_id, "doctor_id": a.doctor_id, "doctor": doctor_name,
            "department_id": a.department_id, "schedule_id": a.schedule_id,
            "starts_at": _local(a.starts_at, tz), "ends_at": _local(a.ends_at, tz),
            "starts_at_utc": a.starts_at.isoformat(), "date": a.appointment_date.isoformat(),
            "status": a.status, "reschedule_count": a.reschedule_count, "cancel_reason": a.cancel_reason}
    if patient is not None:
        data["patient"] = {"id": patient.id, "mrn": patient.mrn, "name": patient.name}
    return data


def addendum_json(a: NoteAddendum, signed_by: str | None = None) -> dict:
    return {"id": a.id, "encounter_id": a.encounter_id, "note_id": a.note_id, "text": a.text,
            "signed_at": a.signed_at.isoformat(), "signed_by_id": a.signed_by_id, "signed_by": signed_by}
