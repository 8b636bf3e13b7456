"""Who may call each inventory API route (403 vs not-403), for the permission matrix runner."""

READ = {"doctor", "nurse", "lab_technician", "pathologist", "pharmacist", "cashier", "admin"}
STOCK = {"pharmacist", "admin"}
DISPENSE = {"pharmacist", "admin"}
DISPENSE_READ = {"pharmacist", "doctor", "nurse", "cashier", "admin"}
LEDGER = {"pharmacist", "finance_manager", "admin"}
PRESCRIPTION_CHECK = {"doctor", "pharmacist", "nurse", "admin"}

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
]
