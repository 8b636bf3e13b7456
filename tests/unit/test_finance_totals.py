"""Pure finance rules: half-day rounding, source labels, why a bill cannot close."""

from __future__ import annotations

from dataclasses import replace

from finance import services


def test_half_day_price_rounds_half_up():
    assert services.half_day_price(300000) == 150000
    assert services.half_day_price(300001) == 150001
    assert services.half_day_price(1) == 1 and services.half_day_price(0) == 0


def test_source_labels_name_the_department():
    assert services.source_label("lab_order_item:12")["label"] == "Lab test #12"
    assert services.source_label("dispense_line:5")["area"] == "pharmacy"
    assert services.source_label("bed_day:3:0:general")["label"] == "Bed-day #3"
    assert services.source_label("lab_order_item:12:reversal")["label"] == "Reversal of Lab test #12"
    assert services.source_label("custom_thing:x")["label"] == "Custom thing"


def _totals(**kw):
    base = dict(bill_id=1, stage="interim", closed=False, payer_class="cash", payer_kind="cash", package_code=None,
                gross_paisa=1000, package_price_paisa=0, package_adjustment_paisa=0, discounts_paisa=0,
                pending_discounts=0, pending_discounts_paisa=0, credit_notes_paisa=0, net_paisa=1000,
                coverage_limit_paisa=None, payer_share_paisa=0, patient_share_paisa=1000, deposits_paisa=0,
                payments_paisa=1000, refunds_paisa=0, received_paisa=1000, patient_balance_paisa=0,
                credit_approved=False)
    return replace(services.FinalTotals(**base), **kw)


def test_close_problem_order():
    assert services.close_problem(_totals()) is None
    assert services.close_problem(_totals(pending_discounts=1))[0] == "discount_pending"
    assert services.close_problem(_totals(patient_balance_paisa=-5))[0] == "refund_due"
    assert services.close_problem(_totals(patient_balance_paisa=5))[0] == "balance_due"
    assert services.close_problem(_totals(patient_balance_paisa=5, credit_approved=True)) is None
