"""Database core: declarative Base, engines for SQLite and PostgreSQL, sessions,
the transaction helper, after-commit hooks and the locked counter.

Conventions (DESIGN.md section 5): one transaction per request, job or CLI command;
services flush, never commit. On SQLite every write transaction begins IMMEDIATE, so
writers queue on the busy timeout instead of failing on a stale snapshot; SELECT ... FOR
UPDATE is a no-op there and the IMMEDIATE lock gives the same guarantee. On PostgreSQL
services lock the rows a decision depends on with `with_for_update()`.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from sqlalchemy import JSON, DateTime, MetaData, String, create_engine, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC. Store this; show local time in pages."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Stores naive UTC, returns aware UTC, on SQLite and PostgreSQL alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use hms.db.utcnow()")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class Counter(Base):
    """Named monotonically increasing counters (MRN, tokens per queue per day, ...)."""

    __tablename__ = "counter"
    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    value: Mapped[int] = mapped_column(default=0)


def next_number(session: Session, key: str) -> int:
    """Increment counter `key` and return the new value, atomically.

    One INSERT ... ON CONFLICT DO UPDATE ... RETURNING: the row lock is held until the
    transaction ends, so two transactions never get the same number (never count(*)+1).
    """
    dialect = session.get_bind().dialect.name
    ins = (postgresql if dialect == "postgresql" else sqlite).insert(Counter).values(key=key, value=1)
    stmt = ins.on_conflict_do_update(index_elements=[Counter.key], set_={"value": Counter.value + 1})
    return session.execute(stmt.returning(Counter.value)).scalar_one()


def normalise_url(url: str) -> str:
    """postgresql:// means psycopg 3 here (psycopg2 is not a dependency)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://"):]
    return url


def make_engine(url: str, **kwargs) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine, in_memory=":memory:" in url or url.rstrip("/") == "sqlite:")
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine, in_memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        if not in_memory:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=15000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        readonly = conn.get_execution_options().get("hms_readonly", False)
        conn.exec_driver_sql("BEGIN DEFERRED" if readonly else "BEGIN IMMEDIATE")


def config_of(session: Session):
    """The Config of the Database that made this session."""
    return session.info["config"]


_AFTER_COMMIT = "hms_after_commit"


def after_commit(session: Session, fn: Callable[[], None]) -> None:
    """Run `fn` once the session's current transaction has committed (never on rollback).

    Jobs and notifications are sent this way, so nothing leaves the building for a
    transaction that did not happen.
    """
    session.info.setdefault(_AFTER_COMMIT, []).append(fn)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    # SQLAlchemy also fires after_commit when a SAVEPOINT is released; the outer transaction
    # is still open then (and holds its locks), so the hooks wait for the real commit.
    if session.in_nested_transaction():
        return
    hooks = session.info.pop(_AFTER_COMMIT, [])
    for fn in hooks:
        try:
            fn()
        except Exception:  # a failed hook must not undo a committed transaction
            log.exception("after-commit hook failed")


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_commit(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_AFTER_COMMIT, None)


class Database:
    """The engine and session factory of one app (or CLI, or job).

    Every session carries the Config in `session.info["config"]`, so services read
    settings (MRN format, time zone, audit key) without importing Flask.
    """

    def __init__(self, config, **engine_kwargs):
        self.config = config
        self.url = normalise_url(config.database_url)
        self.engine = make_engine(self.url, **engine_kwargs)
        info = {"config": config}
        self._sessions = sessionmaker(bind=self.engine, expire_on_commit=False, info=info)
        self._readonly_sessions = sessionmaker(
            bind=self.engine.execution_options(hms_readonly=True), expire_on_commit=False, info=info)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self, readonly: bool = False) -> Session:
        return (self._readonly_sessions if readonly else self._sessions)()

    @contextmanager
    def transaction(self, readonly: bool = False) -> Iterator[Session]:
        """One unit of work: commit on success (then after-commit hooks), roll back on error."""
        session = self.session(readonly)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def create_all(self) -> None:
        import_all_models()
        Base.metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()


MODEL_MODULES = (
    "hms.org.models",
    "hms.auth.models",
    "hms.audit",
    "hms.jobs",
    "hms.patients.models",
    "wards.models",
    "wards.nursing_models",
    "hms.workflow.models",
    "hms.workflow.editor",
    "hms.form_versions",
    "hms.settings",
    "departments.opd.models",
    "departments.lab.models",
    "inventory.models",
    "finance.models",
)


def import_all_models() -> None:
    """Import every models module so Base.metadata is complete (migrations, create_all)."""
    import importlib

    for name in MODEL_MODULES:
        importlib.import_module(name)


def get_row(session: Session, model, row_id: Any, what: str, *, code: str | None = None, lock: bool = False):
    """The row of `model` (primary key `id`) or NotFound naming `what` ("No dose slot with id
    9", code `dose_slot_not_found` unless `code` is given); a bad id is also NotFound. With
    `lock`, the row is locked until the transaction ends and read fresh (SELECT ... FOR UPDATE)."""
    from hms.errors import NotFound, record_id

    code = code or f"{what.replace(' ', '_')}_not_found"
    number = record_id(row_id, what, code)
    if lock:
        row = session.execute(select(model).where(model.id == number).with_for_update()
                              .execution_options(populate_existing=True)).scalar_one_or_none()
    else:
        row = session.get(model, number)
    if row is None:
        raise NotFound(f"No {what} with id {row_id}.", code=code)
    return row
