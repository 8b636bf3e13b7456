"""Form definitions stored in the database, versioned, next to the shipped files in forms/.

A department head changes a form in the browser (the forms pages of the pathway editor):
each save is a new immutable row of `form_version` (key, version, schema, checksum, who,
when, note). The files in forms/ are the seed:

- a key with no row in the database is its file, as the file's declared version (1 unless
  the file says otherwise);
- the first time a key is changed in HMS, its file is imported *lazily* as a row of its own
  (source "file", the file's version), and the change becomes the next version. From then
  on the database owns that key: the file is not read for it any more (a later release that
  changes the file does not overwrite what the hospital edited).

Lazy import keeps start-up free of writes (start-up may run on a read-only replica or
before migrations) and keeps every untouched form exactly its shipped file.

`get(session, key, version=None)` is the one lookup: the definition of `key` at `version`
(default: the latest), as a `hms.forms.FormDefinition`, raising `hms.forms.UnknownForm`
like `FormRegistry.get`. A published pathway version pins the versions of the forms it uses
(`PathwayVersion.forms = {form_key: version}`), so the engine can validate a task with the
version the pathway was published with.

Never imports flask: routes live in hms.workflow.editor_routes.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from hms import audit
from hms.audit import Actor
from hms.db import Base, config_of, utcnow
from hms.errors import Conflict, Invalid, NotFound
from hms.forms import (FormDefinition, FormDefinitionError, FormRegistry, UnknownForm, canonical_json,
                       form_from_dict, load_form, validate_definition)

KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,79}$")
NOTE_MAX = 500
RESERVED_KEYS = {"new", "preview"}  # page and API addresses under /forms


class FormVersion(Base):
    """One immutable version of a form definition."""

    __tablename__ = "form_version"
    __table_args__ = (UniqueConstraint("key", "version"), Index("ix_form_version_key", "key", "version"))

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(80))
    version: Mapped[int]
    title: Mapped[str] = mapped_column(String(200))
    # The definition as written (JSON object; the order of `properties` is the field order).
    schema: Mapped[dict] = mapped_column(JSON)
    # sha256 of hms.forms.canonical_json(schema), as FormDefinition.checksum.
    checksum: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(20), default="editor")  # file | editor
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    note: Mapped[str | None] = mapped_column(String(NOTE_MAX))


# --- the shipped files -----------------------------------------------------------------

@dataclass(frozen=True)
class _Files:
    signature: tuple
    forms: dict[str, FormDefinition]
    problems: dict[str, list[str]]


_files_lock = threading.Lock()
_files_cache: dict[str, _Files] = {}


def _forms_dir(session: Session) -> Path:
    return Path(config_of(session).forms_dir)


def shipped(session: Session) -> _Files:
    """The definitions in forms/ (re-read when a file changes); a broken file is left out and
    its problems kept, so one bad file does not hide the others."""
    directory = _forms_dir(session)
    paths = sorted(directory.glob("*.json")) if directory.is_dir() else []
    signature = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    with _files_lock:
        cached = _files_cache.get(str(directory))
        if cached is not None and cached.signature == signature:
            return cached
    forms, problems = {}, {}
    for path in paths:
        try:
            forms[path.stem] = load_form(path)
        except FormDefinitionError as err:
            problems[path.stem] = err.problems
    loaded = _Files(signature, forms, problems)
    with _files_lock:
        _files_cache[str(directory)] = loaded
    return loaded


# --- reading ---------------------------------------------------------------------------

_defs_lock = threading.Lock()
_defs: dict[tuple[str, int, str], FormDefinition] = {}


def _definition(row: FormVersion) -> FormDefinition:
    """The row as a FormDefinition (checked when written; built once per version)."""
    cache_key = (row.key, row.version, row.checksum)
    with _defs_lock:
        defn = _defs.get(cache_key)
    if defn is None:
        defn = form_from_dict(row.schema, row.key)
        with _defs_lock:
            _defs[cache_key] = defn
    return defn


def _db_keys(session: Session) -> set[str]:
    return set(session.execute(select(FormVersion.key).distinct()).scalars())


def get(session: Session, key: str, version: int | None = None) -> FormDefinition:
    """The definition of form `key` at `version` (default: the latest).

    Database versions first; a key never changed in HMS is its file in forms/. Raises
    hms.forms.UnknownForm (a KeyError) when there is no such form or version.
    """
    stmt = select(FormVersion).where(FormVersion.key == key)
    if version is None:
        stmt = stmt.order_by(FormVersion.version.desc()).limit(1)
    else:
        stmt = stmt.where(FormVersion.version == version)
    row = session.execute(stmt).scalar_one_or_none()
    if row is not None:
        return _definition(row)
    if version is not None and session.execute(
            select(FormVersion.id).where(FormVersion.key == key).limit(1)).first():
        raise UnknownForm(key, version)
    defn = shipped(session).forms.get(key)
    if defn is None or (version is not None and defn.version != version):
        raise UnknownForm(key, version)
    return defn


def known_keys(session: Session) -> set[str]:
    """Every form key a user task may name: the files plus the database."""
    return set(shipped(session).forms) | _db_keys(session)


def latest_versions(session: Session, keys) -> dict[str, int]:
    """{key: latest version} for the given keys that exist (what a publish pins)."""
    keys = sorted(set(keys))
    if not keys:
        return {}
    found = dict(session.execute(select(FormVersion.key, func.max(FormVersion.version))
                                 .where(FormVersion.key.in_(keys)).group_by(FormVersion.key)).all())
    files = shipped(session).forms
    for key in keys:
        if key not in found and key in files:
            found[key] = files[key].version
    return found


def registry(session: Session) -> FormRegistry:
    """A FormRegistry of every form and version the hospital has (files for keys never
    changed in HMS, the database for the others)."""
    reg = FormRegistry()
    db_keys = _db_keys(session)
    for key, defn in shipped(session).forms.items():
        if key not in db_keys:
            reg.add(defn)
    for row in session.execute(select(FormVersion).order_by(FormVersion.key, FormVersion.version)).scalars():
        reg.add(_definition(row))
    return reg


def list_forms(session: Session) -> list[dict]:
    """One entry per form: key, title, latest version, number of versions, where it lives."""
    rows = session.execute(select(FormVersion).order_by(FormVersion.key, FormVersion.version)).scalars().all()
    by_key: dict[str, list[FormVersion]] = {}
    for row in rows:
        by_key.setdefault(row.key, []).append(row)
    files = shipped(session)
    out = []
    for key in sorted(set(by_key) | set(files.forms) | set(files.problems)):
        versions = by_key.get(key)
        if versions:
            last = versions[-1]
            out.append({"key": key, "title": last.title, "latest_version": last.version,
                        "versions": len(versions), "source": "database",
                        "updated_at": last.created_at.isoformat(), "problems": []})
        elif key in files.forms:
            defn = files.forms[key]
            out.append({"key": key, "title": defn.title, "latest_version": defn.version, "versions": 1,
                        "source": "file", "updated_at": None, "problems": []})
        else:
            out.append({"key": key, "title": key, "latest_version": None, "versions": 0, "source": "file",
                        "updated_at": None, "problems": files.problems[key]})
    return out


def versions(session: Session, key: str) -> list[dict]:
    """Every version of form `key`, oldest first, with its definition; 404 if none."""
    rows = session.execute(select(FormVersion).where(FormVersion.key == key)
                           .order_by(FormVersion.version)).scalars().all()
    if rows:
        names = _usernames(session, {r.created_by_id for r in rows})
        return [{"version": r.version, "title": r.title, "checksum": r.checksum, "source": r.source,
                 "created_by": names.get(r.created_by_id), "created_at": r.created_at.isoformat(),
                 "note": r.note, "schema": r.schema} for r in rows]
    defn = shipped(session).forms.get(key)
    if defn is None:
        problems = shipped(session).problems.get(key)
        if problems:
            raise Invalid(f"The shipped form {key}.json is not valid.", code="form_file_invalid",
                          fields={"schema": problems})
        raise NotFound(f"There is no form '{key}'.", code="form_not_found")
    return [{"version": defn.version, "title": defn.title, "checksum": defn.checksum, "source": "file",
             "created_by": None, "created_at": None, "note": f"shipped file forms/{key}.json",
             "schema": defn.schema}]


def _usernames(session: Session, ids) -> dict[int, str]:
    from hms.auth.models import User

    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.username).where(User.id.in_(ids))).all())


# --- writing ---------------------------------------------------------------------------

def check_definition(raw, key: str) -> list[str]:
    """Every problem of a definition typed in the editor (the same checks as loading)."""
    if not isinstance(raw, dict):
        return [f"{key}: a form definition must be a JSON object"]
    declared = raw.get("key")
    problems = []
    if declared is not None and declared != key:
        problems.append(f'{key}: /key: is "{declared}" but the form\'s key is "{key}"')
    schema = dict(raw, key=key)
    schema.pop("version", None)  # HMS numbers versions; a typed number is ignored
    return problems + validate_definition(schema, key)


def parse_schema_text(text: str, key: str):
    """A definition typed as JSON text, or Invalid naming the line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise Invalid(f"The form is not valid JSON: line {err.lineno} column {err.colno}: {err.msg}.",
                      code="form_not_json",
                      fields={"schema": [f"{key}: line {err.lineno} column {err.colno}: {err.msg}"]}) from None


def _content(schema: dict) -> str:
    """What a version means, without its number: equal for a save that changed nothing."""
    body = dict(schema)
    body.pop("version", None)
    body.pop("key", None)
    return canonical_json(body)


def create_version(session: Session, actor: Actor, key: str, schema, note: str | None = None) -> FormVersion:
    """Save `schema` as the next version of form `key` (a new form when the key is new).

    Checks the definition (422 listing every problem), refuses a save that changes nothing
    (409), imports the shipped file first when the key was never changed in HMS, and audits.
    Two editors saving at once cannot both take a number: (key, version) is unique and the
    loser's transaction fails with 409.
    """
    if not isinstance(key, str) or not KEY_RE.match(key) or key in RESERVED_KEYS:
        raise Invalid("A form key is lowercase letters, digits and _ (starting with a letter), at most 80.",
                      code="invalid_form_key", fields={"key": ["lowercase letters, digits and _"]})
    note = (note or "").strip() or None
    if note and len(note) > NOTE_MAX:
        raise Invalid(f"The note is longer than {NOTE_MAX} characters.", fields={"note": ["too long"]})
    problems = check_definition(schema, key)
    if problems:
        raise Invalid(f"The form has {len(problems)} problem(s).", code="form_invalid", fields={"schema": problems})
    last = session.execute(select(FormVersion).where(FormVersion.key == key)
                           .order_by(FormVersion.version.desc()).limit(1)).scalar_one_or_none()
    if last is None:
        file_defn = shipped(session).forms.get(key)
        if file_defn is not None:
            last = _import_file(session, file_defn)
    if last is not None and _content(last.schema) == _content(schema):
        raise Conflict(f"Form {key} version {last.version} already has exactly this content.", code="form_unchanged")
    number = (last.version if last is not None else 0) + 1
    stored = copy.deepcopy(schema)
    stored["key"] = key
    stored["version"] = number
    defn = form_from_dict(stored, key)
    row = FormVersion(key=key, version=number, title=defn.title, schema=stored, checksum=defn.checksum,
                      source="editor", created_by_id=actor.user_id, note=note)
    session.add(row)
    session.flush()
    audit.record(session, actor, "form.version", "form_version", row.id,
                 detail={"key": key, "version": number, "checksum": row.checksum})
    return row


def _import_file(session: Session, defn: FormDefinition) -> FormVersion:
    row = FormVersion(key=defn.key, version=defn.version, title=defn.title, schema=copy.deepcopy(defn.schema),
                      checksum=defn.checksum, source="file", created_by_id=None,
                      note=f"imported from forms/{defn.key}.json")
    session.add(row)
    session.flush()
    return row
