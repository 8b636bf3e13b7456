"""Process-instance state: serialization without the spec, loading under a lock, saving.

SpiffWorkflow's serializer embeds the whole spec in every instance. We drop it (and the
called pathways' specs) on save and put the cached parsed spec back on load: rows stay a
few KB and a step does not re-build the spec. The pinned `spec_versions` say which spec.
"""

from __future__ import annotations

import json
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.orm import Session
from SpiffWorkflow.bpmn.serializer.default.workflow import BpmnWorkflowConverter
from SpiffWorkflow.bpmn.serializer.workflow import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG

from hms.errors import Conflict, NotFound
from hms.workflow.models import ProcessInstance
from hms.workflow.specs import Bundle


class SpecLessWorkflowConverter(BpmnWorkflowConverter):
    """BpmnWorkflow converter that leaves the specs out; `restore` takes them from a Bundle."""

    def to_dict(self, workflow):
        dct = super(BpmnWorkflowConverter, self).to_dict(workflow)
        dct["subprocesses"] = self.mapping_to_dict(workflow.subprocesses)
        dct["bpmn_events"] = self.registry.convert(workflow.bpmn_events)
        return dct

    def restore(self, dct: dict, bundle: Bundle) -> BpmnWorkflow:
        workflow = self.target_class(bundle.spec, bundle.subprocess_specs, deserializing=True)
        workflow.tasks = self.mapping_from_dict(dct["tasks"], UUID, workflow=workflow)
        workflow.task_tree = workflow.tasks.get(UUID(dct["root"]))
        self.set_default_attributes(workflow, dct)
        self.subprocesses_from_dict(dct["subprocesses"], workflow)
        workflow.bpmn_events = self.registry.restore(dct.pop("bpmn_events", []))
        return workflow


_CONFIG = dict(SPIFF_CONFIG)
_CONFIG[BpmnWorkflow] = SpecLessWorkflowConverter
_REGISTRY = BpmnWorkflowSerializer.configure(_CONFIG)
SERIALIZER = BpmnWorkflowSerializer(_REGISTRY)
_CONVERTER = SpecLessWorkflowConverter(BpmnWorkflow, _REGISTRY)


def dump_state(workflow: BpmnWorkflow) -> str:
    _REGISTRY._encoder_mode = True
    try:
        dct = _CONVERTER.to_dict(workflow)
        dct[SERIALIZER.VERSION_KEY] = SERIALIZER.VERSION
        return json.dumps(dct, cls=SERIALIZER._encoder_cls, separators=(",", ":"))
    finally:
        _REGISTRY._encoder_mode = False


def load_state(state: str, bundle: Bundle) -> BpmnWorkflow:
    dct = json.loads(state)
    SERIALIZER.migrate(dct)
    return _CONVERTER.restore(dct, bundle)


def get_instance(session: Session, instance_id: int, *, lock: bool = False) -> ProcessInstance:
    """The instance row; with lock=True it is locked (FOR UPDATE) until the transaction ends."""
    stmt = select(ProcessInstance).where(ProcessInstance.id == instance_id)
    if lock:
        stmt = stmt.with_for_update()
    instance = session.execute(stmt).scalar_one_or_none()
    if instance is None:
        raise NotFound("No such process instance.", code="instance_not_found")
    return instance


def require_active(instance: ProcessInstance) -> None:
    if instance.status in ("completed", "cancelled"):
        raise Conflict(f"This pathway is {instance.status}.", code=f"instance_{instance.status}")
    if instance.status == "error":
        raise Conflict("This pathway stopped on an error; an administrator must retry it first.",
                       code="instance_error")
