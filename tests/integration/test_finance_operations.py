"""The finance service-task operations as a pathway calls them (through the registry, with
parameter validation and a JSON result), the fee-before-consultation setting and the demo
tariffs."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from finance import demo
from finance import operations as finance_operations  # noqa: F401 (registers the operations)
from finance import services
from finance.models import Charge, TariffItem, TariffPrice
from hms import settings
from hms.audit import Actor
from hms.patients.models import Patient
from hms.workflow import operations
from hms.workflow.operations import OperationContext, OperationError

EXPECTED = {
    "finance.open_bill": {"patient_id": True, "encounter_id": False, "admission_id": False, "payer_class": False},
    "finance.post_consultation_charge": {"bill_id": True, "encounter_id": True, "department_code": True,
                                         "doctor_id": False},
    "finance.post_charges": {"bill_id": True, "charges": True},
    "finance.reverse_charge": {"source_ref": True, "reason": True},
    "finance.bill_status": {"bill_id": True},
    "finance.fee_before_consultation": {},
    "finance.set_payer": {"bill_id": True, "payer_class": True, "member_no": False, "verification_ref": False,
                          "coverage_limit_paisa": False},
    "finance.record_deposit": {"bill_id": True, "amount_paisa": True, "method": False, "reference": False},
    "finance.final_totals": {"bill_id": True},
    "finance.issue_gate_pass": {"bill_id": True},
    "finance.check_topup": {"bill_id": True},
    "finance.request_final": {"bill_id": True},
}


@pytest.fixture
def ctx(database):
    session = database.session()
    patient = Patient(mrn="HMS-000001", name="Ahmed Khan", name_search="ahmed khan", sex="male")
    session.add(patient)
    session.flush()
    demo.load(session, Actor.system("demo"))
    session.commit()
    yield OperationContext(session, Actor.system("workflow"), instance_id=1, patient_id=patient.id,
                           pathway_key="opd_visit")
    session.rollback()
    session.close()


def call(ctx, name, **params):
    result = operations.call(name, ctx, params)
    json.dumps(result)
    return result


def test_the_operations_and_their_parameters_are_registered():
    for name, params in EXPECTED.items():
        assert operations.get(name).param_names() == params, name


def test_open_bill_is_idempotent_per_encounter(ctx):
    first = call(ctx, "finance.open_bill", patient_id=ctx.patient_id, encounter_id=7)
    again = call(ctx, "finance.open_bill", patient_id=ctx.patient_id, encounter_id=7, payer_class="cash")
    assert first == again == {"bill_id": first["bill_id"], "bill_no": "B-000001"}
    panel = call(ctx, "finance.open_bill", patient_id=ctx.patient_id, encounter_id=8, payer_class="panel-ptcl")
    assert panel["bill_no"] == "B-000002"
    with pytest.raises(OperationError):
        call(ctx, "finance.open_bill", encounter_id=9)
    with pytest.raises(OperationError):
        call(ctx, "finance.open_bill", patient_id="one")


def test_a_visit_charges_and_pays_through_the_operations(ctx):
    bill_id = call(ctx, "finance.open_bill", patient_id=ctx.patient_id, encounter_id=7)["bill_id"]
    consult = call(ctx, "finance.post_consultation_charge", bill_id=bill_id, encounter_id=7, department_code="GYN")
    assert consult == {"charge_id": consult["charge_id"], "amount_paisa": 200000}
    assert call(ctx, "finance.post_consultation_charge", bill_id=bill_id, encounter_id=7,
                department_code="GYN") == consult
    assert call(ctx, "finance.bill_status", bill_id=bill_id) == {
        "total_paisa": 200000, "paid_paisa": 0, "balance_paisa": 200000, "settled": False}

    charges = [
        {"source_ref": "lab_order_item:12", "kind": "lab", "description": "CBC", "quantity": 1,
         "tariff_code": "LAB-CBC"},
        {"source_ref": "dispense_line:5", "kind": "medicine", "description": "Paracetamol 500 mg", "quantity": 20,
         "unit_price_paisa": 150},
    ]
    assert call(ctx, "finance.post_charges", bill_id=bill_id, charges=charges) == {"posted": 2, "total_paisa": 83000}
    assert call(ctx, "finance.post_charges", bill_id=bill_id, charges=charges) == {"posted": 0, "total_paisa": 83000}

    assert call(ctx, "finance.reverse_charge", source_ref="lab_order_item:12", reason="Sample not taken") == {
        "reversed": True}
    assert call(ctx, "finance.reverse_charge", source_ref="lab_order_item:12", reason="again") == {"reversed": True}
    assert call(ctx, "finance.reverse_charge", source_ref="lab_order_item:99", reason="never charged") == {
        "reversed": False}

    services.record_payment(ctx.session, ctx.actor, bill_id, amount_paisa=203000, method="cash",
                            idempotency_key="op-1")
    assert call(ctx, "finance.bill_status", bill_id=bill_id) == {
        "total_paisa": 203000, "paid_paisa": 203000, "balance_paisa": 0, "settled": True}
    assert ctx.session.scalar(select(func.count()).select_from(Charge)) == 4


def test_post_charges_parameters_are_checked(ctx):
    bill_id = call(ctx, "finance.open_bill", patient_id=ctx.patient_id, encounter_id=7)["bill_id"]
    assert call(ctx, "finance.post_charges", bill_id=bill_id, charges=[]) == {"posted": 0, "total_paisa": 0}
    bad_lists = [
        None,
        [{"source_ref": "dispense_line:1", "kind": "medicine", "description": "ORS", "quantity": 1}],
        [{"source_ref": "dispense_line:1", "kind": "medicine", "description": "ORS", "quantity": 1,
          "unit_price_paisa": 10.5}],
        [{"source_ref": "lab_order_item:1", "kind": "lab", "description": "CBC", "quantity": 1,
          "tariff_code": "LAB-CBC", "unit_price_paisa": 100}],
        [{"source_ref": "lab_order_item:1", "kind": "lab", "description": "CBC", "quantity": "2",
          "tariff_code": "LAB-CBC"}],
    ]
    for charges in bad_lists:
        with pytest.raises(OperationError):
            call(ctx, "finance.post_charges", bill_id=bill_id, charges=charges)


def test_fee_before_consultation_reads_the_setting(ctx):
    assert call(ctx, "finance.fee_before_consultation") == {"before": True}
    spec = {s.key: s for s in settings.specs()}["opd.consultation_fee_before"]
    assert (spec.type, spec.default) == (bool, True)
    assert spec.description == "Consultation fee is paid before the consultation"
    settings.set_value(ctx.session, ctx.actor, "opd.consultation_fee_before", False)
    assert call(ctx, "finance.fee_before_consultation") == {"before": False}


def test_demo_load_is_idempotent_and_keeps_changed_prices(database):
    actor = Actor.system("demo")
    with database.transaction() as s:
        first = demo.load(s, actor)
    assert first[0] == "payer classes: 2 created, 0 already present"
    assert first[1] == f"tariff items: {len(demo.tariff_rows())} created, 0 already present"
    with database.transaction() as s:
        services.set_price(s, actor, "LAB-CBC", "cash", 85000)
        again = demo.load(s, actor)
        assert again == ["payer classes: 0 created, 2 already present",
                         f"tariff items: 0 created, {len(demo.tariff_rows())} already present",
                         f"panel-ptcl prices: 0 set, {len(demo.PANEL_PRICES)} already present"]
    with database.transaction(readonly=True) as s:
        assert services.price_for(s, "LAB-CBC", "cash") == 85000
        assert services.price_for(s, "LAB-CBC", "panel-ptcl") == 72000
        assert services.price_for(s, "LAB-TSH", "panel-ptcl") == 160000
        assert services.price_for(s, "PROC-NEBULISATION", "cash") == 40000
        assert s.scalar(select(func.count()).select_from(TariffItem)) == len(demo.tariff_rows())
        assert s.scalar(select(func.count()).select_from(TariffPrice)) == (
            len(demo.tariff_rows()) + len(demo.PANEL_PRICES))
