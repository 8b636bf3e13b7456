"""Master patient index: patients, their name tokens, structured allergies and the
history of demographic edits.

Identity numbers are stored normalised (CNIC / Form-B: 13 digits; mobile: +923XXXXXXXXX)
so equality lookups hit the indexes. Search columns hold lower-cased copies; on
PostgreSQL their indexes use text_pattern_ops so `LIKE 'prefix%'` is an index range scan
whatever the database collation.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Date, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hms.db import Base, utcnow

SEXES = ("male", "female", "other")
RELATIONS = ("S/O", "D/O", "W/O")
SEVERITIES = ("mild", "moderate", "severe")


class Patient(Base):
    __tablename__ = "patient"
    __table_args__ = (
        CheckConstraint(f"sex IN {SEXES}", name="sex"),
        CheckConstraint(f"relation IS NULL OR relation IN {RELATIONS}", name="relation"),
        CheckConstraint("cnic IS NULL OR length(cnic) = 13", name="cnic_length"),
        CheckConstraint("form_b IS NULL OR length(form_b) = 13", name="form_b_length"),
        CheckConstraint("version >= 1", name="version"),
        Index("ix_patient_name_search", "name_search",
              postgresql_ops={"name_search": "text_pattern_ops"}),
        Index("ix_patient_mobile", "mobile"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    mrn: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    # Lower-cased, whitespace-collapsed name: prefix search and duplicate detection.
    name_search: Mapped[str] = mapped_column(String(120))
    sex: Mapped[str] = mapped_column(String(10))
    date_of_birth: Mapped[date | None] = mapped_column(Date)
    # True when only an age was known: date_of_birth is then today minus that many years.
    dob_estimated: Mapped[bool] = mapped_column(default=False)
    cnic: Mapped[str | None] = mapped_column(String(13), unique=True)
    form_b: Mapped[str | None] = mapped_column(String(13), unique=True)
    mobile: Mapped[str | None] = mapped_column(String(13))
    relation: Mapped[str | None] = mapped_column(String(3))
    guardian_name: Mapped[str | None] = mapped_column(String(120))
    address: Mapped[str | None] = mapped_column(String(300))
    city: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    version: Mapped[int] = mapped_column(default=1)

    allergies: Mapped[list["Allergy"]] = relationship(back_populates="patient", order_by="Allergy.id")


class PatientNameToken(Base):
    """One row per distinct word of a patient's name, so "khan" finds "Ahmed Khan"."""

    __tablename__ = "patient_name_token"
    __table_args__ = (
        Index("ix_patient_name_token_token", "token", postgresql_ops={"token": "text_pattern_ops"}),
    )

    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id", ondelete="CASCADE"), primary_key=True)
    token: Mapped[str] = mapped_column(String(120), primary_key=True)


class Allergy(Base):
    __tablename__ = "allergy"
    __table_args__ = (
        CheckConstraint(f"severity IN {SEVERITIES}", name="severity"),
        Index("ix_allergy_patient_id", "patient_id"),
        Index("ix_allergy_substance_search", "substance_search"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    substance: Mapped[str] = mapped_column(String(120))
    substance_search: Mapped[str] = mapped_column(String(120))
    reaction: Mapped[str | None] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(10))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    active: Mapped[bool] = mapped_column(default=True)

    patient: Mapped[Patient] = relationship(back_populates="allergies")


class PatientHistory(Base):
    """One demographic edit: `changes` maps each changed field to [old, new]."""

    __tablename__ = "patient_history"
    __table_args__ = (Index("ix_patient_history_patient_id", "patient_id", "changed_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    changed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    # The username at the time, as the audit log keeps it: history reads need no join.
    changed_by_name: Mapped[str] = mapped_column(String(60))
    version: Mapped[int]
    changes: Mapped[dict[str, Any]] = mapped_column(JSON)
