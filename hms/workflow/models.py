"""Engine tables: published pathway versions, process instances, the work-item projection,
task history and waiting timers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hms.db import Base, utcnow

INSTANCE_STATUSES = ("running", "waiting", "completed", "error", "cancelled")
WORK_ITEM_STATUSES = ("open", "claimed", "completed", "cancelled")


class PathwayVersion(Base):
    """One immutable published version of a BPMN pathway (process id = file stem = key)."""

    __tablename__ = "pathway_version"
    __table_args__ = (UniqueConstraint("key", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(80), index=True)
    version: Mapped[int]
    name: Mapped[str] = mapped_column(String(200))
    bpmn_xml: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(64))
    start_role: Mapped[str | None] = mapped_column(String(40))
    # Form key -> form checksum pinned when published (forms are versioned too).
    forms: Mapped[dict | None] = mapped_column(JSON)
    published_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    published_at: Mapped[datetime] = mapped_column(default=utcnow)
    note: Mapped[str | None] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(String(20), default="shipped")  # shipped | editor | cli


class ProcessInstance(Base):
    """A running (or finished) pathway for one patient.

    `state` is the SpiffWorkflow serialization WITHOUT the spec: the spec is rebuilt from the
    pinned `spec_versions` (top pathway and every called pathway) and cached, so rows stay
    small. `lock_version` guards against lost updates; actions also lock the row.
    """

    __tablename__ = "process_instance"
    __table_args__ = (
        CheckConstraint(f"status IN {INSTANCE_STATUSES}", name="status"),
        Index("ix_process_instance_status_key", "status", "pathway_key"),
        Index("ix_process_instance_business_key", "business_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pathway_key: Mapped[str] = mapped_column(String(80))
    version: Mapped[int]
    spec_versions: Mapped[dict] = mapped_column(JSON)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patient.id"), index=True)
    business_key: Mapped[str | None] = mapped_column(String(120))
    parent_instance_id: Mapped[int | None] = mapped_column(ForeignKey("process_instance.id"), index=True)
    status: Mapped[str] = mapped_column(String(12), default="running")
    state: Mapped[str] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(String(1000))
    error_task: Mapped[str | None] = mapped_column(String(120))
    # The action that failed (kind, task, data, actor): `retry` replays it.
    failed_action: Mapped[dict | None] = mapped_column(JSON)
    has_timers: Mapped[bool] = mapped_column(default=False)
    started_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
    cancel_reason: Mapped[str | None] = mapped_column(String(500))
    lock_version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": lock_version}


class WorkItem(Base):
    """Projection of one READY human task: what the work queues read (never the state blob)."""

    __tablename__ = "work_item"
    __table_args__ = (
        CheckConstraint(f"status IN {WORK_ITEM_STATUSES}", name="status"),
        UniqueConstraint("instance_id", "task_guid"),
        Index("ix_work_item_queue", "status", "role", "priority", "created_at"),
        Index("ix_work_item_ward", "status", "ward_id"),
        Index("ix_work_item_claimed_by", "claimed_by_id", "status"),
        Index("ix_work_item_patient", "patient_id", "status"),
        Index("ix_work_item_instance", "instance_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("process_instance.id"))
    task_guid: Mapped[str] = mapped_column(String(36))
    task_name: Mapped[str] = mapped_column(String(120))  # BPMN element id
    title: Mapped[str] = mapped_column(String(200))
    instructions: Mapped[str | None] = mapped_column(Text)
    form_key: Mapped[str | None] = mapped_column(String(80))
    # Current values of the form's fields from task data, so the task page needs no workflow load.
    form_values: Mapped[dict | None] = mapped_column(JSON)
    pathway_key: Mapped[str] = mapped_column(String(80))
    role: Mapped[str] = mapped_column(String(40))
    ward_id: Mapped[int | None] = mapped_column(ForeignKey("ward.id"))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("department.id"))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patient.id"))
    priority: Mapped[int] = mapped_column(default=3)  # 1 emergency, 2 urgent, 3 routine, 4 low
    due_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(12), default="open")
    claimed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    claimed_at: Mapped[datetime | None]
    completed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    completed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TaskEvent(Base):
    """History of human-task actions (completed, claimed, released, assigned) for an instance."""

    __tablename__ = "task_event"
    __table_args__ = (Index("ix_task_event_instance", "instance_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("process_instance.id"))
    work_item_id: Mapped[int | None] = mapped_column(ForeignKey("work_item.id"))
    task_name: Mapped[str] = mapped_column(String(120))
    title: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(20))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    detail: Mapped[dict | None] = mapped_column(JSON)


class WorkflowTimer(Base):
    """A timer event an instance is waiting on, with its due time (UTC)."""

    __tablename__ = "workflow_timer"
    __table_args__ = (Index("ix_workflow_timer_due", "due_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("process_instance.id", ondelete="CASCADE"), index=True)
    event_name: Mapped[str] = mapped_column(String(200))
    due_at: Mapped[datetime]
