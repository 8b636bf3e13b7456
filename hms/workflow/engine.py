"""Actions on process instances: start, complete a human task, fire timers, correlate a
message, cancel, retry. Each action is one engine step:

1. lock the instance row (FOR UPDATE; on SQLite the IMMEDIATE transaction already holds
   the write lock) and rebuild the workflow from its state and the cached spec;
2. inside a SAVEPOINT apply the action and run engine steps; service tasks call registered
   operations with this session and actor;
3. save the state and sync the work-item projection and timers in the same transaction.

A fault in step 2 rolls the savepoint back (no half-done domain writes), keeps the instance
as it was, marks it `error` with the message and the action, and returns the fault; the
caller commits that mark. `retry` replays the recorded action.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

from sqlalchemy.orm import Session
from SpiffWorkflow.bpmn.util.event import BpmnEvent
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.specs.event_definitions import MessageEventDefinition
from SpiffWorkflow.util.task import TaskState

from hms import audit
from hms.audit import Actor
from hms.db import config_of, utcnow
from hms.errors import Conflict, Forbidden, Invalid
from hms.workflow import operations, queue, specs, store, taskforms, timers
from hms.workflow.models import ProcessInstance, TaskEvent, WorkItem
from hms.workflow.sandbox import SandboxScriptEngine

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    instance: ProcessInstance
    fault: str | None = None

    @property
    def ok(self) -> bool:
        return self.fault is None


class _ServiceCaller:
    """Bridges a BPMN service task to the operation registry for one step."""

    def __init__(self, session: Session, actor: Actor, instance: ProcessInstance):
        self.session, self.actor, self.instance = session, actor, instance

    def __call__(self, operation_name: str, params: dict, task_data: dict):
        ctx = operations.OperationContext(self.session, self.actor, self.instance.id,
                                          self.instance.patient_id, self.instance.pathway_key)
        return operations.call(operation_name, ctx, params)


def _script_engine(session: Session, actor: Actor, instance: ProcessInstance) -> SandboxScriptEngine:
    limit = config_of(session).script_time_limit_ms
    return SandboxScriptEngine(time_limit_ms=limit, service_caller=_ServiceCaller(session, actor, instance))


def _load(session: Session, instance: ProcessInstance, actor: Actor) -> BpmnWorkflow:
    bundle = specs.load_bundle(session, instance.pathway_key, instance.spec_versions)
    wf = store.load_state(instance.state, bundle)
    wf.script_engine = _script_engine(session, actor, instance)
    return wf


def _fault_message(exc: Exception) -> tuple[str, str | None]:
    task_name = None
    task = getattr(exc, "task", None)
    if task is not None:
        task_name = getattr(task.task_spec, "bpmn_name", None) or getattr(task.task_spec, "bpmn_id", None)
    cause = exc
    while getattr(cause, "__cause__", None) is not None and str(cause) in ("", str(cause.__cause__)):
        cause = cause.__cause__
    message = str(exc) or type(exc).__name__
    return message[:1000], task_name


def _run_step(session: Session, actor: Actor, instance: ProcessInstance, wf: BpmnWorkflow,
              apply, action: dict) -> StepResult:
    """Apply `apply(wf)` and run engine steps atomically; on a fault mark the instance error."""
    savepoint = session.begin_nested()
    try:
        apply(wf)
        wf.do_engine_steps()
        _save(session, instance, wf)
        savepoint.commit()
    except Exception as exc:  # any fault: script error, operation error, timeout, DB error
        savepoint.rollback()
        message, task_name = _fault_message(exc)
        log.warning("pathway instance %s faulted at %s: %s", instance.id, task_name, type(exc).__name__)
        instance.status = "error"
        instance.error_message = message
        instance.error_task = task_name
        instance.failed_action = action
        instance.updated_at = utcnow()
        audit.record(session, actor, "instance.error", "process_instance", instance.id,
                     patient_id=instance.patient_id, detail={"task": task_name, "action": action.get("kind")})
        session.flush()
        return StepResult(instance, fault=f"The pathway stopped at '{task_name or 'a step'}': {message}")
    return StepResult(instance)


def _save(session: Session, instance: ProcessInstance, wf: BpmnWorkflow) -> None:
    instance.state = store.dump_state(wf)
    now = utcnow()
    instance.updated_at = now
    ready_human = queue.sync_work_items(session, instance, wf)
    instance.has_timers = timers.sync_timers(session, instance, wf)
    if wf.is_completed():
        instance.status = "completed"
        instance.completed_at = now
    elif ready_human:
        instance.status = "running"
    else:
        instance.status = "waiting"
    instance.error_message = instance.error_task = None
    instance.failed_action = None
    session.flush()


# --- start ----------------------------------------------------------------------------

def start_pathway(session: Session, actor: Actor, key: str, *, patient_id: int | None = None,
                  data: dict | None = None, business_key: str | None = None,
                  parent_instance_id: int | None = None, check_role: bool = True) -> StepResult:
    """Start the latest published version of pathway `key` for a patient.

    Only a user with the role of the start lane may start it (admins too); system actors
    (jobs, operations) pass. Task data carries ids and small values only.
    """
    top = specs.latest_version(session, key)
    if check_role and not actor.is_system and top.start_role and not actor.has_role(top.start_role, "admin"):
        raise Forbidden(f"Only the {top.start_role.replace('_', ' ')} role can start {top.name}.",
                        code="cannot_start_pathway")
    pinned = specs.resolve_spec_versions(session, key, top.version)
    bundle = specs.load_bundle(session, key, pinned)
    wf = BpmnWorkflow(bundle.spec, bundle.subprocess_specs)
    initial = dict(data or {})
    if patient_id is not None:
        initial["patient_id"] = patient_id
    for task in wf.get_tasks(state=TaskState.READY):
        task.data.update(initial)
    instance = ProcessInstance(pathway_key=key, version=top.version, spec_versions=pinned,
                               patient_id=patient_id, business_key=business_key,
                               parent_instance_id=parent_instance_id, status="running",
                               state=store.dump_state(wf), started_by_id=actor.user_id)
    session.add(instance)
    session.flush()
    wf.script_engine = _script_engine(session, actor, instance)
    audit.record(session, actor, "instance.start", "process_instance", instance.id, patient_id=patient_id,
                 detail={"pathway": key, "version": top.version})
    return _run_step(session, actor, instance, wf, lambda w: None, {"kind": "start", "actor_id": actor.user_id})


# --- human tasks ----------------------------------------------------------------------

def _find_ready_task(wf: BpmnWorkflow, task_guid: str):
    task = wf.get_task_from_id(UUID(task_guid))
    if task is None or task.state != TaskState.READY:
        raise Conflict("This task is no longer open.", code="task_not_open")
    return task


def complete_task(session: Session, actor: Actor, work_item_id: int, data: dict,
                  *, validate=None) -> StepResult:
    """Complete the human task behind a work item with the form data.

    Claims it first when open (conditional UPDATE: 409 if someone else holds it), checks
    role and scope (403), validates the data against the task's form at the version the
    instance's pathway pinned (422), then locks the instance and runs the step. A caller may
    pass its own `validate(form_key, data) -> cleaned`.
    """
    item = queue.take_for_completion(session, actor, work_item_id)
    if validate is None:
        cleaned = taskforms.validate(session, item.form_key, data, instance_id=item.instance_id)
    else:
        cleaned = validate(item.form_key, data) if item.form_key else dict(data or {})
    instance = store.get_instance(session, item.instance_id, lock=True)
    store.require_active(instance)
    wf = _load(session, instance, actor)
    task = _find_ready_task(wf, item.task_guid)

    def apply(w: BpmnWorkflow):
        spec = task.task_spec
        if hasattr(spec, "add_data_from_form"):
            spec.add_data_from_form(task, cleaned)
        else:
            task.data.update(cleaned)
        task.run()

    now = utcnow()
    item.status, item.completed_by_id, item.completed_at = "completed", actor.user_id, now
    result = _run_step(session, actor, instance, wf, apply,
                       {"kind": "complete", "work_item_id": item.id, "data": cleaned, "actor_id": actor.user_id})
    if result.ok:
        session.add(TaskEvent(instance_id=instance.id, work_item_id=item.id, task_name=item.task_name,
                              title=item.title, action="completed", user_id=actor.user_id, at=now))
        audit.record(session, actor, "task.complete", "work_item", item.id, patient_id=item.patient_id,
                     detail={"instance_id": instance.id, "task": item.task_name, "fields": sorted(cleaned)})
    else:
        item.status, item.completed_by_id, item.completed_at = "claimed", None, None
    session.flush()
    return result


# --- timers and messages --------------------------------------------------------------

def fire_timers(session: Session, instance_id: int, actor: Actor | None = None) -> StepResult:
    """Fire the due timers of one instance (the tick calls this per instance)."""
    actor = actor or Actor.system("timer")
    instance = store.get_instance(session, instance_id, lock=True)
    if instance.status not in ("running", "waiting"):
        timers.clear(session, instance.id)
        return StepResult(instance)
    wf = _load(session, instance, actor)
    return _run_step(session, actor, instance, wf, lambda w: w.refresh_timers(), {"kind": "timers"})


def correlate_message(session: Session, actor: Actor, instance_id: int, message_name: str,
                      payload: dict | None = None) -> StepResult:
    """Deliver message `message_name` (e.g. "lab_result_verified") to an instance waiting for it."""
    instance = store.get_instance(session, instance_id, lock=True)
    store.require_active(instance)
    wf = _load(session, instance, actor)
    waiting = {e.name for e in wf.waiting_events() if "Message" in e.event_type}
    if message_name not in waiting:
        raise Conflict(f"This pathway is not waiting for '{message_name}'.", code="message_not_expected")
    event = BpmnEvent(MessageEventDefinition(message_name), payload or {})
    return _run_step(session, actor, instance, wf, lambda w: w.send_event(event),
                     {"kind": "message", "name": message_name, "payload": payload or {}, "actor_id": actor.user_id})


# --- cancel and retry -----------------------------------------------------------------

def cancel_instance(session: Session, actor: Actor, instance_id: int, reason: str) -> ProcessInstance:
    """Cancel a pathway with a reason (audited); its open work items are cancelled too."""
    reason = (reason or "").strip()
    if not reason:
        raise Invalid("Give a reason for cancelling.", fields={"reason": ["required"]})
    instance = store.get_instance(session, instance_id, lock=True)
    if instance.status in ("completed", "cancelled"):
        raise Conflict(f"This pathway is already {instance.status}.", code=f"instance_{instance.status}")
    instance.status = "cancelled"
    instance.cancel_reason = reason[:500]
    instance.updated_at = utcnow()
    queue.cancel_open_items(session, instance.id)
    timers.clear(session, instance.id)
    audit.record(session, actor, "instance.cancel", "process_instance", instance.id,
                 patient_id=instance.patient_id, detail={"pathway": instance.pathway_key})
    session.flush()
    return instance


def retry(session: Session, actor: Actor, instance_id: int) -> StepResult:
    """Replay the action that faulted, as the user who made it (the retry itself is audited)."""
    instance = store.get_instance(session, instance_id, lock=True)
    if instance.status != "error" or not instance.failed_action:
        raise Conflict("Only a pathway stopped on an error can be retried.", code="not_in_error")
    action = dict(instance.failed_action)
    original = _actor_by_id(session, action.get("actor_id")) or actor
    audit.record(session, actor, "instance.retry", "process_instance", instance.id,
                 patient_id=instance.patient_id, detail={"action": action.get("kind")})
    instance.status = "running"
    session.flush()
    kind = action.get("kind")
    if kind == "complete":
        item = session.get(WorkItem, action["work_item_id"])
        wf = _load(session, instance, original)
        task = _find_ready_task(wf, item.task_guid)

        def apply(w):
            if hasattr(task.task_spec, "add_data_from_form"):
                task.task_spec.add_data_from_form(task, action.get("data") or {})
            else:
                task.data.update(action.get("data") or {})
            task.run()

        now = utcnow()
        item.status, item.completed_by_id, item.completed_at = "completed", original.user_id, now
        result = _run_step(session, original, instance, wf, apply, action)
        if result.ok:
            session.add(TaskEvent(instance_id=instance.id, work_item_id=item.id, task_name=item.task_name,
                                  title=item.title, action="completed", user_id=original.user_id, at=now))
        else:
            item.status, item.completed_by_id, item.completed_at = "claimed", None, None
        return result
    wf = _load(session, instance, original)
    if kind == "message":
        event = BpmnEvent(MessageEventDefinition(action["name"]), action.get("payload") or {})
        return _run_step(session, original, instance, wf, lambda w: w.send_event(event), action)
    if kind == "timers":
        return _run_step(session, original, instance, wf, lambda w: w.refresh_timers(), action)
    return _run_step(session, original, instance, wf, lambda w: None, action)


def _actor_by_id(session: Session, user_id: int | None) -> Actor | None:
    if user_id is None:
        return None
    from hms.auth.models import User
    from hms.auth.services import actor_for

    user = session.get(User, user_id)
    return actor_for(user) if user is not None else None
