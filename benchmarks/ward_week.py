"""(f) A long stay on the shipped nursing pathways: is recording a dose or a vitals round on
day 30 as cheap as on day 1?

One admitted patient with three medicines every 8 hours and vitals rounds every 6 hours.
The nursing scheduler (journeys.inpatient.schedule_nursing) opens each round and dose slot
and starts its own small instance (vitals_round.bpmn, medication_dose.bpmn); the nurse
records it through its work item (journeys.inpatient.record_dose / record_round), as the
API does. The stay runs on a simulated clock: the wards' nursing rules read the hour of the
simulation (a dose cannot be recorded more than an hour early), nothing else is faked.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from benchmarks.common import Timer, bench_database_url, summary
from benchmarks.env import make_env
from hms.audit import Actor
from hms.db import utcnow


def _setup(env):
    from hms.app import prepare_workflows
    from hms.auth.services import actor_for, create_user
    from hms.org.models import Department
    from hms.patients.models import Patient
    from wards import nursing, services as wards
    from wards.models import Bed, Ward

    import inventory.demo

    prepare_workflows(env.config, env.db, sync=True)
    system = Actor.system("bench")
    with env.db.transaction() as s:
        dept = Department(code="GM", name="General Medicine", kind="clinical")
        s.add(dept)
        s.flush()
        ward = Ward(code="MW", name="Medical Ward", department_id=dept.id, ward_type="general", gender="mixed")
        s.add(ward)
        s.flush()
        bed = Bed(ward_id=ward.id, label="M1")
        s.add(bed)
        inventory.demo.load(s, system)
        patient = Patient(mrn="HMS-900001", name="Bench Patient", name_search="bench patient", sex="male")
        s.add(patient)
        s.flush()
        nurse = create_user(s, system, username="bench_ward_nurse", full_name="Ward Nurse", password="x" * 12,
                            roles=["nurse"], ward_ids=[ward.id])
        doctor = create_user(s, system, username="bench_doctor", full_name="Doctor", password="x" * 12,
                             roles=["doctor"])
        nurse_actor, doctor_actor = actor_for(nurse), actor_for(doctor)
        admission = wards.create_admission(s, doctor_actor, patient_id=patient.id, department_id=dept.id,
                                           ward_id=ward.id)
        wards.reserve_bed(s, system, bed.id, admission_id=admission.id, patient_id=patient.id)
        wards.accept_admission(s, nurse_actor, admission.id)
        for code in ("PCM1GIV", "DIC75I", "IBU400T"):
            nursing.start_medication_order(s, doctor_actor, admission.id, item_code=code, medicine_name=code,
                                           dose="1 unit", route="iv", every_hours=8)
    return nurse_actor


def run(days: int = 30, url: str | None = None) -> dict:
    import wards.nursing as nursing_module
    from journeys import inpatient
    from wards.nursing_models import DoseSlot, VitalsRound

    env = make_env(url or bench_database_url("ward_week"))
    nurse = _setup(env)
    db = env.db
    start = utcnow()
    clock = {"now": start}
    real_utcnow = nursing_module.utcnow
    nursing_module.utcnow = lambda: clock["now"]
    record_ms: dict[int, list[float]] = {}
    schedule_ms: dict[int, list[float]] = {}
    try:
        for hour in range(days * 24):
            clock["now"] = start + timedelta(hours=hour)
            day = hour // 24 + 1
            t = Timer()
            with t.measure():
                with db.transaction() as s:
                    inpatient.schedule_nursing(s, clock["now"])
            schedule_ms.setdefault(day, []).extend(t.samples)
            with db.transaction(readonly=True) as s:
                slots = list(s.execute(select(DoseSlot.id).where(DoseSlot.status == "pending")).scalars())
                rounds = list(s.execute(select(VitalsRound.id).where(VitalsRound.state == "due")).scalars())
            t = Timer()
            for slot_id in slots:
                with t.measure():
                    with db.transaction() as s:
                        inpatient.record_dose(s, nurse, slot_id, {"status": "given"})
            for round_id in rounds:
                with t.measure():
                    with db.transaction() as s:
                        inpatient.record_round(s, nurse, round_id, {"temperature_c": 37.0, "pulse": 80,
                                                                    "systolic": 120, "diastolic": 80})
            record_ms.setdefault(day, []).extend(t.samples)
        with db.transaction(readonly=True) as s:
            from hms.workflow.models import ProcessInstance

            doses = s.scalar(select(func.count()).select_from(DoseSlot).where(DoseSlot.status == "given"))
            done_rounds = s.scalar(select(func.count()).select_from(VitalsRound).where(VitalsRound.state == "done"))
            biggest = s.scalar(select(func.max(func.length(ProcessInstance.state))))
    finally:
        nursing_module.utcnow = real_utcnow
        db.dispose()
    # Day 1 warms caches up (spec parsing, first inserts); day 2 is the fair start.
    first, last = summary(record_ms[min(2, days)]), summary(record_ms[days])
    return {"days": days, "doses_given": doses, "rounds_done": done_rounds, "largest_state_bytes": biggest,
            "record_day2": first, "record_last": last, "ratio": last["p50"] / first["p50"],
            "schedule_day2": summary(schedule_ms[min(2, days)]), "schedule_last": summary(schedule_ms[days])}
