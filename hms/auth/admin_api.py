"""The account administration JSON API (administrators only).

    GET    /api/v1/users                 ?q=&page=&size=
    POST   /api/v1/users                 create -> 201
    GET    /api/v1/users/<id>
    PATCH  /api/v1/users/<id>            full_name, roles, department_ids, ward_ids, active
    POST   /api/v1/users/<id>/password   reset the password
    GET    /api/v1/users/<id>/tokens
    POST   /api/v1/users/<id>/tokens     issue -> 201, the raw token shown this once
    DELETE /api/v1/tokens/<id>           revoke
"""

from __future__ import annotations

from flask import jsonify, request, url_for
from flask_login import current_user

from hms.auth import services
from hms.auth.blueprint import bp
from hms.auth.permissions import USERS_MANAGE, requires
from hms.auth.schemas import PasswordIn, TokenIn, UserCreateIn, UserUpdateIn, token_out, user_out
from hms.auth.wiring import start_session
from hms.web.context import current_actor, db_session, json_body, page_args

_ACCESS_FIELDS = ("roles", "department_ids", "ward_ids")


def keep_own_session(user) -> None:
    """After resetting one's own password, stay logged in on this browser.

    The reset rotated the session token (ending every other session of the account);
    re-issuing this browser's session keeps the administrator from being thrown out of
    the page they are using.
    """
    if current_user.is_authenticated and current_user.id == user.id and not current_user.via_token:
        start_session(user)


@bp.get("/api/v1/users")
@requires(USERS_MANAGE)
def api_list_users():
    page, size = page_args(default_size=50, max_size=500)
    q = request.args.get("q")
    session = db_session()
    users = services.list_users(session, q, offset=(page - 1) * size, limit=size)
    return jsonify({"users": user_out.dump(users, many=True), "total": services.count_users(session, q),
                    "page": page, "size": size})


@bp.post("/api/v1/users")
@requires(USERS_MANAGE)
def api_create_user():
    data = UserCreateIn().load(json_body())
    user = services.create_user(db_session(), current_actor(), **data)
    resp = jsonify({"user": user_out.dump(user)})
    resp.status_code = 201
    resp.headers["Location"] = url_for("auth.api_get_user", user_id=user.id)
    return resp


@bp.get("/api/v1/users/<int:user_id>")
@requires(USERS_MANAGE)
def api_get_user(user_id: int):
    return jsonify({"user": user_out.dump(services.get_user(db_session(), user_id))})


@bp.patch("/api/v1/users/<int:user_id>")
@requires(USERS_MANAGE)
def api_update_user(user_id: int):
    """Change what is sent, all or nothing (one transaction)."""
    data = UserUpdateIn().load(json_body())
    session, actor = db_session(), current_actor()
    user = services.get_user(session, user_id)
    if "full_name" in data:
        services.update_details(session, actor, user, full_name=data["full_name"])
    if any(name in data for name in _ACCESS_FIELDS):
        services.set_roles_and_scopes(session, actor, user, **{n: data.get(n) for n in _ACCESS_FIELDS})
    if "active" in data:
        services.set_active(session, actor, user, data["active"])
    return jsonify({"user": user_out.dump(user)})


@bp.post("/api/v1/users/<int:user_id>/password")
@requires(USERS_MANAGE)
def api_reset_password(user_id: int):
    data = PasswordIn().load(json_body())
    session = db_session()
    user = services.reset_password(session, current_actor(), services.get_user(session, user_id),
                                   data["password"])
    keep_own_session(user)
    return jsonify({"user": user_out.dump(user)})


@bp.get("/api/v1/users/<int:user_id>/tokens")
@requires(USERS_MANAGE)
def api_list_tokens(user_id: int):
    session = db_session()
    user = services.get_user(session, user_id)
    return jsonify({"tokens": token_out.dump(services.list_tokens(session, user.id), many=True)})


@bp.post("/api/v1/users/<int:user_id>/tokens")
@requires(USERS_MANAGE)
def api_issue_token(user_id: int):
    """201 with `raw_token`: the only time the secret is ever shown (only its hash is kept)."""
    data = TokenIn().load(json_body())
    session = db_session()
    token, raw = services.issue_token(session, current_actor(), services.get_user(session, user_id),
                                      data["name"])
    resp = jsonify({"token": token_out.dump(token), "raw_token": raw})
    resp.status_code = 201
    return resp


@bp.delete("/api/v1/tokens/<int:token_id>")
@requires(USERS_MANAGE)
def api_revoke_token(token_id: int):
    token = services.revoke_token(db_session(), current_actor(), token_id)
    return jsonify({"token": token_out.dump(token)})
