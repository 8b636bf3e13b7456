"""Hospital settings kept in the database (changed by administrators at run time, audited),
e.g. whether the OPD consultation fee is paid before the consultation.

Each setting is declared with its type and default; reading an undeclared key is a bug.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from hms import audit
from hms.audit import Actor
from hms.db import Base, utcnow
from hms.errors import Invalid, NotFound


class Setting(Base):
    __tablename__ = "setting"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by_id: Mapped[int | None]


@dataclass(frozen=True)
class SettingSpec:
    key: str
    type: type
    default: Any
    description: str


_SPECS: dict[str, SettingSpec] = {}


def declare(key: str, type_: type, default: Any, description: str) -> str:
    """Declare a setting (domain packages do this at import); returns the key."""
    _SPECS[key] = SettingSpec(key, type_, default, description)
    return key


def specs() -> list[SettingSpec]:
    return sorted(_SPECS.values(), key=lambda s: s.key)


def get(session: Session, key: str) -> Any:
    spec = _SPECS.get(key)
    if spec is None:
        raise KeyError(f"setting {key!r} is not declared")
    row = session.get(Setting, key)
    return spec.default if row is None else row.value


def set_value(session: Session, actor: Actor, key: str, value: Any) -> Any:
    """Change a setting (audited). Bool/int/str values are checked against the declaration."""
    spec = _SPECS.get(key)
    if spec is None:
        raise NotFound(f"There is no setting called {key!r}.", code="setting_not_found")
    if spec.type is bool and not isinstance(value, bool) or \
            spec.type is int and (not isinstance(value, int) or isinstance(value, bool)) or \
            spec.type is str and not isinstance(value, str):
        raise Invalid(f"{key} must be a {spec.type.__name__}.", fields={"value": [f"must be {spec.type.__name__}"]})
    row = session.get(Setting, key)
    if row is None:
        row = Setting(key=key)
        session.add(row)
    old = row.value
    row.value, row.updated_at, row.updated_by_id = value, utcnow(), actor.user_id
    audit.record(session, actor, "setting.change", "setting", key, detail={"old": old, "new": value})
    session.flush()
    return value


def all_values(session: Session) -> dict[str, Any]:
    stored = {r.key: r.value for r in session.execute(select(Setting)).scalars()}
    return {s.key: stored.get(s.key, s.default) for s in specs()}
