"""Ward nursing: vitals rounds every N hours, medication orders and their dose slots (the
MAR), missed work and its review by the ward's charge nurse. The only code that writes the
nursing tables.

Rounds and slots are rows. The inpatient journey's scheduler calls `open_due_rounds` and
`open_due_slots` every few minutes and starts one small workflow instance per new row; the
instance's user task is the nurse's, scoped to the ward, and its boundary timer at
due + grace calls `mark_round_missed` / `mark_dose_missed`, then gives the charge nurse a
review (`review_missed`). Both openers are idempotent (unique keys + a check) and cost the
same on day 30 as on day 1: they read only the latest round of each admission and the
latest slot of each order (a max over the unique index), never the history.

Chains of due times:
- rounds: the first at admitted_at + interval (the admission assessment covers arrival),
  then the previous round's due time + the interval in force now (a doctor's change takes
  effect from the next round). If the scheduler fell behind, it opens the latest round of
  the chain that is due, not every round nobody was asked to do.
- doses: first_due_at + k * every_hours; every slot due is opened (a dose not given must
  show on the MAR), at most MAX_SLOTS_PER_RUN per order and run.

Roles: doctors prescribe and change the round interval; nurses record (their own wards
only, actor.ward_ids); the charge nurse of the ward (or an admin) reviews missed work. The
system (pathway timers, the scheduler) passes every check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import and_, false, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hms import events, settings
from hms.audit import Actor, record
from hms.db import config_of, get_row, utcnow
from hms.errors import Conflict, Forbidden, Invalid
from hms.patients.models import Patient
from wards.models import Admission, Bed
from wards.nursing_models import (DEFAULT_ROUND_HOURS, EVERY_HOURS_RANGE, REASON_STATUSES, RECORDED_STATUSES,
                                  REQUIRED_VITALS, ROUND_HOURS_RANGE, ROUTES, VITAL_RANGES, DoseSlot,
                                  MedicationOrder, NursingPlan, VitalsRound)
from wards.services import check_orders_open, check_ward_scope, get_admission

DOSE_GRACE = settings.declare(
    "wards.dose_grace_minutes", int, 60,
    "Minutes after a dose's due time before an unrecorded dose becomes missed and goes to the charge nurse.")
ROUND_GRACE = settings.declare(
    "wards.round_grace_minutes", int, 60,
    "Minutes after a vitals round's due time before an unrecorded round becomes missed and goes to the "
    "charge nurse.")

OPEN_LEAD = timedelta(minutes=60)   # rounds and slots open this long before they are due
EARLY_DOSE = timedelta(minutes=60)  # a dose cannot be recorded earlier than this before its due time
MAX_SLOTS_PER_RUN = 24
MAX_NOTE = 500
MAX_REASON = 300
FIRST_DUE_PAST = timedelta(minutes=60)
FIRST_DUE_FUTURE = timedelta(days=7)
REVIEW_ROLES = ("charge_nurse", "admin")
PRESCRIBER_ROLES = ("doctor",)
WORK_AHEAD = timedelta(hours=4)  # the ward page shows doses due within this window
KINDS = ("round", "dose")
VITAL_LABELS = {"temperature_c": "Temperature", "pulse": "Pulse", "systolic": "Systolic pressure",
                "diastolic": "Diastolic pressure", "resp_rate": "Respiratory rate", "spo2": "SpO2",
                "pain_score": "Pain score"}
VITAL_UNITS = {"temperature_c": "°C", "pulse": "beats/min", "systolic": "mmHg", "diastolic": "mmHg",
               "resp_rate": "breaths/min", "spo2": "%", "pain_score": "/10"}
STATUS_LABELS = {"pending": "Pending", "given": "Given", "not_given": "Not given", "held": "Held",
                 "missed": "Missed", "cancelled": "Cancelled", "due": "Due", "done": "Done"}


# --- small helpers ---------------------------------------------------------------------------

def grace(session: Session, kind: str) -> timedelta:
    """The grace period after the due time of a round ("round") or a dose ("dose")."""
    if kind not in KINDS:
        raise ValueError(f"kind is one of {KINDS}, got {kind!r}")
    minutes = settings.get(session, ROUND_GRACE if kind == "round" else DOSE_GRACE)
    return timedelta(minutes=max(0, int(minutes)))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _whole(value: Any) -> int | None:
    """An integer from JSON or a form (int, integral float, digit string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _text(value: Any, name: str, label: str, max_len: int, *, required: bool) -> str | None:
    if value is not None and not isinstance(value, str):
        raise Invalid(f"{label} must be text.", fields={name: ["Must be text."]})
    text = (value or "").strip()
    if not text:
        if required:
            raise Invalid(f"{label} is required.", fields={name: ["Required."]})
        return None
    if len(text) > max_len:
        raise Invalid(f"{label} is at most {max_len} characters.", fields={name: [f"At most {max_len} characters."]})
    return text


def _check_prescriber(actor: Actor, what: str) -> None:
    if actor.is_system or actor.has_role(*PRESCRIBER_ROLES):
        return
    raise Forbidden(f"Only a doctor can {what}.", code="doctor_only")


def _check_record_scope(session: Session, actor: Actor, ward_id: int, admission_id: int) -> None:
    """The row's ward, or the ward the patient is in now (after a transfer), must be the actor's."""
    try:
        check_ward_scope(actor, ward_id)
    except Forbidden:
        admission = session.get(Admission, admission_id)
        if admission is None or admission.ward_id is None or admission.ward_id == ward_id:
            raise
        check_ward_scope(actor, admission.ward_id)


def _nursing_admissions():
    """Admissions that get nursing work: admitted, or discharging until nursing cleared them."""
    return or_(Admission.state == "admitted",
               and_(Admission.state == "discharging", Admission.nursing_cleared_at.is_(None)))


def _insert_once(session: Session, row) -> bool:
    """Insert `row` in a savepoint; False when its unique key exists (another run opened it)."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return False
    return True


# --- reads ---------------------------------------------------------------------------------

def get_round(session: Session, round_id: Any) -> VitalsRound:
    return get_row(session, VitalsRound, round_id, "vitals round", code="round_not_found")


def get_slot(session: Session, slot_id: Any) -> DoseSlot:
    return get_row(session, DoseSlot, slot_id, "dose slot", code="slot_not_found")


def get_order(session: Session, order_id: Any) -> MedicationOrder:
    return get_row(session, MedicationOrder, order_id, "medication order", code="order_not_found")


def _locked(session: Session, model, item_id: Any, what: str, code: str):
    return get_row(session, model, item_id, what, code=code, lock=True)


def round_interval(session: Session, admission_id: int) -> int:
    plan = session.get(NursingPlan, admission_id)
    return plan.round_interval_hours if plan is not None else DEFAULT_ROUND_HOURS


def list_rounds(session: Session, actor: Actor, admission_id: Any, *, limit: int = 200) -> list[VitalsRound]:
    """The admission's rounds, newest first (at most `limit`). No locks; audits the read
    "vitals_round.read"."""
    admission = get_admission(session, admission_id)
    record(session, actor, "vitals_round.read", "admission", admission.id, patient_id=admission.patient_id)
    return list(session.execute(select(VitalsRound).where(VitalsRound.admission_id == admission.id)
                                .order_by(VitalsRound.due_at.desc()).limit(limit)).scalars())


def list_orders(session: Session, actor: Actor, admission_id: Any, *,
                slots_limit: int = 100) -> list[tuple[MedicationOrder, list[DoseSlot]]]:
    """The admission's medication orders (active first, newest first), each with its latest
    `slots_limit` slots, oldest first. Two queries, no locks; audits "medication_order.read"."""
    admission = get_admission(session, admission_id)
    record(session, actor, "medication_order.read", "admission", admission.id, patient_id=admission.patient_id)
    orders = list(session.execute(select(MedicationOrder).where(MedicationOrder.admission_id == admission.id)
                                  .order_by(MedicationOrder.state, MedicationOrder.ordered_at.desc())).scalars())
    by_order: dict[int, list[DoseSlot]] = {o.id: [] for o in orders}
    if orders:
        slots = session.execute(select(DoseSlot).where(DoseSlot.admission_id == admission.id)
                                .order_by(DoseSlot.due_at.desc())).scalars()
        for slot in slots:
            bucket = by_order.get(slot.order_id)
            if bucket is not None and len(bucket) < slots_limit:
                bucket.append(slot)
    return [(o, list(reversed(by_order[o.id]))) for o in orders]


def list_slots(session: Session, *, ward_ids: list[int] | None, status: str | None = None,
               limit: int = 200) -> list[DoseSlot]:
    """Dose slots of these wards (None: every ward), optionally of one status, by due time."""
    stmt = select(DoseSlot).order_by(DoseSlot.due_at, DoseSlot.id).limit(limit)
    if ward_ids is not None:
        if not ward_ids:
            return []
        stmt = stmt.where(DoseSlot.ward_id.in_(ward_ids))
    if status is not None:
        stmt = stmt.where(DoseSlot.status == status)
    return list(session.execute(stmt).scalars())


# --- the round plan ------------------------------------------------------------------------------

def set_round_interval(session: Session, actor: Actor, admission_id: Any, hours: Any) -> NursingPlan:
    """Take vitals every `hours` (1-24) from the next round on. Doctors (and admins, who
    correct a plan) only: 403 `doctor_only`; 422 outside the range. Locks the admission's
    plan row (on PostgreSQL, SELECT ... FOR UPDATE). Writes nursing_plan and audit
    "nursing.round_interval"."""
    if not (actor.is_system or actor.has_role("doctor", "admin")):
        raise Forbidden("Only a doctor can change how often vitals are taken.", code="doctor_only")
    admission = get_admission(session, admission_id)
    value = _whole(hours)
    low, high = ROUND_HOURS_RANGE
    if value is None or not low <= value <= high:
        raise Invalid(f"Vitals are taken every {low} to {high} hours.",
                      fields={"hours": [f"A whole number from {low} to {high}."]})
    plan = session.execute(select(NursingPlan).where(NursingPlan.admission_id == admission.id)
                           .with_for_update().execution_options(populate_existing=True)).scalar_one_or_none()
    old = plan.round_interval_hours if plan is not None else DEFAULT_ROUND_HOURS
    if plan is None:
        plan = NursingPlan(admission_id=admission.id)
        session.add(plan)
    plan.round_interval_hours, plan.changed_by_id, plan.changed_at = value, actor.user_id, utcnow()
    session.flush()
    record(session, actor, "nursing.round_interval", "admission", admission.id, patient_id=admission.patient_id,
           detail={"old_hours": old, "new_hours": value})
    return plan


def open_due_rounds(session: Session, now: datetime | None = None, lead: timedelta = OPEN_LEAD) -> list[VitalsRound]:
    """Open the next vitals round of every nursed admission whose round is due by now + lead.

    Idempotent: a round that exists is not opened again (a check against the latest round,
    backed by the unique (admission_id, due_at) key). One query for the admissions with
    their latest round's due time (a max over that unique index) and interval; no locks
    (a concurrent run loses on the unique key and skips). Writes vitals_round rows and one
    audit "vitals_round.open" each."""
    now = _aware(now or utcnow())
    horizon = now + lead
    latest = (select(func.max(VitalsRound.due_at)).where(VitalsRound.admission_id == Admission.id)
              .correlate(Admission).scalar_subquery())
    rows = session.execute(
        select(Admission.id, Admission.patient_id, Admission.ward_id, Admission.admitted_at,
               NursingPlan.round_interval_hours, latest.label("latest"))
        .outerjoin(NursingPlan, NursingPlan.admission_id == Admission.id)
        .where(_nursing_admissions(), Admission.ward_id.is_not(None), Admission.admitted_at.is_not(None))
        .order_by(Admission.id)).all()
    opened = []
    for admission_id, patient_id, ward_id, admitted_at, hours, last_due in rows:
        step = timedelta(hours=hours or DEFAULT_ROUND_HOURS)
        due = _aware(last_due or admitted_at) + step
        if due > horizon:
            continue
        behind = (horizon - due) // step  # rounds nobody was asked to do: open the latest one
        due += behind * step
        row = VitalsRound(admission_id=admission_id, ward_id=ward_id, patient_id=patient_id, due_at=due,
                          state="due", created_at=now)
        if _insert_once(session, row):
            record(session, Actor.system("nursing-scheduler"), "vitals_round.open", "vitals_round", row.id,
                   patient_id=patient_id, detail={"admission_id": admission_id, "ward_id": ward_id})
            opened.append(row)
    return opened


def _vitals(data: Any) -> dict:
    """Checked observations: every bad field named at once (422)."""
    if not isinstance(data, dict):
        raise Invalid("Send the observations as an object.", fields={"vitals": ["Must be an object."]})
    clean: dict[str, Any] = {}
    problems: dict[str, list[str]] = {}
    for name, low, high in VITAL_RANGES:
        raw = data.get(name)
        if raw is None or raw == "":
            if name in REQUIRED_VITALS:
                problems[name] = [f"{VITAL_LABELS[name]} is required."]
            continue
        label, unit = VITAL_LABELS[name], VITAL_UNITS[name]
        if name == "temperature_c":
            try:
                value = None if isinstance(raw, bool) else Decimal(str(raw).strip())
            except InvalidOperation:
                value = None
            if value is None or not value.is_finite():
                problems[name] = [f"{label} is a number in {unit}."]
                continue
            value = value.quantize(Decimal("0.1"))
        else:
            value = _whole(raw)
            if value is None:
                problems[name] = [f"{label} is a whole number."]
                continue
        if not low <= value <= high:
            problems[name] = [f"{label} must be from {low} to {high} {unit}."]
            continue
        clean[name] = value
    notes = data.get("notes")
    if notes is not None and not isinstance(notes, str):
        problems["notes"] = ["The note must be text."]
    elif notes and len(notes.strip()) > MAX_NOTE:
        problems["notes"] = [f"The note is at most {MAX_NOTE} characters."]
    else:
        clean["notes"] = (notes or "").strip() or None
    if problems:
        raise Invalid("Check the observations: " + " ".join(m[0] for m in problems.values()), fields=problems)
    return clean


def record_round(session: Session, actor: Actor, round_id: Any, vitals: Any) -> VitalsRound:
    """Record the observations of a due round: due -> done. Locks the round row; 403
    `out_of_scope` for a nurse of another ward; 409 `round_closed` unless due (a missed
    round is reviewed, never filled in later); 422 naming every bad field. Writes the
    round and audit "vitals_round.record" (field names only)."""
    row = _locked(session, VitalsRound, round_id, "vitals round", "round_not_found")
    _check_record_scope(session, actor, row.ward_id, row.admission_id)
    if row.state != "due":
        raise Conflict(f"This vitals round is {row.state}; only a due round can be recorded.",
                       code="round_closed", fields={"state": [row.state]})
    clean = _vitals(vitals)
    for name, value in clean.items():
        setattr(row, name, value)
    row.state, row.recorded_by_id, row.recorded_at = "done", actor.user_id, utcnow()
    session.flush()
    record(session, actor, "vitals_round.record", "vitals_round", row.id, patient_id=row.patient_id,
           detail={"admission_id": row.admission_id, "fields": sorted(k for k, v in clean.items() if v is not None)})
    return row


def mark_round_missed(session: Session, actor: Actor, round_id: Any) -> bool:
    """The round's time plus grace passed: due -> missed, True. Locks the round row; a
    round recorded meanwhile (or already missed) is left as it is: False. Writes audit
    "vitals_round.missed"."""
    row = _locked(session, VitalsRound, round_id, "vitals round", "round_not_found")
    if row.state != "due":
        return False
    row.state, row.missed_at = "missed", utcnow()
    session.flush()
    record(session, actor, "vitals_round.missed", "vitals_round", row.id, patient_id=row.patient_id,
           detail={"admission_id": row.admission_id, "ward_id": row.ward_id})
    return True


# --- medication orders and dose slots ---------------------------------------------------------------

def _first_due(session: Session, value: Any, now: datetime) -> datetime:
    if value is None or value == "":
        return now
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise Invalid("The first dose time is an ISO date and time.",
                          fields={"first_due_at": ["Not a date and time."]}) from None
    if not isinstance(value, datetime):
        raise Invalid("The first dose time is a date and time.", fields={"first_due_at": ["Not a date and time."]})
    if value.tzinfo is None:  # a time typed at the ward is local time
        value = value.replace(tzinfo=config_of(session).tz)
    value = value.astimezone(timezone.utc)
    if value < now - FIRST_DUE_PAST:
        raise Invalid("The first dose cannot be more than an hour in the past.",
                      fields={"first_due_at": ["At most an hour ago."]})
    if value > now + FIRST_DUE_FUTURE:
        raise Invalid("The first dose must be within 7 days.", fields={"first_due_at": ["Within 7 days."]})
    return value


def start_medication_order(session: Session, actor: Actor, admission_id: Any, *, item_code: Any,
                           medicine_name: Any, dose: Any, route: Any, every_hours: Any,
                           first_due_at: Any = None) -> MedicationOrder:
    """Prescribe a medicine for an admitted patient: `dose` by `route` every `every_hours`
    (1-168) from `first_due_at` (default now; a naive time is local). Doctors only (403
    `doctor_only`); 409 from check_orders_open (`orders_frozen`, `not_admitted`); 422 naming
    the field. No locks (a new row). Writes medication_order and audit "medication_order.start";
    the slots are opened by `open_due_slots`."""
    _check_prescriber(actor, "prescribe medicines")
    admission = get_admission(session, admission_id)
    check_orders_open(session, admission)
    code = _text(item_code, "item_code", "The item code", 40, required=True).upper()
    name = _text(medicine_name, "medicine_name", "The medicine name", 120, required=True)
    dose_text = _text(dose, "dose", "The dose", 60, required=True)
    if route not in ROUTES:
        raise Invalid(f"Say how it is given: one of {', '.join(ROUTES)}.",
                      fields={"route": [f"One of: {', '.join(ROUTES)}."]})
    hours = _whole(every_hours)
    low, high = EVERY_HOURS_RANGE
    if hours is None or not low <= hours <= high:
        raise Invalid(f"Give the dose every {low} to {high} hours.",
                      fields={"every_hours": [f"A whole number from {low} to {high}."]})
    now = utcnow()
    order = MedicationOrder(admission_id=admission.id, patient_id=admission.patient_id, item_code=code,
                            medicine_name=name, dose=dose_text, route=route, every_hours=hours,
                            first_due_at=_first_due(session, first_due_at, now), state="active",
                            ordered_by_id=actor.user_id, ordered_at=now)
    session.add(order)
    session.flush()
    record(session, actor, "medication_order.start", "medication_order", order.id, patient_id=order.patient_id,
           detail={"admission_id": admission.id, "item_code": code, "route": route, "every_hours": hours})
    return order


def stop_medication_order(session: Session, actor: Actor, order_id: Any, reason: Any) -> MedicationOrder:
    """Stop an active order: no more slots are opened, and its pending slots due after now
    are cancelled (earlier pending ones stay to be recorded or missed). Doctors only; 409
    `order_stopped` when stopped already; a reason is required. Locks the order row, then
    its pending slots. Writes the order, the slots and audit "medication_order.stop"."""
    _check_prescriber(actor, "stop a medicine")
    text = _text(reason, "reason", "The reason", 200, required=True)
    order = _locked(session, MedicationOrder, order_id, "medication order", "order_not_found")
    if order.state != "active":
        raise Conflict("This medicine was stopped already.", code="order_stopped")
    now = utcnow()
    order.state, order.stopped_by_id, order.stopped_at, order.stop_reason = "stopped", actor.user_id, now, text
    slots = list(session.execute(select(DoseSlot).where(DoseSlot.order_id == order.id, DoseSlot.status == "pending",
                                                        DoseSlot.due_at > now)
                                 .with_for_update().execution_options(populate_existing=True)).scalars())
    for slot in slots:
        slot.status = "cancelled"
    session.flush()
    record(session, actor, "medication_order.stop", "medication_order", order.id, patient_id=order.patient_id,
           detail={"admission_id": order.admission_id, "cancelled_slot_ids": [s.id for s in slots]})
    # The slots' own task instances end too (the inpatient journey cancels them), so no
    # nurse is asked to give a dose that was stopped.
    events.publish(session, actor, "wards.dose_slots_cancelled", order_id=order.id,
                   instance_ids=[s.instance_id for s in slots if s.instance_id is not None])
    return order


def open_due_slots(session: Session, now: datetime | None = None, lead: timedelta = OPEN_LEAD) -> list[DoseSlot]:
    """Open the dose slots due by now + lead of every active order of a nursed admission.

    Slot k is due at first_due_at + k * every_hours; every slot due is opened (at most
    MAX_SLOTS_PER_RUN per order and run). Idempotent: the next slot follows the latest
    existing one (a max over the unique (order_id, due_at) key), and a concurrent run loses
    on that key and skips. One query, no locks. Writes dose_slot rows (ward = the patient's
    ward now) and one audit "dose_slot.open" each."""
    now = _aware(now or utcnow())
    horizon = now + lead
    latest = (select(func.max(DoseSlot.due_at)).where(DoseSlot.order_id == MedicationOrder.id)
              .correlate(MedicationOrder).scalar_subquery())
    rows = session.execute(
        select(MedicationOrder.id, MedicationOrder.admission_id, MedicationOrder.patient_id,
               MedicationOrder.every_hours, MedicationOrder.first_due_at, Admission.ward_id, latest.label("latest"))
        .join(Admission, Admission.id == MedicationOrder.admission_id)
        .where(MedicationOrder.state == "active", _nursing_admissions(), Admission.ward_id.is_not(None))
        .order_by(MedicationOrder.id)).all()
    opened = []
    actor = Actor.system("nursing-scheduler")
    for order_id, admission_id, patient_id, hours, first_due, ward_id, last_due in rows:
        step = timedelta(hours=hours)
        due = _aware(last_due) + step if last_due is not None else _aware(first_due)
        for _ in range(MAX_SLOTS_PER_RUN):
            if due > horizon:
                break
            slot = DoseSlot(order_id=order_id, admission_id=admission_id, ward_id=ward_id, patient_id=patient_id,
                            due_at=due, status="pending", created_at=now)
            if _insert_once(session, slot):
                record(session, actor, "dose_slot.open", "dose_slot", slot.id, patient_id=patient_id,
                       detail={"order_id": order_id, "admission_id": admission_id, "ward_id": ward_id})
                opened.append(slot)
            due += step
    return opened


def record_dose(session: Session, actor: Actor, slot_id: Any, status: Any, reason: Any = None) -> DoseSlot:
    """Record a pending dose as given, not given or held (the last two need a reason).
    Locks the slot row; 403 `out_of_scope` for a nurse of another ward; 409 `slot_closed`
    unless pending; 409 `too_early` more than an hour before its due time. Writes the slot
    and audit "dose_slot.record" (status only, no reason text)."""
    if status not in RECORDED_STATUSES:
        raise Invalid(f"Record the dose as one of: {', '.join(RECORDED_STATUSES)}.",
                      fields={"status": [f"One of: {', '.join(RECORDED_STATUSES)}."]})
    text = _text(reason, "reason", "The reason", MAX_REASON, required=status in REASON_STATUSES)
    slot = _locked(session, DoseSlot, slot_id, "dose slot", "slot_not_found")
    _check_record_scope(session, actor, slot.ward_id, slot.admission_id)
    if slot.status != "pending":
        raise Conflict(f"This dose is {STATUS_LABELS[slot.status].lower()}; only a pending dose can be recorded.",
                       code="slot_closed", fields={"status": [slot.status]})
    now = utcnow()
    if now < _aware(slot.due_at) - EARLY_DOSE:
        raise Conflict("This dose is not due yet: it can be recorded from an hour before its time.",
                       code="too_early")
    slot.status, slot.reason, slot.recorded_by_id, slot.recorded_at = status, text, actor.user_id, now
    session.flush()
    record(session, actor, "dose_slot.record", "dose_slot", slot.id, patient_id=slot.patient_id,
           detail={"order_id": slot.order_id, "admission_id": slot.admission_id, "status": status})
    return slot


def mark_dose_missed(session: Session, actor: Actor, slot_id: Any) -> bool:
    """The dose's time plus grace passed unrecorded: pending -> missed, True. Locks the slot
    row; a slot recorded, cancelled or missed meanwhile is left as it is: False. Writes
    audit "dose_slot.missed"."""
    slot = _locked(session, DoseSlot, slot_id, "dose slot", "slot_not_found")
    if slot.status != "pending":
        return False
    slot.status, slot.missed_at = "missed", utcnow()
    session.flush()
    record(session, actor, "dose_slot.missed", "dose_slot", slot.id, patient_id=slot.patient_id,
           detail={"order_id": slot.order_id, "admission_id": slot.admission_id, "ward_id": slot.ward_id})
    return True


# --- missed work ----------------------------------------------------------------------------------

def review_missed(session: Session, actor: Actor, kind: Any, item_id: Any, note: Any):
    """The charge nurse of the ward (or an admin) records what happened to a missed round
    ("round") or dose ("dose"). 403 `charge_nurse_only` for other roles, `out_of_scope` for
    another ward's charge nurse; 409 `not_missed` / `already_reviewed`; a note is required.
    Locks the row. Writes the review and audit "<kind>.review" (no note text)."""
    if kind not in KINDS:
        raise Invalid(f"kind is one of: {', '.join(KINDS)}.", fields={"kind": [f"One of: {', '.join(KINDS)}."]})
    if not (actor.is_system or actor.has_role(*REVIEW_ROLES)):
        raise Forbidden("Only the charge nurse of the ward reviews missed work.", code="charge_nurse_only")
    text = _text(note, "note", "The note", MAX_REASON, required=True)
    if kind == "round":
        row = _locked(session, VitalsRound, item_id, "vitals round", "round_not_found")
        missed = row.state == "missed"
    else:
        row = _locked(session, DoseSlot, item_id, "dose slot", "slot_not_found")
        missed = row.status == "missed"
    check_ward_scope(actor, row.ward_id)
    what = "vitals round" if kind == "round" else "dose"
    if not missed:
        raise Conflict(f"Only a missed {what} is reviewed.", code="not_missed")
    if row.reviewed_at is not None:
        raise Conflict(f"This missed {what} was reviewed already.", code="already_reviewed")
    row.reviewed_by_id, row.reviewed_at, row.review_note = actor.user_id, utcnow(), text
    session.flush()
    record(session, actor, f"{'vitals_round' if kind == 'round' else 'dose_slot'}.review",
           "vitals_round" if kind == "round" else "dose_slot", row.id, patient_id=row.patient_id,
           detail={"admission_id": row.admission_id, "ward_id": row.ward_id})
    return row


def missed_counts(session: Session, ward_id: int, since: datetime) -> dict:
    """Missed rounds and doses of a ward due since `since`, and how many await review."""
    rounds = session.execute(
        select(func.count(), func.count(VitalsRound.reviewed_at))
        .where(VitalsRound.ward_id == ward_id, VitalsRound.state == "missed", VitalsRound.due_at >= since)).one()
    doses = session.execute(
        select(func.count(), func.count(DoseSlot.reviewed_at))
        .where(DoseSlot.ward_id == ward_id, DoseSlot.status == "missed", DoseSlot.due_at >= since)).one()
    return {"rounds": rounds[0], "doses": doses[0],
            "unreviewed": (rounds[0] - rounds[1]) + (doses[0] - doses[1])}


# --- the instance side --------------------------------------------------------------------------------

def _get(session: Session, kind: Any, item_id: Any):
    if kind == "round":
        return get_round(session, item_id)
    if kind == "dose":
        return get_slot(session, item_id)
    raise Invalid(f"kind is one of: {', '.join(KINDS)}.", fields={"kind": [f"One of: {', '.join(KINDS)}."]})


def task_info(session: Session, kind: Any, item_id: Any) -> dict:
    """What a round's or dose's workflow instance carries: ids, due and escalation times
    (ISO, UTC) and, for a dose, the medicine. No clinical results. No locks."""
    row = _get(session, kind, item_id)
    due = _aware(row.due_at)
    info = {"kind": kind, "item_id": row.id, "patient_id": row.patient_id, "ward_id": row.ward_id,
            "admission_id": row.admission_id, "due_at": due.isoformat(),
            "escalate_at": (due + grace(session, kind)).isoformat(),
            "title": "Vitals round", "medicine": None, "dose": None, "route": None}
    if kind == "dose":
        order = session.get(MedicationOrder, row.order_id)
        info.update(title=f"Give {order.medicine_name} {order.dose} ({order.route})", medicine=order.medicine_name,
                    dose=order.dose, route=order.route, order_id=order.id)
    return info


def attach_instance(session: Session, kind: Any, item_id: Any, instance_id: int) -> None:
    """Remember the workflow instance that carries this round or dose (set once)."""
    row = _get(session, kind, item_id)
    if row.instance_id is not None and row.instance_id != instance_id:
        raise Conflict("This item already has its workflow instance.", code="instance_attached")
    row.instance_id = instance_id
    session.flush()


# --- views for the ward ----------------------------------------------------------------------------------

@dataclass
class WorkRow:
    kind: str
    item: Any
    patient: Patient
    bed_label: str | None
    overdue: bool
    escalate_at: datetime
    order: MedicationOrder | None = None


def list_ward_work(session: Session, ward_id: int, now: datetime | None = None, *,
                   ahead: timedelta = WORK_AHEAD) -> dict:
    """The ward's open nursing work: due rounds and pending doses due by now + ahead, each
    with its patient and bed, oldest first; plus the missed counts of the last 24 hours.
    Three queries over the (ward_id, state, due_at) indexes; no locks."""
    now = _aware(now or utcnow())
    round_grace, dose_grace = grace(session, "round"), grace(session, "dose")
    rounds = session.execute(
        select(VitalsRound, Patient, Bed.label)
        .join(Patient, Patient.id == VitalsRound.patient_id)
        .join(Admission, Admission.id == VitalsRound.admission_id)
        .outerjoin(Bed, Bed.id == Admission.bed_id)
        .where(VitalsRound.ward_id == ward_id, VitalsRound.state == "due", VitalsRound.due_at <= now + ahead)
        .order_by(VitalsRound.due_at, VitalsRound.id)).all()
    doses = session.execute(
        select(DoseSlot, MedicationOrder, Patient, Bed.label)
        .join(MedicationOrder, MedicationOrder.id == DoseSlot.order_id)
        .join(Patient, Patient.id == DoseSlot.patient_id)
        .join(Admission, Admission.id == DoseSlot.admission_id)
        .outerjoin(Bed, Bed.id == Admission.bed_id)
        .where(DoseSlot.ward_id == ward_id, DoseSlot.status == "pending", DoseSlot.due_at <= now + ahead)
        .order_by(DoseSlot.due_at, DoseSlot.id)).all()
    return {
        "rounds": [WorkRow("round", r, p, bed, _aware(r.due_at) < now, _aware(r.due_at) + round_grace)
                   for r, p, bed in rounds],
        "doses": [WorkRow("dose", s, p, bed, _aware(s.due_at) < now, _aware(s.due_at) + dose_grace, order=o)
                  for s, o, p, bed in doses],
        "missed": missed_counts(session, ward_id, now - timedelta(hours=24)),
    }


def local_day_bounds(session: Session, day: date) -> tuple[datetime, datetime]:
    """[start, end) of a local calendar day, in UTC."""
    tz = config_of(session).tz
    start = datetime.combine(day, time.min, tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz)
    return start.astimezone(timezone.utc), end.astimezone(timezone.utc)


def mar(session: Session, admission_id: Any, day: date, *,
        actor: Actor | None = None) -> list[tuple[MedicationOrder, list[DoseSlot]]]:
    """The medication administration record of one local day: the orders that were active
    during the day (or have slots in it), each with its slots of that day by due time.
    Two queries, no locks; with an `actor` the read is audited "mar.read"."""
    admission = get_admission(session, admission_id)
    if actor is not None:
        record(session, actor, "mar.read", "admission", admission.id, patient_id=admission.patient_id,
               detail={"day": day.isoformat()})
    start, end = local_day_bounds(session, day)
    slots = list(session.execute(select(DoseSlot).where(DoseSlot.admission_id == admission.id,
                                                        DoseSlot.due_at >= start, DoseSlot.due_at < end)
                                 .order_by(DoseSlot.due_at, DoseSlot.id)).scalars())
    with_slots = {s.order_id for s in slots}
    orders = list(session.execute(
        select(MedicationOrder).where(
            MedicationOrder.admission_id == admission.id,
            or_(MedicationOrder.id.in_(with_slots) if with_slots else false(),
                and_(MedicationOrder.ordered_at < end,
                     or_(MedicationOrder.stopped_at.is_(None), MedicationOrder.stopped_at >= start))))
        .order_by(MedicationOrder.ordered_at, MedicationOrder.id)).scalars())
    by_order: dict[int, list[DoseSlot]] = {o.id: [] for o in orders}
    for slot in slots:
        by_order.setdefault(slot.order_id, []).append(slot)
    return [(o, by_order[o.id]) for o in orders]
