"""Every refusal has one shape: `{"error": {"code", "message", "fields"}}` under /api and an
HTML page elsewhere, with the right status, and never a stack trace."""

from __future__ import annotations

import json
import re

import pytest

from hms.auth.permissions import public
from tests.conftest import TEST_PASSWORD, login

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
SECRET_DETAIL = "database password is hunter2"  # must never reach a user
TWO_MB = 2 * 1024 * 1024


def _boom():
    raise RuntimeError(SECRET_DETAIL)


@pytest.fixture
def app(config, database):
    """An app with a 1 MB body limit and test-only routes that fail unexpectedly."""
    from hms.app import create_app

    app = create_app(config.with_overrides(max_upload_mb=1), database)
    app.add_url_rule("/api/v1/test-boom", "test_api_boom", public(_boom))
    app.add_url_rule("/test-boom", "test_page_boom", public(_boom))
    return app


@pytest.fixture
def admin(as_role):
    return as_role("admin")


def assert_api_error(resp, status, code=None):
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "fields"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["fields"], dict)
    if code:
        assert body["error"]["code"] == code
    return body["error"]


def assert_html_error(resp, status):
    assert resp.status_code == status
    assert resp.mimetype == "text/html"
    page = resp.get_data(as_text=True)
    assert "Traceback" not in page and 'File "' not in page
    return page


def csrf_from(client, url="/login") -> str:
    return CSRF_RE.search(client.get(url).get_data(as_text=True)).group(1)


# --- JSON under /api ----------------------------------------------------------------------------

def test_400_bad_json(client):
    resp = client.post("/api/v1/auth/login", data="{not json", content_type="application/json")
    assert_api_error(resp, 400, "invalid_json")


def test_400_form_body_on_the_api(client):
    resp = client.post("/api/v1/auth/login", data={"username": "a"})
    assert_api_error(resp, 400, "json_required")


def test_401_not_logged_in(client):
    assert_api_error(client.get("/api/v1/auth/me"), 401, "login_required")


def test_403_wrong_role(as_role):
    assert_api_error(as_role("nurse").get("/api/v1/users"), 403, "forbidden")


def test_404_unknown_address_and_unknown_record(client, admin):
    assert_api_error(client.get("/api/v1/no-such-thing"), 404, "not_found")
    assert_api_error(admin.get("/api/v1/users/424242"), 404, "user_not_found")


def test_405_wrong_method_says_which_are_allowed(admin):
    resp = admin.delete("/api/v1/auth/me")
    assert_api_error(resp, 405, "method_not_allowed")
    assert "GET" in resp.headers["Allow"]


def test_409_conflict(admin):
    body = {"username": "hina", "full_name": "Hina Shah", "password": "pharmacy-1234"}
    assert admin.post("/api/v1/users", json=body).status_code == 201
    error = assert_api_error(admin.post("/api/v1/users", json=body), 409, "username_taken")
    assert error["fields"] == {"username": ["already taken"]}


def test_413_body_over_the_limit(client):
    payload = json.dumps({"username": "x" * TWO_MB, "password": "y"})
    resp = client.post("/api/v1/auth/login", data=payload, content_type="application/json")
    assert_api_error(resp, 413, "payload_too_large")


def test_422_field_errors(admin):
    resp = admin.post("/api/v1/users", json={"username": 5, "full_name": "Hina", "extra": 1})
    error = assert_api_error(resp, 422, "invalid")
    assert error["fields"]["username"] == ["Not a valid string."]
    assert error["fields"]["extra"] == ["Unknown field."]
    assert error["fields"]["password"] == ["Missing data for required field."]


def test_429_locked_out(client, make_user):
    make_user("hina", "pharmacist")
    for _ in range(10):
        client.post("/api/v1/auth/login", json={"username": "hina", "password": "wrong-one-1"})
    resp = client.post("/api/v1/auth/login", json={"username": "hina", "password": TEST_PASSWORD})
    assert_api_error(resp, 429, "locked_out")


def test_500_unexpected_error_is_json_without_details(client, caplog):
    resp = client.get("/api/v1/test-boom")
    error = assert_api_error(resp, 500, "internal_error")
    body = resp.get_data(as_text=True)
    assert SECRET_DETAIL not in body and "RuntimeError" not in body and "Traceback" not in body
    assert error["fields"] == {}
    assert SECRET_DETAIL in caplog.text  # ... but it is logged for the operators


def test_500_rolls_back_the_request(app, database):
    from sqlalchemy import func, select

    from hms.auth.models import User
    from hms.web.context import db_session

    def half_done():
        db_session().add(User(username="ghost", full_name="Ghost", password_hash="x", session_token="t"))
        db_session().flush()
        raise RuntimeError(SECRET_DETAIL)

    app.add_url_rule("/api/v1/test-half-done", "test_half_done", public(half_done))
    assert_api_error(app.test_client().get("/api/v1/test-half-done"), 500)
    with database.transaction(readonly=True) as s:
        assert s.execute(select(func.count()).select_from(User)).scalar_one() == 0


# --- HTML pages elsewhere -------------------------------------------------------------------------

def test_html_400_missing_csrf_token(client):
    page = assert_html_error(client.post("/login", data={"username": "a", "password": "b"}), 400)
    assert "Reload the page" in page


def test_html_401_bad_login(client):
    resp = client.post("/login", data={"username": "nobody", "password": "wrong-pass-1",
                                       "csrf_token": csrf_from(client)})
    assert "Unknown username or wrong password" in assert_html_error(resp, 401)


def test_html_403_wrong_role(as_role):
    page = assert_html_error(as_role("cashier").get("/admin/users"), 403)
    assert "You do not have permission" in page and 'href="/"' in page


def test_html_404(client):
    page = assert_html_error(client.get("/no-such-page"), 404)
    assert "There is nothing at this address" in page


def test_html_405(admin):
    resp = admin.get("/logout")
    assert "does not accept that method" in assert_html_error(resp, 405)
    assert "POST" in resp.headers["Allow"]


def test_html_409_and_422_from_a_form(admin):
    token = csrf_from(admin, "/admin/users")
    form = {"csrf_token": token, "username": "hina", "full_name": "Hina Shah", "password": "pharmacy-1234"}
    assert admin.post("/admin/users", data=form).status_code == 302
    assert "is taken" in assert_html_error(admin.post("/admin/users", data=form), 409)
    bad = {**form, "username": "x"}
    assert "3-60 characters" in assert_html_error(admin.post("/admin/users", data=bad), 422)


def test_html_413_body_over_the_limit(client):
    resp = client.post("/login", data={"username": "x" * TWO_MB, "password": "y"})
    assert "too large" in assert_html_error(resp, 413)


def test_html_500_without_details(client, make_user):
    make_user("hina", "pharmacist")
    login(client, "hina")
    page = assert_html_error(client.get("/test-boom"), 500)
    assert SECRET_DETAIL not in page and "RuntimeError" not in page
    assert "Something went wrong on our side" in page
