"""Service-task operations of opd (registered as opd.<verb>).

| operation | parameters | result |
|---|---|---|
| opd.record_triage | encounter_id, vitals (the triage form's data) | {"bmi", "bmi_category", "flags", "priority", "vitals_id"} |
| opd.save_consultation | encounter_id, consultation (the consultation form's data), allergy_alerts?, allergy_override_reason? | {"lab_tests", "has_lab", "prescription_lines", "has_meds", "follow_up_date", "note_id", "referral"} |
| opd.complete_encounter | encounter_id | {"status": "completed"} |
| opd.encounter_info | encounter_id | {"department_code", "doctor_id", "payer_class", "token", "department_id", "status", "visit_date", "encounter_id"} |

Refusals (implausible vitals, unknown ICD-10 codes, a signed note) raise the services'
HmsError: the step rolls back and the user task stays open with the message.
"""

from __future__ import annotations

from departments.opd import icd10, services
from departments.opd.schemas import EncounterParams, RecordTriageParams, SaveConsultationParams
from hms.errors import Conflict
from hms.workflow.operations import OperationContext, operation

icd10.register()


def _same_patient(ctx: OperationContext, encounter_id: int) -> None:
    """A pathway instance acts on its own patient's encounter only."""
    if ctx.patient_id is None:
        return
    info = services.get_encounter(ctx.session, ctx.actor, encounter_id, clinical=False)
    if info.patient_id != ctx.patient_id:
        raise Conflict(f"Encounter {encounter_id} belongs to another patient than this pathway's.",
                       code="wrong_patient")


@operation("opd.record_triage", params=RecordTriageParams)
def record_triage(ctx: OperationContext, params: dict) -> dict:
    """Record triage vital signs; returns BMI, abnormal-value flags and the priority."""
    _same_patient(ctx, params["encounter_id"])
    return services.record_triage(ctx.session, ctx.actor, params["encounter_id"], params["vitals"])


@operation("opd.save_consultation", params=SaveConsultationParams)
def save_consultation(ctx: OperationContext, params: dict) -> dict:
    """Record and sign the consultation; returns lab tests and medicine lines to order."""
    _same_patient(ctx, params["encounter_id"])
    return services.save_consultation(ctx.session, ctx.actor, params["encounter_id"], params["consultation"],
                                      allergy_alerts=params.get("allergy_alerts") or [],
                                      allergy_override_reason=params.get("allergy_override_reason"))


@operation("opd.complete_encounter", params=EncounterParams)
def complete_encounter(ctx: OperationContext, params: dict) -> dict:
    """Close the OPD visit after the signed consultation."""
    _same_patient(ctx, params["encounter_id"])
    encounter = services.complete_encounter(ctx.session, ctx.actor, params["encounter_id"])
    return {"status": encounter.status}


@operation("opd.encounter_info", params=EncounterParams)
def encounter_info(ctx: OperationContext, params: dict) -> dict:
    """Department code, doctor, payer class and token of an encounter (for routing and billing)."""
    _same_patient(ctx, params["encounter_id"])
    return services.encounter_info(ctx.session, params["encounter_id"])
