"""Shapes of the pharmacy API and of the inventory operations' parameters.

Input schemas check shape and types; the rules (codes, expiry, prices, stock, allergies)
live in inventory.services, so the API, the pages and the BPMN operations give the same
answers. Money is integer paisa.
"""

from __future__ import annotations

from datetime import date, datetime

from marshmallow import Schema, fields, validate

from inventory.models import Batch, GoodsReceipt, Item, StockMovement

_ID = validate.Range(min=1, max=2**31 - 1)
_QUANTITY = validate.Range(min=1, max=1_000_000)


def _optional_text(max_len: int) -> fields.String:
    return fields.String(load_default=None, allow_none=True, validate=validate.Length(max=max_len))


# --- input -------------------------------------------------------------------------------

class ItemIn(Schema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=20))
    generic_name = fields.String(required=True, validate=validate.Length(min=1, max=120))
    brand = _optional_text(120)
    form = fields.String(required=True)
    strength = _optional_text(40)
    unit = fields.String(required=True)
    substance = fields.String(required=True, validate=validate.Length(min=1, max=120))
    drug_class = fields.String(data_key="class", load_default=None, allow_none=True,
                               validate=validate.Length(max=60))
    reorder_level = fields.Integer(strict=True, load_default=0, validate=validate.Range(min=0, max=1_000_000))
    active = fields.Boolean(load_default=True)


class ReceiptLineIn(Schema):
    item_code = fields.String(required=True)
    batch_no = fields.String(required=True)
    expiry = fields.Date(required=True)
    quantity = fields.Integer(required=True, strict=True, validate=_QUANTITY)
    cost_price_paisa = fields.Integer(required=True, strict=True)
    sale_price_paisa = fields.Integer(required=True, strict=True)


class ReceiptIn(Schema):
    supplier = fields.String(required=True)
    invoice_no = fields.String(required=True)
    lines = fields.List(fields.Nested(ReceiptLineIn), required=True, validate=validate.Length(min=1, max=200))


class AdjustmentIn(Schema):
    batch_id = fields.Integer(required=True, strict=True, validate=_ID)
    quantity = fields.Integer(required=True, strict=True)
    reason = fields.String(required=True)
    note = _optional_text(200)


class DispenseLineIn(Schema):
    item_code = fields.String(required=True, validate=validate.Length(min=1, max=20))
    quantity = fields.Integer(required=True, strict=True, validate=_QUANTITY)
    prescription_item_id = fields.Integer(strict=True, load_default=None, allow_none=True, validate=_ID)
    prescribed_quantity = fields.Integer(strict=True, load_default=None, allow_none=True, validate=_QUANTITY)


class DispenseParams(Schema):
    """Body of POST /dispenses (and, with zero quantities allowed, the operation's parameters)."""

    patient_id = fields.Integer(required=True, strict=True, validate=_ID)
    prescription_ref = fields.String(required=True, validate=validate.Length(min=1, max=60))
    lines = fields.List(fields.Nested(DispenseLineIn), required=True, validate=validate.Length(min=1, max=50))
    partial_reason = _optional_text(300)
    allergy_override_reason = _optional_text(500)
    # An issue to a ward: the admission (prescription_ref "admission:<id>...").
    admission_id = fields.Integer(strict=True, load_default=None, allow_none=True, validate=_ID)


class DispenseTaskLineIn(DispenseLineIn):
    """A line as the dispense task form gives it: quantity 0 means "not dispensed now"."""

    quantity = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=1_000_000))


class DispenseOperationParams(DispenseParams):
    """Parameters of the operation inventory.dispense: the task form's lines, zero ones allowed."""

    lines = fields.List(fields.Nested(DispenseTaskLineIn), required=True, validate=validate.Length(min=1, max=50))


class CheckAllergiesParams(Schema):
    """Parameters of the operation inventory.check_allergies."""

    patient_id = fields.Integer(required=True, strict=True, validate=_ID)
    item_codes = fields.List(fields.String(validate=validate.Length(min=1, max=20)), required=True,
                             validate=validate.Length(max=50))


class ReturnParams(Schema):
    """Parameters of the operation inventory.return_items and body of POST /returns."""

    dispense_line_id = fields.Integer(required=True, strict=True, validate=_ID)
    quantity = fields.Integer(required=True, strict=True, validate=_QUANTITY)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=200))


class DispenseIdParams(Schema):
    """Parameters of inventory.accept_ward_issue and inventory.ward_issue_info."""

    dispense_id = fields.Integer(required=True, strict=True, validate=_ID)


class AdmissionParams(Schema):
    """Parameters of inventory.pending_returns, issued_on_hand and ward_blockers."""

    admission_id = fields.Integer(required=True, strict=True, validate=_ID)


class ReturnRequestLineIn(Schema):
    """A row of the nurse's discharge form: quantity 0 means "used up, nothing to send"."""

    dispense_line_id = fields.Integer(required=True, strict=True, validate=_ID)
    quantity = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=1_000_000))
    reason = _optional_text(200)


class RequestReturnsParams(AdmissionParams):
    """Parameters of inventory.request_returns."""

    lines = fields.List(fields.Nested(ReturnRequestLineIn), required=True, validate=validate.Length(max=50))


class ReceiveLineIn(Schema):
    ward_return_id = fields.Integer(required=True, strict=True, validate=_ID)
    received_quantity = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=1_000_000))
    note = _optional_text(200)


class ReceiveReturnsParams(AdmissionParams):
    """Parameters of inventory.receive_returns."""

    lines = fields.List(fields.Nested(ReceiveLineIn), required=True, validate=validate.Length(max=50))


class WardReturnIn(Schema):
    """Body of POST /api/v1/pharmacy/returns."""

    admission_id = fields.Integer(required=True, strict=True, validate=_ID)
    dispense_line_id = fields.Integer(required=True, strict=True, validate=_ID)
    quantity = fields.Integer(required=True, strict=True, validate=_QUANTITY)
    reason = _optional_text(200)


class WardReceiveIn(Schema):
    """Body of POST /api/v1/pharmacy/returns/<id>/receive."""

    received_quantity = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=1_000_000))
    note = _optional_text(200)


class PrescriptionItemIn(Schema):
    item_code = fields.String(required=True, validate=validate.Length(min=1, max=20))


class PrescriptionCheckIn(Schema):
    patient_id = fields.Integer(required=True, strict=True, validate=_ID)
    items = fields.List(fields.Nested(PrescriptionItemIn), required=True, validate=validate.Length(max=50))


# --- output ------------------------------------------------------------------------------

def _iso(value: date | datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def item_json(row: dict) -> dict:
    """An item with its stock (a row of services.search_items / item_stock)."""
    item: Item = row["item"]
    return {
        "code": item.code, "generic_name": item.generic_name, "brand": item.brand, "name": item.display_name,
        "form": item.form, "strength": item.strength, "unit": item.unit, "substance": item.substance,
        "class": item.drug_class, "reorder_level": item.reorder_level, "active": item.active,
        "stock_on_hand": row["stock_on_hand"], "expired_on_hand": row["expired_on_hand"],
        "near_expiry": _iso(row["near_expiry"]), "reorder": row["reorder"],
        # For form lookups (hms/web/templates/forms.html reads value and label).
        "value": item.code, "label": f"{item.code} · {item.display_name}",
    }


def batch_json(batch: Batch, status: str) -> dict:
    return {"id": batch.id, "item_code": batch.item.code, "batch_no": batch.batch_no,
            "expiry_date": _iso(batch.expiry_date), "status": status,
            "quantity_received": batch.quantity_received, "quantity_on_hand": batch.quantity_on_hand,
            "cost_price_paisa": batch.cost_price_paisa, "sale_price_paisa": batch.sale_price_paisa,
            "received_at": _iso(batch.received_at), "receipt_id": batch.receipt_id}


def movement_json(m: StockMovement) -> dict:
    return {"id": m.id, "batch_id": m.batch_id, "batch_no": m.batch.batch_no, "item_code": m.item.code,
            "kind": m.kind, "quantity": m.quantity, "balance_after": m.balance_after, "reason": m.reason,
            "note": m.note, "reference": m.reference, "actor": m.actor_name, "at": _iso(m.at)}


def receipt_json(receipt: GoodsReceipt, statuses: dict[int, str]) -> dict:
    return {"id": receipt.id, "kind": receipt.kind, "supplier": receipt.supplier, "invoice_no": receipt.invoice_no,
            "received_at": _iso(receipt.received_at), "total_cost_paisa": receipt.total_cost_paisa,
            "batches": [batch_json(b, statuses[b.id]) for b in receipt.batches]}


def dispense_json(data: dict) -> dict:
    """services.get_dispense with its times as ISO strings."""
    out = dict(data)
    out["dispensed_at"] = _iso(data["dispensed_at"])
    out["ward_accepted_at"] = _iso(data.get("ward_accepted_at"))
    out["returns"] = [{**r, "returned_at": _iso(r["returned_at"])} for r in data["returns"]]
    return out
