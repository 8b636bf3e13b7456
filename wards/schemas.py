"""API shapes of the wards: marshmallow input schemas (shape and types; the rules live in
services) and the JSON of the bed board."""

from __future__ import annotations

from marshmallow import Schema, fields

from wards.services import BedView, WardView


class ReserveIn(Schema):
    admission_id = fields.Integer(required=True, strict=True)
    patient_id = fields.Integer(required=True, strict=True)


class ReasonIn(Schema):
    reason = fields.String(required=True)


class OptionalReasonIn(Schema):
    reason = fields.String(allow_none=True, load_default=None)


def patient_json(view: BedView) -> dict | None:
    if view.patient is None:
        return None
    return {"id": view.patient.id, "mrn": view.patient.mrn, "name": view.patient.name}


def bed_json(view: BedView) -> dict:
    a = view.assignment
    return {
        "id": view.bed.id, "label": view.bed.label, "state": view.bed.state, "ward_id": view.bed.ward_id,
        "room_id": view.bed.room_id, "patient": patient_json(view),
        "admission_id": a.admission_id if a else None,
        "since": a.started_at.isoformat() if a else None, "days": view.days,
    }


def ward_json(view: WardView) -> dict:
    w = view.ward
    return {"id": w.id, "code": w.code, "name": w.name, "ward_type": w.ward_type, "gender": w.gender,
            "department_id": w.department_id, "counts": view.counts,
            "beds": [bed_json(b) for b in view.beds]}


def assignment_json(assignment) -> dict:
    return {"id": assignment.id, "bed_id": assignment.bed_id, "admission_id": assignment.admission_id,
            "patient_id": assignment.patient_id, "state": assignment.state,
            "started_at": assignment.started_at.isoformat(),
            "occupied_at": assignment.occupied_at.isoformat() if assignment.occupied_at else None,
            "ended_at": assignment.ended_at.isoformat() if assignment.ended_at else None}
