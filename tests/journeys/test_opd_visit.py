"""The OPD visit end to end through the API, as each role drives it: check-in and token,
consultation fee, triage, consultation, lab order, pharmacy, payment; and the refusals."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

TRIAGE = {"temperature_c": 38.4, "pulse": 96, "systolic_bp": 128, "diastolic_bp": 84, "respiratory_rate": 18,
          "spo2": 97, "weight_kg": 72, "height_cm": 172, "chief_complaint": "Fever and body aches for 3 days",
          "priority": "routine"}


def consultation(lab_tests=(), prescriptions=(), **extra):
    data = {"chief_complaint": "Fever for 3 days", "history": "No travel.", "examination": "Febrile, chest clear.",
            "diagnoses": [{"code": "R50.9"}], "notes": "Likely viral fever.",
            "lab_tests": list(lab_tests), "prescriptions": list(prescriptions)}
    data.update(extra)
    return data


def tasks_for(client, **filters):
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    return client.get(f"/api/v1/tasks?{query}").get_json()["items"]


def only_task(client, task_name):
    items = [t for t in tasks_for(client, status="all") if t["task"] == task_name]
    assert len(items) == 1, (task_name, items)
    return items[0]


def complete(client, task, data, expect=200):
    resp = client.post(f"/api/v1/tasks/{task['id']}/complete", json={"data": data})
    assert resp.status_code == expect, resp.get_json()
    return resp.get_json()


def pay_balance(clinic, bill_id, method="cash"):
    bill = clinic["cash"].get(f"/api/v1/bills/{bill_id}").get_json()
    if bill["balance_paisa"] == 0:
        return bill
    resp = clinic["cash"].post(f"/api/v1/bills/{bill_id}/payments",
                               json={"amount_paisa": bill["balance_paisa"], "method": method},
                               headers={"Idempotency-Key": str(uuid.uuid4())})
    assert resp.status_code == 201, resp.get_json()
    return clinic["cash"].get(f"/api/v1/bills/{bill_id}").get_json()


def check_in(clinic, patient):
    resp = clinic["rec"].post("/api/v1/opd/checkins", json={"patient_id": patient["id"],
                                                           "department_id": clinic["department_id"]})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def bill_of(clinic, encounter_id):
    items = clinic["cash"].get(f"/api/v1/bills?encounter_id={encounter_id}").get_json()["items"]
    assert len(items) == 1
    return items[0]


def test_visit_with_lab_and_medicines_end_to_end(clinic, patient, database):
    visit = check_in(clinic, patient)
    assert visit["token"] == 1 and visit["status"] == "running"
    instance = visit["instance_id"]

    # Consultation fee first (the default setting): the cashier takes it.
    bill = bill_of(clinic, visit["encounter_id"])
    assert bill["balance_paisa"] > 0
    fee_task = only_task(clinic["cash"], "collect_fee")
    assert tasks_for(clinic["nurse"]) == []  # triage waits for the fee
    pay_balance(clinic, bill["id"])
    complete(clinic["cash"], fee_task, {"payment_taken": True})

    triage = only_task(clinic["nurse"], "triage")
    assert clinic["doc"].post(f"/api/v1/tasks/{triage['id']}/complete", json={"data": TRIAGE}).status_code == 403
    complete(clinic["nurse"], triage, TRIAGE)

    consult = only_task(clinic["doc"], "consult")
    detail = clinic["doc"].get(f"/api/v1/tasks/{consult['id']}").get_json()
    assert detail["patient"]["allergies"][0]["substance"] == "Penicillin"
    complete(clinic["doc"], consult, consultation(
        lab_tests=["CBC"],
        prescriptions=[{"item_code": "PCM500T", "dose": 2, "frequency": "TDS", "duration_days": 3}]))

    # Lab and pharmacy now run side by side.
    collect = only_task(clinic["lab"], "collect")
    dispense = only_task(clinic["pharm"], "dispense")
    values = clinic["pharm"].get(f"/api/v1/tasks/{dispense['id']}").get_json()["values"]
    lines = values["lines"]
    assert [(l["item_code"], l["quantity"]) for l in lines] == [("PCM500T", 18)]  # 2 x 3/day x 3 days
    [shown] = values["_context"]["medicines"]  # what the pharmacist reads beside the codes
    assert shown["medicine"].startswith("Paracetamol 500 mg") and shown["in_stock"] >= 18
    stock_before = clinic["pharm"].get("/api/v1/inventory/items/PCM500T").get_json()["stock_on_hand"]
    complete(clinic["pharm"], dispense, {"lines": lines})
    stock_after = clinic["pharm"].get("/api/v1/inventory/items/PCM500T").get_json()["stock_on_hand"]
    assert stock_before - stock_after == 18

    bill = clinic["cash"].get(f"/api/v1/bills/{bill['id']}").get_json()
    kinds = sorted(l["kind"] for l in bill["lines"])
    assert kinds == ["consultation", "lab", "medicine"]
    assert bill["total_paisa"] == sum(l["amount_paisa"] for l in bill["lines"])
    payment = only_task(clinic["cash"], "collect_payment")
    pay_balance(clinic, bill["id"], method="cash")
    complete(clinic["cash"], payment, {"payment_taken": True})

    complete(clinic["lab"], collect, {"collected": True})
    enter = only_task(clinic["lab"], "enter")
    rows = clinic["lab"].get(f"/api/v1/tasks/{enter['id']}").get_json()["values"]["results"]
    assert {r["test_code"] for r in rows} == {"CBC"}
    for r in rows:
        r["value"] = "14.1" if r["analyte_code"].upper() in ("HB", "HGB") else "7"
    complete(clinic["lab"], enter, {"results": rows})
    verify = only_task(clinic["path"], "verify")
    complete(clinic["path"], verify, {"approve": True})
    review = only_task(clinic["doc"], "review")
    complete(clinic["doc"], review, {"reviewed": True})

    done = clinic["doc"].get(f"/api/v1/process-instances/{instance}").get_json()
    assert done["status"] == "completed" and done["open_tasks"] == []
    record = clinic["doc"].get(f"/api/v1/patients/{patient['id']}/record").get_json()
    assert record["lab_results"] and record["visits"]
    assert clinic["rec"].get(f"/api/v1/patients/{patient['id']}/record").status_code == 403
    final = clinic["cash"].get(f"/api/v1/bills/{bill['id']}").get_json()
    assert final["balance_paisa"] == 0 and final["paid_paisa"] == final["total_paisa"]


def test_visit_without_lab_or_medicines_pay_after(clinic, patient, database):
    from hms import settings
    from hms.audit import Actor

    with database.transaction() as s:
        settings.set_value(s, Actor.system("test"), "opd.consultation_fee_before", False)
    visit = check_in(clinic, patient)
    assert tasks_for(clinic["cash"]) == []  # no fee task: pay after
    complete(clinic["nurse"], only_task(clinic["nurse"], "triage"), TRIAGE)
    complete(clinic["doc"], only_task(clinic["doc"], "consult"), consultation())
    assert tasks_for(clinic["lab"]) == [] and tasks_for(clinic["pharm"]) == []
    payment = only_task(clinic["cash"], "collect_payment")
    bill = bill_of(clinic, visit["encounter_id"])
    complete(clinic["cash"], payment, {"payment_taken": True})  # not paid yet: asked again
    payment = only_task(clinic["cash"], "collect_payment")
    pay_balance(clinic, bill["id"])
    complete(clinic["cash"], payment, {"payment_taken": True})
    done = clinic["rec"].get(f"/api/v1/process-instances/{visit['instance_id']}").get_json()
    assert done["status"] == "completed"


def test_allergy_alert_needs_override_and_is_kept(clinic, patient):
    check_in(clinic, patient)
    pay_fee_and_triage(clinic)
    amoxil = [{"item_code": "AMX500C", "dose": 1, "frequency": "TDS", "duration_days": 5}]
    complete(clinic["doc"], only_task(clinic["doc"], "consult"), consultation(prescriptions=amoxil))
    again = only_task(clinic["doc"], "consult")  # back to the doctor: penicillin allergy
    shown = clinic["doc"].get(f"/api/v1/tasks/{again['id']}").get_json()["values"]["_context"]
    assert shown["allergy_check"]["has_alerts"] is True
    complete(clinic["doc"], again, consultation(prescriptions=amoxil,
                                                allergy_override_reason="Tolerated amoxicillin in 2023"))
    assert only_task(clinic["pharm"], "dispense")


def pay_fee_and_triage(clinic):
    fee = only_task(clinic["cash"], "collect_fee")
    bill_id = fee and clinic["cash"].get(f"/api/v1/tasks/{fee['id']}").get_json()["values"]["_context"]["bill"]["bill_id"]
    pay_balance(clinic, bill_id)
    complete(clinic["cash"], fee, {"payment_taken": True})
    complete(clinic["nurse"], only_task(clinic["nurse"], "triage"), TRIAGE)


def test_repeated_payment_pays_once(clinic, patient):
    visit = check_in(clinic, patient)
    bill = bill_of(clinic, visit["encounter_id"])
    key = str(uuid.uuid4())
    body = {"amount_paisa": bill["balance_paisa"], "method": "cash"}
    first = clinic["cash"].post(f"/api/v1/bills/{bill['id']}/payments", json=body, headers={"Idempotency-Key": key})
    second = clinic["cash"].post(f"/api/v1/bills/{bill['id']}/payments", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201 and second.status_code == 200
    assert first.get_json()["id"] == second.get_json()["id"]
    assert len(clinic["cash"].get(f"/api/v1/bills/{bill['id']}").get_json()["payments"]) == 1


def test_tokens_count_per_department_per_day(clinic, patient):
    second = clinic["rec"].post("/api/v1/patients", json={
        "name": "Ayesha Bibi", "sex": "female", "age_years": 30, "mobile": "0321-7654321", "city": "Lahore"})
    assert check_in(clinic, patient)["token"] == 1
    assert check_in(clinic, second.get_json())["token"] == 2
    again = clinic["rec"].post("/api/v1/opd/checkins", json={"patient_id": patient["id"],
                                                            "department_id": clinic["department_id"]})
    assert again.status_code == 409


def test_pharmacy_refuses_more_than_stock_then_patient_declines(clinic, patient):
    visit = check_in(clinic, patient)
    pay_fee_and_triage(clinic)
    complete(clinic["doc"], only_task(clinic["doc"], "consult"), consultation(
        prescriptions=[{"item_code": "PCM500T", "dose": 2, "frequency": "QID", "duration_days": 365}]))
    dispense = only_task(clinic["pharm"], "dispense")
    lines = clinic["pharm"].get(f"/api/v1/tasks/{dispense['id']}").get_json()["values"]["lines"]
    stock = clinic["pharm"].get("/api/v1/inventory/items/PCM500T").get_json()["stock_on_hand"]
    assert lines[0]["quantity"] == 2920 > stock
    complete(clinic["pharm"], dispense, {"lines": lines})  # short stock, no reason: back to the pharmacist
    again = only_task(clinic["pharm"], "dispense")
    problems = clinic["pharm"].get(f"/api/v1/tasks/{again['id']}").get_json()["values"]["_context"]
    assert problems["dispense_result"]["problems"][0]["code"] == "insufficient_stock"
    assert clinic["pharm"].get("/api/v1/inventory/items/PCM500T").get_json()["stock_on_hand"] == stock
    declined = [dict(line, quantity=0) for line in lines]
    complete(clinic["pharm"], again, {"lines": declined, "partial_reason": "Patient will buy outside"})
    # The fee was paid up front and nothing else was charged: no cashier step, the visit ends.
    done = clinic["rec"].get(f"/api/v1/process-instances/{visit['instance_id']}").get_json()
    assert done["status"] == "completed" and tasks_for(clinic["cash"]) == []
    assert clinic["pharm"].get("/api/v1/inventory/items/PCM500T").get_json()["stock_on_hand"] == stock


def test_cancelling_a_test_before_collection_reverses_its_charge(clinic, patient):
    visit = check_in(clinic, patient)
    pay_fee_and_triage(clinic)
    complete(clinic["doc"], only_task(clinic["doc"], "consult"), consultation(lab_tests=["CBC", "FBS"]))
    bill = bill_of(clinic, visit["encounter_id"])
    lab_lines = [l for l in clinic["cash"].get(f"/api/v1/bills/{bill['id']}").get_json()["lines"] if l["kind"] == "lab"]
    assert len(lab_lines) == 2
    fbs = next(l for l in lab_lines if "FBS" in l["description"].upper() or "fasting" in l["description"].lower())
    item_id = int(fbs["source_ref"].split(":")[1])
    resp = clinic["doc"].post(f"/api/v1/lab/order-items/{item_id}/cancel", json={"reason": "Patient not fasting"})
    assert resp.status_code == 200, resp.get_json()
    after = clinic["cash"].get(f"/api/v1/bills/{bill['id']}").get_json()
    reversal = [l for l in after["lines"] if l["reversal_of_id"] == fbs["id"]]
    assert len(reversal) == 1 and reversal[0]["amount_paisa"] == -fbs["amount_paisa"]
    assert after["total_paisa"] == bill["total_paisa"] - fbs["amount_paisa"] if "total_paisa" in bill else True
    # after collection a test can no longer be cancelled
    complete(clinic["lab"], only_task(clinic["lab"], "collect"), {"collected": True})
    cbc = next(l for l in lab_lines if l is not fbs)
    cbc_item = int(cbc["source_ref"].split(":")[1])
    late = clinic["doc"].post(f"/api/v1/lab/order-items/{cbc_item}/cancel", json={"reason": "Changed my mind"})
    assert late.status_code == 409
    assert len([l for l in clinic["cash"].get(f"/api/v1/bills/{bill['id']}").get_json()["lines"]
                if l["reversal_of_id"]]) == 1


def test_check_in_page_starts_the_visit(clinic, patient):
    import re

    page = clinic["rec"].get("/opd/checkin").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    resp = clinic["rec"].post("/opd/checkin", data={"csrf_token": token, "patient_id": patient["id"],
                                                    "department_id": clinic["department_id"]})
    assert resp.status_code == 302
    assert only_task(clinic["cash"], "collect_fee")["patient_id"] == patient["id"]
    record = clinic["doc"].get(f"/api/v1/patients/{patient['id']}/record").get_json()
    assert record["lab_results"] == [] and len(record["visits"]) == 1
