"""The inpatient bill: half days, package, payer split (panel limit, Sehat Card), partial
credits, deposits and refunds, discounts with approval, closing and what a closed bill
refuses, credit notes with bill versions and receivables, gate pass, top-up, cash closing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from finance import cashday, services
from finance.models import Charge, Payment, Receivable, TopUpRequest

from hms.audit import Actor
from hms.errors import Conflict, Forbidden, Invalid, NotFound
from hms.patients.models import Patient

CNIC = "3520212345671"


@pytest.fixture
def cashier(make_user) -> Actor:
    return Actor(user_id=make_user("nadia", "cashier"), username="nadia", roles=frozenset({"cashier"}))


@pytest.fixture
def manager(make_user) -> Actor:
    return Actor(user_id=make_user("farah", "finance_manager"), username="farah",
                 roles=frozenset({"finance_manager"}))


@pytest.fixture
def bill_id(database, system_actor):
    with database.transaction() as s:
        patient = Patient(mrn="HMS-000001", name="Ahmed Khan", name_search="ahmed khan", sex="male", cnic=CNIC)
        s.add(patient)
        s.flush()
        services.define_payer_class(s, system_actor, code="panel-ptcl", name="PTCL", kind="panel")
        services.define_payer_class(s, system_actor, code="sehat", name="Sehat Card", kind="sehat")
        for code, kind, paisa in [("BED-GENERAL", "bed", 300001), ("NURSING-GENERAL", "nursing", 150000),
                                  ("LAB-CBC", "lab", 80000), ("PKG-APPENDECTOMY", "package", 900000)]:
            services.create_tariff_item(s, system_actor, code=code, kind=kind, description=code, price_paisa=paisa)
        return services.open_bill(s, system_actor, patient.id, admission_id=3).id


def run(database, fn):
    with database.transaction() as s:
        return fn(s)


def bed(ref="bed_day:3:0:general", qty=1, half=False):
    return dict(source_ref=ref, kind="bed", description="Bed", quantity=qty, tariff_code="BED-GENERAL",
                half_day=half)


def med(ref="dispense_line:5", qty=10):
    return dict(source_ref=ref, kind="medicine", description="Paracetamol", quantity=qty, unit_price_paisa=500)


def totals(database, bid):
    return run(database, lambda s: services.final_totals(s, bid))


def test_half_days_cost_half_the_daily_rate_rounded_half_up(database, bill_id, system_actor):
    run(database, lambda s: services.post_charges(s, system_actor, bill_id, [bed(qty=3, half=True)]))
    with database.transaction() as s:
        charge = s.scalar(select(Charge))
        assert (charge.unit_price_paisa, charge.amount_paisa, charge.half_day) == (150001, 450003, True)


def test_partial_credits_never_exceed_the_charge(database, bill_id, system_actor):
    run(database, lambda s: services.post_charges(s, system_actor, bill_id, [med()]))
    run(database, lambda s: services.credit_returned_medicine(s, system_actor, dispense_line_id=5, quantity=4,
                                                              return_id=1))
    # a repeat of one return credits once
    run(database, lambda s: services.credit_returned_medicine(s, system_actor, dispense_line_id=5, quantity=4,
                                                              return_id=1))
    run(database, lambda s: services.credit_returned_medicine(s, system_actor, dispense_line_id=5, quantity=5,
                                                              return_id=2))
    with pytest.raises(Invalid) as err:
        run(database, lambda s: services.credit_returned_medicine(s, system_actor, dispense_line_id=5, quantity=2,
                                                                  return_id=3))
    assert err.value.code == "credit_exceeds_charge"
    with pytest.raises(NotFound):
        run(database, lambda s: services.credit_returned_medicine(s, system_actor, dispense_line_id=99, quantity=1,
                                                                  return_id=4))
    assert totals(database, bill_id).gross_paisa == 500
    # the full reversal takes what is left, once
    run(database, lambda s: services.reverse_charge(s, system_actor, "dispense_line:5", "wrong patient"))
    assert totals(database, bill_id).gross_paisa == 0
    with database.transaction() as s:
        assert services.totals_mismatches(s) == []


def test_package_replaces_covered_charges_and_panel_limit_splits(database, bill_id, system_actor, cashier):
    run(database, lambda s: services.post_charges(s, system_actor, bill_id, [
        bed(qty=2), dict(source_ref="lab_order_item:1", kind="lab", description="CBC", quantity=1,
                         tariff_code="LAB-CBC"), med()]))
    run(database, lambda s: services.set_package(s, cashier, bill_id, "PKG-APPENDECTOMY"))
    t = totals(database, bill_id)
    assert t.gross_paisa == 600002 + 80000 + 5000
    assert t.package_adjustment_paisa == 900000 - 680002 and t.net_paisa == 905000
    assert t.payer_share_paisa == 0 and t.patient_balance_paisa == 905000  # cash
    run(database, lambda s: services.set_bill_payer(s, cashier, bill_id, payer_class="panel-ptcl",
                                                    coverage_limit_paisa=700000))
    t = totals(database, bill_id)
    assert (t.payer_share_paisa, t.patient_share_paisa, t.stage) == (700000, 205000, "interim")
    with pytest.raises(Invalid):
        run(database, lambda s: services.set_package(s, cashier, bill_id, "LAB-CBC"))


def test_sehat_card_needs_the_patients_cnic_and_a_verification(database, bill_id, cashier):
    with pytest.raises(Invalid) as err:
        run(database, lambda s: services.set_bill_payer(s, cashier, bill_id, payer_class="sehat",
                                                        member_no="35202-1234567-9", verification_ref="V1"))
    assert "member_no" in err.value.fields
    with pytest.raises(Invalid) as err:
        run(database, lambda s: services.set_bill_payer(s, cashier, bill_id, payer_class="sehat",
                                                        member_no="35202-1234567-1"))
    assert "verification_ref" in err.value.fields
    bill = run(database, lambda s: services.set_bill_payer(s, cashier, bill_id, payer_class="sehat",
                                                           member_no="35202-1234567-1", verification_ref="SC-77"))
    assert (bill.payer_member_no, bill.payer_verification_ref) == (CNIC, "SC-77")


def test_discounts_above_the_limit_wait_for_another_finance_manager(database, bill_id, system_actor, cashier,
                                                                     manager, make_user):
    run(database, lambda s: services.post_charges(s, system_actor, bill_id, [bed(qty=10)]))
    small = run(database, lambda s: services.request_discount(s, cashier, bill_id, amount_paisa=500000,
                                                              reason="staff family"))
    assert small.status == "approved"
    big = run(database, lambda s: services.request_discount(s, cashier, bill_id, amount_paisa=600000,
                                                            reason="hardship"))
    assert big.status == "pending"
    with pytest.raises(Forbidden):
        run(database, lambda s: services.approve_discount(s, cashier, big.id))
    with pytest.raises(Conflict) as err:
        run(database, lambda s: services.close_bill(s, cashier, bill_id))
    assert err.value.code == "discount_pending"
    own = run(database, lambda s: services.request_discount(s, manager, bill_id, amount_paisa=600001, reason="x"))
    with pytest.raises(Forbidden):
        run(database, lambda s: services.approve_discount(s, manager, own.id))
    run(database, lambda s: services.reject_discount(s, manager, own.id, "no"))
    run(database, lambda s: services.approve_discount(s, manager, big.id, "ok"))
    assert totals(database, bill_id).discounts_paisa == 1100000
    with pytest.raises(Invalid) as err:
        run(database, lambda s: services.request_discount(s, cashier, bill_id, amount_paisa=2000000, reason="all"))
    assert err.value.code == "discount_too_large"


def _settle_and_close(database, bill_id, system_actor, cashier):
    run(database, lambda s: services.post_charges(s, system_actor, bill_id, [bed(qty=2), med()]))
    run(database, lambda s: services.record_deposit(s, cashier, bill_id, amount_paisa=100000, method="cash"))
    due = totals(database, bill_id).patient_balance_paisa
    run(database, lambda s: services.record_payment(s, cashier, bill_id, amount_paisa=due, method="cash",
                                                    idempotency_key="k-final"))
    return run(database, lambda s: services.close_bill(s, cashier, bill_id))


def test_close_refuses_unpaid_and_overpaid_then_locks_everything(database, bill_id, system_actor, cashier, manager):
    run(database, lambda s: services.post_charges(s, system_actor, bill_id, [bed()]))
    with pytest.raises(Conflict) as err:
        run(database, lambda s: services.close_bill(s, cashier, bill_id))
    assert err.value.code == "balance_due"
    run(database, lambda s: services.record_deposit(s, cashier, bill_id, amount_paisa=400000, method="cash"))
    with pytest.raises(Conflict) as err:
        run(database, lambda s: services.close_bill(s, cashier, bill_id))
    assert err.value.code == "refund_due"
    run(database, lambda s: services.record_refund(s, cashier, bill_id, amount_paisa=99999, method="cash",
                                                   reason="unused deposit"))
    version = run(database, lambda s: services.close_bill(s, cashier, bill_id))
    assert version.version_no == 1 and version.totals["patient_balance_paisa"] == 0
    refusals = [
        lambda s: services.post_charges(s, system_actor, bill_id, [med("dispense_line:9")]),
        lambda s: services.record_payment(s, cashier, bill_id, amount_paisa=1, method="cash", idempotency_key="z"),
        lambda s: services.record_deposit(s, cashier, bill_id, amount_paisa=1, method="cash"),
        lambda s: services.request_discount(s, cashier, bill_id, amount_paisa=1, reason="late"),
        lambda s: services.set_bill_payer(s, cashier, bill_id, payer_class="panel-ptcl"),
        lambda s: services.set_package(s, cashier, bill_id, "PKG-APPENDECTOMY"),
        lambda s: services.reverse_charge(s, cashier, "bed_day:3:0:general", "late"),
        lambda s: services.approve_credit(s, manager, bill_id, "late"),
        lambda s: services.close_bill(s, cashier, bill_id),
    ]
    for refuse in refusals:
        with pytest.raises(Conflict) as err:
            run(database, refuse)
        assert err.value.code == "bill_not_open"


def test_credit_approved_bill_closes_with_the_balance_owed(database, bill_id, system_actor, cashier, manager):
    run(database, lambda s: services.post_charges(s, system_actor, bill_id, [bed()]))
    with pytest.raises(Forbidden):
        run(database, lambda s: services.approve_credit(s, cashier, bill_id, "employer pays"))
    run(database, lambda s: services.approve_credit(s, manager, bill_id, "employer pays"))
    run(database, lambda s: services.close_bill(s, cashier, bill_id))
    assert run(database, lambda s: services.issue_gate_pass(s, cashier, bill_id)) == "GP-000001"


def test_reversal_after_close_is_a_credit_note_and_version_2(database, bill_id, system_actor, cashier, manager):
    run(database, lambda s: services.set_bill_payer(s, cashier, bill_id, payer_class="panel-ptcl",
                                                    coverage_limit_paisa=500000))
    _settle_and_close(database, bill_id, system_actor, cashier)
    with database.transaction() as s:
        assert s.scalar(select(Receivable)).amount_paisa == 500000
        med_id = s.scalar(select(Charge.id).where(Charge.source_ref == "dispense_line:5"))
        bed_id = s.scalar(select(Charge.id).where(Charge.source_ref == "bed_day:3:0:general"))
    with pytest.raises(Forbidden):
        run(database, lambda s: services.reverse_closed_charge(s, cashier, bill_id, charge_id=med_id, reason="x"))
    note = run(database, lambda s: services.reverse_closed_charge(s, manager, bill_id, charge_id=bed_id,
                                                                  reason="one day too many", quantity=1))
    assert note.credit_note_no == "CN-000001" and note.bill_version_no == 2 and note.amount_paisa == 300001
    with database.transaction() as s:
        assert [v.version_no for v in services.list_versions(s, bill_id)] == [1, 2]
        charge = s.get(Charge, bed_id)
        assert charge.quantity == 2  # the closed charge never changes
        t = services.final_totals(s, bill_id)
        # net 605002 - 300001: the panel's share falls below its limit, the patient paid 105002 too much
        assert t.credit_notes_paisa == 300001 and t.stage == "final" and t.net_paisa == 305001
        assert s.scalar(select(Receivable)).amount_paisa == t.payer_share_paisa == 305001
        assert t.patient_balance_paisa == -105002
    run(database, lambda s: services.reverse_closed_charge(s, manager, bill_id, charge_id=bed_id, reason="rest"))
    with pytest.raises(Conflict) as err:
        run(database, lambda s: services.reverse_closed_charge(s, manager, bill_id, charge_id=bed_id, reason="again"))
    assert err.value.code == "already_reversed"
    due = -totals(database, bill_id).patient_balance_paisa
    run(database, lambda s: services.record_refund(s, cashier, bill_id, amount_paisa=due, method="cash",
                                                   reason="credit note"))
    assert totals(database, bill_id).patient_balance_paisa == 0


def test_gate_pass_only_for_a_closed_bill_and_once(database, bill_id, system_actor, cashier):
    with pytest.raises(Conflict) as err:
        run(database, lambda s: services.issue_gate_pass(s, cashier, bill_id))
    assert err.value.code == "bill_not_closed"
    _settle_and_close(database, bill_id, system_actor, cashier)
    first = run(database, lambda s: services.issue_gate_pass(s, cashier, bill_id))
    assert run(database, lambda s: services.issue_gate_pass(s, cashier, bill_id)) == first


def test_topup_requested_once_and_met_by_a_deposit(database, bill_id, system_actor, cashier):
    run(database, lambda s: services.record_deposit(s, cashier, bill_id, amount_paisa=500000, method="cash"))
    assert run(database, lambda s: services.check_topup(s, system_actor, bill_id)) is None
    run(database, lambda s: services.post_charges(s, system_actor, bill_id, [bed()]))
    request = run(database, lambda s: services.check_topup(s, system_actor, bill_id))
    assert request is not None and request.balance_paisa == 199999
    assert run(database, lambda s: services.check_topup(s, system_actor, bill_id)) is None
    run(database, lambda s: services.record_deposit(s, cashier, bill_id, amount_paisa=100000, method="cash"))
    with database.transaction() as s:
        assert s.scalar(select(TopUpRequest.status)) == "met"


def test_cash_closing_reconciles_by_method_and_closes_once(database, bill_id, system_actor, cashier):
    run(database, lambda s: services.post_charges(s, system_actor, bill_id, [bed(qty=3)]))
    run(database, lambda s: services.record_deposit(s, cashier, bill_id, amount_paisa=300000, method="cash"))
    run(database, lambda s: services.record_payment(s, cashier, bill_id, amount_paisa=200000, method="card",
                                                    reference="A1", idempotency_key="p1"))
    run(database, lambda s: services.record_refund(s, cashier, bill_id, amount_paisa=50000, method="cash",
                                                   reason="overpaid"))
    day = run(database, lambda s: cashday.today(s))
    summary = run(database, lambda s: cashday.cash_day_summary(s, cashier, day))
    assert summary["totals"]["cash"] == 250000 and summary["totals"]["card"] == 200000 and summary["count"] == 3
    closing = run(database, lambda s: cashday.close_cash_day(s, cashier, day, {"cash": 249000, "card": 200000}))
    assert (closing.expected_paisa, closing.variance_paisa, closing.payment_count) == (450000, -1000, 3)
    with database.transaction() as s:
        assert {p.cash_closing_id for p in s.scalars(select(Payment))} == {closing.id}
    with pytest.raises(Conflict) as err:
        run(database, lambda s: cashday.close_cash_day(s, cashier, day, {"cash": 0}))
    assert err.value.code == "already_closed"
    with pytest.raises(Invalid):
        run(database, lambda s: cashday.close_cash_day(s, cashier, day + timedelta(days=2), {}))
