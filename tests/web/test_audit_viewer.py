"""The audit log viewer: filters, paging, the local-date range, chain verification, and the
audit row every viewing leaves behind (ids only, never what was typed)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest
from sqlalchemy import select, text

from hms import audit
from hms.audit import Actor, AuditLog
from hms.auth.services import actor_for
from hms.auth.models import User
from tests.conftest import login

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
SYSTEM = Actor.system("tester")


@pytest.fixture
def admin(app, make_user):
    make_user("chief_admin", "admin")
    client = app.test_client()
    login(client, "chief_admin")
    return client


def add_rows(database, count, action="bed.reserve", actor=SYSTEM, patient_id=None):
    with database.transaction() as s:
        for i in range(count):
            audit.record(s, actor, action, "bed", i, patient_id=patient_id, detail={"n": i})


def api(client, expect=200, **params):
    resp = client.get("/api/v1/audit", query_string=params)
    assert resp.status_code == expect, resp.get_json()
    return resp.get_json()


def last_row(database) -> AuditLog:
    with database.transaction(readonly=True) as s:
        return s.execute(select(AuditLog).order_by(AuditLog.seq.desc()).limit(1)).scalar_one()


def register(database, name, cnic):
    from hms.patients.services import register_patient

    with database.transaction() as s:
        p = register_patient(s, SYSTEM, {"name": name, "sex": "male", "age_years": 40, "cnic": cnic,
                                         "relation": "S/O", "guardian_name": "Abdul Ghani"})
        return p.id, p.mrn


def csrf(client) -> str:
    return CSRF_RE.search(client.get("/admin/audit").get_data(as_text=True)).group(1)


# --- access ----------------------------------------------------------------------------

def test_only_administrators_see_the_log(app, as_role, make_user):
    doctor = as_role("doctor")
    assert doctor.get("/api/v1/audit").status_code == 403
    assert doctor.get("/admin/audit").status_code == 403
    anonymous = app.test_client()
    assert anonymous.get("/api/v1/audit").status_code == 401
    assert "/login" in anonymous.get("/admin/audit").headers["Location"]


def test_admin_navigation_links_to_the_audit_page(admin):
    assert 'href="/admin/audit"' in admin.get("/").get_data(as_text=True)


# --- listing and paging ----------------------------------------------------------------

def test_api_lists_newest_first_with_total(admin, database):
    add_rows(database, 5, patient_id=42)
    body = api(admin, action="bed.reserve")
    assert body["total"] == 5
    seqs = [item["seq"] for item in body["items"]]
    assert seqs == sorted(seqs, reverse=True)
    first = body["items"][0]
    assert first["action"] == "bed.reserve" and first["patient_id"] == 42 and first["actor"] == "tester"
    assert first["actor_id"] is None and first["detail"] == {"n": 4}
    assert datetime.fromisoformat(first["at"]).tzinfo is not None


def test_pages_are_pinned_to_a_snapshot(admin, database):
    """Each viewing appends an "audit.view" row; page 2 must continue exactly where page 1
    ended instead of shifting by the rows added meanwhile."""
    add_rows(database, 12)
    page1 = api(admin, size=5)
    page2 = api(admin, size=5, page=2, upto=page1["upto"])
    assert page2["total"] == page1["total"]
    assert page2["items"][0]["seq"] == page1["items"][-1]["seq"] - 1
    assert page1["items"][0]["seq"] == page1["upto"]
    newer = api(admin, size=5)
    assert newer["upto"] == page1["upto"] + 2  # the two viewings above
    assert newer["items"][0]["action"] == "audit.view"


@pytest.mark.parametrize("params", [{"size": 0}, {"size": 101}, {"page": 0}, {"page": "x"}, {"upto": "x"},
                                    {"upto": "9" * 30}])
def test_bad_paging_is_a_400(admin, params):
    assert api(admin, expect=400, **params)["error"]["code"] == "invalid_paging"


def test_page_shows_rows_and_a_pager_that_keeps_the_filters(admin, database):
    add_rows(database, 30)
    html = admin.get("/admin/audit?action=bed.reserve&size=10").get_data(as_text=True)
    assert html.count("<code>bed.reserve</code>") == 10
    assert "30 rows, newest first" in html
    assert "Page 1 of 3" in html
    next_link = re.search(r'href="([^"]+)" rel="next"', html).group(1)
    assert "action=bed.reserve" in next_link and "upto=" in next_link and "size=10" in next_link
    html2 = admin.get(next_link.replace("&amp;", "&")).get_data(as_text=True)
    assert "Page 2 of 3" in html2 and html2.count("<code>bed.reserve</code>") == 10


def test_page_empty_state_when_nothing_matches(admin):
    resp = admin.get("/admin/audit?action=nothing.matches")
    assert resp.status_code == 200
    assert "No audit rows match these filters." in resp.get_data(as_text=True)


# --- filters ---------------------------------------------------------------------------

def test_patient_filter_by_id_or_mrn(admin, database):
    ali, ali_mrn = register(database, "Ali Raza", "35202-1234567-1")
    other, _ = register(database, "Bilal Ahmed", "42101-7654321-3")
    add_rows(database, 3, action="patient.view", patient_id=ali)
    add_rows(database, 2, action="patient.view", patient_id=other)
    by_id = api(admin, patient_id=ali, action="patient.*")
    by_mrn = api(admin, mrn=ali_mrn.lower(), action="patient.*")
    assert by_id["total"] == by_mrn["total"] == 4  # three views and the registration
    assert {i["patient_id"] for i in by_id["items"]} == {ali}
    assert by_id["items"] == by_mrn["items"]
    assert api(admin, patient_id=99999)["total"] == 0
    assert api(admin, mrn="HMS-999999")["total"] == 0
    html = admin.get(f"/admin/audit?patient={ali_mrn}").get_data(as_text=True)
    assert f"Patient id {ali}" in html and ali_mrn in html
    assert "Ali Raza" not in html  # the log shows ids and MRNs, never names


def test_user_filter_by_username_and_by_system_actor(admin, database, make_user):
    nurse_id = make_user("nurse_saima", "nurse")
    with database.transaction() as s:
        nurse = s.get(User, nurse_id)
        audit.record(s, actor_for(nurse, "10.1.1.1"), "vitals.record", "vitals", 1, patient_id=5)
    add_rows(database, 2, actor=Actor.system("demo"))
    mine = api(admin, user="Nurse_Saima")
    assert {(i["actor_id"], i["action"]) for i in mine["items"]} >= {(nurse_id, "vitals.record")}
    assert {i["actor_id"] for i in mine["items"]} == {nurse_id}
    demo = api(admin, user="demo")
    assert demo["total"] == 2 and {i["actor"] for i in demo["items"]} == {"demo"}
    assert api(admin, user="nobody")["total"] == 0


def test_action_filter_exact_and_prefix(admin, database):
    add_rows(database, 2, action="bed.reserve")
    add_rows(database, 1, action="bed.release")
    add_rows(database, 1, action="lab_order.create")
    add_rows(database, 1, action="labxorder.create")
    assert api(admin, action="bed.release")["total"] == 1
    assert api(admin, action="bed.*")["total"] == 3
    # "_" is a literal here, not SQL's one-character wildcard
    assert [i["action"] for i in api(admin, action="lab_order.*")["items"]] == ["lab_order.create"]


def test_dates_are_local_days(admin, database, monkeypatch):
    """Asia/Karachi is UTC+5: 19:00 UTC is already the next local day."""
    times = iter([datetime(2025, 3, 1, 18, 30, tzinfo=timezone.utc),   # 1 Mar 23:30 local
                  datetime(2025, 3, 1, 19, 30, tzinfo=timezone.utc),   # 2 Mar 00:30
                  datetime(2025, 3, 2, 18, 59, tzinfo=timezone.utc),   # 2 Mar 23:59
                  datetime(2025, 3, 2, 19, 0, tzinfo=timezone.utc)])   # 3 Mar 00:00
    monkeypatch.setattr(audit, "utcnow", lambda: next(times))
    add_rows(database, 4, action="bed.clean")
    monkeypatch.undo()
    day = api(admin, action="bed.clean", **{"from": "2025-03-02", "to": "2025-03-02"})
    assert sorted(i["entity_id"] for i in day["items"]) == ["1", "2"]
    assert api(admin, action="bed.clean", **{"from": "2025-03-03"})["total"] == 1
    assert api(admin, action="bed.clean", to="2025-03-01")["total"] == 1
    html = admin.get("/admin/audit?action=bed.clean&from=2025-03-02&to=2025-03-02").get_data(as_text=True)
    assert "02 Mar 2025 00:30:00" in html and "02 Mar 2025 23:59:00" in html


@pytest.mark.parametrize("params, field", [
    ({"from": "2025-13-01"}, "from"),
    ({"patient_id": "²"}, "patient_id"),
    ({"patient_id": "9" * 30}, "patient_id"),
    ({"patient_id": "1", "mrn": "HMS-000001"}, "mrn"),
    ({"from": "2025-03-05", "to": "2025-03-01"}, "to"),
    ({"patient_id": "abc"}, "patient_id"),
    ({"user": "Ali Raza"}, "user"),
    ({"action": "x; drop table"}, "action"),
])
def test_bad_filters_are_a_422_naming_the_field(admin, params, field):
    body = api(admin, expect=422, **params)
    assert list(body["error"]["fields"]) == [field]


def test_page_shows_filter_errors_next_to_the_field(admin):
    resp = admin.get("/admin/audit?from=yesterday")
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert 'id="from-error"' in html and "Use a date like" in html


# --- every viewing is audited ------------------------------------------------------------

def test_viewing_records_audit_view_with_the_filters_ids(admin, database, make_user):
    pid, mrn = register(database, "Ali Raza", "35202-1234567-1")
    nurse_id = make_user("nurse_saima", "nurse")
    api(admin, mrn=mrn, user="nurse_saima", action="patient.*", **{"from": "2025-01-01"})
    row = last_row(database)
    assert (row.action, row.entity_type, row.patient_id) == ("audit.view", "audit_log", pid)
    assert row.actor_name == "chief_admin" and row.actor_id is not None
    assert row.detail == {"patient_id": pid, "user_id": nurse_id, "action": "patient.*",
                          "from": "2025-01-01", "page": 1}


def test_typed_text_that_matches_no_patient_is_not_stored(admin, database):
    """Someone types a name into the patient box: nothing matches, and the audit row
    says so without keeping the name."""
    resp = admin.get("/admin/audit?patient=Ali+Raza")
    assert resp.status_code == 200
    assert "No patient has that MRN or id." in resp.get_data(as_text=True)
    row = last_row(database)
    assert row.action == "audit.view" and row.patient_id is None
    assert row.detail == {"unmatched": True, "page": 1}
    with database.engine.connect() as conn:
        stored = conn.execute(text("SELECT detail FROM audit_log")).scalars().all()
    assert not any("Ali" in json.dumps(d) for d in stored)


# --- verification --------------------------------------------------------------------------

def test_verify_button_shows_rows_verified(admin, database):
    add_rows(database, 4)
    resp = admin.post("/admin/audit/verify", data={"csrf_token": csrf(admin)})
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert "The chain is intact" in html
    checked = int(re.search(r"<strong>(\d+)</strong>\s+rows? verified", html).group(1))
    assert checked >= 4
    row = last_row(database)
    assert row.action == "audit.verify" and row.detail == {"ok": True, "rows_checked": checked,
                                                           "first_bad_seq": None}


def test_verify_button_names_the_first_bad_row(admin, database):
    add_rows(database, 4)
    bad_seq = last_row(database).seq - 1
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET action = 'bed.release' WHERE seq = :s"), {"s": bad_seq})
    token = csrf(admin)
    html = admin.post("/admin/audit/verify", data={"csrf_token": token}).get_data(as_text=True)
    assert "BROKEN" in html and f"seq {bad_seq}</strong>" in html
    assert f"{bad_seq - 1} rows verified before it" in html


def test_verify_form_needs_the_csrf_token(admin):
    assert admin.post("/admin/audit/verify").status_code == 400


def test_api_verify(admin, database):
    add_rows(database, 3)
    ok = admin.post("/api/v1/audit/verify").get_json()
    assert ok["ok"] is True and ok["first_bad_seq"] is None and ok["rows_checked"] >= 3
    with database.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 2"))
    broken = admin.post("/api/v1/audit/verify").get_json()
    assert (broken["ok"], broken["first_bad_seq"], broken["rows_checked"]) == (False, 2, 1)
    assert "seq 2" in broken["summary"]
