"""Service-task operations of ward nursing (registered as wards.<verb>), called by
vitals_round.bpmn and medication_dose.bpmn and by the scheduler that starts them.

Recording a round or a dose is the nurse's user task followed by `wards.record_vitals_round`
/ `wards.record_dose`; the boundary timer at due + grace calls `wards.mark_round_missed` /
`wards.mark_dose_missed`, whose {"missed": false} (recorded meanwhile) a gateway branches on;
the charge nurse's review calls `wards.review_missed`. Refusals (a closed round, a dose too
early, a bad value) raise: the user task stays open and the nurse sees why.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from hms.errors import Conflict
from hms.workflow.operations import OperationContext, operation
from wards import nursing
from wards.nursing_models import RECORDED_STATUSES

KIND = validate.OneOf(nursing.KINDS)


class RecordRoundParams(Schema):
    round_id = fields.Integer(required=True, strict=True)
    vitals = fields.Dict(required=True)


class RoundParams(Schema):
    round_id = fields.Integer(required=True, strict=True)


class RecordDoseParams(Schema):
    slot_id = fields.Integer(required=True, strict=True)
    status = fields.String(required=True, validate=validate.OneOf(RECORDED_STATUSES))
    reason = fields.String(allow_none=True, load_default=None)


class SlotParams(Schema):
    slot_id = fields.Integer(required=True, strict=True)


class ReviewParams(Schema):
    kind = fields.String(required=True, validate=KIND)
    item_id = fields.Integer(required=True, strict=True)
    note = fields.String(required=True, allow_none=True)


class TaskInfoParams(Schema):
    kind = fields.String(required=True, validate=KIND)
    item_id = fields.Integer(required=True, strict=True)


def _check_patient(ctx: OperationContext, patient_id: int) -> None:
    if ctx.patient_id is not None and patient_id != ctx.patient_id:
        raise Conflict("This nursing item belongs to another patient than this pathway's.", code="wrong_patient")


@operation("wards.record_vitals_round", params=RecordRoundParams)
def record_vitals_round(ctx: OperationContext, params: dict) -> dict:
    """Record a due vitals round's observations (ranges checked, every bad field named)."""
    _check_patient(ctx, nursing.get_round(ctx.session, params["round_id"]).patient_id)
    row = nursing.record_round(ctx.session, ctx.actor, params["round_id"], params["vitals"])
    return {"ok": True, "round_id": row.id}


@operation("wards.mark_round_missed", params=RoundParams)
def mark_round_missed(ctx: OperationContext, params: dict) -> dict:
    """Due + grace passed: a round still due becomes missed ({"missed": true}); recorded meanwhile: false."""
    _check_patient(ctx, nursing.get_round(ctx.session, params["round_id"]).patient_id)
    return {"missed": nursing.mark_round_missed(ctx.session, ctx.actor, params["round_id"])}


@operation("wards.record_dose", params=RecordDoseParams)
def record_dose(ctx: OperationContext, params: dict) -> dict:
    """Record a pending dose as given, not given or held (the last two with a reason)."""
    _check_patient(ctx, nursing.get_slot(ctx.session, params["slot_id"]).patient_id)
    slot = nursing.record_dose(ctx.session, ctx.actor, params["slot_id"], params["status"], params["reason"])
    return {"ok": True, "status": slot.status}


@operation("wards.mark_dose_missed", params=SlotParams)
def mark_dose_missed(ctx: OperationContext, params: dict) -> dict:
    """Due + grace passed: a dose still pending becomes missed ({"missed": true}); else false."""
    _check_patient(ctx, nursing.get_slot(ctx.session, params["slot_id"]).patient_id)
    return {"missed": nursing.mark_dose_missed(ctx.session, ctx.actor, params["slot_id"])}


@operation("wards.review_missed", params=ReviewParams)
def review_missed(ctx: OperationContext, params: dict) -> dict:
    """The ward's charge nurse records what happened to a missed round or dose (a note is required)."""
    row = nursing.review_missed(ctx.session, ctx.actor, params["kind"], params["item_id"], params["note"])
    _check_patient(ctx, row.patient_id)
    return {"ok": True}


@operation("wards.nursing_task_info", params=TaskInfoParams)
def nursing_task_info(ctx: OperationContext, params: dict) -> dict:
    """Ids, due and escalation times (ISO) and the medicine of a round or dose, for its instance."""
    return nursing.task_info(ctx.session, params["kind"], params["item_id"])
