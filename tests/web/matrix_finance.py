"""Who may call each finance route (403 vs not-403), for the permission matrix runner.

Reception may see bills and receipts; only cashiers, finance managers and admins take
payments; tariffs are read by all staff and changed by finance managers and admins."""

ALL_STAFF = {"reception", "nurse", "doctor", "lab_technician", "pathologist", "pharmacist", "cashier",
             "finance_manager", "department_head", "housekeeping", "admin"}
BILLS_READ = {"cashier", "finance_manager", "admin", "reception"}
PAYMENTS = {"cashier", "finance_manager", "admin"}
TARIFFS_WRITE = {"finance_manager", "admin"}

ROWS = [
    ("GET", "/api/v1/bills", BILLS_READ),
    ("GET", "/api/v1/bills/1", BILLS_READ),
    ("POST", "/api/v1/bills/1/payments", PAYMENTS),
    ("GET", "/api/v1/tariffs", ALL_STAFF),
    ("POST", "/api/v1/tariffs", TARIFFS_WRITE),
    ("PUT", "/api/v1/tariffs/1/prices", TARIFFS_WRITE),
    ("GET", "/api/v1/payer-classes", ALL_STAFF),
    ("POST", "/api/v1/payer-classes", TARIFFS_WRITE),
    ("GET", "/bills", BILLS_READ),
    ("GET", "/bills/1", BILLS_READ),
    ("POST", "/bills/1/payments", PAYMENTS),
    ("GET", "/bills/1/receipt", BILLS_READ),
    ("GET", "/bills/1/receipt.pdf", BILLS_READ),
]
