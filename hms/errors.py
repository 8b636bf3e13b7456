"""The HmsError hierarchy: every refusal a user can meet, with a stable code.

Services raise these; one handler in hms.web.errors renders them as
`{"error": {"code", "message", "fields"}}` under /api and as an HTML page elsewhere.
"""

from __future__ import annotations


class HmsError(Exception):
    """Base of every expected refusal. `fields` maps a field name to its message(s)."""

    http_status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, fields: dict | None = None,
                 http_status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if http_status:
            self.http_status = http_status
        self.fields = fields or {}

    def to_dict(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "fields": self.fields}}


class Invalid(HmsError):
    """The input breaks a rule (422); `fields` says which field and why."""

    http_status = 422
    code = "invalid"


class BadRequest(HmsError):
    http_status = 400
    code = "bad_request"


class Unauthorized(HmsError):
    http_status = 401
    code = "unauthorized"


class Forbidden(HmsError):
    http_status = 403
    code = "forbidden"


class NotFound(HmsError):
    http_status = 404
    code = "not_found"


class Conflict(HmsError):
    """The state changed or a uniqueness rule holds (409)."""

    http_status = 409
    code = "conflict"


class TooManyRequests(HmsError):
    http_status = 429
    code = "too_many_requests"


MAX_ID = 2**31 - 1  # ids are 32-bit integers on every database HMS runs on


def record_id(value, what: str, code: str | None = None) -> int:
    """A database id from a path or a parameter, or NotFound naming `what`: a bad or
    out-of-range id is "not found", never a database error."""
    try:
        number = 0 if isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        number = 0
    if not 1 <= number <= MAX_ID:
        raise NotFound(f"No {what} with id {value}.", code=code or f"{what.replace(' ', '_')}_not_found")
    return number
