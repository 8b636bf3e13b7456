"""The forms of human tasks, as the engine and the tasks API need them: the definition a
task shows, validation of a completion, and the form's field names (to prefill from task
data).

A published pathway version pins the form versions it uses (PathwayVersion.forms, set when
publishing); a task of an instance on that version uses the pinned version, so a form edited
later in the browser changes new visits only. A form the pathway did not pin (a shipped
file, or a task of a called pathway) is used at its latest version. Versions come from
hms.form_versions: the database first, the file in forms/ otherwise.
"""

from __future__ import annotations

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from hms.db import config_of
from hms.errors import Invalid
from hms.workflow.models import PathwayVersion, ProcessInstance


def pinned_version(session: Session, instance_id: int | None, form_key: str) -> int | None:
    """The version of `form_key` the instance's pathway version pinned, if any."""
    if instance_id is None:
        return None
    forms = session.execute(
        select(PathwayVersion.forms).join(ProcessInstance, and_(
            ProcessInstance.pathway_key == PathwayVersion.key, ProcessInstance.version == PathwayVersion.version))
        .where(ProcessInstance.id == instance_id)).scalar_one_or_none()
    version = (forms or {}).get(form_key)
    return int(version) if isinstance(version, int) or (isinstance(version, str) and version.isdigit()) else None


def definition(session: Session, form_key: str | None, *, instance_id: int | None = None):
    if not form_key:
        return None
    from hms import form_versions
    from hms.forms import UnknownForm

    version = pinned_version(session, instance_id, form_key)
    try:
        return form_versions.get(session, form_key, version)
    except UnknownForm:
        raise Invalid(f"The form '{form_key}' of this task does not exist.", code="unknown_form") from None


def validate(session: Session, form_key: str | None, data: dict, *, instance_id: int | None = None) -> dict:
    """Cleaned data for a task completion; 422 with per-field errors when it fails the form."""
    defn = definition(session, form_key, instance_id=instance_id)
    if defn is None:
        return dict(data or {})
    from hms.forms import validate as validate_form

    return validate_form(defn, data or {}, tz=config_of(session).tz)


def field_names(session: Session, form_key: str | None, *, instance_id: int | None = None) -> list[str]:
    defn = definition(session, form_key, instance_id=instance_id) if form_key else None
    if defn is None:
        return []
    return list((defn.schema.get("properties") or {}).keys())
