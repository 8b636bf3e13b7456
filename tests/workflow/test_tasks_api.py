"""The engine through the HTTP API and the staff pages, as each role would use it."""

from __future__ import annotations

import re

import pytest

from tests.conftest import login
from tests.workflow.conftest import FAIL_NEXT
from tests.workflow.test_engine import TRIAGE_OK


@pytest.fixture
def clients(app, make_user, make_ward):
    ward = make_ward("WA", "Ward A")
    users = {"rec": ("reception",), "nurse": ("nurse",), "nurse2": ("nurse",), "doc": ("doctor",),
             "boss": ("admin",), "keeper": ("housekeeping",)}
    out = {}
    for name, roles in users.items():
        make_user(name, *roles, ward_ids=[ward] if "nurse" in roles else [])
        c = app.test_client()
        login(c, name)
        out[name] = c
    out["ward_id"] = ward
    return out


def _start(clients, patient_id, data=None):
    resp = clients["rec"].post("/api/v1/pathways/fixture_visit/instances",
                               json={"patient_id": patient_id, "data": data or {"needs_lab": False}})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def test_reception_starts_visit_and_nurse_sees_triage(clients, pathways, patient_id):
    started = _start(clients, patient_id)
    assert started["status"] == "running" and started["version"] == 1
    [triage] = started["open_tasks"]
    listed = clients["nurse"].get("/api/v1/tasks").get_json()
    assert [t["id"] for t in listed["items"]] == [triage["id"]] and listed["total"] == 1
    assert clients["doc"].get("/api/v1/tasks").get_json()["items"] == []
    assert clients["nurse"].get(f"/api/v1/tasks?patient_id={patient_id + 1}").get_json()["items"] == []


def test_task_detail_has_banner_form_and_values(clients, pathways, patient_id):
    triage = _start(clients, patient_id)["open_tasks"][0]
    body = clients["nurse"].get(f"/api/v1/tasks/{triage['id']}").get_json()
    assert body["title"] == "Triage" and body["instructions"] == "Take the vitals."
    assert body["patient"]["mrn"].startswith("HMS-") and body["patient"]["allergies"][0]["substance"] == "Penicillin"
    assert "temperature_c" in body["form"]["properties"] and body["instance_id"] == triage["instance_id"]
    assert clients["doc"].get(f"/api/v1/tasks/{triage['id']}").status_code == 403


def test_only_start_lane_role_starts(clients, pathways, patient_id):
    resp = clients["doc"].post("/api/v1/pathways/fixture_visit/instances", json={"patient_id": patient_id})
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "cannot_start_pathway"
    resp = clients["rec"].post("/api/v1/pathways/no_such/instances", json={"patient_id": patient_id})
    assert resp.status_code == 404


def test_complete_validates_then_advances(clients, pathways, patient_id):
    triage = _start(clients, patient_id)["open_tasks"][0]
    bad = clients["nurse"].post(f"/api/v1/tasks/{triage['id']}/complete",
                                json={"data": dict(TRIAGE_OK, spo2=130)})
    assert bad.status_code == 422 and "spo2" in bad.get_json()["error"]["fields"]
    assert clients["doc"].post(f"/api/v1/tasks/{triage['id']}/complete", json={"data": TRIAGE_OK}).status_code == 403
    ok = clients["nurse"].post(f"/api/v1/tasks/{triage['id']}/complete", json={"data": TRIAGE_OK})
    assert ok.status_code == 200
    instance = ok.get_json()["instance"]
    assert [t["task"] for t in instance["open_tasks"]] == ["consult"]
    assert instance["history"][-1]["user"] == "nurse" and instance["history"][-1]["action"] == "completed"
    again = clients["nurse"].post(f"/api/v1/tasks/{triage['id']}/complete", json={"data": TRIAGE_OK})
    assert again.status_code == 409


def test_claim_release_assign_over_api(clients, pathways, patient_id, make_user):
    triage = _start(clients, patient_id)["open_tasks"][0]
    tid = triage["id"]
    assert clients["nurse"].post(f"/api/v1/tasks/{tid}/claim").status_code == 200
    assert clients["nurse2"].post(f"/api/v1/tasks/{tid}/claim").status_code == 409
    assert clients["nurse2"].post(f"/api/v1/tasks/{tid}/complete", json={"data": TRIAGE_OK}).status_code == 409
    mine = clients["nurse"].get("/api/v1/tasks?status=mine").get_json()["items"]
    assert [t["id"] for t in mine] == [tid]
    assert clients["nurse"].post(f"/api/v1/tasks/{tid}/release").status_code == 200
    nurse2_id = clients["nurse2"].get("/api/v1/auth/me").get_json()["user"]["id"]
    assert clients["nurse"].post(f"/api/v1/tasks/{tid}/assign", json={"user_id": nurse2_id}).status_code == 403
    assigned = clients["boss"].post(f"/api/v1/tasks/{tid}/assign", json={"user_id": nurse2_id})
    assert assigned.status_code == 200 and assigned.get_json()["claimed_by_id"] == nurse2_id


def test_fault_answers_409_keeps_error_mark_and_admin_retries(clients, pathways, patient_id):
    triage = _start(clients, patient_id)["open_tasks"][0]
    consult = clients["nurse"].post(f"/api/v1/tasks/{triage['id']}/complete",
                                    json={"data": TRIAGE_OK}).get_json()["instance"]["open_tasks"][0]
    FAIL_NEXT.append(True)
    try:
        resp = clients["doc"].post(f"/api/v1/tasks/{consult['id']}/complete", json={"data": {"reviewed": True}})
    finally:
        FAIL_NEXT.clear()
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "pathway_fault"
    iid = consult["instance_id"]
    detail = clients["doc"].get(f"/api/v1/process-instances/{iid}").get_json()
    assert detail["status"] == "error" and "records service is down" in detail["error"]["message"]
    errors = clients["boss"].get("/api/v1/process-instances?status=error").get_json()["items"]
    assert [e["id"] for e in errors] == [iid]
    assert clients["doc"].post(f"/api/v1/process-instances/{iid}/retry").status_code == 403
    retried = clients["boss"].post(f"/api/v1/process-instances/{iid}/retry")
    assert retried.status_code == 200 and retried.get_json()["status"] == "completed"


def test_cancel_requires_reason(clients, pathways, patient_id):
    iid = _start(clients, patient_id)["id"]
    assert clients["boss"].post(f"/api/v1/process-instances/{iid}/cancel", json={}).status_code == 422
    resp = clients["boss"].post(f"/api/v1/process-instances/{iid}/cancel", json={"reason": "Left before triage"})
    assert resp.status_code == 200 and resp.get_json()["status"] == "cancelled"
    assert clients["nurse"].get("/api/v1/tasks").get_json()["items"] == []


def test_pathways_list_versions(clients, pathways):
    items = {p["key"]: p for p in clients["nurse"].get("/api/v1/pathways").get_json()["items"]}
    assert items["fixture_visit"]["latest_version"] == 1 and items["fixture_visit"]["start_role"] == "reception"


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def test_my_work_page_and_task_form_round_trip(clients, pathways, patient_id):
    triage = _start(clients, patient_id)["open_tasks"][0]
    page = clients["nurse"].get("/work")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Triage" in html and "HMS-000001" in html
    empty = clients["doc"].get("/work").get_data(as_text=True)
    assert "Nothing waiting here" in empty
    task_page = clients["nurse"].get(f"/work/tasks/{triage['id']}")
    html = task_page.get_data(as_text=True)
    assert task_page.status_code == 200 and "Penicillin" in html and 'name="temperature_c"' in html
    form = {k: str(v) for k, v in TRIAGE_OK.items()}
    form["temperature_c"] = "60"
    resp = clients["nurse"].post(f"/work/tasks/{triage['id']}/complete", data=dict(form, csrf_token=_csrf(html)))
    assert resp.status_code == 422 and "aria-invalid" in resp.get_data(as_text=True)
    form["temperature_c"] = "37.5"
    resp = clients["nurse"].post(f"/work/tasks/{triage['id']}/complete", data=dict(form, csrf_token=_csrf(html)))
    assert resp.status_code == 302
    assert [t["task"] for t in clients["doc"].get("/api/v1/tasks").get_json()["items"]] == ["consult"]
    assert clients["keeper"].get(f"/work/tasks/{triage['id']}").status_code == 403
