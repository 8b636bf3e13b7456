"""Never negative: pharmacists dispensing the last units at the same moment.

Each thread has its own session and transaction, as two requests would. On PostgreSQL the
batch rows are locked with SELECT ... FOR UPDATE (the test fails without the lock: two
transactions read the same quantity and both take it); on SQLite writers are serialised by
BEGIN IMMEDIATE. Either way exactly as many dispenses succeed as the stock allows, the
others are refused as insufficient_stock, and the ledger agrees with the quantity on hand.
"""

from __future__ import annotations

import threading

import pytest

from hms.audit import Actor
from inventory import services
from tests.integration.test_inventory_support import assert_ledger_agrees, make_items, make_patient, on_hand, stock

THREADS = 8


def race(database, work) -> list:
    """Run work(n, session) in THREADS threads released at once; each commits its own transaction."""
    barrier = threading.Barrier(THREADS)
    results: list = [None] * THREADS
    errors: list = []

    def run(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            with database.transaction() as s:
                results[n] = work(n, s)
        except Exception as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def pharmacist(n: int) -> Actor:
    return Actor(user_id=None, username=f"pharmacist-{n}", roles=frozenset({"pharmacist"}))


def dispensing_the_last_units(database) -> None:
    make_items(database, "PCM500T")
    # 10 units over two batches (plus an expired one that must stay untouched).
    expired, first, second = stock(database, "PCM500T", ("EXP", -5, 50, 300), ("B1", 20, 4, 300), ("B2", 200, 6, 300))
    patient = make_patient(database)

    def work(n, s):
        return services.dispense(s, pharmacist(n), patient_id=patient, prescription_ref=f"RX-{n}",
                                 lines=[{"item_code": "PCM500T", "quantity": 3}])

    results = race(database, work)
    ok = [r for r in results if r["ok"]]
    refused = [r for r in results if not r["ok"]]
    assert len(ok) == 3 and len(refused) == 5
    assert all(r["problems"][0]["code"] == "insufficient_stock" and r["problems"][0]["available"] == 1
               for r in refused)
    assert on_hand(database, first) + on_hand(database, second) == 1
    assert on_hand(database, first) == 0 and on_hand(database, expired) == 50
    assert_ledger_agrees(database)


def the_prescription_cap_under_concurrency(database) -> None:
    make_items(database, "PCM500T")
    stock(database, "PCM500T", ("B1", 200, 100, 300))
    patient = make_patient(database)

    def work(n, s):
        return services.dispense(s, pharmacist(n), patient_id=patient, prescription_ref="RX-SHARED",
                                 lines=[{"item_code": "PCM500T", "quantity": 4, "prescription_item_id": 1,
                                         "prescribed_quantity": 10}])

    results = race(database, work)
    assert sum(r["ok"] for r in results) == 2
    assert {r["problems"][0]["code"] for r in results if not r["ok"]} == {"exceeds_prescription"}
    assert_ledger_agrees(database)


def returns_at_once(database) -> None:
    make_items(database, "PCM500T")
    (batch,) = stock(database, "PCM500T", ("B1", 200, 20, 300))
    patient = make_patient(database)
    with database.transaction() as s:
        out = services.dispense(s, pharmacist(0), patient_id=patient, prescription_ref="RX",
                                lines=[{"item_code": "PCM500T", "quantity": 5}])
    line_id = out["lines"][0]["dispense_line_id"]

    def work(n, s):
        try:
            return services.return_items(s, pharmacist(n), dispense_line_id=line_id, quantity=2, reason="returned")
        except Exception as exc:
            return getattr(exc, "code", repr(exc))

    results = race(database, work)
    assert sum(isinstance(r, dict) for r in results) == 2
    assert [r for r in results if not isinstance(r, dict)] == ["exceeds_dispensed"] * (THREADS - 2)
    assert on_hand(database, batch) == 19
    assert_ledger_agrees(database)


@pytest.mark.postgres
def test_postgres_dispensing_the_last_units_at_once(database):
    assert database.dialect == "postgresql"
    dispensing_the_last_units(database)


@pytest.mark.postgres
def test_postgres_prescription_cap_under_concurrency(database):
    the_prescription_cap_under_concurrency(database)


@pytest.mark.postgres
def test_postgres_returns_at_once_are_capped(database):
    returns_at_once(database)


def test_dispensing_the_last_units_at_once(database):
    """The same race on whatever database the suite runs on (SQLite serialises writers)."""
    dispensing_the_last_units(database)


def test_prescription_cap_under_concurrency(database):
    the_prescription_cap_under_concurrency(database)


def test_returns_at_once_are_capped(database):
    returns_at_once(database)
