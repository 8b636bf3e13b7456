"""Role x route rows for the audit log viewer: administrators only.

Rows are (method, url, roles allowed); tests/web/test_permission_matrix.py runs them.
"""

ADMIN = frozenset({"admin"})

ROWS = [
    # JSON API
    ("GET", "/api/v1/audit", ADMIN),
    ("POST", "/api/v1/audit/verify", ADMIN),
    # pages and their forms
    ("GET", "/admin/audit", ADMIN),
    ("POST", "/admin/audit/verify", ADMIN),
]
