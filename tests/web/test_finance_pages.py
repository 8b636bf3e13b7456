"""The cashier's pages: open bills, a bill with its payment form (double submits pay once),
the receipt as HTML and as PDF, empty states and who sees what."""

from __future__ import annotations

import html
import re
import zlib
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from finance import services
from finance.models import Bill, Payment
from hms.db import utcnow
from hms.audit import Actor
from hms.patients.models import Patient

SYSTEM = Actor.system("test")
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
KEY_RE = re.compile(r'name="idempotency_key" value="([^"]+)"')


def text(resp) -> str:
    return html.unescape(resp.get_data(as_text=True))


def add_patient(s, mrn, name) -> int:
    patient = Patient(mrn=mrn, name=name, name_search=name.lower(), sex="female")
    s.add(patient)
    s.flush()
    return patient.id


@pytest.fixture
def bill(database):
    """B-000001 of HMS-000001 (Fatima Bibi): consultation PKR 2,000, dressing x2 PKR 1,000,
    a medicine line reversed; opened 1 March 2024 20:30 UTC (2 March 01:30 in Karachi)."""
    with database.transaction() as s:
        patient_id = add_patient(s, "HMS-000001", "Fatima Bibi")
        services.create_tariff_item(s, SYSTEM, code="CONSULT-GYN", kind="consultation",
                                    description="Consultation - Gynaecology", price_paisa=200000)
        services.create_tariff_item(s, SYSTEM, code="PROC-DRESSING", kind="procedure", description="Dressing",
                                    price_paisa=50000)
        b = services.open_bill(s, SYSTEM, patient_id, encounter_id=7)
        b.opened_at = datetime(2024, 3, 1, 20, 30, tzinfo=timezone.utc)
        services.post_consultation_charge(s, SYSTEM, b.id, encounter_id=7, department_code="GYN")
        services.post_charges(s, SYSTEM, b.id, [
            dict(source_ref="procedure_order:3", kind="procedure", description="Dressing", quantity=2,
                 tariff_code="PROC-DRESSING"),
            dict(source_ref="dispense_line:5", kind="medicine", description="Amoxicillin 500 mg", quantity=21,
                 unit_price_paisa=1833)])
        services.reverse_charge(s, SYSTEM, "dispense_line:5", "Returned unopened")
        return b.id


@pytest.fixture
def cashier(as_role):
    return as_role("cashier")


def payment_form(client, bill_id) -> dict:
    page = client.get(f"/bills/{bill_id}").get_data(as_text=True)
    return {"csrf_token": CSRF_RE.search(page).group(1), "idempotency_key": KEY_RE.search(page).group(1)}


def payments(database) -> int:
    with database.transaction(readonly=True) as s:
        return s.scalar(select(func.count()).select_from(Payment))


# --- the list of bills to collect ---------------------------------------------------------------

def test_bills_page_has_an_empty_state(cashier):
    resp = cashier.get("/bills")
    assert resp.status_code == 200
    page = text(resp)
    assert "No open bills have a balance to collect." in page and 'name="q"' in page and "autofocus" in page


def test_bills_page_lists_open_bills_with_a_balance_and_searches_by_mrn(cashier, bill, database):
    with database.transaction() as s:
        other = add_patient(s, "HMS-000002", "Zainab Noor")
        services.open_bill(s, SYSTEM, other, encounter_id=8)  # nothing charged: nothing to collect
    page = text(cashier.get("/bills"))
    assert "B-000001" in page and "HMS-000001" in page and "Fatima Bibi" in page and "PKR 3,000.00" in page
    assert "HMS-000002" not in page
    assert "B-000001" in text(cashier.get("/bills?q=hms-000001"))
    assert "B-000001" in text(cashier.get("/bills?q=B-000001"))
    page = text(cashier.get("/bills?q=HMS-9"))
    assert "B-000001" not in page and "No open bill with a balance matches “HMS-9”." in page


# --- the bill page ------------------------------------------------------------------------------

def test_bill_page_shows_lines_with_their_source_and_a_payment_form(cashier, bill):
    resp = cashier.get(f"/bills/{bill}")
    assert resp.status_code == 200
    page = text(resp)
    for expected in ("Bill B-000001", "HMS-000001", "Fatima Bibi", "Consultation - Gynaecology",
                     "encounter:7:consultation", "procedure_order:3", "dispense_line:5:reversal",
                     "Returned unopened", "PKR 3,000.00", "No payments yet.", "Back to bills"):
        assert expected in page, expected
    assert CSRF_RE.search(page) and KEY_RE.search(page)
    assert re.search(r'<input id="amount" name="amount"[^>]*value="3000.00"', page)
    assert KEY_RE.search(page).group(1) != KEY_RE.search(text(cashier.get(f"/bills/{bill}"))).group(1)


def test_a_new_bill_shows_empty_states(cashier, database):
    with database.transaction() as s:
        bill_id = services.open_bill(s, SYSTEM, add_patient(s, "HMS-000003", "Ali Raza")).id
    page = text(cashier.get(f"/bills/{bill_id}"))
    assert "No charges have been posted to this bill yet." in page and "No payments yet." in page
    assert "Nothing is due on this bill." in page and "idempotency_key" not in page
    assert cashier.get("/bills/999").status_code == 404


def test_submitting_the_payment_form_twice_pays_once(cashier, bill, database):
    form = payment_form(cashier, bill)
    data = dict(form, amount="1,000", method="cash", reference="")
    resp = cashier.post(f"/bills/{bill}/payments", data=data)
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/bills/{bill}")
    again = cashier.post(f"/bills/{bill}/payments", data=data)
    assert again.status_code == 302
    assert payments(database) == 1
    page = text(cashier.get(f"/bills/{bill}"))
    assert "Payment recorded: receipt R-000001, PKR 1,000.00." in page
    assert "already recorded (receipt R-000001); it was not taken twice" in page
    assert "PKR 2,000.00" in page  # the balance


def test_payment_form_errors_are_shown_next_to_the_field(cashier, bill, database):
    form = payment_form(cashier, bill)
    resp = cashier.post(f"/bills/{bill}/payments", data=dict(form, amount="100.005", method="cash", reference=""))
    assert resp.status_code == 422
    page = text(resp)
    assert 'id="amount-error"' in page and "two decimal places" in page and 'value="100.005"' in page
    resp = cashier.post(f"/bills/{bill}/payments", data=dict(form, amount="100", method="card", reference=""))
    assert resp.status_code == 422 and 'id="reference-error"' in text(resp)
    resp = cashier.post(f"/bills/{bill}/payments", data=dict(form, amount="3000.01", method="cash", reference=""))
    assert resp.status_code == 422 and "more than the balance of PKR 3,000.00" in text(resp)
    assert payments(database) == 0
    resp = cashier.post(f"/bills/{bill}/payments", data={"amount": "10", "method": "cash",
                                                          "idempotency_key": form["idempotency_key"]})
    assert resp.status_code == 400  # no CSRF token


def test_reception_sees_the_bill_but_not_the_payment_form_and_nurses_see_neither(as_role, bill):
    page = text(as_role("reception").get(f"/bills/{bill}"))
    assert "B-000001" in page and "idempotency_key" not in page and "Take a payment" not in page
    nurse = as_role("nurse")
    assert nurse.get(f"/bills/{bill}").status_code == 403
    assert nurse.get(f"/bills/{bill}/receipt").status_code == 403


def test_a_closed_bill_has_no_payment_form(cashier, bill, database):
    with database.transaction() as s:
        closed = s.get(Bill, bill)
        closed.status, closed.closed_at = "closed", utcnow()
    page = text(cashier.get(f"/bills/{bill}"))
    assert "This bill is closed; it takes no more payments." in page and "idempotency_key" not in page


# --- receipts -----------------------------------------------------------------------------------

def test_receipt_page_shows_mrn_items_totals_in_pkr_and_karachi_time(cashier, bill):
    form = payment_form(cashier, bill)
    cashier.post(f"/bills/{bill}/payments", data=dict(form, amount="1500", method="jazzcash", reference="JC-55"))
    resp = cashier.get(f"/bills/{bill}/receipt")
    assert resp.status_code == 200
    page = text(resp)
    for expected in ("HMS-000001", "Fatima Bibi", "B-000001", "Consultation - Gynaecology", "Dressing",
                     "Reversal: Amoxicillin 500 mg", "PKR 2,000.00", "PKR 3,000.00", "PKR 1,500.00",
                     "R-000001", "JazzCash", "JC-55", "02 Mar 2024 01:30", "Back to bill", "window.print()"):
        assert expected in page, expected


def _pdf_text(data: bytes) -> bytes:
    """The PDF's content streams, inflated (fpdf2 compresses page content)."""
    out = [data]
    for match in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            out.append(zlib.decompress(match.group(1)))
        except zlib.error:
            pass
    return b"\n".join(out)


def test_receipt_pdf(cashier, bill):
    resp = cashier.get(f"/bills/{bill}/receipt.pdf")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/pdf"
    assert 'filename="receipt-B-000001.pdf"' in resp.headers["Content-Disposition"]
    data = resp.get_data()
    assert data.startswith(b"%PDF")
    content = _pdf_text(data)
    for expected in (b"HMS-000001", b"B-000001", b"PKR 3,000.00", b"02 Mar 2024 01:30", b"Fatima Bibi"):
        assert expected in content, expected


def test_receipt_pdf_survives_names_outside_latin1(cashier, database):
    with database.transaction() as s:
        bill_id = services.open_bill(s, SYSTEM, add_patient(s, "HMS-000004", "فاطمہ بی بی")).id
    resp = cashier.get(f"/bills/{bill_id}/receipt.pdf")
    assert resp.status_code == 200 and resp.get_data().startswith(b"%PDF")
    assert b"HMS-000004" in _pdf_text(resp.get_data())
