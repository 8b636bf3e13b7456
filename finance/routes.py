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

from finance import cashday, services
from finance.models import CASH, PAYMENT_METHODS
from finance.pdf import final_bill_pdf as render_final_pdf
from finance.pdf import receipt_pdf as render_receipt_pdf
from finance.schemas import (BillQuery, CashClosingIn, DecisionIn, DiscountIn, PackageIn, PayerClassIn, PayerIn,
                             PaymentIn, ReasonIn, ReversalIn, TariffIn, TariffPriceIn, bill_json, bill_summary_json,
                             cash_closing_json, charge_json, credit_note_json, discount_json, paisa_to_rupees_text,
                             payer_class_json, payment_json, rupees_to_paisa, tariff_json, version_json)
from hms.auth.permissions import define, requires, roles_for
from hms.auth.roles import ALL_ROLES
from hms.db import config_of
from hms.errors import BadRequest, Conflict, Forbidden, Invalid, NotFound
from hms.web.context import current_actor, db_session, json_body, mark_failed, page_args

bp = Blueprint("finance", __name__, template_folder="templates")

BILLS_READ = define("finance.bills.read", "cashier", "finance_manager", "admin", "reception")
PAYMENTS_TAKE = define("finance.payments.take", "cashier", "finance_manager", "admin")
TARIFFS_READ = define("finance.tariffs.read", *sorted(ALL_ROLES))
TARIFFS_WRITE = define("finance.tariffs.write", "finance_manager", "admin")
BILLS_MANAGE = define("finance.bills.manage", "cashier", "finance_manager", "admin")
APPROVE = define("finance.approve", "finance_manager", "admin")
CASH_CLOSE = define("finance.cash.close", "cashier", "finance_manager", "admin")

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
    session = db_session()
    return jsonify({"items": [bill_summary_json(b, services.final_totals(session, b.id)) for b in items],
                    "page": page, "size": size, "total": total})


def _bill_detail(bill_id: int) -> dict:
    session = db_session()
    bill = services.read_bill(session, current_actor(), bill_id)
    return bill_json(bill, totals=services.final_totals(session, bill.id),
                     discounts=services.list_discounts(session, bill.id),
                     credit_notes=services.list_credit_notes(session, bill.id),
                     versions=services.list_versions(session, bill.id))


@bp.get("/api/v1/bills/<int:bill_id>")
@requires(BILLS_READ)
def api_get_bill(bill_id: int):
    return jsonify(_bill_detail(bill_id))


@bp.get("/api/v1/bills/<int:bill_id>/versions")
@requires(BILLS_READ)
def api_bill_versions(bill_id: int):
    session = db_session()
    bill = services.read_bill(session, current_actor(), bill_id, view="versions")
    return jsonify({"items": [version_json(v) for v in services.list_versions(session, bill.id)]})


@bp.post("/api/v1/bills/<int:bill_id>/discounts")
@requires(BILLS_MANAGE)
def api_request_discount(bill_id: int):
    data = DiscountIn().load(_json_with_decimals())
    amount = data["amount_paisa"] if data["amount_paisa"] is not None else data["amount"]
    discount = services.request_discount(db_session(), current_actor(), bill_id, amount_paisa=amount,
                                         reason=data["reason"])
    return jsonify(discount_json(discount)), 201


@bp.post("/api/v1/discounts/<int:discount_id>/approve")
@requires(APPROVE)
def api_approve_discount(discount_id: int):
    data = DecisionIn().load(json_body())
    return jsonify(discount_json(services.approve_discount(db_session(), current_actor(), discount_id, data["note"])))


@bp.post("/api/v1/discounts/<int:discount_id>/reject")
@requires(APPROVE)
def api_reject_discount(discount_id: int):
    data = DecisionIn().load(json_body())
    return jsonify(discount_json(services.reject_discount(db_session(), current_actor(), discount_id, data["note"])))


@bp.post("/api/v1/bills/<int:bill_id>/payer")
@requires(BILLS_MANAGE)
def api_set_payer(bill_id: int):
    data = PayerIn().load(json_body())
    services.set_bill_payer(db_session(), current_actor(), bill_id, payer_class=data["payer_class"],
                            member_no=data["member_no"], verification_ref=data["verification_ref"],
                            coverage_limit_paisa=data["coverage_limit_paisa"])
    return jsonify(_bill_detail(bill_id))


@bp.post("/api/v1/bills/<int:bill_id>/package")
@requires(BILLS_MANAGE)
def api_set_package(bill_id: int):
    data = PackageIn().load(json_body())
    services.set_package(db_session(), current_actor(), bill_id, data["package_code"])
    return jsonify(_bill_detail(bill_id))


@bp.post("/api/v1/bills/<int:bill_id>/credit-approval")
@requires(APPROVE)
def api_approve_credit(bill_id: int):
    data = ReasonIn().load(json_body())
    services.approve_credit(db_session(), current_actor(), bill_id, data["reason"])
    return jsonify(_bill_detail(bill_id))


@bp.post("/api/v1/bills/<int:bill_id>/close")
@requires(BILLS_MANAGE)
def api_close_bill(bill_id: int):
    version = services.close_bill(db_session(), current_actor(), bill_id)
    return jsonify({"bill_id": bill_id, "version": version_json(version)})


@bp.post("/api/v1/bills/<int:bill_id>/reversals")
@requires(BILLS_MANAGE)
def api_reverse(bill_id: int):
    """On an open bill: reverse a line (cashier, finance manager). On a closed bill: a
    credit note and a new bill version (finance manager only)."""
    data = ReversalIn().load(json_body())
    result, created = services.reverse_bill_line(db_session(), current_actor(), bill_id, charge_id=data["charge_id"],
                                                 reason=data["reason"], quantity=data["quantity"])
    if isinstance(result, services.CreditNote):
        return jsonify({"credit_note": credit_note_json(result)}), 201
    return jsonify({"reversal": charge_json(result)}), 201 if created else 200


@bp.post("/api/v1/bills/<int:bill_id>/gate-pass")
@requires(BILLS_MANAGE)
def api_gate_pass(bill_id: int):
    return jsonify({"bill_id": bill_id,
                    "gate_pass_no": services.issue_gate_pass(db_session(), current_actor(), bill_id)})


@bp.get("/api/v1/cash-closings")
@requires(CASH_CLOSE)
def api_cash_closings():
    session, actor = db_session(), current_actor()
    day = request.args.get("date") or cashday.today(session).isoformat()
    summary = cashday.cash_day_summary(session, actor, day)
    closing = summary["closing"]
    return jsonify({"business_date": summary["business_date"], "totals": summary["totals"],
                    "expected_paisa": summary["expected_paisa"], "count": summary["count"],
                    "closing": cash_closing_json(closing) if closing else None,
                    "items": [cash_closing_json(c) for c in cashday.list_closings(session, cashier_id=actor.user_id)]})


@bp.post("/api/v1/cash-closings")
@requires(CASH_CLOSE)
def api_close_cash_day():
    data = CashClosingIn().load(json_body())
    closing = cashday.close_cash_day(db_session(), current_actor(), data["business_date"], data["counted"])
    return jsonify(cash_closing_json(closing)), 201


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
    session, actor = db_session(), current_actor()
    if data["kind"] == "deposit":
        payment, created = services.record_deposit(session, actor, bill_id, amount_paisa=amount,
                                                   method=data["method"], reference=data["reference"],
                                                   idempotency_key=key)
    elif data["kind"] == "refund":
        payment, created = services.record_refund(session, actor, bill_id, amount_paisa=amount,
                                                  method=data["method"], reference=data["reference"],
                                                  idempotency_key=key, reason=data["reason"])
    else:
        payment, created = services.record_payment(session, actor, bill_id, amount_paisa=amount,
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
    totals = services.final_totals(session, bill.id)
    can_pay = _can(PAYMENTS_TAKE) and bill.is_open and totals.patient_balance_paisa > 0
    problem = services.close_problem(totals)
    return render_template("finance/bill.html", bill=bill, patient=services.bill_patient(session, bill),
                           payer=services.payer_class_name(session, bill.payer_class), reversed_ids=reversed_ids,
                           can_pay=can_pay, methods=[(m, services.METHOD_LABELS[m]) for m in PAYMENT_METHODS],
                           totals=totals, close_problem=problem, source_label=services.source_label,
                           discounts=services.list_discounts(session, bill.id),
                           credit_notes=services.list_credit_notes(session, bill.id),
                           versions=services.list_versions(session, bill.id),
                           receivable=services.get_receivable(session, bill.id),
                           can_manage=_can(BILLS_MANAGE), can_approve=_can(APPROVE),
                           payer_classes=services.list_payer_classes(session),
                           packages=services.list_tariffs(session, kind="package"), **context), status


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


def _bill_action(bill_id: int, action, done: str):
    """Run a bill page action; on a refusal roll back and show its message on the bill page."""
    try:
        result = action()
    except (Invalid, Conflict, Forbidden, NotFound) as err:
        mark_failed()
        flash(err.message, "error")
    else:
        flash(done(result) if callable(done) else done)
    return redirect(url_for("finance.bill_page", bill_id=bill_id))


def _form_paisa(name: str = "amount") -> int:
    try:
        return rupees_to_paisa((request.form.get(name) or "").strip())
    except ValidationError as err:
        raise Invalid(" ".join(err.messages), fields={name: err.messages}) from None


@bp.post("/bills/<int:bill_id>/deposits")
@requires(PAYMENTS_TAKE)
def deposit_submit(bill_id: int):
    form = request.form
    return _bill_action(bill_id, lambda: services.record_deposit(
        db_session(), current_actor(), bill_id, amount_paisa=_form_paisa(), method=form.get("method") or CASH,
        reference=(form.get("reference") or "").strip() or None,
        idempotency_key=(form.get("idempotency_key") or "").strip() or None),
        lambda r: f"Deposit recorded: receipt {r[0].receipt_no}.")


@bp.post("/bills/<int:bill_id>/refunds")
@requires(PAYMENTS_TAKE)
def refund_submit(bill_id: int):
    form = request.form
    return _bill_action(bill_id, lambda: services.record_refund(
        db_session(), current_actor(), bill_id, amount_paisa=_form_paisa(), method=form.get("method") or CASH,
        reference=(form.get("reference") or "").strip() or None, reason=form.get("reason"),
        idempotency_key=(form.get("idempotency_key") or "").strip() or None),
        lambda r: f"Refund paid: receipt {r[0].receipt_no}.")


@bp.post("/bills/<int:bill_id>/discounts")
@requires(BILLS_MANAGE)
def discount_submit(bill_id: int):
    return _bill_action(bill_id, lambda: services.request_discount(
        db_session(), current_actor(), bill_id, amount_paisa=_form_paisa(), reason=request.form.get("reason")),
        lambda d: "Discount approved." if d.status == "approved" else "Discount waits for a finance manager.")


@bp.post("/bills/<int:bill_id>/discounts/<int:discount_id>/<any(approve, reject):decision>")
@requires(APPROVE)
def discount_decide(bill_id: int, discount_id: int, decision: str):
    fn = services.approve_discount if decision == "approve" else services.reject_discount
    return _bill_action(bill_id, lambda: fn(db_session(), current_actor(), discount_id, request.form.get("note")),
                        f"Discount {decision}d.")


@bp.post("/bills/<int:bill_id>/payer")
@requires(BILLS_MANAGE)
def payer_submit(bill_id: int):
    form = request.form

    def act():
        limit = (form.get("coverage_limit") or "").strip()
        return services.set_bill_payer(db_session(), current_actor(), bill_id, payer_class=form.get("payer_class"),
                                       member_no=form.get("member_no") or None,
                                       verification_ref=form.get("verification_ref") or None,
                                       coverage_limit_paisa=_form_paisa("coverage_limit") if limit else None)
    return _bill_action(bill_id, act, "Payer saved.")


@bp.post("/bills/<int:bill_id>/package")
@requires(BILLS_MANAGE)
def package_submit(bill_id: int):
    return _bill_action(bill_id, lambda: services.set_package(db_session(), current_actor(), bill_id,
                                                              request.form.get("package_code") or None),
                        "Package saved.")


@bp.post("/bills/<int:bill_id>/credit-approval")
@requires(APPROVE)
def credit_submit(bill_id: int):
    return _bill_action(bill_id, lambda: services.approve_credit(db_session(), current_actor(), bill_id,
                                                                 request.form.get("reason")),
                        "Credit approved: the bill can close with the balance owed.")


@bp.post("/bills/<int:bill_id>/close")
@requires(BILLS_MANAGE)
def close_submit(bill_id: int):
    return _bill_action(bill_id, lambda: services.close_bill(db_session(), current_actor(), bill_id),
                        "Bill closed (version 1).")


@bp.post("/bills/<int:bill_id>/reversals")
@requires(BILLS_MANAGE)
def reversal_submit(bill_id: int):
    form = request.form

    def act():
        qty = (form.get("quantity") or "").strip()
        if qty and not qty.isdigit():
            raise Invalid("The quantity is a whole number.", fields={"quantity": ["a whole number"]})
        return services.reverse_bill_line(db_session(), current_actor(), bill_id, charge_id=form.get("charge_id", type=int),
                                          reason=form.get("reason"), quantity=int(qty) if qty else None)
    return _bill_action(bill_id, act, "Line credited.")


@bp.post("/bills/<int:bill_id>/gate-pass")
@requires(BILLS_MANAGE)
def gate_pass_submit(bill_id: int):
    return _bill_action(bill_id, lambda: services.issue_gate_pass(db_session(), current_actor(), bill_id),
                        lambda no: f"Gate pass {no} issued.")


@bp.get("/finance/bills/<int:bill_id>/final.pdf")
@requires(BILLS_READ)
def final_bill_pdf(bill_id: int):
    data = services.final_bill(db_session(), current_actor(), bill_id)
    resp = Response(render_final_pdf(data), mimetype="application/pdf")
    resp.headers["Content-Disposition"] = f'inline; filename="bill-{data["bill_no"]}-{data["stage"].lower()}.pdf"'
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/finance/closing")
@requires(BILLS_MANAGE)
def closing_page():
    page, size = page_args()
    session = db_session()
    rows, total = services.list_awaiting_closure(session, page, size)
    items = [(bill, patient, services.final_totals(session, bill.id)) for bill, patient in rows]
    return render_template("finance/closing.html", items=items, page=page, size=size, total=total,
                           topups=services.list_open_topups(session))


@bp.get("/finance/cash-closing")
@requires(CASH_CLOSE)
def cash_closing_page():
    session, actor = db_session(), current_actor()
    day = request.args.get("date") or cashday.today(session).isoformat()
    try:
        summary = cashday.cash_day_summary(session, actor, day)
    except Invalid as err:
        flash(err.message, "error")
        return redirect(url_for("finance.cash_closing_page"))
    return render_template("finance/cash_closing.html", summary=summary,
                           methods=[(m, services.METHOD_LABELS[m]) for m in PAYMENT_METHODS],
                           closings=cashday.list_closings(session, cashier_id=actor.user_id))


@bp.post("/finance/cash-closing")
@requires(CASH_CLOSE)
def cash_closing_submit():
    form = request.form
    day = (form.get("business_date") or "").strip()
    try:
        counted = {}
        for method in PAYMENT_METHODS:
            text = (form.get(f"counted_{method}") or "").strip()
            if text and text not in ("0", "0.00"):
                counted[method] = _form_paisa(f"counted_{method}")
        closing = cashday.close_cash_day(db_session(), current_actor(), day, counted)
    except (Invalid, Conflict, Forbidden) as err:
        mark_failed()
        flash(err.message, "error")
    else:
        flash(f"Cash day {closing.business_date.isoformat()} closed; variance {_money(closing.variance_paisa)}.")
    return redirect(url_for("finance.cash_closing_page", date=day or None))
