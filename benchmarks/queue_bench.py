"""(d) Work-queue query latency with 100,000 open and 1,000,000 completed work items."""

from __future__ import annotations

import random

from sqlalchemy import text

from benchmarks.common import Timer, bench_database_url, summary
from benchmarks.env import make_env
from hms.audit import Actor
from hms.db import utcnow
from hms.workflow import queue
from hms.workflow.models import ProcessInstance

ROLES = ["reception", "nurse", "doctor", "lab_technician", "pathologist", "pharmacist", "cashier",
         "finance_manager", "department_head", "housekeeping", "admin"]
WARDS = 20


def _fill(db, open_items: int, completed_items: int) -> None:
    """Generate rows inside the database (a recursive CTE / generate_series): seconds, not minutes."""
    from wards.models import Ward
    from hms.org.models import Department

    with db.transaction() as s:
        dep = Department(code="BENCH", name="Bench department")
        s.add(dep)
        s.flush()
        for w in range(1, WARDS + 1):
            s.add(Ward(code=f"W{w}", name=f"Ward {w}", department_id=dep.id))
        inst = ProcessInstance(pathway_key="anchor_pathway", version=1, spec_versions={"anchor_pathway": 1},
                               status="running", state="{}")
        s.add(inst)
        s.flush()
        instance_id = inst.id
    role_case = "CASE (n % 11) " + " ".join(f"WHEN {i} THEN '{r}'" for i, r in enumerate(ROLES)) + " END"
    if db.dialect == "postgresql":
        series = "FROM generate_series(1, :n) AS n"
        created = "now() - (n || ' seconds')::interval"
    else:
        series = "FROM (WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < :n) SELECT n FROM c)"
        created = "datetime('now', '-' || n || ' seconds')"
    for status, count, offset in (("completed", completed_items, 0), ("open", open_items, completed_items)):
        sql = f"""
            INSERT INTO work_item (instance_id, task_guid, task_name, title, pathway_key, role, ward_id,
                                   patient_id, priority, status, created_at)
            SELECT :iid, 'g' || (n + :off), 't' || (n % 8), 'Task', 'anchor_pathway', {role_case},
                   CASE WHEN n % 3 = 0 THEN NULL ELSE (n % {WARDS}) + 1 END, NULL, (n % 4) + 1, :status, {created}
            {series}"""
        with db.transaction() as s:
            s.execute(text(sql), {"iid": instance_id, "n": count, "off": offset, "status": status})
    with db.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


def run(open_items: int = 100_000, completed_items: int = 1_000_000, queries: int = 300,
        url: str | None = None) -> dict:
    env = make_env(url or bench_database_url("queue"))
    db = env.db
    _fill(db, open_items, completed_items)
    rng = random.Random(7)
    nurse = Actor(user_id=env.actor.user_id, username="bench_nurse", roles=frozenset({"nurse"}),
                  ward_ids=frozenset({3, 4}))
    doctor_lab = Actor(user_id=env.actor.user_id, username="bench_doc", roles=frozenset({"doctor", "lab_technician"}),
                       department_ids=frozenset({1}))
    timer = Timer()
    for i in range(queries):
        actor = nurse if i % 2 else doctor_lab
        kwargs = {"page": rng.randint(1, 4), "size": 25}
        if i % 5 == 0:
            kwargs["status"] = "mine"
        elif i % 7 == 0 and actor is nurse:
            kwargs["ward_id"] = 3
        with timer.measure():
            with db.transaction(readonly=True) as s:
                page = queue.list_tasks(s, actor, **kwargs)
        assert page.page == kwargs["page"]
    db.dispose()
    return {"query": summary(timer.samples), "open": open_items, "completed": completed_items,
            "dialect": db.dialect, "_at": utcnow().isoformat()}
