"""Who may call each pathway-editor and form route (403 vs not-403), for the permission
matrix runner. Route level only: editing is for department heads and administrators;
which pathways a head may change (their departments') is checked per row by
tests/workflow/test_editor_*.py. 404 counts as allowed (no pathway is published here)."""

EDITORS = {"department_head", "admin"}
ADMIN = {"admin"}

ROWS = [
    ("POST", "/api/v1/pathways/check-expression", EDITORS),
    ("GET", "/api/v1/pathways/fixture_visit/draft", EDITORS),
    ("PUT", "/api/v1/pathways/fixture_visit/draft", EDITORS),
    ("DELETE", "/api/v1/pathways/fixture_visit/draft", EDITORS),
    ("GET", "/api/v1/pathways/fixture_visit/diff", EDITORS),
    ("POST", "/api/v1/pathways/fixture_visit/publish", EDITORS),
    ("POST", "/api/v1/pathways/fixture_visit/rollback", EDITORS),
    ("GET", "/api/v1/pathways/fixture_visit/versions", EDITORS),
    ("GET", "/api/v1/pathways/fixture_visit/versions/1", EDITORS),
    ("PUT", "/api/v1/pathways/fixture_visit/owner", ADMIN),
    ("GET", "/api/v1/pathways/fixture_visit/instances", EDITORS),
    ("POST", "/api/v1/pathways/fixture_visit/migrations", EDITORS),
    ("GET", "/api/v1/forms", EDITORS),
    ("GET", "/api/v1/forms/triage", EDITORS),
    ("POST", "/api/v1/forms/triage/versions", EDITORS),
    ("POST", "/api/v1/forms/preview", EDITORS),
    ("GET", "/pathways", EDITORS),
    ("GET", "/pathways/fixture_visit", EDITORS),
    ("GET", "/pathways/fixture_visit/edit", EDITORS),
    ("GET", "/pathways/fixture_visit/migrate", EDITORS),
    ("GET", "/forms", EDITORS),
    ("GET", "/forms/new", EDITORS),
    ("GET", "/forms/triage", EDITORS),
]
