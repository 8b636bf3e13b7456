"""The navigation bar: each entry shows only to the roles that can use it."""

from __future__ import annotations

from flask import current_app, url_for
from flask_login import current_user

from hms.auth.roles import effective_roles

# (label, endpoint, roles that see it). Entries whose endpoint is not registered are skipped.
NAV = (
    ("Home", "web.home", None),
    ("Patients", "patients.search_page", {"reception", "nurse", "doctor", "lab_technician", "pathologist",
                                           "pharmacist", "cashier", "finance_manager", "admin"}),
    ("Register", "patients.register_page", {"reception", "nurse", "doctor", "admin"}),
    ("My work", "tasks.my_work_page", None),
    ("Check-in", "opd.checkin_page", {"reception", "nurse", "admin"}),
    ("OPD queue", "opd.doctor_page", {"doctor", "nurse"}),
    ("Beds", "wards.board_page", {"nurse", "doctor", "reception", "admin", "department_head", "housekeeping"}),
    ("Admissions", "wards.admissions_page", {"nurse", "doctor", "reception", "admin", "department_head"}),
    ("Lab", "lab.worklist_page", {"lab_technician", "pathologist"}),
    ("Pharmacy", "inventory.stock_page", {"pharmacist", "admin"}),
    ("Returns", "inventory.returns_page", {"pharmacist"}),
    ("Bills", "finance.bills_page", {"cashier", "finance_manager", "admin", "reception"}),
    ("Discharges", "finance.closing_page", {"cashier", "finance_manager", "admin"}),
    ("Cash closing", "finance.cash_closing_page", {"cashier", "finance_manager"}),
    ("Pathways", "pathways.list_page", {"department_head", "admin"}),
    ("Users", "auth.users_page", {"admin"}),
    ("Audit", "audit.audit_page", {"admin"}),
)


def nav_items() -> list[dict]:
    if not current_user.is_authenticated:
        return []
    roles = effective_roles(current_user.user.role_names)
    items = []
    for label, endpoint, allowed in NAV:
        if endpoint not in current_app.view_functions:
            continue
        if allowed is not None and not roles & allowed:
            continue
        items.append({"label": label, "url": url_for(endpoint), "endpoint": endpoint})
    return items
