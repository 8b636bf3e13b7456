"""Nursing blueprint: the round interval, vitals and medication reads and prescribing
(/api/v1/admissions/<id>/..., /api/v1/medication-orders, /api/v1/medication-slots), the
ward's nursing page (/wards/<ward_id>/nursing) and the MAR (/wards/admissions/<id>/mar).

Thin: parsing, permissions and rendering; the rules are in wards.nursing. Recording a round
or a dose is completing its work item (the inpatient journey's routes), not a route here.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from flask import Blueprint, jsonify, render_template, request

from hms.auth.permissions import define, requires
from hms.db import config_of, utcnow
from hms.errors import Invalid, NotFound
from hms.patients.models import Patient
from hms.web.context import current_actor, db_session, json_body
from wards import nursing
from wards.models import Ward
from wards.nursing_models import SLOT_STATUSES, MedicationOrder
from wards.services import check_ward_scope, get_admission

bp = Blueprint("nursing", __name__, template_folder="templates")

ROUND_INTERVAL = define("nursing.round_interval", "doctor", "admin")
VITALS_READ = define("nursing.vitals.read", "nurse", "doctor", "charge_nurse", "admin")
MEDICATION_READ = define("nursing.medication.read", "nurse", "doctor", "pharmacist", "admin")
PRESCRIBE = define("nursing.medication.prescribe", "doctor")
SLOTS_READ = define("nursing.slots.read", "nurse", "admin")
WARD_NURSING = define("nursing.ward.read", "nurse", "doctor", "admin")

# Who sees every ward's nursing work; everyone else (nurses) only their own wards.
UNSCOPED_READERS = ("admin", "doctor")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def round_json(row) -> dict:
    return {"id": row.id, "admission_id": row.admission_id, "ward_id": row.ward_id, "patient_id": row.patient_id,
            "due_at": _iso(row.due_at), "state": row.state,
            "temperature_c": str(row.temperature_c) if row.temperature_c is not None else None,
            "pulse": row.pulse, "systolic": row.systolic, "diastolic": row.diastolic, "resp_rate": row.resp_rate,
            "spo2": row.spo2, "pain_score": row.pain_score, "notes": row.notes,
            "recorded_by_id": row.recorded_by_id, "recorded_at": _iso(row.recorded_at),
            "missed_at": _iso(row.missed_at), "reviewed_by_id": row.reviewed_by_id,
            "reviewed_at": _iso(row.reviewed_at), "review_note": row.review_note, "instance_id": row.instance_id}


def slot_json(slot, order=None) -> dict:
    out = {"id": slot.id, "order_id": slot.order_id, "admission_id": slot.admission_id, "ward_id": slot.ward_id,
           "patient_id": slot.patient_id, "due_at": _iso(slot.due_at), "status": slot.status,
           "reason": slot.reason, "recorded_by_id": slot.recorded_by_id, "recorded_at": _iso(slot.recorded_at),
           "missed_at": _iso(slot.missed_at), "reviewed_at": _iso(slot.reviewed_at),
           "review_note": slot.review_note, "instance_id": slot.instance_id}
    if order is not None:
        out.update(medicine_name=order.medicine_name, dose=order.dose, route=order.route)
    return out


def order_json(order, slots=None) -> dict:
    out = {"id": order.id, "admission_id": order.admission_id, "patient_id": order.patient_id,
           "item_code": order.item_code, "medicine_name": order.medicine_name, "dose": order.dose,
           "route": order.route, "every_hours": order.every_hours, "first_due_at": _iso(order.first_due_at),
           "state": order.state, "ordered_by_id": order.ordered_by_id, "ordered_at": _iso(order.ordered_at),
           "stopped_by_id": order.stopped_by_id, "stopped_at": _iso(order.stopped_at),
           "stop_reason": order.stop_reason}
    if slots is not None:
        out["slots"] = [slot_json(s) for s in slots]
    return out


def _query_int(name: str) -> int | None:
    raw = (request.args.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise Invalid(f"{name} must be a number.", fields={name: ["Must be a number."]})
    return int(raw)


def _ward_in_scope(ward_id: int) -> Ward:
    """The ward (404 first), then 403 `out_of_scope` for a nurse of another ward."""
    session = db_session()
    ward = session.get(Ward, ward_id)
    if ward is None:
        raise NotFound(f"No ward with id {ward_id}.", code="ward_not_found")
    actor = current_actor()
    if not actor.has_role(*UNSCOPED_READERS):
        check_ward_scope(actor, ward.id)
    return ward


# --- JSON API --------------------------------------------------------------------------

@bp.post("/api/v1/admissions/<int:admission_id>/round-interval")
@requires(ROUND_INTERVAL)
def api_round_interval(admission_id: int):
    data = json_body()
    plan = nursing.set_round_interval(db_session(), current_actor(), admission_id, data.get("hours"))
    return jsonify({"admission_id": plan.admission_id, "round_interval_hours": plan.round_interval_hours,
                    "changed_at": _iso(plan.changed_at)})


@bp.get("/api/v1/admissions/<int:admission_id>/vitals")
@requires(VITALS_READ)
def api_vitals(admission_id: int):
    session = db_session()
    rows = nursing.list_rounds(session, current_actor(), admission_id)
    return jsonify({"admission_id": admission_id, "round_interval_hours": nursing.round_interval(session, admission_id),
                    "items": [round_json(r) for r in rows]})


@bp.get("/api/v1/admissions/<int:admission_id>/medication-orders")
@requires(MEDICATION_READ)
def api_medication_orders(admission_id: int):
    orders = nursing.list_orders(db_session(), current_actor(), admission_id)
    return jsonify({"admission_id": admission_id, "items": [order_json(o, slots) for o, slots in orders]})


@bp.post("/api/v1/admissions/<int:admission_id>/medication-orders")
@requires(PRESCRIBE)
def api_start_medication(admission_id: int):
    data = json_body()
    order = nursing.start_medication_order(
        db_session(), current_actor(), admission_id, item_code=data.get("item_code"),
        medicine_name=data.get("medicine_name"), dose=data.get("dose"), route=data.get("route"),
        every_hours=data.get("every_hours"), first_due_at=data.get("first_due_at"))
    return jsonify(order_json(order, [])), 201


@bp.post("/api/v1/medication-orders/<int:order_id>/stop")
@requires(PRESCRIBE)
def api_stop_medication(order_id: int):
    data = json_body()
    order = nursing.stop_medication_order(db_session(), current_actor(), order_id, data.get("reason"))
    return jsonify(order_json(order))


@bp.get("/api/v1/medication-slots")
@requires(SLOTS_READ)
def api_slots():
    ward_id = _query_int("ward_id")
    status = (request.args.get("status") or "").strip() or None
    if status is not None and status not in SLOT_STATUSES:
        raise Invalid(f"Unknown slot status '{status}'.", fields={"status": [f"One of: {', '.join(SLOT_STATUSES)}."]})
    actor = current_actor()
    session = db_session()
    if ward_id is not None:
        ward_ids = [_ward_in_scope(ward_id).id]
    elif actor.has_role("admin"):
        ward_ids = None
    else:
        ward_ids = sorted(actor.ward_ids)
    slots = nursing.list_slots(session, ward_ids=ward_ids, status=status)
    orders = {o.id: o for o in (session.get(MedicationOrder, i) for i in {s.order_id for s in slots})}
    return jsonify({"items": [slot_json(s, orders[s.order_id]) for s in slots]})


# --- pages -------------------------------------------------------------------------------

@bp.get("/wards/<int:ward_id>/nursing")
@requires(WARD_NURSING)
def ward_nursing_page(ward_id: int):
    ward = _ward_in_scope(ward_id)
    now = utcnow()
    work = nursing.list_ward_work(db_session(), ward.id, now)
    return render_template("wards/nursing_ward.html", ward=ward, work=work, now=now,
                           labels=nursing.STATUS_LABELS, ahead_hours=int(nursing.WORK_AHEAD.total_seconds() // 3600))


@bp.get("/wards/admissions/<int:admission_id>/mar")
@requires(MEDICATION_READ)
def mar_page(admission_id: int):
    session = db_session()
    admission = get_admission(session, admission_id)
    raw = (request.args.get("day") or "").strip()
    today = utcnow().astimezone(config_of(session).tz).date()
    problem = None
    try:
        day = date.fromisoformat(raw) if raw else today
    except ValueError:
        day, problem = today, f"'{raw}' is not a date (YYYY-MM-DD); showing today."
    rows = nursing.mar(session, admission.id, day, actor=current_actor())
    patient = session.get(Patient, admission.patient_id)
    return render_template("wards/mar.html", admission=admission, patient=patient, rows=rows, day=day,
                           prev_day=day - timedelta(days=1), next_day=day + timedelta(days=1), today=today,
                           labels=nursing.STATUS_LABELS, problem=problem), (422 if problem else 200)
