"""API tokens for integrations: issued once, used as a bearer, recorded, revocable, audited."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hms.audit import AuditLog
from hms.auth.models import ApiToken


@pytest.fixture
def admin(as_role):
    return as_role("admin")


@pytest.fixture
def analyser_id(make_user):
    return make_user("lab_analyser", "lab_technician", full_name="Lab Analyser Interface")


def issue(admin, user_id, name="Sysmex XN analyser"):
    resp = admin.post(f"/api/v1/users/{user_id}/tokens", json={"name": name})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def bearer(app, raw):
    """A fresh client (no cookies) that sends the token on every request."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {raw}"
    return client


def test_issued_token_authenticates_as_its_user(app, admin, analyser_id):
    body = issue(admin, analyser_id)
    raw = body["raw_token"]
    assert raw.startswith("hms_") and body["token"]["prefix"] == raw[:12]
    resp = bearer(app, raw).get("/api/v1/auth/me")
    assert resp.status_code == 200
    assert resp.get_json()["user"]["username"] == "lab_analyser"
    assert resp.get_json()["via_token"] is True
    assert "Set-Cookie" not in resp.headers  # an integration gets no browser session


def test_token_has_the_permissions_of_its_user_only(app, admin, analyser_id):
    raw = issue(admin, analyser_id)["raw_token"]
    assert bearer(app, raw).get("/api/v1/users").status_code == 403


def test_raw_token_is_shown_once_and_only_its_hash_is_stored(admin, analyser_id, database):
    raw = issue(admin, analyser_id)["raw_token"]
    listed = admin.get(f"/api/v1/users/{analyser_id}/tokens").get_json()["tokens"]
    assert len(listed) == 1 and raw not in str(listed)
    with database.transaction(readonly=True) as s:
        stored = s.execute(select(ApiToken)).scalar_one()
        assert stored.token_hash != raw and raw not in stored.token_hash
        assert stored.created_by_id is not None


def test_token_use_is_recorded(app, admin, analyser_id):
    body = issue(admin, analyser_id)
    assert body["token"]["last_used_at"] is None
    bearer(app, body["raw_token"]).get("/api/v1/auth/me")
    listed = admin.get(f"/api/v1/users/{analyser_id}/tokens").get_json()["tokens"]
    assert listed[0]["last_used_at"] is not None


def test_revoked_token_gets_401(app, admin, analyser_id):
    body = issue(admin, analyser_id)
    client = bearer(app, body["raw_token"])
    assert client.get("/api/v1/auth/me").status_code == 200
    resp = admin.delete(f"/api/v1/tokens/{body['token']['id']}")
    assert resp.status_code == 200
    assert resp.get_json()["token"]["active"] is False and resp.get_json()["token"]["revoked_at"]
    denied = client.get("/api/v1/auth/me")
    assert denied.status_code == 401
    assert denied.get_json()["error"]["code"] == "invalid_token"


def test_revoking_twice_is_harmless(admin, analyser_id):
    token_id = issue(admin, analyser_id)["token"]["id"]
    first = admin.delete(f"/api/v1/tokens/{token_id}").get_json()["token"]["revoked_at"]
    again = admin.delete(f"/api/v1/tokens/{token_id}")
    assert again.status_code == 200 and again.get_json()["token"]["revoked_at"] == first


def test_unknown_token_gets_401(app):
    resp = bearer(app, "hms_made-up-token").get("/api/v1/auth/me")
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == "invalid_token"


def test_deactivation_stops_tokens_and_reactivation_does_not_revive_them(app, admin, analyser_id):
    raw = issue(admin, analyser_id)["raw_token"]
    admin.patch(f"/api/v1/users/{analyser_id}", json={"active": False})
    assert bearer(app, raw).get("/api/v1/auth/me").status_code == 401
    admin.patch(f"/api/v1/users/{analyser_id}", json={"active": True})
    assert bearer(app, raw).get("/api/v1/auth/me").status_code == 401
    listed = admin.get(f"/api/v1/users/{analyser_id}/tokens").get_json()["tokens"]
    assert [t["active"] for t in listed] == [False]


def test_no_token_for_a_deactivated_account(admin, analyser_id):
    admin.patch(f"/api/v1/users/{analyser_id}", json={"active": False})
    resp = admin.post(f"/api/v1/users/{analyser_id}/tokens", json={"name": "Analyser"})
    assert resp.status_code == 409
    assert resp.get_json()["error"]["code"] == "user_inactive"


def test_token_issue_and_revoke_are_audited(admin, analyser_id, database):
    token_id = issue(admin, analyser_id)["token"]["id"]
    admin.delete(f"/api/v1/tokens/{token_id}")
    with database.transaction(readonly=True) as s:
        rows = s.execute(select(AuditLog).where(AuditLog.entity_type == "api_token")
                         .order_by(AuditLog.seq)).scalars().all()
        assert [(r.action, r.entity_id, r.actor_name) for r in rows] == [
            ("api_token.issue", str(token_id), "u_admin_0"),
            ("api_token.revoke", str(token_id), "u_admin_0")]
        assert rows[0].detail == {"user_id": analyser_id}


def test_token_name_is_required(admin, analyser_id):
    resp = admin.post(f"/api/v1/users/{analyser_id}/tokens", json={"name": "  "})
    assert resp.status_code == 422
    assert "name" in resp.get_json()["error"]["fields"]


def test_token_requests_need_no_csrf_and_logout_does_not_end_the_token(app, admin, analyser_id):
    raw = issue(admin, analyser_id)["raw_token"]
    client = bearer(app, raw)
    assert client.post("/api/v1/auth/logout").get_json() == {"logged_out": False}
    assert client.get("/api/v1/auth/me").status_code == 200


def test_revoking_an_unknown_token_is_404(admin):
    resp = admin.delete("/api/v1/tokens/9999")
    assert resp.status_code == 404
    assert resp.get_json()["error"]["code"] == "token_not_found"
