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

Admissions (ordered -> reserved -> admitted -> discharging -> discharged; cancelled) follow
their bed: reserving a bed reserves the admission, occupying it admits the patient. Lock
order, everywhere: the admission row first, then bed rows (lower id first), so two desks
never wait on each other in a circle.
"""

from __future__ import annotations

import math
from collections import Counter as Tally
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hms import events, settings
from hms.audit import Actor, record
from hms.auth.models import User
from hms.db import get_row, next_number, utcnow
from hms.org.models import Department
from hms.errors import Conflict, Forbidden, Invalid, NotFound, record_id
from hms.patients.models import Patient
from wards.models import (ACTIVE_ADMISSION_STATES, ACTIVE_ASSIGNMENT_STATES, ADMISSION_STATES, BED_STATES,
                          DISCHARGE_CONDITIONS, ORDER_KINDS, Admission, AdmissionAssessment, Bed,
                          BedAssignment, DischargeSummary, Transfer, Ward, WardOrder)

STATE_LABELS = {"free": "Free", "reserved": "Reserved", "occupied": "Occupied",
                "to_clean": "To clean", "blocked": "Blocked"}
# Roles whose bed changes are not limited to their own wards.
UNSCOPED_ROLES = ("admin", "reception", "system")
MAX_REASON = 200

BED_CHARGE_STARTS = settings.declare(
    "wards.bed_charge_starts", str, "acceptance",
    "When bed charges of an admission start: 'reservation' (the bed is held) or 'acceptance' (patient in bed)")
BED_DAY_ROUNDING = settings.declare(
    "wards.bed_day_rounding", str, "half",
    "How the last, partial day of a stay is charged: 'half' (up to the next half day) or 'full' (a whole day)")

ADMISSION_NO_FORMAT = "ADM-{n:06d}"
ADMISSION_COUNTER = "wards.admission"
HALF_DAY = timedelta(hours=12)
DAY = timedelta(hours=24)


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
    patient and whole days admitted. `state` keeps only beds in that
    state; the counts per state are always of all the ward's beds. Days count from the
    admission's admitted_at (from the reservation while only reserved). Three queries, no locks."""
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
            select(BedAssignment, Patient, Admission.admitted_at)
            .join(Patient, Patient.id == BedAssignment.patient_id)
            .join(Admission, Admission.id == BedAssignment.admission_id)
            .where(BedAssignment.bed_id.in_([b.id for b in beds]),
                   BedAssignment.state.in_(ACTIVE_ASSIGNMENT_STATES))).all()
        active = {a.bed_id: (a, p, admitted) for a, p, admitted in rows}
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
            assignment, patient, admitted = active.get(bed.id, (None, None, None))
            # Days admitted count from the admission (a transfer does not restart them).
            shown.append(BedView(bed, assignment, patient,
                                 _days_since(admitted or assignment.started_at) if assignment else None))
        views.append(WardView(ward, shown, counts))
    return views


def get_bed(session: Session, bed_id: Any) -> Bed:
    return get_row(session, Bed, bed_id, "bed")


def _locked_bed(session: Session, bed_id: Any) -> Bed:
    return get_row(session, Bed, bed_id, "bed", lock=True)


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
    """Reserve a free bed for an admission. Locks the admission row, then the bed row; 409
    `bed_not_free` naming the bed's state unless it is free, 409 `admission_has_bed` when the
    admission already holds an active bed, 409 `wrong_patient` when the patient is not the
    admission's, 409 `admission_state` unless the admission is ordered (or admitted without a
    bed, after a vacate: it stays admitted). The partial unique
    indexes back the bed rules (a race that slips past the lock gets the same 409). Writes
    bed_assignment, bed.state, the admission (reserved, its ward and bed; charge_from when
    bed charges start at reservation) and audit "bed.reserve"."""
    admission = _locked_admission(session, admission_id)
    patient = session.get(Patient, record_id(patient_id, "patient"))
    if patient is None:
        raise NotFound(f"No patient with id {patient_id}.", code="patient_not_found")
    bed = _transition(session, actor, bed_id, "reserve", "free")
    if patient.id != admission.patient_id:
        raise Conflict(f"Admission {admission.admission_no} is for another patient.", code="wrong_patient")
    held = session.execute(select(BedAssignment.bed_id).where(
        BedAssignment.admission_id == admission.id,
        BedAssignment.state.in_(ACTIVE_ASSIGNMENT_STATES))).scalar_one_or_none()
    if held is not None:
        raise Conflict(f"Admission {admission.admission_no} already holds bed {held}; release or vacate it first.",
                       code="admission_has_bed")
    if not (admission.state == "ordered" or admission.state == "admitted" and admission.bed_id is None):
        raise Conflict(f"Admission {admission.admission_no} is {admission.state}; only an ordered admission "
                       "(or an admitted patient without a bed) gets a bed reserved.", code="admission_state",
                       fields={"state": [admission.state]})
    now = utcnow()
    assignment = BedAssignment(bed_id=bed.id, admission_id=admission.id, patient_id=patient.id,
                               state="reserved", started_at=now, by_id=actor.user_id)
    try:
        with session.begin_nested():
            session.add(assignment)
            session.flush()
    except IntegrityError:
        raise Conflict(f"Bed {bed.label} is already reserved or occupied.", code="bed_not_free",
                       fields={"state": ["reserved"]}) from None
    bed.state = "reserved"
    admission.ward_id, admission.bed_id = bed.ward_id, bed.id
    if admission.state == "ordered":
        admission.state, admission.reserved_at = "reserved", now
        if settings.get(session, BED_CHARGE_STARTS) == "reservation":
            admission.charge_from = now
    session.flush()
    record(session, actor, "bed.reserve", "bed", bed.id, patient_id=patient.id,
           detail={"ward_id": bed.ward_id, "admission_id": admission.id, "assignment_id": assignment.id})
    return assignment


def occupy_bed(session: Session, actor: Actor, bed_id: Any) -> BedAssignment:
    """The reserved patient is in the bed: reserved -> occupied, and the admission is admitted
    (admitted_at; charge_from now unless charges started at reservation). Locks the
    admission, then the bed."""
    admission = _lock_admission_of_bed(session, bed_id)
    bed = _transition(session, actor, bed_id, "occupy", "reserved")
    assignment = _active_assignment(session, bed)
    _same_admission(admission, assignment)
    now = utcnow()
    assignment.state = "occupied"
    assignment.occupied_at = now
    bed.state = "occupied"
    if admission is not None:
        admission.ward_id, admission.bed_id = bed.ward_id, bed.id
        if admission.state == "reserved":
            admission.state, admission.admitted_at = "admitted", now
            if admission.charge_from is None:
                admission.charge_from = now
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
    """Give a reservation back: reserved -> free, the assignment ends with `reason`; a reserved
    admission is ordered again (no bed, no charges). Locks the admission, then the bed."""
    text = _reason(reason, required=True)
    admission = _lock_admission_of_bed(session, bed_id)
    bed = _transition(session, actor, bed_id, "release", "reserved")
    _same_admission(admission, _active_assignment(session, bed))
    assignment = _end(session, actor, bed, "free", "bed.release", text)
    if admission is not None:
        admission.bed_id = None
        if admission.state == "reserved":
            admission.state = "ordered"
            admission.reserved_at = admission.charge_from = None
        session.flush()
    return assignment


def vacate_bed(session: Session, actor: Actor, bed_id: Any) -> BedAssignment:
    """The patient left the bed: occupied -> to_clean, the assignment ends and the admission
    no longer has a current bed. A discharge vacates through `discharge_patient`. Locks the
    admission, then the bed."""
    admission = _lock_admission_of_bed(session, bed_id)
    bed = _transition(session, actor, bed_id, "vacate", "occupied")
    _same_admission(admission, _active_assignment(session, bed))
    assignment = _end(session, actor, bed, "to_clean", "bed.vacate", None)
    if admission is not None and admission.bed_id == bed.id:
        admission.bed_id = None
        session.flush()
    return assignment


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


# --- Admissions ------------------------------------------------------------------------

MAX_ADMISSION_REASON = 300
MAX_PAYER_CLASS = 40
MAX_DESCRIPTION = 200
MAX_CODE = 40
DOCTOR_ROLES = ("doctor",)


def get_admission(session: Session, admission_id: Any) -> Admission:
    """The admission, or NotFound `admission_not_found`. No lock."""
    return get_row(session, Admission, admission_id, "admission")


def _locked_admission(session: Session, admission_id: Any) -> Admission:
    """The admission row, locked until the transaction ends, read fresh."""
    return get_row(session, Admission, admission_id, "admission", lock=True)


def _lock_admission_of_bed(session: Session, bed_id: Any) -> Admission | None:
    """Lock the admission holding the bed (read without a lock first: admissions are locked
    before beds). None when the bed has no active assignment."""
    number = record_id(bed_id, "bed")
    admission_id = session.execute(select(BedAssignment.admission_id).where(
        BedAssignment.bed_id == number, BedAssignment.state.in_(ACTIVE_ASSIGNMENT_STATES))).scalar_one_or_none()
    return None if admission_id is None else _locked_admission(session, admission_id)


def _same_admission(admission: Admission | None, assignment: BedAssignment | None) -> None:
    """The bed changed hands between the unlocked read and the lock: ask to retry."""
    if admission is not None and (assignment is None or assignment.admission_id != admission.id):
        raise Conflict("The bed changed while you acted; reload and try again.", code="bed_changed")


def check_orders_open(session: Session, admission: Admission) -> None:
    """Refuse new orders (and order changes) on an admission that does not take them:
    409 `orders_frozen` once the nursing gate passed (nursing_cleared_at) or the stay ended;
    409 `not_admitted` unless the patient is admitted (or discharging, before the gate)."""
    if admission.nursing_cleared_at is not None or admission.state in ("discharged", "cancelled"):
        raise Conflict(f"Admission {admission.admission_no} is being discharged; orders are frozen.",
                       code="orders_frozen", fields={"state": [admission.state]})
    if admission.state not in ("admitted", "discharging"):
        raise Conflict(f"Admission {admission.admission_no} is {admission.state}; the patient is not "
                       "admitted yet.", code="not_admitted", fields={"state": [admission.state]})


def _text(value: Any, name: str, max_len: int, *, required: bool = False) -> str | None:
    if value is not None and not isinstance(value, str):
        raise Invalid(f"{name.replace('_', ' ').capitalize()} must be text.", fields={name: ["Must be text."]})
    text = (value or "").strip()
    if not text:
        if required:
            raise Invalid(f"{name.replace('_', ' ').capitalize()} is required.", fields={name: ["Required."]})
        return None
    if len(text) > max_len:
        raise Invalid(f"{name.replace('_', ' ').capitalize()} is at most {max_len} characters.",
                      fields={name: [f"At most {max_len} characters."]})
    return text


def _payer_class(value: Any) -> str:
    return _text(value, "payer_class", MAX_PAYER_CLASS, required=True)


def _active_admission_of(session: Session, patient_id: int) -> Admission | None:
    return session.execute(select(Admission).where(
        Admission.patient_id == patient_id, Admission.state.in_(ACTIVE_ADMISSION_STATES))).scalars().first()


def _already_admitted(existing: Admission) -> Conflict:
    return Conflict(f"The patient already has admission {existing.admission_no} ({existing.state}).",
                    code="already_admitted", fields={"admission_no": [existing.admission_no]})


def create_admission(session: Session, actor: Actor, *, patient_id: Any, department_id: Any,
                     ward_id: Any = None, payer_class: Any = "cash", doctor_id: Any = None,
                     encounter_id: Any = None, reason: Any = None) -> Admission:
    """Order an admission (state ordered, number ADM-nnnnnn from the counter). NotFound for an
    unknown patient, department, ward or doctor; Invalid for an empty payer class; 409
    `already_admitted` naming the patient's active admission (the partial unique index on
    admission.patient_id backs it against a race). Writes admission and audit "admission.create"."""
    patient = session.get(Patient, record_id(patient_id, "patient"))
    if patient is None:
        raise NotFound(f"No patient with id {patient_id}.", code="patient_not_found")
    department = session.get(Department, record_id(department_id, "department"))
    if department is None:
        raise NotFound(f"No department with id {department_id}.", code="department_not_found")
    ward = None
    if ward_id is not None:
        ward = session.get(Ward, record_id(ward_id, "ward"))
        if ward is None or not ward.active:
            raise NotFound(f"No active ward with id {ward_id}.", code="ward_not_found")
    if doctor_id is not None and session.get(User, record_id(doctor_id, "doctor")) is None:
        raise NotFound(f"No user with id {doctor_id}.", code="doctor_not_found")
    if encounter_id is not None:
        encounter_id = record_id(encounter_id, "encounter")
    payer = _payer_class(payer_class)
    text = _text(reason, "reason", MAX_ADMISSION_REASON)
    existing = _active_admission_of(session, patient.id)
    if existing is not None:
        raise _already_admitted(existing)
    try:
        with session.begin_nested():
            admission = Admission(
                admission_no=ADMISSION_NO_FORMAT.format(n=next_number(session, ADMISSION_COUNTER)),
                patient_id=patient.id, department_id=department.id, ward_id=ward.id if ward else None,
                doctor_id=doctor_id, encounter_id=encounter_id, reason=text, payer_class=payer,
                state="ordered", ordered_at=utcnow(), ordered_by_id=actor.user_id)
            session.add(admission)
            session.flush()
    except IntegrityError:
        existing = _active_admission_of(session, patient.id)
        if existing is None:
            raise
        raise _already_admitted(existing) from None
    record(session, actor, "admission.create", "admission", admission.id, patient_id=patient.id,
           detail={"admission_no": admission.admission_no, "department_id": department.id,
                   "ward_id": admission.ward_id, "payer_class": payer, "encounter_id": encounter_id})
    return admission


def list_admissions(session: Session, *, state: str | None = None, ward_id: Any = None,
                    patient_id: Any = None, active_only: bool = False, page: int = 1,
                    size: int = 50) -> list[Admission]:
    """Admissions, newest first, filtered by state, current ward, patient or active states."""
    stmt = select(Admission).order_by(Admission.id.desc())
    if state is not None:
        if state not in ADMISSION_STATES:
            raise Invalid(f"Unknown admission state '{state}'.",
                          fields={"state": [f"One of: {', '.join(ADMISSION_STATES)}."]})
        stmt = stmt.where(Admission.state == state)
    if active_only:
        stmt = stmt.where(Admission.state.in_(ACTIVE_ADMISSION_STATES))
    if ward_id is not None:
        stmt = stmt.where(Admission.ward_id == int(ward_id))
    if patient_id is not None:
        stmt = stmt.where(Admission.patient_id == int(patient_id))
    page, size = max(1, int(page)), min(max(1, int(size)), 200)
    return list(session.execute(stmt.offset((page - 1) * size).limit(size)).scalars())


def attach_instance(session: Session, admission_id: Any, instance_id: int, *, discharge: bool = False) -> Admission:
    """Remember the admission (or discharge) pathway instance of an admission."""
    admission = get_admission(session, admission_id)
    if discharge:
        admission.discharge_instance_id = instance_id
    else:
        admission.instance_id = instance_id
    session.flush()
    return admission


def attach_transfer_instance(session: Session, transfer_id: Any, instance_id: int) -> Transfer:
    """Remember the ward_transfer pathway instance of a transfer."""
    transfer = get_transfer(session, transfer_id)
    transfer.instance_id = instance_id
    session.flush()
    return transfer


def set_payer_class(session: Session, actor: Actor, admission_id: Any, payer_class: Any) -> Admission:
    """Record who pays (a finance payer class code, checked by finance). Locks the admission;
    409 `admission_closed` once discharged or cancelled. Audit "admission.payer"."""
    payer = _payer_class(payer_class)
    admission = _locked_admission(session, admission_id)
    if admission.state in ("discharged", "cancelled"):
        raise Conflict(f"Admission {admission.admission_no} is {admission.state}.", code="admission_closed")
    old, admission.payer_class = admission.payer_class, payer
    session.flush()
    record(session, actor, "admission.payer", "admission", admission.id, patient_id=admission.patient_id,
           detail={"old": old, "new": payer})
    return admission


def accept_admission(session: Session, actor: Actor, admission_id: Any) -> Admission:
    """The ward received the patient into the reserved bed: the bed is occupied and the
    admission admitted (see occupy_bed). Locks the admission, then the bed. 409
    `admission_state` unless reserved; 403 `out_of_scope` outside the actor's wards."""
    admission = _locked_admission(session, admission_id)
    if admission.state != "reserved" or admission.bed_id is None:
        raise Conflict(f"Admission {admission.admission_no} is {admission.state}; only a patient with a "
                       "reserved bed can be received.", code="admission_state", fields={"state": [admission.state]})
    check_ward_scope(actor, admission.ward_id)
    occupy_bed(session, actor, admission.bed_id)
    record(session, actor, "admission.accept", "admission", admission.id, patient_id=admission.patient_id,
           detail={"ward_id": admission.ward_id, "bed_id": admission.bed_id})
    return admission


def record_assessment(session: Session, actor: Actor, admission_id: Any, values: Any) -> AdmissionAssessment:
    """The nursing admission assessment, once per admission (409 `already_assessed`, backed by
    the unique admission_id). The patient must be admitted; ward scope applies. Locks the
    admission. Audit "admission.assessment"."""
    if not isinstance(values, dict) or not values:
        raise Invalid("The assessment is a set of recorded values.", fields={"assessment": ["Required."]})
    admission = _locked_admission(session, admission_id)
    if admission.state not in ("admitted", "discharging"):
        raise Conflict(f"Admission {admission.admission_no} is {admission.state}; assess an admitted patient.",
                       code="not_admitted", fields={"state": [admission.state]})
    check_ward_scope(actor, admission.ward_id)
    refused = Conflict(f"Admission {admission.admission_no} already has its assessment.", code="already_assessed")
    if session.execute(select(AdmissionAssessment.id).where(
            AdmissionAssessment.admission_id == admission.id)).first():
        raise refused
    row = AdmissionAssessment(admission_id=admission.id, values=values, recorded_by_id=actor.user_id,
                              recorded_at=utcnow())
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise refused from None
    record(session, actor, "admission.assessment", "admission", admission.id, patient_id=admission.patient_id,
           detail={"assessment_id": row.id})
    return row


def get_assessment(session: Session, admission_id: int) -> AdmissionAssessment | None:
    return session.execute(select(AdmissionAssessment).where(
        AdmissionAssessment.admission_id == admission_id)).scalar_one_or_none()


# --- Transfers -------------------------------------------------------------------------

def get_transfer(session: Session, transfer_id: Any) -> Transfer:
    return get_row(session, Transfer, transfer_id, "transfer")


def _locked_transfer(session: Session, transfer_id: Any) -> Transfer:
    return get_row(session, Transfer, transfer_id, "transfer", lock=True)


def list_transfers(session: Session, admission_id: int) -> list[Transfer]:
    return list(session.execute(select(Transfer).where(Transfer.admission_id == admission_id)
                                .order_by(Transfer.id)).scalars())


def _check_clinical_scope(actor: Actor, ward_id: int | None) -> None:
    """Doctors act for their patients on any ward; ward staff on their own wards."""
    if actor.has_role(*DOCTOR_ROLES) or ward_id is None:
        return
    check_ward_scope(actor, ward_id)


def _pending_transfer_conflict(admission: Admission) -> Conflict:
    return Conflict(f"Admission {admission.admission_no} already has a transfer waiting for a decision.",
                    code="transfer_pending")


def request_transfer(session: Session, actor: Actor, admission_id: Any, *, to_ward_id: Any,
                     reason: Any) -> Transfer:
    """Ask to move an admitted patient to another ward, or to another bed of the same ward.
    Locks the admission. 409 `orders_frozen` / `not_admitted` (check_orders_open, and only an
    admitted patient moves); 409 `transfer_pending` while one request waits (backed by a partial
    unique index); NotFound `ward_not_found`. Audit "transfer.request"."""
    text = _reason(reason, required=True)
    admission = _locked_admission(session, admission_id)
    check_orders_open(session, admission)
    if admission.state != "admitted":
        raise Conflict(f"Admission {admission.admission_no} is {admission.state}; only an admitted patient "
                       "is transferred.", code="not_admitted", fields={"state": [admission.state]})
    _check_clinical_scope(actor, admission.ward_id)
    ward = session.get(Ward, record_id(to_ward_id, "ward"))
    if ward is None or not ward.active:
        raise NotFound(f"No active ward with id {to_ward_id}.", code="ward_not_found")
    if session.execute(select(Transfer.id).where(Transfer.admission_id == admission.id,
                                                 Transfer.state == "requested")).first():
        raise _pending_transfer_conflict(admission)
    transfer = Transfer(admission_id=admission.id, from_bed_id=admission.bed_id, from_ward_id=admission.ward_id,
                        to_ward_id=ward.id, state="requested", reason=text, requested_by_id=actor.user_id,
                        requested_at=utcnow())
    try:
        with session.begin_nested():
            session.add(transfer)
            session.flush()
    except IntegrityError:
        raise _pending_transfer_conflict(admission) from None
    record(session, actor, "transfer.request", "transfer", transfer.id, patient_id=admission.patient_id,
           detail={"admission_id": admission.id, "from_ward_id": transfer.from_ward_id, "to_ward_id": ward.id})
    return transfer


def _decidable(transfer: Transfer) -> None:
    if transfer.state != "requested":
        raise Conflict(f"This transfer is {transfer.state} already.", code="transfer_state",
                       fields={"state": [transfer.state]})


def accept_transfer(session: Session, actor: Actor, transfer_id: Any, *, to_bed_id: Any) -> Transfer:
    """The receiving ward takes the patient into `to_bed_id` (free, of the transfer's ward).
    Locks the transfer, the admission, then both beds (lower id first). The old assignment
    ends (end_reason "transfer") and its bed goes to_clean; a new assignment starts occupied;
    the admission's ward and bed follow. 409 `bed_not_free`, `transfer_state`, `not_admitted`;
    Invalid `bed_not_in_ward`; 403 outside the receiving ward. Audit "transfer.accept"."""
    transfer = _locked_transfer(session, transfer_id)
    _decidable(transfer)
    admission = _locked_admission(session, transfer.admission_id)
    if admission.state != "admitted" or admission.bed_id is None:
        raise Conflict(f"Admission {admission.admission_no} is {admission.state}; the transfer cannot happen.",
                       code="not_admitted", fields={"state": [admission.state]})
    check_ward_scope(actor, transfer.to_ward_id)
    target_id = record_id(to_bed_id, "bed")
    if target_id == admission.bed_id:
        raise Invalid("The patient is in that bed already.", code="same_bed", fields={"bed_id": ["Same bed."]})
    beds = {b: _locked_bed(session, b) for b in sorted((admission.bed_id, target_id))}
    old_bed, new_bed = beds[admission.bed_id], beds[target_id]
    if new_bed.ward_id != transfer.to_ward_id:
        raise Invalid(f"Bed {new_bed.label} is not in the ward the patient is transferred to.",
                      code="bed_not_in_ward", fields={"bed_id": ["Not in the receiving ward."]})
    if new_bed.state != "free":
        raise _refuse(new_bed, "reserve", "free")
    if old_bed.state != "occupied":
        raise _refuse(old_bed, "vacate", "occupied")
    now = utcnow()
    old = _active_assignment(session, old_bed)
    _same_admission(admission, old)
    old.state, old.ended_at, old.end_reason = "ended", now, "transfer"
    old_bed.state = "to_clean"
    session.flush()
    new = BedAssignment(bed_id=new_bed.id, admission_id=admission.id, patient_id=admission.patient_id,
                        state="occupied", started_at=now, occupied_at=now, by_id=actor.user_id)
    try:
        with session.begin_nested():
            session.add(new)
            session.flush()
    except IntegrityError:
        raise Conflict(f"Bed {new_bed.label} is already reserved or occupied.", code="bed_not_free",
                       fields={"state": ["reserved"]}) from None
    new_bed.state = "occupied"
    admission.ward_id, admission.bed_id = new_bed.ward_id, new_bed.id
    transfer.state, transfer.to_bed_id = "accepted", new_bed.id
    transfer.decided_by_id, transfer.decided_at = actor.user_id, now
    session.flush()
    detail = {"admission_id": admission.id, "transfer_id": transfer.id}
    record(session, actor, "bed.vacate", "bed", old_bed.id, patient_id=admission.patient_id,
           detail={**detail, "ward_id": old_bed.ward_id})
    record(session, actor, "bed.occupy", "bed", new_bed.id, patient_id=admission.patient_id,
           detail={**detail, "ward_id": new_bed.ward_id})
    record(session, actor, "transfer.accept", "transfer", transfer.id, patient_id=admission.patient_id,
           detail={"admission_id": admission.id, "from_bed_id": old_bed.id, "to_bed_id": new_bed.id,
                   "to_ward_id": new_bed.ward_id})
    return transfer


def reject_transfer(session: Session, actor: Actor, transfer_id: Any, reason: Any) -> Transfer:
    """The receiving ward refuses the transfer, with a reason. Locks the transfer. 409
    `transfer_state` unless requested; 403 outside the receiving ward. Audit "transfer.reject"."""
    text = _reason(reason, required=True)
    transfer = _locked_transfer(session, transfer_id)
    _decidable(transfer)
    check_ward_scope(actor, transfer.to_ward_id)
    return _decide(session, actor, transfer, "rejected", text, "transfer.reject")


def cancel_transfer(session: Session, actor: Actor, transfer_id: Any, reason: Any = None) -> Transfer:
    """The requesting side withdraws a waiting transfer. Locks the transfer. 409
    `transfer_state` unless requested; ward staff of the patient's current ward (or a doctor).
    Audit "transfer.cancel"."""
    text = _reason(reason, required=False)
    transfer = _locked_transfer(session, transfer_id)
    _decidable(transfer)
    _check_clinical_scope(actor, transfer.from_ward_id)
    transfer = _decide(session, actor, transfer, "cancelled", text, "transfer.cancel")
    # The receiving ward's waiting task ends too (the inpatient journey cancels it).
    events.publish(session, actor, "wards.transfer_cancelled", transfer_id=transfer.id,
                   instance_id=transfer.instance_id)
    return transfer


def _decide(session: Session, actor: Actor, transfer: Transfer, state: str, note: str | None,
            action: str) -> Transfer:
    transfer.state, transfer.decision_note = state, note
    transfer.decided_by_id, transfer.decided_at = actor.user_id, utcnow()
    session.flush()
    admission = session.get(Admission, transfer.admission_id)
    record(session, actor, action, "transfer", transfer.id, patient_id=admission.patient_id,
           detail={"admission_id": admission.id, "to_ward_id": transfer.to_ward_id, "note": note})
    return transfer


# --- Doctor orders ---------------------------------------------------------------------

def get_order(session: Session, order_id: Any) -> WardOrder:
    return get_row(session, WardOrder, order_id, "order")


def list_orders(session: Session, admission_id: int) -> list[WardOrder]:
    return list(session.execute(select(WardOrder).where(WardOrder.admission_id == admission_id)
                                .order_by(WardOrder.id)).scalars())


def place_order(session: Session, actor: Actor, admission_id: Any, *, kind: Any, code: Any = None,
                description: Any, details: Any = None, charge_ref: Any = None) -> WardOrder:
    """Record a doctor's order (diet, procedure, lab). Locks the admission (the nursing gate
    locks it too, so no order slips in after the gate); check_orders_open refuses. Audit
    "order.place"."""
    if kind not in ORDER_KINDS:
        raise Invalid(f"kind must be one of {', '.join(ORDER_KINDS)}.",
                      fields={"kind": [f"One of: {', '.join(ORDER_KINDS)}."]})
    text = _text(description, "description", MAX_DESCRIPTION, required=True)
    code = _text(code, "code", MAX_CODE)
    charge_ref = _text(charge_ref, "charge_ref", 120)
    if details is not None and not isinstance(details, dict):
        raise Invalid("details must be an object.", fields={"details": ["Must be an object."]})
    admission = _locked_admission(session, admission_id)
    check_orders_open(session, admission)
    order = WardOrder(admission_id=admission.id, kind=kind, code=code, description=text, details=details,
                      state="active", ordered_by_id=actor.user_id, ordered_at=utcnow(), charge_ref=charge_ref)
    session.add(order)
    session.flush()
    record(session, actor, "order.place", "ward_order", order.id, patient_id=admission.patient_id,
           detail={"admission_id": admission.id, "kind": kind, "code": code})
    return order


def stop_order(session: Session, actor: Actor, order_id: Any, reason: Any) -> WardOrder:
    """Stop an active order, with a reason. Locks the admission, then the order. 409
    `order_state` unless active; check_orders_open applies. Audit "order.stop"."""
    text = _reason(reason, required=True)
    order = get_order(session, order_id)
    admission = _locked_admission(session, order.admission_id)
    order = session.execute(select(WardOrder).where(WardOrder.id == order.id).with_for_update()
                            .execution_options(populate_existing=True)).scalar_one()
    check_orders_open(session, admission)
    if order.state != "active":
        raise Conflict(f"This order is {order.state} already.", code="order_state", fields={"state": [order.state]})
    order.state, order.stop_reason = "stopped", text
    order.stopped_by_id, order.stopped_at = actor.user_id, utcnow()
    session.flush()
    record(session, actor, "order.stop", "ward_order", order.id, patient_id=admission.patient_id,
           detail={"admission_id": admission.id, "reason": text})
    return order


# --- Discharge -------------------------------------------------------------------------

def get_discharge_summary(session: Session, admission_id: int) -> DischargeSummary | None:
    return session.execute(select(DischargeSummary).where(
        DischargeSummary.admission_id == admission_id)).scalar_one_or_none()


def _summary_fields(data: Any) -> dict:
    """Check a discharge summary; Invalid naming every field at fault."""
    if not isinstance(data, dict):
        raise Invalid("The discharge summary is missing.", fields={"summary": ["Required."]})
    errors: dict[str, list[str]] = {}

    def text(value, name, max_len, required):
        try:
            return _text(value, name, max_len, required=required)
        except Invalid as err:
            errors.update(err.fields)
            return None

    diagnoses = []
    raw = data.get("diagnoses")
    if not isinstance(raw, list) or not raw:
        errors["diagnoses"] = ["At least one diagnosis."]
    else:
        for i, row in enumerate(raw):
            row = {"text": row} if isinstance(row, str) else row
            if not isinstance(row, dict):
                errors[f"diagnoses.{i}"] = ["A diagnosis."]
                continue
            entry = {"text": text(row.get("text"), f"diagnoses.{i}.text", 200, True)}
            code = text(row.get("code"), f"diagnoses.{i}.code", 10, False)
            if code:
                entry["code"] = code.upper()
            diagnoses.append(entry)
    procedures = []
    raw = data.get("procedures") or []
    if not isinstance(raw, list):
        errors["procedures"] = ["A list of procedures."]
    else:
        for i, row in enumerate(raw):
            value = row.get("text") if isinstance(row, dict) else row
            procedures.append(text(value, f"procedures.{i}", 200, True))
    condition = data.get("condition")
    if condition not in DISCHARGE_CONDITIONS:
        errors["condition"] = [f"One of: {', '.join(DISCHARGE_CONDITIONS)}."]
    medicines = []
    raw = data.get("discharge_medicines") or []
    if not isinstance(raw, list):
        errors["discharge_medicines"] = ["A list of medicines."]
    else:
        for i, row in enumerate(raw):
            if not isinstance(row, dict):
                errors[f"discharge_medicines.{i}"] = ["A medicine with name, dose and frequency."]
                continue
            days = row.get("days")
            if days is not None and (isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365):
                errors[f"discharge_medicines.{i}.days"] = ["A whole number of days from 1 to 365."]
            medicines.append({"name": text(row.get("name"), f"discharge_medicines.{i}.name", 120, True),
                              "dose": text(row.get("dose"), f"discharge_medicines.{i}.dose", 60, True),
                              "frequency": text(row.get("frequency"), f"discharge_medicines.{i}.frequency", 40, True),
                              "days": days})
    follow_up = text(data.get("follow_up"), "follow_up", 500, False)
    if errors:
        raise Invalid("The discharge summary is incomplete: " + ", ".join(sorted(errors)) + ".", fields=errors)
    return {"diagnoses": diagnoses, "procedures": procedures, "condition": condition,
            "discharge_medicines": medicines, "follow_up": follow_up}


def sign_discharge_summary(session: Session, actor: Actor, admission_id: Any, data: Any) -> DischargeSummary:
    """The doctor signs the discharge summary: the clinical discharge. Only a doctor (or the
    system on a doctor's completed task) signs: 403 `doctor_only`. One per admission, never
    edited (409 `already_signed`, backed by the unique admission_id); the patient must be
    admitted (409 `not_admitted`). Locks the admission; sets it discharging with
    clinical_discharge_at and discharge_condition. Audit "discharge.sign"."""
    if not (actor.is_system or actor.has_role(*DOCTOR_ROLES)):
        raise Forbidden("Only a doctor signs a discharge summary.", code="doctor_only")
    admission = _locked_admission(session, admission_id)
    signed = Conflict(f"The discharge summary of admission {admission.admission_no} is signed already.",
                      code="already_signed")
    if get_discharge_summary(session, admission.id) is not None:
        raise signed
    if admission.state != "admitted":
        raise Conflict(f"Admission {admission.admission_no} is {admission.state}; only an admitted patient "
                       "is discharged.", code="not_admitted", fields={"state": [admission.state]})
    fields = _summary_fields(data)
    now = utcnow()
    summary = DischargeSummary(admission_id=admission.id, signed_by_id=actor.user_id, signed_at=now, **fields)
    try:
        with session.begin_nested():
            session.add(summary)
            session.flush()
    except IntegrityError:
        raise signed from None
    admission.state, admission.clinical_discharge_at = "discharging", now
    admission.discharge_condition = fields["condition"]
    session.flush()
    record(session, actor, "discharge.sign", "admission", admission.id, patient_id=admission.patient_id,
           detail={"summary_id": summary.id, "condition": fields["condition"]})
    return summary


def pass_nursing_gate(session: Session, actor: Actor, admission_id: Any, blockers: Any) -> dict:
    """The ward's last check before the patient leaves. `blockers` come from other departments
    ({"kind", "text"} each: unreturned pharmacy issues, lab samples pending). Any blocker: ok
    False and nothing changes. None: nursing_cleared_at is set and orders are frozen. Locks the
    admission; 409 `not_discharging` unless the summary is signed; ward scope. Passing twice
    is harmless. Audit "discharge.nursing_gate"."""
    if not isinstance(blockers, list) or not all(
            isinstance(b, dict) and isinstance(b.get("kind"), str) and isinstance(b.get("text"), str)
            for b in blockers):
        raise Invalid("blockers is a list of {kind, text}.", fields={"blockers": ["A list of {kind, text}."]})
    admission = _locked_admission(session, admission_id)
    if admission.state != "discharging":
        raise Conflict(f"Admission {admission.admission_no} is {admission.state}; the nursing gate follows the "
                       "signed discharge summary.", code="not_discharging", fields={"state": [admission.state]})
    check_ward_scope(actor, admission.ward_id)
    if blockers:
        return {"ok": False, "blockers": [{"kind": b["kind"], "text": b["text"]} for b in blockers]}
    if admission.nursing_cleared_at is None:
        admission.nursing_cleared_at = utcnow()
        session.flush()
        record(session, actor, "discharge.nursing_gate", "admission", admission.id,
               patient_id=admission.patient_id, detail={"ward_id": admission.ward_id})
    return {"ok": True, "blockers": []}


def discharge_patient(session: Session, actor: Actor, admission_id: Any) -> Admission:
    """The patient leaves: the bed is vacated (to_clean), the admission discharged. Needs the
    nursing gate (409 `nursing_gate_pending`). Locks the admission, then the bed. The admission
    keeps its last ward and bed. Audit "admission.discharge"."""
    admission = _locked_admission(session, admission_id)
    if admission.state != "discharging":
        raise Conflict(f"Admission {admission.admission_no} is {admission.state}.", code="not_discharging",
                       fields={"state": [admission.state]})
    if admission.nursing_cleared_at is None:
        raise Conflict("The ward has not cleared the patient for discharge yet.", code="nursing_gate_pending")
    check_ward_scope(actor, admission.ward_id)
    if admission.bed_id is not None:
        bed = _locked_bed(session, admission.bed_id)
        assignment = _active_assignment(session, bed)
        if assignment is not None and assignment.admission_id == admission.id and bed.state == "occupied":
            _end(session, actor, bed, "to_clean", "bed.vacate", "discharge")
    admission.state, admission.discharged_at = "discharged", utcnow()
    session.flush()
    record(session, actor, "admission.discharge", "admission", admission.id, patient_id=admission.patient_id,
           detail={"ward_id": admission.ward_id, "bed_id": admission.bed_id,
                   "condition": admission.discharge_condition})
    return admission


# --- Bed-day charges -------------------------------------------------------------------

def active_admission_ids(session: Session) -> list[int]:
    """Admissions accruing bed charges (admitted or discharging, charges started)."""
    return list(session.execute(select(Admission.id).where(
        Admission.state.in_(("admitted", "discharging")), Admission.charge_from.is_not(None))
        .order_by(Admission.id)).scalars())


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def bed_day_lines(session: Session, admission_id: Any, *, until: datetime, final: bool) -> list[dict]:
    """The bed-day and nursing-day charge lines of a stay, for finance.post_charges.

    The stay is cut in 12-hour slots from admission.charge_from; each slot is priced at the
    ward type of the bed held at the slot's start. Slots are grouped per 24-hour period k and
    ward type (source_ref "bed_day:<admission>:<k>:<type>", quantity = half-day slots) with one
    nursing line per started period ("nursing_day:<admission>:<k>", the type at the period's
    start). Without `final` only periods ended by `until` count (the nightly accrual); with
    `final` the last partial period is rounded up to a half day or a whole day by setting
    "wards.bed_day_rounding". A stay ends at `until` or at discharged_at, whichever is first.
    Pure and deterministic: no writes, the same inputs give the same refs."""
    admission = get_admission(session, admission_id)
    if admission.charge_from is None:
        return []
    start = admission.charge_from
    end = _aware(until)
    if admission.discharged_at is not None:
        end = min(end, admission.discharged_at)
    elapsed = end - start
    if elapsed < timedelta(0):
        return []
    if final:
        if settings.get(session, BED_DAY_ROUNDING) == "full":
            slots = 2 * max(1, math.ceil(elapsed / DAY))
        else:
            slots = max(1, math.ceil(elapsed / HALF_DAY))
    else:
        slots = 2 * (elapsed // DAY)
    if slots == 0:
        return []
    rows = session.execute(
        select(BedAssignment, Ward).join(Bed, Bed.id == BedAssignment.bed_id).join(Ward, Ward.id == Bed.ward_id)
        .where(BedAssignment.admission_id == admission.id).order_by(BedAssignment.started_at, BedAssignment.id)).all()
    fallback = session.get(Ward, admission.ward_id) if admission.ward_id else None

    def ward_at(moment: datetime) -> Ward | None:
        held = [w for a, w in rows if a.started_at <= moment and (a.ended_at is None or moment < a.ended_at)]
        if held:
            return held[-1]
        before = [w for a, w in rows if a.started_at <= moment]
        if before:
            return before[-1]
        return rows[0][1] if rows else fallback

    lines: list[dict] = []
    periods: dict[int, list[tuple[str, Ward]]] = {}
    for i in range(slots):
        ward = ward_at(start + HALF_DAY * i)
        if ward is None:
            raise Conflict(f"Admission {admission.admission_no} has no ward to price its bed days.",
                           code="no_ward")
        periods.setdefault(i // 2, []).append((ward.ward_type, ward))
    for k in sorted(periods):
        tally: dict[str, list[Ward]] = {}
        for ward_type, ward in periods[k]:
            tally.setdefault(ward_type, []).append(ward)
        for ward_type, wards in tally.items():
            lines.append({"source_ref": f"bed_day:{admission.id}:{k}:{ward_type}", "kind": "bed",
                          "tariff_code": f"BED-{ward_type.upper()}",
                          "description": f"Bed-day {k + 1}, {wards[0].name} ({ward_type})",
                          "quantity": len(wards), "half_day": True})
        first_type, first_ward = periods[k][0]
        lines.append({"source_ref": f"nursing_day:{admission.id}:{k}", "kind": "nursing",
                      "tariff_code": f"NURSING-{first_type.upper()}",
                      "description": f"Nursing day {k + 1}, {first_ward.name} ({first_type})", "quantity": 1})
    return lines


# --- Reads for pages and the API ---------------------------------------------------------

@dataclass
class AdmissionView:
    admission: Admission
    patient: Patient
    ward: Ward | None
    bed: Bed | None
    transfers: list[Transfer]
    orders: list[WardOrder]
    assessment: AdmissionAssessment | None
    summary: DischargeSummary | None
    days: int | None
    ward_names: dict[int, str]
    bed_labels: dict[int, str]


def days_admitted(admission: Admission, now: datetime | None = None) -> int | None:
    """Whole days since the patient was admitted (to the discharge, once discharged)."""
    if admission.admitted_at is None:
        return None
    end = admission.discharged_at or now or utcnow()
    return max(0, (end - admission.admitted_at).days)


def admission_detail(session: Session, actor: Actor, admission_id: Any) -> AdmissionView:
    """Everything the admission page shows. Reading a patient's stay is audited
    ("admission.read")."""
    admission = get_admission(session, admission_id)
    transfers = list_transfers(session, admission.id)
    ward_ids = {admission.ward_id} | {t.from_ward_id for t in transfers} | {t.to_ward_id for t in transfers}
    bed_ids = {admission.bed_id} | {t.from_bed_id for t in transfers} | {t.to_bed_id for t in transfers}
    ward_ids.discard(None)
    bed_ids.discard(None)
    ward_names = {w.id: w.name for w in session.execute(select(Ward).where(Ward.id.in_(ward_ids))).scalars()} \
        if ward_ids else {}
    bed_labels = {b.id: b.label for b in session.execute(select(Bed).where(Bed.id.in_(bed_ids))).scalars()} \
        if bed_ids else {}
    view = AdmissionView(
        admission=admission, patient=session.get(Patient, admission.patient_id),
        ward=session.get(Ward, admission.ward_id) if admission.ward_id else None,
        bed=session.get(Bed, admission.bed_id) if admission.bed_id else None,
        transfers=transfers, orders=list_orders(session, admission.id),
        assessment=get_assessment(session, admission.id), summary=get_discharge_summary(session, admission.id),
        days=days_admitted(admission), ward_names=ward_names, bed_labels=bed_labels)
    record(session, actor, "admission.read", "admission", admission.id, patient_id=admission.patient_id)
    return view


def admission_rows(session: Session, admissions: list[Admission]) -> list[tuple[Admission, Patient, Ward | None, Bed | None]]:
    """Each admission with its patient, ward and bed, for lists (three queries)."""
    if not admissions:
        return []
    patients = {p.id: p for p in session.execute(
        select(Patient).where(Patient.id.in_({a.patient_id for a in admissions}))).scalars()}
    ward_ids = {a.ward_id for a in admissions if a.ward_id}
    bed_ids = {a.bed_id for a in admissions if a.bed_id}
    wards = {w.id: w for w in session.execute(select(Ward).where(Ward.id.in_(ward_ids))).scalars()} if ward_ids else {}
    beds = {b.id: b for b in session.execute(select(Bed).where(Bed.id.in_(bed_ids))).scalars()} if bed_ids else {}
    return [(a, patients[a.patient_id], wards.get(a.ward_id), beds.get(a.bed_id)) for a in admissions]
