"""The finance JSON API through the Flask client: bills, idempotent payments in rupees or
paisa, closed bills, tariffs and payer classes, and who may do what."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from finance import services
from finance.models import Bill, Payment
from hms.db import utcnow
from hms.audit import Actor, AuditLog
from hms.errors import Conflict
from hms.patients.models import Patient

SYSTEM = Actor.system("test")


@pytest.fixture
def bill(database):
    """An OPD bill of HMS-000001 with a consultation (PKR 1,500) and a CBC (PKR 800)."""
    with database.transaction() as s:
        patient = Patient(mrn="HMS-000001", name="Ahmed Khan", name_search="ahmed khan", sex="male")
        s.add(patient)
        s.flush()
        services.create_tariff_item(s, SYSTEM, code="CONSULT-GM", kind="consultation",
                                    description="Consultation - General Medicine", price_paisa=150000)
        services.create_tariff_item(s, SYSTEM, code="LAB-CBC", kind="lab", description="Complete blood count",
                                    price_paisa=80000)
        b = services.open_bill(s, SYSTEM, patient.id, encounter_id=7)
        services.post_consultation_charge(s, SYSTEM, b.id, encounter_id=7, department_code="GM")
        services.post_charge(s, SYSTEM, b.id, source_ref="lab_order_item:12", kind="lab", description="CBC",
                             quantity=1, tariff_code="LAB-CBC")
        return {"id": b.id, "patient_id": patient.id}


@pytest.fixture
def cashier(as_role):
    return as_role("cashier")


def pay(client, bill_id, body, key="key-1"):
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(f"/api/v1/bills/{bill_id}/payments", json=body, headers=headers)


def pay_raw(client, bill_id, raw: str, key="key-raw"):
    return client.post(f"/api/v1/bills/{bill_id}/payments", data=raw, content_type="application/json",
                       headers={"Idempotency-Key": key})


def test_get_bill_returns_lines_totals_and_payments(cashier, bill, database):
    assert pay(cashier, bill["id"], {"amount": 500, "method": "cash"}).status_code == 201
    resp = cashier.get(f"/api/v1/bills/{bill['id']}")
    assert resp.status_code == 200
    data = resp.get_json()
    assert {k: data[k] for k in ("bill_no", "patient_id", "encounter_id", "admission_id", "payer_class", "status")} == {
        "bill_no": "B-000001", "patient_id": bill["patient_id"], "encounter_id": 7, "admission_id": None,
        "payer_class": "cash", "status": "open"}
    assert (data["total_paisa"], data["paid_paisa"], data["balance_paisa"]) == (230000, 50000, 180000)
    assert [(line["source_ref"], line["kind"], line["quantity"], line["unit_price_paisa"], line["amount_paisa"],
             line["reversal_of_id"]) for line in data["lines"]] == [
        ("encounter:7:consultation", "consultation", 1, 150000, 150000, None),
        ("lab_order_item:12", "lab", 1, 80000, 80000, None)]
    assert set(data["lines"][0]) >= {"id", "source_ref", "kind", "description", "quantity", "unit_price_paisa",
                                     "amount_paisa", "reversal_of_id"}
    [payment] = data["payments"]
    assert {k: payment[k] for k in ("receipt_no", "amount_paisa", "method", "reference")} == {
        "receipt_no": "R-000001", "amount_paisa": 50000, "method": "cash", "reference": None}
    assert payment["by"].startswith("u_cashier") and payment["at"]
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.action == "bill.read")) == 1
    assert cashier.get("/api/v1/bills/999").status_code == 404


def test_list_bills_filters(cashier, bill, database):
    with database.transaction() as s:
        services.open_bill(s, SYSTEM, bill["patient_id"], encounter_id=8)
    data = cashier.get(f"/api/v1/bills?patient_id={bill['patient_id']}").get_json()
    assert data["total"] == 2 and [b["bill_no"] for b in data["items"]] == ["B-000002", "B-000001"]
    data = cashier.get("/api/v1/bills?encounter_id=7&status=open").get_json()
    assert [b["bill_no"] for b in data["items"]] == ["B-000001"] and data["items"][0]["balance_paisa"] == 230000
    assert cashier.get("/api/v1/bills?status=closed").get_json()["total"] == 0
    assert cashier.get("/api/v1/bills?status=paid").status_code == 422
    assert cashier.get("/api/v1/bills?patient_id=abc").status_code == 422


def test_a_repeated_payment_request_pays_once(cashier, bill, database):
    first = pay(cashier, bill["id"], {"amount": "1500.50", "method": "cash"})
    assert first.status_code == 201 and first.get_json()["amount_paisa"] == 150050
    again = pay(cashier, bill["id"], {"amount": "1500.50", "method": "cash"})
    assert again.status_code == 200 and again.get_json() == first.get_json()
    same_in_paisa = pay(cashier, bill["id"], {"amount_paisa": 150050, "method": "cash"})
    assert same_in_paisa.status_code == 200 and same_in_paisa.get_json()["id"] == first.get_json()["id"]
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(Payment)) == 1
        assert s.get(Bill, bill["id"]).paid_paisa == 150050


def test_the_same_key_with_another_amount_is_409(cashier, bill):
    assert pay(cashier, bill["id"], {"amount": 1000, "method": "cash"}).status_code == 201
    resp = pay(cashier, bill["id"], {"amount": 1001, "method": "cash"})
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "idempotency_key_reused"


def test_a_payment_without_an_idempotency_key_is_400(cashier, bill, database):
    resp = pay(cashier, bill["id"], {"amount": 1000, "method": "cash"}, key=None)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "idempotency_key_required"
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(Payment)) == 0


@pytest.mark.parametrize("raw", ['{"amount": 1500.505, "method": "cash"}', '{"amount": "1500.505", "method": "cash"}',
                                 '{"amount": 0.001, "method": "cash"}', '{"amount": -5, "method": "cash"}',
                                 '{"amount": "abc", "method": "cash"}', '{"amount": true, "method": "cash"}',
                                 '{"amount_paisa": 150.5, "method": "cash"}', '{"method": "cash"}',
                                 '{"amount": 10, "amount_paisa": 1000, "method": "cash"}',
                                 '{"amount": 10, "method": "cheque"}'])
def test_amounts_that_are_not_exact_rupees_are_422(cashier, bill, raw):
    resp = pay_raw(cashier, bill["id"], raw)
    assert resp.status_code == 422, resp.get_json()


def test_json_numbers_are_read_exactly(cashier, bill):
    # 0.1 + 0.2 style binary floats never get in the way: 2299.99 is 229999 paisa exactly
    resp = pay_raw(cashier, bill["id"], '{"amount": 2299.99, "method": "cash"}')
    assert resp.status_code == 201 and resp.get_json()["amount_paisa"] == 229999
    assert pay_raw(cashier, bill["id"], '{"amount": NaN, "method": "cash"}', key="k-nan").status_code == 400


def test_overpayment_is_422_and_settling_exactly_is_201(cashier, bill):
    resp = pay(cashier, bill["id"], {"amount": "2300.01", "method": "cash"}, key="k-over")
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "overpayment"
    assert "PKR 2,300.00" in resp.get_json()["error"]["message"]
    resp = pay(cashier, bill["id"], {"amount": 2300, "method": "jazzcash", "reference": "JC-7781"}, key="k-all")
    assert resp.status_code == 201 and resp.get_json()["reference"] == "JC-7781"


def test_wallet_payments_need_a_reference(cashier, bill):
    resp = pay(cashier, bill["id"], {"amount": 100, "method": "easypaisa"})
    assert resp.status_code == 422 and "reference" in resp.get_json()["error"]["fields"]


def test_a_closed_bill_refuses_payments_and_charges_with_409(cashier, bill, database):
    with database.transaction() as s:
        closed = s.get(Bill, bill["id"])
        closed.status, closed.closed_at = "closed", utcnow()
    resp = pay(cashier, bill["id"], {"amount": 100, "method": "cash"})
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "bill_not_open"
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            services.post_charge(s, SYSTEM, bill["id"], source_ref="lab_order_item:13", kind="lab",
                                 description="CBC", quantity=1, tariff_code="LAB-CBC")
    assert err.value.http_status == 409


def test_who_may_take_payments(as_role, bill):
    for role in ("nurse", "doctor", "reception"):
        resp = pay(as_role(role), bill["id"], {"amount": 100, "method": "cash"}, key=f"k-{role}")
        assert resp.status_code == 403, role
    assert as_role("reception").get(f"/api/v1/bills/{bill['id']}").status_code == 200
    assert as_role("nurse").get(f"/api/v1/bills/{bill['id']}").status_code == 403
    assert pay(as_role("finance_manager"), bill["id"], {"amount": 100, "method": "cash"}, key="k-fm").status_code == 201


def test_tariffs_are_read_by_staff_and_changed_by_finance(as_role, database):
    manager, nurse, cashier = as_role("finance_manager"), as_role("nurse"), as_role("cashier")
    body = {"code": "proc-ecg", "kind": "procedure", "description": "ECG", "price_paisa": 80000}
    assert cashier.post("/api/v1/tariffs", json=body).status_code == 403
    resp = manager.post("/api/v1/tariffs", json=body)
    assert resp.status_code == 201 and resp.get_json() == {
        "code": "PROC-ECG", "kind": "procedure", "description": "ECG", "active": True, "prices": {"cash": 80000}}
    assert manager.post("/api/v1/tariffs", json=body).status_code == 409
    assert manager.post("/api/v1/tariffs", json=dict(body, code="PROC-X", price_paisa=800.5)).status_code == 422

    resp = manager.post("/api/v1/payer-classes", json={"code": "panel-wapda", "name": "WAPDA", "kind": "corporate"})
    assert resp.status_code == 201
    assert [p["code"] for p in nurse.get("/api/v1/payer-classes").get_json()["items"]] == ["cash", "panel-wapda"]
    resp = manager.put("/api/v1/tariffs/PROC-ECG/prices", json={"payer_class": "panel-wapda", "price_paisa": 72000})
    assert resp.status_code == 200 and resp.get_json()["prices"] == {"cash": 80000, "panel-wapda": 72000}
    assert manager.put("/api/v1/tariffs/PROC-ECG/prices",
                       json={"payer_class": "panel-none", "price_paisa": 1}).status_code == 422
    assert manager.put("/api/v1/tariffs/PROC-NONE/prices",
                       json={"payer_class": "cash", "price_paisa": 1}).status_code == 404
    assert cashier.put("/api/v1/tariffs/PROC-ECG/prices",
                       json={"payer_class": "cash", "price_paisa": 1}).status_code == 403

    items = nurse.get("/api/v1/tariffs?kind=procedure").get_json()["items"]
    assert [i["code"] for i in items] == ["PROC-ECG"]
    assert nurse.get("/api/v1/tariffs?q=ecg").get_json()["items"][0]["code"] == "PROC-ECG"
    assert nurse.get("/api/v1/tariffs?kind=lab").get_json()["items"] == []
    with database.transaction(readonly=True) as s:
        assert services.price_for(s, "PROC-ECG", "panel-wapda") == 72000
