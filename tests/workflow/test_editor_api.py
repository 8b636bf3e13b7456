"""The pathway editor's API: ownership, drafts and their lint, the diff, publishing and
rolling back, who may do what (department heads of the owning department and admins;
scripts only by admins), and what is audited."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hms.audit import Actor, AuditLog
from hms.workflow import editor, specs
from tests.workflow.conftest import FIXTURES

VISIT = (FIXTURES / "fixture_visit.bpmn").read_text()
XML = {"Content-Type": "application/xml"}


# --- documents ------------------------------------------------------------------------------

def with_consent(xml: str = VISIT) -> str:
    """fixture_visit with a Consent user task (lane Nurse, form review) right after Triage."""
    xml = xml.replace("<bpmn:flowNodeRef>triage</bpmn:flowNodeRef>",
                      "<bpmn:flowNodeRef>triage</bpmn:flowNodeRef><bpmn:flowNodeRef>consent</bpmn:flowNodeRef>")
    xml = xml.replace('<bpmn:sequenceFlow id="f2" sourceRef="triage" targetRef="gw_lab" />',
                      '<bpmn:sequenceFlow id="f2" sourceRef="triage" targetRef="consent" />'
                      '<bpmn:userTask id="consent" name="Consent"><bpmn:extensionElements><spiffworkflow:properties>'
                      '<spiffworkflow:property name="formKey" value="review" /></spiffworkflow:properties>'
                      '</bpmn:extensionElements><bpmn:incoming>f2</bpmn:incoming><bpmn:outgoing>f2b</bpmn:outgoing>'
                      '</bpmn:userTask><bpmn:sequenceFlow id="f2b" sourceRef="consent" targetRef="gw_lab" />')
    xml = xml.replace('<bpmn:incoming>f2</bpmn:incoming><bpmn:outgoing>f_lab</bpmn:outgoing>',
                      '<bpmn:incoming>f2b</bpmn:incoming><bpmn:outgoing>f_lab</bpmn:outgoing>')
    assert xml.count("consent") >= 4
    return xml


def with_script(xml: str = VISIT) -> str:
    """fixture_visit with a script task between Consultation and Record the visit."""
    xml = xml.replace("<bpmn:flowNodeRef>record</bpmn:flowNodeRef>",
                      "<bpmn:flowNodeRef>record</bpmn:flowNodeRef><bpmn:flowNodeRef>tally</bpmn:flowNodeRef>")
    xml = xml.replace('<bpmn:sequenceFlow id="f4" sourceRef="consult" targetRef="record" />',
                      '<bpmn:sequenceFlow id="f4" sourceRef="consult" targetRef="tally" />'
                      '<bpmn:scriptTask id="tally" name="Count visits" scriptFormat="python">'
                      '<bpmn:incoming>f4</bpmn:incoming><bpmn:outgoing>f4b</bpmn:outgoing>'
                      '<bpmn:script>visits = 1</bpmn:script></bpmn:scriptTask>'
                      '<bpmn:sequenceFlow id="f4b" sourceRef="tally" targetRef="record" />')
    return xml.replace('<bpmn:incoming>f4</bpmn:incoming><bpmn:outgoing>f5</bpmn:outgoing>',
                       '<bpmn:incoming>f4b</bpmn:incoming><bpmn:outgoing>f5</bpmn:outgoing>')


BAD_DRAFTS = {
    "sandbox_escape": (VISIT.replace("needs_lab == True", "__import__('os').system('id') == 0"),
                       "f_lab", "condition_error", "f_lab"),
    "unknown_role_lane": (VISIT.replace('name="Lab Technician"', 'name="Janitor"'), "lane_lab", "unknown_lane",
                          "Janitor"),
    "unknown_operation": (VISIT.replace('id="fixture.record"', 'id="fixture.erase_everything"'),
                          "record", "unknown_operation", "fixture.erase_everything"),
    "unknown_form": (VISIT.replace('value="triage"', 'value="no_such_form"'), "triage", "unknown_form",
                     "no_such_form"),
}


# --- the cast -------------------------------------------------------------------------------



@pytest.fixture
def cast(app, pathways, make_department, make_user, database):
    """Departments A (owns fixture_visit) and B; their heads, a doctor and an admin."""
    from tests.conftest import login

    dep_a = make_department("OPD", "Outpatients")
    dep_b = make_department("LAB", "Laboratory")
    with database.transaction() as s:
        editor.assign_owner(s, Actor.system("test"), "fixture_visit", dep_a)
    users = {"head_a": ("department_head", [dep_a]), "head_b": ("department_head", [dep_b]),
             "doctor": ("doctor", [dep_a]), "boss": ("admin", [])}
    clients = {}
    for name, (role, deps) in users.items():
        make_user(name, role, department_ids=deps)
        clients[name] = app.test_client()
        login(clients[name], name)
    clients["dep_a"], clients["dep_b"] = dep_a, dep_b
    return clients


def _versions(database, key="fixture_visit"):
    with database.transaction(readonly=True) as s:
        return [v.version for v in specs.list_versions(s, key)]


def _audit(database, action):
    with database.transaction(readonly=True) as s:
        return list(s.execute(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)).scalars())


# --- drafts, diff, publish --------------------------------------------------------------------

def test_head_saves_checks_and_publishes_a_changed_pathway(cast, database):
    head = cast["head_a"]
    assert head.get("/api/v1/pathways/fixture_visit/draft").status_code == 404

    resp = head.put("/api/v1/pathways/fixture_visit/draft", data=with_consent(), headers=XML)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["problems"] == [] and body["publishable"] is True
    assert body["draft"]["base_version"] == 1 and body["draft"]["updated_by"] == "head_a"

    draft = head.get("/api/v1/pathways/fixture_visit/draft").get_json()
    assert "consent" in draft["bpmn_xml"] and draft["checksum"] == body["draft"]["checksum"]
    raw = head.get("/api/v1/pathways/fixture_visit/draft", headers={"Accept": "application/xml"})
    assert raw.mimetype == "application/xml" and raw.get_data(as_text=True) == with_consent()
    assert raw.headers["Content-Disposition"].startswith("attachment") and "sandbox" in raw.headers[
        "Content-Security-Policy"]

    diff = head.get("/api/v1/pathways/fixture_visit/diff").get_json()
    assert {e["id"] for e in diff["added"]} == {"consent", "f2b"} and diff["removed"] == []
    changed = {e["id"]: {c["field"]: (c["old"], c["new"]) for c in e["changes"]} for e in diff["changed"]}
    assert changed == {"f2": {"target": ("gw_lab", "consent")}}
    assert diff["from"] == "v1" and diff["to"] == "draft"
    added = {e["id"]: e for e in diff["added"]}
    assert added["consent"]["type"] == "userTask" and added["consent"]["name"] == "Consent"

    resp = head.post("/api/v1/pathways/fixture_visit/publish", json={"note": "Consent before the lab"})
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["version"] == 2
    assert resp.get_json()["forms"] == {"triage": 1, "review": 1}

    versions = head.get("/api/v1/pathways/fixture_visit/versions").get_json()
    assert [v["version"] for v in versions["versions"]] == [1, 2] and versions["draft"] is None
    v2 = versions["versions"][-1]
    assert v2["note"] == "Consent before the lab" and v2["published_by"] == "head_a" and v2["source"] == "editor"
    assert v2["checksum_short"] == v2["checksum"][:10] and v2["live_instances"] == 0
    assert head.get("/api/v1/pathways/fixture_visit/draft").status_code == 404
    one = head.get("/api/v1/pathways/fixture_visit/versions/2").get_json()
    assert one["bpmn_xml"] == with_consent()

    saves, publishes = _audit(database, "draft.save"), _audit(database, "pathway.publish")
    assert [a.actor_name for a in saves] == ["head_a"]
    assert publishes[-1].actor_name == "head_a" and publishes[-1].detail["version"] == 2


def test_publish_needs_a_note_and_a_draft(cast):
    head = cast["head_a"]
    resp = head.post("/api/v1/pathways/fixture_visit/publish", json={"note": "x"})
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "draft_not_found"
    head.put("/api/v1/pathways/fixture_visit/draft", data=with_consent(), headers=XML)
    resp = head.post("/api/v1/pathways/fixture_visit/publish", json={"note": "  "})
    assert resp.status_code == 422 and resp.get_json()["error"]["fields"] == {"note": ["required"]}


@pytest.mark.parametrize("case", sorted(BAD_DRAFTS))
def test_a_draft_with_a_problem_is_kept_but_refused_at_publish(cast, database, case):
    xml, element_id, code, named_in_message = BAD_DRAFTS[case]
    head = cast["head_a"]
    resp = head.put("/api/v1/pathways/fixture_visit/draft", data=xml, headers=XML)
    assert resp.status_code == 200
    problems = resp.get_json()["problems"]
    assert (element_id, code) in {(p["element_id"], p["code"]) for p in problems}, problems
    assert resp.get_json()["publishable"] is False

    resp = head.post("/api/v1/pathways/fixture_visit/publish", json={"note": "try"})
    assert resp.status_code == 422
    error = resp.get_json()["error"]
    assert error["code"] == "lint_failed"
    named = [p for p in error["fields"]["problems"] if p["element_id"] == element_id]
    assert named and named[0]["code"] == code and named_in_message in named[0]["message"]
    assert _versions(database) == [1]
    # The list page shows the draft's lint status.
    page = head.get("/pathways").get_data(as_text=True)
    assert "problem" in page and "fixture_visit" in page


def test_sandbox_escape_is_named_in_the_message(cast):
    xml = BAD_DRAFTS["sandbox_escape"][0]
    problems = cast["head_a"].put("/api/v1/pathways/fixture_visit/draft", data=xml, headers=XML).get_json()["problems"]
    escape = next(p for p in problems if p["element_id"] == "f_lab")
    assert "__import__" in escape["message"] or "not allowed" in escape["message"].lower()


def test_a_document_that_is_not_bpmn_is_refused(cast):
    head = cast["head_a"]
    resp = head.put("/api/v1/pathways/fixture_visit/draft", data="<html/>", headers=XML)
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "bpmn_invalid"
    resp = head.put("/api/v1/pathways/fixture_visit/draft", data="<bpmn:", headers=XML)
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "bpmn_not_xml"
    assert head.get("/api/v1/pathways/fixture_visit/draft").status_code == 404


def test_content_types_for_the_draft(cast):
    head = cast["head_a"]
    assert head.put("/api/v1/pathways/fixture_visit/draft", data=with_consent(),
                    headers={"Content-Type": "text/xml"}).status_code == 200
    assert head.put("/api/v1/pathways/fixture_visit/draft", json={"bpmn_xml": with_consent()}).status_code == 200
    # A cross-site form can send text/plain without a preflight: refused before the view.
    resp = head.put("/api/v1/pathways/fixture_visit/draft", data=with_consent(), headers={"Content-Type": "text/plain"})
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "json_required"
    # XML is accepted by exactly this route.
    resp = head.post("/api/v1/pathways/fixture_visit/publish", data="<note/>", headers=XML)
    assert resp.status_code == 400


def test_a_draft_saved_by_someone_else_meanwhile_is_not_overwritten(cast, make_user, app, database):
    from tests.conftest import login

    make_user("head_a2", "department_head", department_ids=[cast["dep_a"]])
    other = app.test_client()
    login(other, "head_a2")
    first = cast["head_a"].put("/api/v1/pathways/fixture_visit/draft", data=with_consent(), headers=XML).get_json()
    checksum = first["draft"]["checksum"]
    assert other.put("/api/v1/pathways/fixture_visit/draft", data=with_script(), headers=dict(XML, **{"If-Match": checksum})
                     ).status_code == 200
    resp = cast["head_a"].put("/api/v1/pathways/fixture_visit/draft", data=VISIT,
                              headers=dict(XML, **{"If-Match": checksum}))
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "draft_changed"
    assert "tally" in cast["head_a"].get("/api/v1/pathways/fixture_visit/draft").get_json()["bpmn_xml"]


def test_a_stale_draft_needs_force(cast, database):
    head = cast["head_a"]
    head.put("/api/v1/pathways/fixture_visit/draft", data=with_consent(), headers=XML)
    with database.transaction() as s:
        specs.publish(s, Actor.system("test"), "fixture_visit", VISIT.replace('name="Triage"', 'name="Triage 2"'),
                      note="meanwhile")
    assert head.get("/api/v1/pathways/fixture_visit/draft").get_json()["stale"] is True
    resp = head.post("/api/v1/pathways/fixture_visit/publish", json={"note": "consent"})
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "draft_stale"
    resp = head.post("/api/v1/pathways/fixture_visit/publish", json={"note": "consent", "force": True})
    assert resp.status_code == 201 and resp.get_json()["version"] == 3


def test_discard_the_draft(cast, database):
    head = cast["head_a"]
    head.put("/api/v1/pathways/fixture_visit/draft", data=with_consent(), headers=XML)
    assert head.delete("/api/v1/pathways/fixture_visit/draft").status_code == 200
    assert head.get("/api/v1/pathways/fixture_visit/draft").status_code == 404
    assert [a.actor_name for a in _audit(database, "draft.discard")] == ["head_a"]


# --- who may -----------------------------------------------------------------------------------

def test_a_doctor_gets_403(cast, database):
    doctor = cast["doctor"]
    assert doctor.put("/api/v1/pathways/fixture_visit/draft", data=with_consent(), headers=XML).status_code == 403
    assert doctor.get("/api/v1/pathways/fixture_visit/versions").status_code == 403
    assert doctor.post("/api/v1/pathways/fixture_visit/publish", json={"note": "x"}).status_code == 403
    assert doctor.get("/pathways").status_code == 403
    assert _audit(database, "draft.save") == []


def test_the_head_of_another_department_gets_403(cast, database):
    other = cast["head_b"]
    resp = other.put("/api/v1/pathways/fixture_visit/draft", data=with_consent(), headers=XML)
    assert resp.status_code == 403
    error = resp.get_json()["error"]
    assert error["code"] == "other_department" and "Outpatients" in error["message"]
    cast["head_a"].put("/api/v1/pathways/fixture_visit/draft", data=with_consent(), headers=XML)
    for call in (lambda: other.get("/api/v1/pathways/fixture_visit/versions"),
                 lambda: other.get("/api/v1/pathways/fixture_visit/draft"),
                 lambda: other.get("/api/v1/pathways/fixture_visit/diff"),
                 lambda: other.post("/api/v1/pathways/fixture_visit/publish", json={"note": "x"}),
                 lambda: other.post("/api/v1/pathways/fixture_visit/rollback", json={"version": 1, "note": "x"}),
                 lambda: other.get("/api/v1/pathways/fixture_visit/instances"),
                 lambda: other.post("/api/v1/pathways/fixture_visit/migrations",
                                    json={"from_version": 1, "to_version": 1, "dry_run": True}),
                 lambda: other.get("/pathways/fixture_visit/edit"),
                 lambda: other.get("/pathways/fixture_visit")):
        assert call().status_code == 403
    assert _versions(database) == [1]
    assert "fixture_visit" not in other.get("/pathways").get_data(as_text=True)


def test_an_unowned_pathway_is_for_admins_only(cast):
    resp = cast["head_a"].put("/api/v1/pathways/fixture_callee/draft",
                              data=(FIXTURES / "fixture_callee.bpmn").read_text(), headers=XML)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "pathway_unowned"
    resp = cast["boss"].put("/api/v1/pathways/fixture_callee/draft",
                            data=(FIXTURES / "fixture_callee.bpmn").read_text().replace("Verify result", "Verify"),
                            headers=XML)
    assert resp.status_code == 200


def test_only_admins_publish_scripts(cast, database):
    head, boss = cast["head_a"], cast["boss"]
    resp = head.put("/api/v1/pathways/fixture_visit/draft", data=with_script(), headers=XML)
    assert resp.status_code == 200 and resp.get_json()["problems"] == []
    resp = head.post("/api/v1/pathways/fixture_visit/publish", json={"note": "count visits"})
    assert resp.status_code == 403
    error = resp.get_json()["error"]
    assert error["code"] == "scripts_need_admin" and error["fields"]["script_elements"] == ["tally"]
    assert "tally" in error["message"] and "Count visits" in error["message"]
    assert _versions(database) == [1]

    resp = boss.post("/api/v1/pathways/fixture_visit/publish", json={"note": "count visits"})
    assert resp.status_code == 201 and resp.get_json()["version"] == 2


def test_pre_and_post_scripts_count_as_scripts(cast):
    xml = VISIT.replace("<spiffworkflow:instructionsForEndUser>Take the vitals.</spiffworkflow:instructionsForEndUser>",
                        "<spiffworkflow:instructionsForEndUser>Take the vitals.</spiffworkflow:instructionsForEndUser>"
                        "<spiffworkflow:postScript>seen = True</spiffworkflow:postScript>")
    head = cast["head_a"]
    assert head.put("/api/v1/pathways/fixture_visit/draft", data=xml, headers=XML).get_json()["problems"] == []
    resp = head.post("/api/v1/pathways/fixture_visit/publish", json={"note": "flag"})
    assert resp.status_code == 403 and resp.get_json()["error"]["fields"]["script_elements"] == ["triage"]
    assert "post-script" in resp.get_json()["error"]["message"]


def test_owner_is_set_by_admins(cast, database):
    boss, head = cast["boss"], cast["head_a"]
    resp = head.put("/api/v1/pathways/fixture_callee/owner", json={"department_id": cast["dep_a"]})
    assert resp.status_code == 403
    resp = boss.put("/api/v1/pathways/fixture_callee/owner", json={"department_id": 999})
    assert resp.status_code == 422
    assert boss.put("/api/v1/pathways/no_such/owner", json={"department_id": cast["dep_a"]}).status_code == 404
    resp = boss.put("/api/v1/pathways/fixture_callee/owner", json={"department_id": cast["dep_a"]})
    assert resp.status_code == 200
    # Now head_a may change it.
    assert head.get("/api/v1/pathways/fixture_callee/versions").status_code == 200
    owners = _audit(database, "pathway.owner")
    assert owners[-1].actor_name == "boss" and owners[-1].detail["department_id"] == cast["dep_a"]


def test_assign_owner_service_refuses_non_admins(cast, database):
    from hms.errors import Forbidden
    from tests.workflow.conftest import actor_of

    with database.transaction() as s:
        with pytest.raises(Forbidden):
            editor.assign_owner(s, actor_of(database, "head_a"), "fixture_callee", cast["dep_a"])
        assert editor.assign_owner(s, actor_of(database, "boss"), "fixture_callee", cast["dep_b"]).department_id \
            == cast["dep_b"]


# --- rollback ----------------------------------------------------------------------------------

def test_rollback_publishes_an_earlier_version_again(cast, database):
    head = cast["head_a"]
    head.put("/api/v1/pathways/fixture_visit/draft", data=with_consent(), headers=XML)
    head.post("/api/v1/pathways/fixture_visit/publish", json={"note": "consent"})
    resp = head.post("/api/v1/pathways/fixture_visit/rollback", json={"version": 1, "note": "nurses confused"})
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["version"] == 3 and "nurses confused" in resp.get_json()["note"]
    with database.transaction(readonly=True) as s:
        v1, v3 = specs.get_version(s, "fixture_visit", 1), specs.get_version(s, "fixture_visit", 3)
        assert v3.bpmn_xml == v1.bpmn_xml and v3.checksum == v1.checksum and v3.source == "rollback"
    rollbacks = _audit(database, "pathway.rollback")
    assert rollbacks[-1].detail == {"key": "fixture_visit", "to_version": 1, "new_version": 3}
    resp = head.post("/api/v1/pathways/fixture_visit/rollback", json={"version": 3, "note": "again"})
    assert resp.status_code == 409
    assert head.post("/api/v1/pathways/fixture_visit/rollback", json={"version": 1}).status_code == 422


def test_restart_does_not_undo_an_edit(cast, database):
    """Start-up publishes shipped files that changed; a pathway edited in HMS stays edited."""
    head = cast["head_a"]
    head.put("/api/v1/pathways/fixture_visit/draft", data=with_consent(), headers=XML)
    head.post("/api/v1/pathways/fixture_visit/publish", json={"note": "consent"})
    with database.transaction() as s:
        assert specs.sync_shipped(s, FIXTURES) == []
        assert specs.latest_version(s, "fixture_visit").version == 2


# --- expressions -------------------------------------------------------------------------------

def test_check_expression_uses_the_sandbox(cast):
    head = cast["head_a"]
    ok = head.post("/api/v1/pathways/check-expression", json={"expression": "pulse > 120 and needs_lab"}).get_json()
    assert ok == {"ok": True, "message": "OK"}
    bad = head.post("/api/v1/pathways/check-expression", json={"expression": "__import__('os').system('id')"})
    assert bad.status_code == 200 and bad.get_json()["ok"] is False and bad.get_json()["message"]
    assert head.post("/api/v1/pathways/check-expression",
                     json={"expression": "().__class__.__base__"}).get_json()["ok"] is False
    assert head.post("/api/v1/pathways/check-expression", json={"expression": "pulse >"}).get_json()["ok"] is False
    assert head.post("/api/v1/pathways/check-expression",
                     json={"expression": "PT4H", "kind": "duration"}).get_json()["ok"] is True
    assert head.post("/api/v1/pathways/check-expression",
                     json={"expression": "4 hours", "kind": "duration"}).get_json()["ok"] is False
    assert head.post("/api/v1/pathways/check-expression", json={}).status_code == 422
    assert cast["doctor"].post("/api/v1/pathways/check-expression", json={"expression": "1"}).status_code == 403


# --- pages ----------------------------------------------------------------------------------------

def test_list_page_shows_versions_running_counts_and_draft(cast, database, patient_id, make_user):
    from hms.workflow import engine
    from tests.workflow.conftest import actor_of

    make_user("rec", "reception")
    with database.transaction() as s:
        for _ in range(2):
            assert engine.start_pathway(s, actor_of(database, "rec"), "fixture_visit", patient_id=patient_id,
                                        data={"needs_lab": False}).ok
    head = cast["head_a"]
    head.put("/api/v1/pathways/fixture_visit/draft", data=BAD_DRAFTS["unknown_form"][0], headers=XML)
    page = head.get("/pathways")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Fixture visit" in html and "fixture_callee" not in html
    assert "1 problem" in html and "Outpatients" in html
    with database.transaction(readonly=True) as s:
        checksum = specs.get_version(s, "fixture_visit", 1).checksum
    assert checksum[:10] in html and "shipped file" in html
    assert ">2</td>" in html  # two running on v1
    assert head.get("/api/v1/pathways/fixture_visit/versions").get_json()["versions"][0]["live_instances"] == 2
    admin_html = cast["boss"].get("/pathways").get_data(as_text=True)
    assert "fixture_callee" in admin_html and "New pathway key" in admin_html


def test_pathway_page_shows_diff_and_rollback(cast):
    head = cast["head_a"]
    head.put("/api/v1/pathways/fixture_visit/draft", data=with_consent(), headers=XML)
    html = head.get("/pathways/fixture_visit").get_data(as_text=True)
    assert "Changes against the latest version" in html and "consent" in html and "Discard the draft" in html


def test_editor_page_opens_with_a_drawable_diagram(cast):
    head = cast["head_a"]
    page = head.get("/pathways/fixture_visit/edit")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "bpmn-modeler.production.min.js" in html and 'id="hms-editor-data"' in html
    assert "Showing published version 1" in html and 'href="/pathways"' in html
    import json
    import re

    data = json.loads(re.search(r'id="hms-editor-data">(.*?)</script>', html, re.S).group(1))
    assert data["origin"] == "version" and data["version"] == 1
    assert 'bpmnElement="triage"' in data["xml"]  # the fixture has no diagram: one was generated
    cat = data["catalogue"]
    assert {"role": "nurse", "label": "Nurse"} in cat["roles"]
    assert "triage" in [f["key"] for f in cat["forms"]]
    assert "fixture.record" in [o["name"] for o in cat["operations"]]
    assert data["moddle"]["prefix"] == "spiffworkflow"
    script = head.get("/vendor/bpmn-js/bpmn-modeler.production.min.js")
    assert script.status_code == 200 and len(script.get_data()) > 100_000
    assert head.get("/vendor/bpmn-js/../../package.json").status_code == 404


# --- the diagram for documents without one ------------------------------------------------------

@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.bpmn")), ids=lambda p: p.stem)
def test_generated_diagram_keeps_the_process_and_draws_every_element(path, app):
    from lxml import etree

    from hms.workflow import lint

    xml = path.read_text()
    drawn = editor.ensure_diagram(xml, path.stem)
    assert editor.ensure_diagram(drawn, path.stem) == drawn  # idempotent
    assert editor.diff_xml(xml, drawn) == {"added": [], "removed": [], "changed": []}
    root = etree.fromstring(drawn.encode())
    shapes = {s.get("bpmnElement") for s in root.iter(f"{{{editor.BPMNDI_NS}}}BPMNShape")}
    edges = {s.get("bpmnElement") for s in root.iter(f"{{{editor.BPMNDI_NS}}}BPMNEdge")}
    described = editor.describe_elements(xml)
    nodes = {i for i, d in described.items() if d["type"] not in ("sequenceFlow",)}
    flows = {i for i, d in described.items() if d["type"] == "sequenceFlow"}
    assert nodes <= shapes and flows == edges
    callees = {p.stem: p.read_text() for p in FIXTURES.glob("*.bpmn")}
    assert lint.lint_xml(drawn, path.stem, forms=None, callee_xml=callees,
                         operation_names=["fixture.record"]) == []


def test_shipped_pathways_keep_their_own_diagram():
    from pathlib import Path

    for path in Path("workflows").glob("*.bpmn"):
        xml = path.read_text()
        assert editor.ensure_diagram(xml, path.stem) == xml
