"""The account administration JSON API: create, read, change, deactivate, reset; and the
refusals an administrator (or a non-administrator) meets."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hms.audit import AuditLog
from hms.auth.roles import ROLES
from tests.conftest import TEST_PASSWORD, login

NEW_USER = {"username": "bilal", "full_name": "Bilal Ahmed", "password": "ward-round-2024",
            "roles": ["nurse"]}


@pytest.fixture
def admin(as_role):
    return as_role("admin")


def admin_id(admin) -> int:
    return admin.get("/api/v1/auth/me").get_json()["user"]["id"]


def create(admin, **overrides):
    return admin.post("/api/v1/users", json={**NEW_USER, **overrides})


# --- create and read ------------------------------------------------------------------------

def test_create_user_then_they_can_log_in(admin, app):
    resp = create(admin)
    assert resp.status_code == 201
    user = resp.get_json()["user"]
    assert resp.headers["Location"] == f"/api/v1/users/{user['id']}"
    assert user["username"] == "bilal" and user["roles"] == ["nurse"] and user["active"] is True
    assert not {"password", "password_hash", "session_token"} & set(user)
    assert NEW_USER["password"] not in str(user)
    nurse = app.test_client()
    login(nurse, "bilal", NEW_USER["password"])
    assert nurse.get("/api/v1/auth/me").get_json()["user"]["full_name"] == "Bilal Ahmed"


def test_create_user_with_scopes(admin, make_department, make_ward):
    dep = make_department(code="MED", name="Medicine")
    ward = make_ward(code="MW1", name="Medical Ward 1", department_id=dep)
    user = create(admin, department_ids=[dep], ward_ids=[ward]).get_json()["user"]
    assert user["department_ids"] == [dep] and user["ward_ids"] == [ward]


def test_list_and_get_users(admin, make_user):
    make_user("zainab", "cashier")
    body = admin.get("/api/v1/users").get_json()
    assert body["total"] == 2
    assert [u["username"] for u in body["users"]] == ["u_admin_0", "zainab"]
    zainab_id = body["users"][1]["id"]
    assert admin.get(f"/api/v1/users/{zainab_id}").get_json()["user"]["roles"] == ["cashier"]


def test_list_users_searches_and_pages(admin, make_user):
    for name in ("zainab", "zafar", "omar"):
        make_user(name, "cashier")
    found = admin.get("/api/v1/users?q=ZA").get_json()
    assert [u["username"] for u in found["users"]] == ["zafar", "zainab"]
    assert admin.get("/api/v1/users?q=%25").get_json()["total"] == 0  # '%' is literal, not a wildcard
    page2 = admin.get("/api/v1/users?size=2&page=2").get_json()
    assert page2["total"] == 4 and [u["username"] for u in page2["users"]] == ["zafar", "zainab"]
    assert admin.get("/api/v1/users?size=0").status_code == 400


def test_get_unknown_user_is_404(admin):
    resp = admin.get("/api/v1/users/9999")
    assert resp.status_code == 404
    assert resp.get_json()["error"]["code"] == "user_not_found"


def test_roles_are_listed_with_labels_for_any_user(as_role):
    roles = as_role("housekeeping").get("/api/v1/roles").get_json()["roles"]
    assert len(roles) == 12
    assert {"name": "lab_technician", "label": "Lab Technician"} in roles
    assert [r["name"] for r in roles] == list(ROLES)


def test_user_creation_is_audited_without_the_password(admin, database):
    user_id = create(admin).get_json()["user"]["id"]
    with database.transaction(readonly=True) as s:
        row = s.execute(select(AuditLog).where(AuditLog.action == "user.create",
                                               AuditLog.entity_id == str(user_id))).scalar_one()
        assert row.actor_name == "u_admin_0" and row.detail["roles"] == ["nurse"]
        assert NEW_USER["password"] not in str(row.detail)


# --- refusals -------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,field", [
    ({"username": "Bad Name!"}, "username"),
    ({"username": "ab"}, "username"),
    ({"password": "short"}, "password"),
    ({"password": "bilal"}, "password"),
    ({"full_name": "  "}, "full_name"),
    ({"full_name": "x" * 121}, "full_name"),
    ({"roles": ["surgeon"]}, "roles"),
    ({"department_ids": [4242]}, "department_ids"),
    ({"ward_ids": [4242]}, "ward_ids"),
    ({"department_ids": ["cardiology"]}, "department_ids"),
    ({"roles": "nurse"}, "roles"),
])
def test_create_refuses_bad_fields_with_422_naming_the_field(admin, overrides, field):
    resp = create(admin, **overrides)
    assert resp.status_code == 422, resp.get_json()
    assert field in resp.get_json()["error"]["fields"]
    assert admin.get("/api/v1/users").get_json()["total"] == 1  # nothing was created


def test_create_refuses_unknown_and_missing_fields(admin):
    resp = admin.post("/api/v1/users", json={"username": "bilal", "role": ["nurse"]})
    assert resp.status_code == 422
    fields = resp.get_json()["error"]["fields"]
    assert fields["role"] == ["Unknown field."]
    assert {"full_name", "password"} <= set(fields)


def test_duplicate_username_is_409_whatever_the_case(admin):
    assert create(admin).status_code == 201
    resp = create(admin, username="Bilal")
    assert resp.status_code == 409
    assert resp.get_json()["error"]["code"] == "username_taken"


def test_admin_cannot_deactivate_themself(admin):
    resp = admin.patch(f"/api/v1/users/{admin_id(admin)}", json={"active": False})
    assert resp.status_code == 409
    assert resp.get_json()["error"]["code"] == "self_deactivation"
    assert admin.get("/api/v1/auth/me").status_code == 200


def test_admin_cannot_remove_their_own_admin_role(admin):
    resp = admin.patch(f"/api/v1/users/{admin_id(admin)}", json={"roles": ["doctor"]})
    assert resp.status_code == 409
    assert resp.get_json()["error"]["code"] == "self_demotion"
    assert admin.get("/api/v1/users").status_code == 200


def test_patch_with_nothing_to_change_is_422(admin):
    resp = admin.patch(f"/api/v1/users/{admin_id(admin)}", json={})
    assert resp.status_code == 422 and "_schema" in resp.get_json()["error"]["fields"]


def test_a_refused_patch_changes_nothing(admin):
    user_id = create(admin).get_json()["user"]["id"]
    resp = admin.patch(f"/api/v1/users/{user_id}", json={"full_name": "Bilal A.", "roles": ["wizard"]})
    assert resp.status_code == 422
    assert admin.get(f"/api/v1/users/{user_id}").get_json()["user"]["full_name"] == "Bilal Ahmed"


@pytest.mark.parametrize("method,url", [
    ("GET", "/api/v1/users"), ("POST", "/api/v1/users"), ("GET", "/api/v1/users/1"),
    ("PATCH", "/api/v1/users/1"), ("POST", "/api/v1/users/1/password"),
    ("GET", "/api/v1/users/1/tokens"), ("POST", "/api/v1/users/1/tokens"), ("DELETE", "/api/v1/tokens/1"),
])
def test_non_admins_are_refused_403(as_role, method, url):
    doctor = as_role("doctor", "department_head")
    kwargs = {"json": NEW_USER} if method in ("POST", "PATCH") else {}
    resp = doctor.open(url, method=method, **kwargs)
    assert resp.status_code == 403
    assert resp.get_json()["error"]["code"] == "forbidden"


# --- changing access ----------------------------------------------------------------------------

def test_patch_roles_scopes_and_name(admin, make_department, make_ward, database):
    user_id = create(admin).get_json()["user"]["id"]
    dep = make_department(code="SUR", name="Surgery")
    ward = make_ward(code="SW1", name="Surgical Ward 1", department_id=dep)
    resp = admin.patch(f"/api/v1/users/{user_id}", json={
        "full_name": "Bilal Ahmed Khan", "roles": ["nurse", "department_head"],
        "department_ids": [dep], "ward_ids": [ward]})
    assert resp.status_code == 200
    user = resp.get_json()["user"]
    assert user["full_name"] == "Bilal Ahmed Khan"
    assert user["roles"] == ["department_head", "nurse"]
    assert user["department_ids"] == [dep] and user["ward_ids"] == [ward]
    with database.transaction(readonly=True) as s:
        actions = s.execute(select(AuditLog.action).where(AuditLog.entity_id == str(user_id))
                            .order_by(AuditLog.seq)).scalars().all()
        assert actions == ["user.create", "user.update", "user.update_access"]


def test_patch_leaves_absent_fields_alone(admin, make_department):
    dep = make_department(code="MED", name="Medicine")
    user_id = create(admin, department_ids=[dep]).get_json()["user"]["id"]
    user = admin.patch(f"/api/v1/users/{user_id}", json={"roles": ["doctor"]}).get_json()["user"]
    assert user["roles"] == ["doctor"] and user["department_ids"] == [dep]


def test_new_roles_apply_to_a_live_session_at_once(admin, make_user, app):
    user_id = make_user("zainab", "cashier")
    zainab = app.test_client()
    login(zainab, "zainab")
    assert zainab.get("/api/v1/users").status_code == 403
    admin.patch(f"/api/v1/users/{user_id}", json={"roles": ["cashier", "admin"]})
    assert zainab.get("/api/v1/users").status_code == 200


# --- deactivation and password reset end sessions ---------------------------------------------

def test_deactivation_ends_a_live_session(admin, make_user, app):
    user_id = make_user("zainab", "cashier")
    zainab = app.test_client()
    login(zainab, "zainab")
    resp = admin.patch(f"/api/v1/users/{user_id}", json={"active": False})
    assert resp.status_code == 200 and resp.get_json()["user"]["active"] is False
    assert zainab.get("/api/v1/auth/me").status_code == 401
    # Reactivated, the old session stays ended; a new login works.
    admin.patch(f"/api/v1/users/{user_id}", json={"active": True})
    assert zainab.get("/api/v1/auth/me").status_code == 401
    login(zainab, "zainab")
    assert zainab.get("/api/v1/auth/me").status_code == 200


def test_password_reset_ends_sessions_and_the_old_password(admin, make_user, app):
    user_id = make_user("zainab", "cashier")
    zainab = app.test_client()
    login(zainab, "zainab")
    resp = admin.post(f"/api/v1/users/{user_id}/password", json={"password": "new-secret-99"})
    assert resp.status_code == 200
    assert zainab.get("/api/v1/auth/me").status_code == 401
    old = zainab.post("/api/v1/auth/login", json={"username": "zainab", "password": TEST_PASSWORD})
    assert old.status_code == 401
    login(zainab, "zainab", "new-secret-99")


def test_password_reset_refuses_a_weak_password(admin, make_user):
    user_id = make_user("zainab", "cashier")
    resp = admin.post(f"/api/v1/users/{user_id}/password", json={"password": "zainab"})
    assert resp.status_code == 422 and "password" in resp.get_json()["error"]["fields"]


def test_admin_resetting_their_own_password_stays_logged_in(admin, app):
    me = admin_id(admin)
    other_device = app.test_client()
    login(other_device, "u_admin_0")
    assert admin.post(f"/api/v1/users/{me}/password", json={"password": "admin-new-pass-1"}).status_code == 200
    assert admin.get("/api/v1/auth/me").status_code == 200
    assert other_device.get("/api/v1/auth/me").status_code == 401
