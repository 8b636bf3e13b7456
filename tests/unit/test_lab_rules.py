"""Pure lab rules: reading values, choosing the reference range, flags, formatting."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from departments.lab import rules


@dataclass
class A:
    code: str = "HB"
    name: str = "Haemoglobin"
    result_type: str = "numeric"
    units: str | None = "g/dL"
    decimals: int = 1
    options: list | None = None
    abnormal_options: list | None = None
    critical_options: list | None = None
    allow_negative: bool = False
    plausible_max: Decimal | None = Decimal("25")


@dataclass
class R:
    low: Decimal | None
    high: Decimal | None
    sex: str = "any"
    min_age_days: int = 0
    max_age_days: int | None = None
    critical_low: Decimal | None = None
    critical_high: Decimal | None = None


D = Decimal
ADULT = 18 * 365
HB_RANGES = [
    R(D("10.5"), D("13.5"), "any", 30, 730, D("7"), D("20")),
    R(D("11.5"), D("15.5"), "any", 730, 12 * 365, D("7"), D("20")),
    R(D("13.0"), D("17.0"), "male", ADULT, None, D("7"), D("20")),
    R(D("12.0"), D("15.0"), "female", ADULT, None, D("7"), D("20")),
]


def test_numbers_are_rounded_half_up_to_the_analyte_decimals():
    assert rules.parse_value(A(), "13.45") == rules.Reading("13.5", D("13.5"))
    assert rules.parse_value(A(), " 9 ") == rules.Reading("9.0", D("9.0"))
    assert rules.parse_value(A(decimals=0, plausible_max=None), "250,000").text == "250000"
    assert rules.parse_value(A(), 12.25).text == "12.3"


@pytest.mark.parametrize("raw,message", [
    ("-1", "cannot be negative"),
    ("12,5", "Must be a number"),
    ("abc", "Must be a number"),
    ("nan", "Must be a number"),
    ("", "Enter a value"),
    (None, "Enter a value"),
    (True, "Enter the value"),
    ("31", "not a plausible Haemoglobin"),
])
def test_implausible_or_malformed_numbers_are_refused(raw, message):
    with pytest.raises(ValueError, match=message):
        rules.parse_value(A(), raw)


def test_negative_allowed_where_it_is_possible():
    assert rules.parse_value(A(code="BE", name="Base excess", allow_negative=True, plausible_max=None), "-4.2").text == "-4.2"


def test_options_match_any_case_and_are_stored_as_listed():
    a = A(result_type="options", options=["Negative", "Positive"], abnormal_options=["Positive"])
    assert rules.parse_value(a, "positive") == rules.Reading("Positive", None)
    with pytest.raises(ValueError, match="Must be one of: Negative, Positive"):
        rules.parse_value(a, "weak")


def test_text_is_kept_and_capped():
    a = A(result_type="text", units=None)
    assert rules.parse_value(a, " 2-4 ").text == "2-4"
    with pytest.raises(ValueError, match="At most 500"):
        rules.parse_value(a, "x" * 501)


def test_range_for_sex_and_age():
    assert rules.pick_range(HB_RANGES, "male", 30 * 365).low == D("13.0")
    assert rules.pick_range(HB_RANGES, "female", 30 * 365).low == D("12.0")
    one_year = rules.pick_range(HB_RANGES, "female", 365)
    assert (one_year.low, one_year.high) == (D("10.5"), D("13.5"))
    assert rules.pick_range(HB_RANGES, "male", 10) is None  # no band for a neonate here
    assert rules.pick_range(HB_RANGES, "other", 30 * 365) is None  # only sex-specific adult bands


def test_sex_specific_band_wins_over_any_and_unknown_age_fits_only_unbounded_bands():
    ranges = [R(D("0"), D("40")), R(D("0"), D("41"), "male")]
    assert rules.pick_range(ranges, "male", 10_000).high == D("41")
    assert rules.pick_range(ranges, "other", 10_000).high == D("40")
    assert rules.pick_range(ranges, "male", None).high == D("41")
    assert rules.pick_range(HB_RANGES, "male", None) is None


@pytest.mark.parametrize("value,flag", [
    ("6.9", "LL"), ("7.0", "L"), ("12.9", "L"), ("13.0", None), ("17.0", None), ("17.1", "H"),
    ("20.0", "H"), ("20.1", "HH"),
])
def test_flags_limits_are_inside_the_range(value, flag):
    rng = rules.pick_range(HB_RANGES, "male", 40 * 365)
    assert rules.flag_for(A(), rules.parse_value(A(), value), rng) == flag


def test_option_flags_and_no_range_no_flag():
    a = A(result_type="options", options=["Negative", "Positive"], critical_options=["Positive"])
    assert rules.flag_for(a, rules.Reading("Positive", None), None) == "AA"
    assert rules.flag_for(a, rules.Reading("Negative", None), None) is None
    b = A(result_type="options", options=["Negative", "Positive"], abnormal_options=["Positive"])
    assert rules.flag_for(b, rules.Reading("Positive", None), None) == "A"
    assert rules.flag_for(A(), rules.parse_value(A(), "3"), None) is None


def test_range_and_critical_texts():
    assert rules.range_text(D("13"), D("17"), 1) == "13.0 - 17.0"
    assert rules.range_text(None, D("200"), 0) == "< 200"
    assert rules.range_text(D("40"), None, 0) == "> 40"
    assert rules.range_text(None, None, 0) == ""
    assert rules.critical_text(D("7"), D("20"), 1) == "critical < 7.0 or > 20.0"
    assert rules.age_band_text(0, None) == "all ages"
    assert rules.age_band_text(730, 4380) == "2 y to under 12 y"


def test_age_and_turnaround():
    assert rules.age_in_days(date(2024, 1, 1), date(2024, 1, 31)) == 30
    assert rules.age_in_days(None, date(2024, 1, 1)) is None
    start = datetime(2024, 5, 1, 8, 0, tzinfo=timezone.utc)
    assert rules.tat_minutes(start, start + timedelta(hours=2, minutes=5, seconds=59)) == 125
    assert rules.tat_minutes(start, None) is None


def test_numbers_too_large_for_storage_are_refused():
    with pytest.raises(ValueError, match="too large"):
        rules.parse_value(A(plausible_max=None), "12345678901")
