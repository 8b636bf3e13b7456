"""Accounts: authentication with lockout, users, roles, scopes and API tokens.

The only code that writes the auth tables. Functions flush, never commit; every change
to an account is audited. Permission checks (who may call these) are the routes' job.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from hms import audit
from hms.audit import Actor
from hms.auth.models import ApiToken, LoginAttempt, User, UserDepartment, UserRole, UserWard
from hms.auth.passwords import hash_password, needs_rehash, password_problem, verify_password
from hms.auth.roles import ALL_ROLES, effective_roles
from hms.db import config_of, utcnow
from hms.errors import Conflict, Invalid, NotFound, TooManyRequests, Unauthorized

USERNAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{2,59}$")
USERNAME_MAX = 60
FULL_NAME_MAX = 120
TOKEN_NAME_MAX = 120
TOKEN_PREFIX = "hms_"
BAD_LOGIN = "Unknown username or wrong password."
LOCKED_OUT = "Too many failed logins. This account is locked for a while; ask an administrator."
# Writing last_used_at on every call would turn each token request into a row update;
# once a minute is precise enough to see which integrations are alive.
TOKEN_USE_RESOLUTION = timedelta(minutes=1)


def _new_session_token() -> str:
    return secrets.token_hex(32)


def actor_for(user: User, ip: str | None = None) -> Actor:
    """The audit Actor for a user (roles and scopes as they are now)."""
    return Actor(user_id=user.id, username=user.username, roles=effective_roles(user.role_names),
                 department_ids=user.department_ids, ward_ids=user.ward_ids, ip=ip)


# --- authentication -------------------------------------------------------------------

def _normalise_username(username: str | None) -> str:
    return (username or "").strip().lower()


def _failures_count_from(session: Session, username: str) -> datetime:
    """The moment failed logins start counting towards a lockout.

    The latest of: the start of the lockout window, the last successful login and the
    last password change, so an administrator's password reset unlocks the account.
    """
    window = timedelta(minutes=config_of(session).lockout_window_minutes)
    last_success = session.execute(
        select(func.max(LoginAttempt.at)).where(
            LoginAttempt.username == username, LoginAttempt.success.is_(True))
    ).scalar()
    password_changed = session.execute(
        select(User.password_changed_at).where(User.username == username)
    ).scalar()
    return max(t for t in (utcnow() - window, last_success, password_changed) if t is not None)


def is_locked_out(session: Session, username: str) -> bool:
    """True once `username` has HMS_LOCKOUT_THRESHOLD failures in the lockout window.

    Works the same whether or not the username exists, so a lockout tells an attacker
    nothing about which usernames are real.
    """
    username = _normalise_username(username)[:USERNAME_MAX]
    since = _failures_count_from(session, username)
    failures = session.execute(
        select(func.count()).select_from(LoginAttempt).where(
            LoginAttempt.username == username, LoginAttempt.success.is_(False),
            LoginAttempt.at > since)
    ).scalar_one()
    return failures >= config_of(session).lockout_threshold


def authenticate(session: Session, username: str, password: str, ip: str | None) -> User:
    """Check a username and password; record the attempt (the caller commits it even when
    the login fails, so the lockout sees it).

    Raises Unauthorized with one message for an unknown user, an inactive user and a
    wrong password, and TooManyRequests (locked_out) once the username has had too many
    failures in the lockout window, even when the password is right.
    """
    username = _normalise_username(username)
    attempt_key = username[:USERNAME_MAX]  # the column's width; longer names cannot exist
    if is_locked_out(session, attempt_key):
        session.add(LoginAttempt(username=attempt_key, success=False, ip=ip))
        session.flush()
        raise TooManyRequests(LOCKED_OUT, code="locked_out")
    user = None
    if len(username) <= USERNAME_MAX:
        user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    # Verify even for an unknown user (against a dummy hash) so both cost the same time.
    ok = verify_password(user.password_hash if user else None, password or "")
    if not ok or user is None or not user.active:
        session.add(LoginAttempt(username=attempt_key, success=False, ip=ip))
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
    """The active user whose current session token this is (None once it was rotated)."""
    if not token:
        return None
    return session.execute(
        select(User).where(User.session_token == token, User.active.is_(True))
    ).scalar_one_or_none()


def logout(session: Session, actor: Actor, user: User) -> User:
    """End every browser session of `user` by rotating the session token.

    Sessions live in signed cookies, so clearing this browser's cookie alone would leave
    any copy of it valid until the idle timeout; rotating makes logout final (and on a
    shared workstation also ends a session the user forgot elsewhere).
    """
    user.session_token = _new_session_token()
    audit.record(session, actor, "logout", "user", user.id)
    session.flush()
    return user


# --- users ----------------------------------------------------------------------------

def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("No such user.", code="user_not_found")
    return user


def _user_filter(q: str | None):
    """Case-insensitive substring match on username or full name (LIKE wildcards escaped)."""
    q = (q or "").strip().lower()
    if not q:
        return None
    pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return or_(User.username.like(pattern, escape="\\"),
               func.lower(User.full_name).like(pattern, escape="\\"))


def list_users(session: Session, q: str | None = None, *, offset: int = 0,
               limit: int | None = None) -> list[User]:
    """Users ordered by username, optionally matching `q` (username or name) and paged."""
    stmt = select(User).order_by(User.username).offset(offset)
    where = _user_filter(q)
    if where is not None:
        stmt = stmt.where(where)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.execute(stmt).scalars())


def count_users(session: Session, q: str | None = None) -> int:
    """How many users `list_users(session, q)` returns without paging."""
    stmt = select(func.count()).select_from(User)
    where = _user_filter(q)
    if where is not None:
        stmt = stmt.where(where)
    return session.execute(stmt).scalar_one()


def list_scopes(session: Session) -> tuple[list, list]:
    """(departments, wards) that can be assigned to users, each ordered by name."""
    # Imported here: hms.auth must stay importable while the org and wards packages grow.
    from hms.org.models import Department
    from wards.models import Ward

    departments = list(session.execute(select(Department).order_by(Department.name)).scalars())
    wards = list(session.execute(select(Ward).order_by(Ward.name)).scalars())
    return departments, wards


def _validate_roles(roles) -> set[str]:
    roles = set(roles or [])
    unknown = roles - ALL_ROLES
    if unknown:
        raise Invalid("Unknown role.", fields={"roles": [f"unknown role(s): {', '.join(sorted(unknown))}"]})
    return roles


def _clean_ids(values, field_name: str) -> set[int]:
    """Ids from JSON numbers or form strings; a 422 naming the field for anything else."""
    ids = set()
    for value in values or ():
        try:
            ids.add(int(value))
        except (TypeError, ValueError):
            raise Invalid("Ids must be whole numbers.",
                          fields={field_name: [f"not an id: {value!r}"]}) from None
    return ids


def _validate_full_name(full_name: str | None) -> tuple[str, str | None]:
    """(cleaned name, problem or None)."""
    full_name = (full_name or "").strip()
    if not full_name:
        return full_name, "Enter the person's full name."
    if len(full_name) > FULL_NAME_MAX:
        return full_name, f"Use at most {FULL_NAME_MAX} characters."
    return full_name, None


def create_user(session: Session, actor: Actor, *, username: str, full_name: str, password: str,
                roles=(), department_ids=(), ward_ids=(), is_demo: bool = False) -> User:
    """Create an account. 409 when the username is taken; 422 for a bad name or password."""
    username = _normalise_username(username)
    errors: dict[str, list[str]] = {}
    if not USERNAME_RE.match(username):
        errors["username"] = ["3-60 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter."]
    full_name, name_problem = _validate_full_name(full_name)
    if name_problem:
        errors["full_name"] = [name_problem]
    problem = password_problem(password or "", username)
    if problem:
        errors["password"] = [problem]
    if errors:
        raise Invalid("The account details are not valid.", fields=errors)
    roles = _validate_roles(roles)
    if session.execute(select(User.id).where(User.username == username)).first():
        raise Conflict(f"The username {username!r} is taken.", code="username_taken",
                       fields={"username": ["already taken"]})
    user = User(username=username, full_name=full_name, password_hash=hash_password(password),
                session_token=_new_session_token(), is_demo=is_demo)
    session.add(user)
    session.flush()
    set_roles_and_scopes(session, actor, user, roles=roles, department_ids=department_ids,
                         ward_ids=ward_ids, _audit=False)
    audit.record(session, actor, "user.create", "user", user.id,
                 detail={"roles": sorted(user.role_names), "departments": sorted(user.department_ids),
                         "wards": sorted(user.ward_ids)})
    return user


def update_details(session: Session, actor: Actor, user: User, *, full_name: str) -> User:
    """Correct a user's full name."""
    full_name, problem = _validate_full_name(full_name)
    if problem:
        raise Invalid("The name is not valid.", fields={"full_name": [problem]})
    if full_name != user.full_name:
        user.full_name = full_name
        # The name itself stays out of the audit detail (no personal names in the log).
        audit.record(session, actor, "user.update", "user", user.id, detail={"fields": ["full_name"]})
        session.flush()
    return user


def _existing_ids(session: Session, model, ids: set[int], field_name: str, label: str) -> set[int]:
    found = set(session.execute(select(model.id).where(model.id.in_(ids))).scalars()) if ids else set()
    if ids - found:
        raise Invalid(f"Unknown {label}.", fields={field_name: [f"unknown: {sorted(ids - found)}"]})
    return ids


def set_roles_and_scopes(session: Session, actor: Actor, user: User, *, roles=None,
                         department_ids=None, ward_ids=None, _audit: bool = True) -> User:
    """Replace a user's roles and/or scopes (None leaves that part unchanged).

    An administrator cannot remove their own admin role: they would lose this page in
    the middle of using it, and it could leave the hospital without an administrator.
    """
    from hms.org.models import Department
    from wards.models import Ward

    if roles is not None:
        roles = _validate_roles(roles)
        if actor.user_id == user.id and "admin" in user.role_names and "admin" not in roles:
            raise Conflict("You cannot remove your own administrator role; ask another administrator.",
                           code="self_demotion", fields={"roles": ["admin must stay"]})
        user.roles = [UserRole(role=r) for r in sorted(roles)]
    if department_ids is not None:
        ids = _existing_ids(session, Department, _clean_ids(department_ids, "department_ids"),
                            "department_ids", "department")
        user.departments = [UserDepartment(department_id=i) for i in sorted(ids)]
    if ward_ids is not None:
        ids = _existing_ids(session, Ward, _clean_ids(ward_ids, "ward_ids"), "ward_ids", "ward")
        user.wards = [UserWard(ward_id=i) for i in sorted(ids)]
    session.flush()
    if _audit:
        audit.record(session, actor, "user.update_access", "user", user.id,
                     detail={"roles": sorted(user.role_names), "departments": sorted(user.department_ids),
                             "wards": sorted(user.ward_ids)})
    return user


def set_active(session: Session, actor: Actor, user: User, active: bool) -> User:
    """Deactivate (or reactivate) an account.

    Deactivation ends the user's browser sessions (session token rotated) and revokes
    their live API tokens, so reactivating someone never silently revives an
    integration credential. Setting the state it already has changes nothing.
    """
    if user.active == active:
        return user
    if not active and actor.user_id == user.id:
        raise Conflict("You cannot deactivate your own account.", code="self_deactivation")
    user.active = active
    detail = None
    if not active:
        user.session_token = _new_session_token()
        revoked = _revoke_live_tokens(session, user)
        detail = {"revoked_tokens": revoked} if revoked else None
    audit.record(session, actor, "user.activate" if active else "user.deactivate", "user", user.id,
                 detail=detail)
    session.flush()
    return user


def reset_password(session: Session, actor: Actor, user: User, new_password: str) -> User:
    """Set a new password. The user's existing sessions stop working, and earlier failed
    logins stop counting towards a lockout (a reset is how an administrator unlocks)."""
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
    # A token is 256 random bits, so a plain SHA-256 is enough (no slow hash needed) and
    # lets a request find its token by an indexed lookup.
    return hashlib.sha256(raw.encode()).hexdigest()


def issue_token(session: Session, actor: Actor, user: User, name: str) -> tuple[ApiToken, str]:
    """Create a bearer token for `user`. The raw token is returned once and never stored."""
    name = (name or "").strip()
    if not name:
        raise Invalid("Name the token (what integration uses it).", fields={"name": ["required"]})
    if len(name) > TOKEN_NAME_MAX:
        raise Invalid("The token name is too long.", fields={"name": [f"at most {TOKEN_NAME_MAX} characters"]})
    if not user.active:
        raise Conflict("This account is deactivated; reactivate it before issuing a token.",
                       code="user_inactive")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user_id=user.id, name=name, prefix=raw[:12], token_hash=_hash_token(raw),
                     created_by_id=actor.user_id)
    session.add(token)
    session.flush()
    audit.record(session, actor, "api_token.issue", "api_token", token.id, detail={"user_id": user.id})
    return token, raw


def get_token(session: Session, token_id: int) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound("No such token.", code="token_not_found")
    return token


def revoke_token(session: Session, actor: Actor, token_id: int) -> ApiToken:
    """Revoke a token; it stops working at once. Revoking a revoked token changes nothing."""
    token = get_token(session, token_id)
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record(session, actor, "api_token.revoke", "api_token", token.id, detail={"user_id": token.user_id})
        session.flush()
    return token


def _revoke_live_tokens(session: Session, user: User) -> list[int]:
    """Revoke every live token of `user` (audited by the caller); returns their ids."""
    tokens = session.execute(
        select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
    ).scalars().all()
    now = utcnow()
    for token in tokens:
        token.revoked_at = now
    return sorted(t.id for t in tokens)


def list_tokens(session: Session, user_id: int | None = None) -> list[ApiToken]:
    """Tokens, newest first (all, or one user's)."""
    stmt = select(ApiToken).order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    if user_id is not None:
        stmt = stmt.where(ApiToken.user_id == user_id)
    return list(session.execute(stmt).scalars())


def user_for_token(session: Session, raw: str) -> User | None:
    """The active user behind a live bearer token, or None. Records when it was used."""
    if not raw or not raw.startswith(TOKEN_PREFIX):
        return None
    row = session.execute(
        select(ApiToken, User).join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == _hash_token(raw), ApiToken.revoked_at.is_(None))
    ).first()
    if row is None or not row.User.active:
        return None
    token, now = row.ApiToken, utcnow()
    if token.last_used_at is None or now - token.last_used_at >= TOKEN_USE_RESOLUTION:
        token.last_used_at = now
    return row.User
