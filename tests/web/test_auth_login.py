"""Logging in and out: one message for every bad login, lockout, CSRF on the login form,
idle timeout, logout, safe redirects and the session cookie's flags."""

from __future__ import annotations

import re
from datetime import timedelta

from hms.auth.models import LoginAttempt
from hms.auth.services import BAD_LOGIN, LOCKED_OUT
from hms.db import utcnow
from tests.conftest import TEST_PASSWORD, login

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(client, url="/login") -> str:
    return CSRF_RE.search(client.get(url).get_data(as_text=True)).group(1)


def api_login(client, username, password=TEST_PASSWORD):
    return client.post("/api/v1/auth/login", json={"username": username, "password": password})


def fail_logins(client, username, times):
    for _ in range(times):
        resp = api_login(client, username, "wrong-password-1")
        assert resp.status_code == 401, resp.get_json()


# --- bad credentials and lockout ------------------------------------------------------

def test_unknown_user_and_wrong_password_get_the_same_answer(client, make_user):
    make_user("amina", "doctor")
    wrong_password = api_login(client, "amina", "not-her-password")
    unknown_user = api_login(client, "nobody-here", "not-her-password")
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.get_json() == unknown_user.get_json()
    assert wrong_password.get_json()["error"]["message"] == BAD_LOGIN


def test_deactivated_user_gets_the_same_answer_as_a_wrong_password(client, make_user, as_role):
    user_id = make_user("amina", "doctor")
    admin = as_role("admin")
    assert admin.patch(f"/api/v1/users/{user_id}", json={"active": False}).status_code == 200
    resp = api_login(client, "amina")
    assert resp.status_code == 401
    assert resp.get_json()["error"] == {"code": "bad_credentials", "message": BAD_LOGIN, "fields": {}}


def test_ten_failures_lock_the_account_even_for_the_right_password(client, make_user):
    make_user("amina", "doctor")
    fail_logins(client, "amina", 10)
    resp = api_login(client, "amina")
    assert resp.status_code == 429
    assert resp.get_json()["error"]["code"] == "locked_out"
    assert client.get("/api/v1/auth/me").status_code == 401  # not logged in


def test_nine_failures_do_not_lock(client, make_user):
    make_user("amina", "doctor")
    fail_logins(client, "amina", 9)
    assert api_login(client, "amina").status_code == 200


def test_unknown_usernames_lock_too_with_the_same_messages(client, make_user):
    make_user("amina", "doctor")
    fail_logins(client, "amina", 10)
    fail_logins(client, "ghost", 10)
    real, ghost = api_login(client, "amina"), api_login(client, "ghost")
    assert real.status_code == ghost.status_code == 429
    assert real.get_json() == ghost.get_json()
    assert ghost.get_json()["error"]["message"] == LOCKED_OUT


def test_failures_older_than_the_window_do_not_count(client, make_user, database):
    make_user("amina", "doctor")
    long_ago = utcnow() - timedelta(minutes=16)  # the window is 15 minutes
    with database.transaction() as s:
        s.add_all(LoginAttempt(username="amina", success=False, at=long_ago, ip="10.0.0.9")
                  for _ in range(10))
    assert api_login(client, "amina").status_code == 200


def test_a_successful_login_starts_the_count_again(client, make_user):
    make_user("amina", "doctor")
    fail_logins(client, "amina", 9)
    assert api_login(client, "amina").status_code == 200
    fail_logins(client, "amina", 9)
    assert api_login(client, "amina").status_code == 200


def test_a_password_reset_by_an_admin_lifts_the_lockout(client, make_user, as_role):
    user_id = make_user("amina", "doctor")
    fail_logins(client, "amina", 10)
    assert api_login(client, "amina").status_code == 429
    admin = as_role("admin")
    assert admin.post(f"/api/v1/users/{user_id}/password", json={"password": "fresh-start-77"}).status_code == 200
    assert api_login(client, "amina", "fresh-start-77").status_code == 200


def test_locked_html_login_shows_the_lockout_message(client, make_user):
    make_user("amina", "doctor")
    fail_logins(client, "amina", 10)
    resp = client.post("/login", data={"username": "amina", "password": TEST_PASSWORD,
                                       "csrf_token": csrf_from(client)})
    assert resp.status_code == 429
    assert "Too many failed logins" in resp.get_data(as_text=True)


def test_a_very_long_username_is_an_ordinary_failed_login(client):
    resp = api_login(client, "x" * 500)
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == "bad_credentials"


def test_login_body_is_validated_per_field(client):
    resp = client.post("/api/v1/auth/login", json={"user": "amina", "password": 5})
    assert resp.status_code == 422
    fields = resp.get_json()["error"]["fields"]
    assert set(fields) == {"user", "username", "password"}


# --- the HTML login form ------------------------------------------------------------------

def test_html_login_without_csrf_token_is_refused(client, make_user):
    make_user("amina", "doctor")
    resp = client.post("/login", data={"username": "amina", "password": TEST_PASSWORD})
    assert resp.status_code == 400
    assert client.get("/api/v1/auth/me").status_code == 401


def test_html_login_with_csrf_token_logs_in_and_follows_next(client, make_user):
    make_user("amina", "doctor")
    resp = client.post("/login", data={"username": "amina", "password": TEST_PASSWORD,
                                       "csrf_token": csrf_from(client), "next": "/admin/users"})
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/admin/users"
    assert client.get("/api/v1/auth/me").get_json()["user"]["username"] == "amina"


def test_html_login_wrong_password_shows_the_form_again(client, make_user):
    make_user("amina", "doctor")
    resp = client.post("/login", data={"username": "amina", "password": "nope-nope-1",
                                       "csrf_token": csrf_from(client)})
    assert resp.status_code == 401
    page = resp.get_data(as_text=True)
    assert BAD_LOGIN in page and 'value="amina"' in page


def test_next_never_leaves_the_site(client, make_user):
    make_user("amina", "doctor")
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example/"):
        c = client.application.test_client()
        resp = c.post("/login", data={"username": "amina", "password": TEST_PASSWORD,
                                      "csrf_token": csrf_from(c), "next": target})
        assert resp.status_code == 302
        assert resp.headers["Location"] == "/", target


def test_pages_send_anonymous_users_to_login_and_back(client, make_user):
    resp = client.get("/admin/users")
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/login?next=")


# --- session cookie ---------------------------------------------------------------------------

def test_session_cookie_is_httponly_and_samesite_lax(client, make_user):
    make_user("amina", "doctor")
    cookie = api_login(client, "amina").headers["Set-Cookie"]
    assert "hms_session=" in cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # test runs over http; production adds it


def test_session_cookie_is_secure_in_production(config, database, make_user):
    from hms.app import create_app

    prod = create_app(config.with_overrides(env="production", secret_key="s" * 40), database)
    make_user("amina", "doctor")
    cookie = api_login(prod.test_client(), "amina").headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


# --- idle timeout ---------------------------------------------------------------------------

def _idle_for(client, minutes):
    with client.session_transaction() as sess:
        sess["last_seen"] -= minutes * 60


def test_idle_api_session_expires_with_session_expired(client, make_user):
    make_user("amina", "doctor")
    login(client, "amina")
    _idle_for(client, 31)
    resp = client.get("/api/v1/auth/me")
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == "session_expired"
    # The session is over, not just this request.
    assert client.get("/api/v1/auth/me").get_json()["error"]["code"] == "login_required"


def test_idle_page_session_redirects_to_login_with_expired(client, make_user):
    make_user("amina", "doctor")
    login(client, "amina")
    _idle_for(client, 31)
    resp = client.get("/")
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/login?") and "expired=1" in resp.headers["Location"]
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "period of inactivity" in page


def test_activity_within_the_idle_period_keeps_the_session(client, make_user):
    make_user("amina", "doctor")
    login(client, "amina")
    _idle_for(client, 29)
    assert client.get("/api/v1/auth/me").status_code == 200
    _idle_for(client, 29)  # 29 minutes after the last request, 58 after login
    assert client.get("/api/v1/auth/me").status_code == 200


# --- logout ---------------------------------------------------------------------------------

def test_html_logout_ends_the_session_and_any_copy_of_its_cookie(client, make_user, app):
    make_user("amina", "doctor")
    login(client, "amina")
    stolen = app.test_client()
    stolen.set_cookie("hms_session", client.get_cookie("hms_session").value)
    assert stolen.get("/api/v1/auth/me").status_code == 200
    resp = client.post("/logout", data={"csrf_token": csrf_from(client, "/")})
    assert resp.status_code == 302 and resp.headers["Location"] == "/login"
    assert client.get("/api/v1/auth/me").status_code == 401
    assert stolen.get("/api/v1/auth/me").status_code == 401


def test_html_logout_without_csrf_token_is_refused(client, make_user):
    make_user("amina", "doctor")
    login(client, "amina")
    assert client.post("/logout").status_code == 400
    assert client.get("/api/v1/auth/me").status_code == 200


def test_api_logout_ends_the_session(client, make_user):
    make_user("amina", "doctor")
    login(client, "amina")
    assert client.post("/api/v1/auth/logout").get_json() == {"logged_out": True}
    assert client.get("/api/v1/auth/me").status_code == 401
    login(client, "amina")  # and logging in again works
    assert client.get("/api/v1/auth/me").status_code == 200
