"""Finance tables: payer classes, tariff items and their price lists, bills, charges,
payments and the idempotency keys of payment requests.

Money is integer paisa (BigInteger) everywhere; the currency comes from the config.

Bills keep cached totals (`charges_paisa`, `paid_paisa`) next to the rows they sum. The
cache is written only by finance.services, in the same flush as the charge or payment it
counts and while holding the bill row lock (SELECT ... FOR UPDATE), so it never disagrees
with the rows; `finance.services.totals_mismatches` checks that. The balance is derived
(`charges_paisa - paid_paisa`), never stored. The cache lets the cashier's list filter
"balance > 0" with one indexed scan instead of summing every charge of every open bill.

Corrections, not edits: a charge is never updated or deleted. A reversal is a second
charge with the opposite quantity, linked by `reversal_of_id` (unique: one reversal per
charge) and carrying a reason. Each charge has a unique `source_ref` naming the clinical
event it bills ("encounter:7:consultation", "lab_order_item:12", "dispense_line:5"), which
makes posting idempotent and is enforced by the database under concurrency.

Encounters and admissions live in other packages, so `encounter_id` and `admission_id`
are plain integers without foreign keys; `visit_key` ("encounter:7", "admission:3") is
unique, which makes one bill per visit a database rule.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hms.db import Base, utcnow

CASH = "cash"
PAYER_KINDS = ("cash", "panel", "corporate")
TARIFF_KINDS = ("consultation", "lab", "procedure", "bed", "nursing", "other")
# Medicines are priced from the stock batch, not from a tariff item.
CHARGE_KINDS = TARIFF_KINDS + ("medicine",)
BILL_STATUSES = ("open", "closed", "cancelled")
PAYMENT_METHODS = ("cash", "card", "bank_transfer", "jazzcash", "easypaisa")

CODE_LENGTH = 40
SOURCE_REF_LENGTH = 120
REVERSAL_SUFFIX = ":reversal"


class PayerClass(Base):
    """Who pays and therefore which price list applies: "cash" (the default list, always
    present) or a panel / corporate client such as "panel-ptcl"."""

    __tablename__ = "payer_class"
    __table_args__ = (CheckConstraint(f"kind IN {PAYER_KINDS}", name="kind"),)

    code: Mapped[str] = mapped_column(String(CODE_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(12), default="panel")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TariffItem(Base):
    """A billable service with a stable code ("CONSULT-GM", "LAB-CBC", "PROC-DRESSING")."""

    __tablename__ = "tariff_item"
    __table_args__ = (CheckConstraint(f"kind IN {TARIFF_KINDS}", name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(CODE_LENGTH), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    description: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))

    prices: Mapped[list["TariffPrice"]] = relationship(back_populates="item", order_by="TariffPrice.payer_class")


class TariffPrice(Base):
    """The price of one tariff item in one payer class's price list. A panel list
    overrides the cash price where it has a row; otherwise the cash price applies."""

    __tablename__ = "tariff_price"
    __table_args__ = (
        UniqueConstraint("tariff_item_id", "payer_class"),
        CheckConstraint("price_paisa >= 0", name="price_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tariff_item_id: Mapped[int] = mapped_column(ForeignKey("tariff_item.id"))
    payer_class: Mapped[str] = mapped_column(ForeignKey("payer_class.code"))
    price_paisa: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))

    item: Mapped[TariffItem] = relationship(back_populates="prices")


class Bill(Base):
    """One bill per visit (OPD encounter or admission). Only an open bill takes charges and
    payments; `version` goes up with every change, so a page or a client can tell that the
    bill moved on since it was read."""

    __tablename__ = "bill"
    __table_args__ = (
        CheckConstraint(f"status IN {BILL_STATUSES}", name="status"),
        CheckConstraint("paid_paisa >= 0", name="paid_not_negative"),
        CheckConstraint("version >= 1", name="version"),
        Index("ix_bill_patient_id", "patient_id"),
        Index("ix_bill_encounter_id", "encounter_id"),
        Index("ix_bill_admission_id", "admission_id"),
        Index("ix_bill_status_opened_at", "status", "opened_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    bill_no: Mapped[str] = mapped_column(String(20), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    # Plain ids: encounters and admissions belong to other packages (no foreign key).
    encounter_id: Mapped[int | None]
    admission_id: Mapped[int | None]
    # "encounter:7" or "admission:3": one bill per visit, enforced by the unique index.
    visit_key: Mapped[str | None] = mapped_column(String(60), unique=True)
    payer_class: Mapped[str] = mapped_column(ForeignKey("payer_class.code"), default=CASH)
    status: Mapped[str] = mapped_column(String(12), default="open")
    # Cached sums, written only under the bill row lock (see the module docstring).
    charges_paisa: Mapped[int] = mapped_column(BigInteger, default=0)
    paid_paisa: Mapped[int] = mapped_column(BigInteger, default=0)
    version: Mapped[int] = mapped_column(default=1)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    opened_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))

    charges: Mapped[list["Charge"]] = relationship(back_populates="bill", order_by="Charge.id")
    payments: Mapped[list["Payment"]] = relationship(back_populates="bill", order_by="Payment.id")

    @property
    def balance_paisa(self) -> int:
        return self.charges_paisa - self.paid_paisa

    @property
    def is_open(self) -> bool:
        return self.status == "open"


class Charge(Base):
    """One line of a bill, posted by a service task for a clinical event (`source_ref`).

    quantity x unit price = amount always holds (a database check). An original charge has
    a positive quantity; its reversal has the negative quantity, the same unit price, a
    reason, and `reversal_of_id` pointing at the original.
    """

    __tablename__ = "charge"
    __table_args__ = (
        CheckConstraint(f"kind IN {CHARGE_KINDS}", name="kind"),
        CheckConstraint("unit_price_paisa >= 0", name="unit_price_not_negative"),
        CheckConstraint("amount_paisa = quantity * unit_price_paisa", name="amount"),
        CheckConstraint("(reversal_of_id IS NULL AND quantity > 0) OR "
                        "(reversal_of_id IS NOT NULL AND quantity < 0 AND reason IS NOT NULL)",
                        name="reversal_shape"),
        Index("ix_charge_bill_id", "bill_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    bill_id: Mapped[int] = mapped_column(ForeignKey("bill.id"))
    source_ref: Mapped[str] = mapped_column(String(SOURCE_REF_LENGTH), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    tariff_code: Mapped[str | None] = mapped_column(String(CODE_LENGTH))
    description: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int]
    unit_price_paisa: Mapped[int] = mapped_column(BigInteger)
    amount_paisa: Mapped[int] = mapped_column(BigInteger)
    posted_at: Mapped[datetime] = mapped_column(default=utcnow)
    posted_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    posted_by_name: Mapped[str] = mapped_column(String(60))
    reversal_of_id: Mapped[int | None] = mapped_column(ForeignKey("charge.id"), unique=True)
    reason: Mapped[str | None] = mapped_column(String(300))

    bill: Mapped[Bill] = relationship(back_populates="charges")


class Payment(Base):
    """Money received against a bill, with its receipt number. Never edited; refunds
    (a later issue) will be their own rows linked to the payment."""

    __tablename__ = "payment"
    __table_args__ = (
        CheckConstraint(f"method IN {PAYMENT_METHODS}", name="method"),
        CheckConstraint("amount_paisa > 0", name="amount_positive"),
        Index("ix_payment_bill_id", "bill_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    bill_id: Mapped[int] = mapped_column(ForeignKey("bill.id"))
    receipt_no: Mapped[str] = mapped_column(String(20), unique=True)
    amount_paisa: Mapped[int] = mapped_column(BigInteger)
    method: Mapped[str] = mapped_column(String(20))
    # Card approval code, bank transfer id, JazzCash / Easypaisa transaction id.
    reference: Mapped[str | None] = mapped_column(String(80))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    received_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    received_by_name: Mapped[str] = mapped_column(String(60))

    bill: Mapped[Bill] = relationship(back_populates="payments")


class IdempotencyKey(Base):
    """The key a client sent with a money-moving request, and what that request was.

    A repeat with the same key and the same fingerprint gets the first result back; the
    same key with another fingerprint is refused. `operation` names the kind of request
    ("payment"; deposits and refunds will add theirs), each pointing at its own row.
    """

    __tablename__ = "finance_idempotency_key"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    operation: Mapped[str] = mapped_column(String(30))
    fingerprint: Mapped[str] = mapped_column(String(200))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payment.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
