"""Rebuild the work-item projection from stored instances (`hms workflows rebuild-queues`)."""

from __future__ import annotations

from sqlalchemy import select, update

from hms.audit import Actor
from hms.db import utcnow
from hms.workflow import queue, specs, store
from hms.workflow.models import ProcessInstance, WorkItem


def rebuild_queues(database, batch: int = 200) -> dict:
    """Re-sync every active instance's work items; close items of finished instances.

    Each batch is its own transaction, so a large hospital's rebuild makes progress and can
    run while staff work (instances are locked one at a time).
    """
    actor = Actor.system("rebuild")
    counts = {"instances": 0, "open_items": 0, "closed": 0}
    with database.transaction() as s:
        counts["closed"] = s.execute(
            update(WorkItem).where(WorkItem.status.in_(queue.OPEN_STATES),
                                   WorkItem.instance_id.in_(select(ProcessInstance.id).where(
                                       ProcessInstance.status.in_(("completed", "cancelled")))))
            .values(status="cancelled", completed_at=utcnow())).rowcount
    last_id = 0
    while True:
        with database.transaction() as s:
            ids = list(s.execute(select(ProcessInstance.id).where(
                ProcessInstance.id > last_id, ProcessInstance.status.in_(("running", "waiting", "error")))
                .order_by(ProcessInstance.id).limit(batch)).scalars())
            for instance_id in ids:
                instance = store.get_instance(s, instance_id, lock=True)
                bundle = specs.load_bundle(s, instance.pathway_key, instance.spec_versions)
                wf = store.load_state(instance.state, bundle)
                from hms.workflow.engine import _script_engine

                wf.script_engine = _script_engine(s, actor, instance)
                counts["open_items"] += queue.sync_work_items(s, instance, wf)
                counts["instances"] += 1
        if not ids:
            break
        last_id = ids[-1]
    return counts
