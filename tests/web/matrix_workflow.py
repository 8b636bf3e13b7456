"""Who may call each workflow API route (403 vs not-403), for the permission matrix runner.

Row-level rules (a task's role and ward, a pathway's start lane) are checked by the
workflow tests; this matrix is the route-level gate.
"""

ALL = {"reception", "nurse", "doctor", "lab_technician", "pathologist", "pharmacist", "cashier",
       "finance_manager", "department_head", "housekeeping", "admin"}
NOT_HOUSEKEEPING = ALL - {"housekeeping"}

ROWS = [
    ("GET", "/api/v1/tasks", ALL),
    ("GET", "/api/v1/tasks/1", ALL),
    ("POST", "/api/v1/tasks/1/claim", ALL),
    ("POST", "/api/v1/tasks/1/release", ALL),
    ("POST", "/api/v1/tasks/1/complete", ALL),
    ("POST", "/api/v1/tasks/1/assign", {"department_head", "admin"}),
    ("GET", "/api/v1/pathways", ALL),
    ("POST", "/api/v1/pathways/fixture_visit/instances", ALL),
    ("GET", "/api/v1/process-instances", {"admin"}),
    ("GET", "/api/v1/process-instances/1", NOT_HOUSEKEEPING),
    ("POST", "/api/v1/process-instances/1/cancel", {"department_head", "admin"}),
    ("POST", "/api/v1/process-instances/1/retry", {"admin"}),
]
