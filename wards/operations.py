"""Service-task operations of the wards (registered as wards.<verb>).

A taken bed is a business outcome: `wards.reserve_bed` returns {"ok": false, "problem":
"bed_not_free"} for a gateway to branch on (try another bed, wait). Faults raise: an unknown
bed or patient, a bed of another patient than the pathway's, an admission that already
holds a bed, an illegal state change.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from hms.errors import Conflict
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
