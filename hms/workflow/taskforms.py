"""The forms of human tasks, as the engine and the tasks API need them: validation of a
completion and the form's field names (to prefill from task data). One registry per
forms directory per process; forms are files shipped with HMS (the editor issue adds
versions stored in the database)."""

from __future__ import annotations

import threading

from sqlalchemy.orm import Session

from hms.db import config_of
from hms.errors import Invalid

_lock = threading.Lock()
_registries: dict[str, object] = {}


def registry(session: Session):
    from hms.forms import FormRegistry

    forms_dir = config_of(session).forms_dir
    with _lock:
        reg = _registries.get(forms_dir)
        if reg is None:
            reg = FormRegistry.from_directory(forms_dir)
            _registries[forms_dir] = reg
        return reg


def reset() -> None:
    with _lock:
        _registries.clear()


def definition(session: Session, form_key: str | None):
    if not form_key:
        return None
    from hms.forms import UnknownForm

    try:
        return registry(session).get(form_key)
    except UnknownForm:
        raise Invalid(f"The form '{form_key}' of this task does not exist.", code="unknown_form") from None


def validate(session: Session, form_key: str | None, data: dict) -> dict:
    """Cleaned data for a task completion; 422 with per-field errors when it fails the form."""
    defn = definition(session, form_key)
    if defn is None:
        return dict(data or {})
    from hms.forms import validate as validate_form

    return validate_form(defn, data or {}, tz=config_of(session).tz)


def field_names(session: Session, form_key: str | None) -> list[str]:
    defn = definition(session, form_key) if form_key else None
    if defn is None:
        return []
    return list((defn.schema.get("properties") or {}).keys())
