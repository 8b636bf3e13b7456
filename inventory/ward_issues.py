"""Pharmacy issues to wards: the ward's acceptance, returns of unused medicines from the
ward, and what keeps a discharge waiting on the pharmacy.

An issue is an ordinary dispense with `admission_id` (inventory.services.dispense with
admission_id; its prescription_ref starts with "admission:<id>"). The ward confirms it
received the medicines (`accept_ward_issue`); at discharge the nurse sends what is left
back (`request_ward_return`, a WardReturn "sent"), and the pharmacist counts it
(`receive_ward_return`): what is received goes back into its batch through
`services.return_items` and the event "inventory.return_received" lets the bill be
credited in the same transaction (inventory never imports finance).

Functions flush, never commit; every write is audited with ids and codes only. Limits are
decided under row locks: the dispense row for acceptance, the dispense line for a new
return (so two returns of one line at once never send more than the ward holds), the
ward return for receiving it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hms import audit, events
from hms.audit import Actor
from hms.db import utcnow
from hms.errors import Conflict, Forbidden, Invalid, NotFound, MAX_ID, record_id
from hms.patients.models import Patient
from inventory import services
from inventory.models import WARD_RETURN_STATES, Dispense, DispenseLine, DispenseReturn, Item, WardReturn

RETURN_RECEIVED_EVENT = "inventory.return_received"
ISSUE_NO_FORMAT = "D-{n:06d}"
DEFAULT_RETURN_REASON = "Unused on the ward"

WARD_ROLES = ("nurse", "charge_nurse", "admin", "system")
PHARMACY_ROLES = ("pharmacist", "admin", "system")


def issue_no(dispense_id: int) -> str:
    """How an issue is named to people: "D-000123"."""
    return ISSUE_NO_FORMAT.format(n=dispense_id)


def _admission(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise Invalid("Admission must be a positive whole number.", fields={"admission_id": ["Not a valid id."]})
    return value


def _require(actor: Actor, roles: tuple[str, ...], what: str) -> None:
    if not actor.has_role(*roles):
        raise Forbidden(f"Only {what} may do this.", code="not_allowed")


def _short_name(item: Item) -> str:
    """"Ceftriaxone 1 g": what a nurse calls it."""
    return " ".join(p for p in (item.generic_name, item.strength) if p)


def _line_summary(lines: list[DispenseLine]) -> list[dict]:
    """Per item (lines of one item from two batches are one entry): name and quantity."""
    by_item: dict[int, dict] = {}
    for line in lines:
        entry = by_item.setdefault(line.item_id, {"item_code": line.item.code, "name": _short_name(line.item),
                                                  "unit": line.item.unit, "quantity": 0})
        entry["quantity"] += line.quantity
    return list(by_item.values())


def _summary_text(lines: list[DispenseLine]) -> str:
    return ", ".join(f"{e['name']} x {e['quantity']}" for e in _line_summary(lines))


# --- acceptance --------------------------------------------------------------------------

def accept_ward_issue(session: Session, actor: Actor, dispense_id: Any) -> Dispense:
    """The ward confirms it received an issue; return the dispense.

    Ward staff (nurse, charge nurse, admin) or the system only (Forbidden otherwise: the
    pharmacist who issued cannot confirm the ward's receipt). Locks the dispense row
    (FOR UPDATE) so it is accepted once: Conflict `already_accepted` after that, Conflict
    `not_a_ward_issue` for an OPD dispense, NotFound `dispense_not_found`. Which ward may
    accept is the pathway's business (its task is ward-scoped); who accepted is recorded.
    Writes ward_accepted_at/_by and audit "inventory.ward_issue_accept".
    """
    _require(actor, WARD_ROLES, "ward staff")
    record = session.execute(
        select(Dispense).where(Dispense.id == record_id(dispense_id, "dispense", "dispense_not_found"))
        .with_for_update().execution_options(populate_existing=True)).scalar_one_or_none()
    if record is None:
        raise NotFound(f"No dispense with id {dispense_id}.", code="dispense_not_found")
    if record.admission_id is None:
        raise Conflict(f"Dispense {issue_no(record.id)} was not issued to a ward.", code="not_a_ward_issue")
    if record.ward_accepted_at is not None:
        raise Conflict(f"Pharmacy issue {issue_no(record.id)} was already accepted by "
                       f"{record.ward_accepted_by_name or 'the ward'}.", code="already_accepted")
    record.ward_accepted_at = utcnow()
    record.ward_accepted_by_id = actor.user_id
    record.ward_accepted_by_name = actor.username[:60]
    session.flush()
    audit.record(session, actor, "inventory.ward_issue_accept", "dispense", record.id, patient_id=record.patient_id,
                 detail={"admission_id": record.admission_id})
    return record


def ward_issue_info(session: Session, dispense_id: Any) -> dict:
    """What an issue holds, for the nurse's accept task: {"dispense_id", "issue_no",
    "admission_id", "accepted", "lines": [{"item_code", "name", "unit", "quantity"}],
    "total_paisa"}. Reads only; NotFound `dispense_not_found`."""
    record = session.get(Dispense, record_id(dispense_id, "dispense", "dispense_not_found"))
    if record is None:
        raise NotFound(f"No dispense with id {dispense_id}.", code="dispense_not_found")
    return {"dispense_id": record.id, "issue_no": issue_no(record.id), "admission_id": record.admission_id,
            "accepted": record.ward_accepted_at is not None, "lines": _line_summary(record.lines),
            "total_paisa": record.total_paisa}


# --- quantities on the ward --------------------------------------------------------------

def _issues(session: Session, admission_id: int) -> list[Dispense]:
    return list(session.scalars(select(Dispense).where(Dispense.admission_id == admission_id)
                                .order_by(Dispense.id)))


def _returned(session: Session, line_ids: list[int]) -> dict[int, int]:
    if not line_ids:
        return {}
    return {k: int(v) for k, v in session.execute(
        select(DispenseReturn.dispense_line_id, func.sum(DispenseReturn.quantity))
        .where(DispenseReturn.dispense_line_id.in_(line_ids)).group_by(DispenseReturn.dispense_line_id)).all()}


def _pending(session: Session, line_ids: list[int]) -> dict[int, int]:
    if not line_ids:
        return {}
    return {k: int(v) for k, v in session.execute(
        select(WardReturn.dispense_line_id, func.sum(WardReturn.quantity))
        .where(WardReturn.dispense_line_id.in_(line_ids), WardReturn.state == "sent")
        .group_by(WardReturn.dispense_line_id)).all()}


def issued_on_hand(session: Session, admission_id: Any) -> list[dict]:
    """Lines of the admission's accepted issues with what the ward still holds, for the
    nurse's discharge form: [{"dispense_line_id", "item_code", "name", "dispensed",
    "returned", "pending_return", "on_hand"}] (on_hand = dispensed - returned - sent and
    not yet counted). Reads only."""
    aid = _admission(admission_id)
    lines = [ln for d in _issues(session, aid) if d.ward_accepted_at is not None for ln in d.lines]
    ids = [ln.id for ln in lines]
    returned, pending = _returned(session, ids), _pending(session, ids)
    out = []
    for line in lines:
        back, sent = returned.get(line.id, 0), pending.get(line.id, 0)
        out.append({"dispense_line_id": line.id, "item_code": line.item.code, "name": _short_name(line.item),
                    "dispensed": line.quantity, "returned": back, "pending_return": sent,
                    "on_hand": max(line.quantity - back - sent, 0)})
    return out


# --- returns from the ward ---------------------------------------------------------------

def request_ward_return(session: Session, actor: Actor, *, admission_id: Any, dispense_line_id: Any,
                        quantity: Any, reason: Any = None) -> WardReturn:
    """The ward sends units of an issue line back to pharmacy; return the WardReturn
    ("sent").

    Ward staff or the system only. The line must belong to an issue of this admission
    (Invalid `not_this_admission`) that the ward accepted (Conflict `not_accepted`). Locks
    the dispense line (FOR UPDATE) before adding up what was returned and what is already
    sent and not rejected, so the ward never sends more than it holds, even from two
    screens at once: Conflict `exceeds_on_hand` with fields["on_hand"]. Writes ward_return
    and audit "inventory.ward_return_send".
    """
    _require(actor, WARD_ROLES, "ward staff")
    aid = _admission(admission_id)
    errors = services._Errors()
    qty = services._whole(quantity, "quantity", errors, minimum=1, maximum=services.MAX_QUANTITY)
    reason = services._text(reason, "reason", errors, max_len=200, required=False)
    errors.raise_if_any()
    line = session.execute(
        select(DispenseLine).where(DispenseLine.id == record_id(dispense_line_id, "dispense line", "line_not_found"))
        .with_for_update().execution_options(populate_existing=True)).scalar_one_or_none()
    if line is None:
        raise NotFound(f"No dispense line with id {dispense_line_id}.", code="line_not_found")
    issue = line.dispense
    if issue.admission_id != aid:
        raise Invalid(f"Line {line.id} was not issued to admission {aid}.", code="not_this_admission",
                      fields={"dispense_line_id": ["Not a line issued to this admission."]})
    if issue.ward_accepted_at is None:
        raise Conflict(f"Pharmacy issue {issue_no(issue.id)} has not been accepted by the ward: accept it "
                       f"before sending anything back.", code="not_accepted")
    returned = _returned(session, [line.id]).get(line.id, 0)
    sent = _pending(session, [line.id]).get(line.id, 0)
    on_hand = max(line.quantity - returned - sent, 0)
    if qty > on_hand:
        message = (f"{line.quantity} of {_short_name(line.item)} were issued, {returned} returned and {sent} "
                   f"already sent back: at most {on_hand} can be sent.")
        raise Conflict(message, code="exceeds_on_hand", fields={"quantity": [message], "on_hand": on_hand})
    record = WardReturn(admission_id=aid, dispense_line_id=line.id, quantity=qty,
                        reason=reason or DEFAULT_RETURN_REASON, state="sent", sent_by_id=actor.user_id,
                        sent_by_name=actor.username[:60])
    session.add(record)
    session.flush()
    audit.record(session, actor, "inventory.ward_return_send", "ward_return", record.id,
                 patient_id=issue.patient_id,
                 detail={"admission_id": aid, "dispense_line_id": line.id, "quantity": qty})
    return record


def _locked_return(session: Session, ward_return_id: Any) -> WardReturn:
    record = session.execute(
        select(WardReturn).where(WardReturn.id == record_id(ward_return_id, "ward return", "ward_return_not_found"))
        .with_for_update().execution_options(populate_existing=True)).scalar_one_or_none()
    if record is None:
        raise NotFound(f"No ward return with id {ward_return_id}.", code="ward_return_not_found")
    return record


def receive_ward_return(session: Session, actor: Actor, ward_return_id: Any, *, received_quantity: Any,
                        note: Any = None) -> dict:
    """The pharmacist counts a ward return; return {"ward_return_id", "state",
    "received_quantity", "return_id", "amount_paisa"}.

    Pharmacist, admin or the system only. Locks the ward return (FOR UPDATE): Conflict
    `already_counted` unless it is "sent". `received_quantity` is 0..quantity (Invalid
    otherwise); 0 rejects the return and needs a `note` saying why. Above 0 the units go
    back into their batch through services.return_items (which locks the line and the
    batch; stock movement "return:<id>"), the return is "received", and the event
    "inventory.return_received" {admission_id, patient_id, dispense_line_id, quantity,
    return_id, amount_paisa} is published in this transaction (the bill is credited by
    its subscriber; its refusal refuses the receipt). Writes ward_return, dispense_return,
    the movement and audit "inventory.ward_return_receive".
    """
    _require(actor, PHARMACY_ROLES, "the pharmacy")
    errors = services._Errors()
    got = services._whole(received_quantity, "received_quantity", errors, minimum=0, maximum=services.MAX_QUANTITY,
                          label="Received quantity")
    note = services._text(note, "note", errors, max_len=200, required=False)
    errors.raise_if_any()
    record = _locked_return(session, ward_return_id)
    if record.state != "sent":
        raise Conflict(f"Ward return {record.id} was already counted ({record.state}).", code="already_counted")
    if got > record.quantity:
        message = f"{record.quantity} were sent back: at most {record.quantity} can be received."
        raise Invalid(message, fields={"received_quantity": [message]})
    if got == 0 and not note:
        message = "Say why nothing is received (e.g. opened, damaged, not in the bag)."
        raise Invalid(message, fields={"note": [message]})
    line = session.get(DispenseLine, record.dispense_line_id)
    patient_id = line.dispense.patient_id
    result = {"ward_return_id": record.id, "received_quantity": got, "return_id": None, "amount_paisa": 0}
    if got > 0:
        returned = services.return_items(session, actor, dispense_line_id=line.id, quantity=got,
                                         reason=f"Ward return {record.id}: {record.reason}"[:200])
        record.dispense_return_id = returned["return_id"]
        result.update(return_id=returned["return_id"], amount_paisa=returned["amount_paisa"])
    record.state = "received" if got > 0 else "rejected"
    record.received_quantity = got
    record.received_at = utcnow()
    record.received_by_id = actor.user_id
    record.received_by_name = actor.username[:60]
    record.note = note
    session.flush()
    audit.record(session, actor, "inventory.ward_return_receive", "ward_return", record.id, patient_id=patient_id,
                 detail={"admission_id": record.admission_id, "dispense_line_id": line.id, "sent": record.quantity,
                         "received": got, "return_id": result["return_id"], "amount_paisa": result["amount_paisa"]})
    if got > 0:
        events.publish(session, actor, RETURN_RECEIVED_EVENT, admission_id=record.admission_id,
                       patient_id=patient_id, dispense_line_id=line.id, quantity=got,
                       return_id=result["return_id"], amount_paisa=result["amount_paisa"])
    result["state"] = record.state
    return result


def _return_json(r: WardReturn) -> dict:
    return {"ward_return_id": r.id, "admission_id": r.admission_id, "dispense_line_id": r.dispense_line_id,
            "dispense_id": r.line.dispense_id, "issue_no": issue_no(r.line.dispense_id),
            "patient_id": r.line.dispense.patient_id,
            "item_code": r.line.item.code, "name": _short_name(r.line.item), "unit": r.line.item.unit,
            "quantity": r.quantity, "reason": r.reason, "state": r.state,
            "sent_at": r.sent_at.isoformat(), "sent_by": r.sent_by_name,
            "received_at": r.received_at.isoformat() if r.received_at else None, "received_by": r.received_by_name,
            "received_quantity": r.received_quantity, "note": r.note, "return_id": r.dispense_return_id}


def list_ward_returns(session: Session, *, admission_id: Any = None, state: str | None = None,
                      limit: int = 200) -> list[dict]:
    """Ward returns (of one admission, in one state), oldest first, as JSON-ready dicts
    with the medicine's name. Invalid for an unknown state. Reads only."""
    stmt = select(WardReturn).order_by(WardReturn.id).limit(limit)
    if admission_id is not None:
        stmt = stmt.where(WardReturn.admission_id == _admission(admission_id))
    if state is not None:
        if state not in WARD_RETURN_STATES:
            raise Invalid(f"State must be one of: {', '.join(WARD_RETURN_STATES)}.",
                          fields={"state": ["Unknown state."]})
        stmt = stmt.where(WardReturn.state == state)
    rows = [_return_json(r) for r in session.scalars(stmt)]
    mrns = dict(session.execute(select(Patient.id, Patient.mrn)
                                .where(Patient.id.in_({r["patient_id"] for r in rows}))).all()) if rows else {}
    for row in rows:
        row["patient_mrn"] = mrns.get(row["patient_id"])
    return rows


def pending_returns(session: Session, admission_id: Any) -> list[dict]:
    """The admission's returns sent and not yet counted, for the pharmacist's form."""
    return list_ward_returns(session, admission_id=admission_id, state="sent")


# --- what blocks the discharge -----------------------------------------------------------

def ward_blockers(session: Session, admission_id: Any) -> list[dict]:
    """What the pharmacy still holds the discharge for: [{"kind", "text", "id"}] with kind
    "issue_unaccepted" (id: the dispense) for issues the ward has not accepted and
    "return_pending" (id: the ward return) for returns the pharmacy has not counted.
    Empty when nothing is pending. Reads only."""
    aid = _admission(admission_id)
    blockers = [{"kind": "issue_unaccepted", "id": d.id,
                 "text": f"Pharmacy issue {issue_no(d.id)} ({_summary_text(d.lines)}) not accepted by the ward"}
                for d in _issues(session, aid) if d.ward_accepted_at is None]
    blockers += [{"kind": "return_pending", "id": r["ward_return_id"],
                  "text": f"Return of {r['name']} x {r['quantity']} (issue {r['issue_no']}) "
                          f"not yet received by pharmacy"}
                 for r in pending_returns(session, aid)]
    return blockers


def admission_pharmacy(session: Session, actor: Actor, admission_id: Any) -> dict:
    """Everything the pharmacy issued to an admission: {"issues": [{"dispense_id",
    "issue_no", "dispensed_at", "dispensed_by", "accepted", "accepted_at", "accepted_by",
    "total_paisa", "lines": [{"dispense_line_id", "item_code", "name", "quantity",
    "amount_paisa"}]}], "returns": [...every ward return...], "on_hand": issued_on_hand}.
    Part of the patient's record: audit "inventory.admission_pharmacy_read"."""
    aid = _admission(admission_id)
    issues = _issues(session, aid)
    out = {"issues": [{"dispense_id": d.id, "issue_no": issue_no(d.id), "dispensed_at": d.dispensed_at.isoformat(),
                       "dispensed_by": d.dispensed_by_name, "accepted": d.ward_accepted_at is not None,
                       "accepted_at": d.ward_accepted_at.isoformat() if d.ward_accepted_at else None,
                       "accepted_by": d.ward_accepted_by_name, "total_paisa": d.total_paisa,
                       "lines": [{"dispense_line_id": ln.id, "item_code": ln.item.code, "name": _short_name(ln.item),
                                  "quantity": ln.quantity, "amount_paisa": ln.amount_paisa} for ln in d.lines]}
                      for d in issues],
           "returns": list_ward_returns(session, admission_id=aid),
           "on_hand": issued_on_hand(session, aid)}
    audit.record(session, actor, "inventory.admission_pharmacy_read", "admission", aid,
                 patient_id=issues[0].patient_id if issues else None)
    return out

