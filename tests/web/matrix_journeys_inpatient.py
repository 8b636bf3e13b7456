"""Who may call each inpatient journey route (journeys/inpatient.py)."""

ADMIT = {"doctor", "reception", "admin"}
DISCHARGE = {"doctor", "admin"}
TRANSFER = {"doctor", "nurse", "admin"}
ORDER = {"doctor", "admin"}
RECORD = {"nurse", "admin"}

ROWS = [
    ("POST", "/api/v1/admissions", ADMIT),
    ("POST", "/api/v1/admissions/1/discharge", DISCHARGE),
    ("POST", "/api/v1/admissions/1/transfers", TRANSFER),
    ("POST", "/api/v1/admissions/1/orders", ORDER),
    ("POST", "/api/v1/medication-slots/1", RECORD),
    ("POST", "/api/v1/vitals-rounds/1", RECORD),
    ("GET", "/wards/admissions/new", ADMIT),
    ("POST", "/wards/admissions/new", ADMIT),
    ("POST", "/wards/admissions/1/discharge", DISCHARGE),
    ("POST", "/wards/admissions/1/transfer", TRANSFER),
    ("POST", "/wards/admissions/1/orders", ORDER),
]
