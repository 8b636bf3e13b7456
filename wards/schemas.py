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


def _iso(value):
    return value.isoformat() if value is not None else None


def admission_json(admission, patient=None, ward=None, bed=None) -> dict:
    a = admission
    return {
        "id": a.id, "admission_no": a.admission_no, "state": a.state, "patient_id": a.patient_id,
        "patient": {"id": patient.id, "mrn": patient.mrn, "name": patient.name} if patient else None,
        "department_id": a.department_id, "ward_id": a.ward_id, "bed_id": a.bed_id,
        "ward": {"id": ward.id, "code": ward.code, "name": ward.name, "ward_type": ward.ward_type} if ward else None,
        "bed": {"id": bed.id, "label": bed.label, "state": bed.state} if bed else None,
        "doctor_id": a.doctor_id, "encounter_id": a.encounter_id, "reason": a.reason, "payer_class": a.payer_class,
        "ordered_at": _iso(a.ordered_at), "reserved_at": _iso(a.reserved_at), "admitted_at": _iso(a.admitted_at),
        "charge_from": _iso(a.charge_from), "clinical_discharge_at": _iso(a.clinical_discharge_at),
        "nursing_cleared_at": _iso(a.nursing_cleared_at), "discharged_at": _iso(a.discharged_at),
        "discharge_condition": a.discharge_condition, "instance_id": a.instance_id,
        "discharge_instance_id": a.discharge_instance_id,
    }


def transfer_json(t) -> dict:
    return {"id": t.id, "state": t.state, "from_ward_id": t.from_ward_id, "from_bed_id": t.from_bed_id,
            "to_ward_id": t.to_ward_id, "to_bed_id": t.to_bed_id, "reason": t.reason,
            "requested_by_id": t.requested_by_id, "requested_at": _iso(t.requested_at),
            "decided_by_id": t.decided_by_id, "decided_at": _iso(t.decided_at), "decision_note": t.decision_note}


def order_json(o) -> dict:
    return {"id": o.id, "admission_id": o.admission_id, "kind": o.kind, "code": o.code,
            "description": o.description, "details": o.details, "state": o.state,
            "ordered_by_id": o.ordered_by_id, "ordered_at": _iso(o.ordered_at), "stopped_by_id": o.stopped_by_id,
            "stopped_at": _iso(o.stopped_at), "stop_reason": o.stop_reason, "charge_ref": o.charge_ref}


def summary_json(s) -> dict | None:
    if s is None:
        return None
    return {"diagnoses": s.diagnoses, "procedures": s.procedures, "condition": s.condition,
            "discharge_medicines": s.discharge_medicines, "follow_up": s.follow_up,
            "signed_by_id": s.signed_by_id, "signed_at": _iso(s.signed_at)}


def admission_detail_json(view) -> dict:
    body = admission_json(view.admission, view.patient, view.ward, view.bed)
    body.update(transfers=[transfer_json(t) for t in view.transfers], orders=[order_json(o) for o in view.orders],
                assessment={"recorded": view.assessment is not None,
                            "recorded_at": _iso(view.assessment.recorded_at) if view.assessment else None},
                discharge_summary=summary_json(view.summary), days_admitted=view.days)
    return body
