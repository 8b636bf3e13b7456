"""API shapes for patients. Input schemas check shape and types only; the rules (CNIC,
mobile, dates, duplicates) live in services, so the HTML form and the API give the same
messages. Dates of birth arrive as strings for the same reason.
"""

from __future__ import annotations

from datetime import date

from marshmallow import Schema, fields

from hms.patients.models import Allergy, Patient
from hms.patients.validation import age_text


def _text():
    return fields.String(allow_none=True)


class AllergyIn(Schema):
    substance = _text()
    reaction = _text()
    severity = _text()


class _Demographics(Schema):
    name = _text()
    relation = _text()
    guardian_name = _text()
    sex = _text()
    date_of_birth = _text()
    # Raw: the service gives the same "whole number of years" message for "abc" as the form does.
    age_years = fields.Raw(allow_none=True)
    cnic = _text()
    form_b = _text()
    mobile = _text()
    address = _text()
    city = _text()


class PatientPatch(_Demographics):
    # The version the client read; a save over a newer version is refused (409).
    version = fields.Integer(allow_none=True)


class PatientIn(_Demographics):
    allergies = fields.List(fields.Nested(AllergyIn), allow_none=True)
    confirm_duplicate = fields.Boolean(load_default=False)


class AllergyOut(Schema):
    id = fields.Integer()
    substance = fields.String()
    reaction = fields.String(allow_none=True)
    severity = fields.String()
    recorded_at = fields.DateTime()
    active = fields.Boolean()


class PatientOut(Schema):
    id = fields.Integer()
    mrn = fields.String()
    name = fields.String()
    relation = fields.String(allow_none=True)
    guardian_name = fields.String(allow_none=True)
    sex = fields.String()
    date_of_birth = fields.Date(allow_none=True)
    dob_estimated = fields.Boolean()
    cnic = fields.String(allow_none=True)
    form_b = fields.String(allow_none=True)
    mobile = fields.String(allow_none=True)
    address = fields.String(allow_none=True)
    city = fields.String(allow_none=True)
    version = fields.Integer()
    created_at = fields.DateTime()


def allergy_json(allergy: Allergy) -> dict:
    return AllergyOut().dump(allergy)


def patient_summary_json(patient: Patient, today: date) -> dict:
    """A search result: the demographics without allergies."""
    data = PatientOut().dump(patient)
    data["age"] = age_text(patient.date_of_birth, patient.dob_estimated, today)
    return data


def patient_json(patient: Patient, allergies: list[Allergy], today: date) -> dict:
    data = patient_summary_json(patient, today)
    data["allergies"] = [allergy_json(a) for a in allergies]
    return data


def history_json(entry: dict) -> dict:
    return {"changed_at": entry["changed_at"].isoformat(), "changed_by": entry["changed_by"],
            "version": entry["version"], "fields": entry["fields"], "changes": entry["changes"]}
