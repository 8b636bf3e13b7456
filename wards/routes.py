"""Wards blueprint: the bed board API (/api/v1/wards), bed state changes
(/api/v1/beds/<id>/...), admissions (/api/v1/admissions reads, transfer cancel, order stop)
and the pages (/wards/board, /wards/admissions). Thin: parsing, permissions and rendering;
the rules and the ward scope checks are in services. Creating, discharging, transferring
and ordering go through the inpatient journey (journeys/inpatient.py) and its pathways.
"""

from __future__ import annotations

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for

from hms.auth.permissions import define, requires, roles_for
from hms.errors import Conflict, Forbidden, HmsError, Invalid
from hms.web.context import current_actor, db_session, json_body, mark_failed, page_args
from wards import services
from wards.models import ADMISSION_STATES, BED_STATES
from wards.schemas import (OptionalReasonIn, ReasonIn, ReserveIn, admission_detail_json, admission_json,
                           assignment_json, bed_json, order_json, transfer_json, ward_json)

bp = Blueprint("wards", __name__, template_folder="templates")

WARDS_READ = define("wards.board.read", "nurse", "doctor", "reception", "admin", "department_head",
                    "housekeeping", "cashier")
BEDS_ASSIGN = define("wards.beds.assign", "reception", "nurse", "admin")
BEDS_CLEAN = define("wards.beds.clean", "housekeeping", "nurse", "admin")
BEDS_BLOCK = define("wards.beds.block", "nurse", "admin")
ADMISSIONS_READ = define("wards.admissions.read", "nurse", "doctor", "reception", "admin", "department_head",
                         "cashier", "finance_manager", "pharmacist")
TRANSFER_CANCEL = define("wards.transfers.cancel", "doctor", "nurse", "admin")
ORDER_STOP = define("wards.orders.stop", "doctor", "admin")


def _filters() -> tuple[int | None, str | None]:
    """(ward_id, state) from the query string, validated (422 naming the field)."""
    ward_id = (request.args.get("ward_id") or "").strip()
    state = (request.args.get("state") or "").strip() or None
    if ward_id and not ward_id.isdigit():
        raise Invalid("ward_id must be a number.", fields={"ward_id": ["Must be a number."]})
    if state is not None and state not in BED_STATES:
        raise Invalid(f"Unknown bed state '{state}'.", fields={"state": [f"One of: {', '.join(BED_STATES)}."]})
    return (int(ward_id) if ward_id else None), state


def _bed_payload(bed_id: int) -> dict:
    """The bed as the board shows it (state, patient, days) after a change."""
    session = db_session()
    bed = services.get_bed(session, bed_id)
    views = services.list_wards(session, ward_ids=[bed.ward_id])
    found = [b for w in views for b in w.beds if b.bed.id == bed.id]
    if found:
        return bed_json(found[0])
    return {"id": bed.id, "label": bed.label, "state": bed.state, "ward_id": bed.ward_id,
            "room_id": bed.room_id, "patient": None, "admission_id": None, "since": None, "days": None}


def _bed_response(bed_id: int):
    return jsonify(_bed_payload(bed_id))


# --- JSON API --------------------------------------------------------------------------

@bp.get("/api/v1/wards")
@requires(WARDS_READ)
def api_wards():
    ward_id, state = _filters()
    views = services.list_wards(db_session(), ward_ids=[ward_id] if ward_id else None, state=state)
    return jsonify({"items": [ward_json(v) for v in views]})


@bp.post("/api/v1/beds/<int:bed_id>/reserve")
@requires(BEDS_ASSIGN)
def api_reserve(bed_id: int):
    data = ReserveIn().load(json_body())
    assignment = services.reserve_bed(db_session(), current_actor(), bed_id, **data)
    payload = _bed_payload(bed_id)
    payload["assignment"] = assignment_json(assignment)
    return jsonify(payload), 201


@bp.post("/api/v1/beds/<int:bed_id>/occupy")
@requires(BEDS_ASSIGN)
def api_occupy(bed_id: int):
    services.occupy_bed(db_session(), current_actor(), bed_id)
    return _bed_response(bed_id)


@bp.post("/api/v1/beds/<int:bed_id>/release")
@requires(BEDS_ASSIGN)
def api_release(bed_id: int):
    data = ReasonIn().load(json_body())
    services.release_bed(db_session(), current_actor(), bed_id, data["reason"])
    return _bed_response(bed_id)


@bp.post("/api/v1/beds/<int:bed_id>/vacate")
@requires(BEDS_ASSIGN)
def api_vacate(bed_id: int):
    services.vacate_bed(db_session(), current_actor(), bed_id)
    return _bed_response(bed_id)


@bp.post("/api/v1/beds/<int:bed_id>/clean")
@requires(BEDS_CLEAN)
def api_clean(bed_id: int):
    services.mark_clean(db_session(), current_actor(), bed_id)
    return _bed_response(bed_id)


@bp.post("/api/v1/beds/<int:bed_id>/block")
@requires(BEDS_BLOCK)
def api_block(bed_id: int):
    data = ReasonIn().load(json_body())
    services.block_bed(db_session(), current_actor(), bed_id, data["reason"])
    return _bed_response(bed_id)


@bp.post("/api/v1/beds/<int:bed_id>/unblock")
@requires(BEDS_BLOCK)
def api_unblock(bed_id: int):
    data = OptionalReasonIn().load(request.get_json(silent=True) or {})
    services.unblock_bed(db_session(), current_actor(), bed_id, data["reason"])
    return _bed_response(bed_id)


def _number_arg(name: str) -> int | None:
    raw = (request.args.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 9:
        raise Invalid(f"{name} must be a number.", fields={name: ["Must be a number."]})
    return int(raw)


def _admission_filters() -> dict:
    """state, ward_id, patient_id from the query string, validated (422 naming the field)."""
    state = (request.args.get("state") or "").strip() or None
    if state is not None and state not in ADMISSION_STATES + ("active",):
        raise Invalid(f"Unknown admission state '{state}'.",
                      fields={"state": [f"One of: active, {', '.join(ADMISSION_STATES)}."]})
    return {"state": None if state == "active" else state, "active_only": state == "active",
            "ward_id": _number_arg("ward_id"), "patient_id": _number_arg("patient_id")}


@bp.get("/api/v1/admissions")
@requires(ADMISSIONS_READ)
def api_admissions():
    filters = _admission_filters()
    page, size = page_args(default_size=50, max_size=200)
    session = db_session()
    rows = services.admission_rows(session, services.list_admissions(session, page=page, size=size, **filters))
    return jsonify({"items": [admission_json(*row) for row in rows], "page": page, "size": size})


@bp.get("/api/v1/admissions/<int:admission_id>")
@requires(ADMISSIONS_READ)
def api_admission(admission_id: int):
    return jsonify(admission_detail_json(services.admission_detail(db_session(), current_actor(), admission_id)))


@bp.post("/api/v1/transfers/<int:transfer_id>/cancel")
@requires(TRANSFER_CANCEL)
def api_cancel_transfer(transfer_id: int):
    data = OptionalReasonIn().load(request.get_json(silent=True) or {})
    return jsonify(transfer_json(services.cancel_transfer(db_session(), current_actor(), transfer_id,
                                                          data["reason"])))


@bp.post("/api/v1/orders/<int:order_id>/stop")
@requires(ORDER_STOP)
def api_stop_order(order_id: int):
    data = ReasonIn().load(json_body())
    return jsonify(order_json(services.stop_order(db_session(), current_actor(), order_id, data["reason"])))


# --- HTML pages ------------------------------------------------------------------------

def _can_clean_ward(ward_id: int) -> bool:
    actor = current_actor()
    if not actor.has_role(*roles_for(BEDS_CLEAN)):
        return False
    try:
        services.check_ward_scope(actor, ward_id)
    except Forbidden:
        return False
    return True


def _board(status: int = 200, problem: str | None = None):
    session = db_session()
    try:
        ward_id, state = _filters()
    except Invalid as err:
        ward_id, state, problem, status = None, None, err.message, 422
    all_wards = [v.ward for v in services.list_wards(session)]
    views = services.list_wards(session, ward_ids=[ward_id] if ward_id else None, state=state)
    totals = {s: sum(v.counts[s] for v in views) for s in BED_STATES}
    template = "wards/_board.html" if request.args.get("fragment") == "1" else "wards/board.html"
    return render_template(template, views=views, all_wards=all_wards, ward_id=ward_id, state=state,
                           states=BED_STATES, labels=services.STATE_LABELS, totals=totals, problem=problem,
                           can_clean={v.ward.id: _can_clean_ward(v.ward.id) for v in views}), status


@bp.get("/wards/board")
@requires(WARDS_READ)
def board_page():
    return _board()


@bp.post("/wards/beds/<int:bed_id>/clean")
@requires(BEDS_CLEAN)
def clean_submit(bed_id: int):
    session = db_session()
    bed = services.get_bed(session, bed_id)
    back = url_for("wards.board_page", ward_id=request.form.get("ward_id") or None,
                   state=request.form.get("state") or None)
    try:
        services.mark_clean(session, current_actor(), bed.id)
    except (Conflict, Forbidden) as err:
        mark_failed()
        flash(err.message, "error")
        return redirect(back)
    flash(f"Bed {bed.label} is clean and free.")
    return redirect(back)


ADMISSION_STATE_LABELS = {"ordered": "Ordered", "reserved": "Bed reserved", "admitted": "Admitted",
                          "discharging": "Discharging", "discharged": "Discharged", "cancelled": "Cancelled"}


@bp.get("/wards/admissions")
@requires(ADMISSIONS_READ)
def admissions_page():
    session = db_session()
    status, problem = 200, None
    try:
        filters = _admission_filters()
        page, size = page_args(default_size=50, max_size=200)
    except HmsError as err:
        filters, (page, size), problem, status = ({"state": None, "active_only": True, "ward_id": None,
                                                   "patient_id": None}, (1, 50), err.message, 422)
    rows = services.admission_rows(session, services.list_admissions(session, page=page, size=size + 1, **filters))
    more, rows = len(rows) > size, rows[:size]
    state = "active" if filters["active_only"] else filters["state"]
    return render_template("wards/admissions.html", rows=rows, state=state, ward_id=filters["ward_id"],
                           patient_id=filters["patient_id"], states=ADMISSION_STATES,
                           labels=ADMISSION_STATE_LABELS, all_wards=[v.ward for v in services.list_wards(session)],
                           page=page, more=more, problem=problem, days_admitted=services.days_admitted), status


@bp.get("/wards/admissions/<int:admission_id>")
@requires(ADMISSIONS_READ)
def admission_page(admission_id: int):
    session = db_session()
    view = services.admission_detail(session, current_actor(), admission_id)
    wards = [w.ward for w in services.list_wards(session)]
    return render_template("wards/admission.html", v=view, a=view.admission, labels=ADMISSION_STATE_LABELS,
                           all_wards=wards)
