"""Wards, rooms, beds and admissions. Bed states: free, reserved, occupied, to_clean, blocked.

An admission goes ordered -> reserved (a bed is held) -> admitted (in the bed) -> discharging
(discharge summary signed; nursing gate open) -> discharged, or is cancelled before admission.
A partial unique index lets one patient hold at most one active admission.

A bed_assignment links a bed to an admission (and its patient) while the bed is reserved
or occupied; "ended" assignments are the bed's history. Two partial unique indexes make the
database refuse what the services refuse: a second active assignment of one bed, and a
second active bed of one admission.
"""

from __future__ import annotations

from datetime import datetime

from typing import Any

from sqlalchemy import JSON, CheckConstraint, event, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hms.db import Base, utcnow

WARD_TYPES = ("general", "private", "icu", "maternity")
WARD_GENDERS = ("male", "female", "mixed")
BED_STATES = ("free", "reserved", "occupied", "to_clean", "blocked")
ASSIGNMENT_STATES = ("reserved", "occupied", "ended")
ACTIVE_ASSIGNMENT_STATES = ("reserved", "occupied")
_ACTIVE = "state IN ('reserved', 'occupied')"


class Ward(Base):
    __tablename__ = "ward"
    __table_args__ = (
        CheckConstraint(f"ward_type IN {WARD_TYPES}", name="ward_type"),
        CheckConstraint(f"gender IN {WARD_GENDERS}", name="gender"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id"))
    ward_type: Mapped[str] = mapped_column(String(20), default="general")
    gender: Mapped[str] = mapped_column(String(10), default="mixed")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    rooms: Mapped[list["Room"]] = relationship(back_populates="ward", order_by="Room.name")
    beds: Mapped[list["Bed"]] = relationship(back_populates="ward", order_by="Bed.label")


class Room(Base):
    __tablename__ = "room"
    __table_args__ = (UniqueConstraint("ward_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ward_id: Mapped[int] = mapped_column(ForeignKey("ward.id"), index=True)
    name: Mapped[str] = mapped_column(String(60))

    ward: Mapped[Ward] = relationship(back_populates="rooms")


class Bed(Base):
    __tablename__ = "bed"
    __table_args__ = (
        UniqueConstraint("ward_id", "label"),
        CheckConstraint(f"state IN {BED_STATES}", name="state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ward_id: Mapped[int] = mapped_column(ForeignKey("ward.id"), index=True)
    room_id: Mapped[int | None] = mapped_column(ForeignKey("room.id"))
    label: Mapped[str] = mapped_column(String(30))
    state: Mapped[str] = mapped_column(String(12), default="free")

    ward: Mapped[Ward] = relationship(back_populates="beds")


class BedAssignment(Base):
    """A bed held for (reserved) or used by (occupied) one admission; ended when released,
    vacated or left by a transfer (end_reason "transfer")."""

    __tablename__ = "bed_assignment"
    __table_args__ = (
        CheckConstraint(f"state IN {ASSIGNMENT_STATES}", name="state"),
        CheckConstraint("(state = 'ended') = (ended_at IS NOT NULL)", name="ended_at"),
        Index("uq_bed_assignment_active_bed", "bed_id", unique=True,
              sqlite_where=text(_ACTIVE), postgresql_where=text(_ACTIVE)),
        Index("uq_bed_assignment_active_admission", "admission_id", unique=True,
              sqlite_where=text(_ACTIVE), postgresql_where=text(_ACTIVE)),
        Index("ix_bed_assignment_bed_started", "bed_id", "started_at"),
        Index("ix_bed_assignment_patient", "patient_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    bed_id: Mapped[int] = mapped_column(ForeignKey("bed.id"))
    admission_id: Mapped[int] = mapped_column(ForeignKey("admission.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    state: Mapped[str] = mapped_column(String(10), default="reserved")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    occupied_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    end_reason: Mapped[str | None] = mapped_column(String(200))
    by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))


ADMISSION_STATES = ("ordered", "reserved", "admitted", "discharging", "discharged", "cancelled")
ACTIVE_ADMISSION_STATES = ("ordered", "reserved", "admitted", "discharging")
DISCHARGE_CONDITIONS = ("improved", "lama", "referred", "expired")
TRANSFER_STATES = ("requested", "accepted", "rejected", "cancelled")
ORDER_KINDS = ("diet", "procedure", "lab")
ORDER_STATES = ("active", "stopped", "done")
_ACTIVE_ADMISSION = "state IN ('ordered', 'reserved', 'admitted', 'discharging')"
_REQUESTED = "state = 'requested'"


class Admission(Base):
    """One inpatient stay. ward_id is the requested ward, then the current one; bed_id the
    current bed. charge_from is when bed charges start (reservation or acceptance, by setting);
    nursing_cleared_at is set by the nursing gate and freezes orders."""

    __tablename__ = "admission"
    __table_args__ = (
        CheckConstraint(f"state IN {ADMISSION_STATES}", name="state"),
        CheckConstraint(f"discharge_condition IS NULL OR discharge_condition IN {DISCHARGE_CONDITIONS}",
                        name="discharge_condition"),
        Index("ix_admission_state", "state"),
        Index("ix_admission_ward_state", "ward_id", "state"),
        Index("ix_admission_patient", "patient_id"),
        Index("uq_admission_active_patient", "patient_id", unique=True,
              sqlite_where=text(_ACTIVE_ADMISSION), postgresql_where=text(_ACTIVE_ADMISSION)),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    admission_no: Mapped[str] = mapped_column(String(20), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id"))
    ward_id: Mapped[int | None] = mapped_column(ForeignKey("ward.id"))
    bed_id: Mapped[int | None] = mapped_column(ForeignKey("bed.id"))
    doctor_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    encounter_id: Mapped[int | None] = mapped_column()
    reason: Mapped[str | None] = mapped_column(String(300))
    payer_class: Mapped[str] = mapped_column(String(40), default="cash")
    state: Mapped[str] = mapped_column(String(12), default="ordered")
    ordered_at: Mapped[datetime] = mapped_column(default=utcnow)
    ordered_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    reserved_at: Mapped[datetime | None] = mapped_column()
    admitted_at: Mapped[datetime | None] = mapped_column()
    charge_from: Mapped[datetime | None] = mapped_column()
    clinical_discharge_at: Mapped[datetime | None] = mapped_column()
    nursing_cleared_at: Mapped[datetime | None] = mapped_column()
    discharged_at: Mapped[datetime | None] = mapped_column()
    discharge_condition: Mapped[str | None] = mapped_column(String(12))
    instance_id: Mapped[int | None] = mapped_column()
    discharge_instance_id: Mapped[int | None] = mapped_column()


class AdmissionAssessment(Base):
    """The nursing admission assessment (one per admission; form values as JSON)."""

    __tablename__ = "admission_assessment"

    id: Mapped[int] = mapped_column(primary_key=True)
    admission_id: Mapped[int] = mapped_column(ForeignKey("admission.id"), unique=True)
    values: Mapped[dict[str, Any]] = mapped_column(JSON)
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class Transfer(Base):
    """A request to move an admitted patient to another ward (or another bed of the same ward)."""

    __tablename__ = "ward_transfer"
    __table_args__ = (
        CheckConstraint(f"state IN {TRANSFER_STATES}", name="state"),
        Index("uq_ward_transfer_requested_admission", "admission_id", unique=True,
              sqlite_where=text(_REQUESTED), postgresql_where=text(_REQUESTED)),
        Index("ix_ward_transfer_admission", "admission_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    admission_id: Mapped[int] = mapped_column(ForeignKey("admission.id"))
    from_bed_id: Mapped[int | None] = mapped_column(ForeignKey("bed.id"))
    from_ward_id: Mapped[int | None] = mapped_column(ForeignKey("ward.id"))
    to_ward_id: Mapped[int] = mapped_column(ForeignKey("ward.id"))
    to_bed_id: Mapped[int | None] = mapped_column(ForeignKey("bed.id"))
    state: Mapped[str] = mapped_column(String(10), default="requested")
    reason: Mapped[str | None] = mapped_column(String(200))
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    decided_at: Mapped[datetime | None] = mapped_column()
    decision_note: Mapped[str | None] = mapped_column(String(200))
    instance_id: Mapped[int | None] = mapped_column()


class WardOrder(Base):
    """A doctor's order on an admission: diet, procedure (code = tariff code) or lab (code =
    lab order no). Stopped orders keep who stopped them and why."""

    __tablename__ = "ward_order"
    __table_args__ = (
        CheckConstraint(f"kind IN {ORDER_KINDS}", name="kind"),
        CheckConstraint(f"state IN {ORDER_STATES}", name="state"),
        Index("ix_ward_order_admission", "admission_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    admission_id: Mapped[int] = mapped_column(ForeignKey("admission.id"))
    kind: Mapped[str] = mapped_column(String(12))
    code: Mapped[str | None] = mapped_column(String(40))
    description: Mapped[str] = mapped_column(String(200))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(10), default="active")
    ordered_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    ordered_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    stopped_at: Mapped[datetime | None] = mapped_column()
    stop_reason: Mapped[str | None] = mapped_column(String(200))
    charge_ref: Mapped[str | None] = mapped_column(String(120))


class DischargeSummary(Base):
    """The signed discharge summary (one per admission, never edited after signing)."""

    __tablename__ = "discharge_summary"
    __table_args__ = (CheckConstraint(f"condition IN {DISCHARGE_CONDITIONS}", name="condition"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    admission_id: Mapped[int] = mapped_column(ForeignKey("admission.id"), unique=True)
    diagnoses: Mapped[list[Any]] = mapped_column(JSON)
    procedures: Mapped[list[Any]] = mapped_column(JSON)
    condition: Mapped[str] = mapped_column(String(12))
    discharge_medicines: Mapped[list[Any]] = mapped_column(JSON)
    follow_up: Mapped[str | None] = mapped_column(String(500))
    signed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    signed_at: Mapped[datetime] = mapped_column(default=utcnow)


@event.listens_for(DischargeSummary, "before_update")
def _summary_is_signed(_mapper, _connection, summary: DischargeSummary) -> None:
    """A signed discharge summary is never edited in place (DESIGN.md: corrections, not edits)."""
    raise ValueError(f"discharge summary {summary.id} is signed and cannot change")
