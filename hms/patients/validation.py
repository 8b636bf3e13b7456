"""Pure rules for patient data: normalising CNIC, Form-B and mobile numbers, names, dates
of birth and allergies, and collecting one clear message per bad field.

No database and no Flask here, so the rules are cheap to test and the same for the JSON
API and the HTML form (which sends every value as a string).
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any, Callable

from hms.errors import Invalid
from hms.patients.models import RELATIONS, SEVERITIES, SEXES

MAX_AGE_YEARS = 130
ADULT_AGE_YEARS = 18
MAX_ALLERGIES = 20

DEMOGRAPHIC_FIELDS = ("name", "relation", "guardian_name", "sex", "date_of_birth", "age_years",
                      "cnic", "form_b", "mobile", "address", "city")
ALLERGY_FIELDS = ("substance", "reaction", "severity")

MSG_NAME_REQUIRED = "Enter the patient's name."
MSG_NAME_LENGTH = "Name must be 2 to 120 characters."
MSG_NAME_LETTERS = "Name must contain letters."
MSG_SEX = "Choose the sex: male, female or other."
MSG_DOB_FORMAT = "Enter the date of birth as DD-MM-YYYY, e.g. 14-03-1990."
MSG_DOB_FUTURE = "Date of birth cannot be in the future."
MSG_DOB_TOO_OLD = f"Date of birth cannot be more than {MAX_AGE_YEARS} years ago."
MSG_BIRTH_REQUIRED = "Enter the date of birth, or the age in years if it is not known."
MSG_BIRTH_BOTH = "Give the date of birth or the age, not both."
MSG_AGE_NUMBER = "Age must be a whole number of years."
MSG_AGE_RANGE = f"Age must be between 0 and {MAX_AGE_YEARS} years."
MSG_CNIC = "CNIC must be 13 digits, like 35202-1234567-1."
MSG_FORM_B = "Form-B number must be 13 digits, like 35202-1234567-1."
MSG_FORM_B_ADULT = "Form-B is for children under 18; enter the CNIC instead."
MSG_MOBILE = "Enter a Pakistani mobile number like 0300-1234567."
MSG_RELATION = "Relation must be S/O, D/O or W/O."
MSG_RELATION_MISSING = "Choose S/O, D/O or W/O for the father's or husband's name."
MSG_GUARDIAN_REQUIRED = "Enter the father's or husband's name."
MSG_GUARDIAN_LENGTH = "Father's or husband's name must be at most 120 characters."
MSG_ADDRESS_LENGTH = "Address must be at most 300 characters."
MSG_CITY_LENGTH = "City must be at most 80 characters."
MSG_SUBSTANCE_REQUIRED = "Enter the substance, e.g. Penicillin."
MSG_SUBSTANCE_LENGTH = "Substance must be at most 120 characters."
MSG_SUBSTANCE_TWICE = "This substance is listed twice."
MSG_REACTION_LENGTH = "Reaction must be at most 200 characters."
MSG_SEVERITY = "Severity must be mild, moderate or severe."
MSG_UNKNOWN_FIELD = "Unknown field."

_CNIC_RE = re.compile(r"^(\d{5})[-\s]?(\d{7})[-\s]?(\d)$")
# After removing separators: optional country code (+92, 0092, 92), an optional trunk 0
# (people often write +92 0300 ...), then the 10-digit mobile number starting with 3.
_MOBILE_RE = re.compile(r"^(?:(?:\+|00)?92)?0?(3\d{9})$")
_MOBILE_SEPARATORS = re.compile(r"[\s\-().]")
_WORD_RE = re.compile(r"\w+", re.UNICODE)


class FieldError(ValueError):
    """One field's value breaks a rule; the message is shown next to the field."""


# --- single values ---------------------------------------------------------------------

def text_or_none(value: Any, message: str) -> str | None:
    """Strip a text value; empty means absent. Numbers are accepted as their digits."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise FieldError(message)
    value = str(value).strip()
    return value or None


def normalise_cnic(value: Any, message: str = MSG_CNIC) -> str | None:
    """'35202-1234567-1' or '3520212345671' -> '3520212345671'; None when empty."""
    value = text_or_none(value, message)
    if value is None:
        return None
    match = _CNIC_RE.match(value)
    if not match:
        raise FieldError(message)
    return "".join(match.groups())


def format_cnic(digits: str | None) -> str:
    """'3520212345671' -> '35202-1234567-1' for display."""
    if not digits:
        return ""
    return f"{digits[:5]}-{digits[5:12]}-{digits[12:]}"


def normalise_mobile(value: Any) -> str | None:
    """Any common way of writing a Pakistani mobile -> '+923001234567'; None when empty."""
    value = text_or_none(value, MSG_MOBILE)
    if value is None:
        return None
    match = _MOBILE_RE.match(_MOBILE_SEPARATORS.sub("", value))
    if not match:
        raise FieldError(MSG_MOBILE)
    return "+92" + match.group(1)


def format_mobile(mobile: str | None) -> str:
    """'+923001234567' -> '0300-1234567', the way it is written locally."""
    if not mobile:
        return ""
    local = "0" + mobile[3:]
    return f"{local[:4]}-{local[4:]}"


def collapse_spaces(value: str) -> str:
    return " ".join(value.split())


def search_key(value: str) -> str:
    """The lower-cased, space-collapsed form stored in *_search columns."""
    return collapse_spaces(value).casefold()


def name_tokens(value: str) -> set[str]:
    """Distinct lower-cased words of a name ("Muhammad-Ali Khan" -> muhammad, ali, khan)."""
    return set(_WORD_RE.findall(value.casefold()))


def clean_name(value: Any) -> str:
    value = text_or_none(value, MSG_NAME_REQUIRED)
    if value is None:
        raise FieldError(MSG_NAME_REQUIRED)
    value = collapse_spaces(value)
    if not 2 <= len(value) <= 120:
        raise FieldError(MSG_NAME_LENGTH)
    if not any(ch.isalpha() for ch in value):
        raise FieldError(MSG_NAME_LETTERS)
    return value


def clean_sex(value: Any) -> str:
    value = text_or_none(value, MSG_SEX)
    if value is None or value.lower() not in SEXES:
        raise FieldError(MSG_SEX)
    return value.lower()


def clean_relation(value: Any) -> str | None:
    value = text_or_none(value, MSG_RELATION)
    if value is None:
        return None
    value = value.replace(" ", "").upper()
    if value not in RELATIONS:
        raise FieldError(MSG_RELATION)
    return value


def clean_optional_text(value: Any, max_len: int, message: str) -> str | None:
    value = text_or_none(value, message)
    if value is None:
        return None
    value = collapse_spaces(value)
    if len(value) > max_len:
        raise FieldError(message)
    return value


# --- ages and dates of birth -----------------------------------------------------------

def years_before(day: date, years: int) -> date:
    """The same day and month `years` earlier; 29 February becomes 28 February."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def age_years_on(date_of_birth: date, today: date) -> int:
    """Completed years of age on `today`."""
    before_birthday = (today.month, today.day) < (date_of_birth.month, date_of_birth.day)
    return today.year - date_of_birth.year - before_birthday


_DAY_FIRST = re.compile(r"^(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})$")


def _parse_day_first_or_iso(text: str) -> date:
    """DD-MM-YYYY (also with / or .), as staff in Pakistan write dates, or ISO YYYY-MM-DD
    (the API). Never MM-DD: 03-04-1990 is the 3rd of April."""
    try:
        match = _DAY_FIRST.match(text)
        if match:
            day, month, year = (int(g) for g in match.groups())
            return date(year, month, day)
        return date.fromisoformat(text)
    except ValueError:
        raise FieldError(MSG_DOB_FORMAT) from None


def parse_date_of_birth(value: Any, today: date) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = _parse_day_first_or_iso(value.strip())
    if not isinstance(value, date):
        raise FieldError(MSG_DOB_FORMAT)
    if value > today:
        raise FieldError(MSG_DOB_FUTURE)
    if value < years_before(today, MAX_AGE_YEARS):
        raise FieldError(MSG_DOB_TOO_OLD)
    return value


def parse_age_years(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise FieldError(MSG_AGE_NUMBER)
    if isinstance(value, str):
        if not re.fullmatch(r"\s*\d+\s*", value):
            raise FieldError(MSG_AGE_NUMBER)
        value = int(value)
    if not isinstance(value, int):
        raise FieldError(MSG_AGE_NUMBER)
    if not 0 <= value <= MAX_AGE_YEARS:
        raise FieldError(MSG_AGE_RANGE)
    return value


# --- whole records ---------------------------------------------------------------------

class ErrorCollector:
    """Runs each field's cleaner and keeps one message per bad field, so the user sees
    every problem of the form at once instead of one per submit."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def run(self, field: str, cleaner: Callable[[], Any]) -> Any:
        try:
            return cleaner()
        except FieldError as err:
            self.add(field, str(err))
            return None

    def add(self, field: str, message: str) -> None:
        self.errors.setdefault(field, [message])

    def has(self, field: str) -> bool:
        return field in self.errors

    def raise_if_any(self) -> None:
        if self.errors:
            raise Invalid("Some fields are not valid; correct them and try again.", fields=self.errors)


def refuse_unknown_fields(data: dict, allowed: tuple[str, ...], errors: ErrorCollector) -> None:
    for key in data:
        if key not in allowed:
            errors.add(str(key), MSG_UNKNOWN_FIELD)


def clean_demographics(data: dict, today: date, *, check_form_b_age: bool = True,
                       errors: ErrorCollector | None = None) -> dict:
    """Validate and normalise a full set of demographic fields.

    Returns the values to store (name_search and dob_estimated included). Raises Invalid
    naming every bad field (unless an `errors` collector is passed in, for callers that
    add their own checks first). Edits pass `check_form_b_age=False` and check only a
    changed Form-B number: a registered child who turns 18 must still be editable.
    """
    own = errors is None
    errors = errors or ErrorCollector()
    out: dict[str, Any] = {}
    out["name"] = errors.run("name", lambda: clean_name(data.get("name")))
    out["name_search"] = search_key(out["name"]) if out["name"] else None
    out["sex"] = errors.run("sex", lambda: clean_sex(data.get("sex")))
    out["relation"] = errors.run("relation", lambda: clean_relation(data.get("relation")))
    out["guardian_name"] = errors.run("guardian_name", lambda: clean_optional_text(
        data.get("guardian_name"), 120, MSG_GUARDIAN_LENGTH))
    _check_guardian(out, errors)
    _clean_birth(data, today, out, errors)
    out["cnic"] = errors.run("cnic", lambda: normalise_cnic(data.get("cnic"), MSG_CNIC))
    out["form_b"] = errors.run("form_b", lambda: normalise_cnic(data.get("form_b"), MSG_FORM_B))
    if check_form_b_age:
        check_form_b_is_for_a_child(out, today, errors)
    out["mobile"] = errors.run("mobile", lambda: normalise_mobile(data.get("mobile")))
    out["address"] = errors.run("address", lambda: clean_optional_text(
        data.get("address"), 300, MSG_ADDRESS_LENGTH))
    out["city"] = errors.run("city", lambda: clean_optional_text(data.get("city"), 80, MSG_CITY_LENGTH))
    if own:
        errors.raise_if_any()
    return out


def check_form_b_is_for_a_child(out: dict, today: date, errors: ErrorCollector) -> None:
    """A Form-B number is recorded for a child; an adult is identified by the CNIC."""
    if out["form_b"] and out["date_of_birth"] and age_years_on(out["date_of_birth"], today) >= ADULT_AGE_YEARS:
        errors.add("form_b", MSG_FORM_B_ADULT)


def _check_guardian(out: dict, errors: ErrorCollector) -> None:
    # "S/O Abdul Rehman" is how a Pakistani register identifies a person: the relation
    # and the name only make sense together.
    if out["relation"] and not out["guardian_name"] and not errors.has("guardian_name"):
        errors.add("guardian_name", MSG_GUARDIAN_REQUIRED)
    if out["guardian_name"] and not out["relation"] and not errors.has("relation"):
        errors.add("relation", MSG_RELATION_MISSING)


def _clean_birth(data: dict, today: date, out: dict, errors: ErrorCollector) -> None:
    dob = errors.run("date_of_birth", lambda: parse_date_of_birth(data.get("date_of_birth"), today))
    age = errors.run("age_years", lambda: parse_age_years(data.get("age_years")))
    out["date_of_birth"], out["dob_estimated"] = dob, False
    if errors.has("date_of_birth") or errors.has("age_years"):
        return
    if dob is not None and age is not None:
        errors.add("age_years", MSG_BIRTH_BOTH)
    elif dob is None and age is None:
        errors.add("date_of_birth", MSG_BIRTH_REQUIRED)
    elif age is not None:
        out["date_of_birth"], out["dob_estimated"] = years_before(today, age), True


def clean_allergy(data: Any, errors: ErrorCollector, prefix: str = "") -> dict | None:
    """Validate one allergy {substance, reaction, severity}; errors go under `prefix`."""
    if not isinstance(data, dict):
        errors.add(prefix.rstrip(".") or "allergy", "Each allergy must be an object with substance, "
                                                    "reaction and severity.")
        return None
    refuse_unknown_fields({f"{prefix}{k}": v for k, v in data.items()},
                          tuple(prefix + f for f in ALLERGY_FIELDS), errors)
    substance = errors.run(prefix + "substance", lambda: clean_optional_text(
        data.get("substance"), 120, MSG_SUBSTANCE_LENGTH))
    if substance is None and not errors.has(prefix + "substance"):
        errors.add(prefix + "substance", MSG_SUBSTANCE_REQUIRED)
    reaction = errors.run(prefix + "reaction", lambda: clean_optional_text(
        data.get("reaction"), 200, MSG_REACTION_LENGTH))
    severity = errors.run(prefix + "severity", lambda: _clean_severity(data.get("severity")))
    if substance is None or severity is None:
        return None
    return {"substance": substance, "substance_search": search_key(substance),
            "reaction": reaction, "severity": severity}


def _clean_severity(value: Any) -> str:
    value = text_or_none(value, MSG_SEVERITY)
    if value is None or value.lower() not in SEVERITIES:
        raise FieldError(MSG_SEVERITY)
    return value.lower()


def clean_allergies(items: Any, errors: ErrorCollector) -> list[dict]:
    """Validate a list of allergies; errors are keyed "allergies.<index>.<field>"."""
    if items is None:
        return []
    if not isinstance(items, list):
        errors.add("allergies", "Allergies must be a list.")
        return []
    if len(items) > MAX_ALLERGIES:
        errors.add("allergies", f"Record at most {MAX_ALLERGIES} allergies at registration.")
        return []
    cleaned, seen = [], set()
    for index, item in enumerate(items):
        prefix = f"allergies.{index}."
        allergy = clean_allergy(item, errors, prefix)
        if allergy is None:
            continue
        if allergy["substance_search"] in seen:
            errors.add(prefix + "substance", MSG_SUBSTANCE_TWICE)
            continue
        seen.add(allergy["substance_search"])
        cleaned.append(allergy)
    return cleaned


def age_text(date_of_birth: date | None, estimated: bool, today: date) -> str:
    """"34 y", "7 m", "12 d"; "~34 y" when the age was given instead of a date of birth."""
    if date_of_birth is None:
        return ""
    years = age_years_on(date_of_birth, today)
    if estimated:
        return f"~{years} y"
    if years >= 1:
        return f"{years} y"
    months = (today.year - date_of_birth.year) * 12 + today.month - date_of_birth.month \
        - (today.day < date_of_birth.day)
    if months >= 1:
        return f"{months} m"
    return f"{(today - date_of_birth).days} d"
