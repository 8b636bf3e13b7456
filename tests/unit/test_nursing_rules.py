"""Nursing rules that need no database: vital-sign ranges (every bad field named at once),
dose statuses and reasons, who may prescribe, change the round interval and review missed
work. Each refusal happens before any row is read, so no session is needed."""

from __future__ import annotations

from decimal import Decimal

import pytest

from hms.audit import Actor
from hms.errors import Forbidden, Invalid
from wards import nursing

NURSE = Actor(user_id=7, username="nurse", roles=frozenset({"nurse"}), ward_ids=frozenset({1}))
DOCTOR = Actor(user_id=8, username="doctor", roles=frozenset({"doctor"}))
ADMIN = Actor(user_id=9, username="admin", roles=frozenset({"admin"}))
GOOD = {"temperature_c": 37.2, "pulse": 80, "systolic": 120, "diastolic": 80}


def test_good_vitals_are_kept_and_temperature_is_a_decimal_not_a_float():
    clean = nursing._vitals({**GOOD, "spo2": "97", "pain_score": 0, "resp_rate": 16.0, "notes": "  settled  "})
    assert clean["temperature_c"] == Decimal("37.2") and isinstance(clean["temperature_c"], Decimal)
    assert clean["spo2"] == 97 and clean["pain_score"] == 0 and clean["resp_rate"] == 16
    assert clean["notes"] == "settled"


@pytest.mark.parametrize("field,value", [
    ("temperature_c", 29.9), ("temperature_c", 45.1), ("pulse", 19), ("pulse", 251), ("systolic", 49),
    ("systolic", 261), ("diastolic", 19), ("diastolic", 161), ("resp_rate", 3), ("resp_rate", 61),
    ("spo2", 49), ("spo2", 101), ("pain_score", -1), ("pain_score", 11),
])
def test_each_vital_outside_its_range_is_refused_by_name(field, value):
    with pytest.raises(Invalid) as err:
        nursing._vitals({**GOOD, field: value})
    assert list(err.value.fields) == [field]


@pytest.mark.parametrize("field,value", [("temperature_c", 30.0), ("temperature_c", 45), ("pulse", 20),
                                         ("pulse", 250), ("spo2", 100), ("pain_score", 10)])
def test_range_edges_are_accepted(field, value):
    assert nursing._vitals({**GOOD, field: value})[field] == value


def test_every_bad_field_is_named_at_once_with_its_own_message():
    with pytest.raises(Invalid) as err:
        nursing._vitals({"temperature_c": "hot", "pulse": 300, "spo2": 20, "pain_score": True})
    fields = err.value.fields
    assert set(fields) == {"temperature_c", "pulse", "systolic", "diastolic", "spo2", "pain_score"}
    assert fields["systolic"] == ["Systolic pressure is required."]
    assert "20 to 250" in fields["pulse"][0]
    assert "whole number" in fields["pain_score"][0]
    assert "Pulse must be from 20 to 250" in err.value.message


def test_temperature_pulse_and_blood_pressure_are_required():
    with pytest.raises(Invalid) as err:
        nursing._vitals({"spo2": 98})
    assert set(err.value.fields) == {"temperature_c", "pulse", "systolic", "diastolic"}


def test_vitals_must_be_an_object_and_notes_are_bounded():
    with pytest.raises(Invalid):
        nursing._vitals([37, 80])
    with pytest.raises(Invalid) as err:
        nursing._vitals({**GOOD, "notes": "x" * 501})
    assert list(err.value.fields) == ["notes"]


@pytest.mark.parametrize("status", ["done", "missed", "pending", "", None])
def test_a_dose_is_recorded_only_as_given_not_given_or_held(status):
    with pytest.raises(Invalid) as err:
        nursing.record_dose(None, NURSE, 1, status)
    assert "status" in err.value.fields


@pytest.mark.parametrize("status", ["not_given", "held"])
@pytest.mark.parametrize("reason", [None, "", "   "])
def test_not_given_and_held_need_a_reason(status, reason):
    with pytest.raises(Invalid) as err:
        nursing.record_dose(None, NURSE, 1, status, reason)
    assert err.value.fields == {"reason": ["Required."]}


def test_a_reason_is_at_most_300_characters():
    with pytest.raises(Invalid) as err:
        nursing.record_dose(None, NURSE, 1, "held", "x" * 301)
    assert "reason" in err.value.fields


@pytest.mark.parametrize("actor", [NURSE, ADMIN])
def test_only_a_doctor_prescribes_or_stops_a_medicine(actor):
    with pytest.raises(Forbidden) as err:
        nursing.start_medication_order(None, actor, 1, item_code="PCM500", medicine_name="Paracetamol",
                                       dose="1 g", route="oral", every_hours=6)
    assert err.value.code == "doctor_only"
    with pytest.raises(Forbidden):
        nursing.stop_medication_order(None, actor, 1, "done")


def test_a_nurse_cannot_change_how_often_vitals_are_taken():
    with pytest.raises(Forbidden) as err:
        nursing.set_round_interval(None, NURSE, 1, 4)
    assert err.value.code == "doctor_only"


def test_only_the_charge_nurse_or_an_admin_reviews_missed_work():
    for actor in (NURSE, DOCTOR):
        with pytest.raises(Forbidden) as err:
            nursing.review_missed(None, actor, "dose", 1, "Patient was in theatre.")
        assert err.value.code == "charge_nurse_only"


def test_a_review_names_a_known_kind_and_needs_a_note():
    charge = Actor(user_id=10, username="charge", roles=frozenset({"charge_nurse", "nurse"}))
    with pytest.raises(Invalid) as err:
        nursing.review_missed(None, charge, "meal", 1, "note")
    assert "kind" in err.value.fields
    with pytest.raises(Invalid) as err:
        nursing.review_missed(None, charge, "round", 1, "  ")
    assert err.value.fields == {"note": ["Required."]}


def test_grace_knows_only_rounds_and_doses():
    with pytest.raises(ValueError):
        nursing.grace(None, "meal")


@pytest.mark.parametrize("value,expected", [(6, 6), (6.0, 6), ("12", 12), (" 3 ", 3), (True, None), (2.5, None),
                                            ("six", None), (None, None)])
def test_whole_numbers_from_json_or_forms(value, expected):
    assert nursing._whole(value) == expected
