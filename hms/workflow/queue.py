"""Work queues: the work_item projection of READY human tasks and every query on it.

Queue pages and the tasks API read only work_item (indexed); they never deserialize a
workflow. Claiming is one conditional UPDATE, so of two people claiming at once exactly one
wins and the other gets 409.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from uuid import UUID

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.util.task import TaskState

from hms import audit
from hms.audit import Actor
from hms.auth.roles import role_for_lane
from hms.db import utcnow
from hms.errors import Conflict, Forbidden, Invalid, NotFound
from hms.workflow.models import ProcessInstance, TaskEvent, WorkItem

PRIORITY_NAMES = {"emergency": 1, "urgent": 2, "routine": 3, "low": 4}
OPEN_STATES = ("open", "claimed")


# --- projection -----------------------------------------------------------------------

def _properties(task) -> dict:
    ext = getattr(task.task_spec, "extensions", None) or {}
    return ext.get("properties", {}) or {}


def _evaluated(value, task):
    """A property value; '=expr' is evaluated in the sandbox against the task data."""
    if isinstance(value, str) and value.startswith("="):
        return task.workflow.script_engine.evaluate(task, value[1:])
    return value


def _priority(task) -> int:
    raw = _evaluated(_properties(task).get("priority", task.data.get("priority", 3)), task)
    if isinstance(raw, str):
        raw = PRIORITY_NAMES.get(raw.strip().lower(), raw)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        return 3
    return min(max(value, 1), 4)


def _due_at(task, now: datetime) -> datetime | None:
    """From `due_at` (an expression giving an ISO date-time: a dose due at 14:00) or
    `due_in` (a duration from now: "PT30M")."""
    props = _properties(task)
    if props.get("due_at"):
        raw = _evaluated(props["due_at"], task)
        try:
            due = datetime.fromisoformat(str(raw))
        except ValueError:
            return None
        return due if due.tzinfo else due.replace(tzinfo=timezone.utc)
    raw = _evaluated(props.get("due_in"), task)
    if not raw:
        return None
    from hms.workflow.sandbox import parse_duration

    return now + parse_duration(str(raw))


def _int_or_none(value) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _form_values(session: Session, form_key: str | None, task, instance_id: int | None = None) -> dict | None:
    """Prefill: the form's fields found in task data, plus `_context`: the variables named by
    the task's `show` property (e.g. allergy alerts from an earlier step)."""
    values: dict = {}
    if form_key:
        from hms.workflow.taskforms import field_names

        try:
            names = field_names(session, form_key, instance_id=instance_id)
        except Exception:  # an unknown form shows as an error on the task page, not here
            names = []
        values = {n: task.data[n] for n in names if n in task.data}
    shown = [n.strip() for n in str(_properties(task).get("show", "")).split(",") if n.strip()]
    context = {n: task.data[n] for n in shown if n in task.data}
    if context:
        values["_context"] = context
    return values or None


def _scope(task) -> tuple[int | None, int | None]:
    """(ward_id, department_id) from task data, as the task's `scope` property allows:
    auto (both, default), ward, department, or none (a service lane such as the cashier).
    A `ward` property ("=reservation['ward_id']") names the ward when it is not the
    `ward_id` variable, e.g. the bed a service task just reserved or a transfer's target."""
    props = _properties(task)
    scope = str(props.get("scope", "auto")).strip().lower()
    source = _evaluated(props["ward"], task) if props.get("ward") else task.data.get("ward_id")
    ward = _int_or_none(source) if scope in ("auto", "ward") else None
    dept = _int_or_none(task.data.get("department_id")) if scope in ("auto", "department") else None
    return ward, dept


def _new_item(session: Session, instance: ProcessInstance, task, now: datetime) -> WorkItem:
    spec = task.task_spec
    props = _properties(task)
    ext = getattr(spec, "extensions", None) or {}
    role = role_for_lane(getattr(spec, "lane", None)) or "admin"
    form_key = props.get("formKey")
    ward_id, department_id = _scope(task)
    assignee = _int_or_none(_evaluated(props.get("assign_to"), task)) if props.get("assign_to") else None
    return WorkItem(
        instance_id=instance.id, task_guid=str(task.id), task_name=spec.bpmn_id or spec.name,
        title=(spec.bpmn_name or spec.bpmn_id or spec.name)[:200],
        instructions=ext.get("instructionsForEndUser"), form_key=form_key,
        form_values=_form_values(session, form_key, task, instance.id),
        pathway_key=instance.pathway_key, role=role, ward_id=ward_id, department_id=department_id,
        patient_id=instance.patient_id, priority=_priority(task), due_at=_due_at(task, now),
        status="claimed" if assignee else "open", claimed_by_id=assignee,
        claimed_at=now if assignee else None, created_at=now)


def sync_work_items(session: Session, instance: ProcessInstance, wf: BpmnWorkflow) -> int:
    """Make the instance's open work items match its READY human tasks; returns how many."""
    now = utcnow()
    ready = {str(t.id): t for t in wf.get_tasks(state=TaskState.READY, manual=True)}
    current = session.execute(select(WorkItem).where(
        WorkItem.instance_id == instance.id, WorkItem.status.in_(OPEN_STATES))).scalars().all()
    known = set()
    for item in current:
        known.add(item.task_guid)
        if item.task_guid in ready:
            continue
        task = wf.get_task_from_id(UUID(item.task_guid))
        done = task is not None and task.state == TaskState.COMPLETED
        item.status = "completed" if done else "cancelled"
        item.completed_at = item.completed_at or now
    for guid, task in ready.items():
        if guid not in known:
            session.add(_new_item(session, instance, task, now))
    return len(ready)


def cancel_open_items(session: Session, instance_id: int) -> None:
    session.execute(update(WorkItem).where(WorkItem.instance_id == instance_id,
                                           WorkItem.status.in_(OPEN_STATES))
                    .values(status="cancelled", completed_at=utcnow()))


# --- visibility -----------------------------------------------------------------------

def visible_to(actor: Actor):
    """SQL condition: the tasks of the actor's roles, within their wards/departments."""
    ward_ok = or_(WorkItem.ward_id.is_(None), WorkItem.ward_id.in_(sorted(actor.ward_ids) or [-1]))
    dept_ok = or_(WorkItem.department_id.is_(None),
                  WorkItem.department_id.in_(sorted(actor.department_ids) or [-1]))
    return and_(WorkItem.role.in_(sorted(actor.roles) or ["-"]), ward_ok, dept_ok)


def can_act_on(actor: Actor, item: WorkItem) -> None:
    """403 unless the actor has the task's role and, where it has a scope, the scope."""
    if item.role not in actor.roles:
        raise Forbidden(f"This task is for the {item.role.replace('_', ' ')} role.", code="wrong_role")
    if item.ward_id is not None and item.ward_id not in actor.ward_ids:
        raise Forbidden("This task belongs to a ward you are not assigned to.", code="out_of_scope")
    if item.department_id is not None and item.department_id not in actor.department_ids:
        raise Forbidden("This task belongs to a department you are not assigned to.", code="out_of_scope")


@dataclass
class QueuePage:
    items: list[WorkItem]
    page: int
    size: int
    total: int  # capped at COUNT_CAP + 1, shown as "1000+"


COUNT_CAP = 1000


def list_tasks(session: Session, actor: Actor, *, status: str = "open", role: str | None = None,
               ward_id: int | None = None, patient_id: int | None = None,
               page: int = 1, size: int = 25) -> QueuePage:
    """The work queue: visible tasks sorted by priority, then age (oldest first)."""
    if status not in ("open", "claimed", "mine", "all"):
        raise Invalid("status is open, claimed, mine or all.", fields={"status": ["unknown status"]})
    cond = [visible_to(actor)]
    if status == "open":
        cond.append(WorkItem.status == "open")
    elif status == "claimed":
        cond.append(WorkItem.status == "claimed")
    elif status == "mine":
        cond.append(and_(WorkItem.status == "claimed", WorkItem.claimed_by_id == actor.user_id))
    else:
        cond.append(WorkItem.status.in_(OPEN_STATES))
    if role:
        cond.append(WorkItem.role == role)
    if ward_id is not None:
        cond.append(WorkItem.ward_id == ward_id)
    if patient_id is not None:
        cond.append(WorkItem.patient_id == patient_id)
    where = and_(*cond)
    items = session.execute(select(WorkItem).where(where)
                            .order_by(WorkItem.priority, WorkItem.created_at, WorkItem.id)
                            .offset((page - 1) * size).limit(size)).scalars().all()
    capped = select(WorkItem.id).where(where).limit(COUNT_CAP + 1).subquery()
    total = session.execute(select(func.count()).select_from(capped)).scalar_one()
    return QueuePage(list(items), page, size, total)


def get_item(session: Session, work_item_id: int) -> WorkItem:
    item = session.get(WorkItem, work_item_id)
    if item is None:
        raise NotFound("No such task.", code="task_not_found")
    return item


def get_visible_item(session: Session, actor: Actor, work_item_id: int) -> WorkItem:
    item = get_item(session, work_item_id)
    can_act_on(actor, item)
    return item


# --- claim, release, assign -----------------------------------------------------------

def _event(session, item: WorkItem, action: str, user_id: int | None, detail: dict | None = None):
    session.add(TaskEvent(instance_id=item.instance_id, work_item_id=item.id, task_name=item.task_name,
                          title=item.title, action=action, user_id=user_id, detail=detail))


def claim(session: Session, actor: Actor, work_item_id: int, *, allow_own: bool = False) -> WorkItem:
    """Claim an open task with one conditional UPDATE; 409 if it is taken or closed.

    With allow_own, a task the actor already holds is returned as it is (used by complete).
    """
    item = get_visible_item(session, actor, work_item_id)
    now = utcnow()
    won = session.execute(update(WorkItem).where(WorkItem.id == work_item_id, WorkItem.status == "open")
                          .values(status="claimed", claimed_by_id=actor.user_id, claimed_at=now)
                          .execution_options(synchronize_session=False)).rowcount
    session.refresh(item)
    if won:
        _event(session, item, "claimed", actor.user_id)
        return item
    if allow_own and item.status == "claimed" and item.claimed_by_id == actor.user_id:
        return item
    if item.status == "claimed":
        raise Conflict("Someone else has claimed this task.", code="task_claimed")
    raise Conflict("This task is no longer open.", code="task_not_open")


def take_for_completion(session: Session, actor: Actor, work_item_id: int) -> WorkItem:
    """Claim an open task (or keep one the actor holds) for completing it: one UPDATE ...
    RETURNING on the common path. Role and scope are checked on the returned row; a refusal
    raises, and the caller's transaction (claim included) rolls back.
    """
    now = utcnow()
    item = session.scalars(
        update(WorkItem)
        .where(WorkItem.id == work_item_id,
               or_(WorkItem.status == "open",
                   and_(WorkItem.status == "claimed", WorkItem.claimed_by_id == actor.user_id)))
        .values(status="claimed", claimed_by_id=actor.user_id, claimed_at=func.coalesce(WorkItem.claimed_at, now))
        .returning(WorkItem)
        .execution_options(populate_existing=True)).one_or_none()
    if item is None:
        item = get_item(session, work_item_id)
        can_act_on(actor, item)
        if item.status == "claimed":
            raise Conflict("Someone else has claimed this task.", code="task_claimed")
        raise Conflict("This task is no longer open.", code="task_not_open")
    can_act_on(actor, item)
    return item


def release(session: Session, actor: Actor, work_item_id: int) -> WorkItem:
    """Put a claimed task back in the queue (the holder, a department head or an admin)."""
    item = get_item(session, work_item_id)
    supervisor = actor.has_role("department_head", "admin")
    if item.claimed_by_id != actor.user_id and not supervisor:
        can_act_on(actor, item)
        raise Conflict("Only the person who claimed this task can release it.", code="not_your_task")
    won = session.execute(update(WorkItem).where(WorkItem.id == work_item_id, WorkItem.status == "claimed")
                          .values(status="open", claimed_by_id=None, claimed_at=None)
                          .execution_options(synchronize_session=False)).rowcount
    session.refresh(item)
    if not won:
        raise Conflict("This task is not claimed.", code="task_not_claimed")
    _event(session, item, "released", actor.user_id)
    return item


def assign(session: Session, actor: Actor, work_item_id: int, user_id: int) -> WorkItem:
    """Department heads and admins hand an open or claimed task to a user who may do it."""
    from hms.auth.models import User
    from hms.auth.services import actor_for

    if not actor.has_role("department_head", "admin"):
        raise Forbidden("Only department heads and administrators assign tasks.", code="forbidden")
    item = get_item(session, work_item_id)
    if actor.has_role("department_head") and not actor.has_role("admin") and item.department_id is not None \
            and item.department_id not in actor.department_ids:
        raise Forbidden("This task belongs to another department.", code="out_of_scope")
    user = session.get(User, user_id)
    if user is None or not user.active:
        raise Invalid("Choose an active user.", fields={"user_id": ["unknown or inactive user"]})
    try:
        can_act_on(actor_for(user), item)
    except Forbidden as err:
        raise Invalid(f"{user.username} cannot do this task: {err.message}",
                      fields={"user_id": [err.message]}) from None
    won = session.execute(update(WorkItem).where(WorkItem.id == work_item_id, WorkItem.status.in_(OPEN_STATES))
                          .values(status="claimed", claimed_by_id=user.id, claimed_at=utcnow())
                          .execution_options(synchronize_session=False)).rowcount
    session.refresh(item)
    if not won:
        raise Conflict("This task is no longer open.", code="task_not_open")
    _event(session, item, "assigned", actor.user_id, {"to_user_id": user.id})
    audit.record(session, actor, "task.assign", "work_item", item.id, patient_id=item.patient_id,
                 detail={"to_user_id": user.id})
    return item


def history(session: Session, instance_id: int) -> list[TaskEvent]:
    return list(session.execute(select(TaskEvent).where(TaskEvent.instance_id == instance_id)
                                .order_by(TaskEvent.at, TaskEvent.id)).scalars())


def open_items_of(session: Session, instance_id: int) -> list[WorkItem]:
    return list(session.execute(select(WorkItem).where(WorkItem.instance_id == instance_id,
                                                       WorkItem.status.in_(OPEN_STATES))
                                .order_by(WorkItem.id)).scalars())
