"""Background jobs: enqueued only after commit; RQ when HMS_REDIS_URL is set, inline otherwise.

A job is a function registered by name::

    @job("opd.send_followup_reminder", retries=3, backoff=(10, 60, 300))
    def send_followup_reminder(session, encounter_id):
        ...

It runs with a fresh session in its own transaction and receives keyword arguments that are
ids and plain values (JSON scalars, or lists of them): never ORM objects, dicts or datetimes,
because the job runs later, in another transaction, maybe in another process.

Delivery is at least once, so every job is made idempotent by a `job_run` row keyed by the
job's key (explicit, e.g. "followup-reminder:encounter:42", or derived from the name and the
arguments):

1. `enqueue(session, ...)` inserts the row (status queued) in the caller's transaction with
   INSERT ... ON CONFLICT DO NOTHING, and registers an after-commit hook. The row is an
   outbox entry: it commits or rolls back with the caller's work, and a second enqueue of the
   same key inserts nothing and sends nothing.
2. After commit the hook sends the job: an RQ job on the "hms" queue whose function is
   `run_job`, or, without Redis, a run right there, inline.
3. The runner marks the row running (attempts + 1) in a short transaction, then runs the job
   function in a second transaction that first locks the row (SELECT ... FOR UPDATE) and
   returns early if it is done: the job's effect and the done mark commit together, so a
   key has at most one successful effect however often it is delivered.
4. A failure is recorded on the row in a third transaction (status failed, attempts,
   last_error without PHI). Under RQ the job's `rq.Retry` reschedules it; inline, the
   `next_attempt_at` deadline is set from the backoff and `retry_failed(...)` (called by the
   timer tick) runs it again once that has passed. The same deadline also catches jobs lost
   between commit and send (process died, Redis down) and runs that died mid-job.

Nothing is configured at import time: the app factory (or the CLI, or a test) calls
`init(config, database)`. rq and redis are imported inside the functions that need them,
so domain services can import this module (to enqueue) without depending on RQ.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import JSON, CheckConstraint, String, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Mapped, Session, mapped_column

from hms.db import Base, Database, after_commit, utcnow

if TYPE_CHECKING:
    from rq import Queue

    from hms.config import Config

log = logging.getLogger(__name__)

QUEUE_NAME = "hms"
JOB_STATUSES = ("queued", "running", "done", "failed")
MAX_ERROR_CHARS = 500
MAX_KEY_CHARS = 200
MAX_NAME_CHARS = 100
# A queued row not picked up within this time is sent again by retry_failed(): its send
# was lost (the process died between commit and send, or Redis was unreachable).
QUEUED_GRACE = timedelta(minutes=10)
# A row still running after this long belongs to a runner that died mid-job (its
# transaction rolled back with it); retry_failed() sends it again. Far above RQ's default
# job timeout (180 s), so a live job is not sent twice.
RUNNING_STALE = timedelta(minutes=30)
# What retry_failed() picks up in one call; the next tick takes the rest.
RETRY_BATCH = 100
ARGUMENTS_RULE = "job arguments are ids and plain values"
_PLAIN_TYPES = (str, int, float, bool, type(None))


class JobRun(Base):
    """One row per job key: the outbox entry, the idempotency lock and the run record.

    `kwargs` holds the job's arguments (ids and plain values, never PHI) so that
    retry_failed() can run it again. `next_attempt_at` is the deadline after which
    retry_failed() sends it again; NULL when nothing more is to be done (done, retries
    exhausted, or RQ owns the retry schedule).
    """

    __tablename__ = "job_run"
    __table_args__ = (CheckConstraint(f"status IN {JOB_STATUSES}", name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_KEY_CHARS), unique=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME_CHARS))
    kwargs: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(String(MAX_ERROR_CHARS))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)


class JobFailed(RuntimeError):
    """Raised by run_job() to RQ so that it applies the Retry policy.

    Carries only the PHI-free summary of the original error: RQ logs and stores the
    exception text in Redis, and the original message (a database error's parameters,
    say) could hold patient data.
    """


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class JobSpec:
    """A registered job: its function and its retry policy."""

    name: str
    fn: Callable[..., Any]
    retries: int
    backoff: tuple[int, ...]

    def retry_delay(self, attempts: int) -> timedelta | None:
        """The wait before the next attempt after `attempts` failed ones; None when exhausted.

        Same schedule as RQ's Retry(max=retries, interval=backoff), so a job backs off
        alike inline and on a worker.
        """
        if attempts > self.retries:
            return None
        if not self.backoff:
            return timedelta(0)
        retries_left = self.retries - (attempts - 1)
        return timedelta(seconds=self.backoff[max(len(self.backoff) - retries_left, 0)])


# Filled by @job as the modules that define jobs are imported; empty at import of this module.
_JOBS: dict[str, JobSpec] = {}


def job(name: str, *, retries: int = 3, backoff: tuple[int, ...] | list[int] = (10, 60, 300)):
    """Register `fn(session, **kwargs)` as the job `name` with its retry policy.

    `retries` is the number of runs after the first failed one; `backoff` the seconds to
    wait before each, with RQ's Retry rule when there are more retries than values (the
    first value repeats for the earliest retries). Returns `fn` unchanged.
    """
    if not name or len(name) > MAX_NAME_CHARS:
        raise ValueError(f"job name must be 1 to {MAX_NAME_CHARS} characters, got {name!r}")
    if retries < 0:
        raise ValueError(f"job {name}: retries must be 0 or more")
    backoff = tuple(backoff)
    if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in backoff):
        raise ValueError(f"job {name}: backoff must be whole seconds, 0 or more")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = list(inspect.signature(fn).parameters.values())
        if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
            raise TypeError(f"job {name}: the function must take the session as its first argument")
        existing = _JOBS.get(name)
        # Re-importing the same module (reload, a test runner) re-registers the same
        # function; a different function under a taken name is a bug.
        if existing is not None and (existing.fn.__module__, existing.fn.__qualname__) != (
                fn.__module__, fn.__qualname__):
            raise ValueError(f"job {name} is already registered by {existing.fn.__module__}.{existing.fn.__qualname__}")
        _JOBS[name] = JobSpec(name=name, fn=fn, retries=retries, backoff=backoff)
        return fn

    return register


def get_job(name: str) -> JobSpec:
    """The registered job `name`; LookupError names the job when it is unknown."""
    try:
        return _JOBS[name]
    except KeyError:
        raise LookupError(f"unknown job {name!r}: is the module that defines it imported?") from None


# --------------------------------------------------------------------------- arguments


def _plain(name: str, arg: str, value: Any) -> Any:
    """The JSON form of one argument value (tuples become lists), or TypeError."""
    if type(value) in (list, tuple):
        for item in value:
            _check_scalar(name, arg, item)
        return list(value)
    _check_scalar(name, arg, value)
    return value


def _check_scalar(name: str, arg: str, value: Any) -> None:
    # Exact types: a datetime, Decimal, enum or ORM object is refused rather than guessed
    # at; the caller passes its id, isoformat() or value explicitly.
    if type(value) not in _PLAIN_TYPES:
        raise TypeError(f"job {name}: argument {arg!r} is a {type(value).__name__}; {ARGUMENTS_RULE} "
                        "(JSON strings, numbers, booleans, null, or lists of them: pass ids, "
                        "and dates as ISO strings)")
    if type(value) is float and not math.isfinite(value):
        raise TypeError(f"job {name}: argument {arg!r} is {value}; {ARGUMENTS_RULE} (finite numbers only)")


def _check_arguments(spec: JobSpec, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Validate kwargs against ARGUMENTS_RULE and the job's signature; return their JSON form."""
    plain = {arg: _plain(spec.name, arg, value) for arg, value in kwargs.items()}
    try:
        # Fail in the caller's request, not later in a worker, on a missing or unknown argument.
        inspect.signature(spec.fn).bind(None, **plain)
    except TypeError as exc:
        raise TypeError(f"job {spec.name}: {exc}") from None
    return plain


def _derived_key(name: str, kwargs: dict[str, Any]) -> str:
    canonical = json.dumps(kwargs, sort_keys=True, separators=(",", ":"))
    return f"{name}:{hashlib.sha256(canonical.encode()).hexdigest()[:40]}"


def _rq_job_id(key: str) -> str:
    # RQ ids allow only letters, digits, "_" and "-"; keys have ":" and ".". One id per
    # key lets dispatch see whether the key is already waiting in Redis.
    return "hms-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _describe_error(exc: BaseException) -> str:
    """Exception class and message, at most 500 characters, without SQL parameters.

    A database error's text carries the statement's parameters (and PostgreSQL's DETAIL
    line the conflicting values), which can be patient data: keep the driver's first line.
    """
    if isinstance(exc, StatementError):
        orig = exc.orig
        if orig is None:
            return f"{type(exc).__name__}: (statement and parameters withheld)"[:MAX_ERROR_CHARS]
        lines = str(orig).strip().splitlines()
        return f"{type(orig).__name__}: {lines[0] if lines else ''}"[:MAX_ERROR_CHARS]
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


def _stack(exc: BaseException) -> str:
    # Frames only (file, line, function): the exception text is logged as its PHI-free summary.
    return "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__))).rstrip()


# --------------------------------------------------------------------------- runner


def _insert_run(session: Session, **values: Any) -> bool:
    """INSERT the job_run row unless its key exists; True when this call inserted it."""
    dialect = session.get_bind().dialect.name
    ins = (postgresql if dialect == "postgresql" else sqlite).insert(JobRun).values(**values)
    stmt = ins.on_conflict_do_nothing(index_elements=[JobRun.key]).returning(JobRun.id)
    return session.execute(stmt).first() is not None


def _lock_run(session: Session, key: str) -> JobRun | None:
    return session.execute(select(JobRun).where(JobRun.key == key).with_for_update()).scalar_one_or_none()


class JobRunner:
    """Sends and runs jobs for one Database: through RQ when the config has a Redis URL,
    inline otherwise. Cheap to build; the Redis connection is opened on first use."""

    def __init__(self, config: "Config", database: Database):
        self.config = config
        self.database = database
        self._queue: "Queue | None" = None

    @property
    def uses_redis(self) -> bool:
        return bool(self.config.redis_url)

    @property
    def queue(self) -> "Queue | None":
        """The RQ queue "hms", or None when jobs run inline."""
        if self._queue is None and self.uses_redis:
            self._queue = _make_queue(self.config.redis_url)
        return self._queue

    def dispatch(self, name: str, kwargs: dict[str, Any], key: str) -> None:
        """Send one job whose job_run row is committed. Never raises: a failure is logged and
        the row's next_attempt_at deadline makes retry_failed() send it again."""
        try:
            if self.uses_redis:
                self._push(name, kwargs, key)
            else:
                self.execute(name, kwargs, key, under_rq=False)
        except Exception as exc:
            log.error("job %s (key %s) could not be sent: %s\n%s", name, key, _describe_error(exc), _stack(exc))

    def _push(self, name: str, kwargs: dict[str, Any], key: str) -> None:
        from rq import Retry
        from rq.job import JobStatus

        queue = self.queue
        job_id = _rq_job_id(key)
        existing = queue.fetch_job(job_id)
        if existing is not None:
            if existing.get_status() in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED,
                                         JobStatus.DEFERRED):
                return  # already on its way; a second copy would only be skipped by the runner
            existing.delete()  # a finished or failed earlier copy: replace it
        spec = _JOBS.get(name)
        retry = Retry(max=spec.retries, interval=list(spec.backoff) or 0) if spec and spec.retries else None
        # Two dispatchers racing past the check above may push the key twice; the job_run
        # lock in execute() makes the second delivery a no-op.
        queue.enqueue_call(run_job, args=(name, kwargs, key), job_id=job_id, retry=retry, description=name)

    def execute(self, name: str, kwargs: dict[str, Any], key: str, *, under_rq: bool) -> tuple[str, str | None]:
        """Run job `key` at most once successfully; return (outcome, error summary).

        Outcome "done": it ran now. "skipped": it had already run, or its row does not exist
        (the enqueuing transaction or savepoint did not commit). "failed": it raised; the
        failure is recorded on the row and logged, never raised.

        Locks and changes: job_run row `key` (FOR UPDATE) in three short transactions:
        mark running (attempts + 1); run the job function and mark done, committed together;
        on failure, mark failed with last_error, finished_at and, inline, the next attempt
        time from the backoff (under RQ, the RQ Retry owns the schedule).
        """
        try:
            with self.database.transaction() as session:
                run = _lock_run(session, key)
                if run is None:
                    log.warning("job %s (key %s) has no job_run row: its transaction did not commit; skipped",
                                name, key)
                    return "skipped", None
                if run.status == "done":
                    return "skipped", None
                run.status = "running"
                run.attempts += 1
                run.next_attempt_at = utcnow() + RUNNING_STALE
                attempt = run.attempts
        except Exception as exc:
            error = _describe_error(exc)
            log.error("job %s (key %s) could not start: %s\n%s", name, key, error, _stack(exc))
            return "failed", error

        try:
            spec = get_job(name)
            with self.database.transaction() as session:
                run = _lock_run(session, key)
                # A concurrent delivery of the same key may have finished while this one
                # waited for the lock.
                if run is None or run.status == "done":
                    return "skipped", None
                spec.fn(session, **kwargs)
                run.status = "done"
                run.finished_at = utcnow()
                run.last_error = None
                run.next_attempt_at = None
            return "done", None
        except Exception as exc:
            error = _describe_error(exc)
            log.error("job %s (key %s) failed on attempt %d: %s\n%s", name, key, attempt, error, _stack(exc))
            self._record_failure(name, key, error, under_rq)
            return "failed", error

    def _record_failure(self, name: str, key: str, error: str, under_rq: bool) -> None:
        try:
            with self.database.transaction() as session:
                run = _lock_run(session, key)
                if run is None or run.status == "done":
                    return
                run.status = "failed"
                run.last_error = error
                run.finished_at = utcnow()
                delay = None if under_rq or name not in _JOBS else _JOBS[name].retry_delay(run.attempts)
                run.next_attempt_at = None if delay is None else utcnow() + delay
        except Exception as exc:
            # The row stays "running" with its stale deadline, so retry_failed() still
            # picks it up later.
            log.error("job %s (key %s): recording the failure failed: %s", name, key, _describe_error(exc))


def _make_queue(redis_url: str) -> "Queue":
    from redis import Redis
    from rq import Queue

    return Queue(QUEUE_NAME, connection=Redis.from_url(redis_url))


# --------------------------------------------------------------------------- module API

# Set by init() (the app factory, the CLI, tests), never at import.
_runner: JobRunner | None = None
# A worker process that never called init() builds its own Database from the environment
# once (run_job), and keeps it for the jobs that follow.
_worker_runner: JobRunner | None = None
_fork_hook_installed = False


def init(config: "Config", database: Database) -> JobRunner:
    """Configure jobs for this process: sent through RQ when `config.redis_url` is set,
    run inline after commit otherwise. Call once from the app factory; tests may call again."""
    global _runner
    _runner = JobRunner(config, database)
    return _runner


def reset() -> None:
    """Forget init() and dispose the Database run_job() built from the environment (tests)."""
    global _runner, _worker_runner
    _runner = None
    if _worker_runner is not None:
        _worker_runner.database.dispose()
        _worker_runner = None


def _require_runner() -> JobRunner:
    if _runner is None:
        raise RuntimeError("hms.jobs.init(config, database) has not been called in this process")
    return _runner


def enqueue(session: Session, name: str, *, key: str | None = None, dedupe: bool = True, **kwargs: Any) -> bool:
    """Have job `name` run with `kwargs` once the session's transaction commits.

    Arguments must be ids and plain values (TypeError otherwise) and match the job
    function's parameters. `key` names the effect: the job runs successfully at most once
    per key, however often it is enqueued or delivered; the first enqueue's arguments win,
    and a key whose retries are exhausted stays failed. Keys are logged: build them from
    ids and codes, never patient data. Without a key, one is derived from the name and
    arguments, so identical calls run once, ever; pass dedupe=False for a job that must
    run each time it is asked (a recount).

    Changes: inserts the job_run row (status queued) in the session's transaction, unless the
    key exists; on PostgreSQL a concurrent transaction enqueuing the same key waits for this
    one. Returns True when this call will send the job, False when the key was already
    enqueued. Nothing is sent if the transaction rolls back.
    """
    runner = _require_runner()
    spec = get_job(name)
    plain = _check_arguments(spec, kwargs)
    if key is not None:
        if not dedupe:
            raise ValueError("a key deduplicates by definition; pass either key or dedupe=False")
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
            raise ValueError(f"job key must be a string of 1 to {MAX_KEY_CHARS} characters")
    elif dedupe:
        key = _derived_key(name, plain)
    else:
        key = f"{name}:{uuid.uuid4().hex}"

    now = utcnow()
    inserted = _insert_run(session, key=key, name=name, kwargs=plain, status="queued", attempts=0,
                           created_at=now, next_attempt_at=now + QUEUED_GRACE)
    if not inserted:
        owner = session.execute(select(JobRun.name).where(JobRun.key == key)).scalar_one()
        if owner != name:
            raise ValueError(f"job key {key!r} is already used by job {owner}")
        return False
    after_commit(session, lambda: runner.dispatch(name, plain, key))
    return True


def run_job(name: str, kwargs: dict[str, Any], key: str) -> str:
    """The function RQ calls: run job `key` in this worker process.

    Uses the Database given to init() in this process, or else one built once from
    Config.from_env(). Returns "done" or "skipped"; raises JobFailed (with the PHI-free
    error summary) when the job failed, so that RQ applies its Retry policy. Locks and
    changes what JobRunner.execute does.
    """
    global _worker_runner
    runner = _runner
    if runner is None:
        if _worker_runner is None:
            from hms.config import Config

            config = Config.from_env()
            _worker_runner = JobRunner(config, Database(config))
        runner = _worker_runner
    outcome, error = runner.execute(name, kwargs, key, under_rq=True)
    if outcome == "failed":
        raise JobFailed(f"job {name} failed: {error}")
    return outcome


def retry_failed(database: Database, now: datetime | None = None, *, limit: int = RETRY_BATCH) -> int:
    """Send again the jobs whose next_attempt_at has passed; return how many were sent.

    These are: failed inline jobs whose backoff has elapsed (retries left), queued jobs whose
    send was lost, and running jobs whose runner died. The timer tick calls this. Inline, the
    jobs run here, one after the other; with Redis they are pushed to the queue.

    Locks and changes: the due job_run rows (FOR UPDATE SKIP LOCKED on PostgreSQL, so two
    ticks do not take the same rows), set to queued with a new lost-send deadline, committed
    before the jobs are sent.
    """
    now = now or utcnow()
    runner = _runner if _runner is not None and _runner.database is database else JobRunner(database.config, database)
    sent = 0
    with database.transaction() as session:
        query = (select(JobRun).where(JobRun.next_attempt_at <= now, JobRun.status != "done")
                 .order_by(JobRun.next_attempt_at).limit(limit))
        if database.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        for run in session.scalars(query):
            run.status = "queued"
            run.next_attempt_at = now + QUEUED_GRACE
            name, kwargs, key = run.name, dict(run.kwargs), run.key
            after_commit(session, lambda name=name, kwargs=kwargs, key=key: runner.dispatch(name, kwargs, key))
            sent += 1
    return sent


def get_queue(config: "Config | None" = None) -> "Queue | None":
    """The RQ queue "hms" of `config` (default: the one given to init()); None without Redis."""
    if config is None:
        return _require_runner().queue
    return _make_queue(config.redis_url) if config.redis_url else None


def work(config: "Config", burst: bool = False) -> bool:
    """Run an RQ worker on the "hms" queue, with RQ's scheduler for backed-off retries.

    burst=True processes what is queued (and retries that come due meanwhile with no wait)
    and returns, in this process (SimpleWorker, no fork); otherwise it works until stopped,
    forking a work horse per job. Returns whether any job was processed.
    """
    from rq import SimpleWorker, Worker

    queue = get_queue(config)
    if queue is None:
        raise RuntimeError("HMS_REDIS_URL is not set: jobs run inline after commit and there is no queue to work")
    if burst:
        worker = SimpleWorker([queue], connection=queue.connection)
    else:
        _install_fork_hook()
        worker = Worker([queue], connection=queue.connection)
    return worker.work(burst=burst, with_scheduler=True, logging_level=config.log_level.upper())


def _install_fork_hook() -> None:
    # A forked work horse must not use database connections pooled by its parent: two
    # processes on one socket corrupt the protocol. SQLAlchemy's recipe: the child drops
    # the inherited pool without closing the parent's connections.
    global _fork_hook_installed
    if _fork_hook_installed:
        return

    def _after_fork_in_child() -> None:
        for runner in (_runner, _worker_runner):
            if runner is not None:
                runner.database.engine.dispose(close=False)

    os.register_at_fork(after_in_child=_after_fork_in_child)
    _fork_hook_installed = True


# --- periodic work ---------------------------------------------------------------------
# Small recurring sweeps (daily reminders, ...) run by the ticker beside timers: each is
# fn(session) in its own transaction, and must be idempotent (job keys make it so).

_PERIODIC: dict[str, tuple[Callable[[Session], Any], int]] = {}
_LAST_RUN: dict[str, datetime] = {}


def periodic(name: str, every_seconds: int):
    """Register fn(session) to run at most once every `every_seconds` from `run_periodic`."""
    def decorator(fn):
        _PERIODIC[name] = (fn, every_seconds)
        return fn

    return decorator


def run_periodic(database: Database, now: datetime | None = None) -> dict[str, Any]:
    """Run the periodic sweeps that are due; a failing one is logged and tried next tick."""
    now = now or utcnow()
    done: dict[str, Any] = {}
    for name, (fn, every) in sorted(_PERIODIC.items()):
        last = _LAST_RUN.get(name)
        if last is not None and (now - last).total_seconds() < every:
            continue
        try:
            with database.transaction() as session:
                done[name] = fn(session)
            _LAST_RUN[name] = now
        except Exception as exc:  # one broken sweep must not stop timers or the others
            log.error("periodic %s failed: %s", name, _describe_error(exc))
    return done
