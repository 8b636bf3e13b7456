"""Lab blueprint: the JSON API under /api/v1/lab (and a patient's verified results) and
the lab pages (worklist, order with collection/result/verification forms, report and its
PDF). Thin: parsing, permissions and rendering; the rules are in services.
"""

from __future__ import annotations

from flask import Blueprint, Response, flash, jsonify, redirect, render_template, request, url_for

from departments.lab import pdf, rules, services
from departments.lab.models import PRIORITIES, REJECTION_REASONS, SAMPLE_TYPES, SECTIONS
from departments.lab.schemas import (AmendIn, CancelIn, CollectIn, OrderIn, ResultsIn, VerifyIn, order_json,
                                     order_row_json, patient_result_json, result_json, sample_json, test_json)
from hms.auth.permissions import define, requires, roles_for
from hms.auth.roles import ALL_ROLES
from hms.db import config_of
from hms.errors import Conflict, Forbidden, Invalid
from hms.patients import services as patient_services
from hms.web.context import current_actor, db_session, json_body, mark_failed, page_args

bp = Blueprint("lab", __name__, template_folder="templates")

LAB_CATALOGUE = define("lab.tests.read", *sorted(ALL_ROLES))
LAB_ORDER = define("lab.orders.create", "doctor", "admin")
LAB_READ = define("lab.results.read", "doctor", "nurse", "lab_technician", "pathologist", "admin")
LAB_WORKLIST = define("lab.worklist", "lab_technician", "pathologist", "admin")
LAB_COLLECT = define("lab.samples.collect", "lab_technician")
LAB_ENTER = define("lab.results.enter", "lab_technician")
LAB_VERIFY = define("lab.results.verify", "pathologist")
LAB_AMEND = define("lab.results.amend", "lab_technician", "pathologist")
LAB_CANCEL = define("lab.orders.cancel", "doctor", "lab_technician", "admin")

# Lab staff see results before verification; everyone else sees verified results only.
DRAFT_READERS = ("lab_technician", "pathologist")


def _can(permission: str) -> bool:
    return current_actor().has_role(*roles_for(permission))


def _sees_drafts() -> bool:
    return current_actor().has_role(*DRAFT_READERS)


# --- JSON API --------------------------------------------------------------------------

@bp.get("/api/v1/lab/tests")
@requires(LAB_CATALOGUE)
def api_tests():
    include_inactive = request.args.get("include_inactive") in ("1", "true", "yes")
    tests = services.list_tests(db_session(), request.args.get("q"), include_inactive=include_inactive)
    return jsonify({"items": [test_json(t) for t in tests]})


@bp.get("/api/v1/lab/tests/<code>")
@requires(LAB_CATALOGUE)
def api_test(code: str):
    return jsonify(test_json(services.get_test(db_session(), code)))


@bp.post("/api/v1/lab/orders")
@requires(LAB_ORDER)
def api_create_order():
    data = OrderIn().load(json_body())
    session = db_session()
    order = services.create_order(session, current_actor(), **data)
    view = services.order_detail(session, current_actor(), order.id, include_drafts=_sees_drafts())
    resp = jsonify(order_json(view))
    resp.status_code = 201
    resp.headers["Location"] = url_for("lab.api_order", order_id=order.id)
    return resp


@bp.get("/api/v1/lab/orders")
@requires(LAB_READ)
def api_orders():
    page, size = page_args()
    patient_id = request.args.get("patient_id")
    if patient_id is not None and not patient_id.isdigit():
        raise Invalid("patient_id must be a number.", fields={"patient_id": ["Must be a number."]})
    orders, total = services.list_orders(db_session(), current_actor(),
                                         patient_id=int(patient_id) if patient_id else None,
                                         status=request.args.get("status") or None, page=page, size=size)
    return jsonify({"items": [order_row_json(o) for o in orders], "page": page, "size": size, "total": total})


@bp.get("/api/v1/lab/orders/<int:order_id>")
@requires(LAB_READ)
def api_order(order_id: int):
    view = services.order_detail(db_session(), current_actor(), order_id, include_drafts=_sees_drafts())
    return jsonify(order_json(view))


@bp.post("/api/v1/lab/orders/<int:order_id>/collect")
@requires(LAB_COLLECT)
def api_collect(order_id: int):
    data = CollectIn().load(json_body())
    session = db_session()
    outcome = services.record_collection(session, current_actor(), order_id, **data)
    return jsonify({
        "ok": bool(data["collected"] and outcome.pending == 0), "labels": outcome.labels,
        "pending": outcome.pending,
        "collected": [sample_json(s, [], {}) for s in outcome.collected],
        "rejected": [sample_json(s, [], {}) for s in outcome.rejected],
    })


@bp.post("/api/v1/lab/orders/<int:order_id>/results")
@requires(LAB_ENTER)
def api_results(order_id: int):
    data = ResultsIn().load(json_body())
    session = db_session()
    outcome = services.enter_results(session, current_actor(), order_id, data["results"])
    names = services.user_names(session, [current_actor().user_id])
    return jsonify({"saved": len(outcome.saved), "unchanged": outcome.unchanged, "complete": outcome.complete,
                    "results": [result_json(r, names) for r in outcome.saved]})


@bp.post("/api/v1/lab/orders/<int:order_id>/verify")
@requires(LAB_VERIFY)
def api_verify(order_id: int):
    data = VerifyIn().load(json_body())
    outcome = services.verify_order(db_session(), current_actor(), order_id, **data)
    return jsonify({"verified_items": outcome.verified_items, "returned_items": outcome.returned_items,
                    "all_verified": outcome.all_verified, "critical": outcome.critical})


@bp.post("/api/v1/lab/results/<int:result_id>/amend")
@requires(LAB_AMEND)
def api_amend(result_id: int):
    data = AmendIn().load(json_body())
    session = db_session()
    result = services.amend_result(session, current_actor(), result_id, **data)
    return jsonify(result_json(result, services.user_names(session, [result.entered_by_id]))), 201


@bp.post("/api/v1/lab/order-items/<int:item_id>/cancel")
@requires(LAB_CANCEL)
def api_cancel_item(item_id: int):
    data = CancelIn().load(json_body())
    item = services.cancel_item(db_session(), current_actor(), item_id, data["reason"])
    return jsonify({"id": item.id, "order_id": item.order_id, "status": item.status,
                    "tariff_code": item.test.tariff_code, "source_ref": f"lab_order_item:{item.id}"})


@bp.get("/api/v1/patients/<int:patient_id>/lab-results")
@requires(LAB_READ)
def api_patient_results(patient_id: int):
    page, size = page_args()
    session = db_session()
    rows, total = services.patient_results(session, current_actor(), patient_id, page=page, size=size)
    names = services.user_names(session, [v for row in rows for v in (row["result"].entered_by_id,
                                                                       row["result"].verified_by_id)])
    return jsonify({"items": [patient_result_json(row, names) for row in rows],
                    "page": page, "size": size, "total": total})


# --- HTML pages ------------------------------------------------------------------------

def _render(template: str, status: int = 200, **context):
    return render_template(template, sample_types=SAMPLE_TYPES, sections=SECTIONS,
                           rejection_reasons=REJECTION_REASONS, priorities=PRIORITIES,
                           critical_text=rules.critical_text, **context), status


@bp.get("/lab")
@requires(LAB_WORKLIST)
def worklist_page():
    page, size = page_args()
    stage = request.args.get("stage") or "collection"
    if stage not in services.STAGES:
        stage = "collection"
    priority = request.args.get("priority") or None
    if priority not in PRIORITIES:
        priority = None
    q = (request.args.get("q") or "").strip()
    rows, total = services.worklist(db_session(), current_actor(), stage=stage, priority=priority, q=q,
                                    page=page, size=size)
    return _render("lab/worklist.html", rows=rows, total=total, page=page, size=size, stage=stage,
                   stages=services.STAGES, priority=priority, q=q)


@bp.get("/lab/orders/new")
@requires(LAB_ORDER)
def new_order_page():
    session = db_session()
    patient_id = request.args.get("patient_id", "")
    patient = patient_services.get_patient(session, current_actor(), patient_id) if patient_id else None
    return _render("lab/order_new.html", patient=patient, tests=services.list_tests(session),
                   values={}, errors={})


@bp.post("/lab/orders/new")
@requires(LAB_ORDER)
def new_order_submit():
    session = db_session()
    form = request.form
    patient_id = form.get("patient_id", "")
    patient = patient_services.get_patient(session, current_actor(), patient_id, audit_read=False)
    codes = form.getlist("test_codes")
    try:
        order = services.create_order(session, current_actor(), patient_id=patient.id, test_codes=codes,
                                      priority=form.get("priority") or "routine")
    except Invalid as err:
        mark_failed()
        return _render("lab/order_new.html", err.http_status, patient=patient,
                       tests=services.list_tests(session), values={"test_codes": codes,
                                                                   "priority": form.get("priority")},
                       errors=err.fields, form_message=err.message)
    flash(f"Ordered {order.order_no}.")
    return redirect(url_for("lab.order_page", order_id=order.id))


def _order_page(order_id: int, status: int = 200, **context):
    session = db_session()
    drafts = _sees_drafts()
    view = services.order_detail(session, current_actor(), order_id, include_drafts=drafts)
    rejectable = services.rejectable_sample_ids(session, view["order"]) if _can(LAB_COLLECT) else set()
    return _render("lab/order.html", status, view=view, drafts=drafts, rejectable=rejectable,
                   can_collect=_can(LAB_COLLECT), can_enter=_can(LAB_ENTER), can_verify=_can(LAB_VERIFY),
                   can_amend=_can(LAB_AMEND), can_cancel=_can(LAB_CANCEL),
                   can_worklist=_can(LAB_WORKLIST), me=current_actor().user_id, **context)


@bp.get("/lab/orders/<int:order_id>")
@requires(LAB_READ)
def order_page(order_id: int):
    return _order_page(order_id)


def _refused(order_id: int, err, section: str, **context):
    mark_failed()
    return _order_page(order_id, err.http_status, problem={"section": section, "message": err.message,
                                                           "fields": err.fields}, **context)


@bp.post("/lab/orders/<int:order_id>/collect")
@requires(LAB_COLLECT)
def collect_submit(order_id: int):
    form = request.form
    collected = form.get("collected") == "1"
    try:
        outcome = services.record_collection(
            db_session(), current_actor(), order_id, collected=collected,
            rejection_reason=form.get("rejection_reason") or None, label=form.get("label") or None,
            note=form.get("note") or None)
    except (Invalid, Conflict) as err:
        return _refused(order_id, err, "collect")
    if collected:
        flash("Collected: label " + ", ".join(outcome.labels) + ". Write the label on each container.")
    else:
        flash("Sample rejected (" + ", ".join(outcome.labels) + "); the tests await a new sample.")
    return redirect(url_for("lab.order_page", order_id=order_id))


@bp.post("/lab/samples/<int:sample_id>/reject")
@requires(LAB_COLLECT)
def reject_submit(sample_id: int):
    session = db_session()
    sample = services.sample_of(session, sample_id)
    try:
        services.reject_sample(session, current_actor(), sample.id, request.form.get("rejection_reason") or "",
                               note=request.form.get("note") or None)
    except (Invalid, Conflict) as err:
        return _refused(sample.order_id, err, f"sample-{sample.id}")
    flash(f"Sample {sample.label} rejected; the tests await a new sample.")
    return redirect(url_for("lab.order_page", order_id=sample.order_id))


def _form_results(order) -> tuple[list[dict], list[str]]:
    """Filled result inputs ("r-<item id>-<analyte code>") as rows, and each row's input name."""
    rows, names = [], []
    for item in order.items:
        if item.status in ("ordered", "cancelled"):
            continue
        for analyte in item.test.analytes:
            name = f"r-{item.id}-{analyte.code}"
            value = (request.form.get(name) or "").strip()
            if value:
                rows.append({"test_code": item.test.code, "analyte_code": analyte.code, "value": value})
                names.append(name)
    return rows, names


@bp.post("/lab/orders/<int:order_id>/results")
@requires(LAB_ENTER)
def results_submit(order_id: int):
    session = db_session()
    order = services.get_order(session, order_id)
    rows, names = _form_results(order)
    try:
        outcome = services.enter_results(session, current_actor(), order.id, rows)
    except (Invalid, Conflict) as err:
        fields = {}
        for key, messages in err.fields.items():
            parts = key.split(".")
            if len(parts) >= 2 and parts[0] == "results" and parts[1].isdigit() and int(parts[1]) < len(names):
                fields[names[int(parts[1])]] = messages
            else:
                fields[key] = messages
        err.fields = fields
        return _refused(order.id, err, "results", entered=request.form.to_dict())
    message = f"Saved {len(outcome.saved)} result(s)."
    if outcome.complete:
        message += " All results are in: they await verification."
    flash(message)
    return redirect(url_for("lab.order_page", order_id=order.id))


@bp.post("/lab/orders/<int:order_id>/verify")
@requires(LAB_VERIFY)
def verify_submit(order_id: int):
    approve = request.form.get("decision") == "approve"
    try:
        outcome = services.verify_order(db_session(), current_actor(), order_id, approve=approve,
                                        comment=request.form.get("comment") or None)
    except (Invalid, Conflict, Forbidden) as err:
        return _refused(order_id, err, "verify", comment=request.form.get("comment", ""))
    if approve:
        flash("Results verified." + (" CRITICAL values: inform the doctor now." if outcome.critical else ""))
    else:
        flash("Results sent back for re-entry.")
    return redirect(url_for("lab.order_page", order_id=order_id))


@bp.post("/lab/results/<int:result_id>/amend")
@requires(LAB_AMEND)
def amend_submit(result_id: int):
    session = db_session()
    result = services.result_of(session, result_id)
    item = services.item_of(session, result.item_id)
    try:
        new = services.amend_result(session, current_actor(), result.id, value=request.form.get("value", ""),
                                    reason=request.form.get("reason", ""))
    except (Invalid, Conflict) as err:
        return _refused(item.order_id, err, f"amend-{result.id}", amend_values=request.form.to_dict())
    flash(f"Amendment saved as version {new.version}; it needs verification.")
    return redirect(url_for("lab.order_page", order_id=item.order_id))


@bp.post("/lab/order-items/<int:item_id>/cancel")
@requires(LAB_CANCEL)
def cancel_submit(item_id: int):
    session = db_session()
    item = services.item_of(session, item_id)
    try:
        services.cancel_item(session, current_actor(), item.id, request.form.get("reason", ""))
    except (Invalid, Conflict) as err:
        return _refused(item.order_id, err, f"cancel-{item.id}")
    flash(f"{item.test.code} cancelled.")
    return redirect(url_for("lab.order_page", order_id=item.order_id))


@bp.get("/lab/orders/<int:order_id>/report")
@requires(LAB_READ)
def report_page(order_id: int):
    view = services.report(db_session(), current_actor(), order_id)
    return _render("lab/report.html", view=view)


@bp.get("/lab/orders/<int:order_id>/report.pdf")
@requires(LAB_READ)
def report_pdf(order_id: int):
    session = db_session()
    view = services.report(session, current_actor(), order_id)
    body = pdf.render_report(view, config_of(session).tz)
    filename = f"{view['order'].order_no}.pdf"
    return Response(bytes(body), mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{filename}"',
                             "Cache-Control": "no-store"})
