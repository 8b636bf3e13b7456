"""Service-task operations of the lab (registered as lab.<verb>).

Each returns JSON for the task's result variable; business outcomes (a sample rejected,
results still missing, the verifier entered the results) are data a gateway branches on.
Faults raise: an unknown order, a bad parameter, or an unknown test code in
`lab.create_order` (the order form's test list should never let one through; failing the
step keeps the order from being dropped silently, and it can be retried once fixed).

When the instance has a patient, an order of another patient is a fault: a pathway
must never act on someone else's order.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from departments.lab import services
from departments.lab.models import PRIORITIES, REJECTION_REASONS
from hms.errors import Conflict, Forbidden, Invalid
from hms.workflow.operations import OperationContext, operation


class CreateOrderParams(Schema):
    patient_id = fields.Integer(required=True, strict=True)
    test_codes = fields.List(fields.String(), required=True)
    encounter_id = fields.Integer(allow_none=True, strict=True, load_default=None)
    admission_id = fields.Integer(allow_none=True, strict=True, load_default=None)
    priority = fields.String(allow_none=True, load_default=None, validate=validate.OneOf(PRIORITIES))


class OrderParams(Schema):
    order_id = fields.Integer(required=True, strict=True)


class CollectionParams(OrderParams):
    collected = fields.Boolean(required=True)
    rejection_reason = fields.String(allow_none=True, load_default=None,
                                     validate=validate.OneOf(list(REJECTION_REASONS)))
    label = fields.String(allow_none=True, load_default=None)


class ResultRowParams(Schema):
    test_code = fields.String(required=True)
    analyte_code = fields.String(required=True)
    value = fields.Raw(required=True, allow_none=True)


class EnterResultsParams(OrderParams):
    results = fields.List(fields.Nested(ResultRowParams), required=True)


class VerifyParams(OrderParams):
    approve = fields.Boolean(required=True)
    comment = fields.String(allow_none=True, load_default=None)


class CancelItemParams(Schema):
    order_item_id = fields.Integer(required=True, strict=True)
    reason = fields.String(required=True)


def _check_patient(ctx: OperationContext, order) -> None:
    if ctx.patient_id is not None and order.patient_id != ctx.patient_id:
        raise Conflict(f"Lab order {order.id} belongs to another patient than this pathway's.",
                       code="wrong_patient")


def _order(ctx: OperationContext, order_id: int):
    order = services.get_order(ctx.session, order_id)
    _check_patient(ctx, order)
    return order


@operation("lab.create_order", params=CreateOrderParams)
def create_order(ctx: OperationContext, params: dict) -> dict:
    """Order lab tests; an empty list orders nothing (order_id None, has_items false)."""
    codes = [c for c in params["test_codes"] if c and c.strip()]
    if not codes:
        return {"order_id": None, "order_no": None, "business_key": None, "items": [], "has_items": False}
    if ctx.patient_id is not None and params["patient_id"] != ctx.patient_id:
        raise Conflict("The lab order names another patient than this pathway's.", code="wrong_patient")
    order = services.create_order(ctx.session, ctx.actor, patient_id=params["patient_id"], test_codes=codes,
                                  encounter_id=params["encounter_id"], admission_id=params["admission_id"],
                                  priority=params["priority"] or "routine")
    return {
        "order_id": order.id, "order_no": order.order_no, "business_key": order.business_key,
        "items": [{"order_item_id": i.id, "test_code": i.test.code, "tariff_code": i.test.tariff_code,
                   "name": i.test.name} for i in order.items],
        "has_items": True,
    }


@operation("lab.record_collection", params=CollectionParams)
def record_collection(ctx: OperationContext, params: dict) -> dict:
    """Record the sample collection of an order, or reject it (ok false: collect again)."""
    order = _order(ctx, params["order_id"])
    collected = params["collected"]
    try:
        with ctx.session.begin_nested():
            outcome = services.record_collection(
                ctx.session, ctx.actor, order.id, collected=collected,
                rejection_reason=params["rejection_reason"] if not collected else None,
                label=params["label"] if collected else None)
    except Conflict as exc:
        if exc.code not in ("nothing_to_collect", "nothing_to_reject", "label_taken"):
            raise
        # Nothing was awaiting collection (a repeated step): report how things stand.
        pending = sum(1 for i in order.items if i.status == "ordered")
        labels = sorted({i.sample.label for i in order.items if i.sample is not None})
        return {"ok": collected and pending == 0 and exc.code == "nothing_to_collect",
                "label": labels[0] if labels else None, "labels": labels, "pending": pending,
                "problem": exc.code}
    except Invalid as exc:
        return {"ok": False, "label": None, "labels": [], "pending": sum(1 for i in order.items if i.status == "ordered"),
                "problem": "invalid", "message": exc.message}
    labels = outcome.labels
    return {"ok": bool(collected and outcome.pending == 0), "label": labels[0] if labels else None,
            "labels": labels, "pending": outcome.pending, "problem": None}


@operation("lab.enter_results", params=EnterResultsParams)
def enter_results(ctx: OperationContext, params: dict) -> dict:
    """Save entered results; problems (bad values, verified results) come back as data."""
    order = _order(ctx, params["order_id"])
    try:
        with ctx.session.begin_nested():
            outcome = services.enter_results(ctx.session, ctx.actor, order.id, params["results"])
    except (Invalid, Conflict) as exc:
        problems = [{"field": key, "message": "; ".join(messages) if isinstance(messages, list) else str(messages)}
                    for key, messages in sorted(exc.fields.items())] or [{"field": None, "message": exc.message}]
        complete = all(i.status in ("resulted", "verified", "cancelled") for i in services.get_order(
            ctx.session, order.id).items)
        return {"ok": False, "problems": problems, "complete": complete}
    return {"ok": True, "problems": [], "complete": outcome.complete, "saved": len(outcome.saved)}


@operation("lab.verify", params=VerifyParams)
def verify(ctx: OperationContext, params: dict) -> dict:
    """Verify (or send back) the order's results; same_person when the verifier entered them."""
    order = _order(ctx, params["order_id"])
    try:
        with ctx.session.begin_nested():
            outcome = services.verify_order(ctx.session, ctx.actor, order.id, approve=params["approve"],
                                            comment=params["comment"])
    except (Forbidden, Conflict, Invalid) as exc:
        return {"ok": False, "problem": exc.code, "message": exc.message,
                "verified": order.status == "verified", "critical": False}
    return {"ok": True, "problem": None, "verified": outcome.all_verified, "critical": outcome.critical,
            "returned": bool(outcome.returned_items)}


@operation("lab.cancel_item", params=CancelItemParams)
def cancel_item(ctx: OperationContext, params: dict) -> dict:
    """Cancel a test before collection (cancelled false once collected or already cancelled)."""
    item = services.item_of(ctx.session, params["order_item_id"])
    _check_patient(ctx, item.order)
    tariff_code = item.test.tariff_code
    source_ref = f"lab_order_item:{item.id}"
    try:
        with ctx.session.begin_nested():
            services.cancel_item(ctx.session, ctx.actor, item.id, params["reason"])
    except (Conflict, Invalid) as exc:
        return {"cancelled": False, "problem": exc.code, "tariff_code": tariff_code, "source_ref": source_ref}
    return {"cancelled": True, "problem": None, "tariff_code": tariff_code, "source_ref": source_ref}


@operation("lab.order_summary", params=OrderParams)
def order_summary(ctx: OperationContext, params: dict) -> dict:
    """Status of an order and its items (no result values) for gateways and task pages."""
    order = _order(ctx, params["order_id"])
    return services.order_summary(ctx.session, ctx.actor, order.id)


def _wanted_analytes(ctx: OperationContext, order_id: int) -> list[tuple[dict, dict]]:
    summary = services.order_summary(ctx.session, ctx.actor, _order(ctx, order_id).id)
    return [(item, analyte) for item in summary["items"] if item.get("status") != "cancelled"
            for analyte in item.get("analytes", [])]


@operation("lab.result_rows", params=OrderParams)
def result_rows(ctx: OperationContext, params: dict) -> list:
    """One empty result row per analyte of the order's live tests: the result-entry form
    starts from these. Reads only."""
    return [{"test_code": item["test_code"], "analyte_code": analyte["code"], "value": ""}
            for item, analyte in _wanted_analytes(ctx, params["order_id"])]


@operation("lab.result_sheet", params=OrderParams)
def result_sheet(ctx: OperationContext, params: dict) -> list:
    """What each result row is, for the technician: "CBC / HB: Haemoglobin (g/dL)", with the
    options of option-type analytes. Reads only."""
    sheet = []
    for item, analyte in _wanted_analytes(ctx, params["order_id"]):
        line = f"{item['test_code']} / {analyte['code']}: {analyte['name']}"
        if analyte.get("units"):
            line += f" ({analyte['units']})"
        if analyte.get("options"):
            line += " one of: " + ", ".join(analyte["options"])
        sheet.append(line)
    return sheet


class AdmissionParams(Schema):
    admission_id = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=2**31 - 1))


@operation("lab.admission_blockers", params=AdmissionParams)
def admission_blockers(ctx: OperationContext, params: dict) -> dict:
    """Lab orders of an admission not yet final (awaiting collection, results or
    verification): the nursing discharge gate waits for them. Reads only."""
    blockers = services.pending_samples_for_admission(ctx.session, params["admission_id"])
    return {"blockers": blockers, "count": len(blockers)}
