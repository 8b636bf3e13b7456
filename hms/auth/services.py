"""Accounts: authentication with lockout, users, roles, scopes and API tokens.

The only code that writes the auth tables. Functions flush, never commit; every change
to an account is audited.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hms import audit
from hms.audit import Actor
from hms.auth.models import ApiToken, LoginAttempt, User, UserDepartment, UserRole, UserWard
from hms.auth.passwords import hash_password, needs_rehash, password_problem, verify_password
from hms.auth.roles import ALL_ROLES
from hms.db import config_of, utcnow
from hms.errors import Conflict, Invalid, NotFound, TooManyRequests, Unauthorized

USERNAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{2,59}$")
TOKEN_PREFIX = "hms_"
BAD_LOGIN = "Unknown username or wrong password."


def _new_session_token() -> str:
    return secrets.token_hex(32)


def actor_for(user: User, ip: str | None = None) -> Actor:
    return Actor(user_id=user.id, username=user.username, roles=user.role_names,
                 department_ids=user.department_ids, ward_ids=user.ward_ids, ip=ip)


# --- authentication -------------------------------------------------------------------

def is_locked_out(session: Session, username: str) -> bool:
    cfg = config_of(session)
    since = utcnow() - timedelta(minutes=cfg.lockout_window_minutes)
    last_success = select(func.max(LoginAttempt.at)).where(
        LoginAttempt.username == username, LoginAttempt.success.is_(True)).scalar_subquery()
    failures = session.execute(
        select(func.count()).select_from(LoginAttempt).where(
            LoginAttempt.username == username, LoginAttempt.success.is_(False),
            LoginAttempt.at >= since,
            (LoginAttempt.at > last_success) | last_success.is_(None))
    ).scalar_one()
    return failures >= cfg.lockout_threshold


def authenticate(session: Session, username: str, password: str, ip: str | None) -> User:
    """Check a username and password; record the attempt (kept even when the login fails).

    Raises Unauthorized with one message for an unknown user and a wrong password, and
    TooManyRequests once the account has had too many failures in the lockout window.
    """
    username = (username or "").strip().lower()
    if is_locked_out(session, username):
        session.add(LoginAttempt(username=username, success=False, ip=ip))
        raise TooManyRequests(
            "Too many failed logins. This account is locked for a while; ask an administrator.",
            code="locked_out")
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    ok = verify_password(user.password_hash if user else None, password or "")
    if not ok or user is None or not user.active:
        session.add(LoginAttempt(username=username, success=False, ip=ip))
        session.flush()
        raise Unauthorized(BAD_LOGIN, code="bad_credentials")
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    session.add(LoginAttempt(username=username, success=True, ip=ip))
    user.last_login_at = utcnow()
    audit.record(session, actor_for(user, ip), "login", "user", user.id)
    session.flush()
    return user


def get_user_by_session_token(session: Session, token: str) -> User | None:
    if not token:
        return None
    return session.execute(
        select(User).where(User.session_token == token, User.active.is_(True))
    ).scalar_one_or_none()


# --- users ----------------------------------------------------------------------------

def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("No such user.", code="user_not_found")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.execute(select(User).order_by(User.username)).scalars())


def _validate_roles(roles) -> set[str]:
    roles = set(roles or [])
    unknown = roles - ALL_ROLES
    if unknown:
        raise Invalid("Unknown role.", fields={"roles": [f"unknown role(s): {', '.join(sorted(unknown))}"]})
    return roles


def create_user(session: Session, actor: Actor, *, username: str, full_name: str, password: str,
                roles=(), department_ids=(), ward_ids=(), is_demo: bool = False) -> User:
    """Create an account. 409 when the username is taken; 422 for a bad name or password."""
    username = (username or "").strip().lower()
    errors: dict[str, list[str]] = {}
    if not USERNAME_RE.match(username):
        errors["username"] = ["3-60 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter."]
    if not (full_name or "").strip():
        errors["full_name"] = ["Enter the person's full name."]
    problem = password_problem(password or "", username)
    if problem:
        errors["password"] = [problem]
    if errors:
        raise Invalid("The account details are not valid.", fields=errors)
    roles = _validate_roles(roles)
    if session.execute(select(User.id).where(User.username == username)).first():
        raise Conflict(f"The username {username!r} is taken.", code="username_taken",
                       fields={"username": ["already taken"]})
    user = User(username=username, full_name=full_name.strip(), password_hash=hash_password(password),
                session_token=_new_session_token(), is_demo=is_demo)
    session.add(user)
    session.flush()
    set_roles_and_scopes(session, actor, user, roles=roles, department_ids=department_ids,
                         ward_ids=ward_ids, _audit=False)
    audit.record(session, actor, "user.create", "user", user.id,
                 detail={"roles": sorted(roles), "departments": sorted(department_ids),
                         "wards": sorted(ward_ids)})
    return user


def set_roles_and_scopes(session: Session, actor: Actor, user: User, *, roles=None,
                         department_ids=None, ward_ids=None, _audit: bool = True) -> User:
    """Replace a user's roles and/or scopes (None leaves that part unchanged)."""
    from hms.org.models import Department
    from wards.models import Ward

    if roles is not None:
        roles = _validate_roles(roles)
        user.roles = [UserRole(role=r) for r in sorted(roles)]
    if department_ids is not None:
        ids = {int(i) for i in department_ids}
        found = set(session.execute(select(Department.id).where(Department.id.in_(ids))).scalars())
        if ids - found:
            raise Invalid("Unknown department.", fields={"department_ids": [f"unknown: {sorted(ids - found)}"]})
        user.departments = [UserDepartment(department_id=i) for i in sorted(ids)]
    if ward_ids is not None:
        ids = {int(i) for i in ward_ids}
        found = set(session.execute(select(Ward.id).where(Ward.id.in_(ids))).scalars())
        if ids - found:
            raise Invalid("Unknown ward.", fields={"ward_ids": [f"unknown: {sorted(ids - found)}"]})
        user.wards = [UserWard(ward_id=i) for i in sorted(ids)]
    session.flush()
    if _audit:
        audit.record(session, actor, "user.update_access", "user", user.id,
                     detail={"roles": sorted(user.role_names), "departments": sorted(user.department_ids),
                             "wards": sorted(user.ward_ids)})
    return user


def set_active(session: Session, actor: Actor, user: User, active: bool) -> User:
    """Deactivate (or reactivate) an account; deactivation ends its sessions and tokens at once."""
    if not active and actor.user_id == user.id:
        raise Conflict("You cannot deactivate your own account.", code="self_deactivation")
    user.active = active
    if not active:
        user.session_token = _new_session_token()
    audit.record(session, actor, "user.activate" if active else "user.deactivate", "user", user.id)
    session.flush()
    return user


def reset_password(session: Session, actor: Actor, user: User, new_password: str) -> User:
    """Set a new password; the user's existing sessions stop working."""
    problem = password_problem(new_password or "", user.username)
    if problem:
        raise Invalid("The new password is not acceptable.", fields={"password": [problem]})
    user.password_hash = hash_password(new_password)
    user.password_changed_at = utcnow()
    user.session_token = _new_session_token()
    audit.record(session, actor, "user.reset_password", "user", user.id)
    session.flush()
    return user


# --- API tokens -----------------------------------------------------------------------

def _hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def issue_token(session: Session, actor: Actor, user: User, name: str) -> tuple[ApiToken, str]:
    """Create a bearer token for `user`. The raw token is returned once and never stored."""
    name = (name or "").strip()
    if not name:
        raise Invalid("Name the token (what integration uses it).", fields={"name": ["required"]})
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user_id=user.id, name=name[:120], prefix=raw[:12], token_hash=_hash_token(raw),
                     created_by_id=actor.user_id)
    session.add(token)
    session.flush()
    audit.record(session, actor, "api_token.issue", "api_token", token.id, detail={"user_id": user.id})
    return token, raw


def revoke_token(session: Session, actor: Actor, token_id: int) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound("No such token.", code="token_not_found")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record(session, actor, "api_token.revoke", "api_token", token.id, detail={"user_id": token.user_id})
        session.flush()
    return token


def list_tokens(session: Session, user_id: int | None = None) -> list[ApiToken]:
    stmt = select(ApiToken).order_by(ApiToken.created_at.desc())
    if user_id is not None:
        stmt = stmt.where(ApiToken.user_id == user_id)
    return list(session.execute(stmt).scalars())


def user_for_token(session: Session, raw: str) -> User | None:
    """The active user behind a live bearer token, or None. Marks the token used."""
    if not raw or not raw.startswith(TOKEN_PREFIX):
        return None
    token = session.execute(
        select(ApiToken).where(ApiToken.token_hash == _hash_token(raw), ApiToken.revoked_at.is_(None))
    ).scalar_one_or_none()
    if token is None or not token.user.active:
        return None
    token.last_used_at = utcnow()
    return token.user
