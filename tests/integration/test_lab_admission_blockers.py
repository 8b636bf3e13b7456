"""What the lab holds an admission's discharge for: orders of that admission whose tests
are not final (awaiting collection, results or verification); verified and cancelled
tests hold nothing, and other admissions' orders never count."""

from __future__ import annotations

import pytest

import departments.lab.operations  # noqa: F401  (registers the lab operations)
from departments.lab import demo, services
from hms.audit import Actor
from hms.patients.services import register_patient
from hms.workflow import operations
from hms.workflow.operations import OperationContext, OperationError

ADMISSION = 11


@pytest.fixture
def lab(app, database, make_user):
    with database.transaction() as s:
        for spec in demo.CATALOGUE:
            if spec["code"] in ("CBC", "FBS"):
                services.create_test(s, Actor.system("test"), spec)
        patient = register_patient(s, Actor.system("test"), {"name": "Rashid Mehmood", "sex": "male",
                                                              "date_of_birth": "1975-06-01"})

    def actor(username, *roles):
        return Actor(user_id=make_user(username, *roles), username=username, roles=frozenset(roles))

    return {"patient_id": patient.id, "doctor": actor("doc", "doctor"), "tech": actor("labtech", "lab_technician"),
            "path": actor("path", "pathologist")}


def order(database, lab, codes, admission_id=ADMISSION):
    with database.transaction() as s:
        made = services.create_order(s, lab["doctor"], patient_id=lab["patient_id"], test_codes=codes,
                                     admission_id=admission_id)
        return made.id, made.order_no


def blockers(database, admission_id=ADMISSION):
    with database.transaction() as s:
        return operations.call("lab.admission_blockers", OperationContext(s, Actor.system("test"), None, None,
                                                                          "discharge_billing"),
                               {"admission_id": admission_id})


def test_a_pending_order_blocks_and_a_verified_one_does_not(database, lab):
    assert blockers(database) == {"blockers": [], "count": 0}
    order_id, order_no = order(database, lab, ["FBS", "CBC"])
    order(database, lab, ["CBC"], admission_id=12)  # another admission's order
    order(database, lab, ["CBC"], admission_id=None)  # an OPD order
    assert blockers(database)["blockers"] == [{
        "kind": "lab_pending", "id": order_id,
        "text": f"Lab order {order_no}: FBS awaiting collection, CBC awaiting collection"}]

    with database.transaction() as s:
        services.record_collection(s, lab["tech"], order_id, collected=True)
    assert blockers(database)["blockers"][0]["text"] == (
        f"Lab order {order_no}: FBS awaiting results, CBC awaiting results")

    with database.transaction() as s:
        services.enter_results(s, lab["tech"], order_id, [{"test_code": "FBS", "analyte_code": "GLU", "value": "92"}])
    assert blockers(database)["blockers"][0]["text"] == (
        f"Lab order {order_no}: FBS awaiting verification, CBC awaiting results")


def test_verified_and_cancelled_tests_hold_nothing(database, lab):
    order_id, _ = order(database, lab, ["FBS", "CBC"])
    with database.transaction() as s:
        cbc = next(i for i in services.get_order(s, order_id).items if i.test.code == "CBC")
        services.cancel_item(s, lab["doctor"], cbc.id, "Ordered twice")
        services.record_collection(s, lab["tech"], order_id, collected=True)
        services.enter_results(s, lab["tech"], order_id, [{"test_code": "FBS", "analyte_code": "GLU", "value": "92"}])
    assert blockers(database)["count"] == 1
    with database.transaction() as s:
        outcome = services.verify_order(s, lab["path"], order_id, approve=True)
        assert services.get_order(s, order_id).status == "verified", outcome
    assert blockers(database) == {"blockers": [], "count": 0}


def test_the_operation_needs_an_admission_id(database, lab):
    with pytest.raises(OperationError):
        blockers(database, admission_id=None)
    with database.transaction() as s:
        with pytest.raises(OperationError):
            operations.call("lab.admission_blockers", OperationContext(s, Actor.system("t"), None, None, None), {})
