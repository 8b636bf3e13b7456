"""Pharmacy stock: items (the formulary), batches, the stock ledger, goods receipts,
dispenses against prescriptions and returns.

Quantities are whole units of the item's `unit` (tablets, capsules, bottles, vials ...);
money is integer paisa. Every change of a batch's `quantity_on_hand` is one
`stock_movement` row written in the same flush, so the ledger sum per batch always equals
the quantity on hand (`inventory.services.ledger_mismatches` checks it). A movement is
never edited or deleted: a correction is a new adjustment movement with a reason.
The database refuses a negative stock (`CHECK quantity_on_hand >= 0`) even if a service
forgot to lock; the services lock the batch rows they change (SELECT ... FOR UPDATE).

Patients belong to hms.patients (core), so `patient_id` has a foreign key. Prescriptions
live in the OPD package, which inventory must not import: `prescription_ref` and
`prescription_item_id` are references, not foreign keys. Likewise admissions belong to
wards: a dispense to a ward (an "issue") and a ward return carry `admission_id` without
a foreign key.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, Date, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hms.db import Base, utcnow

FORMS = ("tablet", "capsule", "syrup", "suspension", "injection", "infusion", "cream", "ointment",
         "gel", "drops", "inhaler", "sachet", "suppository", "solution", "powder", "spray", "lozenge")
UNITS = ("tablet", "capsule", "ml", "bottle", "vial", "ampoule", "tube", "sachet", "inhaler",
         "bag", "pen", "suppository", "strip", "piece")
MOVEMENT_KINDS = ("receipt", "dispense", "return", "adjustment")
ADJUSTMENT_REASONS = ("damaged", "expired_write_off", "count_correction")
RECEIPT_KINDS = ("purchase", "opening")
WARD_RETURN_STATES = ("sent", "received", "rejected")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Item(Base):
    """A medicine of the formulary. `substance` (lower-case, components joined by " + ")
    and `drug_class` are what allergy checks compare with a patient's allergies."""

    __tablename__ = "inventory_item"
    __table_args__ = (
        CheckConstraint(_in("form", FORMS), name="form"),
        CheckConstraint(_in("unit", UNITS), name="unit"),
        CheckConstraint("reorder_level >= 0", name="reorder_level"),
        CheckConstraint("code = upper(code)", name="code_upper"),
        Index("ix_inventory_item_generic_search", "generic_search",
              postgresql_ops={"generic_search": "text_pattern_ops"}),
        Index("ix_inventory_item_brand_search", "brand_search",
              postgresql_ops={"brand_search": "text_pattern_ops"}),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    generic_name: Mapped[str] = mapped_column(String(120))
    brand: Mapped[str | None] = mapped_column(String(120))
    form: Mapped[str] = mapped_column(String(20))
    strength: Mapped[str | None] = mapped_column(String(40))
    unit: Mapped[str] = mapped_column(String(20))
    substance: Mapped[str] = mapped_column(String(120))
    drug_class: Mapped[str | None] = mapped_column(String(60))
    reorder_level: Mapped[int] = mapped_column(default=0)
    active: Mapped[bool] = mapped_column(default=True)
    # Lower-cased copies for prefix search.
    generic_search: Mapped[str] = mapped_column(String(120))
    brand_search: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))

    batches: Mapped[list["Batch"]] = relationship(back_populates="item", order_by="Batch.id")

    @property
    def display_name(self) -> str:
        """"Paracetamol 500 mg tablet (Panadol)"."""
        name = " ".join(p for p in (self.generic_name, self.strength, self.form) if p)
        return f"{name} ({self.brand})" if self.brand else name


class GoodsReceipt(Base):
    """One delivery from a supplier (or the opening balance of a stock count)."""

    __tablename__ = "goods_receipt"
    __table_args__ = (
        CheckConstraint(_in("kind", RECEIPT_KINDS), name="kind"),
        # The same supplier invoice entered twice is a double count.
        UniqueConstraint("supplier_key", "invoice_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), default="purchase")
    supplier: Mapped[str] = mapped_column(String(120))
    invoice_no: Mapped[str] = mapped_column(String(60))
    supplier_key: Mapped[str] = mapped_column(String(120))
    invoice_key: Mapped[str] = mapped_column(String(60))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    received_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    total_cost_paisa: Mapped[int] = mapped_column(BigInteger, default=0)

    batches: Mapped[list["Batch"]] = relationship(back_populates="receipt", order_by="Batch.id")


class Batch(Base):
    """A manufacturer's batch of an item as received in one goods receipt. Prices are per
    unit and never change; `quantity_on_hand` changes only together with a movement row."""

    __tablename__ = "stock_batch"
    __table_args__ = (
        CheckConstraint("quantity_on_hand >= 0", name="quantity_on_hand"),
        CheckConstraint("cost_price_paisa > 0", name="cost_price"),
        CheckConstraint("sale_price_paisa > 0", name="sale_price"),
        UniqueConstraint("receipt_id", "item_id", "batch_no"),
        Index("ix_stock_batch_item_expiry", "item_id", "expiry_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("inventory_item.id"))
    receipt_id: Mapped[int] = mapped_column(ForeignKey("goods_receipt.id"), index=True)
    batch_no: Mapped[str] = mapped_column(String(40))
    expiry_date: Mapped[date] = mapped_column(Date)
    cost_price_paisa: Mapped[int] = mapped_column(BigInteger)
    sale_price_paisa: Mapped[int] = mapped_column(BigInteger)
    quantity_received: Mapped[int]
    quantity_on_hand: Mapped[int]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)

    item: Mapped[Item] = relationship(back_populates="batches")
    receipt: Mapped[GoodsReceipt] = relationship(back_populates="batches")


class StockMovement(Base):
    """The stock ledger: one row per change of a batch's quantity (signed).

    `balance_after` is the batch's quantity on hand right after this movement, written
    while the batch row is locked, so the ledger reads as a running balance.
    """

    __tablename__ = "stock_movement"
    __table_args__ = (
        CheckConstraint(_in("kind", MOVEMENT_KINDS), name="kind"),
        CheckConstraint("quantity <> 0", name="quantity_nonzero"),
        CheckConstraint("kind NOT IN ('receipt', 'return') OR quantity > 0", name="inbound_positive"),
        CheckConstraint("kind <> 'dispense' OR quantity < 0", name="dispense_negative"),
        CheckConstraint("kind <> 'adjustment' OR " + _in("reason", ADJUSTMENT_REASONS), name="adjustment_reason"),
        CheckConstraint("balance_after >= 0", name="balance_after"),
        Index("ix_stock_movement_batch", "batch_id", "id"),
        Index("ix_stock_movement_item", "item_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("stock_batch.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("inventory_item.id"))
    kind: Mapped[str] = mapped_column(String(12))
    quantity: Mapped[int]
    balance_after: Mapped[int]
    reason: Mapped[str | None] = mapped_column(String(30))
    note: Mapped[str | None] = mapped_column(String(200))
    # What caused it: "receipt:3", "dispense:12", "return:4", "adjustment".
    reference: Mapped[str] = mapped_column(String(60))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    actor_name: Mapped[str] = mapped_column(String(60))
    at: Mapped[datetime] = mapped_column(default=utcnow)

    batch: Mapped[Batch] = relationship()
    item: Mapped[Item] = relationship()


class PrescriptionSupply(Base):
    """How much of one prescription item may be dispensed in total.

    Written by the first dispense of (prescription_ref, prescription_item_id): the
    prescribed quantity stated then (or the quantity asked for). Later dispenses of the
    same prescription item lock this row, so together they never exceed it.
    """

    __tablename__ = "prescription_supply"
    __table_args__ = (
        UniqueConstraint("prescription_ref", "prescription_item_id"),
        CheckConstraint("prescribed_quantity > 0", name="prescribed_quantity"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prescription_ref: Mapped[str] = mapped_column(String(60))
    prescription_item_id: Mapped[int]
    item_id: Mapped[int] = mapped_column(ForeignKey("inventory_item.id"))
    prescribed_quantity: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Dispense(Base):
    """Medicines handed to a patient against a prescription.

    An issue to a ward is a dispense with `admission_id` (its prescription_ref starts with
    "admission:<admission_id>"); the ward confirms receipt (`ward_accepted_at`). OPD
    dispenses have no admission and need no acceptance.
    """

    __tablename__ = "dispense"
    __table_args__ = (
        CheckConstraint("total_paisa >= 0", name="total"),
        CheckConstraint("ward_accepted_at IS NULL OR admission_id IS NOT NULL", name="accepted_is_ward_issue"),
        Index("ix_dispense_patient", "patient_id", "id"),
        Index("ix_dispense_prescription_ref", "prescription_ref"),
        Index("ix_dispense_admission", "admission_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    prescription_ref: Mapped[str] = mapped_column(String(60))
    dispensed_at: Mapped[datetime] = mapped_column(default=utcnow)
    dispensed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    dispensed_by_name: Mapped[str] = mapped_column(String(60))
    total_paisa: Mapped[int] = mapped_column(BigInteger, default=0)
    # Set only when a line was supplied short of what was asked.
    partial_reason: Mapped[str | None] = mapped_column(String(300))
    # [{"item_code", "requested", "dispensed"}] for the lines supplied short.
    shortfalls: Mapped[list[Any] | None] = mapped_column(JSON)
    # Set only when allergy alerts were overridden; the alerts as they were shown.
    allergy_override_reason: Mapped[str | None] = mapped_column(String(500))
    allergy_alerts: Mapped[list[Any] | None] = mapped_column(JSON)
    # Issues to a ward: the admission (no foreign key: admissions belong to wards) and
    # who on the ward confirmed receipt, and when.
    admission_id: Mapped[int | None]
    ward_accepted_at: Mapped[datetime | None]
    ward_accepted_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    ward_accepted_by_name: Mapped[str | None] = mapped_column(String(60))

    lines: Mapped[list["DispenseLine"]] = relationship(back_populates="dispense", order_by="DispenseLine.id")


class DispenseLine(Base):
    """Units of one item taken from one batch (a requested line spanning two batches is
    two rows). The finance package bills it as "dispense_line:<id>"."""

    __tablename__ = "dispense_line"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity"),
        CheckConstraint("unit_price_paisa > 0", name="unit_price"),
        CheckConstraint("amount_paisa = quantity * unit_price_paisa", name="amount"),
        Index("ix_dispense_line_dispense", "dispense_id"),
        Index("ix_dispense_line_prescription_item", "prescription_item_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dispense_id: Mapped[int] = mapped_column(ForeignKey("dispense.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("inventory_item.id"))
    batch_id: Mapped[int] = mapped_column(ForeignKey("stock_batch.id"))
    prescription_item_id: Mapped[int | None]
    quantity: Mapped[int]
    unit_price_paisa: Mapped[int] = mapped_column(BigInteger)
    amount_paisa: Mapped[int] = mapped_column(BigInteger)

    dispense: Mapped[Dispense] = relationship(back_populates="lines")
    item: Mapped[Item] = relationship()
    batch: Mapped[Batch] = relationship()


class DispenseReturn(Base):
    """Units of a dispense line brought back and put into the same batch."""

    __tablename__ = "dispense_return"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity"),
        CheckConstraint("amount_paisa >= 0", name="amount"),
        Index("ix_dispense_return_line", "dispense_line_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dispense_line_id: Mapped[int] = mapped_column(ForeignKey("dispense_line.id"))
    quantity: Mapped[int]
    amount_paisa: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(200))
    returned_at: Mapped[datetime] = mapped_column(default=utcnow)
    returned_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))

    line: Mapped[DispenseLine] = relationship()


class WardReturn(Base):
    """Units of a ward issue line the ward sends back to pharmacy (unused at discharge).

    "sent" until the pharmacist counts it: "received" (with the DispenseReturn that put
    `received_quantity` back into the batch and is credited on the bill) or "rejected"
    (nothing came back usable; `note` says why). While sent, the quantity is reserved:
    the ward cannot send more of the line than it still holds.
    """

    __tablename__ = "ward_return"
    __table_args__ = (
        CheckConstraint(_in("state", WARD_RETURN_STATES), name="state"),
        CheckConstraint("quantity > 0", name="quantity"),
        CheckConstraint("received_quantity IS NULL OR (received_quantity >= 0 AND received_quantity <= quantity)",
                        name="received_quantity"),
        CheckConstraint("(state = 'sent') = (received_quantity IS NULL)", name="received_when_counted"),
        CheckConstraint("state <> 'received' OR received_quantity > 0", name="received_positive"),
        CheckConstraint("state <> 'rejected' OR received_quantity = 0", name="rejected_zero"),
        CheckConstraint("(state = 'received') = (dispense_return_id IS NOT NULL)", name="return_when_received"),
        Index("ix_ward_return_admission", "admission_id", "state"),
        Index("ix_ward_return_state", "state", "id"),
        Index("ix_ward_return_line", "dispense_line_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    admission_id: Mapped[int]
    dispense_line_id: Mapped[int] = mapped_column(ForeignKey("dispense_line.id"))
    quantity: Mapped[int]
    reason: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(10), default="sent")
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    sent_by_name: Mapped[str] = mapped_column(String(60))
    received_at: Mapped[datetime | None]
    received_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    received_by_name: Mapped[str | None] = mapped_column(String(60))
    received_quantity: Mapped[int | None]
    note: Mapped[str | None] = mapped_column(String(200))
    dispense_return_id: Mapped[int | None] = mapped_column(ForeignKey("dispense_return.id"))

    line: Mapped[DispenseLine] = relationship()
