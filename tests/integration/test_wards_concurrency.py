"""Two desks, one bed: concurrent reservations and the database constraints behind them.

The unmarked tests run on the suite's database (SQLite, or PostgreSQL when
HMS_TEST_DATABASE_URL is set); the postgres-marked ones insist on PostgreSQL, where the
row lock (SELECT ... FOR UPDATE) rather than SQLite's single writer decides the race.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError

from hms.audit import Actor
from hms.errors import Conflict
from hms.patients.models import Patient
from wards import services
from wards.models import Bed, BedAssignment, Ward

ACTOR = Actor.system("test")
THREADS = 2


@pytest.fixture
def setup(database, make_ward):
    ward_id = make_ward(code="MW1", name="Medical Ward 1", beds=2)
    with database.transaction() as s:
        patients = []
        for n, name in enumerate(("Ahmed Khan", "Bilal Shah"), start=1):
            p = Patient(mrn=f"HMS-00000{n}", name=name, name_search=name.lower(), sex="male")
            s.add(p)
            s.flush()
            patients.append(p.id)
        beds = list(s.execute(select(Bed.id).where(Bed.ward_id == ward_id).order_by(Bed.label)).scalars())
        department_id = s.get(Ward, ward_id).department_id
        # Bed assignments belong to admissions: admission 1 is Ahmed's, 2 is Bilal's.
        admissions = [services.create_admission(s, ACTOR, patient_id=p, department_id=department_id).id
                      for p in patients]
    assert admissions == [1, 2]
    return {"ward_id": ward_id, "beds": beds, "patients": patients, "admissions": admissions}


def run_together(database, n, fn):
    """fn(session, i) in n threads released together, each in its own transaction; the
    results (or the Conflict raised) in thread order."""
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


def active_assignments(database, bed_id) -> int:
    with database.transaction(readonly=True) as s:
        return s.scalar(select(func.count()).select_from(BedAssignment).where(
            BedAssignment.bed_id == bed_id, BedAssignment.state.in_(("reserved", "occupied"))))


def _race(database, setup):
    bed = setup["beds"][0]
    results = run_together(database, THREADS, lambda s, i: services.reserve_bed(
        s, ACTOR, bed, admission_id=setup["admissions"][i], patient_id=setup["patients"][i]).id)
    winners = [r for r in results if not isinstance(r, Conflict)]
    losers = [r for r in results if isinstance(r, Conflict)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].code == "bed_not_free" and losers[0].http_status == 409
    assert active_assignments(database, bed) == 1
    with database.transaction(readonly=True) as s:
        assert s.get(Bed, bed).state == "reserved"


def _second_active_assignment_refused(database, setup):
    bed = setup["beds"][0]
    with database.transaction() as s:
        services.reserve_bed(s, ACTOR, bed, admission_id=1, patient_id=setup["patients"][0])
    # Bypass the service: a second active assignment of the bed, inserted directly.
    with pytest.raises(IntegrityError):
        with database.transaction() as s:
            s.execute(text("INSERT INTO bed_assignment (bed_id, admission_id, patient_id, state, started_at) "
                           "VALUES (:bed, 2, :patient, 'occupied', CURRENT_TIMESTAMP)"),
                      {"bed": bed, "patient": setup["patients"][1]})
    # The same admission in a second bed, inserted directly.
    with pytest.raises(IntegrityError):
        with database.transaction() as s:
            s.execute(text("INSERT INTO bed_assignment (bed_id, admission_id, patient_id, state, started_at) "
                           "VALUES (:bed, 1, :patient, 'reserved', CURRENT_TIMESTAMP)"),
                      {"bed": setup["beds"][1], "patient": setup["patients"][0]})
    # Ended assignments are history: any number of them may exist beside the active one.
    with database.transaction() as s:
        for _ in range(2):
            s.execute(text("INSERT INTO bed_assignment (bed_id, admission_id, patient_id, state, started_at, "
                           "ended_at) VALUES (:bed, :adm, :patient, 'ended', CURRENT_TIMESTAMP, "
                           "CURRENT_TIMESTAMP)"), {"bed": bed, "adm": 2, "patient": setup["patients"][1]})
    assert active_assignments(database, bed) == 1


def _index_backs_a_stale_bed_state(database, setup):
    """A bed marked free while an assignment is still active (a fault elsewhere): the unique
    index refuses the second assignment and the service answers the same 409."""
    bed = setup["beds"][0]
    with database.transaction() as s:
        services.reserve_bed(s, ACTOR, bed, admission_id=1, patient_id=setup["patients"][0])
    with database.transaction() as s:
        s.execute(update(Bed).where(Bed.id == bed).values(state="free"))
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            services.reserve_bed(s, ACTOR, bed, admission_id=2, patient_id=setup["patients"][1])
    assert err.value.code == "bed_not_free"
    assert active_assignments(database, bed) == 1


def test_two_desks_reserving_one_bed_exactly_one_wins(database, setup):
    _race(database, setup)


def test_repeated_races_never_double_book(database, setup):
    for _ in range(3):
        _race(database, setup)
        with database.transaction() as s:
            services.release_bed(s, ACTOR, setup["beds"][0], "retry")


def test_unique_index_refuses_a_second_active_assignment(database, setup):
    _second_active_assignment_refused(database, setup)


def test_unique_index_backs_the_service(database, setup):
    _index_backs_a_stale_bed_state(database, setup)


@pytest.mark.postgres
def test_postgres_two_desks_reserving_one_bed_exactly_one_wins(database, setup):
    assert database.dialect == "postgresql"
    for _ in range(5):
        _race(database, setup)
        with database.transaction() as s:
            services.release_bed(s, ACTOR, setup["beds"][0], "retry")


@pytest.mark.postgres
def test_postgres_unique_index_refuses_a_second_active_assignment(database, setup):
    assert database.dialect == "postgresql"
    _second_active_assignment_refused(database, setup)


@pytest.mark.postgres
def test_postgres_unique_index_backs_the_service(database, setup):
    assert database.dialect == "postgresql"
    _index_backs_a_stale_bed_state(database, setup)
