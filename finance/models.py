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

from datetime import date, datetime


from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hms.db import Base, utcnow

CASH = "cash"
PAYER_KINDS = ("cash", "panel", "corporate", "sehat")
TARIFF_KINDS = ("consultation", "lab", "procedure", "bed", "nursing", "other", "package")
# Charges of these kinds are replaced by the package price when the bill has a package.
PACKAGE_KINDS = ("bed", "nursing", "procedure", "lab")
# Medicines are priced from the stock batch, not from a tariff item.
CHARGE_KINDS = TARIFF_KINDS + ("medicine",)
BILL_STATUSES = ("open", "closed", "cancelled")
PAYMENT_METHODS = ("cash", "card", "bank_transfer", "jazzcash", "easypaisa")
# A refund reduces what was received; its row keeps a positive amount.
PAYMENT_KINDS = ("payment", "deposit", "refund")
DISCOUNT_STATUSES = ("pending", "approved", "rejected")
RECEIVABLE_STATUSES = ("open", "settled", "cancelled")
TOPUP_STATUSES = ("open", "met")

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
        CheckConstraint("coverage_limit_paisa IS NULL OR coverage_limit_paisa >= 0", name="coverage_limit"),
        CheckConstraint("status != 'closed' OR closed_at IS NOT NULL", name="closed_at"),
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
    # Who pays beyond the cash list: the member's CNIC / Form-B (13 digits, Sehat Card),
    # the card verification / approval number, and the payer's limit (None: no limit).
    coverage_limit_paisa: Mapped[int | None] = mapped_column(BigInteger)
    payer_member_no: Mapped[str | None] = mapped_column(String(13))
    payer_verification_ref: Mapped[str | None] = mapped_column(String(80))
    # A tariff item of kind "package" replacing the bed, nursing, procedure and lab charges.
    package_code: Mapped[str | None] = mapped_column(String(CODE_LENGTH))
    # The discharge asked for the final bill (finance's "awaiting closure" queue).
    final_requested_at: Mapped[datetime | None]
    credit_approved_at: Mapped[datetime | None]
    credit_approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    credit_reason: Mapped[str | None] = mapped_column(String(300))
    closed_at: Mapped[datetime | None]
    closed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    gate_pass_no: Mapped[str | None] = mapped_column(String(20), unique=True)
    gate_pass_at: Mapped[datetime | None]

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
    reason, and `reversal_of_id` pointing at the original (unique: one full reversal). A
    partial credit (medicines returned) has a negative quantity, a reason and
    `credit_of_id` pointing at the original; several may point at one charge, and the
    services keep their sum within the original's quantity under the bill row lock.
    `half_day` lines count half days at half the daily price.
    """

    __tablename__ = "charge"
    __table_args__ = (
        CheckConstraint(f"kind IN {CHARGE_KINDS}", name="kind"),
        CheckConstraint("unit_price_paisa >= 0", name="unit_price_not_negative"),
        CheckConstraint("amount_paisa = quantity * unit_price_paisa", name="amount"),
        CheckConstraint("(reversal_of_id IS NULL AND credit_of_id IS NULL AND quantity > 0) OR "
                        "(reversal_of_id IS NOT NULL AND credit_of_id IS NULL AND quantity < 0 "
                        "AND reason IS NOT NULL) OR "
                        "(credit_of_id IS NOT NULL AND reversal_of_id IS NULL AND quantity < 0 "
                        "AND reason IS NOT NULL)",
                        name="reversal_shape"),
        Index("ix_charge_bill_id", "bill_id", "id"),
        Index("ix_charge_credit_of_id", "credit_of_id"),
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
    credit_of_id: Mapped[int | None] = mapped_column(ForeignKey("charge.id"))
    reason: Mapped[str | None] = mapped_column(String(300))
    half_day: Mapped[bool] = mapped_column(default=False)

    bill: Mapped[Bill] = relationship(back_populates="charges")


class Payment(Base):
    """Money received against a bill (a payment or an advance deposit) or paid back to the
    patient (a refund), with its receipt number. Never edited. The amount is always
    positive; `kind` says which way the money went. `cash_closing_id` is set when the
    cashier's day-end closing counted this row (after that it belongs to that closing)."""

    __tablename__ = "payment"
    __table_args__ = (
        CheckConstraint(f"method IN {PAYMENT_METHODS}", name="method"),
        CheckConstraint(f"kind IN {PAYMENT_KINDS}", name="kind"),
        CheckConstraint("amount_paisa > 0", name="amount_positive"),
        Index("ix_payment_bill_id", "bill_id", "id"),
        Index("ix_payment_received_by_at", "received_by_id", "received_at"),
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
    kind: Mapped[str] = mapped_column(String(12), default="payment")
    reason: Mapped[str | None] = mapped_column(String(300))
    cash_closing_id: Mapped[int | None] = mapped_column(ForeignKey("cash_closing.id"))

    bill: Mapped[Bill] = relationship(back_populates="payments")

    @property
    def signed_paisa(self) -> int:
        """What the row adds to the money received: refunds count negative."""
        return -self.amount_paisa if self.kind == "refund" else self.amount_paisa


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


class BillDiscount(Base):
    """A discount on a bill, always with its reason. Up to the approval limit (setting
    finance.discount_approval_limit_paisa) it is approved when asked; above it, it waits
    for a finance manager who is not the requester."""

    __tablename__ = "bill_discount"
    __table_args__ = (
        CheckConstraint("amount_paisa > 0", name="amount_positive"),
        CheckConstraint(f"status IN {DISCOUNT_STATUSES}", name="status"),
        CheckConstraint("status = 'pending' OR decided_at IS NOT NULL", name="decided"),
        Index("ix_bill_discount_bill_id", "bill_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    bill_id: Mapped[int] = mapped_column(ForeignKey("bill.id"))
    amount_paisa: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(12), default="pending")
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    requested_by_name: Mapped[str] = mapped_column(String(60))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    decided_by_name: Mapped[str | None] = mapped_column(String(60))
    decided_at: Mapped[datetime | None]
    decision_note: Mapped[str | None] = mapped_column(String(300))


class BillVersion(Base):
    """A snapshot of a closed bill's totals: version 1 when it closed, one more per credit
    note after that. Never edited."""

    __tablename__ = "bill_version"
    __table_args__ = (UniqueConstraint("bill_id", "version_no"), CheckConstraint("version_no >= 1", name="version_no"))

    id: Mapped[int] = mapped_column(primary_key=True)
    bill_id: Mapped[int] = mapped_column(ForeignKey("bill.id"))
    version_no: Mapped[int]
    totals: Mapped[dict] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_by_name: Mapped[str] = mapped_column(String(60))


class CreditNote(Base):
    """A correction of a closed bill: credits (part of) one charge without touching it, and
    makes a new bill version."""

    __tablename__ = "credit_note"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("amount_paisa >= 0", name="amount_not_negative"),
        Index("ix_credit_note_bill_id", "bill_id", "id"),
        Index("ix_credit_note_charge_id", "charge_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    credit_note_no: Mapped[str] = mapped_column(String(20), unique=True)
    bill_id: Mapped[int] = mapped_column(ForeignKey("bill.id"))
    charge_id: Mapped[int] = mapped_column(ForeignKey("charge.id"))
    quantity: Mapped[int]
    amount_paisa: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(300))
    bill_version_no: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_by_name: Mapped[str] = mapped_column(String(60))


class Receivable(Base):
    """What a panel, corporate client or the Sehat Card owes for a closed bill."""

    __tablename__ = "receivable"
    __table_args__ = (
        CheckConstraint("amount_paisa >= 0", name="amount_not_negative"),
        CheckConstraint(f"status IN {RECEIVABLE_STATUSES}", name="status"),
        Index("ix_receivable_status_payer", "status", "payer_class"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    bill_id: Mapped[int] = mapped_column(ForeignKey("bill.id"), unique=True)
    payer_class: Mapped[str] = mapped_column(ForeignKey("payer_class.code"))
    amount_paisa: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(12), default="open")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class TopUpRequest(Base):
    """The deposit of an admission ran low: ask the family for more. At most one open
    request per bill (a partial unique index)."""

    __tablename__ = "topup_request"
    __table_args__ = (
        CheckConstraint(f"status IN {TOPUP_STATUSES}", name="status"),
        Index("uq_topup_request_open_bill", "bill_id", unique=True,
              postgresql_where=text("status = 'open'"), sqlite_where=text("status = 'open'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    bill_id: Mapped[int] = mapped_column(ForeignKey("bill.id"))
    balance_paisa: Mapped[int] = mapped_column(BigInteger)
    threshold_paisa: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(12), default="open")
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    met_at: Mapped[datetime | None]


class CashClosing(Base):
    """A cashier's day-end closing: what the system says was received per method (payments
    and deposits less refunds, on that local date), what the cashier counted, and the
    difference. One per cashier and day; the rows it counted point at it."""

    __tablename__ = "cash_closing"
    __table_args__ = (UniqueConstraint("cashier_id", "business_date"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    cashier_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    cashier_name: Mapped[str] = mapped_column(String(60))
    business_date: Mapped[date]
    totals: Mapped[dict] = mapped_column(JSON)
    counted: Mapped[dict] = mapped_column(JSON)
    expected_paisa: Mapped[int] = mapped_column(BigInteger)
    counted_paisa: Mapped[int] = mapped_column(BigInteger)
    variance_paisa: Mapped[int] = mapped_column(BigInteger)
    payment_count: Mapped[int]
    closed_at: Mapped[datetime] = mapped_column(default=utcnow)
