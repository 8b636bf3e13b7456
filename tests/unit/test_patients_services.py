"""Master patient index services on a real database: MRNs, duplicates, search, edits
with history, allergies and what goes into the audit log."""

from __future__ import annotations

import json
import threading
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from hms import audit
from hms.audit import Actor, AuditLog
from hms.errors import Conflict, Invalid, NotFound
from hms.patients import services
from hms.patients.models import Allergy, Patient, PatientHistory
from hms.patients.validation import years_before


def person(**overrides) -> dict:
    data = {"name": "Ahmed Khan", "sex": "male", "date_of_birth": "1985-06-15", "cnic": "35202-1234567-1",
            "mobile": "0300-1234567", "relation": "S/O", "guardian_name": "Abdul Rehman",
            "address": "House 12, Street 4, Gulberg", "city": "Lahore"}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture
def clerk(make_user) -> Actor:
    user_id = make_user("rubina", "reception", full_name="Rubina Shah")
    return Actor(user_id=user_id, username="rubina", roles=frozenset({"reception"}))


def register(database, actor, **overrides) -> Patient:
    with database.transaction() as s:
        return services.register_patient(s, actor, person(**overrides))


def audit_rows(database, action=None) -> list[AuditLog]:
    with database.transaction(readonly=True) as s:
        stmt = select(AuditLog).order_by(AuditLog.seq)
        if action:
            stmt = stmt.where(AuditLog.action == action)
        return list(s.scalars(stmt))


# --- registration and MRN --------------------------------------------------------------

def test_registration_stores_normalised_values_and_gets_sequential_mrns(database, clerk):
    first = register(database, clerk)
    second = register(database, clerk, name="Sana Khan", sex="female", cnic="3520276543211",
                      mobile="+92 321 7654321", relation="D/O")
    assert (first.mrn, second.mrn) == ("HMS-000001", "HMS-000002")
    with database.transaction(readonly=True) as s:
        p = s.get(Patient, first.id)
        assert p.cnic == "3520212345671" and p.mobile == "+923001234567"
        assert p.name_search == "ahmed khan" and p.date_of_birth == date(1985, 6, 15)
        assert p.created_by_id == clerk.user_id and p.version == 1 and p.dob_estimated is False
        assert s.get(Patient, second.id).mobile == "+923217654321"


def test_mrn_format_comes_from_configuration(database, clerk):
    with database.transaction() as s:
        s.info["config"] = s.info["config"].with_overrides(mrn_format="LHR/{n:05d}")
        assert services.register_patient(s, clerk, person()).mrn == "LHR/00001"


def test_age_instead_of_birth_date_is_stored_as_an_estimate(database, clerk):
    p = register(database, clerk, date_of_birth=None, age_years=34)
    with database.transaction(readonly=True) as s:
        today = services.local_today(s)
        stored = s.get(Patient, p.id)
        assert stored.dob_estimated is True
        assert stored.date_of_birth == years_before(today, 34)
        assert services.age_text(stored, today) == "~34 y"


def test_a_refused_registration_writes_nothing_and_does_not_use_up_an_mrn(database, clerk):
    register(database, clerk)
    with database.transaction() as s:
        with pytest.raises(Conflict):
            services.register_patient(s, clerk, person(name="Someone Else"))  # same CNIC
        # The caller carries on in the same transaction: the number was taken back.
        assert services.register_patient(s, clerk, person(name="Other", cnic=None)).mrn == "HMS-000002"


def test_concurrent_registrations_get_distinct_mrns(database, system_actor):
    count, results, errors = 8, [], []
    barrier = threading.Barrier(count)

    def work(i):
        try:
            barrier.wait(timeout=10)
            with database.transaction() as s:
                p = services.register_patient(s, system_actor, person(name=f"Patient {chr(65 + i)}", cnic=None,
                                                                      mobile=f"0300-00000{i:02d}"))
                results.append(p.mrn)
        except Exception as err:  # reported below; a thread's exception would be lost
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == [f"HMS-{n:06d}" for n in range(1, count + 1)]
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(Patient)) == count
        assert audit.verify(s).ok


def test_registration_is_audited_without_personal_data(database, clerk):
    p = register(database, clerk, allergies=[{"substance": "Penicillin", "reaction": "Rash", "severity": "severe"}])
    (row,) = audit_rows(database, "patient.register")
    assert (row.actor_id, row.entity_type, row.entity_id, row.patient_id) == (clerk.user_id, "patient", str(p.id), p.id)
    assert row.detail == {"allergies": 1}


def test_invalid_registration_names_every_bad_field(database, clerk):
    future = (date.today() + timedelta(days=5)).isoformat()
    with database.transaction() as s:
        with pytest.raises(Invalid) as exc:
            services.register_patient(s, clerk, person(name="", cnic="35202-123456-1", mobile="042-35761234",
                                                       date_of_birth=future, guardian_name="",
                                                       allergies=[{"substance": "Latex"}]))
    assert exc.value.fields == {
        "name": ["Enter the patient's name."],
        "cnic": ["CNIC must be 13 digits, like 35202-1234567-1."],
        "mobile": ["Enter a Pakistani mobile number like 0300-1234567."],
        "date_of_birth": ["Date of birth cannot be in the future."],
        "guardian_name": ["Enter the father's or husband's name."],
        "allergies.0.severity": ["Severity must be mild, moderate or severe."],
    }
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(Patient)) == 0


def test_unknown_fields_are_refused(database, clerk):
    with database.transaction() as s:
        with pytest.raises(Invalid) as exc:
            services.register_patient(s, clerk, person(blood_group="B+"))
    assert exc.value.fields == {"blood_group": ["Unknown field."]}


# --- duplicates ------------------------------------------------------------------------

@pytest.mark.parametrize("cnic", ["3520212345671", "35202-1234567-1"])
def test_same_cnic_in_any_format_is_refused_naming_the_mrn(database, clerk, cnic):
    first = register(database, clerk)
    with database.transaction() as s:
        with pytest.raises(Conflict) as exc:
            services.register_patient(s, clerk, person(name="Different Name", cnic=cnic, mobile=None))
    err = exc.value
    assert err.code == "duplicate_cnic"
    assert err.message == f"A patient with this CNIC is already registered: {first.mrn}."
    assert err.fields["cnic"] == [err.message]
    assert err.fields["existing"] == [{"id": first.id, "mrn": first.mrn}]


def test_form_b_and_cnic_are_one_number_space(database, clerk):
    child = register(database, clerk, name="Bilal", date_of_birth="2015-02-01", cnic=None, form_b="35202-7654321-1")
    with database.transaction() as s:
        with pytest.raises(Conflict) as exc:
            services.register_patient(s, clerk, person(name="Bilal Grown", cnic="3520276543211"))
    assert exc.value.code == "duplicate_cnic" and child.mrn in exc.value.message
    with database.transaction() as s:
        with pytest.raises(Conflict) as exc:
            services.register_patient(s, clerk, person(name="Bilal Twin", date_of_birth="2015-02-01", cnic=None,
                                                       form_b="3520276543211"))
    assert exc.value.code == "duplicate_form_b"
    assert exc.value.message == f"A patient with this Form-B number is already registered: {child.mrn}."


def test_same_name_birth_date_and_mobile_is_a_possible_duplicate_until_confirmed(database, clerk):
    first = register(database, clerk, cnic=None)
    same = person(name="  AHMED   khan ", cnic=None, mobile="+923001234567")
    with database.transaction() as s:
        with pytest.raises(Conflict) as exc:
            services.register_patient(s, clerk, same)
    assert exc.value.code == "possible_duplicate"
    assert exc.value.fields == {"candidates": [{"id": first.id, "mrn": first.mrn, "name": "Ahmed Khan",
                                                "date_of_birth": "1985-06-15"}]}
    with database.transaction() as s:
        second = services.register_patient(s, clerk, same, confirm_duplicate=True)
    assert second.mrn == "HMS-000002"
    row = audit_rows(database, "patient.register")[-1]
    assert row.detail == {"allergies": 0, "possible_duplicate_of": [first.id]}


def test_different_mobile_or_birth_date_is_not_a_duplicate(database, clerk):
    register(database, clerk, cnic=None)
    register(database, clerk, cnic=None, mobile="0301-1234567")
    register(database, clerk, cnic=None, date_of_birth="1985-06-16")
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(Patient)) == 3


def test_same_name_and_birth_date_without_any_mobile_is_a_possible_duplicate(database, clerk):
    register(database, clerk, cnic=None, mobile=None)
    with database.transaction() as s:
        with pytest.raises(Conflict) as exc:
            services.register_patient(s, clerk, person(cnic=None, mobile=None))
    assert exc.value.code == "possible_duplicate"


# --- search ----------------------------------------------------------------------------

@pytest.fixture
def registry(database, clerk) -> dict[str, Patient]:
    people = {
        "ahmed": dict(name="Ahmed Khan", cnic="35202-1234567-1", mobile="0300-1234567"),
        "ahmad": dict(name="Ahmad Raza", cnic="35202-1111111-1", mobile="0301-1111111"),
        "sana": dict(name="Sana Ahmed", sex="female", relation="D/O", cnic=None, mobile="0333-2222222"),
        "zainab": dict(name="Zainab Bibi", sex="female", relation="W/O", cnic="61101-3333333-2", mobile=None),
    }
    return {key: register(database, clerk, **fields) for key, fields in people.items()}


def search(database, actor, q, page=1, size=25):
    with database.transaction(readonly=True) as s:
        items, total = services.search_patients(s, actor, q, page, size)
        return [p.name for p in items], total


def test_search_by_mrn_any_case_or_bare_number(database, clerk, registry):
    mrn = registry["sana"].mrn
    assert search(database, clerk, mrn) == (["Sana Ahmed"], 1)
    assert search(database, clerk, mrn.lower()) == (["Sana Ahmed"], 1)
    assert search(database, clerk, str(registry["sana"].id)) == (["Sana Ahmed"], 1)


@pytest.mark.parametrize("q", ["61101-3333333-2", "6110133333332", " 61101 3333333 2 "])
def test_search_by_cnic_in_any_format(database, clerk, registry, q):
    assert search(database, clerk, q) == (["Zainab Bibi"], 1)


@pytest.mark.parametrize("q", ["0333-2222222", "03332222222", "+92 333 2222222", "923332222222", "3332222222"])
def test_search_by_mobile_in_any_format(database, clerk, registry, q):
    assert search(database, clerk, q) == (["Sana Ahmed"], 1)


def test_search_by_name_prefix_is_case_insensitive_and_matches_any_word(database, clerk, registry):
    assert search(database, clerk, "ahm") == (["Ahmad Raza", "Ahmed Khan", "Sana Ahmed"], 3)
    assert search(database, clerk, "AHMED") == (["Ahmed Khan", "Sana Ahmed"], 2)
    assert search(database, clerk, "ahmed k") == (["Ahmed Khan"], 1)
    assert search(database, clerk, "KHAN ahm") == (["Ahmed Khan"], 1)
    assert search(database, clerk, "bib") == (["Zainab Bibi"], 1)
    assert search(database, clerk, "hmed") == ([], 0)  # prefixes, not substrings
    assert search(database, clerk, "ahmed_%") == ([], 0)  # wildcards are literal


def test_search_paginates_with_a_stable_order(database, clerk):
    for i in range(7):
        register(database, clerk, name=f"Khan {chr(65 + i)}", cnic=None, mobile=f"0300-000000{i}")
    assert search(database, clerk, "khan", page=1, size=3) == (["Khan A", "Khan B", "Khan C"], 7)
    assert search(database, clerk, "khan", page=3, size=3) == (["Khan G"], 7)
    assert search(database, clerk, "khan", page=4, size=3) == ([], 7)


def test_empty_search_lists_newest_registrations_first(database, clerk, registry):
    assert search(database, clerk, "  ", size=2) == (["Zainab Bibi", "Sana Ahmed"], 4)


def test_search_finds_nothing_for_unknown_numbers(database, clerk, registry):
    assert search(database, clerk, "0345-9999999") == ([], 0)
    assert search(database, clerk, "HMS-999999") == ([], 0)


# --- reads -----------------------------------------------------------------------------

def test_get_patient_audits_the_read(database, clerk, registry):
    p = registry["ahmed"]
    with database.transaction() as s:
        assert services.get_patient(s, clerk, p.id).mrn == p.mrn
        services.get_patient(s, clerk, p.id, audit_read=False)
    reads = audit_rows(database, "patient.read")
    assert [(r.patient_id, r.actor_id) for r in reads] == [(p.id, clerk.user_id)]


def test_missing_patient_is_not_found(database, clerk):
    with database.transaction() as s:
        for missing in (999, 0, -1, 2**40, "abc"):
            with pytest.raises(NotFound):
                services.get_patient(s, clerk, missing)
        with pytest.raises(NotFound):
            services.patient_banner(s, 999)
        with pytest.raises(NotFound):
            services.update_patient(s, clerk, 999, {"city": "Multan"})


def test_banner_names_the_patient_and_allergies_severe_first(database, clerk):
    p = register(database, clerk, allergies=[
        {"substance": "Dust", "severity": "mild"},
        {"substance": "Penicillin", "reaction": "Anaphylaxis", "severity": "severe"},
        {"substance": "Ibuprofen", "reaction": "Hives", "severity": "moderate"}])
    with database.transaction() as s:
        before = len(audit_rows(database))
        banner = services.patient_banner(s, p.id)
        today = services.local_today(s)
    assert banner == {
        "id": p.id, "mrn": p.mrn, "name": "Ahmed Khan", "sex": "male",
        "age": services.age_text(p, today),
        "allergies": [{"substance": "Penicillin", "reaction": "Anaphylaxis", "severity": "severe"},
                      {"substance": "Ibuprofen", "reaction": "Hives", "severity": "moderate"},
                      {"substance": "Dust", "reaction": None, "severity": "mild"}],
    }
    assert len(audit_rows(database)) == before  # the banner alone is not an audited read


# --- demographic edits -----------------------------------------------------------------

def test_edit_keeps_history_and_audits_field_names_only(database, clerk, registry):
    p = registry["ahmed"]
    with database.transaction() as s:
        updated = services.update_patient(s, clerk, p.id, {"mobile": "0345 7654321", "city": "Multan",
                                                          "cnic": "35202-1234567-1"}, expected_version=1)
        assert updated.version == 2 and updated.mobile == "+923457654321" and updated.city == "Multan"
    with database.transaction(readonly=True) as s:
        (history,) = s.scalars(select(PatientHistory).where(PatientHistory.patient_id == p.id)).all()
        assert history.changes == {"mobile": ["+923001234567", "+923457654321"], "city": ["Lahore", "Multan"]}
        assert (history.version, history.changed_by_id) == (2, clerk.user_id)
        listed = services.list_history(s, p.id)
        assert listed[0]["fields"] == ["city", "mobile"] and listed[0]["changed_by"] == "rubina"
    (row,) = audit_rows(database, "patient.update")
    assert row.detail == {"fields": ["city", "mobile"], "version": 2}
    detail = json.dumps(row.detail)
    for secret in ("Multan", "Lahore", "7654321", "1234567", "Ahmed"):
        assert secret not in detail


def test_renaming_updates_search(database, clerk, registry):
    p = registry["ahmed"]
    with database.transaction() as s:
        services.update_patient(s, clerk, p.id, {"name": "Ahmed Ali Khan"})
    assert search(database, clerk, "ali") == (["Ahmed Ali Khan"], 1)
    assert search(database, clerk, "ahmed ali") == (["Ahmed Ali Khan"], 1)


def test_edit_with_a_stale_version_is_refused(database, clerk, registry):
    p = registry["ahmed"]
    with database.transaction() as s:
        services.update_patient(s, clerk, p.id, {"city": "Multan"}, expected_version=1)
    with database.transaction() as s:
        with pytest.raises(Conflict) as exc:
            services.update_patient(s, clerk, p.id, {"city": "Karachi"}, expected_version=1)
    assert exc.value.code == "stale_version"


def test_edit_that_changes_nothing_writes_nothing(database, clerk, registry):
    p = registry["ahmed"]
    with database.transaction() as s:
        same = services.update_patient(s, clerk, p.id, {"cnic": "3520212345671", "mobile": "+92 300 1234567",
                                                       "name": " Ahmed   Khan "})
        assert same.version == 1
    assert audit_rows(database, "patient.update") == []


def test_invalid_edit_names_the_bad_fields_and_changes_nothing(database, clerk, registry):
    p = registry["ahmed"]
    future = (date.today() + timedelta(days=5)).isoformat()
    with database.transaction() as s:
        with pytest.raises(Invalid) as exc:
            services.update_patient(s, clerk, p.id, {"mobile": "042-111-222-333", "date_of_birth": future,
                                                   "relation": None})
    assert exc.value.fields == {
        "mobile": ["Enter a Pakistani mobile number like 0300-1234567."],
        "date_of_birth": ["Date of birth cannot be in the future."],
        "relation": ["Choose S/O, D/O or W/O for the father's or husband's name."],
    }
    with database.transaction(readonly=True) as s:
        assert s.get(Patient, p.id).mobile == "+923001234567"


def test_edit_to_another_patients_cnic_is_refused_naming_that_mrn(database, clerk, registry):
    with database.transaction() as s:
        with pytest.raises(Conflict) as exc:
            services.update_patient(s, clerk, registry["ahmed"].id, {"cnic": "6110133333332"})
    assert exc.value.code == "duplicate_cnic" and registry["zainab"].mrn in exc.value.message


def test_grown_child_keeps_form_b_and_can_add_own_cnic(database, clerk):
    twenty_years_ago = (date.today() - timedelta(days=365 * 20)).isoformat()
    p = register(database, clerk, name="Bilal", cnic=None, date_of_birth="2015-02-01", form_b="3520276543211")
    with database.transaction() as s:
        services.update_patient(s, clerk, p.id, {"date_of_birth": twenty_years_ago})  # corrected, now adult
        services.update_patient(s, clerk, p.id, {"city": "Multan"})  # the old Form-B does not block edits
        services.update_patient(s, clerk, p.id, {"form_b": "35202-7654321-1", "city": "Quetta"})  # re-sent as is
        services.update_patient(s, clerk, p.id, {"cnic": "3520276543211"})  # the same number, as CNIC
        with pytest.raises(Invalid) as exc:
            services.update_patient(s, clerk, p.id, {"form_b": "3520211111119"})
    assert exc.value.fields == {"form_b": ["Form-B is for children under 18; enter the CNIC instead."]}


def test_restating_the_same_estimated_age_keeps_the_estimated_birth_date(database, clerk):
    p = register(database, clerk, date_of_birth=None, age_years=40)
    with database.transaction() as s:
        s.execute(Patient.__table__.update().where(Patient.id == p.id)
                  .values(date_of_birth=p.date_of_birth - timedelta(days=30)))  # registered a month ago
    with database.transaction() as s:
        kept = services.update_patient(s, clerk, p.id, {"age_years": 40, "date_of_birth": None})
        assert kept.version == 1 and kept.dob_estimated
        exact = services.update_patient(s, clerk, p.id, {"date_of_birth": "1980-01-31"})
        assert exact.dob_estimated is False and exact.version == 2
    with database.transaction(readonly=True) as s:
        (history,) = s.scalars(select(PatientHistory)).all()
        assert history.changes["dob_estimated"] == [True, False]
        assert history.changes["date_of_birth"][1] == "1980-01-31"


# --- allergies -------------------------------------------------------------------------

def test_add_allergy_records_and_audits(database, clerk, registry):
    p = registry["sana"]
    with database.transaction() as s:
        allergy = services.add_allergy(s, clerk, p.id, {"substance": "Sulfa drugs", "reaction": "Rash",
                                                        "severity": "moderate"})
    with database.transaction(readonly=True) as s:
        assert [a.substance for a in services.list_allergies(s, p.id)] == ["Sulfa drugs"]
        stored = s.get(Allergy, allergy.id)
        assert stored.substance_search == "sulfa drugs" and stored.recorded_by_id == clerk.user_id
    (row,) = audit_rows(database, "patient.allergy_add")
    assert row.patient_id == p.id and row.detail == {"allergy_id": allergy.id}


def test_same_active_allergy_twice_is_refused(database, clerk, registry):
    p = registry["sana"]
    with database.transaction() as s:
        services.add_allergy(s, clerk, p.id, {"substance": "Penicillin", "severity": "severe"})
    with database.transaction() as s:
        with pytest.raises(Conflict) as exc:
            services.add_allergy(s, clerk, p.id, {"substance": " PENICILLIN ", "severity": "mild"})
    assert exc.value.code == "duplicate_allergy"


def test_invalid_allergy_names_the_fields(database, clerk, registry):
    with database.transaction() as s:
        with pytest.raises(Invalid) as exc:
            services.add_allergy(s, clerk, registry["sana"].id, {"substance": "", "severity": "very"})
    assert exc.value.fields == {"substance": ["Enter the substance, e.g. Penicillin."],
                                "severity": ["Severity must be mild, moderate or severe."]}


def test_audit_chain_verifies_after_patient_work(database, clerk, registry):
    with database.transaction() as s:
        services.update_patient(s, clerk, registry["ahmed"].id, {"city": "Quetta"})
        services.get_patient(s, clerk, registry["ahmed"].id)
    with database.transaction(readonly=True) as s:
        assert audit.verify(s).ok
