"""Login, logout and the current user (HTML and JSON)."""

from __future__ import annotations

from urllib.parse import urlparse

from flask import Blueprint, flash, g, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from hms.auth import services
from hms.auth.permissions import AUTHENTICATED, public, requires
from hms.auth.wiring import end_session, start_session
from hms.errors import HmsError
from hms.web.context import client_ip, current_actor, db_session, json_body

bp = Blueprint("auth", __name__, template_folder="templates")


def user_json(user) -> dict:
    return {
        "id": user.id,
        "username": user.username,
        "full_name": user.full_name,
        "roles": sorted(user.role_names),
        "department_ids": sorted(user.department_ids),
        "ward_ids": sorted(user.ward_ids),
        "active": user.active,
    }


def _safe_next(target: str | None) -> str:
    if target and urlparse(target).netloc == "" and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("web.home")


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
    end_session()
    flash("You have logged out.")
    return redirect(url_for("auth.login_page"))


@bp.post("/api/v1/auth/login")
@public
def api_login():
    data = json_body()
    try:
        user = services.authenticate(db_session(), str(data.get("username", "")),
                                     str(data.get("password", "")), client_ip())
    except HmsError:
        db_session().commit()
        raise
    start_session(user)
    return jsonify({"user": user_json(user)})


@bp.post("/api/v1/auth/logout")
@requires(AUTHENTICATED)
def api_logout():
    end_session()
    return jsonify({"logged_out": True})


@bp.get("/api/v1/auth/me")
@requires(AUTHENTICATED)
def api_me():
    return jsonify({"user": user_json(current_user.user), "via_token": current_user.via_token})
