"""Messages into running pathways: a department says "lab result verified for order 42"
by business key; every instance with that key that waits for the message receives it.

Domain services do not import the engine; they enqueue the job `workflow.deliver_message`
(it runs after their transaction commits, at least once; delivering to an instance that is
no longer waiting is a no-op, so a repeated delivery has one effect).
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from hms.audit import Actor
from hms.errors import Conflict
from hms.jobs import job
from hms.workflow import engine
from hms.workflow.models import ProcessInstance


def deliver(session: Session, actor: Actor, message_name: str, business_key: str,
            payload: dict | None = None) -> list[int]:
    """Deliver to every active instance with `business_key` waiting for `message_name`.

    Returns the ids that received it. Each instance is locked in turn (engine step).
    """
    ids = session.execute(select(ProcessInstance.id).where(
        ProcessInstance.business_key == business_key,
        ProcessInstance.status.in_(("running", "waiting")))).scalars().all()
    delivered = []
    for instance_id in ids:
        try:
            result = engine.correlate_message(session, actor, instance_id, message_name, payload)
        except Conflict:
            continue  # this instance is not waiting for the message (or no longer)
        if result.ok:
            delivered.append(instance_id)
    return delivered


@job("workflow.deliver_message", retries=5, backoff=(5, 30, 120, 600, 1800))
def deliver_message_job(session: Session, message_name: str, business_key: str, payload_json: str = "{}"):
    deliver(session, Actor.system("messages"), message_name, business_key, json.loads(payload_json))
