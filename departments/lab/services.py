"""Laboratory services: the test catalogue, orders, sample collection and rejection,
result entry with flags, verification by a second person, amendments, reports and the
"lab_result_verified" message into the waiting pathway.

The only code that writes the lab tables. Functions flush, never commit. Every change to
an order's items (collection, rejection, results, verification, amendment, cancellation)
first locks the order row (SELECT ... FOR UPDATE), so two people acting on one order
take turns and each decision sees the other's outcome. Every write and every read of
results is audited; audit detail holds ids and codes only (no values, no free text).

Decisions (DESIGN.md asks for them to be written down):
- A sample is one container per sample type per collection: the tests of an order that
  share a container (CBC and ESR in EDTA) share a label.
- Drafts (pending or returned results) may be entered again in place: they were never
  reported. A verified result is never changed: entering a different value is refused
  (409) and `amend_result` adds version n+1, which needs verification again.
- Verification is per order and covers every item whose results are complete; it is
  refused as a whole (same_person) when the verifier entered any of them.
- The message "lab_result_verified" (business key "lab-order:<id>") is enqueued once per
  order, when every live item is verified for the first time (a cancellation can be what
  completes it). Amendments do not send it again; the report shows them.
- Doctors see only verified versions: while an amendment awaits verification they see the
  previous verified value marked "amendment pending".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable

from sqlalchemy import case, exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from departments.lab import rules
from departments.lab.models import (ORDER_STATUSES, PRIORITIES, RANGE_SEXES,
                                    REJECTION_REASONS, RESULT_TYPES, SAMPLE_TYPES, SECTIONS,
                                    LabAnalyte, LabOrder, LabOrderItem, LabReferenceRange,
                                    LabResult, LabSample, LabSampleItem, LabTest)
from hms import audit, events, jobs, settings
from hms.audit import Actor
from hms.auth.models import User
from hms.db import config_of, next_number, utcnow
from hms.errors import Conflict, Forbidden, Invalid, NotFound, MAX_ID, record_id
from hms.patients import services as patients
from hms.patients.models import Patient

ORDER_COUNTER = "lab_order"
SAMPLE_COUNTER = "lab_sample"
ORDER_NO_FORMAT = "L-{n:06d}"
LABEL_FORMAT = "S-{n:06d}"
MESSAGE_NAME = "lab_result_verified"
MESSAGE_JOB = "workflow.deliver_message"
MAX_TESTS_PER_ORDER = 40
MAX_RESULT_ROWS = 500

REPORT_TITLE = settings.declare(
    "lab.report_title", str, "Clinical Laboratory",
    "Heading of lab reports (HTML and PDF), e.g. the laboratory's name.")

ITEM_STATUS_LABELS = {
    "ordered": "Awaiting collection",
    "collected": "Awaiting results",
    "resulted": "Awaiting verification",
    "verified": "Verified",
    "cancelled": "Cancelled",
}
ORDER_STATUS_LABELS = {
    "awaiting_collection": "Awaiting collection",
    "awaiting_results": "Awaiting results",
    "awaiting_verification": "Awaiting verification",
    "verified": "Verified",
    "cancelled": "Cancelled",
}
# Worklist stages: the item status each queue works on.
STAGES = {
    "collection": ("Awaiting collection", "ordered"),
    "results": ("Awaiting results", "collected"),
    "verification": ("Awaiting verification", "resulted"),
    "verified": ("Verified", None),
    "all": ("All orders", None),
}
_CODE_RE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,19}$")


# --------------------------------------------------------------------------- helpers

def _as_id(value: Any, what: str, code: str) -> int:
    return record_id(value, what, code)


def _optional_id(value: Any, name: str, errors: dict) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        errors[name] = ["Must be a positive whole number."]
        return None
    return value


def _text(value: Any, name: str, errors: dict, *, required: bool, max_len: int,
          min_len: int = 1, message: str | None = None) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            errors[name] = [message or "Required."]
        return None
    if not isinstance(value, str):
        errors[name] = ["Must be text."]
        return None
    value = value.strip()
    if len(value) < min_len or len(value) > max_len:
        errors[name] = [message or f"Must be {min_len} to {max_len} characters."]
        return None
    return value


def _decimal(value: Any, name: str, errors: dict) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        errors[name] = ["Must be a number."]
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        errors[name] = ["Must be a number."]
        return None
    if not number.is_finite():
        errors[name] = ["Must be a number."]
        return None
    if abs(number) >= rules.MAX_NUMBER or number != rules.quantize(number, 4):
        errors[name] = ["Use at most 10 digits before and 4 after the decimal point."]
        return None
    return number


def _like_prefix(column, prefix: str):
    escaped = prefix.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return column.like(escaped + "%", escape="/")


def _local_date(session: Session, moment: datetime) -> date:
    return moment.astimezone(config_of(session).tz).date()


def user_names(session: Session, ids: Iterable[int | None]) -> dict[int, str]:
    """Full names of the users with these ids (one query); reads only."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return dict(session.execute(select(User.id, User.full_name).where(User.id.in_(wanted))).all())


# --------------------------------------------------------------------------- catalogue

def create_test(session: Session, actor: Actor, data: dict) -> LabTest:
    """Add a test with its analytes and reference ranges; return it, flushed.

    `data`: code, name, sample_type, section, tariff_code (default "LAB-<CODE>"), active
    (default true), analytes: [{code, name, result_type, units, decimals, options,
    abnormal_options, critical_options, allow_negative, plausible_max, ranges: [{sex,
    min_age_days, max_age_days, low, high, critical_low, critical_high, note}]}].
    Raises Invalid naming every bad field ("analytes.0.ranges.1.low"); Conflict
    `test_exists` when the code or tariff code is taken. Writes audit "lab.test.create".
    """
    if not isinstance(data, dict):
        raise Invalid("Send the test as an object.", fields={"_schema": ["Must be an object."]})
    errors: dict[str, list[str]] = {}
    code = _test_code(data.get("code"), "code", errors)
    name = _text(data.get("name"), "name", errors, required=True, max_len=120, min_len=2)
    sample_type = data.get("sample_type")
    if sample_type not in SAMPLE_TYPES:
        errors["sample_type"] = ["Must be one of: " + ", ".join(SAMPLE_TYPES) + "."]
    section = data.get("section")
    if section not in SECTIONS:
        errors["section"] = ["Must be one of: " + ", ".join(SECTIONS) + "."]
    tariff_code = data.get("tariff_code") or (f"LAB-{code}" if code else None)
    tariff_code = _text(tariff_code, "tariff_code", errors, required=True, max_len=30)
    active = data.get("active", True)
    if not isinstance(active, bool):
        errors["active"] = ["Must be true or false."]
    analytes = data.get("analytes")
    clean_analytes = []
    if not isinstance(analytes, list) or not analytes:
        errors["analytes"] = ["A test reports at least one analyte."]
    else:
        seen: set[str] = set()
        for i, spec in enumerate(analytes):
            clean = _clean_analyte(spec, f"analytes.{i}", errors)
            if clean is None:
                continue
            if clean["code"] in seen:
                errors[f"analytes.{i}.code"] = ["This analyte code is listed twice."]
            seen.add(clean["code"])
            clean_analytes.append(clean)
    if errors:
        raise Invalid("Some fields of the test are not valid.", fields=errors)
    taken = session.execute(select(LabTest.code).where(
        or_(LabTest.code == code, LabTest.tariff_code == tariff_code))).first()
    if taken:
        raise Conflict(f"A test with code {code} or tariff code {tariff_code} exists.", code="test_exists")
    test = LabTest(code=code, name=name, sample_type=sample_type, section=section,
                   tariff_code=tariff_code, active=active)
    session.add(test)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(f"A test with code {code} or tariff code {tariff_code} exists.",
                       code="test_exists") from None
    for position, clean in enumerate(clean_analytes):
        ranges = clean.pop("ranges")
        analyte = LabAnalyte(test_id=test.id, position=position, **clean)
        session.add(analyte)
        session.flush()
        for r in ranges:
            session.add(LabReferenceRange(analyte_id=analyte.id, **r))
    session.flush()
    session.expire(test, ["analytes"])
    audit.record(session, actor, "lab.test.create", "lab_test", test.id,
                 detail={"code": code, "analytes": [a["code"] for a in clean_analytes]})
    return test


def _test_code(value: Any, name: str, errors: dict) -> str | None:
    if not isinstance(value, str) or not _CODE_RE.match(value.strip().upper()):
        errors[name] = ["Use 1 to 20 letters, digits, '-' or '_', like CBC."]
        return None
    return value.strip().upper()


def _clean_analyte(spec: Any, at: str, errors: dict) -> dict | None:
    if not isinstance(spec, dict):
        errors[at] = ["Must be an object."]
        return None
    before = len(errors)
    code = _test_code(spec.get("code"), f"{at}.code", errors)
    name = _text(spec.get("name"), f"{at}.name", errors, required=True, max_len=120)
    result_type = spec.get("result_type", "numeric")
    if result_type not in RESULT_TYPES:
        errors[f"{at}.result_type"] = ["Must be numeric, text or options."]
    units = _text(spec.get("units"), f"{at}.units", errors, required=False, max_len=30)
    decimals = spec.get("decimals", 0)
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 4:
        errors[f"{at}.decimals"] = ["Must be a whole number from 0 to 4."]
    options = spec.get("options")
    lists = {}
    if result_type == "options":
        if not isinstance(options, list) or not options or not all(
                isinstance(o, str) and o.strip() for o in options):
            errors[f"{at}.options"] = ["List the allowed values."]
            options = []
        options = [o.strip() for o in options]
        for key in ("abnormal_options", "critical_options"):
            chosen = spec.get(key) or []
            if not isinstance(chosen, list) or any(o not in options for o in chosen):
                errors[f"{at}.{key}"] = ["Must be some of the options."]
            lists[key] = list(chosen) if isinstance(chosen, list) else None
    elif options:
        errors[f"{at}.options"] = ["Only an options analyte lists options."]
    allow_negative = bool(spec.get("allow_negative", False))
    plausible_max = _decimal(spec.get("plausible_max"), f"{at}.plausible_max", errors)
    ranges = []
    raw_ranges = spec.get("ranges") or []
    if not isinstance(raw_ranges, list):
        errors[f"{at}.ranges"] = ["Must be a list."]
        raw_ranges = []
    if raw_ranges and result_type != "numeric":
        errors[f"{at}.ranges"] = ["Only numeric analytes have reference ranges."]
    for j, r in enumerate(raw_ranges):
        clean = _clean_range(r, f"{at}.ranges.{j}", errors)
        if clean:
            ranges.append(clean)
    if len(errors) > before:
        return None
    return {"code": code, "name": name, "result_type": result_type, "units": units,
            "decimals": decimals, "options": options if result_type == "options" else None,
            "abnormal_options": lists.get("abnormal_options") or None,
            "critical_options": lists.get("critical_options") or None,
            "allow_negative": allow_negative, "plausible_max": plausible_max, "ranges": ranges}


def _clean_range(r: Any, at: str, errors: dict) -> dict | None:
    if not isinstance(r, dict):
        errors[at] = ["Must be an object."]
        return None
    before = len(errors)
    sex = r.get("sex", "any")
    if sex not in RANGE_SEXES:
        errors[f"{at}.sex"] = ["Must be male, female or any."]
    min_age = r.get("min_age_days", 0)
    max_age = r.get("max_age_days")
    if isinstance(min_age, bool) or not isinstance(min_age, int) or min_age < 0:
        errors[f"{at}.min_age_days"] = ["Must be a whole number of days, 0 or more."]
    elif max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int) or max_age <= min_age):
        errors[f"{at}.max_age_days"] = ["Must be a whole number of days above min_age_days."]
    limits = {k: _decimal(r.get(k), f"{at}.{k}", errors)
              for k in ("low", "high", "critical_low", "critical_high")}
    low, high, c_low, c_high = (limits[k] for k in ("low", "high", "critical_low", "critical_high"))
    if low is not None and high is not None and low > high:
        errors[f"{at}.high"] = ["Must not be below low."]
    if c_low is not None and low is not None and c_low > low:
        errors[f"{at}.critical_low"] = ["Must not be above low."]
    if c_high is not None and high is not None and c_high < high:
        errors[f"{at}.critical_high"] = ["Must not be below high."]
    note = _text(r.get("note"), f"{at}.note", errors, required=False, max_len=60)
    if len(errors) > before:
        return None
    return {"sex": sex, "min_age_days": min_age, "max_age_days": max_age, "note": note, **limits}


def set_test_active(session: Session, actor: Actor, code: str, active: bool) -> LabTest:
    """Offer a test for ordering again, or withdraw it (orders already placed stand).
    Writes audit "lab.test.activate" / "lab.test.deactivate" when it changes."""
    test = get_test(session, code, include_inactive=True)
    if test.active != bool(active):
        test.active = bool(active)
        session.flush()
        audit.record(session, actor, "lab.test.activate" if active else "lab.test.deactivate",
                     "lab_test", test.id, detail={"code": test.code})
    return test


def list_tests(session: Session, q: str | None = None, *, include_inactive: bool = False) -> list[LabTest]:
    """The catalogue sorted by code; `q` keeps tests whose code or name starts with it
    (any case). Reads only (the catalogue is not patient data)."""
    stmt = select(LabTest).order_by(LabTest.code)
    if not include_inactive:
        stmt = stmt.where(LabTest.active.is_(True))
    q = (q or "").strip()[:60]
    if q:
        stmt = stmt.where(or_(_like_prefix(LabTest.code, q.upper()), _like_prefix(func.lower(LabTest.name), q.lower())))
    return list(session.scalars(stmt))


def get_test(session: Session, code: str, *, include_inactive: bool = True) -> LabTest:
    """The test with this code (any case), or NotFound `test_not_found`."""
    key = (code or "").strip().upper() if isinstance(code, str) else ""
    test = session.scalar(select(LabTest).where(LabTest.code == key)) if key else None
    if test is None or (not include_inactive and not test.active):
        raise NotFound(f"No lab test with code {code}.", code="test_not_found")
    return test


# --------------------------------------------------------------------------- orders

def create_order(session: Session, actor: Actor, *, patient_id: int, test_codes: list[str],
                 encounter_id: int | None = None, admission_id: int | None = None,
                 priority: str = "routine") -> LabOrder:
    """Order tests for a patient: one item per distinct test code; return the order, flushed.

    Raises NotFound `patient_not_found`; Invalid `unknown_tests` naming every unknown or
    inactive code; Invalid for no codes, a bad priority or id. Locks the order-number
    counter row until the transaction ends (numbers are never reused or counted).
    Writes lab_order, lab_order_item and audit "lab.order.create".
    """
    patient = patients.get_patient(session, actor, patient_id, audit_read=False)
    errors: dict[str, list[str]] = {}
    codes: list[str] = []
    if not isinstance(test_codes, (list, tuple)) or not all(isinstance(c, str) for c in test_codes):
        errors["test_codes"] = ["Must be a list of test codes."]
    else:
        for c in test_codes:
            c = c.strip().upper()
            if c and c not in codes:
                codes.append(c)
        if not codes:
            errors["test_codes"] = ["Choose at least one test."]
        elif len(codes) > MAX_TESTS_PER_ORDER:
            errors["test_codes"] = [f"At most {MAX_TESTS_PER_ORDER} tests in one order."]
    if priority not in PRIORITIES:
        errors["priority"] = ["Must be routine, urgent or stat."]
    encounter_id = _optional_id(encounter_id, "encounter_id", errors)
    admission_id = _optional_id(admission_id, "admission_id", errors)
    if errors:
        raise Invalid("The order is not valid.", fields=errors)
    tests = {t.code: t for t in session.scalars(select(LabTest).where(LabTest.code.in_(codes)))}
    unknown = [c for c in codes if c not in tests or not tests[c].active]
    if unknown:
        raise Invalid("Unknown or inactive lab tests: " + ", ".join(unknown) + ".", code="unknown_tests",
                      fields={"test_codes": ["Unknown or inactive: " + ", ".join(unknown) + "."]})
    number = next_number(session, ORDER_COUNTER)
    order = LabOrder(order_no=ORDER_NO_FORMAT.format(n=number), patient_id=patient.id,
                     encounter_id=encounter_id, admission_id=admission_id, priority=priority,
                     status="awaiting_collection", ordered_at=utcnow(), ordered_by_id=actor.user_id)
    session.add(order)
    session.flush()
    for c in codes:
        session.add(LabOrderItem(order_id=order.id, test_id=tests[c].id, status="ordered"))
    session.flush()
    session.expire(order, ["items"])
    audit.record(session, actor, "lab.order.create", "lab_order", order.id, patient_id=patient.id,
                 detail={"order_no": order.order_no, "tests": codes, "priority": priority,
                         "encounter_id": encounter_id, "admission_id": admission_id})
    return order


def _lock_order(session: Session, order_id: Any) -> LabOrder:
    """Lock the order row (FOR UPDATE) and return the order with its items freshly read."""
    oid = _as_id(order_id, "lab order", "order_not_found")
    if session.execute(select(LabOrder.id).where(LabOrder.id == oid).with_for_update()).scalar_one_or_none() is None:
        raise NotFound(f"No lab order with id {order_id}.", code="order_not_found")
    order = session.execute(select(LabOrder).where(LabOrder.id == oid)
                            .execution_options(populate_existing=True)).scalar_one()
    session.execute(select(LabOrderItem).where(LabOrderItem.order_id == oid)
                    .execution_options(populate_existing=True)).scalars().all()
    return order


def _order_status(items: Iterable[LabOrderItem]) -> str:
    """The least advanced status of the live (not cancelled) items."""
    live = {i.status for i in items if i.status != "cancelled"}
    if not live:
        return "cancelled"
    if "ordered" in live:
        return "awaiting_collection"
    if "collected" in live:
        return "awaiting_results"
    if "resulted" in live:
        return "awaiting_verification"
    return "verified"


def _update_order_status(session: Session, order: LabOrder) -> None:
    """Recompute the order's status; when every live item is verified, have the waiting
    pathway told (once per order: the job key names the order)."""
    order.status = _order_status(order.items)
    session.flush()
    if order.status == "verified":
        jobs.enqueue(session, MESSAGE_JOB, key=f"{MESSAGE_NAME}:{order.business_key}",
                     message_name=MESSAGE_NAME, business_key=order.business_key,
                     payload_json=json.dumps({"order_id": order.id}))


def cancel_item(session: Session, actor: Actor, item_id: int, reason: str) -> LabOrderItem:
    """Cancel one test before its sample is collected.

    Locks the order row. Raises Invalid without a reason; Conflict `already_cancelled`,
    or `already_collected` once a sample was taken for it. Writes the item and audit
    "lab.item.cancel" (the reason is kept on the item, not in the audit detail), then
    publishes the event "lab.item_cancelled" (source_ref "lab_order_item:<id>") in the same
    transaction: the visit's bill reverses the test's charge (journeys/billing.py).
    """
    item = session.get(LabOrderItem, _as_id(item_id, "order item", "item_not_found"))
    if item is None:
        raise NotFound(f"No order item with id {item_id}.", code="item_not_found")
    errors: dict[str, list[str]] = {}
    reason = _text(reason, "reason", errors, required=True, max_len=300, min_len=3,
                   message="Give the reason for cancelling (3 to 300 characters).")
    if errors:
        raise Invalid("Give the reason for cancelling.", fields=errors)
    order = _lock_order(session, item.order_id)
    if item.status == "cancelled":
        raise Conflict(f"{item.test.code} was already cancelled.", code="already_cancelled")
    if item.status != "ordered":
        raise Conflict(f"The sample for {item.test.code} has been collected; the test can no longer "
                       "be cancelled.", code="already_collected")
    item.status = "cancelled"
    item.cancelled_at = utcnow()
    item.cancelled_by_id = actor.user_id
    item.cancel_reason = reason
    session.flush()
    _update_order_status(session, order)
    audit.record(session, actor, "lab.item.cancel", "lab_order_item", item.id, patient_id=order.patient_id,
                 detail={"order_id": order.id, "test": item.test.code})
    events.publish(session, actor, "lab.item_cancelled", source_ref=f"lab_order_item:{item.id}",
                   reason=reason, patient_id=order.patient_id)
    return item


# --------------------------------------------------------------------------- samples

@dataclass
class CollectionOutcome:
    """What one collection did: samples taken, samples rejected, items still awaiting."""

    collected: list[LabSample] = field(default_factory=list)
    rejected: list[LabSample] = field(default_factory=list)
    pending: int = 0

    @property
    def labels(self) -> list[str]:
        return [s.label for s in (self.collected or self.rejected)]


def _new_label(session: Session, label: str | None) -> str:
    if label is not None:
        if session.scalar(select(LabSample.id).where(LabSample.label == label)) is not None:
            raise Conflict(f"Label {label} is already on another sample.", code="label_taken",
                           fields={"label": ["This label is already on another sample."]})
        return label
    return LABEL_FORMAT.format(n=next_number(session, SAMPLE_COUNTER))


def _groups(items: list[LabOrderItem]) -> dict[str, list[LabOrderItem]]:
    groups: dict[str, list[LabOrderItem]] = {}
    for item in items:
        groups.setdefault(item.test.sample_type, []).append(item)
    return groups


def record_collection(session: Session, actor: Actor, order_id: int, *, collected: bool,
                      rejection_reason: str | None = None, label: str | None = None,
                      note: str | None = None) -> CollectionOutcome:
    """Record the sample collection of an order, or its rejection.

    collected=True: every item awaiting collection gets a sample, one container per
    sample type, labelled from the sample counter ("S-000001") unless `label` (a
    pre-printed label) is given for a collection that needs exactly one container.
    collected=False (needs `rejection_reason`): the order's samples that have no results
    yet are rejected and their items go back to awaiting collection; when none was
    collected, the rejected attempt (drawn but unusable) is recorded as a rejected sample.

    Locks the order row (and the sample counter when numbering). Raises Invalid (reason,
    label), Conflict `nothing_to_collect` / `nothing_to_reject` / `label_taken`. Writes
    lab_sample, lab_sample_item, the items and audit "lab.sample.collect" / "lab.sample.reject".
    """
    errors: dict[str, list[str]] = {}
    label = _text(label, "label", errors, required=False, max_len=40)
    note = _text(note, "note", errors, required=False, max_len=300)
    if not collected and rejection_reason not in REJECTION_REASONS:
        errors["rejection_reason"] = ["Choose why the sample is rejected: " + ", ".join(REJECTION_REASONS) + "."]
    if errors:
        raise Invalid("The collection is not valid.", fields=errors)
    order = _lock_order(session, order_id)
    outcome = CollectionOutcome()
    now = utcnow()
    if collected:
        waiting = [i for i in order.items if i.status == "ordered"]
        if not waiting:
            raise Conflict("Nothing on this order is awaiting collection.", code="nothing_to_collect")
        groups = _groups(waiting)
        if label is not None and len(groups) > 1:
            kinds = ", ".join(SAMPLE_TYPES[k] for k in groups)
            raise Invalid("This collection needs more than one container.", fields={
                "label": [f"This order needs {len(groups)} containers ({kinds}); leave the label empty "
                          "to number them."]})
        for sample_type, items in groups.items():
            sample = LabSample(order_id=order.id, label=_new_label(session, label), sample_type=sample_type,
                               collected_at=now, collected_by_id=actor.user_id)
            session.add(sample)
            session.flush()
            for item in items:
                item.status, item.sample_id, item.collected_at = "collected", sample.id, now
                session.add(LabSampleItem(sample_id=sample.id, item_id=item.id))
            outcome.collected.append(sample)
            audit.record(session, actor, "lab.sample.collect", "lab_sample", sample.id, patient_id=order.patient_id,
                         detail={"order_id": order.id, "label": sample.label, "items": [i.id for i in items]})
    else:
        rejectable = _rejectable_samples(session, order)
        if rejectable:
            for sample in rejectable:
                _reject(session, actor, order, sample, rejection_reason, note, now)
                outcome.rejected.append(sample)
        else:
            waiting = [i for i in order.items if i.status == "ordered"]
            if not waiting:
                raise Conflict("No sample of this order can be rejected: results were entered or "
                               "nothing was collected.", code="nothing_to_reject")
            for sample_type, items in _groups(waiting).items():
                sample = LabSample(order_id=order.id, label=_new_label(session, None), sample_type=sample_type,
                                   collected_at=now, collected_by_id=actor.user_id, rejected_at=now,
                                   rejected_by_id=actor.user_id, rejection_reason=rejection_reason,
                                   rejection_note=note)
                session.add(sample)
                session.flush()
                for item in items:
                    session.add(LabSampleItem(sample_id=sample.id, item_id=item.id))
                outcome.rejected.append(sample)
                audit.record(session, actor, "lab.sample.reject", "lab_sample", sample.id,
                             patient_id=order.patient_id,
                             detail={"order_id": order.id, "label": sample.label, "reason": rejection_reason,
                                     "items": [i.id for i in items]})
    session.flush()
    _update_order_status(session, order)
    outcome.pending = sum(1 for i in order.items if i.status == "ordered")
    return outcome


def rejectable_sample_ids(session: Session, order: LabOrder) -> set[int]:
    """Ids of the order's samples that may still be rejected (no results entered). Reads only."""
    return {s.id for s in _rejectable_samples(session, order)}


def _rejectable_samples(session: Session, order: LabOrder) -> list[LabSample]:
    """Current samples whose items are all awaiting results with no result entered."""
    by_sample: dict[int, list[LabOrderItem]] = {}
    for item in order.items:
        if item.sample_id is not None:
            by_sample.setdefault(item.sample_id, []).append(item)
    with_results = _items_with_results(session, [i.id for i in order.items])
    out = []
    for sample_id, items in by_sample.items():
        if all(i.status == "collected" and i.id not in with_results for i in items):
            out.append(session.get(LabSample, sample_id))
    return sorted(out, key=lambda s: s.id)


def _items_with_results(session: Session, item_ids: list[int]) -> set[int]:
    if not item_ids:
        return set()
    return set(session.scalars(select(LabResult.item_id).where(LabResult.item_id.in_(item_ids)).distinct()))


def _reject(session: Session, actor: Actor, order: LabOrder, sample: LabSample, reason: str,
            note: str | None, now: datetime) -> None:
    sample.rejected_at, sample.rejected_by_id = now, actor.user_id
    sample.rejection_reason, sample.rejection_note = reason, note
    items = [i for i in order.items if i.sample_id == sample.id]
    for item in items:
        item.status, item.sample_id, item.collected_at = "ordered", None, None
    session.flush()
    audit.record(session, actor, "lab.sample.reject", "lab_sample", sample.id, patient_id=order.patient_id,
                 detail={"order_id": order.id, "label": sample.label, "reason": reason,
                         "items": [i.id for i in items]})


def reject_sample(session: Session, actor: Actor, sample_id: int, reason: str,
                  note: str | None = None) -> LabSample:
    """Reject one collected sample (haemolysed, clotted ...): its items go back to
    awaiting collection for a new sample; the rejected sample and its reason are kept.

    Locks the order row. Raises Invalid for an unknown reason; Conflict `already_rejected`,
    or `results_entered` when results were entered from it (amend those instead).
    Writes the sample, its items and audit "lab.sample.reject".
    """
    errors: dict[str, list[str]] = {}
    if reason not in REJECTION_REASONS:
        errors["rejection_reason"] = ["Choose why the sample is rejected: " + ", ".join(REJECTION_REASONS) + "."]
    note = _text(note, "note", errors, required=False, max_len=300)
    sample = session.get(LabSample, _as_id(sample_id, "sample", "sample_not_found"))
    if sample is None:
        raise NotFound(f"No sample with id {sample_id}.", code="sample_not_found")
    if errors:
        raise Invalid("The rejection is not valid.", fields=errors)
    order = _lock_order(session, sample.order_id)
    session.refresh(sample)
    if sample.rejected_at is not None:
        raise Conflict(f"Sample {sample.label} was already rejected.", code="already_rejected")
    items = [i for i in order.items if i.sample_id == sample.id]
    if not items or any(i.status != "collected" for i in items) or _items_with_results(session, [i.id for i in items]):
        raise Conflict(f"Results were entered from sample {sample.label}; it can no longer be rejected.",
                       code="results_entered")
    _reject(session, actor, order, sample, reason, note, utcnow())
    _update_order_status(session, order)
    return sample


# --------------------------------------------------------------------------- results

def _results_of(session: Session, item_ids: list[int]) -> dict[tuple[int, int], list[LabResult]]:
    """Every version per (item, analyte), oldest first (one query)."""
    found: dict[tuple[int, int], list[LabResult]] = {}
    if not item_ids:
        return found
    rows = session.scalars(select(LabResult).where(LabResult.item_id.in_(item_ids))
                           .order_by(LabResult.item_id, LabResult.analyte_id, LabResult.version)
                           .execution_options(populate_existing=True))
    for r in rows:
        found.setdefault((r.item_id, r.analyte_id), []).append(r)
    return found


def _item_status(item: LabOrderItem, results: dict[tuple[int, int], list[LabResult]]) -> str:
    """Status of a collected item from its latest versions: all verified -> verified; all
    entered (some awaiting verification) -> resulted; otherwise collected."""
    if item.status in ("ordered", "cancelled"):
        return item.status
    latest = [results.get((item.id, a.id), [None])[-1] for a in item.test.analytes]
    if any(r is None or r.status == "returned" for r in latest):
        return "collected"
    if any(r.status == "pending" for r in latest):
        return "resulted"
    return "verified"


def _context(session: Session, order: LabOrder, item: LabOrderItem) -> tuple[str | None, int | None]:
    """The patient's sex and age in days at collection (the reference-range key)."""
    patient = session.get(Patient, order.patient_id)
    when = item.collected_at or utcnow()
    return patient.sex, rules.age_in_days(patient.date_of_birth, _local_date(session, when))


def _apply_reading(result: LabResult, analyte: LabAnalyte, reading: rules.Reading,
                   sex: str | None, age_days: int | None) -> None:
    rng = rules.pick_range(analyte.ranges, sex, age_days) if analyte.result_type == "numeric" else None
    result.value_text = reading.text
    result.value_num = reading.number
    result.flag = rules.flag_for(analyte, reading, rng)
    result.units = analyte.units
    result.ref_low = rng.low if rng else None
    result.ref_high = rng.high if rng else None
    result.critical_low = rng.critical_low if rng else None
    result.critical_high = rng.critical_high if rng else None
    if analyte.result_type == "options" and (analyte.abnormal_options or analyte.critical_options):
        normal = [o for o in (analyte.options or []) if o not in (analyte.abnormal_options or [])
                  and o not in (analyte.critical_options or [])]
        result.ref_text = ", ".join(normal)[:80] or None
    else:
        result.ref_text = rules.range_text(result.ref_low, result.ref_high, analyte.decimals) or None


@dataclass
class EntryOutcome:
    saved: list[LabResult]
    unchanged: int
    complete: bool


def enter_results(session: Session, actor: Actor, order_id: int, rows: list[dict]) -> EntryOutcome:
    """Enter results: rows of {test_code, analyte_code, value}; some analytes may wait.

    A value is read by the analyte's type (rules.parse_value); the flag comes from the
    reference range for the patient's sex and age on the day of collection. A draft is
    replaced in place; a verified result is never overwritten: the same value again is
    ignored, a different one refused with Conflict `result_verified` (amend it instead).
    All rows are checked before anything is written: Invalid names each bad row
    ("results.2.value"). Locks the order row. Writes lab_result, the items' status and
    audit "lab.results.enter" per item.
    """
    if not isinstance(rows, list) or not rows:
        raise Invalid("Enter at least one result.", fields={"results": ["Enter at least one result."]})
    if len(rows) > MAX_RESULT_ROWS:
        raise Invalid("Too many results at once.", fields={"results": [f"At most {MAX_RESULT_ROWS} rows."]})
    order = _lock_order(session, order_id)
    items = {i.test.code: i for i in order.items}
    results = _results_of(session, [i.id for i in order.items])
    errors: dict[str, list[str]] = {}
    conflicts: dict[str, list[str]] = {}
    planned: list[tuple[LabOrderItem, LabAnalyte, rules.Reading, LabResult | None]] = []
    seen: set[tuple[str, str]] = set()
    unchanged = 0
    for n, row in enumerate(rows):
        at = f"results.{n}"
        if not isinstance(row, dict):
            errors[at] = ["Must be an object with test_code, analyte_code and value."]
            continue
        test_code = str(row.get("test_code") or "").strip().upper()
        analyte_code = str(row.get("analyte_code") or "").strip().upper()
        item = items.get(test_code)
        if item is None:
            errors[f"{at}.test_code"] = [f"{test_code or 'This test'} is not on this order."]
            continue
        if item.status == "cancelled":
            errors[f"{at}.test_code"] = [f"{test_code} was cancelled."]
            continue
        if item.status == "ordered":
            errors[f"{at}.test_code"] = [f"The sample for {test_code} has not been collected."]
            continue
        analyte = next((a for a in item.test.analytes if a.code == analyte_code), None)
        if analyte is None:
            errors[f"{at}.analyte_code"] = [f"{test_code} has no analyte {analyte_code or '(blank)'}."]
            continue
        if (test_code, analyte_code) in seen:
            errors[f"{at}.analyte_code"] = [f"{test_code} {analyte_code} is entered twice."]
            continue
        seen.add((test_code, analyte_code))
        try:
            reading = rules.parse_value(analyte, row.get("value"))
        except ValueError as exc:
            errors[f"{at}.value"] = [str(exc)]
            continue
        current = results.get((item.id, analyte.id), [None])[-1]
        if current is not None and current.status == "verified":
            if current.value_text == reading.text:
                unchanged += 1
            else:
                conflicts[f"{at}.value"] = [f"{test_code} {analyte_code} is verified ({current.value_text}); "
                                            "amend it with a reason instead of entering it again."]
            continue
        planned.append((item, analyte, reading, current))
    if conflicts and not errors:
        first = next(iter(conflicts.values()))[0]
        raise Conflict(first, code="result_verified", fields=conflicts)
    if errors:
        errors.update(conflicts)
        raise Invalid("Some results are not valid.", fields=errors)
    now = utcnow()
    saved: list[LabResult] = []
    by_item: dict[int, list[LabResult]] = {}
    for item, analyte, reading, current in planned:
        sex, age_days = _context(session, order, item)
        result = current if current is not None else LabResult(
            item_id=item.id, analyte_id=analyte.id, version=1)
        _apply_reading(result, analyte, reading, sex, age_days)
        result.status, result.entered_at, result.entered_by_id = "pending", now, actor.user_id
        if current is None:
            session.add(result)
            results[(item.id, analyte.id)] = [result]
        saved.append(result)
        by_item.setdefault(item.id, []).append(result)
    session.flush()
    for item in order.items:
        item.status = _item_status(item, results)
    _update_order_status(session, order)
    for item_id, item_results in by_item.items():
        audit.record(session, actor, "lab.results.enter", "lab_order_item", item_id, patient_id=order.patient_id,
                     detail={"order_id": order.id, "results": [r.id for r in item_results],
                             "analytes": [r.analyte.code for r in item_results]})
    complete = all(i.status in ("resulted", "verified", "cancelled") for i in order.items)
    return EntryOutcome(saved=saved, unchanged=unchanged, complete=complete)


@dataclass
class VerifyOutcome:
    verified_items: list[int]
    returned_items: list[int]
    all_verified: bool
    critical: bool


def verify_order(session: Session, actor: Actor, order_id: int, *, approve: bool,
                 comment: str | None = None) -> VerifyOutcome:
    """A pathologist approves (or sends back with a comment) the results awaiting
    verification: every item of the order whose results are complete.

    Refused with Forbidden `not_pathologist`, or `same_person` when approving results the
    verifier entered (another pathologist must verify them); Invalid without a comment
    when sending back; Conflict `nothing_to_verify`. Locks the order row. Writes the
    results (verified_at/by, or returned with the comment), the items (verified_at the
    first time), audit "lab.results.verify" / "lab.results.return" per item, and, once the
    whole order is verified, the job that tells the waiting pathway.
    """
    if not actor.has_role("pathologist"):
        raise Forbidden("Only a pathologist can verify lab results.", code="not_pathologist")
    errors: dict[str, list[str]] = {}
    comment = _text(comment, "comment", errors, required=not approve, max_len=1000,
                    message="Say what is wrong, for the person who enters the results again."
                    if not approve else None)
    if errors:
        raise Invalid("Give a comment when sending results back.", fields=errors)
    order = _lock_order(session, order_id)
    results = _results_of(session, [i.id for i in order.items])
    ready = [i for i in order.items if i.status == "resulted"]
    pending = {i.id: [r for a in i.test.analytes
                      for r in [results.get((i.id, a.id), [None])[-1]] if r is not None and r.status == "pending"]
               for i in ready}
    if not any(pending.values()):
        raise Conflict("No results of this order are awaiting verification.", code="nothing_to_verify")
    now = utcnow()
    if approve:
        own = sorted({i.test.code for i in ready if any(
            r.entered_by_id is not None and r.entered_by_id == actor.user_id for r in pending[i.id])})
        if own:
            raise Forbidden(f"You entered the results of {', '.join(own)} on this order; another "
                            "pathologist must verify them.", code="same_person")
    for item in ready:
        for r in pending[item.id]:
            if approve:
                r.status, r.verified_at, r.verified_by_id = "verified", now, actor.user_id
            else:
                r.status, r.review_comment = "returned", comment
        if approve:
            item.status = "verified"
            item.verified_at = item.verified_at or now
        else:
            item.status = "collected"
    if approve and comment:
        _add_report_comment(order, comment)
    session.flush()
    _update_order_status(session, order)
    for item in ready:
        audit.record(session, actor, "lab.results.verify" if approve else "lab.results.return",
                     "lab_order_item", item.id, patient_id=order.patient_id,
                     detail={"order_id": order.id, "results": [r.id for r in pending[item.id]]})
    critical = any(r.critical for versions in results.values() for r in versions[-1:]
                   if r.status == "verified")
    return VerifyOutcome(verified_items=[i.id for i in ready] if approve else [],
                         returned_items=[] if approve else [i.id for i in ready],
                         all_verified=order.status == "verified", critical=critical)


def _add_report_comment(order: LabOrder, comment: str) -> None:
    """Add an approving pathologist's comment to the report (earlier ones are kept while
    they fit; the newest is always kept whole)."""
    comments = [c for c in (order.report_comment or "").split("\n") if c and c != comment] + [comment]
    while len("\n".join(comments)) > 2000:
        comments.pop(0)
    order.report_comment = "\n".join(comments)


def amend_result(session: Session, actor: Actor, result_id: int, *, value: Any, reason: str) -> LabResult:
    """Correct a verified result: version n+1 with the new value and the reason, awaiting
    verification again (the verified version is kept unchanged and listed on the report).

    Locks the order row. Raises Invalid (value, reason, same value); Conflict
    `not_current` when a later version exists, `not_verified` when the result is a draft
    (enter it again instead). Writes the new lab_result, the item (back to awaiting
    verification) and audit "lab.result.amend".
    """
    result = session.get(LabResult, _as_id(result_id, "result", "result_not_found"))
    if result is None:
        raise NotFound(f"No lab result with id {result_id}.", code="result_not_found")
    errors: dict[str, list[str]] = {}
    reason = _text(reason, "reason", errors, required=True, max_len=500, min_len=3,
                   message="Give the reason for the amendment (3 to 500 characters).")
    item = session.get(LabOrderItem, result.item_id)
    order = _lock_order(session, item.order_id)
    results = _results_of(session, [item.id])
    versions = results[(item.id, result.analyte_id)]
    current = versions[-1]
    analyte = current.analyte
    try:
        reading = rules.parse_value(analyte, value)
    except ValueError as exc:
        errors["value"] = [str(exc)]
        reading = None
    if current.id != result.id:
        raise Conflict(f"Version {result.version} is not the latest; the latest is version {current.version}.",
                       code="not_current")
    if current.status != "verified":
        raise Conflict("This result is not verified yet: correct it by entering it again.", code="not_verified")
    if reading is not None and reading.text == current.value_text:
        errors["value"] = ["The amended value is the same as the verified one."]
    if errors:
        raise Invalid("The amendment is not valid.", fields=errors)
    sex, age_days = _context(session, order, item)
    new = LabResult(item_id=item.id, analyte_id=analyte.id, version=current.version + 1, status="pending",
                    entered_at=utcnow(), entered_by_id=actor.user_id, amends_id=current.id, amend_reason=reason)
    _apply_reading(new, analyte, reading, sex, age_days)
    session.add(new)
    session.flush()
    versions.append(new)
    item.status = _item_status(item, results)
    _update_order_status(session, order)
    audit.record(session, actor, "lab.result.amend", "lab_result", new.id, patient_id=order.patient_id,
                 detail={"order_id": order.id, "item_id": item.id, "analyte": analyte.code,
                         "version": new.version, "amends": current.id})
    return new


# --------------------------------------------------------------------------- reads

def _load_order(session: Session, order_id: Any) -> LabOrder:
    order = session.get(LabOrder, _as_id(order_id, "lab order", "order_not_found"))
    if order is None:
        raise NotFound(f"No lab order with id {order_id}.", code="order_not_found")
    return order


def get_order(session: Session, order_id: int) -> LabOrder:
    """The order, or NotFound `order_not_found`. Takes no locks; not audited by itself."""
    return _load_order(session, order_id)


def _samples_of(session: Session, order_id: int) -> list[LabSample]:
    return list(session.scalars(select(LabSample).where(LabSample.order_id == order_id).order_by(LabSample.id)))


def order_detail(session: Session, actor: Actor, order_id: int, *, include_drafts: bool,
                 action: str = "lab.order.read") -> dict:
    """Everything shown about an order: patient, items with TAT, samples and results.

    With include_drafts (lab staff) each analyte shows its latest version, verified or
    not; without (doctors, nurses, the report) only verified versions exist: an item is
    reported once verified, and while an amendment awaits verification the previous
    verified value is shown with `amendment_pending`. Reads only; records audit `action`.
    """
    order = _load_order(session, order_id)
    patient = session.get(Patient, order.patient_id)
    results = _results_of(session, [i.id for i in order.items])
    samples = _samples_of(session, order.id)
    sample_items: dict[int, list[int]] = {}
    for s_id, i_id in session.execute(select(LabSampleItem.sample_id, LabSampleItem.item_id).where(
            LabSampleItem.sample_id.in_([s.id for s in samples] or [0]))):
        sample_items.setdefault(s_id, []).append(i_id)
    user_ids: set[int | None] = {order.ordered_by_id}
    items = []
    for item in order.items:
        rows = []
        for analyte in item.test.analytes:
            versions = results.get((item.id, analyte.id), [])
            visible = versions if include_drafts else [r for r in versions if r.status == "verified"]
            shown = visible[-1] if visible else None
            latest = versions[-1] if versions else None
            user_ids.update(v for r in versions for v in (r.entered_by_id, r.verified_by_id))
            rows.append({
                "analyte": analyte, "result": shown, "versions": visible,
                "amended": shown is not None and shown.version > 1,
                "amendment_pending": latest is not None and latest.status != "verified"
                and any(r.status == "verified" for r in versions),
            })
        reportable = item.verified_at is not None
        verified = [r["result"] for r in rows if r["result"] is not None and r["result"].status == "verified"]
        items.append({
            "item": item, "test": item.test, "status": item.status,
            "status_label": ITEM_STATUS_LABELS[item.status], "sample": item.sample,
            "results": rows if (include_drafts or reportable) else [],
            "reportable": reportable,
            "critical": any(r.critical for r in verified),
            "abnormal": any(r.flag for r in verified),
            "amended": any(r["amended"] for r in rows) and (include_drafts or reportable),
            "verified_by_ids": sorted({r.verified_by_id for r in verified if r.verified_by_id}),
            "last_verified_at": max((r.verified_at for r in verified), default=None),
            "tat_minutes": rules.tat_minutes(order.ordered_at, item.verified_at),
            "collection_tat_minutes": rules.tat_minutes(order.ordered_at, item.collected_at),
            "lab_tat_minutes": rules.tat_minutes(item.collected_at, item.verified_at),
        })
        user_ids.add(item.cancelled_by_id)
    for s in samples:
        user_ids.update((s.collected_by_id, s.rejected_by_id))
    audit.record(session, actor, action, "lab_order", order.id, patient_id=order.patient_id,
                 detail={"drafts": include_drafts})
    return {
        "order": order, "patient": patient, "items": items,
        "samples": [{"sample": s, "item_ids": sorted(sample_items.get(s.id, []))} for s in samples],
        "status_label": ORDER_STATUS_LABELS[order.status],
        "critical": any(i["critical"] for i in items),
        "reportable": any(i["reportable"] for i in items),
        "names": user_names(session, user_ids),
        "age": patients.age_text(patient, patients.local_today(session)),
        "title": settings.get(session, REPORT_TITLE),
    }


def report(session: Session, actor: Actor, order_id: int) -> dict:
    """The report of an order: verified results only (see order_detail). Audited as
    "lab.report.read"."""
    return order_detail(session, actor, order_id, include_drafts=False, action="lab.report.read")


def list_orders(session: Session, actor: Actor, *, patient_id: int | None = None, status: str | None = None,
                page: int = 1, size: int = 25) -> tuple[list[LabOrder], int]:
    """Orders, newest first, optionally of one patient and in one status. Reads only;
    records audit "lab.order.list" (with the patient when filtered by one)."""
    stmt = select(LabOrder)
    if patient_id is not None:
        stmt = stmt.where(LabOrder.patient_id == _as_id(patient_id, "patient", "patient_not_found"))
    if status is not None:
        if status not in ORDER_STATUSES:
            raise Invalid("Unknown order status.", fields={"status": ["Must be one of: " + ", ".join(ORDER_STATUSES) + "."]})
        stmt = stmt.where(LabOrder.status == status)
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    orders = list(session.scalars(stmt.order_by(LabOrder.ordered_at.desc(), LabOrder.id.desc())
                                  .limit(size).offset((max(page, 1) - 1) * size)))
    audit.record(session, actor, "lab.order.list", "lab_order", None, patient_id=patient_id,
                 detail={"status": status, "count": len(orders)})
    return orders, total


def worklist(session: Session, actor: Actor, *, stage: str = "collection", priority: str | None = None,
             q: str | None = None, page: int = 1, size: int = 25) -> tuple[list[dict], int]:
    """The lab's queue: orders with an item at `stage` (collection, results, verification),
    STAT and urgent first, oldest first; "verified" and "all" list newest first. `q`
    finds an order number, an MRN or a sample label exactly. Reads only; records audit
    "lab.worklist.read"."""
    if stage not in STAGES:
        raise Invalid("Unknown worklist stage.", fields={"stage": ["Must be one of: " + ", ".join(STAGES) + "."]})
    if priority is not None and priority not in PRIORITIES:
        raise Invalid("Unknown priority.", fields={"priority": ["Must be routine, urgent or stat."]})
    stmt = select(LabOrder, Patient).join(Patient, Patient.id == LabOrder.patient_id)
    item_status = STAGES[stage][1]
    if item_status:
        stmt = stmt.where(exists().where(LabOrderItem.order_id == LabOrder.id, LabOrderItem.status == item_status))
    elif stage == "verified":
        stmt = stmt.where(LabOrder.status == "verified")
    if priority:
        stmt = stmt.where(LabOrder.priority == priority)
    q = (q or "").strip()[:60]
    if q:
        forms = sorted({q, q.upper()})
        stmt = stmt.where(or_(LabOrder.order_no.in_(forms), Patient.mrn.in_(forms),
                              LabOrder.id.in_(select(LabSample.order_id).where(LabSample.label.in_(forms)))))
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    if item_status:
        rank = case({"stat": 0, "urgent": 1}, value=LabOrder.priority, else_=2)
        stmt = stmt.order_by(rank, LabOrder.ordered_at, LabOrder.id)
    else:
        stmt = stmt.order_by(LabOrder.ordered_at.desc(), LabOrder.id.desc())
    rows = session.execute(stmt.limit(size).offset((max(page, 1) - 1) * size)).all()
    critical_items = _critical_item_ids(session, [i.id for o, _ in rows for i in o.items])
    out = [{"order": o, "patient": p, "critical": any(i.id in critical_items for i in o.items),
            "status_label": ORDER_STATUS_LABELS[o.status]} for o, p in rows]
    audit.record(session, actor, "lab.worklist.read", "lab_order", None,
                 detail={"stage": stage, "count": len(out)})
    return out, total


def _critical_item_ids(session: Session, item_ids: list[int]) -> set[int]:
    if not item_ids:
        return set()
    return set(session.scalars(select(LabResult.item_id).where(
        LabResult.item_id.in_(item_ids), LabResult.status == "verified",
        LabResult.flag.in_(("LL", "HH", "AA"))).distinct()))


def patient_results(session: Session, actor: Actor, patient_id: int, *, page: int = 1,
                    size: int = 25) -> tuple[list[dict], int]:
    """Verified results of a patient, by order (newest first): one row per analyte with
    the latest verified version. Orders without a verified item are left out. Reads
    only; records audit "lab.results.read"."""
    patient = patients.get_patient(session, actor, patient_id, audit_read=False)
    stmt = select(LabOrder).where(LabOrder.patient_id == patient.id, exists().where(
        LabOrderItem.order_id == LabOrder.id, LabOrderItem.verified_at.is_not(None)))
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    orders = list(session.scalars(stmt.order_by(LabOrder.ordered_at.desc(), LabOrder.id.desc())
                                  .limit(size).offset((max(page, 1) - 1) * size)))
    item_ids = [i.id for o in orders for i in o.items if i.verified_at is not None]
    results = _results_of(session, item_ids)
    out = []
    for order in orders:
        for item in order.items:
            if item.verified_at is None:
                continue
            for analyte in item.test.analytes:
                versions = results.get((item.id, analyte.id), [])
                verified = [r for r in versions if r.status == "verified"]
                if not verified:
                    continue
                out.append({"order": order, "item": item, "analyte": analyte, "result": verified[-1],
                            "amendment_pending": versions[-1].status != "verified"})
    audit.record(session, actor, "lab.results.read", "patient", patient.id, patient_id=patient.id,
                 detail={"orders": [o.id for o in orders]})
    return out, total


def list_verified_results_for_patient(session: Session, actor: Actor, patient_id: int, *,
                                      orders: int = 50) -> list[dict]:
    """The patient's verified results (latest `orders` orders with any) as plain JSON-ready
    rows, for a patient record page. Reads only; audited like patient_results."""
    rows, _total = patient_results(session, actor, patient_id, page=1, size=orders)
    out = []
    for row in rows:
        r: LabResult = row["result"]
        out.append({
            "order_id": row["order"].id, "order_no": row["order"].order_no, "order_item_id": row["item"].id,
            "test_code": row["item"].test.code, "test_name": row["item"].test.name,
            "analyte_code": row["analyte"].code, "analyte_name": row["analyte"].name,
            "value": r.value_text, "units": r.units, "flag": r.flag, "critical": r.critical,
            "reference_range": r.ref_text, "version": r.version, "amended": r.version > 1,
            "amend_reason": r.amend_reason, "amendment_pending": row["amendment_pending"],
            "collected_at": row["item"].collected_at.isoformat() if row["item"].collected_at else None,
            "verified_at": r.verified_at.isoformat() if r.verified_at else None,
        })
    return out


def order_summary(session: Session, actor: Actor, order_id: int) -> dict:
    """A small summary for a pathway: status, items (no result values), whether all are
    verified and any verified result is critical. Reads only; audit "lab.order.summary"."""
    order = _load_order(session, order_id)
    critical = _critical_item_ids(session, [i.id for i in order.items])
    items = [{
        "order_item_id": i.id, "test_code": i.test.code, "name": i.test.name, "tariff_code": i.test.tariff_code,
        "status": i.status, "sample_label": i.sample.label if i.sample else None, "critical": i.id in critical,
        "analytes": [{"code": a.code, "name": a.name, "result_type": a.result_type, "units": a.units,
                      "options": list(a.options or [])} for a in i.test.analytes],
    } for i in order.items]
    audit.record(session, actor, "lab.order.summary", "lab_order", order.id, patient_id=order.patient_id)
    return {"order_id": order.id, "order_no": order.order_no, "status": order.status, "items": items,
            "all_verified": order.status == "verified", "critical": bool(critical)}


# Items not final yet: a discharge waits for them (verified and cancelled are final; a
# rejected sample sends its items back to "ordered").
PENDING_ITEM_STATUSES = ("ordered", "collected", "resulted")


def pending_samples_for_admission(session: Session, admission_id: int) -> list[dict]:
    """What the lab still holds an admission's discharge for: one blocker per order of
    the admission with items not yet final, [{"kind": "lab_pending", "id": order_id,
    "text": "Lab order L-000045: CBC awaiting collection, LFT awaiting results"}], oldest
    order first. Empty when everything is verified or cancelled. Reads only (no result
    values, so not audited)."""
    aid = _as_id(admission_id, "admission", "admission_not_found")
    rows = session.execute(
        select(LabOrder.id, LabOrder.order_no, LabTest.code, LabOrderItem.status)
        .join(LabOrderItem, LabOrderItem.order_id == LabOrder.id)
        .join(LabTest, LabTest.id == LabOrderItem.test_id)
        .where(LabOrder.admission_id == aid, LabOrderItem.status.in_(PENDING_ITEM_STATUSES))
        .order_by(LabOrder.id, LabOrderItem.id)).all()
    by_order: dict[int, tuple[str, list[str]]] = {}
    for order_id, order_no, test_code, status in rows:
        by_order.setdefault(order_id, (order_no, []))[1].append(
            f"{test_code} {ITEM_STATUS_LABELS[status].lower()}")
    return [{"kind": "lab_pending", "id": order_id, "text": f"Lab order {order_no}: {', '.join(parts)}"}
            for order_id, (order_no, parts) in by_order.items()]


def sample_of(session: Session, sample_id: int) -> LabSample:
    """The sample, or NotFound. Reads only."""
    sample = session.get(LabSample, _as_id(sample_id, "sample", "sample_not_found"))
    if sample is None:
        raise NotFound(f"No sample with id {sample_id}.", code="sample_not_found")
    return sample


def result_of(session: Session, result_id: int) -> LabResult:
    """The result version, or NotFound. Reads only."""
    result = session.get(LabResult, _as_id(result_id, "result", "result_not_found"))
    if result is None:
        raise NotFound(f"No lab result with id {result_id}.", code="result_not_found")
    return result


def item_of(session: Session, item_id: int) -> LabOrderItem:
    """The order item, or NotFound. Reads only."""
    item = session.get(LabOrderItem, _as_id(item_id, "order item", "item_not_found"))
    if item is None:
        raise NotFound(f"No order item with id {item_id}.", code="item_not_found")
    return item

