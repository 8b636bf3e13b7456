"""Pharmacy rules that need no database: allergy matching (substance, class, plurals,
synonyms, combinations), first-expiry-first-out allocation, and wording."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from inventory import services
from inventory.models import Batch, Item
from inventory.services import _allocate, _match, allergy_key, batch_status, normalise_reason, units

TODAY = date(2025, 3, 1)


def item(code="AMX500C", generic="Amoxicillin", brand="Amoxil", substance="amoxicillin", drug_class="penicillin",
         form="capsule", strength="500 mg", unit="capsule", id=1) -> Item:
    return Item(id=id, code=code, generic_name=generic, brand=brand, substance=substance, drug_class=drug_class,
                form=form, strength=strength, unit=unit, active=True, reorder_level=0)


@pytest.mark.parametrize("text,key", [
    ("NSAIDs", "nsaid"), ("nsaid", "nsaid"), ("Penicillins", "penicillin"), ("PENICILLIN", "penicillin"),
    ("Penicillin antibiotics", "penicillin"), ("Sulfa drugs", "sulfonamide"), ("Sulpha", "sulfonamide"),
    ("Sulphonamides", "sulfonamide"), ("Cephalosporins", "cephalosporin"), ("Quinolones", "fluoroquinolone"),
    ("Beta-lactam antibiotics", "beta lactam"), ("Acetaminophen", "paracetamol"),
    ("Co-trimoxazole", "sulfamethoxazole + trimethoprim"), ("  Mefenamic   Acid ", "mefenamic acid"),
    ("ORS", "ors"), ("Non-steroidal anti-inflammatory drugs", "nsaid"), ("", ""),
])
def test_allergy_keys_ignore_case_plurals_and_group_words(text, key):
    assert allergy_key(text) == key


@pytest.mark.parametrize("allergy,the_item,expected", [
    ("Penicillin", item(), "class"),
    ("Amoxicillin", item(), "substance"),
    ("amoxil", item(), "substance"),  # recorded by brand
    ("NSAIDs", item("IBU400T", "Ibuprofen", "Brufen", "ibuprofen", "nsaid", "tablet", "400 mg", "tablet"), "class"),
    ("Brufen", item("IBU400T", "Ibuprofen", "Brufen", "ibuprofen", "nsaid", "tablet", "400 mg", "tablet"),
     "substance"),
    ("clavulanic acid", item("AMC625T", "Co-amoxiclav", "Augmentin", "amoxicillin + clavulanic acid"), "substance"),
    ("Co-amoxiclav", item("AMC625T", "Co-amoxiclav", "Augmentin", "amoxicillin + clavulanic acid"), "substance"),
    ("Septran DS", item("SXT960T", "Co-trimoxazole", "Septran DS", "sulfamethoxazole + trimethoprim",
                        "sulfonamide"), "substance"),
    ("sulfa", item("SXT960T", "Co-trimoxazole", "Septran DS", "sulfamethoxazole + trimethoprim", "sulfonamide"),
     "class"),
    ("co-trimoxazole", item("SXT960T", "Co-trimoxazole", "Septran DS", "sulfamethoxazole + trimethoprim",
                            "sulfonamide"), "substance"),
    ("Beta lactams", item("CTX1GI", "Ceftriaxone", "Oxidil", "ceftriaxone", "cephalosporin"), "class"),
    ("Penicillin", item("CTX1GI", "Ceftriaxone", "Oxidil", "ceftriaxone", "cephalosporin"), None),
    ("Aspirin", item("PCM500T", "Paracetamol", "Panadol", "paracetamol", "analgesic"), None),
    ("Dust", item(), None),
])
def test_matching_by_substance_and_class(allergy, the_item, expected):
    assert _match(allergy, the_item) == expected


def batch(id, expiry_days, qty, item_id=1, price=100) -> Batch:
    return Batch(id=id, item_id=item_id, batch_no=f"B{id}", expiry_date=TODAY + timedelta(days=expiry_days),
                 quantity_on_hand=qty, sale_price_paisa=price, cost_price_paisa=price)


def line(code, qty, index=0):
    return {"index": index, "item_code": code, "quantity": qty, "prescription_item_id": None,
            "prescribed_quantity": None}


def test_allocation_takes_the_earliest_expiry_first_whatever_the_ids():
    the_item = item()
    pool = {1: sorted([batch(3, 10, 4), batch(1, 400, 50), batch(2, 90, 5)],
                      key=lambda b: (b.expiry_date, b.id))}
    takes, problems, shortfalls = _allocate([line("AMX500C", 7)], {"AMX500C": the_item}, pool, partial=False)
    assert [(b.id, q) for _, b, q in takes] == [(3, 4), (2, 3)]
    assert problems == [] and shortfalls == []


def test_allocation_refuses_or_supplies_partially():
    the_item = item()
    pool = {1: [batch(1, 10, 4)]}
    _, problems, _ = _allocate([line("AMX500C", 6)], {"AMX500C": the_item}, pool, partial=False)
    assert problems[0]["code"] == "insufficient_stock" and problems[0]["available"] == 4
    assert "Only 4 capsules" in problems[0]["message"]
    takes, problems, shortfalls = _allocate([line("AMX500C", 6)], {"AMX500C": the_item}, pool, partial=True)
    assert [q for _, _, q in takes] == [4] and problems == []
    assert shortfalls == [{"item_code": "AMX500C", "requested": 6, "dispensed": 4, "line": 0}]


def test_batch_status():
    assert batch_status(batch(1, -1, 5), TODAY) == "expired"
    assert batch_status(batch(1, 0, 5), TODAY) == "near_expiry"
    assert batch_status(batch(1, 90, 5), TODAY) == "near_expiry"
    assert batch_status(batch(1, 91, 5), TODAY) == "ok"
    assert batch_status(batch(1, 91, 0), TODAY) == "empty"


def test_wording():
    assert units(1, "tablet") == "1 tablet" and units(3, "tablet") == "3 tablets"
    assert units(5, "ml") == "5 ml" and units(2, "suppository") == "2 suppositories"
    assert normalise_reason("Expired write-off") == "expired_write_off"
    assert normalise_reason("count  correction") == "count_correction"
    assert item().display_name == "Amoxicillin 500 mg capsule (Amoxil)"
    assert services.normalise_code(" pcm500t ") == "PCM500T"
