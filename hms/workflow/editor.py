"""The pathway editor's services: who may change a pathway, drafts, the lint of a draft, the
difference between two versions, publishing and rolling back, and a layout for diagrams
that have none.

Rules (DESIGN.md §4):
- A pathway belongs to one department (`pathway_owner`). A department head edits the
  pathways of their departments; an administrator edits every pathway; a pathway without an
  owner is for administrators only.
- A draft is work in progress: saving it always keeps it and returns the lint's problems.
  Publishing lints again and refuses on any problem; a published version is immutable.
- Scripts are code that runs on the server: only an administrator may publish a pathway
  that has a script task or a pre-/post-script.
- Every change is audited: draft.save, draft.discard, pathway.publish (by specs.publish),
  pathway.rollback, pathway.owner.

Never imports flask; hms.workflow.editor_routes is the HTTP face.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from lxml import etree
from sqlalchemy import ForeignKey, JSON, String, Text, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from hms import audit, form_versions
from hms.audit import Actor
from hms.auth.roles import ROLES
from hms.db import Base, utcnow
from hms.errors import Conflict, Forbidden, Invalid, NotFound
from hms.workflow import lint, operations, specs
from hms.workflow.models import PathwayVersion, ProcessInstance

BPMN_NS = specs.BPMN_NS
BPMNDI_NS = "http://www.omg.org/spec/BPMN/20100524/DI"
DC_NS = "http://www.omg.org/spec/DD/20100524/DC"
DI_NS = "http://www.omg.org/spec/DD/20100524/DI"
SPIFF_NS = lint.SPIFF_NS
NS = {"bpmn": BPMN_NS, "bpmndi": BPMNDI_NS, "dc": DC_NS, "di": DI_NS, "spiffworkflow": SPIFF_NS}

NOTE_MAX = 500
# A pathway key is its BPMN process id and the file stem in workflows/.
KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,79}$")
LIVE_STATUSES = ("running", "waiting", "error")
EDIT_ROLES = ("department_head", "admin")


class PathwayOwner(Base):
    """Which department a pathway belongs to (its heads may edit it)."""

    __tablename__ = "pathway_owner"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id"), index=True)
    assigned_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)


class PathwayDraft(Base):
    """The one unpublished working copy of a pathway (at most one per key)."""

    __tablename__ = "pathway_draft"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(80), unique=True)
    bpmn_xml: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(64))
    # The latest published version when the draft was started (None for a new pathway).
    base_version: Mapped[int | None]
    # The lint's problems at the last save (Problem.as_dict()), shown on the list page.
    problems: Mapped[list | None] = mapped_column(JSON)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- ownership and permission -----------------------------------------------------------

def owner_of(session: Session, key: str) -> PathwayOwner | None:
    return session.get(PathwayOwner, key)


def _is_admin(actor: Actor) -> bool:
    return actor.has_role("admin")


def may_edit(actor: Actor, owner: PathwayOwner | None) -> bool:
    if _is_admin(actor):
        return True
    return (owner is not None and actor.has_role("department_head")
            and owner.department_id in actor.department_ids)


def exists(session: Session, key: str) -> bool:
    """A pathway exists once it has a published version or a draft."""
    published = session.execute(select(PathwayVersion.id).where(PathwayVersion.key == key).limit(1)).first()
    return published is not None or session.execute(
        select(PathwayDraft.id).where(PathwayDraft.key == key)).first() is not None


def require_edit(session: Session, actor: Actor, key: str, *, allow_new: bool = False) -> PathwayOwner | None:
    """404 for an unknown pathway (unless `allow_new` and the actor is an administrator),
    then 403 unless the actor may edit it. Returns the owner row (or None)."""
    if not exists(session, key) and not (allow_new and _is_admin(actor)):
        raise NotFound(f"There is no pathway '{key}'.", code="pathway_not_found")
    owner = owner_of(session, key)
    if may_edit(actor, owner):
        return owner
    if not actor.has_role(*EDIT_ROLES):
        raise Forbidden("Only department heads and administrators change pathways.", code="forbidden")
    if owner is None:
        raise Forbidden(f"Pathway {key} belongs to no department yet, so only an administrator can change it.",
                        code="pathway_unowned")
    raise Forbidden(f"Pathway {key} belongs to {department_name(session, owner.department_id)}; only its "
                    "department head or an administrator can change it.", code="other_department")


def department_name(session: Session, department_id: int) -> str:
    from hms.org.models import Department

    dep = session.get(Department, department_id)
    return dep.name if dep else f"department {department_id}"


def assign_owner(session: Session, actor: Actor, key: str, department_id: int) -> PathwayOwner:
    """Make `department_id` the owner of pathway `key` (administrators only; audited)."""
    from hms.org.models import Department

    if not _is_admin(actor) and not actor.is_system:
        raise Forbidden("Only an administrator assigns pathways to departments.", code="forbidden")
    if not exists(session, key):
        raise NotFound(f"There is no pathway '{key}'.", code="pathway_not_found")
    if not isinstance(department_id, int) or isinstance(department_id, bool) or \
            session.get(Department, department_id) is None:
        raise Invalid("Choose an existing department.", fields={"department_id": ["unknown department"]})
    row = owner_of(session, key)
    before = row.department_id if row else None
    if row is None:
        row = PathwayOwner(key=key, department_id=department_id)
        session.add(row)
    row.department_id, row.assigned_by_id, row.assigned_at = department_id, actor.user_id, utcnow()
    session.flush()
    audit.record(session, actor, "pathway.owner", "pathway", key,
                 detail={"key": key, "department_id": department_id, "previous_department_id": before})
    return row


def visible_keys(session: Session, actor: Actor) -> list[str]:
    """The pathways the actor may edit: all for administrators, their departments' for heads."""
    keys = set(session.execute(select(PathwayVersion.key).distinct()).scalars())
    keys |= set(session.execute(select(PathwayDraft.key)).scalars())
    if _is_admin(actor):
        return sorted(keys)
    if not actor.has_role("department_head") or not actor.department_ids:
        return []
    owned = set(session.execute(select(PathwayOwner.key).where(
        PathwayOwner.department_id.in_(sorted(actor.department_ids)))).scalars())
    return sorted(keys & owned)


# --- lint -------------------------------------------------------------------------------

def published_callees(session: Session, key: str, xml: str) -> dict[str, str]:
    """Latest published XML of every pathway `xml` calls, directly or not (unknown ones left
    out: the lint reports them)."""
    try:
        pending = list(specs.called_keys(xml))
    except Invalid:
        return {}
    found: dict[str, str] = {}
    while pending:
        callee = pending.pop()
        if not callee or callee == key or callee in found:
            continue
        try:
            found[callee] = specs.latest_version(session, callee).bpmn_xml
        except NotFound:
            continue
        try:
            pending.extend(specs.called_keys(found[callee]))
        except Invalid:
            continue
    return found


def lint_draft(session: Session, key: str, xml: str) -> list[lint.Problem]:
    """The publish lint of `xml` as pathway `key`, with every form the hospital has (files
    and database versions), the registered operations and the published callees."""
    return lint.lint_xml(xml, key, forms=form_versions.known_keys(session),
                         callee_xml=published_callees(session, key, xml))


def problems_json(problems) -> list[dict]:
    return [p.as_dict() for p in problems]


# --- scripts ------------------------------------------------------------------------------

def script_elements(xml: str) -> list[dict]:
    """Elements that carry code (script tasks, non-empty pre-/post-scripts): {id, name, what}."""
    root = _parse(xml)
    found: dict[str, dict] = {}
    for task in root.iter(f"{{{BPMN_NS}}}scriptTask"):
        found[task.get("id")] = {"id": task.get("id"), "name": task.get("name"), "what": "script task"}
    for tag in ("preScript", "postScript"):
        for hook in root.iter(f"{{{SPIFF_NS}}}{tag}"):
            owner = hook.getparent().getparent() if hook.getparent() is not None else None
            if owner is None or not (hook.text or "").strip():
                continue
            entry = found.setdefault(owner.get("id"), {"id": owner.get("id"), "name": owner.get("name"), "what": ""})
            entry["what"] = ", ".join(filter(None, [entry["what"], "pre-script" if tag == "preScript" else "post-script"]))
    return list(found.values())


def require_script_permission(actor: Actor, xml: str) -> None:
    """403 naming the script elements unless the actor is an administrator."""
    if _is_admin(actor) or actor.is_system:
        return
    scripts = script_elements(xml)
    if scripts:
        names = "; ".join(f'{s["what"]} "{s["name"] or s["id"]}" ({s["id"]})' for s in scripts)
        raise Forbidden(f"Only an administrator can publish a pathway that runs scripts. This one has: {names}. "
                        "Ask an administrator to publish it, or remove the scripts.", code="scripts_need_admin",
                        fields={"script_elements": [s["id"] for s in scripts]})


# --- drafts -------------------------------------------------------------------------------

def checksum(xml: str) -> str:
    return hashlib.sha256(xml.encode()).hexdigest()


def get_draft(session: Session, key: str, *, lock: bool = False) -> PathwayDraft | None:
    stmt = select(PathwayDraft).where(PathwayDraft.key == key)
    if lock:
        stmt = stmt.with_for_update()
    return session.execute(stmt).scalar_one_or_none()


def latest_or_none(session: Session, key: str) -> PathwayVersion | None:
    try:
        return specs.latest_version(session, key)
    except NotFound:
        return None


MAX_XML = 2_000_000


def save_draft(session: Session, actor: Actor, key: str, xml: str, *,
               expected_checksum: str | None = None) -> tuple[PathwayDraft, list[lint.Problem]]:
    """Keep `xml` as the draft of `key` and lint it; returns the draft and its problems.

    A draft with problems is kept (it is work in progress); only a document that is not
    BPMN at all, or names another process, is refused (422). With `expected_checksum` (the
    editor sends the checksum it loaded) a draft someone else saved meanwhile is not
    overwritten (409). Audited as draft.save.
    """
    require_edit(session, actor, key, allow_new=True)
    if not isinstance(xml, str) or not xml.strip():
        raise Invalid("Send the BPMN XML of the pathway.", code="bpmn_missing", fields={"bpmn_xml": ["required"]})
    if len(xml) > MAX_XML:
        raise Invalid("The diagram is too large.", code="bpmn_too_large", fields={"bpmn_xml": ["too large"]})
    root = _parse(xml)
    if etree.QName(root).localname != "definitions" or etree.QName(root).namespace != BPMN_NS:
        raise Invalid("This is not a BPMN diagram (it must start with bpmn:definitions).", code="bpmn_invalid",
                      fields={"bpmn_xml": ["not BPMN"]})
    draft = get_draft(session, key, lock=True)
    if expected_checksum and draft is not None and draft.checksum != expected_checksum:
        raise Conflict("Someone else saved this draft after you opened it. Reload the editor to see their "
                       "changes.", code="draft_changed")
    problems = lint_draft(session, key, xml)
    latest = latest_or_none(session, key)
    if draft is None:
        draft = PathwayDraft(key=key, base_version=latest.version if latest else None)
        session.add(draft)
    draft.bpmn_xml, draft.checksum = xml, checksum(xml)
    draft.problems = problems_json(problems)
    draft.updated_by_id, draft.updated_at = actor.user_id, utcnow()
    session.flush()
    audit.record(session, actor, "draft.save", "pathway_draft", draft.id,
                 detail={"key": key, "checksum": draft.checksum, "problems": len(problems),
                         "base_version": draft.base_version})
    return draft, problems


def discard_draft(session: Session, actor: Actor, key: str) -> None:
    require_edit(session, actor, key)
    draft = get_draft(session, key, lock=True)
    if draft is None:
        raise NotFound(f"Pathway {key} has no draft.", code="draft_not_found")
    audit.record(session, actor, "draft.discard", "pathway_draft", draft.id,
                 detail={"key": key, "checksum": draft.checksum})
    session.delete(draft)
    session.flush()


def draft_json(session: Session, draft: PathwayDraft, *, with_xml: bool = True) -> dict:
    latest = latest_or_none(session, draft.key)
    data = {
        "key": draft.key, "checksum": draft.checksum, "base_version": draft.base_version,
        "latest_version": latest.version if latest else None,
        "stale": bool(latest and draft.base_version != latest.version),
        "updated_by": _username(session, draft.updated_by_id), "updated_at": draft.updated_at.isoformat(),
        "problems": draft.problems or [], "publishable": not draft.problems,
    }
    if with_xml:
        data["bpmn_xml"] = draft.bpmn_xml
    return data


def _username(session: Session, user_id: int | None) -> str | None:
    from hms.auth.models import User

    if user_id is None:
        return None
    user = session.get(User, user_id)
    return user.username if user else None


def _require_note(note) -> str:
    note = (note or "").strip() if isinstance(note, str) else ""
    if not note:
        raise Invalid("Say what changed and why in a note: it is kept with the version.",
                      code="note_required", fields={"note": ["required"]})
    if len(note) > NOTE_MAX:
        raise Invalid(f"The note is longer than {NOTE_MAX} characters.", fields={"note": ["too long"]})
    return note


def form_keys_used(xml: str) -> set[str]:
    root = _parse(xml)
    return {(p.get("value") or "").strip() for p in root.iter(f"{{{SPIFF_NS}}}property")
            if p.get("name") == "formKey" and (p.get("value") or "").strip()}


def _publish_checked(session: Session, actor: Actor, key: str, xml: str, note: str, source: str) -> PathwayVersion:
    """Scripts rule (403), lint (422 listing the problems), then specs.publish with the
    form versions pinned."""
    require_script_permission(actor, xml)
    problems = lint_draft(session, key, xml)
    if problems:
        raise Invalid(f"{key}: {len(problems)} problem(s) stop publishing.", code="lint_failed",
                      fields={"problems": problems_json(problems)})
    pins = form_versions.latest_versions(session, form_keys_used(xml))
    # lint=False: the lint above is the publish lint plus the forms stored in the database,
    # which the start-up linter (files only) does not know.
    return specs.publish(session, actor, key, xml, note=note, source=source, forms=pins, lint=False)


def publish_draft(session: Session, actor: Actor, key: str, note, *, force: bool = False) -> PathwayVersion:
    """Publish the draft of `key` as its next version and clear the draft.

    Refuses with 409 when a version was published after the draft was started (its changes
    would be lost) unless `force`. Audited by specs.publish (pathway.publish).
    """
    require_edit(session, actor, key)
    note = _require_note(note)
    draft = get_draft(session, key, lock=True)
    if draft is None:
        raise NotFound(f"Pathway {key} has no draft to publish.", code="draft_not_found")
    latest = latest_or_none(session, key)
    if latest is not None and draft.base_version != latest.version and not force:
        raise Conflict(f"Version {latest.version} was published after this draft was started from "
                       f"version {draft.base_version}; publishing would undo its changes. Look at the "
                       "differences, then publish anyway if that is what you want.", code="draft_stale")
    row = _publish_checked(session, actor, key, draft.bpmn_xml, note, "editor")
    session.delete(draft)
    session.flush()
    return row


def rollback(session: Session, actor: Actor, key: str, version, note) -> PathwayVersion:
    """Publish version `version`'s XML again as a new version (audited pathway.rollback)."""
    require_edit(session, actor, key)
    note = _require_note(note)
    if not isinstance(version, int) or isinstance(version, bool):
        raise Invalid("Choose the version to go back to.", fields={"version": ["a version number is required"]})
    old = specs.get_version(session, key, version)
    latest = specs.latest_version(session, key)
    if old.version == latest.version:
        raise Conflict(f"Version {version} is already the latest.", code="already_latest")
    row = _publish_checked(session, actor, key, old.bpmn_xml, f"Rollback to v{version}: {note}", "rollback")
    audit.record(session, actor, "pathway.rollback", "pathway_version", row.id,
                 detail={"key": key, "to_version": version, "new_version": row.version})
    return row


# --- versions and instances ---------------------------------------------------------------

def live_counts(session: Session, keys=None) -> dict[tuple[str, int], int]:
    """(key, version) -> instances running, waiting or in error."""
    stmt = (select(ProcessInstance.pathway_key, ProcessInstance.version, func.count())
            .where(ProcessInstance.status.in_(LIVE_STATUSES))
            .group_by(ProcessInstance.pathway_key, ProcessInstance.version))
    if keys is not None:
        stmt = stmt.where(ProcessInstance.pathway_key.in_(sorted(keys) or ["-"]))
    return {(k, v): n for k, v, n in session.execute(stmt).all()}


def versions_json(session: Session, key: str, counts: dict | None = None) -> list[dict]:
    rows = specs.list_versions(session, key)
    counts = counts if counts is not None else live_counts(session, [key])
    names = {}
    for row in rows:
        if row.published_by_id not in names:
            names[row.published_by_id] = _username(session, row.published_by_id)
    return [{"version": r.version, "name": r.name, "checksum": r.checksum, "checksum_short": r.checksum[:10],
             "note": r.note, "source": r.source, "published_by": names.get(r.published_by_id) or "system",
             "published_at": r.published_at.isoformat(), "forms": r.forms or {},
             "live_instances": counts.get((key, r.version), 0)} for r in rows]


def overview(session: Session, actor: Actor) -> list[dict]:
    """The list page: each pathway the actor may edit, with versions, counts, draft, owner."""
    keys = visible_keys(session, actor)
    counts = live_counts(session, keys)
    owners = {o.key: o for o in session.execute(select(PathwayOwner).where(
        PathwayOwner.key.in_(keys or ["-"]))).scalars()}
    drafts = {d.key: d for d in session.execute(select(PathwayDraft).where(
        PathwayDraft.key.in_(keys or ["-"]))).scalars()}
    out = []
    for key in keys:
        versions = versions_json(session, key, counts)
        owner = owners.get(key)
        draft = drafts.get(key)
        out.append({
            "key": key, "name": versions[-1]["name"] if versions else key, "versions": versions,
            "latest_version": versions[-1]["version"] if versions else None,
            "owner_department_id": owner.department_id if owner else None,
            "owner": department_name(session, owner.department_id) if owner else None,
            "draft": draft_json(session, draft, with_xml=False) if draft else None,
            "live_instances": sum(v["live_instances"] for v in versions),
        })
    return out


def editor_document(session: Session, key: str) -> tuple[str, str, int | None, PathwayDraft | None]:
    """What the editor opens: (xml with a diagram, "draft"|"version"|"new", version, draft)."""
    draft = get_draft(session, key)
    if draft is not None:
        return ensure_diagram(draft.bpmn_xml, key), "draft", draft.base_version, draft
    latest = latest_or_none(session, key)
    if latest is not None:
        return ensure_diagram(latest.bpmn_xml, key), "version", latest.version, None
    return blank_pathway(key), "new", None, None


def blank_pathway(key: str, name: str | None = None) -> str:
    """A new pathway: a pool with a Reception lane and a start event."""
    title = name or key.replace("_", " ").capitalize()
    xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n'
           f'<bpmn:definitions xmlns:bpmn="{BPMN_NS}" xmlns:spiffworkflow="{SPIFF_NS}" '
           f'id="Definitions_{key}" targetNamespace="http://bpmn.io/schema/bpmn">'
           f'<bpmn:process id="{key}" name="{_attr(title)}" isExecutable="true">'
           f'<bpmn:laneSet id="LaneSet_{key}"><bpmn:lane id="Lane_Reception" name="Reception">'
           f'<bpmn:flowNodeRef>start</bpmn:flowNodeRef></bpmn:lane></bpmn:laneSet>'
           f'<bpmn:startEvent id="start" name="Start" /></bpmn:process></bpmn:definitions>')
    return ensure_diagram(xml, key)


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def editor_catalogue(session: Session) -> dict:
    """What the side panel offers: roles, forms, operations (with parameters), pathways."""
    forms = []
    for entry in form_versions.list_forms(session):
        if entry["latest_version"] is not None:
            forms.append({"key": entry["key"], "title": entry["title"], "version": entry["latest_version"]})
    return {
        "roles": [{"role": role, "label": label} for role, label in ROLES.items()],
        "forms": forms,
        "operations": operations.catalogue(),
        "pathways": sorted(set(session.execute(select(PathwayVersion.key).distinct()).scalars())),
    }


# --- difference between two documents ----------------------------------------------------

CONTAINERS = ("subProcess", "transaction", "adHocSubProcess")
FIELD_LABELS = {
    "type": "type", "name": "name", "lane": "lane", "form": "form", "properties": "properties",
    "instructions": "instructions", "variable": "result variable of the form", "operation": "operation",
    "result_variable": "operation result variable", "parameters": "operation parameters",
    "condition": "condition", "default": "default flow", "source": "from", "target": "to", "timer": "timer",
    "events": "event", "script": "script", "pre_script": "pre-script", "post_script": "post-script",
    "called": "called pathway", "attached_to": "attached to", "interrupting": "interrupting",
    "loop": "loop settings", "parent": "subprocess",
}


def _parse(xml: str):
    try:
        return etree.fromstring(xml.encode("utf-8"))
    except etree.XMLSyntaxError as err:
        raise Invalid(f"The BPMN file is not valid XML: {err}", code="bpmn_not_xml",
                      fields={"bpmn_xml": [str(err)]}) from None


def _local(el) -> str:
    return etree.QName(el).localname


def _text(el) -> str | None:
    return (el.text or "").strip() if el is not None else None


def _lane_of(root) -> dict[str, str]:
    lanes: dict[str, str] = {}
    for lane in root.iter(f"{{{BPMN_NS}}}lane"):
        for ref in lane.iterfind("bpmn:flowNodeRef", NS):
            # Nested lanes come later in document order, so the innermost lane wins.
            lanes[_text(ref)] = lane.get("name") or lane.get("id")
    return lanes


def _describe(el, lanes: dict[str, str]) -> dict:
    kind = _local(el)
    info: dict = {"type": kind, "name": el.get("name")}
    if el.get("id") in lanes:
        info["lane"] = lanes[el.get("id")]
    parent = el.getparent()
    if parent is not None and _local(parent) in CONTAINERS:
        info["parent"] = parent.get("id")
    ext = el.find("bpmn:extensionElements", NS)
    if ext is not None:
        props = {p.get("name"): p.get("value") for p in ext.iterfind("spiffworkflow:properties/spiffworkflow:property", NS)}
        if "formKey" in props:
            info["form"] = props.pop("formKey")
        if props:
            info["properties"] = props
        for tag, field in (("instructionsForEndUser", "instructions"), ("variableName", "variable"),
                           ("preScript", "pre_script"), ("postScript", "post_script")):
            found = ext.find(f"spiffworkflow:{tag}", NS)
            if found is not None and _text(found):
                info[field] = _text(found)
        operator = ext.find("spiffworkflow:serviceTaskOperator", NS)
        if operator is not None:
            info["operation"] = operator.get("id")
            if operator.get("resultVariable"):
                info["result_variable"] = operator.get("resultVariable")
            info["parameters"] = {p.get("id"): p.get("value")
                                  for p in operator.iterfind(".//spiffworkflow:parameter", NS)}
    if kind == "sequenceFlow":
        info["source"], info["target"] = el.get("sourceRef"), el.get("targetRef")
        cond = el.find("bpmn:conditionExpression", NS)
        if cond is not None and _text(cond):
            info["condition"] = _text(cond)
    if el.get("default"):
        info["default"] = el.get("default")
    script = el.find("bpmn:script", NS)
    if script is not None and _text(script):
        info["script"] = _text(script)
    if el.get("calledElement"):
        info["called"] = el.get("calledElement")
    if kind == "boundaryEvent":
        info["attached_to"] = el.get("attachedToRef")
        info["interrupting"] = el.get("cancelActivity", "true") != "false"
    events = []
    for definition in el:
        if not isinstance(definition.tag, str) or not _local(definition).endswith("EventDefinition"):
            continue
        events.append(_local(definition).replace("EventDefinition", ""))
        for time_el in definition:
            if isinstance(time_el.tag, str) and _local(time_el) in ("timeDuration", "timeDate", "timeCycle"):
                info["timer"] = f"{_local(time_el)} {_text(time_el)}"
        if definition.get("messageRef"):
            events[-1] += f" {definition.get('messageRef')}"
    if events:
        info["events"] = ", ".join(events)
    for loop in el:
        if isinstance(loop.tag, str) and _local(loop) in ("standardLoopCharacteristics",
                                                          "multiInstanceLoopCharacteristics"):
            parts = [_local(loop)] + [f"{k}={v}" for k, v in sorted(loop.attrib.items())]
            parts += [f"{_local(c)}={_text(c)}" for c in loop if isinstance(c.tag, str)]
            info["loop"] = " ".join(parts)
    return info


def describe_elements(xml: str) -> dict[str, dict]:
    """BPMN id -> what HMS cares about of that element (lanes, flow elements of every
    process and embedded subprocess); the diagram layout is left out."""
    root = _parse(xml)
    lanes = _lane_of(root)
    out: dict[str, dict] = {}
    for lane in root.iter(f"{{{BPMN_NS}}}lane"):
        out[lane.get("id")] = {"type": "lane", "name": lane.get("name")}
    containers = list(root.iterfind("bpmn:process", NS))
    while containers:
        container = containers.pop(0)
        for el in container:
            if not isinstance(el.tag, str) or etree.QName(el).namespace != BPMN_NS or not el.get("id"):
                continue
            if _local(el) in ("laneSet", "extensionElements", "ioSpecification", "property"):
                continue
            out[el.get("id")] = _describe(el, lanes)
            if _local(el) in CONTAINERS:
                containers.append(el)
    return out


def _summary(bpmn_id: str, info: dict) -> dict:
    return {"id": bpmn_id, "type": info.get("type"), "name": info.get("name")}


def diff_xml(old_xml: str | None, new_xml: str) -> dict:
    """Elements added, removed and changed between two documents, by BPMN id. A change
    lists each field that differs with its old and new value."""
    old = describe_elements(old_xml) if old_xml else {}
    new = describe_elements(new_xml)
    added = [_summary(i, new[i]) for i in new if i not in old]
    removed = [_summary(i, old[i]) for i in old if i not in new]
    changed = []
    for bpmn_id, after in new.items():
        before = old.get(bpmn_id)
        if before is None or before == after:
            continue
        changes = [{"field": field, "label": FIELD_LABELS.get(field, field),
                    "old": before.get(field), "new": after.get(field)}
                   for field in list(dict.fromkeys([*before, *after])) if before.get(field) != after.get(field)]
        changed.append(dict(_summary(bpmn_id, after), changes=changes))
    return {"added": added, "removed": removed, "changed": changed}


# --- a diagram for documents that have none --------------------------------------------------

@dataclass
class _Box:
    x: int
    y: int
    w: int
    h: int


SIZES = {"event": (36, 36), "gateway": (50, 50), "activity": (100, 80)}
COLUMN, ROW, LANE_MIN, LANE_HEADER, POOL_HEADER, GAP = 150, 100, 140, 30, 30, 40


def has_diagram(root) -> bool:
    return root.find(f".//{{{BPMNDI_NS}}}BPMNShape") is not None


def ensure_diagram(xml: str, key: str) -> str:
    """`xml` unchanged when it has a diagram; else with a generated left-to-right layout
    (a pool per process, its lanes as rows, shapes and edges) so bpmn-js can draw and edit
    it. The process content is not touched; a collaboration is added when there are lanes."""
    root = _parse(xml)
    if has_diagram(root):
        return xml
    nsmap = {k: v for k, v in root.nsmap.items() if v not in (BPMNDI_NS, DC_NS, DI_NS)}
    for prefix, uri in (("bpmndi", BPMNDI_NS), ("dc", DC_NS), ("di", DI_NS)):
        if prefix in nsmap and nsmap[prefix] != uri:
            prefix = f"hms{prefix}"
        nsmap[prefix] = uri
    new_root = etree.Element(root.tag, nsmap=nsmap, attrib=dict(root.attrib))
    new_root.text = root.text
    for child in list(root):
        new_root.append(child)
    processes = list(new_root.iterfind("bpmn:process", NS))
    if not processes:
        return xml
    for old_diagram in new_root.iterfind("bpmndi:BPMNDiagram", NS):
        new_root.remove(old_diagram)
    pools = any(p.find("bpmn:laneSet/bpmn:lane", NS) is not None for p in processes) or len(processes) > 1
    diagram = etree.SubElement(new_root, f"{{{BPMNDI_NS}}}BPMNDiagram", id=f"Diagram_{key}")
    if pools:
        collab = new_root.find("bpmn:collaboration", NS)
        if collab is None:
            collab = etree.Element(f"{{{BPMN_NS}}}collaboration", id=f"Collaboration_{key}")
            processes[0].addprevious(collab)
        plane = etree.SubElement(diagram, f"{{{BPMNDI_NS}}}BPMNPlane", id=f"Plane_{key}",
                                 bpmnElement=collab.get("id"))
        top = 0
        for process in processes:
            participant = next((p for p in collab.iterfind("bpmn:participant", NS)
                                if p.get("processRef") == process.get("id")), None)
            if participant is None:
                participant = etree.SubElement(collab, f"{{{BPMN_NS}}}participant",
                                               id=f"Participant_{process.get('id')}",
                                               name=process.get("name") or process.get("id"),
                                               processRef=process.get("id"))
            top = _layout_process(plane, process, participant.get("id"), top) + GAP
    else:
        plane = etree.SubElement(diagram, f"{{{BPMNDI_NS}}}BPMNPlane", id=f"Plane_{key}",
                                 bpmnElement=processes[0].get("id"))
        _layout_process(plane, processes[0], None, 0)
    return etree.tostring(new_root, xml_declaration=True, encoding="UTF-8").decode("utf-8")


def _shape_kind(el) -> str | None:
    kind = _local(el)
    if kind.endswith("Event"):
        return "event"
    if kind.endswith("Gateway"):
        return "gateway"
    if kind.endswith("Task") or kind in ("task", "callActivity") or kind in CONTAINERS:
        return "activity"
    return None


def _ranks(nodes: list[str], flows: list[tuple[str, str, str]], starts: list[str]) -> tuple[dict, set]:
    """Longest-path column of each node from the starts, ignoring back edges (found by DFS)."""
    out: dict[str, list[str]] = {n: [] for n in nodes}
    for _, s, t in flows:
        if s in out and t in out:
            out[s].append(t)
    back, state = set(), {}

    def dfs(n):
        stack = [(n, iter(out[n]))]
        state[n] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                back.add((node, child))
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(out[child])))

    for s in starts + nodes:
        if s not in state:
            dfs(s)
    indeg = {n: 0 for n in nodes}
    for s in nodes:
        for t in out[s]:
            if (s, t) not in back:
                indeg[t] += 1
    rank = {n: 0 for n in nodes}
    ready = [n for n in nodes if indeg[n] == 0]
    while ready:
        n = ready.pop(0)
        for t in out[n]:
            if (n, t) in back:
                continue
            rank[t] = max(rank[t], rank[n] + 1)
            indeg[t] -= 1
            if indeg[t] == 0:
                ready.append(t)
    return rank, back


def _layout_process(plane, process, participant_id: str | None, top: int) -> int:
    """Add shapes and edges of one process to `plane`; returns the bottom y of its pool."""
    elements = {el.get("id"): el for el in process if isinstance(el.tag, str) and el.get("id")}
    nodes = [i for i, el in elements.items() if _shape_kind(el) and _local(el) != "boundaryEvent"]
    boundaries = [i for i, el in elements.items() if _local(el) == "boundaryEvent"]
    flows = [(i, el.get("sourceRef"), el.get("targetRef")) for i, el in elements.items()
             if _local(el) == "sequenceFlow"]
    lanes = list(process.iterfind("bpmn:laneSet/bpmn:lane", NS))
    lane_index: dict[str, int] = {}
    for i, lane in enumerate(lanes):
        for ref in lane.iter(f"{{{BPMN_NS}}}flowNodeRef"):
            lane_index.setdefault(_text(ref), i)
    rows = len(lanes) + (1 if any(n not in lane_index for n in nodes) or not lanes else 0)
    # Boundary events ride on their host; their flows rank the targets after the host.
    host = {b: elements[b].get("attachedToRef") for b in boundaries}
    rank_flows = [(i, host.get(s, s), t) for i, s, t in flows]
    starts = [n for n in nodes if _local(elements[n]) == "startEvent"]
    rank, back = _ranks(nodes, rank_flows, starts)
    slots: dict[tuple[int, int], int] = {}
    slot_of: dict[str, int] = {}
    for n in sorted(nodes, key=lambda n: (rank[n], list(elements).index(n))):
        row = lane_index.get(n, len(lanes))
        slot_of[n] = slots.get((rank[n], row), 0)
        slots[(rank[n], row)] = slot_of[n] + 1
    row_height = [max([LANE_MIN] + [slots.get((r, row), 0) * ROW + 40 for r in set(rank.values())])
                  for row in range(rows)]
    row_top = [top + sum(row_height[:row]) for row in range(rows)]
    left = (POOL_HEADER + LANE_HEADER + 30) if participant_id else 40
    boxes: dict[str, _Box] = {}
    for n in nodes:
        w, h = SIZES[_shape_kind(elements[n])]
        row = lane_index.get(n, len(lanes))
        cx = left + rank[n] * COLUMN + 50
        cy = row_top[row] + 20 + slot_of[n] * ROW + 40
        boxes[n] = _Box(cx - w // 2, cy - h // 2, w, h)
    per_host: dict[str, int] = {}
    for b in boundaries:
        hb = boxes.get(host[b])
        if hb is None:
            continue
        i = per_host.get(host[b], 0)
        per_host[host[b]] = i + 1
        boxes[b] = _Box(hb.x + hb.w - 28 - i * 40, hb.y + hb.h - 18, 36, 36)
    width = left + (max(rank.values(), default=0) + 1) * COLUMN + 40
    bottom = top + sum(row_height)
    if participant_id:
        _shape(plane, participant_id, _Box(0, top, width, bottom - top), horizontal=True)
        for i, lane in enumerate(lanes):
            _shape(plane, lane.get("id"), _Box(POOL_HEADER, row_top[i], width - POOL_HEADER, row_height[i]),
                   horizontal=True)
    for n in nodes + boundaries:
        if n in boxes:
            marker = _local(elements[n]) == "exclusiveGateway"
            expanded = False if _local(elements[n]) in CONTAINERS else None
            _shape(plane, n, boxes[n], marker=marker, expanded=expanded)
    for fid, s, t in flows:
        if s not in boxes or t not in boxes:
            continue
        _edge(plane, fid, _waypoints(boxes[s], boxes[t], (host.get(s, s), t) in back, s in host))
    return bottom


def _shape(plane, bpmn_id: str, box: _Box, *, horizontal=False, marker=False, expanded=None):
    attrs = {"id": f"{bpmn_id}_di", "bpmnElement": bpmn_id}
    if horizontal:
        attrs["isHorizontal"] = "true"
    if marker:
        attrs["isMarkerVisible"] = "true"
    if expanded is not None:
        attrs["isExpanded"] = "true" if expanded else "false"
    shape = etree.SubElement(plane, f"{{{BPMNDI_NS}}}BPMNShape", attrs)
    etree.SubElement(shape, f"{{{DC_NS}}}Bounds", x=str(box.x), y=str(box.y), width=str(box.w), height=str(box.h))


def _waypoints(s: _Box, t: _Box, back: bool, from_boundary: bool) -> list[tuple[int, int]]:
    if back:
        top = min(s.y, t.y) - 25
        return [(s.x + s.w // 2, s.y), (s.x + s.w // 2, top), (t.x + t.w // 2, top), (t.x + t.w // 2, t.y)]
    if from_boundary:
        start = (s.x + s.w // 2, s.y + s.h)
        end = (t.x, t.y + t.h // 2)
        return [start, (start[0], end[1]), end] if start[1] < end[1] else [start, (start[0], start[1] + 20),
                                                                            (end[0] - 20, start[1] + 20),
                                                                            (end[0] - 20, end[1]), end]
    a, b = (s.x + s.w, s.y + s.h // 2), (t.x, t.y + t.h // 2)
    if a[1] == b[1]:
        return [a, b]
    mid = (a[0] + b[0]) // 2
    return [a, (mid, a[1]), (mid, b[1]), b]


def _edge(plane, bpmn_id: str, points):
    edge = etree.SubElement(plane, f"{{{BPMNDI_NS}}}BPMNEdge", id=f"{bpmn_id}_di", bpmnElement=bpmn_id)
    for x, y in points:
        etree.SubElement(edge, f"{{{DI_NS}}}waypoint", x=str(x), y=str(y))
