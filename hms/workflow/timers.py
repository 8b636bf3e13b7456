"""Waiting timers: stored with their due time so a tick finds due ones by index.

`hms workflows tick` (and the RQ worker, and the development server's background thread)
calls `tick(database)`, which fires every due instance in its own transaction: one broken
instance never blocks the others, and a timer fires once because the instance row is
locked and the fired timer is gone from its state afterwards.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow

from hms.db import utcnow
from hms.workflow.models import WorkflowTimer

log = logging.getLogger(__name__)


def sync_timers(session: Session, instance, wf: BpmnWorkflow) -> bool:
    """Replace the instance's timer rows with the timers it waits on; True if any."""
    waiting = [e for e in wf.waiting_events() if e.event_type.endswith("TimerEventDefinition")]
    if not waiting and not instance.has_timers:
        return False
    session.execute(delete(WorkflowTimer).where(WorkflowTimer.instance_id == instance.id))
    for event in waiting:
        due = datetime.fromisoformat(str(event.value))
        if due.tzinfo is None:
            from datetime import timezone
            due = due.replace(tzinfo=timezone.utc)
        session.add(WorkflowTimer(instance_id=instance.id, event_name=event.name or "timer", due_at=due))
    return bool(waiting)


def clear(session: Session, instance_id: int) -> None:
    session.execute(delete(WorkflowTimer).where(WorkflowTimer.instance_id == instance_id))


def due_instance_ids(session: Session, now: datetime | None = None, limit: int = 500) -> list[int]:
    now = now or utcnow()
    return list(session.execute(select(WorkflowTimer.instance_id).where(WorkflowTimer.due_at <= now)
                                .group_by(WorkflowTimer.instance_id)
                                .order_by(WorkflowTimer.instance_id).limit(limit)).scalars())


def tick(database, now: datetime | None = None) -> dict:
    """Fire every due timer; returns counts {fired, faults}."""
    from hms.workflow import engine

    with database.transaction(readonly=True) as s:
        ids = due_instance_ids(s, now)
    fired = faults = 0
    for instance_id in ids:
        try:
            with database.transaction() as s:
                result = engine.fire_timers(s, instance_id)
            fired += 1
            faults += 0 if result.ok else 1
        except Exception:
            log.exception("timer tick failed for instance %s", instance_id)
            faults += 1
    return {"due": len(ids), "fired": fired, "faults": faults}
