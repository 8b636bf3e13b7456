"""The roles of HMS. A BPMN lane name maps to one of these (see `role_for_lane`)."""

from __future__ import annotations

ROLES: dict[str, str] = {
    "reception": "Reception",
    "nurse": "Nurse",
    # The nurse in charge of a ward's shift: overdue and missed ward work escalates here.
    "charge_nurse": "Charge Nurse",
    "doctor": "Doctor",
    "lab_technician": "Lab Technician",
    "pathologist": "Pathologist",
    "pharmacist": "Pharmacist",
    "cashier": "Cashier",
    "finance_manager": "Finance Manager",
    "department_head": "Department Head",
    "housekeeping": "Housekeeping",
    "admin": "Administrator",
}

ALL_ROLES = frozenset(ROLES)
# A role that includes another: a charge nurse is a nurse of the ward, with escalations on top.
IMPLIES: dict[str, frozenset[str]] = {"charge_nurse": frozenset({"nurse"})}
CLINICIANS = frozenset({"doctor", "nurse", "lab_technician", "pathologist", "pharmacist"})


def effective_roles(names) -> frozenset[str]:
    """The roles a user acts with: the ones granted plus the ones they imply."""
    roles = set(names)
    for name in names:
        roles |= IMPLIES.get(name, frozenset())
    return frozenset(roles)


def role_for_lane(lane_name: str | None) -> str | None:
    """'Lab Technician', 'lab_technician' and 'lab technician' all name the lab_technician role."""
    if not lane_name:
        return None
    key = lane_name.strip().lower().replace(" ", "_").replace("-", "_")
    return key if key in ROLES else None
