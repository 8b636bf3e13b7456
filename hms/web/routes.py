"""Home page and health check."""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template
from sqlalchemy import text

from hms.auth.permissions import AUTHENTICATED, public, requires
from hms.web.context import db_session

bp = Blueprint("web", __name__)


@bp.get("/")
@requires(AUTHENTICATED)
def home():
    return render_template("home.html")


@bp.get("/health")
@public
def health():
    db_session().execute(text("SELECT 1"))
    return jsonify({"status": "ok"})
