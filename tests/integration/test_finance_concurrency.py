"""Concurrent requests in separate transactions: a charge is posted once per source_ref, a
payment taken once per idempotency key, a bill opened once per visit.

The unmarked tests run on whichever database the suite uses (SQLite by default, where
writers queue on the IMMEDIATE lock; PostgreSQL with HMS_TEST_DATABASE_URL, where they
queue on the bill row lock). The PostgreSQL tests force both transactions past the "not
there yet" read before either inserts, so the unique constraint and the savepoint
recovery decide the race.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from finance import services
from finance.models import Bill, Charge, IdempotencyKey, Payment
from hms.audit import Actor
from hms.errors import Conflict
from hms.patients.models import Patient

THREADS = 6
ACTOR = Actor(user_id=None, username="race", roles=frozenset({"system"}))


@pytest.fixture
def setup(database):
    with database.transaction() as s:
        patient = Patient(mrn="HMS-000001", name="Ahmed Khan", name_search="ahmed khan", sex="male")
        s.add(patient)
        s.flush()
        services.create_tariff_item(s, ACTOR, code="LAB-CBC", kind="lab", description="CBC", price_paisa=80000)
        bills = [services.open_bill(s, ACTOR, patient.id, encounter_id=n).id for n in (1, 2)]
    return {"patient": patient.id, "bills": bills}


def run_together(database, n, fn):
    """Run fn(session, i) in n threads, each in its own transaction; the results (or the
    HmsError raised) in thread order."""
    start = threading.Barrier(n)

    def worker(i):
        start.wait(timeout=30)
        try:
            with database.transaction() as s:
                return fn(s, i)
        except Conflict as err:
            return err

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(worker, range(n)))


def count(database, model, *where) -> int:
    with database.transaction(readonly=True) as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def lab(ref="lab_order_item:1"):
    return dict(source_ref=ref, kind="lab", description="CBC", quantity=1, tariff_code="LAB-CBC")


def test_concurrent_posts_of_one_source_ref_make_one_charge(database, setup):
    bill_id = setup["bills"][0]
    results = run_together(database, THREADS, lambda s, i: services.post_charge(s, ACTOR, bill_id, **lab()))
    ids = {charge.id for charge, _created in results}
    assert len(ids) == 1 and sum(created for _charge, created in results) == 1
    assert count(database, Charge) == 1
    with database.transaction(readonly=True) as s:
        assert s.get(Bill, bill_id).charges_paisa == 80000 and services.totals_mismatches(s) == []


def test_concurrent_payments_with_one_key_pay_once(database, setup):
    bill_id = setup["bills"][0]
    with database.transaction() as s:
        services.post_charge(s, ACTOR, bill_id, **lab())
    results = run_together(database, THREADS, lambda s, i: services.record_payment(
        s, ACTOR, bill_id, amount_paisa=80000, method="cash", idempotency_key="double-click"))
    assert len({payment.id for payment, _created in results}) == 1
    assert count(database, Payment) == 1
    with database.transaction(readonly=True) as s:
        assert s.get(Bill, bill_id).paid_paisa == 80000


def test_concurrent_reversals_reverse_once(database, setup):
    bill_id = setup["bills"][0]
    with database.transaction() as s:
        services.post_charge(s, ACTOR, bill_id, **lab())
    results = run_together(database, THREADS,
                           lambda s, i: services.reverse_charge(s, ACTOR, "lab_order_item:1", "cancelled"))
    assert len({charge.id for charge, _created in results}) == 1
    assert count(database, Charge, Charge.reversal_of_id.is_not(None)) == 1
    with database.transaction(readonly=True) as s:
        assert s.get(Bill, bill_id).charges_paisa == 0


def test_concurrent_opens_of_one_visit_make_one_bill(database, setup):
    results = run_together(database, THREADS, lambda s, i: services.open_bill(s, ACTOR, setup["patient"],
                                                                              encounter_id=77).id)
    assert len(set(results)) == 1
    assert count(database, Bill, Bill.visit_key == "encounter:77") == 1


def _first_reads_wait(monkeypatch, name, parties):
    """Make the first `parties` calls of services.<name> return None ("not there yet") and
    wait for each other, so every transaction goes on to insert; later calls are real."""
    real = getattr(services, name)
    barrier = threading.Barrier(parties)
    lock = threading.Lock()
    state = {"blind": parties}

    def patched(*args, **kwargs):
        with lock:
            blind = state["blind"] > 0
            state["blind"] -= 1
        if blind:
            barrier.wait(timeout=30)
            return None
        return real(*args, **kwargs)

    monkeypatch.setattr(services, name, patched)


def _run_pair(database, fn):
    def worker(i):
        try:
            with database.transaction() as s:
                return fn(s, i)
        except Conflict as err:
            return err

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(worker, range(2)))


@pytest.mark.postgres
def test_postgres_same_source_ref_raced_onto_two_bills_is_charged_once(database, setup, monkeypatch):
    _first_reads_wait(monkeypatch, "get_charge", 2)
    results = _run_pair(database, lambda s, i: services.post_charge(s, ACTOR, setup["bills"][i], **lab())[0].id)
    errors = [r for r in results if isinstance(r, Conflict)]
    assert len(errors) == 1 and errors[0].code == "charge_on_other_bill"
    assert count(database, Charge) == 1
    with database.transaction(readonly=True) as s:
        assert services.totals_mismatches(s) == []


@pytest.mark.postgres
def test_postgres_raced_open_bill_returns_the_winners_bill(database, setup, monkeypatch):
    _first_reads_wait(monkeypatch, "_bill_by_visit", 2)
    results = _run_pair(database, lambda s, i: services.open_bill(s, ACTOR, setup["patient"], encounter_id=55).bill_no)
    assert results[0] == results[1]
    assert count(database, Bill, Bill.visit_key == "encounter:55") == 1


@pytest.mark.postgres
def test_postgres_one_key_raced_on_two_bills_pays_once(database, setup, monkeypatch):
    for bill_id in setup["bills"]:
        with database.transaction() as s:
            services.post_charge(s, ACTOR, bill_id, **lab(f"lab_order_item:{bill_id}"))
    _first_reads_wait(monkeypatch, "_idempotency_key", 2)
    results = _run_pair(database, lambda s, i: services.record_payment(
        s, ACTOR, setup["bills"][i], amount_paisa=5000, method="cash", idempotency_key="shared-key")[0].id)
    errors = [r for r in results if isinstance(r, Conflict)]
    assert len(errors) == 1 and errors[0].code == "idempotency_key_reused"
    assert count(database, Payment) == 1 and count(database, IdempotencyKey) == 1
    with database.transaction(readonly=True) as s:
        assert services.totals_mismatches(s) == []


@pytest.mark.postgres
def test_postgres_close_and_payment_at_once_never_move_a_closed_bill(database, setup, monkeypatch):
    """A payment and a close of one admission bill serialise on the bill row lock: the
    payment lands first (and the close counts it) or is refused bill_not_open."""
    with database.transaction() as s:
        bill_id = services.open_bill(s, ACTOR, setup["patient"], admission_id=9).id
        services.post_charge(s, ACTOR, bill_id, **lab("lab_order_item:90"))
        services.approve_credit(s, Actor(user_id=None, username="fm", roles=frozenset({"finance_manager"})),
                                bill_id, "corporate guarantee")
    start = threading.Barrier(2)

    def act(s, i):
        start.wait(timeout=30)
        if i == 0:
            return services.close_bill(s, ACTOR, bill_id).totals
        return services.record_payment(s, ACTOR, bill_id, amount_paisa=30000, method="cash",
                                       idempotency_key="race-pay")[0].id

    results = _run_pair(database, act)
    snapshot = results[0]
    with database.transaction(readonly=True) as s:
        bill = s.get(Bill, bill_id)
        assert bill.status == "closed"
        after = services.final_totals(s, bill_id)
    if isinstance(results[1], Conflict):
        assert results[1].code == "bill_not_open" and after.payments_paisa == 0
    else:
        assert after.payments_paisa == 30000
    assert snapshot["payments_paisa"] == after.payments_paisa
    assert snapshot["patient_balance_paisa"] == after.patient_balance_paisa
