"""The pathway editor: pages and JSON API for department heads and administrators.

Pages: /pathways (list), /pathways/<key> (versions, rollback, owner, migration),
/pathways/<key>/migrate (preview and run), /pathways/<key>/edit (the bpmn-js editor),
/forms, /forms/new, /forms/<key> (form definitions with live preview).

API (every route: department_head or admin; the pathway's owner is checked per row):
    POST /api/v1/pathways/check-expression {"expression", "kind"?}  -> {"ok", "message"}
    GET|PUT|DELETE /api/v1/pathways/<key>/draft     (PUT body: BPMN XML, application/xml)
    GET  /api/v1/pathways/<key>/diff[?from=N&to=M|draft]
    POST /api/v1/pathways/<key>/publish {"note", "force"?}
    POST /api/v1/pathways/<key>/rollback {"version", "note"}
    GET  /api/v1/pathways/<key>/versions, /api/v1/pathways/<key>/versions/<n>
    PUT  /api/v1/pathways/<key>/owner {"department_id"}              (admin)
    GET  /api/v1/pathways/<key>/instances[?version=N]
    POST /api/v1/pathways/<key>/migrations {"from_version", "to_version", "dry_run"}
    GET  /api/v1/forms, /api/v1/forms/<key>;  POST /api/v1/forms/<key>/versions {"schema", "note"}
    POST /api/v1/forms/preview {"text" | "schema", "key"?} -> {"ok", "problems", "html"}

The bpmn-js assets are served by HMS itself from node_modules (installed by `make`), at
/vendor/bpmn-js/...: a hospital LAN has no CDN.
"""

from __future__ import annotations

import json
from pathlib import Path

from flask import (Blueprint, abort, current_app, flash, jsonify, redirect, render_template,
                   render_template_string, request, send_from_directory, url_for)
from sqlalchemy import select

from hms import form_versions
from hms.auth.permissions import define, public, requires
from hms.errors import BadRequest, HmsError, Invalid, NotFound
from hms.web.context import current_actor, db_session, json_body
from hms.workflow import editor, migrate, specs
from hms.workflow.sandbox import SandboxError, compile_expression, compile_script, parse_duration

bp = Blueprint("pathways", __name__, template_folder="templates")

PATHWAYS_EDIT = define("pathways.edit", "department_head", "admin")
PATHWAYS_OWNER = define("pathways.owner", "admin")
FORMS_EDIT = define("forms.edit", "department_head", "admin")

XML_TYPES = ("application/xml", "text/xml")
STATIC_EDITOR = Path(__file__).resolve().parents[1] / "web" / "static" / "editor"


# --- helpers ----------------------------------------------------------------------------

def _node_modules() -> Path:
    configured = current_app.config.get("HMS_NODE_MODULES")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "node_modules"


def _bpmn_js_dist() -> Path:
    return _node_modules() / "bpmn-js" / "dist"


def _bpmn_js_version() -> str | None:
    try:
        return json.loads((_node_modules() / "bpmn-js" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def _moddle_descriptor() -> dict:
    return json.loads((STATIC_EDITOR / "spiffworkflow-moddle.json").read_text())


def _departments(session) -> list:
    from hms.org.models import Department

    return list(session.execute(select(Department).where(Department.active.is_(True))
                                .order_by(Department.name)).scalars())


def _int_or_400(raw, name: str) -> int | None:
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a whole number.", code="invalid_parameter",
                         fields={name: ["not a number"]}) from None


def _pathway_json(session, key: str) -> dict:
    owner = editor.owner_of(session, key)
    draft = editor.get_draft(session, key)
    versions = editor.versions_json(session, key)
    return {"key": key, "name": versions[-1]["name"] if versions else key,
            "owner_department_id": owner.department_id if owner else None,
            "latest_version": versions[-1]["version"] if versions else None,
            "versions": versions, "draft": editor.draft_json(session, draft, with_xml=False) if draft else None}


def _version_or_draft_xml(session, key: str, which: str | None) -> tuple[str | None, str]:
    """(xml, label) for ?from= / ?to=: a version number, "draft", or "latest"."""
    if which in (None, "", "latest"):
        latest = editor.latest_or_none(session, key)
        return (latest.bpmn_xml, f"v{latest.version}") if latest else (None, "nothing published")
    if which == "draft":
        draft = editor.get_draft(session, key)
        if draft is None:
            raise NotFound(f"Pathway {key} has no draft.", code="draft_not_found")
        return draft.bpmn_xml, "draft"
    number = _int_or_400(which, "version")
    return specs.get_version(session, key, number).bpmn_xml, f"v{number}"


# --- JSON API: expressions ----------------------------------------------------------------

@bp.post("/api/v1/pathways/check-expression")
@requires(PATHWAYS_EDIT)
def api_check_expression():
    """Would the sandbox accept this? kind: expression (default: conditions, parameters,
    timer expressions), script, or duration (an ISO-8601 duration such as PT4H)."""
    body = json_body()
    source = body.get("expression")
    kind = body.get("kind", "expression")
    if not isinstance(source, str):
        raise Invalid("Send the expression to check.", fields={"expression": ["required"]})
    if kind not in ("expression", "script", "duration"):
        raise Invalid("kind is expression, script or duration.", fields={"kind": ["unknown kind"]})
    try:
        if kind == "duration":
            parse_duration(source.strip())
        elif kind == "script":
            compile_script(source, "<editor>")
        else:
            compile_expression(source, "<editor>")
    except (SandboxError, ValueError, TypeError) as err:
        message = str(err) or type(err).__name__
        if kind == "duration":
            message = f'"{source.strip()}" is not an ISO-8601 duration such as PT30M, PT4H or P1D.'
        return jsonify({"ok": False, "message": message})
    return jsonify({"ok": True, "message": "OK"})


# --- JSON API: drafts, diff, publish ------------------------------------------------------

def _draft_body() -> str:
    if request.mimetype in XML_TYPES:
        return request.get_data(as_text=True)
    if request.is_json:
        xml = json_body().get("bpmn_xml")
        if not isinstance(xml, str) or not xml.strip():
            raise Invalid("Send the BPMN XML (Content-Type: application/xml), or JSON {\"bpmn_xml\": ...}.",
                          code="bpmn_missing", fields={"bpmn_xml": ["required"]})
        return xml
    raise BadRequest("Send the BPMN XML with Content-Type: application/xml.", code="xml_required")


@bp.get("/api/v1/pathways/<key>/draft")
@requires(PATHWAYS_EDIT)
def api_get_draft(key):
    session = db_session()
    editor.require_edit(session, current_actor(), key)
    draft = editor.get_draft(session, key)
    if draft is None:
        raise NotFound(f"Pathway {key} has no draft.", code="draft_not_found")
    if request.accept_mimetypes.best_match(["application/json", *XML_TYPES]) in XML_TYPES:
        # A download, never a document: an XML file a browser renders could carry XHTML script.
        resp = current_app.response_class(draft.bpmn_xml, mimetype="application/xml")
        resp.headers["Content-Disposition"] = f'attachment; filename="{key}.bpmn"'
        resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return resp
    return jsonify(editor.draft_json(session, draft))


@bp.put("/api/v1/pathways/<key>/draft")
@requires(PATHWAYS_EDIT)
def api_put_draft(key):
    """Save the draft and lint it: 200 with the problems (a draft may have problems)."""
    session = db_session()
    xml = _draft_body()
    expected = (request.headers.get("If-Match") or "").strip().strip('"') or None
    draft, problems = editor.save_draft(session, current_actor(), key, xml, expected_checksum=expected)
    data = editor.draft_json(session, draft, with_xml=False)
    return jsonify({"draft": data, "problems": data["problems"], "publishable": not problems})


@bp.delete("/api/v1/pathways/<key>/draft")
@requires(PATHWAYS_EDIT)
def api_delete_draft(key):
    editor.discard_draft(db_session(), current_actor(), key)
    return jsonify({"key": key, "discarded": True})


@bp.get("/api/v1/pathways/<key>/diff")
@requires(PATHWAYS_EDIT)
def api_diff(key):
    """Differences from ?from= (default: the latest version) to ?to= (default: the draft)."""
    session = db_session()
    editor.require_edit(session, current_actor(), key)
    old_xml, old_label = _version_or_draft_xml(session, key, request.args.get("from"))
    new_xml, new_label = _version_or_draft_xml(session, key, request.args.get("to", "draft"))
    if new_xml is None:
        raise NotFound(f"Nothing of pathway {key} to compare.", code="pathway_not_found")
    return jsonify(dict(editor.diff_xml(old_xml, new_xml), **{"from": old_label, "to": new_label}))


@bp.post("/api/v1/pathways/<key>/publish")
@requires(PATHWAYS_EDIT)
def api_publish(key):
    body = json_body()
    row = editor.publish_draft(db_session(), current_actor(), key, body.get("note"), force=body.get("force") is True)
    return jsonify({"key": key, "version": row.version, "checksum": row.checksum, "forms": row.forms or {},
                    "published_at": row.published_at.isoformat()}), 201


@bp.post("/api/v1/pathways/<key>/rollback")
@requires(PATHWAYS_EDIT)
def api_rollback(key):
    body = json_body()
    row = editor.rollback(db_session(), current_actor(), key, body.get("version"), body.get("note"))
    return jsonify({"key": key, "version": row.version, "checksum": row.checksum, "note": row.note}), 201


@bp.get("/api/v1/pathways/<key>/versions")
@requires(PATHWAYS_EDIT)
def api_versions(key):
    session = db_session()
    editor.require_edit(session, current_actor(), key)
    return jsonify(_pathway_json(session, key))


@bp.get("/api/v1/pathways/<key>/versions/<int:version>")
@requires(PATHWAYS_EDIT)
def api_version(key, version):
    session = db_session()
    editor.require_edit(session, current_actor(), key)
    row = specs.get_version(session, key, version)
    entry = next(v for v in editor.versions_json(session, key) if v["version"] == version)
    return jsonify(dict(entry, bpmn_xml=row.bpmn_xml))


@bp.put("/api/v1/pathways/<key>/owner")
@requires(PATHWAYS_OWNER)
def api_owner(key):
    body = json_body()
    row = editor.assign_owner(db_session(), current_actor(), key, body.get("department_id"))
    return jsonify({"key": key, "department_id": row.department_id})


# --- JSON API: instances and migration ------------------------------------------------------

@bp.get("/api/v1/pathways/<key>/instances")
@requires(PATHWAYS_EDIT)
def api_instances(key):
    session = db_session()
    editor.require_edit(session, current_actor(), key)
    version = _int_or_400(request.args.get("version"), "version")
    return jsonify({"key": key, "version": version, "items": migrate.instances_json(session, key, version)})


@bp.post("/api/v1/pathways/<key>/migrations")
@requires(PATHWAYS_EDIT)
def api_migrations(key):
    body = json_body()
    session = db_session()
    editor.require_edit(session, current_actor(), key)
    dry_run = body.get("dry_run", True)
    if not isinstance(dry_run, bool):
        raise Invalid("dry_run is true or false.", fields={"dry_run": ["must be true or false"]})
    report = migrate.run(session, current_actor(), key, body.get("from_version"), body.get("to_version"),
                         dry_run=dry_run)
    return jsonify(report)


# --- JSON API: forms --------------------------------------------------------------------------

@bp.get("/api/v1/forms")
@requires(FORMS_EDIT)
def api_forms():
    return jsonify({"items": form_versions.list_forms(db_session())})


@bp.get("/api/v1/forms/<key>")
@requires(FORMS_EDIT)
def api_form(key):
    versions = form_versions.versions(db_session(), key)
    return jsonify({"key": key, "latest_version": versions[-1]["version"], "versions": versions})


@bp.post("/api/v1/forms/<key>/versions")
@requires(FORMS_EDIT)
def api_form_version(key):
    body = json_body()
    schema = body.get("schema")
    if isinstance(schema, str):
        schema = form_versions.parse_schema_text(schema, key)
    row = form_versions.create_version(db_session(), current_actor(), key, schema, body.get("note"))
    return jsonify({"key": row.key, "version": row.version, "checksum": row.checksum}), 201


def _preview_html(defn) -> str:
    from hms.forms import field_list

    return render_template_string('{% from "forms.html" import render_form %}{{ render_form(fields, {}, {}) }}',
                                  fields=field_list(defn))


@bp.post("/api/v1/forms/preview")
@requires(FORMS_EDIT)
def api_form_preview():
    """The form as staff will see it, and its problems; nothing is saved."""
    from hms.forms import form_from_dict

    body = json_body()
    key = body.get("key") if isinstance(body.get("key"), str) and body.get("key") else "preview"
    if "text" in body:
        if not isinstance(body["text"], str):
            raise Invalid("text is the form definition as JSON text.", fields={"text": ["must be text"]})
        try:
            schema = json.loads(body["text"])
        except json.JSONDecodeError as err:
            return jsonify({"ok": False, "html": "",
                            "problems": [f"line {err.lineno} column {err.colno}: {err.msg}"]})
    elif "schema" in body:
        schema = body["schema"]
    else:
        raise Invalid("Send the form definition as text or schema.", fields={"text": ["required"]})
    problems = form_versions.check_definition(schema, key)
    if problems:
        return jsonify({"ok": False, "problems": problems, "html": ""})
    defn = form_from_dict(dict(schema, key=key, version=1), key)
    return jsonify({"ok": True, "problems": [], "html": _preview_html(defn)})


# --- vendor assets ------------------------------------------------------------------------------

@bp.get("/vendor/bpmn-js/<path:filename>")
@public
def vendor_bpmn_js(filename):
    """bpmn-js's built files (dist/), from node_modules: installed by `make`, never a CDN."""
    dist = _bpmn_js_dist()
    if not dist.is_dir():
        abort(404)
    return send_from_directory(dist, filename, max_age=7 * 24 * 3600)


# --- pages: pathways ----------------------------------------------------------------------------

@bp.get("/pathways")
@requires(PATHWAYS_EDIT)
def list_page():
    session, actor = db_session(), current_actor()
    return render_template("pathways/list.html", pathways=editor.overview(session, actor),
                           is_admin=actor.has_role("admin"))


@bp.get("/pathways/new")
@requires(PATHWAYS_OWNER)
def new_page():
    key = (request.args.get("key") or "").strip()
    if not editor_key_ok(key):
        flash("A pathway key is lowercase letters, digits and _ (it is the BPMN process id).", "error")
        return redirect(url_for("pathways.list_page"))
    return redirect(url_for("pathways.editor_page", key=key))


def editor_key_ok(key: str) -> bool:
    return bool(editor.KEY_RE.match(key or ""))


@bp.get("/pathways/<key>")
@requires(PATHWAYS_EDIT)
def pathway_page(key):
    session, actor = db_session(), current_actor()
    editor.require_edit(session, actor, key)
    data = _pathway_json(session, key)
    diff = None
    draft = editor.get_draft(session, key)
    if draft is not None:
        latest = editor.latest_or_none(session, key)
        diff = editor.diff_xml(latest.bpmn_xml if latest else None, draft.bpmn_xml)
    owner = editor.owner_of(session, key)
    return render_template("pathways/pathway.html", p=data, diff=diff, is_admin=actor.has_role("admin"),
                           departments=_departments(session) if actor.has_role("admin") else [],
                           owner_name=editor.department_name(session, owner.department_id) if owner else None,
                           instances=migrate.instances_json(session, key))


@bp.post("/pathways/<key>/owner")
@requires(PATHWAYS_OWNER)
def owner_submit(key):
    department_id = _int_or_400(request.form.get("department_id"), "department_id")
    try:
        editor.assign_owner(db_session(), current_actor(), key, department_id)
        flash("Owner saved: the heads of that department can now change this pathway.")
    except HmsError as err:
        db_session().rollback()
        flash(err.message, "error")
    return redirect(url_for("pathways.pathway_page", key=key))


@bp.post("/pathways/<key>/rollback")
@requires(PATHWAYS_EDIT)
def rollback_submit(key):
    version = _int_or_400(request.form.get("version"), "version")
    try:
        row = editor.rollback(db_session(), current_actor(), key, version, request.form.get("note"))
        flash(f"Version {version} is published again as version {row.version}. Running instances keep their "
              "version; move them on the migration page if you want.")
    except HmsError as err:
        db_session().rollback()
        flash(_refusal_text(err), "error")
    return redirect(url_for("pathways.pathway_page", key=key))


@bp.post("/pathways/<key>/draft/discard")
@requires(PATHWAYS_EDIT)
def discard_submit(key):
    try:
        editor.discard_draft(db_session(), current_actor(), key)
        flash("The draft was discarded.")
    except HmsError as err:
        db_session().rollback()
        flash(err.message, "error")
    return redirect(url_for("pathways.pathway_page", key=key))


def _refusal_text(err: HmsError) -> str:
    problems = (err.fields or {}).get("problems") or []
    if problems:
        return err.message + " " + " ".join(p["message"] for p in problems[:5])
    return err.message


@bp.route("/pathways/<key>/migrate", methods=["GET", "POST"])
@requires(PATHWAYS_EDIT)
def migrate_page(key):
    session, actor = db_session(), current_actor()
    editor.require_edit(session, actor, key)
    source = request.form if request.method == "POST" else request.args
    versions = editor.versions_json(session, key)
    if not versions:
        raise NotFound(f"No pathway named '{key}' is published.", code="pathway_not_found")
    latest = versions[-1]["version"]
    from_version = _int_or_400(source.get("from_version"), "from_version")
    to_version = _int_or_400(source.get("to_version"), "to_version") or latest
    if from_version is None:
        older = [v["version"] for v in versions if v["live_instances"] and v["version"] != to_version]
        from_version = older[0] if older else None
    report, error = None, None
    if from_version is not None:
        try:
            report = migrate.run(session, actor, key, from_version, to_version,
                                 dry_run=request.method != "POST")
        except HmsError as err:
            session.rollback()
            error = err.message
        if report is not None and not report["dry_run"]:
            versions = editor.versions_json(session, key)  # the counts after the move
    return render_template("pathways/migrate.html", key=key, name=versions[-1]["name"], versions=versions,
                           from_version=from_version, to_version=to_version, report=report, error=error)


@bp.get("/pathways/<key>/edit")
@requires(PATHWAYS_EDIT)
def editor_page(key):
    session, actor = db_session(), current_actor()
    editor.require_edit(session, actor, key, allow_new=editor_key_ok(key))
    xml, origin, version, draft = editor.editor_document(session, key)
    bpmn_version = _bpmn_js_version()
    data = {
        "key": key, "xml": xml, "origin": origin, "version": version,
        "draft": editor.draft_json(session, draft, with_xml=False) if draft else None,
        "is_admin": actor.has_role("admin"),
        "catalogue": editor.editor_catalogue(session),
        "moddle": _moddle_descriptor(),
        "urls": {
            "draft": url_for("pathways.api_put_draft", key=key),
            "diff": url_for("pathways.api_diff", key=key),
            "publish": url_for("pathways.api_publish", key=key),
            "check": url_for("pathways.api_check_expression"),
            "pathway": url_for("pathways.pathway_page", key=key),
            "list": url_for("pathways.list_page"),
        },
    }
    name = specs.process_name(xml, key)
    return render_template("pathways/editor.html", key=key, name=name, data=data, bpmn_version=bpmn_version,
                           origin=origin, version=version, draft=data["draft"])


# --- pages: forms -------------------------------------------------------------------------------

@bp.get("/forms")
@requires(FORMS_EDIT)
def forms_page():
    return render_template("pathways/forms.html", forms=form_versions.list_forms(db_session()))


@bp.get("/forms/new")
@requires(FORMS_EDIT)
def form_new_page():
    template = {"title": "New form", "required": ["done"],
                "properties": {"done": {"type": "boolean", "title": "Done"}}}
    return render_template("pathways/form_edit.html", key="", new=True, versions=[],
                           text=json.dumps(template, indent=2), note="", problems=[])


@bp.get("/forms/<key>")
@requires(FORMS_EDIT)
def form_page(key):
    versions = form_versions.versions(db_session(), key)
    schema = dict(versions[-1]["schema"])
    schema.pop("version", None)
    schema.pop("key", None)
    return render_template("pathways/form_edit.html", key=key, new=False, versions=versions,
                           text=json.dumps(schema, indent=2, ensure_ascii=False), note="", problems=[])


@bp.post("/forms/<key>")
@requires(FORMS_EDIT)
def form_submit(key):
    session = db_session()
    new = key == "new"
    if new:
        key = (request.form.get("key") or "").strip()
    text, note = request.form.get("schema", ""), request.form.get("note", "")
    try:
        schema = form_versions.parse_schema_text(text, key or "form")
        row = form_versions.create_version(session, current_actor(), key, schema, note)
    except HmsError as err:
        session.rollback()
        problems = (err.fields or {}).get("schema") or (err.fields or {}).get("key") or [err.message]
        try:
            versions = [] if new else form_versions.versions(session, key)
        except HmsError:
            versions = []
        return render_template("pathways/form_edit.html", key=key, new=new, versions=versions, text=text,
                               note=note, problems=problems, message=err.message), err.http_status
    flash(f"Form {row.key} version {row.version} saved. Pathways published from now on use it.")
    return redirect(url_for("pathways.form_page", key=row.key))


@bp.app_template_filter("iso_localtime")
def _iso_localtime(value: str | None) -> str:
    """An ISO timestamp from the JSON shapes, shown in the hospital's time zone."""
    from datetime import datetime

    if not value:
        return ""
    tz = current_app.extensions["hms_config"].tz
    return datetime.fromisoformat(value).astimezone(tz).strftime("%d %b %Y %H:%M")
