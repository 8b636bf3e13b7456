"""Who may call each wards route (403 vs not-403), for the permission matrix runner.

Ids are 1; with empty tables an allowed call answers 404 (no bed 1) or 422 (empty body).
"""

READ = {"nurse", "doctor", "reception", "admin", "department_head", "housekeeping", "cashier"}
ASSIGN = {"reception", "nurse", "admin"}
CLEAN = {"housekeeping", "nurse", "admin"}
BLOCK = {"nurse", "admin"}
ADMISSIONS = {"nurse", "doctor", "reception", "admin", "department_head", "cashier", "finance_manager", "pharmacist"}
TRANSFER_CANCEL = {"doctor", "nurse", "admin"}
ORDER_STOP = {"doctor", "admin"}

ROWS = [
    ("GET", "/api/v1/wards", READ),
    ("POST", "/api/v1/beds/1/reserve", ASSIGN),
    ("POST", "/api/v1/beds/1/occupy", ASSIGN),
    ("POST", "/api/v1/beds/1/release", ASSIGN),
    ("POST", "/api/v1/beds/1/vacate", ASSIGN),
    ("POST", "/api/v1/beds/1/clean", CLEAN),
    ("POST", "/api/v1/beds/1/block", BLOCK),
    ("POST", "/api/v1/beds/1/unblock", BLOCK),
    ("GET", "/api/v1/admissions", ADMISSIONS),
    ("GET", "/api/v1/admissions/1", ADMISSIONS),
    ("POST", "/api/v1/transfers/1/cancel", TRANSFER_CANCEL),
    ("POST", "/api/v1/orders/1/stop", ORDER_STOP),
    # pages
    ("GET", "/wards/board", READ),
    ("POST", "/wards/beds/1/clean", CLEAN),
    ("GET", "/wards/admissions", ADMISSIONS),
    ("GET", "/wards/admissions/1", ADMISSIONS),
]
