"""Login, logout, the current user and the role list (HTML and JSON).

The app registers `hms.auth.routes.bp`. The account administration views live in
admin_api.py (JSON) and admin_pages.py (HTML); importing them here attaches them to the
same blueprint, so their endpoints are `auth.*` too (e.g. `auth.users_page`).
"""

from __future__ import annotations

from urllib.parse import urlparse

from flask import flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from hms.auth import admin_api, admin_pages  # noqa: F401  (they attach their views to bp)
from hms.auth import services
from hms.auth.blueprint import bp
from hms.auth.permissions import AUTHENTICATED, public, requires
from hms.auth.schemas import LoginIn, roles_json, user_out
from hms.auth.wiring import end_session, start_session
from hms.errors import HmsError
from hms.web.context import client_ip, current_actor, db_session, json_body

__all__ = ["bp"]


def _safe_next(target: str | None) -> str:
    """`target` when it is a path on this site, else the home page (no open redirect).

    Backslashes and control characters are refused because browsers read `/\\evil.com`
    as `//evil.com`, another host.
    """
    if (target and target.startswith("/") and not target.startswith("//")
            and "\\" not in target and target.isprintable() and urlparse(target).netloc == ""):
        return target
    return url_for("web.home")


def _end_own_sessions() -> None:
    """Log the current browser out and end the user's other browser sessions too."""
    if not current_user.via_token:
        services.logout(db_session(), current_actor(), current_user.user)
    end_session()


@bp.get("/login")
@public
def login_page():
    if current_user.is_authenticated:
        return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", next=request.args.get("next", ""),
                           expired=request.args.get("expired"))


@bp.post("/login")
@public
def login_submit():
    username = request.form.get("username", "")
    try:
        user = services.authenticate(db_session(), username, request.form.get("password", ""), client_ip())
    except HmsError as err:
        # Keep the failed attempt (lockout counts it) while refusing the login.
        db_session().commit()
        return render_template("auth/login.html", error=err.message, username=username,
                               next=request.form.get("next", "")), err.http_status
    start_session(user)
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/logout")
@requires(AUTHENTICATED)
def logout_page():
    _end_own_sessions()
    flash("You have logged out.")
    return redirect(url_for("auth.login_page"))


@bp.post("/api/v1/auth/login")
@public
def api_login():
    data = LoginIn().load(json_body())
    try:
        user = services.authenticate(db_session(), data["username"], data["password"], client_ip())
    except HmsError:
        db_session().commit()  # keep the failed attempt for the lockout count
        raise
    start_session(user)
    return jsonify({"user": user_out.dump(user)})


@bp.post("/api/v1/auth/logout")
@requires(AUTHENTICATED)
def api_logout():
    """End the browser session. A bearer token is not a session: revoke it to end it."""
    via_token = current_user.via_token
    _end_own_sessions()
    return jsonify({"logged_out": not via_token})


@bp.get("/api/v1/auth/me")
@requires(AUTHENTICATED)
def api_me():
    return jsonify({"user": user_out.dump(current_user.user), "via_token": current_user.via_token})


@bp.get("/api/v1/roles")
@requires(AUTHENTICATED)
def api_roles():
    return jsonify({"roles": roles_json()})
