"""The `auth` blueprint. routes.py, admin_api.py and admin_pages.py attach views to it;
the app registers it once through hms.auth.routes."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("auth", __name__, template_folder="templates")
