"""The account administration pages (administrators only).

    /admin/users                     list, search, "New user" form
    /admin/users/<id>                details, roles and scopes, (de)activate, password, API tokens
    /admin/tokens/<id>/revoke        revoke a token (POST)

Forms go through the same schemas and services as the JSON API. A refused form is shown
again with the problems next to its fields and the status of the refusal (422, 409).
"""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from marshmallow import ValidationError
from werkzeug.datastructures import MultiDict

from hms.auth import services
from hms.auth.admin_api import keep_own_session
from hms.auth.blueprint import bp
from hms.auth.permissions import USERS_MANAGE, requires
from hms.auth.roles import ROLES
from hms.auth.schemas import PasswordIn, TokenIn, UserCreateIn, UserUpdateIn
from hms.errors import HmsError, Invalid
from hms.web.context import current_actor, db_session, mark_failed, page_args

PAGE_SIZE = 50


def _messages(problems) -> list[str]:
    """A flat list of messages (marshmallow nests list-item errors by index)."""
    if isinstance(problems, str):
        return [problems]
    if isinstance(problems, dict):
        return [m for value in problems.values() for m in _messages(value)]
    return [m for value in problems for m in _messages(value)]


def _refusal(err: HmsError | ValidationError) -> dict:
    """Roll the request back and describe the refusal for the page that shows it again."""
    mark_failed()
    if isinstance(err, ValidationError):
        status, message, fields = 422, "Some fields are not valid.", err.normalized_messages()
    else:
        status, message, fields = err.http_status, err.message, err.fields
    return {"status": status, "message": message,
            "fields": {name: _messages(problems) for name, problems in fields.items()}}


def _scope_context() -> dict:
    departments, wards = services.list_scopes(db_session())
    return {"roles": ROLES, "departments": departments, "wards": wards,
            "department_names": {d.id: d.name for d in departments},
            "ward_names": {w.id: w.name for w in wards}}


def _access_form(form: MultiDict) -> dict:
    """The roles and scopes part of a form: absent checkboxes mean "none"."""
    return {"roles": form.getlist("roles"), "department_ids": form.getlist("department_ids"),
            "ward_ids": form.getlist("ward_ids")}


# --- the user list --------------------------------------------------------------------

def _render_users(*, form: MultiDict | None = None, refusal: dict | None = None):
    page, size = page_args(default_size=PAGE_SIZE, max_size=200)
    q = (request.args.get("q") or "").strip()
    session = db_session()
    users = services.list_users(session, q, offset=(page - 1) * size, limit=size)
    html = render_template("auth/users.html", users=users, total=services.count_users(session, q),
                           page=page, size=size, q=q, form=form or MultiDict(), refusal=refusal,
                           **_scope_context())
    return html, refusal["status"] if refusal else 200


@bp.get("/admin/users")
@requires(USERS_MANAGE)
def users_page():
    return _render_users()


@bp.post("/admin/users")
@requires(USERS_MANAGE)
def create_user_submit():
    form = request.form
    try:
        data = UserCreateIn().load({"username": form.get("username", ""),
                                    "full_name": form.get("full_name", ""),
                                    "password": form.get("password", ""), **_access_form(form)})
        user = services.create_user(db_session(), current_actor(), **data)
    except (HmsError, ValidationError) as err:
        return _render_users(form=form, refusal=_refusal(err))
    flash(f"Created user {user.username}.")
    return redirect(url_for("auth.user_page", user_id=user.id))


# --- one user -------------------------------------------------------------------------

def _render_user(user_id: int, *, section: str | None = None, refusal: dict | None = None,
                 form: MultiDict | None = None, raw_token: str | None = None):
    """The user page; `section` names the form a refusal belongs to, `form` its input."""
    session = db_session()
    user = services.get_user(session, user_id)
    if section == "access" and form is not None:
        access = {"full_name": form.get("full_name", ""), "roles": set(form.getlist("roles")),
                  "department_ids": set(form.getlist("department_ids")),
                  "ward_ids": set(form.getlist("ward_ids"))}
    else:
        access = {"full_name": user.full_name, "roles": set(user.role_names),
                  "department_ids": {str(i) for i in user.department_ids},
                  "ward_ids": {str(i) for i in user.ward_ids}}
    html = render_template(
        "auth/user.html", user=user, tokens=services.list_tokens(session, user.id), access=access,
        locked_out=services.is_locked_out(session, user.username), section=section,
        refusal=refusal, raw_token=raw_token, **_scope_context())
    return html, refusal["status"] if refusal else 200


@bp.get("/admin/users/<int:user_id>")
@requires(USERS_MANAGE)
def user_page(user_id: int):
    return _render_user(user_id)


@bp.post("/admin/users/<int:user_id>/access")
@requires(USERS_MANAGE)
def user_access_submit(user_id: int):
    session, actor = db_session(), current_actor()
    user = services.get_user(session, user_id)
    try:
        data = UserUpdateIn().load({"full_name": request.form.get("full_name", ""),
                                    **_access_form(request.form)})
        services.update_details(session, actor, user, full_name=data["full_name"])
        services.set_roles_and_scopes(session, actor, user, roles=data["roles"],
                                      department_ids=data["department_ids"], ward_ids=data["ward_ids"])
    except (HmsError, ValidationError) as err:
        return _render_user(user_id, section="access", refusal=_refusal(err), form=request.form)
    flash("Saved the roles and scopes. They apply from the user's next click.")
    return redirect(url_for("auth.user_page", user_id=user_id))


@bp.post("/admin/users/<int:user_id>/active")
@requires(USERS_MANAGE)
def user_active_submit(user_id: int):
    session = db_session()
    user = services.get_user(session, user_id)
    try:
        data = UserUpdateIn().load({"active": request.form.get("active", "")})
        services.set_active(session, current_actor(), user, data["active"])
    except (HmsError, ValidationError) as err:
        return _render_user(user_id, section="status", refusal=_refusal(err))
    flash(f"Reactivated {user.username}." if user.active
          else f"Deactivated {user.username}: their sessions and API tokens no longer work.")
    return redirect(url_for("auth.user_page", user_id=user_id))


@bp.post("/admin/users/<int:user_id>/password")
@requires(USERS_MANAGE)
def user_password_submit(user_id: int):
    session = db_session()
    user = services.get_user(session, user_id)
    try:
        data = PasswordIn().load({"password": request.form.get("password", "")})
        if request.form.get("confirm", "") != data["password"]:
            # Checked here, not in the API: only a person typing blind needs to type it twice.
            raise Invalid("The two passwords differ.", fields={"confirm": ["does not match the password"]})
        services.reset_password(session, current_actor(), user, data["password"])
    except (HmsError, ValidationError) as err:
        return _render_user(user_id, section="password", refusal=_refusal(err))
    keep_own_session(user)
    flash(f"Set a new password for {user.username}. Their other sessions have ended.")
    return redirect(url_for("auth.user_page", user_id=user_id))


@bp.post("/admin/users/<int:user_id>/tokens")
@requires(USERS_MANAGE)
def user_token_submit(user_id: int):
    """Issue a token and show its secret on this response only.

    No redirect: the secret must not travel through the (signed, not encrypted) session
    cookie that a flash message would use, and the response is marked no-store.
    """
    session = db_session()
    user = services.get_user(session, user_id)
    try:
        data = TokenIn().load({"name": request.form.get("name", "")})
        _token, raw = services.issue_token(session, current_actor(), user, data["name"])
    except (HmsError, ValidationError) as err:
        return _render_user(user_id, section="tokens", refusal=_refusal(err))
    html, status = _render_user(user_id, raw_token=raw)
    return html, status, {"Cache-Control": "no-store"}


@bp.post("/admin/tokens/<int:token_id>/revoke")
@requires(USERS_MANAGE)
def token_revoke_submit(token_id: int):
    token = services.revoke_token(db_session(), current_actor(), token_id)
    flash(f"Revoked the token {token.name!r}; it no longer works.")
    return redirect(url_for("auth.user_page", user_id=token.user_id))
