"""The OPD demo loader: the demo doctor's Mon-Sat morning clinic in General Medicine, a
couple more doctors when there are any, and nothing new on a second run."""

from __future__ import annotations

from datetime import time

from sqlalchemy import select

from departments.opd import demo
from departments.opd.models import DoctorSchedule
from hms import demo as hms_demo
from hms.audit import Actor
from hms.auth.models import User
from hms.org.models import Department
from tests.integration.test_opd_support import add_schedule


def test_demo_schedules_are_loaded_once(database, make_user):
    with database.transaction() as s:
        hms_demo.load_departments(s)
        hms_demo.load_wards(s)
        hms_demo.load_users(s)
    with database.transaction(readonly=True) as s:
        paed = s.scalar(select(Department.id).where(Department.code == "PAED"))
    make_user("dr_imran", "doctor", department_ids=[paed], full_name="Dr. Imran Qureshi")
    with database.transaction() as s:
        lines = demo.load(s, Actor.system("demo"))
    assert lines[0] == "opd schedules: doctor in GM, Mon-Sat 09:00-14:00"
    assert "opd schedules: dr_imran in PAED, Mon-Fri 15:00-18:00" in lines
    with database.transaction(readonly=True) as s:
        doctor = s.scalar(select(User).where(User.username == "doctor"))
        [main] = s.scalars(select(DoctorSchedule).where(DoctorSchedule.doctor_id == doctor.id))
        assert main.weekdays == [0, 1, 2, 3, 4, 5] and main.slot_minutes == 15 and main.daily_limit == 30
        assert (main.start_time, main.end_time) == (time(9), time(14))
        count = len(list(s.scalars(select(DoctorSchedule))))
    with database.transaction() as s:
        again = demo.load(s, Actor.system("demo"))
    assert all("already scheduled" in line for line in again)
    with database.transaction(readonly=True) as s:
        assert len(list(s.scalars(select(DoctorSchedule)))) == count


def test_demo_without_departments_says_so(database):
    with database.transaction() as s:
        assert demo.load(s, Actor.system("demo")) == [
            "opd schedules: skipped, department GM (General Medicine) does not exist"]
