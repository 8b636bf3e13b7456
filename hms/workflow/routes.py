"""Tasks, pathways and process instances: the JSON API and the staff "My work" pages.

Thin: every rule lives in hms.workflow.engine / queue / specs. A pathway fault is answered
with 409 `pathway_fault` but the transaction commits, so the instance's error mark (which
an administrator sees and retries) is kept while the user's action is not.
"""

from __future__ import annotations

from flask import Blueprint, current_app, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select

from hms.auth.permissions import define, requires
from hms.auth.roles import ALL_ROLES, ROLES
from hms.errors import BadRequest, HmsError, Invalid
from hms.web.context import current_actor, db_session, json_body, page_args
from hms.workflow import engine, queue, specs, store, taskforms
from hms.workflow.models import ProcessInstance

bp = Blueprint("tasks", __name__, template_folder="templates")

TASKS = define("tasks.work", *ALL_ROLES)
ASSIGN = define("tasks.assign", "department_head", "admin")
PATHWAYS_READ = define("pathways.read", *ALL_ROLES)
PATHWAYS_START = define("pathways.start", *ALL_ROLES)  # the start lane's role is checked per pathway
INSTANCE_READ = define("instances.read", *(ALL_ROLES - {"housekeeping"}))
INSTANCE_CANCEL = define("instances.cancel", "department_head", "admin")
INSTANCE_ADMIN = define("instances.admin", "admin")


# --- JSON shapes ----------------------------------------------------------------------

def item_json(item) -> dict:
    return {
        "id": item.id, "instance_id": item.instance_id, "task": item.task_name, "title": item.title,
        "role": item.role, "pathway": item.pathway_key, "form_key": item.form_key,
        "patient_id": item.patient_id, "ward_id": item.ward_id, "department_id": item.department_id,
        "priority": item.priority, "status": item.status, "claimed_by_id": item.claimed_by_id,
        "due_at": item.due_at.isoformat() if item.due_at else None,
        "overdue": bool(item.due_at and item.due_at < _now()),
        "created_at": item.created_at.isoformat(),
    }


def _now():
    from hms.db import utcnow

    return utcnow()


def instance_json(session, instance: ProcessInstance, *, detail: bool = False) -> dict:
    data = {
        "id": instance.id, "pathway": instance.pathway_key, "version": instance.version,
        "status": instance.status, "patient_id": instance.patient_id, "business_key": instance.business_key,
        "created_at": instance.created_at.isoformat(), "updated_at": instance.updated_at.isoformat(),
        "completed_at": instance.completed_at.isoformat() if instance.completed_at else None,
        "error": ({"message": instance.error_message, "task": instance.error_task}
                  if instance.status == "error" else None),
    }
    if detail:
        data["open_tasks"] = [item_json(i) for i in queue.open_items_of(session, instance.id)]
        events = queue.history(session, instance.id)
        names = _usernames(session, {e.user_id for e in events if e.user_id is not None})
        data["history"] = [{"task": e.task_name, "title": e.title, "action": e.action, "user_id": e.user_id,
                            "user": names.get(e.user_id), "at": e.at.isoformat()} for e in events]
    return data


def _usernames(session, user_ids: set[int]) -> dict[int, str]:
    """Usernames of the history's users, in one query."""
    if not user_ids:
        return {}
    from hms.auth.models import User

    return dict(session.execute(select(User.id, User.username).where(User.id.in_(user_ids))).all())


def _fault_response(result):
    body = {"error": {"code": "pathway_fault", "message": result.fault, "fields": {}},
            "instance": {"id": result.instance.id, "status": result.instance.status}}
    return jsonify(body), 409


def _int_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number.", code="invalid_parameter",
                         fields={name: ["not a number"]}) from None


# --- tasks API ------------------------------------------------------------------------

@bp.get("/api/v1/tasks")
@requires(TASKS)
def api_list_tasks():
    page, size = page_args()
    role = request.args.get("role") or None
    if role and role not in ROLES:
        raise Invalid("Unknown role.", fields={"role": ["unknown role"]})
    result = queue.list_tasks(db_session(), current_actor(), status=request.args.get("status", "open"),
                              role=role, ward_id=_int_arg("ward_id"), patient_id=_int_arg("patient_id"),
                              page=page, size=size)
    return jsonify({"items": [item_json(i) for i in result.items], "page": page, "size": size,
                    "total": result.total, "total_capped": result.total > queue.COUNT_CAP})


def _task_detail(session, actor, item) -> dict:
    from hms.patients.services import patient_banner

    defn = taskforms.definition(session, item.form_key, instance_id=item.instance_id) if item.form_key else None
    data = item_json(item)
    data.update({
        "instructions": item.instructions,
        "patient": patient_banner(session, item.patient_id) if item.patient_id else None,
        "form": defn.schema if defn else None,
        "values": item.form_values or {},
    })
    return data


@bp.get("/api/v1/tasks/<int:task_id>")
@requires(TASKS)
def api_get_task(task_id):
    session, actor = db_session(), current_actor()
    item = queue.get_visible_item(session, actor, task_id)
    return jsonify(_task_detail(session, actor, item))


@bp.post("/api/v1/tasks/<int:task_id>/claim")
@requires(TASKS)
def api_claim(task_id):
    return jsonify(item_json(queue.claim(db_session(), current_actor(), task_id)))


@bp.post("/api/v1/tasks/<int:task_id>/release")
@requires(TASKS)
def api_release(task_id):
    return jsonify(item_json(queue.release(db_session(), current_actor(), task_id)))


@bp.post("/api/v1/tasks/<int:task_id>/assign")
@requires(ASSIGN)
def api_assign(task_id):
    body = json_body()
    user_id = body.get("user_id")
    if not isinstance(user_id, int):
        raise Invalid("Choose the user to assign to.", fields={"user_id": ["a user id is required"]})
    return jsonify(item_json(queue.assign(db_session(), current_actor(), task_id, user_id)))


@bp.post("/api/v1/tasks/<int:task_id>/complete")
@requires(TASKS)
def api_complete(task_id):
    body = json_body()
    data = body.get("data", {})
    if not isinstance(data, dict):
        raise Invalid("data must be an object of form fields.", fields={"data": ["must be an object"]})
    session = db_session()
    result = engine.complete_task(session, current_actor(), task_id, data)
    if not result.ok:
        return _fault_response(result)
    return jsonify({"instance": instance_json(session, result.instance, detail=True)})


# --- pathways and instances -----------------------------------------------------------

@bp.get("/api/v1/pathways")
@requires(PATHWAYS_READ)
def api_pathways():
    grouped: dict[str, dict] = {}
    for v in specs.list_versions(db_session()):
        entry = grouped.setdefault(v.key, {"key": v.key, "name": v.name, "versions": []})
        entry["name"] = v.name
        entry["start_role"] = v.start_role
        entry["versions"].append({"version": v.version, "checksum": v.checksum, "note": v.note,
                                  "published_at": v.published_at.isoformat(), "source": v.source})
    for entry in grouped.values():
        entry["latest_version"] = entry["versions"][-1]["version"]
    return jsonify({"items": list(grouped.values())})


@bp.post("/api/v1/pathways/<key>/instances")
@requires(PATHWAYS_START)
def api_start(key):
    body = json_body()
    patient_id = body.get("patient_id")
    data = body.get("data", {})
    if patient_id is not None and not isinstance(patient_id, int):
        raise Invalid("patient_id must be a number.", fields={"patient_id": ["must be a number"]})
    if not isinstance(data, dict):
        raise Invalid("data must be an object.", fields={"data": ["must be an object"]})
    session = db_session()
    if patient_id is not None:
        from hms.patients.services import get_patient

        get_patient(session, current_actor(), patient_id, audit_read=False)
    result = engine.start_pathway(session, current_actor(), key, patient_id=patient_id, data=data,
                                  business_key=body.get("business_key"))
    if not result.ok:
        return _fault_response(result)
    return jsonify(instance_json(session, result.instance, detail=True)), 201


@bp.get("/api/v1/process-instances/<int:instance_id>")
@requires(INSTANCE_READ)
def api_instance(instance_id):
    session = db_session()
    return jsonify(instance_json(session, store.get_instance(session, instance_id), detail=True))


@bp.get("/api/v1/process-instances")
@requires(INSTANCE_ADMIN)
def api_instances():
    page, size = page_args()
    status = request.args.get("status")
    stmt = select(ProcessInstance).order_by(ProcessInstance.updated_at.desc())
    if status:
        stmt = stmt.where(ProcessInstance.status == status)
    rows = db_session().execute(stmt.offset((page - 1) * size).limit(size)).scalars().all()
    return jsonify({"items": [instance_json(db_session(), r) for r in rows], "page": page, "size": size})


@bp.post("/api/v1/process-instances/<int:instance_id>/cancel")
@requires(INSTANCE_CANCEL)
def api_cancel(instance_id):
    body = json_body()
    instance = engine.cancel_instance(db_session(), current_actor(), instance_id, str(body.get("reason", "")))
    return jsonify(instance_json(db_session(), instance))


@bp.post("/api/v1/process-instances/<int:instance_id>/retry")
@requires(INSTANCE_ADMIN)
def api_retry(instance_id):
    result = engine.retry(db_session(), current_actor(), instance_id)
    if not result.ok:
        return _fault_response(result)
    return jsonify(instance_json(db_session(), result.instance, detail=True))


# --- pages ----------------------------------------------------------------------------

@bp.get("/work")
@requires(TASKS)
def my_work_page():
    session, actor = db_session(), current_actor()
    page, size = page_args()
    status = request.args.get("status", "open")
    role = request.args.get("role") or None
    roles = sorted(actor.roles & set(ROLES))
    result = queue.list_tasks(session, actor, status=status, role=role, ward_id=_int_arg("ward_id"),
                              patient_id=_int_arg("patient_id"), page=page, size=size)
    patients = _patient_labels(session, {i.patient_id for i in result.items if i.patient_id})
    template = "tasks/_rows.html" if request.args.get("fragment") else "tasks/my_work.html"
    return render_template(template, result=result, status=status, role=role, roles=roles,
                           role_labels=ROLES, patients=patients, now=_now(),
                           ward_id=request.args.get("ward_id", ""), patient_id=request.args.get("patient_id", ""))


def _patient_labels(session, ids) -> dict:
    if not ids:
        return {}
    from hms.patients.models import Patient

    rows = session.execute(select(Patient.id, Patient.mrn, Patient.name).where(Patient.id.in_(ids))).all()
    return {r.id: {"mrn": r.mrn, "name": r.name} for r in rows}


@bp.get("/work/tasks/<int:task_id>")
@requires(TASKS)
def task_page(task_id):
    session, actor = db_session(), current_actor()
    item = queue.get_visible_item(session, actor, task_id)
    values = dict(item.form_values or {})
    defn = taskforms.definition(session, item.form_key, instance_id=item.instance_id) if item.form_key else None
    if defn is not None:
        from hms.forms import display_values

        context = values.pop("_context", None)
        values = display_values(defn, values, current_app.extensions["hms_config"].tz)
        if context:
            values["_context"] = context
    return _render_task(session, actor, item, values=values, errors={})


def _render_task(session, actor, item, values, errors, status=200):
    from hms.forms import field_list
    from hms.patients.services import patient_banner

    defn = taskforms.definition(session, item.form_key, instance_id=item.instance_id) if item.form_key else None
    banner = patient_banner(session, item.patient_id) if item.patient_id else None
    instance = store.get_instance(session, item.instance_id)
    return render_template("tasks/task.html", item=item, defn=defn, fields=field_list(defn) if defn else [],
                           lookup_urls=_lookup_urls(), context_links=_context_links(item.form_values or {}),
                           values=values, errors=errors, banner=banner,
                           history=instance_json(session, instance, detail=True)["history"],
                           instance=instance, now=_now()), status


# Form lookups (see docs/forms.md) -> the endpoint answering ?q= with suggestions.
LOOKUP_ENDPOINTS = {"icd10": "opd.api_icd10", "lab_tests": "lab.api_tests", "medicines": "inventory.api_items"}


# Task-data values that name a record another page shows: variable -> (endpoint, id key, label).
CONTEXT_LINKS = {
    "bill": ("finance.bill_page", "bill_id", "bill_id", "Open the bill"),
    "lab_order": ("lab.order_page", "order_id", "order_id", "Open the lab order and results"),
}


def _context_links(values: dict) -> list[dict]:
    context = (values or {}).get("_context") or {}
    links = []
    for name, (endpoint, key, arg, label) in CONTEXT_LINKS.items():
        value = context.get(name)
        if isinstance(value, dict) and value.get(key) and endpoint in current_app.view_functions:
            links.append({"url": url_for(endpoint, **{arg: value[key]}), "label": label})
    return links


def _lookup_urls() -> dict[str, str]:
    return {name: url_for(endpoint) for name, endpoint in LOOKUP_ENDPOINTS.items()
            if endpoint in current_app.view_functions}


@bp.post("/work/tasks/<int:task_id>/claim")
@requires(TASKS)
def claim_submit(task_id):
    try:
        queue.claim(db_session(), current_actor(), task_id)
        flash("Task claimed: it is now in your list.")
    except HmsError as err:
        flash(err.message, "error")
    return redirect(request.form.get("next") or url_for("tasks.task_page", task_id=task_id))


@bp.post("/work/tasks/<int:task_id>/release")
@requires(TASKS)
def release_submit(task_id):
    try:
        queue.release(db_session(), current_actor(), task_id)
        flash("Task released back to the queue.")
    except HmsError as err:
        flash(err.message, "error")
    return redirect(request.form.get("next") or url_for("tasks.my_work_page"))


@bp.post("/work/tasks/<int:task_id>/complete")
@requires(TASKS)
def complete_submit(task_id):
    from hms.forms import coerce_form_post

    session, actor = db_session(), current_actor()
    item = queue.get_visible_item(session, actor, task_id)
    defn = taskforms.definition(session, item.form_key, instance_id=item.instance_id) if item.form_key else None
    data = coerce_form_post(defn, request.form) if defn else {}
    try:
        result = engine.complete_task(session, actor, task_id, data)
    except Invalid as err:
        session.rollback()
        item = queue.get_visible_item(session, actor, task_id)
        return _render_task(session, actor, item, values=data, errors=err.fields, status=422)
    if not result.ok:
        flash(result.fault + " An administrator can retry it.", "error")
        return redirect(url_for("tasks.my_work_page"))
    flash(f"Done: {item.title}.")
    return redirect(url_for("tasks.my_work_page"))


@bp.get("/admin/pathway-errors")
@requires(INSTANCE_ADMIN)
def errors_page():
    rows = db_session().execute(select(ProcessInstance).where(ProcessInstance.status == "error")
                                .order_by(ProcessInstance.updated_at.desc()).limit(200)).scalars().all()
    return render_template("tasks/errors.html", instances=rows)


@bp.post("/admin/pathway-errors/<int:instance_id>/retry")
@requires(INSTANCE_ADMIN)
def retry_submit(instance_id):
    try:
        result = engine.retry(db_session(), current_actor(), instance_id)
        flash("Retried: the pathway continues." if result.ok else result.fault,
              "info" if result.ok else "error")
    except HmsError as err:
        flash(err.message, "error")
    return redirect(url_for("tasks.errors_page"))
