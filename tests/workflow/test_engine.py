"""The engine through its service layer: start, queues, forms, service tasks, faults and
retry, timers, messages, call activities, cancel, versions, concurrency."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, func, select

from hms.audit import Actor, AuditLog
from hms.errors import Conflict, Forbidden, Invalid
from hms.workflow import engine, queue, specs, store, taskforms, timers
from hms.workflow.models import ProcessInstance, WorkflowTimer, WorkItem
from tests.workflow.conftest import CALLS, FIXTURES, actor_of

TRIAGE_OK = {"temperature_c": 37.2, "pulse": 80, "systolic_bp": 120, "diastolic_bp": 80,
             "respiratory_rate": 16, "spo2": 98, "weight_kg": 70, "height_cm": 170,
             "chief_complaint": "Fever for three days", "priority": "routine"}


def _validate(session):
    return lambda key, data: taskforms.validate(session, key, data)


@pytest.fixture
def staff(make_user, make_ward):
    ward_a = make_ward("WA", "Ward A")
    ward_b = make_ward("WB", "Ward B")
    make_user("rec", "reception")
    make_user("nurse_a", "nurse", ward_ids=[ward_a])
    make_user("nurse_b", "nurse", ward_ids=[ward_b])
    make_user("doc", "doctor")
    make_user("doc2", "doctor")
    make_user("labtech", "lab_technician")
    make_user("path", "pathologist")
    make_user("boss", "admin")
    return {"ward_a": ward_a, "ward_b": ward_b}


def _start(database, key, patient_id, username="rec", data=None):
    if data is None and key == "fixture_visit":
        data = {"needs_lab": False}
    with database.transaction() as s:
        result = engine.start_pathway(s, actor_of(database, username), key, patient_id=patient_id, data=data)
        assert result.ok, result.fault
        return result.instance.id


def _open_items(database, instance_id):
    with database.transaction(readonly=True) as s:
        return [(i.task_name, i.role, i.status) for i in queue.open_items_of(s, instance_id)]


def _item_id(database, instance_id, task_name):
    with database.transaction(readonly=True) as s:
        return s.execute(select(WorkItem.id).where(WorkItem.instance_id == instance_id,
                                                   WorkItem.task_name == task_name,
                                                   WorkItem.status.in_(("open", "claimed")))).scalar_one()


def _complete(database, username, item_id, data=None):
    with database.transaction() as s:
        return engine.complete_task(s, actor_of(database, username), item_id, data or {}, validate=_validate(s))


def test_start_creates_triage_task_for_nurses_with_due_time(database, pathways, staff, patient_id):
    before = datetime.now(timezone.utc)
    iid = _start(database, "fixture_visit", patient_id)
    assert _open_items(database, iid) == [("triage", "nurse", "open")]
    with database.transaction(readonly=True) as s:
        item = s.get(WorkItem, _item_id(database, iid, "triage"))
        assert item.form_key == "triage" and item.patient_id == patient_id
        assert item.instructions == "Take the vitals."
        assert before + timedelta(minutes=29) < item.due_at < before + timedelta(minutes=31)
        instance = s.get(ProcessInstance, iid)
        assert instance.status == "running" and instance.version == 1
        assert '"spec"' not in instance.state and len(instance.state) < 20_000


def test_only_the_start_lane_role_may_start(database, pathways, staff, patient_id):
    with database.transaction() as s:
        with pytest.raises(Forbidden):
            engine.start_pathway(s, actor_of(database, "doc"), "fixture_visit", patient_id=patient_id)


def test_full_pathway_without_lab_runs_service_task_and_completes(database, pathways, staff, patient_id):
    iid = _start(database, "fixture_visit", patient_id)
    _complete(database, "nurse_a", _item_id(database, iid, "triage"), dict(TRIAGE_OK, pulse=130))
    assert _open_items(database, iid) == [("consult", "doctor", "open")]
    with database.transaction(readonly=True) as s:
        consult = s.get(WorkItem, _item_id(database, iid, "consult"))
        assert consult.priority == 1  # '=1 if pulse > 120 else 3' evaluated in the sandbox
    result = _complete(database, "doc", _item_id(database, iid, "consult"), {"reviewed": True})
    assert result.ok and result.instance.status == "completed"
    assert CALLS == [{"patient_id": patient_id, "note": f"visit for {patient_id}", "instance_id": iid}]
    with database.transaction(readonly=True) as s:
        hist = [(e.task_name, e.action) for e in queue.history(s, iid)]
        assert ("triage", "completed") in hist and ("consult", "completed") in hist
        assert s.execute(select(func.count()).select_from(AuditLog)
                         .where(AuditLog.action == "fixture.record")).scalar_one() == 1


def test_gateway_condition_on_missing_variable_stops_with_error(database, pathways, staff, patient_id):
    iid = _start(database, "fixture_visit", patient_id, data={"other": 1})
    result = _complete(database, "nurse_a", _item_id(database, iid, "triage"), TRIAGE_OK)
    assert not result.ok and "needs_lab" in result.fault
    with database.transaction(readonly=True) as s:
        assert s.get(ProcessInstance, iid).status == "error"


def test_gateway_routes_to_lab_when_needed(database, pathways, staff, patient_id):
    iid = _start(database, "fixture_visit", patient_id, data={"needs_lab": True})
    _complete(database, "nurse_a", _item_id(database, iid, "triage"), TRIAGE_OK)
    assert _open_items(database, iid) == [("collect", "lab_technician", "open")]
    with database.transaction(readonly=True) as s:
        assert s.get(WorkItem, _item_id(database, iid, "collect")).priority == 2


def test_form_errors_refuse_completion_with_field_messages(database, pathways, staff, patient_id):
    iid = _start(database, "fixture_visit", patient_id)
    bad = dict(TRIAGE_OK, temperature_c=55)
    bad.pop("chief_complaint")
    with pytest.raises(Invalid) as err:
        _complete(database, "nurse_a", _item_id(database, iid, "triage"), bad)
    assert "temperature_c" in err.value.fields and "chief_complaint" in err.value.fields
    assert _open_items(database, iid) == [("triage", "nurse", "open")]


def test_wrong_role_cannot_complete_or_see(database, pathways, staff, patient_id):
    iid = _start(database, "fixture_visit", patient_id)
    item_id = _item_id(database, iid, "triage")
    with pytest.raises(Forbidden):
        _complete(database, "doc", item_id, TRIAGE_OK)
    with database.transaction(readonly=True) as s:
        assert queue.list_tasks(s, actor_of(database, "doc")).items == []
        assert [i.id for i in queue.list_tasks(s, actor_of(database, "nurse_a")).items] == [item_id]


def test_ward_scoped_task_visible_only_in_its_ward(database, pathways, staff, patient_id):
    iid = _start(database, "fixture_visit", patient_id, data={"ward_id": staff["ward_a"]})
    item_id = _item_id(database, iid, "triage")
    with database.transaction(readonly=True) as s:
        assert [i.id for i in queue.list_tasks(s, actor_of(database, "nurse_a")).items] == [item_id]
        assert queue.list_tasks(s, actor_of(database, "nurse_b")).items == []
        assert queue.list_tasks(s, actor_of(database, "nurse_b"), ward_id=staff["ward_a"]).items == []
    with pytest.raises(Forbidden):
        _complete(database, "nurse_b", item_id, TRIAGE_OK)


def test_claim_release_and_conflicts(database, pathways, staff, patient_id, make_user):
    make_user("nurse_a2", "nurse", ward_ids=[staff["ward_a"]])
    iid = _start(database, "fixture_visit", patient_id)
    item_id = _item_id(database, iid, "triage")
    with database.transaction() as s:
        queue.claim(s, actor_of(database, "nurse_a"), item_id)
    with database.transaction() as s, pytest.raises(Conflict) as err:
        queue.claim(s, actor_of(database, "nurse_a2"), item_id)
    assert err.value.code == "task_claimed"
    with pytest.raises(Conflict):
        _complete(database, "nurse_a2", item_id, TRIAGE_OK)
    with database.transaction() as s, pytest.raises(Conflict):
        queue.release(s, actor_of(database, "nurse_a2"), item_id)
    with database.transaction() as s:
        queue.release(s, actor_of(database, "nurse_a"), item_id)
    assert _complete(database, "nurse_a2", item_id, TRIAGE_OK).ok
    with pytest.raises(Conflict):
        _complete(database, "nurse_a", item_id, TRIAGE_OK)


def test_assign_by_admin_to_a_user_who_can_do_it(database, pathways, staff, patient_id):
    iid = _start(database, "fixture_visit", patient_id)
    item_id = _item_id(database, iid, "triage")
    nurse = actor_of(database, "nurse_a")
    with database.transaction() as s, pytest.raises(Invalid):
        queue.assign(s, actor_of(database, "boss"), item_id, actor_of(database, "doc").user_id)
    with database.transaction() as s, pytest.raises(Forbidden):
        queue.assign(s, nurse, item_id, nurse.user_id)
    with database.transaction() as s:
        item = queue.assign(s, actor_of(database, "boss"), item_id, nurse.user_id)
        assert item.status == "claimed" and item.claimed_by_id == nurse.user_id
    with database.transaction(readonly=True) as s:
        assert [i.id for i in queue.list_tasks(s, nurse, status="mine").items] == [item_id]


def test_operation_fault_rolls_back_marks_error_and_retry_replays(database, pathways, staff, patient_id,
                                                                  fail_operations):
    from tests.workflow.conftest import FAIL_NEXT

    iid = _start(database, "fixture_visit", patient_id)
    _complete(database, "nurse_a", _item_id(database, iid, "triage"), TRIAGE_OK)
    consult_id = _item_id(database, iid, "consult")
    result = _complete(database, "doc", consult_id, {"reviewed": True})
    assert not result.ok and "records service is down" in result.fault
    with database.transaction(readonly=True) as s:
        inst = s.get(ProcessInstance, iid)
        assert inst.status == "error" and inst.error_task == "Record the visit"
        assert s.get(WorkItem, consult_id).status == "claimed"  # the doctor's completion was not lost...
        assert s.execute(select(func.count()).select_from(AuditLog)
                         .where(AuditLog.action == "fixture.record")).scalar_one() == 0  # ...nor half-done
    with pytest.raises(Conflict) as err:
        _complete(database, "doc", consult_id, {"reviewed": True})
    assert err.value.code == "instance_error"
    FAIL_NEXT.clear()
    with database.transaction() as s:
        retried = engine.retry(s, actor_of(database, "boss"), iid)
    assert retried.ok and retried.instance.status == "completed"
    assert [c["instance_id"] for c in CALLS] == [iid]
    with database.transaction(readonly=True) as s:
        completed_by = s.get(WorkItem, consult_id).completed_by_id
        assert completed_by == actor_of(database, "doc").user_id


def _shift_spiff_clock(monkeypatch, delta):
    """SpiffWorkflow's timers read datetime.now(); move its clock forward."""
    import SpiffWorkflow.bpmn.specs.event_definitions.timer as timer_mod

    real = timer_mod.datetime

    class Shifted(real):
        @classmethod
        def now(cls, tz=None):
            return real.now(tz) + delta

    monkeypatch.setattr(timer_mod, "datetime", Shifted)


def test_timer_fires_once_when_due(database, pathways, staff, patient_id, monkeypatch):
    iid = _start(database, "fixture_ward_round", patient_id, username="nurse_a")
    assert _open_items(database, iid) == []
    with database.transaction(readonly=True) as s:
        assert s.get(ProcessInstance, iid).status == "waiting"
        due = s.execute(select(WorkflowTimer.due_at).where(WorkflowTimer.instance_id == iid)).scalar_one()
    assert timedelta(hours=1, minutes=59) < due - datetime.now(timezone.utc) < timedelta(hours=2, minutes=1)
    assert timers.tick(database) == {"due": 0, "fired": 0, "faults": 0}
    later = datetime.now(timezone.utc) + timedelta(hours=2, minutes=5)
    _shift_spiff_clock(monkeypatch, timedelta(hours=2, minutes=5))
    assert timers.tick(database, now=later)["fired"] == 1
    assert _open_items(database, iid) == [("vitals", "nurse", "open")]
    assert timers.tick(database, now=later)["due"] == 0  # fired once; the row is gone
    assert _open_items(database, iid) == [("vitals", "nurse", "open")]


def test_message_correlates_into_waiting_instance(database, pathways, staff, patient_id, monkeypatch):
    iid = _start(database, "fixture_ward_round", patient_id, username="nurse_a")
    _shift_spiff_clock(monkeypatch, timedelta(hours=3))
    timers.tick(database, now=datetime.now(timezone.utc) + timedelta(hours=3))
    with database.transaction() as s, pytest.raises(Conflict):
        engine.correlate_message(s, Actor.system("lab"), iid, "lab_result_verified", {"result_id": 7})
    _complete(database, "nurse_a", _item_id(database, iid, "vitals"))
    with database.transaction() as s, pytest.raises(Conflict):
        engine.correlate_message(s, Actor.system("lab"), iid, "something_else", {})
    with database.transaction() as s:
        assert engine.correlate_message(s, Actor.system("lab"), iid, "lab_result_verified", {"result_id": 7}).ok
    assert _open_items(database, iid) == [("acknowledge", "nurse", "open")]


def test_call_activity_routes_callee_lanes(database, pathways, staff, patient_id):
    iid = _start(database, "fixture_caller", patient_id, username="doc")
    _complete(database, "doc", _item_id(database, iid, "order"))
    assert _open_items(database, iid) == [("enter", "lab_technician", "open")]
    _complete(database, "labtech", _item_id(database, iid, "enter"))
    assert _open_items(database, iid) == [("verify", "pathologist", "open")]
    _complete(database, "path", _item_id(database, iid, "verify"))
    assert _open_items(database, iid) == [("review", "doctor", "open")]
    with database.transaction(readonly=True) as s:
        assert s.get(ProcessInstance, iid).spec_versions == {"fixture_caller": 1, "fixture_callee": 1}


def test_cancel_needs_reason_cancels_items_and_is_audited(database, pathways, staff, patient_id):
    iid = _start(database, "fixture_visit", patient_id)
    item_id = _item_id(database, iid, "triage")
    with database.transaction() as s, pytest.raises(Invalid):
        engine.cancel_instance(s, actor_of(database, "boss"), iid, "  ")
    with database.transaction() as s:
        engine.cancel_instance(s, actor_of(database, "boss"), iid, "Patient left before triage")
    with database.transaction(readonly=True) as s:
        assert s.get(WorkItem, item_id).status == "cancelled"
        assert s.execute(select(AuditLog.action).where(AuditLog.entity_id == str(iid),
                                                       AuditLog.action == "instance.cancel")).first()
    with pytest.raises(Conflict):
        _complete(database, "nurse_a", item_id, TRIAGE_OK)


def test_new_version_applies_to_new_instances_only(database, pathways, staff, patient_id):
    old = _start(database, "fixture_visit", patient_id)
    xml = (FIXTURES / "fixture_visit.bpmn").read_text().replace('name="Triage"', 'name="Triage and vitals"')
    with database.transaction() as s:
        assert specs.publish(s, Actor.system("test"), "fixture_visit", xml, note="renamed").version == 2
    new = _start(database, "fixture_visit", patient_id)
    with database.transaction(readonly=True) as s:
        assert s.get(ProcessInstance, old).version == 1 and s.get(ProcessInstance, new).version == 2
        titles = {i.instance_id: i.title for i in s.execute(select(WorkItem)).scalars()}
    assert titles == {old: "Triage", new: "Triage and vitals"}
    _complete(database, "nurse_a", _item_id(database, old, "triage"), TRIAGE_OK)
    assert _open_items(database, old) == [("consult", "doctor", "open")]


def test_shipped_sync_publishes_only_new_or_changed(database, pathways):
    with database.transaction() as s:
        assert specs.sync_shipped(s, FIXTURES) == []
        assert {v.key for v in specs.list_versions(s)} == pathways


def test_rebuild_queues_restores_projection(database, pathways, staff, patient_id):
    from hms.workflow.rebuild import rebuild_queues

    iid = _start(database, "fixture_visit", patient_id)
    with database.transaction() as s:
        s.execute(delete(WorkItem))
    assert _open_items(database, iid) == []
    counts = rebuild_queues(database)
    assert counts["instances"] == 1 and counts["open_items"] == 1
    assert _open_items(database, iid) == [("triage", "nurse", "open")]


def test_concurrent_completion_exactly_one_wins(database, pathways, staff, patient_id, make_user):
    make_user("nurse_a2", "nurse", ward_ids=[staff["ward_a"]])
    iid = _start(database, "fixture_visit", patient_id)
    item_id = _item_id(database, iid, "triage")
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def worker(username):
        actor = actor_of(database, username)
        barrier.wait()
        try:
            with database.transaction() as s:
                engine.complete_task(s, actor, item_id, TRIAGE_OK, validate=_validate(s))
            outcomes.append("won")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=worker, args=(u,)) for u in ("nurse_a", "nurse_a2", "nurse_a", "nurse_a2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict", "conflict", "conflict", "won"]
    assert _open_items(database, iid) == [("consult", "doctor", "open")]
    with database.transaction(readonly=True) as s:
        assert s.execute(select(func.count()).select_from(WorkItem)
                         .where(WorkItem.instance_id == iid)).scalar_one() == 2


def test_message_by_business_key_through_a_job(database, pathways, staff, patient_id, monkeypatch):
    import json

    from hms import jobs
    from hms.workflow import messages

    with database.transaction() as s:
        iid = engine.start_pathway(s, actor_of(database, "nurse_a"), "fixture_ward_round",
                                   patient_id=patient_id, business_key="lab-order:42").instance.id
    _shift_spiff_clock(monkeypatch, timedelta(hours=3))
    timers.tick(database, now=datetime.now(timezone.utc) + timedelta(hours=3))
    _complete(database, "nurse_a", _item_id(database, iid, "vitals"))
    for _ in range(2):  # delivered at least once: the second delivery changes nothing
        with database.transaction() as s:
            jobs.enqueue(s, "workflow.deliver_message", dedupe=False, message_name="lab_result_verified",
                         business_key="lab-order:42", payload_json=json.dumps({"result_id": 9}))
    assert _open_items(database, iid) == [("acknowledge", "nurse", "open")]
    with database.transaction() as s:
        assert messages.deliver(s, Actor.system("x"), "lab_result_verified", "lab-order:42") == []


def test_task_uses_the_form_version_its_pathway_version_pinned(database, pathways, staff, patient_id):
    """A form edited in the browser (version 2) changes visits on a pathway version that pins
    it; a visit on a version pinning version 1 keeps the old form."""
    from hms import form_versions

    boss = actor_of(database, "boss")
    stricter = {"key": "review", "title": "Review", "type": "object", "required": ["reviewed", "signature"],
                "properties": {"reviewed": {"type": "boolean", "title": "Reviewed"},
                               "signature": {"type": "string", "title": "Signature", "minLength": 2}}}
    xml = (FIXTURES / "fixture_visit.bpmn").read_text()
    with database.transaction() as s:
        form_versions.create_version(s, boss, "review", stricter, note="signature required")
        old = specs.publish(s, boss, "fixture_visit", xml.replace('name="Fixture visit"', 'name="Visit A"'),
                            forms={"review": 1, "triage": 1}).version
    old_iid = _start(database, "fixture_visit", patient_id)
    with database.transaction() as s:
        new = specs.publish(s, boss, "fixture_visit", xml.replace('name="Fixture visit"', 'name="Visit B"'),
                            forms={"review": 2, "triage": 1}).version
    new_iid = _start(database, "fixture_visit", patient_id)
    assert (old, new) == (2, 3)
    for iid in (old_iid, new_iid):
        _complete(database, "nurse_a", _item_id(database, iid, "triage"), TRIAGE_OK)
    with database.transaction() as s:  # the engine's own validation, with the instance's pin
        assert engine.complete_task(s, actor_of(database, "doc"), _item_id(database, old_iid, "consult"),
                                    {"reviewed": True}).ok
    with database.transaction() as s, pytest.raises(Invalid) as err:
        engine.complete_task(s, actor_of(database, "doc"), _item_id(database, new_iid, "consult"), {"reviewed": True})
    assert "signature" in err.value.fields
