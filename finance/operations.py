"""Service-task operations of finance (registered as finance.<verb>).

Charges are posted here, by the pathway, never typed by hand. Each operation runs the
finance service in the step's transaction with the acting user, and returns small JSON:
ids, amounts in paisa and decision values for gateways. Refusals (a closed bill, no price)
are faults that roll the step back.
"""

from __future__ import annotations

from finance import services
from finance.schemas import (BillIdParams, BillStatusParams, ConsultationChargeParams, DepositParams, NoParams,
                             OpenBillParams, PostChargesParams, ReverseChargeParams, SetPayerParams)
from hms.errors import Conflict, Invalid, NotFound
from hms.workflow.operations import OperationContext, operation


@operation("finance.open_bill", params=OpenBillParams)
def open_bill(ctx: OperationContext, params: dict) -> dict:
    """Open the visit's bill (idempotent per encounter / admission): {"bill_id", "bill_no"}."""
    bill = services.open_bill(ctx.session, ctx.actor, params["patient_id"], encounter_id=params["encounter_id"],
                              admission_id=params["admission_id"], payer_class=params["payer_class"] or "cash")
    return {"bill_id": bill.id, "bill_no": bill.bill_no}


@operation("finance.post_consultation_charge", params=ConsultationChargeParams)
def post_consultation_charge(ctx: OperationContext, params: dict) -> dict:
    """Post the encounter's consultation fee (doctor, department or default tariff): {"charge_id", "amount_paisa"}."""
    charge, _created = services.post_consultation_charge(
        ctx.session, ctx.actor, params["bill_id"], encounter_id=params["encounter_id"],
        department_code=params["department_code"], doctor_id=params["doctor_id"])
    return {"charge_id": charge.id, "amount_paisa": charge.amount_paisa}


@operation("finance.post_charges", params=PostChargesParams)
def post_charges(ctx: OperationContext, params: dict) -> dict:
    """Post charges idempotently per source_ref: {"posted": newly posted, "total_paisa": sum of the listed charges}."""
    results = services.post_charges(ctx.session, ctx.actor, params["bill_id"], params["charges"])
    return {"posted": sum(1 for _charge, created in results if created),
            "total_paisa": sum(charge.amount_paisa for charge, _created in results)}


@operation("finance.reverse_charge", params=ReverseChargeParams)
def reverse_charge(ctx: OperationContext, params: dict) -> dict:
    """Reverse the charge of a source_ref (once): {"reversed": false when nothing was ever charged for it}."""
    try:
        services.reverse_charge(ctx.session, ctx.actor, params["source_ref"], params["reason"])
    except NotFound as err:
        if err.code != "charge_not_found":
            raise
        return {"reversed": False}
    return {"reversed": True}


@operation("finance.bill_status", params=BillStatusParams)
def bill_status(ctx: OperationContext, params: dict) -> dict:
    """Totals of a bill: {"total_paisa", "paid_paisa", "balance_paisa", "settled"}."""
    totals = services.bill_totals(ctx.session, params["bill_id"])
    return {"total_paisa": totals.total_paisa, "paid_paisa": totals.paid_paisa,
            "balance_paisa": totals.balance_paisa, "settled": totals.settled}


@operation("finance.fee_before_consultation", params=NoParams)
def fee_before_consultation(ctx: OperationContext, params: dict) -> dict:
    """Whether the consultation fee is paid before the consultation (setting): {"before"}."""
    return {"before": services.fee_before_consultation(ctx.session)}


@operation("finance.set_payer", params=SetPayerParams)
def set_payer(ctx: OperationContext, params: dict) -> dict:
    """Record who pays the bill: {"ok", "problem", "message"}; a refused payer (unknown
    class, CNIC not the patient's, verification missing) is data (ok false), so the desk
    task is shown again with the message."""
    try:
        services.set_bill_payer(ctx.session, ctx.actor, params["bill_id"], payer_class=params["payer_class"],
                                member_no=params["member_no"], verification_ref=params["verification_ref"],
                                coverage_limit_paisa=params["coverage_limit_paisa"])
    except Invalid as err:
        return {"ok": False, "problem": err.code, "message": err.message, "fields": err.fields or {}}
    return {"ok": True, "problem": None, "message": None, "fields": {}}


@operation("finance.record_deposit", params=DepositParams)
def record_deposit(ctx: OperationContext, params: dict) -> dict:
    """Take the advance deposit: {"ok", "receipt_no"}; an amount of 0 records nothing."""
    if params["amount_paisa"] == 0:
        return {"ok": True, "receipt_no": None}
    payment, _created = services.record_deposit(ctx.session, ctx.actor, params["bill_id"],
                                                amount_paisa=params["amount_paisa"],
                                                method=params["method"] or "cash", reference=params["reference"])
    return {"ok": True, "receipt_no": payment.receipt_no}


@operation("finance.final_totals", params=BillIdParams)
def final_totals(ctx: OperationContext, params: dict) -> dict:
    """The interim / final totals of the bill (paisa) and {"closed": bool}."""
    return services.final_totals(ctx.session, params["bill_id"]).as_dict()


@operation("finance.issue_gate_pass", params=BillIdParams)
def issue_gate_pass(ctx: OperationContext, params: dict) -> dict:
    """The gate pass of a closed bill: {"ok", "gate_pass_no", "problem"} (problem
    "bill_not_closed" while it is not closed)."""
    try:
        number = services.issue_gate_pass(ctx.session, ctx.actor, params["bill_id"])
    except Conflict as err:
        return {"ok": False, "gate_pass_no": None, "problem": err.code}
    return {"ok": True, "gate_pass_no": number, "problem": None}


@operation("finance.check_topup", params=BillIdParams)
def check_topup(ctx: OperationContext, params: dict) -> dict:
    """Ask for more deposit when the deposit balance runs low: {"requested": bool}."""
    return {"requested": services.check_topup(ctx.session, ctx.actor, params["bill_id"]) is not None}


@operation("finance.request_final", params=BillIdParams)
def request_final(ctx: OperationContext, params: dict) -> dict:
    """Put the bill in finance's "awaiting closure" queue: {"requested": bool} (false when
    the bill is not open any more)."""
    bill = services.mark_final_requested(ctx.session, ctx.actor, params["bill_id"])
    return {"requested": bill.status == "open"}
