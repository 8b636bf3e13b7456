"""Wards, rooms and beds. Bed states: free, reserved, occupied, to_clean, blocked.

A bed_assignment links a bed to an admission (and its patient) while the bed is reserved
or occupied; "ended" assignments are the bed's history. Two partial unique indexes make the
database refuse what the services refuse: a second active assignment of one bed, and a
second active bed of one admission.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint, text
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
    """A bed held for (reserved) or used by (occupied) one admission; ended when released or vacated.

    admission_id has no foreign key yet: the admission table arrives with the admissions work.
    """

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
    admission_id: Mapped[int] = mapped_column()
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    state: Mapped[str] = mapped_column(String(10), default="reserved")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    occupied_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    end_reason: Mapped[str | None] = mapped_column(String(200))
    by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
