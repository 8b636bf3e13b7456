"""Laboratory tables: the test catalogue (tests, analytes, reference ranges), orders and
their items, samples (tubes with a label) and results (versioned: a verified result is
never edited; an amendment is a new version that needs verification again).

Orders carry `encounter_id` and `admission_id` without foreign keys: OPD encounters and
admissions live in other packages, and the lab does not depend on them.

Numbers (results, reference limits) are decimals. `Dec` stores them as NUMERIC on
PostgreSQL and as canonical text on SQLite (which has no decimal type), so a value reads
back exactly as it was written on both.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from hms.db import Base, utcnow

# Containers, as the phlebotomist knows them (the label is printed on the worklist).
SAMPLE_TYPES: dict[str, str] = {
    "blood_edta": "Blood, EDTA (lavender top)",
    "serum": "Serum (red/yellow top)",
    "plasma_citrate": "Citrated plasma (blue top)",
    "plasma_fluoride": "Fluoride plasma (grey top)",
    "whole_blood": "Whole blood",
    "urine": "Urine",
    "stool": "Stool",
    "sputum": "Sputum",
    "swab": "Swab",
    "csf": "CSF",
}
SECTIONS: dict[str, str] = {
    "haematology": "Haematology",
    "chemistry": "Chemical pathology",
    "serology": "Serology / immunology",
    "microbiology": "Microbiology",
    "urine": "Urine analysis",
    "stool": "Stool analysis",
}
RESULT_TYPES = ("numeric", "text", "options")
RANGE_SEXES = ("male", "female", "any")
PRIORITIES = ("routine", "urgent", "stat")
# ordered: awaiting collection (again, after a rejected sample); collected: awaiting
# results; resulted: every analyte has a result awaiting verification (also after an
# amendment); verified; cancelled (only before collection).
ITEM_STATUSES = ("ordered", "collected", "resulted", "verified", "cancelled")
# An order's status is its least advanced live item (see services._order_status).
ORDER_STATUSES = ("awaiting_collection", "awaiting_results", "awaiting_verification", "verified", "cancelled")
# pending: awaiting verification; returned: sent back by the pathologist for re-entry.
RESULT_STATUSES = ("pending", "returned", "verified")
REJECTION_REASONS: dict[str, str] = {
    "haemolysed": "Haemolysed",
    "clotted": "Clotted",
    "insufficient": "Insufficient quantity",
    "mislabelled": "Mislabelled / unlabelled",
    "wrong_container": "Wrong container",
    "contaminated": "Contaminated",
}
# Flags: L/H outside the reference range, LL/HH beyond a critical limit; A abnormal and
# AA critical for option results (e.g. "Positive").
FLAGS = ("L", "H", "LL", "HH", "A", "AA")
CRITICAL_FLAGS = frozenset({"LL", "HH", "AA"})


def _in(values) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


class Dec(TypeDecorator):
    """A Decimal column: NUMERIC(14, 4) on PostgreSQL, canonical text on SQLite."""

    impl = Numeric(14, 4)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(14, 4))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = Decimal(value)
        return format(value, "f") if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return plain_decimal(Decimal(value))


def plain_decimal(value: Decimal) -> Decimal:
    """Without trailing zeros and never in exponent form: 13.5000 -> 13.5, 100.00 -> 100."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


class LabTest(Base):
    __tablename__ = "lab_test"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    sample_type: Mapped[str] = mapped_column(String(20))
    section: Mapped[str] = mapped_column(String(20))
    tariff_code: Mapped[str] = mapped_column(String(30), unique=True)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    analytes: Mapped[list["LabAnalyte"]] = relationship(
        back_populates="test", order_by="LabAnalyte.position", lazy="selectin")


class LabAnalyte(Base):
    """One reported parameter of a test (Hb of a CBC). A single-analyte test has one."""

    __tablename__ = "lab_analyte"
    __table_args__ = (
        UniqueConstraint("test_id", "code"),
        CheckConstraint(f"result_type IN {_in(RESULT_TYPES)}", name="result_type"),
        CheckConstraint("decimals >= 0 AND decimals <= 4", name="decimals"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    test_id: Mapped[int] = mapped_column(ForeignKey("lab_test.id"), index=True)
    position: Mapped[int] = mapped_column(default=0)
    code: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(120))
    result_type: Mapped[str] = mapped_column(String(10))
    units: Mapped[str | None] = mapped_column(String(30))
    decimals: Mapped[int] = mapped_column(default=0)
    # For result_type "options": the allowed values, and those that are abnormal/critical.
    options: Mapped[list[Any] | None] = mapped_column(JSON)
    abnormal_options: Mapped[list[Any] | None] = mapped_column(JSON)
    critical_options: Mapped[list[Any] | None] = mapped_column(JSON)
    # Plausibility of numeric results: negatives are refused unless allowed (base excess);
    # values above plausible_max are refused as impossible (a typo, not a result).
    allow_negative: Mapped[bool] = mapped_column(default=False)
    plausible_max: Mapped[Decimal | None] = mapped_column(Dec)

    test: Mapped[LabTest] = relationship(back_populates="analytes")
    ranges: Mapped[list["LabReferenceRange"]] = relationship(
        back_populates="analyte", order_by="LabReferenceRange.id", lazy="selectin")


class LabReferenceRange(Base):
    """Reference (and critical) limits for one sex and age band: min_age_days <= age <
    max_age_days (no upper bound when NULL). A sex-specific band wins over "any"."""

    __tablename__ = "lab_reference_range"
    __table_args__ = (
        CheckConstraint(f"sex IN {_in(RANGE_SEXES)}", name="sex"),
        CheckConstraint("min_age_days >= 0", name="min_age"),
        CheckConstraint("max_age_days IS NULL OR max_age_days > min_age_days", name="age_band"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    analyte_id: Mapped[int] = mapped_column(ForeignKey("lab_analyte.id"), index=True)
    sex: Mapped[str] = mapped_column(String(6), default="any")
    min_age_days: Mapped[int] = mapped_column(default=0)
    max_age_days: Mapped[int | None]
    low: Mapped[Decimal | None] = mapped_column(Dec)
    high: Mapped[Decimal | None] = mapped_column(Dec)
    critical_low: Mapped[Decimal | None] = mapped_column(Dec)
    critical_high: Mapped[Decimal | None] = mapped_column(Dec)
    note: Mapped[str | None] = mapped_column(String(60))

    analyte: Mapped[LabAnalyte] = relationship(back_populates="ranges")


class LabOrder(Base):
    __tablename__ = "lab_order"
    __table_args__ = (
        CheckConstraint(f"priority IN {_in(PRIORITIES)}", name="priority"),
        CheckConstraint(f"status IN {_in(ORDER_STATUSES)}", name="status"),
        Index("ix_lab_order_patient_ordered", "patient_id", "ordered_at"),
        Index("ix_lab_order_status_ordered", "status", "ordered_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_no: Mapped[str] = mapped_column(String(20), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    # No foreign keys: encounters and admissions belong to other packages.
    encounter_id: Mapped[int | None] = mapped_column(index=True)
    admission_id: Mapped[int | None] = mapped_column(index=True)
    priority: Mapped[str] = mapped_column(String(10), default="routine")
    status: Mapped[str] = mapped_column(String(25), default="awaiting_collection")
    ordered_at: Mapped[datetime] = mapped_column(default=utcnow)
    ordered_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    # The verifying pathologists' comments, printed once at the end of the report.
    report_comment: Mapped[str | None] = mapped_column(String(2000))

    items: Mapped[list["LabOrderItem"]] = relationship(
        back_populates="order", order_by="LabOrderItem.id", lazy="selectin")

    @property
    def business_key(self) -> str:
        return f"lab-order:{self.id}"


class LabSample(Base):
    """One labelled container. A rejected sample keeps its row (and reason); its items
    go back to awaiting collection and the next collection makes a new sample."""

    __tablename__ = "lab_sample"
    __table_args__ = (
        CheckConstraint("rejection_reason IS NULL OR rejection_reason IN "
                        f"{_in(REJECTION_REASONS)}", name="rejection_reason"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("lab_order.id"), index=True)
    label: Mapped[str] = mapped_column(String(40), unique=True)
    sample_type: Mapped[str] = mapped_column(String(20))
    collected_at: Mapped[datetime] = mapped_column(default=utcnow)
    collected_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    rejected_at: Mapped[datetime | None]
    rejected_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    rejection_reason: Mapped[str | None] = mapped_column(String(20))
    rejection_note: Mapped[str | None] = mapped_column(String(300))


class LabSampleItem(Base):
    """Which order items a sample was collected for (kept after a rejection)."""

    __tablename__ = "lab_sample_item"

    sample_id: Mapped[int] = mapped_column(ForeignKey("lab_sample.id"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("lab_order_item.id"), primary_key=True)


class LabOrderItem(Base):
    """One test of an order: what is charged (tariff_code of the test) and what is reported."""

    __tablename__ = "lab_order_item"
    __table_args__ = (
        CheckConstraint(f"status IN {_in(ITEM_STATUSES)}", name="status"),
        Index("ix_lab_order_item_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("lab_order.id"), index=True)
    test_id: Mapped[int] = mapped_column(ForeignKey("lab_test.id"))
    status: Mapped[str] = mapped_column(String(10), default="ordered")
    # The current (accepted) sample; NULL while awaiting (re)collection.
    sample_id: Mapped[int | None] = mapped_column(ForeignKey("lab_sample.id"))
    # Turnaround: collected_at is that of the current sample; verified_at is the first
    # time every analyte was verified (amendments keep it; their versions have their own).
    collected_at: Mapped[datetime | None]
    verified_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    cancelled_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    cancel_reason: Mapped[str | None] = mapped_column(String(300))

    order: Mapped[LabOrder] = relationship(back_populates="items")
    test: Mapped[LabTest] = relationship(lazy="joined")
    sample: Mapped[LabSample | None] = relationship(lazy="joined")


class LabResult(Base):
    """One version of one analyte's result. Versions count from 1 per (item, analyte).

    A draft (pending or returned) may be re-entered in place: it was never reported. A
    verified version is never changed; `amend` adds version n+1 (amends_id -> the old one,
    with a reason), which needs verification again. The reference range and flag are a
    snapshot taken at entry, from the patient's sex and age at collection.
    """

    __tablename__ = "lab_result"
    __table_args__ = (
        UniqueConstraint("item_id", "analyte_id", "version"),
        CheckConstraint(f"status IN {_in(RESULT_STATUSES)}", name="status"),
        CheckConstraint(f"flag IS NULL OR flag IN {_in(FLAGS)}", name="flag"),
        CheckConstraint("version >= 1", name="version"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("lab_order_item.id"), index=True)
    analyte_id: Mapped[int] = mapped_column(ForeignKey("lab_analyte.id"))
    version: Mapped[int] = mapped_column(default=1)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    value_text: Mapped[str] = mapped_column(String(500))
    value_num: Mapped[Decimal | None] = mapped_column(Dec)
    flag: Mapped[str | None] = mapped_column(String(2))
    units: Mapped[str | None] = mapped_column(String(30))
    ref_low: Mapped[Decimal | None] = mapped_column(Dec)
    ref_high: Mapped[Decimal | None] = mapped_column(Dec)
    critical_low: Mapped[Decimal | None] = mapped_column(Dec)
    critical_high: Mapped[Decimal | None] = mapped_column(Dec)
    ref_text: Mapped[str | None] = mapped_column(String(80))
    entered_at: Mapped[datetime] = mapped_column(default=utcnow)
    entered_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    verified_at: Mapped[datetime | None]
    verified_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    amends_id: Mapped[int | None] = mapped_column(ForeignKey("lab_result.id"))
    amend_reason: Mapped[str | None] = mapped_column(String(500))
    review_comment: Mapped[str | None] = mapped_column(String(1000))

    analyte: Mapped[LabAnalyte] = relationship(lazy="joined")

    @property
    def critical(self) -> bool:
        return self.flag in CRITICAL_FLAGS
