"""Ward issues through the API and the pharmacy's returns page: the nurse accepts an
issue and sends unused medicines back, the pharmacist counts them; refusals come back as
JSON errors with stable codes, and the page shows an empty state and a receive form."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import select

from hms.audit import AuditLog
from inventory import services
from inventory.models import WardReturn
from tests.integration.test_inventory_support import PHARMACIST, make_items, make_patient, on_hand, stock

ADMISSION = 7
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def issued(database):
    """Admission 7 issued 3 vials of ceftriaxone (500 paisa each) and 10 paracetamol."""
    make_items(database, "CTX1GI", "PCM500T")
    (ctx_batch,) = stock(database, "CTX1GI", ("C1", 300, 20, 500))
    stock(database, "PCM500T", ("P1", 300, 100, 300))
    patient = make_patient(database)
    with database.transaction() as s:
        out = services.dispense(s, PHARMACIST, patient_id=patient, admission_id=ADMISSION,
                                prescription_ref=f"admission:{ADMISSION}:medorder:1",
                                lines=[{"item_code": "CTX1GI", "quantity": 3}, {"item_code": "PCM500T", "quantity": 10}])
    assert out["ok"]
    return {"dispense_id": out["dispense_id"], "ctx_line": out["lines"][0]["dispense_line_id"],
            "pcm_line": out["lines"][1]["dispense_line_id"], "ctx_batch": ctx_batch, "patient": patient}


@pytest.fixture
def nurse(as_role):
    return as_role("nurse")


@pytest.fixture
def pharmacist(as_role):
    return as_role("pharmacist")


def error(resp) -> dict:
    return resp.get_json()["error"]


def test_the_ward_accepts_an_issue_and_sees_it_accepted(nurse, pharmacist, issued):
    url = f"/api/v1/pharmacy/issues/{issued['dispense_id']}/accept"
    before = nurse.get(f"/api/v1/admissions/{ADMISSION}/pharmacy").get_json()
    assert [i["accepted"] for i in before["issues"]] == [False] and before["on_hand"] == []
    assert pharmacist.post(url).status_code == 403
    resp = nurse.post(url)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["ok"] is True and resp.get_json()["accepted_by"].startswith("u_nurse")
    again = nurse.post(url)
    assert again.status_code == 409 and error(again)["code"] == "already_accepted"
    assert nurse.post("/api/v1/pharmacy/issues/999999/accept").status_code == 404
    view = pharmacist.get(f"/api/v1/admissions/{ADMISSION}/pharmacy").get_json()
    (issue,) = view["issues"]
    assert issue["accepted"] is True and issue["issue_no"] == f"D-{issued['dispense_id']:06d}"
    assert [(ln["item_code"], ln["quantity"]) for ln in issue["lines"]] == [("CTX1GI", 3), ("PCM500T", 10)]
    assert [(r["item_code"], r["on_hand"]) for r in view["on_hand"]] == [("CTX1GI", 3), ("PCM500T", 10)]


def test_a_charge_nurse_may_accept(as_role, issued):
    resp = as_role("charge_nurse").post(f"/api/v1/pharmacy/issues/{issued['dispense_id']}/accept")
    assert resp.status_code == 200, resp.get_json()


def test_returns_are_sent_within_what_the_ward_holds_and_counted_by_pharmacy(nurse, pharmacist, issued, database):
    body = {"admission_id": ADMISSION, "dispense_line_id": issued["ctx_line"], "quantity": 2, "reason": "Stopped"}
    early = nurse.post("/api/v1/pharmacy/returns", json=body)
    assert early.status_code == 409 and error(early)["code"] == "not_accepted"
    nurse.post(f"/api/v1/pharmacy/issues/{issued['dispense_id']}/accept")
    sent = nurse.post("/api/v1/pharmacy/returns", json=body)
    assert sent.status_code == 201, sent.get_json()
    return_id = sent.get_json()["ward_return_id"]
    assert sent.get_json()["state"] == "sent"
    too_many = nurse.post("/api/v1/pharmacy/returns", json={**body, "quantity": 2})
    assert too_many.status_code == 409 and error(too_many)["code"] == "exceeds_on_hand"
    assert error(too_many)["fields"]["on_hand"] == 1
    assert nurse.post("/api/v1/pharmacy/returns", json={**body, "quantity": 0}).status_code == 422
    assert pharmacist.post("/api/v1/pharmacy/returns", json=body).status_code == 403

    queue = pharmacist.get("/api/v1/pharmacy/returns?state=sent").get_json()
    assert queue["count"] == 1 and queue["returns"][0]["ward_return_id"] == return_id
    assert queue["returns"][0]["name"] == "Ceftriaxone 1 g" and queue["returns"][0]["quantity"] == 2
    assert pharmacist.get("/api/v1/pharmacy/returns?state=lost").status_code == 422
    assert nurse.get("/api/v1/pharmacy/returns").status_code == 403

    over = pharmacist.post(f"/api/v1/pharmacy/returns/{return_id}/receive", json={"received_quantity": 3})
    assert over.status_code == 422 and "received_quantity" in error(over)["fields"]
    assert nurse.post(f"/api/v1/pharmacy/returns/{return_id}/receive",
                      json={"received_quantity": 2}).status_code == 403
    got = pharmacist.post(f"/api/v1/pharmacy/returns/{return_id}/receive", json={"received_quantity": 2})
    assert got.status_code == 200, got.get_json()
    assert got.get_json()["state"] == "received" and got.get_json()["amount_paisa"] == 1000
    assert on_hand(database, issued["ctx_batch"]) == 19
    assert pharmacist.get("/api/v1/pharmacy/returns?state=sent").get_json()["count"] == 0
    twice = pharmacist.post(f"/api/v1/pharmacy/returns/{return_id}/receive", json={"received_quantity": 2})
    assert twice.status_code == 409 and error(twice)["code"] == "already_counted"
    view = nurse.get(f"/api/v1/admissions/{ADMISSION}/pharmacy").get_json()
    assert [(r["state"], r["received_quantity"]) for r in view["returns"]] == [("received", 2)]
    with database.transaction() as s:
        reads = s.scalars(select(AuditLog).where(AuditLog.action == "inventory.admission_pharmacy_read")).all()
        assert reads and all(r.patient_id == issued["patient"] for r in reads)


def test_a_doctor_reads_but_cannot_accept_or_send(as_role, issued):
    doctor = as_role("doctor")
    assert doctor.get(f"/api/v1/admissions/{ADMISSION}/pharmacy").status_code == 200
    assert doctor.post(f"/api/v1/pharmacy/issues/{issued['dispense_id']}/accept").status_code == 403
    assert as_role("cashier").get(f"/api/v1/admissions/{ADMISSION}/pharmacy").status_code == 403


# --- the pharmacy's returns page ---------------------------------------------------------

def page(client) -> str:
    resp = client.get("/inventory/returns")
    assert resp.status_code == 200
    return html.unescape(resp.get_data(as_text=True))


def test_the_returns_page_has_an_empty_state(pharmacist, database):
    text = page(pharmacist)
    assert "No ward returns are waiting" in text and "Back to pharmacy stock" in text


def test_the_pharmacist_receives_and_rejects_from_the_page(nurse, pharmacist, issued, database):
    nurse.post(f"/api/v1/pharmacy/issues/{issued['dispense_id']}/accept")
    first = nurse.post("/api/v1/pharmacy/returns", json={"admission_id": ADMISSION,
                                                         "dispense_line_id": issued["ctx_line"], "quantity": 2})
    second = nurse.post("/api/v1/pharmacy/returns", json={"admission_id": ADMISSION,
                                                          "dispense_line_id": issued["pcm_line"], "quantity": 4})
    first_id, second_id = first.get_json()["ward_return_id"], second.get_json()["ward_return_id"]
    text = page(pharmacist)
    assert "Ceftriaxone 1 g" in text and "Paracetamol 500 mg" in text and "2 vials" in text
    token = CSRF_RE.search(text).group(1)

    silent = pharmacist.post(f"/inventory/returns/{second_id}/receive",
                             data={"csrf_token": token, "received_quantity": "0", "note": ""})
    assert silent.status_code == 422
    assert "Say why nothing is received" in html.unescape(silent.get_data(as_text=True))

    done = pharmacist.post(f"/inventory/returns/{first_id}/receive",
                           data={"csrf_token": token, "received_quantity": "2"}, follow_redirects=True)
    assert done.status_code == 200
    assert "credit 10.00 on the patient's bill" in html.unescape(done.get_data(as_text=True))
    rejected = pharmacist.post(f"/inventory/returns/{second_id}/receive",
                               data={"csrf_token": token, "received_quantity": "0", "note": "Strip opened"},
                               follow_redirects=True)
    assert "Return rejected" in html.unescape(rejected.get_data(as_text=True))
    with database.transaction() as s:
        assert [(r.state, r.received_quantity) for r in s.scalars(select(WardReturn).order_by(WardReturn.id))] == [
            ("received", 2), ("rejected", 0)]
    assert "No ward returns are waiting" in page(pharmacist)
    assert nurse.get("/inventory/returns").status_code == 403
