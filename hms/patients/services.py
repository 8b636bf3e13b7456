"""Master patient index services: registration with MRN and duplicate checks, search,
demographic edits with history, structured allergies and the patient banner.

The only code that writes the patients tables. Functions flush, never commit. Every write
and every read of a patient record is audited; audit detail holds ids and field names
only, never names, CNICs or other values.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, case, delete, func, or_, select, union
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hms import audit
from hms.audit import Actor
from hms.db import config_of, next_number
from hms.errors import Conflict, Invalid, NotFound, record_id
from hms.patients import validation as v
from hms.patients.models import Allergy, Patient, PatientHistory, PatientNameToken

MRN_COUNTER = "mrn"
# The demographic fields whose edits are kept in PatientHistory.
HISTORY_FIELDS = ("name", "relation", "guardian_name", "sex", "date_of_birth", "dob_estimated",
                  "cnic", "form_b", "mobile", "address", "city")
MAX_CANDIDATES = 10
# Longer queries are cut: nobody types more, and each word costs an index lookup.
MAX_QUERY_CHARS = 100
MAX_QUERY_WORDS = 5


def local_today(session: Session) -> date:
    """Today's date where the hospital is (HMS_TIMEZONE), which is what ages count from."""
    return datetime.now(config_of(session).tz).date()


def age_text(patient: Patient, today: date) -> str:
    """"34 y", "7 m", "12 d"; "~34 y" when only an age was given at registration."""
    return v.age_text(patient.date_of_birth, patient.dob_estimated, today)


# --- registration ----------------------------------------------------------------------

def register_patient(session: Session, actor: Actor, data: dict, *,
                     confirm_duplicate: bool = False) -> Patient:
    """Register a patient (and the allergies in `data["allergies"]`); return it, flushed.

    Locks the MRN counter row until the transaction ends. That serialises registrations,
    so the duplicate checks below see every registration committed before ours.
    Raises Invalid naming every bad field; Conflict `duplicate_cnic` / `duplicate_form_b`
    naming the MRN that already holds the identity number; Conflict `possible_duplicate`
    listing patients with the same name, date of birth and mobile, unless
    `confirm_duplicate`. Writes patient, name tokens, allergies and audit "patient.register".
    """
    clean, allergies = _clean_registration(data, local_today(session))
    # A savepoint, so a refusal also takes back the MRN number when the caller carries on
    # with the transaction instead of rolling it back.
    with session.begin_nested():
        number = next_number(session, MRN_COUNTER)
        _refuse_identity_duplicate(session, clean["cnic"], clean["form_b"])
        candidates = _possible_duplicates(session, clean)
        if candidates and not confirm_duplicate:
            raise _possible_duplicate_conflict(candidates)
        patient = Patient(mrn=config_of(session).mrn_format.format(n=number),
                          created_by_id=actor.user_id, **clean)
        _flush_guarded(session, patient, clean["cnic"], clean["form_b"], lambda: session.add(patient))
    _set_name_tokens(session, patient)
    for allergy in allergies:
        session.add(Allergy(patient_id=patient.id, recorded_by_id=actor.user_id, **allergy))
    session.flush()
    detail: dict[str, Any] = {"allergies": len(allergies)}
    if candidates:
        detail["possible_duplicate_of"] = [c.id for c in candidates]
    audit.record(session, actor, "patient.register", "patient", patient.id,
                 patient_id=patient.id, detail=detail)
    return patient


def _clean_registration(data: Any, today: date) -> tuple[dict, list[dict]]:
    if not isinstance(data, dict):
        raise Invalid("Send the patient as an object of fields.")
    errors = v.ErrorCollector()
    v.refuse_unknown_fields(data, v.DEMOGRAPHIC_FIELDS + ("allergies",), errors)
    clean = v.clean_demographics(data, today, errors=errors)
    allergies = v.clean_allergies(data.get("allergies"), errors)
    errors.raise_if_any()
    return clean, allergies


def _refuse_identity_duplicate(session: Session, cnic: str | None, form_b: str | None,
                               exclude_id: int | None = None) -> None:
    """Conflict when another patient holds this CNIC or Form-B number.

    Both columns are searched for both numbers: a Form-B number becomes the same
    person's CNIC at 18, so a match across the columns is the same person.
    """
    numbers = {n for n in (cnic, form_b) if n}
    if not numbers:
        return
    stmt = select(Patient.id, Patient.mrn, Patient.cnic, Patient.form_b).where(
        or_(Patient.cnic.in_(numbers), Patient.form_b.in_(numbers)))
    if exclude_id is not None:
        stmt = stmt.where(Patient.id != exclude_id)
    existing = session.execute(stmt.order_by(Patient.id).limit(1)).first()
    if existing is None:
        return
    if cnic and cnic in (existing.cnic, existing.form_b):
        field, code, what = "cnic", "duplicate_cnic", "CNIC"
    else:
        field, code, what = "form_b", "duplicate_form_b", "Form-B number"
    message = f"A patient with this {what} is already registered: {existing.mrn}."
    raise Conflict(message, code=code,
                   fields={field: [message], "existing": [{"id": existing.id, "mrn": existing.mrn}]})


def _possible_duplicates(session: Session, clean: dict) -> list[Patient]:
    stmt = select(Patient).where(Patient.name_search == clean["name_search"],
                                 Patient.date_of_birth == clean["date_of_birth"])
    # Two records with the same name and birth date and no phone at all are as suspicious
    # as two with the same phone.
    stmt = stmt.where(Patient.mobile == clean["mobile"] if clean["mobile"] else Patient.mobile.is_(None))
    return list(session.scalars(stmt.order_by(Patient.id).limit(MAX_CANDIDATES)))


def _possible_duplicate_conflict(candidates: list[Patient]) -> Conflict:
    return Conflict(
        "A patient with the same name, date of birth and mobile number is already registered. "
        "Open that record, or confirm that this is a different person.",
        code="possible_duplicate",
        fields={"candidates": [{"id": p.id, "mrn": p.mrn, "name": p.name,
                                "date_of_birth": p.date_of_birth.isoformat() if p.date_of_birth else None}
                               for p in candidates]})


def _flush_guarded(session: Session, patient: Patient, cnic: str | None, form_b: str | None,
                   change) -> None:
    """Apply `change` and flush inside a savepoint.

    The checks above run before the write, but an edit (which takes no MRN lock) can race
    another transaction for the same CNIC. The unique constraints then refuse the second
    write; we turn that into the same Conflict naming the MRN instead of a bare 409.
    """
    try:
        with session.begin_nested():
            change()
            session.flush()
    except IntegrityError:
        _refuse_identity_duplicate(session, cnic, form_b, exclude_id=patient.id)
        raise


def _set_name_tokens(session: Session, patient: Patient) -> None:
    session.execute(delete(PatientNameToken).where(PatientNameToken.patient_id == patient.id))
    session.add_all(PatientNameToken(patient_id=patient.id, token=t[:120]) for t in v.name_tokens(patient.name))
    session.flush()


# --- reads -----------------------------------------------------------------------------

def get_patient(session: Session, actor: Actor, patient_id: int, *, audit_read: bool = True) -> Patient:
    """The patient with this id, or NotFound. Takes no locks. Records audit "patient.read"
    unless `audit_read` is False (callers that already audit the surrounding action)."""
    patient = session.get(Patient, _as_id(patient_id))
    if patient is None:
        raise NotFound(f"No patient with id {patient_id}.", code="patient_not_found")
    if audit_read:
        audit.record(session, actor, "patient.read", "patient", patient.id, patient_id=patient.id)
    return patient


def _as_id(patient_id: Any) -> int:
    return record_id(patient_id, "patient", "patient_not_found")


def search_patients(session: Session, actor: Actor, q: str | None, page: int = 1,
                    size: int = 25) -> tuple[list[Patient], int]:
    """One page of patients matching `q`, and the total number of matches. Reads only.

    `q` matches an MRN exactly (any case; bare digits are read as the MRN number), a
    CNIC or Form-B number and a mobile number in any common format, or the start of the
    words of a name ("ahm kh" finds "Ahmed Khan"). An empty `q` lists the newest
    registrations first.
    """
    q = (q or "").strip()[:MAX_QUERY_CHARS]
    stmt = select(Patient)
    if q:
        stmt = stmt.where(_match(session, q)).order_by(Patient.name_search, Patient.id)
    else:
        stmt = stmt.order_by(Patient.id.desc())
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    items = list(session.scalars(stmt.limit(size).offset((max(page, 1) - 1) * size)))
    return items, total


def _match(session: Session, q: str):
    """`Patient.id IN (<union of id lookups>)`: each branch is one index lookup, where an
    OR of the conditions would make PostgreSQL scan the whole patient table."""
    lookups = [select(Patient.id).where(Patient.mrn.in_(sorted({q, q.upper(), q.lower()})))]
    if q.isdigit() and len(q) < 10:
        lookups.append(select(Patient.id).where(Patient.mrn == config_of(session).mrn_format.format(n=int(q))))
    cnic = _quietly(v.normalise_cnic, q)
    if cnic:
        lookups.append(select(Patient.id).where(or_(Patient.cnic == cnic, Patient.form_b == cnic)))
    mobile = _quietly(v.normalise_mobile, q)
    if mobile:
        lookups.append(select(Patient.id).where(Patient.mobile == mobile))
    if any(ch.isalpha() for ch in q):
        lookups.append(_name_words_match(session, v.name_tokens(q)))
    return Patient.id.in_(union(*lookups))


def _quietly(normalise, value: str) -> str | None:
    try:
        return normalise(value)
    except v.FieldError:
        return None


def _name_words_match(session: Session, words: set[str]):
    """Ids of patients where every word of the query starts some word of the name.

    The longest word (usually the most selective) drives an index range scan on the
    token table; each other word narrows it with another indexed lookup.
    """
    dialect = session.get_bind().dialect.name
    driver, *others = sorted(words, key=lambda w: (-len(w), w))[:MAX_QUERY_WORDS]
    stmt = select(PatientNameToken.patient_id).where(_starts_with(PatientNameToken.token, driver, dialect))
    for word in others:
        stmt = stmt.where(PatientNameToken.patient_id.in_(
            select(PatientNameToken.patient_id).where(_starts_with(PatientNameToken.token, word, dialect))))
    return stmt


def _starts_with(column, prefix: str, dialect: str):
    if dialect == "sqlite" and ord(prefix[-1]) < 0x10FFFF:
        # SQLite never uses an index for LIKE on a BINARY-collated column; a half-open
        # range does, and in code-point order it holds exactly the strings with this prefix.
        return and_(column >= prefix, column < prefix[:-1] + chr(ord(prefix[-1]) + 1))
    escaped = prefix.replace("/", "//").replace("%", "/%").replace("_", "/_")
    # A literal pattern (not `:p || '%'`) lets PostgreSQL plan it as a range scan on the
    # text_pattern_ops index.
    return column.like(escaped + "%", escape="/")


def list_allergies(session: Session, patient_id: int) -> list[Allergy]:
    """The patient's active allergies, severe first. Reads only; not audited by itself."""
    rank = case({"severe": 0, "moderate": 1, "mild": 2}, value=Allergy.severity)
    return list(session.scalars(
        select(Allergy).where(Allergy.patient_id == _as_id(patient_id), Allergy.active.is_(True))
        .order_by(rank, Allergy.substance_search, Allergy.id)))


def list_history(session: Session, patient_id: int) -> list[dict]:
    """Demographic edits of a patient, newest first: when, who, version and [old, new] per field."""
    rows = session.scalars(select(PatientHistory).where(PatientHistory.patient_id == _as_id(patient_id))
                           .order_by(PatientHistory.id.desc()))
    return [{"changed_at": h.changed_at, "changed_by": h.changed_by_name, "version": h.version,
             "fields": sorted(h.changes), "changes": h.changes} for h in rows]


def patient_banner(session: Session, patient_id: int) -> dict:
    """What a task page shows above any clinical form: who the patient is and what they
    are allergic to. Reads only; the caller audits the surrounding read."""
    patient = session.get(Patient, _as_id(patient_id))
    if patient is None:
        raise NotFound(f"No patient with id {patient_id}.", code="patient_not_found")
    return {
        "id": patient.id,
        "mrn": patient.mrn,
        "name": patient.name,
        "age": age_text(patient, local_today(session)),
        "sex": patient.sex,
        "allergies": [{"substance": a.substance, "reaction": a.reaction, "severity": a.severity}
                      for a in list_allergies(session, patient.id)],
    }


# --- edits -----------------------------------------------------------------------------

def update_patient(session: Session, actor: Actor, patient_id: int, changes: dict, *,
                   expected_version: int | None = None) -> Patient:
    """Change demographic fields; return the patient.

    Locks the patient row (FOR UPDATE) so edits of one patient run one after another;
    with `expected_version`, refuses with Conflict `stale_version` when someone saved
    since the caller read the record. Validates the record as it would be after the edit
    (every bad field at once) and refuses a CNIC / Form-B held by another patient.
    Writes the patient (version + 1), a PatientHistory row {field: [old, new]} and audit
    "patient.update" naming the changed fields. An edit that changes nothing writes nothing.
    """
    patient = _locked_patient(session, patient_id)
    if expected_version is not None and expected_version != patient.version:
        raise Conflict("Someone else changed this patient meanwhile; reload the record and try again.",
                       code="stale_version", fields={"version": [f"Current version is {patient.version}."]})
    today = local_today(session)
    clean = _clean_changes(patient, changes, today)
    diff = {f: [_jsonable(getattr(patient, f)), _jsonable(clean[f])]
            for f in HISTORY_FIELDS if getattr(patient, f) != clean[f]}
    if not diff:
        return patient
    new_cnic = clean["cnic"] if "cnic" in diff else None
    new_form_b = clean["form_b"] if "form_b" in diff else None
    _refuse_identity_duplicate(session, new_cnic, new_form_b, exclude_id=patient.id)
    _flush_guarded(session, patient, new_cnic, new_form_b, lambda: _apply(patient, clean, diff))
    if "name" in diff:
        _set_name_tokens(session, patient)
    session.add(PatientHistory(patient_id=patient.id, changed_by_id=actor.user_id,
                               changed_by_name=actor.username, version=patient.version, changes=diff))
    session.flush()
    audit.record(session, actor, "patient.update", "patient", patient.id, patient_id=patient.id,
                 detail={"fields": sorted(diff), "version": patient.version})
    return patient


def _locked_patient(session: Session, patient_id: Any) -> Patient:
    patient = session.execute(
        select(Patient).where(Patient.id == _as_id(patient_id)).with_for_update()
        .execution_options(populate_existing=True)).scalar_one_or_none()
    if patient is None:
        raise NotFound(f"No patient with id {patient_id}.", code="patient_not_found")
    return patient


def _clean_changes(patient: Patient, changes: Any, today: date) -> dict:
    """Validate the patient as it would be after `changes`; return every field's new value."""
    if not isinstance(changes, dict):
        raise Invalid("Send the changes as an object of fields.")
    errors = v.ErrorCollector()
    v.refuse_unknown_fields(changes, v.DEMOGRAPHIC_FIELDS, errors)
    merged = {f: getattr(patient, f) for f in v.DEMOGRAPHIC_FIELDS if f != "age_years"}
    merged.update({k: val for k, val in changes.items() if k in v.DEMOGRAPHIC_FIELDS})
    birth_changed = "date_of_birth" in changes or "age_years" in changes
    if birth_changed:
        merged["date_of_birth"] = changes.get("date_of_birth")
        merged["age_years"] = changes.get("age_years")
    clean = v.clean_demographics(merged, today, check_form_b_age=False, errors=errors)
    if not errors.has("form_b") and clean["form_b"] != patient.form_b:
        v.check_form_b_is_for_a_child(clean, today, errors)
    errors.raise_if_any()
    if not birth_changed or _same_estimated_age(patient, clean, today):
        # Re-stating the same estimated age on another day must not move the birth date.
        clean["date_of_birth"], clean["dob_estimated"] = patient.date_of_birth, patient.dob_estimated
    return clean


def _same_estimated_age(patient: Patient, clean: dict, today: date) -> bool:
    return bool(clean["dob_estimated"] and patient.dob_estimated and patient.date_of_birth
                and v.age_years_on(patient.date_of_birth, today) == v.age_years_on(clean["date_of_birth"], today))


def _apply(patient: Patient, clean: dict, diff: dict) -> None:
    for field in diff:
        setattr(patient, field, clean[field])
    patient.name_search = clean["name_search"]
    patient.version += 1


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


# --- allergies -------------------------------------------------------------------------

def add_allergy(session: Session, actor: Actor, patient_id: int, data: dict) -> Allergy:
    """Record an allergy {substance, reaction, severity} for a patient; return it.

    Locks the patient row, so two people recording the same substance at once cannot
    both succeed; an active allergy to the same substance is refused (Conflict
    `duplicate_allergy`). Writes the allergy and audit "patient.allergy_add".
    """
    patient = _locked_patient(session, patient_id)
    errors = v.ErrorCollector()
    clean = v.clean_allergy(data, errors)
    errors.raise_if_any()
    existing = session.scalar(select(Allergy.id).where(
        Allergy.patient_id == patient.id, Allergy.active.is_(True),
        Allergy.substance_search == clean["substance_search"]))
    if existing is not None:
        message = "This allergy is already recorded for the patient."
        raise Conflict(message, code="duplicate_allergy", fields={"substance": [message]})
    allergy = Allergy(patient_id=patient.id, recorded_by_id=actor.user_id, **clean)
    session.add(allergy)
    session.flush()
    audit.record(session, actor, "patient.allergy_add", "patient", patient.id, patient_id=patient.id,
                 detail={"allergy_id": allergy.id})
    return allergy
