"""Bed board and bed states: the only code that writes wards, beds and bed assignments.

Bed state machine (every other move is a 409 naming the current state):

    free --reserve--> reserved --occupy--> occupied --vacate--> to_clean --mark_clean--> free
    reserved --release--> free          free --block--> blocked --unblock--> free

Every change locks the bed row first (SELECT ... FOR UPDATE; on SQLite the IMMEDIATE write
transaction gives the same guarantee), so two desks deciding on one bed queue and the second
sees the first one's result. The partial unique indexes on bed_assignment back the rule at
the database: one active assignment per bed, one active bed per admission.

Nurses and housekeeping change beds of their own wards only (actor.ward_ids); admins,
reception desks and the system (pathway service tasks) act on every ward.
"""

from __future__ import annotations

from collections import Counter as Tally
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hms.audit import Actor, record
from hms.db import utcnow
from hms.errors import Conflict, Forbidden, Invalid, NotFound, record_id
from hms.patients.models import Patient
from wards.models import ACTIVE_ASSIGNMENT_STATES, BED_STATES, Bed, BedAssignment, Ward

STATE_LABELS = {"free": "Free", "reserved": "Reserved", "occupied": "Occupied",
                "to_clean": "To clean", "blocked": "Blocked"}
# Roles whose bed changes are not limited to their own wards.
UNSCOPED_ROLES = ("admin", "reception", "system")
MAX_REASON = 200


@dataclass
class BedView:
    bed: Bed
    assignment: BedAssignment | None
    patient: Patient | None
    days: int | None


@dataclass
class WardView:
    ward: Ward
    beds: list[BedView]
    counts: dict[str, int]


def _days_since(started) -> int:
    return max(0, (utcnow() - started).days)


def list_wards(session: Session, *, ward_ids: Iterable[int] | None = None,
               state: str | None = None) -> list[WardView]:
    """Active wards (all, or `ward_ids`) with their beds, each bed's active assignment, its
    patient and whole days since the assignment started. `state` keeps only beds in that
    state; the counts per state are always of all the ward's beds. Three queries, no locks."""
    if state is not None and state not in BED_STATES:
        raise Invalid(f"Unknown bed state '{state}'.", fields={"state": [f"One of: {', '.join(BED_STATES)}."]})
    stmt = select(Ward).where(Ward.active.is_(True)).order_by(Ward.name)
    if ward_ids is not None:
        ids = [int(i) for i in ward_ids]
        stmt = stmt.where(Ward.id.in_(ids))
    wards = list(session.execute(stmt).scalars())
    if not wards:
        return []
    beds = list(session.execute(
        select(Bed).where(Bed.ward_id.in_([w.id for w in wards])).order_by(Bed.label)).scalars())
    active = {}
    if beds:
        rows = session.execute(
            select(BedAssignment, Patient).join(Patient, Patient.id == BedAssignment.patient_id)
            .where(BedAssignment.bed_id.in_([b.id for b in beds]),
                   BedAssignment.state.in_(ACTIVE_ASSIGNMENT_STATES))).all()
        active = {a.bed_id: (a, p) for a, p in rows}
    by_ward: dict[int, list[Bed]] = {}
    for bed in beds:
        by_ward.setdefault(bed.ward_id, []).append(bed)
    views = []
    for ward in wards:
        ward_beds = by_ward.get(ward.id, [])
        counts = {s: 0 for s in BED_STATES}
        counts.update(Tally(b.state for b in ward_beds))
        shown = []
        for bed in ward_beds:
            if state is not None and bed.state != state:
                continue
            assignment, patient = active.get(bed.id, (None, None))
            shown.append(BedView(bed, assignment, patient,
                                 _days_since(assignment.started_at) if assignment else None))
        views.append(WardView(ward, shown, counts))
    return views


def get_bed(session: Session, bed_id: Any) -> Bed:
    bed = session.get(Bed, record_id(bed_id, "bed"))
    if bed is None:
        raise NotFound(f"No bed with id {bed_id}.", code="bed_not_found")
    return bed


def _locked_bed(session: Session, bed_id: Any) -> Bed:
    """The bed row, locked until the transaction ends, read fresh from the database."""
    number = record_id(bed_id, "bed")
    bed = session.execute(select(Bed).where(Bed.id == number).with_for_update()
                          .execution_options(populate_existing=True)).scalar_one_or_none()
    if bed is None:
        raise NotFound(f"No bed with id {bed_id}.", code="bed_not_found")
    return bed


def _active_assignment(session: Session, bed: Bed) -> BedAssignment | None:
    return session.execute(
        select(BedAssignment).where(BedAssignment.bed_id == bed.id,
                                    BedAssignment.state.in_(ACTIVE_ASSIGNMENT_STATES))
        .with_for_update().execution_options(populate_existing=True)).scalar_one_or_none()


def check_ward_scope(actor: Actor, ward_id: int) -> None:
    """403 `out_of_scope` unless the actor may change beds of this ward."""
    if actor.is_system or actor.has_role(*UNSCOPED_ROLES):
        return
    if ward_id not in actor.ward_ids:
        raise Forbidden("This ward is outside your assignment.", code="out_of_scope")


_ACTION_TEXT = {"reserve": "reserved", "occupy": "occupied", "release": "released", "vacate": "vacated",
                "clean": "marked clean", "block": "blocked", "unblock": "unblocked"}


def _refuse(bed: Bed, action: str, allowed_from: str) -> Conflict:
    """409 naming the bed's current state and the state the action needs."""
    state = STATE_LABELS.get(bed.state, bed.state).lower()
    code = "bed_not_free" if action == "reserve" else "bed_state"
    return Conflict(f"Bed {bed.label} is {state}; only a {STATE_LABELS[allowed_from].lower()} bed "
                    f"can be {_ACTION_TEXT[action]}.", code=code, fields={"state": [bed.state]})


def _reason(reason: Any, required: bool) -> str | None:
    text = reason.strip() if isinstance(reason, str) else ""
    if not text:
        if required:
            raise Invalid("Give a reason.", fields={"reason": ["Required."]})
        return None
    if len(text) > MAX_REASON:
        raise Invalid(f"The reason is at most {MAX_REASON} characters.",
                      fields={"reason": [f"At most {MAX_REASON} characters."]})
    return text


def _transition(session: Session, actor: Actor, bed_id: Any, action: str, allowed_from: str) -> Bed:
    bed = _locked_bed(session, bed_id)
    check_ward_scope(actor, bed.ward_id)
    if bed.state != allowed_from:
        raise _refuse(bed, action, allowed_from)
    return bed


def reserve_bed(session: Session, actor: Actor, bed_id: Any, *, admission_id: Any,
                patient_id: Any) -> BedAssignment:
    """Reserve a free bed for an admission. Locks the bed row; 409 `bed_not_free` naming the
    bed's state unless it is free, and 409 `admission_has_bed` when the admission already holds
    an active bed. The partial unique indexes back both rules (a race that slips past the lock
    gets the same 409). Writes bed_assignment, bed.state and audit "bed.reserve"."""
    admission = record_id(admission_id, "admission")
    patient = session.get(Patient, record_id(patient_id, "patient"))
    if patient is None:
        raise NotFound(f"No patient with id {patient_id}.", code="patient_not_found")
    bed = _transition(session, actor, bed_id, "reserve", "free")
    held = session.execute(select(BedAssignment.bed_id).where(
        BedAssignment.admission_id == admission,
        BedAssignment.state.in_(ACTIVE_ASSIGNMENT_STATES))).scalar_one_or_none()
    if held is not None:
        raise Conflict(f"Admission {admission} already holds bed {held}; release or vacate it first.",
                       code="admission_has_bed")
    assignment = BedAssignment(bed_id=bed.id, admission_id=admission, patient_id=patient.id,
                               state="reserved", started_at=utcnow(), by_id=actor.user_id)
    try:
        with session.begin_nested():
            session.add(assignment)
            session.flush()
    except IntegrityError:
        raise Conflict(f"Bed {bed.label} is already reserved or occupied.", code="bed_not_free",
                       fields={"state": ["reserved"]}) from None
    bed.state = "reserved"
    session.flush()
    record(session, actor, "bed.reserve", "bed", bed.id, patient_id=patient.id,
           detail={"ward_id": bed.ward_id, "admission_id": admission, "assignment_id": assignment.id})
    return assignment


def occupy_bed(session: Session, actor: Actor, bed_id: Any) -> BedAssignment:
    """The reserved patient is in the bed: reserved -> occupied. Locks the bed row."""
    bed = _transition(session, actor, bed_id, "occupy", "reserved")
    assignment = _active_assignment(session, bed)
    assignment.state = "occupied"
    assignment.occupied_at = utcnow()
    bed.state = "occupied"
    session.flush()
    record(session, actor, "bed.occupy", "bed", bed.id, patient_id=assignment.patient_id,
           detail={"ward_id": bed.ward_id, "admission_id": assignment.admission_id})
    return assignment


def _end(session: Session, actor: Actor, bed: Bed, new_state: str, action: str,
         reason: str | None) -> BedAssignment:
    assignment = _active_assignment(session, bed)
    assignment.state = "ended"
    assignment.ended_at = utcnow()
    assignment.end_reason = reason
    bed.state = new_state
    session.flush()
    detail = {"ward_id": bed.ward_id, "admission_id": assignment.admission_id}
    record(session, actor, action, "bed", bed.id, patient_id=assignment.patient_id, detail=detail)
    return assignment


def release_bed(session: Session, actor: Actor, bed_id: Any, reason: Any) -> BedAssignment:
    """Give a reservation back: reserved -> free, the assignment ends with `reason`."""
    text = _reason(reason, required=True)
    bed = _transition(session, actor, bed_id, "release", "reserved")
    return _end(session, actor, bed, "free", "bed.release", text)


def vacate_bed(session: Session, actor: Actor, bed_id: Any) -> BedAssignment:
    """The patient left the bed: occupied -> to_clean, the assignment ends."""
    bed = _transition(session, actor, bed_id, "vacate", "occupied")
    return _end(session, actor, bed, "to_clean", "bed.vacate", None)


def mark_clean(session: Session, actor: Actor, bed_id: Any) -> Bed:
    """Housekeeping cleaned the bed: to_clean -> free."""
    bed = _transition(session, actor, bed_id, "clean", "to_clean")
    bed.state = "free"
    session.flush()
    record(session, actor, "bed.clean", "bed", bed.id, detail={"ward_id": bed.ward_id})
    return bed


def block_bed(session: Session, actor: Actor, bed_id: Any, reason: Any) -> Bed:
    """Take a free bed out of use (broken, isolation): free -> blocked, with a reason."""
    text = _reason(reason, required=True)
    bed = _transition(session, actor, bed_id, "block", "free")
    bed.state = "blocked"
    session.flush()
    record(session, actor, "bed.block", "bed", bed.id, detail={"ward_id": bed.ward_id, "reason": text})
    return bed


def unblock_bed(session: Session, actor: Actor, bed_id: Any, reason: Any = None) -> Bed:
    """Put a blocked bed back in use: blocked -> free."""
    text = _reason(reason, required=False)
    bed = _transition(session, actor, bed_id, "unblock", "blocked")
    bed.state = "free"
    session.flush()
    record(session, actor, "bed.unblock", "bed", bed.id, detail={"ward_id": bed.ward_id, "reason": text})
    return bed


def find_free_bed(session: Session, *, ward_id: int | None = None, gender: str | None = None) -> Bed | None:
    """The first free bed (by ward name, then label) of an active ward that suits `gender`
    (a male/female ward or a mixed one; any other gender: mixed wards only). Not locked: the
    reservation decides, so a caller must be ready for `bed_not_free`."""
    stmt = (select(Bed).join(Ward, Ward.id == Bed.ward_id)
            .where(Bed.state == "free", Ward.active.is_(True)).order_by(Ward.name, Bed.label).limit(1))
    if ward_id is not None:
        stmt = stmt.where(Ward.id == ward_id)
    if gender:
        stmt = stmt.where(Ward.gender.in_(("mixed", gender) if gender in ("male", "female") else ("mixed",)))
    return session.execute(stmt).scalar_one_or_none()
