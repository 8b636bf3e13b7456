"""Publishing a changed pathway while visits run, and moving running instances to it.

fixture_visit v1: Triage (Nurse) -> lab? -> Consultation (Doctor) -> Record -> end.
v2 (published by the department head in the editor): a Consent user task (Nurse, form
review) right after Triage. Instances still at Triage move; instances past Triage do not
(Triage, completed, changed: what follows it), and finish on v1.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from hms.audit import Actor, AuditLog
from hms.workflow import engine, migrate, specs, store
from hms.workflow.models import ProcessInstance, WorkflowTimer, WorkItem
from tests.workflow.conftest import CALLS, FIXTURES, actor_of
from tests.workflow.test_editor_api import VISIT, XML, with_consent

TRIAGE_OK = {"temperature_c": 37.2, "pulse": 80, "systolic_bp": 120, "diastolic_bp": 80,
             "respiratory_rate": 16, "spo2": 98, "weight_kg": 70, "height_cm": 170,
             "chief_complaint": "Fever for three days", "priority": "routine"}




@pytest.fixture
def ward(app, pathways, make_department, make_user, database):
    from tests.conftest import login
    from hms.workflow import editor

    dep = make_department("OPD", "Outpatients")
    other = make_department("LAB", "Laboratory")
    with database.transaction() as s:
        for key in ("fixture_visit", "fixture_ward_round", "fixture_caller"):
            editor.assign_owner(s, Actor.system("test"), key, dep)
    make_user("rec", "reception")
    make_user("nurse", "nurse")
    make_user("doc", "doctor")
    make_user("labtech", "lab_technician")
    make_user("head", "department_head", department_ids=[dep])
    make_user("head_lab", "department_head", department_ids=[other])
    clients = {}
    for name in ("head", "head_lab", "doc"):
        clients[name] = app.test_client()
        login(clients[name], name)
    return clients


def _start(database, patient_id, key="fixture_visit", username="rec", data=None):
    with database.transaction() as s:
        result = engine.start_pathway(s, actor_of(database, username), key, patient_id=patient_id,
                                      data={"needs_lab": False} if data is None else data)
        assert result.ok, result.fault
        return result.instance.id


def _item(database, instance_id, task):
    with database.transaction(readonly=True) as s:
        return s.execute(select(WorkItem).where(WorkItem.instance_id == instance_id, WorkItem.task_name == task,
                                                WorkItem.status.in_(("open", "claimed")))).scalar_one()


def _complete(database, username, instance_id, task, data):
    from hms.workflow import taskforms

    item_id = _item(database, instance_id, task).id
    with database.transaction() as s:
        result = engine.complete_task(s, actor_of(database, username), item_id, data,
                                      validate=lambda key, d: taskforms.validate(s, key, d))
        assert result.ok, result.fault
        return result.instance.status


def _open(database, instance_id):
    with database.transaction(readonly=True) as s:
        return [(i.task_name, i.role) for i in s.execute(select(WorkItem).where(
            WorkItem.instance_id == instance_id, WorkItem.status.in_(("open", "claimed")))
            .order_by(WorkItem.id)).scalars()]


def _instance(database, instance_id):
    with database.transaction(readonly=True) as s:
        return s.get(ProcessInstance, instance_id)


def _publish_consent(client):
    assert client.put("/api/v1/pathways/fixture_visit/draft", data=with_consent(), headers=XML).status_code == 200
    resp = client.post("/api/v1/pathways/fixture_visit/publish", json={"note": "Consent after triage"})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["version"]


def test_publish_while_visits_run_then_migrate_the_safe_ones(ward, database, patient_id):
    head = ward["head"]
    at_triage = _start(database, patient_id)
    claimed_at_triage = _start(database, patient_id)
    past_triage = _start(database, patient_id)
    with database.transaction() as s:
        from hms.workflow import queue
        queue.claim(s, actor_of(database, "nurse"), _item(database, claimed_at_triage, "triage").id)
    _complete(database, "nurse", past_triage, "triage", TRIAGE_OK)
    assert _open(database, past_triage) == [("consult", "doctor")]

    assert _publish_consent(head) == 2
    new_visit = _start(database, patient_id)
    assert _instance(database, new_visit).version == 2

    # Running instances kept their version.
    assert {_instance(database, i).version for i in (at_triage, claimed_at_triage, past_triage)} == {1}
    listing = head.get("/api/v1/pathways/fixture_visit/instances?version=1").get_json()["items"]
    assert {i["id"]: i["open_tasks"] for i in listing} == {at_triage: ["triage"], claimed_at_triage: ["triage"],
                                                          past_triage: ["consult"]}
    versions = head.get("/api/v1/pathways/fixture_visit/versions").get_json()["versions"]
    assert [(v["version"], v["live_instances"]) for v in versions] == [(1, 3), (2, 1)]

    # Dry run: the verdicts, and nothing changes.
    with database.transaction(readonly=True) as s:
        state_before = s.get(ProcessInstance, at_triage).state
    preview = head.post("/api/v1/pathways/fixture_visit/migrations",
                        json={"from_version": 1, "to_version": 2, "dry_run": True}).get_json()
    verdicts = {i["instance_id"]: i for i in preview["instances"]}
    assert preview["dry_run"] is True and preview["safe"] == 2 and preview["unsafe"] == 1
    assert verdicts[at_triage]["safe"] and verdicts[claimed_at_triage]["safe"]
    assert verdicts[at_triage]["reasons"] == [] and verdicts[at_triage]["at"] == ["triage"]
    refused = verdicts[past_triage]
    assert refused["safe"] is False
    # Triage (done) now leads to Consent, and the lab gateway (passed) is now reached from it.
    reasons = {r["element_id"]: r for r in refused["reasons"]}
    assert set(reasons) == {"triage", "gw_lab"}
    assert reasons["triage"]["task_state"] == "completed"
    assert "what follows it" in reasons["triage"]["message"]
    assert "what leads to it" in reasons["gw_lab"]["message"]
    with database.transaction(readonly=True) as s:
        assert s.get(ProcessInstance, at_triage).state == state_before
        assert s.get(ProcessInstance, at_triage).version == 1
    assert [a for a in _actions(database) if a.startswith("instance.migrate")] == []

    # The real run moves the two safe ones, each audited, and reports the other.
    report = head.post("/api/v1/pathways/fixture_visit/migrations",
                       json={"from_version": 1, "to_version": 2, "dry_run": False}).get_json()
    assert report["migrated"] == 2 and report["refused"] == 1
    moved = {i["instance_id"] for i in report["instances"] if i["migrated"]}
    assert moved == {at_triage, claimed_at_triage}
    for iid in moved:
        instance = _instance(database, iid)
        assert instance.version == 2 and instance.spec_versions == {"fixture_visit": 2}
        assert instance.status == "running"
    assert _instance(database, past_triage).version == 1
    # The work item survived the move (same task, the claim kept).
    claimed = _item(database, claimed_at_triage, "triage")
    assert claimed.status == "claimed" and claimed.claimed_by_id is not None
    with database.transaction(readonly=True) as s:
        rows = s.execute(select(AuditLog).where(AuditLog.action == "instance.migrate")).scalars().all()
        assert {int(r.entity_id) for r in rows} == moved
        assert all(r.detail["from_version"] == 1 and r.detail["to_version"] == 2 and r.actor_name == "head"
                   for r in rows)
        run = s.execute(select(AuditLog).where(AuditLog.action == "migration.run")).scalar_one()
        assert run.detail["migrated"] == 2 and run.detail["refused"] == 1

    # Moved instances follow the new path: Triage -> Consent -> Consultation.
    _complete(database, "nurse", at_triage, "triage", TRIAGE_OK)
    assert _open(database, at_triage) == [("consent", "nurse")]
    assert _item(database, at_triage, "consent").form_key == "review"
    _complete(database, "nurse", at_triage, "consent", {"reviewed": True})
    assert _open(database, at_triage) == [("consult", "doctor")]
    assert _complete(database, "doc", at_triage, "consult", {"reviewed": True}) == "completed"

    # The refused one finishes on v1 (no consent step).
    assert _complete(database, "doc", past_triage, "consult", {"reviewed": True}) == "completed"
    assert _instance(database, past_triage).version == 1
    assert {c["instance_id"] for c in CALLS} == {at_triage, past_triage}

    # New visits follow v2.
    _complete(database, "nurse", new_visit, "triage", TRIAGE_OK)
    assert _open(database, new_visit) == [("consent", "nurse")]


def _actions(database):
    with database.transaction(readonly=True) as s:
        return list(s.execute(select(AuditLog.action)).scalars())


def test_renaming_a_completed_task_refuses_with_the_reason(ward, database, patient_id):
    at_triage = _start(database, patient_id)
    past_triage = _start(database, patient_id)
    _complete(database, "nurse", past_triage, "triage", TRIAGE_OK)
    with database.transaction() as s:
        specs.publish(s, Actor.system("test"), "fixture_visit",
                      VISIT.replace('name="Triage"', 'name="Triage and vitals"'), note="rename")
        report = migrate.run(s, actor_of(database, "head"), "fixture_visit", 1, 2, dry_run=False)
    verdicts = {i["instance_id"]: i for i in report["instances"]}
    assert verdicts[at_triage]["migrated"] is True
    reason = verdicts[past_triage]["reasons"][0]
    assert reason["element_id"] == "triage" and "its name" in reason["message"]
    assert '"Triage" (triage)' in reason["message"] and "completed" in reason["message"]
    # The moved one's open work item took the new title.
    assert _item(database, at_triage, "triage").title == "Triage and vitals"


def test_migration_keeps_a_waiting_timer_and_reaches_an_inserted_step(ward, database, patient_id):
    iid = _start(database, patient_id, key="fixture_ward_round", username="nurse", data={})
    with database.transaction(readonly=True) as s:
        due_before = s.execute(select(WorkflowTimer.due_at).where(WorkflowTimer.instance_id == iid)).scalar_one()
    xml = (FIXTURES / "fixture_ward_round.bpmn").read_text()
    xml = xml.replace('<bpmn:sequenceFlow id="f2" sourceRef="wait" targetRef="vitals" />',
                      '<bpmn:sequenceFlow id="f2" sourceRef="wait" targetRef="prep" />'
                      '<bpmn:userTask id="prep" name="Prepare trolley"><bpmn:incoming>f2</bpmn:incoming>'
                      '<bpmn:outgoing>f2b</bpmn:outgoing></bpmn:userTask>'
                      '<bpmn:sequenceFlow id="f2b" sourceRef="prep" targetRef="vitals" />')
    xml = xml.replace('<bpmn:userTask id="vitals" name="Vitals round"><bpmn:incoming>f2</bpmn:incoming>',
                      '<bpmn:userTask id="vitals" name="Vitals round"><bpmn:incoming>f2b</bpmn:incoming>')
    xml = xml.replace("<bpmn:flowNodeRef>vitals</bpmn:flowNodeRef>",
                      "<bpmn:flowNodeRef>vitals</bpmn:flowNodeRef><bpmn:flowNodeRef>prep</bpmn:flowNodeRef>")
    head = ward["head"]
    assert head.put("/api/v1/pathways/fixture_ward_round/draft", data=xml, headers=XML).get_json()["problems"] == []
    assert head.post("/api/v1/pathways/fixture_ward_round/publish", json={"note": "trolley"}).status_code == 201
    report = head.post("/api/v1/pathways/fixture_ward_round/migrations",
                       json={"from_version": 1, "to_version": 2, "dry_run": False}).get_json()
    assert report["migrated"] == 1, report
    with database.transaction(readonly=True) as s:
        instance = s.get(ProcessInstance, iid)
        assert instance.version == 2 and instance.status == "waiting"
        due_after = s.execute(select(WorkflowTimer.due_at).where(WorkflowTimer.instance_id == iid)).scalar_one()
        assert due_after == due_before  # the timer did not restart
        bundle = specs.load_bundle(s, "fixture_ward_round", instance.spec_versions)
        wf = store.load_state(instance.state, bundle)
        wait = wf.get_tasks(spec_name="wait")[0]
        assert [c.task_spec.name for c in wait.children] == ["prep"]


def test_a_running_call_activity_is_checked_too(ward, database, patient_id):
    """The callee's completed task was renamed: the caller cannot move while inside it."""
    head = ward["head"]
    inside = _start(database, patient_id, key="fixture_caller", username="doc", data={})
    before = _start(database, patient_id, key="fixture_caller", username="doc", data={})
    _complete(database, "doc", inside, "order", {})
    _complete(database, "labtech", inside, "enter", {})
    assert _open(database, inside) == [("verify", "pathologist")]
    with database.transaction() as s:
        callee = (FIXTURES / "fixture_callee.bpmn").read_text().replace('name="Enter result"', 'name="Enter the result"')
        specs.publish(s, Actor.system("test"), "fixture_callee", callee, note="rename")
    caller = (FIXTURES / "fixture_caller.bpmn").read_text().replace('name="Review result"', 'name="Review the result"')
    assert head.put("/api/v1/pathways/fixture_caller/draft", data=caller, headers=XML).get_json()["problems"] == []
    assert head.post("/api/v1/pathways/fixture_caller/publish", json={"note": "rename"}).status_code == 201
    report = head.post("/api/v1/pathways/fixture_caller/migrations",
                       json={"from_version": 1, "to_version": 2, "dry_run": False}).get_json()
    verdicts = {i["instance_id"]: i for i in report["instances"]}
    assert verdicts[before]["migrated"] is True
    assert _instance(database, before).spec_versions == {"fixture_caller": 2, "fixture_callee": 2}
    assert verdicts[inside]["safe"] is False
    reason = verdicts[inside]["reasons"][0]
    assert reason["element_id"] == "enter" and reason["message"].startswith('In "Lab work" (call_lab)')
    assert _instance(database, inside).version == 1


def test_migration_permissions_and_bad_input(ward, database, patient_id):
    _start(database, patient_id)
    body = {"from_version": 1, "to_version": 2, "dry_run": True}
    assert ward["doc"].post("/api/v1/pathways/fixture_visit/migrations", json=body).status_code == 403
    assert ward["head_lab"].post("/api/v1/pathways/fixture_visit/migrations", json=body).status_code == 403
    assert ward["head_lab"].get("/api/v1/pathways/fixture_visit/instances").status_code == 403
    head = ward["head"]
    assert head.post("/api/v1/pathways/fixture_visit/migrations", json=body).status_code == 404  # no v2
    assert head.post("/api/v1/pathways/fixture_visit/migrations",
                     json={"from_version": 1, "to_version": 1}).status_code == 422
    assert head.post("/api/v1/pathways/fixture_visit/migrations",
                     json={"from_version": "1", "to_version": 2}).status_code == 422
    assert head.post("/api/v1/pathways/fixture_visit/migrations",
                     json=dict(body, dry_run="no")).status_code == 422
    assert head.get("/api/v1/pathways/fixture_visit/instances?version=x").status_code == 400


def test_migration_page_previews_and_migrates(ward, database, patient_id, app):
    import re

    head = ward["head"]
    at_triage = _start(database, patient_id)
    past_triage = _start(database, patient_id)
    _complete(database, "nurse", past_triage, "triage", TRIAGE_OK)
    _publish_consent(head)
    page = head.get("/pathways/fixture_visit/migrate?from_version=1&to_version=2")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Migrate 1 safe instance" in html and "what follows it" in html
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    done = head.post("/pathways/fixture_visit/migrate",
                     data={"csrf_token": token, "from_version": "1", "to_version": "2"})
    assert done.status_code == 200 and "1 instance moved to v2" in done.get_data(as_text=True)
    assert _instance(database, at_triage).version == 2 and _instance(database, past_triage).version == 1
    overview = head.get("/pathways/fixture_visit").get_data(as_text=True)
    assert "Preview the migration" in overview


def test_state_of_a_moved_instance_is_spec_less_and_loads(ward, database, patient_id):
    iid = _start(database, patient_id)
    _publish_consent(ward["head"])
    with database.transaction() as s:
        migrate.run(s, actor_of(database, "head"), "fixture_visit", 1, 2, dry_run=False)
    with database.transaction(readonly=True) as s:
        instance = s.get(ProcessInstance, iid)
        assert '"spec"' not in instance.state and json.loads(instance.state)["root"]
        wf = store.load_state(instance.state, specs.load_bundle(s, "fixture_visit", instance.spec_versions))
        assert "consent" in wf.spec.task_specs
