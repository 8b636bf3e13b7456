"""Finance services on a real database: tariffs and payer-class prices, consultation price
resolution, one bill per visit, idempotent charges, reversals, idempotent payments,
closed bills, the cached totals and what goes into the audit log."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from finance import services
from finance.models import Bill, Charge, IdempotencyKey, Payment
from hms.audit import Actor, AuditLog
from hms.errors import Conflict, Invalid, NotFound
from hms.db import utcnow
from hms.patients.models import Patient

CASH = "cash"
PANEL = "panel-ptcl"


def add_patient(session, mrn="HMS-000001", name="Ahmed Khan") -> int:
    patient = Patient(mrn=mrn, name=name, name_search=name.lower(), sex="male")
    session.add(patient)
    session.flush()
    return patient.id


@pytest.fixture
def cashier(make_user) -> Actor:
    user_id = make_user("nadia", "cashier", full_name="Nadia Cashier")
    return Actor(user_id=user_id, username="nadia", roles=frozenset({"cashier"}))


@pytest.fixture
def seeded(database, system_actor):
    """Two patients, the PTCL panel and a few tariffs (cash prices; panel prices on some)."""
    with database.transaction() as s:
        ids = {"patient": add_patient(s), "other_patient": add_patient(s, "HMS-000002", "Sana Bibi")}
        services.define_payer_class(s, system_actor, code=PANEL, name="PTCL", kind="panel")
        for code, kind, text, paisa in [("CONSULT-GM", "consultation", "Consultation - General Medicine", 150000),
                                        ("CONSULT-DEFAULT", "consultation", "Consultation", 100000),
                                        ("LAB-CBC", "lab", "Complete blood count", 80000),
                                        ("LAB-LFT", "lab", "Liver function tests", 180000),
                                        ("PROC-DRESSING", "procedure", "Dressing", 50000)]:
            services.create_tariff_item(s, system_actor, code=code, kind=kind, description=text, price_paisa=paisa)
        services.set_price(s, system_actor, "LAB-CBC", PANEL, 72000)
        services.set_price(s, system_actor, "CONSULT-GM", PANEL, 135000)
    return ids


def open_bill(database, actor, patient_id, **kwargs) -> Bill:
    with database.transaction() as s:
        return services.open_bill(s, actor, patient_id, **kwargs)


def post(database, actor, bill_id, **fields):
    with database.transaction() as s:
        return services.post_charge(s, actor, bill_id, **fields)


def pay(database, actor, bill_id, amount, key, method="cash", reference=None):
    with database.transaction() as s:
        return services.record_payment(s, actor, bill_id, amount_paisa=amount, method=method,
                                       idempotency_key=key, reference=reference)


def totals(database, bill_id):
    with database.transaction(readonly=True) as s:
        return services.bill_totals(s, bill_id)


def close(database, bill_id, status="closed"):
    with database.transaction() as s:
        bill = s.get(Bill, bill_id)
        bill.status, bill.closed_at = status, utcnow()


def lab(ref="lab_order_item:1", code="LAB-CBC", **extra):
    return dict(source_ref=ref, kind="lab", description="CBC", quantity=1, tariff_code=code, **extra)


# --- tariffs and prices -------------------------------------------------------------------

def test_price_comes_from_the_payer_class_list_then_cash(database, seeded):
    with database.transaction(readonly=True) as s:
        assert services.price_for(s, "LAB-CBC", CASH) == 80000
        assert services.price_for(s, "LAB-CBC", PANEL) == 72000
        assert services.price_for(s, "lab-lft", PANEL) == 180000  # no panel price: the cash price applies
        with pytest.raises(NotFound) as err:
            services.price_for(s, "LAB-XYZ", CASH)
        assert err.value.code == "tariff_not_found" and "LAB-XYZ" in err.value.message


def test_an_item_without_any_price_is_not_found_with_a_clear_message(database, seeded, system_actor):
    with database.transaction() as s:
        services.create_tariff_item(s, system_actor, code="PROC-ECG", kind="procedure", description="ECG")
        with pytest.raises(NotFound) as err:
            services.price_for(s, "PROC-ECG", PANEL)
    assert err.value.code == "price_not_found"
    assert "PROC-ECG" in err.value.message and PANEL in err.value.message


def test_tariff_codes_are_unique_and_checked(database, seeded, system_actor):
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            services.create_tariff_item(s, system_actor, code="lab-cbc", kind="lab", description="Again")
        assert err.value.code == "tariff_exists"
        for bad in [dict(code="LAB CBC"), dict(kind="xray"), dict(description=""), dict(price_paisa=-1),
                    dict(price_paisa=12.5)]:
            fields = dict(code="LAB-NEW", kind="lab", description="New test", price_paisa=100)
            fields.update(bad)
            with pytest.raises(Invalid):
                services.create_tariff_item(s, system_actor, **fields)
        with pytest.raises(Invalid) as err:
            services.set_price(s, system_actor, "LAB-CBC", "panel-unknown", 100)
        assert err.value.code == "unknown_payer_class"


def test_changing_a_price_is_audited_with_old_and_new_and_posted_charges_keep_theirs(database, seeded, cashier,
                                                                                  system_actor):
    bill = open_bill(database, cashier, seeded["patient"], encounter_id=1)
    charge, _ = post(database, cashier, bill.id, **lab())
    with database.transaction() as s:
        services.set_price(s, system_actor, "LAB-CBC", CASH, 90000)
    with database.transaction(readonly=True) as s:  # audit rows are chained at commit
        row = s.scalars(select(AuditLog).where(AuditLog.action == "tariff.price")
                        .order_by(AuditLog.seq.desc())).first()
        assert row.detail == {"payer_class": CASH, "old_paisa": 80000, "new_paisa": 90000}
        assert s.get(Charge, charge.id).unit_price_paisa == 80000
        assert services.price_for(s, "LAB-CBC", CASH) == 90000


# --- consultation price resolution --------------------------------------------------------

def test_consultation_price_is_doctor_then_department_then_default(database, seeded, system_actor):
    with database.transaction() as s:
        services.create_tariff_item(s, system_actor, code="CONSULT-DOC-9", kind="consultation",
                                    description="Consultation - Prof. Dr. Aslam", price_paisa=300000)
        item, price = services.resolve_consultation(s, "GM", 9, CASH)
        assert (item.code, price) == ("CONSULT-DOC-9", 300000)
        item, price = services.resolve_consultation(s, "GM", 10, CASH)
        assert (item.code, price) == ("CONSULT-GM", 150000)
        item, price = services.resolve_consultation(s, "gm", None, PANEL)
        assert (item.code, price) == ("CONSULT-GM", 135000)
        item, price = services.resolve_consultation(s, "ENT", None, PANEL)
        assert (item.code, price) == ("CONSULT-DEFAULT", 100000)


def test_consultation_without_any_fee_names_the_codes_tried(database, seeded, system_actor):
    with database.transaction() as s:
        default = services.get_tariff(s, "CONSULT-DEFAULT")
        default.active = False
        with pytest.raises(NotFound) as err:
            services.resolve_consultation(s, "ENT", 4, CASH)
    assert err.value.code == "price_not_found"
    assert "CONSULT-DOC-4, CONSULT-ENT, CONSULT-DEFAULT" in err.value.message


def test_consultation_charge_is_once_per_encounter_at_the_payer_price(database, seeded, cashier):
    bill = open_bill(database, cashier, seeded["patient"], encounter_id=7, payer_class=PANEL)
    with database.transaction() as s:
        first, created = services.post_consultation_charge(s, cashier, bill.id, encounter_id=7, department_code="GM")
        assert created and first.source_ref == "encounter:7:consultation" and first.amount_paisa == 135000
        again, created = services.post_consultation_charge(s, cashier, bill.id, encounter_id=7, department_code="GM")
        assert again.id == first.id and not created
        with pytest.raises(Invalid):
            services.post_consultation_charge(s, cashier, bill.id, encounter_id=8, department_code="GM")
    assert totals(database, bill.id).total_paisa == 135000


# --- bills --------------------------------------------------------------------------------

def test_one_bill_per_encounter_with_sequential_numbers(database, seeded, cashier):
    first = open_bill(database, cashier, seeded["patient"], encounter_id=7)
    again = open_bill(database, cashier, seeded["patient"], encounter_id=7)
    other = open_bill(database, cashier, seeded["patient"], encounter_id=8)
    admission = open_bill(database, cashier, seeded["patient"], admission_id=3)
    assert first.id == again.id and (first.bill_no, other.bill_no, admission.bill_no) == (
        "B-000001", "B-000002", "B-000003")
    assert (first.visit_key, admission.visit_key) == ("encounter:7", "admission:3")
    assert first.status == "open" and first.version == 1 and first.payer_class == CASH
    walk_ins = [open_bill(database, cashier, seeded["patient"]) for _ in range(2)]
    assert walk_ins[0].id != walk_ins[1].id and walk_ins[0].visit_key is None
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.action == "bill.open")) == 5


def test_open_bill_refuses_another_patient_or_payer_for_the_same_visit(database, seeded, cashier):
    open_bill(database, cashier, seeded["patient"], encounter_id=7)
    with pytest.raises(Conflict) as err:
        open_bill(database, cashier, seeded["other_patient"], encounter_id=7)
    assert err.value.code == "visit_other_patient"
    with pytest.raises(Conflict) as err:
        open_bill(database, cashier, seeded["patient"], encounter_id=7, payer_class=PANEL)
    assert err.value.code == "bill_payer_class_differs"
    with pytest.raises(Invalid) as err:
        open_bill(database, cashier, seeded["patient"], encounter_id=9, payer_class="panel-nowhere")
    assert err.value.code == "unknown_payer_class"
    with pytest.raises(NotFound):
        open_bill(database, cashier, 999, encounter_id=10)
    with pytest.raises(Invalid):
        open_bill(database, cashier, seeded["patient"], encounter_id=-1)


# --- charges ------------------------------------------------------------------------------

def test_posting_the_same_source_ref_twice_returns_the_first_charge(database, seeded, cashier):
    bill = open_bill(database, cashier, seeded["patient"], encounter_id=7)
    first, created_first = post(database, cashier, bill.id, **lab())
    second, created_second = post(database, cashier, bill.id, **lab())
    assert (created_first, created_second) == (True, False) and first.id == second.id
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(Charge)) == 1
        b = s.get(Bill, bill.id)
        assert (b.charges_paisa, b.version) == (80000, 2)
        assert s.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.action == "charge.post")) == 1


def test_charges_take_the_bills_payer_price_and_medicines_their_own(database, seeded, cashier):
    bill = open_bill(database, cashier, seeded["patient"], encounter_id=7, payer_class=PANEL)
    with database.transaction() as s:
        results = services.post_charges(s, cashier, bill.id, [
            lab(),
            lab("lab_order_item:2", "LAB-LFT"),
            dict(source_ref="dispense_line:5", kind="medicine", description="Amoxicillin 500 mg", quantity=21,
                 unit_price_paisa=1833),
        ])
        amounts = [c.amount_paisa for c, _ in results]
    assert amounts == [72000, 180000, 21 * 1833]
    assert totals(database, bill.id).total_paisa == 72000 + 180000 + 38493


def test_a_tariff_charge_must_match_the_items_kind(database, seeded, cashier):
    bill = open_bill(database, cashier, seeded["patient"], encounter_id=7)
    with pytest.raises(Invalid):
        post(database, cashier, bill.id, source_ref="proc:1", kind="procedure", description="x", quantity=1,
             tariff_code="LAB-CBC")
    with pytest.raises(NotFound):
        post(database, cashier, bill.id, **lab(code="LAB-NOPE"))


def test_a_source_ref_belongs_to_one_bill(database, seeded, cashier):
    one = open_bill(database, cashier, seeded["patient"], encounter_id=7)
    two = open_bill(database, cashier, seeded["patient"], encounter_id=8)
    post(database, cashier, one.id, **lab())
    with pytest.raises(Conflict) as err:
        post(database, cashier, two.id, **lab())
    assert err.value.code == "charge_on_other_bill"


def test_a_lost_insert_race_is_recovered_from_the_savepoint(database, seeded, cashier, monkeypatch):
    """The window between "not posted yet" and the INSERT: another transaction posts the same
    source_ref first. The unique constraint refuses ours; the savepoint keeps the transaction
    usable and the winner's charge comes back, counted once."""
    bill = open_bill(database, cashier, seeded["patient"], encounter_id=7)
    winner, _ = post(database, cashier, bill.id, **lab())
    real = services.get_charge
    calls = []

    def stale_first_read(session, source_ref):
        calls.append(source_ref)
        return None if len(calls) == 1 else real(session, source_ref)

    monkeypatch.setattr(services, "get_charge", stale_first_read)
    with database.transaction() as s:
        charge, created = services.post_charge(s, cashier, bill.id, **lab())
        assert (charge.id, created) == (winner.id, False)
        # the transaction is still usable after the refused INSERT
        other, created = services.post_charge(s, cashier, bill.id, **lab("lab_order_item:2", "LAB-LFT"))
        assert created
    assert len(calls) >= 2
    assert totals(database, bill.id).total_paisa == 80000 + 180000
    with database.transaction(readonly=True) as s:
        assert services.totals_mismatches(s) == []


# --- reversals ----------------------------------------------------------------------------

def test_reversal_posts_the_negative_once_with_its_reason(database, seeded, cashier):
    bill = open_bill(database, cashier, seeded["patient"], encounter_id=7)
    original, _ = post(database, cashier, bill.id, **lab())
    post(database, cashier, bill.id, **lab("lab_order_item:2", "LAB-LFT"))
    with database.transaction() as s:
        reversal, created = services.reverse_charge(s, cashier, "lab_order_item:1", "Test cancelled by doctor")
        assert created
        assert (reversal.source_ref, reversal.reversal_of_id) == ("lab_order_item:1:reversal", original.id)
        assert (reversal.quantity, reversal.unit_price_paisa, reversal.amount_paisa) == (-1, 80000, -80000)
        assert reversal.reason == "Test cancelled by doctor"
    with database.transaction() as s:
        again, created = services.reverse_charge(s, cashier, "lab_order_item:1", "Another reason")
        assert (again.id, created, again.reason) == (reversal.id, False, "Test cancelled by doctor")
    t = totals(database, bill.id)
    assert (t.total_paisa, t.balance_paisa) == (180000, 180000)
    with database.transaction(readonly=True) as s:
        assert s.get(Charge, original.id).amount_paisa == 80000  # the original is never edited
        assert s.scalar(select(func.count()).select_from(Charge)) == 3
        rows = s.scalars(select(AuditLog).where(AuditLog.action == "charge.reverse")).all()
        assert len(rows) == 1 and "reason" not in rows[0].detail and rows[0].detail["amount_paisa"] == -80000


def test_reversal_needs_a_reason_and_an_original(database, seeded, cashier):
    bill = open_bill(database, cashier, seeded["patient"], encounter_id=7)
    post(database, cashier, bill.id, **lab())
    with database.transaction() as s:
        for reason in (None, "", "   "):
            with pytest.raises(Invalid) as err:
                services.reverse_charge(s, cashier, "lab_order_item:1", reason)
            assert "reason" in err.value.fields
        with pytest.raises(NotFound) as err:
            services.reverse_charge(s, cashier, "lab_order_item:99", "typo")
        assert err.value.code == "charge_not_found"
        services.reverse_charge(s, cashier, "lab_order_item:1", "duplicate order")
        with pytest.raises(Invalid) as err:
            services.reverse_charge(s, cashier, "lab_order_item:1:reversal", "undo")
        assert err.value.code == "reversal_of_reversal"


def test_balance_is_right_to_the_paisa(database, seeded, cashier):
    bill = open_bill(database, cashier, seeded["patient"], encounter_id=7)
    with database.transaction() as s:
        services.post_charges(s, cashier, bill.id, [
            dict(source_ref="dispense_line:1", kind="medicine", description="Syrup", quantity=3, unit_price_paisa=3333),
            dict(source_ref="dispense_line:2", kind="medicine", description="Tablets", quantity=7, unit_price_paisa=1),
            lab(),
        ])
    pay(database, cashier, bill.id, 50001, "k-1")
    with database.transaction() as s:
        services.reverse_charge(s, cashier, "dispense_line:2", "returned to pharmacy")
    t = totals(database, bill.id)
    assert (t.total_paisa, t.paid_paisa, t.balance_paisa) == (9999 + 80000, 50001, 9999 + 80000 - 50001)
    pay(database, cashier, bill.id, 39998, "k-2")
    t = totals(database, bill.id)
    assert t.balance_paisa == 0 and t.settled


# --- payments -----------------------------------------------------------------------------

def test_the_same_idempotency_key_pays_once(database, seeded, cashier):
    bill = open_bill(database, cashier, seeded["patient"], encounter_id=7)
    post(database, cashier, bill.id, **lab())
    first, created_first = pay(database, cashier, bill.id, 30000, "key-1")
    second, created_second = pay(database, cashier, bill.id, 30000, "key-1")
    assert (created_first, created_second) == (True, False)
    assert first.id == second.id and first.receipt_no == "R-000001"
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(Payment)) == 1
        assert s.get(Bill, bill.id).paid_paisa == 30000
        assert s.get(IdempotencyKey, "key-1").payment_id == first.id
    other, _ = pay(database, cashier, bill.id, 30000, "key-2")
    assert other.receipt_no == "R-000002"


def test_the_same_key_with_another_body_is_refused(database, seeded, cashier):
    bill = open_bill(database, cashier, seeded["patient"], encounter_id=7)
    post(database, cashier, bill.id, **lab())
    pay(database, cashier, bill.id, 30000, "key-1")
    for amount, method, reference in [(30001, "cash", None), (30000, "jazzcash", "TX123")]:
        with pytest.raises(Conflict) as err:
            pay(database, cashier, bill.id, amount, "key-1", method=method, reference=reference)
        assert err.value.code == "idempotency_key_reused"
    assert totals(database, bill.id).paid_paisa == 30000


def test_overpayment_is_refused_and_exact_settling_is_allowed(database, seeded, cashier):
    bill = open_bill(database, cashier, seeded["patient"], encounter_id=7)
    post(database, cashier, bill.id, **lab())
    with pytest.raises(Invalid) as err:
        pay(database, cashier, bill.id, 80001, "k-over")
    assert err.value.code == "overpayment" and "PKR 800.00" in err.value.message
    pay(database, cashier, bill.id, 80000, "k-exact")
    with pytest.raises(Invalid) as err:
        pay(database, cashier, bill.id, 1, "k-after")
    assert err.value.code == "overpayment"
    assert totals(database, bill.id).settled


def test_payment_methods_and_references(database, seeded, cashier):
    bill = open_bill(database, cashier, seeded["patient"], encounter_id=7)
    post(database, cashier, bill.id, **lab())
    for method in ("card", "bank_transfer", "jazzcash", "easypaisa"):
        with pytest.raises(Invalid) as err:
            pay(database, cashier, bill.id, 100, f"k-{method}", method=method)
        assert "reference" in err.value.fields
    payment, _ = pay(database, cashier, bill.id, 100, "k-wallet", method="easypaisa", reference=" EP-99812 ")
    assert payment.reference == "EP-99812"
    for bad in [dict(amount=0), dict(amount=-5), dict(amount=1.5), dict(method="cheque"), dict(key=""),
                dict(key="has space")]:
        args = dict(amount=100, key="k-bad", method="cash")
        args.update(bad)
        with pytest.raises(Invalid):
            pay(database, cashier, bill.id, args["amount"], args["key"], method=args["method"])


def test_a_bill_that_is_not_open_takes_no_charges_payments_or_reversals(database, seeded, cashier):
    bill = open_bill(database, cashier, seeded["patient"], encounter_id=7)
    charge, _ = post(database, cashier, bill.id, **lab())
    payment, _ = pay(database, cashier, bill.id, 100, "k-1")
    for status in ("closed", "cancelled"):
        close(database, bill.id, status)
        for attempt in (lambda: post(database, cashier, bill.id, **lab("lab_order_item:2")),
                        lambda: pay(database, cashier, bill.id, 100, "k-2"),
                        lambda: post(database, cashier, bill.id, source_ref="dispense_line:1", kind="medicine",
                                     description="ORS", quantity=1, unit_price_paisa=100)):
            with pytest.raises(Conflict) as err:
                attempt()
            assert err.value.code == "bill_not_open" and err.value.http_status == 409
        with database.transaction() as s:
            with pytest.raises(Conflict):
                services.reverse_charge(s, cashier, "lab_order_item:1", "late cancel")
            with pytest.raises(Conflict):
                services.post_consultation_charge(s, cashier, bill.id, encounter_id=7, department_code="GM")
    # repeats of what was done while it was open still answer with the same rows
    assert post(database, cashier, bill.id, **lab())[0].id == charge.id
    assert pay(database, cashier, bill.id, 100, "k-1")[0].id == payment.id


def test_cached_totals_always_match_the_rows(database, seeded, cashier):
    bills = [open_bill(database, cashier, seeded["patient"], encounter_id=n) for n in (1, 2)]
    for n, bill in enumerate(bills):
        post(database, cashier, bill.id, **lab(f"lab_order_item:{n}"))
        post(database, cashier, bill.id, source_ref=f"proc:{n}", kind="procedure", description="Dressing",
             quantity=2, tariff_code="PROC-DRESSING")
    with database.transaction() as s:
        services.reverse_charge(s, cashier, "proc:1", "not done")
    pay(database, cashier, bills[0].id, 12345, "k-1")
    with database.transaction(readonly=True) as s:
        assert services.totals_mismatches(s) == []
        charged = s.scalar(select(func.sum(Charge.amount_paisa)).where(Charge.bill_id == bills[1].id))
        assert s.get(Bill, bills[1].id).charges_paisa == charged == 80000
    with database.transaction() as s:  # something writing behind the services' back is caught
        s.get(Bill, bills[1].id).charges_paisa += 1
    with database.transaction(readonly=True) as s:
        assert services.totals_mismatches(s) == [bills[1].id]


def test_audit_rows_hold_ids_and_amounts_not_names(database, seeded, cashier):
    bill = open_bill(database, cashier, seeded["patient"], encounter_id=7)
    post(database, cashier, bill.id, **lab())
    pay(database, cashier, bill.id, 80000, "k-1")
    with database.transaction(readonly=True) as s:
        rows = s.scalars(select(AuditLog).where(AuditLog.action.in_(("bill.open", "charge.post", "payment.record")))
                         .order_by(AuditLog.seq)).all()
    assert [r.action for r in rows] == ["bill.open", "charge.post", "payment.record"]
    assert all(r.patient_id == seeded["patient"] and r.actor_name == "nadia" for r in rows)
    assert rows[2].detail == {"bill_id": bill.id, "receipt_no": "R-000001", "amount_paisa": 80000, "method": "cash",
                             "kind": "payment"}
    assert "Ahmed" not in str([r.detail for r in rows])


def test_receipt_data_is_local_time_and_pkr(database, seeded, cashier):
    from datetime import datetime, timezone

    bill = open_bill(database, cashier, seeded["patient"], encounter_id=7)
    post(database, cashier, bill.id, source_ref="proc:1", kind="procedure", description="Dressing", quantity=25,
         tariff_code="PROC-DRESSING")
    with database.transaction() as s:
        s.get(Bill, bill.id).opened_at = datetime(2024, 3, 1, 20, 30, tzinfo=timezone.utc)
    with database.transaction() as s:
        data = services.receipt(s, cashier, bill.id)
    assert data["bill_date"] == "02 Mar 2024 01:30"  # Asia/Karachi is UTC+5
    assert (data["mrn"], data["bill_no"], data["total"]) == ("HMS-000001", "B-000001", "PKR 12,500.00")
    assert data["lines"][0]["unit_price"] == "PKR 500.00"
