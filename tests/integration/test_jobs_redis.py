"""Jobs through Redis and RQ: queued after commit (not run inline), run by `work(burst=True)`,
one effect per key, retried by RQ's Retry, and a worker process that never called init()."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from redis import Redis
from rq.job import JobStatus
from sqlalchemy import func, select

from hms import audit, jobs
from hms.audit import Actor, AuditLog
from hms.db import utcnow
from hms.jobs import JobRun

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("HMS_TEST_REDIS_URL")

CALLS: list[tuple[str, object]] = []
FLAKY = {"failures_left": 0}


@jobs.job("tests.redis_jobs.record_effect", retries=1, backoff=(0,))
def record_effect(session, encounter_id):
    CALLS.append(("record_effect", encounter_id))
    audit.record(session, Actor.system("jobs"), "tests.redis_jobs.effect", "encounter", encounter_id)


@jobs.job("tests.redis_jobs.flaky", retries=2, backoff=(0,))
def flaky(session, encounter_id):
    audit.record(session, Actor.system("jobs"), "tests.redis_jobs.flaky_effect", "encounter", encounter_id)
    CALLS.append(("flaky", encounter_id))
    if FLAKY["failures_left"] > 0:
        FLAKY["failures_left"] -= 1
        raise RuntimeError("reminder gateway unreachable")


@jobs.job("tests.redis_jobs.always_fails", retries=2, backoff=(0,))
def always_fails(session, encounter_id):
    CALLS.append(("always_fails", encounter_id))
    raise ValueError("boom")


@pytest.fixture
def redis_config(config):
    return config.with_overrides(redis_url=REDIS_URL)


@pytest.fixture
def redis_conn():
    # The test URL names its own database number; empty it before and after.
    conn = Redis.from_url(REDIS_URL)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture(autouse=True)
def _fresh_state():
    CALLS.clear()
    FLAKY["failures_left"] = 0
    yield
    jobs.reset()


@pytest.fixture
def runner(redis_config, database, redis_conn):
    return jobs.init(redis_config, database)


def effects(database, action: str) -> int:
    with database.transaction(readonly=True) as s:
        return s.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.action == action))


def job_run(database, key: str) -> JobRun | None:
    with database.transaction(readonly=True) as s:
        return s.scalar(select(JobRun).where(JobRun.key == key))


def test_job_waits_in_the_queue_until_a_worker_runs_it(runner, database, redis_config):
    with database.transaction() as s:
        jobs.enqueue(s, "tests.redis_jobs.record_effect", key="effect:1", encounter_id=1)

    queue = jobs.get_queue()
    assert queue.name == "hms" and queue.count == 1
    assert CALLS == []  # not run inline
    assert job_run(database, "effect:1").status == "queued"

    assert jobs.work(redis_config, burst=True) is True

    assert CALLS == [("record_effect", 1)]
    assert effects(database, "tests.redis_jobs.effect") == 1
    run = job_run(database, "effect:1")
    assert (run.status, run.attempts) == ("done", 1)
    assert queue.count == 0


def test_rolled_back_transaction_queues_nothing(runner, database):
    with pytest.raises(RuntimeError):
        with database.transaction() as s:
            jobs.enqueue(s, "tests.redis_jobs.record_effect", key="effect:2", encounter_id=2)
            raise RuntimeError("request failed")
    assert jobs.get_queue().count == 0
    assert job_run(database, "effect:2") is None


def test_duplicate_enqueues_and_deliveries_have_one_effect(runner, database, redis_config):
    name, key = "tests.redis_jobs.record_effect", "followup-reminder:encounter:42"
    with database.transaction() as s:
        assert jobs.enqueue(s, name, key=key, encounter_id=42) is True
    with database.transaction() as s:
        assert jobs.enqueue(s, name, key=key, encounter_id=42) is False
    queue = jobs.get_queue()
    assert queue.count == 1
    # At-least-once: the same job delivered a second time, as a broker redelivery would.
    redelivery = queue.enqueue_call(jobs.run_job, args=(name, {"encounter_id": 42}, key))

    jobs.work(redis_config, burst=True)

    assert effects(database, "tests.redis_jobs.effect") == 1
    assert CALLS == [("record_effect", 42)]
    assert redelivery.get_status() == JobStatus.FINISHED and redelivery.return_value() == "skipped"
    # Enqueued again after it ran: nothing is sent.
    with database.transaction() as s:
        assert jobs.enqueue(s, name, key=key, encounter_id=42) is False
    assert queue.count == 0


def test_failing_job_is_retried_by_rq_then_succeeds(runner, database, redis_config):
    FLAKY["failures_left"] = 1
    with database.transaction() as s:
        jobs.enqueue(s, "tests.redis_jobs.flaky", key="flaky:3", encounter_id=3)
    rq_job = jobs.get_queue().jobs[0]
    assert (rq_job.retries_left, rq_job.retry_intervals) == (2, [0])

    jobs.work(redis_config, burst=True)

    assert CALLS == [("flaky", 3), ("flaky", 3)]
    assert effects(database, "tests.redis_jobs.flaky_effect") == 1  # the failed run's write rolled back
    run = job_run(database, "flaky:3")
    assert (run.status, run.attempts, run.last_error, run.next_attempt_at) == ("done", 2, None, None)
    assert rq_job.get_status() == JobStatus.FINISHED


def test_rq_gives_up_after_its_retries_and_stores_only_the_summary(runner, database, redis_config):
    with database.transaction() as s:
        jobs.enqueue(s, "tests.redis_jobs.always_fails", key="fails:4", encounter_id=4)
    rq_job = jobs.get_queue().jobs[0]

    jobs.work(redis_config, burst=True)

    assert len(CALLS) == 3  # the first run and two retries
    run = job_run(database, "fails:4")
    assert (run.status, run.attempts, run.last_error) == ("failed", 3, "ValueError: boom")
    # RQ owns the schedule: the inline retry sweep leaves it alone.
    assert run.next_attempt_at is None
    assert jobs.retry_failed(database, utcnow() + timedelta(days=1)) == 0
    assert rq_job.get_status() == JobStatus.FAILED
    latest = rq_job.latest_result()
    assert "JobFailed: job tests.redis_jobs.always_fails failed: ValueError: boom" in latest.exc_string


def test_send_lost_while_redis_was_down_is_sent_again_by_retry_failed(database, redis_config, redis_conn, caplog):
    jobs.init(redis_config.with_overrides(redis_url="redis://127.0.0.1:1/0"), database)
    with database.transaction() as s:  # commits although Redis is unreachable
        jobs.enqueue(s, "tests.redis_jobs.record_effect", key="lost:5", encounter_id=5)
    assert job_run(database, "lost:5").status == "queued"
    assert any("could not be sent" in r.getMessage() for r in caplog.records if r.name == "hms.jobs")

    jobs.init(redis_config, database)
    assert jobs.retry_failed(database, utcnow() + jobs.QUEUED_GRACE + timedelta(seconds=1)) == 1
    queue = jobs.get_queue()
    assert queue.count == 1
    # Sent again while still waiting: not queued twice.
    assert jobs.retry_failed(database, utcnow() + 2 * jobs.QUEUED_GRACE + timedelta(seconds=1)) == 1
    assert queue.count == 1

    jobs.work(redis_config, burst=True)
    assert effects(database, "tests.redis_jobs.effect") == 1
    assert job_run(database, "lost:5").status == "done"


def test_a_worker_without_init_builds_its_database_from_the_environment(
        runner, database, config, redis_config, monkeypatch):
    with database.transaction() as s:
        jobs.enqueue(s, "tests.redis_jobs.record_effect", key="env:6", encounter_id=6)
    jobs.reset()  # a separate worker process: no init(), only HMS_* variables
    for name, value in {"HMS_ENV": "test", "HMS_DATABASE_URL": config.database_url,
                        "HMS_SECRET_KEY": config.secret_key, "HMS_AUDIT_KEY": config.audit_key,
                        "HMS_REDIS_URL": REDIS_URL}.items():
        monkeypatch.setenv(name, value)

    jobs.work(redis_config, burst=True)

    assert jobs._worker_runner is not None and jobs._worker_runner.database is not database
    assert effects(database, "tests.redis_jobs.effect") == 1
    assert job_run(database, "env:6").status == "done"
    # The worker signed its audit row with the same key: the chain still verifies.
    with database.transaction(readonly=True) as s:
        assert audit.verify(s).ok


def test_work_refuses_without_redis(config):
    with pytest.raises(RuntimeError, match="HMS_REDIS_URL is not set"):
        jobs.work(config, burst=True)
    assert jobs.get_queue(config) is None
