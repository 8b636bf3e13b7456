"""Wards, rooms and beds. Bed states: free, reserved, occupied, to_clean, blocked."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hms.db import Base, utcnow

WARD_TYPES = ("general", "private", "icu", "maternity")
WARD_GENDERS = ("male", "female", "mixed")
BED_STATES = ("free", "reserved", "occupied", "to_clean", "blocked")


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
