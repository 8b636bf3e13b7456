"""Service-task operations of inventory (registered as inventory.<verb>).

    inventory.check_allergies {patient_id, item_codes}            -> {"alerts", "has_alerts"}
    inventory.dispense        {patient_id, prescription_ref, lines,
                               partial_reason?, allergy_override_reason?} -> DispenseOutcome
                              (a line with quantity 0 is skipped: the task form's "not now")
    inventory.return_items    {dispense_line_id, quantity, reason} -> {"return_id", "amount_paisa"}

Issues to wards (inventory.ward_issues; inventory.dispense with admission_id makes one):
    inventory.ward_issue_info   {dispense_id}  -> {"dispense_id", "issue_no", "lines": [{"name", "quantity"...}],
                                                   "total_paisa", "accepted", "admission_id"}
    inventory.accept_ward_issue {dispense_id}  -> {"ok": true, "dispense_id"}
    inventory.issued_on_hand    {admission_id} -> {"lines": [{"dispense_line_id", "item_code", "name", "dispensed",
                                                   "returned", "pending_return", "on_hand"}]}
    inventory.request_returns   {admission_id, lines: [{dispense_line_id, quantity, reason?}]}
                                -> {"return_ids", "count"} (quantity 0 rows are skipped)
    inventory.pending_returns   {admission_id} -> {"returns": [...], "count"}
    inventory.receive_returns   {admission_id, lines: [{ward_return_id, received_quantity, note?}]}
                                -> {"received", "rejected", "credited_paisa"}
    inventory.ward_blockers     {admission_id} -> {"blockers": [{"kind", "text", "id"}], "count"}

inventory.dispense never raises for a business outcome: an allergy, stock short or more
than prescribed comes back as {"ok": false, "problems": [...]} for a gateway to branch on.

The "medicines" lookup of task forms (forms/dispense.json) has no membership validator
from this package: hms.forms calls lookup validators with the submitted values only, no
database session, so whether a code exists cannot be checked there. The lookup keeps its
built-in label ("medicine"), and inventory.dispense reports a code that is not in the
formulary as the problem "unknown_item" (the task is then shown again with the message).
"""

from __future__ import annotations

from marshmallow import Schema, fields

from hms.errors import Invalid, NotFound
from hms.workflow.operations import OperationContext, OperationError, operation
from inventory import services, ward_issues
from inventory.schemas import (AdmissionParams, CheckAllergiesParams, DispenseIdParams, DispenseOperationParams,
                               ReceiveReturnsParams, RequestReturnsParams, ReturnParams)


def _patient_of(ctx: OperationContext, params: dict) -> int:
    """The patient in the parameters, which must be the pathway's patient when it has one."""
    patient_id = params["patient_id"]
    if ctx.patient_id is not None and int(ctx.patient_id) != patient_id:
        raise OperationError(f"patient_id {patient_id} is not the patient of this pathway ({ctx.patient_id}).")
    return patient_id


@operation("inventory.check_allergies", params=CheckAllergiesParams)
def check_allergies(ctx: OperationContext, params: dict) -> dict:
    """Allergy alerts for medicines a patient is to receive (by substance or drug class)."""
    alerts = services.check_allergies(ctx.session, _patient_of(ctx, params), params["item_codes"])
    return {"alerts": [dict(a) for a in alerts], "has_alerts": bool(alerts)}


@operation("inventory.dispense", params=DispenseOperationParams)
def dispense(ctx: OperationContext, params: dict) -> dict:
    """Dispense against a prescription, first expiry first out; problems come back as data."""
    patient_id = _patient_of(ctx, params)
    # The task form lets the pharmacist set 0 for a medicine not dispensed now.
    kept = [n for n, line in enumerate(params["lines"]) if line["quantity"] > 0]
    lines = [params["lines"][n] for n in kept]
    if not lines:
        return {"ok": False, "dispense_id": None, "lines": [], "total_paisa": 0, "shortfalls": [],
                "problems": [{"item_code": None, "code": "nothing_to_dispense",
                              "message": "Every quantity is 0: enter what is handed to the patient."}]}
    outcome = services.dispense(
        ctx.session, ctx.actor, patient_id=patient_id, prescription_ref=params["prescription_ref"],
        lines=lines, partial_reason=params.get("partial_reason"),
        allergy_override_reason=params.get("allergy_override_reason"), admission_id=params.get("admission_id"))
    # "line" counts the lines passed to the service; give it back as the form's row.
    for entry in outcome["problems"] + outcome["shortfalls"]:
        if isinstance(entry.get("line"), int) and 0 <= entry["line"] < len(kept):
            entry["line"] = kept[entry["line"]]
    return dict(outcome)


@operation("inventory.return_items", params=ReturnParams)
def return_items(ctx: OperationContext, params: dict) -> dict:
    """Take back dispensed units into their batch; the amount is the bill credit."""
    return services.return_items(ctx.session, ctx.actor, dispense_line_id=params["dispense_line_id"],
                                 quantity=params["quantity"], reason=params["reason"])


class DescribeLinesParams(Schema):
    lines = fields.List(fields.Dict(), required=True)


@operation("inventory.describe_lines", params=DescribeLinesParams)
def describe_lines(ctx: OperationContext, params: dict) -> list:
    """What the pharmacist is asked to hand over: each prescription line with the medicine's
    name, strength and form, and the units in stock (unexpired). Reads only."""
    described = []
    for line in params["lines"]:
        code = str(line.get("item_code", ""))
        try:
            item = services.get_item(ctx.session, code)
        except NotFound:
            described.append({"item_code": code, "medicine": "not in the formulary",
                              "quantity": line.get("quantity")})
            continue
        stock = services.item_stock(ctx.session, item)
        described.append({"item_code": item.code, "medicine": item.display_name,
                          "quantity": line.get("quantity"), "in_stock": stock["stock_on_hand"]})
    return described


class DispenseLinesParams(Schema):
    prescription_lines = fields.List(fields.Dict(), required=True)


@operation("inventory.dispense_lines", params=DispenseLinesParams)
def dispense_lines(ctx: OperationContext, params: dict) -> list:
    """The dispensing form's starting rows: each prescription line as {item_code, quantity,
    prescription_item_id}, nothing else (the form refuses unknown columns). Reads nothing."""
    return [{"item_code": str(line.get("item_code", "")), "quantity": line.get("quantity"),
             "prescription_item_id": line.get("prescription_item_id")}
            for line in params["prescription_lines"]]


# --- issues to wards ---------------------------------------------------------------------

@operation("inventory.ward_issue_info", params=DispenseIdParams)
def ward_issue_info(ctx: OperationContext, params: dict) -> dict:
    """What a ward issue holds (medicine names and quantities), for the nurse's accept task."""
    return ward_issues.ward_issue_info(ctx.session, params["dispense_id"])


@operation("inventory.accept_ward_issue", params=DispenseIdParams)
def accept_ward_issue(ctx: OperationContext, params: dict) -> dict:
    """The ward confirms it received a pharmacy issue (refused twice and for OPD dispenses)."""
    record = ward_issues.accept_ward_issue(ctx.session, ctx.actor, params["dispense_id"])
    return {"ok": True, "dispense_id": record.id}


@operation("inventory.issued_on_hand", params=AdmissionParams)
def issued_on_hand(ctx: OperationContext, params: dict) -> dict:
    """Medicines issued to an admission and what the ward still holds of each line."""
    return {"lines": ward_issues.issued_on_hand(ctx.session, params["admission_id"])}


@operation("inventory.request_returns", params=RequestReturnsParams)
def request_returns(ctx: OperationContext, params: dict) -> dict:
    """Send unused medicines back to pharmacy; rows with quantity 0 are skipped."""
    ids = []
    for line in params["lines"]:
        if line["quantity"] <= 0:
            continue
        record = ward_issues.request_ward_return(ctx.session, ctx.actor, admission_id=params["admission_id"],
                                                 dispense_line_id=line["dispense_line_id"],
                                                 quantity=line["quantity"], reason=line.get("reason"))
        ids.append(record.id)
    return {"return_ids": ids, "count": len(ids)}


@operation("inventory.pending_returns", params=AdmissionParams)
def pending_returns(ctx: OperationContext, params: dict) -> dict:
    """Returns of an admission sent by the ward and not yet counted by pharmacy."""
    returns = ward_issues.pending_returns(ctx.session, params["admission_id"])
    return {"returns": returns, "count": len(returns)}


@operation("inventory.receive_returns", params=ReceiveReturnsParams)
def receive_returns(ctx: OperationContext, params: dict) -> dict:
    """Count ward returns: what is received goes back into stock and is credited on the bill."""
    sent = {r["ward_return_id"] for r in ward_issues.pending_returns(ctx.session, params["admission_id"])}
    received = rejected = credited = 0
    for line in params["lines"]:
        if line["ward_return_id"] not in sent:
            raise Invalid(f"Ward return {line['ward_return_id']} is not waiting for pharmacy on admission "
                          f"{params['admission_id']}.", code="not_pending",
                          fields={"ward_return_id": ["Not a pending return of this admission."]})
        outcome = ward_issues.receive_ward_return(ctx.session, ctx.actor, line["ward_return_id"],
                                                  received_quantity=line["received_quantity"], note=line.get("note"))
        sent.discard(line["ward_return_id"])
        if outcome["state"] == "received":
            received += 1
            credited += outcome["amount_paisa"]
        else:
            rejected += 1
    return {"received": received, "rejected": rejected, "credited_paisa": credited}


@operation("inventory.ward_blockers", params=AdmissionParams)
def ward_blockers(ctx: OperationContext, params: dict) -> dict:
    """What the pharmacy still holds an admission's discharge for (unaccepted issues, uncounted returns)."""
    blockers = ward_issues.ward_blockers(ctx.session, params["admission_id"])
    return {"blockers": blockers, "count": len(blockers)}
