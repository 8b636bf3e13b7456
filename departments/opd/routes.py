from flask import Blueprint

bp = Blueprint("opd", __name__, template_folder="templates")
