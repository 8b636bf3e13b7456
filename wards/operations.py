"""Service-task operations of the wards (registered as wards.<verb>).

A taken bed is a business outcome: `wards.reserve_bed` returns {"ok": false, "problem":
"bed_not_free"} for a gateway to branch on (try another bed, wait). Faults raise: an unknown
bed or patient, a bed of another patient than the pathway's, an admission that already
holds a bed, an illegal state change. Likewise a transfer's target bed taken meanwhile is
data (`wards.accept_transfer` ok false), and so are the nursing gate's blockers.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from hms.db import utcnow
from hms.errors import Conflict
from hms.patients.models import Patient
from hms.workflow.operations import OperationContext, operation
from wards import services
from wards.models import WARD_GENDERS


class ReserveBedParams(Schema):
    bed_id = fields.Integer(required=True, strict=True)
    admission_id = fields.Integer(required=True, strict=True)
    patient_id = fields.Integer(required=True, strict=True)


class FindFreeBedParams(Schema):
    ward_id = fields.Integer(allow_none=True, strict=True, load_default=None)
    gender = fields.String(allow_none=True, load_default=None,
                           validate=validate.OneOf(WARD_GENDERS + ("other",)))


class BedParams(Schema):
    bed_id = fields.Integer(required=True, strict=True)


def _check_patient(ctx: OperationContext, patient_id: int) -> None:
    if ctx.patient_id is not None and patient_id != ctx.patient_id:
        raise Conflict("The bed would be reserved for another patient than this pathway's.",
                       code="wrong_patient")


@operation("wards.reserve_bed", params=ReserveBedParams)
def reserve_bed(ctx: OperationContext, params: dict) -> dict:
    """Reserve a free bed for an admission; a bed that is not free is data (ok false)."""
    _check_patient(ctx, params["patient_id"])
    bed = services.get_bed(ctx.session, params["bed_id"])
    try:
        services.reserve_bed(ctx.session, ctx.actor, bed.id, admission_id=params["admission_id"],
                             patient_id=params["patient_id"])
    except Conflict as err:
        if err.code != "bed_not_free":
            raise
        return {"ok": False, "problem": "bed_not_free", "bed_id": bed.id, "ward_id": bed.ward_id}
    return {"ok": True, "problem": None, "bed_id": bed.id, "ward_id": bed.ward_id}


@operation("wards.find_free_bed", params=FindFreeBedParams)
def find_free_bed(ctx: OperationContext, params: dict) -> dict:
    """The first free bed of a ward (or any ward) suiting the patient's gender; bed_id None if none."""
    bed = services.find_free_bed(ctx.session, ward_id=params["ward_id"], gender=params["gender"])
    return {"bed_id": bed.id if bed else None, "ward_id": bed.ward_id if bed else None}


@operation("wards.occupy_bed", params=BedParams)
def occupy_bed(ctx: OperationContext, params: dict) -> dict:
    """The reserved patient arrived: reserved -> occupied."""
    assignment = services.occupy_bed(ctx.session, ctx.actor, params["bed_id"])
    _check_patient(ctx, assignment.patient_id)
    return {"bed_id": assignment.bed_id, "state": "occupied", "admission_id": assignment.admission_id}


@operation("wards.vacate_bed", params=BedParams)
def vacate_bed(ctx: OperationContext, params: dict) -> dict:
    """The patient left the bed: occupied -> to_clean, the assignment ends."""
    assignment = services.vacate_bed(ctx.session, ctx.actor, params["bed_id"])
    _check_patient(ctx, assignment.patient_id)
    return {"bed_id": assignment.bed_id, "state": "to_clean", "admission_id": assignment.admission_id}


class AdmissionParams(Schema):
    admission_id = fields.Integer(required=True, strict=True)


class PayerClassParams(Schema):
    admission_id = fields.Integer(required=True, strict=True)
    payer_class = fields.String(required=True)


class AssessmentParams(Schema):
    admission_id = fields.Integer(required=True, strict=True)
    assessment = fields.Dict(required=True)


class AcceptTransferParams(Schema):
    transfer_id = fields.Integer(required=True, strict=True)
    bed_id = fields.Integer(allow_none=True, strict=True, load_default=None)


class RejectTransferParams(Schema):
    transfer_id = fields.Integer(required=True, strict=True)
    reason = fields.String(required=True)


class SummaryParams(Schema):
    admission_id = fields.Integer(required=True, strict=True)
    summary = fields.Dict(required=True)


class GateParams(Schema):
    admission_id = fields.Integer(required=True, strict=True)
    blockers = fields.List(fields.Dict(), required=True)


class BedDayParams(Schema):
    admission_id = fields.Integer(required=True, strict=True)
    final = fields.Boolean(required=True, truthy={True}, falsy={False})


def _admission(ctx: OperationContext, admission_id: int):
    admission = services.get_admission(ctx.session, admission_id)
    if ctx.patient_id is not None and admission.patient_id != ctx.patient_id:
        raise Conflict("The admission belongs to another patient than this pathway's.", code="wrong_patient")
    return admission


@operation("wards.get_admission", params=AdmissionParams)
def get_admission(ctx: OperationContext, params: dict) -> dict:
    """The admission's ids, state, payer class and the patient's gender."""
    a = _admission(ctx, params["admission_id"])
    patient = ctx.session.get(Patient, a.patient_id)
    return {"admission_id": a.id, "admission_no": a.admission_no, "patient_id": a.patient_id,
            "ward_id": a.ward_id, "bed_id": a.bed_id, "department_id": a.department_id, "state": a.state,
            "payer_class": a.payer_class, "gender": patient.sex if patient else None}


@operation("wards.set_payer_class", params=PayerClassParams)
def set_payer_class(ctx: OperationContext, params: dict) -> dict:
    """Record the admission's payer class (the finance code the desk chose)."""
    _admission(ctx, params["admission_id"])
    services.set_payer_class(ctx.session, ctx.actor, params["admission_id"], params["payer_class"])
    return {"ok": True}


@operation("wards.accept_admission", params=AdmissionParams)
def accept_admission(ctx: OperationContext, params: dict) -> dict:
    """The patient is in the reserved bed: bed occupied, admission admitted."""
    _admission(ctx, params["admission_id"])
    a = services.accept_admission(ctx.session, ctx.actor, params["admission_id"])
    return {"bed_id": a.bed_id, "ward_id": a.ward_id}


@operation("wards.record_assessment", params=AssessmentParams)
def record_assessment(ctx: OperationContext, params: dict) -> dict:
    """Store the nursing admission assessment (once)."""
    _admission(ctx, params["admission_id"])
    services.record_assessment(ctx.session, ctx.actor, params["admission_id"], params["assessment"])
    return {"ok": True}


@operation("wards.accept_transfer", params=AcceptTransferParams)
def accept_transfer(ctx: OperationContext, params: dict) -> dict:
    """Move the patient into a bed of the receiving ward (the chosen one, else the first free
    one suiting the patient); a bed that is not free (or none free) is data: ok false."""
    transfer = services.get_transfer(ctx.session, params["transfer_id"])
    admission = _admission(ctx, transfer.admission_id)
    bed_id = params["bed_id"]
    if bed_id is None:
        patient = ctx.session.get(Patient, admission.patient_id)
        bed = services.find_free_bed(ctx.session, ward_id=transfer.to_ward_id,
                                     gender=patient.sex if patient else None)
        if bed is None:
            return {"ok": False, "problem": "bed_not_free", "ward_id": transfer.to_ward_id, "bed_id": None}
        bed_id = bed.id
    try:
        services.accept_transfer(ctx.session, ctx.actor, transfer.id, to_bed_id=bed_id)
    except Conflict as err:
        if err.code != "bed_not_free":
            raise
        return {"ok": False, "problem": "bed_not_free", "ward_id": transfer.to_ward_id, "bed_id": bed_id}
    return {"ok": True, "problem": None, "ward_id": transfer.to_ward_id, "bed_id": bed_id}


@operation("wards.reject_transfer", params=RejectTransferParams)
def reject_transfer(ctx: OperationContext, params: dict) -> dict:
    """The receiving ward refuses the transfer, with a reason."""
    services.reject_transfer(ctx.session, ctx.actor, params["transfer_id"], params["reason"])
    return {"ok": True}


@operation("wards.sign_discharge_summary", params=SummaryParams)
def sign_discharge_summary(ctx: OperationContext, params: dict) -> dict:
    """Store the signed discharge summary; the admission becomes discharging."""
    _admission(ctx, params["admission_id"])
    summary = services.sign_discharge_summary(ctx.session, ctx.actor, params["admission_id"], params["summary"])
    return {"ok": True, "condition": summary.condition}


@operation("wards.pass_nursing_gate", params=GateParams)
def pass_nursing_gate(ctx: OperationContext, params: dict) -> dict:
    """Clear the patient for discharge unless other departments report blockers (data)."""
    _admission(ctx, params["admission_id"])
    return services.pass_nursing_gate(ctx.session, ctx.actor, params["admission_id"], params["blockers"])


@operation("wards.discharge_patient", params=AdmissionParams)
def discharge_patient(ctx: OperationContext, params: dict) -> dict:
    """The patient leaves: bed to_clean, admission discharged."""
    _admission(ctx, params["admission_id"])
    a = services.discharge_patient(ctx.session, ctx.actor, params["admission_id"])
    return {"bed_id": a.bed_id, "ward_id": a.ward_id}


@operation("wards.mark_bed_clean", params=BedParams)
def mark_bed_clean(ctx: OperationContext, params: dict) -> dict:
    """Housekeeping cleaned the bed: to_clean -> free."""
    bed = services.mark_clean(ctx.session, ctx.actor, params["bed_id"])
    return {"bed_id": bed.id, "state": bed.state}


@operation("wards.bed_day_charges", params=BedDayParams)
def bed_day_charges(ctx: OperationContext, params: dict) -> dict:
    """The bed-day and nursing-day charge lines up to now (final: with the last partial day)."""
    _admission(ctx, params["admission_id"])
    lines = services.bed_day_lines(ctx.session, params["admission_id"], until=utcnow(), final=params["final"])
    return {"charges": lines}
