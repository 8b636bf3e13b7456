"""(b) The anchor pathway through hms.workflow (service layer, one transaction per action)."""

from __future__ import annotations

import time

from sqlalchemy import select

from benchmarks.common import StatementCounter, Timer, bench_database_url, summary
from benchmarks.env import make_env
from hms.workflow import engine
from hms.workflow.models import WorkItem


def run(instances: int = 200, url: str | None = None) -> dict:
    env = make_env(url or bench_database_url("service"))
    db, actor = env.db, env.actor
    counter = StatementCounter(db.engine)
    completion, per_instance, statements, commits = Timer(), [], [], 0
    for i in range(instances):
        t0 = time.perf_counter()
        with db.transaction() as s:
            instance_id = engine.start_pathway(s, actor, "anchor_pathway", data={"needs_lab": False}).instance.id
        while True:
            with db.transaction(readonly=True) as s:
                item_id = s.execute(select(WorkItem.id).where(
                    WorkItem.instance_id == instance_id, WorkItem.status == "open")).scalar()
            if item_id is None:
                break
            before = counter.count
            with completion.measure():
                with db.transaction() as s:
                    result = engine.complete_task(s, actor, item_id, {"needs_lab": i % 2 == 0})
                    assert result.ok, result.fault
            statements.append(counter.count - before)
            commits += 1
        per_instance.append((time.perf_counter() - t0) * 1000)
    state_len = 0
    with db.transaction(readonly=True) as s:
        from hms.workflow.models import ProcessInstance

        state_len = len(s.get(ProcessInstance, instance_id).state)
    db.dispose()
    return {"completion": summary(completion.samples), "instance": summary(per_instance),
            "statements_per_completion": sum(statements) / len(statements), "commits_per_completion": 1,
            "dialect": db.dialect, "state_bytes": state_len}
