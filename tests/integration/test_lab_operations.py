"""The lab's service-task operations: their parameter schemas and JSON contracts, and the
shipped lab_order pathway driven from collection to the doctor's review."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from departments.lab import demo, services
from hms import jobs
from hms.audit import Actor
from hms.db import utcnow
from hms.errors import Conflict, Invalid
from hms.jobs import JobRun
from hms.patients.services import register_patient
from hms.workflow import engine, operations, queue, specs, taskforms
from hms.workflow.models import ProcessInstance, WorkItem
from hms.workflow.operations import OperationContext, OperationError

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture
def lab(app, database, make_user):
    """Catalogue (CBC, FBS, MPICT), staff actors and a patient."""
    with database.transaction() as s:
        for spec in demo.CATALOGUE:
            if spec["code"] in ("CBC", "FBS", "MPICT"):
                services.create_test(s, Actor.system("test"), spec)
        patient = register_patient(s, Actor.system("test"), {"name": "Rashid Mehmood", "sex": "male",
                                                              "date_of_birth": "1975-06-01"})
        other = register_patient(s, Actor.system("test"), {"name": "Nasreen Akhtar", "sex": "female",
                                                            "date_of_birth": "1980-01-01"})

    def actor(username, *roles):
        return Actor(user_id=make_user(username, *roles), username=username, roles=frozenset(roles))

    return {"patient_id": patient.id, "other_patient_id": other.id, "doctor": actor("doc", "doctor"),
            "tech": actor("labtech", "lab_technician"), "path": actor("path", "pathologist"),
            "path2": actor("path2", "pathologist")}


def _call(database, name, actor, params, patient_id=None):
    with database.transaction() as s:
        return operations.call(name, OperationContext(s, actor, None, patient_id, "lab_order"), params)


def test_operations_are_registered_with_their_parameters(app):
    names = set(operations.names())
    assert {"lab.create_order", "lab.record_collection", "lab.enter_results", "lab.verify",
            "lab.cancel_item", "lab.order_summary"} <= names
    assert operations.get("lab.create_order").param_names() == {
        "patient_id": True, "test_codes": True, "encounter_id": False, "admission_id": False, "priority": False}
    assert operations.get("lab.record_collection").param_names() == {
        "order_id": True, "collected": True, "rejection_reason": False, "label": False}
    assert operations.get("lab.verify").param_names() == {"order_id": True, "approve": True, "comment": False}


def test_create_order_contract(database, lab):
    pid = lab["patient_id"]
    empty = _call(database, "lab.create_order", lab["doctor"], {"patient_id": pid, "test_codes": []}, pid)
    assert empty == {"order_id": None, "order_no": None, "business_key": None, "items": [], "has_items": False}
    made = _call(database, "lab.create_order", lab["doctor"],
                 {"patient_id": pid, "test_codes": ["CBC", "FBS"], "encounter_id": 5, "admission_id": None}, pid)
    assert made["order_no"] == "L-000001" and made["has_items"] is True
    assert made["business_key"] == f"lab-order:{made['order_id']}"
    assert [(i["test_code"], i["tariff_code"], i["name"]) for i in made["items"]] == [
        ("CBC", "LAB-CBC", "Complete blood count"), ("FBS", "LAB-FBS", "Fasting blood sugar")]
    assert all(isinstance(i["order_item_id"], int) for i in made["items"])
    with pytest.raises(OperationError):
        _call(database, "lab.create_order", lab["doctor"], {"patient_id": pid})
    with pytest.raises(Invalid):  # a fault: the step stops instead of dropping the order
        _call(database, "lab.create_order", lab["doctor"], {"patient_id": pid, "test_codes": ["NOPE"]}, pid)
    with pytest.raises(Conflict):
        _call(database, "lab.create_order", lab["doctor"], {"patient_id": lab["other_patient_id"],
                                                            "test_codes": ["CBC"]}, pid)


def test_collection_results_verify_summary_contracts(database, lab):
    pid = lab["patient_id"]
    order = _call(database, "lab.create_order", lab["doctor"], {"patient_id": pid, "test_codes": ["FBS"]}, pid)
    oid = order["order_id"]

    rejected = _call(database, "lab.record_collection", lab["tech"],
                     {"order_id": oid, "collected": False, "rejection_reason": "clotted"}, pid)
    assert rejected == {"ok": False, "label": "S-000001", "labels": ["S-000001"], "pending": 1, "problem": None}
    collected = _call(database, "lab.record_collection", lab["tech"], {"order_id": oid, "collected": True}, pid)
    assert collected == {"ok": True, "label": "S-000002", "labels": ["S-000002"], "pending": 0, "problem": None}
    again = _call(database, "lab.record_collection", lab["tech"], {"order_id": oid, "collected": True}, pid)
    assert again["ok"] is True and again["label"] == "S-000002" and again["pending"] == 0

    summary = _call(database, "lab.order_summary", lab["tech"], {"order_id": oid}, pid)
    assert summary["status"] == "awaiting_results" and summary["all_verified"] is False
    assert summary["items"][0]["analytes"] == [{"code": "GLU", "name": "Glucose (fasting)", "result_type": "numeric",
                                                "units": "mg/dL", "options": []}]

    bad = _call(database, "lab.enter_results", lab["tech"], {"order_id": oid, "results": [
        {"test_code": "FBS", "analyte_code": "GLU", "value": "-3"}]}, pid)
    assert bad["ok"] is False and bad["complete"] is False
    assert bad["problems"][0]["field"] == "results.0.value" and "negative" in bad["problems"][0]["message"]
    good = _call(database, "lab.enter_results", lab["tech"], {"order_id": oid, "results": [
        {"test_code": "FBS", "analyte_code": "GLU", "value": "35"}]}, pid)
    assert good == {"ok": True, "problems": [], "complete": True, "saved": 1}

    same = _call(database, "lab.verify", lab["tech"], {"order_id": oid, "approve": True}, pid)
    assert same["ok"] is False and same["problem"] == "not_pathologist" and same["verified"] is False
    done = _call(database, "lab.verify", lab["path"], {"order_id": oid, "approve": True, "comment": None}, pid)
    assert done == {"ok": True, "problem": None, "verified": True, "critical": True, "returned": False}
    summary = _call(database, "lab.order_summary", lab["doctor"], {"order_id": oid}, pid)
    assert summary["status"] == "verified" and summary["all_verified"] and summary["critical"]
    assert summary["items"][0]["critical"] is True

    verified_again = _call(database, "lab.enter_results", lab["tech"], {"order_id": oid, "results": [
        {"test_code": "FBS", "analyte_code": "GLU", "value": "90"}]}, pid)
    assert verified_again["ok"] is False and "amend" in verified_again["problems"][0]["message"]


def test_verify_same_person_is_an_outcome(database, lab, make_user):
    pid = lab["patient_id"]
    both = Actor(user_id=make_user("both", "lab_technician", "pathologist"), username="both",
                 roles=frozenset({"lab_technician", "pathologist"}))
    oid = _call(database, "lab.create_order", lab["doctor"], {"patient_id": pid, "test_codes": ["FBS"]}, pid)["order_id"]
    _call(database, "lab.record_collection", both, {"order_id": oid, "collected": True}, pid)
    _call(database, "lab.enter_results", both, {"order_id": oid, "results": [
        {"test_code": "FBS", "analyte_code": "GLU", "value": "90"}]}, pid)
    result = _call(database, "lab.verify", both, {"order_id": oid, "approve": True}, pid)
    assert result["ok"] is False and result["problem"] == "same_person" and result["verified"] is False
    back = _call(database, "lab.verify", lab["path"], {"order_id": oid, "approve": False, "comment": "Repeat"}, pid)
    assert back["ok"] is True and back["verified"] is False and back["returned"] is True


def test_cancel_item_contract(database, lab):
    pid = lab["patient_id"]
    made = _call(database, "lab.create_order", lab["doctor"], {"patient_id": pid, "test_codes": ["CBC", "FBS"]}, pid)
    cbc, fbs = made["items"]
    out = _call(database, "lab.cancel_item", lab["doctor"], {"order_item_id": fbs["order_item_id"],
                                                              "reason": "Not fasting"}, pid)
    assert out == {"cancelled": True, "problem": None, "tariff_code": "LAB-FBS",
                   "source_ref": f"lab_order_item:{fbs['order_item_id']}"}
    twice = _call(database, "lab.cancel_item", lab["doctor"], {"order_item_id": fbs["order_item_id"],
                                                                "reason": "Not fasting"}, pid)
    assert twice["cancelled"] is False and twice["problem"] == "already_cancelled"
    _call(database, "lab.record_collection", lab["tech"], {"order_id": made["order_id"], "collected": True}, pid)
    late = _call(database, "lab.cancel_item", lab["doctor"], {"order_item_id": cbc["order_item_id"],
                                                               "reason": "Changed plan"}, pid)
    assert late["cancelled"] is False and late["problem"] == "already_collected" and late["tariff_code"] == "LAB-CBC"


# --- the shipped pathway --------------------------------------------------------------

@pytest.fixture
def lab_pathway(app, database, tmp_path):
    """Publish only workflows/lab_order.bpmn (through the real lint)."""
    source = WORKFLOWS / "lab_order.bpmn"
    assert source.exists(), "workflows/lab_order.bpmn is shipped with HMS"
    shutil.copy(source, tmp_path / "lab_order.bpmn")
    with database.transaction() as s:
        specs.sync_shipped(s, tmp_path, Actor.system("test"))


def _open(database, instance_id):
    with database.transaction(readonly=True) as s:
        return [(i.id, i.task_name) for i in queue.open_items_of(s, instance_id)]


def _complete(database, actor, item_id, data):
    with database.transaction() as s:
        result = engine.complete_task(s, actor, item_id, data,
                                      validate=lambda key, d: taskforms.validate(s, key, d))
        assert result.ok, result.fault
        return result


def test_lab_order_pathway_from_collection_to_review(database, lab, lab_pathway):
    pid = lab["patient_id"]
    order = _call(database, "lab.create_order", lab["doctor"], {"patient_id": pid, "test_codes": ["FBS", "MPICT"]},
                  pid)
    with database.transaction() as s:
        started = engine.start_pathway(s, Actor.system("test"), "lab_order", patient_id=pid,
                                       business_key=order["business_key"],
                                       data={"lab_order": order, "doctor_id": lab["doctor"].user_id})
        assert started.ok, started.fault
        iid = started.instance.id

    [(item, name)] = _open(database, iid)
    assert name == "collect"
    _complete(database, lab["tech"], item, {"collected": False, "rejection_reason": "insufficient"})
    [(item, name)] = _open(database, iid)
    assert name == "collect"  # rejected: collect again
    _complete(database, lab["tech"], item, {"collected": True})
    [(item, name)] = _open(database, iid)
    assert name == "enter"
    rows = [{"test_code": "FBS", "analyte_code": "GLU", "value": "520"},
            {"test_code": "MPICT", "analyte_code": "PF", "value": "Negative"}]
    _complete(database, lab["tech"], item, {"results": rows})
    [(item, name)] = _open(database, iid)
    assert name == "enter"  # P. vivax still missing: finish the entry
    _complete(database, lab["tech"], item, {"results": rows + [
        {"test_code": "MPICT", "analyte_code": "PV", "value": "Positive"}]})
    [(item, name)] = _open(database, iid)
    assert name == "verify"
    _complete(database, lab["path"], item, {"approve": False, "comment": "Repeat glucose on a fresh draw"})
    [(item, name)] = _open(database, iid)
    assert name == "enter"
    _complete(database, lab["tech"], item, {"results": rows + [
        {"test_code": "MPICT", "analyte_code": "PV", "value": "Positive"}]})
    [(item, name)] = _open(database, iid)
    _complete(database, lab["path2"], item, {"approve": True})
    [(item, name)] = _open(database, iid)
    assert name == "review"
    with database.transaction(readonly=True) as s:
        review = s.get(WorkItem, item)
        assert (review.role, review.claimed_by_id) == ("doctor", lab["doctor"].user_id)
        assert review.priority == 1  # a critical glucose puts the review first in the doctor's queue
        assert services.get_order(s, order["order_id"]).status == "verified"
    _complete(database, lab["doctor"], item, {"reviewed": True, "action_note": "Start antimalarials"})
    with database.transaction(readonly=True) as s:
        assert s.get(ProcessInstance, iid).status == "completed"
    # The verification enqueued the pathway message once for the order. It is delivered
    # after commit, or by the retry sweep of the timer tick if that send was lost.
    key = f"lab_result_verified:lab-order:{order['order_id']}"
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(JobRun.name).where(JobRun.key == key)) == "workflow.deliver_message"
    jobs.retry_failed(database, now=utcnow() + timedelta(hours=1))
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(JobRun.status).where(JobRun.key == key)) == "done"
