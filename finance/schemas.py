"""Marshmallow shapes for finance: API input and output, and the parameters of the
service-task operations. Input schemas check shape and types; the rules (prices, balances,
bill states) are in finance.services, so the API, the pages and the pathways refuse alike.

Money arrives either as integer paisa ("amount_paisa", "price_paisa") or, for people, as
rupees ("amount": 1500, "1500.50") converted exactly with Decimal: at most two decimal
places, never through a float.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from finance.models import (BILL_STATUSES, CHARGE_KINDS, PAYMENT_KINDS, PAYMENT_METHODS, PAYER_KINDS, TARIFF_KINDS,
                            Bill, BillDiscount, BillVersion, Charge, CreditNote, Payment, TariffItem)

MAX_RUPEES = Decimal(10_000_000_000)  # 10 billion rupees: a typo, not a payment
RUPEES_TEXT = re.compile(r"^\d+(\.\d+)?$")


def rupees_to_paisa(value) -> int:
    """1500 -> 150000; "1500.50" -> 150050; Decimal("0.5") -> 50. ValidationError for
    more than two decimal places, negatives, floats, booleans and anything not a number.

    JSON numbers reach here as int or Decimal (the API parses floats as Decimal); a Python
    float is refused, because its value is already not the one the client wrote."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValidationError("Send the amount as a whole number or a decimal string, e.g. 1500 or \"1500.50\".")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str):
        text = value.strip().replace(",", "")
        if not RUPEES_TEXT.match(text):
            raise ValidationError("Enter the amount in rupees, e.g. 1500 or 1500.50.")
        amount = Decimal(text)
    else:
        raise ValidationError("Enter the amount in rupees, e.g. 1500 or 1500.50.")
    try:
        if not amount.is_finite():
            raise ValidationError("Enter the amount in rupees, e.g. 1500 or 1500.50.")
        paisa = amount * 100
        if paisa != paisa.to_integral_value():
            raise ValidationError("Rupees have at most two decimal places (paisa).")
    except InvalidOperation:
        raise ValidationError("Enter the amount in rupees, e.g. 1500 or 1500.50.") from None
    if amount <= 0:
        raise ValidationError("The amount must be more than zero.")
    if amount > MAX_RUPEES:
        raise ValidationError("The amount is too large.")
    return int(paisa)


def paisa_to_rupees_text(paisa: int) -> str:
    """150050 -> "1500.50" (for prefilling an amount input)."""
    sign = "-" if paisa < 0 else ""
    rupees, rest = divmod(abs(int(paisa)), 100)
    return f"{sign}{rupees}.{rest:02d}"


class Rupees(fields.Field):
    """An amount in rupees in, integer paisa out."""

    def _deserialize(self, value, attr, data, **kwargs):
        return rupees_to_paisa(value)


class Paisa(fields.Integer):
    """Integer paisa: a JSON integer only (no strings, floats or booleans)."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, validate=validate.Range(min=0), **kwargs)

    def _validated(self, value):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._validated(value)


def _code(**kwargs):
    return fields.String(validate=validate.Length(min=1, max=40), **kwargs)


# --- API input -----------------------------------------------------------------------------

class PaymentIn(Schema):
    """POST /api/v1/bills/<id>/payments: "amount" in rupees or "amount_paisa", not both."""

    amount = Rupees(load_default=None)
    amount_paisa = Paisa(load_default=None)
    method = fields.String(required=True, validate=validate.OneOf(PAYMENT_METHODS))
    reference = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=80))
    kind = fields.String(load_default="payment", validate=validate.OneOf(PAYMENT_KINDS))
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=300))

    @validates_schema
    def _one_amount(self, data, **kwargs):
        if data.get("amount") is None and data.get("amount_paisa") is None:
            raise ValidationError("Give the amount (rupees) or amount_paisa.", field_name="amount")
        if data.get("amount") is not None and data.get("amount_paisa") is not None:
            raise ValidationError("Give the amount or amount_paisa, not both.", field_name="amount")


class DiscountIn(Schema):
    """POST /api/v1/bills/<id>/discounts: "amount" in rupees or "amount_paisa"; a reason."""

    amount = Rupees(load_default=None)
    amount_paisa = Paisa(load_default=None)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=300))

    @validates_schema
    def _one_amount(self, data, **kwargs):
        PaymentIn._one_amount(self, data)


class DecisionIn(Schema):
    """POST /api/v1/discounts/<id>/approve | reject."""

    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=300))


class ReasonIn(Schema):
    """POST /api/v1/bills/<id>/credit-approval."""

    reason = fields.String(required=True, validate=validate.Length(min=1, max=300))


class PayerIn(Schema):
    """POST /api/v1/bills/<id>/payer."""

    payer_class = _code(required=True)
    member_no = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=20))
    verification_ref = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=80))
    coverage_limit_paisa = Paisa(load_default=None, allow_none=True)


class PackageIn(Schema):
    """POST /api/v1/bills/<id>/package (null removes the package)."""

    package_code = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=40))


class ReversalIn(Schema):
    """POST /api/v1/bills/<id>/reversals."""

    charge_id = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=2**31 - 1))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=300))
    quantity = fields.Integer(load_default=None, allow_none=True, strict=True,
                              validate=validate.Range(min=1, max=10_000))


class CashClosingIn(Schema):
    """POST /api/v1/cash-closings: counted paisa per method."""

    business_date = fields.Date(required=True)
    counted = fields.Dict(keys=fields.String(validate=validate.OneOf(PAYMENT_METHODS)), values=Paisa(),
                          required=True)


class BillQuery(Schema):
    """GET /api/v1/bills filters."""

    patient_id = fields.Integer(load_default=None, validate=validate.Range(min=1, max=2**31 - 1))
    encounter_id = fields.Integer(load_default=None, validate=validate.Range(min=1, max=2**31 - 1))
    admission_id = fields.Integer(load_default=None, validate=validate.Range(min=1, max=2**31 - 1))
    status = fields.String(load_default=None, validate=validate.OneOf(BILL_STATUSES))
    page = fields.Integer(load_default=None)
    size = fields.Integer(load_default=None)


class TariffIn(Schema):
    """POST /api/v1/tariffs; `price_paisa` is the cash price."""

    code = _code(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(TARIFF_KINDS))
    description = fields.String(required=True, validate=validate.Length(min=1, max=200))
    price_paisa = Paisa(load_default=None)


class TariffPriceIn(Schema):
    """PUT /api/v1/tariffs/<code>/prices."""

    payer_class = _code(required=True)
    price_paisa = Paisa(required=True)


class PayerClassIn(Schema):
    """POST /api/v1/payer-classes."""

    code = _code(required=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=120))
    kind = fields.String(load_default="panel", validate=validate.OneOf([k for k in PAYER_KINDS if k != "cash"]))


# --- API output ----------------------------------------------------------------------------

class ChargeOut(Schema):
    id = fields.Integer()
    source_ref = fields.String()
    kind = fields.String()
    tariff_code = fields.String(allow_none=True)
    description = fields.String()
    quantity = fields.Integer()
    unit_price_paisa = fields.Integer()
    amount_paisa = fields.Integer()
    reversal_of_id = fields.Integer(allow_none=True)
    credit_of_id = fields.Integer(allow_none=True)
    half_day = fields.Boolean()
    reason = fields.String(allow_none=True)
    posted_at = fields.DateTime()
    posted_by = fields.String(attribute="posted_by_name")
    source = fields.Method("_source")

    def _source(self, charge):
        from finance.services import source_label
        return source_label(charge.source_ref)


class PaymentOut(Schema):
    id = fields.Integer()
    bill_id = fields.Integer()
    receipt_no = fields.String()
    amount_paisa = fields.Integer()
    method = fields.String()
    reference = fields.String(allow_none=True)
    kind = fields.String()
    reason = fields.String(allow_none=True)
    cash_closing_id = fields.Integer(allow_none=True)
    at = fields.DateTime(attribute="received_at")
    by = fields.String(attribute="received_by_name")


class DiscountOut(Schema):
    id = fields.Integer()
    bill_id = fields.Integer()
    amount_paisa = fields.Integer()
    reason = fields.String()
    status = fields.String()
    requested_by = fields.String(attribute="requested_by_name")
    requested_at = fields.DateTime()
    decided_by = fields.String(attribute="decided_by_name", allow_none=True)
    decided_at = fields.DateTime(allow_none=True)
    decision_note = fields.String(allow_none=True)


class CreditNoteOut(Schema):
    id = fields.Integer()
    credit_note_no = fields.String()
    charge_id = fields.Integer()
    quantity = fields.Integer()
    amount_paisa = fields.Integer()
    reason = fields.String()
    bill_version_no = fields.Integer()
    created_at = fields.DateTime()
    created_by = fields.String(attribute="created_by_name")


class BillVersionOut(Schema):
    version_no = fields.Integer()
    reason = fields.String()
    totals = fields.Dict()
    created_at = fields.DateTime()
    created_by = fields.String(attribute="created_by_name")


class BillSummaryOut(Schema):
    id = fields.Integer()
    bill_no = fields.String()
    patient_id = fields.Integer()
    encounter_id = fields.Integer(allow_none=True)
    admission_id = fields.Integer(allow_none=True)
    payer_class = fields.String()
    status = fields.String()
    version = fields.Integer()
    opened_at = fields.DateTime()
    total_paisa = fields.Integer(attribute="charges_paisa")
    paid_paisa = fields.Integer()
    balance_paisa = fields.Integer()
    package_code = fields.String(allow_none=True)
    coverage_limit_paisa = fields.Integer(allow_none=True)
    payer_verification_ref = fields.String(allow_none=True)
    final_requested_at = fields.DateTime(allow_none=True)
    closed_at = fields.DateTime(allow_none=True)
    gate_pass_no = fields.String(allow_none=True)


class BillOut(BillSummaryOut):
    lines = fields.List(fields.Nested(ChargeOut), attribute="charges")
    payments = fields.List(fields.Nested(PaymentOut))


def bill_json(bill: Bill, *, totals=None, discounts=(), credit_notes=(), versions=()) -> dict:
    data = BillOut().dump(bill)
    if totals is not None:
        data["totals"] = totals.as_dict()
        data["stage"] = totals.stage
    data["discounts"] = DiscountOut(many=True).dump(discounts)
    data["credit_notes"] = CreditNoteOut(many=True).dump(credit_notes)
    data["versions"] = BillVersionOut(many=True).dump(versions)
    return data


def bill_summary_json(bill: Bill, totals=None) -> dict:
    data = BillSummaryOut().dump(bill)
    if totals is not None:
        data["totals"] = totals.as_dict()
        data["stage"] = totals.stage
    return data


def discount_json(discount: BillDiscount) -> dict:
    return DiscountOut().dump(discount)


def credit_note_json(note: CreditNote) -> dict:
    return CreditNoteOut().dump(note)


def version_json(version: BillVersion) -> dict:
    return BillVersionOut().dump(version)


def cash_closing_json(closing) -> dict:
    return {"id": closing.id, "cashier_id": closing.cashier_id, "cashier": closing.cashier_name,
            "business_date": closing.business_date.isoformat(), "totals": closing.totals,
            "counted": closing.counted, "expected_paisa": closing.expected_paisa,
            "counted_paisa": closing.counted_paisa, "variance_paisa": closing.variance_paisa,
            "payment_count": closing.payment_count, "closed_at": closing.closed_at.isoformat()}


def payment_json(payment: Payment) -> dict:
    return PaymentOut().dump(payment)


def charge_json(charge: Charge) -> dict:
    return ChargeOut().dump(charge)


def tariff_json(item: TariffItem) -> dict:
    return {"code": item.code, "kind": item.kind, "description": item.description, "active": item.active,
            "prices": {p.payer_class: p.price_paisa for p in item.prices}}


def payer_class_json(payer) -> dict:
    return {"code": payer.code, "name": payer.name, "kind": payer.kind, "active": payer.active}


# --- operation parameters ------------------------------------------------------------------

def _id(**kwargs):
    return fields.Integer(strict=True, validate=validate.Range(min=1, max=2**31 - 1), **kwargs)


class OpenBillParams(Schema):
    patient_id = _id(required=True)
    encounter_id = _id(load_default=None, allow_none=True)
    admission_id = _id(load_default=None, allow_none=True)
    payer_class = fields.String(load_default="cash", allow_none=True, validate=validate.Length(min=1, max=40))


class ConsultationChargeParams(Schema):
    bill_id = _id(required=True)
    encounter_id = _id(required=True)
    department_code = fields.String(required=True, validate=validate.Length(min=1, max=20))
    doctor_id = _id(load_default=None, allow_none=True)


class ChargeLineParams(Schema):
    source_ref = fields.String(required=True, validate=validate.Length(min=1, max=111))
    kind = fields.String(required=True, validate=validate.OneOf(CHARGE_KINDS))
    description = fields.String(required=True, validate=validate.Length(min=1, max=200))
    quantity = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=10_000))
    tariff_code = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=40))
    unit_price_paisa = Paisa(load_default=None, allow_none=True)
    half_day = fields.Boolean(load_default=False, allow_none=True)

    @validates_schema
    def _priced_once(self, data, **kwargs):
        if data.get("tariff_code") is None and data.get("unit_price_paisa") is None:
            raise ValidationError("required when there is no tariff_code", field_name="unit_price_paisa")
        if data.get("tariff_code") is not None and data.get("unit_price_paisa") is not None:
            raise ValidationError("not allowed with a tariff_code", field_name="unit_price_paisa")


class PostChargesParams(Schema):
    bill_id = _id(required=True)
    charges = fields.List(fields.Nested(ChargeLineParams), required=True, validate=validate.Length(max=500))


class ReverseChargeParams(Schema):
    source_ref = fields.String(required=True, validate=validate.Length(min=1, max=111))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=300))


class BillStatusParams(Schema):
    bill_id = _id(required=True)


class BillIdParams(Schema):
    bill_id = _id(required=True)


class SetPayerParams(Schema):
    bill_id = _id(required=True)
    payer_class = fields.String(required=True, validate=validate.Length(min=1, max=40))
    member_no = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=20))
    verification_ref = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=80))
    coverage_limit_paisa = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=0))


class DepositParams(Schema):
    bill_id = _id(required=True)
    amount_paisa = fields.Integer(required=True, validate=validate.Range(min=0))
    method = fields.String(load_default="cash", allow_none=True, validate=validate.OneOf(PAYMENT_METHODS))
    reference = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=80))


class NoParams(Schema):
    pass
