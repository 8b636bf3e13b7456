"""Role x route rows for login, the current user, roles and account administration.

Rows are (method, url, roles allowed). tests/web/test_permission_matrix.py calls each
row as every role and as an anonymous client.
"""

from hms.auth.roles import ALL_ROLES

ADMIN = frozenset({"admin"})

ROWS = [
    # Any logged-in user.
    ("GET", "/", ALL_ROLES),
    ("GET", "/api/v1/auth/me", ALL_ROLES),
    ("POST", "/api/v1/auth/logout", ALL_ROLES),
    ("POST", "/logout", ALL_ROLES),
    ("GET", "/api/v1/roles", ALL_ROLES),
    # Account administration: JSON API.
    ("GET", "/api/v1/users", ADMIN),
    ("POST", "/api/v1/users", ADMIN),
    ("GET", "/api/v1/users/1", ADMIN),
    ("PATCH", "/api/v1/users/1", ADMIN),
    ("POST", "/api/v1/users/1/password", ADMIN),
    ("GET", "/api/v1/users/1/tokens", ADMIN),
    ("POST", "/api/v1/users/1/tokens", ADMIN),
    ("DELETE", "/api/v1/tokens/1", ADMIN),
    # Account administration: pages and their forms.
    ("GET", "/admin/users", ADMIN),
    ("POST", "/admin/users", ADMIN),
    ("GET", "/admin/users/1", ADMIN),
    ("POST", "/admin/users/1/access", ADMIN),
    ("POST", "/admin/users/1/active", ADMIN),
    ("POST", "/admin/users/1/password", ADMIN),
    ("POST", "/admin/users/1/tokens", ADMIN),
    ("POST", "/admin/tokens/1/revoke", ADMIN),
]
