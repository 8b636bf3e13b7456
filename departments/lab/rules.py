"""Pure rules of the laboratory: reading a result value, choosing the reference range for
the patient's sex and age, flagging, and formatting numbers and ranges.

No database and no Flask here, so the rules are cheap to test and the same for the API,
the HTML forms and the service tasks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Iterable, Protocol

MAX_TEXT_CHARS = 500
# Numbers are stored as NUMERIC(14, 4): at most 10 digits before the decimal point.
MAX_NUMBER = Decimal(10) ** 10
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_THOUSANDS = re.compile(r"^\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


class AnalyteLike(Protocol):
    code: str
    name: str
    result_type: str
    units: str | None
    decimals: int
    options: list | None
    abnormal_options: list | None
    critical_options: list | None
    allow_negative: bool
    plausible_max: Decimal | None


class RangeLike(Protocol):
    sex: str
    min_age_days: int
    max_age_days: int | None
    low: Decimal | None
    high: Decimal | None
    critical_low: Decimal | None
    critical_high: Decimal | None


@dataclass(frozen=True)
class Reading:
    """A value as it will be stored: the text shown on the report and, for numbers, the
    rounded Decimal that flags are computed from."""

    text: str
    number: Decimal | None


def format_decimal(value: Decimal | None, decimals: int) -> str:
    """13.456 with 1 decimal -> "13.5"; None -> ""."""
    if value is None:
        return ""
    return f"{quantize(value, decimals):f}"


def quantize(value: Decimal, decimals: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def parse_value(analyte: AnalyteLike, raw: Any) -> Reading:
    """Read `raw` (what was typed, or a JSON number) for `analyte`; ValueError says why not.

    Numeric: a plain decimal number ("13.5", "250,000" with thousands separators), rounded
    half-up to the analyte's decimals; a negative number is refused unless the analyte
    allows it, and so is a number above its plausible maximum. Options: one of the listed
    values, any case (stored as listed). Text: up to 500 characters.
    """
    if raw is None:
        raise ValueError("Enter a value.")
    if isinstance(raw, str):
        text = raw.strip()
    elif isinstance(raw, (int, float, Decimal)) and not isinstance(raw, bool):
        text = str(raw)
    else:
        raise ValueError("Enter the value as text or a number.")
    if not text:
        raise ValueError("Enter a value.")
    if analyte.result_type == "numeric":
        return _parse_number(analyte, text)
    if analyte.result_type == "options":
        options = list(analyte.options or [])
        for option in options:
            if str(option).lower() == text.lower():
                return Reading(str(option), None)
        raise ValueError("Must be one of: " + ", ".join(str(o) for o in options) + ".")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"At most {MAX_TEXT_CHARS} characters.")
    return Reading(text, None)


def _parse_number(analyte: AnalyteLike, text: str) -> Reading:
    cleaned = text.replace(",", "") if _THOUSANDS.match(text) else text
    if not _NUMBER.match(cleaned):
        raise ValueError("Must be a number, like 12.5.")
    try:
        number = Decimal(cleaned)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        raise ValueError("Must be a number, like 12.5.") from None
    units = f" {analyte.units}" if analyte.units else ""
    if abs(number) >= MAX_NUMBER:
        raise ValueError(f"{text} is too large to be a {analyte.name}; check the value.")
    if number < 0 and not analyte.allow_negative:
        raise ValueError(f"{analyte.name} cannot be negative.")
    if analyte.plausible_max is not None and number > analyte.plausible_max:
        raise ValueError(f"{format_decimal(number, analyte.decimals)}{units} is not a plausible "
                         f"{analyte.name} (at most {format_decimal(analyte.plausible_max, analyte.decimals)}"
                         f"{units}); check the value.")
    rounded = quantize(number, analyte.decimals)
    if rounded == 0:
        rounded = abs(rounded)  # "-0.0" is 0.0
    return Reading(f"{rounded:f}", rounded)


def age_in_days(date_of_birth: date | None, on: date) -> int | None:
    """Whole days of age on `on`; None when the date of birth is not known."""
    if date_of_birth is None:
        return None
    return max((on - date_of_birth).days, 0)


def pick_range(ranges: Iterable[RangeLike], sex: str | None, age_days: int | None) -> RangeLike | None:
    """The range for this sex and age: the band must contain the age (an unknown age fits
    only bands without age limits); a band for the patient's sex wins over "any", then the
    narrowest band (the latest starting, then the earliest ending)."""
    best, best_key = None, None
    for r in ranges:
        if r.sex not in ("any", sex):
            continue
        if age_days is None:
            if r.min_age_days != 0 or r.max_age_days is not None:
                continue
        elif age_days < r.min_age_days or (r.max_age_days is not None and age_days >= r.max_age_days):
            continue
        key = (r.sex != "any", r.min_age_days, -(r.max_age_days if r.max_age_days is not None else 10**9))
        if best_key is None or key > best_key:
            best, best_key = r, key
    return best


def flag_for(analyte: AnalyteLike, reading: Reading, rng: RangeLike | None) -> str | None:
    """LL/HH beyond a critical limit, L/H outside the reference range (limits themselves
    are within); AA/A for a critical/abnormal option; None otherwise."""
    if analyte.result_type == "options":
        if reading.text in (analyte.critical_options or []):
            return "AA"
        if reading.text in (analyte.abnormal_options or []):
            return "A"
        return None
    if analyte.result_type != "numeric" or rng is None or reading.number is None:
        return None
    v = reading.number
    if rng.critical_low is not None and v < rng.critical_low:
        return "LL"
    if rng.critical_high is not None and v > rng.critical_high:
        return "HH"
    if rng.low is not None and v < rng.low:
        return "L"
    if rng.high is not None and v > rng.high:
        return "H"
    return None


def range_text(low: Decimal | None, high: Decimal | None, decimals: int) -> str:
    """"13.0 - 17.0", "< 200", "> 40", or "" when there are no limits."""
    if low is not None and high is not None:
        return f"{format_decimal(low, decimals)} - {format_decimal(high, decimals)}"
    if high is not None:
        return f"< {format_decimal(high, decimals)}"
    if low is not None:
        return f"> {format_decimal(low, decimals)}"
    return ""


def critical_text(low: Decimal | None, high: Decimal | None, decimals: int) -> str:
    """"critical < 7.0 or > 20.0" (either part may be missing), or ""."""
    parts = []
    if low is not None:
        parts.append(f"< {format_decimal(low, decimals)}")
    if high is not None:
        parts.append(f"> {format_decimal(high, decimals)}")
    return ("critical " + " or ".join(parts)) if parts else ""


def age_band_text(min_age_days: int, max_age_days: int | None) -> str:
    """"all ages", "from 18 y", "1 m to 12 y" for showing a catalogue range."""
    def part(days: int) -> str:
        if days % 365 == 0 and days:
            return f"{days // 365} y"
        if days % 30 == 0 and days:
            return f"{days // 30} m"
        return f"{days} d"

    if min_age_days == 0 and max_age_days is None:
        return "all ages"
    if max_age_days is None:
        return f"from {part(min_age_days)}"
    if min_age_days == 0:
        return f"under {part(max_age_days)}"
    return f"{part(min_age_days)} to under {part(max_age_days)}"


def tat_minutes(start, end) -> int | None:
    """Whole minutes from `start` to `end`; None unless both are known."""
    if start is None or end is None:
        return None
    return int((end - start).total_seconds() // 60)
