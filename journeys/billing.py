"""Bill follow-ups of other departments' events, in the same transaction."""

from __future__ import annotations

from sqlalchemy.orm import Session

from hms import events
from hms.audit import Actor
from hms.errors import NotFound


def reverse_cancelled_lab_test(session: Session, actor: Actor, *, source_ref: str, reason: str, **_):
    """A lab test cancelled before collection: reverse its charge (if it was charged)."""
    from finance import services as finance

    try:
        finance.reverse_charge(session, actor, source_ref, f"Lab test cancelled: {reason}")
    except NotFound:
        pass  # ordered outside a billed visit: nothing was charged


def register() -> None:
    events.subscribe("lab.item_cancelled", reverse_cancelled_lab_test)
