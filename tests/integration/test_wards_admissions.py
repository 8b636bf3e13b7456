"""Admissions on a real database (SQLite, or PostgreSQL from HMS_TEST_DATABASE_URL): ordering,
one active admission per patient, bed reservation and acceptance, transfers, doctor orders,
the signed discharge summary, the nursing gate, the discharge, and the bed-day charge lines.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from hms import settings
from hms.audit import Actor, AuditLog
from hms.errors import Conflict, Forbidden, Invalid, NotFound
from hms.patients.services import register_patient
from hms.workflow import operations
from hms.workflow.operations import OperationContext
from wards import services
from wards.models import Admission, Bed, BedAssignment, DischargeSummary, Ward

SYSTEM = Actor.system("test")
SUMMARY = {"diagnoses": [{"code": "j18.9", "text": "Community-acquired pneumonia"}],
           "procedures": [{"text": "Chest X-ray"}], "condition": "improved",
           "discharge_medicines": [{"name": "Amoxicillin", "dose": "500 mg", "frequency": "TDS", "days": 5}],
           "follow_up": "OPD in one week"}


@pytest.fixture
def world(app, database, make_ward, make_user):
    """A general ward of 3 beds and an ICU of 2 (one department), two patients, a doctor."""
    general = make_ward(code="MW1", name="Medical Ward 1", beds=3)
    with database.transaction() as s:
        department_id = s.get(Ward, general).department_id
    icu = make_ward(code="ICU", name="Medical ICU", department_id=department_id, beds=2)
    with database.transaction() as s:
        s.get(Ward, icu).ward_type = "icu"
        p1 = register_patient(s, SYSTEM, {"name": "Zainab Fatima", "sex": "female", "date_of_birth": "1992-08-14"}).id
        p2 = register_patient(s, SYSTEM, {"name": "Imran Khan", "sex": "male", "date_of_birth": "1980-01-02"}).id
        beds = {w: list(s.execute(select(Bed.id).where(Bed.ward_id == w).order_by(Bed.label)).scalars())
                for w in (general, icu)}
    doctor_id = make_user("dr_ayesha", "doctor")
    nurse_id = make_user("nurse_rubina", "nurse", ward_ids=[general])
    return {"general": general, "icu": icu, "department_id": department_id, "patients": [p1, p2],
            "beds": beds, "doctor_id": doctor_id,
            "doctor": Actor(user_id=doctor_id, username="dr_ayesha", roles=frozenset({"doctor"})),
            "nurse": Actor(user_id=nurse_id, username="nurse_rubina", roles=frozenset({"nurse"}),
                           ward_ids=frozenset({general}))}


def _admit_order(database, world, patient=0, **kw):
    with database.transaction() as s:
        return services.create_admission(s, SYSTEM, patient_id=world["patients"][patient],
                                         department_id=world["department_id"], **kw).id


def _admitted(database, world, patient=0, bed=0):
    """An admission of `patient` admitted into general bed `bed`."""
    admission_id = _admit_order(database, world, patient, ward_id=world["general"])
    with database.transaction() as s:
        services.reserve_bed(s, SYSTEM, world["beds"][world["general"]][bed], admission_id=admission_id,
                             patient_id=world["patients"][patient])
        services.accept_admission(s, SYSTEM, admission_id)
    return admission_id


def _get(database, admission_id) -> Admission:
    with database.transaction(readonly=True) as s:
        return services.get_admission(s, admission_id)


def _bed_state(database, bed_id):
    with database.transaction(readonly=True) as s:
        return s.get(Bed, bed_id).state


# --- ordering --------------------------------------------------------------------------

def test_create_admission_numbers_it_and_refuses_a_second_active_one(database, world):
    admission_id = _admit_order(database, world, ward_id=world["general"], reason="Pneumonia", payer_class="cash")
    a = _get(database, admission_id)
    assert (a.admission_no, a.state, a.ward_id, a.bed_id) == ("ADM-000001", "ordered", world["general"], None)
    assert a.reason == "Pneumonia" and a.payer_class == "cash"
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            services.create_admission(s, SYSTEM, patient_id=world["patients"][0],
                                      department_id=world["department_id"])
    assert err.value.code == "already_admitted" and "ADM-000001" in err.value.message
    # another patient is admitted fine, with the next number
    assert _get(database, _admit_order(database, world, patient=1)).admission_no == "ADM-000002"
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(AuditLog.action).where(AuditLog.entity_type == "admission")) == "admission.create"


def test_create_admission_validates_its_references(database, world):
    with database.transaction() as s:
        for kwargs, code in [({"patient_id": 999999}, "patient_not_found"),
                             ({"department_id": 999999}, "department_not_found"),
                             ({"ward_id": 999999}, "ward_not_found"),
                             ({"doctor_id": 999999}, "doctor_not_found")]:
            args = {"patient_id": world["patients"][0], "department_id": world["department_id"], **kwargs}
            with pytest.raises(NotFound) as err:
                services.create_admission(s, SYSTEM, **args)
            assert err.value.code == code
        with pytest.raises(Invalid) as err:
            services.create_admission(s, SYSTEM, patient_id=world["patients"][0],
                                      department_id=world["department_id"], payer_class="  ")
        assert "payer_class" in err.value.fields
        with pytest.raises(Invalid):
            services.create_admission(s, SYSTEM, patient_id=world["patients"][0],
                                      department_id=world["department_id"], reason="x" * 301)


def test_two_desks_admitting_one_patient_at_once_make_one_admission(database, world):
    start = threading.Barrier(2)

    def worker(_i):
        start.wait(timeout=30)
        try:
            with database.transaction() as s:
                return services.create_admission(s, SYSTEM, patient_id=world["patients"][0],
                                                 department_id=world["department_id"]).admission_no
        except Conflict as err:
            return err.code

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = sorted(pool.map(worker, range(2)), key=str)
    assert results[1] == "already_admitted" and results[0].startswith("ADM-")
    with database.transaction(readonly=True) as s:
        assert len(services.list_admissions(s, patient_id=world["patients"][0])) == 1


# --- bed, acceptance, assessment ---------------------------------------------------------

def test_reserve_accept_and_release_move_the_admission(database, world):
    admission_id = _admit_order(database, world)
    bed = world["beds"][world["general"]][0]
    with database.transaction() as s:
        services.reserve_bed(s, SYSTEM, bed, admission_id=admission_id, patient_id=world["patients"][0])
    a = _get(database, admission_id)
    assert (a.state, a.bed_id, a.ward_id) == ("reserved", bed, world["general"])
    assert a.reserved_at is not None and a.charge_from is None  # charges start at acceptance by default
    with database.transaction() as s:
        services.release_bed(s, SYSTEM, bed, "Patient chose another hospital")
    a = _get(database, admission_id)
    assert (a.state, a.bed_id, a.reserved_at) == ("ordered", None, None)
    with database.transaction() as s:
        services.reserve_bed(s, SYSTEM, bed, admission_id=admission_id, patient_id=world["patients"][0])
        services.accept_admission(s, SYSTEM, admission_id)
    a = _get(database, admission_id)
    assert a.state == "admitted" and a.admitted_at is not None and a.charge_from == a.admitted_at
    assert _bed_state(database, bed) == "occupied"


def test_bed_charges_can_start_at_reservation(database, world):
    with database.transaction() as s:
        settings.set_value(s, SYSTEM, "wards.bed_charge_starts", "reservation")
    admission_id = _admit_order(database, world)
    with database.transaction() as s:
        services.reserve_bed(s, SYSTEM, world["beds"][world["general"]][0], admission_id=admission_id,
                             patient_id=world["patients"][0])
    reserved = _get(database, admission_id)
    assert reserved.charge_from == reserved.reserved_at
    with database.transaction() as s:
        services.accept_admission(s, SYSTEM, admission_id)
    assert _get(database, admission_id).charge_from == reserved.reserved_at  # not moved by acceptance


def test_reserving_for_another_patient_or_a_closed_admission_is_refused(database, world):
    admission_id = _admit_order(database, world)
    bed = world["beds"][world["general"]][0]
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            services.reserve_bed(s, SYSTEM, bed, admission_id=admission_id, patient_id=world["patients"][1])
        assert err.value.code == "wrong_patient"
        with pytest.raises(NotFound) as err:
            services.reserve_bed(s, SYSTEM, bed, admission_id=999, patient_id=world["patients"][0])
        assert err.value.code == "admission_not_found"
    assert _bed_state(database, bed) == "free"


def test_accepting_needs_a_reserved_bed_and_the_ward(database, world):
    admission_id = _admit_order(database, world)
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            services.accept_admission(s, SYSTEM, admission_id)
        assert err.value.code == "admission_state"
    with database.transaction() as s:
        services.reserve_bed(s, SYSTEM, world["beds"][world["general"]][0], admission_id=admission_id,
                             patient_id=world["patients"][0])
    icu_nurse = Actor(user_id=0, username="n", roles=frozenset({"nurse"}), ward_ids=frozenset({world["icu"]}))
    with database.transaction() as s:
        with pytest.raises(Forbidden) as err:
            services.accept_admission(s, icu_nurse, admission_id)
        assert err.value.code == "out_of_scope"
    assert _get(database, admission_id).state == "reserved"


def test_assessment_is_recorded_once_for_an_admitted_patient(database, world):
    ordered = _admit_order(database, world, patient=1)
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            services.record_assessment(s, SYSTEM, ordered, {"pain_score": 2})
        assert err.value.code == "not_admitted"
    admission_id = _admitted(database, world)
    with database.transaction() as s:
        row = services.record_assessment(s, SYSTEM, admission_id, {"pain_score": 3, "fall_risk": "low"})
        assert row.values == {"pain_score": 3, "fall_risk": "low"}
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            services.record_assessment(s, SYSTEM, admission_id, {"pain_score": 1})
        assert err.value.code == "already_assessed"
        with pytest.raises(Invalid):
            services.record_assessment(s, SYSTEM, admission_id, "fine")


def test_set_payer_class(database, world):
    admission_id = _admit_order(database, world)
    with database.transaction() as s:
        services.set_payer_class(s, SYSTEM, admission_id, "sehat-card")
    assert _get(database, admission_id).payer_class == "sehat-card"
    with database.transaction() as s:
        with pytest.raises(Invalid):
            services.set_payer_class(s, SYSTEM, admission_id, "")


# --- transfers -----------------------------------------------------------------------------

def test_transfer_moves_the_patient_and_frees_the_old_bed_for_cleaning(database, world):
    admission_id = _admitted(database, world)
    old_bed = world["beds"][world["general"]][0]
    new_bed = world["beds"][world["icu"]][1]
    with database.transaction() as s:
        transfer_id = services.request_transfer(s, world["doctor"], admission_id, to_ward_id=world["icu"],
                                                reason="Needs ventilation").id
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            services.request_transfer(s, world["doctor"], admission_id, to_ward_id=world["icu"], reason="again")
        assert err.value.code == "transfer_pending"
    general_nurse = Actor(user_id=0, username="n", roles=frozenset({"nurse"}),
                          ward_ids=frozenset({world["general"]}))
    with database.transaction() as s:
        with pytest.raises(Forbidden):  # the receiving ward decides
            services.accept_transfer(s, general_nurse, transfer_id, to_bed_id=new_bed)
        with pytest.raises(Invalid) as err:
            services.accept_transfer(s, SYSTEM, transfer_id, to_bed_id=world["beds"][world["general"]][1])
        assert err.value.code == "bed_not_in_ward"
    with database.transaction() as s:
        t = services.accept_transfer(s, SYSTEM, transfer_id, to_bed_id=new_bed)
        assert (t.state, t.to_bed_id) == ("accepted", new_bed)
    a = _get(database, admission_id)
    assert (a.ward_id, a.bed_id, a.state) == (world["icu"], new_bed, "admitted")
    assert _bed_state(database, old_bed) == "to_clean" and _bed_state(database, new_bed) == "occupied"
    with database.transaction(readonly=True) as s:
        rows = s.execute(select(BedAssignment).where(BedAssignment.admission_id == admission_id)
                         .order_by(BedAssignment.id)).scalars().all()
        assert [(r.bed_id, r.state, r.end_reason) for r in rows] == [
            (old_bed, "ended", "transfer"), (new_bed, "occupied", None)]
        assert rows[1].started_at == rows[1].occupied_at == rows[0].ended_at
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            services.accept_transfer(s, SYSTEM, transfer_id, to_bed_id=world["beds"][world["icu"]][0])
        assert err.value.code == "transfer_state"


def test_transfer_into_a_taken_bed_is_refused_and_reject_and_cancel_close_requests(database, world):
    first = _admitted(database, world, patient=0, bed=0)
    second = _admitted(database, world, patient=1, bed=1)
    with database.transaction() as s:
        transfer_id = services.request_transfer(s, world["doctor"], first, to_ward_id=world["general"],
                                                reason="Nearer the nursing station").id
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            services.accept_transfer(s, SYSTEM, transfer_id, to_bed_id=world["beds"][world["general"]][1])
        assert err.value.code == "bed_not_free"
    with database.transaction() as s:
        services.reject_transfer(s, SYSTEM, transfer_id, "No nurse for that bay tonight")
    with database.transaction() as s:
        again = services.request_transfer(s, world["doctor"], first, to_ward_id=world["icu"], reason="Deteriorating")
        with pytest.raises(Invalid):
            services.reject_transfer(s, SYSTEM, again.id, " ")
        cancelled = services.cancel_transfer(s, world["doctor"], again.id, "Improved")
        assert (cancelled.state, cancelled.decision_note) == ("cancelled", "Improved")
    with database.transaction(readonly=True) as s:
        assert [t.state for t in services.list_transfers(s, first)] == ["rejected", "cancelled"]
    a = _get(database, first)
    assert a.bed_id == world["beds"][world["general"]][0]
    assert _get(database, second).bed_id == world["beds"][world["general"]][1]


def test_a_patient_not_yet_admitted_is_not_transferred(database, world):
    admission_id = _admit_order(database, world)
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            services.request_transfer(s, world["doctor"], admission_id, to_ward_id=world["icu"], reason="x")
    assert err.value.code == "not_admitted"


# --- orders, summary, gate, discharge ----------------------------------------------------------

def test_the_whole_stay_from_order_to_clean_bed(database, world):
    admission_id = _admitted(database, world)
    bed = world["beds"][world["general"]][0]
    with database.transaction() as s:
        diet = services.place_order(s, world["doctor"], admission_id, kind="diet", description="Soft diet")
        xray = services.place_order(s, world["doctor"], admission_id, kind="procedure", code="XR-CHEST",
                                    description="Chest X-ray", charge_ref="ward_order:2")
        assert (diet.state, xray.code) == ("active", "XR-CHEST")
    with database.transaction() as s:
        stopped = services.stop_order(s, world["doctor"], diet.id, "Nil by mouth before the procedure")
        assert stopped.state == "stopped" and stopped.stopped_at is not None
        with pytest.raises(Conflict) as err:
            services.stop_order(s, world["doctor"], diet.id, "again")
        assert err.value.code == "order_state"

    nurse = world["nurse"]
    with database.transaction() as s:
        with pytest.raises(Forbidden) as err:
            services.sign_discharge_summary(s, nurse, admission_id, SUMMARY)
        assert err.value.code == "doctor_only"
        with pytest.raises(Invalid) as err:
            services.sign_discharge_summary(s, world["doctor"], admission_id, {
                "diagnoses": [], "condition": "cured", "discharge_medicines": [{"name": "Paracetamol"}]})
        assert {"diagnoses", "condition", "discharge_medicines.0.dose",
                "discharge_medicines.0.frequency"} <= set(err.value.fields)
        with pytest.raises(Conflict) as err:  # the gate follows the signed summary
            services.pass_nursing_gate(s, nurse, admission_id, [])
        assert err.value.code == "not_discharging"
    with database.transaction() as s:
        summary = services.sign_discharge_summary(s, world["doctor"], admission_id, SUMMARY)
        assert summary.diagnoses == [{"text": "Community-acquired pneumonia", "code": "J18.9"}]
        assert summary.procedures == ["Chest X-ray"]
    a = _get(database, admission_id)
    assert (a.state, a.discharge_condition) == ("discharging", "improved") and a.clinical_discharge_at
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            services.sign_discharge_summary(s, world["doctor"], admission_id, SUMMARY)
        assert err.value.code == "already_signed"
        # before the gate a last order is still taken (e.g. the take-home medicines' procedure)
        services.place_order(s, world["doctor"], admission_id, kind="diet", description="Normal diet")
        with pytest.raises(Conflict) as err:
            services.discharge_patient(s, SYSTEM, admission_id)
        assert err.value.code == "nursing_gate_pending"

    blockers = [{"kind": "pharmacy", "text": "2 unused vials of ceftriaxone not returned"}]
    with database.transaction() as s:
        assert services.pass_nursing_gate(s, nurse, admission_id, blockers) == {"ok": False, "blockers": blockers}
    assert _get(database, admission_id).nursing_cleared_at is None
    with database.transaction() as s:
        assert services.pass_nursing_gate(s, nurse, admission_id, []) == {"ok": True, "blockers": []}
    assert _get(database, admission_id).nursing_cleared_at is not None
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            services.place_order(s, world["doctor"], admission_id, kind="diet", description="Late order")
        assert err.value.code == "orders_frozen"
        with pytest.raises(Conflict) as err:
            services.check_orders_open(s, services.get_admission(s, admission_id))
        assert err.value.code == "orders_frozen"
        with pytest.raises(Conflict):
            services.stop_order(s, world["doctor"], xray.id, "too late")

    with database.transaction() as s:
        a = services.discharge_patient(s, nurse, admission_id)
        assert (a.state, a.bed_id) == ("discharged", bed) and a.discharged_at is not None
    assert _bed_state(database, bed) == "to_clean"
    with database.transaction() as s:
        services.mark_clean(s, SYSTEM, bed)
    assert _bed_state(database, bed) == "free"
    # a signed summary is never edited in place
    s = database.session()
    try:
        row = s.execute(select(DischargeSummary)).scalar_one()
        row.follow_up = "changed"
        with pytest.raises(ValueError):
            s.flush()
    finally:
        s.rollback()
        s.close()
    # the stay is over: the patient can be admitted again
    assert _get(database, _admit_order(database, world)).admission_no == "ADM-000002"
    with database.transaction(readonly=True) as s:
        actions = set(s.execute(select(AuditLog.action).where(AuditLog.patient_id == world["patients"][0])).scalars())
    assert {"admission.create", "admission.accept", "order.place", "order.stop", "discharge.sign",
            "discharge.nursing_gate", "admission.discharge", "bed.vacate"} <= actions


def test_orders_need_an_admitted_patient(database, world):
    admission_id = _admit_order(database, world)
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            services.place_order(s, world["doctor"], admission_id, kind="diet", description="Soft diet")
        assert err.value.code == "not_admitted"
    admitted = _admitted(database, world, patient=1)
    with database.transaction() as s:
        with pytest.raises(Invalid):
            services.place_order(s, world["doctor"], admitted, kind="surgery", description="x")
        with pytest.raises(Invalid):
            services.place_order(s, world["doctor"], admitted, kind="diet", description=" ")


def test_active_admission_ids_are_those_accruing(database, world):
    ordered = _admit_order(database, world, patient=1)
    admitted = _admitted(database, world)
    with database.transaction(readonly=True) as s:
        assert services.active_admission_ids(s) == [admitted]
        assert [a.id for a in services.list_admissions(s, active_only=True)] == [admitted, ordered]
        assert [a.id for a in services.list_admissions(s, state="ordered")] == [ordered]
        assert [a.id for a in services.list_admissions(s, ward_id=world["general"])] == [admitted]
        with pytest.raises(Invalid):
            services.list_admissions(s, state="sleeping")


# --- operations ------------------------------------------------------------------------------

def _ctx(s, patient_id=None):
    return OperationContext(session=s, actor=SYSTEM, instance_id=None, patient_id=patient_id, pathway_key=None)


def test_operations_drive_a_stay(app, database, world):
    p1 = world["patients"][0]
    admission_id = _admit_order(database, world, ward_id=world["general"])
    bed = world["beds"][world["general"]][0]
    with database.transaction() as s:
        info = operations.call("wards.get_admission", _ctx(s, p1), {"admission_id": admission_id})
        assert info == {"admission_id": admission_id, "admission_no": "ADM-000001", "patient_id": p1,
                        "ward_id": world["general"], "bed_id": None, "department_id": world["department_id"],
                        "state": "ordered", "payer_class": "cash", "gender": "female"}
        assert operations.call("wards.set_payer_class", _ctx(s, p1),
                               {"admission_id": admission_id, "payer_class": "panel-a"}) == {"ok": True}
        operations.call("wards.reserve_bed", _ctx(s, p1), {"bed_id": bed, "admission_id": admission_id,
                                                           "patient_id": p1})
        assert operations.call("wards.accept_admission", _ctx(s, p1), {"admission_id": admission_id}) == {
            "bed_id": bed, "ward_id": world["general"]}
        assert operations.call("wards.record_assessment", _ctx(s, p1), {
            "admission_id": admission_id, "assessment": {"pain_score": 0}}) == {"ok": True}
        with pytest.raises(Conflict) as err:  # another patient's admission is a fault
            operations.call("wards.get_admission", _ctx(s, world["patients"][1]), {"admission_id": admission_id})
        assert err.value.code == "wrong_patient"
    # a transfer into a bed that is taken is data; without a bed the first free one is taken
    other = _admitted(database, world, patient=1, bed=1)
    with database.transaction() as s:
        t = services.request_transfer(s, world["doctor"], admission_id, to_ward_id=world["general"], reason="Bay 2")
        out = operations.call("wards.accept_transfer", _ctx(s, p1),
                              {"transfer_id": t.id, "bed_id": world["beds"][world["general"]][1]})
        assert out == {"ok": False, "problem": "bed_not_free", "ward_id": world["general"],
                       "bed_id": world["beds"][world["general"]][1]}
    with database.transaction() as s:
        out = operations.call("wards.accept_transfer", _ctx(s, p1), {"transfer_id": t.id, "bed_id": None})
        assert out == {"ok": True, "problem": None, "ward_id": world["general"],
                       "bed_id": world["beds"][world["general"]][2]}
        assert operations.call("wards.mark_bed_clean", _ctx(s), {"bed_id": bed}) == {"bed_id": bed, "state": "free"}
    with database.transaction() as s:
        assert operations.call("wards.sign_discharge_summary", _ctx(s, p1), {
            "admission_id": admission_id, "summary": SUMMARY}) == {"ok": True, "condition": "improved"}
        blocked = operations.call("wards.pass_nursing_gate", _ctx(s, p1), {
            "admission_id": admission_id, "blockers": [{"kind": "lab", "text": "Sample pending"}]})
        assert blocked["ok"] is False
        assert operations.call("wards.pass_nursing_gate", _ctx(s, p1), {
            "admission_id": admission_id, "blockers": []}) == {"ok": True, "blockers": []}
        charges = operations.call("wards.bed_day_charges", _ctx(s, p1), {"admission_id": admission_id,
                                                                         "final": True})["charges"]
        assert [c["source_ref"] for c in charges] == [f"bed_day:{admission_id}:0:general",
                                                      f"nursing_day:{admission_id}:0"]
        assert charges[0]["quantity"] == 1 and charges[0]["half_day"] is True
        assert operations.call("wards.bed_day_charges", _ctx(s, p1), {"admission_id": admission_id,
                                                                      "final": False}) == {"charges": []}
        assert operations.call("wards.discharge_patient", _ctx(s, p1), {"admission_id": admission_id}) == {
            "bed_id": world["beds"][world["general"]][2], "ward_id": world["general"]}
    assert _get(database, other).state == "admitted"


# --- bed-day lines -----------------------------------------------------------------------------

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)


def _stay(database, world, *, charge_from=T0, beds=(), discharged_at=None):
    """An admission with charge_from and bed assignments [(ward key, bed index, start, end)] set
    directly: bed_day_lines is a pure computation over these rows."""
    admission_id = _admit_order(database, world)
    with database.transaction() as s:
        a = s.get(Admission, admission_id)
        a.state, a.charge_from, a.admitted_at = "admitted", charge_from, charge_from
        for ward, index, start, end in beds:
            s.add(BedAssignment(bed_id=world["beds"][world[ward]][index], admission_id=admission_id,
                                patient_id=a.patient_id, state="ended" if end else "occupied",
                                started_at=start, occupied_at=start, ended_at=end))
        if discharged_at:
            a.state, a.discharged_at = "discharged", discharged_at
    return admission_id


def _lines(database, admission_id, until, final):
    with database.transaction(readonly=True) as s:
        return services.bed_day_lines(s, admission_id, until=until, final=final)


def _summary(lines):
    return [(line["source_ref"].split(":", 2)[2] if line["kind"] == "bed" else line["source_ref"].split(":")[2],
             line["tariff_code"], line["quantity"]) for line in lines]


def test_accrual_counts_only_completed_days(database, world):
    admission_id = _stay(database, world, beds=[("general", 0, T0, None)])
    assert _lines(database, admission_id, T0 + timedelta(hours=23, minutes=59), final=False) == []
    lines = _lines(database, admission_id, T0 + timedelta(hours=36), final=False)
    assert _summary(lines) == [("0:general", "BED-GENERAL", 2), ("0", "NURSING-GENERAL", 1)]
    assert lines[0] == {"source_ref": f"bed_day:{admission_id}:0:general", "kind": "bed",
                        "tariff_code": "BED-GENERAL", "description": "Bed-day 1, Medical Ward 1 (general)",
                        "quantity": 2, "half_day": True}
    assert lines[1]["kind"] == "nursing" and lines[1]["description"].startswith("Nursing day 1")
    # the same inputs give the same lines, and a later run only adds
    later = _lines(database, admission_id, T0 + timedelta(hours=49), final=False)
    assert later[:2] == lines and _summary(later[2:]) == [("1:general", "BED-GENERAL", 2), ("1", "NURSING-GENERAL", 1)]


def test_final_rounds_the_last_day_up_to_a_half_or_a_whole_day(database, world):
    admission_id = _stay(database, world, beds=[("general", 0, T0, None)])
    until = T0 + timedelta(hours=30)  # one day and six hours
    half = _lines(database, admission_id, until, final=True)
    assert _summary(half) == [("0:general", "BED-GENERAL", 2), ("0", "NURSING-GENERAL", 1),
                              ("1:general", "BED-GENERAL", 1), ("1", "NURSING-GENERAL", 1)]
    just_over = _lines(database, admission_id, T0 + timedelta(hours=36, minutes=1), final=True)
    assert _summary(just_over)[2] == ("1:general", "BED-GENERAL", 2)
    # a stay of minutes is still half a day
    short = _stay(database, {**world, "patients": [world["patients"][1]]}, beds=[("general", 1, T0, None)])
    assert _summary(_lines(database, short, T0 + timedelta(minutes=20), final=True)) == [
        ("0:general", "BED-GENERAL", 1), ("0", "NURSING-GENERAL", 1)]
    with database.transaction() as s:
        settings.set_value(s, SYSTEM, "wards.bed_day_rounding", "full")
    full = _lines(database, admission_id, until, final=True)
    assert _summary(full)[2] == ("1:general", "BED-GENERAL", 2)
    assert _summary(_lines(database, short, T0 + timedelta(minutes=20), final=True))[0] == (
        "0:general", "BED-GENERAL", 2)
    # the completed days are the accrual's lines exactly: posting both adds nothing twice
    accrued = _lines(database, admission_id, until, final=False)
    assert half[:2] == accrued == full[:2]


def test_a_transfer_mid_day_prices_each_half_day_at_its_ward(database, world):
    move = T0 + timedelta(hours=6)
    admission_id = _stay(database, world, beds=[("general", 0, T0, move), ("icu", 0, move, None)])
    lines = _lines(database, admission_id, T0 + timedelta(hours=48), final=False)
    assert _summary(lines) == [
        ("0:general", "BED-GENERAL", 1), ("0:icu", "BED-ICU", 1), ("0", "NURSING-GENERAL", 1),
        ("1:icu", "BED-ICU", 2), ("1", "NURSING-ICU", 1)]
    assert lines[1]["description"] == "Bed-day 1, Medical ICU (icu)"


def test_a_transfer_exactly_at_a_slot_start_takes_the_new_ward(database, world):
    move = T0 + timedelta(hours=12)
    admission_id = _stay(database, world, beds=[("general", 0, T0, move), ("icu", 1, move, None)])
    assert _summary(_lines(database, admission_id, T0 + timedelta(hours=24), final=False))[:2] == [
        ("0:general", "BED-GENERAL", 1), ("0:icu", "BED-ICU", 1)]


def test_charges_from_the_reservation_price_the_reserved_bed(database, world):
    # charge_from at reservation: the reserved assignment (started at reservation) prices the slots
    reserved_at = T0 - timedelta(hours=3)
    admission_id = _stay(database, world, charge_from=reserved_at, beds=[("icu", 0, reserved_at, None)])
    lines = _lines(database, admission_id, reserved_at + timedelta(hours=24), final=False)
    assert _summary(lines) == [("0:icu", "BED-ICU", 2), ("0", "NURSING-ICU", 1)]


def test_no_charges_before_charging_starts_and_none_after_discharge(database, world):
    ordered = _admit_order(database, world, patient=1)
    assert _lines(database, ordered, T0 + timedelta(days=3), final=True) == []
    admission_id = _stay(database, world, beds=[("general", 0, T0, T0 + timedelta(hours=20))],
                         discharged_at=T0 + timedelta(hours=20))
    assert _lines(database, admission_id, T0 - timedelta(hours=1), final=True) == []
    # until long after the discharge: the stay ends at the discharge
    assert _summary(_lines(database, admission_id, T0 + timedelta(days=5), final=True)) == [
        ("0:general", "BED-GENERAL", 2), ("0", "NURSING-GENERAL", 1)]
    assert _lines(database, admission_id, T0 + timedelta(days=5), final=False) == []
