"""Ward nursing on a real database (SQLite, or PostgreSQL from HMS_TEST_DATABASE_URL):
vitals rounds and their interval, medication orders and dose slots, missed work and its
review, the ward's work list, the MAR, and the wards.* nursing operations."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from hms import settings
from hms.audit import Actor, AuditLog
from hms.db import utcnow
from hms.errors import Conflict, Forbidden, Invalid, NotFound
from hms.patients.services import register_patient
from hms.workflow import operations
from hms.workflow.operations import OperationContext
from wards import nursing
from wards.models import Admission, Bed, Ward
from wards.nursing_models import DoseSlot, MedicationOrder, VitalsRound

SYSTEM = Actor.system("test")
VITALS = {"temperature_c": 37.4, "pulse": 88, "systolic": 124, "diastolic": 78, "spo2": 97}


@pytest.fixture
def ward(app, database, make_ward, make_user):
    """Two wards; an admitted patient on ward A (bed A-01, admitted 7 hours ago), actors."""
    a = make_ward(code="MA", name="Medical A", beds=2)
    b = make_ward(code="SB", name="Surgical B", beds=1)
    ids = {"doctor": make_user("dr_nursing", "doctor"), "nurse_a": make_user("nurse_a", "nurse", ward_ids=[a]),
           "nurse_b": make_user("nurse_b", "nurse", ward_ids=[b]),
           "charge_a": make_user("charge_a", "charge_nurse", ward_ids=[a]),
           "charge_b": make_user("charge_b", "charge_nurse", ward_ids=[b])}
    with database.transaction() as s:
        patient = register_patient(s, SYSTEM, {"name": "Zainab Fatima", "sex": "female",
                                               "date_of_birth": "1992-08-14"})
        bed = s.execute(select(Bed).where(Bed.ward_id == a).order_by(Bed.label)).scalars().first()
        department_id = s.get(Ward, a).department_id
        admission = Admission(admission_no="ADM-T00001", patient_id=patient.id, department_id=department_id,
                              ward_id=a, bed_id=bed.id, state="admitted",
                              admitted_at=utcnow() - timedelta(hours=7), doctor_id=ids["doctor"])
        s.add(admission)
        s.flush()
        out = {"ward_a": a, "ward_b": b, "admission_id": admission.id, "patient_id": patient.id,
               "bed_label": bed.label, "admitted_at": admission.admitted_at, "department_id": department_id}
    out["doctor"] = Actor(ids["doctor"], "dr_nursing", frozenset({"doctor"}))
    out["nurse_a"] = Actor(ids["nurse_a"], "nurse_a", frozenset({"nurse"}), ward_ids=frozenset({a}))
    out["nurse_b"] = Actor(ids["nurse_b"], "nurse_b", frozenset({"nurse"}), ward_ids=frozenset({b}))
    out["charge_a"] = Actor(ids["charge_a"], "charge_a", frozenset({"charge_nurse", "nurse"}), ward_ids=frozenset({a}))
    out["charge_b"] = Actor(ids["charge_b"], "charge_b", frozenset({"charge_nurse", "nurse"}), ward_ids=frozenset({b}))
    return out


def _open_rounds(database, now=None):
    with database.transaction() as s:
        return [(r.id, r.due_at) for r in nursing.open_due_rounds(s, now or utcnow())]


def _open_slots(database, now=None):
    with database.transaction() as s:
        return [(r.id, r.due_at) for r in nursing.open_due_slots(s, now or utcnow())]


def _order(database, ward, every_hours=6, first_due_at=None, **kw):
    with database.transaction() as s:
        return nursing.start_medication_order(
            s, ward["doctor"], ward["admission_id"], item_code=kw.get("item_code", "pcm500"),
            medicine_name=kw.get("medicine_name", "Paracetamol 500 mg"), dose=kw.get("dose", "1 g"),
            route=kw.get("route", "oral"), every_hours=every_hours, first_due_at=first_due_at).id


def _audit_actions(database, entity_type):
    with database.transaction(readonly=True) as s:
        return list(s.execute(select(AuditLog.action, AuditLog.patient_id).where(AuditLog.entity_type == entity_type)
                              .order_by(AuditLog.seq)).all())


# --- rounds -----------------------------------------------------------------------------

def test_first_round_is_due_one_interval_after_admission_and_opening_twice_opens_nothing(database, ward):
    opened = _open_rounds(database)
    assert len(opened) == 1
    assert opened[0][1] == ward["admitted_at"] + timedelta(hours=6)
    assert _open_rounds(database) == []  # idempotent
    # the next round opens only when it is within the hour
    assert _open_rounds(database, utcnow() + timedelta(hours=3, minutes=58)) == []
    later = _open_rounds(database, utcnow() + timedelta(hours=4, minutes=2))
    assert [due for _, due in later] == [ward["admitted_at"] + timedelta(hours=12)]
    actions = _audit_actions(database, "vitals_round")
    assert actions == [("vitals_round.open", ward["patient_id"])] * 2


def test_a_round_is_not_opened_for_patients_not_on_the_ward(database, ward):
    for state, cleared in (("discharged", None), ("ordered", None), ("discharging", utcnow())):
        with database.transaction() as s:
            a = s.get(Admission, ward["admission_id"])
            a.state, a.nursing_cleared_at = state, cleared
        assert _open_rounds(database) == []
    with database.transaction() as s:  # discharging, nursing not cleared yet: still nursed
        a = s.get(Admission, ward["admission_id"])
        a.state, a.nursing_cleared_at = "discharging", None
    assert len(_open_rounds(database)) == 1


def test_a_changed_interval_applies_from_the_next_round(database, ward):
    (first_id, first_due), = _open_rounds(database)
    with database.transaction() as s:
        with pytest.raises(Forbidden) as err:
            nursing.set_round_interval(s, ward["nurse_a"], ward["admission_id"], 2)
        assert err.value.code == "doctor_only"
        for bad in (0, 25, "four", None):
            with pytest.raises(Invalid):
                nursing.set_round_interval(s, ward["doctor"], ward["admission_id"], bad)
        with pytest.raises(NotFound):
            nursing.set_round_interval(s, ward["doctor"], 9999, 2)
        assert nursing.set_round_interval(s, ward["doctor"], ward["admission_id"], 2).round_interval_hours == 2
    opened = _open_rounds(database, first_due + timedelta(hours=1, minutes=1))
    assert [due for _, due in opened] == [first_due + timedelta(hours=2)]
    with database.transaction(readonly=True) as s:
        assert nursing.round_interval(s, ward["admission_id"]) == 2
    assert ("nursing.round_interval", ward["patient_id"]) in _audit_actions(database, "admission")


def test_a_scheduler_that_fell_behind_opens_the_latest_round_not_every_one_in_between(database, ward):
    _open_rounds(database)
    opened = _open_rounds(database, utcnow() + timedelta(hours=20))
    assert len(opened) == 1
    assert opened[0][1] == ward["admitted_at"] + timedelta(hours=24)


def test_recording_a_round_keeps_the_values_and_refuses_a_second_recording(database, ward):
    (round_id, _), = _open_rounds(database)
    with database.transaction() as s:
        with pytest.raises(Forbidden) as err:
            nursing.record_round(s, ward["nurse_b"], round_id, VITALS)
        assert err.value.code == "out_of_scope"
        with pytest.raises(Invalid) as err:
            nursing.record_round(s, ward["nurse_a"], round_id, {**VITALS, "pulse": 300, "spo2": 20})
        assert set(err.value.fields) == {"pulse", "spo2"}
    with database.transaction() as s:
        row = nursing.record_round(s, ward["nurse_a"], round_id, {**VITALS, "notes": "Comfortable"})
        assert row.state == "done"
    with database.transaction(readonly=True) as s:
        row = s.get(VitalsRound, round_id)
        assert row.temperature_c == Decimal("37.4") and row.pulse == 88 and row.spo2 == 97
        assert row.recorded_at is not None and row.notes == "Comfortable"
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            nursing.record_round(s, ward["nurse_a"], round_id, VITALS)
        assert err.value.code == "round_closed"
        assert nursing.mark_round_missed(s, SYSTEM, round_id) is False
    assert ("vitals_round.record", ward["patient_id"]) in _audit_actions(database, "vitals_round")


def test_a_missed_round_cannot_be_filled_in_later_and_is_reviewed_by_the_wards_charge_nurse(database, ward):
    (round_id, _), = _open_rounds(database)
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            nursing.review_missed(s, ward["charge_a"], "round", round_id, "Was not due yet")
        assert err.value.code == "not_missed"
        assert nursing.mark_round_missed(s, SYSTEM, round_id) is True
        assert nursing.mark_round_missed(s, SYSTEM, round_id) is False
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            nursing.record_round(s, ward["nurse_a"], round_id, VITALS)
        assert err.value.code == "round_closed"
        with pytest.raises(Forbidden) as err:
            nursing.review_missed(s, ward["nurse_a"], "round", round_id, "ok")
        assert err.value.code == "charge_nurse_only"
        with pytest.raises(Forbidden) as err:
            nursing.review_missed(s, ward["charge_b"], "round", round_id, "ok")
        assert err.value.code == "out_of_scope"
        nursing.review_missed(s, ward["charge_a"], "round", round_id, "Patient was in radiology.")
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            nursing.review_missed(s, ward["charge_a"], "round", round_id, "again")
        assert err.value.code == "already_reviewed"
        row = s.get(VitalsRound, round_id)
        assert row.state == "missed" and row.review_note == "Patient was in radiology."
        assert row.reviewed_by_id == ward["charge_a"].user_id


# --- medication orders and dose slots ---------------------------------------------------

def test_prescribing_is_for_doctors_on_admitted_patients_with_valid_fields(database, ward):
    with database.transaction() as s:
        base = dict(item_code="PCM500", medicine_name="Paracetamol", dose="1 g", route="oral", every_hours=6)
        with pytest.raises(Forbidden):
            nursing.start_medication_order(s, ward["nurse_a"], ward["admission_id"], **base)
        for field, value in (("route", "rectal"), ("every_hours", 0), ("every_hours", 169), ("dose", " "),
                             ("item_code", None), ("medicine_name", "x" * 121)):
            with pytest.raises(Invalid) as err:
                nursing.start_medication_order(s, ward["doctor"], ward["admission_id"], **{**base, field: value})
            assert field in err.value.fields
        with pytest.raises(Invalid) as err:
            nursing.start_medication_order(s, ward["doctor"], ward["admission_id"], **base,
                                           first_due_at=utcnow() - timedelta(hours=2))
        assert "first_due_at" in err.value.fields
        with pytest.raises(Invalid):
            nursing.start_medication_order(s, ward["doctor"], ward["admission_id"], **base, first_due_at="tomorrow")
        order = nursing.start_medication_order(s, ward["doctor"], ward["admission_id"], **base)
        assert order.state == "active" and order.item_code == "PCM500"
        assert order.ordered_by_id == ward["doctor"].user_id
    for state, cleared, code in (("ordered", None, "not_admitted"), ("discharging", utcnow(), "orders_frozen")):
        with database.transaction() as s:
            a = s.get(Admission, ward["admission_id"])
            a.state, a.nursing_cleared_at = state, cleared
        with database.transaction() as s:
            with pytest.raises(Conflict) as err:
                nursing.start_medication_order(s, ward["doctor"], ward["admission_id"], **base)
            assert err.value.code == code
    assert _audit_actions(database, "medication_order") == [("medication_order.start", ward["patient_id"])]


def test_a_naive_first_dose_time_is_local_time(database, ward):
    local = (utcnow() + timedelta(hours=2)).astimezone(timezone(timedelta(hours=5))).replace(tzinfo=None)
    order_id = _order(database, ward, first_due_at=local.replace(microsecond=0).isoformat())
    with database.transaction(readonly=True) as s:
        due = s.get(MedicationOrder, order_id).first_due_at
    assert abs(due - (utcnow() + timedelta(hours=2))) < timedelta(minutes=1)  # Asia/Karachi is UTC+5


def test_slots_follow_the_order_every_n_hours_and_opening_twice_opens_nothing(database, ward):
    first = utcnow().replace(microsecond=0) + timedelta(minutes=30)
    order_id = _order(database, ward, every_hours=6, first_due_at=first)
    assert [due for _, due in _open_slots(database)] == [first]
    assert _open_slots(database) == []
    assert _open_slots(database, utcnow() + timedelta(hours=4)) == []
    # 13 hours later the scheduler opens both slots it missed: a dose not given must show
    assert [due for _, due in _open_slots(database, first + timedelta(hours=12))] == \
        [first + timedelta(hours=6), first + timedelta(hours=12)]
    with database.transaction(readonly=True) as s:
        slots = list(s.execute(select(DoseSlot).where(DoseSlot.order_id == order_id)).scalars())
    assert {sl.ward_id for sl in slots} == {ward["ward_a"]} and {sl.status for sl in slots} == {"pending"}


def test_stopping_an_order_cancels_future_slots_and_opens_no_more(database, ward):
    now = utcnow().replace(microsecond=0)
    order_id = _order(database, ward, every_hours=1, first_due_at=now - timedelta(minutes=30))
    opened = _open_slots(database, now + timedelta(minutes=45))  # horizon: now + 105 minutes
    assert [due for _, due in opened] == [now - timedelta(minutes=30), now + timedelta(minutes=30),
                                          now + timedelta(minutes=90)]
    with database.transaction() as s:
        with pytest.raises(Forbidden):
            nursing.stop_medication_order(s, ward["nurse_a"], order_id, "Course complete")
        with pytest.raises(Invalid):
            nursing.stop_medication_order(s, ward["doctor"], order_id, " ")
        order = nursing.stop_medication_order(s, ward["doctor"], order_id, "Course complete")
        assert order.state == "stopped" and order.stopped_at is not None
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            nursing.stop_medication_order(s, ward["doctor"], order_id, "again")
        assert err.value.code == "order_stopped"
        statuses = [sl.status for sl in s.execute(select(DoseSlot).where(DoseSlot.order_id == order_id)
                                                   .order_by(DoseSlot.due_at)).scalars()]
    assert statuses == ["pending", "cancelled", "cancelled"]  # the overdue dose stays to be recorded
    assert _open_slots(database, now + timedelta(hours=10)) == []
    with database.transaction() as s:
        cancelled = s.execute(select(DoseSlot.id).where(DoseSlot.status == "cancelled")).scalars().first()
        assert nursing.mark_dose_missed(s, SYSTEM, cancelled) is False
        with pytest.raises(Conflict) as err:
            nursing.record_dose(s, ward["nurse_a"], cancelled, "given")
        assert err.value.code == "slot_closed"


def test_recording_a_dose_given_not_given_or_held(database, ward):
    now = utcnow()
    _order(database, ward, every_hours=1, first_due_at=now - timedelta(minutes=50))
    ids = [i for i, _ in _open_slots(database, now - timedelta(minutes=40))]
    assert len(ids) == 2
    with database.transaction() as s:
        with pytest.raises(Forbidden) as err:
            nursing.record_dose(s, ward["nurse_b"], ids[0], "given")
        assert err.value.code == "out_of_scope"
        with pytest.raises(Invalid):
            nursing.record_dose(s, ward["nurse_a"], ids[0], "not_given")
        slot = nursing.record_dose(s, ward["nurse_a"], ids[0], "held", "  BP 85/50  ")
        assert slot.status == "held" and slot.reason == "BP 85/50"
        assert slot.recorded_by_id == ward["nurse_a"].user_id
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            nursing.record_dose(s, ward["nurse_a"], ids[0], "given")
        assert err.value.code == "slot_closed"
        assert nursing.record_dose(s, ward["charge_a"], ids[1], "given").status == "given"
        with pytest.raises(NotFound):
            nursing.record_dose(s, ward["nurse_a"], 99999, "given")
    assert [a for a, _ in _audit_actions(database, "dose_slot")].count("dose_slot.record") == 2


def test_a_dose_cannot_be_recorded_more_than_an_hour_early(database, ward):
    first = utcnow() + timedelta(hours=3)
    _order(database, ward, every_hours=12, first_due_at=first)
    (slot_id, _), = _open_slots(database, first)
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            nursing.record_dose(s, ward["nurse_a"], slot_id, "given")
        assert err.value.code == "too_early"


def test_a_missed_dose_goes_to_review_and_counts_on_the_ward(database, ward):
    now = utcnow()
    _order(database, ward, every_hours=8, first_due_at=now - timedelta(minutes=40))
    (slot_id, _), = _open_slots(database, now)
    with database.transaction() as s:
        assert nursing.mark_dose_missed(s, SYSTEM, slot_id) is True
        assert nursing.mark_dose_missed(s, SYSTEM, slot_id) is False
    with database.transaction() as s:
        with pytest.raises(Conflict):
            nursing.record_dose(s, ward["nurse_a"], slot_id, "given")
        counts = nursing.missed_counts(s, ward["ward_a"], now - timedelta(hours=24))
        assert counts == {"rounds": 0, "doses": 1, "unreviewed": 1}
        with pytest.raises(Invalid):
            nursing.review_missed(s, ward["charge_a"], "dose", slot_id, "")
        nursing.review_missed(s, ward["charge_a"], "dose", slot_id, "Given late at 10:40, documented.")
    with database.transaction(readonly=True) as s:
        assert nursing.missed_counts(s, ward["ward_a"], now - timedelta(hours=24))["unreviewed"] == 0
        assert nursing.missed_counts(s, ward["ward_b"], now - timedelta(hours=24))["doses"] == 0
    assert ("dose_slot.review", ward["patient_id"]) in _audit_actions(database, "dose_slot")


# --- what the workflow instances carry, and the views --------------------------------------------

def test_task_info_carries_due_and_escalation_times_from_the_grace_setting(database, ward):
    now = utcnow()
    _order(database, ward, every_hours=6, first_due_at=now, medicine_name="Ceftriaxone", dose="1 g", route="iv")
    (slot_id, due), = _open_slots(database, now)
    (round_id, round_due), = _open_rounds(database)
    with database.transaction() as s:
        info = nursing.task_info(s, "dose", slot_id)
        assert info["due_at"] == due.isoformat()
        assert datetime.fromisoformat(info["escalate_at"]) == due + timedelta(minutes=60)
        assert (info["medicine"], info["dose"], info["route"]) == ("Ceftriaxone", "1 g", "iv")
        assert info["ward_id"] == ward["ward_a"] and info["patient_id"] == ward["patient_id"]
        settings.set_value(s, SYSTEM, "wards.round_grace_minutes", 30)
    with database.transaction() as s:
        info = nursing.task_info(s, "round", round_id)
        assert datetime.fromisoformat(info["escalate_at"]) == round_due + timedelta(minutes=30)
        assert info["title"] == "Vitals round" and info["medicine"] is None
        nursing.attach_instance(s, "round", round_id, 41)
        nursing.attach_instance(s, "round", round_id, 41)
        with pytest.raises(Conflict):
            nursing.attach_instance(s, "round", round_id, 42)
        assert s.get(VitalsRound, round_id).instance_id == 41


def test_the_wards_work_list_shows_due_rounds_and_doses_with_patient_and_bed(database, ward):
    now = utcnow()
    _order(database, ward, every_hours=6, first_due_at=now + timedelta(minutes=10))
    _open_slots(database, now)
    _open_rounds(database, now)
    with database.transaction(readonly=True) as s:
        work = nursing.list_ward_work(s, ward["ward_a"], now)
        assert len(work["rounds"]) == 1 and len(work["doses"]) == 1
        r, d = work["rounds"][0], work["doses"][0]
        assert r.bed_label == ward["bed_label"] and r.patient.id == ward["patient_id"] and r.overdue is True
        assert d.overdue is False and d.order.medicine_name == "Paracetamol 500 mg"
        other = nursing.list_ward_work(s, ward["ward_b"], now)
        assert other["rounds"] == [] and other["doses"] == []


def test_the_mar_shows_the_slots_of_one_local_day(database, ward):
    # Asia/Karachi is UTC+5: a dose at 20:00 UTC belongs to the next local day
    now = utcnow()
    order_id = _order(database, ward, every_hours=4, first_due_at=now - timedelta(minutes=30))
    _open_slots(database, now + timedelta(hours=23))
    with database.transaction(readonly=True) as s:
        slots = list(s.execute(select(DoseSlot).where(DoseSlot.order_id == order_id)).scalars())
        tz = s.info["config"].tz
        day = slots[0].due_at.astimezone(tz).date()
        rows = nursing.mar(s, ward["admission_id"], day)
        assert [o.id for o, _ in rows] == [order_id]
        expected = sorted(sl.due_at for sl in slots if sl.due_at.astimezone(tz).date() == day)
        assert [sl.due_at for sl in rows[0][1]] == expected
        before = nursing.mar(s, ward["admission_id"], day - timedelta(days=2))
        assert before == []  # the order did not exist yet


# --- operations ------------------------------------------------------------------------------

def _ctx(s, actor, patient_id=None):
    return OperationContext(session=s, actor=actor, instance_id=None, patient_id=patient_id, pathway_key=None)


def test_operations_record_mark_and_review(database, ward):
    now = utcnow()
    _order(database, ward, every_hours=8, first_due_at=now)
    (slot_id, _), = _open_slots(database, now)
    (round_id, _), = _open_rounds(database)
    pid = ward["patient_id"]
    with database.transaction() as s:
        assert operations.call("wards.record_vitals_round", _ctx(s, ward["nurse_a"], pid),
                               {"round_id": round_id, "vitals": VITALS}) == {"ok": True, "round_id": round_id}
        assert operations.call("wards.mark_round_missed", _ctx(s, SYSTEM, pid), {"round_id": round_id}) == \
            {"missed": False}
        assert operations.call("wards.record_dose", _ctx(s, ward["nurse_a"], pid),
                               {"slot_id": slot_id, "status": "not_given", "reason": "Nil by mouth"}) == \
            {"ok": True, "status": "not_given"}
        info = operations.call("wards.nursing_task_info", _ctx(s, SYSTEM), {"kind": "dose", "item_id": slot_id})
        assert info["admission_id"] == ward["admission_id"] and info["escalate_at"]
        with pytest.raises(Conflict) as err:  # another pathway's patient
            operations.call("wards.mark_dose_missed", _ctx(s, SYSTEM, pid + 1), {"slot_id": slot_id})
        assert err.value.code == "wrong_patient"
        with pytest.raises(operations.OperationError):
            operations.call("wards.record_dose", _ctx(s, SYSTEM, pid), {"slot_id": slot_id, "status": "done"})
    with database.transaction() as s:
        (round2, _), = [(r.id, r.due_at) for r in nursing.open_due_rounds(s, now + timedelta(hours=6))]
        assert operations.call("wards.mark_round_missed", _ctx(s, SYSTEM, pid), {"round_id": round2}) == \
            {"missed": True}
        assert operations.call("wards.review_missed", _ctx(s, ward["charge_a"], pid),
                               {"kind": "round", "item_id": round2, "note": "Patient in theatre"}) == {"ok": True}


# --- PostgreSQL: two schedulers at once ------------------------------------------------------------

@pytest.mark.postgres
def test_two_schedulers_at_once_open_each_round_and_slot_once(database, ward):
    now = utcnow()
    _order(database, ward, every_hours=2, first_due_at=now - timedelta(minutes=30))
    barrier = threading.Barrier(2)
    results, errors = [], []

    def run():
        try:
            barrier.wait(timeout=10)
            with database.transaction() as s:
                results.append((len(nursing.open_due_rounds(s, now)), len(nursing.open_due_slots(s, now))))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert sorted(results) == [(0, 0), (1, 1)] or sum(r for r, _ in results) == 1
    with database.transaction(readonly=True) as s:
        assert s.execute(select(func.count()).select_from(VitalsRound)).scalar() == 1
        assert s.execute(select(func.count()).select_from(DoseSlot)).scalar() == 1


# --- with the shipped pathways: the scheduler, the nurse's task, the timer, the review -------------------

def _items(database, instance_id):
    from hms.workflow.models import WorkItem

    with database.transaction(readonly=True) as s:
        return [(w.id, w.task_name, w.status, w.candidate_role if hasattr(w, "candidate_role") else None)
                for w in s.execute(select(WorkItem).where(WorkItem.instance_id == instance_id)
                                   .order_by(WorkItem.id)).scalars()]


def test_pathways_record_a_dose_and_escalate_a_missed_round_to_the_charge_nurse(database, ward, shipped_pathways):
    from hms.workflow import engine, timers
    from journeys import inpatient

    now = utcnow()
    _order(database, ward, every_hours=8, first_due_at=now)
    with database.transaction() as s:
        settings.set_value(s, SYSTEM, "wards.round_grace_minutes", 0)  # the round (due an hour ago) is late
    with database.transaction() as s:
        assert inpatient.schedule_nursing(s, now) == {"rounds": 1, "doses": 1}
    with database.transaction() as s:
        assert inpatient.schedule_nursing(s, now) == {"rounds": 0, "doses": 0}
        slot = s.execute(select(DoseSlot)).scalar_one()
        row = s.execute(select(VitalsRound)).scalar_one()
        slot_id, slot_instance, round_id, round_instance = slot.id, slot.instance_id, row.id, row.instance_id
    assert slot_instance and round_instance

    # the nurse gives the dose through its work item; the slot is recorded
    with database.transaction() as s:
        inpatient.record_dose(s, ward["nurse_a"], slot_id, {"status": "given"})
    with database.transaction(readonly=True) as s:
        assert s.get(DoseSlot, slot_id).status == "given"

    # the round's boundary timer fires: missed, and the charge nurse gets a review
    timers.tick(database, utcnow() + timedelta(minutes=1))
    with database.transaction(readonly=True) as s:
        assert s.get(VitalsRound, round_id).state == "missed"
    open_items = [i for i in _items(database, round_instance) if i[2] in ("open", "claimed")]
    assert [name for _, name, _, _ in open_items] == ["review"]
    with database.transaction() as s:
        result = engine.complete_task(s, ward["charge_a"], open_items[0][0], {"note": "Patient was in theatre."})
        assert result.fault is None, result.fault
    with database.transaction(readonly=True) as s:
        row = s.get(VitalsRound, round_id)
        assert row.reviewed_by_id == ward["charge_a"].user_id and row.review_note == "Patient was in theatre."
