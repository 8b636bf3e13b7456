"""OPD rules without a database: vital-sign plausibility and flags, BMI with the Asian
cut-offs, prescription quantities per frequency, and the shipped ICD-10 list."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from departments.opd import icd10
from departments.opd.services import (assess_vitals, bmi_category, clean_vitals, compute_bmi, compute_quantity,
                                      _clean_prescriptions)
from hms.errors import Invalid


def invalid_fields(values: dict) -> dict:
    with pytest.raises(Invalid) as exc:
        clean_vitals(values)
    return exc.value.fields


# --- plausibility -------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,message", [
    ("temperature_c", 29.9, "Temperature must be between 30 and 45 °C."),
    ("temperature_c", 45.1, "Temperature must be between 30 and 45 °C."),
    ("pulse", 19, "Pulse must be between 20 and 250 beats/min."),
    ("pulse", 251, "Pulse must be between 20 and 250 beats/min."),
    ("pulse", 72.5, "Pulse must be a whole number."),
    ("respiratory_rate", 90, "Respiratory rate must be between 4 and 80 breaths/min."),
    ("spo2", 101, "SpO₂ must be between 50 and 100 %."),
    ("weight_kg", 400, "Weight must be between 0.3 and 350 kg."),
    ("height_cm", 20, "Height must be between 30 and 250 cm."),
    ("pain_score", 11, "Pain score must be between 0 and 10."),
    ("temperature_c", "hot", "Temperature must be a number."),
    ("pulse", True, "Pulse must be a number."),
])
def test_implausible_values_are_refused_with_a_message_per_field(field, value, message):
    fields = invalid_fields({"chief_complaint": "fever", field: value})
    assert fields == {field: [message]}


def test_every_bad_field_is_named_at_once():
    fields = invalid_fields({"temperature_c": 50, "pulse": 300, "spo2": 20, "priority": "soon"})
    assert set(fields) == {"temperature_c", "pulse", "spo2", "priority"}


def test_systolic_must_be_above_diastolic_and_both_are_needed():
    assert invalid_fields({"systolic_bp": 80, "diastolic_bp": 90}) == {
        "diastolic_bp": ["Diastolic pressure (90) must be lower than systolic (80)."]}
    assert invalid_fields({"systolic_bp": 90, "diastolic_bp": 90})["diastolic_bp"]
    assert invalid_fields({"systolic_bp": 120}) == {"diastolic_bp": ["Record both systolic and diastolic pressure."]}


def test_an_empty_triage_is_refused_and_other_task_keys_are_ignored():
    assert invalid_fields({}) == {"_schema": ["Record at least one vital sign or the complaint."]}
    clean = clean_vitals({"pulse": "88", "temperature_c": "37.2", "encounter_id": 5, "chief_complaint": " cough "})
    assert clean["pulse"] == 88 and clean["temperature_c"] == Decimal("37.2")
    assert clean["chief_complaint"] == "cough" and "encounter_id" not in clean


# --- flags and priority ----------------------------------------------------------------------

def assess(age=None, **values):
    return assess_vitals(clean_vitals(values), age)


def test_normal_adult_vitals_raise_no_flag():
    result = assess(35, temperature_c=36.8, pulse=76, systolic_bp=118, diastolic_bp=76, respiratory_rate=16,
                    spo2=98, weight_kg=60, height_cm=170)
    assert result["flags"] == [] and result["priority"] == "routine"
    assert result["bmi"] == Decimal("20.8") and result["bmi_category"] == "normal"


@pytest.mark.parametrize("values,flag", [
    ({"temperature_c": 37.8}, "fever"),
    ({"temperature_c": 39.6}, "high_fever"),
    ({"temperature_c": 34.5}, "hypothermia"),
    ({"pulse": 101}, "tachycardia"),
    ({"pulse": 45}, "bradycardia"),
    ({"systolic_bp": 89, "diastolic_bp": 60}, "hypotension"),
    ({"systolic_bp": 140, "diastolic_bp": 85}, "hypertension"),
    ({"systolic_bp": 130, "diastolic_bp": 90}, "hypertension"),
    ({"systolic_bp": 185, "diastolic_bp": 100}, "severe_hypertension"),
    ({"spo2": 93}, "low_spo2"),
    ({"spo2": 89}, "critical_spo2"),
    ({"respiratory_rate": 25}, "tachypnoea"),
    ({"pain_score": 8}, "severe_pain"),
])
def test_abnormal_adult_values_are_flagged(values, flag):
    assert flag in assess(40, **values)["flags"]


@pytest.mark.parametrize("values,absent", [
    ({"temperature_c": 37.7}, "fever"),
    ({"pulse": 100}, "tachycardia"),
    ({"systolic_bp": 90, "diastolic_bp": 60}, "hypotension"),
    ({"systolic_bp": 139, "diastolic_bp": 89}, "hypertension"),
    ({"spo2": 94}, "low_spo2"),
    ({"respiratory_rate": 24}, "tachypnoea"),
])
def test_thresholds_are_exact(values, absent):
    assert absent not in assess(40, **values)["flags"]


def test_priority_is_computed_but_never_lowered_below_the_nurses():
    assert assess(40, spo2=88)["priority"] == "emergency"
    assert assess(40, pulse=120)["priority"] == "urgent"
    assert assess(40, temperature_c=38.0)["priority"] == "routine"  # fever alone is not urgent
    assert assess(40, temperature_c=38.0, priority="emergency")["priority"] == "emergency"
    assert assess(40, spo2=88, priority="routine")["priority"] == "emergency"


def test_children_are_judged_by_age_bands_not_adult_thresholds():
    infant = assess(0.5, pulse=140, respiratory_rate=45)  # normal at 6 months
    assert "tachycardia" not in infant["flags"] and "tachypnoea" not in infant["flags"]
    assert "tachypnoea" in assess(0.5, respiratory_rate=52)["flags"]
    assert "tachypnoea" in assess(3, respiratory_rate=40)["flags"]
    child = assess(8, systolic_bp=100, diastolic_bp=65)  # 70 + 2 x 8 = 86: fine; no adult BP flags
    assert child["flags"] == []
    assert "hypotension" in assess(8, systolic_bp=84, diastolic_bp=50)["flags"]
    assert assess(8, weight_kg=25, height_cm=100)["bmi_category"] is None  # BMI categories are for adults


@pytest.mark.parametrize("bmi,category", [
    ("18.4", "underweight"), ("18.5", "normal"), ("22.9", "normal"), ("23.0", "overweight"),
    ("24.9", "overweight"), ("25.0", "obese"), ("31", "obese")])
def test_bmi_categories_use_the_asian_cut_offs(bmi, category):
    assert bmi_category(Decimal(bmi)) == category


def test_bmi_is_weight_over_height_squared_to_one_decimal():
    assert compute_bmi(Decimal("70"), Decimal("175")) == Decimal("22.9")
    assert compute_bmi(Decimal("85"), Decimal("165")) == Decimal("31.2")
    assert compute_bmi(None, Decimal("165")) is None
    assert "bmi_overweight" in assess(40, weight_kg=70, height_cm=170)["flags"]  # 24.2: overweight in Asians


# --- prescription quantities -------------------------------------------------------------------

@pytest.mark.parametrize("dose,frequency,days,quantity", [
    (1, "OD", 5, 5), (1, "BD", 5, 10), (1, "TDS", 5, 15), (1, "QID", 3, 12), (1, "HS", 10, 10),
    (1, "Q6H", 2, 8), (1, "Q8H", 2, 6), (2, "BD", 7, 28), (5, "TDS", 3, 45), ("0.5", "OD", 7, 4),
    ("0.1", "TDS", 10, 3), (2, "STAT", 1, 2), ("1.5", "STAT", 5, 2), (1, "weekly", 28, 4), (1, "weekly", 10, 2),
])
def test_quantity_is_the_ceiling_of_dose_times_doses(dose, frequency, days, quantity):
    assert compute_quantity(dose, frequency, days) == quantity


def test_prn_needs_an_explicit_quantity():
    assert compute_quantity(1, "PRN", 5) is None
    errors: dict = {}
    _clean_prescriptions([{"item_code": "pcm500t", "dose": 1, "frequency": "PRN", "duration_days": 5}], errors)
    assert errors == {"prescriptions": {0: {"quantity": [
        "Give the quantity to dispense for a PRN (as needed) medicine."]}}}
    errors = {}
    items = _clean_prescriptions([{"item_code": "pcm500t", "dose": 1, "frequency": "prn", "duration_days": 5,
                                   "quantity": 10}], errors)
    assert not errors and items[0]["quantity"] == 10 and items[0]["frequency"] == "PRN"
    assert items[0]["item_code"] == "PCM500T" and items[0]["route"] == "oral"


def test_prescription_rows_report_every_bad_cell():
    errors: dict = {}
    _clean_prescriptions([{"item_code": "", "dose": 0, "frequency": "hourly", "duration_days": 400, "route": "iv!"}],
                         errors)
    assert set(errors["prescriptions"][0]) == {"item_code", "dose", "frequency", "duration_days", "route"}


# --- ICD-10 ---------------------------------------------------------------------------------------

def test_the_list_has_every_3_character_category():
    categories = [r.code for r in icd10.index().categories()]
    assert len(categories) >= 1900
    for code in ("A00", "A09", "B54", "E11", "I10", "J06", "J18", "K29", "N39", "R50", "Z99"):
        assert code in categories
    # Every chapter letter is there, with no gap at the ends.
    assert {c[0] for c in categories} >= set("ABCDEFGHIJKLMNOPQRSTVWXYZ")


def test_common_codes_have_the_who_titles():
    get = icd10.get_icd10
    assert get("I10")["title"] == "Essential (primary) hypertension"
    assert get("A01.0")["title"] == "Typhoid fever"
    assert get("A90")["title"] == "Dengue fever [classical dengue]"
    assert get("E11.9")["title"] == "Type 2 diabetes mellitus without complications"
    assert get("J06.9")["title"] == "Acute upper respiratory infection, unspecified"
    assert get("N39.0")["title"] == "Urinary tract infection, site not specified"
    assert get("K29.7")["title"] == "Gastritis, unspecified"
    assert get("B50.9")["title"] == "Plasmodium falciparum malaria, unspecified"
    assert get("j069")["code"] == "J06.9"  # case and the missing dot do not matter
    assert get("X99.9") is None


def test_search_by_code_prefix_and_by_words():
    assert [r["code"] for r in icd10.search_icd10("j06")] == ["J06", "J06.9"]
    assert icd10.search_icd10("E11.9") == [{"code": "E11.9", "title": "Type 2 diabetes mellitus without complications"}]
    assert "A01.0" in [r["code"] for r in icd10.search_icd10("TYPHOID fev")]
    assert icd10.search_icd10("fever")[0]["code"] == "R50"  # titles starting with the word first
    assert [r["code"] for r in icd10.search_icd10("uti")][0] == "N39.0"  # OPD abbreviations
    assert icd10.search_icd10("zzzz") == [] and icd10.search_icd10("  ") == []
    assert len(icd10.search_icd10("a", limit=5)) == 5


def test_search_is_fast_once_loaded():
    icd10.index()
    started = time.perf_counter()
    for q in ("j18", "pneumonia", "acute upper", "diabetes", "i1", "typhoid fever"):
        icd10.search_icd10(q)
    assert time.perf_counter() - started < 0.05


def test_the_lookup_validator_reports_unknown_codes():
    assert icd10.unknown_codes({"I10", "j06.9", "Q00.0", "nonsense"}) == {"Q00.0", "nonsense"}
