"""Who may call each lab route (403 vs not-403), for the permission matrix runner.

Ids are 1 and the test code "CBC"; with empty tables an allowed call answers 404 or 422.
"""

from hms.auth.roles import ALL_ROLES

CATALOGUE = set(ALL_ROLES)
ORDER = {"doctor", "admin"}
READ = {"doctor", "nurse", "lab_technician", "pathologist", "admin"}
WORKLIST = {"lab_technician", "pathologist", "admin"}
COLLECT = {"lab_technician"}
ENTER = {"lab_technician"}
VERIFY = {"pathologist"}
AMEND = {"lab_technician", "pathologist"}
CANCEL = {"doctor", "lab_technician", "admin"}

ROWS = [
    ("GET", "/api/v1/lab/tests", CATALOGUE),
    ("GET", "/api/v1/lab/tests/CBC", CATALOGUE),
    ("POST", "/api/v1/lab/orders", ORDER),
    ("GET", "/api/v1/lab/orders", READ),
    ("GET", "/api/v1/lab/orders/1", READ),
    ("POST", "/api/v1/lab/orders/1/collect", COLLECT),
    ("POST", "/api/v1/lab/orders/1/results", ENTER),
    ("POST", "/api/v1/lab/orders/1/verify", VERIFY),
    ("POST", "/api/v1/lab/results/1/amend", AMEND),
    ("POST", "/api/v1/lab/order-items/1/cancel", CANCEL),
    ("GET", "/api/v1/patients/1/lab-results", READ),
    # pages
    ("GET", "/lab", WORKLIST),
    ("GET", "/lab/orders/new", ORDER),
    ("POST", "/lab/orders/new", ORDER),
    ("GET", "/lab/orders/1", READ),
    ("POST", "/lab/orders/1/collect", COLLECT),
    ("POST", "/lab/samples/1/reject", COLLECT),
    ("POST", "/lab/orders/1/results", ENTER),
    ("POST", "/lab/orders/1/verify", VERIFY),
    ("POST", "/lab/results/1/amend", AMEND),
    ("POST", "/lab/order-items/1/cancel", CANCEL),
    ("GET", "/lab/orders/1/report", READ),
    ("GET", "/lab/orders/1/report.pdf", READ),
]
