"""Form definitions in the database: versions, the lazy import of shipped files, the preview,
the forms pages, and the form versions a published pathway pins."""

from __future__ import annotations

import copy
import json
import re

import pytest
from sqlalchemy import select

from hms import form_versions
from hms.audit import Actor, AuditLog
from hms.forms import UnknownForm
from hms.workflow import editor, specs
from tests.workflow.test_editor_api import VISIT, XML, with_consent

REVIEW = json.loads(open("forms/review.json").read())


@pytest.fixture
def staff(app, make_user, make_department):
    from tests.conftest import login

    dep = make_department("OPD", "Outpatients")
    make_user("head", "department_head", department_ids=[dep])
    make_user("doc", "doctor")
    clients = {}
    for name in ("head", "doc"):
        clients[name] = app.test_client()
        login(clients[name], name)
    clients["dep"] = dep
    return clients


def _post_json(client, url, body):
    """JSON as written (the test client's json= sorts keys, and field order matters)."""
    return client.post(url, data=json.dumps(body), content_type="application/json")


def _review_v2():
    schema = copy.deepcopy(REVIEW)
    schema["properties"]["consent_given"] = {"type": "boolean", "title": "Consent given"}
    schema["required"] = ["reviewed", "consent_given"]
    return schema


def test_shipped_files_are_version_one_until_changed(staff, database):
    head = staff["head"]
    listing = {f["key"]: f for f in head.get("/api/v1/forms").get_json()["items"]}
    assert listing["review"]["source"] == "file" and listing["review"]["latest_version"] == 1
    detail = head.get("/api/v1/forms/review").get_json()
    assert [v["version"] for v in detail["versions"]] == [1] and detail["versions"][0]["source"] == "file"
    with database.transaction(readonly=True) as s:
        assert form_versions.get(s, "review").checksum == detail["versions"][0]["checksum"]
        assert s.execute(select(form_versions.FormVersion)).first() is None  # nothing imported yet


def test_a_new_version_imports_the_file_first_and_becomes_the_latest(staff, database):
    head = staff["head"]
    resp = _post_json(head, "/api/v1/forms/review/versions", {"schema": _review_v2(), "note": "consent box"})
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["version"] == 2
    detail = head.get("/api/v1/forms/review").get_json()
    assert [(v["version"], v["source"]) for v in detail["versions"]] == [(1, "file"), (2, "editor")]
    assert detail["versions"][1]["created_by"] == "head" and detail["versions"][1]["note"] == "consent box"
    with database.transaction(readonly=True) as s:
        latest = form_versions.get(s, "review")
        assert latest.version == 2 and "consent_given" in latest.schema["properties"]
        # Field order is kept (it is the order on screen).
        assert list(latest.schema["properties"]) == ["reviewed", "comments", "consent_given"]
        first = form_versions.get(s, "review", 1)
        assert "consent_given" not in first.schema["properties"]
        with pytest.raises(UnknownForm):
            form_versions.get(s, "review", 3)
        with pytest.raises(UnknownForm):
            form_versions.get(s, "no_such_form")
        assert form_versions.registry(s).versions("review") == [1, 2]
        audit = s.execute(select(AuditLog).where(AuditLog.action == "form.version")).scalar_one()
        assert audit.actor_name == "head" and audit.detail["version"] == 2
    listing = {f["key"]: f for f in head.get("/api/v1/forms").get_json()["items"]}
    assert listing["review"]["source"] == "database" and listing["review"]["versions"] == 2


def test_invalid_or_unchanged_definitions_are_refused(staff):
    head = staff["head"]
    bad = copy.deepcopy(REVIEW)
    bad["properties"]["reviewed"]["type"] = "flaot"
    resp = head.post("/api/v1/forms/review/versions", json={"schema": bad})
    assert resp.status_code == 422
    assert any("flaot" in p for p in resp.get_json()["error"]["fields"]["schema"])
    resp = head.post("/api/v1/forms/review/versions", json={"schema": "{not json"})
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "form_not_json"
    resp = _post_json(head, "/api/v1/forms/review/versions", {"schema": REVIEW})
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "form_unchanged"
    resp = head.post("/api/v1/forms/Bad-Key/versions", json={"schema": REVIEW})
    assert resp.status_code == 422
    assert staff["doc"].post("/api/v1/forms/review/versions", json={"schema": _review_v2()}).status_code == 403
    assert staff["doc"].get("/api/v1/forms").status_code == 403


def test_a_brand_new_form_can_be_used_by_a_pathway(staff, pathways, database):
    head = staff["head"]
    schema = {"title": "Consent", "required": ["agreed"], "properties": {"agreed": {"type": "boolean"}}}
    assert head.post("/api/v1/forms/consent/versions", json={"schema": schema}).get_json()["version"] == 1
    with database.transaction() as s:
        editor.assign_owner(s, Actor.system("test"), "fixture_visit", staff["dep"])
    xml = with_consent().replace('<spiffworkflow:property name="formKey" value="review" /></spiffworkflow:properties>'
                                 '</bpmn:extensionElements><bpmn:incoming>f2</bpmn:incoming>',
                                 '<spiffworkflow:property name="formKey" value="consent" /></spiffworkflow:properties>'
                                 '</bpmn:extensionElements><bpmn:incoming>f2</bpmn:incoming>')
    assert 'value="consent"' in xml
    assert head.put("/api/v1/pathways/fixture_visit/draft", data=xml, headers=XML).get_json()["problems"] == []
    resp = head.post("/api/v1/pathways/fixture_visit/publish", json={"note": "consent form"})
    assert resp.status_code == 201 and resp.get_json()["forms"] == {"triage": 1, "consent": 1, "review": 1}


def test_publishing_pins_the_latest_form_versions(staff, pathways, database):
    head = staff["head"]
    with database.transaction() as s:
        editor.assign_owner(s, Actor.system("test"), "fixture_visit", staff["dep"])
    _post_json(head, "/api/v1/forms/review/versions", {"schema": _review_v2(), "note": "consent box"})
    head.put("/api/v1/pathways/fixture_visit/draft", data=VISIT.replace("Take the vitals.", "Take vitals."), headers=XML)
    resp = head.post("/api/v1/pathways/fixture_visit/publish", json={"note": "wording"})
    assert resp.status_code == 201
    with database.transaction(readonly=True) as s:
        assert specs.get_version(s, "fixture_visit", 2).forms == {"triage": 1, "review": 2}


def test_preview_renders_the_form_or_lists_its_problems(staff):
    head = staff["head"]
    ok = head.post("/api/v1/forms/preview", json={"text": json.dumps(_review_v2()), "key": "review"}).get_json()
    assert ok["ok"] is True and ok["problems"] == []
    assert "Consent given" in ok["html"] and 'name="consent_given"' in ok["html"]
    bad = head.post("/api/v1/forms/preview", json={"text": '{"title": "X", "properties": {"a": {"type": "flaot"}}}'})
    assert bad.get_json()["ok"] is False and any("flaot" in p for p in bad.get_json()["problems"])
    broken = head.post("/api/v1/forms/preview", json={"text": '{"title": '}).get_json()
    assert broken["ok"] is False and "line 1" in broken["problems"][0]
    escaped = head.post("/api/v1/forms/preview", json={"schema": {"title": "T", "properties": {
        "a": {"type": "string", "title": "<script>alert(1)</script>"}}}}).get_json()
    assert "<script>alert" not in escaped["html"] and "&lt;script&gt;" in escaped["html"]


def test_forms_pages_create_and_edit(staff, database):
    head = staff["head"]
    listing = head.get("/forms").get_data(as_text=True)
    assert "triage" in listing and "shipped file" in listing
    page = head.get("/forms/review").get_data(as_text=True)
    assert "I have reviewed this record" in page and "Save as a new version" in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    resp = head.post("/forms/review", data={"csrf_token": token, "schema": json.dumps(_review_v2()),
                                            "note": "consent box"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/forms/review")
    assert "v2" in head.get("/forms/review").get_data(as_text=True)
    resp = head.post("/forms/review", data={"csrf_token": token, "schema": '{"title": "x", "properties": {"a": 1}}'})
    assert resp.status_code == 422 and "not saved" in resp.get_data(as_text=True).lower()
    new_page = head.get("/forms/new").get_data(as_text=True)
    assert "Create the form" in new_page
    resp = head.post("/forms/new", data={"csrf_token": token, "key": "pain_score", "note": "new",
                                         "schema": json.dumps({"title": "Pain", "properties": {
                                             "score": {"type": "integer", "minimum": 0, "maximum": 10}}})})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/forms/pain_score")
    with database.transaction(readonly=True) as s:
        assert form_versions.get(s, "pain_score").version == 1
    assert staff["doc"].get("/forms").status_code == 403
