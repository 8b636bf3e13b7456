"""Nursing blueprint (placeholder; filled by the nursing work)."""

from flask import Blueprint

bp = Blueprint("nursing", __name__, template_folder="templates")
