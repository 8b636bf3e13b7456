"""Finance rules: payer classes, tariffs and prices, bills, charges, reversals, payments.

The only code that writes the finance tables. Services flush, never commit; the caller
(a request, a workflow step, a job) owns the transaction.

Locks, in the one order every function here takes them (so two of them never deadlock):
the bill row (SELECT ... FOR UPDATE), then the counters (receipt number), then the audit
chain head. Every decision about a bill (is it open, what is its balance, is this
source_ref posted already, was this idempotency key used) is made while holding its row
lock, and the cached totals on the bill are written under the same lock (see
finance.models). On SQLite every write transaction is IMMEDIATE, which gives the same
guarantee.

Idempotency: a charge is identified by its `source_ref`, a payment request by its
idempotency key. Both are unique in the database; when a concurrent transaction wins
the insert, the loser's insert rolls back to a savepoint and the winner's row is read
and returned (or refused when it does not match).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from finance.models import (CASH, CHARGE_KINDS, CODE_LENGTH, PACKAGE_KINDS, PAYER_KINDS, PAYMENT_METHODS,
                            REVERSAL_SUFFIX, SOURCE_REF_LENGTH, TARIFF_KINDS, Bill, BillDiscount, BillVersion, Charge,
                            CreditNote, IdempotencyKey, Payment, PayerClass, Receivable, TariffItem, TariffPrice,
                            TopUpRequest)
from hms import audit, settings
from hms.audit import Actor
from hms.db import config_of, next_number, utcnow
from hms.errors import Conflict, Forbidden, Invalid, NotFound, MAX_ID, record_id
from hms.patients.models import Patient
from hms.patients.validation import FieldError, normalise_cnic

FEE_BEFORE_CONSULTATION = settings.declare(
    "opd.consultation_fee_before", bool, True, "Consultation fee is paid before the consultation")
DISCOUNT_APPROVAL_LIMIT = settings.declare(
    "finance.discount_approval_limit_paisa", int, 500000,
    "Discounts above this amount (paisa) wait for a finance manager's approval")
TOPUP_THRESHOLD = settings.declare(
    "finance.deposit_topup_threshold_paisa", int, 200000,
    "An admission's deposit balance below this amount (paisa) raises a top-up request")

BILL_NO_FORMAT = "B-{n:06d}"
RECEIPT_NO_FORMAT = "R-{n:06d}"
BILL_COUNTER = "finance.bill"
RECEIPT_COUNTER = "finance.receipt"
CREDIT_NOTE_NO_FORMAT = "CN-{n:06d}"
CREDIT_NOTE_COUNTER = "finance.credit_note"
GATE_PASS_NO_FORMAT = "GP-{n:06d}"
GATE_PASS_COUNTER = "finance.gate_pass"
# Payer classes whose share of an admission bill becomes a receivable.
THIRD_PARTY_KINDS = frozenset({"panel", "corporate", "sehat"})
APPROVER_ROLES = ("finance_manager", "admin")

MAX_QUANTITY = 10_000
# 100 million rupees: far above any real unit price, far below integer overflow.
MAX_PRICE_PAISA = 10**10
MAX_PAYMENT_PAISA = 10**12
# Original source refs leave room for the ":reversal" suffix of their reversal.
MAX_SOURCE_REF = SOURCE_REF_LENGTH - len(REVERSAL_SUFFIX)
SOURCE_REF_RE = re.compile(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)+$")
TARIFF_CODE_RE = re.compile(r"^[A-Z0-9][A-Z0-9-]*$")
PAYER_CODE_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,100}$")
# Methods whose payments must carry the transaction id the cashier can reconcile against
# (card approval code, bank transfer id, JazzCash / Easypaisa transaction id).
REFERENCE_REQUIRED = frozenset({"card", "bank_transfer", "jazzcash", "easypaisa"})
METHOD_LABELS = {"cash": "Cash", "card": "Card", "bank_transfer": "Bank transfer",
                 "jazzcash": "JazzCash", "easypaisa": "Easypaisa"}
DEFAULT_CONSULTATION_CODE = "CONSULT-DEFAULT"


def fee_before_consultation(session: Session) -> bool:
    """Whether OPD patients pay the consultation fee before they see the doctor (setting
    opd.consultation_fee_before). Reads only."""
    return bool(settings.get(session, FEE_BEFORE_CONSULTATION))


# --- small helpers ---------------------------------------------------------------------

def format_money(paisa: int, currency: str = "PKR") -> str:
    """12345600 -> "PKR 123,456.00" (negative amounts keep their sign)."""
    sign = "-" if paisa < 0 else ""
    rupees, rest = divmod(abs(int(paisa)), 100)
    return f"{sign}{currency} {rupees:,}.{rest:02d}"


def _money(session: Session, paisa: int) -> str:
    return format_money(paisa, config_of(session).currency)


def local_time(session: Session, value: datetime) -> datetime:
    """A stored UTC time in the hospital's time zone (HMS_TIMEZONE)."""
    return value.astimezone(config_of(session).tz)


def _as_id(value: Any, what: str) -> int:
    """A database id from a path or parameter, or NotFound (never a database error)."""
    return record_id(value, what, f"{what}_not_found")


def _optional_id(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise Invalid(f"{field} must be a positive whole number.", fields={field: ["must be a positive whole number"]})
    return value


def _text(value: Any, field: str, max_length: int, *, required: bool = True) -> str | None:
    if value is not None and not isinstance(value, str):
        raise Invalid(f"{field} must be text.", fields={field: ["must be text"]})
    value = " ".join((value or "").split())
    if not value:
        if required:
            raise Invalid(f"{field} is required.", fields={field: ["is required"]})
        return None
    if len(value) > max_length:
        raise Invalid(f"{field} is too long.", fields={field: [f"at most {max_length} characters"]})
    return value


def _whole(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{field} must be a whole number.", fields={field: ["must be a whole number"]})
    if not low <= value <= high:
        raise Invalid(f"{field} must be between {low} and {high}.", fields={field: [f"must be {low} to {high}"]})
    return value


def _insert_or_existing(session: Session, row, find):
    """Insert `row` inside a savepoint; on a uniqueness violation (a concurrent transaction
    inserted the same natural key first) return `find()` instead. Returns (row, created)."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        existing = find()
        if existing is None:
            raise
        return existing, False
    return row, True


# --- payer classes -----------------------------------------------------------------------

def _ensure_cash(session: Session) -> None:
    """The cash payer class always exists: insert it on first use (no-op when present)."""
    if session.get(PayerClass, CASH) is not None:
        return
    dialect = session.get_bind().dialect.name
    ins = (postgresql if dialect == "postgresql" else sqlite).insert(PayerClass)
    session.execute(ins.values(code=CASH, name="Cash", kind="cash", active=True, created_at=utcnow())
                    .on_conflict_do_nothing(index_elements=["code"]))


def list_payer_classes(session: Session) -> list[PayerClass]:
    """Every payer class, cash first. Reads only."""
    _ensure_cash(session)
    return list(session.scalars(select(PayerClass).order_by(PayerClass.code != CASH, PayerClass.code)))


def _payer_class(session: Session, code: Any, *, field: str = "payer_class") -> PayerClass:
    """The active payer class `code`, or Invalid naming `field`."""
    if not isinstance(code, str) or not code.strip():
        raise Invalid("Choose a payer class.", fields={field: ["is required"]})
    code = code.strip().lower()
    if code == CASH:
        _ensure_cash(session)
    payer = session.get(PayerClass, code)
    if payer is None or not payer.active:
        raise Invalid(f"There is no active payer class {code!r}.", code="unknown_payer_class",
                      fields={field: ["unknown payer class"]})
    return payer


def define_payer_class(session: Session, actor: Actor, *, code: Any, name: Any, kind: Any = "panel") -> PayerClass:
    """Add a panel or corporate payer class (its price list starts empty: cash prices apply
    until prices are set). Conflict when the code exists. Audited."""
    code = _text(code, "code", CODE_LENGTH)
    code = code.lower()
    if not PAYER_CODE_RE.match(code):
        raise Invalid("A payer class code is lower-case letters, digits and dashes, e.g. panel-ptcl.",
                      fields={"code": ["lower-case letters, digits and dashes"]})
    name = _text(name, "name", 120)
    if kind not in PAYER_KINDS or kind == "cash":
        raise Invalid("kind must be panel, corporate or sehat.", fields={"kind": ["must be panel, corporate or sehat"]})
    if code == CASH or session.get(PayerClass, code) is not None:
        raise Conflict(f"Payer class {code} exists already.", code="payer_class_exists")
    payer, created = _insert_or_existing(session, PayerClass(code=code, name=name, kind=kind),
                                         lambda: session.get(PayerClass, code))
    if not created:
        raise Conflict(f"Payer class {code} exists already.", code="payer_class_exists")
    audit.record(session, actor, "payer_class.define", "payer_class", code, detail={"kind": kind})
    return payer


# --- tariffs -------------------------------------------------------------------------------

def _tariff_code(value: Any, field: str = "code") -> str:
    code = _text(value, field, CODE_LENGTH).upper()
    if not TARIFF_CODE_RE.match(code):
        raise Invalid("A tariff code is capital letters, digits and dashes, e.g. LAB-CBC.",
                      fields={field: ["capital letters, digits and dashes"]})
    return code


def _price(value: Any, field: str = "price_paisa") -> int:
    return _whole(value, field, 0, MAX_PRICE_PAISA)


def get_tariff(session: Session, code: Any) -> TariffItem:
    """The tariff item with this code (case-insensitive), or NotFound. Reads only."""
    if not isinstance(code, str) or not code.strip():
        raise NotFound("No tariff item without a code.", code="tariff_not_found")
    item = session.scalar(select(TariffItem).where(TariffItem.code == code.strip().upper()))
    if item is None:
        raise NotFound(f"There is no tariff item {code.strip().upper()}.", code="tariff_not_found")
    return item


def list_tariffs(session: Session, *, kind: str | None = None, q: str | None = None) -> list[TariffItem]:
    """Active tariff items by code, with their prices loaded; `kind` filters, `q` matches
    the start of the code or any part of the description. Reads only."""
    query = select(TariffItem).where(TariffItem.active.is_(True)).options(selectinload(TariffItem.prices))
    if kind:
        if kind not in TARIFF_KINDS:
            raise Invalid(f"kind must be one of {', '.join(TARIFF_KINDS)}.", fields={"kind": ["unknown kind"]})
        query = query.where(TariffItem.kind == kind)
    if q and q.strip():
        term = q.strip()
        like = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(or_(TariffItem.code.like(like.upper() + "%", escape="\\"),
                                func.lower(TariffItem.description).like(f"%{like.lower()}%", escape="\\")))
    return list(session.scalars(query.order_by(TariffItem.code)))


def create_tariff_item(session: Session, actor: Actor, *, code: Any, kind: Any, description: Any,
                       price_paisa: Any = None) -> TariffItem:
    """Add a tariff item, with its cash price when `price_paisa` is given. Conflict when the
    code exists (the unique code backs this under concurrency). Audited."""
    code = _tariff_code(code)
    if kind not in TARIFF_KINDS:
        raise Invalid(f"kind must be one of {', '.join(TARIFF_KINDS)}.", fields={"kind": ["unknown kind"]})
    description = _text(description, "description", 200)
    if price_paisa is not None:
        price_paisa = _price(price_paisa)
    exists = Conflict(f"Tariff item {code} exists already.", code="tariff_exists")
    if session.scalar(select(TariffItem.id).where(TariffItem.code == code)) is not None:
        raise exists
    item, created = _insert_or_existing(
        session, TariffItem(code=code, kind=kind, description=description, created_by_id=actor.user_id),
        lambda: session.scalar(select(TariffItem).where(TariffItem.code == code)))
    if not created:
        raise exists
    audit.record(session, actor, "tariff.create", "tariff_item", code, detail={"kind": kind})
    if price_paisa is not None:
        set_price(session, actor, code, CASH, price_paisa)
    return item


def set_price(session: Session, actor: Actor, code: Any, payer_class: Any, price_paisa: Any) -> TariffPrice:
    """Set the price of tariff item `code` in `payer_class`'s price list (insert or change).

    Locks the tariff item row, so two price changes of one item apply one after the other.
    Charges already posted keep the price they were posted at. Audited with old and new
    price."""
    price_paisa = _price(price_paisa)
    payer = _payer_class(session, payer_class)
    item = get_tariff(session, code)
    item = session.execute(select(TariffItem).where(TariffItem.id == item.id).with_for_update()
                           .execution_options(populate_existing=True)).scalar_one()
    row = session.scalar(select(TariffPrice).where(TariffPrice.tariff_item_id == item.id,
                                                   TariffPrice.payer_class == payer.code))
    old = None if row is None else row.price_paisa
    if row is None:
        row = TariffPrice(tariff_item_id=item.id, payer_class=payer.code, price_paisa=price_paisa,
                          updated_by_id=actor.user_id)
        session.add(row)
    else:
        row.price_paisa, row.updated_at, row.updated_by_id = price_paisa, utcnow(), actor.user_id
    session.flush()
    audit.record(session, actor, "tariff.price", "tariff_item", item.code,
                 detail={"payer_class": payer.code, "old_paisa": old, "new_paisa": price_paisa})
    session.expire(item, ["prices"])
    return row


def _price_in(session: Session, item: TariffItem, payer_class: str) -> int | None:
    """The item's price for `payer_class`: its own list first, then the cash list."""
    rows = dict(session.execute(
        select(TariffPrice.payer_class, TariffPrice.price_paisa)
        .where(TariffPrice.tariff_item_id == item.id, TariffPrice.payer_class.in_({payer_class, CASH}))).all())
    if payer_class in rows:
        return rows[payer_class]
    return rows.get(CASH)


def price_for(session: Session, tariff_code: str, payer_class: str = CASH) -> int:
    """The price in paisa of `tariff_code` for `payer_class`: the payer class's own price
    where its list has one, else the cash price. NotFound when the item does not exist, is
    inactive or has neither price. Reads only."""
    item = get_tariff(session, tariff_code)
    if not item.active:
        raise NotFound(f"Tariff item {item.code} is no longer active.", code="tariff_not_found")
    price = _price_in(session, item, payer_class)
    if price is None:
        raise NotFound(f"Tariff item {item.code} has no price for payer class {payer_class} nor a cash price.",
                       code="price_not_found")
    return price


def consultation_codes(department_code: str, doctor_id: int | None = None) -> list[str]:
    """The tariff codes tried for a consultation, in order: the doctor's own fee, the
    department's fee, the hospital default."""
    codes = [] if doctor_id is None else [f"CONSULT-DOC-{int(doctor_id)}"]
    codes.append(f"CONSULT-{department_code.strip().upper()}")
    if DEFAULT_CONSULTATION_CODE not in codes:
        codes.append(DEFAULT_CONSULTATION_CODE)
    return codes


def resolve_consultation(session: Session, department_code: Any, doctor_id: int | None,
                         payer_class: str = CASH) -> tuple[TariffItem, int]:
    """The consultation tariff item and its price for this payer class: the first of
    `consultation_codes` that is an active item with a price (the payer class's or cash).
    NotFound naming the codes tried when none has. Reads only."""
    department_code = _text(department_code, "department_code", 20)
    codes = consultation_codes(department_code, doctor_id)
    items = {i.code: i for i in session.scalars(
        select(TariffItem).where(TariffItem.code.in_(codes), TariffItem.active.is_(True)))}
    for code in codes:
        item = items.get(code)
        if item is None:
            continue
        price = _price_in(session, item, payer_class)
        if price is not None:
            return item, price
    raise NotFound(f"No consultation fee is set: none of {', '.join(codes)} has a price.",
                   code="price_not_found")


# --- bills ---------------------------------------------------------------------------------

def _visit_key(encounter_id: int | None, admission_id: int | None) -> str | None:
    # An admission is the visit when both are given (an admission from an OPD encounter).
    if admission_id is not None:
        return f"admission:{admission_id}"
    if encounter_id is not None:
        return f"encounter:{encounter_id}"
    return None


def _bill_by_visit(session: Session, visit_key: str) -> Bill | None:
    return session.scalar(select(Bill).where(Bill.visit_key == visit_key))


def _same_visit(bill: Bill, patient_id: int, payer_class: str) -> Bill:
    if bill.patient_id != patient_id:
        raise Conflict(f"This visit is billed to another patient (bill {bill.bill_no}).", code="visit_other_patient")
    if bill.payer_class != payer_class:
        raise Conflict(f"Bill {bill.bill_no} of this visit is for payer class {bill.payer_class}, "
                       f"not {payer_class}.", code="bill_payer_class_differs")
    return bill


def open_bill(session: Session, actor: Actor, patient_id: Any, *, encounter_id: int | None = None,
              admission_id: int | None = None, payer_class: str = CASH) -> Bill:
    """Open the bill of a visit and return it; idempotent per visit.

    With an encounter or admission id, a second call returns the visit's existing bill
    (Conflict if that bill is another patient's or another payer class's). The unique
    `visit_key` enforces one bill per visit under concurrency: a transaction that loses the
    race rolls back to its savepoint (its bill number with it) and returns the winner's
    bill. Takes no row lock; uses the bill number counter. Audited when a bill is opened.
    """
    patient_id = _as_id(patient_id, "patient")
    if session.get(Patient, patient_id) is None:
        raise NotFound(f"No patient with id {patient_id}.", code="patient_not_found")
    encounter_id = _optional_id(encounter_id, "encounter_id")
    admission_id = _optional_id(admission_id, "admission_id")
    payer = _payer_class(session, payer_class)
    visit_key = _visit_key(encounter_id, admission_id)
    if visit_key is not None:
        existing = _bill_by_visit(session, visit_key)
        if existing is not None:
            return _same_visit(existing, patient_id, payer.code)
    try:
        with session.begin_nested():
            bill = Bill(bill_no=BILL_NO_FORMAT.format(n=next_number(session, BILL_COUNTER)), patient_id=patient_id,
                        encounter_id=encounter_id, admission_id=admission_id, visit_key=visit_key,
                        payer_class=payer.code, status="open", charges_paisa=0, paid_paisa=0, version=1,
                        opened_by_id=actor.user_id)
            session.add(bill)
            session.flush()
    except IntegrityError:
        existing = _bill_by_visit(session, visit_key) if visit_key else None
        if existing is None:
            raise
        return _same_visit(existing, patient_id, payer.code)
    audit.record(session, actor, "bill.open", "bill", bill.id, patient_id=patient_id,
                 detail={"bill_no": bill.bill_no, "encounter_id": encounter_id, "admission_id": admission_id,
                         "payer_class": payer.code})
    return bill


def get_bill(session: Session, bill_id: Any) -> Bill:
    """The bill, or NotFound. Takes no locks; not audited (see read_bill)."""
    bill = session.get(Bill, _as_id(bill_id, "bill"))
    if bill is None:
        raise NotFound(f"No bill with id {bill_id}.", code="bill_not_found")
    return bill


def read_bill(session: Session, actor: Actor, bill_id: Any, *, view: str = "bill") -> Bill:
    """The bill for a person to see, recording audit "bill.read" (which view, which patient)."""
    bill = get_bill(session, bill_id)
    session.expire(bill, ["charges", "payments"])  # lines posted since this session loaded them
    audit.record(session, actor, "bill.read", "bill", bill.id, patient_id=bill.patient_id, detail={"view": view})
    return bill


def bill_patient(session: Session, bill: Bill) -> Patient:
    """The patient the bill is for. Reads only (the caller audits the bill read)."""
    return session.get(Patient, bill.patient_id)


def payer_class_name(session: Session, code: str) -> str:
    payer = session.get(PayerClass, code)
    return payer.name if payer is not None else code


def _locked_bill(session: Session, bill_id: Any) -> Bill:
    """The bill row, locked FOR UPDATE until the transaction ends, freshly read."""
    bill = session.execute(select(Bill).where(Bill.id == _as_id(bill_id, "bill")).with_for_update()
                           .execution_options(populate_existing=True)).scalar_one_or_none()
    if bill is None:
        raise NotFound(f"No bill with id {bill_id}.", code="bill_not_found")
    return bill


def _require_open(bill: Bill) -> None:
    if bill.status != "open":
        raise Conflict(f"Bill {bill.bill_no} is {bill.status}: it takes no more charges or payments.",
                       code="bill_not_open")


def list_bills(session: Session, *, patient_id: int | None = None, encounter_id: int | None = None,
               admission_id: int | None = None, status: str | None = None, page: int = 1,
               size: int = 25) -> tuple[list[Bill], int]:
    """Bills matching the filters, newest first, and how many match. Reads only."""
    conditions = []
    if patient_id is not None:
        conditions.append(Bill.patient_id == patient_id)
    if encounter_id is not None:
        conditions.append(Bill.encounter_id == encounter_id)
    if admission_id is not None:
        conditions.append(Bill.admission_id == admission_id)
    if status is not None:
        conditions.append(Bill.status == status)
    total = session.scalar(select(func.count()).select_from(Bill).where(*conditions))
    items = session.scalars(select(Bill).where(*conditions).order_by(Bill.id.desc())
                            .limit(size).offset((page - 1) * size))
    return list(items), total


def list_bills_due(session: Session, q: str | None = None, page: int = 1,
                   size: int = 25) -> tuple[list[tuple[Bill, Patient]], int]:
    """The cashier's list: open bills with a balance to pay, oldest first, with their
    patients; `q` is the start of an MRN or a whole bill number. Reads only."""
    conditions = [Bill.status == "open", Bill.charges_paisa > Bill.paid_paisa]
    if q and q.strip():
        term = q.strip().upper()
        like = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conditions.append(or_(Patient.mrn.like(like, escape="\\"), Bill.bill_no == term))
    base = select(Bill, Patient).join(Patient, Patient.id == Bill.patient_id).where(*conditions)
    total = session.scalar(select(func.count()).select_from(base.subquery()))
    rows = session.execute(base.order_by(Bill.opened_at, Bill.id).limit(size).offset((page - 1) * size))
    return [(bill, patient) for bill, patient in rows], total


@dataclass(frozen=True)
class BillTotals:
    total_paisa: int
    paid_paisa: int
    balance_paisa: int

    @property
    def settled(self) -> bool:
        """Nothing is left to pay (a bill with no charges is settled)."""
        return self.balance_paisa <= 0


def bill_totals(session: Session, bill_id: Any) -> BillTotals:
    """Total charged, paid and the balance of a bill. Reads only."""
    bill = get_bill(session, bill_id)
    session.refresh(bill, ["charges_paisa", "paid_paisa"])
    return BillTotals(bill.charges_paisa, bill.paid_paisa, bill.balance_paisa)


def _signed_amount():
    return case((Payment.kind == "refund", -Payment.amount_paisa), else_=Payment.amount_paisa)


def totals_mismatches(session: Session) -> list[int]:
    """Ids of bills whose cached totals differ from the sums of their charges and payments
    (always empty unless something wrote the tables behind the services' back)."""
    charged = (select(Charge.bill_id, func.sum(Charge.amount_paisa).label("s")).group_by(Charge.bill_id)
               .subquery())
    signed = func.sum(_signed_amount())
    paid = select(Payment.bill_id, signed.label("s")).group_by(Payment.bill_id).subquery()
    query = (select(Bill.id).outerjoin(charged, charged.c.bill_id == Bill.id).outerjoin(paid, paid.c.bill_id == Bill.id)
             .where(or_(Bill.charges_paisa != func.coalesce(charged.c.s, 0),
                        Bill.paid_paisa != func.coalesce(paid.c.s, 0)))
             .order_by(Bill.id))
    return list(session.scalars(query))


# --- charges -------------------------------------------------------------------------------

def _source_ref(value: Any, field: str = "source_ref") -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid("source_ref is required.", fields={field: ["is required"]})
    ref = value.strip()
    if len(ref) > MAX_SOURCE_REF or not SOURCE_REF_RE.match(ref):
        raise Invalid("source_ref names the event billed, like lab_order_item:12.",
                      fields={field: [f"like lab_order_item:12, at most {MAX_SOURCE_REF} characters"]})
    return ref


def get_charge(session: Session, source_ref: str) -> Charge | None:
    """The charge posted under `source_ref`, if any. Reads only."""
    return session.scalar(select(Charge).where(Charge.source_ref == source_ref))


def _check_same_bill(charge: Charge, bill: Bill) -> Charge:
    if charge.bill_id != bill.id:
        raise Conflict(f"{charge.source_ref} is charged on another bill already.", code="charge_on_other_bill")
    return charge


@dataclass(frozen=True)
class ChargeRequest:
    """One charge to post, checked (see `charge_request`)."""

    source_ref: str
    kind: str
    description: str
    quantity: int
    tariff_code: str | None
    unit_price_paisa: int | None
    half_day: bool = False


def half_day_price(daily_paisa: int) -> int:
    """Half of a daily price, rounded half up to whole paisa (1001 -> 501)."""
    return (daily_paisa + 1) // 2


def charge_request(*, source_ref: Any, kind: Any, description: Any, quantity: Any = 1, tariff_code: Any = None,
                   unit_price_paisa: Any = None, half_day: Any = False) -> ChargeRequest:
    """Check one charge's fields: priced by a tariff code, or (medicines, priced from the
    stock batch) by an explicit unit price; never both. With `half_day` true the quantity
    counts half days and the unit price is half the (daily) price, rounded half up.
    Invalid naming the field."""
    ref = _source_ref(source_ref)
    if ref.endswith(REVERSAL_SUFFIX):
        raise Invalid("Reversals are posted by reverse_charge.", fields={"source_ref": ["reserved suffix"]})
    if kind not in CHARGE_KINDS:
        raise Invalid(f"kind must be one of {', '.join(CHARGE_KINDS)}.", fields={"kind": ["unknown kind"]})
    description = _text(description, "description", 200)
    quantity = _whole(quantity, "quantity", 1, MAX_QUANTITY)
    if tariff_code is not None and unit_price_paisa is not None:
        raise Invalid("A charge is priced by its tariff code or by a unit price, not both.",
                      fields={"unit_price_paisa": ["not allowed with a tariff_code"]})
    if tariff_code is None and unit_price_paisa is None:
        raise Invalid("A charge without a tariff code needs its unit price.",
                      fields={"unit_price_paisa": ["required without a tariff_code"]})
    if tariff_code is not None:
        tariff_code = _tariff_code(tariff_code, "tariff_code")
    else:
        unit_price_paisa = _price(unit_price_paisa, "unit_price_paisa")
    if half_day is None:
        half_day = False
    if not isinstance(half_day, bool):
        raise Invalid("half_day must be true or false.", fields={"half_day": ["must be true or false"]})
    return ChargeRequest(ref, kind, description, quantity, tariff_code, unit_price_paisa, half_day)


def _post_locked(session: Session, actor: Actor, bill: Bill, req: ChargeRequest) -> tuple[Charge, bool]:
    """Post one checked charge on `bill`, whose row the caller holds locked."""
    existing = get_charge(session, req.source_ref)
    if existing is not None:
        return _check_same_bill(existing, bill), False
    _require_open(bill)
    unit_price, tariff_code = req.unit_price_paisa, req.tariff_code
    if tariff_code is not None:
        item = get_tariff(session, tariff_code)
        if item.kind != req.kind:
            raise Invalid(f"Tariff item {item.code} is a {item.kind} item, not {req.kind}.",
                          fields={"kind": [f"{item.code} is {item.kind}"]})
        unit_price = price_for(session, tariff_code, bill.payer_class)
    if req.half_day:
        unit_price = half_day_price(unit_price)
    charge = Charge(bill_id=bill.id, source_ref=req.source_ref, kind=req.kind, tariff_code=tariff_code,
                    description=req.description, quantity=req.quantity, unit_price_paisa=unit_price,
                    amount_paisa=req.quantity * unit_price, posted_by_id=actor.user_id,
                    posted_by_name=actor.username, half_day=req.half_day)
    charge, created = _insert_or_existing(session, charge, lambda: get_charge(session, req.source_ref))
    if not created:
        return _check_same_bill(charge, bill), False
    bill.charges_paisa += charge.amount_paisa
    bill.version += 1
    session.flush()
    audit.record(session, actor, "charge.post", "charge", charge.id, patient_id=bill.patient_id,
                 detail={"bill_id": bill.id, "source_ref": charge.source_ref, "tariff_code": tariff_code,
                         "quantity": charge.quantity, "amount_paisa": charge.amount_paisa,
                         "half_day": charge.half_day})
    return charge, True


def post_charge(session: Session, actor: Actor, bill_id: Any, **fields: Any) -> tuple[Charge, bool]:
    """Post one charge (fields as `charge_request`) on an open bill; return (charge, created).

    Idempotent per source_ref: when the source_ref is posted already on this bill, the
    existing charge is returned unchanged (even if the bill has closed since); on another
    bill, Conflict `charge_on_other_bill`. A new charge on a bill that is not open is
    Conflict `bill_not_open`. Tariff charges take the price of the bill's payer class.
    Locks the bill row; updates its cached total and version. Audited.
    """
    req = charge_request(**fields)
    bill = _locked_bill(session, bill_id)
    return _post_locked(session, actor, bill, req)


def post_charges(session: Session, actor: Actor, bill_id: Any, charges: list[dict]) -> list[tuple[Charge, bool]]:
    """Post several charges on one bill, all or none (the caller's transaction); each as
    `post_charge`, idempotent per source_ref. An empty list posts nothing (the bill must
    still exist). Locks the bill row once."""
    if not isinstance(charges, list):
        raise Invalid("charges must be a list.", fields={"charges": ["must be a list"]})
    requests = []
    for index, fields in enumerate(charges):
        try:
            requests.append(charge_request(**fields))
        except Invalid as err:
            raise Invalid(err.message, fields={f"charges.{index}.{k}": v for k, v in err.fields.items()}) from None
    bill = _locked_bill(session, bill_id)
    return [_post_locked(session, actor, bill, req) for req in requests]


def post_consultation_charge(session: Session, actor: Actor, bill_id: Any, *, encounter_id: Any,
                             department_code: Any, doctor_id: Any = None) -> tuple[Charge, bool]:
    """Post the consultation fee of an encounter, source_ref "encounter:<id>:consultation",
    priced by `resolve_consultation` for the bill's payer class. Idempotent per encounter.
    Invalid when the bill belongs to another encounter. Locks the bill row."""
    encounter_id = _optional_id(encounter_id, "encounter_id")
    if encounter_id is None:
        raise Invalid("encounter_id is required.", fields={"encounter_id": ["is required"]})
    doctor_id = _optional_id(doctor_id, "doctor_id")
    bill = _locked_bill(session, bill_id)
    if bill.encounter_id is not None and bill.encounter_id != encounter_id:
        raise Invalid(f"Bill {bill.bill_no} is for another encounter.",
                      fields={"encounter_id": ["not this bill's encounter"]})
    source_ref = f"encounter:{encounter_id}:consultation"
    existing = get_charge(session, source_ref)
    if existing is not None:
        return _check_same_bill(existing, bill), False
    _require_open(bill)
    item, _price_now = resolve_consultation(session, department_code, doctor_id, bill.payer_class)
    req = ChargeRequest(source_ref, "consultation", item.description, 1, item.code, None)
    return _post_locked(session, actor, bill, req)


def reverse_charge(session: Session, actor: Actor, source_ref: Any, reason: Any) -> tuple[Charge, bool]:
    """Cancel a charge by posting its negative, source_ref "<orig>:reversal", linked by
    reversal_of_id, with the reason; return (reversal, created).

    Reversing twice returns the first reversal (the unique reversal_of_id enforces one per
    charge). After partial credits the reversal takes what is left; Conflict
    `already_credited` when nothing is. The reason is required. NotFound when nothing was posted under `source_ref`;
    Invalid for a reversal itself; Conflict `bill_not_open` when the bill is not open.
    Locks the bill row; updates its cached total and version. Audited (ids and amounts,
    not the reason).
    """
    reason = _text(reason, "reason", 300)
    ref = _source_ref(source_ref)
    original = get_charge(session, ref)
    if original is None:
        raise NotFound(f"No charge was posted for {ref}.", code="charge_not_found")
    if original.reversal_of_id is not None:
        raise Invalid("A reversal cannot itself be reversed.", code="reversal_of_reversal",
                      fields={"source_ref": ["is a reversal"]})
    bill = _locked_bill(session, original.bill_id)
    reversal_ref = ref + REVERSAL_SUFFIX

    def find() -> Charge | None:
        return session.scalar(select(Charge).where(Charge.reversal_of_id == original.id))

    existing = find()
    if existing is not None:
        return existing, False
    _require_open(bill)
    remaining = original.quantity - _credited_quantity(session, original.id)
    if remaining <= 0:
        raise Conflict(f"{ref} is credited in full already.", code="already_credited")
    reversal = Charge(bill_id=bill.id, source_ref=reversal_ref, kind=original.kind,
                      tariff_code=original.tariff_code, description=original.description,
                      quantity=-remaining, unit_price_paisa=original.unit_price_paisa,
                      amount_paisa=-remaining * original.unit_price_paisa, posted_by_id=actor.user_id,
                      posted_by_name=actor.username, reversal_of_id=original.id, reason=reason,
                      half_day=original.half_day)
    reversal, created = _insert_or_existing(session, reversal, find)
    if not created:
        return reversal, False
    bill.charges_paisa += reversal.amount_paisa
    bill.version += 1
    session.flush()
    audit.record(session, actor, "charge.reverse", "charge", reversal.id, patient_id=bill.patient_id,
                 detail={"bill_id": bill.id, "reversal_of_id": original.id, "source_ref": reversal_ref,
                         "amount_paisa": reversal.amount_paisa})
    return reversal, True


# --- payments, deposits, refunds ----------------------------------------------------------

def _fingerprint(bill_id: int, amount_paisa: int, method: str, kind: str = "payment") -> str:
    base = f"bill:{bill_id}|amount:{amount_paisa}|method:{method}"
    return base if kind == "payment" else f"{base}|kind:{kind}"


def _replay(session: Session, prior: IdempotencyKey, fingerprint: str, kind: str = "payment") -> Payment:
    if prior.operation != kind or prior.fingerprint != fingerprint or prior.payment_id is None:
        raise Conflict("This idempotency key was used for a different request; send a new key for a new payment.",
                       code="idempotency_key_reused")
    return session.get(Payment, prior.payment_id)


def _idempotency_key(session: Session, key: str) -> IdempotencyKey | None:
    return session.execute(select(IdempotencyKey).where(IdempotencyKey.key == key)
                           .execution_options(populate_existing=True)).scalar_one_or_none()


def _money_fields(amount_paisa: Any, method: Any, reference: Any, idempotency_key: Any, *,
                  key_required: bool) -> tuple[int, str, str | None, str | None]:
    if isinstance(amount_paisa, bool) or not isinstance(amount_paisa, int) or amount_paisa <= 0:
        raise Invalid("The amount must be more than zero, in whole paisa.",
                      fields={"amount": ["must be more than zero"]})
    if amount_paisa > MAX_PAYMENT_PAISA:
        raise Invalid("The amount is too large.", fields={"amount": ["too large"]})
    if method not in PAYMENT_METHODS:
        raise Invalid(f"method must be one of {', '.join(PAYMENT_METHODS)}.", fields={"method": ["unknown method"]})
    reference = _text(reference, "reference", 80, required=False)
    if method in REFERENCE_REQUIRED and reference is None:
        raise Invalid(f"A {METHOD_LABELS[method]} payment needs its transaction reference.",
                      fields={"reference": ["required for " + METHOD_LABELS[method]]})
    if idempotency_key is None and not key_required:
        return amount_paisa, method, reference, None
    if not isinstance(idempotency_key, str) or not IDEMPOTENCY_KEY_RE.match(idempotency_key):
        raise Invalid("The idempotency key must be 1 to 100 printable characters without spaces.",
                      fields={"idempotency_key": ["1 to 100 printable characters"]})
    return amount_paisa, method, reference, idempotency_key


def _insert_money(session: Session, actor: Actor, bill: Bill, kind: str, amount_paisa: int, method: str,
                  reference: str | None, idempotency_key: str | None, fingerprint: str,
                  reason: str | None = None) -> tuple[Payment, bool]:
    """Insert a payment / deposit / refund row on the locked bill with its receipt number
    and (when given) its idempotency key; a concurrent use of the key returns the winner's
    row. Updates the cached received total and the version; audited."""
    try:
        with session.begin_nested():
            payment = Payment(bill_id=bill.id,
                              receipt_no=RECEIPT_NO_FORMAT.format(n=next_number(session, RECEIPT_COUNTER)),
                              amount_paisa=amount_paisa, method=method, reference=reference, kind=kind,
                              reason=reason, received_by_id=actor.user_id, received_by_name=actor.username)
            session.add(payment)
            session.flush()
            if idempotency_key is not None:
                session.add(IdempotencyKey(key=idempotency_key, operation=kind, fingerprint=fingerprint,
                                           payment_id=payment.id, created_by_id=actor.user_id))
                session.flush()
    except IntegrityError:
        prior = _idempotency_key(session, idempotency_key) if idempotency_key else None
        if prior is None:
            raise
        return _replay(session, prior, fingerprint, kind), False
    bill.paid_paisa += payment.signed_paisa
    bill.version += 1
    session.flush()
    audit.record(session, actor, f"{kind}.record", "payment", payment.id, patient_id=bill.patient_id,
                 detail={"bill_id": bill.id, "receipt_no": payment.receipt_no, "amount_paisa": amount_paisa,
                         "method": method, "kind": kind})
    return payment, True


def record_payment(session: Session, actor: Actor, bill_id: Any, *, amount_paisa: Any, method: Any,
                   idempotency_key: Any, reference: Any = None) -> tuple[Payment, bool]:
    """Take a payment against a bill and give it a receipt number; return (payment, created).

    - `idempotency_key` (1-100 printable characters, from the client) makes the request safe
      to repeat: the same key with the same bill, amount and method returns the first
      payment (never pays twice); the same key with another body is Conflict
      `idempotency_key_reused`. The key is unique in the database, so two concurrent
      requests with one key pay once.
    - Methods: cash, card, bank_transfer, jazzcash, easypaisa; all but cash need the
      `reference` (card approval code, transfer or wallet transaction id).
    - The amount is whole paisa, more than zero and at most the patient's balance (see
      `final_totals`: the patient's share less what was received; paying exactly the
      balance settles the bill); more is Invalid `overpayment`.
    - A bill that is not open is Conflict `bill_not_open` (a repeat of an earlier request
      still returns its payment).

    Locks the bill row, then the receipt counter. Updates the bill's cached paid total and
    version. Audited (bill, receipt number, amount, method). Because the decision is made
    under the bill row lock, a payment and a close of the same bill serialise: the payment
    lands before the close (which counts it) or is refused `bill_not_open`.
    """
    amount_paisa, method, reference, idempotency_key = _money_fields(
        amount_paisa, method, reference, idempotency_key, key_required=True)
    bill = _locked_bill(session, bill_id)
    fingerprint = _fingerprint(bill.id, amount_paisa, method)
    prior = _idempotency_key(session, idempotency_key)
    if prior is not None:
        return _replay(session, prior, fingerprint), False
    _require_open(bill)
    due = _compute_totals(session, bill).patient_balance_paisa
    if amount_paisa > due:
        due = max(due, 0)
        raise Invalid(f"The amount is more than the balance of {_money(session, due)}.", code="overpayment",
                      fields={"amount": [f"at most {_money(session, due)}"]})
    payment, created = _insert_money(session, actor, bill, "payment", amount_paisa, method, reference,
                                     idempotency_key, fingerprint)
    if created:
        _mark_topups_met(session, bill)
    return payment, created


def record_deposit(session: Session, actor: Actor, bill_id: Any, *, amount_paisa: Any, method: Any,
                   reference: Any = None, idempotency_key: Any = None) -> tuple[Payment, bool]:
    """Take an advance deposit on an open bill (no upper limit: the stay is not over);
    return (payment row of kind "deposit", created). Same method / reference / idempotency
    rules as `record_payment` (the key is optional here). A deposit that brings the deposit
    balance back above the top-up threshold marks the open top-up request met.
    Conflict `bill_not_open` on a bill that is not open. Locks the bill row; audited."""
    amount_paisa, method, reference, idempotency_key = _money_fields(
        amount_paisa, method, reference, idempotency_key, key_required=False)
    bill = _locked_bill(session, bill_id)
    fingerprint = _fingerprint(bill.id, amount_paisa, method, "deposit")
    if idempotency_key is not None:
        prior = _idempotency_key(session, idempotency_key)
        if prior is not None:
            return _replay(session, prior, fingerprint, "deposit"), False
    _require_open(bill)
    payment, created = _insert_money(session, actor, bill, "deposit", amount_paisa, method, reference,
                                     idempotency_key, fingerprint)
    if created:
        _mark_topups_met(session, bill)
    return payment, created


def record_refund(session: Session, actor: Actor, bill_id: Any, *, amount_paisa: Any, method: Any,
                  reason: Any, reference: Any = None, idempotency_key: Any = None) -> tuple[Payment, bool]:
    """Pay money back to the patient; return (payment row of kind "refund", created).

    Cashier, finance manager or admin (Forbidden otherwise). The reason is required. On an
    open bill the refund is at most what was received (deposits + payments - refunds);
    on a closed bill only a refund due (a credit note left the patient in credit) can be
    paid, at most that amount. Invalid `refund_too_large` beyond it. Locks the bill row;
    audited."""
    if not actor.is_system and not actor.has_role("cashier", "finance_manager", "admin"):
        raise Forbidden("Only a cashier or a finance manager pays refunds.", code="refund_forbidden")
    amount_paisa, method, reference, idempotency_key = _money_fields(
        amount_paisa, method, reference, idempotency_key, key_required=False)
    reason = _text(reason, "reason", 300)
    bill = _locked_bill(session, bill_id)
    fingerprint = _fingerprint(bill.id, amount_paisa, method, "refund")
    if idempotency_key is not None:
        prior = _idempotency_key(session, idempotency_key)
        if prior is not None:
            return _replay(session, prior, fingerprint, "refund"), False
    if bill.status == "open":
        limit = bill.paid_paisa
    elif bill.status == "closed":
        limit = max(-_compute_totals(session, bill).patient_balance_paisa, 0)
        if limit == 0:
            _require_open(bill)
    else:
        _require_open(bill)
    if amount_paisa > limit:
        raise Invalid(f"A refund can be at most {_money(session, limit)} on this bill.", code="refund_too_large",
                      fields={"amount": [f"at most {_money(session, limit)}"]})
    return _insert_money(session, actor, bill, "refund", amount_paisa, method, reference, idempotency_key,
                         fingerprint, reason=reason)


# --- receipts ------------------------------------------------------------------------------

def receipt(session: Session, actor: Actor, bill_id: Any) -> dict:
    """Everything a receipt shows (HTML page and PDF), as display strings: hospital-local
    times, money as "PKR 1,234.00". Audited as a read of the bill (view "receipt")."""
    bill = read_bill(session, actor, bill_id, view="receipt")
    patient = bill_patient(session, bill)
    currency = config_of(session).currency

    def when(value: datetime) -> str:
        return local_time(session, value).strftime("%d %b %Y %H:%M")

    reversed_ids = {c.reversal_of_id for c in bill.charges if c.reversal_of_id is not None}
    lines = []
    for c in bill.charges:
        note = "reversed" if c.id in reversed_ids else ("reversal" if c.reversal_of_id else "")
        lines.append({"description": c.description, "quantity": c.quantity,
                      "unit_price": format_money(c.unit_price_paisa, currency),
                      "amount": format_money(c.amount_paisa, currency), "note": note,
                      "reason": c.reason or ""})
    return {
        "bill_id": bill.id,
        "bill_no": bill.bill_no,
        "status": bill.status,
        "mrn": patient.mrn,
        "patient_name": patient.name,
        "payer_class": payer_class_name(session, bill.payer_class),
        "bill_date": when(bill.opened_at),
        "printed_at": when(utcnow()),
        "timezone": config_of(session).timezone,
        "lines": lines,
        "total": format_money(bill.charges_paisa, currency),
        "paid": format_money(bill.paid_paisa, currency),
        "balance": format_money(bill.balance_paisa, currency),
        "payments": [{"receipt_no": p.receipt_no, "at": when(p.received_at), "method": METHOD_LABELS[p.method],
                      "reference": p.reference or "", "amount": format_money(p.amount_paisa, currency),
                      "by": p.received_by_name} for p in bill.payments],
    }


# --- partial credits (medicine returns) ------------------------------------------------------

def _credited_quantity(session: Session, charge_id: int) -> int:
    """How much of a charge's quantity is credited back already (partial credits and a
    full reversal), as a positive number."""
    total = session.scalar(select(func.coalesce(func.sum(Charge.quantity), 0))
                           .where(or_(Charge.credit_of_id == charge_id, Charge.reversal_of_id == charge_id)))
    return -int(total or 0)


def credit_charge(session: Session, actor: Actor, *, original_source_ref: Any, quantity: Any, source_ref: Any,
                  reason: Any) -> tuple[Charge, bool]:
    """Credit part of a charge (medicines returned): a line with the negative `quantity`, the
    original's unit price, the reason, `credit_of_id` the original; return (credit, created).

    Idempotent per `source_ref` (a repeat returns the first credit). The credited
    quantities of one charge (partial credits and a reversal) never exceed its quantity:
    Invalid `credit_exceeds_charge`. NotFound `charge_not_found` when the original was never
    charged; Conflict `bill_not_open` when its bill is not open. Locks the bill row, so two
    credits of one charge are decided one after the other. Audited."""
    original_ref = _source_ref(original_source_ref, "original_source_ref")
    ref = _source_ref(source_ref)
    quantity = _whole(quantity, "quantity", 1, MAX_QUANTITY)
    reason = _text(reason, "reason", 300)
    original = get_charge(session, original_ref)
    if original is None:
        raise NotFound(f"No charge was posted for {original_ref}.", code="charge_not_found")
    if original.reversal_of_id is not None or original.credit_of_id is not None:
        raise Invalid("A credit cannot itself be credited.", code="reversal_of_reversal",
                      fields={"original_source_ref": ["is a credit"]})
    bill = _locked_bill(session, original.bill_id)
    existing = get_charge(session, ref)
    if existing is not None:
        if existing.credit_of_id != original.id:
            raise Conflict(f"{ref} is used by another charge.", code="source_ref_used")
        return existing, False
    _require_open(bill)
    left = original.quantity - _credited_quantity(session, original.id)
    if quantity > left:
        raise Invalid(f"Only {left} of {original.quantity} can still be credited.", code="credit_exceeds_charge",
                      fields={"quantity": [f"at most {left}"]})
    credit = Charge(bill_id=bill.id, source_ref=ref, kind=original.kind, tariff_code=original.tariff_code,
                    description=original.description, quantity=-quantity,
                    unit_price_paisa=original.unit_price_paisa, amount_paisa=-quantity * original.unit_price_paisa,
                    posted_by_id=actor.user_id, posted_by_name=actor.username, credit_of_id=original.id,
                    reason=reason, half_day=original.half_day)
    credit, created = _insert_or_existing(session, credit, lambda: get_charge(session, ref))
    if not created:
        return credit, False
    bill.charges_paisa += credit.amount_paisa
    bill.version += 1
    session.flush()
    audit.record(session, actor, "charge.credit", "charge", credit.id, patient_id=bill.patient_id,
                 detail={"bill_id": bill.id, "credit_of_id": original.id, "source_ref": ref,
                         "quantity": quantity, "amount_paisa": credit.amount_paisa})
    return credit, True


def credit_returned_medicine(session: Session, actor: Actor, *, dispense_line_id: Any, quantity: Any,
                             return_id: Any, reason: Any = "Returned unused to pharmacy") -> tuple[Charge, bool]:
    """Credit `quantity` of the medicine charged as "dispense_line:<id>", under source_ref
    "pharmacy_return:<return_id>" (idempotent per return). NotFound `charge_not_found` when
    that line was never charged. See `credit_charge` (locks the bill row)."""
    line = _as_id(dispense_line_id, "dispense_line")
    ret = _as_id(return_id, "pharmacy_return")
    return credit_charge(session, actor, original_source_ref=f"dispense_line:{line}", quantity=quantity,
                         source_ref=f"pharmacy_return:{ret}", reason=reason)


# --- payer and package --------------------------------------------------------------------

def set_bill_payer(session: Session, actor: Actor, bill_id: Any, *, payer_class: Any, member_no: Any = None,
                   verification_ref: Any = None, coverage_limit_paisa: Any = None) -> Bill:
    """Record who pays an open bill.

    - cash: clears the member number, verification and limit.
    - panel / corporate: an optional coverage limit (paisa; None = no limit) and optional
      member number / verification reference.
    - sehat (Sehat Card): the member number (CNIC or Form-B, 13 digits, dashes allowed) must
      be the patient's CNIC or Form-B on record, and the card verification / approval
      number is required. Invalid naming the field otherwise.
    Charges already posted keep their prices. Conflict `bill_not_open` when the bill is not
    open. Locks the bill row; audited (not the member number)."""
    bill = _locked_bill(session, bill_id)
    payer = _payer_class(session, payer_class)
    _require_open(bill)
    limit = None if coverage_limit_paisa is None else _whole(coverage_limit_paisa, "coverage_limit_paisa", 0,
                                                             MAX_PAYMENT_PAISA)
    if payer.kind == "cash":
        member, verification, limit = None, None, None
    else:
        try:
            member = normalise_cnic(member_no, "Enter the CNIC or Form-B number: 13 digits, e.g. 35202-1234567-1.")
        except FieldError as err:
            raise Invalid(str(err), fields={"member_no": [str(err)]}) from None
        verification = _text(verification_ref, "verification_ref", 80, required=False)
        if payer.kind == "sehat":
            if member is None:
                raise Invalid("A Sehat Card admission needs the member's CNIC or Form-B number.",
                              fields={"member_no": ["is required for the Sehat Card"]})
            patient = session.get(Patient, bill.patient_id)
            if member not in {patient.cnic, patient.form_b}:
                raise Invalid("The CNIC / Form-B number is not the one on this patient's record.",
                              code="member_no_mismatch",
                              fields={"member_no": ["does not match the patient's CNIC or Form-B"]})
            if verification is None:
                raise Invalid("Enter the Sehat Card verification (approval) number.",
                              fields={"verification_ref": ["is required for the Sehat Card"]})
    bill.payer_class, bill.payer_member_no = payer.code, member
    bill.payer_verification_ref, bill.coverage_limit_paisa = verification, limit
    bill.version += 1
    session.flush()
    audit.record(session, actor, "bill.set_payer", "bill", bill.id, patient_id=bill.patient_id,
                 detail={"payer_class": payer.code, "kind": payer.kind, "coverage_limit_paisa": limit,
                         "verified": verification is not None})
    return bill


def set_package(session: Session, actor: Actor, bill_id: Any, package_code: Any) -> Bill:
    """Choose (or with None remove) the package of an open bill: a tariff item of kind
    "package" whose price (the bill's payer class's, else cash) replaces the bed, nursing,
    procedure and lab charges in the totals. Invalid for another kind; Conflict
    `bill_not_open`. Locks the bill row; audited."""
    bill = _locked_bill(session, bill_id)
    _require_open(bill)
    code = None
    if package_code is not None and package_code != "":
        item = get_tariff(session, package_code)
        if item.kind != "package":
            raise Invalid(f"{item.code} is a {item.kind} item, not a package.",
                          fields={"package_code": ["not a package"]})
        price_for(session, item.code, bill.payer_class)  # NotFound when it has no price
        code = item.code
    bill.package_code = code
    bill.version += 1
    session.flush()
    audit.record(session, actor, "bill.set_package", "bill", bill.id, patient_id=bill.patient_id,
                 detail={"package_code": code})
    return bill


def mark_final_requested(session: Session, actor: Actor, bill_id: Any) -> Bill:
    """The discharge asks finance for the final bill: the bill joins "Bills awaiting
    closure". Idempotent (keeps the first time); a no-op on a bill that is not open. Locks
    the bill row; audited when marked."""
    bill = _locked_bill(session, bill_id)
    if bill.final_requested_at is not None or bill.status != "open":
        return bill
    bill.final_requested_at = utcnow()
    session.flush()
    audit.record(session, actor, "bill.final_requested", "bill", bill.id, patient_id=bill.patient_id)
    return bill


# --- totals --------------------------------------------------------------------------------

@dataclass(frozen=True)
class FinalTotals:
    """The interim (open bill) or final (closed bill) totals, in paisa.

    net = gross + package_adjustment - discounts - credit_notes (never below zero);
    payer_share = min(net, coverage limit) for a panel / corporate / Sehat Card admission,
    else 0; patient_share = net - payer_share; received = deposits + payments - refunds;
    patient_balance = patient_share - received (negative: a refund is due)."""

    bill_id: int
    stage: str
    closed: bool
    payer_class: str
    payer_kind: str
    package_code: str | None
    gross_paisa: int
    package_price_paisa: int
    package_adjustment_paisa: int
    discounts_paisa: int
    pending_discounts: int
    pending_discounts_paisa: int
    credit_notes_paisa: int
    net_paisa: int
    coverage_limit_paisa: int | None
    payer_share_paisa: int
    patient_share_paisa: int
    deposits_paisa: int
    payments_paisa: int
    refunds_paisa: int
    received_paisa: int
    patient_balance_paisa: int
    credit_approved: bool

    def as_dict(self) -> dict:
        from dataclasses import asdict
        return asdict(self)


def _compute_totals(session: Session, bill: Bill) -> FinalTotals:
    """FinalTotals of `bill` from its rows (the caller holds the bill lock when it decides
    on them)."""
    by_kind = dict(session.execute(select(Charge.kind, func.sum(Charge.amount_paisa))
                                   .where(Charge.bill_id == bill.id).group_by(Charge.kind)).all())
    gross = int(sum(by_kind.values()))
    cn_rows = session.execute(select(Charge.kind, func.sum(CreditNote.amount_paisa))
                              .join(Charge, Charge.id == CreditNote.charge_id)
                              .where(CreditNote.bill_id == bill.id).group_by(Charge.kind)).all()
    cn_by_kind = {k: int(v) for k, v in cn_rows}
    credit_notes = sum(cn_by_kind.values())
    package_price = adjustment = 0
    if bill.package_code:
        package_price = price_for(session, bill.package_code, bill.payer_class)
        # The package replaces the covered lines; credit notes on covered lines therefore
        # give back to the adjustment what they take from the net (the package price holds).
        covered = sum(int(by_kind.get(k) or 0) for k in PACKAGE_KINDS)
        adjustment = package_price - covered + sum(cn_by_kind.get(k, 0) for k in PACKAGE_KINDS)
    disc = dict(session.execute(select(BillDiscount.status, func.sum(BillDiscount.amount_paisa))
                                .where(BillDiscount.bill_id == bill.id).group_by(BillDiscount.status)).all())
    pending_count = session.scalar(select(func.count()).select_from(BillDiscount).where(
        BillDiscount.bill_id == bill.id, BillDiscount.status == "pending")) or 0
    discounts = int(disc.get("approved") or 0)
    net = max(gross + adjustment - discounts - credit_notes, 0)
    payer = session.get(PayerClass, bill.payer_class)
    payer_kind = payer.kind if payer is not None else "cash"
    payer_share = 0
    if payer_kind in THIRD_PARTY_KINDS and bill.admission_id is not None:
        payer_share = net if bill.coverage_limit_paisa is None else min(net, bill.coverage_limit_paisa)
    money = dict(session.execute(select(Payment.kind, func.sum(Payment.amount_paisa))
                                 .where(Payment.bill_id == bill.id).group_by(Payment.kind)).all())
    deposits, payments, refunds = (int(money.get(k) or 0) for k in ("deposit", "payment", "refund"))
    received = deposits + payments - refunds
    patient_share = net - payer_share
    closed = bill.status == "closed"
    return FinalTotals(
        bill_id=bill.id, stage="final" if closed else "interim", closed=closed, payer_class=bill.payer_class,
        payer_kind=payer_kind, package_code=bill.package_code, gross_paisa=gross,
        package_price_paisa=package_price, package_adjustment_paisa=adjustment, discounts_paisa=discounts,
        pending_discounts=int(pending_count), pending_discounts_paisa=int(disc.get("pending") or 0),
        credit_notes_paisa=credit_notes, net_paisa=net, coverage_limit_paisa=bill.coverage_limit_paisa,
        payer_share_paisa=payer_share, patient_share_paisa=patient_share, deposits_paisa=deposits,
        payments_paisa=payments, refunds_paisa=refunds, received_paisa=received,
        patient_balance_paisa=patient_share - received, credit_approved=bill.credit_approved_at is not None)


def final_totals(session: Session, bill_id: Any) -> FinalTotals:
    """The bill's totals (interim while open, final once closed). Reads only."""
    bill = get_bill(session, bill_id)
    session.refresh(bill)
    return _compute_totals(session, bill)


SOURCE_LABELS = {
    "lab_order_item": ("Lab test", "lab"),
    "dispense_line": ("Pharmacy", "pharmacy"),
    "pharmacy_return": ("Pharmacy return", "pharmacy"),
    "bed_day": ("Bed-day", "ward"),
    "nursing_day": ("Nursing", "ward"),
    "procedure": ("Procedure", "ward"),
    "ward_order": ("Ward order", "ward"),
    "encounter": ("Consultation", "opd"),
    "manual": ("Manual", None),
}


def source_label(source_ref: str) -> dict:
    """A charge's source_ref as a person reads it: {"label", "area", "ref_id", "ref"}.
    "lab_order_item:12" -> Lab test #12 (area lab); "bed_day:3:0:general" -> Bed-day;
    unknown prefixes are shown as they are."""
    base = source_ref[:-len(REVERSAL_SUFFIX)] if source_ref.endswith(REVERSAL_SUFFIX) else source_ref
    parts = base.split(":")
    label, area = SOURCE_LABELS.get(parts[0], (parts[0].replace("_", " ").capitalize(), None))
    ref_id = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    text = f"{label} #{ref_id}" if ref_id is not None else label
    if source_ref.endswith(REVERSAL_SUFFIX):
        text = f"Reversal of {text}"
    return {"label": text, "area": area, "ref_id": ref_id, "ref": source_ref}


# --- discounts -----------------------------------------------------------------------------

def _locked_discount(session: Session, discount_id: Any) -> tuple[BillDiscount, Bill]:
    discount = session.get(BillDiscount, _as_id(discount_id, "discount"))
    if discount is None:
        raise NotFound(f"No discount with id {discount_id}.", code="discount_not_found")
    bill = _locked_bill(session, discount.bill_id)
    session.refresh(discount)
    return discount, bill


def request_discount(session: Session, actor: Actor, bill_id: Any, *, amount_paisa: Any,
                     reason: Any) -> BillDiscount:
    """Ask for a discount on an open bill (a reason always). Up to the setting
    finance.discount_approval_limit_paisa it is approved at once; above, it is pending until
    a finance manager decides. The discounts (approved and pending) never exceed the amount
    due after the package: Invalid `discount_too_large`. Conflict `bill_not_open`. Locks
    the bill row; audited."""
    amount = _whole(amount_paisa, "amount_paisa", 1, MAX_PAYMENT_PAISA)
    reason = _text(reason, "reason", 300)
    bill = _locked_bill(session, bill_id)
    _require_open(bill)
    totals = _compute_totals(session, bill)
    room = totals.gross_paisa + totals.package_adjustment_paisa - totals.credit_notes_paisa \
        - totals.discounts_paisa - totals.pending_discounts_paisa
    if amount > room:
        room = max(room, 0)
        raise Invalid(f"The discount can be at most {_money(session, room)}.", code="discount_too_large",
                      fields={"amount_paisa": [f"at most {_money(session, room)}"]})
    limit = int(settings.get(session, DISCOUNT_APPROVAL_LIMIT))
    approved = amount <= limit
    now = utcnow()
    discount = BillDiscount(bill_id=bill.id, amount_paisa=amount, reason=reason,
                            status="approved" if approved else "pending", requested_by_id=actor.user_id,
                            requested_by_name=actor.username, requested_at=now,
                            decided_at=now if approved else None,
                            decision_note="Within the approval limit" if approved else None)
    session.add(discount)
    bill.version += 1
    session.flush()
    audit.record(session, actor, "discount.request", "bill_discount", discount.id, patient_id=bill.patient_id,
                 detail={"bill_id": bill.id, "amount_paisa": amount, "status": discount.status})
    return discount


def _decide_discount(session: Session, actor: Actor, discount_id: Any, status: str, note: Any) -> BillDiscount:
    if not actor.has_role(*APPROVER_ROLES):
        raise Forbidden("Only a finance manager decides on discounts.", code="not_approver")
    note = _text(note, "note", 300, required=False)
    discount, bill = _locked_discount(session, discount_id)
    _require_open(bill)
    if discount.status != "pending":
        raise Conflict(f"This discount is {discount.status} already.", code="discount_decided")
    if status == "approved" and discount.requested_by_id is not None and discount.requested_by_id == actor.user_id:
        raise Forbidden("A discount is approved by someone other than who asked for it.", code="own_discount")
    discount.status, discount.decided_at = status, utcnow()
    discount.decided_by_id, discount.decided_by_name, discount.decision_note = actor.user_id, actor.username, note
    bill.version += 1
    session.flush()
    audit.record(session, actor, f"discount.{status}", "bill_discount", discount.id, patient_id=bill.patient_id,
                 detail={"bill_id": bill.id, "amount_paisa": discount.amount_paisa})
    return discount


def approve_discount(session: Session, actor: Actor, discount_id: Any, note: Any = None) -> BillDiscount:
    """Approve a pending discount: a finance manager (or admin) who did not ask for it
    (Forbidden otherwise); Conflict `discount_decided` / `bill_not_open`. Locks the bill
    row; audited."""
    return _decide_discount(session, actor, discount_id, "approved", note)


def reject_discount(session: Session, actor: Actor, discount_id: Any, note: Any = None) -> BillDiscount:
    """Reject a pending discount: a finance manager or admin (the requester may withdraw
    their own); Conflict `discount_decided` / `bill_not_open`. Locks the bill row; audited."""
    return _decide_discount(session, actor, discount_id, "rejected", note)


def list_discounts(session: Session, bill_id: int) -> list[BillDiscount]:
    return list(session.scalars(select(BillDiscount).where(BillDiscount.bill_id == bill_id)
                                .order_by(BillDiscount.id)))


# --- credit approval, close ----------------------------------------------------------------

def approve_credit(session: Session, actor: Actor, bill_id: Any, reason: Any) -> Bill:
    """Let an open bill close with the patient's balance still owed (credit), with the
    reason. Finance manager or admin (Forbidden otherwise). Locks the bill row; audited."""
    if not actor.has_role(*APPROVER_ROLES):
        raise Forbidden("Only a finance manager approves credit.", code="not_approver")
    reason = _text(reason, "reason", 300)
    bill = _locked_bill(session, bill_id)
    _require_open(bill)
    bill.credit_approved_at, bill.credit_approved_by_id, bill.credit_reason = utcnow(), actor.user_id, reason
    bill.version += 1
    session.flush()
    audit.record(session, actor, "bill.credit_approve", "bill", bill.id, patient_id=bill.patient_id)
    return bill


def close_problem(totals: FinalTotals) -> tuple[str, str] | None:
    """Why an open bill cannot close now, as (code, message), or None."""
    if totals.closed:
        return "bill_not_open", "The bill is closed already."
    if totals.pending_discounts:
        return "discount_pending", "A discount waits for approval: approve or reject it first."
    if totals.patient_balance_paisa < 0:
        return "refund_due", "The patient paid more than their share: record the refund first."
    if totals.patient_balance_paisa > 0 and not totals.credit_approved:
        return "balance_due", "The patient's share is not paid: collect it or have credit approved."
    return None


def _snapshot(session: Session, actor: Actor, bill: Bill, reason: str) -> BillVersion:
    last = session.scalar(select(func.max(BillVersion.version_no)).where(BillVersion.bill_id == bill.id)) or 0
    totals = _compute_totals(session, bill)
    version = BillVersion(bill_id=bill.id, version_no=last + 1, totals=totals.as_dict(), reason=reason,
                          created_by_id=actor.user_id, created_by_name=actor.username)
    session.add(version)
    session.flush()
    return version


def close_bill(session: Session, actor: Actor, bill_id: Any) -> BillVersion:
    """Close (lock) a bill; return its version 1 snapshot.

    Locks the bill row FOR UPDATE, then checks: it is open; no discount is pending
    (Conflict `discount_pending`); the patient's balance is zero, or more than zero with
    credit approved (Conflict `balance_due` otherwise); not below zero (Conflict
    `refund_due`: record the refund first). Then: status closed, closed_at/by, a
    BillVersion snapshot (version 1, reason "closed") and, when the payer's share is more
    than zero, a Receivable for the payer class. Audited. From then on every charge,
    credit, discount, deposit, payment, payer or package change is Conflict
    `bill_not_open`; corrections are credit notes (`reverse_closed_charge`)."""
    bill = _locked_bill(session, bill_id)
    _require_open(bill)
    totals = _compute_totals(session, bill)
    problem = close_problem(totals)
    if problem is not None:
        raise Conflict(problem[1], code=problem[0])
    bill.status, bill.closed_at, bill.closed_by_id = "closed", utcnow(), actor.user_id
    bill.version += 1
    session.flush()
    version = _snapshot(session, actor, bill, "closed")
    if totals.payer_share_paisa > 0:
        session.add(Receivable(bill_id=bill.id, payer_class=bill.payer_class, amount_paisa=totals.payer_share_paisa,
                               status="open"))
        session.flush()
    audit.record(session, actor, "bill.close", "bill", bill.id, patient_id=bill.patient_id,
                 detail={"version_no": version.version_no, "net_paisa": totals.net_paisa,
                         "payer_share_paisa": totals.payer_share_paisa,
                         "patient_balance_paisa": totals.patient_balance_paisa})
    return version


def list_versions(session: Session, bill_id: int) -> list[BillVersion]:
    return list(session.scalars(select(BillVersion).where(BillVersion.bill_id == bill_id)
                                .order_by(BillVersion.version_no)))


def list_credit_notes(session: Session, bill_id: int) -> list[CreditNote]:
    return list(session.scalars(select(CreditNote).where(CreditNote.bill_id == bill_id).order_by(CreditNote.id)))


def get_receivable(session: Session, bill_id: int) -> Receivable | None:
    return session.scalar(select(Receivable).where(Receivable.bill_id == bill_id))


def reverse_closed_charge(session: Session, actor: Actor, bill_id: Any, *, charge_id: Any, reason: Any,
                          quantity: Any = None) -> CreditNote:
    """Correct a closed bill: a credit note for `quantity` (default: all that is left) of
    one of its charges, and a new bill version with the totals after it. The charges
    themselves never change. The payer's receivable follows the new payer share; a
    patient left in credit shows a refund due (record_refund pays it).

    Finance manager or admin only (Forbidden). Conflict `bill_not_closed` on an open bill
    (reverse the line instead); Conflict `already_reversed` when nothing of the charge is
    left to credit; Invalid when the quantity is more than what is left. Locks the bill
    row, then the credit note counter. Audited."""
    if not actor.has_role(*APPROVER_ROLES):
        raise Forbidden("Only a finance manager corrects a closed bill.", code="not_approver")
    reason = _text(reason, "reason", 300)
    charge_id = _as_id(charge_id, "charge")
    bill = _locked_bill(session, bill_id)
    if bill.status != "closed":
        raise Conflict(f"Bill {bill.bill_no} is {bill.status}: only a closed bill takes credit notes.",
                       code="bill_not_closed")
    charge = session.get(Charge, charge_id)
    if charge is None or charge.bill_id != bill.id:
        raise NotFound(f"Bill {bill.bill_no} has no charge {charge_id}.", code="charge_not_found")
    if charge.reversal_of_id is not None or charge.credit_of_id is not None:
        raise Invalid("A credit line cannot be credited.", fields={"charge_id": ["is a credit"]})
    noted = session.scalar(select(func.coalesce(func.sum(CreditNote.quantity), 0))
                           .where(CreditNote.charge_id == charge.id)) or 0
    left = charge.quantity - _credited_quantity(session, charge.id) - int(noted)
    if left <= 0:
        raise Conflict("This charge is credited in full already.", code="already_reversed")
    quantity = left if quantity is None else _whole(quantity, "quantity", 1, MAX_QUANTITY)
    if quantity > left:
        raise Invalid(f"Only {left} can still be credited.", code="credit_exceeds_charge",
                      fields={"quantity": [f"at most {left}"]})
    last = session.scalar(select(func.max(BillVersion.version_no)).where(BillVersion.bill_id == bill.id)) or 0
    note = CreditNote(credit_note_no=CREDIT_NOTE_NO_FORMAT.format(n=next_number(session, CREDIT_NOTE_COUNTER)),
                      bill_id=bill.id, charge_id=charge.id, quantity=quantity,
                      amount_paisa=quantity * charge.unit_price_paisa, reason=reason, bill_version_no=last + 1,
                      created_by_id=actor.user_id, created_by_name=actor.username)
    session.add(note)
    bill.version += 1
    session.flush()
    version = _snapshot(session, actor, bill, f"credit note {note.credit_note_no}")
    totals = _compute_totals(session, bill)
    receivable = get_receivable(session, bill.id)
    if receivable is not None:
        receivable.amount_paisa, receivable.updated_at = totals.payer_share_paisa, utcnow()
        if totals.payer_share_paisa == 0 and receivable.status == "open":
            receivable.status = "cancelled"
    elif totals.payer_share_paisa > 0:
        session.add(Receivable(bill_id=bill.id, payer_class=bill.payer_class, amount_paisa=totals.payer_share_paisa))
    session.flush()
    audit.record(session, actor, "bill.credit_note", "credit_note", note.id, patient_id=bill.patient_id,
                 detail={"bill_id": bill.id, "charge_id": charge.id, "quantity": quantity,
                         "amount_paisa": note.amount_paisa, "version_no": version.version_no})
    return note


def reverse_bill_line(session: Session, actor: Actor, bill_id: Any, *, charge_id: Any, reason: Any,
                      quantity: Any = None) -> tuple[Charge | CreditNote, bool]:
    """Reverse one line of a bill: on an open bill the whole line (`reverse_charge`, a
    partial quantity is Invalid); on a closed bill a credit note (`reverse_closed_charge`,
    finance manager only). Returns (reversal charge or credit note, created)."""
    bill = get_bill(session, bill_id)
    if bill.status == "closed":
        return reverse_closed_charge(session, actor, bill.id, charge_id=charge_id, reason=reason,
                                     quantity=quantity), True
    charge = session.get(Charge, _as_id(charge_id, "charge"))
    if charge is None or charge.bill_id != bill.id:
        raise NotFound(f"Bill {bill.bill_no} has no charge {charge_id}.", code="charge_not_found")
    if quantity is not None and quantity != charge.quantity:
        raise Invalid("An open bill's line is reversed whole.", fields={"quantity": ["reverse the whole line"]})
    return reverse_charge(session, actor, charge.source_ref, reason)


# --- gate pass, top-up ------------------------------------------------------------------

def issue_gate_pass(session: Session, actor: Actor, bill_id: Any) -> str:
    """The gate pass number of a closed bill (closed means settled or credit approved);
    a second call returns the same number. Conflict `bill_not_closed` otherwise. Locks the
    bill row, then the gate pass counter. Audited when issued."""
    bill = _locked_bill(session, bill_id)
    if bill.gate_pass_no is not None:
        return bill.gate_pass_no
    if bill.status != "closed":
        raise Conflict(f"Bill {bill.bill_no} is not closed: settle it (or approve credit) and close it first.",
                       code="bill_not_closed")
    bill.gate_pass_no = GATE_PASS_NO_FORMAT.format(n=next_number(session, GATE_PASS_COUNTER))
    bill.gate_pass_at = utcnow()
    session.flush()
    audit.record(session, actor, "bill.gate_pass", "bill", bill.id, patient_id=bill.patient_id,
                 detail={"gate_pass_no": bill.gate_pass_no})
    return bill.gate_pass_no


def _deposit_balance(bill: Bill) -> int:
    """Money received (deposits + payments - refunds) less the charges so far."""
    return bill.paid_paisa - bill.charges_paisa


def _open_topup(session: Session, bill_id: int) -> TopUpRequest | None:
    return session.scalar(select(TopUpRequest).where(TopUpRequest.bill_id == bill_id,
                                                     TopUpRequest.status == "open"))


def _mark_topups_met(session: Session, bill: Bill) -> None:
    request = _open_topup(session, bill.id)
    if request is not None and _deposit_balance(bill) >= int(settings.get(session, TOPUP_THRESHOLD)):
        request.status, request.met_at = "met", utcnow()
        session.flush()


def check_topup(session: Session, actor: Actor, bill_id: Any) -> TopUpRequest | None:
    """Ask for more deposit when an open admission bill's deposit balance (received less
    charges) is below the setting finance.deposit_topup_threshold_paisa and no request is
    open; return the new request, else None. Locks the bill row (one open request per bill,
    also a partial unique index). Audited when a request is made."""
    bill = _locked_bill(session, bill_id)
    if bill.status != "open" or bill.admission_id is None:
        return None
    balance = _deposit_balance(bill)
    threshold = int(settings.get(session, TOPUP_THRESHOLD))
    if balance >= threshold or _open_topup(session, bill.id) is not None:
        return None
    request = TopUpRequest(bill_id=bill.id, balance_paisa=balance, threshold_paisa=threshold, status="open")
    request, created = _insert_or_existing(session, request, lambda: _open_topup(session, bill.id))
    if not created:
        return None
    audit.record(session, actor, "bill.topup_request", "bill", bill.id, patient_id=bill.patient_id,
                 detail={"balance_paisa": balance, "threshold_paisa": threshold})
    return request


def list_open_topups(session: Session) -> list[tuple[TopUpRequest, Bill, Patient]]:
    """Open top-up requests of open bills, oldest first, with bill and patient. Reads only."""
    rows = session.execute(select(TopUpRequest, Bill, Patient).join(Bill, Bill.id == TopUpRequest.bill_id)
                           .join(Patient, Patient.id == Bill.patient_id)
                           .where(TopUpRequest.status == "open", Bill.status == "open")
                           .order_by(TopUpRequest.requested_at))
    return [tuple(r) for r in rows]


def list_awaiting_closure(session: Session, page: int = 1, size: int = 25) -> tuple[list[tuple[Bill, Patient]], int]:
    """Finance's work queue: open admission bills whose final bill was asked for, oldest
    request first, with their patients. Reads only."""
    base = (select(Bill, Patient).join(Patient, Patient.id == Bill.patient_id)
            .where(Bill.status == "open", Bill.final_requested_at.is_not(None)))
    total = session.scalar(select(func.count()).select_from(base.subquery()))
    rows = session.execute(base.order_by(Bill.final_requested_at, Bill.id).limit(size).offset((page - 1) * size))
    return [(b, p) for b, p in rows], total


def final_bill(session: Session, actor: Actor, bill_id: Any) -> dict:
    """Everything the printed final (or interim) bill shows, as display strings: every line
    with its source, the totals with the payer split, discounts, money received, credit
    notes and the version. Audited as a read of the bill (view "final_bill")."""
    bill = read_bill(session, actor, bill_id, view="final_bill")
    patient = bill_patient(session, bill)
    currency = config_of(session).currency
    totals = _compute_totals(session, bill)
    versions = list_versions(session, bill.id)

    def when(value: datetime | None) -> str:
        return local_time(session, value).strftime("%d %b %Y %H:%M") if value else ""

    def m(paisa: int) -> str:
        return format_money(paisa, currency)

    lines = [{"description": c.description + (" (half days)" if c.half_day else ""),
              "source": source_label(c.source_ref)["label"], "quantity": c.quantity,
              "unit_price": m(c.unit_price_paisa), "amount": m(c.amount_paisa), "reason": c.reason or ""}
             for c in bill.charges]
    rows = [("Gross charges", m(totals.gross_paisa))]
    if bill.package_code:
        rows.append((f"Package {bill.package_code} adjustment", m(totals.package_adjustment_paisa)))
    if totals.discounts_paisa:
        rows.append(("Discounts", m(-totals.discounts_paisa)))
    if totals.credit_notes_paisa:
        rows.append(("Credit notes", m(-totals.credit_notes_paisa)))
    rows += [("Net", m(totals.net_paisa)), ("Payer share", m(totals.payer_share_paisa)),
             ("Patient share", m(totals.patient_share_paisa)), ("Deposits", m(totals.deposits_paisa)),
             ("Payments", m(totals.payments_paisa)), ("Refunds", m(-totals.refunds_paisa)),
             ("Patient balance", m(totals.patient_balance_paisa))]
    return {
        "bill_no": bill.bill_no, "stage": "FINAL" if totals.closed else "INTERIM",
        "version": versions[-1].version_no if versions else None,
        "mrn": patient.mrn, "patient_name": patient.name,
        "payer_class": payer_class_name(session, bill.payer_class),
        "verification_ref": bill.payer_verification_ref or "",
        "package": bill.package_code or "", "bill_date": when(bill.opened_at), "closed_at": when(bill.closed_at),
        "printed_at": when(utcnow()), "timezone": config_of(session).timezone, "lines": lines, "totals": rows,
        "gate_pass_no": bill.gate_pass_no or "",
        "credit_notes": [{"no": n.credit_note_no, "amount": m(n.amount_paisa), "reason": n.reason,
                          "version": n.bill_version_no} for n in list_credit_notes(session, bill.id)],
    }
