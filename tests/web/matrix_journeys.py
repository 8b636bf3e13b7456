"""Who may call the cross-department journey routes (403 vs not-403)."""

ROWS = [
    ("POST", "/api/v1/opd/checkins", {"reception", "nurse", "admin"}),
]
