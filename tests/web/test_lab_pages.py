"""Lab pages: worklist with empty states and filters, the order page with its forms per
role (collect, reject, results, verify, amend, cancel), the report and the order form."""

from __future__ import annotations

import re

import pytest

from departments.lab import demo, services
from hms.audit import Actor
from hms.patients.services import register_patient
from tests.conftest import login


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


@pytest.fixture
def lab(app, database, make_user):
    with database.transaction() as s:
        for spec in demo.CATALOGUE:
            if spec["code"] in ("CBC", "FBS", "MPICT"):
                services.create_test(s, Actor.system("test"), spec)
        patient_id = register_patient(s, Actor.system("test"), {
            "name": "Muhammad Usman", "sex": "male", "date_of_birth": "1968-02-20"}).id
    clients = {"patient_id": patient_id}
    for key, role in (("dr", "doctor"), ("lt", "lab_technician"), ("pa", "pathologist"),
                      ("pb", "pathologist"), ("nurse", "nurse"), ("admin", "admin")):
        make_user(f"user_{key}", role)
        clients[key] = app.test_client()
        login(clients[key], f"user_{key}")
    return clients


def _post(client, url, page_url, data):
    token = _csrf(client.get(page_url).get_data(as_text=True))
    return client.post(url, data={"csrf_token": token, **data})


def _order(lab, codes=("FBS",)):
    resp = lab["dr"].post("/api/v1/lab/orders", json={"patient_id": lab["patient_id"], "test_codes": list(codes),
                                                      "priority": "urgent"})
    assert resp.status_code == 201
    return resp.get_json()


def test_worklist_empty_states_and_no_access_for_doctors(lab):
    resp = lab["lt"].get("/lab")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "Lab worklist" in html and "No samples are awaiting collection." in html
    assert 'aria-current="page"' in html and "Back to home" in html
    html = lab["lt"].get("/lab?stage=verification").get_data(as_text=True)
    assert "No results are awaiting verification." in html
    html = lab["lt"].get("/lab?q=L-999999").get_data(as_text=True)
    assert "No orders match these filters." in html
    assert lab["dr"].get("/lab").status_code == 403


def test_worklist_lists_orders_by_stage_with_filters(lab):
    order = _order(lab)
    html = lab["lt"].get("/lab").get_data(as_text=True)
    assert order["order_no"] in html and "Muhammad Usman" in html and "URGENT" in html
    assert order["order_no"] in lab["lt"].get(f"/lab?q={order['order_no']}").get_data(as_text=True)
    assert order["order_no"] not in lab["lt"].get("/lab?priority=stat").get_data(as_text=True)
    assert order["order_no"] not in lab["lt"].get("/lab?stage=results").get_data(as_text=True)


def test_order_page_collect_enter_verify_through_forms(lab):
    order = _order(lab, ("FBS", "MPICT"))
    page = f"/lab/orders/{order['id']}"
    html = lab["lt"].get(page).get_data(as_text=True)
    assert "Record collection" in html and "No sample has been collected yet." in html
    assert 'name="csrf_token"' in html and "Back to the lab worklist" in html

    resp = _post(lab["lt"], f"{page}/collect", page, {"collected": "1"})
    assert resp.status_code == 302
    html = lab["lt"].get(page).get_data(as_text=True)
    assert "S-000001" in html and "S-000002" in html and "Enter results" in html and "Reject sample" in html

    item_ids = {i["test_code"]: i["id"] for i in order["items"]}
    fbs, ict = item_ids["FBS"], item_ids["MPICT"]
    resp = _post(lab["lt"], f"{page}/results", page, {f"r-{fbs}-GLU": "-4"})
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert "cannot be negative" in html and 'aria-invalid="true"' in html and 'value="-4"' in html

    resp = _post(lab["lt"], f"{page}/results", page, {f"r-{fbs}-GLU": "38", f"r-{ict}-PF": "Negative",
                                                      f"r-{ict}-PV": "Negative"})
    assert resp.status_code == 302
    html = lab["lt"].get(page).get_data(as_text=True)
    assert "CRITICAL LL" in html and "awaiting verification" in html

    # the doctor sees no draft value
    html = lab["dr"].get(page).get_data(as_text=True)
    assert "Results are not verified yet." in html and ">38<" not in html
    assert "Only verified results are shown." in html

    html = lab["pa"].get(page).get_data(as_text=True)
    assert "Approve results" in html and "Send back for re-entry" in html
    resp = _post(lab["pa"], f"{page}/verify", page, {"decision": "return"})
    assert resp.status_code == 422 and "Say what is wrong" in resp.get_data(as_text=True)
    resp = _post(lab["pa"], f"{page}/verify", page, {"decision": "approve", "comment": "Hypoglycaemia: informed ward"})
    assert resp.status_code == 302
    html = lab["dr"].get(page).get_data(as_text=True)
    assert ">38<" in html and "CRITICAL" in html and "View report" in html


def test_same_person_cannot_verify_from_the_page(lab, app, make_user):
    make_user("both_roles", "lab_technician", "pathologist")
    both = app.test_client()
    login(both, "both_roles")
    order = _order(lab)
    page = f"/lab/orders/{order['id']}"
    _post(both, f"{page}/collect", page, {"collected": "1"})
    _post(both, f"{page}/results", page, {f"r-{order['items'][0]['id']}-GLU": "92"})
    html = both.get(page).get_data(as_text=True)
    assert "You entered some of these results" in html
    resp = _post(both, f"{page}/verify", page, {"decision": "approve"})
    assert resp.status_code == 403 and "another pathologist must verify them" in resp.get_data(as_text=True)


def test_reject_amend_and_cancel_forms(lab):
    order = _order(lab, ("FBS", "MPICT"))
    page = f"/lab/orders/{order['id']}"
    ict = order["items"][1]["id"]
    resp = _post(lab["dr"], f"/lab/order-items/{ict}/cancel", page, {"reason": "Not needed"})
    assert resp.status_code == 302
    assert "Cancelled" in lab["dr"].get(page).get_data(as_text=True)
    _post(lab["lt"], f"{page}/collect", page, {"collected": "1"})
    view = lab["lt"].get(f"/api/v1/lab/orders/{order['id']}").get_json()
    sample_id = view["samples"][0]["id"]
    resp = _post(lab["lt"], f"/lab/samples/{sample_id}/reject", page, {"rejection_reason": ""})
    assert resp.status_code == 422
    resp = _post(lab["lt"], f"/lab/samples/{sample_id}/reject", page, {"rejection_reason": "haemolysed"})
    assert resp.status_code == 302
    html = lab["lt"].get(page).get_data(as_text=True)
    assert "Rejected: Haemolysed" in html and "Record collection" in html
    _post(lab["lt"], f"{page}/collect", page, {"collected": "1"})
    fbs = order["items"][0]["id"]
    _post(lab["lt"], f"{page}/results", page, {f"r-{fbs}-GLU": "101"})
    _post(lab["pa"], f"{page}/verify", page, {"decision": "approve"})
    result_id = lab["lt"].get(f"/api/v1/lab/orders/{order['id']}").get_json()["items"][0]["results"][0]["result"]["id"]
    resp = _post(lab["lt"], f"/lab/results/{result_id}/amend", page, {"value": "110", "reason": ""})
    assert resp.status_code == 422
    resp = _post(lab["lt"], f"/lab/results/{result_id}/amend", page, {"value": "110", "reason": "Re-run on analyser"})
    assert resp.status_code == 302
    _post(lab["pb"], f"{page}/verify", page, {"decision": "approve"})
    html = lab["dr"].get(f"{page}/report").get_data(as_text=True)
    assert "AMENDED" in html and "Re-run on analyser" in html and "v1 101" in html


def test_report_page_empty_until_verified(lab):
    order = _order(lab)
    resp = lab["nurse"].get(f"/lab/orders/{order['id']}/report")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "No results of this order have been verified yet." in html
    assert "Back to order" in html and "Download PDF" in html
    pdf = lab["nurse"].get(f"/lab/orders/{order['id']}/report.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    assert lab["nurse"].get("/lab/orders/999/report").status_code == 404


def test_order_form_for_doctors(lab):
    url = f"/lab/orders/new?patient_id={lab['patient_id']}"
    html = lab["dr"].get(url).get_data(as_text=True)
    assert "Order lab tests" in html and "Haematology" in html and 'value="CBC"' in html
    resp = _post(lab["dr"], "/lab/orders/new", url, {"patient_id": str(lab["patient_id"])})
    assert resp.status_code == 422 and "Choose at least one test." in resp.get_data(as_text=True)
    token = _csrf(lab["dr"].get(url).get_data(as_text=True))
    resp = lab["dr"].post("/lab/orders/new", data={"csrf_token": token, "patient_id": str(lab["patient_id"]),
                                                   "test_codes": ["CBC", "FBS"], "priority": "stat"})
    assert resp.status_code == 302
    html = lab["dr"].get(resp.headers["Location"]).get_data(as_text=True)
    assert "L-000001" in html and "STAT" in html
    html = lab["dr"].get("/lab/orders/new").get_data(as_text=True)
    assert "Open this page from a patient" in html
