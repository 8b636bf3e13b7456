"""The ward's bed board and the cashier closing an admission bill, in Chromium.

The stay itself is set up through the API (the whole-stay journey test drives every task);
here a nurse reads the bed board as it is on the ward, and a cashier settles and closes a
bill on the bill page, then finds it locked.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.journeys.conftest import clinic, patient  # noqa: F401  (fixtures)
from tests.journeys.test_inpatient_stay import complete, hospital, post, task  # noqa: F401

pytestmark = pytest.mark.browser


def _admit(h, patient) -> int:
    """Admitted to the Medical Ward (cash, no deposit), bed M1, assessed."""
    created = post(h["doc"], "/api/v1/admissions", {"patient_id": patient["id"], "department_id": h["department_id"],
                                                    "ward_id": h["wards"]["mw"], "reason": "Pneumonia"}, expect=201)
    complete(h["rec"], task(h["rec"], "desk"), {"payer_class": "cash", "deposit_rupees": 0, "deposit_method": "cash"})
    complete(h["nurse_mw"], task(h["nurse_mw"], "receive"), {"arrived": True})
    return created["id"]


def test_bed_board_shows_the_ward_and_leads_to_the_admission(hospital, patient, page, log_in, shot, live_server):
    aid = _admit(hospital, patient)
    log_in("nurse_mw")
    page.goto(f"{live_server.url}/wards/board")
    medical = page.get_by_role("region", name=re.compile("Medical Ward"))
    expect(medical).to_be_visible()
    occupied = medical.locator(".bed.occupied, [data-state='occupied']").first
    expect(occupied).to_contain_text("Bilal Ahmed")
    expect(occupied).to_contain_text("M1")
    expect(medical.locator(".bed.free, [data-state='free']")).to_have_count(1)  # M2
    shot("bed board")

    # Filter to the occupied beds: the free one goes.
    page.select_option("select[name=state]", "occupied")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator(".bed.free, [data-state='free']")).to_have_count(0)
    shot("occupied beds only")

    page.get_by_role("link", name=re.compile("Bilal Ahmed")).first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Admission ADM-")
    expect(page.locator("body")).to_contain_text("M1")
    shot("admission page")
    assert f"/wards/admissions/{aid}" in page.url


def test_cashier_settles_and_closes_an_admission_bill(hospital, patient, page, log_in, shot, live_server):
    h = hospital
    aid = _admit(h, patient)
    post(h["doc"], f"/api/v1/admissions/{aid}/orders", {"kind": "procedure", "code": "PROC-IV-CANNULA"}, expect=201)
    bill = h["cash"].get(f"/api/v1/bills?admission_id={aid}").get_json()["items"][0]

    log_in("cash")
    base = live_server.url
    page.goto(f"{base}/bills/{bill['id']}")
    expect(page.get_by_role("heading", level=1)).to_contain_text(bill["bill_no"])
    expect(page.locator("body")).to_contain_text("IV cannulation")
    close = page.get_by_role("button", name="Close the bill")
    expect(close).to_be_disabled()  # a balance is due
    shot("bill with a balance")

    # A small discount (below the approval limit) with its reason, then the rest in cash.
    discount_form = page.locator("form", has=page.get_by_role("button", name="Ask for a discount"))
    discount_form.locator("input[name=amount]").fill("100")
    discount_form.locator("input[name=reason]").fill("Staff relative")
    discount_form.get_by_role("button", name="Ask for a discount").click()
    expect(page.locator("body")).to_contain_text("Staff relative")

    balance = h["cash"].get(f"/api/v1/bills/{bill['id']}").get_json()["totals"]["patient_balance_paisa"]
    pay_form = page.locator("form.pay-form")
    pay_form.locator("#amount").fill(f"{balance / 100:.2f}")
    pay_form.get_by_role("button", name="Record payment").click()
    expect(page.get_by_role("button", name="Close the bill")).to_be_enabled()
    shot("bill settled")

    page.get_by_role("button", name="Close the bill").click()
    expect(page.locator("body")).to_contain_text(re.compile("closed", re.I))
    expect(page.get_by_role("button", name="Record payment")).to_have_count(0)
    expect(page.get_by_role("button", name="Ask for a discount")).to_have_count(0)
    shot("bill closed")

    # The final bill prints as a PDF; the closed bill refuses a payment through the API too.
    pdf = page.request.get(f"{base}/finance/bills/{bill['id']}/final.pdf")
    assert pdf.status == 200 and pdf.body()[:4] == b"%PDF"
    closed = h["cash"].get(f"/api/v1/bills/{bill['id']}").get_json()
    assert closed["status"] == "closed" and closed["totals"]["patient_balance_paisa"] == 0
