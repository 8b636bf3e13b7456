"""(e) Cost of a step at step 10 and step 300 of a long stay.

Modelled as recurring care will be (DESIGN section 2): each vitals round is a small child
instance of `bench_round`, started for the admission (by a timer or job) and linked to the
parent stay, so the stay's own instance never grows. For contrast, the naive model runs every
round inside one instance through a gateway back-edge, which grows with each round.
"""

from __future__ import annotations

from sqlalchemy import select

from benchmarks.common import Timer, bench_database_url, summary
from benchmarks.env import make_env
from hms.audit import Actor
from hms.workflow import engine
from hms.workflow.models import WorkItem

_HEAD = ('<?xml version="1.0" encoding="UTF-8"?><bpmn:definitions '
         'xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" '
         'xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core" '
         'id="Defs_{key}" targetNamespace="http://bpmn.io/schema/bpmn">')


def _single_task(key: str, task: str) -> str:
    return (_HEAD.format(key=key) + f'<bpmn:process id="{key}" name="{key}" isExecutable="true">'
            '<bpmn:laneSet id="ls"><bpmn:lane id="l" name="Nurse"><bpmn:flowNodeRef>s</bpmn:flowNodeRef>'
            '<bpmn:flowNodeRef>t</bpmn:flowNodeRef><bpmn:flowNodeRef>e</bpmn:flowNodeRef></bpmn:lane></bpmn:laneSet>'
            '<bpmn:startEvent id="s"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>'
            f'<bpmn:userTask id="t" name="{task}"><bpmn:incoming>f1</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing></bpmn:userTask>'
            '<bpmn:endEvent id="e"><bpmn:incoming>f2</bpmn:incoming></bpmn:endEvent>'
            '<bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="t"/><bpmn:sequenceFlow id="f2" sourceRef="t" targetRef="e"/>'
            '</bpmn:process></bpmn:definitions>')


def _naive_loop(key: str = "bench_loop") -> str:
    return (_HEAD.format(key=key) + f'<bpmn:process id="{key}" name="{key}" isExecutable="true">'
            '<bpmn:laneSet id="ls"><bpmn:lane id="l" name="Nurse"><bpmn:flowNodeRef>s</bpmn:flowNodeRef>'
            '<bpmn:flowNodeRef>t</bpmn:flowNodeRef><bpmn:flowNodeRef>g</bpmn:flowNodeRef>'
            '<bpmn:flowNodeRef>e</bpmn:flowNodeRef></bpmn:lane></bpmn:laneSet>'
            '<bpmn:startEvent id="s"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>'
            '<bpmn:userTask id="t" name="Vitals round"><bpmn:incoming>f1</bpmn:incoming><bpmn:incoming>f_back</bpmn:incoming>'
            '<bpmn:outgoing>f2</bpmn:outgoing></bpmn:userTask>'
            '<bpmn:exclusiveGateway id="g" default="f_end"><bpmn:incoming>f2</bpmn:incoming>'
            '<bpmn:outgoing>f_back</bpmn:outgoing><bpmn:outgoing>f_end</bpmn:outgoing></bpmn:exclusiveGateway>'
            '<bpmn:endEvent id="e"><bpmn:incoming>f_end</bpmn:incoming></bpmn:endEvent>'
            '<bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="t"/><bpmn:sequenceFlow id="f2" sourceRef="t" targetRef="g"/>'
            '<bpmn:sequenceFlow id="f_back" sourceRef="g" targetRef="t"><bpmn:conditionExpression>discharged == False'
            '</bpmn:conditionExpression></bpmn:sequenceFlow><bpmn:sequenceFlow id="f_end" sourceRef="g" targetRef="e"/>'
            '</bpmn:process></bpmn:definitions>')


def _open_item(db, instance_id):
    with db.transaction(readonly=True) as s:
        return s.execute(select(WorkItem.id).where(WorkItem.instance_id == instance_id,
                                                   WorkItem.status == "open")).scalar_one()


def _window(samples: dict[int, float], around: int, width: int = 5) -> list[float]:
    return [samples[k] for k in range(around - width, around + width + 1) if k in samples]


def run(rounds: int = 305, url: str | None = None) -> dict:
    env = make_env(url or bench_database_url("longrun"), extra_pathways={
        "bench_round": _single_task("bench_round", "Vitals round"),
        "bench_stay": _single_task("bench_stay", "Discharge"),
        "bench_loop": _naive_loop()})
    db, actor, system = env.db, env.actor, Actor.system("bench-timer")
    with db.transaction() as s:
        stay = engine.start_pathway(s, actor, "bench_stay", business_key="admission:1").instance.id
    modelled, naive = {}, {}
    with db.transaction() as s:
        loop_id = engine.start_pathway(s, actor, "bench_loop", data={"discharged": False}).instance.id
    for k in range(1, rounds + 1):
        with db.transaction() as s:
            child = engine.start_pathway(s, system, "bench_round", business_key="admission:1",
                                         parent_instance_id=stay, check_role=False).instance.id
        item = _open_item(db, child)
        t = Timer()
        with t.measure():
            with db.transaction() as s:
                assert engine.complete_task(s, actor, item, {}).ok
        modelled[k] = t.samples[0]
        item = _open_item(db, loop_id)
        t = Timer()
        with t.measure():
            with db.transaction() as s:
                assert engine.complete_task(s, actor, item, {"discharged": False}).ok
        naive[k] = t.samples[0]
    with db.transaction(readonly=True) as s:
        from hms.workflow.models import ProcessInstance

        stay_bytes = len(s.get(ProcessInstance, stay).state)
        loop_bytes = len(s.get(ProcessInstance, loop_id).state)
    db.dispose()
    m10, m300 = summary(_window(modelled, 10)), summary(_window(modelled, 300))
    n10, n300 = summary(_window(naive, 10)), summary(_window(naive, 300))
    return {"modelled": {"e10": m10, "e300": m300, "ratio": m300["p50"] / m10["p50"], "parent_state_bytes": stay_bytes},
            "naive": {"e10": n10, "e300": n300, "ratio": n300["p50"] / n10["p50"], "state_bytes": loop_bytes}}
