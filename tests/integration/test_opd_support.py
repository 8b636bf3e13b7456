"""Factories shared by the OPD tests (no tests here): patients, doctors, schedules and
check-ins written through the services, each in its own committed transaction."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta

from sqlalchemy import select

from departments.opd import services
from hms.audit import Actor, AuditLog
from hms.patients.services import register_patient

_cnic = itertools.count(1)
SYSTEM = Actor.system("test")


def make_patient(database, name="Ahmed Khan", *, mobile="0300-1234567", dob="1985-06-15", sex="male") -> int:
    n = next(_cnic)
    data = {"name": name, "sex": sex, "date_of_birth": dob, "cnic": f"35202{n:07d}1"}
    if mobile:
        data["mobile"] = mobile
    with database.transaction() as s:
        return register_patient(s, SYSTEM, data, confirm_duplicate=True).id


def actor_for(user_id: int, *roles: str, username: str | None = None) -> Actor:
    return Actor(user_id=user_id, username=username or f"user{user_id}", roles=frozenset(roles))


def add_schedule(database, doctor_id: int, department_id: int, **overrides) -> int:
    data = {"doctor_id": doctor_id, "department_id": department_id, "weekdays": [0, 1, 2, 3, 4, 5, 6],
            "start_time": "09:00", "end_time": "13:00", "slot_minutes": 15, "daily_limit": 16, "room": "Room 4"}
    data.update(overrides)
    with database.transaction() as s:
        return services.create_schedule(s, SYSTEM, data).id


def tomorrow(database) -> date:
    with database.transaction(readonly=True) as s:
        return services.local_today(s) + timedelta(days=1)


def at(day: date, hhmm: str) -> str:
    """A local ISO date-time as a datetime-local input sends it."""
    return f"{day.isoformat()}T{hhmm}"


def check_in(database, actor, patient_id, department_id, **kwargs):
    with database.transaction() as s:
        return services.check_in(s, actor, patient_id=patient_id, department_id=department_id, **kwargs)


def audit_actions(database, action: str) -> list[AuditLog]:
    with database.transaction(readonly=True) as s:
        return list(s.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.seq)))


def utc(day: date, hhmm: str, tz) -> datetime:
    hours, minutes = (int(x) for x in hhmm.split(":"))
    return datetime(day.year, day.month, day.day, hours, minutes, tzinfo=tz)
