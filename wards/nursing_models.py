"""Nursing tables: the vitals-round plan of an admission, its vitals rounds, medication
orders and their dose slots (the medication administration record, MAR).

Recurring care is rows, not workflow state: each round and each dose slot is one row here
(and one small workflow instance, started by the inpatient journey's scheduler). The
database refuses what the services refuse: one round per admission and due time, one slot
per order and due time, a reason on every dose not given or held, vitals in their
plausible ranges, and a review only on missed work.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Index, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hms.db import Base, utcnow

DEFAULT_ROUND_HOURS = 6
ROUND_HOURS_RANGE = (1, 24)
ROUND_STATES = ("due", "done", "missed")
ORDER_STATES = ("active", "stopped")
ROUTES = ("oral", "iv", "im", "sc", "topical", "inhaled", "other")
EVERY_HOURS_RANGE = (1, 168)
SLOT_STATUSES = ("pending", "given", "not_given", "held", "missed", "cancelled")
RECORDED_STATUSES = ("given", "not_given", "held")
REASON_STATUSES = ("not_given", "held")

# (field, low, high): the plausible range of each vital sign; outside it is a typing error.
VITAL_RANGES = (
    ("temperature_c", Decimal("30.0"), Decimal("45.0")),
    ("pulse", 20, 250),
    ("systolic", 50, 260),
    ("diastolic", 20, 160),
    ("resp_rate", 4, 60),
    ("spo2", 50, 100),
    ("pain_score", 0, 10),
)
REQUIRED_VITALS = ("temperature_c", "pulse", "systolic", "diastolic")


def _range_checks() -> tuple[CheckConstraint, ...]:
    return tuple(CheckConstraint(f"{name} IS NULL OR ({name} >= {low} AND {name} <= {high})", name=name)
                 for name, low, high in VITAL_RANGES)


class NursingPlan(Base):
    """How often this admission's vitals are taken (a doctor changes it); no row = default."""

    __tablename__ = "nursing_plan"
    __table_args__ = (
        CheckConstraint(f"round_interval_hours BETWEEN {ROUND_HOURS_RANGE[0]} AND {ROUND_HOURS_RANGE[1]}",
                        name="round_interval_hours"),
    )

    admission_id: Mapped[int] = mapped_column(ForeignKey("admission.id"), primary_key=True)
    round_interval_hours: Mapped[int] = mapped_column(default=DEFAULT_ROUND_HOURS)
    changed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class VitalsRound(Base):
    """One vitals round: due, then done (with the observations) or missed (then reviewed)."""

    __tablename__ = "vitals_round"
    __table_args__ = (
        UniqueConstraint("admission_id", "due_at"),
        CheckConstraint(f"state IN {ROUND_STATES}", name="state"),
        CheckConstraint("state <> 'done' OR (recorded_at IS NOT NULL AND temperature_c IS NOT NULL "
                        "AND pulse IS NOT NULL AND systolic IS NOT NULL AND diastolic IS NOT NULL)",
                        name="done_has_vitals"),
        CheckConstraint("state <> 'missed' OR missed_at IS NOT NULL", name="missed_at"),
        CheckConstraint("reviewed_at IS NULL OR state = 'missed'", name="review_only_missed"),
        *_range_checks(),
        Index("ix_vitals_round_ward_state_due", "ward_id", "state", "due_at"),
        Index("ix_vitals_round_patient", "patient_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    admission_id: Mapped[int] = mapped_column(ForeignKey("admission.id"))
    ward_id: Mapped[int] = mapped_column(ForeignKey("ward.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    due_at: Mapped[datetime] = mapped_column()
    state: Mapped[str] = mapped_column(String(10), default="due")
    temperature_c: Mapped[Decimal | None] = mapped_column(Numeric(4, 1))
    pulse: Mapped[int | None] = mapped_column()
    systolic: Mapped[int | None] = mapped_column()
    diastolic: Mapped[int | None] = mapped_column()
    resp_rate: Mapped[int | None] = mapped_column()
    spo2: Mapped[int | None] = mapped_column()
    pain_score: Mapped[int | None] = mapped_column()
    notes: Mapped[str | None] = mapped_column(String(500))
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    recorded_at: Mapped[datetime | None] = mapped_column()
    instance_id: Mapped[int | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    missed_at: Mapped[datetime | None] = mapped_column()
    reviewed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    reviewed_at: Mapped[datetime | None] = mapped_column()
    review_note: Mapped[str | None] = mapped_column(String(300))


class MedicationOrder(Base):
    """A doctor's inpatient medicine: `dose` by `route` every `every_hours` from first_due_at."""

    __tablename__ = "medication_order"
    __table_args__ = (
        CheckConstraint(f"state IN {ORDER_STATES}", name="state"),
        CheckConstraint(f"route IN {ROUTES}", name="route"),
        CheckConstraint(f"every_hours BETWEEN {EVERY_HOURS_RANGE[0]} AND {EVERY_HOURS_RANGE[1]}",
                        name="every_hours"),
        CheckConstraint("(state = 'stopped') = (stopped_at IS NOT NULL)", name="stopped_at"),
        Index("ix_medication_order_admission", "admission_id"),
        Index("ix_medication_order_state", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    admission_id: Mapped[int] = mapped_column(ForeignKey("admission.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    item_code: Mapped[str] = mapped_column(String(40))
    medicine_name: Mapped[str] = mapped_column(String(120))
    dose: Mapped[str] = mapped_column(String(60))
    route: Mapped[str] = mapped_column(String(20), default="oral")
    every_hours: Mapped[int] = mapped_column()
    first_due_at: Mapped[datetime] = mapped_column()
    state: Mapped[str] = mapped_column(String(10), default="active")
    ordered_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    ordered_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    stopped_at: Mapped[datetime | None] = mapped_column()
    stop_reason: Mapped[str | None] = mapped_column(String(200))


class DoseSlot(Base):
    """One due dose of an order: pending until recorded (given, not given, held), missed
    when not recorded by its due time plus the grace period, cancelled when the order stops."""

    __tablename__ = "dose_slot"
    __table_args__ = (
        UniqueConstraint("order_id", "due_at"),
        CheckConstraint(f"status IN {SLOT_STATUSES}", name="status"),
        CheckConstraint(f"status NOT IN {REASON_STATUSES} OR (reason IS NOT NULL AND reason <> '')",
                        name="reason_required"),
        CheckConstraint(f"status NOT IN {RECORDED_STATUSES} OR recorded_at IS NOT NULL", name="recorded_at"),
        CheckConstraint("status <> 'missed' OR missed_at IS NOT NULL", name="missed_at"),
        CheckConstraint("reviewed_at IS NULL OR status = 'missed'", name="review_only_missed"),
        Index("ix_dose_slot_ward_status_due", "ward_id", "status", "due_at"),
        Index("ix_dose_slot_admission_due", "admission_id", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("medication_order.id"))
    admission_id: Mapped[int] = mapped_column(ForeignKey("admission.id"))
    ward_id: Mapped[int] = mapped_column(ForeignKey("ward.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    due_at: Mapped[datetime] = mapped_column()
    status: Mapped[str] = mapped_column(String(10), default="pending")
    reason: Mapped[str | None] = mapped_column(String(300))
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    recorded_at: Mapped[datetime | None] = mapped_column()
    instance_id: Mapped[int | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    missed_at: Mapped[datetime | None] = mapped_column()
    reviewed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    reviewed_at: Mapped[datetime | None] = mapped_column()
    review_note: Mapped[str | None] = mapped_column(String(300))
