"""Moving running instances of a pathway from one published version to another, when safe.

Running instances keep the version they started on (DESIGN.md §4). After a department head
publishes a new version, an editor may move the instances of an older version onto it:

1. For each running or waiting instance of `from_version`, rebuild its workflow from its
   state and pinned specs, and compute SpiffWorkflow's `diff_workflow` against the target
   version (and the latest versions of the pathways it calls).
2. The instance is SAFE when no task it has COMPLETED or STARTED was changed or removed in
   the target, in the top-level process and in every running call activity or subprocess.
   A task that is only READY or WAITING may change: it is re-predicted on the new spec.
   Otherwise the reasons name each element and what changed.
3. A dry run reports the verdicts. A real run migrates every safe instance, each under its
   row lock: the workflow takes the new spec, the instance its new version and pinned
   `spec_versions`, the state is saved, the work queue and timers are re-synced, and an
   `instance.migrate` audit row is written; the run as a whole is audited `migration.run`.
   Unsafe instances are left alone and reported. An instance never changes version silently.

How tasks are re-predicted: READY tasks are reset (SpiffWorkflow's default), but WAITING
tasks (timers, messages, joins) only have their predicted future rebuilt, so a waiting timer
keeps its due time instead of restarting (SpiffWorkflow's reset would restart it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session
from SpiffWorkflow.bpmn.util.diff import SpecDiff, diff_workflow, filter_tasks, migrate_workflow
from SpiffWorkflow.util.task import TaskState

from hms import audit
from hms.audit import Actor
from hms.db import config_of, utcnow
from hms.errors import Invalid
from hms.workflow import editor, queue, specs, store, timers
from hms.workflow.models import ProcessInstance, WorkItem
from hms.workflow.sandbox import SandboxScriptEngine

MIGRATABLE = ("running", "waiting")
UNSAFE_STATES = TaskState.COMPLETED | TaskState.STARTED

# SpiffWorkflow's task-spec attribute names, in the words the editor uses.
SPEC_FIELDS = {
    "bpmn_name": "its name", "lane": "its lane", "outputs": "what follows it", "inputs": "what leads to it",
    "typename": "its type", "extensions": "its properties (form, priority, due time, instructions)",
    "cond_task_specs": "the conditions of its flows", "default_task_spec": "its default flow",
    "script": "its script", "operation_name": "its operation", "operation_params": "the operation's parameters",
    "result_variable": "the operation's result variable", "event_definition": "its event",
    "spec": "the pathway it calls", "prescript": "its pre-script", "postscript": "its post-script",
    "description": "its type", "condition": "its condition", "manual": "whether a person does it",
}


@dataclass
class Verdict:
    instance_id: int
    safe: bool
    reasons: list[dict] = field(default_factory=list)
    status: str | None = None
    patient_id: int | None = None
    at: list[str] = field(default_factory=list)  # BPMN ids of the tasks it is at (READY/WAITING/STARTED)
    migrated: bool = False

    def as_dict(self) -> dict:
        return {"instance_id": self.instance_id, "safe": self.safe, "reasons": self.reasons,
                "status": self.status, "patient_id": self.patient_id, "at": self.at, "migrated": self.migrated}


def live_instances(session: Session, key: str, version: int | None = None,
                   statuses=editor.LIVE_STATUSES) -> list[ProcessInstance]:
    stmt = select(ProcessInstance).where(ProcessInstance.pathway_key == key,
                                         ProcessInstance.status.in_(statuses)).order_by(ProcessInstance.id)
    if version is not None:
        stmt = stmt.where(ProcessInstance.version == version)
    return list(session.execute(stmt).scalars())


def instances_json(session: Session, key: str, version: int | None = None) -> list[dict]:
    """The live instances (running, waiting, error) of `key`, with the tasks they wait on
    (from the work queue: no workflow is loaded)."""
    rows = live_instances(session, key, version)
    open_items: dict[int, list[str]] = {}
    if rows:
        for instance_id, task_name in session.execute(
                select(WorkItem.instance_id, WorkItem.task_name)
                .where(WorkItem.instance_id.in_([r.id for r in rows]), WorkItem.status.in_(queue.OPEN_STATES))
                .order_by(WorkItem.id)).all():
            open_items.setdefault(instance_id, []).append(task_name)
    return [{"id": r.id, "version": r.version, "status": r.status, "patient_id": r.patient_id,
             "business_key": r.business_key, "created_at": r.created_at.isoformat(),
             "updated_at": r.updated_at.isoformat(), "open_tasks": open_items.get(r.id, []),
             "error": r.error_message if r.status == "error" else None} for r in rows]


# --- deciding -------------------------------------------------------------------------------

def _properties(task) -> dict:
    """The task's spiffworkflow:property values (as the work queue reads them)."""
    return (getattr(task.task_spec, "extensions", None) or {}).get("properties", {}) or {}


def _task_label(task) -> str:
    spec = task.task_spec
    bpmn_id = getattr(spec, "bpmn_id", None)
    name = getattr(spec, "bpmn_name", None)
    if bpmn_id and name and name != bpmn_id:
        return f'"{name}" ({bpmn_id})'
    return f'"{bpmn_id or spec.name}"'


def _element_id(task) -> str:
    return getattr(task.task_spec, "bpmn_id", None) or task.task_spec.name


class _Explainer:
    """What changed in a task spec, in words (SpecDiff per pair of specs, computed once)."""

    def __init__(self):
        self._diffs: dict[tuple[int, int], SpecDiff] = {}

    def fields(self, old_spec, new_spec, task_spec) -> list[str]:
        pair = (id(old_spec), id(new_spec))
        if pair not in self._diffs:
            self._diffs[pair] = SpecDiff(store._REGISTRY, old_spec, new_spec)
        changes = self._diffs[pair].changed.get(task_spec) or []
        return [SPEC_FIELDS.get(c, c.replace("_", " ")) for c in changes]


def _reasons(wf_diff, old_spec, new_spec, to_version: int, explainer: _Explainer, where: str = "") -> list[dict]:
    reasons = []
    unsafe = filter_tasks(wf_diff.changed + wf_diff.removed, state=UNSAFE_STATES)
    for task in unsafe:
        state = TaskState.get_name(task.state).lower()
        if task in wf_diff.removed:
            why = f"{where}{_task_label(task)} is {state} and no longer exists in version {to_version}."
        else:
            what = ", ".join(explainer.fields(old_spec, new_spec, task.task_spec)) or "its definition"
            why = f"{where}{_task_label(task)} is {state} and version {to_version} changed {what}."
        reasons.append({"element_id": _element_id(task), "task_state": state, "message": why})
    return reasons


def _sub_reasons(wf, sub_diffs, new_deps, to_version, explainer) -> list[dict]:
    reasons = []
    for sp_id, sp_diff in sub_diffs.items():
        sub = wf.subprocesses.get(sp_id)
        if sub is None:
            continue
        owner = wf.get_task_from_id(sp_id)
        label = _task_label(owner) if owner is not None else sub.spec.name
        if sp_diff is None:
            if not sub.completed:
                reasons.append({"element_id": _element_id(owner) if owner is not None else sub.spec.name,
                                "task_state": "started",
                                "message": f"{label} is running {sub.spec.name}, which version {to_version} "
                                           "no longer calls."})
            continue
        reasons += _reasons(sp_diff, sub.spec, new_deps.get(sub.spec.name), to_version, explainer,
                            where=f"In {label}: ")
    return reasons


def _position(wf) -> list[str]:
    mask = TaskState.READY | TaskState.WAITING | TaskState.STARTED
    return sorted({_element_id(t) for t in wf.get_tasks(state=mask) if getattr(t.task_spec, "bpmn_id", None)})


def _script_engine(session: Session) -> SandboxScriptEngine:
    # Re-predicting a READY task re-runs its pre-script: in the sandbox, and with no way to
    # call an operation (a migration must not act on the hospital's records).
    return SandboxScriptEngine(time_limit_ms=config_of(session).script_time_limit_ms)


def _repredict(wf_diff, wf, spec) -> None:
    """migrate_workflow resetting READY tasks only; WAITING tasks keep their state and
    internal data (a timer's due time) and get their predicted children rebuilt."""
    migrate_workflow(wf_diff, wf, spec, reset_mask=TaskState.READY)
    for task in list(wf.get_tasks(state=TaskState.WAITING, skip_subprocesses=True)):
        if task.id in wf.tasks:
            task._drop_children(force=True)
            task.task_spec._predict(task, mask=TaskState.PREDICTED_MASK | TaskState.WAITING)


def _assess(session: Session, instance: ProcessInstance, target, to_version: int, explainer: _Explainer):
    """(verdict, workflow migrated in memory or None, {guid: old due_in} of the READY tasks
    whose spec changed). Nothing is saved here."""
    verdict = Verdict(instance.id, False, status=instance.status, patient_id=instance.patient_id)
    try:
        bundle = specs.load_bundle(session, instance.pathway_key, instance.spec_versions)
        wf = store.load_state(instance.state, bundle)
        wf.script_engine = _script_engine(session)
        verdict.at = _position(wf)
        top, sub_diffs = diff_workflow(store._REGISTRY, wf, target.spec, target.subprocess_specs)
    except Exception as err:  # a state that cannot be read or compared is never moved
        verdict.reasons.append({"element_id": None, "task_state": None,
                                "message": f"The instance could not be compared with version {to_version}: "
                                           f"{type(err).__name__}: {err}"})
        return verdict, None, {}
    verdict.reasons += _reasons(top, wf.spec, target.spec, to_version, explainer)
    verdict.reasons += _sub_reasons(wf, sub_diffs, target.subprocess_specs, to_version, explainer)
    if verdict.reasons:
        return verdict, None, {}
    # READY tasks whose spec changed, with the due_in they had (the work item keeps its due
    # time unless due_in itself changed).
    changed = {str(t.id): _properties(t).get("due_in") for t in top.changed if t.state == TaskState.READY}
    try:
        _repredict(top, wf, target.spec)
        for sp_id, sp_diff in sub_diffs.items():
            sub = wf.subprocesses.get(sp_id)
            if sp_diff is not None and sub is not None and not sub.completed:
                _repredict(sp_diff, sub, target.subprocess_specs[sub.spec.name])
        wf.subprocess_specs = target.subprocess_specs
        automatic = [t for t in wf.get_tasks(state=TaskState.READY) if not t.task_spec.manual]
        if automatic:
            names = ", ".join(_task_label(t) for t in automatic)
            verdict.reasons.append({"element_id": _element_id(automatic[0]), "task_state": "ready",
                                    "message": f"After moving, the automatic step {names} would be due with "
                                               "nothing to run it; finish or cancel this instance instead."})
            return verdict, None, {}
    except Exception as err:
        verdict.reasons.append({"element_id": None, "task_state": None,
                                "message": f"Moving the instance failed: {type(err).__name__}: {err}"})
        return verdict, None, {}
    verdict.safe = True
    verdict.at = _position(wf)
    return verdict, wf, changed


def _check_versions(session: Session, key: str, from_version, to_version):
    for name, value in (("from_version", from_version), ("to_version", to_version)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid(f"{name} must be a version number.", fields={name: ["a version number is required"]})
    if from_version == to_version:
        raise Invalid("Choose two different versions.", fields={"to_version": ["same as from_version"]})
    specs.get_version(session, key, from_version)
    return specs.get_version(session, key, to_version)


def plan(session: Session, key: str, from_version: int, to_version: int) -> list[Verdict]:
    """The verdict for every running or waiting instance of `from_version` (nothing changes)."""
    _check_versions(session, key, from_version, to_version)
    pins = specs.resolve_spec_versions(session, key, to_version)
    target = specs.load_bundle(session, key, pins)
    explainer = _Explainer()
    return [_assess(session, instance, target, to_version, explainer)[0]
            for instance in live_instances(session, key, from_version, MIGRATABLE)]


def run(session: Session, actor: Actor, key: str, from_version, to_version, *, dry_run: bool = True) -> dict:
    """Dry run: the verdicts. Otherwise migrate the safe instances and report the others.

    Each instance is locked (FOR UPDATE; SQLite's write lock) and re-assessed under the lock,
    and moved inside its own savepoint, so one failure leaves the others moved. The caller
    checks the actor may edit the pathway.
    """
    _check_versions(session, key, from_version, to_version)
    if dry_run:
        verdicts = plan(session, key, from_version, to_version)
        return _report(key, from_version, to_version, True, verdicts)
    pins = specs.resolve_spec_versions(session, key, to_version)
    target = specs.load_bundle(session, key, pins)
    explainer = _Explainer()
    verdicts = []
    ids = [i.id for i in live_instances(session, key, from_version, MIGRATABLE)]
    for instance_id in ids:
        instance = store.get_instance(session, instance_id, lock=True)
        if instance.version != from_version or instance.status not in MIGRATABLE:
            continue  # finished or moved meanwhile
        verdict, wf, changed = _assess(session, instance, target, to_version, explainer)
        if wf is not None:
            savepoint = session.begin_nested()
            try:
                _save_migrated(session, actor, instance, wf, from_version, to_version, pins, changed)
                savepoint.commit()
                verdict.migrated = True
            except Exception as err:
                savepoint.rollback()
                verdict.safe = False
                verdict.reasons.append({"element_id": None, "task_state": None,
                                        "message": f"Saving the moved instance failed: {type(err).__name__}"})
        verdicts.append(verdict)
    report = _report(key, from_version, to_version, False, verdicts)
    audit.record(session, actor, "migration.run", "pathway", key,
                 detail={"key": key, "from_version": from_version, "to_version": to_version,
                         "migrated": report["migrated"], "refused": report["refused"],
                         "instance_ids": [v.instance_id for v in verdicts if v.migrated]})
    return report


def _save_migrated(session: Session, actor: Actor, instance: ProcessInstance, wf, from_version: int,
                   to_version: int, pins: dict, changed: dict[str, str | None]) -> None:
    instance.version = to_version
    instance.spec_versions = dict(pins)
    instance.state = store.dump_state(wf)
    instance.updated_at = utcnow()
    _refresh_open_items(session, instance, wf, changed)
    ready_human = queue.sync_work_items(session, instance, wf)
    instance.has_timers = timers.sync_timers(session, instance, wf)
    instance.status = "running" if ready_human else "waiting"
    session.flush()
    audit.record(session, actor, "instance.migrate", "process_instance", instance.id,
                 patient_id=instance.patient_id,
                 detail={"pathway": instance.pathway_key, "from_version": from_version, "to_version": to_version,
                         "spec_versions": dict(pins)})


def _refresh_open_items(session: Session, instance: ProcessInstance, wf, changed: dict[str, str | None]) -> None:
    """Open work items of READY tasks whose spec changed take the new title, form, role,
    priority, due time and instructions (a READY task may change). A claim is dropped when
    the role changed (the holder may not have the new role)."""
    ready = {str(t.id): t for t in wf.get_tasks(state=TaskState.READY, manual=True)}
    now = utcnow()
    for item in queue.open_items_of(session, instance.id):
        task = ready.get(item.task_guid)
        if task is None or item.task_guid not in changed:
            continue
        fresh = queue._new_item(session, instance, task, now)  # the projection's own rules
        if fresh.role != item.role and item.status == "claimed":
            item.status, item.claimed_by_id, item.claimed_at = "open", None, None
        item.task_name, item.title, item.instructions = fresh.task_name, fresh.title, fresh.instructions
        item.form_key, item.role, item.priority = fresh.form_key, fresh.role, fresh.priority
        item.form_values = fresh.form_values
        if _properties(task).get("due_in") != changed[item.task_guid]:
            item.due_at = fresh.due_at


def _report(key: str, from_version: int, to_version: int, dry_run: bool, verdicts: list[Verdict]) -> dict:
    return {"key": key, "from_version": from_version, "to_version": to_version, "dry_run": dry_run,
            "instances": [v.as_dict() for v in verdicts],
            "safe": sum(1 for v in verdicts if v.safe), "unsafe": sum(1 for v in verdicts if not v.safe),
            "migrated": sum(1 for v in verdicts if v.migrated),
            "refused": sum(1 for v in verdicts if not v.migrated and not dry_run)}
