"""The pharmacy pages: stock list with highlights, item page with batches and ledger,
goods receipt, the dispensing page with FEFO preview and clear problems, returns."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import select

from hms.patients.models import Patient
from inventory.models import Batch, Dispense
from tests.integration.test_inventory_support import assert_ledger_agrees, make_items, make_patient, stock

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def text(resp) -> str:
    return html.unescape(resp.get_data(as_text=True))


def csrf(client, url: str) -> str:
    resp = client.get(url)
    assert resp.status_code == 200, resp.status_code
    return CSRF_RE.search(resp.get_data(as_text=True)).group(1)


@pytest.fixture
def pharmacist(as_role):
    return as_role("pharmacist")


@pytest.fixture
def shelf(database):
    make_items(database, "PCM500T", "AMX500C", "IBU400T")
    stock(database, "PCM500T", ("OLDP", -2, 5, 300), ("SOONP", 40, 6, 300), ("LATEP", 300, 20, 350))
    stock(database, "AMX500C", ("AMX1", 300, 3, 1800))  # below its reorder level of 10
    return True


def mrn(database, patient_id) -> str:
    with database.transaction() as s:
        return s.get(Patient, patient_id).mrn


def test_stock_page_highlights_low_stock_and_near_expiry(pharmacist, shelf):
    page = text(pharmacist.get("/pharmacy"))
    assert "Pharmacy stock" in page and 'name="q"' in page and "autofocus" in page
    row = re.search(r'<tr class="([^"]*)">\s*<td><a class="code" href="/pharmacy/items/AMX500C"', page)
    assert row and "low" in row.group(1)
    assert re.search(r'<tr class="[^"]*near-expiry[^"]*">\s*<td><a class="code" href="/pharmacy/items/PCM500T"', page)
    assert "Low stock" in page and "Expires" in page and "5 tablets expired on the shelf" in page
    assert "Out of stock" in page  # IBU400T has no batch at all
    low = text(pharmacist.get("/pharmacy?filter=low"))
    assert "AMX500C" in low and "PCM500T" not in low
    assert "PCM500T" in text(pharmacist.get("/pharmacy?filter=near_expiry"))
    assert "No medicine matches" in text(pharmacist.get("/pharmacy?q=zzz"))
    assert 'href="/pharmacy/receipts/new"' in page and 'href="/pharmacy/dispense"' in page


def test_empty_formulary_says_so(pharmacist, database):
    assert "The formulary is empty" in text(pharmacist.get("/pharmacy"))


def test_doctors_see_stock_but_not_the_stock_actions(as_role, shelf):
    page = text(as_role("doctor").get("/pharmacy"))
    assert "PCM500T" in page and "Receive goods" not in page and 'href="/pharmacy/dispense"' not in page
    item = text(as_role("doctor").get("/pharmacy/items/PCM500T"))
    assert "Adjust stock" not in item and "Stock ledger" not in item and "SOONP" in item


def test_item_page_shows_batches_ledger_and_takes_an_adjustment(pharmacist, database, shelf):
    page = text(pharmacist.get("/pharmacy/items/pcm500t", follow_redirects=True))
    assert "Paracetamol 500 mg tablet (Panadol)" in page and "Back to stock" in page
    assert page.index("SOONP") < page.index("LATEP")  # first expiry first
    assert "Expired: not dispensed" in page and "Stock ledger" in page and "receipt:" in page
    with database.transaction() as s:
        late = s.scalar(select(Batch.id).where(Batch.batch_no == "LATEP"))
    token = csrf(pharmacist, "/pharmacy/items/PCM500T")
    refused = pharmacist.post("/pharmacy/items/PCM500T/adjust", data={
        "csrf_token": token, "batch_id": str(late), "quantity": "-2", "reason": ""})
    assert refused.status_code == 422 and "Give the reason" in text(refused)
    negative = pharmacist.post("/pharmacy/items/PCM500T/adjust", data={
        "csrf_token": token, "batch_id": str(late), "quantity": "-21", "reason": "count_correction"})
    assert negative.status_code == 409 and "cannot go below zero" in text(negative)
    done = pharmacist.post("/pharmacy/items/PCM500T/adjust", data={
        "csrf_token": token, "batch_id": str(late), "quantity": "-2", "reason": "damaged", "note": "Torn strip"},
        follow_redirects=True)
    assert done.status_code == 200 and "18 now on hand" in text(done) and "Torn strip" in text(done)
    assert pharmacist.get("/pharmacy/items/NOPE").status_code == 404
    assert_ledger_agrees(database)


def test_new_item_form(pharmacist):
    page = text(pharmacist.get("/pharmacy/items/new"))
    assert CSRF_RE.search(page) and 'name="substance"' in page
    token = csrf(pharmacist, "/pharmacy/items/new")
    bad = pharmacist.post("/pharmacy/items/new", data={"csrf_token": token, "code": "??", "generic_name": "X"})
    assert bad.status_code == 422 and "Code must be" in text(bad) and 'value="X"' in text(bad)
    ok = pharmacist.post("/pharmacy/items/new", data={
        "csrf_token": token, "code": "cet10t", "generic_name": "Cetirizine", "brand": "Zyrtec", "form": "tablet",
        "strength": "10 mg", "unit": "tablet", "substance": "cetirizine", "drug_class": "antihistamine",
        "reorder_level": "50"})
    assert ok.status_code == 302 and ok.headers["Location"].endswith("/pharmacy/items/CET10T")


def test_goods_receipt_form(pharmacist, database, shelf):
    page = text(pharmacist.get("/pharmacy/receipts/new"))
    assert CSRF_RE.search(page) and 'name="lines-0-item_code"' in page and "autofocus" in page
    token = csrf(pharmacist, "/pharmacy/receipts/new")
    bad = pharmacist.post("/pharmacy/receipts/new", data={
        "csrf_token": token, "supplier": "", "invoice_no": "INV-9",
        "lines-0-item_code": "PCM500T", "lines-0-batch_no": "R1", "lines-0-expiry": "2000-01-01",
        "lines-0-quantity": "10", "lines-0-cost_price": "abc", "lines-0-sale_price": "3.50"})
    body = text(bad)
    assert bad.status_code == 422
    assert "Supplier is required" in body and "Expiry must be in the future" in body
    assert "Cost price must be an amount in rupees" in body and 'value="INV-9"' in body
    ok = pharmacist.post("/pharmacy/receipts/new", data={
        "csrf_token": token, "supplier": "Muller & Phipps", "invoice_no": "INV-9",
        "lines-0-item_code": "ibu400t", "lines-0-batch_no": "R1", "lines-0-expiry": "2099-01-31",
        "lines-0-quantity": "100", "lines-0-cost_price": "5.60", "lines-0-sale_price": "7",
        "lines-1-item_code": "", "lines-1-batch_no": ""}, follow_redirects=True)
    assert ok.status_code == 200 and "Received 1 batch from Muller & Phipps" in text(ok)
    with database.transaction() as s:
        batch = s.scalar(select(Batch).where(Batch.batch_no == "R1"))
        assert (batch.cost_price_paisa, batch.sale_price_paisa, batch.quantity_on_hand) == (560, 700, 100)
    assert_ledger_agrees(database)


def test_dispense_page_asks_for_the_patient_then_shows_banner_and_fefo_preview(pharmacist, database, shelf):
    start = text(pharmacist.get("/pharmacy/dispense"))
    assert "Patient MRN" in start and "autofocus" in start
    assert "No patient with MRN" in text(pharmacist.get("/pharmacy/dispense?patient_id=HMS-999999"))
    patient = make_patient(database, ("Penicillin", "severe"))
    page = pharmacist.get(f"/pharmacy/dispense?patient_id={mrn(database, patient)}&prescription_ref=RX-5"
                          "&lines-0-item_code=PCM500T&lines-0-quantity=8&lines-1-item_code=AMX500C&lines-1-quantity=2")
    body = text(page)
    assert page.status_code == 200
    assert 'class="allergy"' in body and "Penicillin (severe" in body
    assert "6 from batch SOONP" in body and "2 from batch LATEP" in body and "OLDP" not in body
    assert "Allergy alerts" in body and "AMX500C" in body
    assert CSRF_RE.search(body) and 'value="RX-5"' in body


def test_dispensing_from_the_page_with_problems_then_success_and_a_return(pharmacist, database, shelf):
    patient = make_patient(database, ("Penicillin", "severe"))
    token = csrf(pharmacist, f"/pharmacy/dispense?patient_id={patient}")
    form = {"csrf_token": token, "patient_id": str(patient), "prescription_ref": "RX-8", "action": "dispense",
            "lines-0-item_code": "PCM500T", "lines-0-quantity": "30", "lines-1-item_code": "AMX500C",
            "lines-1-quantity": "2"}
    refused = pharmacist.post("/pharmacy/dispense", data=form)
    body = text(refused)
    assert refused.status_code == 422  # the allergy comes first
    assert "Nothing was dispensed" in body and "allergic to Penicillin" in body
    assert "Only 26 tablets of Paracetamol 500 mg tablet (Panadol) in stock" in body
    assert 'class="attention"' in body
    with database.transaction() as s:
        assert s.scalar(select(Dispense.id)) is None

    preview = pharmacist.post("/pharmacy/dispense", data={**form, "action": "preview"})
    assert preview.status_code == 200 and "Nothing was dispensed" not in text(preview)

    done = pharmacist.post("/pharmacy/dispense", data={
        **form, "partial_reason": "Rest from the evening delivery",
        "allergy_override_reason": "Prescriber confirmed after test dose"}, follow_redirects=True)
    page = text(done)
    assert done.status_code == 200 and "Dispensed 3 lines" in page
    assert "Rest from the evening delivery" in page and "26 of 30" in page
    assert "Prescriber confirmed after test dose" in page
    with database.transaction() as s:
        record = s.scalar(select(Dispense))
        line_id = record.lines[0].id
    url = f"/pharmacy/dispenses/{record.id}"
    token = csrf(pharmacist, url)
    over = pharmacist.post(url + "/return", data={"csrf_token": token, "dispense_line_id": str(line_id),
                                                  "quantity": "99", "reason": "unused"})
    assert over.status_code == 409 and "at most 6 can be returned" in text(over)
    back = pharmacist.post(url + "/return", data={"csrf_token": token, "dispense_line_id": str(line_id),
                                                  "quantity": "2", "reason": "unused"}, follow_redirects=True)
    assert "Return recorded: credit 6.00" in text(back) and "All returned" not in text(back)
    assert_ledger_agrees(database)


def test_dispense_page_row_errors_stay_on_their_rows(pharmacist, database, shelf):
    patient = make_patient(database)
    token = csrf(pharmacist, f"/pharmacy/dispense?patient_id={patient}")
    resp = pharmacist.post("/pharmacy/dispense", data={
        "csrf_token": token, "patient_id": str(patient), "prescription_ref": "RX", "action": "dispense",
        "lines-2-item_code": "PCM500T", "lines-2-quantity": "lots"})
    body = text(resp)
    assert resp.status_code == 422
    assert re.search(r'id="lines-2-quantity"[^>]*aria-invalid="true"', body)
    assert "Quantity must be a whole number" in body and 'value="lots"' in body


def test_reception_cannot_open_the_pharmacy(as_role):
    reception = as_role("reception")
    assert reception.get("/pharmacy").status_code == 403
    assert reception.get("/pharmacy/dispense").status_code == 403
