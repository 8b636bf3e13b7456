"""Money without a database: rupees to paisa exactly (never through a float), display in
PKR, the consultation code order, charge field checks, the payment_check form and the
demo tariff data."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from marshmallow import ValidationError

from finance import demo
from finance.schemas import ChargeLineParams, PaymentIn, paisa_to_rupees_text, rupees_to_paisa
from finance.services import charge_request, consultation_codes, format_money
from hms.errors import Invalid
from hms.forms import load_form, validate, validate_definition

FORMS = Path(__file__).resolve().parents[2] / "forms"


@pytest.mark.parametrize("value,paisa", [
    (1500, 150000), ("1500", 150000), ("1500.50", 150050), ("1500.5", 150050), (Decimal("1500.50"), 150050),
    (Decimal("0.01"), 1), ("1,500.00", 150000), (Decimal("1500.500"), 150050), (Decimal("1E+3"), 100000),
])
def test_rupees_convert_exactly_to_paisa(value, paisa):
    assert rupees_to_paisa(value) == paisa


@pytest.mark.parametrize("value", [
    Decimal("1500.505"), "1500.505", "0.001", 1500.5, True, "", "abc", "-5", 0, "0.00", Decimal("-1"),
    Decimal("NaN"), Decimal("Infinity"), "1e3", None, [1], Decimal("1e11"),
])
def test_rupees_with_fractions_of_paisa_or_not_numbers_are_refused(value):
    with pytest.raises(ValidationError):
        rupees_to_paisa(value)


def test_payment_input_takes_rupees_or_paisa_but_not_both():
    assert PaymentIn().load({"amount": Decimal("12.34"), "method": "cash"})["amount"] == 1234
    assert PaymentIn().load({"amount_paisa": 1234, "method": "cash"})["amount_paisa"] == 1234
    for body in ({"method": "cash"}, {"amount": 1, "amount_paisa": 100, "method": "cash"},
                 {"amount_paisa": 12.5, "method": "cash"}, {"amount_paisa": True, "method": "cash"},
                 {"amount_paisa": "1234", "method": "cash"}, {"amount": 10, "method": "cheque"}):
        with pytest.raises(ValidationError):
            PaymentIn().load(body)


def test_money_is_shown_in_pkr_with_thousands_separators():
    assert format_money(123456789) == "PKR 1,234,567.89"
    assert format_money(5) == "PKR 0.05"
    assert format_money(-150000) == "-PKR 1,500.00"
    assert paisa_to_rupees_text(150050) == "1500.50"


def test_consultation_codes_go_doctor_then_department_then_default():
    assert consultation_codes("gm", 7) == ["CONSULT-DOC-7", "CONSULT-GM", "CONSULT-DEFAULT"]
    assert consultation_codes("PAED") == ["CONSULT-PAED", "CONSULT-DEFAULT"]
    assert consultation_codes("DEFAULT") == ["CONSULT-DEFAULT"]


def test_a_charge_is_priced_by_tariff_or_by_unit_price_never_both():
    req = charge_request(source_ref="dispense_line:5", kind="medicine", description="Paracetamol 500 mg",
                         quantity=10, unit_price_paisa=250)
    assert (req.tariff_code, req.unit_price_paisa, req.quantity) == (None, 250, 10)
    assert charge_request(source_ref="lab_order_item:1", kind="lab", description="CBC", tariff_code="lab-cbc"
                          ).tariff_code == "LAB-CBC"
    bad = [dict(tariff_code="LAB-CBC", unit_price_paisa=100), dict(),
           dict(unit_price_paisa=-1), dict(unit_price_paisa=1.5), dict(unit_price_paisa=10, quantity=0),
           dict(unit_price_paisa=10, source_ref="no-colon"), dict(unit_price_paisa=10, source_ref="x:1:reversal"),
           dict(unit_price_paisa=10, kind="bed-sheet"), dict(unit_price_paisa=10, description="  ")]
    for overrides in bad:
        fields = dict(source_ref="lab_order_item:1", kind="lab", description="CBC", quantity=1)
        fields.update(overrides)
        with pytest.raises(Invalid):
            charge_request(**fields)


def test_operation_charge_line_schema_requires_a_price_source():
    with pytest.raises(ValidationError) as err:
        ChargeLineParams().load({"source_ref": "dispense_line:1", "kind": "medicine", "description": "ORS",
                                 "quantity": 2})
    assert "unit_price_paisa" in err.value.messages


def test_payment_check_form_is_a_valid_definition():
    raw = json.loads((FORMS / "payment_check.json").read_text())
    assert validate_definition(raw, "payment_check") == []
    form = load_form(FORMS / "payment_check.json")
    assert form.schema["properties"]["payment_taken"]["title"] == "Payment taken at the counter"
    assert validate(form, {"payment_taken": True, "note": "Paid by brother"})["payment_taken"] is True
    with pytest.raises(Invalid) as err:
        validate(form, {"note": "x"})
    assert "payment_taken" in err.value.fields


def test_demo_tariffs_are_realistic_and_unique():
    rows = demo.tariff_rows()
    codes = [code for code, *_ in rows]
    assert len(codes) == len(set(codes))
    prices = {code: paisa for code, _kind, _text, paisa in rows}
    assert prices["CONSULT-GM"] == 150000 and prices["CONSULT-GYN"] == 200000 and prices["CONSULT-DEFAULT"] == 100000
    assert prices["LAB-CBC"] == 80000 and prices["LAB-HBA1C"] == 220000 and prices["PROC-SUTURING"] == 150000
    assert sum(1 for code in codes if code.startswith("LAB-")) >= 40
    for code, rupees in demo.PANEL_PRICES:
        assert code in prices and 0.85 * prices[code] <= rupees * 100 < prices[code]
