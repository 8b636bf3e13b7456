"""Patients blueprint: the JSON API under /api/v1/patients and the reception pages
(search, registration, the patient page). Thin: parsing, permissions and rendering only.
"""

from __future__ import annotations

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for

from hms.auth.permissions import define, requires, roles_for
from hms.errors import Conflict, HmsError, Invalid
from hms.patients import services
from hms.patients.models import RELATIONS, SEVERITIES, SEXES
from hms.patients.schemas import (AllergyIn, PatientIn, PatientPatch, allergy_json, history_json,
                                  patient_json, patient_summary_json)
from hms.patients.validation import DEMOGRAPHIC_FIELDS, age_years_on, format_cnic, format_mobile
from hms.web.context import current_actor, db_session, json_body, mark_failed, page_args

bp = Blueprint("patients", __name__, template_folder="templates")

PATIENT_REGISTER = define("patients.register", "reception", "nurse", "doctor", "admin")
PATIENT_EDIT = define("patients.edit", "reception", "nurse", "doctor", "admin")
PATIENT_VIEW = define("patients.view", "reception", "nurse", "doctor", "lab_technician", "pathologist",
                      "pharmacist", "cashier", "finance_manager", "admin")
ALLERGY_ADD = define("patients.allergies.add", "nurse", "doctor", "pharmacist", "admin")

ALLERGY_ROWS = 3
SEX_OPTIONS = [(s, s.capitalize()) for s in SEXES]


def _full_json(patient) -> dict:
    session = db_session()
    return patient_json(patient, services.list_allergies(session, patient.id), services.local_today(session))


# --- JSON API --------------------------------------------------------------------------

@bp.post("/api/v1/patients")
@requires(PATIENT_REGISTER)
def api_register():
    data = PatientIn().load(json_body())
    confirm = data.pop("confirm_duplicate", False)
    patient = services.register_patient(db_session(), current_actor(), data, confirm_duplicate=confirm)
    resp = jsonify(_full_json(patient))
    resp.status_code = 201
    resp.headers["Location"] = url_for("patients.api_get", patient_id=patient.id)
    return resp


@bp.get("/api/v1/patients")
@requires(PATIENT_VIEW)
def api_search():
    page, size = page_args()
    session = db_session()
    items, total = services.search_patients(session, current_actor(), request.args.get("q"), page, size)
    today = services.local_today(session)
    return jsonify({"items": [patient_summary_json(p, today) for p in items],
                    "page": page, "size": size, "total": total})


@bp.get("/api/v1/patients/<int:patient_id>")
@requires(PATIENT_VIEW)
def api_get(patient_id: int):
    return jsonify(_full_json(services.get_patient(db_session(), current_actor(), patient_id)))


@bp.patch("/api/v1/patients/<int:patient_id>")
@requires(PATIENT_EDIT)
def api_update(patient_id: int):
    changes = PatientPatch().load(json_body())
    version = changes.pop("version", None)
    patient = services.update_patient(db_session(), current_actor(), patient_id, changes,
                                      expected_version=version)
    return jsonify(_full_json(patient))


@bp.get("/api/v1/patients/<int:patient_id>/allergies")
@requires(PATIENT_VIEW)
def api_allergies(patient_id: int):
    session = db_session()
    patient = services.get_patient(session, current_actor(), patient_id)
    return jsonify({"items": [allergy_json(a) for a in services.list_allergies(session, patient.id)]})


@bp.post("/api/v1/patients/<int:patient_id>/allergies")
@requires(ALLERGY_ADD)
def api_add_allergy(patient_id: int):
    data = AllergyIn().load(json_body())
    allergy = services.add_allergy(db_session(), current_actor(), patient_id, data)
    return jsonify(allergy_json(allergy)), 201


@bp.get("/api/v1/patients/<int:patient_id>/history")
@requires(PATIENT_VIEW)
def api_history(patient_id: int):
    session = db_session()
    patient = services.get_patient(session, current_actor(), patient_id)
    return jsonify({"items": [history_json(h) for h in services.list_history(session, patient.id)]})


# --- HTML pages ------------------------------------------------------------------------

def _can(permission: str) -> bool:
    return current_actor().has_role(*roles_for(permission))


def _render(template: str, status: int = 200, **context):
    session = db_session()
    context.setdefault("today", services.local_today(session))
    return render_template(template, fmt_cnic=format_cnic, fmt_mobile=format_mobile,
                           age_of=services.age_text, sex_options=SEX_OPTIONS,
                           relation_options=[(r, r) for r in RELATIONS],
                           severity_options=[(s, s.capitalize()) for s in SEVERITIES],
                           allergy_rows=ALLERGY_ROWS, **context), status


def _blank_to_none(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _form_demographics(form) -> dict:
    return {field: _blank_to_none(form.get(field)) for field in DEMOGRAPHIC_FIELDS}


def _form_allergies(form) -> tuple[list[dict], list[int]]:
    """The filled allergy rows, and the form row number of each (for placing errors)."""
    allergies, rows = [], []
    for row in range(1, ALLERGY_ROWS + 1):
        allergy = {f: _blank_to_none(form.get(f"allergy_{f}_{row}")) for f in ("substance", "reaction", "severity")}
        if any(allergy.values()):
            allergies.append(allergy)
            rows.append(row)
    return allergies, rows


def _form_errors(fields: dict, allergy_rows: list[int]) -> dict:
    """Service field errors keyed by form input name ("allergies.0.severity" -> "allergy_severity_1")."""
    errors = {}
    for key, messages in fields.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "allergies" and parts[1].isdigit():
            key = f"allergy_{parts[2]}_{allergy_rows[int(parts[1])]}"
        errors[key] = messages
    return errors


@bp.get("/patients")
@requires(PATIENT_VIEW)
def search_page():
    page, size = page_args()
    q = (request.args.get("q") or "").strip()
    items, total = services.search_patients(db_session(), current_actor(), q, page, size)
    return _render("patients/search.html", q=q, items=items, total=total, page=page, size=size,
                   can_register=_can(PATIENT_REGISTER))


@bp.get("/patients/new")
@requires(PATIENT_REGISTER)
def register_page():
    return _render("patients/register.html", values={}, errors={})


@bp.post("/patients/new")
@requires(PATIENT_REGISTER)
def register_submit():
    data = _form_demographics(request.form)
    data["allergies"], allergy_rows = _form_allergies(request.form)
    confirm = request.form.get("confirm_duplicate") in ("1", "on", "true", "yes")
    try:
        patient = services.register_patient(db_session(), current_actor(), data, confirm_duplicate=confirm)
    except (Invalid, Conflict) as err:
        return _register_refused(err, allergy_rows)
    flash(f"Registered {patient.mrn}")
    return redirect(url_for("patients.patient_page", patient_id=patient.id))


def _register_refused(err: HmsError, allergy_rows: list[int]):
    mark_failed()
    fields = dict(err.fields)
    candidates = fields.pop("candidates", None) if err.code == "possible_duplicate" else None
    existing = fields.pop("existing", None)
    return _render("patients/register.html", err.http_status, values=request.form.to_dict(),
                   errors=_form_errors(fields, allergy_rows), form_message=err.message,
                   candidates=candidates, existing=existing[0] if existing else None)


@bp.get("/patients/<int:patient_id>")
@requires(PATIENT_VIEW)
def patient_page(patient_id: int):
    patient = services.get_patient(db_session(), current_actor(), patient_id)
    return _patient_page(patient)


def _patient_page(patient, status: int = 200, **context):
    session = db_session()
    context.setdefault("edit_values", _edit_values(patient, services.local_today(session)))
    return _render("patients/patient.html", status, patient=patient,
                   allergies=services.list_allergies(session, patient.id),
                   history=services.list_history(session, patient.id),
                   can_edit=_can(PATIENT_EDIT), can_add_allergy=_can(ALLERGY_ADD), **context)


def _edit_values(patient, today) -> dict:
    values = {f: getattr(patient, f) or "" for f in DEMOGRAPHIC_FIELDS if f not in ("date_of_birth", "age_years")}
    values["cnic"], values["form_b"] = format_cnic(patient.cnic), format_cnic(patient.form_b)
    values["mobile"] = format_mobile(patient.mobile)
    # An estimated birth date is edited as the age it came from, so saving the form
    # unchanged neither moves the date nor makes it look exact.
    if patient.dob_estimated and patient.date_of_birth:
        values["age_years"] = age_years_on(patient.date_of_birth, today)
    elif patient.date_of_birth:
        values["date_of_birth"] = patient.date_of_birth.isoformat()
    values["version"] = patient.version
    return values


@bp.post("/patients/<int:patient_id>/edit")
@requires(PATIENT_EDIT)
def edit_submit(patient_id: int):
    session = db_session()
    version = request.form.get("version", "")
    try:
        before = services.get_patient(session, current_actor(), patient_id, audit_read=False).version
        patient = services.update_patient(session, current_actor(), patient_id, _form_demographics(request.form),
                                          expected_version=int(version) if version.isdigit() else None)
    except (Invalid, Conflict) as err:
        mark_failed()
        patient = services.get_patient(session, current_actor(), patient_id, audit_read=False)
        return _patient_page(patient, err.http_status, edit_values=request.form.to_dict(),
                             edit_errors=err.fields, edit_message=err.message)
    flash(f"Saved changes to {patient.mrn}" if patient.version != before else "Nothing was changed.")
    return redirect(url_for("patients.patient_page", patient_id=patient.id))


@bp.post("/patients/<int:patient_id>/allergies")
@requires(ALLERGY_ADD)
def allergy_submit(patient_id: int):
    session = db_session()
    data = {f: _blank_to_none(request.form.get(f)) for f in ("substance", "reaction", "severity")}
    try:
        services.add_allergy(session, current_actor(), patient_id, data)
    except (Invalid, Conflict) as err:
        mark_failed()
        patient = services.get_patient(session, current_actor(), patient_id, audit_read=False)
        return _patient_page(patient, err.http_status, allergy_values=request.form.to_dict(),
                             allergy_errors=err.fields, allergy_message=err.message)
    flash("Allergy recorded.")
    return redirect(url_for("patients.patient_page", patient_id=patient_id))
