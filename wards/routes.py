"""Wards blueprint: the bed board API (/api/v1/wards), bed state changes
(/api/v1/beds/<id>/...) and the bed board page (/wards/board). Thin: parsing, permissions
and rendering; the rules and the ward scope checks are in services.
"""

from __future__ import annotations

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for

from hms.auth.permissions import define, requires, roles_for
from hms.errors import Conflict, Forbidden, Invalid
from hms.web.context import current_actor, db_session, json_body, mark_failed
from wards import services
from wards.models import BED_STATES
from wards.schemas import OptionalReasonIn, ReasonIn, ReserveIn, assignment_json, bed_json, ward_json

bp = Blueprint("wards", __name__, template_folder="templates")

WARDS_READ = define("wards.board.read", "nurse", "doctor", "reception", "admin", "department_head",
                    "housekeeping", "cashier")
BEDS_ASSIGN = define("wards.beds.assign", "reception", "nurse", "admin")
BEDS_CLEAN = define("wards.beds.clean", "housekeeping", "nurse", "admin")
BEDS_BLOCK = define("wards.beds.block", "nurse", "admin")


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
