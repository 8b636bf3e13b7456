"""The account administration pages, driven like a browser: read the CSRF token from the
page, submit its forms, follow the redirect, look at what the administrator sees."""

from __future__ import annotations

import re

import pytest

from tests.conftest import login

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(client, url) -> str:
    return CSRF_RE.search(client.get(url).get_data(as_text=True)).group(1)


def text(resp) -> str:
    return resp.get_data(as_text=True)


@pytest.fixture
def admin(as_role):
    return as_role("admin")


@pytest.fixture
def zainab_id(make_user):
    return make_user("zainab", "cashier", full_name="Zainab Qureshi")


def submit(client, page_url, action_url, **data):
    """Post a form found on `page_url` the way a browser would (with its CSRF token)."""
    return client.post(action_url, data={"csrf_token": csrf_from(client, page_url), **data})


# --- the user list ------------------------------------------------------------------------------

def test_users_page_lists_users_with_roles_scopes_and_status(admin, make_department, make_user):
    dep = make_department(code="LAB", name="Pathology Lab")
    make_user("hamza", "lab_technician", department_ids=[dep], full_name="Hamza Ali")
    resp = admin.get("/admin/users")
    assert resp.status_code == 200
    page = text(resp)
    assert "hamza" in page and "Hamza Ali" in page and "Lab Technician" in page
    assert "Pathology Lab" in page and "Active" in page and "never" in page
    assert 'href="/"' in page  # a way back
    assert 'name="csrf_token"' in page and "New user" in page


def test_users_page_search_has_an_empty_state(admin):
    page = text(admin.get("/admin/users?q=nobody-like-this"))
    assert "No user matches" in page


def test_users_page_offers_departments_and_wards_or_says_there_are_none(admin, make_ward):
    page = text(admin.get("/admin/users"))
    assert "No departments are set up yet" in page and "No wards are set up yet" in page
    make_ward(code="W7", name="Paeds Ward")
    page = text(admin.get("/admin/users"))
    assert '<select name="ward_ids" multiple' in page and "Paeds Ward" in page


def test_create_user_through_the_form(admin, app, make_department):
    dep = make_department(code="OPD", name="Outpatients")
    resp = submit(admin, "/admin/users", "/admin/users", username="sara", full_name="Sara Malik",
                  password="front-desk-2024", roles=["reception", "cashier"], department_ids=[str(dep)])
    assert resp.status_code == 302
    user_page = admin.get(resp.headers["Location"])
    assert user_page.status_code == 200 and "Created user sara." in text(user_page)
    sara = app.test_client()
    login(sara, "sara", "front-desk-2024")
    me = sara.get("/api/v1/auth/me").get_json()["user"]
    assert me["roles"] == ["cashier", "reception"] and me["department_ids"] == [dep]


def test_create_form_shows_problems_and_keeps_what_was_typed(admin):
    resp = submit(admin, "/admin/users", "/admin/users", username="Bad Name!", full_name="Sara Malik",
                  password="short", roles=["reception"])
    assert resp.status_code == 422
    page = text(resp)
    assert 'id="username-error"' in page and 'id="password-error"' in page
    assert 'value="Sara Malik"' in page
    assert 'value="reception" checked' in page
    assert "short" not in re.findall(r'name="password"[^>]*>', page)[0]  # never echo a password


def test_create_form_duplicate_username_is_409(admin, zainab_id):
    resp = submit(admin, "/admin/users", "/admin/users", username="zainab", full_name="Another Zainab",
                  password="other-pass-123")
    assert resp.status_code == 409
    assert "is taken" in text(resp)


def test_create_form_without_csrf_token_is_refused(admin):
    resp = admin.post("/admin/users", data={"username": "sara", "full_name": "Sara Malik",
                                            "password": "front-desk-2024"})
    assert resp.status_code == 400
    assert "sara" not in text(admin.get("/admin/users"))


# --- one user ------------------------------------------------------------------------------------

def test_user_page_shows_access_status_password_and_tokens(admin, zainab_id):
    resp = admin.get(f"/admin/users/{zainab_id}")
    assert resp.status_code == 200
    page = text(resp)
    assert "Zainab Qureshi" in page and 'href="/admin/users"' in page
    assert 'value="cashier" checked' in page
    assert "Deactivate zainab" in page and "Reset password" in page
    assert "No API tokens" in page


def test_unknown_user_page_is_404(admin):
    assert admin.get("/admin/users/9999").status_code == 404


def test_edit_roles_and_scopes_with_checkboxes_and_multi_selects(admin, zainab_id, make_ward):
    ward = make_ward(code="W2", name="Female Medical")
    page = f"/admin/users/{zainab_id}"
    resp = submit(admin, page, f"{page}/access", full_name="Zainab Q.", roles=["cashier", "nurse"],
                  ward_ids=[str(ward)])
    assert resp.status_code == 302
    user = admin.get(f"/api/v1/users/{zainab_id}").get_json()["user"]
    assert user["full_name"] == "Zainab Q." and user["roles"] == ["cashier", "nurse"]
    assert user["ward_ids"] == [ward] and user["department_ids"] == []
    assert f'<option value="{ward}" selected>' in text(admin.get(page))


def test_edit_refusal_keeps_the_choices_made(admin, zainab_id):
    page = f"/admin/users/{zainab_id}"
    resp = submit(admin, page, f"{page}/access", full_name="", roles=["nurse"])
    assert resp.status_code == 422
    assert 'id="full_name-error"' in text(resp) and 'value="nurse" checked' in text(resp)
    assert admin.get(f"/api/v1/users/{zainab_id}").get_json()["user"]["roles"] == ["cashier"]


def test_deactivate_and_reactivate_buttons(admin, zainab_id, app):
    zainab = app.test_client()
    login(zainab, "zainab")
    page = f"/admin/users/{zainab_id}"
    resp = submit(admin, page, f"{page}/active", active="0")
    assert resp.status_code == 302
    after = text(admin.get(page))
    assert "Deactivated zainab" in after and "Reactivate zainab" in after
    assert zainab.get("/api/v1/auth/me").status_code == 401
    submit(admin, page, f"{page}/active", active="1")
    assert "Deactivate zainab" in text(admin.get(page))
    login(zainab, "zainab")


def test_admin_cannot_deactivate_themself_from_the_page(admin):
    me = admin.get("/api/v1/auth/me").get_json()["user"]["id"]
    page = f"/admin/users/{me}"
    resp = submit(admin, page, f"{page}/active", active="0")
    assert resp.status_code == 409
    assert "cannot deactivate your own account" in text(resp)


def test_reset_password_form(admin, zainab_id, app):
    page = f"/admin/users/{zainab_id}"
    mismatch = submit(admin, page, f"{page}/password", password="till-closing-9", confirm="till-closing-8")
    assert mismatch.status_code == 422 and 'id="confirm-error"' in text(mismatch)
    resp = submit(admin, page, f"{page}/password", password="till-closing-9", confirm="till-closing-9")
    assert resp.status_code == 302
    login(app.test_client(), "zainab", "till-closing-9")


def test_issue_token_shows_the_secret_once_then_revoke(admin, zainab_id, app):
    page = f"/admin/users/{zainab_id}"
    resp = submit(admin, page, f"{page}/tokens", name="Cash drawer sync")
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store"
    raw = re.search(r'value="(hms_[^"]+)"', text(resp)).group(1)
    assert "will not be shown again" in text(resp)
    again = text(admin.get(page))
    assert raw not in again and "Cash drawer sync" in again and raw[:12] in again
    integration = app.test_client()
    integration.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {raw}"
    assert integration.get("/api/v1/auth/me").status_code == 200

    token_id = admin.get(f"/api/v1/users/{zainab_id}/tokens").get_json()["tokens"][0]["id"]
    resp = submit(admin, page, f"/admin/tokens/{token_id}/revoke")
    assert resp.status_code == 302 and resp.headers["Location"] == page
    assert "Revoked" in text(admin.get(page))
    assert integration.get("/api/v1/auth/me").status_code == 401


def test_issue_token_without_a_name_shows_the_problem(admin, zainab_id):
    page = f"/admin/users/{zainab_id}"
    resp = submit(admin, page, f"{page}/tokens", name="")
    assert resp.status_code == 422 and 'id="name-error"' in text(resp)


# --- who sees the pages -----------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["/admin/users", "/admin/users/1"])
def test_non_admins_get_a_403_page(as_role, url):
    resp = as_role("doctor").get(url)
    assert resp.status_code == 403
    assert resp.mimetype == "text/html" and "permission" in text(resp)


def test_users_link_shows_only_to_admins(admin, as_role):
    assert 'href="/admin/users"' in text(admin.get("/"))
    assert 'href="/admin/users"' not in text(as_role("doctor").get("/"))
