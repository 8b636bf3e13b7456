"""Check-in: the encounter and token (OPD service), then the OPD pathway (engine)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy.orm import Session

from hms import events
from hms.audit import Actor
from hms.auth.permissions import define, requires
from hms.errors import Invalid
from hms.org.models import Department
from hms.web.context import current_actor, db_session, json_body
from hms.workflow import engine

bp = Blueprint("journeys_opd", __name__)

CHECK_IN = define("opd.checkin", "reception", "nurse", "admin")


def start_visit(session: Session, actor: Actor, encounter) -> dict:
    """Start opd_visit for a checked-in encounter; the encounter remembers its instance."""
    from departments.opd import services as opd

    department = session.get(Department, encounter.department_id)
    result = engine.start_pathway(
        session, actor, "opd_visit", patient_id=encounter.patient_id,
        business_key=f"encounter:{encounter.id}",
        data={"encounter_id": encounter.id, "department_id": encounter.department_id,
              "department_code": department.code, "doctor_id": encounter.doctor_id,
              "token": encounter.token_no, "payer_class": encounter.payer_class or "cash"})
    opd.attach_instance(session, encounter.id, result.instance.id)
    return {"token": encounter.token_no, "encounter_id": encounter.id, "instance_id": result.instance.id,
            "status": result.instance.status, "fault": result.fault}


def check_in_and_start(session: Session, actor: Actor, data: dict) -> dict:
    from departments.opd import services as opd

    errors = {k: ["must be a whole number"] for k in ("patient_id", "department_id", "doctor_id", "appointment_id")
              if data.get(k) is not None and (not isinstance(data.get(k), int) or isinstance(data.get(k), bool))}
    for k in ("patient_id", "department_id"):
        if data.get(k) is None:
            errors[k] = ["required"]
    if errors:
        raise Invalid("The check-in is not complete.", fields=errors)
    encounter = opd.check_in(session, actor, patient_id=data["patient_id"], department_id=data["department_id"],
                             doctor_id=data.get("doctor_id"), appointment_id=data.get("appointment_id"))
    return start_visit(session, actor, encounter)


def _start_visit_on_check_in(session: Session, actor: Actor, *, encounter, **_) -> dict:
    return start_visit(session, actor, encounter)


def _lab_section(session: Session, actor: Actor, *, patient_id: int, **_) -> dict:
    from departments.lab.services import list_verified_results_for_patient

    return {"lab_results": list_verified_results_for_patient(session, actor, patient_id)}


def register() -> None:
    """Answer OPD's check-in and clinical-record events (see hms.events)."""
    events.subscribe("opd.checked_in", _start_visit_on_check_in)
    events.subscribe("patient_record.sections", _lab_section)


@bp.post("/api/v1/opd/checkins")
@requires(CHECK_IN)
def api_check_in():
    result = check_in_and_start(db_session(), current_actor(), json_body())
    status = 201 if result["fault"] is None else 409
    return jsonify(result), status
