"""The inpatient bill through the Flask client: interim / final totals, discounts with
approval, deposits, close and the 409s after it, reversals as credit notes, gate pass,
the final bill PDF, the closure queue and the cash closing page."""

from __future__ import annotations

import pytest

from finance import services
from hms.audit import Actor
from hms.patients.models import Patient

SYSTEM = Actor.system("test")


@pytest.fixture
def bill(database):
    """Admission 3's bill: two general bed-days (PKR 3,000 a day)."""
    with database.transaction() as s:
        patient = Patient(mrn="HMS-000001", name="Ahmed Khan", name_search="ahmed khan", sex="male")
        s.add(patient)
        s.flush()
        services.create_tariff_item(s, SYSTEM, code="BED-GENERAL", kind="bed", description="Bed - general",
                                    price_paisa=300000)
        b = services.open_bill(s, SYSTEM, patient.id, admission_id=3)
        services.post_charges(s, SYSTEM, b.id, [dict(source_ref="bed_day:3:0:general", kind="bed",
                                                     description="Bed - general", quantity=2,
                                                     tariff_code="BED-GENERAL")])
        return b.id


def test_interim_then_final_bill_and_every_change_after_close_is_409(as_role, bill):
    cashier, manager = as_role("cashier"), as_role("finance_manager")
    items = cashier.get("/api/v1/bills?admission_id=3").get_json()["items"]
    assert items[0]["stage"] == "interim" and items[0]["totals"]["patient_balance_paisa"] == 600000
    resp = cashier.post(f"/api/v1/bills/{bill}/discounts", json={"amount": 5500, "reason": "hardship"})
    assert resp.status_code == 201 and resp.get_json()["status"] == "pending"
    discount_id = resp.get_json()["id"]
    assert cashier.post(f"/api/v1/discounts/{discount_id}/approve", json={}).status_code == 403
    assert cashier.post(f"/api/v1/bills/{bill}/close").get_json()["error"]["code"] == "discount_pending"
    assert manager.post(f"/api/v1/discounts/{discount_id}/approve", json={"note": "ok"}).status_code == 200
    resp = cashier.post(f"/api/v1/bills/{bill}/payments", json={"amount": 500, "method": "cash", "kind": "deposit"},
                        headers={"Idempotency-Key": "d-1"})
    assert resp.status_code == 201 and resp.get_json()["kind"] == "deposit"
    assert cashier.post(f"/api/v1/bills/{bill}/gate-pass").status_code == 409
    resp = cashier.post(f"/api/v1/bills/{bill}/close")
    assert resp.status_code == 200 and resp.get_json()["version"]["version_no"] == 1
    detail = cashier.get(f"/api/v1/bills/{bill}").get_json()
    assert detail["stage"] == "final" and detail["lines"][0]["source"]["label"] == "Bed-day #3"
    for url, body in [(f"/api/v1/bills/{bill}/payments", {"amount": 1, "method": "cash"}),
                      (f"/api/v1/bills/{bill}/discounts", {"amount": 1, "reason": "x"}),
                      (f"/api/v1/bills/{bill}/payer", {"payer_class": "cash"}),
                      (f"/api/v1/bills/{bill}/package", {"package_code": None}),
                      (f"/api/v1/bills/{bill}/close", {})]:
        resp = cashier.post(url, json=body, headers={"Idempotency-Key": "late"})
        assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "bill_not_open", url
    assert cashier.post(f"/api/v1/bills/{bill}/gate-pass").get_json()["gate_pass_no"] == "GP-000001"
    charge_id = detail["lines"][0]["id"]
    assert cashier.post(f"/api/v1/bills/{bill}/reversals",
                        json={"charge_id": charge_id, "reason": "x"}).status_code == 403
    resp = manager.post(f"/api/v1/bills/{bill}/reversals", json={"charge_id": charge_id, "reason": "1 day",
                                                                 "quantity": 1})
    assert resp.status_code == 201 and resp.get_json()["credit_note"]["bill_version_no"] == 2
    versions = cashier.get(f"/api/v1/bills/{bill}/versions").get_json()["items"]
    assert [v["version_no"] for v in versions] == [1, 2]
    assert versions[1]["totals"]["patient_balance_paisa"] == -50000
    pdf = cashier.get(f"/finance/bills/{bill}/final.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")


def test_reversal_of_an_open_line_and_the_pages(as_role, bill):
    cashier = as_role("cashier")
    assert "No bills are waiting for closure." in cashier.get("/finance/closing").get_data(as_text=True)
    with_lines = cashier.get(f"/api/v1/bills/{bill}").get_json()
    resp = cashier.post(f"/api/v1/bills/{bill}/reversals", json={"charge_id": with_lines["lines"][0]["id"],
                                                                 "reason": "wrong bed"})
    assert resp.status_code == 201 and resp.get_json()["reversal"]["quantity"] == -2
    page = cashier.get(f"/bills/{bill}").get_data(as_text=True)
    assert "Bed-day #3" in page and "Close the bill" in page and "Print interim bill" in page
    assert "No discounts on this bill." in page
    cash = cashier.get("/finance/cash-closing").get_data(as_text=True)
    assert "Cash closing" in cash and "No closings yet." in cash


def test_final_request_puts_the_bill_in_the_closure_queue(as_role, bill, database):
    with database.transaction() as s:
        services.mark_final_requested(s, SYSTEM, bill)
    page = as_role("finance_manager").get("/finance/closing").get_data(as_text=True)
    assert "HMS-000001" in page and "payment" in page


def test_cash_closing_api_closes_once(as_role, bill):
    cashier = as_role("cashier")
    cashier.post(f"/api/v1/bills/{bill}/payments", json={"amount": 1000, "method": "cash", "kind": "deposit"},
                 headers={"Idempotency-Key": "d-2"})
    day = cashier.get("/api/v1/cash-closings").get_json()
    assert day["totals"]["cash"] == 100000 and day["count"] == 1
    body = {"business_date": day["business_date"], "counted": {"cash": 100000}}
    resp = cashier.post("/api/v1/cash-closings", json=body)
    assert resp.status_code == 201 and resp.get_json()["variance_paisa"] == 0
    assert cashier.post("/api/v1/cash-closings", json=body).status_code == 409
