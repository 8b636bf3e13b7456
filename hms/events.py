"""Domain events inside one transaction: a department says what happened ("lab test
cancelled"), and subscribers registered by the app's composition layer (journeys/) act on
it in the same transaction (the visit bill reverses the test's charge).

This keeps departments from importing each other (DESIGN.md section 1) for follow-ups that
must commit atomically with the change. Long or external work belongs in jobs instead.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from sqlalchemy.orm import Session

from hms.audit import Actor

_SUBSCRIBERS: dict[str, list[Callable[..., None]]] = defaultdict(list)


def subscribe(event: str, fn: Callable[..., None]) -> Callable[..., None]:
    """Call fn(session, actor, **data) whenever `event` is published; returns fn."""
    if fn not in _SUBSCRIBERS[event]:
        _SUBSCRIBERS[event].append(fn)
    return fn


def publish(session: Session, actor: Actor, event: str, **data: Any) -> list[Any]:
    """Run every subscriber of `event` now, in the caller's transaction, and return what
    they returned (a question such as "patient_record.sections" collects answers this
    way). A subscriber's refusal (an HmsError) refuses the whole change."""
    return [fn(session, actor, **data) for fn in list(_SUBSCRIBERS.get(event, ()))]


def subscribers(event: str) -> list[Callable[..., None]]:
    return list(_SUBSCRIBERS.get(event, ()))
