"""(a) Raw SpiffWorkflow, in memory: ms per instance and a stateless step.

The stateless step is what a web request does without HMS: deserialize the whole
workflow (spec included), run one task, run engine steps, serialize.
"""

from __future__ import annotations

import time

from SpiffWorkflow.bpmn.serializer.workflow import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.util.task import TaskState
from lxml import etree

from benchmarks.common import anchor_xml, summary


def _spec():
    parser = SpiffBpmnParser()
    parser.add_bpmn_xml(etree.fromstring(anchor_xml().encode()), filename="anchor_pathway.bpmn")
    return parser.get_spec("anchor_pathway"), parser.get_subprocess_specs("anchor_pathway")


def run(instances: int = 500) -> dict:
    spec, subs = _spec()
    ser = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(SPIFF_CONFIG))
    per_instance, steps = [], []
    for i in range(instances):
        t0 = time.perf_counter()
        wf = BpmnWorkflow(spec, subs)
        wf.do_engine_steps()
        while not wf.is_completed():
            task = wf.get_tasks(state=TaskState.READY, manual=True)[0]
            task.data["needs_lab"] = i % 2 == 0
            task.run()
            wf.do_engine_steps()
        per_instance.append((time.perf_counter() - t0) * 1000)
    for i in range(instances // 5):
        wf = BpmnWorkflow(spec, subs)
        wf.do_engine_steps()
        blob = ser.serialize_json(wf)
        while True:
            t0 = time.perf_counter()
            wf = ser.deserialize_json(blob)
            ready = wf.get_tasks(state=TaskState.READY, manual=True)
            if not ready:
                break
            ready[0].data["needs_lab"] = i % 2 == 0
            ready[0].run()
            wf.do_engine_steps()
            blob = ser.serialize_json(wf)
            steps.append((time.perf_counter() - t0) * 1000)
    return {"instance": summary(per_instance), "step": summary(steps), "state_bytes": len(blob)}
