"""The lab JSON API through the Flask client: catalogue, ordering, collection, results,
verification, amendment, visibility by role, the report PDF and a patient's results."""

from __future__ import annotations

import pytest

from departments.lab import demo, services
from hms.audit import Actor
from hms.patients.services import register_patient
from tests.conftest import login

CBC = {"HB": "11.2", "RBC": "4.1", "HCT": "35", "MCV": "85", "MCH": "28", "MCHC": "33", "TLC": "7.2",
       "NEUT": "60", "LYMPH": "30", "MONO": "6", "EOS": "3", "BASO": "1", "PLT": "15"}


@pytest.fixture
def lab(app, database, make_user):
    with database.transaction() as s:
        for spec in demo.CATALOGUE:
            if spec["code"] in ("CBC", "FBS", "LFT", "URE"):
                services.create_test(s, Actor.system("test"), spec)
        patient_id = register_patient(s, Actor.system("test"), {
            "name": "Zainab Fatima", "sex": "female", "date_of_birth": "1992-08-14"}).id

    clients = {}
    for username, roles in (("dr_ali", ("doctor",)), ("lt_sana", ("lab_technician",)),
                            ("path_hina", ("pathologist",)), ("path_omar", ("pathologist",)),
                            ("rec", ("reception",)), ("nurse", ("nurse",)), ("pharm", ("pharmacist",))):
        make_user(username, *roles, full_name=username.replace("_", " ").title())
        clients[username] = app.test_client()
        login(clients[username], username)
    clients["patient_id"] = patient_id
    return clients


def _ordered_and_collected(lab, codes=("CBC",)):
    resp = lab["dr_ali"].post("/api/v1/lab/orders", json={"patient_id": lab["patient_id"], "test_codes": list(codes),
                                                          "encounter_id": 41})
    assert resp.status_code == 201, resp.get_json()
    order = resp.get_json()
    resp = lab["lt_sana"].post(f"/api/v1/lab/orders/{order['id']}/collect", json={"collected": True})
    assert resp.status_code == 200, resp.get_json()
    return order


def _cbc_rows(**overrides):
    return [{"test_code": "CBC", "analyte_code": k, "value": v} for k, v in dict(CBC, **overrides).items()]


def test_catalogue_lists_tests_with_analytes_ranges_and_filter(lab):
    resp = lab["rec"].get("/api/v1/lab/tests")
    assert resp.status_code == 200
    items = resp.get_json()["items"]
    assert [t["code"] for t in items] == ["CBC", "FBS", "LFT", "URE"]
    cbc = items[0]
    assert cbc["tariff_code"] == "LAB-CBC" and cbc["sample_type"] == "blood_edta" and cbc["value"] == "CBC"
    hb = cbc["analytes"][0]
    assert hb["units"] == "g/dL"
    female = next(r for r in hb["ranges"] if r["sex"] == "female" and r["min_age_days"] == 18 * 365)
    assert (female["low"], female["high"], female["critical_low"], female["text"]) == (12, 15, 7, "12.0 - 15.0")
    assert [t["code"] for t in lab["rec"].get("/api/v1/lab/tests?q=liv").get_json()["items"]] == ["LFT"]
    assert [t["code"] for t in lab["rec"].get("/api/v1/lab/tests?q=u").get_json()["items"]] == ["URE"]
    one = lab["nurse"].get("/api/v1/lab/tests/fbs")
    assert one.status_code == 200 and one.get_json()["analytes"][0]["code"] == "GLU"
    assert lab["nurse"].get("/api/v1/lab/tests/NOPE").status_code == 404


def test_order_validation_and_unknown_codes(lab):
    resp = lab["dr_ali"].post("/api/v1/lab/orders", json={"patient_id": lab["patient_id"], "test_codes": ["CBC", "ZZZ"]})
    assert resp.status_code == 422
    assert resp.get_json()["error"]["code"] == "unknown_tests" and "ZZZ" in resp.get_json()["error"]["message"]
    resp = lab["dr_ali"].post("/api/v1/lab/orders", json={"patient_id": lab["patient_id"]})
    assert resp.status_code == 422 and "test_codes" in resp.get_json()["error"]["fields"]
    resp = lab["dr_ali"].post("/api/v1/lab/orders", json={"patient_id": 9999, "test_codes": ["CBC"]})
    assert resp.status_code == 404
    assert lab["lt_sana"].post("/api/v1/lab/orders", json={"patient_id": lab["patient_id"],
                                                           "test_codes": ["CBC"]}).status_code == 403


def test_full_flow_visibility_verification_and_report(lab):
    order = _ordered_and_collected(lab)
    oid = order["id"]
    assert order["order_no"] == "L-000001" and order["encounter_id"] == 41
    assert order["ordered_by"]["name"] == "Dr Ali"

    resp = lab["lt_sana"].post(f"/api/v1/lab/orders/{oid}/results", json={"results": _cbc_rows()})
    assert resp.status_code == 200 and resp.get_json()["complete"] is True
    flags = {r["value"]: r["flag"] for r in resp.get_json()["results"]}
    assert flags["11.2"] == "L" and flags["15"] == "LL"

    # the doctor does not see unverified results; lab staff do
    doctor_view = lab["dr_ali"].get(f"/api/v1/lab/orders/{oid}").get_json()
    assert doctor_view["items"][0]["results"] == [] and doctor_view["items"][0]["status"] == "resulted"
    lab_view = lab["lt_sana"].get(f"/api/v1/lab/orders/{oid}").get_json()
    assert lab_view["items"][0]["results"][0]["result"]["value"] == "11.2"
    assert lab["dr_ali"].get(f"/api/v1/patients/{lab['patient_id']}/lab-results").get_json()["items"] == []

    # the person who entered cannot verify (a lab technician cannot at all)
    assert lab["lt_sana"].post(f"/api/v1/lab/orders/{oid}/verify", json={"approve": True}).status_code == 403
    resp = lab["path_hina"].post(f"/api/v1/lab/orders/{oid}/verify", json={"approve": True, "comment": "Thrombocytopenia"})
    assert resp.status_code == 200 and resp.get_json() == {
        "verified_items": [order["items"][0]["id"]], "returned_items": [], "all_verified": True, "critical": True}

    view = lab["dr_ali"].get(f"/api/v1/lab/orders/{oid}").get_json()
    item = view["items"][0]
    assert view["status"] == "verified" and view["critical"] is True
    assert item["reportable"] and item["tat_minutes"] is not None and item["verified_at"] and item["collected_at"]
    plt = next(r for r in item["results"] if r["analyte_code"] == "PLT")
    assert plt["result"]["flag"] == "LL" and plt["result"]["critical"] is True
    assert plt["result"]["verified_by"]["name"] == "Path Hina"

    results = lab["nurse"].get(f"/api/v1/patients/{lab['patient_id']}/lab-results").get_json()
    assert results["total"] == 1 and len(results["items"]) == 13
    assert {r["analyte_code"] for r in results["items"] if r["flag"]} == {"HB", "HCT", "PLT"}

    page = lab["dr_ali"].get(f"/lab/orders/{oid}/report")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "CRITICAL" in html and "Zainab Fatima" in html and "S-000001" in html and "Thrombocytopenia" in html

    pdf = lab["dr_ali"].get(f"/lab/orders/{oid}/report.pdf")
    assert pdf.status_code == 200 and pdf.headers["Content-Type"] == "application/pdf"
    assert pdf.data.startswith(b"%PDF")
    assert "L-000001.pdf" in pdf.headers["Content-Disposition"]


def test_verified_result_reentry_is_409_and_amendment_needs_verification(lab):
    oid = _ordered_and_collected(lab, ("FBS",))["id"]
    lab["lt_sana"].post(f"/api/v1/lab/orders/{oid}/results", json={"results": [
        {"test_code": "FBS", "analyte_code": "GLU", "value": 96}]})
    lab["path_hina"].post(f"/api/v1/lab/orders/{oid}/verify", json={"approve": True})
    resp = lab["lt_sana"].post(f"/api/v1/lab/orders/{oid}/results", json={"results": [
        {"test_code": "FBS", "analyte_code": "GLU", "value": "126"}]})
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "result_verified"

    view = lab["lt_sana"].get(f"/api/v1/lab/orders/{oid}").get_json()
    v1 = view["items"][0]["results"][0]["result"]
    assert lab["dr_ali"].post(f"/api/v1/lab/results/{v1['id']}/amend",
                              json={"value": "126", "reason": "x"}).status_code == 403
    resp = lab["lt_sana"].post(f"/api/v1/lab/results/{v1['id']}/amend", json={"value": "126", "reason": "Wrong patient sample"})
    assert resp.status_code == 201
    v2 = resp.get_json()
    assert (v2["version"], v2["status"], v2["flag"], v2["amends_id"]) == (2, "pending", "H", v1["id"])

    doctor = lab["dr_ali"].get(f"/api/v1/lab/orders/{oid}").get_json()["items"][0]["results"][0]
    assert doctor["result"]["version"] == 1 and doctor["amendment_pending"] is True
    assert [v["version"] for v in doctor["versions"]] == [1]

    assert lab["path_omar"].post(f"/api/v1/lab/orders/{oid}/verify", json={"approve": True}).status_code == 200
    doctor = lab["dr_ali"].get(f"/api/v1/lab/orders/{oid}").get_json()["items"][0]
    row = doctor["results"][0]
    assert row["result"]["version"] == 2 and row["amended"] and row["result"]["amend_reason"] == "Wrong patient sample"
    assert [v["version"] for v in row["versions"]] == [1, 2] and doctor["amended"]
    html = lab["dr_ali"].get(f"/lab/orders/{oid}/report").get_data(as_text=True)
    assert "AMENDED" in html and "Wrong patient sample" in html
    assert lab["dr_ali"].get(f"/lab/orders/{oid}/report.pdf").data.startswith(b"%PDF")


def test_rejection_and_recollection_through_the_api(lab):
    oid = _ordered_and_collected(lab)["id"]
    resp = lab["lt_sana"].post(f"/api/v1/lab/orders/{oid}/collect", json={"collected": False})
    assert resp.status_code == 422
    resp = lab["lt_sana"].post(f"/api/v1/lab/orders/{oid}/collect",
                               json={"collected": False, "rejection_reason": "clotted"})
    assert resp.status_code == 200 and resp.get_json()["pending"] == 1 and resp.get_json()["labels"] == ["S-000001"]
    resp = lab["lt_sana"].post(f"/api/v1/lab/orders/{oid}/collect", json={"collected": True})
    assert resp.get_json()["labels"] == ["S-000002"] and resp.get_json()["ok"] is True
    samples = lab["lt_sana"].get(f"/api/v1/lab/orders/{oid}").get_json()["samples"]
    assert [(x["label"], x["rejection_reason"]) for x in samples] == [("S-000001", "clotted"), ("S-000002", None)]


def test_cancel_item_api(lab):
    resp = lab["dr_ali"].post("/api/v1/lab/orders", json={"patient_id": lab["patient_id"], "test_codes": ["CBC", "FBS"]})
    items = resp.get_json()["items"]
    resp = lab["dr_ali"].post(f"/api/v1/lab/order-items/{items[1]['id']}/cancel", json={"reason": "Not fasting"})
    assert resp.status_code == 200 and resp.get_json()["status"] == "cancelled"
    assert resp.get_json()["source_ref"] == f"lab_order_item:{items[1]['id']}" and resp.get_json()["tariff_code"] == "LAB-FBS"
    lab["lt_sana"].post(f"/api/v1/lab/orders/{resp.get_json()['order_id']}/collect", json={"collected": True})
    late = lab["dr_ali"].post(f"/api/v1/lab/order-items/{items[0]['id']}/cancel", json={"reason": "Changed"})
    assert late.status_code == 409 and late.get_json()["error"]["code"] == "already_collected"


def test_order_list_filters_and_who_may_read(lab):
    _ordered_and_collected(lab)
    lab["dr_ali"].post("/api/v1/lab/orders", json={"patient_id": lab["patient_id"], "test_codes": ["FBS"]})
    listing = lab["nurse"].get(f"/api/v1/lab/orders?patient_id={lab['patient_id']}").get_json()
    assert listing["total"] == 2 and [o["status"] for o in listing["items"]] == ["awaiting_collection", "awaiting_results"]
    waiting = lab["nurse"].get("/api/v1/lab/orders?status=awaiting_collection").get_json()
    assert [o["items"][0]["test_code"] for o in waiting["items"]] == ["FBS"]
    assert lab["nurse"].get("/api/v1/lab/orders?status=bogus").status_code == 422
    for who in ("rec", "pharm"):
        assert lab[who].get("/api/v1/lab/orders/1").status_code == 403
        assert lab[who].get(f"/api/v1/patients/{lab['patient_id']}/lab-results").status_code == 403
        assert lab[who].get("/lab/orders/1/report.pdf").status_code == 403
