"""Form definitions for human tasks: load, check, compile to marshmallow, prepare for rendering.

A form is a JSON file in `forms/` written in a small, documented subset of JSON Schema
(docs/forms.md). A BPMN user task names its form with the `formKey` property. This module:

- loads and checks definitions (`load_form`, `form_from_dict`, `validate_definition`,
  `FormRegistry`); a bad definition fails with `FormDefinitionError` naming the form key and
  the JSON pointer of the problem, so the BPMN lint and the form editor can show it;
- compiles a definition to a marshmallow schema (`compile_schema`, cached by checksum) and
  validates submitted task data (`validate`), returning JSON-ready values because task data
  is serialized with the workflow instance;
- turns an HTML form post into the same shape as a JSON submission (`coerce_form_post`);
- describes the fields for the one rendering macro, `render_form` in
  hms/web/templates/forms.html (`field_list`, `display_values`).

Lookups (ICD-10 codes, lab tests, medicines) are checked by validators that the domain
packages register at start with `register_lookup`; this module never imports them.
"""

from __future__ import annotations

import contextvars
import copy
import difflib
import hashlib
import json
import keyword
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone, tzinfo
from pathlib import Path
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields

from hms.errors import Invalid

# --------------------------------------------------------------------------------------
# Public types
# --------------------------------------------------------------------------------------


class FormDefinitionError(Exception):
    """A form definition is not valid. `problems` lists every problem found, each as
    "<form key>: <JSON pointer>: <message>"; the message is those lines joined."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class UnknownForm(KeyError):
    """No form with this key (or key and version) is registered."""

    def __init__(self, key: str, version: int | None = None):
        self.key = key
        self.version = version
        super().__init__(key)

    def __str__(self) -> str:
        if self.version is None:
            return f"unknown form {self.key!r}"
        return f"unknown form {self.key!r} version {self.version}"


@dataclass(frozen=True)
class FormDefinition:
    """One checked form definition. `schema` is the raw JSON object: treat it as read-only,
    because compiled schemas are cached by `checksum` (sha256 of `canonical_json(schema)`)."""

    key: str
    title: str
    version: int
    schema: dict = field(compare=False, repr=False)
    checksum: str = ""


@dataclass(frozen=True)
class FormField:
    """One field as renderers and the compiler see it.

    `kind` picks the widget: text, textarea, integer, number, boolean, date, datetime,
    select, radio, lookup (a text input with suggestions), list (repeated inputs of an array
    of scalars; `item` describes one input), checkboxes (array of enum values) and table
    (array of objects; `columns` describe the cells).
    """

    name: str
    type: str
    kind: str
    title: str
    help: str | None = None
    required: bool = False
    read_only: bool = False
    format: str | None = None
    unit: str | None = None
    default: Any = None
    options: tuple[tuple[Any, str], ...] = ()
    minimum: int | float | None = None
    maximum: int | float | None = None
    exclusive_minimum: int | float | None = None
    exclusive_maximum: int | float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    pattern_message: str | None = None
    lookup: str | None = None
    min_items: int | None = None
    max_items: int | None = None
    item: FormField | None = None
    columns: tuple[FormField, ...] = ()

    @property
    def input_type(self) -> str:
        """The HTML <input type> for scalar kinds."""
        return {"integer": "number", "number": "number", "boolean": "checkbox", "date": "date",
                "datetime": "datetime-local"}.get(self.kind, "text")

    @property
    def step(self) -> str | None:
        """The HTML step: whole numbers for integers, any precision for numbers."""
        return {"integer": "1", "number": "any"}.get(self.kind)

    @property
    def html_min(self) -> int | float | None:
        return self.minimum if self.minimum is not None else self.exclusive_minimum

    @property
    def html_max(self) -> int | float | None:
        return self.maximum if self.maximum is not None else self.exclusive_maximum

    @property
    def hint(self) -> str | None:
        """A short statement of the rule shown under the input (the range, the format)."""
        if self.type in ("integer", "number"):
            text = _range_phrase(self)
            return text[0].upper() + text[1:] + "." if text else None
        return self.pattern_message

    @property
    def row_limit(self) -> int:
        """The most rows or items an array may hold (declared maxItems or the built-in cap)."""
        return self.max_items if self.max_items is not None else MAX_ITEMS_DEFAULT


# Strings and arrays without a declared limit are capped: task data travels with the
# workflow instance (DESIGN §2), so an unbounded field would bloat every step.
MAX_LENGTH_DEFAULT = 10_000
MAX_ITEMS_DEFAULT = 200

# --------------------------------------------------------------------------------------
# Lookup validators
# --------------------------------------------------------------------------------------

LookupValidator = Callable[[set[str]], Iterable[str]]

_BUILTIN_LOOKUPS = {"icd10": "ICD-10 code", "lab_tests": "lab test", "medicines": "medicine"}
_lookup_labels: dict[str, str] = dict(_BUILTIN_LOOKUPS)
_lookup_validators: dict[str, LookupValidator] = {}


def register_lookup(name: str, fn: LookupValidator, *, label: str | None = None) -> None:
    """Register the membership check of lookup `name`.

    `fn(values)` gets the set of distinct non-empty strings submitted for that lookup in one
    form (one call per validation, so a domain package can answer with one query) and
    returns the ones it does not know. `label` names one value in messages ("medicine");
    a new lookup name must be registered before forms that use it are loaded.
    """
    _lookup_validators[name] = fn
    _lookup_labels[name] = label or _lookup_labels.get(name) or name.replace("_", " ")


def unregister_lookup(name: str) -> None:
    """Remove the check of `name`; built-in lookup names stay usable in definitions."""
    _lookup_validators.pop(name, None)
    if name not in _BUILTIN_LOOKUPS:
        _lookup_labels.pop(name, None)


def lookup_names() -> tuple[str, ...]:
    """Lookup names a definition may use."""
    return tuple(sorted(_lookup_labels))


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------

_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def canonical_json(schema: Any) -> str:
    """JSON text that is the same for definitions that mean the same.

    Keys are sorted, except that the order of `properties` is kept (it is the order of the
    fields on screen): each `properties` object becomes a list of [name, field] pairs.
    """
    return json.dumps(_order_preserving(schema), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)


def _order_preserving(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "properties" and isinstance(v, dict):
                out[k] = [[name, _order_preserving(f)] for name, f in v.items()]
            else:
                out[k] = _order_preserving(v)
        return out
    if isinstance(node, list):
        return [_order_preserving(v) for v in node]
    return node


def form_from_dict(raw: Any, key: str | None = None) -> FormDefinition:
    """Check a parsed definition and return it as a FormDefinition.

    `key` is the expected key (a file stem, a DB row); when the JSON also has "key" they
    must agree. Raises FormDefinitionError listing every problem.
    """
    declared = raw.get("key") if isinstance(raw, dict) else None
    key = key or (declared if isinstance(declared, str) else None)
    if not key:
        raise FormDefinitionError("<form>: missing 'key'")
    problems = validate_definition(raw, key)
    if problems:
        raise FormDefinitionError(problems)
    schema = copy.deepcopy(raw)
    return FormDefinition(key=key, title=schema["title"], version=schema.get("version", 1),
                          schema=schema,
                          checksum=hashlib.sha256(canonical_json(schema).encode()).hexdigest())


def load_form(path: str | Path) -> FormDefinition:
    """Load one forms/*.json file; its key is the file stem."""
    path = Path(path)
    key = path.stem
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormDefinitionError(f"{key}: cannot read {path}: {exc}") from None
    try:
        raw = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except _DuplicateKey as exc:
        raise FormDefinitionError(f"{key}: duplicate key {exc.args[0]!r}") from None
    except json.JSONDecodeError as exc:
        raise FormDefinitionError(
            f"{key}: not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    return form_from_dict(raw, key)


class _DuplicateKey(ValueError):
    pass


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    # JSON allows repeated keys and keeps the last one silently; in a hand-edited form
    # that hides a mistake (two "pulse" fields), so it is refused.
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


class FormRegistry:
    """The forms the system knows, by key and version.

    Files in forms/ and, later, form versions stored in the database are added here. A
    (key, version) pair is immutable once added: adding a different definition under the
    same pair is refused, as with published BPMN versions.
    """

    def __init__(self, definitions: Iterable[FormDefinition] = ()):
        self._forms: dict[str, dict[int, FormDefinition]] = {}
        self._lock = threading.Lock()
        for defn in definitions:
            self.add(defn)

    @classmethod
    def from_directory(cls, forms_dir: str | Path) -> FormRegistry:
        """Load every *.json file in `forms_dir`; reports the problems of all files at once."""
        directory = Path(forms_dir)
        if not directory.is_dir():
            raise FormDefinitionError(f"<forms>: {directory} is not a directory")
        registry, problems = cls(), []
        for path in sorted(directory.glob("*.json")):
            try:
                registry.add(load_form(path))
            except FormDefinitionError as exc:
                problems.extend(exc.problems)
        if problems:
            raise FormDefinitionError(problems)
        return registry

    def add(self, defn: FormDefinition) -> None:
        """Register `defn`; the same definition twice is harmless, a changed one is not."""
        with self._lock:
            versions = self._forms.setdefault(defn.key, {})
            existing = versions.get(defn.version)
            if existing is None:
                versions[defn.version] = defn
            elif existing.checksum != defn.checksum:
                raise FormDefinitionError(
                    f"{defn.key}: version {defn.version} is already registered with different "
                    "content; give the changed form a new version")

    def get(self, key: str, version: int | None = None) -> FormDefinition:
        """The definition of `key` at `version` (default: the highest version)."""
        versions = self._forms.get(key)
        if not versions:
            raise UnknownForm(key)
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise UnknownForm(key, version)
        return versions[version]

    def versions(self, key: str) -> list[int]:
        return sorted(self._forms.get(key, ()))

    def keys(self) -> list[str]:
        return sorted(self._forms)

    def __contains__(self, key: object) -> bool:
        return key in self._forms

    def __len__(self) -> int:
        return len(self._forms)


# --------------------------------------------------------------------------------------
# Checking a definition
# --------------------------------------------------------------------------------------

_TYPES = ("string", "integer", "number", "boolean", "array", "object")
_FORMATS = ("date", "date-time")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_TOP_KEYWORDS = {"key", "title", "version", "description", "type", "required", "properties",
                 "$schema", "$comment"}
_COMMON_KEYWORDS = {"type", "title", "description", "default", "readOnly", "$comment"}
_NUMERIC_KEYWORDS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
_TYPE_KEYWORDS = {
    "string": {"format", "enum", "enumNames", "minLength", "maxLength", "pattern",
               "x-pattern-message", "lookup", "x-unit", "x-widget"},
    "integer": {"enum", "enumNames", "x-unit", "x-widget"} | _NUMERIC_KEYWORDS,
    "number": {"x-unit"} | _NUMERIC_KEYWORDS,
    "boolean": set(),
    "array": {"items", "minItems", "maxItems", "lookup"},
    "object": {"properties", "required"},
}
_ALL_KEYWORDS = _COMMON_KEYWORDS.union(*_TYPE_KEYWORDS.values())


def validate_definition(raw: Any, key: str) -> list[str]:
    """Every problem of a definition, as "<key>: <pointer>: <message>"; empty when valid.

    Never raises on malformed input: it is used by the BPMN lint and the form editor on
    whatever a user typed.
    """
    report = _Report(key)
    if not isinstance(raw, dict):
        report("", "a form definition must be a JSON object")
    else:
        _check_top(raw, key, report)
        _check_object(raw, "", report, in_row=False)
    return report.problems


class _Report:
    """Collects problems as "<key>: <pointer>: <message>"."""

    def __init__(self, key: str):
        self.key = key
        self.problems: list[str] = []

    def __call__(self, pointer: str, message: str) -> None:
        self.problems.append(f"{self.key}: {pointer}: {message}" if pointer else f"{self.key}: {message}")

    def __len__(self) -> int:
        return len(self.problems)


def _check_top(raw: dict, key: str, report: _Report) -> None:
    _check_keywords(raw, _TOP_KEYWORDS, "", report)
    if not _KEY_RE.match(key):
        report("", f"key {key!r} must be letters, digits, '_', '-' or '.'")
    if "key" in raw and raw["key"] != key:
        report("/key", f"{raw['key']!r} does not match the form key {key!r} (the file name)")
    if not isinstance(raw.get("title"), str) or not raw["title"].strip():
        report("/title", "missing title")
    version = raw.get("version", 1)
    if not _is_int(version) or version < 1:
        report("/version", "must be a positive whole number")
    if "description" in raw and not isinstance(raw["description"], str):
        report("/description", "must be a string")
    if raw.get("type", "object") != "object":
        report("/type", "a form must have type 'object'")


def _check_object(raw: dict, pointer: str, report: _Report, *, in_row: bool) -> None:
    """Check `properties` and `required` of the form itself or of an array's row object."""
    properties = raw.get("properties")
    if not isinstance(properties, dict) or (in_row and not properties):
        report(f"{pointer}/properties", "must be an object of fields")
        return
    for name, spec in properties.items():
        at = f"{pointer}/properties/{_escape(name)}"
        if not isinstance(name, str) or not _NAME_RE.match(name) or keyword.iskeyword(name):
            # Names become task-data variables read by BPMN conditions, and parts of
            # HTML input names ("medicines-0-dose"), so they must be plain identifiers.
            report(at, f"field name {name!r} must be a Python identifier (letters, digits, '_')")
        _check_field(spec, at, report, in_row=in_row, in_items=False)
    required = raw.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        report(f"{pointer}/required", "must be a list of field names")
        return
    if len(set(required)) != len(required):
        report(f"{pointer}/required", "names a field twice")
    for i, name in enumerate(required):
        spec = properties.get(name)
        if spec is None:
            report(f"{pointer}/required/{i}", f"names {name!r}, which is not a property")
        elif isinstance(spec, dict) and spec.get("readOnly") is True:
            report(f"{pointer}/required/{i}", f"{name!r} is readOnly, so it cannot be required")


def _check_field(spec: Any, at: str, report: _Report, *, in_row: bool, in_items: bool) -> None:
    """Check one field; `in_row`: a column of an array of objects; `in_items`: array items."""
    if not isinstance(spec, dict):
        report(at, "a field must be a JSON object")
        return
    ftype = spec.get("type")
    if ftype is None:
        report(at, "missing 'type'")
        return
    if not isinstance(ftype, str) or ftype not in _TYPES:
        report(at, f"unknown type {ftype!r}")
        return
    before = len(report)
    allowed = _COMMON_KEYWORDS | _TYPE_KEYWORDS[ftype]
    if ftype == "object":
        allowed -= {"default", "readOnly"}  # a row object is only a container of columns
    _check_keywords(spec, allowed, at, report, ftype=ftype)
    _check_placement(spec, ftype, at, report, in_row=in_row, in_items=in_items)
    _check_annotations(spec, at, report)
    if ftype in ("integer", "number"):
        _check_numeric(spec, at, report)
    if ftype == "string":
        _check_string(spec, at, report)
    if ftype in ("string", "integer"):
        _check_enum(spec, ftype, at, report)
    if "lookup" in spec:
        _check_lookup(spec, ftype, at, report)
    if "x-widget" in spec:
        _check_widget(spec, ftype, at, report)
    if ftype == "array" and not (in_row or in_items):
        _check_array(spec, at, report)
    if "default" in spec and len(report) == before:
        _check_default(spec, at, report)


def _check_keywords(spec: dict, allowed: set[str], at: str, report: _Report, ftype: str | None = None) -> None:
    for kw in spec:
        if kw in allowed:
            continue
        if ftype and kw in _ALL_KEYWORDS:
            report(at, f"{kw!r} does not apply to type {ftype!r}")
            continue
        close = difflib.get_close_matches(str(kw), sorted(allowed), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        report(at, f"unknown keyword {kw!r}{hint}")


def _check_placement(spec: dict, ftype: str, at: str, report: _Report, *, in_row: bool, in_items: bool) -> None:
    if ftype == "object" and not in_items:
        report(at, "type 'object' is only allowed as the items of an array")
    if ftype == "array" and (in_row or in_items):
        report(at, "nested arrays are not supported")
    if spec.get("readOnly") and (in_row or in_items):
        report(at, "readOnly is only allowed on top-level fields")


def _check_annotations(spec: dict, at: str, report: _Report) -> None:
    for kw in ("title", "description", "x-unit", "x-pattern-message"):
        if kw in spec and (not isinstance(spec[kw], str) or not spec[kw].strip()):
            report(f"{at}/{kw}", "must be a non-empty string")
    if "readOnly" in spec and not isinstance(spec["readOnly"], bool):
        report(f"{at}/readOnly", "must be true or false")


def _check_numeric(spec: dict, at: str, report: _Report) -> None:
    for kw in _NUMERIC_KEYWORDS:
        if kw in spec and not _is_number(spec[kw]):
            report(f"{at}/{kw}", "must be a number")
            return
    low = [spec[k] for k in ("minimum", "exclusiveMinimum") if k in spec]
    high = [spec[k] for k in ("maximum", "exclusiveMaximum") if k in spec]
    if len(low) > 1 or len(high) > 1:
        report(at, "use either minimum or exclusiveMinimum (maximum or exclusiveMaximum), not both")
    elif low and high and low[0] > high[0]:
        report(at, f"the lower bound {low[0]} is above the upper bound {high[0]}")


def _check_string(spec: dict, at: str, report: _Report) -> None:
    if "format" in spec and spec["format"] not in _FORMATS:
        report(f"{at}/format", f"unknown format {spec['format']!r} (use 'date' or 'date-time')")
    _check_bounds(spec, "minLength", "maxLength", at, report)
    if "pattern" in spec:
        pattern = spec["pattern"]
        if not isinstance(pattern, str):
            report(f"{at}/pattern", "must be a string")
        else:
            try:
                re.compile(pattern)
            except re.error as exc:
                report(f"{at}/pattern", f"invalid regular expression: {exc}")
    if "format" in spec and any(k in spec for k in ("pattern", "minLength", "maxLength", "enum")):
        report(at, "a date or date-time field takes no pattern, length or enum")


def _check_bounds(spec: dict, low_kw: str, high_kw: str, at: str, report: _Report) -> None:
    for kw in (low_kw, high_kw):
        if kw in spec and (not _is_int(spec[kw]) or spec[kw] < 0):
            report(f"{at}/{kw}", "must be a whole number, 0 or more")
            return
    if low_kw in spec and high_kw in spec and spec[low_kw] > spec[high_kw]:
        report(at, f"{low_kw} {spec[low_kw]} is above {high_kw} {spec[high_kw]}")


def _check_enum(spec: dict, ftype: str, at: str, report: _Report) -> None:
    if "enumNames" in spec and "enum" not in spec:
        report(f"{at}/enumNames", "needs 'enum'")
        return
    if "enum" not in spec:
        return
    values = spec["enum"]
    check = _is_int if ftype == "integer" else (lambda v: isinstance(v, str) and v != "")
    if not isinstance(values, list) or not values or not all(check(v) for v in values):
        report(f"{at}/enum", f"must be a non-empty list of {'whole numbers' if ftype == 'integer' else 'non-empty strings'}")
        return
    if len(set(values)) != len(values):
        report(f"{at}/enum", "lists a value twice")
    names = spec.get("enumNames")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            report(f"{at}/enumNames", "must be a list of labels")
        elif len(names) != len(values):
            report(f"{at}/enumNames", f"has {len(names)} labels but enum has {len(values)} values")


def _check_lookup(spec: dict, ftype: str, at: str, report: _Report) -> None:
    name = spec["lookup"]
    if name not in _lookup_labels:
        report(f"{at}/lookup", f"unknown lookup {name!r} (known: {', '.join(lookup_names())})")
    items = spec.get("items")
    if ftype == "array" and not (isinstance(items, dict) and items.get("type") == "string"):
        report(f"{at}/lookup", "a lookup on an array needs items of type 'string'")
    if any(k in spec for k in ("enum", "format")) or (isinstance(items, dict) and "enum" in items):
        report(f"{at}/lookup", "a lookup field takes no enum or format")


def _check_widget(spec: dict, ftype: str, at: str, report: _Report) -> None:
    widget = spec["x-widget"]
    if widget == "textarea":
        ok = ftype == "string" and not any(k in spec for k in ("enum", "format", "lookup"))
    elif widget in ("radio", "select"):
        ok = "enum" in spec
    else:
        report(f"{at}/x-widget", f"unknown widget {widget!r} (use textarea, radio or select)")
        return
    if not ok:
        report(f"{at}/x-widget", f"{widget!r} does not fit this field")


def _check_array(spec: dict, at: str, report: _Report) -> None:
    _check_bounds(spec, "minItems", "maxItems", at, report)
    items = spec.get("items")
    if not isinstance(items, dict):
        report(f"{at}/items", "an array needs 'items' (a field or an object with properties)")
        return
    _check_field(items, f"{at}/items", report, in_row=False, in_items=True)
    if items.get("type") == "object":
        _check_object(items, f"{at}/items", report, in_row=True)


def _check_default(spec: dict, at: str, report: _Report) -> None:
    # The default pre-fills the input and fills an absent optional value, so it must pass
    # the field's own rules; compiling the field alone and loading the default checks that.
    probe = _build_field("default", spec, required=False)
    value = _normalize_value(probe, copy.deepcopy(spec["default"]))
    if value is _ABSENT:
        report(f"{at}/default", "is empty; leave the default out instead")
        return
    try:
        _marshmallow_field(probe).deserialize(value)
    except ValidationError as exc:
        report(f"{at}/default", f"is not valid: {_first_message(exc.messages)}")


def _first_message(messages: Any) -> str:
    if isinstance(messages, dict):
        return _first_message(next(iter(messages.values()), ""))
    if isinstance(messages, list):
        return _first_message(messages[0]) if messages else ""
    return str(messages)


def _escape(name: Any) -> str:
    """One JSON pointer segment (RFC 6901)."""
    return str(name).replace("~", "~0").replace("/", "~1")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


# --------------------------------------------------------------------------------------
# Fields for renderers
# --------------------------------------------------------------------------------------


def field_list(defn: FormDefinition) -> list[FormField]:
    """The form's fields in order, with the metadata the `render_form` macro needs."""
    return list(_compiled(defn).fields)


def _build_fields(schema: dict) -> tuple[FormField, ...]:
    required = set(schema.get("required", []))
    return tuple(_build_field(name, spec, required=name in required)
                 for name, spec in schema.get("properties", {}).items())


def _build_field(name: str, spec: dict, *, required: bool) -> FormField:
    ftype = spec["type"]
    enum = spec.get("enum")
    labels = spec.get("enumNames") or [str(v) for v in (enum or [])]
    common = dict(
        name=name, type=ftype, title=spec.get("title") or _humanize(name),
        help=spec.get("description"), required=required, read_only=spec.get("readOnly", False),
        format=spec.get("format"), unit=spec.get("x-unit"), default=spec.get("default"),
        options=tuple(zip(enum, labels)) if enum else (),
        minimum=spec.get("minimum"), maximum=spec.get("maximum"),
        exclusive_minimum=spec.get("exclusiveMinimum"),
        exclusive_maximum=spec.get("exclusiveMaximum"),
        min_length=spec.get("minLength"), max_length=spec.get("maxLength"),
        pattern=spec.get("pattern"), pattern_message=spec.get("x-pattern-message"),
        lookup=spec.get("lookup"), min_items=spec.get("minItems"), max_items=spec.get("maxItems"),
    )
    if ftype != "array":
        return FormField(kind=_scalar_kind(spec), **common)
    items = spec["items"]
    if items.get("type") == "object":
        row_required = set(items.get("required", []))
        columns = tuple(_build_field(n, s, required=n in row_required)
                        for n, s in items["properties"].items())
        return FormField(kind="table", columns=columns, **common)
    item_spec = dict(items)
    if spec.get("lookup") and "lookup" not in item_spec:
        item_spec["lookup"] = spec["lookup"]
    item = _build_field(name, item_spec, required=False)
    kind = "checkboxes" if item.options else "list"
    return FormField(kind=kind, item=item, **{**common, "lookup": item.lookup})


def _scalar_kind(spec: dict) -> str:
    if "enum" in spec:
        widget = spec.get("x-widget")
        if widget in ("radio", "select"):
            return widget
        return "radio" if len(spec["enum"]) <= 3 else "select"
    if spec.get("lookup"):
        return "lookup"
    if spec["type"] == "string":
        return {"date": "date", "date-time": "datetime"}.get(spec.get("format"),
                                                            spec.get("x-widget") or "text")
    return spec["type"]


def _humanize(name: str) -> str:
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


# --------------------------------------------------------------------------------------
# Compiling to marshmallow
# --------------------------------------------------------------------------------------

# The time zone that a date-time without an offset (an HTML datetime-local value) is in.
# A context variable, not a schema attribute, so one cached schema serves every caller.
_TZ: contextvars.ContextVar[tzinfo] = contextvars.ContextVar("hms_forms_tz", default=timezone.utc)

_INT_RE = re.compile(r"^[+-]?\d+$")
_NUM_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


class _WholeNumber(fields.Integer):
    """An integer that refuses 12.7 (marshmallow's non-strict Integer truncates it) and
    accepts "12" from HTML posts."""

    def _validated(self, value: Any) -> int:
        if isinstance(value, str) and _INT_RE.match(value):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if _is_int(value):
            return value
        raise self.make_error("invalid", input=value)


class _Decimal(fields.Float):
    """A finite number; strings must look like numbers (no "1_000", "nan" or "inf")."""

    def _validated(self, value: Any) -> float:
        if isinstance(value, str):
            if not _NUM_RE.match(value):
                raise self.make_error("invalid", input=value)
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid", input=value)
        if not math.isfinite(value):
            raise self.make_error("invalid", input=value)
        return float(value)


class _IsoDate(fields.Date):
    """A calendar date, returned as "YYYY-MM-DD" so task data stays JSON."""

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        if isinstance(value, date) and not isinstance(value, datetime):
            return value.isoformat()
        return super()._deserialize(value, attr, data, **kwargs).isoformat()


class _IsoDateTime(fields.DateTime):
    """A date and time, returned as an ISO string in UTC. A value without an offset is
    read in the caller's time zone (`validate(..., tz=)`); a bare date is refused because
    the time would be invented."""

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, str) and _DATETIME_RE.match(value):
            moment = super()._deserialize(value, attr, data, **kwargs)
        else:
            raise self.make_error("invalid", input=value, obj_type="datetime")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=_TZ.get())
        return moment.astimezone(timezone.utc).isoformat()


_MESSAGES = {
    "string": {"invalid": "Must be text."},
    "integer": {"invalid": "Must be a whole number."},
    "number": {"invalid": "Must be a number."},
    "boolean": {"invalid": "Must be true or false."},
    "date": {"invalid": "Must be a date (YYYY-MM-DD)."},
    "date-time": {"invalid": "Must be a date and time (YYYY-MM-DDTHH:MM)."},
    "array": {"invalid": "Must be a list."},
}


@dataclass(frozen=True)
class _Compiled:
    fields: tuple[FormField, ...]
    schema: Schema


_cache: dict[str, _Compiled] = {}
_cache_lock = threading.Lock()
_CACHE_SIZE = 512


def _compiled(defn: FormDefinition) -> _Compiled:
    """Fields and schema of `defn`, built once per checksum."""
    hit = _cache.get(defn.checksum)
    if hit is not None:
        return hit
    form_fields = _build_fields(defn.schema)
    # unknown=RAISE: an unexpected key is a client bug (or a typo), never silently dropped.
    entry = _Compiled(form_fields, _schema_for(form_fields, f"Form_{defn.key}")(unknown=RAISE))
    with _cache_lock:
        if len(_cache) >= _CACHE_SIZE:
            # Form versions are few; clearing beats tracking recency for a rare event.
            _cache.clear()
        _cache[defn.checksum] = entry
    return entry


def compile_schema(defn: FormDefinition) -> Schema:
    """A marshmallow Schema instance validating submissions of `defn` (cached by checksum).

    Use `validate` rather than calling `load` on it: `validate` also treats empty values as
    absent, drops readOnly fields, checks lookups and makes the error messages human.
    """
    return _compiled(defn).schema


class _FormSchema(Schema):
    error_messages = {"type": "Must be an object of fields."}


class _RowSchema(Schema):
    error_messages = {"type": "Must be a row of values."}


def _schema_for(form_fields: Iterable[FormField], name: str, base: type[Schema] = _FormSchema) -> type[Schema]:
    declared = {f.name: _marshmallow_field(f) for f in form_fields if not f.read_only}
    return base.from_dict(declared, name=name)


def _marshmallow_field(f: FormField) -> fields.Field:
    messages = {**_MESSAGES[f.format or f.type], "required": "Required.", "null": "Required."}
    kwargs: dict[str, Any] = dict(required=f.required, allow_none=not f.required,
                                  validate=_validators(f), error_messages=messages)
    make = (lambda **kw: fields.List(_inner_field(f), **kw)) if f.type == "array" else _scalar_class(f)
    if f.required:
        return make(**kwargs)
    default = f.default
    if default is not None:
        # Load the default once so it comes out cleaned like a submitted value (37 -> 37.0
        # for a number); the definition check has already proved it valid.
        default = make(**kwargs).deserialize(_normalize_value(f, copy.deepcopy(default)))
    kwargs["load_default"] = (lambda: copy.deepcopy(default)) if isinstance(default, list) else default
    return make(**kwargs)


def _scalar_class(f: FormField) -> type[fields.Field]:
    if f.format == "date":
        return _IsoDate
    if f.format == "date-time":
        return _IsoDateTime
    return {"string": fields.String, "integer": _WholeNumber, "number": _Decimal,
            "boolean": fields.Boolean}[f.type]


def _inner_field(f: FormField) -> fields.Field:
    if f.kind == "table":
        row_schema = _schema_for(f.columns, f"Row_{f.name}", _RowSchema)
        return fields.Nested(row_schema, unknown=RAISE, error_messages={"null": "Must be a row of values."})
    item = f.item
    messages = {**_MESSAGES[item.format or item.type], "required": "Required.",
                "null": "Must not be empty."}
    return _scalar_class(item)(validate=_validators(item), error_messages=messages)


# --------------------------------------------------------------------------------------
# Validators with human messages
# --------------------------------------------------------------------------------------


def _validators(f: FormField) -> list[Callable[[Any], None]]:
    checks: list[Callable[[Any], None]] = []
    if f.type in ("integer", "number") and _range_phrase(f):
        checks.append(_range_check(f))
    if f.type == "string" and not f.format:
        checks.append(_length_check(f))
        if f.pattern:
            checks.append(_pattern_check(f))
    if f.options and f.type != "array":
        checks.append(_enum_check(f))
    if f.type == "array":
        checks.append(_items_check(f))
    return checks


def _num(value: int | float) -> str:
    """30 not 30.0; 0.3 stays 0.3."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _range_phrase(f: FormField) -> str:
    """"between 30 and 45 °C", "at least 0", "greater than 0 and at most 10 kg", or ""."""
    unit = f" {f.unit}" if f.unit else ""
    low = (f"at least {_num(f.minimum)}" if f.minimum is not None else
           f"greater than {_num(f.exclusive_minimum)}" if f.exclusive_minimum is not None else None)
    high = (f"at most {_num(f.maximum)}" if f.maximum is not None else
            f"less than {_num(f.exclusive_maximum)}" if f.exclusive_maximum is not None else None)
    if f.minimum is not None and f.maximum is not None:
        return f"between {_num(f.minimum)} and {_num(f.maximum)}{unit}"
    parts = [p for p in (low, high) if p]
    return " and ".join(parts) + unit if parts else ""


def _range_check(f: FormField) -> Callable[[Any], None]:
    message = f"Must be {_range_phrase(f)}."

    def check(value: int | float) -> None:
        if ((f.minimum is not None and value < f.minimum)
                or (f.maximum is not None and value > f.maximum)
                or (f.exclusive_minimum is not None and value <= f.exclusive_minimum)
                or (f.exclusive_maximum is not None and value >= f.exclusive_maximum)):
            raise ValidationError(message)
    return check


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _length_check(f: FormField) -> Callable[[Any], None]:
    low = f.min_length
    high = f.max_length if f.max_length is not None else MAX_LENGTH_DEFAULT

    def check(value: str) -> None:
        if low is not None and len(value) < low:
            raise ValidationError(f"Must be at least {_plural(low, 'character')}.")
        if len(value) > high:
            raise ValidationError(f"Must be at most {_plural(high, 'character')}.")
    return check


def _pattern_check(f: FormField) -> Callable[[Any], None]:
    # JSON Schema patterns are unanchored (a search, as in ECMA-262): authors anchor
    # with ^...$ when the whole value must match.
    regex = re.compile(f.pattern)
    message = f.pattern_message or "Does not have the expected format."

    def check(value: str) -> None:
        if not regex.search(value):
            raise ValidationError(message)
    return check


def _enum_check(f: FormField) -> Callable[[Any], None]:
    allowed = {value for value, _ in f.options}
    message = "Must be one of: " + ", ".join(label for _, label in f.options) + "."

    def check(value: Any) -> None:
        if value not in allowed:
            raise ValidationError(message)
    return check


def _items_check(f: FormField) -> Callable[[Any], None]:
    word = "row" if f.kind == "table" else "item"
    low, high = f.min_items, f.row_limit

    def check(value: list) -> None:
        if low is not None and len(value) < low:
            raise ValidationError(f"Must have at least {_plural(low, word)}.")
        if len(value) > high:
            raise ValidationError(f"Must have at most {_plural(high, word)}.")
    return check


# --------------------------------------------------------------------------------------
# Validating submissions
# --------------------------------------------------------------------------------------

_ABSENT = object()


def validate(defn: FormDefinition, data: Any, *, tz: tzinfo | None = None) -> dict:
    """Check a submission of `defn` and return the cleaned task data.

    Empty values ("", whitespace, [] and blank rows) count as absent; strings are trimmed.
    The result has every non-readOnly field: its value, else its default, else None (BPMN
    conditions can then test `x is None` instead of failing on a missing name). Dates are
    "YYYY-MM-DD", date-times ISO strings in UTC (naive input is read in `tz`, default
    UTC), integers int and numbers float: the result is JSON. readOnly fields are
    ignored: the task's existing value stands.

    Raises Invalid("Some fields are not valid.", fields=...) with marshmallow's nested
    messages, e.g. {"temperature_c": ["Must be between 30 and 45 °C."],
    "medicines": {0: {"dose": ["Required."]}}}.
    """
    compiled = _compiled(defn)
    cleaned = _normalize(compiled.fields, data)
    errors: dict = {}
    result: dict = {}
    token = _TZ.set(tz or timezone.utc)
    try:
        result = compiled.schema.load(cleaned)
    except ValidationError as exc:
        errors = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
    finally:
        _TZ.reset(token)
    if isinstance(cleaned, dict):
        _merge_errors(errors, _lookup_errors(compiled.fields, cleaned))
    if errors:
        raise Invalid("Some fields are not valid.", fields=errors)
    return result


def _normalize(form_fields: Iterable[FormField], data: Any) -> Any:
    """Drop readOnly and empty values of known fields; leave unknown keys for marshmallow
    to refuse."""
    if not isinstance(data, Mapping):
        return data
    by_name = {f.name: f for f in form_fields}
    out = {}
    for key, value in data.items():
        f = by_name.get(key)
        if f is None:
            out[key] = value
        elif not f.read_only:
            value = _normalize_value(f, value)
            if value is not _ABSENT:
                out[key] = value
    return out


def _normalize_value(f: FormField, value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value if value else _ABSENT
    if value is None:
        return _ABSENT
    if f.type == "array" and isinstance(value, list):
        if f.kind == "table":
            items = [_normalize(f.columns, row) for row in value]
            items = [row for row in items if row != {}]
        else:
            items = [v for v in (_normalize_value(f.item, v) for v in value) if v is not _ABSENT]
        return items if items else _ABSENT
    return value


def _lookup_errors(form_fields: Iterable[FormField], data: dict) -> dict:
    """Ask each registered lookup validator once about every value submitted for it."""
    found: dict[str, list[tuple[tuple, str]]] = {}
    for path, lookup, value in _lookup_values(form_fields, data):
        found.setdefault(lookup, []).append((path, value))
    errors: dict = {}
    for lookup, hits in found.items():
        validator = _lookup_validators.get(lookup)
        if validator is None:
            continue
        unknown = set(validator({value for _, value in hits}))
        label = _lookup_labels.get(lookup, lookup)
        for path, value in hits:
            if value in unknown:
                _add_error(errors, path, f"Unknown {label}: {value}.")
    return errors


def _lookup_values(form_fields: Iterable[FormField], data: dict):
    """(path, lookup name, value) for every string submitted in a lookup field."""
    for f in form_fields:
        value = data.get(f.name)
        if f.kind == "table" and isinstance(value, list):
            for i, row in enumerate(value):
                if isinstance(row, dict):
                    for path, lookup, v in _lookup_values(f.columns, row):
                        yield (f.name, i) + path, lookup, v
        elif f.lookup and isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, str):
                    yield (f.name, i), f.lookup, v
        elif f.lookup and isinstance(value, str):
            yield (f.name,), f.lookup, value


def _add_error(errors: dict, path: tuple, message: str) -> None:
    node = errors
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node.setdefault(path[-1], []).append(message)


def _merge_errors(into: dict, extra: dict) -> None:
    for key, value in extra.items():
        current = into.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            _merge_errors(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            current.extend(value)
        elif current is None:
            into[key] = value
        # A field-level message already explains the failure; a row-level one adds nothing.


def flatten_errors(errors: Mapping, prefix: str = "") -> dict[str, list[str]]:
    """{"medicines": {0: {"dose": [...]}}} -> {"medicines.0.dose": [...]}, for summaries."""
    flat: dict[str, list[str]] = {}
    for key, value in errors.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_errors(value, path))
        else:
            flat[path] = list(value) if isinstance(value, (list, tuple)) else [str(value)]
    return flat


# --------------------------------------------------------------------------------------
# HTML posts and display
# --------------------------------------------------------------------------------------

_TRUE_WORDS = {"on", "true", "1", "yes"}


def coerce_form_post(defn: FormDefinition, form) -> dict:
    """Turn an HTML post (a werkzeug MultiDict) into the data `validate` expects.

    Checkboxes: "on" -> True, absent -> False. Tables: inputs named "<field>-<row>-<column>"
    become a list of row dicts in row order, blank rows dropped. Arrays of scalars: the
    repeated inputs of one name (getlist), blanks dropped. Numbers and dates stay strings
    for the schema to parse. Keys that are not fields (csrf_token, buttons) are ignored;
    readOnly fields are skipped.
    """
    data: dict[str, Any] = {}
    for f in _compiled(defn).fields:
        if f.read_only:
            continue
        if f.kind == "table":
            data[f.name] = _table_rows(f, form)
        elif f.type == "array":
            data[f.name] = [v for v in form.getlist(f.name) if v.strip()]
        elif f.type == "boolean":
            data[f.name] = _checked(form.get(f.name))
        elif f.name in form:
            data[f.name] = form.get(f.name)
    return data


def _checked(raw: str | None) -> bool:
    return raw is not None and raw.strip().lower() in _TRUE_WORDS


def _table_rows(f: FormField, form) -> list[dict]:
    prefix = re.compile(rf"^{re.escape(f.name)}-(\d{{1,4}})-([A-Za-z_][A-Za-z0-9_]*)$")
    indexes = sorted({int(m.group(1)) for m in map(prefix.match, form.keys()) if m})
    rows = []
    for i in indexes:
        row: dict[str, Any] = {}
        for col in f.columns:
            name = f"{f.name}-{i}-{col.name}"
            if col.type == "boolean":
                row[col.name] = _checked(form.get(name))
            elif name in form:
                row[col.name] = form.get(name)
        blank = all(v is False or (isinstance(v, str) and not v.strip()) for v in row.values())
        if not blank:
            rows.append(row)
    return rows


def display_values(defn: FormDefinition, data: Mapping | None, tz: tzinfo | None = None) -> dict:
    """Stored task data as `render_form` shows it: date-times in `tz` (default UTC) in the
    "YYYY-MM-DDTHH:MM" form a datetime-local input takes. Other values pass unchanged, so a
    re-posted form (coerce_form_post output) can be given too."""
    data = dict(data or {})
    zone = tz or timezone.utc
    for f in _compiled(defn).fields:
        if f.format == "date-time" and f.name in data:
            data[f.name] = _local_input(data[f.name], zone)
        elif f.kind == "table" and isinstance(data.get(f.name), list):
            cols = [c.name for c in f.columns if c.format == "date-time"]
            data[f.name] = [{**row, **{c: _local_input(row[c], zone) for c in cols if c in row}}
                            if isinstance(row, dict) else row for row in data[f.name]]
    return data


def _local_input(value: Any, zone: tzinfo) -> Any:
    if not isinstance(value, str):
        return value
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        return value
    return moment.astimezone(zone).strftime("%Y-%m-%dT%H:%M")
