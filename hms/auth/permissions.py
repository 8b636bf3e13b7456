"""Route permissions: every view declares one, with one decorator.

    BILL_READ = define("finance.bills.read", "cashier", "finance_manager", "admin")

    @bp.get("/api/v1/bills/<int:bill_id>")
    @requires(BILL_READ)
    def get_bill(bill_id): ...

`requires` checks login (401 for the API, a redirect to /login for pages) and that the
flask-principal identity provides one of the permission's role needs (403 otherwise).
`public` marks the few views open to anyone (login, health, static). A test walks
app.url_map and fails on any view that declares neither.

Scope (wards, departments) is data-dependent, so it is checked where the data is known:
`require_scope(...)` here for routes, and the queue queries filter by the actor's scopes.
"""

from __future__ import annotations

from functools import wraps
from typing import Callable

from flask import g, redirect, request, url_for
from flask_login import current_user
from flask_principal import Need, Permission, RoleNeed

from hms.auth.roles import ALL_ROLES
from hms.errors import Forbidden, Unauthorized

PUBLIC = "public"
AUTHENTICATED = "authenticated"

_REGISTRY: dict[str, frozenset[str]] = {}

WardNeed = lambda ward_id: Need("ward", int(ward_id))  # noqa: E731
DepartmentNeed = lambda department_id: Need("department", int(department_id))  # noqa: E731


def define(name: str, *roles: str) -> str:
    """Declare permission `name` granted to `roles`; returns the name for `requires`."""
    unknown = set(roles) - ALL_ROLES
    if unknown:
        raise ValueError(f"permission {name}: unknown roles {sorted(unknown)}")
    existing = _REGISTRY.get(name)
    if existing is not None and existing != frozenset(roles):
        raise ValueError(f"permission {name} defined twice with different roles")
    _REGISTRY[name] = frozenset(roles)
    return name


def roles_for(name: str) -> frozenset[str]:
    if name == AUTHENTICATED:
        return ALL_ROLES
    return _REGISTRY[name]


def all_permissions() -> dict[str, frozenset[str]]:
    return dict(_REGISTRY)


def wants_json() -> bool:
    return request.path.startswith("/api/")


def _deny_anonymous():
    expired = g.get("hms_idle_expired", False)
    if wants_json():
        if expired:
            raise Unauthorized("Your session ended after a period of inactivity; log in again.",
                               code="session_expired")
        if g.get("hms_bad_token", False):
            # Tell an integration its credential is dead, not merely missing.
            raise Unauthorized("The API token is not valid, was revoked, or its account is deactivated.",
                               code="invalid_token")
        raise Unauthorized("Please log in.", code="login_required")
    args = {"next": request.full_path.rstrip("?")}
    if expired:
        args["expired"] = 1
    return redirect(url_for("auth.login_page", **args))


def requires(name: str) -> Callable:
    """Decorate a view: logged in, and holding one of the roles of permission `name`."""
    if name != AUTHENTICATED and name not in _REGISTRY:
        raise ValueError(f"permission {name!r} is not defined")

    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                return _deny_anonymous()
            if name != AUTHENTICATED:
                needs = [RoleNeed(r) for r in roles_for(name)]
                if not Permission(*needs).can():
                    raise Forbidden("You do not have permission to do this.", code="forbidden")
            return view(*args, **kwargs)

        wrapped._hms_permission = name
        return wrapped

    return decorator


def public(view):
    """Mark a view open to anyone (login page, health check)."""
    view._hms_permission = PUBLIC
    return view


def require_scope(kind: str, scope_id: int | None) -> None:
    """403 unless the current identity provides the ward/department need (admins pass)."""
    if scope_id is None:
        return
    if Permission(RoleNeed("admin")).can():
        return
    if not Permission(Need(kind, int(scope_id))).can():
        raise Forbidden(f"This {kind} is outside your assignment.", code="out_of_scope")


def declared_permission(view_func) -> str | None:
    return getattr(view_func, "_hms_permission", None)


# The auth package's own permission: managing accounts, roles, scopes and API tokens.
USERS_MANAGE = define("auth.users.manage", "admin")
