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

from sqlalchemy import JSON, ForeignKey, Index, String, select
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


def _digest(key: bytes, row: dict, prev_hash: str) -> str:
    payload = json.dumps(
        [row["seq"], row["at"].isoformat(), row["actor_id"], row["actor_name"], row["action"],
         row["entity_type"], row["entity_id"], row["patient_id"], row["ip"], row["detail"], prev_hash],
        sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def _lock_head(session: Session) -> AuditHead:
    dialect = session.get_bind().dialect.name
    ins = (postgresql if dialect == "postgresql" else sqlite).insert(AuditHead)
    session.execute(ins.values(id=1, seq=0, hash=GENESIS).on_conflict_do_nothing(index_elements=["id"]))
    return session.execute(
        select(AuditHead).where(AuditHead.id == 1).with_for_update()
    ).scalar_one()


def record(session: Session, actor: Actor, action: str, entity_type: str,
           entity_id: Any = None, *, patient_id: int | None = None,
           detail: dict | None = None) -> AuditLog:
    """Append one audit row. Locks the chain head until the transaction ends.

    Call it inside the same transaction as the change it records, so the record and the
    change commit (or roll back) together.
    """
    key = config_of(session).effective_audit_key
    head = _lock_head(session)
    row = {
        "seq": head.seq + 1,
        "at": utcnow(),
        "actor_id": actor.user_id,
        "actor_name": actor.username,
        "action": action,
        "entity_type": entity_type,
        "entity_id": None if entity_id is None else str(entity_id),
        "patient_id": patient_id,
        "ip": actor.ip,
        "detail": detail,
    }
    digest = _digest(key, row, head.hash)
    entry = AuditLog(**row, prev_hash=head.hash, hash=digest)
    session.add(entry)
    head.seq = row["seq"]
    head.hash = digest
    session.flush()
    return entry


@dataclass
class VerifyResult:
    ok: bool
    rows_checked: int
    first_bad_seq: int | None = None
    first_bad_id: int | None = None
    problem: str | None = None


def verify(session: Session, key: bytes | None = None, batch: int = 5000) -> VerifyResult:
    """Walk the chain in seq order; report the first row that does not verify."""
    key = key or config_of(session).effective_audit_key
    prev_hash, expected_seq, checked = GENESIS, 1, 0
    last_seq = 0
    while True:
        rows = session.execute(
            select(AuditLog).where(AuditLog.seq > last_seq).order_by(AuditLog.seq).limit(batch)
        ).scalars().all()
        if not rows:
            break
        for r in rows:
            data = {"seq": r.seq, "at": r.at, "actor_id": r.actor_id, "actor_name": r.actor_name,
                    "action": r.action, "entity_type": r.entity_type, "entity_id": r.entity_id,
                    "patient_id": r.patient_id, "ip": r.ip, "detail": r.detail}
            if r.seq != expected_seq:
                return VerifyResult(False, checked, expected_seq, r.id,
                                    f"row seq {expected_seq} is missing (next found: {r.seq}): deleted")
            if r.prev_hash != prev_hash:
                return VerifyResult(False, checked, r.seq, r.id,
                                    "previous-hash link broken: a row was deleted, inserted or reordered")
            if not hmac.compare_digest(_digest(key, data, prev_hash), r.hash):
                return VerifyResult(False, checked, r.seq, r.id, "row content does not match its hash: edited")
            prev_hash, expected_seq, checked = r.hash, expected_seq + 1, checked + 1
            last_seq = r.seq
    head = session.get(AuditHead, 1)
    if head is not None and (head.seq != checked or head.hash != prev_hash):
        return VerifyResult(False, checked, checked + 1, None,
                            f"chain ends at seq {checked} but the head records seq {head.seq}: rows were deleted from the end")
    return VerifyResult(True, checked)
