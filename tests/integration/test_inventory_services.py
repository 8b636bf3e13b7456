"""Pharmacy services on a real database: FEFO, expiry, partial supply, stock limits,
prescription caps, returns, adjustments, goods receipts, allergy alerts and overrides.
After every scenario the ledger must agree with the quantity on hand."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from hms.audit import AuditLog, verify
from hms.errors import Conflict, Invalid, NotFound
from inventory import demo, services
from inventory.models import Batch, Dispense, DispenseLine, Item, StockMovement
from tests.integration.test_inventory_support import (PHARMACIST, assert_ledger_agrees, dispense, make_items,
                                                      make_patient, on_hand, stock)


@pytest.fixture
def patient(database):
    return make_patient(database)


@pytest.fixture
def paracetamol(database):
    """PCM500T: an expired batch (20), one expiring in 30 days (5), one in 400 days (100)."""
    make_items(database, "PCM500T")
    return stock(database, "PCM500T", ("OLD1", -3, 20, 300), ("SOON1", 30, 5, 300), ("LATE1", 400, 100, 350))


def audit_rows(database, action):
    with database.transaction() as s:
        return list(s.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)))


# --- FEFO and expiry ---------------------------------------------------------------------

def test_first_expiry_first_out_skips_the_expired_batch(database, patient, paracetamol):
    old, soon, late = paracetamol
    out = dispense(database, patient, [{"item_code": "PCM500T", "quantity": 8}])
    assert out["ok"] and out["problems"] == []
    assert [(ln["batch_no"], ln["quantity"], ln["unit_price_paisa"], ln["amount_paisa"]) for ln in out["lines"]] == [
        ("SOON1", 5, 300, 1500), ("LATE1", 3, 350, 1050)]
    assert out["total_paisa"] == 2550
    assert (on_hand(database, old), on_hand(database, soon), on_hand(database, late)) == (20, 0, 97)
    assert_ledger_agrees(database)
    with database.transaction() as s:
        refs = {m.reference for m in s.scalars(select(StockMovement).where(StockMovement.kind == "dispense"))}
        assert refs == {f"dispense:{out['dispense_id']}"}


def test_a_batch_expiring_today_is_still_used(database, patient):
    make_items(database, "PCM500T")
    today_batch, later = stock(database, "PCM500T", ("TODAY", 0, 4, 300), ("LATER", 200, 10, 300))
    out = dispense(database, patient, [{"item_code": "pcm500t", "quantity": 4}])
    assert [ln["batch_no"] for ln in out["lines"]] == ["TODAY"]
    assert on_hand(database, today_batch) == 0


def test_stock_on_hand_counts_unexpired_batches_only(database, paracetamol):
    with database.transaction() as s:
        rows, total = services.search_items(s, "panad")
        assert total == 1 and rows[0]["stock_on_hand"] == 105 and rows[0]["expired_on_hand"] == 20
        assert rows[0]["near_expiry"] is not None and rows[0]["reorder"] is False
        assert services.search_items(s, None, stock_filter="expired")[1] == 1
        assert services.search_items(s, "pcm")[1] == 1 and services.search_items(s, "para")[1] == 1
        assert services.search_items(s, "xyz")[1] == 0


# --- short stock -------------------------------------------------------------------------

def test_insufficient_stock_is_refused_with_the_available_quantity(database, patient, paracetamol):
    out = dispense(database, patient, [{"item_code": "PCM500T", "quantity": 106}])
    assert out["ok"] is False and out["dispense_id"] is None and out["lines"] == []
    (problem,) = out["problems"]
    assert problem["code"] == "insufficient_stock" and problem["available"] == 105
    assert problem["item_code"] == "PCM500T" and "105" in problem["message"]
    assert [on_hand(database, b) for b in paracetamol] == [20, 5, 100]
    with database.transaction() as s:
        assert s.scalar(select(Dispense.id)) is None
    assert audit_rows(database, "inventory.dispense") == []
    assert_ledger_agrees(database)


def test_partial_dispensing_needs_a_reason_and_records_the_shortfall(database, patient, paracetamol):
    make_items(database, "IBU400T")
    stock(database, "IBU400T", ("IB1", 300, 50, 700))
    lines = [{"item_code": "PCM500T", "quantity": 110}, {"item_code": "IBU400T", "quantity": 10}]
    refused = dispense(database, patient, lines)
    assert not refused["ok"] and [p["code"] for p in refused["problems"]] == ["insufficient_stock"]
    out = dispense(database, patient, lines, partial_reason="Short supply from distributor; rest tomorrow")
    assert out["ok"]
    assert sum(ln["quantity"] for ln in out["lines"] if ln["item_code"] == "PCM500T") == 105
    assert out["shortfalls"] == [{"item_code": "PCM500T", "requested": 110, "dispensed": 105, "line": 0}]
    with database.transaction() as s:
        record = s.get(Dispense, out["dispense_id"])
        assert record.partial_reason == "Short supply from distributor; rest tomorrow"
        assert record.shortfalls[0]["dispensed"] == 105
    assert audit_rows(database, "inventory.dispense")[0].detail["partial"] is True
    assert_ledger_agrees(database)


def test_partial_reason_is_not_kept_when_everything_was_supplied(database, patient, paracetamol):
    out = dispense(database, patient, [{"item_code": "PCM500T", "quantity": 2}], partial_reason="just in case")
    with database.transaction() as s:
        assert s.get(Dispense, out["dispense_id"]).partial_reason is None


def test_partial_with_nothing_in_stock_is_still_refused(database, patient):
    make_items(database, "PCM500T")
    stock(database, "PCM500T", ("GONE", -1, 10, 300))
    out = dispense(database, patient, [{"item_code": "PCM500T", "quantity": 1}], partial_reason="whatever we have")
    assert not out["ok"] and out["problems"][0]["code"] == "insufficient_stock"
    assert out["problems"][0]["available"] == 0


def test_two_lines_of_one_item_share_the_stock(database, patient, paracetamol):
    out = dispense(database, patient, [{"item_code": "PCM500T", "quantity": 100}, {"item_code": "PCM500T", "quantity": 6}])
    assert not out["ok"] and out["problems"][0]["line"] == 1 and out["problems"][0]["available"] == 5


def test_unknown_and_inactive_items_are_problems_not_faults(database, patient, paracetamol):
    with database.transaction() as s:
        s.scalar(select(Item).where(Item.code == "PCM500T")).active = False
    out = dispense(database, patient, [{"item_code": "NOPE1", "quantity": 1}, {"item_code": "PCM500T", "quantity": 1}])
    assert sorted(p["code"] for p in out["problems"]) == ["inactive_item", "unknown_item"]


def test_malformed_input_raises_invalid(database, patient, paracetamol):
    with pytest.raises(Invalid) as err:
        dispense(database, patient, [{"item_code": "PCM500T", "quantity": 0},
                                     {"item_code": "", "quantity": "x"}], ref=" ")
    assert set(err.value.fields) == {"prescription_ref", "lines.0.quantity", "lines.1.item_code", "lines.1.quantity"}
    with pytest.raises(NotFound):
        dispense(database, 999, [{"item_code": "PCM500T", "quantity": 1}])


# --- prescriptions -----------------------------------------------------------------------

def test_several_dispenses_never_exceed_the_prescribed_quantity(database, patient, paracetamol):
    first = dispense(database, patient, [{"item_code": "PCM500T", "quantity": 6, "prescription_item_id": 7,
                                          "prescribed_quantity": 10}], ref="RX-9")
    assert first["ok"]
    over = dispense(database, patient, [{"item_code": "PCM500T", "quantity": 5, "prescription_item_id": 7}], ref="RX-9")
    assert not over["ok"]
    (problem,) = over["problems"]
    assert problem["code"] == "exceeds_prescription" and problem["remaining"] == 4 and problem["prescribed"] == 10
    assert dispense(database, patient, [{"item_code": "PCM500T", "quantity": 4, "prescription_item_id": 7}],
                    ref="RX-9")["ok"]
    # A return frees the quantity again; another prescription is counted on its own.
    line_id = first["lines"][0]["dispense_line_id"]
    with database.transaction() as s:
        services.return_items(s, PHARMACIST, dispense_line_id=line_id, quantity=2, reason="Wrong strength bought")
    assert dispense(database, patient, [{"item_code": "PCM500T", "quantity": 2, "prescription_item_id": 7}],
                    ref="RX-9")["ok"]
    assert dispense(database, patient, [{"item_code": "PCM500T", "quantity": 3, "prescription_item_id": 7}],
                    ref="RX-10")["ok"]
    assert_ledger_agrees(database)


def test_first_dispense_fixes_the_prescribed_quantity_and_the_medicine(database, patient, paracetamol):
    make_items(database, "PCM500G", "IBU400T")
    stock(database, "PCM500G", ("G1", 300, 50, 200))
    stock(database, "IBU400T", ("I1", 300, 50, 700))
    assert dispense(database, patient, [{"item_code": "PCM500T", "quantity": 3, "prescription_item_id": 1}])["ok"]
    assert dispense(database, patient, [{"item_code": "PCM500G", "quantity": 1, "prescription_item_id": 1}]
                    )["problems"][0]["code"] == "exceeds_prescription"
    other = dispense(database, patient, [{"item_code": "IBU400T", "quantity": 1, "prescription_item_id": 1}])
    assert other["problems"][0]["code"] == "prescription_mismatch"
    changed = dispense(database, patient, [{"item_code": "PCM500T", "quantity": 1, "prescription_item_id": 1,
                                            "prescribed_quantity": 30}])
    assert changed["problems"][0]["code"] == "prescription_mismatch"
    # A generic substitute (same substance, form and strength) is allowed within the quantity.
    assert dispense(database, patient, [{"item_code": "PCM500G", "quantity": 2, "prescription_item_id": 2,
                                         "prescribed_quantity": 4}])["ok"]
    assert dispense(database, patient, [{"item_code": "PCM500T", "quantity": 2, "prescription_item_id": 2}])["ok"]


def test_a_refused_dispense_leaves_no_prescription_record(database, patient, paracetamol):
    refused = dispense(database, patient, [{"item_code": "PCM500T", "quantity": 500, "prescription_item_id": 3}])
    assert not refused["ok"]
    # The refused request did not fix the prescribed quantity at 500.
    assert dispense(database, patient, [{"item_code": "PCM500T", "quantity": 5, "prescription_item_id": 3}])["ok"]
    assert dispense(database, patient, [{"item_code": "PCM500T", "quantity": 1, "prescription_item_id": 3}]
                    )["problems"][0]["remaining"] == 0


# --- returns -----------------------------------------------------------------------------

def test_returns_go_back_into_the_same_batch_and_are_capped(database, patient, paracetamol):
    out = dispense(database, patient, [{"item_code": "PCM500T", "quantity": 8}])
    soon_line, late_line = out["lines"]
    with database.transaction() as s:
        result = services.return_items(s, PHARMACIST, dispense_line_id=late_line["dispense_line_id"], quantity=2,
                                       reason="Patient stopped the medicine")
    assert result["amount_paisa"] == 700 and result["return_id"]
    assert on_hand(database, paracetamol[2]) == 99
    with database.transaction() as s, pytest.raises(Conflict) as err:
        services.return_items(s, PHARMACIST, dispense_line_id=late_line["dispense_line_id"], quantity=2,
                              reason="again")
    assert err.value.code == "exceeds_dispensed" and err.value.fields["returnable"] == 1
    with database.transaction() as s:
        services.return_items(s, PHARMACIST, dispense_line_id=late_line["dispense_line_id"], quantity=1, reason="rest")
    with database.transaction() as s, pytest.raises(Invalid):
        services.return_items(s, PHARMACIST, dispense_line_id=soon_line["dispense_line_id"], quantity=1, reason=" ")
    with database.transaction() as s, pytest.raises(NotFound):
        services.return_items(s, PHARMACIST, dispense_line_id=9999, quantity=1, reason="x")
    with database.transaction() as s:
        movement = s.scalars(select(StockMovement).where(StockMovement.kind == "return")
                             .order_by(StockMovement.id)).first()
        assert movement.batch_id == paracetamol[2] and movement.reference.startswith("return:")
        record = services.get_dispense(s, PHARMACIST, out["dispense_id"])
        assert [ln["returned_quantity"] for ln in record["lines"]] == [0, 3]
    assert len(audit_rows(database, "inventory.return")) == 2
    assert_ledger_agrees(database)


# --- adjustments -------------------------------------------------------------------------

def test_adjustments_need_a_reason_and_never_go_below_zero(database, paracetamol):
    old, soon, late = paracetamol
    with database.transaction() as s, pytest.raises(Invalid) as err:
        services.adjust_stock(s, PHARMACIST, batch_id=late, quantity=-1, reason="")
    assert "reason" in err.value.fields
    with database.transaction() as s, pytest.raises(Invalid):
        services.adjust_stock(s, PHARMACIST, batch_id=late, quantity=-1, reason="lost in the post")
    with database.transaction() as s, pytest.raises(Invalid):
        services.adjust_stock(s, PHARMACIST, batch_id=late, quantity=3, reason="damaged")
    with database.transaction() as s, pytest.raises(Invalid):
        services.adjust_stock(s, PHARMACIST, batch_id=late, quantity=0, reason="count correction")
    with database.transaction() as s, pytest.raises(Conflict) as err:
        services.adjust_stock(s, PHARMACIST, batch_id=soon, quantity=-6, reason="count correction")
    assert err.value.code == "insufficient_stock" and err.value.fields["available"] == 5
    with database.transaction() as s, pytest.raises(Invalid):
        services.adjust_stock(s, PHARMACIST, batch_id=late, quantity=-1, reason="expired write-off")
    with database.transaction() as s:
        services.adjust_stock(s, PHARMACIST, batch_id=old, quantity=-20, reason="Expired write-off")
        services.adjust_stock(s, PHARMACIST, batch_id=soon, quantity=-2, reason="damaged", note="Crushed strip")
        services.adjust_stock(s, PHARMACIST, batch_id=late, quantity=4, reason="count_correction")
    assert [on_hand(database, b) for b in paracetamol] == [0, 3, 104]
    with database.transaction() as s:
        reasons = [m.reason for m in s.scalars(select(StockMovement).where(StockMovement.kind == "adjustment")
                                                .order_by(StockMovement.id))]
    assert reasons == ["expired_write_off", "damaged", "count_correction"]
    assert [r.detail["reason"] for r in audit_rows(database, "inventory.adjustment")] == reasons
    assert_ledger_agrees(database)


def test_the_database_refuses_negative_stock_even_without_the_service(database, paracetamol):
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        with database.transaction() as s:
            s.get(Batch, paracetamol[1]).quantity_on_hand = -1


# --- goods receipt -----------------------------------------------------------------------

def test_goods_receipt_validates_expiry_prices_and_items(database):
    make_items(database, "PCM500T")
    with database.transaction() as s:
        today = services.today_local(s)
        with pytest.raises(Invalid) as err:
            services.receive_goods(s, PHARMACIST, supplier="Muller & Phipps", invoice_no="MP-1", lines=[
                {"item_code": "PCM500T", "batch_no": "A1", "expiry": today, "quantity": 10,
                 "cost_price_paisa": 200, "sale_price_paisa": 0},
                {"item_code": "NOPE", "batch_no": "A2", "expiry": "2099-13-01", "quantity": 0,
                 "cost_price_paisa": -1, "sale_price_paisa": 300}])
    assert set(err.value.fields) == {"lines.0.expiry", "lines.0.sale_price_paisa", "lines.1.item_code",
                                     "lines.1.expiry", "lines.1.quantity", "lines.1.cost_price_paisa"}
    with database.transaction() as s:
        receipt = services.receive_goods(s, PHARMACIST, supplier="Muller & Phipps", invoice_no="MP-1", lines=[
            {"item_code": "pcm500t", "batch_no": "a1", "expiry": (today + timedelta(days=365)).isoformat(),
             "quantity": 10, "cost_price_paisa": 200, "sale_price_paisa": 300}])
        assert receipt.batches[0].batch_no == "A1" and receipt.total_cost_paisa == 2000
    with database.transaction() as s, pytest.raises(Conflict) as err:
        services.receive_goods(s, PHARMACIST, supplier="muller & phipps", invoice_no="mp-1", lines=[
            {"item_code": "PCM500T", "batch_no": "A3", "expiry": today + timedelta(days=30), "quantity": 1,
             "cost_price_paisa": 1, "sale_price_paisa": 1}])
    assert err.value.code == "duplicate_invoice"
    assert_ledger_agrees(database)


def test_items_are_validated_and_codes_unique(database):
    with database.transaction() as s, pytest.raises(Invalid) as err:
        services.create_item(s, PHARMACIST, {"code": "a b", "generic_name": "", "form": "pill", "unit": "box",
                                             "substance": None, "reorder_level": -1, "colour": "red"})
    assert set(err.value.fields) == {"code", "generic_name", "form", "unit", "substance", "reorder_level", "colour"}
    make_items(database, "AMC625T")
    with database.transaction() as s:
        item = services.get_item(s, "amc625t")
        assert item.substance == "amoxicillin + clavulanic acid" and item.drug_class == "penicillin"
        with pytest.raises(Conflict):
            services.create_item(s, PHARMACIST, {"code": "AMC625T", "generic_name": "X", "form": "tablet",
                                                 "unit": "tablet", "substance": "x"})


# --- allergies ---------------------------------------------------------------------------

def test_allergy_check_by_substance_and_by_class(database):
    make_items(database, "PCM500T", "AMX500C", "AMC625T", "IBU400T", "SXT960T", "CTX1GI")
    patient = make_patient(database, ("Penicillin", "severe"), ("NSAIDs", "moderate"), ("Paracetamol", "mild"),
                           ("Sulfa drugs", "severe"))
    with database.transaction() as s:
        alerts = services.check_allergies(s, patient, ["PCM500T", "AMX500C", "AMC625T", "IBU400T", "SXT960T",
                                                       "CTX1GI", "NOPE"])
    found = {(a["item_code"], a["allergy_substance"], a["match"]) for a in alerts}
    assert found == {("PCM500T", "Paracetamol", "substance"), ("AMX500C", "Penicillin", "class"),
                     ("AMC625T", "Penicillin", "class"), ("IBU400T", "NSAIDs", "class"),
                     ("SXT960T", "Sulfa drugs", "class")}
    amx = next(a for a in alerts if a["item_code"] == "AMX500C")
    assert amx == {"item_code": "AMX500C", "item_name": "Amoxicillin 500 mg capsule (Amoxil)",
                   "allergy_substance": "Penicillin", "reaction": "rash", "severity": "severe", "match": "class"}


def test_a_component_of_a_combination_matches_by_substance(database):
    make_items(database, "AMC625T", "SXT960T")
    patient = make_patient(database, ("amoxicillin", "severe"), ("Trimethoprim", "mild"))
    with database.transaction() as s:
        alerts = services.check_allergies(s, patient, ["AMC625T", "SXT960T"])
    assert {(a["item_code"], a["match"]) for a in alerts} == {("AMC625T", "substance"), ("SXT960T", "substance")}


def test_inactive_allergies_do_not_alert(database):
    from hms.patients.models import Allergy

    make_items(database, "AMX500C")
    patient = make_patient(database, ("penicillins", "severe"))
    with database.transaction() as s:
        assert len(services.check_allergies(s, patient, ["AMX500C"])) == 1
        s.scalar(select(Allergy).where(Allergy.patient_id == patient)).active = False
    with database.transaction() as s:
        assert services.check_allergies(s, patient, ["AMX500C"]) == []
        with pytest.raises(NotFound):
            services.check_allergies(s, 12345, ["AMX500C"])


def test_allergy_blocks_the_dispense_until_overridden_and_the_override_is_kept(database):
    make_items(database, "AMX500C", "PCM500T")
    stock(database, "AMX500C", ("AX1", 200, 30, 1800))
    stock(database, "PCM500T", ("PX1", 200, 30, 300))
    patient = make_patient(database, ("Penicillin", "severe"))
    lines = [{"item_code": "AMX500C", "quantity": 15}, {"item_code": "PCM500T", "quantity": 10}]
    refused = dispense(database, patient, lines)
    assert not refused["ok"]
    (problem,) = refused["problems"]
    assert problem["code"] == "allergy" and problem["item_code"] == "AMX500C"
    assert problem["alerts"][0]["match"] == "class"
    assert on_hand(database, 1) == 30 and audit_rows(database, "inventory.allergy_override") == []

    out = dispense(database, patient, lines,
                   allergy_override_reason="Consultant confirmed: previous reaction was viral rash")
    assert out["ok"] and len(out["lines"]) == 2
    with database.transaction() as s:
        record = s.get(Dispense, out["dispense_id"])
        assert record.allergy_override_reason == "Consultant confirmed: previous reaction was viral rash"
        assert record.allergy_alerts[0]["item_code"] == "AMX500C"
    (row,) = audit_rows(database, "inventory.allergy_override")
    assert row.patient_id == patient and row.entity_id == str(out["dispense_id"])
    assert row.detail["item_codes"] == ["AMX500C"] and row.detail["matches"] == ["class"]
    assert "Consultant" not in str(row.detail)  # no clinical text in the audit log
    with database.transaction() as s:
        assert verify(s).ok
    assert_ledger_agrees(database)


def test_an_override_without_alerts_is_not_stored(database, patient, paracetamol):
    out = dispense(database, patient, [{"item_code": "PCM500T", "quantity": 1}], allergy_override_reason="n/a")
    with database.transaction() as s:
        assert s.get(Dispense, out["dispense_id"]).allergy_override_reason is None
    assert audit_rows(database, "inventory.allergy_override") == []


def test_preview_shows_the_batches_without_writing(database, patient, paracetamol):
    with database.transaction() as s:
        preview = services.preview_dispense(s, patient, [{"item_code": "PCM500T", "quantity": 7}])
    assert [(b["batch_no"], b["quantity"]) for b in preview["lines"][0]["batches"]] == [("SOON1", 5), ("LATE1", 2)]
    assert preview["lines"][0]["available"] == 105 and preview["total_paisa"] == 5 * 300 + 2 * 350
    assert [on_hand(database, b) for b in paracetamol] == [20, 5, 100]


# --- demo --------------------------------------------------------------------------------

def test_demo_formulary_is_idempotent_and_fefo_skips_its_expired_batches(database):
    with database.transaction() as s:
        first = demo.load(s, PHARMACIST)
    with database.transaction() as s:
        again = demo.load(s, PHARMACIST)
        n = len(demo.FORMULARY)
        assert n >= 100
        assert first == [f"formulary: {n} items created, 0 already present",
                         f"opening stock: {n} items stocked ({s.scalar(select(Batch.id).order_by(Batch.id.desc()).limit(1))} batches), 0 already stocked"]
        assert again[0].startswith("formulary: 0 items created") and again[1].startswith("opening stock: 0 items")
        codes = set(s.scalars(select(Item.code)))
        assert {"PCM500T", "IBU400T", "AMX500C", "AMC625T", "AZI500T", "CIP500T", "MTZ400T", "OMP20C", "ESO40T",
                "MET500T", "GLM2T", "AML5T", "LOS50T", "ATV20T", "SAL100INH", "CET10T", "LOR10T", "ORS-SC",
                "ZNC20S", "FEF-C", "CAD-T", "CTX1GI", "DIC50T", "MEF250C", "SXT960T", "COA20T", "INS30V"} <= codes
        today = services.today_local(s)
        for item in s.scalars(select(Item)):
            batches = item.batches
            assert 2 <= len(batches) <= 3
            assert any(b.expiry_date < today for b in batches)
            assert any(today <= b.expiry_date <= today + timedelta(days=90) for b in batches)
            assert all(b.sale_price_paisa > 0 and b.cost_price_paisa > 0 for b in batches)
    patient = make_patient(database)
    out = dispense(database, patient, [{"item_code": "PCM500T", "quantity": 5}])
    with database.transaction() as s:
        used = s.get(Batch, s.scalar(select(DispenseLine.batch_id).where(DispenseLine.dispense_id == out["dispense_id"])))
        assert used.expiry_date >= services.today_local(s)
        assert used.batch_no.startswith("PCM5N")
    assert_ledger_agrees(database)
