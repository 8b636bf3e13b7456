"""Inpatient journey (placeholder; filled by the admission work)."""

from flask import Blueprint

bp = Blueprint("journeys_inpatient", __name__)
