"""Helpers shared by the inventory tests (no tests here): a patient with allergies, items,
batches at chosen expiry dates, and the ledger invariant."""

from __future__ import annotations

from datetime import timedelta
from itertools import count

from sqlalchemy import func, select

from hms.audit import Actor
from hms.patients.services import register_patient
from inventory import services
from inventory.models import Batch, StockMovement

PHARMACIST = Actor(user_id=None, username="pharmacist-test", roles=frozenset({"pharmacist"}))
_cnic = count(1)
_invoice = count(1)

ITEMS = {
    "PCM500T": dict(generic_name="Paracetamol", brand="Panadol", form="tablet", strength="500 mg", unit="tablet",
                    substance="paracetamol", drug_class="analgesic"),
    "AMX500C": dict(generic_name="Amoxicillin", brand="Amoxil", form="capsule", strength="500 mg", unit="capsule",
                    substance="amoxicillin", drug_class="penicillin"),
    "AMC625T": dict(generic_name="Co-amoxiclav", brand="Augmentin", form="tablet", strength="625 mg", unit="tablet",
                    substance="amoxicillin + clavulanic acid", drug_class="penicillin"),
    "IBU400T": dict(generic_name="Ibuprofen", brand="Brufen", form="tablet", strength="400 mg", unit="tablet",
                    substance="ibuprofen", drug_class="nsaid"),
    "SXT960T": dict(generic_name="Co-trimoxazole", brand="Septran DS", form="tablet", strength="960 mg",
                    unit="tablet", substance="sulfamethoxazole + trimethoprim", drug_class="sulfonamide"),
    "CTX1GI": dict(generic_name="Ceftriaxone", brand="Oxidil", form="injection", strength="1 g", unit="vial",
                   substance="ceftriaxone", drug_class="cephalosporin"),
    "PCM500G": dict(generic_name="Paracetamol", brand=None, form="tablet", strength="500 mg", unit="tablet",
                    substance="paracetamol", drug_class="analgesic"),
}


def make_patient(database, *allergies: tuple[str, str]) -> int:
    """A registered patient; allergies as (substance, severity)."""
    n = next(_cnic)
    data = {"name": f"Test Patient {n}", "sex": "female", "date_of_birth": "1990-01-01",
            "cnic": f"35202-{n:07d}-2", "mobile": None,
            "allergies": [{"substance": s, "reaction": "rash", "severity": sev} for s, sev in allergies]}
    with database.transaction() as s:
        return register_patient(s, Actor.system("test"), {k: v for k, v in data.items() if v is not None},
                                confirm_duplicate=True).id


def make_items(database, *codes: str) -> None:
    with database.transaction() as s:
        for code in codes:
            services.create_item(s, PHARMACIST, {"code": code, **ITEMS[code], "reorder_level": 10})


def stock(database, code: str, *batches: tuple[str, int, int, int]) -> list[int]:
    """Batches (batch_no, expiry in days from today, quantity, sale price paisa) of an item;
    past expiries go in as an opening balance. Returns the batch ids in the order given."""
    with database.transaction() as s:
        today = services.today_local(s)
        lines = [{"item_code": code, "batch_no": no, "expiry": today + timedelta(days=days), "quantity": qty,
                  "cost_price_paisa": max(price * 8 // 10, 1), "sale_price_paisa": price}
                 for no, days, qty, price in batches]
        receipt = services.receive_goods(s, PHARMACIST, supplier="Test supplier", invoice_no=f"INV-{next(_invoice)}",
                                         lines=lines, opening_balance=any(days <= 0 for _, days, _, _ in batches))
        by_no = {b.batch_no: b.id for b in receipt.batches}
        return [by_no[no.upper()] for no, *_ in batches]


def on_hand(database, batch_id: int) -> int:
    with database.transaction() as s:
        return s.get(Batch, batch_id).quantity_on_hand


def assert_ledger_agrees(database) -> None:
    """Every batch: ledger sum == quantity on hand, and the last balance_after equals it."""
    with database.transaction() as s:
        assert services.ledger_mismatches(s) == []
        for batch in s.scalars(select(Batch)):
            assert batch.quantity_on_hand >= 0
            last = s.scalar(select(StockMovement.balance_after).where(StockMovement.batch_id == batch.id)
                            .order_by(StockMovement.id.desc()).limit(1))
            assert last == batch.quantity_on_hand, batch.batch_no
            total = s.scalar(select(func.sum(StockMovement.quantity)).where(StockMovement.batch_id == batch.id))
            assert total == batch.quantity_on_hand


def dispense(database, patient_id, lines, ref="RX-1", **kwargs):
    with database.transaction() as s:
        return services.dispense(s, PHARMACIST, patient_id=patient_id, prescription_ref=ref, lines=lines, **kwargs)
