"""Jobs without Redis: sent only after commit, run inline in their own transaction, at most
one effect per key, plain arguments only, failures recorded and retried by retry_failed()."""

from __future__ import annotations

import logging
import threading
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace

import pytest
from rq.job import Job as RqJob
from sqlalchemy import func, select

from hms import audit, jobs
from hms.audit import Actor, AuditLog
from hms.db import utcnow
from hms.jobs import JobRun, JobSpec
from hms.org.models import Department

# What the test jobs saw, in order; cleared before each test.
CALLS: list[tuple[str, object]] = []
# How many more times tests.jobs.flaky fails before it succeeds.
FLAKY = {"failures_left": 0}


@jobs.job("tests.jobs.record_effect", retries=2, backoff=(10, 60))
def record_effect(session, encounter_id, note=None):
    CALLS.append(("record_effect", encounter_id))
    audit.record(session, Actor.system("jobs"), "tests.jobs.effect", "encounter", encounter_id)


@jobs.job("tests.jobs.see_department", retries=0)
def see_department(session, department_id):
    department = session.get(Department, department_id)
    CALLS.append(("see_department", department.code if department else None))
    if department is None:
        raise LookupError(f"department {department_id} is not visible to the job")
    audit.record(session, Actor.system("jobs"), "tests.jobs.saw_department", "department", department_id)


@jobs.job("tests.jobs.flaky", retries=2, backoff=(10, 60))
def flaky(session, encounter_id):
    # Written before the failure: it must roll back with it.
    audit.record(session, Actor.system("jobs"), "tests.jobs.flaky_effect", "encounter", encounter_id)
    CALLS.append(("flaky", encounter_id))
    if FLAKY["failures_left"] > 0:
        FLAKY["failures_left"] -= 1
        raise RuntimeError("reminder gateway unreachable")


@jobs.job("tests.jobs.always_fails", retries=1, backoff=(5,))
def always_fails(session, encounter_id):
    CALLS.append(("always_fails", encounter_id))
    raise ValueError("x" * 2000)


@jobs.job("tests.jobs.duplicate_department", retries=0)
def duplicate_department(session, code):
    session.add(Department(code=code, name=f"Copy of {code}"))
    session.flush()


@jobs.job("tests.jobs.slow_effect", retries=0)
def slow_effect(session, encounter_id):
    time.sleep(0.3)  # long enough for a second delivery to arrive while this one runs
    audit.record(session, Actor.system("jobs"), "tests.jobs.slow_effect", "encounter", encounter_id)


@pytest.fixture(autouse=True)
def _fresh_state():
    CALLS.clear()
    FLAKY["failures_left"] = 0
    yield
    jobs.reset()


@pytest.fixture
def runner(config, database):
    assert config.redis_url is None
    return jobs.init(config, database)


def effects(database, action: str) -> int:
    with database.transaction(readonly=True) as s:
        return s.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.action == action))


def job_run(database, key: str) -> JobRun | None:
    with database.transaction(readonly=True) as s:
        return s.scalar(select(JobRun).where(JobRun.key == key))


def all_runs(database) -> list[JobRun]:
    with database.transaction(readonly=True) as s:
        return list(s.scalars(select(JobRun).order_by(JobRun.id)))


def test_rolled_back_transaction_sends_nothing(runner, database):
    with pytest.raises(RuntimeError, match="request failed"):
        with database.transaction() as s:
            assert jobs.enqueue(s, "tests.jobs.record_effect", key="effect:encounter:1", encounter_id=1)
            raise RuntimeError("request failed")

    assert CALLS == []
    assert effects(database, "tests.jobs.effect") == 0
    assert all_runs(database) == []
    # Nothing was left behind for the retry sweep either.
    assert jobs.retry_failed(database, utcnow() + timedelta(days=1)) == 0
    assert CALLS == []


def test_rolled_back_savepoint_sends_nothing(runner, database):
    with database.transaction() as s:
        savepoint = s.begin_nested()
        jobs.enqueue(s, "tests.jobs.record_effect", key="effect:encounter:2", encounter_id=2)
        savepoint.rollback()

    assert CALLS == []
    assert effects(database, "tests.jobs.effect") == 0
    assert all_runs(database) == []


def test_job_runs_once_after_commit_and_sees_the_committed_rows(runner, database):
    with database.transaction() as s:
        department = Department(code="CARD", name="Cardiology")
        s.add(department)
        s.flush()
        jobs.enqueue(s, "tests.jobs.see_department", department_id=department.id)
        assert CALLS == []  # not before commit

    assert CALLS == [("see_department", "CARD")]
    assert effects(database, "tests.jobs.saw_department") == 1
    [run] = all_runs(database)
    assert (run.name, run.status, run.attempts, run.kwargs) == (
        "tests.jobs.see_department", "done", 1, {"department_id": department.id})
    assert run.finished_at is not None and run.next_attempt_at is None and run.last_error is None


def test_same_key_enqueued_twice_has_one_effect(runner, database):
    key = "followup-reminder:encounter:42"
    with database.transaction() as s:
        assert jobs.enqueue(s, "tests.jobs.record_effect", key=key, encounter_id=42) is True
        assert jobs.enqueue(s, "tests.jobs.record_effect", key=key, encounter_id=42) is False
    # After it ran, too; the first enqueue's arguments win.
    with database.transaction() as s:
        assert jobs.enqueue(s, "tests.jobs.record_effect", key=key, encounter_id=43) is False

    assert CALLS == [("record_effect", 42)]
    assert effects(database, "tests.jobs.effect") == 1
    assert job_run(database, key).attempts == 1


def test_redelivery_of_a_done_job_is_a_no_op(runner, database):
    key = "followup-reminder:encounter:7"
    with database.transaction() as s:
        jobs.enqueue(s, "tests.jobs.record_effect", key=key, encounter_id=7)

    # At-least-once delivery: a worker may receive the same job again.
    assert jobs.run_job("tests.jobs.record_effect", {"encounter_id": 7}, key) == "skipped"

    assert effects(database, "tests.jobs.effect") == 1
    assert job_run(database, key).attempts == 1


def test_two_concurrent_deliveries_of_one_key_have_one_effect(runner, database, monkeypatch):
    monkeypatch.setattr(runner, "dispatch", lambda name, kwargs, key: None)
    with database.transaction() as s:
        jobs.enqueue(s, "tests.jobs.slow_effect", key="slow:8", encounter_id=8)
    monkeypatch.undo()

    start = threading.Barrier(2)
    outcomes: list[str] = []

    def deliver():
        start.wait()
        outcomes.append(jobs.run_job("tests.jobs.slow_effect", {"encounter_id": 8}, "slow:8"))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert sorted(outcomes) == ["done", "skipped"]
    assert effects(database, "tests.jobs.slow_effect") == 1
    assert job_run(database, "slow:8").status == "done"


def test_identical_calls_without_a_key_are_deduplicated_unless_dedupe_false(runner, database):
    with database.transaction() as s:
        assert jobs.enqueue(s, "tests.jobs.record_effect", encounter_id=5, note="a") is True
    with database.transaction() as s:
        # Same arguments in another order of keywords: the same derived key.
        assert jobs.enqueue(s, "tests.jobs.record_effect", note="a", encounter_id=5) is False
        assert jobs.enqueue(s, "tests.jobs.record_effect", encounter_id=5, note="b") is True
    with database.transaction() as s:
        assert jobs.enqueue(s, "tests.jobs.record_effect", dedupe=False, encounter_id=5, note="a") is True
        assert jobs.enqueue(s, "tests.jobs.record_effect", dedupe=False, encounter_id=5, note="a") is True

    assert effects(database, "tests.jobs.effect") == 4
    assert len({run.key for run in all_runs(database)}) == 4


@pytest.mark.parametrize("value", [
    pytest.param(Department(code="X", name="X"), id="orm-object"),
    pytest.param({"department": {"id": 1}}, id="nested-dict"),
    pytest.param({"id": 1}, id="flat-dict"),
    pytest.param(datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc), id="datetime"),
    pytest.param(date(2024, 5, 1), id="date"),
    pytest.param(Decimal("10.50"), id="decimal"),
    pytest.param([1, [2, 3]], id="nested-list"),
    pytest.param([1, date(2024, 5, 1)], id="list-with-date"),
    pytest.param(float("nan"), id="nan"),
])
def test_arguments_that_are_not_ids_or_plain_values_are_refused(runner, database, value):
    with database.transaction() as s:
        with pytest.raises(TypeError, match="job arguments are ids and plain values"):
            jobs.enqueue(s, "tests.jobs.record_effect", encounter_id=1, note=value)

    assert all_runs(database) == []
    assert CALLS == []


def test_plain_values_and_lists_of_them_are_accepted(runner, database):
    with database.transaction() as s:
        jobs.enqueue(s, "tests.jobs.record_effect", encounter_id=9,
                     note=["2024-05-01", 3, 1.5, True, None])
    [run] = all_runs(database)
    assert run.kwargs == {"encounter_id": 9, "note": ["2024-05-01", 3, 1.5, True, None]}
    assert run.status == "done"


def test_arguments_must_match_the_job_function_and_the_job_must_exist(runner, database):
    with database.transaction() as s:
        with pytest.raises(TypeError, match="tests.jobs.record_effect: .*unexpected keyword argument 'patient'"):
            jobs.enqueue(s, "tests.jobs.record_effect", encounter_id=1, patient=3)
        with pytest.raises(TypeError, match="missing a required argument: 'encounter_id'"):
            jobs.enqueue(s, "tests.jobs.record_effect")
        with pytest.raises(LookupError, match="unknown job 'tests.jobs.nope'"):
            jobs.enqueue(s, "tests.jobs.nope", encounter_id=1)
    assert all_runs(database) == []


def test_a_key_belongs_to_one_job(runner, database):
    with database.transaction() as s:
        jobs.enqueue(s, "tests.jobs.record_effect", key="shared-key", encounter_id=1)
    with database.transaction() as s:
        with pytest.raises(ValueError, match="already used by job tests.jobs.record_effect"):
            jobs.enqueue(s, "tests.jobs.flaky", key="shared-key", encounter_id=1)


def test_enqueue_before_init_is_refused(database):
    with database.transaction() as s:
        with pytest.raises(RuntimeError, match=r"hms.jobs.init\(config, database\) has not been called"):
            jobs.enqueue(s, "tests.jobs.record_effect", encounter_id=1)


def test_failing_job_is_recorded_not_raised_and_retry_failed_reruns_it_after_the_backoff(runner, database):
    FLAKY["failures_left"] = 1
    with database.transaction() as s:
        s.add(Department(code="OPD", name="Outpatients"))
        jobs.enqueue(s, "tests.jobs.flaky", key="flaky:encounter:3", encounter_id=3)
    # The request's own work committed although its job failed.
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(Department.code)) == "OPD"

    failed = job_run(database, "flaky:encounter:3")
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.last_error == "RuntimeError: reminder gateway unreachable"
    assert failed.next_attempt_at - failed.finished_at == pytest.approx(timedelta(seconds=10), abs=timedelta(seconds=1))
    assert effects(database, "tests.jobs.flaky_effect") == 0  # the failed run's write rolled back

    assert jobs.retry_failed(database, utcnow() + timedelta(seconds=5)) == 0  # backoff not over
    assert CALLS == [("flaky", 3)]

    assert jobs.retry_failed(database, utcnow() + timedelta(seconds=11)) == 1
    done = job_run(database, "flaky:encounter:3")
    assert (done.status, done.attempts, done.last_error, done.next_attempt_at) == ("done", 2, None, None)
    assert effects(database, "tests.jobs.flaky_effect") == 1

    assert jobs.retry_failed(database, utcnow() + timedelta(days=1)) == 0
    assert effects(database, "tests.jobs.flaky_effect") == 1
    assert CALLS == [("flaky", 3), ("flaky", 3)]


def test_retries_stop_when_exhausted_and_the_error_is_truncated(runner, database):
    with database.transaction() as s:
        jobs.enqueue(s, "tests.jobs.always_fails", key="always:1", encounter_id=1)
    first = job_run(database, "always:1")
    assert (first.status, first.attempts) == ("failed", 1)
    assert first.last_error.startswith("ValueError: xxx") and len(first.last_error) == 500

    assert jobs.retry_failed(database, utcnow() + timedelta(seconds=6)) == 1
    second = job_run(database, "always:1")
    assert (second.status, second.attempts, second.next_attempt_at) == ("failed", 2, None)

    assert jobs.retry_failed(database, utcnow() + timedelta(days=30)) == 0
    assert len(CALLS) == 2


def test_a_database_error_is_recorded_and_logged_without_its_parameters(runner, database, caplog):
    secret = "35202-1234567-1"  # looks like a CNIC: must not reach the log or the job_run row
    with database.transaction() as s:
        s.add(Department(code=secret, name="Original"))
        jobs.enqueue(s, "tests.jobs.duplicate_department", key="dup:1", code=secret)

    run = job_run(database, "dup:1")
    assert run.status == "failed"
    assert "IntegrityError" in run.last_error or "UniqueViolation" in run.last_error
    assert secret not in run.last_error
    messages = [r.getMessage() for r in caplog.records if r.name == "hms.jobs"]
    assert any("tests.jobs.duplicate_department" in m and "dup:1" in m for m in messages)
    assert not any(secret in m for m in messages)


def test_a_send_lost_after_commit_is_sent_again_by_retry_failed(runner, database, monkeypatch, caplog):
    # The process "dies" between commit and send: the hook never sends.
    monkeypatch.setattr(runner, "dispatch", lambda name, kwargs, key: None)
    with database.transaction() as s:
        jobs.enqueue(s, "tests.jobs.record_effect", key="lost:1", encounter_id=11)
    monkeypatch.undo()
    assert job_run(database, "lost:1").status == "queued"

    assert jobs.retry_failed(database, utcnow() + timedelta(minutes=5)) == 0  # may still be on its way
    assert jobs.retry_failed(database, utcnow() + jobs.QUEUED_GRACE + timedelta(seconds=1)) == 1

    assert CALLS == [("record_effect", 11)]
    assert job_run(database, "lost:1").status == "done"
    assert effects(database, "tests.jobs.effect") == 1


def test_a_run_that_died_mid_job_is_run_again_once_stale(runner, database, monkeypatch):
    monkeypatch.setattr(runner, "dispatch", lambda name, kwargs, key: None)
    with database.transaction() as s:
        jobs.enqueue(s, "tests.jobs.record_effect", key="died:1", encounter_id=12)
    monkeypatch.undo()
    # A runner marked it running, then its process died before the job's transaction committed.
    with database.transaction() as s:
        run = s.scalar(select(JobRun).where(JobRun.key == "died:1"))
        run.status, run.attempts, run.next_attempt_at = "running", 1, utcnow() + jobs.RUNNING_STALE

    assert jobs.retry_failed(database, utcnow() + timedelta(minutes=20)) == 0
    assert jobs.retry_failed(database, utcnow() + jobs.RUNNING_STALE + timedelta(seconds=1)) == 1
    run = job_run(database, "died:1")
    assert (run.status, run.attempts) == ("done", 2)
    assert effects(database, "tests.jobs.effect") == 1


def test_run_job_raises_a_phi_free_job_failed_for_rq_and_leaves_the_schedule_to_rq(runner, database, monkeypatch):
    monkeypatch.setattr(runner, "dispatch", lambda name, kwargs, key: None)
    with database.transaction() as s:
        jobs.enqueue(s, "tests.jobs.always_fails", key="rq:1", encounter_id=1)
    monkeypatch.undo()

    with pytest.raises(jobs.JobFailed, match=r"job tests.jobs.always_fails failed: ValueError: x+$") as info:
        jobs.run_job("tests.jobs.always_fails", {"encounter_id": 1}, "rq:1")
    # Raised outside any except block: the original exception (and its text) is not chained.
    assert info.value.__cause__ is None and info.value.__context__ is None
    run = job_run(database, "rq:1")
    assert (run.status, run.attempts, run.next_attempt_at) == ("failed", 1, None)


def test_retry_schedule_is_rqs():
    for retries, backoff in [(3, (10, 60, 300)), (4, (10, 60)), (2, (30,)), (2, ())]:
        spec = JobSpec("s", record_effect, retries, backoff)
        for attempts in range(1, retries + 1):
            rq_like = SimpleNamespace(retry_intervals=list(backoff) or None, retries_left=retries - attempts + 1)
            assert spec.retry_delay(attempts) == timedelta(seconds=RqJob.get_retry_interval(rq_like))
        assert spec.retry_delay(retries + 1) is None
    assert [JobSpec("s", record_effect, 3, (10, 60, 300)).retry_delay(a) for a in (1, 2, 3)] == [
        timedelta(seconds=10), timedelta(seconds=60), timedelta(seconds=300)]


def test_job_registration_rules():
    with pytest.raises(ValueError, match=r"already registered by .*\.record_effect"):
        jobs.job("tests.jobs.record_effect")(lambda session: None)
    with pytest.raises(TypeError, match="session as its first argument"):
        jobs.job("tests.jobs.no_session")(lambda **kwargs: None)
    with pytest.raises(ValueError, match="backoff"):
        jobs.job("tests.jobs.bad_backoff", backoff=(-1,))
    # Re-importing the defining module re-registers the same function without complaint.
    assert jobs.job("tests.jobs.record_effect", retries=2, backoff=(10, 60))(record_effect) is record_effect


def test_inline_failure_is_logged_with_the_job_name(runner, database, caplog):
    caplog.set_level(logging.ERROR, logger="hms.jobs")
    with database.transaction() as s:
        jobs.enqueue(s, "tests.jobs.always_fails", key="log:1", encounter_id=1)
    [record] = [r for r in caplog.records if r.name == "hms.jobs"]
    assert "job tests.jobs.always_fails (key log:1) failed on attempt 1: ValueError" in record.getMessage()
    assert "always_fails" in record.getMessage()  # the stack frames name the job function
