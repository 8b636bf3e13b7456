"""Patient data rules without a database: identity numbers, mobiles, names, ages."""

from datetime import date

import pytest

from hms.errors import Invalid
from hms.patients import validation as v

TODAY = date(2025, 3, 15)


def clean(**fields):
    data = {"name": "Ayesha Bibi", "sex": "female", "date_of_birth": "1990-05-01"}
    data.update(fields)
    return v.clean_demographics(data, TODAY)


def errors_of(**fields) -> dict:
    with pytest.raises(Invalid) as exc:
        clean(**fields)
    return exc.value.fields


# --- CNIC / Form-B --------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["35202-1234567-1", "3520212345671", " 35202 1234567 1 "])
def test_cnic_is_accepted_with_or_without_dashes_and_stored_as_13_digits(raw):
    assert v.normalise_cnic(raw) == "3520212345671"


@pytest.mark.parametrize("raw", ["35202-123456-1", "352021234567", "35202123456712", "3520A1234567-1",
                                 "352-021234567-1", "35202--1234567-1"])
def test_bad_cnic_is_refused_with_the_cnic_message(raw):
    with pytest.raises(v.FieldError, match="CNIC must be 13 digits"):
        v.normalise_cnic(raw)


def test_empty_cnic_means_absent():
    assert v.normalise_cnic("") is None and v.normalise_cnic("   ") is None and v.normalise_cnic(None) is None


def test_cnic_is_formatted_for_display():
    assert v.format_cnic("3520212345671") == "35202-1234567-1"
    assert v.format_cnic(None) == ""


# --- mobile ---------------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["03001234567", "0300-1234567", "0300 123 4567", "3001234567", "+923001234567",
                                 "923001234567", "00923001234567", "+92 300 1234567", "+92 (300) 1234567",
                                 "+92 0300 1234567"])
def test_pakistani_mobile_formats_are_normalised(raw):
    assert v.normalise_mobile(raw) == "+923001234567"


@pytest.mark.parametrize("raw", ["042-35761234", "04235761234", "+92 42 35761234", "0300-123456",
                                 "0300-12345678", "0300-12345A7", "O3001234567", "+44 7700 900123", "abc"])
def test_landlines_letters_and_foreign_numbers_are_refused(raw):
    with pytest.raises(v.FieldError) as exc:
        v.normalise_mobile(raw)
    assert str(exc.value) == "Enter a Pakistani mobile number like 0300-1234567."


def test_mobile_is_formatted_the_local_way():
    assert v.format_mobile("+923001234567") == "0300-1234567"


# --- ages -----------------------------------------------------------------------------

def test_age_text_in_years_months_and_days():
    assert v.age_text(date(1990, 3, 15), False, TODAY) == "35 y"
    assert v.age_text(date(1990, 3, 16), False, TODAY) == "34 y"
    assert v.age_text(date(2024, 8, 1), False, TODAY) == "7 m"
    assert v.age_text(date(2025, 3, 3), False, TODAY) == "12 d"
    assert v.age_text(date(1991, 3, 15), True, TODAY) == "~34 y"
    assert v.age_text(None, False, TODAY) == ""


def test_age_instead_of_date_of_birth_gives_an_estimated_date_on_the_same_day_and_month():
    out = clean(date_of_birth=None, age_years="34")
    assert out["date_of_birth"] == date(1991, 3, 15) and out["dob_estimated"] is True


def test_estimated_birth_date_on_29_february_falls_back_to_28th():
    assert v.years_before(date(2024, 2, 29), 1) == date(2023, 2, 28)


# --- whole records: one clear message per bad field ----------------------------------

def test_valid_record_is_normalised():
    out = clean(name="  ayesha   Bibi ", sex="Female", relation="d/o", guardian_name="Muhammad  Aslam",
                cnic="35202-1234567-1", mobile="0300-1234567", city=" Lahore ")
    assert out["name"] == "ayesha Bibi" and out["name_search"] == "ayesha bibi"
    assert out["sex"] == "female" and out["relation"] == "D/O" and out["guardian_name"] == "Muhammad Aslam"
    assert out["cnic"] == "3520212345671" and out["mobile"] == "+923001234567" and out["city"] == "Lahore"
    assert out["date_of_birth"] == date(1990, 5, 1) and out["dob_estimated"] is False


def test_every_bad_field_gets_its_own_message_at_once():
    fields = errors_of(name="", sex="x", date_of_birth="2025-03-20", cnic="35202-123456-1",
                       mobile="0300-12A4567", relation="S/O", guardian_name=None)
    assert fields == {
        "name": ["Enter the patient's name."],
        "sex": ["Choose the sex: male, female or other."],
        "date_of_birth": ["Date of birth cannot be in the future."],
        "cnic": ["CNIC must be 13 digits, like 35202-1234567-1."],
        "mobile": ["Enter a Pakistani mobile number like 0300-1234567."],
        "guardian_name": ["Enter the father's or husband's name."],
    }


def test_name_length_and_letters():
    assert errors_of(name="A")["name"] == ["Name must be 2 to 120 characters."]
    assert errors_of(name="A" * 121)["name"] == ["Name must be 2 to 120 characters."]
    assert errors_of(name="12345")["name"] == ["Name must contain letters."]
    assert clean(name="عائشہ بی بی")["name"] == "عائشہ بی بی"


def test_birth_date_rules():
    # Day first, as written in Pakistan; a US-order date is refused, never read month first.
    assert clean(date_of_birth="15/03/1990")["date_of_birth"] == date(1990, 3, 15)
    assert clean(date_of_birth="03-04-1990")["date_of_birth"] == date(1990, 4, 3)
    assert errors_of(date_of_birth="03/15/1990")["date_of_birth"] == \
        ["Enter the date of birth as DD-MM-YYYY, e.g. 14-03-1990."]
    assert errors_of(date_of_birth="1890-01-01")["date_of_birth"] == \
        ["Date of birth cannot be more than 130 years ago."]
    assert errors_of(date_of_birth=None)["date_of_birth"] == \
        ["Enter the date of birth, or the age in years if it is not known."]
    assert errors_of(age_years=30)["age_years"] == ["Give the date of birth or the age, not both."]
    assert clean(date_of_birth="2025-03-15")["date_of_birth"] == TODAY  # born today is fine


@pytest.mark.parametrize("age, message", [(200, "Age must be between 0 and 130 years."),
                                          (-1, "Age must be between 0 and 130 years."),
                                          ("thirty", "Age must be a whole number of years."),
                                          ("3.5", "Age must be a whole number of years."),
                                          (True, "Age must be a whole number of years.")])
def test_bad_age(age, message):
    assert errors_of(date_of_birth=None, age_years=age) == {"age_years": [message]}


def test_relation_and_guardian_go_together():
    assert errors_of(relation="S/O", guardian_name="") == {"guardian_name": ["Enter the father's or husband's name."]}
    assert errors_of(guardian_name="Aslam") == \
        {"relation": ["Choose S/O, D/O or W/O for the father's or husband's name."]}
    assert errors_of(relation="F/O", guardian_name="Aslam") == {"relation": ["Relation must be S/O, D/O or W/O."]}


def test_form_b_is_for_children():
    assert errors_of(form_b="35202-1234567-1") == {"form_b": ["Form-B is for children under 18; enter the CNIC instead."]}
    child = clean(date_of_birth="2015-01-01", form_b="35202-1234567-1")
    assert child["form_b"] == "3520212345671"
    assert errors_of(date_of_birth="2015-01-01", form_b="1234")["form_b"] == \
        ["Form-B number must be 13 digits, like 35202-1234567-1."]
    # An edit that leaves the Form-B alone does not re-check it once the child is grown.
    grown = v.clean_demographics({"name": "Ali", "sex": "male", "date_of_birth": "2000-01-01",
                                  "form_b": "3520212345671"}, TODAY, check_form_b_age=False)
    assert grown["form_b"] == "3520212345671"


def test_non_text_values_are_refused_not_crashed_on():
    fields = errors_of(name=["x"], cnic={"a": 1}, mobile=3.5)
    assert set(fields) == {"name", "cnic", "mobile"}


def test_allergies_are_checked_row_by_row():
    errors = v.ErrorCollector()
    out = v.clean_allergies([
        {"substance": "Penicillin", "reaction": "Rash", "severity": "Severe"},
        {"substance": "", "severity": "mild"},
        {"substance": "Aspirin", "severity": "deadly"},
        {"substance": "penicillin ", "severity": "mild"},
        {"substance": "Latex", "severity": "mild", "colour": "red"},
    ], errors)
    assert out[0] == {"substance": "Penicillin", "substance_search": "penicillin", "reaction": "Rash",
                      "severity": "severe"}
    assert errors.errors == {
        "allergies.1.substance": ["Enter the substance, e.g. Penicillin."],
        "allergies.2.severity": ["Severity must be mild, moderate or severe."],
        "allergies.3.substance": ["This substance is listed twice."],
        "allergies.4.colour": ["Unknown field."],
    }


def test_name_tokens_split_on_punctuation_and_ignore_case():
    assert v.name_tokens("Muhammad-Ali  KHAN") == {"muhammad", "ali", "khan"}
