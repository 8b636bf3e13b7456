"""Pharmacy issues to wards on a real database: the ward's acceptance, returns from the
ward (never more than the ward holds, also when sent at once), the pharmacist's count
(partial, rejected), the bill-credit event, and what blocks the nursing discharge."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hms import events
from hms.audit import Actor, AuditLog
from hms.errors import Conflict, Forbidden, Invalid, NotFound
from hms.workflow import operations
from hms.workflow.operations import OperationContext
import inventory.operations  # noqa: F401  (registers the inventory operations)
from inventory import services, ward_issues
from inventory.models import Dispense, DispenseReturn, WardReturn
from tests.integration.test_inventory_concurrency import THREADS, race
from tests.integration.test_inventory_support import (PHARMACIST, assert_ledger_agrees, make_items, make_patient,
                                                      on_hand, stock)

NURSE = Actor(user_id=None, username="nurse-test", roles=frozenset({"nurse"}))
ADMISSION = 7


@pytest.fixture
def ward(database):
    """A patient on admission 7; CTX1GI (ceftriaxone 1 g vials, 500 paisa) and PCM500T in stock."""
    make_items(database, "CTX1GI", "PCM500T")
    ctx = stock(database, "CTX1GI", ("C1", 300, 20, 500))
    pcm = stock(database, "PCM500T", ("P1", 300, 100, 300))
    return {"patient": make_patient(database), "ctx_batch": ctx[0], "pcm_batch": pcm[0]}


def issue(database, ward, lines, admission_id=ADMISSION, order=1):
    with database.transaction() as s:
        out = services.dispense(s, PHARMACIST, patient_id=ward["patient"], admission_id=admission_id,
                                prescription_ref=f"admission:{admission_id}:medorder:{order}", lines=lines)
    assert out["ok"], out
    return out


def accept(database, dispense_id, actor=NURSE):
    with database.transaction() as s:
        return ward_issues.accept_ward_issue(s, actor, dispense_id).id


def send(database, line_id, quantity, admission_id=ADMISSION, reason=None):
    with database.transaction() as s:
        return ward_issues.request_ward_return(s, NURSE, admission_id=admission_id, dispense_line_id=line_id,
                                               quantity=quantity, reason=reason).id


def receive(database, return_id, received, note=None, actor=PHARMACIST):
    with database.transaction() as s:
        return ward_issues.receive_ward_return(s, actor, return_id, received_quantity=received, note=note)


def blockers(database, admission_id=ADMISSION):
    with database.transaction() as s:
        return ward_issues.ward_blockers(s, admission_id)


def on_ward(database, admission_id=ADMISSION):
    with database.transaction() as s:
        return {row["dispense_line_id"]: row for row in ward_issues.issued_on_hand(s, admission_id)}


@pytest.fixture
def published():
    """Events "inventory.return_received" published during the test (handler removed after)."""
    seen = []

    def handler(session, actor, **data):
        seen.append(data)

    events.subscribe("inventory.return_received", handler)
    yield seen
    events._SUBSCRIBERS["inventory.return_received"].remove(handler)


# --- issuing and accepting ---------------------------------------------------------------

def test_an_issue_records_its_admission_and_an_opd_dispense_does_not(database, ward):
    out = issue(database, ward, [{"item_code": "CTX1GI", "quantity": 3}])
    with database.transaction() as s:
        opd = services.dispense(s, PHARMACIST, patient_id=ward["patient"], prescription_ref="RX-OPD-1",
                                lines=[{"item_code": "PCM500T", "quantity": 2}])
        assert s.get(Dispense, out["dispense_id"]).admission_id == ADMISSION
        assert s.get(Dispense, opd["dispense_id"]).admission_id is None
        with pytest.raises(Invalid) as err:
            services.dispense(s, PHARMACIST, patient_id=ward["patient"], admission_id=8,
                              prescription_ref="admission:7:medorder:1", lines=[{"item_code": "CTX1GI", "quantity": 1}])
        assert "prescription_ref" in err.value.fields
    audit = _audit(database, "inventory.dispense")
    assert audit[0].detail["admission_id"] == ADMISSION and "admission_id" not in audit[1].detail


def test_the_ward_accepts_an_issue_once(database, ward):
    out = issue(database, ward, [{"item_code": "CTX1GI", "quantity": 3}])
    with database.transaction() as s, pytest.raises(Forbidden):
        ward_issues.accept_ward_issue(s, PHARMACIST, out["dispense_id"])  # the issuer cannot confirm receipt
    accept(database, out["dispense_id"])
    with database.transaction() as s:
        record = s.get(Dispense, out["dispense_id"])
        assert record.ward_accepted_at is not None and record.ward_accepted_by_name == "nurse-test"
    with pytest.raises(Conflict) as again:
        accept(database, out["dispense_id"])
    assert again.value.code == "already_accepted" and "nurse-test" in again.value.message
    (row,) = _audit(database, "inventory.ward_issue_accept")
    assert row.patient_id == ward["patient"] and row.detail == {"admission_id": ADMISSION}


def test_an_opd_dispense_or_a_missing_one_cannot_be_accepted(database, ward):
    with database.transaction() as s:
        opd = services.dispense(s, PHARMACIST, patient_id=ward["patient"], prescription_ref="RX-OPD-1",
                                lines=[{"item_code": "PCM500T", "quantity": 2}])
    with pytest.raises(Conflict) as err:
        accept(database, opd["dispense_id"])
    assert err.value.code == "not_a_ward_issue"
    with pytest.raises(NotFound):
        accept(database, 999_999)


# --- blockers ----------------------------------------------------------------------------

def test_blockers_name_the_unaccepted_issue_and_the_uncounted_return(database, ward):
    assert blockers(database) == []
    out = issue(database, ward, [{"item_code": "CTX1GI", "quantity": 3}, {"item_code": "PCM500T", "quantity": 10}])
    number = f"D-{out['dispense_id']:06d}"
    assert blockers(database) == [{
        "kind": "issue_unaccepted", "id": out["dispense_id"],
        "text": f"Pharmacy issue {number} (Ceftriaxone 1 g x 3, Paracetamol 500 mg x 10) not accepted by the ward"}]
    assert blockers(database, admission_id=8) == []  # another admission is not held up
    accept(database, out["dispense_id"])
    assert blockers(database) == []
    return_id = send(database, out["lines"][0]["dispense_line_id"], 2)
    (pending,) = blockers(database)
    assert pending["kind"] == "return_pending" and pending["id"] == return_id
    assert pending["text"] == f"Return of Ceftriaxone 1 g x 2 (issue {number}) not yet received by pharmacy"
    receive(database, return_id, 2)
    assert blockers(database) == []


# --- returns: limits ---------------------------------------------------------------------

def test_a_return_needs_an_accepted_issue_of_this_admission(database, ward):
    out = issue(database, ward, [{"item_code": "CTX1GI", "quantity": 3}])
    line = out["lines"][0]["dispense_line_id"]
    with pytest.raises(Conflict) as err:
        send(database, line, 1)
    assert err.value.code == "not_accepted"
    accept(database, out["dispense_id"])
    with pytest.raises(Invalid) as other:
        send(database, line, 1, admission_id=8)
    assert other.value.code == "not_this_admission"
    with pytest.raises(NotFound):
        send(database, 999_999, 1)
    with pytest.raises(Invalid):
        send(database, line, 0)
    with database.transaction() as s, pytest.raises(Forbidden):
        ward_issues.request_ward_return(s, PHARMACIST, admission_id=ADMISSION, dispense_line_id=line, quantity=1)


def test_the_ward_never_sends_back_more_than_it_holds(database, ward):
    out = issue(database, ward, [{"item_code": "PCM500T", "quantity": 10}])
    accept(database, out["dispense_id"])
    line = out["lines"][0]["dispense_line_id"]
    first = send(database, line, 6, reason="Stopped by the doctor")
    with pytest.raises(Conflict) as err:
        send(database, line, 5)
    assert err.value.code == "exceeds_on_hand" and err.value.fields["on_hand"] == 4
    assert "at most 4" in err.value.message
    assert on_ward(database)[line] == {"dispense_line_id": line, "item_code": "PCM500T", "name": "Paracetamol 500 mg",
                                       "dispensed": 10, "returned": 0, "pending_return": 6, "on_hand": 4}
    # A rejected return gives the units back to the ward's count.
    receive(database, first, 0, note="Strip opened")
    assert on_ward(database)[line]["on_hand"] == 10
    second = send(database, line, 10)
    receive(database, second, 10)
    assert on_ward(database)[line] == {"dispense_line_id": line, "item_code": "PCM500T", "name": "Paracetamol 500 mg",
                                       "dispensed": 10, "returned": 10, "pending_return": 0, "on_hand": 0}
    with pytest.raises(Conflict):
        send(database, line, 1)
    with database.transaction() as s:
        assert s.get(WardReturn, first).reason == "Stopped by the doctor"
        assert s.get(WardReturn, second).reason == ward_issues.DEFAULT_RETURN_REASON


def test_unaccepted_issues_are_not_on_hand(database, ward):
    issue(database, ward, [{"item_code": "PCM500T", "quantity": 10}])
    assert on_ward(database) == {}


def sending_at_once(database) -> None:
    make_items(database, "PCM500T")
    stock(database, "PCM500T", ("P1", 300, 100, 300))
    ward = {"patient": make_patient(database)}
    out = issue(database, ward, [{"item_code": "PCM500T", "quantity": 10}])
    accept(database, out["dispense_id"])
    line = out["lines"][0]["dispense_line_id"]

    def work(n, s):
        nurse = Actor(user_id=None, username=f"nurse-{n}", roles=frozenset({"nurse"}))
        try:
            return ward_issues.request_ward_return(s, nurse, admission_id=ADMISSION, dispense_line_id=line,
                                                   quantity=3).id
        except Conflict as exc:
            return exc.code

    results = race(database, work)
    assert sum(isinstance(r, int) for r in results) == 3
    assert [r for r in results if not isinstance(r, int)] == ["exceeds_on_hand"] * (THREADS - 3)
    assert on_ward(database)[line]["pending_return"] == 9


@pytest.mark.postgres
def test_postgres_two_screens_sending_one_line_back_cannot_exceed_it(database):
    assert database.dialect == "postgresql"
    sending_at_once(database)


def test_sending_one_line_back_at_once_cannot_exceed_it(database):
    sending_at_once(database)


# --- receiving ---------------------------------------------------------------------------

def test_a_partial_receipt_goes_back_into_stock_and_publishes_the_credit(database, ward, published):
    out = issue(database, ward, [{"item_code": "CTX1GI", "quantity": 5}])
    accept(database, out["dispense_id"])
    line = out["lines"][0]["dispense_line_id"]
    return_id = send(database, line, 4)
    assert on_hand(database, ward["ctx_batch"]) == 15
    result = receive(database, return_id, 3, note="One vial missing from the bag")
    assert result["state"] == "received" and result["received_quantity"] == 3 and result["amount_paisa"] == 1500
    assert on_hand(database, ward["ctx_batch"]) == 18
    assert published == [{"admission_id": ADMISSION, "patient_id": ward["patient"], "dispense_line_id": line,
                          "quantity": 3, "return_id": result["return_id"], "amount_paisa": 1500}]
    with database.transaction() as s:
        record = s.get(WardReturn, return_id)
        assert (record.state, record.received_quantity, record.note) == ("received", 3, "One vial missing from the bag")
        assert record.dispense_return_id == result["return_id"] and record.received_by_name == PHARMACIST.username
        assert s.get(DispenseReturn, result["return_id"]).quantity == 3
    # The vial that did not come back counts as still on the ward.
    assert on_ward(database)[line]["on_hand"] == 2
    with pytest.raises(Conflict) as again:
        receive(database, return_id, 1)
    assert again.value.code == "already_counted"
    assert _audit(database, "inventory.ward_return_receive")[0].detail["received"] == 3
    assert_ledger_agrees(database)


def test_receiving_more_than_sent_or_nothing_without_a_note_is_refused(database, ward, published):
    out = issue(database, ward, [{"item_code": "CTX1GI", "quantity": 5}])
    accept(database, out["dispense_id"])
    return_id = send(database, out["lines"][0]["dispense_line_id"], 2)
    with pytest.raises(Invalid) as more:
        receive(database, return_id, 3)
    assert "received_quantity" in more.value.fields
    with pytest.raises(Invalid) as silent:
        receive(database, return_id, 0)
    assert "note" in silent.value.fields
    with pytest.raises(Forbidden):
        receive(database, return_id, 2, actor=NURSE)
    result = receive(database, return_id, 0, note="Vials opened on the ward")
    assert result == {"ward_return_id": return_id, "received_quantity": 0, "return_id": None, "amount_paisa": 0,
                      "state": "rejected"}
    assert published == [] and on_hand(database, ward["ctx_batch"]) == 15
    with pytest.raises(NotFound):
        receive(database, 999_999, 1)


def test_a_subscriber_refusal_refuses_the_receipt(database, ward):
    out = issue(database, ward, [{"item_code": "CTX1GI", "quantity": 5}])
    accept(database, out["dispense_id"])
    return_id = send(database, out["lines"][0]["dispense_line_id"], 2)

    def refuse(session, actor, **data):
        raise Conflict("The bill is closed.", code="bill_closed")

    events.subscribe("inventory.return_received", refuse)
    try:
        with pytest.raises(Conflict) as err:
            receive(database, return_id, 2)
        assert err.value.code == "bill_closed"
    finally:
        events._SUBSCRIBERS["inventory.return_received"].remove(refuse)
    with database.transaction() as s:
        assert s.get(WardReturn, return_id).state == "sent"
    assert on_hand(database, ward["ctx_batch"]) == 15
    assert_ledger_agrees(database)


# --- operations --------------------------------------------------------------------------

def call(database, name, params, actor):
    with database.transaction() as s:
        return operations.call(name, OperationContext(s, actor, None, None, "discharge_billing"), params)


def test_the_discharge_operations_end_to_end(database, ward, published):
    out = issue(database, ward, [{"item_code": "CTX1GI", "quantity": 3}, {"item_code": "PCM500T", "quantity": 10}])
    info = call(database, "inventory.ward_issue_info", {"dispense_id": out["dispense_id"]}, NURSE)
    assert [(ln["name"], ln["quantity"]) for ln in info["lines"]] == [("Ceftriaxone 1 g", 3), ("Paracetamol 500 mg", 10)]
    assert info["total_paisa"] == 4500 and info["accepted"] is False
    assert call(database, "inventory.ward_blockers", {"admission_id": ADMISSION}, NURSE)["count"] == 1
    assert call(database, "inventory.accept_ward_issue", {"dispense_id": out["dispense_id"]}, NURSE) == {
        "ok": True, "dispense_id": out["dispense_id"]}
    lines = call(database, "inventory.issued_on_hand", {"admission_id": ADMISSION}, NURSE)["lines"]
    assert [(ln["item_code"], ln["on_hand"]) for ln in lines] == [("CTX1GI", 3), ("PCM500T", 10)]
    sent = call(database, "inventory.request_returns", {"admission_id": ADMISSION, "lines": [
        {"dispense_line_id": lines[0]["dispense_line_id"], "quantity": 0},
        {"dispense_line_id": lines[1]["dispense_line_id"], "quantity": 6, "reason": "Not needed"}]}, NURSE)
    assert sent["count"] == 1 and len(sent["return_ids"]) == 1
    pending = call(database, "inventory.pending_returns", {"admission_id": ADMISSION}, PHARMACIST)
    assert pending["count"] == 1 and pending["returns"][0]["name"] == "Paracetamol 500 mg"
    assert pending["returns"][0]["quantity"] == 6 and pending["returns"][0]["patient_mrn"]
    got = call(database, "inventory.receive_returns", {"admission_id": ADMISSION, "lines": [
        {"ward_return_id": sent["return_ids"][0], "received_quantity": 6}]}, PHARMACIST)
    assert got == {"received": 1, "rejected": 0, "credited_paisa": 1800}
    assert len(published) == 1
    assert call(database, "inventory.ward_blockers", {"admission_id": ADMISSION}, NURSE) == {"blockers": [], "count": 0}


def test_receive_returns_refuses_a_return_of_another_admission(database, ward):
    out = issue(database, ward, [{"item_code": "CTX1GI", "quantity": 3}])
    accept(database, out["dispense_id"])
    return_id = send(database, out["lines"][0]["dispense_line_id"], 1)
    with pytest.raises(Invalid) as err:
        call(database, "inventory.receive_returns", {"admission_id": 8, "lines": [
            {"ward_return_id": return_id, "received_quantity": 1}]}, PHARMACIST)
    assert err.value.code == "not_pending"
    with pytest.raises(operations.OperationError):
        call(database, "inventory.request_returns", {"admission_id": ADMISSION, "lines": [
            {"dispense_line_id": 1, "quantity": 1, "extra": True}]}, NURSE)


def test_the_dispense_operation_passes_the_admission(database, ward):
    result = call(database, "inventory.dispense", {
        "patient_id": ward["patient"], "admission_id": ADMISSION, "prescription_ref": "admission:7:medorder:9",
        "lines": [{"item_code": "CTX1GI", "quantity": 2}]}, PHARMACIST)
    assert result["ok"]
    with database.transaction() as s:
        assert s.get(Dispense, result["dispense_id"]).admission_id == ADMISSION


def _audit(database, action):
    with database.transaction() as s:
        return list(s.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)))
