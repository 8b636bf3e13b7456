"""Bed states and reservations on a real database (SQLite, or PostgreSQL from
HMS_TEST_DATABASE_URL): every transition allowed and refused, ward scope, the board read,
and the wards.* service-task operations."""

from __future__ import annotations

import pytest

from hms.audit import Actor, AuditLog
from hms.errors import Conflict, Forbidden, Invalid, NotFound
from hms.patients.services import register_patient
from hms.workflow import operations
from hms.workflow.operations import OperationContext
from sqlalchemy import select
from wards import services
from wards.models import Bed, BedAssignment, Ward

SYSTEM = Actor.system("test")


@pytest.fixture
def ward(app, database, make_ward):
    """A ward of 4 beds and two patients: ids of the ward, its beds and the patients."""
    ward_id = make_ward(code="MW1", name="Medical Ward 1", beds=4)
    with database.transaction() as s:
        p1 = register_patient(s, SYSTEM, {"name": "Zainab Fatima", "sex": "female", "date_of_birth": "1992-08-14"}).id
        p2 = register_patient(s, SYSTEM, {"name": "Imran Khan", "sex": "male", "date_of_birth": "1980-01-02"}).id
        beds = list(s.execute(select(Bed.id).where(Bed.ward_id == ward_id).order_by(Bed.label)).scalars())
        department_id = s.get(Ward, ward_id).department_id
        # Bed assignments belong to admissions: admission 1 is Zainab's, 2 is Imran's.
        admissions = [services.create_admission(s, SYSTEM, patient_id=p, department_id=department_id).id
                      for p in (p1, p2)]
    assert admissions == [1, 2]
    return {"ward_id": ward_id, "beds": beds, "patients": [p1, p2], "admissions": admissions}


def _state(database, bed_id):
    with database.transaction(readonly=True) as s:
        return s.get(Bed, bed_id).state


def _reserve(database, ward, bed_index=0, admission_id=1, patient_index=0, actor=SYSTEM):
    with database.transaction() as s:
        return services.reserve_bed(s, actor, ward["beds"][bed_index], admission_id=admission_id,
                                    patient_id=ward["patients"][patient_index]).id


def test_reserve_occupy_vacate_clean_cycle(database, ward):
    bed = ward["beds"][0]
    _reserve(database, ward)
    assert _state(database, bed) == "reserved"
    with database.transaction() as s:
        assert services.occupy_bed(s, SYSTEM, bed).state == "occupied"
    assert _state(database, bed) == "occupied"
    with database.transaction() as s:
        a = services.vacate_bed(s, SYSTEM, bed)
        assert a.state == "ended" and a.ended_at is not None
    assert _state(database, bed) == "to_clean"
    with database.transaction() as s:
        services.mark_clean(s, SYSTEM, bed)
    assert _state(database, bed) == "free"
    # the bed can be reserved again, and the admission can hold a bed again
    _reserve(database, ward)
    with database.transaction(readonly=True) as s:
        actions = list(s.execute(select(AuditLog.action).where(AuditLog.entity_type == "bed")
                                 .order_by(AuditLog.seq)).scalars())
        assert actions == ["bed.reserve", "bed.occupy", "bed.vacate", "bed.clean", "bed.reserve"]
        states = sorted(s.execute(select(BedAssignment.state)).scalars())
        assert states == ["ended", "reserved"]


def test_release_and_block_unblock(database, ward):
    bed = ward["beds"][0]
    _reserve(database, ward)
    with database.transaction() as s:
        with pytest.raises(Invalid) as err:
            services.release_bed(s, SYSTEM, bed, "  ")
        assert err.value.fields == {"reason": ["Required."]}
    with database.transaction() as s:
        a = services.release_bed(s, SYSTEM, bed, "Patient went to another hospital")
        assert a.end_reason == "Patient went to another hospital"
    assert _state(database, bed) == "free"
    with database.transaction() as s:
        services.block_bed(s, SYSTEM, bed, "Broken rail")
    assert _state(database, bed) == "blocked"
    with database.transaction() as s:
        services.unblock_bed(s, SYSTEM, bed)
    assert _state(database, bed) == "free"


def test_reserving_a_bed_that_is_not_free_is_409_naming_the_state(database, ward):
    _reserve(database, ward)
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            services.reserve_bed(s, SYSTEM, ward["beds"][0], admission_id=2, patient_id=ward["patients"][1])
    assert err.value.code == "bed_not_free"
    assert "is reserved" in err.value.message and "MW1-01" in err.value.message


def test_one_admission_holds_one_bed(database, ward):
    _reserve(database, ward, bed_index=0, admission_id=1)
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:
            services.reserve_bed(s, SYSTEM, ward["beds"][1], admission_id=1, patient_id=ward["patients"][0])
    assert err.value.code == "admission_has_bed"
    assert _state(database, ward["beds"][1]) == "free"


# (action, state the action needs, state it leaves)
TRANSITIONS = {
    "reserve": ("free", "reserved"), "occupy": ("reserved", "occupied"), "release": ("reserved", "free"),
    "vacate": ("occupied", "to_clean"), "clean": ("to_clean", "free"), "block": ("free", "blocked"),
    "unblock": ("blocked", "free"),
}


def _do(s, action, bed_id, patient_id, actor=SYSTEM):
    if action == "reserve":
        return services.reserve_bed(s, actor, bed_id, admission_id=1, patient_id=patient_id)
    if action == "occupy":
        return services.occupy_bed(s, actor, bed_id)
    if action == "release":
        return services.release_bed(s, actor, bed_id, "changed plan")
    if action == "vacate":
        return services.vacate_bed(s, actor, bed_id)
    if action == "clean":
        return services.mark_clean(s, actor, bed_id)
    if action == "block":
        return services.block_bed(s, actor, bed_id, "repair")
    return services.unblock_bed(s, actor, bed_id)


def _put_in_state(database, ward, bed_id, state):
    """Drive a free bed to `state` through the services."""
    path = {"free": [], "reserved": ["reserve"], "occupied": ["reserve", "occupy"],
            "to_clean": ["reserve", "occupy", "vacate"], "blocked": ["block"]}[state]
    for action in path:
        with database.transaction() as s:
            _do(s, action, bed_id, ward["patients"][0])


@pytest.mark.parametrize("action", sorted(TRANSITIONS))
@pytest.mark.parametrize("state", ["free", "reserved", "occupied", "to_clean", "blocked"])
def test_every_transition_allowed_or_refused(database, ward, action, state):
    bed = ward["beds"][0]
    _put_in_state(database, ward, bed, state)
    needed, result = TRANSITIONS[action]
    if state == needed:
        with database.transaction() as s:
            _do(s, action, bed, ward["patients"][0])
        assert _state(database, bed) == result
    else:
        with database.transaction() as s:
            with pytest.raises(Conflict) as err:
                _do(s, action, bed, ward["patients"][0])
        assert err.value.code == ("bed_not_free" if action == "reserve" else "bed_state")
        assert services.STATE_LABELS[state].lower() in err.value.message
        assert _state(database, bed) == state


def test_nurse_and_housekeeping_change_only_their_wards(database, ward, make_ward):
    other = make_ward(code="SW2", name="Surgical Ward 2", beds=1)
    # user_id None would make the actor "system"; the refusal comes before any write
    nurse_elsewhere = Actor(user_id=0, username="n", roles=frozenset({"nurse"}), ward_ids=frozenset({other}))
    with database.transaction() as s:
        with pytest.raises(Forbidden) as err:
            services.block_bed(s, nurse_elsewhere, ward["beds"][0], "repair")
    assert err.value.code == "out_of_scope"
    assert _state(database, ward["beds"][0]) == "free"
    keeper_here = Actor(user_id=0, username="h", roles=frozenset({"housekeeping"}),
                        ward_ids=frozenset({ward["ward_id"]}))
    _put_in_state(database, ward, ward["beds"][0], "to_clean")
    with database.transaction() as s:
        services.check_ward_scope(keeper_here, ward["ward_id"])
        with pytest.raises(Forbidden):
            services.check_ward_scope(keeper_here, other)
    reception = Actor(user_id=0, username="r", roles=frozenset({"reception"}))
    services.check_ward_scope(reception, other)  # the admission desk serves every ward


def test_unknown_bed_and_patient_are_404(database, ward):
    with database.transaction() as s:
        with pytest.raises(NotFound):
            services.reserve_bed(s, SYSTEM, 999999, admission_id=1, patient_id=ward["patients"][0])
        with pytest.raises(NotFound):
            services.reserve_bed(s, SYSTEM, ward["beds"][0], admission_id=1, patient_id=999999)
        with pytest.raises(NotFound):
            services.occupy_bed(s, SYSTEM, "abc")


def test_list_wards_shows_patient_days_and_counts(database, ward, make_ward):
    make_ward(code="EMPTY", name="Annex", beds=0)
    _reserve(database, ward)
    with database.transaction() as s:
        services.occupy_bed(s, SYSTEM, ward["beds"][0])
        services.block_bed(s, SYSTEM, ward["beds"][1], "leak")
    with database.transaction(readonly=True) as s:
        views = services.list_wards(s)
        assert [v.ward.name for v in views] == ["Annex", "Medical Ward 1"]
        medical = views[1]
        assert medical.counts == {"free": 2, "reserved": 0, "occupied": 1, "to_clean": 0, "blocked": 1}
        first = medical.beds[0]
        assert first.patient.name == "Zainab Fatima" and first.days == 0 and first.assignment.admission_id == 1
        assert medical.beds[1].patient is None
        only = services.list_wards(s, ward_ids=[ward["ward_id"]], state="occupied")
        assert len(only) == 1 and [b.bed.state for b in only[0].beds] == ["occupied"]
        assert only[0].counts["free"] == 2
        with pytest.raises(Invalid):
            services.list_wards(s, state="dirty")


def _ctx(s, patient_id=None):
    return OperationContext(session=s, actor=SYSTEM, instance_id=None, patient_id=patient_id, pathway_key=None)


def test_operations_return_a_taken_bed_as_data(app, database, ward):
    bed = ward["beds"][0]
    p1, p2 = ward["patients"]
    with database.transaction() as s:
        out = operations.call("wards.reserve_bed", _ctx(s, p1), {"bed_id": bed, "admission_id": 1, "patient_id": p1})
    assert out == {"ok": True, "problem": None, "bed_id": bed, "ward_id": ward["ward_id"]}
    with database.transaction() as s:
        out = operations.call("wards.reserve_bed", _ctx(s, p2), {"bed_id": bed, "admission_id": 2, "patient_id": p2})
    assert out == {"ok": False, "problem": "bed_not_free", "bed_id": bed, "ward_id": ward["ward_id"]}
    with database.transaction() as s:
        with pytest.raises(Conflict) as err:  # another patient than the pathway's is a fault
            operations.call("wards.reserve_bed", _ctx(s, p1), {"bed_id": ward["beds"][1], "admission_id": 3,
                                                               "patient_id": p2})
        assert err.value.code == "wrong_patient"
    with database.transaction() as s:
        assert operations.call("wards.find_free_bed", _ctx(s), {"ward_id": ward["ward_id"]}) == {
            "bed_id": ward["beds"][1], "ward_id": ward["ward_id"]}
        assert operations.call("wards.occupy_bed", _ctx(s, p1), {"bed_id": bed})["state"] == "occupied"
        assert operations.call("wards.vacate_bed", _ctx(s, p1), {"bed_id": bed})["state"] == "to_clean"
    assert _state(database, bed) == "to_clean"


def test_find_free_bed_respects_gender_and_reports_none(database, ward, make_ward):
    with database.transaction() as s:
        s.get(Ward, ward["ward_id"]).gender = "female"
    with database.transaction() as s:
        assert services.find_free_bed(s, gender="male") is None
        assert services.find_free_bed(s, gender="female").id == ward["beds"][0]
        assert operations.call("wards.find_free_bed", _ctx(s), {"gender": "male"}) == {"bed_id": None, "ward_id": None}
        for b in ward["beds"]:
            s.get(Bed, b).state = "blocked"
        s.flush()
        assert services.find_free_bed(s) is None
