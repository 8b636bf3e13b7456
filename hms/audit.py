"""Append-only, hash-chained audit log.

Every write of patient, clinical or financial data and every read of a patient's record
is recorded with `record(...)`: who, what, which patient, when, from where. Rows are
chained: each row's HMAC-SHA256 covers its own fields and the previous row's hash, and a
head row keeps the last sequence number and hash. `verify(session, key)` walks the chain
and names the first row that was edited, deleted or reordered (`hms audit verify`).

Detail must never hold names, CNICs or clinical text: ids, field names and codes only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, event, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from hms.db import Base, config_of, utcnow

GENESIS = "0" * 64


@dataclass(frozen=True)
class Actor:
    """Who is acting: a user (from a request or a token), or the system (jobs, timers)."""

    user_id: int | None
    username: str
    roles: frozenset[str] = frozenset()
    department_ids: frozenset[int] = frozenset()
    ward_ids: frozenset[int] = frozenset()
    ip: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def system(cls, name: str = "system") -> "Actor":
        return cls(user_id=None, username=name, roles=frozenset({"system"}))

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    @property
    def is_system(self) -> bool:
        return self.user_id is None


class AuditLog(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_patient_at", "patient_id", "at"),
        Index("ix_audit_log_actor_at", "actor_id", "at"),
        Index("ix_audit_log_at", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(unique=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    actor_name: Mapped[str] = mapped_column(String(60))
    action: Mapped[str] = mapped_column(String(60))
    entity_type: Mapped[str] = mapped_column(String(60))
    entity_id: Mapped[str | None] = mapped_column(String(60))
    patient_id: Mapped[int | None] = mapped_column(index=False)
    ip: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict | None] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The single row (id=1) holding the chain's last seq and hash; locked per append."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(default=0)
    hash: Mapped[str] = mapped_column(String(64), default=GENESIS)


# Column widths of AuditLog; a longer value would be cut by SQLite and refused by PostgreSQL.
_LIMITS = {"actor_name": 60, "action": 60, "entity_type": 60, "entity_id": 60, "ip": 64}


def _canonical_detail(detail: dict | None) -> dict | None:
    """The detail exactly as the JSON column will give it back.

    The hash is computed over this form, so a date or Decimal in `detail` is stored as the
    same string that was hashed (instead of being hashed as one thing and stored as another,
    or failing in the JSON column), and tuples come back as the lists they were hashed as.
    """
    if detail is None:
        return None
    if not isinstance(detail, dict):
        raise TypeError("audit detail must be a dict of ids, field names and codes")
    return json.loads(json.dumps(detail, default=str))


def _digest(key: bytes, row: dict, prev_hash: str) -> str:
    payload = json.dumps(
        [row["seq"], row["at"].isoformat(), row["actor_id"], row["actor_name"], row["action"],
         row["entity_type"], row["entity_id"], row["patient_id"], row["ip"], row["detail"], prev_hash],
        sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def _lock_head(session: Session) -> tuple[int, str]:
    """Lock the chain head (one SELECT ... FOR UPDATE on the common path) and return its
    (seq, hash). Columns, not the ORM object: a head object left in this session's identity
    map by an earlier transaction would be stale and reuse a sequence number."""
    stmt = select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1).with_for_update()
    row = session.execute(stmt).first()
    if row is None:  # first audit row ever
        dialect = session.get_bind().dialect.name
        ins = (postgresql if dialect == "postgresql" else sqlite).insert(AuditHead)
        session.execute(ins.values(id=1, seq=0, hash=GENESIS).on_conflict_do_nothing(index_elements=["id"]))
        row = session.execute(stmt).first()
    return row.seq, row.hash


def record(session: Session, actor: Actor, action: str, entity_type: str,
           entity_id: Any = None, *, patient_id: int | None = None,
           detail: dict | None = None) -> AuditLog:
    """Record one audit row in the caller's transaction; it is chained when that
    transaction commits.

    The row commits with the change it records, or not at all: rows recorded inside a
    savepoint that rolls back are dropped with it. The chain head is locked only while
    the transaction commits (see `_chain_pending`), always as the last lock a transaction
    takes, so an audited write never deadlocks on it against other row locks and holds it
    for the commit alone. `seq`, `at` and the hashes are set then.
    """
    row = {
        "actor_id": None if actor.user_id is None else int(actor.user_id),
        "actor_name": actor.username,
        "action": action,
        "entity_type": entity_type,
        "entity_id": None if entity_id is None else str(entity_id),
        # int(): an id given as "5" is stored as 5 and must be hashed as 5 too
        "patient_id": None if patient_id is None else int(patient_id),
        "ip": actor.ip,
        "detail": _canonical_detail(detail),
    }
    _check_lengths(row)
    entry = AuditLog(**row)
    current = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_PENDING, []).append((entry, current))
    return entry


_PENDING = "hms_audit_pending"


@event.listens_for(Session, "before_commit")
def _chain_pending(session: Session) -> None:
    """At the outermost commit: lock the head, chain the pending rows in order, move the head.

    SQLAlchemy also fires before_commit when a savepoint is released; the rows wait for the
    real commit then.
    """
    if session.in_nested_transaction():
        return
    pending = session.info.pop(_PENDING, [])
    if not pending:
        return
    key = config_of(session).effective_audit_key
    seq, prev = _lock_head(session)
    for entry, _tx in pending:
        # Times are taken under the lock, so `at` never goes backwards as seq goes up.
        entry.seq, entry.at = seq + 1, utcnow()
        data = {name: getattr(entry, name) for name in
                ("seq", "at", "actor_id", "actor_name", "action", "entity_type", "entity_id", "patient_id",
                 "ip", "detail")}
        entry.prev_hash, entry.hash = prev, _digest(key, data, prev)
        session.add(entry)
        seq, prev = entry.seq, entry.hash
    # ORM-enabled UPDATE: also refreshes a head object this session may still hold.
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=seq, hash=prev))


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous_transaction) -> None:
    """Rows recorded in the transaction (or savepoint) that rolled back, or in savepoints
    inside it, are dropped."""
    pending = session.info.get(_PENDING)
    if not pending:
        return

    def inside(tx) -> bool:
        while tx is not None:
            if tx is previous_transaction:
                return True
            tx = tx.parent
        return previous_transaction.parent is None  # the root rolled back: everything goes

    session.info[_PENDING] = [(e, tx) for e, tx in pending if not inside(tx)]


def _check_lengths(row: dict) -> None:
    """Refuse values wider than their column (a programming error, not user input)."""
    for name, limit in _LIMITS.items():
        value = row[name]
        if value is not None and len(value) > limit:
            raise ValueError(f"audit {name} is longer than {limit} characters")


@dataclass
class VerifyResult:
    """The outcome of `verify`: rows that verified, and the first bad row when not ok."""

    ok: bool
    rows_checked: int
    first_bad_seq: int | None = None
    first_bad_id: int | None = None
    problem: str | None = None

    @property
    def summary(self) -> str:
        """One line for people: the CLI and the audit page print it."""
        if self.ok:
            return f"audit chain OK: {self.rows_checked} rows verified"
        where = "at the chain head" if self.first_bad_seq is None else f"at seq {self.first_bad_seq}"
        if self.first_bad_id is not None:
            where += f" (row id {self.first_bad_id})"
        return f"audit chain BROKEN {where}: {self.problem}; {self.rows_checked} rows verified before it"


_ROW_COLUMNS = (AuditLog.id, AuditLog.seq, AuditLog.at, AuditLog.actor_id, AuditLog.actor_name,
                AuditLog.action, AuditLog.entity_type, AuditLog.entity_id, AuditLog.patient_id,
                AuditLog.ip, AuditLog.detail, AuditLog.prev_hash, AuditLog.hash)


def _rows_after(session: Session, last_seq: int | None, batch: int):
    """The next `batch` rows in seq order, as plain rows (not ORM objects).

    Plain rows bypass the session's identity map, so rows edited behind the ORM's back are
    read as they are in the database, and a long chain does not pile up in memory.
    The first batch has no lower bound: a forged row with seq 0 or below must be seen too.
    """
    stmt = select(*_ROW_COLUMNS).order_by(AuditLog.seq).limit(batch)
    if last_seq is not None:
        stmt = stmt.where(AuditLog.seq > last_seq)
    return session.execute(stmt).all()


def _read_head(session: Session) -> tuple[int, str] | None:
    row = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).first()
    return None if row is None else (row.seq, row.hash)


def _check_row(key: bytes, r, expected_seq: int, prev_hash: str, checked: int) -> VerifyResult | None:
    """The failure for row `r` if it is not the intact successor of the verified chain."""
    if r.seq < expected_seq:
        return VerifyResult(False, checked, r.seq, r.id,
                            f"row seq {r.seq} comes before the start of the chain: inserted")
    if r.seq != expected_seq:
        return VerifyResult(False, checked, expected_seq, r.id,
                            f"row seq {expected_seq} is missing (next found: {r.seq}): deleted")
    if r.prev_hash != prev_hash:
        return VerifyResult(False, checked, r.seq, r.id,
                            "previous-hash link broken: a row was deleted, inserted or reordered")
    data = {name: getattr(r, name) for name in
            ("seq", "at", "actor_id", "actor_name", "action", "entity_type", "entity_id",
             "patient_id", "ip", "detail")}
    if not hmac.compare_digest(_digest(key, data, prev_hash), r.hash):
        return VerifyResult(False, checked, r.seq, r.id, "row content does not match its hash: edited or forged")
    return None


def _check_end(checked: int, last_hash: str, head_seq: int, head_hash: str) -> VerifyResult | None:
    """The failure when the verified chain does not end where the head says it does."""
    if head_seq > checked:
        return VerifyResult(False, checked, checked + 1, None,
                            f"chain ends at seq {checked} but the head records seq {head_seq}: "
                            "rows were deleted from the end")
    if head_seq < checked:
        return VerifyResult(False, checked, head_seq + 1, None,
                            f"rows after seq {head_seq}, the last one the head records: "
                            "inserted, or the head was rewound")
    if head_hash != last_hash:
        return VerifyResult(False, checked, None, None,
                            "the head's hash does not match the last row: the head was altered")
    return None


def verify(session: Session, key: bytes | None = None, batch: int = 5000) -> VerifyResult:
    """Walk the chain in seq order; report the first row that does not verify.

    Safe while others append: the head is read only after the rows were exhausted, and
    if it is ahead (rows committed meanwhile) the walk continues. A row and its head update
    commit together, so once the head says N, rows up to N are visible; rows still missing
    then were deleted from the end. Deleting the last rows *and* rewinding the head is not
    detectable from inside the database; keep exported copies of the head for that.
    """
    key = key or config_of(session).effective_audit_key
    prev_hash, expected_seq, checked = GENESIS, 1, 0
    last_seq: int | None = None
    while True:
        rows = _rows_after(session, last_seq, batch)
        for r in rows:
            failure = _check_row(key, r, expected_seq, prev_hash, checked)
            if failure is not None:
                return failure
            prev_hash, expected_seq, checked, last_seq = r.hash, expected_seq + 1, checked + 1, r.seq
        if len(rows) == batch:
            continue
        head = _read_head(session)
        if head is None:
            if checked:
                return VerifyResult(False, checked, None, None, "the chain head row is missing: deleted")
            return VerifyResult(True, 0)
        head_seq, head_hash = head
        if head_seq > checked and _rows_after(session, last_seq, 1):
            continue  # rows were appended while we walked; verify them too
        failure = _check_end(checked, prev_hash, head_seq, head_hash)
        if failure is not None:
            return failure
        return VerifyResult(True, checked)
