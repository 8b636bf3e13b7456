"""Pharmacy services: the formulary, goods receipts, stock adjustments, allergy checks,
dispensing against prescriptions (first-expiry-first-out) and returns.

The only code that writes the inventory tables. Functions flush, never commit. Every
change of a batch's quantity writes one stock_movement row in the same flush, while the
batch row is locked (SELECT ... FOR UPDATE; on SQLite the IMMEDIATE write transaction
gives the same guarantee), so the ledger sum per batch always equals the quantity on
hand and stock never goes negative, however many pharmacists dispense at once.

Business outcomes of a dispense (an allergy, stock short, more than prescribed) come back
as data in the DispenseOutcome; bad input raises Invalid, a missing record NotFound.
Every write is audited with ids and codes only.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any, Iterable, TypedDict

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hms import audit
from hms.audit import Actor
from hms.db import utcnow
from hms.errors import Conflict, Invalid, NotFound, MAX_ID, record_id
from hms.patients.models import Patient
from hms.patients.services import list_allergies, local_today
from inventory.models import (ADJUSTMENT_REASONS, FORMS, UNITS, Batch, Dispense, DispenseLine,
                              DispenseReturn, GoodsReceipt, Item, PrescriptionSupply, StockMovement)

NEAR_EXPIRY_DAYS = 90
MAX_LINES = 50
MAX_RECEIPT_LINES = 200
MAX_QUANTITY = 1_000_000
MAX_PRICE_PAISA = 100_000_000_00  # PKR 100 million a unit: anything above is a typo
CODE_RE = re.compile(r"^[A-Z0-9][A-Z0-9-]{1,19}$")
MAX_QUERY_CHARS = 60


# --- small helpers -----------------------------------------------------------------------

class _Errors:
    """Collects field messages; raises one Invalid naming them all."""

    def __init__(self) -> None:
        self.fields: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.fields.setdefault(field, []).append(message)

    def raise_if_any(self, message: str = "Some fields are not valid.") -> None:
        if self.fields:
            raise Invalid(message, fields=self.fields)


def _text(value: Any, field: str, errors: _Errors, *, max_len: int, required: bool = True,
          label: str | None = None) -> str | None:
    """A trimmed, whitespace-collapsed string; None when blank and optional."""
    label = label or field.replace("_", " ").capitalize()
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            errors.add(field, f"{label} is required.")
        return None
    if not isinstance(value, str):
        errors.add(field, f"{label} must be text.")
        return None
    value = " ".join(value.split())
    if len(value) > max_len:
        errors.add(field, f"{label} must be at most {max_len} characters.")
        return None
    return value


def _whole(value: Any, field: str, errors: _Errors, *, minimum: int, maximum: int,
           label: str | None = None) -> int | None:
    label = label or field.replace("_", " ").capitalize()
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value.strip())
        else:
            errors.add(field, f"{label} must be a whole number.")
            return None
    if not minimum <= value <= maximum:
        errors.add(field, f"{label} must be between {minimum:,} and {maximum:,}.")
        return None
    return value


def _as_id(value: Any, what: str, code: str) -> int:
    return record_id(value, what, code)


def normalise_code(code: Any) -> str:
    """Item codes are upper-case: "pcm500t" names PCM500T."""
    return code.strip().upper() if isinstance(code, str) else ""


def units(n: int, unit: str) -> str:
    """"1 tablet", "3 tablets", "5 ml"."""
    if n == 1 or unit == "ml":
        return f"{n} {unit}"
    if unit.endswith("y") and unit[-2:-1] not in "aeiou":
        return f"{n} {unit[:-1]}ies"
    return f"{n} {unit}es" if unit.endswith(("ch", "sh", "s")) else f"{n} {unit}s"


def today_local(session: Session) -> date:
    """Today where the hospital is: a batch expiring today is still usable today."""
    return local_today(session)


def _starts_with(session: Session, column, prefix: str):
    if session.get_bind().dialect.name == "sqlite" and ord(prefix[-1]) < 0x10FFFF:
        # A half-open range uses the index on SQLite, where LIKE does not.
        return and_(column >= prefix, column < prefix[:-1] + chr(ord(prefix[-1]) + 1))
    escaped = prefix.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return column.like(escaped + "%", escape="/")


def _movement(session: Session, actor: Actor, batch: Batch, kind: str, quantity: int, reference: str,
              *, reason: str | None = None, note: str | None = None) -> StockMovement:
    """Change a (locked) batch's quantity and write its ledger row, in one flush."""
    batch.quantity_on_hand += quantity
    movement = StockMovement(batch_id=batch.id, item_id=batch.item_id, kind=kind, quantity=quantity,
                             balance_after=batch.quantity_on_hand, reason=reason, note=note,
                             reference=reference, actor_id=actor.user_id, actor_name=actor.username[:60])
    session.add(movement)
    return movement


def _lock_batch(session: Session, batch_id: Any) -> Batch:
    batch = session.execute(
        select(Batch).where(Batch.id == _as_id(batch_id, "batch", "batch_not_found")).with_for_update()
        .execution_options(populate_existing=True)).scalar_one_or_none()
    if batch is None:
        raise NotFound(f"No batch with id {batch_id}.", code="batch_not_found")
    return batch


# --- allergy matching --------------------------------------------------------------------

# Words that name a group rather than the substance: "penicillin antibiotics" is penicillin.
_NOISE_WORDS = {"drug", "drugs", "antibiotic", "antibiotics", "allergy", "group", "class", "family",
                "medicine", "medicines", "medication", "medications"}
# Spellings of the same substance or class, after lower-casing and singularising.
_SYNONYMS = {
    "sulfa": "sulfonamide", "sulpha": "sulfonamide", "sulphonamide": "sulfonamide",
    "sulphur drug": "sulfonamide",
    "non steroidal anti inflammatory": "nsaid", "nonsteroidal anti inflammatory": "nsaid",
    "non steroidal anti inflammatory drug": "nsaid", "nonsteroidal anti inflammatory drug": "nsaid",
    "nsaid analgesic": "nsaid",
    "acetaminophen": "paracetamol", "acetylsalicylic acid": "aspirin",
    "quinolone": "fluoroquinolone", "beta lactam": "beta lactam",
    "co trimoxazole": "sulfamethoxazole + trimethoprim", "cotrimoxazole": "sulfamethoxazole + trimethoprim",
    "co amoxiclav": "amoxicillin + clavulanic acid",
}
# An allergy to the group is an allergy to each class in it.
_CLASS_GROUPS = {"beta lactam": {"penicillin", "cephalosporin", "carbapenem"}}


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def allergy_key(text: str | None) -> str:
    """The comparable form of an allergy, substance or class: lower case, hyphens as
    spaces, singular ("NSAIDs" -> "nsaid", "Penicillins" -> "penicillin"), group words
    dropped ("sulfa drugs" -> "sulfonamide")."""
    if not text:
        return ""
    words = re.sub(r"[-_/,.()]+", " ", text.lower()).split()
    words = [_singular(w) for w in words if w not in _NOISE_WORDS] or [_singular(w) for w in words]
    phrase = " ".join(words).replace(" + ", "+").replace("+", " + ")
    return _SYNONYMS.get(phrase, phrase)


def _substance_keys(item: Item) -> set[str]:
    keys = {allergy_key(item.substance), allergy_key(item.generic_name)}
    keys.update(allergy_key(part) for part in item.substance.split("+"))
    if item.brand:
        keys.add(allergy_key(item.brand))
    keys.discard("")
    return keys


def _match(allergy_substance: str, item: Item) -> str | None:
    key = allergy_key(allergy_substance)
    if not key:
        return None
    if key in _substance_keys(item):
        return "substance"
    item_class = allergy_key(item.drug_class)
    if item_class and (key == item_class or item_class in _CLASS_GROUPS.get(key, ())):
        return "class"
    return None


class AllergyAlert(TypedDict):
    item_code: str
    item_name: str
    allergy_substance: str
    reaction: str | None
    severity: str
    match: str


def _patient_exists(session: Session, patient_id: Any) -> int:
    pid = _as_id(patient_id, "patient", "patient_not_found")
    if session.get(Patient, pid) is None:
        raise NotFound(f"No patient with id {patient_id}.", code="patient_not_found")
    return pid


def find_patient_id(session: Session, text: str | None) -> int | None:
    """The id of the patient named on a page by id or MRN (any case); None when blank,
    NotFound when no patient has that MRN. Reads only."""
    text = (text or "").strip()
    if not text:
        return None
    if text.isdigit() and len(text) < 10:
        return int(text)
    patient_id = session.scalar(select(Patient.id).where(Patient.mrn.in_(sorted({text, text.upper(), text.lower()}))))
    if patient_id is None:
        raise NotFound(f"No patient with MRN {text}.", code="patient_not_found")
    return patient_id


def _alerts_for(allergies, items: Iterable[Item]) -> tuple[list[AllergyAlert], list[int]]:
    alerts: list[AllergyAlert] = []
    allergy_ids: list[int] = []
    for item in items:
        for allergy in allergies:
            match = _match(allergy.substance, item)
            if match is None:
                continue
            alerts.append({"item_code": item.code, "item_name": item.display_name,
                           "allergy_substance": allergy.substance, "reaction": allergy.reaction,
                           "severity": allergy.severity, "match": match})
            allergy_ids.append(allergy.id)
    return alerts, allergy_ids


def check_allergies(session: Session, patient_id: int, item_codes: Iterable[str]) -> list[AllergyAlert]:
    """Alerts for the items a patient is allergic to: one per (item, active allergy) whose
    substance names the item's substance (or a component, its generic or brand name) --
    match "substance" -- or the item's drug class -- match "class" ("Penicillin" matches
    amoxicillin of class penicillin, "NSAIDs" ibuprofen of class nsaid). Case and plurals
    do not matter. Unknown item codes give no alerts (the dispense reports them).

    Reads only, takes no locks; NotFound when the patient does not exist. Not audited by
    itself: callers audit the surrounding action.
    """
    pid = _patient_exists(session, patient_id)
    codes = list(dict.fromkeys(normalise_code(c) for c in item_codes if normalise_code(c)))
    if not codes:
        return []
    by_code = {i.code: i for i in session.scalars(select(Item).where(Item.code.in_(codes)))}
    allergies = list_allergies(session, pid)
    return _alerts_for(allergies, [by_code[c] for c in codes if c in by_code])[0]


# --- items -------------------------------------------------------------------------------

ITEM_FIELDS = ("code", "generic_name", "brand", "form", "strength", "unit", "substance", "drug_class",
               "reorder_level", "active")


def _clean_substance(value: str) -> str:
    parts = [" ".join(p.lower().split()) for p in value.split("+")]
    return " + ".join(p for p in parts if p)


def create_item(session: Session, actor: Actor, data: dict) -> Item:
    """Add a medicine to the formulary; return it, flushed.

    Codes are upper-case letters, digits and hyphens ("PCM500T"); substance and class
    are stored lower-case. Raises Invalid naming every bad field, Conflict
    `duplicate_item_code` when the code is taken (also when another transaction takes it
    at the same moment: the unique constraint decides). Writes the item and audit
    "inventory.item_create".
    """
    if not isinstance(data, dict):
        raise Invalid("Send the item as an object of fields.")
    errors = _Errors()
    for key in data:
        if key not in ITEM_FIELDS:
            errors.add(key, "Unknown field.")
    code = normalise_code(data.get("code"))
    if not CODE_RE.match(code):
        errors.add("code", "Code must be 2 to 20 letters, digits or hyphens, e.g. PCM500T.")
    generic = _text(data.get("generic_name"), "generic_name", errors, max_len=120)
    brand = _text(data.get("brand"), "brand", errors, max_len=120, required=False)
    form = (_text(data.get("form"), "form", errors, max_len=20) or "").lower()
    if form and form not in FORMS:
        errors.add("form", f"Form must be one of: {', '.join(FORMS)}.")
    strength = _text(data.get("strength"), "strength", errors, max_len=40, required=False)
    unit = (_text(data.get("unit"), "unit", errors, max_len=20) or "").lower()
    if unit and unit not in UNITS:
        errors.add("unit", f"Unit must be one of: {', '.join(UNITS)}.")
    substance = _text(data.get("substance"), "substance", errors, max_len=120)
    drug_class = _text(data.get("drug_class"), "drug_class", errors, max_len=60, required=False,
                       label="Drug class")
    reorder = data.get("reorder_level", 0)
    reorder = 0 if reorder is None else _whole(reorder, "reorder_level", errors, minimum=0, maximum=MAX_QUANTITY)
    active = data.get("active", True)
    if not isinstance(active, bool):
        errors.add("active", "Active must be true or false.")
    errors.raise_if_any()
    if session.scalar(select(Item.id).where(Item.code == code)) is not None:
        raise _duplicate_code(code)
    item = Item(code=code, generic_name=generic, brand=brand, form=form, strength=strength, unit=unit,
                substance=_clean_substance(substance), drug_class=drug_class.lower() if drug_class else None,
                reorder_level=reorder, active=active, generic_search=generic.lower(),
                brand_search=brand.lower() if brand else None, created_by_id=actor.user_id)
    try:
        with session.begin_nested():
            session.add(item)
            session.flush()
    except IntegrityError:
        raise _duplicate_code(code) from None
    audit.record(session, actor, "inventory.item_create", "inventory_item", item.id, detail={"code": code})
    return item


def _duplicate_code(code: str) -> Conflict:
    message = f"An item with code {code} already exists."
    return Conflict(message, code="duplicate_item_code", fields={"code": [message]})


def get_item(session: Session, code: str) -> Item:
    """The item with this code (any case), or NotFound. Reads only."""
    item = session.scalar(select(Item).where(Item.code == normalise_code(code)))
    if item is None:
        raise NotFound(f"No item with code {code}.", code="item_not_found")
    return item


def _stock_summary(today: date):
    """Per item: unexpired units on hand, expired units still on the shelf, and the first
    expiry within NEAR_EXPIRY_DAYS of a batch that still has stock."""
    limit = today + timedelta(days=NEAR_EXPIRY_DAYS)
    usable = Batch.expiry_date >= today
    return (select(
        Batch.item_id,
        func.sum(case((usable, Batch.quantity_on_hand), else_=0)).label("on_hand"),
        func.sum(case((Batch.expiry_date < today, Batch.quantity_on_hand), else_=0)).label("expired_on_hand"),
        func.min(case((and_(usable, Batch.expiry_date <= limit, Batch.quantity_on_hand > 0), Batch.expiry_date),
                      else_=None)).label("near_expiry"),
    ).group_by(Batch.item_id).subquery())


STOCK_FILTERS = ("low", "near_expiry", "expired")


def search_items(session: Session, q: str | None = None, page: int = 1, size: int = 25, *,
                 stock_filter: str | None = None, active_only: bool = False) -> tuple[list[dict], int]:
    """One page of items with their stock, and the number of matches. Reads only.

    `q` matches the start of the code, the generic name or the brand (any case). Each
    row: {"item", "stock_on_hand" (unexpired units), "expired_on_hand", "near_expiry"
    (first expiry within 90 days of a batch with stock, or None), "reorder"
    (stock_on_hand <= reorder level)}. `stock_filter`: "low", "near_expiry" or "expired".
    """
    today = today_local(session)
    summary = _stock_summary(today)
    on_hand = func.coalesce(summary.c.on_hand, 0)
    expired = func.coalesce(summary.c.expired_on_hand, 0)
    stmt = select(Item, on_hand.label("on_hand"), expired.label("expired_on_hand"),
                  summary.c.near_expiry).outerjoin(summary, summary.c.item_id == Item.id)
    q = (q or "").strip()[:MAX_QUERY_CHARS]
    if q:
        lower = " ".join(q.lower().split())
        stmt = stmt.where(or_(_starts_with(session, Item.code, q.upper()),
                              _starts_with(session, Item.generic_search, lower),
                              _starts_with(session, Item.brand_search, lower)))
    if active_only:
        stmt = stmt.where(Item.active.is_(True))
    if stock_filter == "low":
        stmt = stmt.where(Item.active.is_(True), on_hand <= Item.reorder_level)
    elif stock_filter == "near_expiry":
        stmt = stmt.where(summary.c.near_expiry.is_not(None))
    elif stock_filter == "expired":
        stmt = stmt.where(expired > 0)
    elif stock_filter is not None:
        raise Invalid("Unknown stock filter.", fields={"filter": [f"Use one of: {', '.join(STOCK_FILTERS)}."]})
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    rows = session.execute(stmt.order_by(Item.generic_search, Item.strength, Item.code)
                           .limit(size).offset((max(page, 1) - 1) * size)).all()
    return [_stock_row(r.Item, r.on_hand, r.expired_on_hand, r.near_expiry) for r in rows], total


def _stock_row(item: Item, on_hand: int, expired_on_hand: int, near_expiry: date | None) -> dict:
    on_hand, expired_on_hand = int(on_hand or 0), int(expired_on_hand or 0)
    return {"item": item, "stock_on_hand": on_hand, "expired_on_hand": expired_on_hand,
            "near_expiry": near_expiry, "reorder": on_hand <= item.reorder_level}


def item_stock(session: Session, item: Item) -> dict:
    """The stock row of one item (as in search_items). Reads only."""
    today = today_local(session)
    summary = _stock_summary(today)
    row = session.execute(select(summary).where(summary.c.item_id == item.id)).first()
    if row is None:
        return _stock_row(item, 0, 0, None)
    return _stock_row(item, row.on_hand, row.expired_on_hand, row.near_expiry)


def batch_status(batch: Batch, today: date) -> str:
    """"expired", "near_expiry" (within 90 days), "empty" or "ok"."""
    if batch.expiry_date < today:
        return "expired"
    if batch.quantity_on_hand == 0:
        return "empty"
    if batch.expiry_date <= today + timedelta(days=NEAR_EXPIRY_DAYS):
        return "near_expiry"
    return "ok"


def list_batches(session: Session, item_code: str | None = None, *, in_stock_only: bool = False,
                 page: int = 1, size: int = 100) -> tuple[list[Batch], int]:
    """Batches, first expiry first (the order they are dispensed in), and their number.
    With `item_code` one item's batches (NotFound for an unknown code). Reads only."""
    stmt = select(Batch)
    if item_code:
        stmt = stmt.where(Batch.item_id == get_item(session, item_code).id)
    if in_stock_only:
        stmt = stmt.where(Batch.quantity_on_hand > 0)
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = session.scalars(stmt.order_by(Batch.item_id, Batch.expiry_date, Batch.id)
                           .limit(size).offset((max(page, 1) - 1) * size))
    return list(rows), total


def get_batch(session: Session, batch_id: Any) -> Batch:
    batch = session.get(Batch, _as_id(batch_id, "batch", "batch_not_found"))
    if batch is None:
        raise NotFound(f"No batch with id {batch_id}.", code="batch_not_found")
    return batch


# --- goods receipt -----------------------------------------------------------------------

def _parse_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


def receive_goods(session: Session, actor: Actor, *, supplier: Any, invoice_no: Any, lines: Any,
                  opening_balance: bool = False) -> GoodsReceipt:
    """Record a delivery: one new batch per line, with its receipt movement; return the
    receipt, flushed.

    Each line: {item_code, batch_no, expiry (date or YYYY-MM-DD), quantity,
    cost_price_paisa, sale_price_paisa}. The expiry must be after today (local) and the
    prices above zero; the item must exist and be active. `opening_balance` records a
    stock count when HMS is first used: there, stock that has already expired is
    accepted (it is on the shelf and must be written off through an adjustment).

    Raises Invalid naming every bad line field ("lines.0.expiry"); Conflict
    `duplicate_invoice` when this supplier's invoice was received before (the unique
    constraint decides between two transactions at the same moment). Creates new rows
    only, so it locks nothing. Writes goods_receipt, stock_batch, stock_movement and
    audit "inventory.receipt".
    """
    errors = _Errors()
    supplier = _text(supplier, "supplier", errors, max_len=120)
    invoice_no = _text(invoice_no, "invoice_no", errors, max_len=60, label="Invoice number")
    if not isinstance(lines, list) or not lines:
        errors.add("lines", "Add at least one line.")
        lines = []
    elif len(lines) > MAX_RECEIPT_LINES:
        errors.add("lines", f"At most {MAX_RECEIPT_LINES} lines in one receipt.")
        lines = []
    today = today_local(session)
    codes = {normalise_code(line.get("item_code")) for line in lines if isinstance(line, dict)}
    items = {i.code: i for i in session.scalars(select(Item).where(Item.code.in_(codes)))} if codes else {}
    clean: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for n, line in enumerate(lines):
        at = f"lines.{n}."
        if not isinstance(line, dict):
            errors.add(f"lines.{n}", "Each line must be an object.")
            continue
        for key in line:
            if key not in ("item_code", "batch_no", "expiry", "quantity", "cost_price_paisa", "sale_price_paisa"):
                errors.add(at + key, "Unknown field.")
        code = normalise_code(line.get("item_code"))
        item = items.get(code)
        if not code:
            errors.add(at + "item_code", "Item code is required.")
        elif item is None:
            errors.add(at + "item_code", f"Unknown item: {code}.")
        elif not item.active:
            errors.add(at + "item_code", f"{code} is not an active item.")
        batch_no = _text(line.get("batch_no"), at + "batch_no", errors, max_len=40, label="Batch number")
        batch_no = batch_no.upper() if batch_no else None
        expiry = _parse_date(line.get("expiry"))
        if expiry is None:
            errors.add(at + "expiry", "Expiry must be a date (YYYY-MM-DD).")
        elif expiry <= today and not opening_balance:
            errors.add(at + "expiry", "Expiry must be in the future; expired stock is not received.")
        quantity = _whole(line.get("quantity"), at + "quantity", errors, minimum=1, maximum=MAX_QUANTITY,
                          label="Quantity")
        cost = _whole(line.get("cost_price_paisa"), at + "cost_price_paisa", errors, minimum=1,
                      maximum=MAX_PRICE_PAISA, label="Cost price")
        sale = _whole(line.get("sale_price_paisa"), at + "sale_price_paisa", errors, minimum=1,
                      maximum=MAX_PRICE_PAISA, label="Sale price")
        if item is not None and batch_no:
            if (code, batch_no) in seen:
                errors.add(at + "batch_no", "This batch is already on another line of the receipt.")
            seen.add((code, batch_no))
        clean.append({"item": item, "batch_no": batch_no, "expiry": expiry, "quantity": quantity,
                      "cost": cost, "sale": sale})
    errors.raise_if_any()

    supplier_key, invoice_key = supplier.lower(), invoice_no.lower()
    if session.scalar(select(GoodsReceipt.id).where(GoodsReceipt.supplier_key == supplier_key,
                                                    GoodsReceipt.invoice_key == invoice_key)) is not None:
        raise _duplicate_invoice(supplier, invoice_no)
    receipt = GoodsReceipt(kind="opening" if opening_balance else "purchase", supplier=supplier,
                           invoice_no=invoice_no, supplier_key=supplier_key, invoice_key=invoice_key,
                           received_by_id=actor.user_id,
                           total_cost_paisa=sum(c["quantity"] * c["cost"] for c in clean))
    try:
        with session.begin_nested():
            session.add(receipt)
            session.flush()
    except IntegrityError:
        raise _duplicate_invoice(supplier, invoice_no) from None
    for c in clean:
        batch = Batch(item_id=c["item"].id, receipt_id=receipt.id, batch_no=c["batch_no"], expiry_date=c["expiry"],
                      cost_price_paisa=c["cost"], sale_price_paisa=c["sale"], quantity_received=c["quantity"],
                      quantity_on_hand=0, received_at=receipt.received_at)
        session.add(batch)
        session.flush()
        _movement(session, actor, batch, "receipt", c["quantity"], f"receipt:{receipt.id}")
    session.flush()
    audit.record(session, actor, "inventory.receipt", "goods_receipt", receipt.id,
                 detail={"kind": receipt.kind, "lines": len(clean), "batch_ids": [b.id for b in receipt.batches]})
    return receipt


def _duplicate_invoice(supplier: str, invoice_no: str) -> Conflict:
    message = f"Invoice {invoice_no} of {supplier} has already been received."
    return Conflict(message, code="duplicate_invoice", fields={"invoice_no": [message]})


# --- adjustments -------------------------------------------------------------------------

def normalise_reason(reason: Any) -> str:
    """"Expired write-off" -> "expired_write_off"."""
    if not isinstance(reason, str):
        return ""
    return re.sub(r"[\s-]+", "_", reason.strip().lower())


def adjust_stock(session: Session, actor: Actor, *, batch_id: Any, quantity: Any, reason: Any,
                 note: Any = None) -> StockMovement:
    """Correct a batch's quantity by a signed `quantity`, for a reason; return the movement.

    Reasons: damaged and expired_write_off (both take stock out; a write-off only of an
    expired batch) and count_correction (either way). Locks the batch row (FOR UPDATE)
    before reading its quantity, so the result is never below zero: Conflict
    `insufficient_stock` when it would be. Writes one adjustment movement and audit
    "inventory.adjustment".
    """
    errors = _Errors()
    reason_code = normalise_reason(reason)
    if not reason_code:
        errors.add("reason", "Give the reason: damaged, expired write-off or count correction.")
    elif reason_code not in ADJUSTMENT_REASONS:
        errors.add("reason", "Reason must be damaged, expired write-off or count correction.")
    qty = _whole(quantity, "quantity", errors, minimum=-MAX_QUANTITY, maximum=MAX_QUANTITY)
    if qty == 0:
        errors.add("quantity", "Quantity must not be zero: positive adds stock, negative removes it.")
    elif qty is not None and qty > 0 and reason_code in ("damaged", "expired_write_off"):
        errors.add("quantity", "Damaged and expired stock is taken out: give a negative quantity.")
    note = _text(note, "note", errors, max_len=200, required=False)
    errors.raise_if_any()
    batch = _lock_batch(session, batch_id)
    today = today_local(session)
    if reason_code == "expired_write_off" and batch.expiry_date >= today:
        message = f"Batch {batch.batch_no} has not expired (expiry {batch.expiry_date.isoformat()})."
        raise Invalid(message, fields={"reason": [message + " Use damaged or count correction."]})
    if batch.quantity_on_hand + qty < 0:
        message = (f"Batch {batch.batch_no} has only {batch.quantity_on_hand} on hand; "
                   f"it cannot go below zero.")
        raise Conflict(message, code="insufficient_stock",
                       fields={"quantity": [message], "available": batch.quantity_on_hand})
    movement = _movement(session, actor, batch, "adjustment", qty, "adjustment", reason=reason_code, note=note)
    session.flush()
    audit.record(session, actor, "inventory.adjustment", "stock_batch", batch.id,
                 detail={"movement_id": movement.id, "quantity": qty, "reason": reason_code})
    return movement


# --- ledger ------------------------------------------------------------------------------

def list_ledger(session: Session, *, batch_id: Any = None, item_code: str | None = None,
                page: int = 1, size: int = 50) -> tuple[list[StockMovement], int]:
    """Movements of one batch or one item, newest first, and their number. Reads only."""
    stmt = select(StockMovement)
    if batch_id not in (None, ""):
        stmt = stmt.where(StockMovement.batch_id == get_batch(session, batch_id).id)
    elif item_code:
        stmt = stmt.where(StockMovement.item_id == get_item(session, item_code).id)
    else:
        raise Invalid("Say whose ledger: batch_id or item_code.",
                      fields={"batch_id": ["Give batch_id or item_code."]})
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = session.scalars(stmt.order_by(StockMovement.id.desc()).limit(size).offset((max(page, 1) - 1) * size))
    return list(rows), total


def ledger_mismatches(session: Session) -> list[dict]:
    """Batches whose ledger sum differs from their quantity on hand (there should be none).
    Reads only."""
    sums = (select(StockMovement.batch_id, func.sum(StockMovement.quantity).label("total"))
            .group_by(StockMovement.batch_id).subquery())
    rows = session.execute(
        select(Batch.id, Batch.quantity_on_hand, func.coalesce(sums.c.total, 0).label("ledger"))
        .outerjoin(sums, sums.c.batch_id == Batch.id)
        .where(Batch.quantity_on_hand != func.coalesce(sums.c.total, 0))).all()
    return [{"batch_id": r.id, "quantity_on_hand": r.quantity_on_hand, "ledger_sum": int(r.ledger)} for r in rows]


# --- dispensing --------------------------------------------------------------------------

class DispenseOutcome(TypedDict):
    """What `dispense` returns (JSON-ready). ok False: nothing was written."""

    ok: bool
    dispense_id: int | None
    lines: list[dict]
    problems: list[dict]
    total_paisa: int
    shortfalls: list[dict]


class _Refused(Exception):
    """Unwinds the dispense savepoint when there are problems."""


def _clean_lines(lines: Any, errors: _Errors) -> list[dict]:
    if not isinstance(lines, list) or not lines:
        errors.add("lines", "Add at least one medicine to dispense.")
        return []
    if len(lines) > MAX_LINES:
        errors.add("lines", f"At most {MAX_LINES} lines in one dispense.")
        return []
    clean, seen_rx = [], set()
    for n, line in enumerate(lines):
        at = f"lines.{n}."
        if not isinstance(line, dict):
            errors.add(f"lines.{n}", "Each line must be an object.")
            continue
        code = normalise_code(line.get("item_code"))
        if not code:
            errors.add(at + "item_code", "Item code is required.")
        qty = _whole(line.get("quantity"), at + "quantity", errors, minimum=1, maximum=MAX_QUANTITY,
                     label="Quantity")
        rx = line.get("prescription_item_id")
        if rx is not None:
            rx = _whole(rx, at + "prescription_item_id", errors, minimum=1, maximum=MAX_ID,
                        label="Prescription item")
            if rx is not None and rx in seen_rx:
                errors.add(at + "prescription_item_id", "This prescription item is on another line.")
            seen_rx.add(rx)
        prescribed = line.get("prescribed_quantity")
        if prescribed is not None:
            prescribed = _whole(prescribed, at + "prescribed_quantity", errors, minimum=1, maximum=MAX_QUANTITY,
                                label="Prescribed quantity")
            if rx is None:
                errors.add(at + "prescribed_quantity", "A prescribed quantity needs the prescription item.")
        clean.append({"index": n, "item_code": code, "quantity": qty, "prescription_item_id": rx,
                      "prescribed_quantity": prescribed})
    return clean


def _usable_batches(session: Session, item_ids: list[int], today: date, *, lock: bool) -> dict[int, list[Batch]]:
    """Unexpired batches with stock per item, first expiry first. With `lock`, the rows
    are locked (FOR UPDATE) in id order, so two dispenses never wait on each other in
    opposite orders; PostgreSQL re-checks `quantity_on_hand > 0` after waiting, so a
    batch emptied meanwhile drops out."""
    if not item_ids:
        return {}
    stmt = (select(Batch).where(Batch.item_id.in_(sorted(set(item_ids))), Batch.quantity_on_hand > 0,
                                Batch.expiry_date >= today).order_by(Batch.id))
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    by_item: dict[int, list[Batch]] = defaultdict(list)
    for batch in session.scalars(stmt):
        by_item[batch.item_id].append(batch)
    for batches in by_item.values():
        batches.sort(key=lambda b: (b.expiry_date, b.id))
    return by_item


def _allocate(lines: list[dict], items: dict[str, Item], batches: dict[int, list[Batch]],
              partial: bool) -> tuple[list[tuple[dict, Batch, int]], list[dict], list[dict]]:
    """First-expiry-first-out: (line, batch, quantity) takes, problems and shortfalls.

    Lines of the same item draw on the same remaining quantities, in line order."""
    remaining = {b.id: b.quantity_on_hand for bs in batches.values() for b in bs}
    takes: list[tuple[dict, Batch, int]] = []
    problems: list[dict] = []
    shortfalls: list[dict] = []
    for line in lines:
        item = items.get(line["item_code"])
        if item is None:
            continue
        pool = batches.get(item.id, [])
        available = sum(remaining[b.id] for b in pool)
        wanted = line["quantity"]
        if available < wanted and not partial:
            problems.append(_short_problem(item, wanted, available, line["index"]))
            continue
        need = min(wanted, available)
        for batch in pool:
            if need == 0:
                break
            take = min(need, remaining[batch.id])
            if take:
                remaining[batch.id] -= take
                need -= take
                takes.append((line, batch, take))
        if available < wanted:
            shortfalls.append({"item_code": item.code, "requested": wanted, "dispensed": available,
                               "line": line["index"]})
    return takes, problems, shortfalls


def _short_problem(item: Item, wanted: int, available: int, index: int) -> dict:
    if available:
        message = (f"Only {units(available, item.unit)} of {item.display_name} in stock (unexpired); "
                   f"{wanted} asked for. Dispense what there is with a reason for the partial supply, or none.")
    else:
        message = f"{item.display_name} is out of stock (no unexpired batch); {wanted} asked for."
    return {"item_code": item.code, "code": "insufficient_stock", "available": available,
            "requested": wanted, "line": index, "message": message}


def _item_problems(lines: list[dict], items: dict[str, Item]) -> list[dict]:
    problems = []
    for line in lines:
        item = items.get(line["item_code"])
        if item is None:
            problems.append({"item_code": line["item_code"], "code": "unknown_item", "line": line["index"],
                             "message": f"There is no medicine with code {line['item_code']}."})
        elif not item.active:
            problems.append({"item_code": item.code, "code": "inactive_item", "line": line["index"],
                             "message": f"{item.display_name} is no longer stocked (inactive)."})
    return problems


def _allergy_problems(lines: list[dict], items: dict[str, Item], alerts: list[AllergyAlert]) -> list[dict]:
    problems = []
    for line in lines:
        item = items.get(line["item_code"])
        item_alerts = [a for a in alerts if item is not None and a["item_code"] == item.code]
        if not item_alerts:
            continue
        what = "; ".join(f"{a['allergy_substance']} ({a['severity']}"
                         f"{', ' + a['reaction'] if a['reaction'] else ''})" for a in item_alerts)
        problems.append({"item_code": item.code, "code": "allergy", "line": line["index"], "alerts": item_alerts,
                         "message": f"The patient is allergic to {what}: {item.display_name} was not dispensed. "
                                    "Dispense it only with a reason for overriding the alert."})
    return problems


def _upsert_supply(session: Session, values: dict) -> None:
    dialect = session.get_bind().dialect.name
    ins = (postgresql if dialect == "postgresql" else sqlite).insert(PrescriptionSupply).values(**values)
    session.execute(ins.on_conflict_do_nothing(index_elements=["prescription_ref", "prescription_item_id"]))


def _prescription_problems(session: Session, ref: str, lines: list[dict], items: dict[str, Item]) -> list[dict]:
    """Check each line against what remains of its prescription item; locks the
    prescription_supply rows (FOR UPDATE, by id), creating them on first dispense."""
    rx_lines = [ln for ln in lines if ln["prescription_item_id"] is not None and ln["item_code"] in items]
    if not rx_lines:
        return []
    for line in sorted(rx_lines, key=lambda ln: ln["prescription_item_id"]):
        _upsert_supply(session, {"prescription_ref": ref, "prescription_item_id": line["prescription_item_id"],
                                 "item_id": items[line["item_code"]].id,
                                 "prescribed_quantity": line["prescribed_quantity"] or line["quantity"],
                                 "created_at": utcnow()})
    rx_ids = [ln["prescription_item_id"] for ln in rx_lines]
    supplies = {s.prescription_item_id: s for s in session.scalars(
        select(PrescriptionSupply).where(PrescriptionSupply.prescription_ref == ref,
                                         PrescriptionSupply.prescription_item_id.in_(rx_ids))
        .order_by(PrescriptionSupply.id).with_for_update().execution_options(populate_existing=True))}
    given = dict(session.execute(
        select(DispenseLine.prescription_item_id, func.sum(DispenseLine.quantity))
        .join(Dispense, Dispense.id == DispenseLine.dispense_id)
        .where(Dispense.prescription_ref == ref, DispenseLine.prescription_item_id.in_(rx_ids))
        .group_by(DispenseLine.prescription_item_id)).all())
    returned = dict(session.execute(
        select(DispenseLine.prescription_item_id, func.sum(DispenseReturn.quantity))
        .join(DispenseLine, DispenseLine.id == DispenseReturn.dispense_line_id)
        .join(Dispense, Dispense.id == DispenseLine.dispense_id)
        .where(Dispense.prescription_ref == ref, DispenseLine.prescription_item_id.in_(rx_ids))
        .group_by(DispenseLine.prescription_item_id)).all())
    problems = []
    for line in rx_lines:
        rx_id, item = line["prescription_item_id"], items[line["item_code"]]
        supply = supplies[rx_id]
        if supply.item_id != item.id:
            first = session.get(Item, supply.item_id)
            if (first.substance, first.form, first.strength) != (item.substance, item.form, item.strength):
                problems.append({"item_code": item.code, "code": "prescription_mismatch", "line": line["index"],
                                 "message": f"Prescription item {rx_id} was dispensed as {first.display_name}; "
                                            f"{item.display_name} is not the same medicine, form and strength."})
                continue
        if line["prescribed_quantity"] is not None and line["prescribed_quantity"] != supply.prescribed_quantity:
            problems.append({"item_code": item.code, "code": "prescription_mismatch", "line": line["index"],
                             "message": f"Prescription item {rx_id} was recorded with {supply.prescribed_quantity} "
                                        f"prescribed, not {line['prescribed_quantity']}."})
            continue
        already = int(given.get(rx_id) or 0) - int(returned.get(rx_id) or 0)
        remaining = max(supply.prescribed_quantity - already, 0)
        if line["quantity"] > remaining:
            problems.append({"item_code": item.code, "code": "exceeds_prescription", "line": line["index"],
                             "prescribed": supply.prescribed_quantity, "already_dispensed": already,
                             "remaining": remaining,
                             "message": f"{units(supply.prescribed_quantity, item.unit)} of {item.display_name} "
                                        f"were prescribed and {already} already dispensed: at most {remaining} "
                                        f"more, not {line['quantity']}."})
    return problems


def dispense(session: Session, actor: Actor, *, patient_id: Any, prescription_ref: Any, lines: Any,
             partial_reason: Any = None, allergy_override_reason: Any = None,
             admission_id: Any = None) -> DispenseOutcome:
    """Dispense medicines to a patient against a prescription; return the outcome.

    With `admission_id` the dispense is an issue to that admission's ward (recorded on
    the dispense; the ward accepts it with inventory.ward_issues.accept_ward_issue): its
    prescription_ref must then be "admission:<admission_id>" or start with
    "admission:<admission_id>:" (Invalid otherwise).

    `lines`: [{item_code, quantity, prescription_item_id?, prescribed_quantity?}]. Each
    line is taken first-expiry-first-out from unexpired batches with stock. Problems are
    business outcomes, returned with ok False and nothing written:
      - "allergy": an active allergy matches the item (by substance or class) and no
        `allergy_override_reason` was given; with one, the item is dispensed and the
        reason and the alerts are stored and audited ("inventory.allergy_override");
      - "insufficient_stock" {"available"}: a line cannot be supplied in full and no
        `partial_reason` was given; with one, what there is is dispensed and the
        shortfall recorded (still a problem when nothing at all can be supplied);
      - "exceeds_prescription" {"remaining"}: more than the prescription item has left
        (several dispenses per prescription_ref are fine; the first dispense of a
        prescription item fixes its prescribed quantity: `prescribed_quantity`, or the
        quantity then asked for) and "prescription_mismatch";
      - "unknown_item", "inactive_item".
    Raises Invalid for malformed input and NotFound for an unknown patient.

    Locks, in this order: the prescription_supply rows of the lines (FOR UPDATE, by id),
    then every unexpired batch with stock of the items (FOR UPDATE, by id), so stock
    never goes negative and a prescription is never over-supplied when two pharmacists
    dispense at once. Writes dispense, dispense_line (one per batch taken from),
    prescription_supply, stock_movement (reference "dispense:<id>") and audit
    "inventory.dispense".
    """
    errors = _Errors()
    ref = _text(prescription_ref, "prescription_ref", errors, max_len=60, label="Prescription reference")
    clean = _clean_lines(lines, errors)
    partial_reason = _text(partial_reason, "partial_reason", errors, max_len=300, required=False)
    override = _text(allergy_override_reason, "allergy_override_reason", errors, max_len=500, required=False)
    if admission_id is not None:
        admission_id = _whole(admission_id, "admission_id", errors, minimum=1, maximum=MAX_ID, label="Admission")
        if admission_id is not None and ref is not None and not (
                ref == f"admission:{admission_id}" or ref.startswith(f"admission:{admission_id}:")):
            errors.add("prescription_ref", f"An issue to admission {admission_id} needs a prescription reference "
                                           f"starting with admission:{admission_id}.")
    errors.raise_if_any()
    pid = _patient_exists(session, patient_id)
    codes = sorted({ln["item_code"] for ln in clean})
    items = {i.code: i for i in session.scalars(select(Item).where(Item.code.in_(codes)))}
    problems = _item_problems(clean, items)
    usable = {code: item for code, item in items.items() if item.active}
    allergies = list_allergies(session, pid)
    alerts, allergy_ids = _alerts_for(allergies, [usable[c] for c in codes if c in usable])
    if alerts and not override:
        problems += _allergy_problems(clean, usable, alerts)
    today = today_local(session)
    try:
        with session.begin_nested():
            problems += _prescription_problems(session, ref, clean, usable)
            batches = _usable_batches(session, [i.id for i in usable.values()], today, lock=True)
            takes, short, shortfalls = _allocate(clean, usable, batches, partial=partial_reason is not None)
            problems += short
            if not problems and not takes:
                problems += [_short_problem(usable[s["item_code"]], s["requested"], 0, s["line"]) for s in shortfalls]
            if problems:
                raise _Refused()
            outcome = _write_dispense(session, actor, pid, ref, takes, shortfalls,
                                      partial_reason if shortfalls else None,
                                      override if alerts else None, alerts, allergy_ids, admission_id)
    except _Refused:
        problems.sort(key=lambda p: (p.get("line", -1), p["code"]))
        return {"ok": False, "dispense_id": None, "lines": [], "problems": problems, "total_paisa": 0,
                "shortfalls": []}
    return outcome


def _write_dispense(session: Session, actor: Actor, patient_id: int, ref: str,
                    takes: list[tuple[dict, Batch, int]], shortfalls: list[dict], partial_reason: str | None,
                    override: str | None, alerts: list[AllergyAlert], allergy_ids: list[int],
                    admission_id: int | None = None) -> DispenseOutcome:
    record = Dispense(patient_id=patient_id, prescription_ref=ref, admission_id=admission_id,
                      dispensed_by_id=actor.user_id,
                      dispensed_by_name=actor.username[:60], partial_reason=partial_reason,
                      shortfalls=shortfalls or None, allergy_override_reason=override,
                      allergy_alerts=list(alerts) if override else None)
    session.add(record)
    session.flush()
    out_lines, total = [], 0
    for line, batch, quantity in takes:
        amount = quantity * batch.sale_price_paisa
        row = DispenseLine(dispense_id=record.id, item_id=batch.item_id, batch_id=batch.id,
                           prescription_item_id=line["prescription_item_id"], quantity=quantity,
                           unit_price_paisa=batch.sale_price_paisa, amount_paisa=amount)
        session.add(row)
        _movement(session, actor, batch, "dispense", -quantity, f"dispense:{record.id}")
        session.flush()
        total += amount
        out_lines.append(_line_json(row, batch))
    record.total_paisa = total
    session.flush()
    codes = sorted({b.item.code for _, b, _ in takes})
    audit.record(session, actor, "inventory.dispense", "dispense", record.id, patient_id=patient_id,
                 detail={"item_codes": codes, "lines": len(out_lines), "total_paisa": total,
                         "partial": bool(shortfalls), "allergy_override": override is not None,
                         **({"admission_id": admission_id} if admission_id is not None else {})})
    if override is not None:
        audit.record(session, actor, "inventory.allergy_override", "dispense", record.id, patient_id=patient_id,
                     detail={"item_codes": sorted({a["item_code"] for a in alerts}),
                             "allergy_ids": sorted(set(allergy_ids)),
                             "matches": sorted({a["match"] for a in alerts})})
    return {"ok": True, "dispense_id": record.id, "lines": out_lines, "problems": [], "total_paisa": total,
            "shortfalls": shortfalls}


def _line_json(row: DispenseLine, batch: Batch) -> dict:
    return {"dispense_line_id": row.id, "item_code": batch.item.code, "name": batch.item.display_name,
            "batch_no": batch.batch_no, "expiry_date": batch.expiry_date.isoformat(),
            "prescription_item_id": row.prescription_item_id, "quantity": row.quantity,
            "unit_price_paisa": row.unit_price_paisa, "amount_paisa": row.amount_paisa}


def preview_dispense(session: Session, patient_id: Any, lines: Any, *, partial: bool = False) -> dict:
    """What `dispense` would take, without locking or writing: per line the batches in
    first-expiry-first-out order, and the allergy alerts and stock problems.

    {"lines": [{"item_code", "name", "unit", "quantity", "available", "batches":
    [{"batch_no", "expiry_date", "quantity", "unit_price_paisa", "amount_paisa"}]}],
    "alerts": [...], "problems": [...], "total_paisa"}. The real dispense re-checks
    everything under locks. Raises Invalid for malformed lines.
    """
    errors = _Errors()
    clean = _clean_lines(lines, errors)
    errors.raise_if_any()
    pid = _patient_exists(session, patient_id)
    codes = sorted({ln["item_code"] for ln in clean})
    items = {i.code: i for i in session.scalars(select(Item).where(Item.code.in_(codes)))}
    usable = {code: item for code, item in items.items() if item.active}
    alerts, _ = _alerts_for(list_allergies(session, pid), [usable[c] for c in codes if c in usable])
    batches = _usable_batches(session, [i.id for i in usable.values()], today_local(session), lock=False)
    takes, short, _ = _allocate(clean, usable, batches, partial=partial)
    preview, total = [], 0
    for line in clean:
        item = usable.get(line["item_code"])
        taken = [(b, q) for ln, b, q in takes if ln is line]
        total += sum(q * b.sale_price_paisa for b, q in taken)
        preview.append({
            "item_code": line["item_code"], "name": item.display_name if item else None,
            "unit": item.unit if item else None, "quantity": line["quantity"],
            "available": sum(b.quantity_on_hand for b in batches.get(item.id, [])) if item else 0,
            "batches": [{"batch_no": b.batch_no, "expiry_date": b.expiry_date.isoformat(), "quantity": q,
                         "unit_price_paisa": b.sale_price_paisa, "amount_paisa": q * b.sale_price_paisa}
                        for b, q in taken]})
    problems = _item_problems(clean, items) + short
    return {"lines": preview, "alerts": alerts, "problems": problems, "total_paisa": total}


def get_dispense(session: Session, actor: Actor, dispense_id: Any) -> dict:
    """A dispense with its lines (and what was returned of each). Records audit
    "inventory.dispense_read" (it is part of the patient's record). NotFound if absent."""
    record = session.get(Dispense, _as_id(dispense_id, "dispense", "dispense_not_found"))
    if record is None:
        raise NotFound(f"No dispense with id {dispense_id}.", code="dispense_not_found")
    returned = dict(session.execute(
        select(DispenseReturn.dispense_line_id, func.sum(DispenseReturn.quantity))
        .join(DispenseLine, DispenseLine.id == DispenseReturn.dispense_line_id)
        .where(DispenseLine.dispense_id == record.id).group_by(DispenseReturn.dispense_line_id)).all())
    returns = session.scalars(
        select(DispenseReturn).join(DispenseLine, DispenseLine.id == DispenseReturn.dispense_line_id)
        .where(DispenseLine.dispense_id == record.id).order_by(DispenseReturn.id))
    audit.record(session, actor, "inventory.dispense_read", "dispense", record.id, patient_id=record.patient_id)
    lines = []
    for row in record.lines:
        data = _line_json(row, row.batch)
        data["returned_quantity"] = int(returned.get(row.id) or 0)
        lines.append(data)
    return {"id": record.id, "patient_id": record.patient_id, "prescription_ref": record.prescription_ref,
            "dispensed_at": record.dispensed_at, "dispensed_by": record.dispensed_by_name,
            "total_paisa": record.total_paisa, "partial_reason": record.partial_reason,
            "shortfalls": record.shortfalls or [], "allergy_override_reason": record.allergy_override_reason,
            "allergy_alerts": record.allergy_alerts or [], "lines": lines,
            "admission_id": record.admission_id, "ward_accepted_at": record.ward_accepted_at,
            "ward_accepted_by": record.ward_accepted_by_name,
            "returns": [{"return_id": r.id, "dispense_line_id": r.dispense_line_id, "quantity": r.quantity,
                         "amount_paisa": r.amount_paisa, "reason": r.reason, "returned_at": r.returned_at}
                        for r in returns]}


def list_dispenses(session: Session, *, patient_id: int | None = None, limit: int = 20) -> list[Dispense]:
    """The latest dispenses (of one patient), newest first. Reads only."""
    stmt = select(Dispense).order_by(Dispense.id.desc()).limit(limit)
    if patient_id is not None:
        stmt = stmt.where(Dispense.patient_id == patient_id)
    return list(session.scalars(stmt))


# --- returns -----------------------------------------------------------------------------

def return_items(session: Session, actor: Actor, *, dispense_line_id: Any, quantity: Any, reason: Any) -> dict:
    """Take back units of a dispense line into the same batch; return {"return_id",
    "amount_paisa"} (the credit for the bill: quantity x the line's unit price).

    Locks the dispense line (FOR UPDATE) before adding up what was already returned, so
    two returns of one line at once never exceed what was dispensed (Conflict
    `exceeds_dispensed` otherwise), then the batch row to add the stock. Writes
    dispense_return, a return movement (reference "return:<id>") and audit
    "inventory.return".
    """
    errors = _Errors()
    qty = _whole(quantity, "quantity", errors, minimum=1, maximum=MAX_QUANTITY)
    reason = _text(reason, "reason", errors, max_len=200)
    errors.raise_if_any()
    line = session.execute(
        select(DispenseLine).where(DispenseLine.id == _as_id(dispense_line_id, "dispense line", "line_not_found"))
        .with_for_update().execution_options(populate_existing=True)).scalar_one_or_none()
    if line is None:
        raise NotFound(f"No dispense line with id {dispense_line_id}.", code="line_not_found")
    already = int(session.scalar(select(func.coalesce(func.sum(DispenseReturn.quantity), 0))
                                 .where(DispenseReturn.dispense_line_id == line.id)))
    returnable = line.quantity - already
    if qty > returnable:
        message = (f"{line.quantity} were dispensed on this line and {already} already returned: "
                   f"at most {returnable} can be returned.")
        raise Conflict(message, code="exceeds_dispensed", fields={"quantity": [message], "returnable": returnable})
    batch = _lock_batch(session, line.batch_id)
    record = DispenseReturn(dispense_line_id=line.id, quantity=qty, amount_paisa=qty * line.unit_price_paisa,
                            reason=reason, returned_by_id=actor.user_id)
    session.add(record)
    session.flush()
    _movement(session, actor, batch, "return", qty, f"return:{record.id}")
    session.flush()
    patient_id = session.scalar(select(Dispense.patient_id).where(Dispense.id == line.dispense_id))
    audit.record(session, actor, "inventory.return", "dispense_return", record.id, patient_id=patient_id,
                 detail={"dispense_line_id": line.id, "batch_id": batch.id, "quantity": qty,
                         "amount_paisa": record.amount_paisa})
    return {"return_id": record.id, "amount_paisa": record.amount_paisa}
