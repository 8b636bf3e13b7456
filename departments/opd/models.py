"""OPD tables: doctor schedules, appointments, encounters with their tokens, triage vitals,
the signed clinical note and its addenda, diagnoses, prescription items, lab test requests,
and the outbox of patient messages (follow-up reminders).

Uniqueness rules that must hold under concurrency are database constraints, so a race
between two receptionists ends in an IntegrityError that the services turn into 409:
- one active appointment per doctor per start time (partial unique index);
- one open encounter per patient per department per local day (partial unique index);
- one token per queue scope per day (tokens come from hms.db.next_number, and the
  unique index is the backstop).
"""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from sqlalchemy import (JSON, CheckConstraint, Date, ForeignKey, Index, Numeric, String, Text, Time,
                        UniqueConstraint, text)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hms.db import Base, utcnow

WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

APPOINTMENT_STATUSES = ("booked", "checked_in", "cancelled", "no_show")
# Appointments that hold their slot.
ACTIVE_APPOINTMENT_STATUSES = ("booked", "checked_in")

# waiting -> called -> in_consultation -> consulted (note signed) -> completed; or left.
ENCOUNTER_STATUSES = ("waiting", "called", "in_consultation", "consulted", "completed", "left")
# An encounter still in the building for the queue's purposes: the patient cannot be
# checked in to the same department again the same day while one of these is open.
OPEN_ENCOUNTER_STATUSES = ("waiting", "called", "in_consultation", "consulted")
PRIORITIES = ("routine", "urgent", "emergency")
PAYER_CLASSES = ("cash", "panel", "sehat_card", "staff", "free")

FREQUENCIES = ("OD", "BD", "TDS", "QID", "HS", "Q6H", "Q8H", "STAT", "PRN", "weekly")
ROUTES = ("oral", "sublingual", "IV", "IM", "SC", "topical", "inhaled", "nasal", "eye", "ear",
          "rectal", "vaginal", "transdermal")
OUTBOX_STATUSES = ("queued", "sent", "failed")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


class DoctorSchedule(Base):
    """When a doctor sees outpatients in a department: weekdays (0 = Monday), a daily
    session from start_time to end_time (local time) cut into slots, and a daily limit of
    appointments for the session."""

    __tablename__ = "opd_schedule"
    __table_args__ = (
        CheckConstraint("slot_minutes BETWEEN 5 AND 240", name="slot_minutes"),
        CheckConstraint("daily_limit >= 1", name="daily_limit"),
        CheckConstraint("end_time > start_time", name="times"),
        Index("ix_opd_schedule_doctor", "doctor_id", "active"),
        Index("ix_opd_schedule_department", "department_id", "active"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    doctor_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id"))
    weekdays: Mapped[list[Any]] = mapped_column(JSON)
    start_time: Mapped[time] = mapped_column(Time)
    end_time: Mapped[time] = mapped_column(Time)
    slot_minutes: Mapped[int]
    daily_limit: Mapped[int]
    room: Mapped[str | None] = mapped_column(String(40))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))

    def covers(self, weekday: int) -> bool:
        return weekday in (self.weekdays or [])


class Appointment(Base):
    __tablename__ = "opd_appointment"
    __table_args__ = (
        CheckConstraint(f"status IN {_in(APPOINTMENT_STATUSES)}", name="status"),
        Index("uq_opd_appointment_doctor_slot", "doctor_id", "starts_at", unique=True,
              sqlite_where=text(f"status IN {_in(ACTIVE_APPOINTMENT_STATUSES)}"),
              postgresql_where=text(f"status IN {_in(ACTIVE_APPOINTMENT_STATUSES)}")),
        Index("ix_opd_appointment_date_doctor", "appointment_date", "doctor_id"),
        Index("ix_opd_appointment_patient", "patient_id", "appointment_date"),
        Index("ix_opd_appointment_schedule_date", "schedule_id", "appointment_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    doctor_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id"))
    schedule_id: Mapped[int] = mapped_column(ForeignKey("opd_schedule.id"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    appointment_date: Mapped[date] = mapped_column(Date)  # local date of starts_at
    status: Mapped[str] = mapped_column(String(12), default="booked")
    reschedule_count: Mapped[int] = mapped_column(default=0)
    booked_at: Mapped[datetime] = mapped_column(default=utcnow)
    booked_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    cancelled_at: Mapped[datetime | None]
    cancelled_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    cancel_reason: Mapped[str | None] = mapped_column(String(300))
    no_show_at: Mapped[datetime | None]
    no_show_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))


class Encounter(Base):
    """One OPD visit: a token in a department's (or a doctor's) queue for one local day."""

    __tablename__ = "opd_encounter"
    __table_args__ = (
        CheckConstraint(f"status IN {_in(ENCOUNTER_STATUSES)}", name="status"),
        CheckConstraint(f"priority IN {_in(PRIORITIES)}", name="priority"),
        CheckConstraint("token_no >= 1", name="token_no"),
        UniqueConstraint("token_scope", "visit_date", "token_no", name="uq_opd_encounter_token"),
        Index("uq_opd_encounter_open_visit", "patient_id", "department_id", "visit_date", unique=True,
              sqlite_where=text(f"status IN {_in(OPEN_ENCOUNTER_STATUSES)}"),
              postgresql_where=text(f"status IN {_in(OPEN_ENCOUNTER_STATUSES)}")),
        Index("ix_opd_encounter_queue", "department_id", "visit_date", "status"),
        Index("ix_opd_encounter_patient", "patient_id", "visit_date"),
        Index("ix_opd_encounter_follow_up", "follow_up_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id"))
    doctor_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    appointment_id: Mapped[int | None] = mapped_column(ForeignKey("opd_appointment.id"))
    # "department:<id>" or "doctor:<id>": the queue the token was drawn from.
    token_scope: Mapped[str] = mapped_column(String(40))
    token_no: Mapped[int]
    visit_date: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="waiting")
    priority: Mapped[str] = mapped_column(String(10), default="routine")
    payer_class: Mapped[str] = mapped_column(String(20), default="cash")
    checked_in_at: Mapped[datetime] = mapped_column(default=utcnow)
    checked_in_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    called_at: Mapped[datetime | None]
    called_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    consultation_started_at: Mapped[datetime | None]
    consultation_ended_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    left_at: Mapped[datetime | None]
    left_reason: Mapped[str | None] = mapped_column(String(200))
    chief_complaint: Mapped[str | None] = mapped_column(String(500))
    follow_up_date: Mapped[date | None] = mapped_column(Date)
    referral_to: Mapped[str | None] = mapped_column(String(120))
    referral_department_id: Mapped[int | None] = mapped_column(ForeignKey("department.id"))
    referral_reason: Mapped[str | None] = mapped_column(String(1000))
    process_instance_id: Mapped[int | None]

    vitals: Mapped[list["Vitals"]] = relationship(order_by="Vitals.id", back_populates="encounter")
    note: Mapped["ClinicalNote | None"] = relationship(back_populates="encounter", uselist=False)
    diagnoses: Mapped[list["Diagnosis"]] = relationship(order_by="Diagnosis.rank", back_populates="encounter")
    prescription_items: Mapped[list["PrescriptionItem"]] = relationship(
        order_by="PrescriptionItem.id", back_populates="encounter")
    lab_requests: Mapped[list["LabTestRequest"]] = relationship(
        order_by="LabTestRequest.id", back_populates="encounter")


class Vitals(Base):
    """One set of triage vital signs; BMI and the abnormal-value flags are computed once,
    when recorded, with the rules of that day (services.assess_vitals)."""

    __tablename__ = "opd_vitals"
    __table_args__ = (
        CheckConstraint(f"priority IN {_in(PRIORITIES)}", name="priority"),
        Index("ix_opd_vitals_patient", "patient_id", "recorded_at"),
        Index("ix_opd_vitals_encounter", "encounter_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    encounter_id: Mapped[int] = mapped_column(ForeignKey("opd_encounter.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    temperature_c: Mapped[Decimal | None] = mapped_column(Numeric(4, 1))
    pulse: Mapped[int | None]
    systolic_bp: Mapped[int | None]
    diastolic_bp: Mapped[int | None]
    respiratory_rate: Mapped[int | None]
    spo2: Mapped[int | None]
    weight_kg: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    height_cm: Mapped[Decimal | None] = mapped_column(Numeric(5, 1))
    bmi: Mapped[Decimal | None] = mapped_column(Numeric(4, 1))
    pain_score: Mapped[int | None]
    priority: Mapped[str] = mapped_column(String(10), default="routine")
    flags: Mapped[list[Any]] = mapped_column(JSON, default=list)

    encounter: Mapped[Encounter] = relationship(back_populates="vitals")


class ClinicalNote(Base):
    """The consultation note. Written once, signed at once; never edited afterwards:
    later changes are NoteAddendum rows, each signed by its author."""

    __tablename__ = "opd_note"

    id: Mapped[int] = mapped_column(primary_key=True)
    encounter_id: Mapped[int] = mapped_column(ForeignKey("opd_encounter.id"), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    chief_complaint: Mapped[str] = mapped_column(String(500))
    history: Mapped[str | None] = mapped_column(Text)
    examination: Mapped[str | None] = mapped_column(Text)
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    signed_at: Mapped[datetime | None]
    signed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))

    encounter: Mapped[Encounter] = relationship(back_populates="note")
    addenda: Mapped[list["NoteAddendum"]] = relationship(order_by="NoteAddendum.id", back_populates="note")


class NoteAddendum(Base):
    __tablename__ = "opd_note_addendum"

    id: Mapped[int] = mapped_column(primary_key=True)
    note_id: Mapped[int] = mapped_column(ForeignKey("opd_note.id"), index=True)
    encounter_id: Mapped[int] = mapped_column(ForeignKey("opd_encounter.id"))
    text: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[datetime] = mapped_column(default=utcnow)
    signed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))

    note: Mapped[ClinicalNote] = relationship(back_populates="addenda")


class Diagnosis(Base):
    __tablename__ = "opd_diagnosis"
    __table_args__ = (
        UniqueConstraint("encounter_id", "code"),
        Index("ix_opd_diagnosis_patient", "patient_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    encounter_id: Mapped[int] = mapped_column(ForeignKey("opd_encounter.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    rank: Mapped[int]  # 1 = principal diagnosis
    code: Mapped[str] = mapped_column(String(10))
    title: Mapped[str] = mapped_column(String(255))  # the ICD-10 title when recorded
    note: Mapped[str | None] = mapped_column(String(500))

    encounter: Mapped[Encounter] = relationship(back_populates="diagnoses")


class PrescriptionItem(Base):
    """One medicine line. `quantity` is what the pharmacy dispenses (units of item_code).
    `allergy_alert` keeps the alerts the prescriber was shown for this item, and
    `allergy_override_reason` why they went ahead (required when there was an alert)."""

    __tablename__ = "opd_prescription_item"
    __table_args__ = (
        CheckConstraint(f"frequency IN {_in(FREQUENCIES)}", name="frequency"),
        CheckConstraint("dose > 0", name="dose"),
        CheckConstraint("quantity >= 1", name="quantity"),
        CheckConstraint("duration_days BETWEEN 1 AND 365", name="duration_days"),
        Index("ix_opd_prescription_item_patient", "patient_id", "prescribed_at"),
        Index("ix_opd_prescription_item_encounter", "encounter_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    encounter_id: Mapped[int] = mapped_column(ForeignKey("opd_encounter.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    item_code: Mapped[str] = mapped_column(String(40))
    dose: Mapped[Decimal] = mapped_column(Numeric(10, 3))
    route: Mapped[str] = mapped_column(String(20), default="oral")
    frequency: Mapped[str] = mapped_column(String(10))
    duration_days: Mapped[int]
    quantity: Mapped[int]
    instructions: Mapped[str | None] = mapped_column(String(500))
    allergy_alert: Mapped[list[Any] | None] = mapped_column(JSON)
    allergy_override_reason: Mapped[str | None] = mapped_column(String(500))
    prescribed_at: Mapped[datetime] = mapped_column(default=utcnow)
    prescribed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))

    encounter: Mapped[Encounter] = relationship(back_populates="prescription_items")


class LabTestRequest(Base):
    """A lab test the doctor asked for (a code only). The lab package creates the order,
    samples and results when the pathway reaches it."""

    __tablename__ = "opd_lab_request"
    __table_args__ = (UniqueConstraint("encounter_id", "test_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    encounter_id: Mapped[int] = mapped_column(ForeignKey("opd_encounter.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    test_code: Mapped[str] = mapped_column(String(40))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))

    encounter: Mapped[Encounter] = relationship(back_populates="lab_requests")


class OutboxMessage(Base):
    """A message to a patient's mobile (an SMS gateway relays it). `text` is the message
    itself and may hold the patient's first name and a date: it lives here and nowhere
    else, never in application logs (which name the key only). `key` is unique, so one
    effect (e.g. "followup:encounter:42") is queued once, however often it is asked for."""

    __tablename__ = "outbox_message"
    __table_args__ = (
        CheckConstraint(f"status IN {_in(OUTBOX_STATUSES)}", name="status"),
        Index("ix_outbox_message_status", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    to_mobile: Mapped[str] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(10), default="queued")
    channel: Mapped[str] = mapped_column(String(20), default="outbox")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(300))
