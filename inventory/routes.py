"""Pharmacy blueprint: the JSON API under /api/v1/inventory (and the prescription allergy
check) and the pharmacy pages (stock, item, goods receipt, dispensing). Thin: parsing,
permissions and rendering; the rules are in inventory.services.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for

from hms.auth.permissions import define, requires, roles_for
from hms.auth.roles import CLINICIANS
from hms.errors import Conflict, HmsError, Invalid, NotFound
from hms.patients.services import get_patient, patient_banner
from hms.web.context import current_actor, db_session, json_body, mark_failed, page_args
from inventory import services, ward_issues
from inventory.models import ADJUSTMENT_REASONS, FORMS, UNITS
from inventory.schemas import (AdjustmentIn, DispenseParams, ItemIn, PrescriptionCheckIn, ReceiptIn, ReturnParams,
                               WardReceiveIn, WardReturnIn, batch_json, dispense_json, item_json, movement_json,
                               receipt_json)

bp = Blueprint("inventory", __name__, template_folder="templates")

ITEMS_READ = define("inventory.items.read", *sorted(CLINICIANS | {"cashier", "admin"}))
STOCK_MANAGE = define("inventory.stock.manage", "pharmacist", "admin")
DISPENSE = define("inventory.dispense", "pharmacist", "admin")
DISPENSE_READ = define("inventory.dispenses.read", "pharmacist", "doctor", "nurse", "cashier", "admin")
LEDGER_READ = define("inventory.ledger.read", "pharmacist", "finance_manager", "admin")
PRESCRIPTION_CHECK = define("inventory.prescriptions.check", "doctor", "pharmacist", "nurse", "admin")
WARD_PHARMACY_READ = define("inventory.ward_pharmacy.read", "nurse", "pharmacist", "doctor", "admin")
WARD_ISSUE_ACCEPT = define("inventory.ward_issues.accept", "nurse", "admin")
WARD_RETURN_SEND = define("inventory.ward_returns.send", "nurse", "admin")
WARD_RETURN_RECEIVE = define("inventory.ward_returns.receive", "pharmacist", "admin")

ADJUSTMENT_LABELS = {"damaged": "Damaged", "expired_write_off": "Expired write-off",
                     "count_correction": "Count correction"}
BLANK_ROWS = 3
MAX_FORM_ROWS = 50
_ROW_KEY = re.compile(r"^lines-(\d{1,3})-(\w+)$")


def _can(permission: str) -> bool:
    return current_actor().has_role(*roles_for(permission))


# --- JSON API ----------------------------------------------------------------------------

@bp.get("/api/v1/inventory/items")
@requires(ITEMS_READ)
def api_items():
    page, size = page_args()
    rows, total = services.search_items(db_session(), request.args.get("q"), page, size,
                                        stock_filter=request.args.get("filter") or None)
    return jsonify({"items": [item_json(r) for r in rows], "page": page, "size": size, "total": total})


@bp.get("/api/v1/inventory/items/<code>")
@requires(ITEMS_READ)
def api_item(code: str):
    session = db_session()
    item = services.get_item(session, code)
    batches, _ = services.list_batches(session, item.code, in_stock_only=True, size=500)
    today = services.today_local(session)
    return jsonify({**item_json(services.item_stock(session, item)),
                    "batches": [batch_json(b, services.batch_status(b, today)) for b in batches]})


@bp.post("/api/v1/inventory/items")
@requires(STOCK_MANAGE)
def api_create_item():
    session = db_session()
    item = services.create_item(session, current_actor(), ItemIn().load(json_body()))
    resp = jsonify(item_json(services.item_stock(session, item)))
    resp.status_code = 201
    resp.headers["Location"] = url_for("inventory.api_item", code=item.code)
    return resp


@bp.post("/api/v1/inventory/receipts")
@requires(STOCK_MANAGE)
def api_receive():
    session = db_session()
    data = ReceiptIn().load(json_body())
    receipt = services.receive_goods(session, current_actor(), supplier=data["supplier"],
                                     invoice_no=data["invoice_no"], lines=data["lines"])
    today = services.today_local(session)
    return jsonify(receipt_json(receipt, {b.id: services.batch_status(b, today) for b in receipt.batches})), 201


@bp.get("/api/v1/inventory/batches")
@requires(ITEMS_READ)
def api_batches():
    page, size = page_args(default_size=50)
    session = db_session()
    in_stock = request.args.get("in_stock", "").lower() in ("1", "true", "yes")
    batches, total = services.list_batches(session, request.args.get("item_code") or None,
                                           in_stock_only=in_stock, page=page, size=size)
    today = services.today_local(session)
    return jsonify({"items": [batch_json(b, services.batch_status(b, today)) for b in batches],
                    "page": page, "size": size, "total": total})


@bp.post("/api/v1/inventory/adjustments")
@requires(STOCK_MANAGE)
def api_adjust():
    data = AdjustmentIn().load(json_body())
    movement = services.adjust_stock(db_session(), current_actor(), **data)
    return jsonify(movement_json(movement)), 201


def dispense_refusal(outcome: dict) -> HmsError:
    """The API's refusal for a dispense that was not done: 422 allergy_alert or
    unknown_item, 409 insufficient_stock, exceeds_prescription or prescription_mismatch;
    the problems are in fields["problems"]."""
    problems = outcome["problems"]
    codes = [p["code"] for p in problems]
    message = " ".join(p["message"] for p in problems)
    fields = {"problems": problems}
    if "allergy" in codes:
        return Invalid(message, code="allergy_alert", fields=fields)
    if "unknown_item" in codes or "inactive_item" in codes:
        return Invalid(message, code="unknown_item", fields=fields)
    if "insufficient_stock" in codes:
        return Conflict(message, code="insufficient_stock", fields=fields)
    return Conflict(message, code=codes[0], fields=fields)


@bp.post("/api/v1/inventory/dispenses")
@requires(DISPENSE)
def api_dispense():
    data = DispenseParams().load(json_body())
    outcome = services.dispense(db_session(), current_actor(), **data)
    if not outcome["ok"]:
        raise dispense_refusal(outcome)
    resp = jsonify(outcome)
    resp.status_code = 201
    resp.headers["Location"] = url_for("inventory.api_get_dispense", dispense_id=outcome["dispense_id"])
    return resp


@bp.get("/api/v1/inventory/dispenses/<int:dispense_id>")
@requires(DISPENSE_READ)
def api_get_dispense(dispense_id: int):
    return jsonify(dispense_json(services.get_dispense(db_session(), current_actor(), dispense_id)))


@bp.post("/api/v1/inventory/returns")
@requires(DISPENSE)
def api_return():
    data = ReturnParams().load(json_body())
    return jsonify(services.return_items(db_session(), current_actor(), **data)), 201


@bp.get("/api/v1/inventory/ledger")
@requires(LEDGER_READ)
def api_ledger():
    page, size = page_args(default_size=50, max_size=500)
    rows, total = services.list_ledger(db_session(), batch_id=request.args.get("batch_id"),
                                       item_code=request.args.get("item_code"), page=page, size=size)
    return jsonify({"items": [movement_json(m) for m in rows], "page": page, "size": size, "total": total})


@bp.post("/api/v1/prescriptions/check")
@requires(PRESCRIPTION_CHECK)
def api_prescription_check():
    data = PrescriptionCheckIn().load(json_body())
    session = db_session()
    patient = get_patient(session, current_actor(), data["patient_id"])  # audits the read of allergies
    alerts = services.check_allergies(session, patient.id, [i["item_code"] for i in data["items"]])
    return jsonify({"alerts": alerts, "has_alerts": bool(alerts)})


# --- form helpers ------------------------------------------------------------------------

def _rows(form, columns: tuple[str, ...]) -> list[dict]:
    """Table rows posted as lines-<n>-<column>, in row order, blank rows dropped; each row
    keeps its form row number under "_row" so errors land where they were typed."""
    found: dict[int, dict] = {}
    for key, value in form.items():
        match = _ROW_KEY.match(key)
        if match and match.group(2) in columns and int(match.group(1)) < MAX_FORM_ROWS:
            found.setdefault(int(match.group(1)), {})[match.group(2)] = value.strip()
    rows = []
    for n in sorted(found):
        row = found[n]
        if any(row.get(c) for c in columns):
            rows.append({**{c: row.get(c, "") for c in columns}, "_row": n})
    return rows


def _row_errors(fields: dict, rows: list[dict]) -> tuple[dict, dict]:
    """Service field errors split into (top-level fields, {form row: {column: messages}})."""
    top, by_row = {}, {}
    for key, messages in fields.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "lines" and parts[1].isdigit() and int(parts[1]) < len(rows):
            by_row.setdefault(rows[int(parts[1])]["_row"], {})[parts[2]] = messages
        else:
            top[key] = messages
    return top, by_row


def _int_or_raw(value: str):
    value = (value or "").strip()
    if re.fullmatch(r"-?\d{1,9}", value):
        return int(value)
    return value or None


def _paisa(value: str) -> int | None:
    """"12.50" or "1,200" rupees -> paisa; None when it is not an amount with at most 2 decimals."""
    try:
        amount = Decimal((value or "").replace(",", "").strip())
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount != amount.quantize(Decimal("0.01")) or amount > Decimal("100000000"):
        return None
    return int(amount * 100)


def _render(template: str, status: int = 200, **context):
    session = db_session()
    context.setdefault("today", services.today_local(session))
    return render_template(template, units=services.units, can_manage=_can(STOCK_MANAGE),
                           can_dispense=_can(DISPENSE), can_read_ledger=_can(LEDGER_READ),
                           near_expiry_days=services.NEAR_EXPIRY_DAYS, **context), status


# --- pages: stock and items --------------------------------------------------------------

@bp.get("/pharmacy")
@requires(ITEMS_READ)
def stock_page():
    page, size = page_args(default_size=50)
    q = (request.args.get("q") or "").strip()
    stock_filter = request.args.get("filter") or None
    if stock_filter not in (None, *services.STOCK_FILTERS):
        stock_filter = None
    rows, total = services.search_items(db_session(), q, page, size, stock_filter=stock_filter)
    return _render("inventory/stock.html", q=q, rows=rows, total=total, page=page, size=size,
                   stock_filter=stock_filter)


@bp.get("/pharmacy/items/new")
@requires(STOCK_MANAGE)
def item_new_page():
    return _render("inventory/item_new.html", values={"reorder_level": "0"}, errors={},
                   forms=FORMS, unit_options=UNITS)


@bp.post("/pharmacy/items/new")
@requires(STOCK_MANAGE)
def item_create_submit():
    form = request.form
    data = {f: (form.get(f) or "").strip() or None
            for f in ("code", "generic_name", "brand", "form", "strength", "unit", "substance", "drug_class")}
    data["reorder_level"] = _int_or_raw(form.get("reorder_level", "")) or 0
    try:
        item = services.create_item(db_session(), current_actor(), data)
    except (Invalid, Conflict) as err:
        mark_failed()
        return _render("inventory/item_new.html", err.http_status, values=form.to_dict(), errors=err.fields,
                       message=err.message, forms=FORMS, unit_options=UNITS)
    flash(f"Added {item.code} to the formulary.")
    return redirect(url_for("inventory.item_page", code=item.code))


@bp.get("/pharmacy/items/<code>")
@requires(ITEMS_READ)
def item_page(code: str):
    return _item_page(code)


def _item_page(code: str, status: int = 200, **context):
    session = db_session()
    item = services.get_item(session, code)
    if item.code != code:
        return redirect(url_for("inventory.item_page", code=item.code))
    show_all = request.args.get("all") == "1"
    batches, _ = services.list_batches(session, item.code, in_stock_only=not show_all, size=500)
    ledger, ledger_total, page, size = [], 0, 1, 50
    if _can(LEDGER_READ):
        page, size = page_args(default_size=50)
        ledger, ledger_total = services.list_ledger(session, item_code=item.code, page=page, size=size)
    context.setdefault("adjust_values", {})
    context.setdefault("adjust_errors", {})
    return _render("inventory/item.html", status, item=item, stock=services.item_stock(session, item),
                   batches=batches, batch_status=services.batch_status, show_all=show_all, ledger=ledger,
                   ledger_total=ledger_total, page=page, size=size, adjustment_labels=ADJUSTMENT_LABELS,
                   adjustment_reasons=ADJUSTMENT_REASONS, **context)


@bp.post("/pharmacy/items/<code>/adjust")
@requires(STOCK_MANAGE)
def adjust_submit(code: str):
    session = db_session()
    item = services.get_item(session, code)
    form = request.form
    batch_id = _int_or_raw(form.get("batch_id", ""))
    try:
        if not isinstance(batch_id, int) or services.get_batch(session, batch_id).item_id != item.id:
            raise Invalid("Choose a batch of this item.", fields={"batch_id": ["Choose a batch of this item."]})
        movement = services.adjust_stock(session, current_actor(), batch_id=batch_id,
                                         quantity=_int_or_raw(form.get("quantity", "")),
                                         reason=form.get("reason"), note=form.get("note"))
    except (Invalid, Conflict, NotFound) as err:
        mark_failed()
        return _item_page(item.code, err.http_status if err.http_status != 404 else 422,
                          adjust_values=form.to_dict(), adjust_errors=err.fields, adjust_message=err.message)
    flash(f"Adjusted batch {movement.batch.batch_no} by {movement.quantity:+d}; "
          f"{movement.balance_after} now on hand.")
    return redirect(url_for("inventory.item_page", code=item.code))


# --- pages: goods receipt ----------------------------------------------------------------

RECEIPT_COLUMNS = ("item_code", "batch_no", "expiry", "quantity", "cost_price", "sale_price")


@bp.get("/pharmacy/receipts/new")
@requires(STOCK_MANAGE)
def receipt_page():
    return _receipt_form({}, [], {}, {})


def _table_slots(rows: list[dict], columns: tuple[str, ...], minimum: int) -> list[tuple[int, dict]]:
    """(form row number, values) for the rows typed plus blank ones to fill in."""
    by_row = {r["_row"]: r for r in rows}
    count = min(max(len(rows) + BLANK_ROWS, minimum), MAX_FORM_ROWS)
    slots = sorted(set(by_row) | set(range(count)))[:MAX_FORM_ROWS]
    return [(n, by_row.get(n) or {c: "" for c in columns}) for n in slots]


def _receipt_form(values: dict, rows: list[dict], errors: dict, row_errors: dict, status: int = 200,
                  message: str | None = None):
    return _render("inventory/receipt.html", status, values=values,
                   rows=_table_slots(rows, RECEIPT_COLUMNS, 5), errors=errors, row_errors=row_errors,
                   message=message)


@bp.post("/pharmacy/receipts/new")
@requires(STOCK_MANAGE)
def receipt_submit():
    form = request.form
    rows = _rows(form, RECEIPT_COLUMNS)
    values = {"supplier": form.get("supplier", ""), "invoice_no": form.get("invoice_no", "")}
    parse_errors: dict = {}
    lines = []
    for row in rows:
        line = {"item_code": row["item_code"], "batch_no": row["batch_no"], "expiry": row["expiry"] or None,
                "quantity": _int_or_raw(row["quantity"])}
        for column, key, label in (("cost_price", "cost_price_paisa", "Cost price"),
                                   ("sale_price", "sale_price_paisa", "Sale price")):
            paisa = _paisa(row[column])
            if paisa is None or paisa <= 0:
                parse_errors.setdefault(row["_row"], {})[column] = [
                    f"{label} must be an amount in rupees above zero, e.g. 12.50."]
            # An unreadable price goes to the service as None: it refuses the receipt and
            # reports every other field too; the rupee message replaces its paisa one.
            line[key] = paisa if paisa and paisa > 0 else None
        lines.append(line)
    try:
        receipt = services.receive_goods(db_session(), current_actor(), supplier=values["supplier"],
                                         invoice_no=values["invoice_no"], lines=lines)
    except (Invalid, Conflict) as err:
        mark_failed()
        top, by_row = _row_errors(err.fields, rows)
        for cols in by_row.values():
            for price in ("cost_price", "sale_price"):
                if price + "_paisa" in cols:
                    cols[price] = cols.pop(price + "_paisa")
        for n, cols in parse_errors.items():
            by_row.setdefault(n, {}).update(cols)
        return _receipt_form(values, rows, top, by_row, err.http_status, err.message)
    flash(f"Received {len(receipt.batches)} batch{'es' if len(receipt.batches) != 1 else ''} "
          f"from {receipt.supplier} (invoice {receipt.invoice_no}).")
    return redirect(url_for("inventory.stock_page"))


# --- pages: dispensing -------------------------------------------------------------------

DISPENSE_COLUMNS = ("item_code", "quantity", "prescription_item_id")


def _dispense_lines(rows: list[dict]) -> list[dict]:
    return [{"item_code": r["item_code"], "quantity": _int_or_raw(r["quantity"]),
             "prescription_item_id": _int_or_raw(r["prescription_item_id"])} for r in rows]


def _dispense_form(status: int = 200, *, patient_id, prescription_ref: str, rows: list[dict],
                   values: dict, errors: dict | None = None, row_errors: dict | None = None,
                   problems: list | None = None, message: str | None = None):
    session = db_session()
    banner = preview = None
    recent = []
    errors = dict(errors or {})
    if patient_id is not None:
        try:
            get_patient(session, current_actor(), patient_id)  # audits the read of the record
        except NotFound as err:
            errors["patient_id"] = [err.message]
            patient_id = None
    if patient_id is not None:
        banner = patient_banner(session, patient_id)
        recent = services.list_dispenses(session, patient_id=patient_id, limit=10)
        lines = _dispense_lines(rows)
        if lines:
            try:
                preview = services.preview_dispense(session, patient_id, lines,
                                                    partial=bool((values.get("partial_reason") or "").strip()))
            except Invalid as err:
                _, more = _row_errors(err.fields, rows)
                row_errors = {**more, **(row_errors or {})}
    table = _table_slots(rows, DISPENSE_COLUMNS, 4)
    problems = problems or []
    row_of = {i: r["_row"] for i, r in enumerate(rows)}
    problems_by_row: dict = {}
    for p in problems:
        problems_by_row.setdefault(row_of.get(p.get("line", -1)), []).append(p)
    return _render("inventory/dispense.html", status, banner=banner, patient_id=patient_id,
                   prescription_ref=prescription_ref, table=table, values=values, errors=errors,
                   row_errors=row_errors or {}, problems=problems, problems_by_row=problems_by_row,
                   has_allergy_problem=any(p["code"] == "allergy" for p in problems),
                   has_stock_problem=any(p["code"] == "insufficient_stock" for p in problems),
                   preview=preview,
                   preview_by_row={rows[i]["_row"]: ln for i, ln in enumerate((preview or {}).get("lines", []))},
                   recent=recent, message=message)


@bp.get("/pharmacy/dispense")
@requires(DISPENSE)
def dispense_page():
    session = db_session()
    ref = (request.args.get("prescription_ref") or "").strip()
    rows = _rows(request.args, DISPENSE_COLUMNS)
    try:
        patient_id = services.find_patient_id(session, request.args.get("patient_id"))
    except NotFound as err:
        return _dispense_form(404, patient_id=None, prescription_ref=ref, rows=rows, values={},
                              errors={"patient_id": [err.message]})
    return _dispense_form(patient_id=patient_id, prescription_ref=ref, rows=rows, values={})


@bp.post("/pharmacy/dispense")
@requires(DISPENSE)
def dispense_submit():
    # A refused dispense writes nothing (services.dispense checks before it writes and
    # unwinds its savepoint on problems), so the request still commits: the audit of the
    # patient read made to show the page again is kept.
    session = db_session()
    form = request.form
    ref = (form.get("prescription_ref") or "").strip()
    rows = _rows(form, DISPENSE_COLUMNS)
    values = {"partial_reason": form.get("partial_reason", ""),
              "allergy_override_reason": form.get("allergy_override_reason", "")}
    try:
        patient_id = services.find_patient_id(session, form.get("patient_id"))
    except NotFound as err:
        return _dispense_form(422, patient_id=None, prescription_ref=ref, rows=rows, values=values,
                              errors={"patient_id": [err.message]}, message=err.message)
    common = {"patient_id": patient_id, "prescription_ref": ref, "rows": rows, "values": values}
    if patient_id is None:
        return _dispense_form(422, **common, errors={"patient_id": ["Enter the patient's MRN."]},
                              message="Choose the patient first.")
    if form.get("action") != "dispense":
        return _dispense_form(**common)
    try:
        outcome = services.dispense(session, current_actor(), patient_id=patient_id, prescription_ref=ref,
                                    lines=_dispense_lines(rows), partial_reason=values["partial_reason"],
                                    allergy_override_reason=values["allergy_override_reason"])
    except (Invalid, NotFound) as err:
        top, by_row = _row_errors(err.fields, rows)
        return _dispense_form(422, **common, errors=top, row_errors=by_row, message=err.message)
    if not outcome["ok"]:
        refusal = dispense_refusal(outcome)
        return _dispense_form(refusal.http_status, **common, problems=outcome["problems"],
                              message="Nothing was dispensed. " + _problem_summary(outcome["problems"]))
    flash(f"Dispensed {len(outcome['lines'])} line{'s' if len(outcome['lines']) != 1 else ''}.")
    return redirect(url_for("inventory.dispense_view_page", dispense_id=outcome["dispense_id"]))


def _problem_summary(problems: list[dict]) -> str:
    codes = {p["code"] for p in problems}
    parts = []
    if "allergy" in codes:
        parts.append("The patient has a recorded allergy to a medicine: remove it, or give the reason for "
                     "overriding the alert.")
    if "insufficient_stock" in codes:
        parts.append("Some medicines are short: lower the quantity, or give a reason to dispense what there is.")
    if codes & {"exceeds_prescription", "prescription_mismatch"}:
        parts.append("Some lines do not agree with the prescription.")
    if codes & {"unknown_item", "inactive_item"}:
        parts.append("Some medicine codes are not in the formulary.")
    return " ".join(parts)


@bp.get("/pharmacy/dispenses/<int:dispense_id>")
@requires(DISPENSE_READ)
def dispense_view_page(dispense_id: int):
    return _dispense_view(dispense_id)


def _dispense_view(dispense_id: int, status: int = 200, **context):
    session = db_session()
    record = services.get_dispense(session, current_actor(), dispense_id)
    return _render("inventory/dispense_view.html", status, record=record,
                   banner=patient_banner(session, record["patient_id"]), **context)


@bp.post("/pharmacy/dispenses/<int:dispense_id>/return")
@requires(DISPENSE)
def return_submit(dispense_id: int):
    session = db_session()
    form = request.form
    line_id = _int_or_raw(form.get("dispense_line_id", ""))
    try:
        record = services.get_dispense(session, current_actor(), dispense_id)
        if line_id not in {ln["dispense_line_id"] for ln in record["lines"]}:
            raise Invalid("Choose a line of this dispense.",
                          fields={"dispense_line_id": ["Not a line of this dispense."]})
        result = services.return_items(session, current_actor(), dispense_line_id=line_id,
                                       quantity=_int_or_raw(form.get("quantity", "")), reason=form.get("reason"))
    except (Invalid, Conflict) as err:
        mark_failed()
        return _dispense_view(dispense_id, err.http_status, return_line=line_id, return_values=form.to_dict(),
                              return_errors=err.fields, return_message=err.message)
    rupees, paisa = divmod(result["amount_paisa"], 100)
    flash(f"Return recorded: credit {rupees:,}.{paisa:02d} to the patient's bill.")
    return redirect(url_for("inventory.dispense_view_page", dispense_id=dispense_id))


# --- issues to wards and ward returns ------------------------------------------------------

@bp.get("/api/v1/admissions/<int:admission_id>/pharmacy")
@requires(WARD_PHARMACY_READ)
def api_admission_pharmacy(admission_id: int):
    return jsonify(ward_issues.admission_pharmacy(db_session(), current_actor(), admission_id))


@bp.post("/api/v1/pharmacy/issues/<int:dispense_id>/accept")
@requires(WARD_ISSUE_ACCEPT)
def api_accept_issue(dispense_id: int):
    # Any nurse may call it: the admission's ward is not known here (wards is another
    # package); the pathway's accept task is ward-scoped, and who accepted is recorded.
    record = ward_issues.accept_ward_issue(db_session(), current_actor(), dispense_id)
    return jsonify({"ok": True, "dispense_id": record.id, "accepted_by": record.ward_accepted_by_name,
                    "accepted_at": record.ward_accepted_at.isoformat()})


@bp.post("/api/v1/pharmacy/returns")
@requires(WARD_RETURN_SEND)
def api_send_return():
    data = WardReturnIn().load(json_body())
    record = ward_issues.request_ward_return(db_session(), current_actor(), **data)
    return jsonify({"ward_return_id": record.id, "state": record.state, "quantity": record.quantity}), 201


@bp.post("/api/v1/pharmacy/returns/<int:ward_return_id>/receive")
@requires(WARD_RETURN_RECEIVE)
def api_receive_return(ward_return_id: int):
    data = WardReceiveIn().load(json_body())
    return jsonify(ward_issues.receive_ward_return(db_session(), current_actor(), ward_return_id, **data))


@bp.get("/api/v1/pharmacy/returns")
@requires(WARD_RETURN_RECEIVE)
def api_ward_returns():
    state = request.args.get("state", "sent") or None
    admission = request.args.get("admission_id")
    admission_id = _int_or_raw(admission) if admission else None
    if admission is not None and not isinstance(admission_id, int):
        raise Invalid("admission_id must be a whole number.", fields={"admission_id": ["Not a valid id."]})
    returns = ward_issues.list_ward_returns(db_session(), admission_id=admission_id,
                                            state=None if state == "all" else state)
    return jsonify({"returns": returns, "count": len(returns)})


@bp.get("/inventory/returns")
@requires(WARD_RETURN_RECEIVE)
def ward_returns_page():
    return _ward_returns_page()


def _ward_returns_page(status: int = 200, **context):
    returns = ward_issues.list_ward_returns(db_session(), state="sent")
    for row in returns:  # shown in local time: the filter takes a datetime
        row["sent_at"] = datetime.fromisoformat(row["sent_at"])
    return _render("inventory/ward_returns.html", status, returns=returns, **context)


@bp.post("/inventory/returns/<int:ward_return_id>/receive")
@requires(WARD_RETURN_RECEIVE)
def ward_return_receive_submit(ward_return_id: int):
    form = request.form
    try:
        outcome = ward_issues.receive_ward_return(db_session(), current_actor(), ward_return_id,
                                                  received_quantity=_int_or_raw(form.get("received_quantity", "")),
                                                  note=form.get("note"))
    except (Invalid, Conflict, NotFound) as err:
        mark_failed()
        return _ward_returns_page(err.http_status, failed_id=ward_return_id, failed_values=form.to_dict(),
                                  failed_errors=err.fields, message=err.message)
    if outcome["state"] == "received":
        rupees, paisa = divmod(outcome["amount_paisa"], 100)
        flash(f"Received {outcome['received_quantity']} back into stock: credit {rupees:,}.{paisa:02d} "
              f"on the patient's bill.")
    else:
        flash("Return rejected: nothing went back into stock.")
    return redirect(url_for("inventory.ward_returns_page"))
