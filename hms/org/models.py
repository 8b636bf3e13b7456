"""Departments: the organisational units staff belong to and pathways are scoped by."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from hms.db import Base, utcnow

DEPARTMENT_KINDS = ("clinical", "diagnostic", "pharmacy", "administrative")


class Department(Base):
    __tablename__ = "department"
    __table_args__ = (CheckConstraint(f"kind IN {DEPARTMENT_KINDS}", name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    kind: Mapped[str] = mapped_column(String(20), default="clinical")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
