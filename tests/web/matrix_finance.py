"""Who may call each finance route (403 vs not-403), for the permission matrix runner.

Reception may see bills and receipts; only cashiers, finance managers and admins take
payments; tariffs are read by all staff and changed by finance managers and admins."""

ALL_STAFF = {"reception", "nurse", "doctor", "lab_technician", "pathologist", "pharmacist", "cashier",
             "finance_manager", "department_head", "housekeeping", "admin"}
BILLS_READ = {"cashier", "finance_manager", "admin", "reception"}
PAYMENTS = {"cashier", "finance_manager", "admin"}
TARIFFS_WRITE = {"finance_manager", "admin"}
MANAGE = {"cashier", "finance_manager", "admin"}
APPROVE = {"finance_manager", "admin"}

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
    ("GET", "/api/v1/bills/1/versions", BILLS_READ),
    ("POST", "/api/v1/bills/1/discounts", MANAGE),
    ("POST", "/api/v1/discounts/1/approve", APPROVE),
    ("POST", "/api/v1/discounts/1/reject", APPROVE),
    ("POST", "/api/v1/bills/1/payer", MANAGE),
    ("POST", "/api/v1/bills/1/package", MANAGE),
    ("POST", "/api/v1/bills/1/credit-approval", APPROVE),
    ("POST", "/api/v1/bills/1/close", MANAGE),
    ("POST", "/api/v1/bills/1/reversals", MANAGE),
    ("POST", "/api/v1/bills/1/gate-pass", MANAGE),
    ("GET", "/api/v1/cash-closings", MANAGE),
    ("POST", "/api/v1/cash-closings", MANAGE),
    ("POST", "/bills/1/deposits", PAYMENTS),
    ("POST", "/bills/1/refunds", PAYMENTS),
    ("POST", "/bills/1/discounts", MANAGE),
    ("POST", "/bills/1/discounts/1/approve", APPROVE),
    ("POST", "/bills/1/discounts/1/reject", APPROVE),
    ("POST", "/bills/1/payer", MANAGE),
    ("POST", "/bills/1/package", MANAGE),
    ("POST", "/bills/1/credit-approval", APPROVE),
    ("POST", "/bills/1/close", MANAGE),
    ("POST", "/bills/1/reversals", MANAGE),
    ("POST", "/bills/1/gate-pass", MANAGE),
    ("GET", "/finance/bills/1/final.pdf", BILLS_READ),
    ("GET", "/finance/closing", MANAGE),
    ("GET", "/finance/cash-closing", MANAGE),
    ("POST", "/finance/cash-closing", MANAGE),
]
