"""Per-request context: the one database session and the acting user.

Routes call `db_session()` and `current_actor()` and pass both to services. The session
is committed after the view returns (unless an error was handled) and closed at teardown.
"""

from __future__ import annotations

from flask import current_app, g, request
from flask_login import current_user
from sqlalchemy.orm import Session

from hms.audit import Actor
from hms.db import Database
from hms.errors import BadRequest


def database() -> Database:
    return current_app.extensions["hms_db"]


def db_session() -> Session:
    if "db_session" not in g:
        g.db_session = database().session()
    return g.db_session


def client_ip() -> str | None:
    return request.remote_addr


def current_actor() -> Actor:
    if "hms_actor" not in g:
        if current_user.is_authenticated:
            from hms.auth.services import actor_for
            g.hms_actor = actor_for(current_user.user, client_ip())
        else:
            g.hms_actor = Actor(user_id=None, username="anonymous", ip=client_ip())
    return g.hms_actor


def json_body() -> dict:
    """The request's JSON object, or a 400 that says what is wrong with it."""
    data = request.get_json(silent=True)
    if data is None:
        raise BadRequest("Send a JSON object with Content-Type: application/json.", code="invalid_json")
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_json")
    return data


def mark_failed() -> None:
    """The request failed: roll its transaction back instead of committing."""
    g.hms_failed = True
    sess = g.get("db_session")
    if sess is not None:
        sess.rollback()


def page_args(default_size: int = 25, max_size: int = 100) -> tuple[int, int]:
    """(page, size) from ?page=&size=, validated."""
    try:
        page = int(request.args.get("page", 1))
        size = int(request.args.get("size", default_size))
    except ValueError:
        raise BadRequest("page and size must be whole numbers.", code="invalid_paging") from None
    if page < 1 or not (1 <= size <= max_size):
        raise BadRequest(f"page starts at 1; size is 1 to {max_size}.", code="invalid_paging")
    return page, size
