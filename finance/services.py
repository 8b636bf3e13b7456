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

from sqlalchemy import func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from finance.models import (CASH, CHARGE_KINDS, CODE_LENGTH, PAYER_KINDS, PAYMENT_METHODS, REVERSAL_SUFFIX,
                            SOURCE_REF_LENGTH, TARIFF_KINDS, Bill, Charge, IdempotencyKey, Payment, PayerClass,
                            TariffItem, TariffPrice)
from hms import audit, settings
from hms.audit import Actor
from hms.db import config_of, next_number, utcnow
from hms.errors import Conflict, Invalid, NotFound, MAX_ID, record_id
from hms.patients.models import Patient

FEE_BEFORE_CONSULTATION = settings.declare(
    "opd.consultation_fee_before", bool, True, "Consultation fee is paid before the consultation")

BILL_NO_FORMAT = "B-{n:06d}"
RECEIPT_NO_FORMAT = "R-{n:06d}"
BILL_COUNTER = "finance.bill"
RECEIPT_COUNTER = "finance.receipt"

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
        raise Invalid("kind must be panel or corporate.", fields={"kind": ["must be panel or corporate"]})
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


def totals_mismatches(session: Session) -> list[int]:
    """Ids of bills whose cached totals differ from the sums of their charges and payments
    (always empty unless something wrote the tables behind the services' back)."""
    charged = (select(Charge.bill_id, func.sum(Charge.amount_paisa).label("s")).group_by(Charge.bill_id)
               .subquery())
    paid = select(Payment.bill_id, func.sum(Payment.amount_paisa).label("s")).group_by(Payment.bill_id).subquery()
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


def charge_request(*, source_ref: Any, kind: Any, description: Any, quantity: Any = 1, tariff_code: Any = None,
                   unit_price_paisa: Any = None) -> ChargeRequest:
    """Check one charge's fields: priced by a tariff code, or (medicines, priced from the
    stock batch) by an explicit unit price; never both. Invalid naming the field."""
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
    return ChargeRequest(ref, kind, description, quantity, tariff_code, unit_price_paisa)


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
    charge = Charge(bill_id=bill.id, source_ref=req.source_ref, kind=req.kind, tariff_code=tariff_code,
                    description=req.description, quantity=req.quantity, unit_price_paisa=unit_price,
                    amount_paisa=req.quantity * unit_price, posted_by_id=actor.user_id,
                    posted_by_name=actor.username)
    charge, created = _insert_or_existing(session, charge, lambda: get_charge(session, req.source_ref))
    if not created:
        return _check_same_bill(charge, bill), False
    bill.charges_paisa += charge.amount_paisa
    bill.version += 1
    session.flush()
    audit.record(session, actor, "charge.post", "charge", charge.id, patient_id=bill.patient_id,
                 detail={"bill_id": bill.id, "source_ref": charge.source_ref, "tariff_code": tariff_code,
                         "quantity": charge.quantity, "amount_paisa": charge.amount_paisa})
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
    charge). The reason is required. NotFound when nothing was posted under `source_ref`;
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
    reversal = Charge(bill_id=bill.id, source_ref=reversal_ref, kind=original.kind,
                      tariff_code=original.tariff_code, description=original.description,
                      quantity=-original.quantity, unit_price_paisa=original.unit_price_paisa,
                      amount_paisa=-original.amount_paisa, posted_by_id=actor.user_id,
                      posted_by_name=actor.username, reversal_of_id=original.id, reason=reason)
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


# --- payments ------------------------------------------------------------------------------

def _fingerprint(bill_id: int, amount_paisa: int, method: str) -> str:
    return f"bill:{bill_id}|amount:{amount_paisa}|method:{method}"


def _replay(session: Session, prior: IdempotencyKey, fingerprint: str) -> Payment:
    if prior.operation != "payment" or prior.fingerprint != fingerprint or prior.payment_id is None:
        raise Conflict("This idempotency key was used for a different request; send a new key for a new payment.",
                       code="idempotency_key_reused")
    return session.get(Payment, prior.payment_id)


def _idempotency_key(session: Session, key: str) -> IdempotencyKey | None:
    return session.execute(select(IdempotencyKey).where(IdempotencyKey.key == key)
                           .execution_options(populate_existing=True)).scalar_one_or_none()


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
    - The amount is whole paisa, more than zero and at most the balance (paying exactly the
      balance settles the bill); more is Invalid `overpayment`.
    - A bill that is not open is Conflict `bill_not_open` (a repeat of an earlier request
      still returns its payment).

    Locks the bill row, then the receipt counter. Updates the bill's cached paid total and
    version. Audited (bill, receipt number, amount, method).
    """
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
    if not isinstance(idempotency_key, str) or not IDEMPOTENCY_KEY_RE.match(idempotency_key):
        raise Invalid("The idempotency key must be 1 to 100 printable characters without spaces.",
                      fields={"idempotency_key": ["1 to 100 printable characters"]})

    bill = _locked_bill(session, bill_id)
    fingerprint = _fingerprint(bill.id, amount_paisa, method)
    prior = _idempotency_key(session, idempotency_key)
    if prior is not None:
        return _replay(session, prior, fingerprint), False
    _require_open(bill)
    if amount_paisa > bill.balance_paisa:
        due = max(bill.balance_paisa, 0)
        raise Invalid(f"The amount is more than the balance of {_money(session, due)}.", code="overpayment",
                      fields={"amount": [f"at most {_money(session, due)}"]})
    try:
        with session.begin_nested():
            payment = Payment(bill_id=bill.id,
                              receipt_no=RECEIPT_NO_FORMAT.format(n=next_number(session, RECEIPT_COUNTER)),
                              amount_paisa=amount_paisa, method=method, reference=reference,
                              received_by_id=actor.user_id, received_by_name=actor.username)
            session.add(payment)
            session.flush()
            session.add(IdempotencyKey(key=idempotency_key, operation="payment", fingerprint=fingerprint,
                                       payment_id=payment.id, created_by_id=actor.user_id))
            session.flush()
    except IntegrityError:
        prior = _idempotency_key(session, idempotency_key)
        if prior is None:
            raise
        return _replay(session, prior, fingerprint), False
    bill.paid_paisa += amount_paisa
    bill.version += 1
    session.flush()
    audit.record(session, actor, "payment.record", "payment", payment.id, patient_id=bill.patient_id,
                 detail={"bill_id": bill.id, "receipt_no": payment.receipt_no, "amount_paisa": amount_paisa,
                         "method": method})
    return payment, True


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
