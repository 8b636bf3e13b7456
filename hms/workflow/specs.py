"""Pathway specs: published versions in the database, parsed and cached by version.

A pathway's key is its BPMN process id, which is also the file stem in workflows/. A
shipped file that is new or changed is published as a new version at start-up, so a fresh
install runs the shipped pathways. A published version never changes.

Call activities resolve across pathways: an instance pins, at start, the versions of its
own pathway and of every pathway it calls (`spec_versions`), so publishing a new lab_order
changes new OPD visits but never a running one.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lxml import etree
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser

from hms import audit
from hms.audit import Actor
from hms.errors import Invalid, NotFound
from hms.workflow.models import PathwayVersion

log = logging.getLogger(__name__)

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
NS = {"bpmn": BPMN_NS}

# The lint is injected (hms.workflow.lint registers itself) so publishing always checks.
_linter: Callable[[Session, str, str], list] | None = None


def set_linter(fn: Callable[[Session, str, str], list] | None) -> None:
    global _linter
    _linter = fn


def get_linter() -> Callable[[Session, str, str], list] | None:
    return _linter


def checksum(xml: str) -> str:
    return hashlib.sha256(xml.encode()).hexdigest()


def _parse_xml(xml: str):
    try:
        return etree.fromstring(xml.encode())
    except etree.XMLSyntaxError as err:
        raise Invalid(f"The BPMN file is not valid XML: {err}", code="bpmn_not_xml") from None


def process_ids(xml: str) -> list[str]:
    return [p.get("id") for p in _parse_xml(xml).iterfind("bpmn:process", NS)]


def called_keys(xml: str) -> set[str]:
    """Keys of the pathways a BPMN document calls through call activities."""
    return {el.get("calledElement") for el in _parse_xml(xml).iter(f"{{{BPMN_NS}}}callActivity")
            if el.get("calledElement")}


def process_name(xml: str, key: str) -> str:
    for p in _parse_xml(xml).iterfind("bpmn:process", NS):
        if p.get("id") == key:
            return p.get("name") or key
    return key


@dataclass(frozen=True)
class Bundle:
    """A parsed top-level spec with the specs of everything it calls."""

    key: str
    spec_versions: tuple[tuple[str, int], ...]
    spec: object
    subprocess_specs: dict


def parse_bundle(key: str, xml_by_key: dict[str, str]) -> Bundle:
    """Parse `key` together with the pathways it calls (given as XML by key)."""
    parser = SpiffBpmnParser()
    for k, xml in xml_by_key.items():
        try:
            parser.add_bpmn_xml(_parse_xml(xml), filename=f"{k}.bpmn")
        except ValidationException as err:
            raise Invalid(f"{k}.bpmn: {err}", code="bpmn_invalid") from None
    try:
        spec = parser.get_spec(key)
        subprocess_specs = parser.get_subprocess_specs(key)
    except ValidationException as err:
        raise Invalid(f"{key}.bpmn: {err}", code="bpmn_invalid") from None
    return Bundle(key, (), spec, subprocess_specs)


def start_lane(spec) -> str | None:
    for ts in spec.task_specs.values():
        if type(ts).__name__ == "StartEvent" and getattr(ts, "lane", None):
            return ts.lane
    return None


class SpecCache:
    """Parsed bundles by pinned versions; a small LRU shared by the process."""

    def __init__(self, size: int = 64):
        self._items: OrderedDict = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple):
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: tuple, bundle: Bundle) -> None:
        with self._lock:
            self._items[key] = bundle
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


CACHE = SpecCache()


def get_version(session: Session, key: str, version: int) -> PathwayVersion:
    row = session.execute(select(PathwayVersion).where(
        PathwayVersion.key == key, PathwayVersion.version == version)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"Pathway {key} version {version} is not published.", code="pathway_not_found")
    return row


def latest_version(session: Session, key: str) -> PathwayVersion:
    row = session.execute(select(PathwayVersion).where(PathwayVersion.key == key)
                          .order_by(PathwayVersion.version.desc()).limit(1)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"No pathway named '{key}' is published.", code="pathway_not_found")
    return row


def list_versions(session: Session, key: str | None = None) -> list[PathwayVersion]:
    stmt = select(PathwayVersion).order_by(PathwayVersion.key, PathwayVersion.version)
    if key:
        stmt = stmt.where(PathwayVersion.key == key)
    return list(session.execute(stmt).scalars())


def resolve_spec_versions(session: Session, key: str, version: int | None = None) -> dict[str, int]:
    """Pin `key` (latest unless given) and, recursively, the latest version of each callee."""
    top = get_version(session, key, version) if version else latest_version(session, key)
    pinned = {key: top.version}
    pending = list(called_keys(top.bpmn_xml))
    while pending:
        callee = pending.pop()
        if callee in pinned:
            continue
        row = latest_version(session, callee)
        pinned[callee] = row.version
        pending.extend(called_keys(row.bpmn_xml))
    return pinned


def load_bundle(session: Session, key: str, spec_versions: dict[str, int]) -> Bundle:
    """The parsed spec for pinned versions, from the cache or parsed once."""
    cache_key = (key, tuple(sorted(spec_versions.items())))
    bundle = CACHE.get(cache_key)
    if bundle is None:
        xml_by_key = {k: get_version(session, k, v).bpmn_xml for k, v in spec_versions.items()}
        parsed = parse_bundle(key, xml_by_key)
        bundle = Bundle(key, cache_key[1], parsed.spec, parsed.subprocess_specs)
        CACHE.put(cache_key, bundle)
    return bundle


def publish(session: Session, actor: Actor, key: str, xml: str, *, note: str | None = None,
            source: str = "editor", forms: dict | None = None, lint: bool = True) -> PathwayVersion:
    """Publish `xml` as the next version of pathway `key` (immutable from then on).

    Locks nothing beyond the unique (key, version) constraint: two simultaneous publishes
    of one key cannot both take the same number. Runs the lint first; any problem refuses
    the publish with every problem listed. Audited.
    """
    if key not in process_ids(xml):
        raise Invalid(f"The BPMN file must contain a process with id '{key}' (the pathway key).",
                      code="bpmn_key_mismatch", fields={"process_id": [f"expected {key}"]})
    if lint and _linter is not None:
        problems = _linter(session, key, xml)
        if problems:
            raise Invalid(f"{key}: {len(problems)} problem(s) stop publishing.", code="lint_failed",
                          fields={"problems": [p if isinstance(p, str) else p.as_dict() for p in problems]})
    last = session.execute(select(func.max(PathwayVersion.version)).where(PathwayVersion.key == key)).scalar()
    name = process_name(xml, key)
    parsed_start_role = None
    try:
        others = {k: latest_version(session, k).bpmn_xml for k in called_keys(xml) if k != key}
        parsed_start_role = start_lane(parse_bundle(key, {key: xml, **others}).spec)
    except (Invalid, NotFound):
        if not lint:
            log.warning("pathway %s published without a parseable bundle", key)
        else:
            raise
    from hms.auth.roles import role_for_lane

    row = PathwayVersion(key=key, version=(last or 0) + 1, name=name, bpmn_xml=xml, checksum=checksum(xml),
                         start_role=role_for_lane(parsed_start_role), forms=forms,
                         published_by_id=actor.user_id, note=note, source=source)
    session.add(row)
    session.flush()
    audit.record(session, actor, "pathway.publish", "pathway_version", row.id,
                 detail={"key": key, "version": row.version, "checksum": row.checksum, "source": source})
    return row


def sync_shipped(session: Session, workflows_dir: str | Path, actor: Actor | None = None,
                 failures: dict[str, str] | None = None) -> list[PathwayVersion]:
    """Publish every shipped BPMN file that is new or differs from its latest version.

    Callees are published before their callers so call activities resolve. With `failures`
    given, a file that fails to publish is recorded there (key -> reason) inside a savepoint
    and the others still publish; without it the first failure raises.
    """
    actor = actor or Actor.system("startup")
    files = {p.stem: p.read_text(encoding="utf-8") for p in sorted(Path(workflows_dir).glob("*.bpmn"))}
    published: list[PathwayVersion] = []
    done: set[str] = set()

    def visit(key: str, trail: tuple = ()):
        if key in done or key not in files or key in trail:
            return
        for callee in called_keys(files[key]):
            visit(callee, trail + (key,))
        latest = session.execute(select(PathwayVersion).where(PathwayVersion.key == key)
                                 .order_by(PathwayVersion.version.desc()).limit(1)).scalar_one_or_none()
        if latest is not None and latest.source != "shipped":
            # Edited in HMS (editor, rollback, CLI) since it was shipped: the database is the
            # truth now, and re-publishing the file at every start would undo that edit.
            if latest.checksum != checksum(files[key]) and not _shipped_unchanged(session, key, files[key]):
                log.warning("shipped pathway %s changed, but v%s was published in HMS since; "
                            "the shipped file is not published (open it in the editor to adopt it)",
                            key, latest.version)
            done.add(key)
            return
        if latest is None or latest.checksum != checksum(files[key]):
            if failures is None:
                published.append(publish(session, actor, key, files[key], note="shipped file", source="shipped"))
            else:
                try:
                    with session.begin_nested():
                        published.append(publish(session, actor, key, files[key], note="shipped file",
                                                 source="shipped"))
                except (Invalid, NotFound) as err:
                    problems = (err.fields or {}).get("problems") or []
                    failures[key] = err.message + "".join(f"\n  {p}" for p in problems)
        done.add(key)

    for key in files:
        visit(key)
    return published


def _shipped_unchanged(session: Session, key: str, xml: str) -> bool:
    """Is `xml` the file that was last published from workflows/ for `key`?"""
    last_shipped = session.execute(select(PathwayVersion.checksum).where(
        PathwayVersion.key == key, PathwayVersion.source == "shipped")
        .order_by(PathwayVersion.version.desc()).limit(1)).scalar_one_or_none()
    return last_shipped == checksum(xml)
