"""A whole inpatient stay through the API, each role driving its own part: admission with a
panel payer and a deposit, a transfer, medicines issued to the ward, a missed dose that
escalates to the charge nurse, a procedure, accrual of bed-days, the discharge summary, the
nursing gate refusing while a pharmacy issue is unaccepted, a pharmacy return credited, a
discount that needs the finance manager, the panel split, closing, a reversal after close,
the gate pass and the bed cleaned. And the refusals along the way."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from hms import settings
from hms.audit import Actor
from hms.db import utcnow
from hms.workflow import timers
from tests.conftest import login

SYSTEM = Actor.system("test")


@pytest.fixture
def hospital(clinic, app, database, make_user):
    from wards.models import Bed, Ward

    gm = clinic["department_id"]
    with database.transaction() as s:
        mw = Ward(code="MW", name="Medical Ward", department_id=gm, ward_type="general", gender="mixed")
        pvt = Ward(code="PVT", name="Private Rooms", department_id=gm, ward_type="private", gender="mixed")
        s.add_all([mw, pvt])
        s.flush()
        s.add_all([Bed(ward_id=mw.id, label="M1"), Bed(ward_id=mw.id, label="M2"), Bed(ward_id=pvt.id, label="P1")])
        s.flush()
        ids = {"mw": mw.id, "pvt": pvt.id}
        beds = {b.label: b.id for b in s.execute(select(Bed)).scalars()}
    users = {"nurse_mw": (("nurse",), [ids["mw"]]), "nurse_pvt": (("nurse",), [ids["pvt"]]),
             "charge_pvt": (("nurse", "charge_nurse"), [ids["pvt"]]), "finman": (("finance_manager",), []),
             "cleaner": (("housekeeping",), [ids["mw"], ids["pvt"]])}
    for name, (roles, wards) in users.items():
        make_user(name, *roles, ward_ids=wards)
        client = app.test_client()
        login(client, name)
        clinic[name] = client
    clinic.update(wards=ids, beds=beds)
    return clinic


def tasks(client, **filters):
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    return client.get(f"/api/v1/tasks?{query}").get_json()["items"]


def task(client, name, instance_id=None):
    """The one open task of that name the user sees (in the queue or assigned to them)."""
    found = [t for t in tasks(client, status="all") if t["status"] in ("open", "claimed") and t["task"] == name and (instance_id is None or t["instance_id"] == instance_id)]
    assert len(found) == 1, (name, [(t["task"], t["instance_id"]) for t in tasks(client)])
    return found[0]


def no_task(client, name):
    assert [t for t in tasks(client, status="all") if t["task"] == name and t["status"] in ("open", "claimed")] == []


def complete(client, item, data, expect=200):
    resp = client.post(f"/api/v1/tasks/{item['id']}/complete", json={"data": data})
    assert resp.status_code == expect, resp.get_json()
    return resp.get_json()


def context(client, item) -> dict:
    return client.get(f"/api/v1/tasks/{item['id']}").get_json()["values"].get("_context", {})


def bill_for(client, admission_id):
    items = client.get(f"/api/v1/bills?admission_id={admission_id}").get_json()["items"]
    assert len(items) == 1
    return client.get(f"/api/v1/bills/{items[0]['id']}").get_json()


def post(client, url, body=None, expect=(200, 201), headers=None):
    resp = client.post(url, json=body or {}, headers=headers or {})
    assert resp.status_code in ((expect,) if isinstance(expect, int) else expect), (url, resp.get_json())
    return resp.get_json()


def admission(client, admission_id):
    return client.get(f"/api/v1/admissions/{admission_id}").get_json()


def issue_and_accept(h, admission_id, code, quantity, accept=True):
    """The doctor orders a medicine; pharmacy issues it to the ward; the ward accepts it."""
    order = post(h["doc"], f"/api/v1/admissions/{admission_id}/orders",
                 {"kind": "medication", "item_code": code, "dose": "1 unit", "route": "iv", "every_hours": 8,
                  "issue_quantity": quantity}, expect=201)
    issue = task(h["pharm"], "issue", order["instance_id"])
    complete(h["pharm"], issue, {"lines": [{"item_code": code, "quantity": quantity}]})
    receive = task(h["nurse_pvt"], "receive", order["instance_id"])
    if accept:
        complete(h["nurse_pvt"], receive, {"received": True})
    return order, receive


def test_a_whole_stay(hospital, patient, database):
    h = hospital
    # --- admission: the doctor orders it, the desk records the panel payer and the deposit
    created = post(h["doc"], "/api/v1/admissions", {"patient_id": patient["id"], "department_id": h["department_id"],
                                                    "ward_id": h["wards"]["mw"], "reason": "Pneumonia"}, expect=201)
    aid = created["id"]
    assert created["instance_id"] and created["admission_no"].startswith("ADM-")
    # One active admission per patient.
    again = h["doc"].post("/api/v1/admissions", json={"patient_id": patient["id"], "department_id": h["department_id"]})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_admitted"

    desk = task(h["rec"], "desk")
    # A Sehat Card without its verification number is refused with a message; the desk task comes back.
    complete(h["rec"], desk, {"payer_class": "sehat", "member_no": "35202-1234567-1", "deposit_method": "cash"})
    desk = task(h["rec"], "desk")
    assert context(h["rec"], desk)["payer_result"]["ok"] is False
    complete(h["rec"], desk, {"payer_class": "panel-ptcl", "coverage_limit_rupees": 5000, "deposit_rupees": 5000,
                              "deposit_method": "cash"})
    bill = bill_for(h["cash"], aid)
    assert bill["payer_class"] == "panel-ptcl" and bill["totals"]["deposits_paisa"] == 500_000

    # The bed was found and reserved: a second reservation of it is refused.
    m1 = h["beds"]["M1"]
    assert admission(h["nurse_mw"], aid)["bed"]["id"] == m1
    refused = h["rec"].post(f"/api/v1/beds/{m1}/reserve", json={"admission_id": aid, "patient_id": patient["id"]})
    assert refused.status_code == 409

    # Only the Medical Ward's nurse sees the patient coming.
    no_task(h["nurse_pvt"], "receive")
    complete(h["nurse_mw"], task(h["nurse_mw"], "receive"), {"arrived": True})
    complete(h["nurse_mw"], task(h["nurse_mw"], "assess"),
             {"presenting_problem": "Cough and fever", "fall_risk": "low", "pressure_risk": "low",
              "mobility": "independent"})
    assert admission(h["doc"], aid)["state"] == "admitted"

    # --- transfer to a private room: the receiving ward accepts, the old bed is cleaned
    moved = post(h["doc"], f"/api/v1/admissions/{aid}/transfers",
                 {"to_ward_id": h["wards"]["pvt"], "reason": "Family asked for a private room"}, expect=201)
    no_task(h["nurse_mw"], "decide")
    complete(h["nurse_pvt"], task(h["nurse_pvt"], "decide", moved["instance_id"]), {"accept": True,
                                                                                   "bed_id": h["beds"]["P1"]})
    detail = admission(h["doc"], aid)
    assert detail["bed"]["id"] == h["beds"]["P1"] and detail["ward"]["id"] == h["wards"]["pvt"]
    complete(h["cleaner"], task(h["cleaner"], "clean", moved["instance_id"]), {"cleaned": True})
    board = h["nurse_mw"].get(f"/api/v1/wards?ward_id={h['wards']['mw']}").get_json()["items"][0]
    assert {b["label"]: b["state"] for b in board["beds"]}["M1"] == "free"

    # --- medicines: pharmacy issues, the ward accepts; a dose not recorded in time is missed
    with database.transaction() as s:
        settings.set_value(s, SYSTEM, "wards.dose_grace_minutes", 0)
    order, _ = issue_and_accept(h, aid, "PCM1GIV", 3)
    from journeys import inpatient
    from wards.nursing_models import DoseSlot

    with database.transaction() as s:
        assert inpatient.schedule_nursing(s, utcnow())["doses"] == 1
    timers.tick(database, utcnow() + timedelta(minutes=1))
    with database.transaction(readonly=True) as s:
        slot = s.execute(select(DoseSlot).where(DoseSlot.order_id == order["order_id"])).scalar_one()
        assert slot.status == "missed"
    no_task(h["nurse_mw"], "review")
    review = task(h["charge_pvt"], "review")
    # The dose cannot be recorded any more: it is reviewed instead.
    late = h["nurse_pvt"].post(f"/api/v1/medication-slots/{slot.id}", json={"status": "given"})
    assert late.status_code == 409
    complete(h["charge_pvt"], review, {"note": "Given at 14:40 after the doctor's review."})

    # --- a procedure, charged from the tariff
    proc = post(h["doc"], f"/api/v1/admissions/{aid}/orders", {"kind": "procedure", "code": "PROC-IV-CANNULA"},
                expect=201)
    assert proc["amount_paisa"] > 0

    # --- accrual of completed bed-days: twice adds nothing
    with database.transaction() as s:
        first = inpatient.accrue(s, utcnow() + timedelta(days=2, hours=1))
    with database.transaction() as s:
        second = inpatient.accrue(s, utcnow() + timedelta(days=2, hours=1))
    assert first["charges_posted"] >= 2 and second["charges_posted"] == 0

    # --- a second medicine is issued but not yet accepted on the ward
    _, unaccepted = issue_and_accept(h, aid, "DIC75I", 2, accept=False)

    # --- discharge: summary, then the nursing gate refuses while the issue is unaccepted
    started = post(h["doc"], f"/api/v1/admissions/{aid}/discharge", expect=201)
    again = h["doc"].post(f"/api/v1/admissions/{aid}/discharge")
    assert again.status_code == 409
    complete(h["doc"], task(h["doc"], "write_summary"),
             {"diagnoses": [{"code": "J18.9", "text": "Pneumonia"}], "condition": "improved",
              "discharge_medicines": [{"name": "Amoxicillin", "dose": "500 mg", "frequency": "TDS", "days": 5}],
              "follow_up": "OPD in one week"})
    nursing = task(h["nurse_pvt"], "nursing", started["instance_id"])
    on_hand = context(h["nurse_pvt"], nursing)["on_hand"]["lines"]
    pcm_line = next(line for line in on_hand if line["item_code"] == "PCM1GIV")
    returns = [{"dispense_line_id": pcm_line["dispense_line_id"], "quantity": 1, "reason": "Not used"}]
    complete(h["nurse_pvt"], nursing, {"returns": returns, "cannula_removed": True, "belongings_returned": True})
    nursing = task(h["nurse_pvt"], "nursing", started["instance_id"])
    blockers = context(h["nurse_pvt"], nursing)["gate"]["blockers"]
    assert [b["kind"] for b in blockers] == ["issue_unaccepted"]
    complete(h["nurse_pvt"], unaccepted, {"received": True})
    complete(h["nurse_pvt"], nursing, {"returns": returns, "cannula_removed": True, "belongings_returned": True})
    # After the gate the orders are frozen.
    frozen = h["doc"].post(f"/api/v1/admissions/{aid}/orders", json={"kind": "diet", "description": "Soft"})
    assert frozen.status_code == 409 and frozen.get_json()["error"]["code"] == "orders_frozen"

    # --- pharmacy receives the return; the bill is credited
    before = bill_for(h["cash"], aid)["totals"]["gross_paisa"]
    returns_task = task(h["pharm"], "receive_returns", started["instance_id"])
    pending = context(h["pharm"], returns_task)["pending"]["returns"]
    complete(h["pharm"], returns_task, {"lines": [{"ward_return_id": pending[0]["ward_return_id"], "received_quantity": 1}]})
    bill = bill_for(h["cash"], aid)
    assert bill["totals"]["gross_paisa"] < before  # the return's credit (bed-days were added too, see below)
    credits = [c for c in bill["lines"] if c["source_ref"].startswith("pharmacy_return:")]
    assert len(credits) == 1 and credits[0]["amount_paisa"] < 0

    # --- finance: a discount above the limit waits for the finance manager
    bid = bill["id"]
    discount = post(h["cash"], f"/api/v1/bills/{bid}/discounts",
                    {"amount_paisa": 600_000, "reason": "Hardship (social welfare)"}, expect=201)
    assert discount["status"] == "pending"
    refused = h["cash"].post(f"/api/v1/bills/{bid}/close")
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "discount_pending"
    assert h["cash"].post(f"/api/v1/discounts/{discount['id']}/approve", json={}).status_code == 403
    post(h["finman"], f"/api/v1/discounts/{discount['id']}/approve", {"note": "Approved by MS"})

    totals = bill_for(h["cash"], aid)["totals"]
    assert totals["payer_share_paisa"] == min(totals["net_paisa"], 500_000)
    assert totals["payer_share_paisa"] + totals["patient_share_paisa"] == totals["net_paisa"]
    balance = totals["patient_balance_paisa"]
    assert balance > 0  # the panel covers Rs 5,000 and the deposit was Rs 5,000: the rest is the patient's
    if balance > 0:
        post(h["cash"], f"/api/v1/bills/{bid}/payments", {"amount_paisa": balance, "method": "cash"},
             headers={"Idempotency-Key": str(uuid.uuid4())})
    elif balance < 0:
        post(h["cash"], f"/api/v1/bills/{bid}/payments", {"amount_paisa": -balance, "method": "cash",
                                                          "kind": "refund", "reason": "Deposit above the bill"},
             headers={"Idempotency-Key": str(uuid.uuid4())})
    post(h["cash"], f"/api/v1/bills/{bid}/close")
    closed = bill_for(h["cash"], aid)
    assert closed["status"] == "closed" and closed["totals"]["patient_balance_paisa"] == 0

    # A closed bill takes nothing more.
    for url, body in ((f"/api/v1/bills/{bid}/payments", {"amount_paisa": 100, "method": "cash"}),
                      (f"/api/v1/bills/{bid}/discounts", {"amount_paisa": 100, "reason": "late"})):
        resp = h["cash"].post(url, json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
        assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "bill_not_open", url

    # --- the cashier confirms; the gate pass is issued; the bed is cleaned and free
    complete(h["cash"], task(h["cash"], "close", started["instance_id"]), {"bill_closed": True})
    leaving = task(h["nurse_pvt"], "see_off", started["instance_id"])
    assert context(h["nurse_pvt"], leaving)["gate_pass"]["gate_pass_no"]
    complete(h["nurse_pvt"], leaving, {"gate_pass_checked": True})
    assert admission(h["doc"], aid)["state"] == "discharged"
    complete(h["cleaner"], task(h["cleaner"], "clean", started["instance_id"]), {"cleaned": True})
    board = h["nurse_pvt"].get(f"/api/v1/wards?ward_id={h['wards']['pvt']}").get_json()["items"][0]
    assert {b["label"]: b["state"] for b in board["beds"]}["P1"] == "free"
    gate = post(h["cash"], f"/api/v1/bills/{bid}/gate-pass")
    assert gate["gate_pass_no"]

    # --- a correction after closing: a credit note and a new bill version
    procedure = next(c for c in closed["lines"] if c["source_ref"] == f"ward_order:{proc['order_id']}")
    assert h["cash"].post(f"/api/v1/bills/{bid}/reversals",
                          json={"charge_id": procedure["id"], "reason": "Not done"}).status_code == 403
    post(h["finman"], f"/api/v1/bills/{bid}/reversals", {"charge_id": procedure["id"], "reason": "Cannula not inserted"})
    after = bill_for(h["finman"], aid)
    assert [v["version_no"] for v in after["versions"]] == [1, 2]
    assert after["credit_notes"][0]["amount_paisa"] == procedure["amount_paisa"]
    assert after["totals"]["credit_notes_paisa"] == procedure["amount_paisa"]


def test_withdrawn_transfer_and_stopped_medicine_leave_no_task_behind(hospital, patient, database):
    """A cancelled transfer takes the receiving ward's task away; a stopped medicine takes
    its future doses off the ward's queue."""
    from journeys import inpatient

    h = hospital
    aid = post(h["doc"], "/api/v1/admissions", {"patient_id": patient["id"], "department_id": h["department_id"],
                                                "ward_id": h["wards"]["mw"]}, expect=201)["id"]
    complete(h["rec"], task(h["rec"], "desk"), {"payer_class": "cash", "deposit_method": "cash"})
    complete(h["nurse_mw"], task(h["nurse_mw"], "receive"), {"arrived": True})

    moved = post(h["doc"], f"/api/v1/admissions/{aid}/transfers",
                 {"to_ward_id": h["wards"]["pvt"], "reason": "Isolation"}, expect=201)
    task(h["nurse_pvt"], "decide", moved["instance_id"])
    post(h["doc"], f"/api/v1/transfers/{moved['id']}/cancel", {"reason": "Isolation not needed"})
    no_task(h["nurse_pvt"], "decide")

    order = post(h["doc"], f"/api/v1/admissions/{aid}/orders",
                 {"kind": "medication", "item_code": "PCM1GIV", "dose": "1 g", "route": "iv", "every_hours": 8,
                  "issue_quantity": 3, "first_due_at": (utcnow() + timedelta(minutes=30)).isoformat()}, expect=201)
    with database.transaction() as s:
        assert inpatient.schedule_nursing(s, utcnow())["doses"] == 1
    task(h["nurse_mw"], "do")
    post(h["doc"], f"/api/v1/medication-orders/{order['order_id']}/stop", {"reason": "Fever settled"})
    no_task(h["nurse_mw"], "do")


def test_lab_tests_ordered_on_the_ward_are_charged_and_hold_the_discharge(hospital, patient):
    h = hospital
    aid = post(h["doc"], "/api/v1/admissions", {"patient_id": patient["id"], "department_id": h["department_id"],
                                                "ward_id": h["wards"]["mw"]}, expect=201)["id"]
    complete(h["rec"], task(h["rec"], "desk"), {"payer_class": "cash", "deposit_method": "cash"})
    complete(h["nurse_mw"], task(h["nurse_mw"], "receive"), {"arrived": True})
    post(h["doc"], f"/api/v1/admissions/{aid}/orders", {"kind": "diet", "description": "Soft diet"}, expect=201)
    lab = post(h["doc"], f"/api/v1/admissions/{aid}/orders", {"kind": "lab", "test_codes": ["CBC"]}, expect=201)
    task(h["lab"], "collect", lab["instance_id"])  # the lab's own pathway has started
    bill = bill_for(h["cash"], aid)
    assert [line["kind"] for line in bill["lines"]] == ["lab"]
    orders = admission(h["doc"], aid)["orders"]
    assert sorted(o["kind"] for o in orders) == ["diet", "lab"]

    started = post(h["doc"], f"/api/v1/admissions/{aid}/discharge", expect=201)
    complete(h["doc"], task(h["doc"], "write_summary"),
             {"diagnoses": [{"text": "Anaemia"}], "condition": "improved"})
    nursing = task(h["nurse_mw"], "nursing", started["instance_id"])
    complete(h["nurse_mw"], nursing, {"returns": []})
    blockers = context(h["nurse_mw"], task(h["nurse_mw"], "nursing", started["instance_id"]))["gate"]["blockers"]
    assert [b["kind"] for b in blockers] == ["lab_pending"] and lab["order_no"] in blockers[0]["text"]
