"""API shapes of the lab: marshmallow input schemas (shape and types; the rules live in
services so the API, the pages and the service tasks give the same messages) and the
JSON output of tests, orders, results and reports."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from departments.lab import rules
from departments.lab.models import (PRIORITIES, REJECTION_REASONS, SAMPLE_TYPES, SECTIONS, LabAnalyte,
                                    LabOrder, LabResult, LabSample, LabTest)


class ResultValue(fields.Field):
    """A result value: text, or a JSON number (kept as its text)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValidationError("Must be text or a number.")
        return value if isinstance(value, str) else str(value)


class OrderIn(Schema):
    patient_id = fields.Integer(required=True, strict=True)
    test_codes = fields.List(fields.String(), required=True)
    encounter_id = fields.Integer(allow_none=True, strict=True, load_default=None)
    admission_id = fields.Integer(allow_none=True, strict=True, load_default=None)
    priority = fields.String(load_default="routine", validate=validate.OneOf(PRIORITIES))


class CollectIn(Schema):
    collected = fields.Boolean(required=True)
    rejection_reason = fields.String(allow_none=True, load_default=None,
                                     validate=validate.OneOf(list(REJECTION_REASONS)))
    label = fields.String(allow_none=True, load_default=None)
    note = fields.String(allow_none=True, load_default=None)


class ResultRowIn(Schema):
    test_code = fields.String(required=True)
    analyte_code = fields.String(required=True)
    value = ResultValue(required=True)


class ResultsIn(Schema):
    results = fields.List(fields.Nested(ResultRowIn), required=True)


class VerifyIn(Schema):
    approve = fields.Boolean(required=True)
    comment = fields.String(allow_none=True, load_default=None)


class AmendIn(Schema):
    value = ResultValue(required=True)
    reason = fields.String(required=True)


class CancelIn(Schema):
    reason = fields.String(required=True)


# --------------------------------------------------------------------------- output

def number(value: Decimal | None) -> int | float | None:
    """A Decimal as a JSON number (whole numbers as integers)."""
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


def when(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def analyte_json(a: LabAnalyte) -> dict:
    return {
        "code": a.code, "name": a.name, "result_type": a.result_type, "units": a.units,
        "decimals": a.decimals, "options": list(a.options or []) or None,
        "abnormal_options": list(a.abnormal_options or []) or None,
        "critical_options": list(a.critical_options or []) or None,
        "ranges": [{
            "sex": r.sex, "min_age_days": r.min_age_days, "max_age_days": r.max_age_days,
            "age_band": rules.age_band_text(r.min_age_days, r.max_age_days),
            "low": number(r.low), "high": number(r.high),
            "critical_low": number(r.critical_low), "critical_high": number(r.critical_high),
            "text": rules.range_text(r.low, r.high, a.decimals), "note": r.note,
        } for r in a.ranges],
    }


def test_json(t: LabTest, *, analytes: bool = True) -> dict:
    """A catalogue test. `value`/`label` let the list answer form lookups directly."""
    out = {
        "code": t.code, "name": t.name, "sample_type": t.sample_type,
        "sample_type_label": SAMPLE_TYPES.get(t.sample_type, t.sample_type),
        "section": t.section, "section_label": SECTIONS.get(t.section, t.section),
        "tariff_code": t.tariff_code, "active": t.active,
        "value": t.code, "label": f"{t.code} - {t.name}",
    }
    if analytes:
        out["analytes"] = [analyte_json(a) for a in t.analytes]
    return out


def result_json(r: LabResult | None, names: dict[int, str]) -> dict | None:
    if r is None:
        return None
    return {
        "id": r.id, "version": r.version, "status": r.status, "value": r.value_text,
        "units": r.units, "flag": r.flag, "critical": r.critical,
        "reference_range": r.ref_text,
        "critical_range": rules.critical_text(r.critical_low, r.critical_high, r.analyte.decimals) or None,
        "entered_at": when(r.entered_at), "entered_by": _user(r.entered_by_id, names),
        "verified_at": when(r.verified_at), "verified_by": _user(r.verified_by_id, names),
        "amends_id": r.amends_id, "amend_reason": r.amend_reason, "review_comment": r.review_comment,
    }


def _user(user_id: int | None, names: dict[int, str]) -> dict | None:
    if user_id is None:
        return None
    return {"id": user_id, "name": names.get(user_id)}


def sample_json(s: LabSample, item_ids: list[int], names: dict[int, str]) -> dict:
    return {
        "id": s.id, "label": s.label, "sample_type": s.sample_type,
        "collected_at": when(s.collected_at), "collected_by": _user(s.collected_by_id, names),
        "rejected_at": when(s.rejected_at), "rejected_by": _user(s.rejected_by_id, names),
        "rejection_reason": s.rejection_reason, "rejection_note": s.rejection_note, "item_ids": item_ids,
    }


def order_json(view: dict) -> dict:
    """An order from services.order_detail (drafts included or not, as it was read)."""
    order: LabOrder = view["order"]
    names = view["names"]
    patient = view["patient"]
    return {
        "id": order.id, "order_no": order.order_no, "business_key": order.business_key,
        "patient": {"id": patient.id, "mrn": patient.mrn, "name": patient.name, "sex": patient.sex,
                    "age": view["age"]},
        "encounter_id": order.encounter_id, "admission_id": order.admission_id,
        "priority": order.priority, "status": order.status, "status_label": view["status_label"],
        "ordered_at": when(order.ordered_at), "ordered_by": _user(order.ordered_by_id, names),
        "critical": view["critical"],
        "items": [{
            "id": i["item"].id, "test_code": i["test"].code, "name": i["test"].name,
            "tariff_code": i["test"].tariff_code, "sample_type": i["test"].sample_type,
            "status": i["status"], "status_label": i["status_label"],
            "sample_label": i["sample"].label if i["sample"] else None,
            "ordered_at": when(order.ordered_at), "collected_at": when(i["item"].collected_at),
            "verified_at": when(i["item"].verified_at),
            "tat_minutes": i["tat_minutes"], "collection_tat_minutes": i["collection_tat_minutes"],
            "lab_tat_minutes": i["lab_tat_minutes"],
            "cancelled_at": when(i["item"].cancelled_at), "cancel_reason": i["item"].cancel_reason,
            "reportable": i["reportable"], "critical": i["critical"], "amended": i["amended"],
            "results": [{
                "analyte_code": row["analyte"].code, "analyte_name": row["analyte"].name,
                "result_type": row["analyte"].result_type,
                "result": result_json(row["result"], names),
                "amended": row["amended"], "amendment_pending": row["amendment_pending"],
                "versions": [result_json(v, names) for v in row["versions"]],
            } for row in i["results"]],
        } for i in view["items"]],
        "samples": [sample_json(s["sample"], s["item_ids"], names) for s in view["samples"]],
    }


def order_row_json(order: LabOrder) -> dict:
    """An order in a list: no results."""
    return {
        "id": order.id, "order_no": order.order_no, "patient_id": order.patient_id,
        "encounter_id": order.encounter_id, "admission_id": order.admission_id,
        "priority": order.priority, "status": order.status, "ordered_at": when(order.ordered_at),
        "ordered_by_id": order.ordered_by_id,
        "items": [{"id": i.id, "test_code": i.test.code, "name": i.test.name, "status": i.status,
                   "tariff_code": i.test.tariff_code} for i in order.items],
    }


def patient_result_json(row: dict, names: dict[int, str]) -> dict:
    r: LabResult = row["result"]
    return {
        "order_id": row["order"].id, "order_no": row["order"].order_no, "order_item_id": row["item"].id,
        "test_code": row["item"].test.code, "test_name": row["item"].test.name,
        "analyte_code": row["analyte"].code, "analyte_name": row["analyte"].name,
        "collected_at": when(row["item"].collected_at),
        "amendment_pending": row["amendment_pending"], **_strip(result_json(r, names)),
    }


def _strip(data: dict[str, Any] | None) -> dict[str, Any]:
    data = dict(data or {})
    data["result_id"] = data.pop("id", None)
    return data
