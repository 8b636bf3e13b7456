"""One error handler: JSON `{"error": {"code", "message", "fields"}}` under /api, an HTML
page elsewhere. Bad input is never a 500 and no stack trace reaches a user."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, make_response, render_template, request
from flask_wtf.csrf import CSRFError
from marshmallow import ValidationError
from sqlalchemy.exc import IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from hms.errors import HmsError
from hms.web.context import mark_failed

log = logging.getLogger("hms.errors")

_HTTP_CODES = {
    400: ("bad_request", "The request could not be understood."),
    401: ("unauthorized", "Please log in."),
    403: ("forbidden", "You do not have permission to do this."),
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This address does not accept that method."),
    409: ("conflict", "The record changed meanwhile; reload and try again."),
    413: ("payload_too_large", "The request is too large."),
    415: ("unsupported_media_type", "Send JSON with Content-Type: application/json."),
    422: ("invalid", "The data is not valid."),
    429: ("too_many_requests", "Too many requests; wait a moment."),
    500: ("internal_error", "Something went wrong on our side. It has been logged."),
    503: ("unavailable", "The service is busy; try again in a moment."),
}


def render_error(status: int, code: str, message: str, fields: dict | None = None):
    mark_failed()
    if request.path.startswith("/api/"):
        resp = jsonify({"error": {"code": code, "message": message, "fields": fields or {}}})
        resp.status_code = status
        return resp
    return render_template("errors.html", status=status, code=code, message=message,
                           fields=fields or {}), status


def init_app(app: Flask) -> None:
    @app.errorhandler(HmsError)
    def _hms_error(err: HmsError):
        return render_error(err.http_status, err.code, err.message, err.fields)

    @app.errorhandler(ValidationError)
    def _validation_error(err: ValidationError):
        fields = err.messages if isinstance(err.messages, dict) else {"_schema": err.messages}
        return render_error(422, "invalid", "Some fields are not valid.", fields)

    @app.errorhandler(IntegrityError)
    def _integrity_error(err: IntegrityError):
        log.info("integrity error mapped to 409: %s", type(err.orig).__name__)
        return render_error(409, "conflict", "This conflicts with an existing record; reload and try again.")

    @app.errorhandler(OperationalError)
    def _operational_error(err: OperationalError):
        text = str(err.orig).lower()
        if "locked" in text or "deadlock" in text or "could not serialize" in text:
            return render_error(409, "busy", "Another change was being saved at the same moment; try again.")
        log.exception("database error")
        return render_error(500, *_HTTP_CODES[500])

    @app.errorhandler(CSRFError)
    def _csrf_error(err: CSRFError):
        return render_error(400, "csrf_failed", "This form has expired or was not sent from HMS. Reload the page and try again.")

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        status = err.code or 500
        code, message = _HTTP_CODES.get(status, ("http_error", err.description or "Error"))
        resp = make_response(render_error(status, code, message))
        if isinstance(err, MethodNotAllowed) and err.valid_methods:
            # HTTP requires a 405 to say which methods the address does accept.
            resp.headers["Allow"] = ", ".join(sorted(err.valid_methods))
        return resp

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return render_error(500, *_HTTP_CODES[500])
