"""Who may call each nursing route (wards/nursing_routes.py), for the permission matrix runner.

Ids are 1; with empty tables an allowed call answers 404 (no admission, order or ward 1),
422 (empty body) or 200 (an empty slot list).
"""

INTERVAL = {"doctor", "admin"}
VITALS = {"nurse", "doctor", "charge_nurse", "admin"}
MEDICATION = {"nurse", "doctor", "pharmacist", "admin"}
PRESCRIBE = {"doctor"}
SLOTS = {"nurse", "admin"}
WARD = {"nurse", "doctor", "admin"}

ROWS = [
    ("POST", "/api/v1/admissions/1/round-interval", INTERVAL),
    ("GET", "/api/v1/admissions/1/vitals", VITALS),
    ("GET", "/api/v1/admissions/1/medication-orders", MEDICATION),
    ("POST", "/api/v1/admissions/1/medication-orders", PRESCRIBE),
    ("POST", "/api/v1/medication-orders/1/stop", PRESCRIBE),
    ("GET", "/api/v1/medication-slots", SLOTS),
    ("GET", "/api/v1/medication-slots?ward_id=1&status=pending", SLOTS),
    # pages
    ("GET", "/wards/1/nursing", WARD),
    ("GET", "/wards/admissions/1/mar", MEDICATION),
    ("GET", "/wards/admissions/1/mar?day=2025-01-01", MEDICATION),
]
