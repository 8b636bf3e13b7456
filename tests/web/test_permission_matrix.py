"""The role x route permission matrix, table-driven.

Every module tests/web/matrix_*.py contributes `ROWS`: (method, url, allowed roles). For
each row every role of hms.auth.roles.ROLES calls the route: a role outside the set must
get 403, a role inside it must get neither 403 nor 401; an anonymous client must be sent
to log in (401 under /api, a redirect to /login for pages). Bodies are `{}`, so allowed
calls are refused for their content (404, 422) rather than changing anything.

Then every non-public route under /api/ must be covered by a row, so a new endpoint
cannot ship without its permission being stated and checked.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask_wtf.csrf import generate_csrf

from hms.auth.permissions import PUBLIC, declared_permission, public
from hms.auth.roles import IMPLIES, ALL_ROLES, ROLES
from tests.conftest import login

MATRIX_DIR = Path(__file__).parent
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
CSRF_URL = "/_test/csrf-token"


def _load_rows() -> list[tuple[str, str, str, frozenset[str]]]:
    """(source module, METHOD, url, allowed roles) from every matrix_*.py, in file order."""
    rows = []
    for path in sorted(MATRIX_DIR.glob("matrix_*.py")):
        spec = importlib.util.spec_from_file_location(f"hms_permission_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for method, url, allowed in module.ROWS:
            rows.append((path.stem, method.upper(), url, frozenset(allowed)))
    return rows


MATRIX = _load_rows()


@pytest.fixture
def app(app):
    """The app plus a test-only page handing out a CSRF token, for the HTML form rows."""
    app.add_url_rule(CSRF_URL, "test_csrf_token", public(lambda: {"token": generate_csrf()}))
    return app


@pytest.fixture
def role_clients(app, make_user) -> dict[str, object]:
    """One logged-in client per role, each user holding only that role."""
    clients = {}
    for role in ROLES:
        username = f"matrix_{role}"
        make_user(username, role)
        client = app.test_client()
        login(client, username)
        clients[role] = client
    return clients


def _call(client, method: str, url: str):
    kwargs: dict = {}
    if method in {"POST", "PUT", "PATCH"}:
        kwargs["json"] = {}
    if method in MUTATING and not url.startswith("/api/"):
        # Pages check CSRF before permissions; send a valid token so the permission answers.
        kwargs["headers"] = {"X-CSRFToken": client.get(CSRF_URL).get_json()["token"]}
    return client.open(url, method=method, **kwargs)


def _anonymous_problem(resp, url: str) -> str | None:
    if url.startswith("/api/"):
        if resp.status_code != 401:
            return f"anonymous got {resp.status_code}, expected 401"
        return None
    if resp.status_code != 302 or "/login" not in resp.headers.get("Location", ""):
        return f"anonymous got {resp.status_code} {resp.headers.get('Location', '')}, expected a redirect to /login"
    return None


def effective_allowed(allowed) -> set[str]:
    """A row names the roles a route declares; roles that imply one of them (a charge nurse
    is a nurse) are allowed too."""
    return set(allowed) | {role for role, implied in IMPLIES.items() if implied & set(allowed)}


def test_rows_name_only_known_roles():
    unknown = [(source, method, url, sorted(allowed - ALL_ROLES))
               for source, method, url, allowed in MATRIX if allowed - ALL_ROLES]
    assert not unknown, f"matrix rows with unknown roles: {unknown}"


@pytest.mark.parametrize("source,method,url,allowed", MATRIX,
                         ids=[f"{s}:{m} {u}" for s, m, u, _ in MATRIX])
def test_role_route_matrix(app, role_clients, source, method, url, allowed):
    problems = []
    anonymous = _anonymous_problem(_call(app.test_client(), method, url), url)
    if anonymous:
        problems.append(anonymous)
    allowed = effective_allowed(allowed)
    for role, client in role_clients.items():
        status = _call(client, method, url).status_code
        if role in allowed and status in (401, 403):
            problems.append(f"{role} is allowed but got {status}")
        elif role not in allowed and status != 403:
            problems.append(f"{role} is not allowed but got {status}")
    assert not problems, f"{method} {url} ({source}): " + "; ".join(problems)


_CONVERTER = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
_CONVERTER_PATTERNS = {"int": r"\d+", "float": r"\d+(?:\.\d+)?", "path": r".+"}


def rule_regex(rule: str) -> re.Pattern:
    """A regex matching the concrete URLs of a Werkzeug rule ('/x/<int:id>' -> '/x/\\d+')."""
    parts, last = [], 0
    for match in _CONVERTER.finditer(rule):
        parts.append(re.escape(rule[last:match.start()]))
        parts.append(_CONVERTER_PATTERNS.get(match.group("converter") or "", r"[^/]+"))
        last = match.end()
    parts.append(re.escape(rule[last:]))
    return re.compile("".join(parts))


def test_rule_regex_matches_concrete_urls():
    assert rule_regex("/api/v1/users/<int:user_id>/tokens").fullmatch("/api/v1/users/12/tokens")
    assert not rule_regex("/api/v1/users/<int:user_id>").fullmatch("/api/v1/users/12/tokens")
    assert rule_regex("/api/v1/patients/<mrn>").fullmatch("/api/v1/patients/HMS-000001")


def test_every_api_route_is_in_the_matrix(app):
    covered = [(method, urlsplit(url).path) for _, method, url, _ in MATRIX]
    missing = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        if declared_permission(app.view_functions[rule.endpoint]) == PUBLIC:
            continue
        pattern = rule_regex(rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if not any(m == method and pattern.fullmatch(path) for m, path in covered):
                missing.append(f"{method} {rule.rule} ({rule.endpoint})")
    assert not missing, ("API routes with no row in any tests/web/matrix_*.py:\n  "
                         + "\n  ".join(missing))
