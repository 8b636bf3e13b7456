"""Who may call each inventory API route (403 vs not-403), for the permission matrix runner."""

READ = {"doctor", "nurse", "lab_technician", "pathologist", "pharmacist", "cashier", "admin"}
STOCK = {"pharmacist", "admin"}
DISPENSE = {"pharmacist", "admin"}
DISPENSE_READ = {"pharmacist", "doctor", "nurse", "cashier", "admin"}
LEDGER = {"pharmacist", "finance_manager", "admin"}
PRESCRIPTION_CHECK = {"doctor", "pharmacist", "nurse", "admin"}
WARD_READ = {"nurse", "pharmacist", "doctor", "admin"}
WARD_NURSE = {"nurse", "admin"}
WARD_PHARMACY = {"pharmacist", "admin"}

ROWS = [
    ("GET", "/api/v1/inventory/items", READ),
    ("GET", "/api/v1/inventory/items/X", READ),
    ("POST", "/api/v1/inventory/items", STOCK),
    ("POST", "/api/v1/inventory/receipts", STOCK),
    ("GET", "/api/v1/inventory/batches?item_code=X", READ),
    ("POST", "/api/v1/inventory/adjustments", STOCK),
    ("POST", "/api/v1/inventory/dispenses", DISPENSE),
    ("GET", "/api/v1/inventory/dispenses/1", DISPENSE_READ),
    ("POST", "/api/v1/inventory/returns", DISPENSE),
    ("GET", "/api/v1/inventory/ledger?item_code=X", LEDGER),
    ("POST", "/api/v1/prescriptions/check", PRESCRIPTION_CHECK),
    ("GET", "/api/v1/admissions/1/pharmacy", WARD_READ),
    ("POST", "/api/v1/pharmacy/issues/1/accept", WARD_NURSE),
    ("POST", "/api/v1/pharmacy/returns", WARD_NURSE),
    ("POST", "/api/v1/pharmacy/returns/1/receive", WARD_PHARMACY),
    ("GET", "/api/v1/pharmacy/returns?state=sent", WARD_PHARMACY),
    # pages
    ("GET", "/pharmacy", READ),
    ("GET", "/pharmacy/items/X", READ),
    ("GET", "/pharmacy/items/new", STOCK),
    ("POST", "/pharmacy/items/new", STOCK),
    ("POST", "/pharmacy/items/X/adjust", STOCK),
    ("GET", "/pharmacy/receipts/new", STOCK),
    ("POST", "/pharmacy/receipts/new", STOCK),
    ("GET", "/pharmacy/dispense", DISPENSE),
    ("POST", "/pharmacy/dispense", DISPENSE),
    ("GET", "/pharmacy/dispenses/1", DISPENSE_READ),
    ("POST", "/pharmacy/dispenses/1/return", DISPENSE),
    ("GET", "/inventory/returns", WARD_PHARMACY),
    ("POST", "/inventory/returns/1/receive", WARD_PHARMACY),
]
