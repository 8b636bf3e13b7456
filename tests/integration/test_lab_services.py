"""Lab services on a real database: catalogue, orders, samples, results, verification,
amendments, turnaround times, the pathway message and the audit trail."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from departments.lab import demo, services
from departments.lab.models import LabOrderItem, LabResult, LabSample
from hms.audit import Actor, AuditLog
from hms.errors import Conflict, Forbidden, Invalid, NotFound
from hms.jobs import JobRun
from hms.patients.services import register_patient

TESTS = ("CBC", "FBS", "MPICT", "ESR", "LFT")


@pytest.fixture
def catalogue(app, database):
    """A few demo tests (the app fixture sets up jobs and the message job)."""
    with database.transaction() as s:
        for spec in demo.CATALOGUE:
            if spec["code"] in TESTS:
                services.create_test(s, Actor.system("test"), spec)


@pytest.fixture
def staff(make_user):
    def actor(username, *roles):
        return Actor(user_id=make_user(username, *roles), username=username, roles=frozenset(roles))

    return {
        "doctor": actor("dr_amna", "doctor"),
        "tech": actor("tech_kamran", "lab_technician"),
        "tech2": actor("tech_sana", "lab_technician"),
        "path": actor("dr_path", "pathologist"),
        "path2": actor("dr_path2", "pathologist"),
    }


def _patient(database, sex="female", born=date(1990, 3, 1), name="Ayesha Bibi"):
    with database.transaction() as s:
        return register_patient(s, Actor.system("test"), {"name": name, "sex": sex,
                                                          "date_of_birth": born.isoformat()}).id


@pytest.fixture
def patient_id(database):
    return _patient(database)


def _order(database, staff, patient_id, codes=("CBC",)):
    with database.transaction() as s:
        return services.create_order(s, staff["doctor"], patient_id=patient_id, test_codes=list(codes),
                                     encounter_id=77).id


def _collect(database, staff, order_id):
    with database.transaction() as s:
        return services.record_collection(s, staff["tech"], order_id, collected=True).labels


def _enter(database, actor, order_id, rows):
    with database.transaction() as s:
        return services.enter_results(s, actor, order_id, rows)


CBC_NORMAL = {"HB": "13.5", "RBC": "4.5", "HCT": "40", "MCV": "88", "MCH": "29", "MCHC": "33", "TLC": "7.2",
              "NEUT": "60", "LYMPH": "30", "MONO": "6", "EOS": "3", "BASO": "1", "PLT": "250"}


def _cbc_rows(**overrides):
    values = dict(CBC_NORMAL, **overrides)
    return [{"test_code": "CBC", "analyte_code": k, "value": v} for k, v in values.items()]


def _result(session, order_id, analyte_code, test_code="CBC"):
    rows = session.execute(select(LabResult).join(LabOrderItem, LabOrderItem.id == LabResult.item_id)
                           .where(LabOrderItem.order_id == order_id).order_by(LabResult.version)).scalars()
    return [r for r in rows if r.analyte.code == analyte_code and r.analyte.test.code == test_code]


# --- catalogue ------------------------------------------------------------------------

def test_catalogue_tests_have_analytes_ranges_and_tariff_codes(catalogue, database):
    with database.transaction() as s:
        cbc = services.get_test(s, "cbc")
        assert cbc.tariff_code == "LAB-CBC" and cbc.sample_type == "blood_edta" and cbc.section == "haematology"
        hb = cbc.analytes[0]
        assert (hb.code, hb.units, hb.decimals) == ("HB", "g/dL", 1)
        assert {(r.sex, str(r.low), str(r.high)) for r in hb.ranges if r.min_age_days == 18 * 365} == {
            ("male", "13", "17"), ("female", "12", "15")}
        fbs = services.get_test(s, "FBS")
        assert len(fbs.analytes) == 1
        assert [t.code for t in services.list_tests(s, "fa")] == ["FBS"]  # name prefix "Fasting"
        assert [t.code for t in services.list_tests(s, "cb")] == ["CBC"]


def test_bad_test_definitions_are_refused_field_by_field(catalogue, database):
    with database.transaction() as s:
        with pytest.raises(Invalid) as exc:
            services.create_test(s, Actor.system("t"), {
                "code": "x y", "name": "", "sample_type": "blood", "section": "chemistry",
                "analytes": [{"code": "A", "name": "A", "result_type": "numeric",
                              "ranges": [{"low": "5", "high": "1", "sex": "both"}]},
                             {"code": "B", "name": "B", "result_type": "options", "options": []}]})
        fields = exc.value.fields
        assert {"code", "name", "sample_type", "analytes.0.ranges.0.high", "analytes.0.ranges.0.sex",
                "analytes.1.options"} <= set(fields)
        with pytest.raises(Conflict):
            services.create_test(s, Actor.system("t"), next(t for t in demo.CATALOGUE if t["code"] == "CBC"))


def test_demo_catalogue_loads_once(app, database):
    with database.transaction() as s:
        first = demo.load(s, Actor.system("demo"))
    with database.transaction() as s:
        again = demo.load(s, Actor.system("demo"))
        codes = {t.code for t in services.list_tests(s)}
    assert len(demo.CATALOGUE) >= 40
    assert first == [f"lab tests: {len(demo.CATALOGUE)} created, 0 already present"]
    assert again == [f"lab tests: 0 created, {len(demo.CATALOGUE)} already present"]
    assert {"CBC", "LFT", "RFT", "FBS", "RBS", "HBA1C", "LIPID", "URE", "MPICT", "TYPHI", "HBSAG", "HCV",
            "DENGNS1", "TSH", "ESR", "CRP", "UA", "CA", "PTINR", "BG", "SRE", "WIDAL"} <= codes


# --- orders ---------------------------------------------------------------------------

def test_order_numbers_items_and_audit(catalogue, database, staff, patient_id):
    with database.transaction() as s:
        order = services.create_order(s, staff["doctor"], patient_id=patient_id, test_codes=["cbc", "FBS", "CBC"],
                                      encounter_id=12, priority="urgent")
        assert order.order_no == "L-000001"
        assert [i.test.code for i in order.items] == ["CBC", "FBS"]
        assert order.encounter_id == 12 and order.admission_id is None and order.ordered_by_id == staff["doctor"].user_id
        assert order.status == "awaiting_collection" and order.business_key == f"lab-order:{order.id}"
        second = services.create_order(s, staff["doctor"], patient_id=patient_id, test_codes=["ESR"], admission_id=3)
        assert second.order_no == "L-000002" and second.admission_id == 3
    with database.transaction(readonly=True) as s:  # audit rows are chained at commit
        row = s.scalars(select(AuditLog).where(AuditLog.action == "lab.order.create")).first()
        assert row.patient_id == patient_id and row.detail["tests"] == ["CBC", "FBS"]


def test_unknown_or_inactive_codes_are_refused_by_name(catalogue, database, staff, patient_id):
    with database.transaction() as s:
        services.set_test_active(s, staff["doctor"], "ESR", False)
    with database.transaction() as s:
        with pytest.raises(Invalid) as exc:
            services.create_order(s, staff["doctor"], patient_id=patient_id, test_codes=["CBC", "XYZ", "ESR"])
        assert exc.value.code == "unknown_tests"
        assert "XYZ" in exc.value.message and "ESR" in exc.value.message and "CBC" not in exc.value.message
        with pytest.raises(Invalid):
            services.create_order(s, staff["doctor"], patient_id=patient_id, test_codes=[])
        with pytest.raises(NotFound):
            services.create_order(s, staff["doctor"], patient_id=999, test_codes=["CBC"])


def test_cancel_before_collection_but_not_after(catalogue, database, staff, patient_id):
    order_id = _order(database, staff, patient_id, ("CBC", "FBS"))
    with database.transaction() as s:
        order = services.get_order(s, order_id)
        cbc, fbs = order.items
        with pytest.raises(Invalid):
            services.cancel_item(s, staff["doctor"], fbs.id, "")
        services.cancel_item(s, staff["doctor"], fbs.id, "Patient not fasting")
        assert fbs.status == "cancelled" and fbs.cancel_reason == "Patient not fasting"
        with pytest.raises(Conflict) as exc:
            services.cancel_item(s, staff["doctor"], fbs.id, "again")
        assert exc.value.code == "already_cancelled"
        cbc_id = cbc.id
    _collect(database, staff, order_id)
    with database.transaction() as s:
        with pytest.raises(Conflict) as exc:
            services.cancel_item(s, staff["doctor"], cbc_id, "changed my mind")
        assert exc.value.code == "already_collected"


# --- samples --------------------------------------------------------------------------

def test_collection_labels_one_container_per_sample_type(catalogue, database, staff, patient_id):
    order_id = _order(database, staff, patient_id, ("CBC", "ESR", "FBS"))
    with database.transaction() as s:
        outcome = services.record_collection(s, staff["tech"], order_id, collected=True)
        assert outcome.labels == ["S-000001", "S-000002"]  # EDTA (CBC + ESR), fluoride (FBS)
        assert outcome.pending == 0
        order = services.get_order(s, order_id)
        assert {i.test.code: i.sample.label for i in order.items} == {
            "CBC": "S-000001", "ESR": "S-000001", "FBS": "S-000002"}
        assert all(i.status == "collected" and i.collected_at for i in order.items)
        assert order.status == "awaiting_results"
        with pytest.raises(Conflict):
            services.record_collection(s, staff["tech"], order_id, collected=True)


def test_pre_printed_label_only_for_one_container(catalogue, database, staff, patient_id):
    two = _order(database, staff, patient_id, ("CBC", "FBS"))
    one = _order(database, staff, patient_id, ("CBC",))
    with database.transaction() as s:
        with pytest.raises(Invalid) as exc:
            services.record_collection(s, staff["tech"], two, collected=True, label="PRE-1")
        assert "label" in exc.value.fields
        assert services.record_collection(s, staff["tech"], one, collected=True, label="PRE-1").labels == ["PRE-1"]


def test_rejection_sends_items_back_for_recollection_and_is_kept(catalogue, database, staff, patient_id):
    order_id = _order(database, staff, patient_id, ("CBC",))
    _collect(database, staff, order_id)
    with database.transaction() as s:
        with pytest.raises(Invalid):
            services.record_collection(s, staff["tech"], order_id, collected=False)
        outcome = services.record_collection(s, staff["tech"], order_id, collected=False,
                                             rejection_reason="haemolysed")
        assert [x.label for x in outcome.rejected] == ["S-000001"] and outcome.pending == 1
        item = services.get_order(s, order_id).items[0]
        assert item.status == "ordered" and item.sample_id is None and item.collected_at is None
    labels = _collect(database, staff, order_id)
    assert labels == ["S-000002"]
    with database.transaction() as s:
        samples = s.scalars(select(LabSample).where(LabSample.order_id == order_id).order_by(LabSample.id)).all()
        assert [(x.label, x.rejection_reason) for x in samples] == [("S-000001", "haemolysed"), ("S-000002", None)]
        # a sample can be rejected on its own too, until results are entered from it
        services.reject_sample(s, staff["tech"], samples[1].id, "clotted")
        assert services.get_order(s, order_id).items[0].status == "ordered"
    _collect(database, staff, order_id)
    _enter(database, staff["tech"], order_id, _cbc_rows()[:1])
    with database.transaction() as s:
        current = services.get_order(s, order_id).items[0].sample
        with pytest.raises(Conflict) as exc:
            services.reject_sample(s, staff["tech"], current.id, "clotted")
        assert exc.value.code == "results_entered"


def test_unusable_draw_is_recorded_as_rejected_sample(catalogue, database, staff, patient_id):
    order_id = _order(database, staff, patient_id, ("CBC",))
    with database.transaction() as s:
        outcome = services.record_collection(s, staff["tech"], order_id, collected=False,
                                             rejection_reason="insufficient")
        assert outcome.rejected[0].rejected_at is not None and outcome.pending == 1
        assert services.get_order(s, order_id).items[0].status == "ordered"


# --- results and flags ----------------------------------------------------------------

def test_flags_depend_on_sex_and_age_at_collection(catalogue, database, staff):
    today = date.today()
    woman = _patient(database, "female", date(today.year - 35, 1, 1), "Sadia Noor")
    man = _patient(database, "male", date(today.year - 35, 1, 1), "Bilal Khan")
    infant = _patient(database, "male", today - timedelta(days=400), "Baby Hamza")
    hb = {}
    for who, pid in (("woman", woman), ("man", man), ("infant", infant)):
        order_id = _order(database, staff, pid, ("CBC",))
        _collect(database, staff, order_id)
        _enter(database, staff["tech"], order_id, _cbc_rows(HB="12.5"))
        with database.transaction() as s:
            hb[who] = _result(s, order_id, "HB")[-1]
    assert hb["woman"].flag is None and hb["woman"].ref_text == "12.0 - 15.0"
    assert hb["man"].flag == "L" and hb["man"].ref_text == "13.0 - 17.0"
    assert hb["infant"].flag is None and hb["infant"].ref_text == "10.5 - 13.5"  # child range differs


def test_critical_values_and_option_flags(catalogue, database, staff, patient_id):
    order_id = _order(database, staff, patient_id, ("CBC", "MPICT"))
    _collect(database, staff, order_id)
    outcome = _enter(database, staff["tech"], order_id, _cbc_rows(HB="6.2", PLT="15") + [
        {"test_code": "MPICT", "analyte_code": "PF", "value": "positive"},
        {"test_code": "MPICT", "analyte_code": "PV", "value": "Negative"}])
    assert outcome.complete
    with database.transaction() as s:
        assert _result(s, order_id, "HB")[-1].flag == "LL"
        assert _result(s, order_id, "PLT")[-1].flag == "LL"
        pf = _result(s, order_id, "PF", "MPICT")[-1]
        assert (pf.value_text, pf.flag, pf.critical) == ("Positive", "AA", True)
        assert services.get_order(s, order_id).status == "awaiting_verification"
    with database.transaction() as s:
        result = services.verify_order(s, staff["path"], order_id, approve=True)
        assert result.critical and result.all_verified


def test_bad_values_are_refused_before_anything_is_written(catalogue, database, staff, patient_id):
    order_id = _order(database, staff, patient_id, ("CBC", "FBS"))
    with database.transaction() as s:
        with pytest.raises(Invalid) as exc:
            services.enter_results(s, staff["tech"], order_id, _cbc_rows()[:1])
        assert "has not been collected" in exc.value.fields["results.0.test_code"][0]
    _collect(database, staff, order_id)
    with database.transaction() as s:
        with pytest.raises(Invalid) as exc:
            services.enter_results(s, staff["tech"], order_id, [
                {"test_code": "CBC", "analyte_code": "HB", "value": "13"},
                {"test_code": "CBC", "analyte_code": "PLT", "value": "-5"},
                {"test_code": "CBC", "analyte_code": "NOPE", "value": "1"},
                {"test_code": "XYZ", "analyte_code": "HB", "value": "1"},
                {"test_code": "FBS", "analyte_code": "GLU", "value": "high"}])
        fields = exc.value.fields
        assert set(fields) == {"results.1.value", "results.2.analyte_code", "results.3.test_code", "results.4.value"}
        assert "cannot be negative" in fields["results.1.value"][0]
        assert not s.scalars(select(LabResult)).all()


def test_partial_entry_then_drafts_can_be_corrected(catalogue, database, staff, patient_id):
    order_id = _order(database, staff, patient_id, ("CBC",))
    _collect(database, staff, order_id)
    first = _enter(database, staff["tech"], order_id, _cbc_rows()[:3])
    assert not first.complete
    with database.transaction() as s:
        assert services.get_order(s, order_id).items[0].status == "collected"
    _enter(database, staff["tech2"], order_id, _cbc_rows(HB="14.1"))
    with database.transaction() as s:
        versions = _result(s, order_id, "HB")
        assert [(v.version, v.value_text, v.entered_by_id) for v in versions] == [(1, "14.1", staff["tech2"].user_id)]
        assert services.get_order(s, order_id).items[0].status == "resulted"


# --- verification ---------------------------------------------------------------------

def test_the_person_who_entered_cannot_verify(catalogue, database, make_user, patient_id, staff):
    both = Actor(user_id=make_user("dr_both", "lab_technician", "pathologist"), username="dr_both",
                 roles=frozenset({"lab_technician", "pathologist"}))
    order_id = _order(database, staff, patient_id, ("CBC",))
    _collect(database, staff, order_id)
    _enter(database, both, order_id, _cbc_rows())
    with database.transaction() as s:
        with pytest.raises(Forbidden) as exc:
            services.verify_order(s, both, order_id, approve=True)
        assert exc.value.code == "same_person" and "another pathologist" in exc.value.message
        with pytest.raises(Forbidden) as exc:
            services.verify_order(s, staff["tech"], order_id, approve=True)
        assert exc.value.code == "not_pathologist"
    with database.transaction() as s:
        assert services.get_order(s, order_id).items[0].verified_at is None
        outcome = services.verify_order(s, staff["path"], order_id, approve=True, comment="Normal blood picture.")
        assert outcome.all_verified
        item = services.get_order(s, order_id).items[0]
        assert item.status == "verified" and item.verified_at
        assert services.get_order(s, order_id).report_comment == "Normal blood picture."


def test_send_back_needs_a_comment_and_reopens_entry(catalogue, database, staff, patient_id):
    order_id = _order(database, staff, patient_id, ("CBC",))
    _collect(database, staff, order_id)
    _enter(database, staff["tech"], order_id, _cbc_rows(PLT="40"))
    with database.transaction() as s:
        with pytest.raises(Invalid):
            services.verify_order(s, staff["path"], order_id, approve=False)
        outcome = services.verify_order(s, staff["path"], order_id, approve=False, comment="Check PLT clumps")
        assert outcome.returned_items and not outcome.all_verified
        item = services.get_order(s, order_id).items[0]
        assert item.status == "collected"
        assert _result(s, order_id, "PLT")[-1].status == "returned"
        with pytest.raises(Conflict) as exc:
            services.verify_order(s, staff["path"], order_id, approve=True)
        assert exc.value.code == "nothing_to_verify"
    _enter(database, staff["tech"], order_id, [{"test_code": "CBC", "analyte_code": "PLT", "value": "180"}])
    with database.transaction() as s:
        plt = _result(s, order_id, "PLT")
        assert [(p.version, p.value_text, p.status) for p in plt] == [(1, "180", "pending")]
        # the other returned results wait to be confirmed (entered again) before verification
        assert services.get_order(s, order_id).items[0].status == "collected"
    _enter(database, staff["tech"], order_id, _cbc_rows(PLT="180"))
    with database.transaction() as s:
        assert services.get_order(s, order_id).items[0].status == "resulted"


def test_verified_result_is_never_overwritten_and_amendment_is_version_2(catalogue, database, staff, patient_id):
    order_id = _order(database, staff, patient_id, ("CBC",))
    _collect(database, staff, order_id)
    _enter(database, staff["tech"], order_id, _cbc_rows())
    with database.transaction() as s:
        services.verify_order(s, staff["path"], order_id, approve=True)
    # the same value again is a harmless repeat; a different one is refused
    assert _enter(database, staff["tech"], order_id, _cbc_rows()[:1]).unchanged == 1
    with database.transaction() as s:
        with pytest.raises(Conflict) as exc:
            services.enter_results(s, staff["tech"], order_id, [{"test_code": "CBC", "analyte_code": "HB",
                                                                  "value": "9.9"}])
        assert exc.value.code == "result_verified"
        v1 = _result(s, order_id, "HB")[-1]
        with pytest.raises(Invalid):
            services.amend_result(s, staff["tech"], v1.id, value="9.9", reason="")
        with pytest.raises(Invalid):
            services.amend_result(s, staff["tech"], v1.id, value="13.5", reason="same value")
        v2 = services.amend_result(s, staff["tech"], v1.id, value="9.9", reason="Transcription error")
        assert (v2.version, v2.status, v2.amends_id, v2.flag) == (2, "pending", v1.id, "L")
        assert v1.status == "verified" and v1.value_text == "13.5"
        assert services.get_order(s, order_id).items[0].status == "resulted"
        with pytest.raises(Conflict) as exc:
            services.amend_result(s, staff["tech"], v1.id, value="9.8", reason="again")
        assert exc.value.code == "not_current"
        with pytest.raises(Conflict) as exc:
            services.amend_result(s, staff["tech"], v2.id, value="9.8", reason="draft")
        assert exc.value.code == "not_verified"
    with database.transaction() as s:
        # before the amendment is verified, readers see version 1 marked as under correction
        view = services.report(s, staff["doctor"], order_id)
        hb = view["items"][0]["results"][0]
        assert hb["result"].version == 1 and hb["amendment_pending"] and not hb["amended"]
        with pytest.raises(Forbidden):
            services.verify_order(s, staff["tech"], order_id, approve=True)
        services.verify_order(s, staff["path2"], order_id, approve=True)
    with database.transaction() as s:
        view = services.report(s, staff["doctor"], order_id)
        hb = view["items"][0]["results"][0]
        assert hb["result"].version == 2 and hb["amended"] and hb["result"].amend_reason == "Transcription error"
        assert [v.version for v in hb["versions"]] == [1, 2]
        assert view["items"][0]["amended"]


def test_amender_cannot_verify_own_amendment(catalogue, database, staff, patient_id):
    order_id = _order(database, staff, patient_id, ("FBS",))
    _collect(database, staff, order_id)
    _enter(database, staff["tech"], order_id, [{"test_code": "FBS", "analyte_code": "GLU", "value": "95"}])
    with database.transaction() as s:
        services.verify_order(s, staff["path"], order_id, approve=True)
        v1 = _result(s, order_id, "GLU", "FBS")[-1]
        services.amend_result(s, staff["path"], v1.id, value="59", reason="Wrong sample tube read")
        with pytest.raises(Forbidden) as exc:
            services.verify_order(s, staff["path"], order_id, approve=True)
        assert exc.value.code == "same_person"


def test_verified_message_is_enqueued_once_per_order(catalogue, database, staff, patient_id):
    order_id = _order(database, staff, patient_id, ("CBC", "ESR"))
    _collect(database, staff, order_id)
    _enter(database, staff["tech"], order_id, _cbc_rows())
    with database.transaction() as s:
        services.verify_order(s, staff["path"], order_id, approve=True)  # CBC only: ESR not entered
    key = f"lab_result_verified:lab-order:{order_id}"
    with database.transaction() as s:
        assert s.scalar(select(JobRun).where(JobRun.key == key)) is None
    _enter(database, staff["tech"], order_id, [{"test_code": "ESR", "analyte_code": "ESR", "value": "12"}])
    with database.transaction() as s:
        services.verify_order(s, staff["path"], order_id, approve=True)
    with database.transaction() as s:
        run = s.scalar(select(JobRun).where(JobRun.key.contains("lab-order:")))
        assert run.key == key and run.name == "workflow.deliver_message"
        assert run.kwargs == {"message_name": "lab_result_verified", "business_key": f"lab-order:{order_id}",
                              "payload_json": f'{{"order_id": {order_id}}}'}
        assert run.status == "done"  # ran inline after commit (no instance waits here)
        v1 = _result(s, order_id, "ESR", "ESR")[-1]
        services.amend_result(s, staff["tech"], v1.id, value="30", reason="Read at 1 hour, not 30 min")
    with database.transaction() as s:
        services.verify_order(s, staff["path"], order_id, approve=True)
        assert len(s.scalars(select(JobRun).where(JobRun.key.contains("lab-order:"))).all()) == 1


def test_cancelling_the_last_open_item_completes_the_order(catalogue, database, staff, patient_id):
    order_id = _order(database, staff, patient_id, ("FBS", "ESR"))
    with database.transaction() as s:
        esr = services.get_order(s, order_id).items[1]
        services.cancel_item(s, staff["doctor"], esr.id, "Duplicate request")
    _collect(database, staff, order_id)
    _enter(database, staff["tech"], order_id, [{"test_code": "FBS", "analyte_code": "GLU", "value": "101"}])
    with database.transaction() as s:
        services.verify_order(s, staff["path"], order_id, approve=True)
        assert services.get_order(s, order_id).status == "verified"
        assert s.scalar(select(JobRun).where(JobRun.key.contains(f"lab-order:{order_id}"))) is not None


def test_turnaround_times_per_item(catalogue, database, staff, patient_id):
    order_id = _order(database, staff, patient_id, ("FBS",))
    _collect(database, staff, order_id)
    _enter(database, staff["tech"], order_id, [{"test_code": "FBS", "analyte_code": "GLU", "value": "88"}])
    with database.transaction() as s:
        order = services.get_order(s, order_id)
        order.ordered_at = order.ordered_at - timedelta(minutes=95)
        order.items[0].collected_at = order.items[0].collected_at - timedelta(minutes=60)
    with database.transaction() as s:
        services.verify_order(s, staff["path"], order_id, approve=True)
    with database.transaction() as s:
        view = services.order_detail(s, staff["tech"], order_id, include_drafts=True)
        entry = view["items"][0]
        assert entry["tat_minutes"] in (95, 96) and entry["lab_tat_minutes"] in (60, 61)
        assert entry["collection_tat_minutes"] in (34, 35, 36)
        item = entry["item"]
        assert view["order"].ordered_at < item.collected_at < item.verified_at


def test_drafts_are_hidden_from_readers_and_reads_are_audited(catalogue, database, staff, patient_id):
    order_id = _order(database, staff, patient_id, ("CBC",))
    _collect(database, staff, order_id)
    _enter(database, staff["tech"], order_id, _cbc_rows())
    with database.transaction() as s:
        doctor_view = services.order_detail(s, staff["doctor"], order_id, include_drafts=False)
        assert doctor_view["items"][0]["results"] == [] and not doctor_view["reportable"]
        lab_view = services.order_detail(s, staff["tech"], order_id, include_drafts=True)
        assert lab_view["items"][0]["results"][0]["result"].value_text == "13.5"
        rows, total = services.patient_results(s, staff["doctor"], patient_id)
        assert (rows, total) == ([], 0)
    with database.transaction(readonly=True) as s:  # audit rows are chained at commit
        reads = s.scalars(select(AuditLog).where(AuditLog.action.in_(("lab.order.read", "lab.results.read")))).all()
        assert len(reads) == 3 and all(r.patient_id == patient_id for r in reads)
        entered = s.scalars(select(AuditLog).where(AuditLog.action == "lab.results.enter")).one()
        assert "13.5" not in str(entered.detail)  # ids and codes only


def test_concurrent_collections_of_one_order_take_turns(catalogue, database, staff, patient_id):
    import threading

    order_id = _order(database, staff, patient_id, ("CBC", "FBS"))
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def collect(actor):
        barrier.wait()
        try:
            with database.transaction() as s:
                labels = services.record_collection(s, actor, order_id, collected=True).labels
            outcomes.append("collected " + ",".join(labels))
        except Conflict as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=collect, args=(staff[who],)) for who in ("tech", "tech2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["collected S-000001,S-000002", "nothing_to_collect"]
    with database.transaction() as s:
        assert len(s.scalars(select(LabSample).where(LabSample.order_id == order_id)).all()) == 2


def test_verified_results_for_the_patient_record(catalogue, database, staff, patient_id):
    order_id = _order(database, staff, patient_id, ("FBS", "ESR"))
    _collect(database, staff, order_id)
    _enter(database, staff["tech"], order_id, [{"test_code": "FBS", "analyte_code": "GLU", "value": "130"}])
    with database.transaction() as s:
        services.verify_order(s, staff["path"], order_id, approve=True)
        rows = services.list_verified_results_for_patient(s, staff["doctor"], patient_id)
    assert [(r["test_code"], r["analyte_code"], r["value"], r["flag"], r["reference_range"]) for r in rows] == [
        ("FBS", "GLU", "130", "H", "70 - 99")]
    assert rows[0]["verified_at"] and rows[0]["order_no"] == "L-000001" and rows[0]["amended"] is False
