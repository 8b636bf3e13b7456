"""hms.forms: definitions, validation of submissions, HTML posts, the registry."""

from __future__ import annotations

import copy
import json
import re
from datetime import timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from werkzeug.datastructures import MultiDict

from hms import forms
from hms.errors import Invalid
from hms.forms import (
    FormDefinition,
    FormDefinitionError,
    FormRegistry,
    UnknownForm,
    coerce_form_post,
    compile_schema,
    display_values,
    field_list,
    flatten_errors,
    form_from_dict,
    load_form,
    register_lookup,
    unregister_lookup,
    validate,
    validate_definition,
)

FORMS_DIR = Path(__file__).resolve().parents[2] / "forms"

# One field of every kind the format supports.
SINK = {
    "key": "sink",
    "title": "Every field type",
    "version": 2,
    "type": "object",
    "required": ["name", "age", "arrived_on"],
    "properties": {
        "name": {"type": "string", "title": "Name", "minLength": 2, "maxLength": 20},
        "mrn": {"type": "string", "pattern": "^HMS-\\d{6}$", "x-pattern-message": "Use the form HMS-000123."},
        "ward_code": {"type": "string", "pattern": "[A-Z]"},
        "age": {"type": "integer", "minimum": 0, "maximum": 120, "x-unit": "years"},
        "temperature_c": {"type": "number", "title": "Temperature", "minimum": 30, "maximum": 45,
                          "x-unit": "°C"},
        "dose_mg": {"type": "number", "exclusiveMinimum": 0, "x-unit": "mg"},
        "fasting": {"type": "boolean", "default": False},
        "arrived_on": {"type": "string", "format": "date"},
        "seen_at": {"type": "string", "format": "date-time"},
        "priority": {"type": "string", "enum": ["routine", "urgent", "emergency"],
                     "enumNames": ["Routine", "Urgent", "Emergency"]},
        "gcs_motor": {"type": "integer", "enum": [1, 2, 3, 4, 5, 6]},
        "notes": {"type": "string", "x-widget": "textarea", "maxLength": 100},
        "diagnoses": {"type": "array", "items": {"type": "string"}, "lookup": "icd10", "maxItems": 3},
        "symptoms": {"type": "array", "items": {"type": "string", "enum": ["fever", "cough", "rash"]}},
        "medicines": {
            "type": "array",
            "title": "Medicines",
            "minItems": 1,
            "maxItems": 4,
            "items": {
                "type": "object",
                "required": ["name", "dose"],
                "properties": {
                    "name": {"type": "string", "lookup": "medicines"},
                    "dose": {"type": "number", "exclusiveMinimum": 0, "x-unit": "mg"},
                    "route": {"type": "string", "enum": ["oral", "iv", "im"], "default": "oral"},
                    "prn": {"type": "boolean"},
                },
            },
        },
        "bed_label": {"type": "string", "readOnly": True},
    },
}

VALID = {"name": "Amina", "age": 34, "arrived_on": "2024-05-01"}


@pytest.fixture
def sink() -> FormDefinition:
    return form_from_dict(copy.deepcopy(SINK))


def errors_of(defn, data, **kwargs) -> dict:
    with pytest.raises(Invalid) as caught:
        validate(defn, data, **kwargs)
    assert caught.value.message == "Some fields are not valid."
    assert caught.value.http_status == 422
    return caught.value.fields


def definition_problems(**changes) -> list[str]:
    raw = copy.deepcopy(SINK)
    for name, spec in changes.items():
        if spec is None:
            raw["properties"].pop(name)
        else:
            raw["properties"][name] = spec
    return validate_definition(raw, "sink")


# ---- the example forms ---------------------------------------------------------------

def test_example_forms_load_and_accept_a_realistic_submission():
    registry = FormRegistry.from_directory(FORMS_DIR)
    assert {"triage", "review"} <= set(registry.keys())
    triage = registry.get("triage")
    assert (triage.key, triage.title, triage.version) == ("triage", "Triage", 1)
    data = validate(triage, {"chief_complaint": "Fever for 3 days", "temperature_c": "38.6",
                             "pulse": "104", "systolic_bp": "118", "diastolic_bp": "76",
                             "respiratory_rate": "22", "spo2": "96", "weight_kg": "61.5",
                             "height_cm": "158", "pain_score": "", "priority": "urgent"})
    assert data["temperature_c"] == 38.6 and data["pulse"] == 104 and data["pain_score"] is None
    assert data["priority"] == "urgent"
    review = registry.get("review")
    assert validate(review, {"reviewed": True}) == {"reviewed": True, "comments": None}


def test_triage_refuses_implausible_vitals_with_the_unit_in_the_message():
    triage = load_form(FORMS_DIR / "triage.json")
    errs = errors_of(triage, {"chief_complaint": "Chest pain", "priority": "emergency",
                              "temperature_c": "52", "spo2": "49", "weight_kg": "0.2"})
    assert errs == {"temperature_c": ["Must be between 30 and 45 °C."],
                    "spo2": ["Must be between 50 and 100 %."],
                    "weight_kg": ["Must be between 0.3 and 350 kg."]}


def test_review_needs_an_answer():
    review = load_form(FORMS_DIR / "review.json")
    assert errors_of(review, {"comments": "ok"}) == {"reviewed": ["Required."]}


# ---- every type, valid and invalid ----------------------------------------------------

def test_valid_submission_of_every_type_is_cleaned_to_json(sink):
    data = validate(sink, {
        "name": "  Amina  ", "mrn": "HMS-000123", "ward_code": "MW1", "age": "34",
        "temperature_c": "37.5", "dose_mg": 250, "fasting": True, "arrived_on": "2024-05-01",
        "seen_at": "2024-05-01T10:30", "priority": "urgent", "gcs_motor": "6", "notes": "stable",
        "diagnoses": ["A09", "", "J18.9"], "symptoms": ["fever", "rash"],
        "medicines": [{"name": "Paracetamol 500 mg tab", "dose": "500", "prn": True}],
    }, tz=ZoneInfo("Asia/Karachi"))
    assert data == {
        "name": "Amina", "mrn": "HMS-000123", "ward_code": "MW1", "age": 34,
        "temperature_c": 37.5, "dose_mg": 250.0, "fasting": True, "arrived_on": "2024-05-01",
        "seen_at": "2024-05-01T05:30:00+00:00", "priority": "urgent", "gcs_motor": 6,
        "notes": "stable", "diagnoses": ["A09", "J18.9"], "symptoms": ["fever", "rash"],
        "medicines": [{"name": "Paracetamol 500 mg tab", "dose": 500.0, "route": "oral", "prn": True}],
    }
    assert json.loads(json.dumps(data)) == data
    assert type(data["age"]) is int and type(data["temperature_c"]) is float


def test_absent_optional_fields_are_none_or_their_default(sink):
    data = validate(sink, dict(VALID))
    assert data["fasting"] is False  # the declared default
    assert data["temperature_c"] is None and data["medicines"] is None and data["seen_at"] is None
    assert "bed_label" not in data
    assert json.dumps(data)


@pytest.mark.parametrize("field, value, message", [
    ("name", 42, "Must be text."),
    ("age", "12.5", "Must be a whole number."),
    ("age", 12.7, "Must be a whole number."),
    ("age", "twelve", "Must be a whole number."),
    ("age", True, "Must be a whole number."),
    ("age", "1_000", "Must be a whole number."),
    ("temperature_c", "37,5", "Must be a number."),
    ("temperature_c", "nan", "Must be a number."),
    ("temperature_c", "1e999", "Must be a number."),
    ("temperature_c", False, "Must be a number."),
    ("fasting", "maybe", "Must be true or false."),
    ("arrived_on", "01/05/2024", "Must be a date (YYYY-MM-DD)."),
    ("arrived_on", "2024-02-30", "Must be a date (YYYY-MM-DD)."),
    ("arrived_on", "2024-05-01T10:00", "Must be a date (YYYY-MM-DD)."),
    ("seen_at", "2024-05-01", "Must be a date and time (YYYY-MM-DDTHH:MM)."),
    ("seen_at", "yesterday", "Must be a date and time (YYYY-MM-DDTHH:MM)."),
    ("diagnoses", "A09", "Must be a list."),
])
def test_wrong_types_have_plain_messages(sink, field, value, message):
    assert errors_of(sink, {**VALID, field: value}) == {field: [message]}


def test_whole_number_accepts_integral_floats_and_signed_strings(sink):
    assert validate(sink, {**VALID, "age": 34.0})["age"] == 34
    assert validate(sink, {**VALID, "gcs_motor": "+6"})["gcs_motor"] == 6


def test_datetime_with_offset_is_stored_in_utc(sink):
    data = validate(sink, {**VALID, "seen_at": "2024-05-01T10:30:00+05:00"})
    assert data["seen_at"] == "2024-05-01T05:30:00+00:00"
    assert validate(sink, {**VALID, "seen_at": "2024-05-01T10:30"})["seen_at"] == "2024-05-01T10:30:00+00:00"


# ---- rules and their messages ----------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("age", -1, "Must be between 0 and 120 years."),
    ("age", 121, "Must be between 0 and 120 years."),
    ("temperature_c", "45.1", "Must be between 30 and 45 °C."),
    ("dose_mg", 0, "Must be greater than 0 mg."),
    ("name", "A", "Must be at least 2 characters."),
    ("name", "A" * 21, "Must be at most 20 characters."),
    ("mrn", "HMS-12", "Use the form HMS-000123."),
    ("ward_code", "123", "Does not have the expected format."),
    ("priority", "low", "Must be one of: Routine, Urgent, Emergency."),
    ("gcs_motor", 7, "Must be one of: 1, 2, 3, 4, 5, 6."),
    ("diagnoses", ["A00", "A01", "A02", "A03"], "Must have at most 3 items."),
])
def test_rules_have_human_messages(sink, field, value, message):
    assert errors_of(sink, {**VALID, field: value}) == {field: [message]}


def test_bounds_are_inclusive_and_exclusive_bounds_are_not(sink):
    data = validate(sink, {**VALID, "age": 120, "temperature_c": 30, "dose_mg": 0.01})
    assert (data["age"], data["temperature_c"], data["dose_mg"]) == (120, 30.0, 0.01)


def test_pattern_is_a_search_as_in_json_schema(sink):
    # "[A-Z]" is unanchored: any capital letter anywhere matches.
    assert validate(sink, {**VALID, "ward_code": "mw-B"})["ward_code"] == "mw-B"


def test_strings_without_max_length_are_capped():
    defn = form_from_dict({"key": "cap", "title": "Cap", "properties": {"text": {"type": "string"}}})
    errs = errors_of(defn, {"text": "x" * (forms.MAX_LENGTH_DEFAULT + 1)})
    assert errs == {"text": [f"Must be at most {forms.MAX_LENGTH_DEFAULT} characters."]}


def test_enum_symptoms_refuse_a_value_outside_the_list(sink):
    assert errors_of(sink, {**VALID, "symptoms": ["fever", "itch"]}) == {
        "symptoms": {1: ["Must be one of: fever, cough, rash."]}}


# ---- required and empty values ----------------------------------------------------------

def test_missing_required_fields_say_required(sink):
    assert errors_of(sink, {}) == {"name": ["Required."], "age": ["Required."],
                                   "arrived_on": ["Required."]}


def test_empty_and_blank_strings_count_as_absent(sink):
    assert errors_of(sink, {**VALID, "name": "   "}) == {"name": ["Required."]}
    assert errors_of(sink, {**VALID, "age": None}) == {"age": ["Required."]}
    data = validate(sink, {**VALID, "temperature_c": "", "priority": " ", "diagnoses": ["", " "],
                           "medicines": []})
    assert data["temperature_c"] is None and data["priority"] is None
    assert data["diagnoses"] is None and data["medicines"] is None


def test_unknown_fields_are_rejected(sink):
    assert errors_of(sink, {**VALID, "temprature_c": 37}) == {"temprature_c": ["Unknown field."]}
    errs = errors_of(sink, {**VALID, "medicines": [{"name": "ORS", "dose": 1, "strength": "x"}]})
    assert errs == {"medicines": {0: {"strength": ["Unknown field."]}}}


def test_read_only_fields_are_ignored_not_refused(sink):
    data = validate(sink, {**VALID, "bed_label": "MW1-03"})
    assert "bed_label" not in data


def test_non_object_submission_is_refused(sink):
    assert errors_of(sink, ["not", "a", "dict"]) == {"_schema": ["Must be an object of fields."]}


# ---- arrays of objects ------------------------------------------------------------------

def test_rows_report_errors_per_row_and_column(sink):
    errs = errors_of(sink, {**VALID, "medicines": [
        {"name": "Amoxicillin 500 mg cap", "dose": "500", "route": "oral"},
        {"name": "Ceftriaxone 1 g inj", "dose": "0", "route": "sc"},
        {"dose": "1"},
    ]})
    assert errs == {"medicines": {
        1: {"dose": ["Must be greater than 0 mg."], "route": ["Must be one of: oral, iv, im."]},
        2: {"name": ["Required."]},
    }}
    assert flatten_errors(errs) == {
        "medicines.1.dose": ["Must be greater than 0 mg."],
        "medicines.1.route": ["Must be one of: oral, iv, im."],
        "medicines.2.name": ["Required."],
    }


def test_blank_rows_are_dropped_and_row_count_is_checked(sink):
    data = validate(sink, {**VALID, "medicines": [{"name": "", "dose": ""}, {"name": "ORS", "dose": 1}]})
    assert data["medicines"] == [{"name": "ORS", "dose": 1.0, "route": "oral", "prn": None}]
    rows = [{"name": f"m{i}", "dose": 1} for i in range(5)]
    assert errors_of(sink, {**VALID, "medicines": rows}) == {"medicines": ["Must have at most 4 rows."]}
    assert errors_of(sink, {**VALID, "medicines": "ORS"}) == {"medicines": ["Must be a list."]}
    assert errors_of(sink, {**VALID, "medicines": ["ORS"]}) == {
        "medicines": {0: {"_schema": ["Must be a row of values."]}}}


def test_min_items_counts_rows():
    defn = form_from_dict({"key": "rows", "title": "Rows", "properties": {"contacts": {
        "type": "array", "minItems": 2,
        "items": {"type": "object", "properties": {"phone": {"type": "string"}}}}}})
    assert errors_of(defn, {"contacts": [{"phone": "0300"}]}) == {"contacts": ["Must have at least 2 rows."]}


# ---- lookups ------------------------------------------------------------------------------

@pytest.fixture
def icd10_and_medicines():
    calls: list[set[str]] = []

    def icd10(values: set[str]) -> set[str]:
        calls.append(set(values))
        return {v for v in values if v not in {"A09", "J18.9"}}

    register_lookup("icd10", icd10)
    register_lookup("medicines", lambda values: {v for v in values if v != "ORS"})
    yield calls
    unregister_lookup("icd10")
    unregister_lookup("medicines")


def test_registered_lookup_rejects_unknown_codes_in_one_call(sink, icd10_and_medicines):
    errs = errors_of(sink, {**VALID, "diagnoses": ["A09", "X99.9", "A09"],
                            "medicines": [{"name": "ORS", "dose": 1}, {"name": "Snake oil", "dose": 1}]})
    assert errs == {"diagnoses": {1: ["Unknown ICD-10 code: X99.9."]},
                    "medicines": {1: {"name": ["Unknown medicine: Snake oil."]}}}
    assert icd10_and_medicines == [{"A09", "X99.9"}]


def test_lookup_errors_join_other_errors(sink, icd10_and_medicines):
    errs = errors_of(sink, {**VALID, "age": 200, "diagnoses": ["Z00"]})
    assert errs == {"age": ["Must be between 0 and 120 years."],
                    "diagnoses": {0: ["Unknown ICD-10 code: Z00."]}}


def test_known_codes_pass_and_without_a_validator_only_the_type_is_checked(sink, icd10_and_medicines):
    assert validate(sink, {**VALID, "diagnoses": ["J18.9"]})["diagnoses"] == ["J18.9"]
    unregister_lookup("icd10")
    assert validate(sink, {**VALID, "diagnoses": ["anything"]})["diagnoses"] == ["anything"]
    assert errors_of(sink, {**VALID, "diagnoses": [7]}) == {"diagnoses": {0: ["Must be text."]}}


def test_a_new_lookup_name_must_be_registered_before_use():
    raw = {"key": "w", "title": "W", "properties": {"ward": {"type": "string", "lookup": "wards"}}}
    assert validate_definition(raw, "w") == [
        "w: /properties/ward/lookup: unknown lookup 'wards' (known: icd10, lab_tests, medicines)"]
    register_lookup("wards", lambda values: set(), label="ward")
    try:
        assert validate_definition(raw, "w") == []
        assert "wards" in forms.lookup_names()
    finally:
        unregister_lookup("wards")
    assert "wards" not in forms.lookup_names()


# ---- definition errors --------------------------------------------------------------------

def test_the_sink_definition_is_valid():
    assert validate_definition(copy.deepcopy(SINK), "sink") == []


@pytest.mark.parametrize("changes, problem", [
    ({"temp": {"type": "flaot"}}, "sink: /properties/temp: unknown type 'flaot'"),
    ({"temp": {"title": "Temp"}}, "sink: /properties/temp: missing 'type'"),
    ({"temp": {"type": "number", "minimun": 30}},
     "sink: /properties/temp: unknown keyword 'minimun' (did you mean 'minimum'?)"),
    ({"temp": {"type": "number", "maxLength": 3}},
     "sink: /properties/temp: 'maxLength' does not apply to type 'number'"),
    ({"mrn": {"type": "string", "pattern": "^HMS-(\\d{6}$"}},
     "sink: /properties/mrn/pattern: invalid regular expression: missing ), unterminated subpattern at position 5"),
    ({"priority": {"type": "string", "enum": ["a", "b", "c"], "enumNames": ["A", "B"]}},
     "sink: /properties/priority/enumNames: has 2 labels but enum has 3 values"),
    ({"priority": {"type": "string", "enum": []}},
     "sink: /properties/priority/enum: must be a non-empty list of non-empty strings"),
    ({"gcs_motor": {"type": "integer", "enum": [1, "2"]}},
     "sink: /properties/gcs_motor/enum: must be a non-empty list of whole numbers"),
    ({"age": {"type": "integer", "minimum": 10, "maximum": 5}},
     "sink: /properties/age: the lower bound 10 is above the upper bound 5"),
    ({"name": {"type": "string", "minLength": 5, "maxLength": 2}},
     "sink: /properties/name: minLength 5 is above maxLength 2"),
    ({"seen_at": {"type": "string", "format": "time"}},
     "sink: /properties/seen_at/format: unknown format 'time' (use 'date' or 'date-time')"),
    ({"diagnoses": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}}},
     "sink: /properties/diagnoses/items: nested arrays are not supported"),
    ({"diagnoses": {"type": "array"}},
     "sink: /properties/diagnoses/items: an array needs 'items' (a field or an object with properties)"),
    ({"address": {"type": "object", "properties": {"city": {"type": "string"}}}},
     "sink: /properties/address: type 'object' is only allowed as the items of an array"),
    ({"age": {"type": "integer", "minimum": 0, "default": -5}},
     "sink: /properties/age/default: is not valid: Must be at least 0."),
    ({"name": {"type": "string", "default": " "}},
     "sink: /properties/name/default: is empty; leave the default out instead"),
    ({"notes": {"type": "integer", "x-widget": "textarea"}},
     "sink: /properties/notes/x-widget: 'textarea' does not fit this field"),
    ({"notes": {"type": "string", "x-widget": "slider"}},
     "sink: /properties/notes/x-widget: unknown widget 'slider' (use textarea, radio or select)"),
    ({"diagnoses": {"type": "array", "items": {"type": "integer"}, "lookup": "icd10"}},
     "sink: /properties/diagnoses/lookup: a lookup on an array needs items of type 'string'"),
    ({"class": {"type": "string"}},
     "sink: /properties/class: field name 'class' must be a Python identifier (letters, digits, '_')"),
    ({"blood-group": {"type": "string"}},
     "sink: /properties/blood-group: field name 'blood-group' must be a Python identifier (letters, digits, '_')"),
])
def test_definition_problems_name_the_form_and_the_pointer(changes, problem):
    assert definition_problems(**changes) == [problem]


def test_required_must_name_existing_fields_that_can_be_entered():
    raw = copy.deepcopy(SINK)
    raw["required"] = ["name", "nmae", "bed_label"]
    assert validate_definition(raw, "sink") == [
        "sink: /required/1: names 'nmae', which is not a property",
        "sink: /required/2: 'bed_label' is readOnly, so it cannot be required",
    ]
    raw = copy.deepcopy(SINK)
    raw["properties"]["medicines"]["items"]["required"] = ["dose", "strength"]
    assert validate_definition(raw, "sink") == [
        "sink: /properties/medicines/items/required/1: names 'strength', which is not a property"]


def test_top_level_problems():
    assert validate_definition([], "x") == ["x: a form definition must be a JSON object"]
    raw = {"key": "other", "title": " ", "version": 0, "type": "array", "propertys": {}}
    assert validate_definition(raw, "x") == [
        "x: unknown keyword 'propertys' (did you mean 'properties'?)",
        "x: /key: 'other' does not match the form key 'x' (the file name)",
        "x: /title: missing title",
        "x: /version: must be a positive whole number",
        "x: /type: a form must have type 'object'",
        "x: /properties: must be an object of fields",
    ]


def test_form_from_dict_raises_with_every_problem():
    raw = copy.deepcopy(SINK)
    raw["properties"]["a"] = {"type": "flaot"}
    raw["properties"]["b"] = {"type": "string", "pattern": "("}
    with pytest.raises(FormDefinitionError) as caught:
        form_from_dict(raw)
    assert len(caught.value.problems) == 2
    assert str(caught.value).startswith("sink: /properties/a: unknown type 'flaot'\nsink: /properties/b/pattern:")


def test_load_form_checks_file_name_json_and_duplicate_keys(tmp_path):
    (tmp_path / "vitals.json").write_text(json.dumps({"key": "triage", "title": "V", "properties": {}}))
    with pytest.raises(FormDefinitionError, match=r"vitals: /key: 'triage' does not match"):
        load_form(tmp_path / "vitals.json")
    (tmp_path / "broken.json").write_text('{"title": "B", "properties": {}')
    with pytest.raises(FormDefinitionError, match=r"^broken: not valid JSON: line 1 column"):
        load_form(tmp_path / "broken.json")
    (tmp_path / "dup.json").write_text('{"title": "D", "properties": {"a": {"type": "string"}, "a": {"type": "integer"}}}')
    with pytest.raises(FormDefinitionError, match=r"^dup: duplicate key 'a'$"):
        load_form(tmp_path / "dup.json")
    (tmp_path / "ok.json").write_text('{"title": "OK", "properties": {}}')
    assert load_form(tmp_path / "ok.json").key == "ok"


# ---- registry, checksum, cache ---------------------------------------------------------------

def test_registry_from_directory_reports_every_bad_file(tmp_path):
    (tmp_path / "a.json").write_text('{"title": "A", "properties": {"x": {"type": "flaot"}}}')
    (tmp_path / "b.json").write_text('{"title": "B", "properties": {"y": {"type": "string", "pattern": "["}}}')
    (tmp_path / "c.json").write_text('{"title": "C", "properties": {}}')
    with pytest.raises(FormDefinitionError) as caught:
        FormRegistry.from_directory(tmp_path)
    assert [p.split(":")[0] for p in caught.value.problems] == ["a", "b"]
    with pytest.raises(FormDefinitionError, match="is not a directory"):
        FormRegistry.from_directory(tmp_path / "missing")


def test_registry_versions_are_immutable(sink):
    registry = FormRegistry([sink])
    assert registry.get("sink") is sink and registry.keys() == ["sink"] and "sink" in registry
    registry.add(form_from_dict(copy.deepcopy(SINK)))  # the same content again: fine
    changed = copy.deepcopy(SINK)
    changed["title"] = "Changed"
    with pytest.raises(FormDefinitionError, match="version 2 is already registered"):
        registry.add(form_from_dict(changed))
    changed["version"] = 3
    registry.add(form_from_dict(changed))
    assert registry.get("sink").title == "Changed" and registry.get("sink", 2) is sink
    assert registry.versions("sink") == [2, 3]


def test_unknown_form_is_a_key_error():
    registry = FormRegistry([form_from_dict({"key": "known", "title": "K", "properties": {}})])
    with pytest.raises(KeyError):
        registry.get("nope")
    with pytest.raises(UnknownForm, match="unknown form 'known' version 4"):
        registry.get("known", 4)
    assert registry.get("known").version == 1


def test_checksum_ignores_key_order_but_not_field_order(sink):
    reordered = {k: SINK[k] for k in reversed(list(SINK))}
    assert form_from_dict(copy.deepcopy(reordered)).checksum == sink.checksum
    swapped = copy.deepcopy(SINK)
    swapped["properties"] = dict(reversed(list(swapped["properties"].items())))
    assert form_from_dict(swapped).checksum != sink.checksum


def test_compiled_schema_is_cached_by_checksum(sink):
    again = form_from_dict(copy.deepcopy(SINK))
    assert compile_schema(sink) is compile_schema(again)
    assert compile_schema(sink).load({**VALID})["age"] == 34


def test_the_definition_is_copied_so_later_edits_of_the_input_do_not_leak():
    raw = copy.deepcopy(SINK)
    defn = form_from_dict(raw)
    raw["properties"]["age"]["maximum"] = 1
    assert validate(defn, {**VALID, "age": 90})["age"] == 90


# ---- fields for renderers ------------------------------------------------------------------

def test_field_list_describes_fields_in_order(sink):
    fields = field_list(sink)
    assert [f.name for f in fields] == list(SINK["properties"])
    by_name = {f.name: f for f in fields}
    assert {n: f.kind for n, f in by_name.items()} == {
        "name": "text", "mrn": "text", "ward_code": "text", "age": "integer", "temperature_c": "number",
        "dose_mg": "number", "fasting": "boolean", "arrived_on": "date", "seen_at": "datetime",
        "priority": "radio", "gcs_motor": "select", "notes": "textarea", "diagnoses": "list",
        "symptoms": "checkboxes", "medicines": "table", "bed_label": "text"}
    temp = by_name["temperature_c"]
    assert (temp.title, temp.unit, temp.input_type, temp.step, temp.html_min, temp.html_max) == (
        "Temperature", "°C", "number", "any", 30, 45)
    assert temp.hint == "Between 30 and 45 °C."
    assert by_name["mrn"].hint == "Use the form HMS-000123." and by_name["mrn"].title == "Mrn"
    assert by_name["age"].required and not by_name["mrn"].required and by_name["bed_label"].read_only
    assert by_name["priority"].options == (("routine", "Routine"), ("urgent", "Urgent"),
                                           ("emergency", "Emergency"))
    assert by_name["diagnoses"].lookup == "icd10" and by_name["diagnoses"].item.lookup == "icd10"
    meds = by_name["medicines"]
    assert [c.name for c in meds.columns] == ["name", "dose", "route", "prn"]
    assert [c.required for c in meds.columns] == [True, True, False, False]
    assert meds.columns[0].kind == "lookup" and meds.row_limit == 4


# ---- HTML posts ------------------------------------------------------------------------------

def test_coerce_form_post_builds_booleans_rows_and_lists(sink):
    post = MultiDict([
        ("csrf_token", "t"), ("name", "Amina"), ("age", "34"), ("arrived_on", "2024-05-01"),
        ("temperature_c", ""), ("fasting", "on"), ("diagnoses", "A09"), ("diagnoses", ""),
        ("diagnoses", "J18.9"), ("symptoms", "fever"), ("symptoms", "cough"),
        ("medicines-0-name", "ORS"), ("medicines-0-dose", "1"), ("medicines-0-route", "oral"),
        ("medicines-1-name", ""), ("medicines-1-dose", ""), ("medicines-1-route", ""),
        ("medicines-10-name", "Zinc 20 mg"), ("medicines-10-dose", "20"), ("medicines-10-prn", "on"),
        ("medicines-2-name", "Paracetamol"), ("medicines-2-dose", "500"),
        ("bed_label", "tampered"),
    ])
    data = coerce_form_post(sink, post)
    assert data == {
        "name": "Amina", "age": "34", "temperature_c": "", "fasting": True, "arrived_on": "2024-05-01",
        "diagnoses": ["A09", "J18.9"], "symptoms": ["fever", "cough"],
        "medicines": [
            {"name": "ORS", "dose": "1", "route": "oral", "prn": False},
            {"name": "Paracetamol", "dose": "500", "prn": False},
            {"name": "Zinc 20 mg", "dose": "20", "prn": True},
        ],
    }
    cleaned = validate(sink, data)
    assert cleaned["medicines"][2] == {"name": "Zinc 20 mg", "dose": 20.0, "route": "oral", "prn": True}
    assert cleaned["fasting"] is True and cleaned["temperature_c"] is None
    assert "bed_label" not in cleaned
    assert json.loads(json.dumps(cleaned)) == cleaned


def test_coerce_form_post_unticked_checkbox_is_false_and_empty_table_is_absent(sink):
    data = coerce_form_post(sink, MultiDict([("name", "Amina"), ("age", "3"), ("arrived_on", "2024-05-01"),
                                             ("medicines-0-name", ""), ("medicines-0-dose", "")]))
    assert data["fasting"] is False and data["medicines"] == [] and data["diagnoses"] == []
    assert validate(sink, data)["medicines"] is None


# ---- display ----------------------------------------------------------------------------------

def test_display_values_show_stored_utc_times_locally(sink):
    stored = validate(sink, {**VALID, "seen_at": "2024-05-01T10:30"}, tz=ZoneInfo("Asia/Karachi"))
    shown = display_values(sink, stored, ZoneInfo("Asia/Karachi"))
    assert shown["seen_at"] == "2024-05-01T10:30" and shown["arrived_on"] == "2024-05-01"
    assert display_values(sink, {"seen_at": "2024-05-01T10:30"}, timezone.utc)["seen_at"] == "2024-05-01T10:30"
    assert display_values(sink, None) == {}


def test_the_documented_example_is_a_valid_form():
    text = (FORMS_DIR.parent / "docs" / "forms.md").read_text(encoding="utf-8")
    raw = json.loads(re.search(r"```json\n(.*?)```", text, re.S).group(1))
    defn = form_from_dict(raw)
    data = validate(defn, {"diagnoses": ["A09"], "follow_up": "none", "medicines": [
        {"medicine": "ORS", "dose": "1", "route": "oral", "times_a_day": "3", "days": "2"}]})
    assert data["medicines"][0]["times_a_day"] == 3 and data["allergy_checked"] is False
