"""Finance blueprint: the bills, payments and tariffs API under /api/v1, and the cashier's
pages (open bills, a bill with its payment form, the receipt as HTML and PDF).

Thin: parsing, permissions and rendering; the rules are in finance.services.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

from flask import Blueprint, Response, flash, jsonify, redirect, render_template, request, url_for
from marshmallow import ValidationError

from finance import services
from finance.models import CASH, PAYMENT_METHODS
from finance.pdf import receipt_pdf as render_receipt_pdf
from finance.schemas import (BillQuery, PayerClassIn, PaymentIn, TariffIn, TariffPriceIn, bill_json,
                             bill_summary_json, paisa_to_rupees_text, payer_class_json, payment_json,
                             rupees_to_paisa, tariff_json)
from hms.auth.permissions import define, requires, roles_for
from hms.auth.roles import ALL_ROLES
from hms.db import config_of
from hms.errors import BadRequest, Conflict, Invalid
from hms.web.context import current_actor, db_session, json_body, mark_failed, page_args

bp = Blueprint("finance", __name__, template_folder="templates")

BILLS_READ = define("finance.bills.read", "cashier", "finance_manager", "admin", "reception")
PAYMENTS_TAKE = define("finance.payments.take", "cashier", "finance_manager", "admin")
TARIFFS_READ = define("finance.tariffs.read", *sorted(ALL_ROLES))
TARIFFS_WRITE = define("finance.tariffs.write", "finance_manager", "admin")

IDEMPOTENCY_HEADER = "Idempotency-Key"


def _can(permission: str) -> bool:
    return current_actor().has_role(*roles_for(permission))


def _money(paisa: int) -> str:
    return services.format_money(paisa, config_of(db_session()).currency)


# --- JSON API: bills and payments ----------------------------------------------------------

@bp.get("/api/v1/bills")
@requires(BILLS_READ)
def api_list_bills():
    page, size = page_args()
    args = request.args.to_dict()
    args.pop("page", None)
    args.pop("size", None)
    query = BillQuery().load(args)
    items, total = services.list_bills(db_session(), patient_id=query["patient_id"],
                                       encounter_id=query["encounter_id"], admission_id=query["admission_id"],
                                       status=query["status"], page=page, size=size)
    return jsonify({"items": [bill_summary_json(b) for b in items], "page": page, "size": size, "total": total})


@bp.get("/api/v1/bills/<int:bill_id>")
@requires(BILLS_READ)
def api_get_bill(bill_id: int):
    return jsonify(bill_json(services.read_bill(db_session(), current_actor(), bill_id)))


def _refuse_json_constant(name: str):
    raise ValueError(f"{name} is not a number")


def _json_with_decimals() -> dict:
    """The request's JSON object with every non-integer number parsed as an exact Decimal
    (a float would already have lost the value the client wrote)."""
    try:
        data = json.loads(request.get_data(cache=True) or b"", parse_float=Decimal,
                          parse_constant=_refuse_json_constant)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("Send a JSON object with Content-Type: application/json.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_json")
    return data


@bp.post("/api/v1/bills/<int:bill_id>/payments")
@requires(PAYMENTS_TAKE)
def api_record_payment(bill_id: int):
    """Take a payment. Header Idempotency-Key is required; a repeat of the same request
    returns the first payment with 200 (201 when this call took it)."""
    key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
    if not key:
        raise BadRequest(f"Send an {IDEMPOTENCY_HEADER} header (a new random value per payment), so a retried "
                         "request never pays twice.", code="idempotency_key_required")
    data = PaymentIn().load(_json_with_decimals())
    amount = data["amount_paisa"] if data["amount_paisa"] is not None else data["amount"]
    payment, created = services.record_payment(db_session(), current_actor(), bill_id, amount_paisa=amount,
                                               method=data["method"], idempotency_key=key,
                                               reference=data["reference"])
    return jsonify(payment_json(payment)), 201 if created else 200


# --- JSON API: tariffs and payer classes ---------------------------------------------------

@bp.get("/api/v1/tariffs")
@requires(TARIFFS_READ)
def api_list_tariffs():
    items = services.list_tariffs(db_session(), kind=request.args.get("kind") or None, q=request.args.get("q"))
    return jsonify({"items": [tariff_json(i) for i in items]})


@bp.post("/api/v1/tariffs")
@requires(TARIFFS_WRITE)
def api_create_tariff():
    data = TariffIn().load(json_body())
    item = services.create_tariff_item(db_session(), current_actor(), code=data["code"], kind=data["kind"],
                                       description=data["description"], price_paisa=data["price_paisa"])
    return jsonify(tariff_json(item)), 201


@bp.put("/api/v1/tariffs/<code>/prices")
@requires(TARIFFS_WRITE)
def api_set_price(code: str):
    data = TariffPriceIn().load(json_body())
    session = db_session()
    price = services.set_price(session, current_actor(), code, data["payer_class"], data["price_paisa"])
    return jsonify(tariff_json(price.item))


@bp.get("/api/v1/payer-classes")
@requires(TARIFFS_READ)
def api_list_payer_classes():
    return jsonify({"items": [payer_class_json(p) for p in services.list_payer_classes(db_session())]})


@bp.post("/api/v1/payer-classes")
@requires(TARIFFS_WRITE)
def api_define_payer_class():
    data = PayerClassIn().load(json_body())
    payer = services.define_payer_class(db_session(), current_actor(), code=data["code"], name=data["name"],
                                        kind=data["kind"])
    return jsonify(payer_class_json(payer)), 201


# --- HTML pages ------------------------------------------------------------------------

@bp.get("/bills")
@requires(BILLS_READ)
def bills_page():
    page, size = page_args()
    q = (request.args.get("q") or "").strip()
    rows, total = services.list_bills_due(db_session(), q, page, size)
    return render_template("finance/bills.html", rows=rows, q=q, page=page, size=size, total=total)


def _payment_defaults(bill) -> dict:
    return {"method": CASH, "amount": paisa_to_rupees_text(max(bill.balance_paisa, 0)), "reference": "",
            # A new key per render: submitting this form twice takes one payment.
            "idempotency_key": uuid.uuid4().hex}


def _bill_page(bill_id: int, status: int = 200, **context):
    session = db_session()
    bill = services.read_bill(session, current_actor(), bill_id)
    context.setdefault("values", _payment_defaults(bill))
    context.setdefault("errors", {})
    reversed_ids = {c.reversal_of_id for c in bill.charges if c.reversal_of_id is not None}
    can_pay = _can(PAYMENTS_TAKE) and bill.is_open and bill.balance_paisa > 0
    return render_template("finance/bill.html", bill=bill, patient=services.bill_patient(session, bill),
                           payer=services.payer_class_name(session, bill.payer_class), reversed_ids=reversed_ids,
                           can_pay=can_pay, methods=[(m, services.METHOD_LABELS[m]) for m in PAYMENT_METHODS],
                           **context), status


@bp.get("/bills/<int:bill_id>")
@requires(BILLS_READ)
def bill_page(bill_id: int):
    return _bill_page(bill_id)


@bp.post("/bills/<int:bill_id>/payments")
@requires(PAYMENTS_TAKE)
def payment_submit(bill_id: int):
    form = request.form
    values = {name: (form.get(name) or "").strip() for name in ("method", "amount", "reference", "idempotency_key")}
    try:
        amount = rupees_to_paisa(values["amount"])
    except ValidationError as err:
        mark_failed()
        return _bill_page(bill_id, 422, values=values, errors={"amount": err.messages},
                          form_message="Check the amount.")
    try:
        payment, created = services.record_payment(
            db_session(), current_actor(), bill_id, amount_paisa=amount, method=values["method"],
            idempotency_key=values["idempotency_key"], reference=values["reference"] or None)
    except (Invalid, Conflict) as err:
        mark_failed()
        return _bill_page(bill_id, err.http_status, values=values, errors=err.fields, form_message=err.message)
    if created:
        flash(f"Payment recorded: receipt {payment.receipt_no}, {_money(payment.amount_paisa)}.")
    else:
        flash(f"This payment was already recorded (receipt {payment.receipt_no}); it was not taken twice.",
              "warning")
    return redirect(url_for("finance.bill_page", bill_id=bill_id))


@bp.get("/bills/<int:bill_id>/receipt")
@requires(BILLS_READ)
def receipt_page(bill_id: int):
    return render_template("finance/receipt.html", r=services.receipt(db_session(), current_actor(), bill_id))


@bp.get("/bills/<int:bill_id>/receipt.pdf")
@requires(BILLS_READ)
def receipt_pdf(bill_id: int):
    data = services.receipt(db_session(), current_actor(), bill_id)
    resp = Response(render_receipt_pdf(data), mimetype="application/pdf")
    resp.headers["Content-Disposition"] = f'inline; filename="receipt-{data["bill_no"]}.pdf"'
    resp.headers["Cache-Control"] = "no-store"
    return resp
