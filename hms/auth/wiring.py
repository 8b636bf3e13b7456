"""flask-login and flask-principal wiring: sessions, bearer tokens, identities, idle timeout.

A logged-in browser session stores the user's rotating `session_token` (so a password
reset or deactivation ends it) and the time of the last request (idle timeout). API
clients send `Authorization: Bearer hms_...` instead.
"""

from __future__ import annotations

import time

from flask import Flask, current_app, g, session
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_principal import AnonymousIdentity, Identity, Need, Principal, RoleNeed, UserNeed

from hms.auth.roles import effective_roles
from hms.web.context import db_session

login_manager = LoginManager()
principal = Principal(use_sessions=False)


class LoginUser(UserMixin):
    """flask-login's view of a User row (models stay free of Flask)."""

    def __init__(self, user, via_token: bool = False):
        self.user = user
        self.via_token = via_token

    def get_id(self) -> str:
        return self.user.session_token

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def is_active(self) -> bool:
        return self.user.active


@login_manager.user_loader
def _load_user(session_token: str):
    from hms.auth.services import get_user_by_session_token

    user = get_user_by_session_token(db_session(), session_token)
    return LoginUser(user) if user else None


@login_manager.request_loader
def _load_user_from_bearer(req):
    header = req.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    from hms.auth.services import user_for_token

    user = user_for_token(db_session(), header[len("Bearer "):].strip())
    if user is None:
        g.hms_bad_token = True  # the 401 then says the token is dead, not just absent
        return None
    return LoginUser(user, via_token=True)


@principal.identity_loader
def _identity_from_login():
    if not current_user.is_authenticated:
        return AnonymousIdentity()
    user = current_user.user
    identity = Identity(user.id, auth_type="token" if current_user.via_token else "session")
    identity.provides.add(UserNeed(user.id))
    for role in effective_roles(user.role_names):
        identity.provides.add(RoleNeed(role))
    for ward_id in user.ward_ids:
        identity.provides.add(Need("ward", ward_id))
    for department_id in user.department_ids:
        identity.provides.add(Need("department", department_id))
    return identity


def start_session(user) -> None:
    """Log `user` in on this browser: a fresh cookie session holding the session token."""
    session.clear()  # nothing from before the login carries over
    login_user(LoginUser(user))
    session.permanent = True
    session["last_seen"] = int(time.time())


def end_session() -> None:
    """Forget the login on this browser (the caller rotates the token to end it everywhere)."""
    logout_user()
    session.clear()


def _enforce_idle_timeout() -> None:
    """Log out a browser session idle for longer than HMS_IDLE_TIMEOUT_MINUTES."""
    if "_user_id" not in session:
        return
    limit = current_app.extensions["hms_config"].idle_timeout_minutes * 60
    now = int(time.time())
    last = session.get("last_seen", 0)
    if now - last > limit:
        end_session()
        g.hms_idle_expired = True
    else:
        session["last_seen"] = now


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "auth.login_page"
    login_manager.session_protection = "basic"
    principal.init_app(app)

    # Runs before flask-principal's identity loading (registered first).
    app.before_request_funcs.setdefault(None, []).insert(0, _enforce_idle_timeout)
