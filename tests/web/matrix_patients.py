"""Who may call each patients API route (403 vs not-403), for the permission matrix runner."""

VIEW = {"reception", "nurse", "doctor", "lab_technician", "pathologist", "pharmacist", "cashier",
        "finance_manager", "admin"}
REGISTER = {"reception", "nurse", "doctor", "admin"}
ADD_ALLERGY = {"nurse", "doctor", "pharmacist", "admin"}

ROWS = [
    ("POST", "/api/v1/patients", REGISTER),
    ("GET", "/api/v1/patients", VIEW),
    ("GET", "/api/v1/patients/1", VIEW),
    ("PATCH", "/api/v1/patients/1", REGISTER),
    ("GET", "/api/v1/patients/1/allergies", VIEW),
    ("POST", "/api/v1/patients/1/allergies", ADD_ALLERGY),
    ("GET", "/api/v1/patients/1/history", VIEW),
]
