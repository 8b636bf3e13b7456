"""Demo OPD schedules (`hms demo`): the demo doctor ("doctor") in General Medicine,
Monday to Saturday 09:00-14:00 in 15-minute slots, 30 appointments a day; and up to two
more active doctors, each in their first clinical department (General Medicine when they
have none), Monday to Friday 15:00-18:00 in 10-minute slots, 18 a day.

Idempotent: a doctor who already has an active schedule is left alone.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from departments.opd import services
from departments.opd.models import DoctorSchedule
from hms.audit import Actor
from hms.org.models import Department

DEMO_DOCTOR = "doctor"
MAIN = {"weekdays": [0, 1, 2, 3, 4, 5], "start_time": "09:00", "end_time": "14:00", "slot_minutes": 15,
        "daily_limit": 30, "room": "OPD Room 1"}
EVENING = {"weekdays": [0, 1, 2, 3, 4], "start_time": "15:00", "end_time": "18:00", "slot_minutes": 10,
           "daily_limit": 18}
MORE_DOCTORS = 2


def _has_schedule(session: Session, doctor_id: int) -> bool:
    return session.scalar(select(DoctorSchedule.id).where(DoctorSchedule.doctor_id == doctor_id,
                                                          DoctorSchedule.active.is_(True)).limit(1)) is not None


def load(session: Session, actor: Actor) -> list[str]:
    """Add the demo schedules that are missing; one summary line per doctor considered."""
    departments = {d.code: d for d in session.scalars(select(Department).where(Department.active.is_(True)))}
    general = departments.get("GM")
    if general is None:
        return ["opd schedules: skipped, department GM (General Medicine) does not exist"]
    lines: list[str] = []
    doctors = services.list_doctors(session)
    main = next((u for u in doctors if u.username == DEMO_DOCTOR), None)
    if main is None:
        lines.append(f"opd schedules: no active doctor account {DEMO_DOCTOR!r}")
    elif _has_schedule(session, main.id):
        lines.append(f"opd schedules: {main.username} already scheduled")
    else:
        services.create_schedule(session, actor, {"doctor_id": main.id, "department_id": general.id, **MAIN})
        lines.append(f"opd schedules: {main.username} in {general.code}, Mon-Sat 09:00-14:00")
    others = [u for u in doctors if u.username != DEMO_DOCTOR][:MORE_DOCTORS]
    clinical = {d.id: d for d in departments.values() if d.kind == "clinical"}
    for number, user in enumerate(others, 2):
        if _has_schedule(session, user.id):
            lines.append(f"opd schedules: {user.username} already scheduled")
            continue
        department = next((clinical[i] for i in sorted(user.department_ids) if i in clinical), general)
        services.create_schedule(session, actor, {"doctor_id": user.id, "department_id": department.id,
                                                  "room": f"OPD Room {number}", **EVENING})
        lines.append(f"opd schedules: {user.username} in {department.code}, Mon-Fri 15:00-18:00")
    return lines
