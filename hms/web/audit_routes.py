"""The audit log viewer (admin only): filtered, paginated listing and chain verification.

    GET  /admin/audit                 page with filters: patient (id or MRN), user, action, dates
    POST /admin/audit/verify          verify the hash chain, show the first bad row
    GET  /api/v1/audit                the same listing as JSON: {"items", "total", ...}
    POST /api/v1/audit/verify         the verification result as JSON

Reading the audit log shows who looked at which patient, so every listing is itself
audited ("audit.view", with the filters as ids) and so is every verification.

Listings are pinned to a snapshot: the first page notes the last seq (`upto`) and the
pager carries it, so rows appended meanwhile (including our own "audit.view" rows) do not
shift the pages under the reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Mapping

from flask import Blueprint, jsonify, render_template, request
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from hms import audit
from hms.audit import AuditLog
from hms.auth.models import User
from hms.auth.permissions import define, requires
from hms.db import config_of
from hms.errors import BadRequest, Invalid
from hms.web.context import current_actor, database, db_session, page_args

bp = Blueprint("audit", __name__)

AUDIT_READ = define("audit.read", "admin")

PAGE_SIZE = 50
API_PAGE_SIZE = 25
# Usernames and system actor names ("system", "cli", "demo"): one lowercase word. Anything
# else (a patient's name typed into the wrong box) is refused, so it never reaches the log.
_ACTOR_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,59}$")
# Actions are dotted codes; a trailing * matches a prefix ("patient.*").
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_.]{0,59}\*?$")
# Ids and seqs: ASCII digits, short enough for a 64-bit integer (SQLite refuses larger).
_NUMBER_RE = re.compile(r"^[0-9]{1,18}$")


def _is_number(raw: str) -> bool:
    return bool(_NUMBER_RE.match(raw))


# --- filters ---------------------------------------------------------------------------

@dataclass
class AuditFilters:
    """Validated filters. `patient_ref` is what was typed (id or MRN); it is shown back on
    the page but never stored: it could be anything, and audit detail holds ids only."""

    patient_ref: str = ""
    patient_id: int | None = None
    patient_mrn: str | None = None
    actor: str = ""
    actor_user_id: int | None = None
    action: str = ""
    date_from: date | None = None
    date_to: date | None = None
    unmatched: bool = False  # a patient or user that does not exist: nothing can match
    errors: dict[str, list[str]] = field(default_factory=dict)

    def form_args(self) -> dict[str, str]:
        """The filters as page query arguments (pager links keep them)."""
        args = {"patient": self.patient_ref, "user": self.actor, "action": self.action,
                "from": self.date_from.isoformat() if self.date_from else "",
                "to": self.date_to.isoformat() if self.date_to else ""}
        return {k: v for k, v in args.items() if v}

    def audit_detail(self) -> dict:
        """What the "audit.view" row records: ids and codes, never the typed text."""
        detail = {"patient_id": self.patient_id, "user_id": self.actor_user_id,
                  "action": self.action or None,
                  "from": self.date_from.isoformat() if self.date_from else None,
                  "to": self.date_to.isoformat() if self.date_to else None}
        if self.actor and self.actor_user_id is None:
            detail["actor_name"] = self.actor  # a system actor ("demo", "cli"): not a person
        if self.unmatched:
            detail["unmatched"] = True
        return {k: v for k, v in detail.items() if v is not None}


def _parse_date(raw: str, name: str, errors: dict) -> date | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        errors[name] = ["Use a date like 2025-01-31."]
        return None


def _find_patient(session: Session, ref: str) -> tuple[int | None, str | None, str | None]:
    """(patient id, MRN, error) for an MRN or a patient id; (None, None, None) when no
    patient matches.

    The MRN is tried first, because a site may use digits-only MRNs. The patient model is
    looked up at call time, not import time: the patient index is optional for this page.
    """
    patient_model = _patient_model()
    if patient_model is None:
        if not _is_number(ref):
            return None, None, "Enter a patient id (MRN search needs the patient index)."
        return int(ref), None, None
    row = session.execute(
        select(patient_model.id, patient_model.mrn).where(patient_model.mrn.in_({ref, ref.upper()}))
    ).first()
    if row is None and _is_number(ref):
        row = session.execute(
            select(patient_model.id, patient_model.mrn).where(patient_model.id == int(ref))).first()
    return (row.id, row.mrn, None) if row else (None, None, None)


def _patient_model():
    try:
        from hms.patients import models as patient_models
    except ImportError:
        return None
    model = getattr(patient_models, "Patient", None)
    return model if model is not None and hasattr(model, "mrn") else None


def parse_filters(session: Session, args: Mapping[str, str], *, patient_key: str = "patient") -> AuditFilters:
    """Validate the filter arguments and resolve the patient and user they name."""
    f = AuditFilters()
    f.patient_ref = (args.get(patient_key) or "").strip()
    if f.patient_ref:
        f.patient_id, f.patient_mrn, problem = _find_patient(session, f.patient_ref)
        if problem:
            f.errors[patient_key] = [problem]
        elif f.patient_id is None:
            f.unmatched = True
    f.actor = (args.get("user") or "").strip().lower()
    if f.actor:
        if not _ACTOR_RE.match(f.actor):
            f.errors["user"] = ["Enter a username, e.g. reception."]
        else:
            f.actor_user_id = session.execute(select(User.id).where(User.username == f.actor)).scalar()
    f.action = (args.get("action") or "").strip().lower()
    if f.action and not _ACTION_RE.match(f.action):
        f.errors["action"] = ["Enter an action code, e.g. user.create (end with * for a prefix)."]
    f.date_from = _parse_date(args.get("from", ""), "from", f.errors)
    f.date_to = _parse_date(args.get("to", ""), "to", f.errors)
    if f.date_from and f.date_to and f.date_from > f.date_to:
        f.errors["to"] = ["The end date is before the start date."]
    return f


def _local_midnight_utc(day: date, tz) -> datetime:
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(timezone.utc)


def _conditions(f: AuditFilters, tz) -> list[ColumnElement[bool]]:
    """SQL conditions for the filters. Dates are local days (HMS_TIMEZONE): `to` includes
    the whole of its day, so the range ends at the next local midnight, exclusive."""
    conds: list[ColumnElement[bool]] = []
    if f.patient_id is not None:
        conds.append(AuditLog.patient_id == f.patient_id)
    if f.actor_user_id is not None:
        conds.append(AuditLog.actor_id == f.actor_user_id)
    elif f.actor:
        conds.append(AuditLog.actor_id.is_(None) & (AuditLog.actor_name == f.actor))
    if f.action.endswith("*"):
        prefix = f.action[:-1].replace("_", r"\_")
        conds.append(AuditLog.action.like(prefix + "%", escape="\\"))
    elif f.action:
        conds.append(AuditLog.action == f.action)
    if f.date_from:
        conds.append(AuditLog.at >= _local_midnight_utc(f.date_from, tz))
    if f.date_to:
        conds.append(AuditLog.at < _local_midnight_utc(f.date_to + timedelta(days=1), tz))
    return conds


# --- queries ---------------------------------------------------------------------------

@dataclass
class AuditPage:
    """One page of a listing; `upto` is the snapshot seq the pager carries along."""

    items: list[AuditLog]
    total: int
    page: int
    size: int
    upto: int
    mrns: dict[int, str]

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))


def last_seq(session: Session) -> int:
    """The newest row's seq (0 when the log is empty): the snapshot a listing is pinned to."""
    return session.execute(select(func.max(AuditLog.seq))).scalar() or 0


def list_entries(session: Session, f: AuditFilters, page: int, size: int, upto: int | None) -> AuditPage:
    """One page of rows matching the filters, newest first, no newer than seq `upto`."""
    upto = last_seq(session) if upto is None else upto
    if f.unmatched:
        return AuditPage([], 0, page, size, upto, {})
    conds = [*_conditions(f, config_of(session).tz), AuditLog.seq <= upto]
    total = session.execute(select(func.count()).select_from(AuditLog).where(*conds)).scalar_one()
    items = list(session.execute(
        select(AuditLog).where(*conds).order_by(AuditLog.seq.desc()).offset((page - 1) * size).limit(size)
    ).scalars())
    return AuditPage(items, total, page, size, upto, _mrns_for(session, items))


def _mrns_for(session: Session, items: list[AuditLog]) -> dict[int, str]:
    """MRNs of the patients on this page (one query), when the patient index exists."""
    patient_model = _patient_model()
    ids = {r.patient_id for r in items if r.patient_id is not None}
    if patient_model is None or not ids:
        return {}
    rows = session.execute(select(patient_model.id, patient_model.mrn).where(patient_model.id.in_(ids)))
    return {r.id: r.mrn for r in rows}


def _record_view(session: Session, f: AuditFilters, page: int) -> None:
    audit.record(session, current_actor(), "audit.view", "audit_log", patient_id=f.patient_id,
                 detail={**f.audit_detail(), "page": page})


def _upto_arg() -> int | None:
    raw = request.args.get("upto", "").strip()
    if not raw:
        return None
    if not _is_number(raw):
        raise BadRequest("upto must be a whole number.", code="invalid_paging")
    return int(raw)


def run_verify() -> audit.VerifyResult:
    """Verify the chain in a read-only transaction of its own (one consistent snapshot,
    locking nothing while it walks a long chain), then audit who verified and the outcome."""
    with database().transaction(readonly=True) as session:
        result = audit.verify(session)
    audit.record(db_session(), current_actor(), "audit.verify", "audit_log",
                 detail={"ok": result.ok, "rows_checked": result.rows_checked,
                         "first_bad_seq": result.first_bad_seq})
    return result


# --- pages -----------------------------------------------------------------------------

@bp.get("/admin/audit")
@requires(AUDIT_READ)
def audit_page():
    session = db_session()
    page, size = page_args(default_size=PAGE_SIZE, max_size=200)
    f = parse_filters(session, request.args)
    tz_name = config_of(session).timezone
    if f.errors:
        return render_template("audit/index.html", filters=f, result=None, tz_name=tz_name), 422
    result = list_entries(session, f, page, size, _upto_arg())
    _record_view(session, f, page)
    return render_template("audit/index.html", filters=f, result=result, tz_name=tz_name)


@bp.post("/admin/audit/verify")
@requires(AUDIT_READ)
def verify_page():
    return render_template("audit/verify.html", result=run_verify())


# --- JSON API --------------------------------------------------------------------------

def entry_json(row: AuditLog) -> dict:
    return {
        "id": row.id,
        "seq": row.seq,
        "at": row.at.isoformat(),
        "actor_id": row.actor_id,
        "actor": row.actor_name,
        "action": row.action,
        "entity_type": row.entity_type,
        "entity_id": row.entity_id,
        "patient_id": row.patient_id,
        "ip": row.ip,
        "detail": row.detail,
    }


@bp.get("/api/v1/audit")
@requires(AUDIT_READ)
def api_list():
    session = db_session()
    page, size = page_args(default_size=API_PAGE_SIZE, max_size=100)
    # The API names the patient `patient_id` (a number); `mrn` looks one up by MRN.
    raw_id, mrn = request.args.get("patient_id", "").strip(), request.args.get("mrn", "").strip()
    if raw_id and not _is_number(raw_id):
        raise Invalid("Some filters are not valid.", fields={"patient_id": ["Must be a whole number."]})
    if raw_id and mrn:
        raise Invalid("Some filters are not valid.", fields={"mrn": ["Give patient_id or mrn, not both."]})
    args = {**request.args, "patient": mrn or raw_id}
    f = parse_filters(session, args)
    if f.errors:
        key = "mrn" if mrn else "patient_id"
        fields = {(key if k == "patient" else k): v for k, v in f.errors.items()}
        raise Invalid("Some filters are not valid.", fields=fields)
    result = list_entries(session, f, page, size, _upto_arg())
    _record_view(session, f, page)
    return jsonify({"items": [entry_json(r) for r in result.items], "total": result.total,
                    "page": result.page, "size": result.size, "upto": result.upto})


@bp.post("/api/v1/audit/verify")
@requires(AUDIT_READ)
def api_verify():
    result = run_verify()
    return jsonify({"ok": result.ok, "rows_checked": result.rows_checked,
                    "first_bad_seq": result.first_bad_seq, "first_bad_id": result.first_bad_id,
                    "problem": result.problem, "summary": result.summary})
