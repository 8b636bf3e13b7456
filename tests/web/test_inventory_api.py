"""The pharmacy API and the inventory operations: shapes, refusals (409 / 422 with the
problems), permissions, and the dispense task form."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from hms import forms
from hms.audit import Actor, AuditLog
from hms.errors import Invalid
from hms.workflow import operations as registry
from hms.workflow.operations import OperationContext, OperationError
from inventory import services
from inventory.models import Dispense
from tests.integration.test_inventory_support import assert_ledger_agrees, make_items, make_patient, stock

FORM_PATH = Path(__file__).resolve().parents[2] / "forms" / "dispense.json"


@pytest.fixture
def pharmacist(as_role):
    return as_role("pharmacist")


@pytest.fixture
def shelf(database):
    """PCM500T (10 unexpired, 5 expired) and AMX500C (20)."""
    make_items(database, "PCM500T", "AMX500C")
    pcm = stock(database, "PCM500T", ("OLD", -2, 5, 300), ("NEW", 100, 10, 300))
    amx = stock(database, "AMX500C", ("A1", 300, 20, 1800))
    return {"pcm": pcm, "amx": amx}


def expiry(days: int, database) -> str:
    with database.transaction() as s:
        return (services.today_local(s) + timedelta(days=days)).isoformat()


# --- items, batches, receipts, adjustments, ledger ---------------------------------------

def test_create_item_and_search(pharmacist, as_role):
    body = {"code": "pcm500t", "generic_name": "Paracetamol", "brand": "Panadol", "form": "tablet",
            "strength": "500 mg", "unit": "tablet", "substance": "Paracetamol", "class": "Analgesic",
            "reorder_level": 100}
    resp = pharmacist.post("/api/v1/inventory/items", json=body)
    assert resp.status_code == 201, resp.get_json()
    item = resp.get_json()
    assert item["code"] == "PCM500T" and item["class"] == "analgesic" and item["substance"] == "paracetamol"
    assert item["stock_on_hand"] == 0 and item["reorder"] is True and resp.headers["Location"].endswith("/PCM500T")
    assert pharmacist.post("/api/v1/inventory/items", json=body).status_code == 409
    bad = pharmacist.post("/api/v1/inventory/items", json={**body, "code": "X2", "form": "pill"})
    assert bad.status_code == 422 and "form" in bad.get_json()["error"]["fields"]
    doctor = as_role("doctor")
    found = doctor.get("/api/v1/inventory/items?q=PANA").get_json()
    assert found["total"] == 1 and found["items"][0]["value"] == "PCM500T"
    assert "Panadol" in found["items"][0]["label"]
    assert doctor.get("/api/v1/inventory/items?q=zzz").get_json()["items"] == []
    assert doctor.post("/api/v1/inventory/items", json=body).status_code == 403


def test_receipt_batches_adjustment_and_ledger(pharmacist, database, as_role):
    make_items(database, "PCM500T")
    line = {"item_code": "PCM500T", "batch_no": "b-17", "expiry": expiry(200, database), "quantity": 40,
            "cost_price_paisa": 250, "sale_price_paisa": 300}
    resp = pharmacist.post("/api/v1/inventory/receipts",
                           json={"supplier": "Muller & Phipps", "invoice_no": "MP-77", "lines": [line]})
    assert resp.status_code == 201, resp.get_json()
    receipt = resp.get_json()
    assert receipt["total_cost_paisa"] == 10000 and receipt["batches"][0]["batch_no"] == "B-17"
    batch_id = receipt["batches"][0]["id"]
    again = pharmacist.post("/api/v1/inventory/receipts",
                            json={"supplier": "Muller & Phipps", "invoice_no": "MP-77", "lines": [line]})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "duplicate_invoice"
    past = pharmacist.post("/api/v1/inventory/receipts", json={
        "supplier": "X", "invoice_no": "1", "lines": [{**line, "expiry": expiry(-1, database)}]})
    assert past.status_code == 422 and "lines.0.expiry" in past.get_json()["error"]["fields"]
    zero = pharmacist.post("/api/v1/inventory/receipts", json={
        "supplier": "X", "invoice_no": "2", "lines": [{**line, "sale_price_paisa": 0}]})
    assert zero.status_code == 422

    batches = pharmacist.get("/api/v1/inventory/batches?item_code=PCM500T").get_json()
    assert batches["total"] == 1 and batches["items"][0]["status"] == "ok"
    item = pharmacist.get("/api/v1/inventory/items/pcm500t").get_json()
    assert item["stock_on_hand"] == 40 and [b["batch_no"] for b in item["batches"]] == ["B-17"]

    no_reason = pharmacist.post("/api/v1/inventory/adjustments", json={"batch_id": batch_id, "quantity": -3,
                                                                       "reason": ""})
    assert no_reason.status_code == 422
    too_many = pharmacist.post("/api/v1/inventory/adjustments",
                               json={"batch_id": batch_id, "quantity": -41, "reason": "count correction"})
    assert too_many.status_code == 409 and too_many.get_json()["error"]["code"] == "insufficient_stock"
    done = pharmacist.post("/api/v1/inventory/adjustments",
                           json={"batch_id": batch_id, "quantity": -3, "reason": "damaged", "note": "water"})
    assert done.status_code == 201 and done.get_json()["balance_after"] == 37

    ledger = pharmacist.get(f"/api/v1/inventory/ledger?batch_id={batch_id}").get_json()
    assert [(m["kind"], m["quantity"], m["balance_after"]) for m in ledger["items"]] == [
        ("adjustment", -3, 37), ("receipt", 40, 40)]
    assert pharmacist.get("/api/v1/inventory/ledger").status_code == 422
    assert as_role("finance_manager").get("/api/v1/inventory/ledger?item_code=PCM500T").status_code == 200
    assert as_role("nurse").get("/api/v1/inventory/ledger?item_code=PCM500T").status_code == 403
    assert_ledger_agrees(database)


# --- dispensing --------------------------------------------------------------------------

def test_dispense_returns_201_with_the_outcome_and_can_be_read_back(pharmacist, database, shelf, as_role):
    patient = make_patient(database)
    resp = pharmacist.post("/api/v1/inventory/dispenses", json={
        "patient_id": patient, "prescription_ref": "RX-1",
        "lines": [{"item_code": "PCM500T", "quantity": 4, "prescription_item_id": 11}]})
    assert resp.status_code == 201, resp.get_json()
    out = resp.get_json()
    assert out["ok"] is True and out["total_paisa"] == 1200 and out["problems"] == []
    (line,) = out["lines"]
    assert {k: line[k] for k in ("item_code", "batch_no", "quantity", "unit_price_paisa", "amount_paisa")} == {
        "item_code": "PCM500T", "batch_no": "NEW", "quantity": 4, "unit_price_paisa": 300, "amount_paisa": 1200}
    record = as_role("cashier").get(f"/api/v1/inventory/dispenses/{out['dispense_id']}").get_json()
    assert record["patient_id"] == patient and record["lines"][0]["dispense_line_id"] == line["dispense_line_id"]
    assert isinstance(record["dispensed_at"], str)
    ret = pharmacist.post("/api/v1/inventory/returns", json={"dispense_line_id": line["dispense_line_id"],
                                                            "quantity": 1, "reason": "Unused"})
    assert ret.status_code == 201 and ret.get_json()["amount_paisa"] == 300
    over = pharmacist.post("/api/v1/inventory/returns", json={"dispense_line_id": line["dispense_line_id"],
                                                             "quantity": 4, "reason": "Unused"})
    assert over.status_code == 409 and over.get_json()["error"]["code"] == "exceeds_dispensed"
    with database.transaction() as s:
        actions = [a for a in s.scalars(select(AuditLog.action).where(AuditLog.action.like("inventory.%")))]
    assert "inventory.dispense" in actions and "inventory.dispense_read" in actions
    assert_ledger_agrees(database)


def test_short_stock_is_a_409_carrying_the_problems(pharmacist, database, shelf):
    patient = make_patient(database)
    resp = pharmacist.post("/api/v1/inventory/dispenses", json={
        "patient_id": patient, "prescription_ref": "RX-1", "lines": [{"item_code": "PCM500T", "quantity": 12}]})
    assert resp.status_code == 409
    error = resp.get_json()["error"]
    assert error["code"] == "insufficient_stock"
    assert error["fields"]["problems"][0]["available"] == 10
    partial = pharmacist.post("/api/v1/inventory/dispenses", json={
        "patient_id": patient, "prescription_ref": "RX-1", "lines": [{"item_code": "PCM500T", "quantity": 12}],
        "partial_reason": "Rest next week"})
    assert partial.status_code == 201 and partial.get_json()["shortfalls"][0]["dispensed"] == 10
    assert_ledger_agrees(database)


def test_allergy_is_a_422_until_overridden(pharmacist, database, shelf):
    patient = make_patient(database, ("Penicillins", "severe"))
    body = {"patient_id": patient, "prescription_ref": "RX-2", "lines": [{"item_code": "AMX500C", "quantity": 15}]}
    resp = pharmacist.post("/api/v1/inventory/dispenses", json=body)
    assert resp.status_code == 422
    error = resp.get_json()["error"]
    assert error["code"] == "allergy_alert" and error["fields"]["problems"][0]["alerts"][0]["match"] == "class"
    ok = pharmacist.post("/api/v1/inventory/dispenses", json={**body, "allergy_override_reason": "Test dose tolerated"})
    assert ok.status_code == 201
    with database.transaction() as s:
        assert s.get(Dispense, ok.get_json()["dispense_id"]).allergy_override_reason == "Test dose tolerated"


def test_dispense_input_errors(pharmacist, database, shelf):
    patient = make_patient(database)
    bad = pharmacist.post("/api/v1/inventory/dispenses", json={"patient_id": patient, "prescription_ref": "RX",
                                                               "lines": [{"item_code": "PCM500T", "quantity": 0}]})
    assert bad.status_code == 422 and bad.get_json()["error"]["code"] == "invalid"
    unknown = pharmacist.post("/api/v1/inventory/dispenses", json={"patient_id": patient, "prescription_ref": "RX",
                                                                   "lines": [{"item_code": "NOPE", "quantity": 1}]})
    assert unknown.status_code == 422 and unknown.get_json()["error"]["code"] == "unknown_item"
    nobody = pharmacist.post("/api/v1/inventory/dispenses", json={"patient_id": 999, "prescription_ref": "RX",
                                                                  "lines": [{"item_code": "PCM500T", "quantity": 1}]})
    assert nobody.status_code == 404


def test_reception_cannot_dispense_and_nurses_only_check(as_role, database, shelf):
    patient = make_patient(database)
    body = {"patient_id": patient, "prescription_ref": "RX", "lines": [{"item_code": "PCM500T", "quantity": 1}]}
    assert as_role("reception").post("/api/v1/inventory/dispenses", json=body).status_code == 403
    nurse = as_role("nurse")
    assert nurse.post("/api/v1/inventory/dispenses", json=body).status_code == 403
    assert nurse.post("/api/v1/prescriptions/check", json={"patient_id": patient, "items": []}).status_code == 200
    assert as_role("reception").get("/api/v1/inventory/items").status_code == 403


def test_prescription_check_returns_alerts_and_audits_the_read(as_role, database, shelf):
    patient = make_patient(database, ("amoxicillin", "moderate"))
    doctor = as_role("doctor")
    resp = doctor.post("/api/v1/prescriptions/check",
                       json={"patient_id": patient, "items": [{"item_code": "AMX500C"}, {"item_code": "PCM500T"}]})
    assert resp.status_code == 200
    (alert,) = resp.get_json()["alerts"]
    assert alert["item_code"] == "AMX500C" and alert["match"] == "substance" and alert["severity"] == "moderate"
    assert doctor.post("/api/v1/prescriptions/check", json={"patient_id": 999, "items": []}).status_code == 404
    with database.transaction() as s:
        assert s.scalar(select(AuditLog.id).where(AuditLog.action == "patient.read",
                                                  AuditLog.patient_id == patient)) is not None


# --- operations --------------------------------------------------------------------------

def ctx(session, patient_id=None) -> OperationContext:
    return OperationContext(session=session, actor=Actor(user_id=None, username="engine", roles=frozenset()),
                            instance_id=1, patient_id=patient_id, pathway_key="opd_visit")


def test_operations_are_registered_with_their_parameters(app):
    names = registry.names()
    assert {"inventory.check_allergies", "inventory.dispense", "inventory.return_items"} <= set(names)
    params = registry.get("inventory.dispense").param_names()
    assert params == {"patient_id": True, "prescription_ref": True, "lines": True, "partial_reason": False,
                      "allergy_override_reason": False, "admission_id": False}
    assert registry.get("inventory.check_allergies").param_names() == {"patient_id": True, "item_codes": True}
    assert registry.get("inventory.return_items").param_names() == {"dispense_line_id": True, "quantity": True,
                                                                    "reason": True}


def test_dispense_operation_returns_problems_as_data(app, database, shelf):
    patient = make_patient(database, ("Penicillin", "severe"))
    with database.transaction() as s:
        alerts = registry.call("inventory.check_allergies", ctx(s, patient),
                               {"patient_id": patient, "item_codes": ["AMX500C", "PCM500T"]})
        assert alerts["has_alerts"] is True and [a["item_code"] for a in alerts["alerts"]] == ["AMX500C"]
        refused = registry.call("inventory.dispense", ctx(s, patient), {
            "patient_id": patient, "prescription_ref": "RX-7",
            "lines": [{"item_code": "AMX500C", "quantity": 3}, {"item_code": "PCM500T", "quantity": 50}]})
        json.dumps(refused)
        assert refused["ok"] is False and {p["code"] for p in refused["problems"]} == {"allergy", "insufficient_stock"}
        done = registry.call("inventory.dispense", ctx(s, patient), {
            "patient_id": patient, "prescription_ref": "RX-7", "lines": [{"item_code": "PCM500T", "quantity": 2}],
            "partial_reason": None, "allergy_override_reason": None})
        assert done["ok"] and done["lines"][0]["batch_no"] == "NEW"
        back = registry.call("inventory.return_items", ctx(s, patient), {
            "dispense_line_id": done["lines"][0]["dispense_line_id"], "quantity": 1, "reason": "spare"})
        assert back["amount_paisa"] == 300
        skipped = registry.call("inventory.dispense", ctx(s, patient), {
            "patient_id": patient, "prescription_ref": "RX-8",
            "lines": [{"item_code": "AMX500C", "quantity": 0}, {"item_code": "PCM500T", "quantity": 99}]})
        assert skipped["problems"][0]["code"] == "insufficient_stock" and skipped["problems"][0]["line"] == 1
        nothing = registry.call("inventory.dispense", ctx(s, patient), {
            "patient_id": patient, "prescription_ref": "RX", "lines": [{"item_code": "PCM500T", "quantity": 0}]})
        assert nothing["ok"] is False and nothing["problems"][0]["code"] == "nothing_to_dispense"
        with pytest.raises(OperationError):
            registry.call("inventory.dispense", ctx(s, patient), {"patient_id": patient, "prescription_ref": "RX",
                                                                  "lines": [{"item_code": "PCM500T", "quantity": -1}]})
        with pytest.raises(OperationError):
            registry.call("inventory.dispense", ctx(s, patient + 1), {
                "patient_id": patient, "prescription_ref": "RX", "lines": [{"item_code": "PCM500T", "quantity": 1}]})
    assert_ledger_agrees(database)


# --- the task form -----------------------------------------------------------------------

def test_dispense_form_is_valid_and_type_checks_the_lines():
    raw = json.loads(FORM_PATH.read_text())
    assert forms.validate_definition(raw, "dispense") == []
    defn = forms.load_form(FORM_PATH)
    data = forms.validate(defn, {"lines": [{"item_code": "PCM500T", "quantity": 3, "prescription_item_id": 4},
                                           {"item_code": "AMX500C", "quantity": 0}],
                                 "partial_reason": "", "allergy_override_reason": None})
    assert data["lines"][0] == {"item_code": "PCM500T", "quantity": 3, "prescription_item_id": 4}
    assert data["partial_reason"] is None and data["allergy_override_reason"] is None
    # prescription_item_id is an ordinary field: a posted value is kept (readOnly ones are dropped).
    posted = forms.coerce_form_post(defn, {"lines-0-item_code": "PCM500T", "lines-0-quantity": "2",
                                           "lines-0-prescription_item_id": "9"})
    assert forms.validate(defn, posted)["lines"] == [{"item_code": "PCM500T", "quantity": 2,
                                                      "prescription_item_id": 9}]
    with pytest.raises(Invalid) as err:
        forms.validate(defn, {"lines": [{"item_code": "PCM500T", "quantity": -1}]})
    assert "quantity" in err.value.fields["lines"][0]
    with pytest.raises(Invalid):
        forms.validate(defn, {"lines": []})
