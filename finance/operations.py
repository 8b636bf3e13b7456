"""Service-task operations of finance (registered as finance.<verb>).

Charges are posted here, by the pathway, never typed by hand. Each operation runs the
finance service in the step's transaction with the acting user, and returns small JSON:
ids, amounts in paisa and decision values for gateways. Refusals (a closed bill, no price)
are faults that roll the step back.
"""

from __future__ import annotations

from finance import services
from finance.schemas import (BillStatusParams, ConsultationChargeParams, NoParams, OpenBillParams,
                             PostChargesParams, ReverseChargeParams)
from hms.errors import NotFound
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
