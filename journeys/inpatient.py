"""The inpatient journey: what crosses departments during a stay.

- Admitting a patient: the wards' admission row, then admission.bpmn (desk, bed, ward).
- Discharge: discharge_billing.bpmn (summary, nursing gate, returns, final bill, gate pass).
- Transfers and doctor orders during the stay: the ward records them; procedures and lab
  tests are charged on the admission bill; lab tests run lab_order.bpmn; medicines start
  ward_medication.bpmn (pharmacy issue, ward acceptance).
- Recurring nursing work: every vitals round and every dose slot is a row of the wards and
  one small instance (vitals_round.bpmn, medication_dose.bpmn) that escalates to the ward's
  charge nurse when it is not recorded in time. A stay of 30 days is many small instances,
  never one growing one, so a step costs the same on day 30 as on day 1.
- Accrual: bed-day and nursing-day charges of completed days, posted idempotently (the
  source_ref names the admission, the day and the ward type), with a deposit top-up check.

This is the composition layer: it may call several departments' services in one
transaction; the departments never call each other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session

from hms import events, jobs
from hms.audit import Actor
from hms.auth.permissions import define, requires
from hms.db import utcnow
from hms.errors import Conflict, HmsError, Invalid, NotFound
from hms.web.context import current_actor, db_session, json_body, mark_failed
from hms.workflow import engine
from hms.workflow.models import ProcessInstance, WorkItem

bp = Blueprint("journeys_inpatient", __name__, template_folder="templates")

ADMIT = define("admissions.create", "doctor", "reception", "admin")
DISCHARGE = define("admissions.discharge", "doctor", "admin")
TRANSFER = define("admissions.transfer", "doctor", "nurse", "admin")
ORDER = define("admissions.order", "doctor", "admin")
RECORD_NURSING = define("nursing.record", "nurse", "admin")

ORDER_KINDS = ("diet", "procedure", "lab", "medication")
MAX_ISSUE = 1000


def _whole(data: dict, name: str, *, required: bool = True, low: int = 1, high: int = 2**31 - 1) -> int | None:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise Invalid(f"{name.replace('_', ' ').capitalize()} is required.", fields={name: ["Required."]})
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(f"{name.replace('_', ' ').capitalize()} must be a whole number from {low} to {high}.",
                      fields={name: [f"A whole number from {low} to {high}."]})
    return value


def _text(data: dict, name: str, *, required: bool = False, max_len: int = 300) -> str | None:
    value = data.get(name)
    text = value.strip() if isinstance(value, str) else ""
    if value is not None and not isinstance(value, str):
        raise Invalid(f"{name} must be text.", fields={name: ["Must be text."]})
    if not text:
        if required:
            raise Invalid(f"{name.replace('_', ' ').capitalize()} is required.", fields={name: ["Required."]})
        return None
    if len(text) > max_len:
        raise Invalid(f"{name} is at most {max_len} characters.", fields={name: [f"At most {max_len} characters."]})
    return text


def admission_bill(session: Session, admission_id: int):
    """The bill of an admission (opened by admission.bpmn's first step)."""
    from finance import services as finance

    bills, _ = finance.list_bills(session, admission_id=admission_id, size=1)
    if not bills:
        raise Conflict("The admission has no bill yet: the admission desk opens it.", code="no_bill")
    return bills[0]


# --- admitting and discharging ---------------------------------------------------------

def admit(session: Session, actor: Actor, data: dict) -> dict:
    """Create the admission (wards) and start admission.bpmn; the admission remembers it."""
    from hms.patients.models import Patient
    from wards import services as wards

    patient_id = _whole(data, "patient_id")
    department_id = _whole(data, "department_id")
    ward_id = _whole(data, "ward_id", required=False)
    doctor_id = _whole(data, "doctor_id", required=False)
    encounter_id = _whole(data, "encounter_id", required=False)
    payer_class = _text(data, "payer_class", max_len=40) or "cash"
    if doctor_id is None and actor.has_role("doctor"):
        doctor_id = actor.user_id
    admission = wards.create_admission(session, actor, patient_id=patient_id, department_id=department_id,
                                       ward_id=ward_id, payer_class=payer_class, doctor_id=doctor_id,
                                       encounter_id=encounter_id, reason=_text(data, "reason"))
    patient = session.get(Patient, admission.patient_id)
    result = engine.start_pathway(
        session, actor, "admission", patient_id=admission.patient_id, business_key=f"admission:{admission.id}",
        data={"admission_id": admission.id, "admission_no": admission.admission_no,
              "patient_id": admission.patient_id, "department_id": admission.department_id,
              "ward_id": admission.ward_id, "payer_class": payer_class, "doctor_id": doctor_id,
              "gender": patient.sex if patient is not None else None},
        check_role=False)
    wards.attach_instance(session, admission.id, result.instance.id)
    return {"id": admission.id, "admission_no": admission.admission_no, "instance_id": result.instance.id,
            "status": result.instance.status, "fault": result.fault}


def start_discharge(session: Session, actor: Actor, admission_id: Any) -> dict:
    """Start discharge_billing.bpmn for an admitted patient (once)."""
    from wards import services as wards

    admission = wards.get_admission(session, admission_id)
    if admission.discharge_instance_id is not None:
        raise Conflict("The discharge of this admission has started already.", code="discharge_started")
    if admission.state != "admitted":
        raise Conflict(f"Only an admitted patient can be discharged; this admission is {admission.state}.",
                       code="not_admitted")
    bill = admission_bill(session, admission.id)
    doctor_id = admission.doctor_id or (actor.user_id if actor.has_role("doctor") else None)
    result = engine.start_pathway(
        session, actor, "discharge_billing", patient_id=admission.patient_id,
        business_key=f"discharge:{admission.id}",
        data={"admission_id": admission.id, "patient_id": admission.patient_id,
              "department_id": admission.department_id, "ward_id": admission.ward_id,
              "doctor_id": doctor_id, "bill_id": bill.id, "bill": {"bill_id": bill.id, "bill_no": bill.bill_no}},
        check_role=False)
    wards.attach_instance(session, admission.id, result.instance.id, discharge=True)
    return {"id": admission.id, "instance_id": result.instance.id, "status": result.instance.status,
            "fault": result.fault}


def request_transfer(session: Session, actor: Actor, admission_id: Any, data: dict) -> dict:
    """The ward records the request; ward_transfer.bpmn asks the target ward to accept."""
    from wards import services as wards

    to_ward_id = _whole(data, "to_ward_id")
    transfer = wards.request_transfer(session, actor, admission_id, to_ward_id=to_ward_id,
                                      reason=_text(data, "reason", required=True, max_len=200))
    admission = wards.get_admission(session, transfer.admission_id)
    result = engine.start_pathway(
        session, actor, "ward_transfer", patient_id=admission.patient_id, business_key=f"transfer:{transfer.id}",
        data={"transfer_id": transfer.id, "admission_id": admission.id, "to_ward_id": transfer.to_ward_id,
              "from_ward_id": transfer.from_ward_id, "from_bed_id": transfer.from_bed_id,
              "transfer": {"transfer_id": transfer.id, "to_ward_id": transfer.to_ward_id,
                           "reason": transfer.reason}},
        check_role=False)
    if hasattr(wards, "attach_transfer_instance"):
        wards.attach_transfer_instance(session, transfer.id, result.instance.id)
    return {"id": transfer.id, "instance_id": result.instance.id, "status": result.instance.status,
            "fault": result.fault}


# --- doctor orders during the stay -------------------------------------------------------

def place_order(session: Session, actor: Actor, admission_id: Any, data: dict) -> dict:
    """A doctor's order: diet (recorded), procedure (recorded and charged from the tariff),
    lab tests (lab order, charges, lab_order.bpmn) or a medicine (medication order with its
    dose slots, and a pharmacy issue to the ward through ward_medication.bpmn)."""
    from wards import services as wards

    kind = data.get("kind")
    if kind not in ORDER_KINDS:
        raise Invalid(f"Say what is ordered: one of {', '.join(ORDER_KINDS)}.",
                      fields={"kind": [f"One of: {', '.join(ORDER_KINDS)}."]})
    admission = wards.get_admission(session, admission_id)
    wards.check_orders_open(session, admission)
    if kind == "diet":
        order = wards.place_order(session, actor, admission.id, kind="diet",
                                  description=_text(data, "description", required=True, max_len=200),
                                  details={"notes": _text(data, "notes", max_len=500)})
        return {"kind": kind, "order_id": order.id}
    if kind == "procedure":
        return _order_procedure(session, actor, admission, data)
    if kind == "lab":
        return _order_lab(session, actor, admission, data)
    return _order_medicine(session, actor, admission, data)


def _order_procedure(session: Session, actor: Actor, admission, data: dict) -> dict:
    from finance import services as finance
    from wards import services as wards

    code = _text(data, "code", required=True, max_len=40).upper()
    tariff = finance.get_tariff(session, code)
    if tariff.kind != "procedure":
        raise Invalid(f"{code} is not a procedure in the tariff.", fields={"code": ["Not a procedure."]})
    bill = admission_bill(session, admission.id)
    order = wards.place_order(session, actor, admission.id, kind="procedure", code=code,
                              description=tariff.description, details={"notes": _text(data, "notes", max_len=500)},
                              charge_ref=None)
    charge, _ = finance.post_charge(session, actor, bill.id, source_ref=f"ward_order:{order.id}", kind="procedure",
                                    tariff_code=code, description=tariff.description, quantity=1)
    return {"kind": "procedure", "order_id": order.id, "charge_id": charge.id, "amount_paisa": charge.amount_paisa}


def _order_lab(session: Session, actor: Actor, admission, data: dict) -> dict:
    from departments.lab import services as lab
    from finance import services as finance
    from wards import services as wards

    codes = data.get("test_codes")
    if not isinstance(codes, list) or not codes or not all(isinstance(c, str) and c.strip() for c in codes):
        raise Invalid("Name at least one lab test.", fields={"test_codes": ["A list of test codes."]})
    bill = admission_bill(session, admission.id)
    order = lab.create_order(session, actor, patient_id=admission.patient_id, test_codes=codes,
                             admission_id=admission.id, priority=data.get("priority") or "routine")
    items = [{"order_item_id": i.id, "test_code": i.test.code, "tariff_code": i.test.tariff_code,
              "name": i.test.name} for i in order.items]
    finance.post_charges(session, actor, bill.id, [
        {"source_ref": f"lab_order_item:{i['order_item_id']}", "kind": "lab", "description": i["name"],
         "quantity": 1, "tariff_code": i["tariff_code"]} for i in items])
    wards.place_order(session, actor, admission.id, kind="lab", code=order.order_no,
                      description=", ".join(i["name"] for i in items)[:200], details={"lab_order_id": order.id})
    result = engine.start_pathway(
        session, actor, "lab_order", patient_id=admission.patient_id, business_key=order.business_key,
        data={"lab_order": {"order_id": order.id, "order_no": order.order_no, "business_key": order.business_key,
                            "items": items, "has_items": True},
              "doctor_id": actor.user_id, "admission_id": admission.id},
        check_role=False)
    return {"kind": "lab", "lab_order_id": order.id, "order_no": order.order_no, "instance_id": result.instance.id}


def _order_medicine(session: Session, actor: Actor, admission, data: dict) -> dict:
    from inventory import services as inventory
    from wards import nursing

    code = _text(data, "item_code", required=True, max_len=40).upper()
    item = inventory.get_item(session, code)
    issue = _whole(data, "issue_quantity", low=1, high=MAX_ISSUE)
    first_due = data.get("first_due_at")
    if first_due is not None:
        try:
            first_due = datetime.fromisoformat(str(first_due))
        except ValueError:
            raise Invalid("first_due_at is an ISO date and time.", fields={"first_due_at": ["Not a date-time."]}) \
                from None
    order = nursing.start_medication_order(
        session, actor, admission.id, item_code=code, medicine_name=data.get("medicine_name") or item.display_name,
        dose=_text(data, "dose", required=True, max_len=60), route=data.get("route") or "oral",
        every_hours=data.get("every_hours"), first_due_at=first_due)
    bill = admission_bill(session, admission.id)
    result = engine.start_pathway(
        session, actor, "ward_medication", patient_id=admission.patient_id,
        business_key=f"medication_order:{order.id}",
        data={"order_id": order.id, "admission_id": admission.id, "patient_id": admission.patient_id,
              "bill_id": bill.id, "bill": {"bill_id": bill.id}, "ward_id": admission.ward_id,
              "lines": [{"item_code": code, "quantity": issue}]},
        check_role=False)
    return {"kind": "medication", "order_id": order.id, "instance_id": result.instance.id}


# --- recording nursing work through its task ------------------------------------------------

def _complete_instance_task(session: Session, actor: Actor, instance_id: int | None, data: dict,
                            what: str) -> dict:
    item = None
    if instance_id is not None:
        item = session.execute(select(WorkItem).where(
            WorkItem.instance_id == instance_id, WorkItem.task_name == "do",
            WorkItem.status.in_(("open", "claimed")))).scalar_one_or_none()
    if item is None:
        raise Conflict(f"This {what} is not open for recording: it was recorded, became missed or is not due yet.",
                       code="not_open")
    result = engine.complete_task(session, actor, item.id, data)
    if result.fault:
        raise Conflict(result.fault, code="step_failed")
    return {"work_item_id": item.id, "instance_id": instance_id, "status": result.instance.status}


def record_dose(session: Session, actor: Actor, slot_id: Any, data: dict) -> dict:
    from wards import nursing

    slot = nursing.get_slot(session, slot_id)
    return _complete_instance_task(session, actor, slot.instance_id,
                                   {k: data[k] for k in ("status", "reason") if k in data}, "dose")


def record_round(session: Session, actor: Actor, round_id: Any, data: dict) -> dict:
    from wards import nursing

    row = nursing.get_round(session, round_id)
    return _complete_instance_task(session, actor, row.instance_id, data, "vitals round")


# --- scheduler and accrual -----------------------------------------------------------------

def schedule_nursing(session: Session, now: datetime | None = None) -> dict:
    """Open the vitals rounds and dose slots due within the hour and start one instance for
    each. Idempotent: a round or slot is opened once (the wards' unique keys)."""
    from wards import nursing

    now = now or utcnow()
    actor = Actor.system("nursing-scheduler")
    rounds = nursing.open_due_rounds(session, now)
    for row in rounds:
        info = nursing.task_info(session, "round", row.id)
        result = engine.start_pathway(
            session, actor, "vitals_round", patient_id=row.patient_id, business_key=f"vitals_round:{row.id}",
            data={"round_id": row.id, "admission_id": row.admission_id, "ward_id": row.ward_id,
                  "due_at": info["due_at"], "escalate_at": info["escalate_at"], "task_info": info},
            check_role=False)
        nursing.attach_instance(session, "round", row.id, result.instance.id)
    slots = nursing.open_due_slots(session, now)
    for slot in slots:
        info = nursing.task_info(session, "dose", slot.id)
        result = engine.start_pathway(
            session, actor, "medication_dose", patient_id=slot.patient_id, business_key=f"dose_slot:{slot.id}",
            data={"slot_id": slot.id, "admission_id": slot.admission_id, "ward_id": slot.ward_id,
                  "due_at": info["due_at"], "escalate_at": info["escalate_at"], "task_info": info},
            check_role=False)
        nursing.attach_instance(session, "dose", slot.id, result.instance.id)
    return {"rounds": len(rounds), "doses": len(slots)}


def accrue(session: Session, now: datetime | None = None) -> dict:
    """Post the bed-day and nursing-day charges of every completed day of every admitted
    patient, then check the deposit. Running it twice posts nothing new (source_ref)."""
    from finance import services as finance
    from wards import services as wards

    now = now or utcnow()
    actor = Actor.system("accrual")
    posted = admissions = topups = 0
    for admission_id in wards.active_admission_ids(session):
        admission = wards.get_admission(session, admission_id)
        if admission.state != "admitted":
            continue  # the discharge posts the last days with its rounding
        bills, _ = finance.list_bills(session, admission_id=admission_id, size=1)
        if not bills or bills[0].status != "open":
            continue
        admissions += 1
        lines = wards.bed_day_lines(session, admission_id, until=now, final=False)
        if lines:
            posted += sum(1 for _, created in finance.post_charges(session, actor, bills[0].id, lines) if created)
        if finance.check_topup(session, actor, bills[0].id) is not None:
            topups += 1
    return {"admissions": admissions, "charges_posted": posted, "topup_requests": topups}


@jobs.periodic("inpatient.nursing_schedule", every_seconds=300)
def _nursing_sweep(session: Session) -> dict:
    return schedule_nursing(session)


@jobs.periodic("inpatient.accrual", every_seconds=3600)
def _accrual_sweep(session: Session) -> dict:
    return accrue(session)


# --- events --------------------------------------------------------------------------------

def _credit_return(session: Session, actor: Actor, *, dispense_line_id: int, quantity: int, return_id: int,
                   **_) -> None:
    """Medicines the pharmacy took back from the ward are credited on the admission bill."""
    from finance import services as finance

    try:
        finance.credit_returned_medicine(session, actor, dispense_line_id=dispense_line_id, quantity=quantity,
                                         return_id=return_id, reason="Returned unused to pharmacy")
    except NotFound:
        pass  # issued without a charge (e.g. before billing was set up): nothing to credit


def _cancel_instances(session: Session, actor: Actor, instance_ids, reason: str) -> None:
    for instance_id in instance_ids:
        instance = session.get(ProcessInstance, instance_id)
        if instance is not None and instance.status in ("running", "waiting"):
            engine.cancel_instance(session, actor, instance_id, reason)


def _cancel_stopped_doses(session: Session, actor: Actor, *, instance_ids: list[int], order_id: int, **_) -> None:
    """A stopped medicine: the task instances of its cancelled dose slots end with it."""
    _cancel_instances(session, actor, instance_ids, f"Medicine order {order_id} stopped")


def _cancel_transfer_task(session: Session, actor: Actor, *, transfer_id: int, instance_id: int | None, **_) -> None:
    """A withdrawn transfer: the receiving ward's waiting task ends with it."""
    _cancel_instances(session, actor, [instance_id] if instance_id else [], f"Transfer {transfer_id} cancelled")


def register() -> None:
    events.subscribe("inventory.return_received", _credit_return)
    events.subscribe("wards.dose_slots_cancelled", _cancel_stopped_doses)
    events.subscribe("wards.transfer_cancelled", _cancel_transfer_task)


# --- JSON API --------------------------------------------------------------------------------

def _created(result: dict):
    return jsonify(result), (201 if result.get("fault") is None else 409)


@bp.post("/api/v1/admissions")
@requires(ADMIT)
def api_admit():
    return _created(admit(db_session(), current_actor(), json_body()))


@bp.post("/api/v1/admissions/<int:admission_id>/discharge")
@requires(DISCHARGE)
def api_discharge(admission_id: int):
    return _created(start_discharge(db_session(), current_actor(), admission_id))


@bp.post("/api/v1/admissions/<int:admission_id>/transfers")
@requires(TRANSFER)
def api_transfer(admission_id: int):
    return _created(request_transfer(db_session(), current_actor(), admission_id, json_body()))


@bp.post("/api/v1/admissions/<int:admission_id>/orders")
@requires(ORDER)
def api_order(admission_id: int):
    return jsonify(place_order(db_session(), current_actor(), admission_id, json_body())), 201


@bp.post("/api/v1/medication-slots/<int:slot_id>")
@requires(RECORD_NURSING)
def api_record_dose(slot_id: int):
    return jsonify(record_dose(db_session(), current_actor(), slot_id, json_body()))


@bp.post("/api/v1/vitals-rounds/<int:round_id>")
@requires(RECORD_NURSING)
def api_record_round(round_id: int):
    return jsonify(record_round(db_session(), current_actor(), round_id, json_body()))


# --- pages -------------------------------------------------------------------------------------

def _form_int(name: str) -> int | None:
    raw = (request.form.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise Invalid(f"{name.replace('_', ' ').capitalize()} must be a number.", fields={name: ["Must be a number."]})
    return int(raw)


def _new_admission_page(status: int = 200, **context):
    from hms.org.models import Department
    from wards import services as wards

    session = db_session()
    departments = list(session.execute(select(Department).order_by(Department.name)).scalars())
    return render_template("journeys/admission_new.html", departments=departments,
                           wards=[v.ward for v in wards.list_wards(session)],
                           values=context.pop("values", {}), **context), status


@bp.get("/wards/admissions/new")
@requires(ADMIT)
def new_admission_page():
    return _new_admission_page(values={"patient_id": request.args.get("patient_id", "")})


@bp.post("/wards/admissions/new")
@requires(ADMIT)
def new_admission_submit():
    values = request.form.to_dict()
    try:
        data = {"patient_id": _form_int("patient_id"), "department_id": _form_int("department_id"),
                "ward_id": _form_int("ward_id"), "payer_class": values.get("payer_class") or "cash",
                "reason": values.get("reason") or None}
        result = admit(db_session(), current_actor(), data)
    except HmsError as err:
        mark_failed()
        return _new_admission_page(422 if isinstance(err, Invalid) else err.http_status,
                                   error=err.message, field_errors=err.fields or {}, values=values)
    flash(f"Admission {result['admission_no']} ordered: the admission desk has it in its queue.", "success")
    return redirect(url_for("wards.admission_page", admission_id=result["id"]))


def _back_to_admission(admission_id: int):
    return redirect(url_for("wards.admission_page", admission_id=admission_id))


def _page_action(admission_id: int, fn, done: str):
    try:
        fn()
    except HmsError as err:
        mark_failed()
        flash(err.message, "error")
        return _back_to_admission(admission_id)
    flash(done, "success")
    return _back_to_admission(admission_id)


@bp.post("/wards/admissions/<int:admission_id>/discharge")
@requires(DISCHARGE)
def discharge_submit(admission_id: int):
    return _page_action(admission_id, lambda: start_discharge(db_session(), current_actor(), admission_id),
                        "Discharge started: the discharge summary is in your work queue.")


@bp.post("/wards/admissions/<int:admission_id>/transfer")
@requires(TRANSFER)
def transfer_submit(admission_id: int):
    def act():
        request_transfer(db_session(), current_actor(), admission_id,
                         {"to_ward_id": _form_int("to_ward_id"), "reason": request.form.get("reason")})
    return _page_action(admission_id, act, "Transfer requested: the receiving ward has it in its queue.")


@bp.post("/wards/admissions/<int:admission_id>/orders")
@requires(ORDER)
def order_submit(admission_id: int):
    form = request.form

    def act():
        data: dict[str, Any] = {"kind": form.get("kind")}
        if data["kind"] == "lab":
            data["test_codes"] = [c.strip() for c in (form.get("test_codes") or "").split(",") if c.strip()]
        elif data["kind"] == "medication":
            data.update(item_code=form.get("item_code"), dose=form.get("dose"), route=form.get("route") or "oral",
                        every_hours=_form_int("every_hours"), issue_quantity=_form_int("issue_quantity"))
        elif data["kind"] == "procedure":
            data.update(code=form.get("code"), notes=form.get("notes"))
        else:
            data.update(description=form.get("description"), notes=form.get("notes"))
        place_order(db_session(), current_actor(), admission_id, data)
    return _page_action(admission_id, act, "Order placed.")

