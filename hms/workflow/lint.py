"""Validation of a BPMN document before it can be published.

Department heads edit pathways, and a BPMN file is code: its scripts, conditions, timers
and service-task parameters are evaluated by the engine. `lint_xml` finds, in one pass,
everything that would make a pathway fail or misbehave once patients are on it, and
reports each as a `Problem` whose message names the element and says how to fix it in
words a department head understands. `register` makes `hms.workflow.specs.publish` refuse
any document with a problem.

Problem codes (stable; the editor and the API key on them):

    not_xml, bpmn_invalid      the file is not XML / the workflow engine rejects it
    key_mismatch               no process has the pathway key as its id
    unknown_lane, no_lane      a lane that names no HMS role / a human task in no lane
    plain_task                 an untyped bpmn:task (the engine waits on it silently)
    unknown_form, missing_form a formKey naming no form / an empty formKey
    unknown_operation          a service task without a registered operation
    bad_parameters             service-task parameters missing, unknown or not compiling
    script_error               a script, preScript or postScript that does not compile
    condition_error            a flow or loop condition that does not compile
    missing_condition          a non-default gateway flow without a condition
    timer_invalid              a timer expression that does not compile or parse
    unbounded_loop             a back-edge loop that never waits for a person or a clock
    loop_without_maximum       a standard loop without a whole-number loopMaximum
    properties                 a bad priority or due_in task property
    call_activity_unknown      a call activity naming no known pathway
    message_classes            a message event without a resolvable message
    forms_unreadable           (publish only) the form definitions could not be loaded
"""

from __future__ import annotations

import ast
import difflib
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lxml import etree
from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition

from hms.auth.roles import ROLES, role_for_lane
from hms.errors import Invalid, NotFound
from hms.workflow import operations, specs
from hms.workflow.queue import PRIORITY_NAMES
from hms.workflow.sandbox import SandboxError, compile_expression, compile_script, parse_duration

BPMN_NS = specs.BPMN_NS
SPIFF_NS = "http://spiffworkflow.org/bpmn/schema/1.0/core"
NS = {"bpmn": BPMN_NS, "spiffworkflow": SPIFF_NS}

# SpiffWorkflow's TaskIterator gives up at depth 1000, i.e. after ~330 rounds of a
# three-element loop, and then reports the workflow as complete (see the 3.2 notes, §4).
SILENT_STOP_ROUNDS = 330

HUMAN_TASKS = ("userTask", "manualTask")
WAITING_EVENT_DEFINITIONS = ("timerEventDefinition", "messageEventDefinition", "signalEventDefinition")
CONTAINERS = ("subProcess", "transaction", "adHocSubProcess")
GATEWAYS = ("exclusiveGateway", "inclusiveGateway", "parallelGateway", "eventBasedGateway", "complexGateway")


@dataclass(frozen=True)
class Problem:
    """One reason a BPMN document cannot be published."""

    code: str
    message: str
    element_id: str | None
    line: int | None
    file: str

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.file}:{self.line if self.line else '?'}: {self.element_id or '-'}: {self.message}"


# --- the document being checked ---------------------------------------------------------

class _Doc:
    """A parsed BPMN document plus what the checks share: file name, ids, labels."""

    def __init__(self, xml: str, root, key: str, file: str):
        self.xml = xml
        self.root = root
        self.key = key
        self.file = file
        self.by_id = {el.get("id"): el for el in root.iter() if isinstance(el.tag, str) and el.get("id")}

    def find(self, xpath: str, node=None) -> list:
        return (self.root if node is None else node).xpath(xpath, namespaces=NS)

    def problem(self, code: str, element, message: str, *, at=None) -> Problem:
        """A problem about `element`, reported at the line of `at` (default: the element)."""
        where = at if at is not None else element
        return Problem(code, message, element.get("id") if element is not None else None,
                       where.sourceline if where is not None else None, self.file)


def _local(el) -> str:
    return etree.QName(el).localname


# Names the editor shows where splitting the camel-case tag would read oddly.
KIND_NAMES = {"subProcess": "subprocess", "adHocSubProcess": "ad hoc subprocess", "sequenceFlow": "flow"}


def _label(el) -> str:
    """'user task "Triage" (triage)': the kind, the name people see, and the id."""
    kind = KIND_NAMES.get(_local(el)) or re.sub(r"(?<!^)([A-Z])", r" \1", _local(el)).lower()
    name, bpmn_id = el.get("name"), el.get("id")
    if name and name != bpmn_id:
        return f'{kind} "{name}" ({bpmn_id})'
    return f'{kind} "{bpmn_id}"'


def _title(el) -> str:
    """_label with a capital letter, to start a sentence."""
    text = _label(el)
    return text[0].upper() + text[1:]


def _text(el) -> str:
    return (el.text or "").strip() if el is not None else ""


def _compile_failure(compiler: Callable, source: str, filename: str) -> Exception | None:
    """The sandbox's refusal of `source`, or None when it compiles."""
    try:
        compiler(source, filename)
    except SandboxError as err:
        return err
    return None


def _compile_error(compiler: Callable, source: str, filename: str) -> str | None:
    """The sandbox's reason `source` does not compile, or None when it does."""
    err = _compile_failure(compiler, source, filename)
    return (str(err) or type(err).__name__) if err is not None else None


def _script_problem(doc: _Doc, owner, source_el, text: str) -> Problem | None:
    """A script_error at the file line of the script's bad line (script text starts right
    after the element's opening tag, so its line 1 is the tag's line)."""
    err = _compile_failure(compile_script, text, f"{doc.file}:{owner.get('id')}:{_local(source_el)}")
    if err is None:
        return None
    offset = getattr(err, "line_number", None)
    line = source_el.sourceline + offset - 1 if isinstance(offset, int) and offset > 0 else source_el.sourceline
    what = "the script" if _local(source_el) == "script" else (
        "the script run " + ("before" if _local(source_el) == "preScript" else "after") + " it")
    return Problem("script_error", f"{_title(owner)}: {what} is not allowed or has an error: {err}",
                   owner.get("id"), line, doc.file)


def _properties(doc: _Doc, el) -> dict[str, tuple[str | None, object]]:
    """The spiffworkflow:property name -> (value, element) pairs of one element."""
    found = doc.find("./bpmn:extensionElements/spiffworkflow:properties//spiffworkflow:property", el)
    return {p.get("name"): (p.get("value"), p) for p in found}


# --- 1. XML and the workflow engine's parser --------------------------------------------

def _parse(xml: str, file: str):
    """(root, None) or (None, not_xml problem)."""
    try:
        # Bytes, because lxml refuses a str that carries an encoding declaration.
        return etree.fromstring(xml.encode("utf-8")), None
    except etree.XMLSyntaxError as err:
        line = err.lineno or None
        return None, Problem("not_xml", f"The file is not valid XML, so it cannot be read: {err.msg}",
                             None, line, file)


def _callee_closure(own_ids: set[str], root, callee_xml: dict[str, str]) -> dict[str, str]:
    """The callee documents the engine needs: those called, directly or not, by `root`.

    Only these are given to the parser, so an unrelated broken file in `callee_xml` (the
    CLI passes every shipped file) is not blamed on this one.
    """
    needed: dict[str, str] = {}
    pending = [el.get("calledElement") for el in root.iter(f"{{{BPMN_NS}}}callActivity")]
    while pending:
        callee = pending.pop()
        if not callee or callee in needed or callee in own_ids or callee not in callee_xml:
            continue
        needed[callee] = callee_xml[callee]
        try:
            pending.extend(specs.called_keys(callee_xml[callee]))
        except Invalid:
            pass  # not XML: the parser reports it against the callee's file
    return needed


def _engine_problem(doc: _Doc, callees: dict[str, str]) -> Problem | None:
    """Parse the document as the engine will at start (with its callees); None if it parses."""
    xml_by_key = {**callees, doc.key: doc.xml}
    try:
        specs.parse_bundle(doc.key, xml_by_key)
    except Invalid as err:
        # parse_bundle wraps the ValidationException (`from None` hides it from tracebacks,
        # but it stays the context); it carries the element id, line and file we report.
        cause = err.__context__
        if isinstance(cause, ValidationException):
            return _from_validation_exception(doc, cause, xml_by_key)
        if err.code == "bpmn_not_xml":  # this document parsed already, so a callee did not
            return Problem("bpmn_invalid", f"A pathway this one calls cannot be read: {err.message}",
                           None, None, doc.file)
        return Problem("bpmn_invalid", f"The workflow engine cannot read this diagram: {err.message}",
                       None, None, doc.file)
    except Exception as err:  # the parser raises bare KeyError/TypeError on some malformed input
        return Problem("bpmn_invalid", f"The workflow engine cannot read this diagram: {err!r}",
                       None, None, doc.file)
    return None


def _from_validation_exception(doc: _Doc, err: ValidationException, xml_by_key: dict[str, str]) -> Problem:
    message = " ".join([err.args[0] if err.args else "invalid diagram", *getattr(err, "notes", [])]).strip()
    own = err.file_name in ("", f"{doc.key}.bpmn")
    file = doc.file if own else err.file_name
    line = err.line_number if isinstance(err.line_number, int) else None
    if line is None and err.id:
        # lxml elements have `sourceline`, not the `line_number` the exception looks for.
        line = _line_of(doc.root if own else xml_by_key.get(Path(err.file_name).stem), err.id)
    prefix = "The workflow engine rejects this diagram" if own else f"The called pathway {file} is rejected"
    return Problem("bpmn_invalid", f"{prefix}: {message}", err.id or None, line, file)


def _line_of(root_or_xml, element_id: str) -> int | None:
    if root_or_xml is None:
        return None
    root = root_or_xml
    if isinstance(root_or_xml, str):
        try:
            root = etree.fromstring(root_or_xml.encode("utf-8"))
        except etree.XMLSyntaxError:
            return None
    found = root.xpath("//*[@id=$id]", id=element_id)
    return found[0].sourceline if found else None


def _explained(engine: Problem, problems: list[Problem], unknown_callees: set[str]) -> bool:
    """True when an own check already reported what the engine's parser stopped on.

    The parser stops at its first error with a terser message; ours names the element in
    plain words, so the duplicate is dropped.
    """
    if engine.element_id and any(p.element_id == engine.element_id and p.file == engine.file for p in problems):
        return True
    return any(f"'{callee}'" in engine.message for callee in unknown_callees)


# --- 2. the pathway key -----------------------------------------------------------------

def _check_key(doc: _Doc, own_ids: set[str]) -> Iterator[Problem]:
    if doc.key not in own_ids:
        found = ", ".join(sorted(i for i in own_ids if i)) or "none"
        # Anchored on the first process: that id is the one to rename.
        anchor = next(iter(doc.find("/bpmn:definitions/bpmn:process")), doc.root)
        yield doc.problem("key_mismatch", anchor,
                          f'The file must contain a process with id "{doc.key}" (the pathway key); '
                          f"the processes in it are: {found}.")


# --- 3. lanes ---------------------------------------------------------------------------

def _role_list() -> str:
    return ", ".join(ROLES.values())


def _check_lanes(doc: _Doc) -> Iterator[Problem]:
    for lane in doc.find("//bpmn:lane"):
        name = (lane.get("name") or "").strip()
        if not name:
            yield doc.problem("unknown_lane", lane,
                              f"A lane has no name. Name each lane after the role that does its work: {_role_list()}.")
        elif role_for_lane(name) is None:
            yield doc.problem("unknown_lane", lane,
                              f'Lane "{name}" is not a role HMS knows, so nobody would see its tasks. '
                              f"Use one of: {_role_list()}.")


def _lane_members(doc: _Doc) -> set[str]:
    return {_text(ref) for ref in doc.find("//bpmn:lane/bpmn:flowNodeRef")}


def _check_human_tasks_in_lanes(doc: _Doc) -> Iterator[Problem]:
    members = _lane_members(doc)
    for task in doc.find("//bpmn:userTask | //bpmn:manualTask"):
        if not _in_lane(task, members):
            yield doc.problem("no_lane", task,
                              f"{_title(task)} is not in any lane, so no work queue would show it. "
                              "Put it in the lane of the role that does it.")


def _in_lane(el, members: set[str]) -> bool:
    """In a lane itself, or inside an embedded subprocess that is (the engine inherits it)."""
    while el is not None:
        if el.get("id") in members:
            return True
        el = el.getparent()
        if el is None or _local(el) not in CONTAINERS:
            return False
    return False


# --- 4. plain tasks ---------------------------------------------------------------------

def _check_plain_tasks(doc: _Doc) -> Iterator[Problem]:
    for task in doc.find("//bpmn:task"):
        yield doc.problem("plain_task", task,
                          f"{_title(task)} has no task type. The workflow engine treats an untyped task as "
                          "manual work that waits silently for someone, and no work queue shows it: "
                          "use a user task (with a form) or a service task.")


# --- 5. forms ---------------------------------------------------------------------------

def _form_keys(forms) -> set[str] | None:
    if forms is None:
        return None
    return set(forms.keys()) if hasattr(forms, "keys") else set(forms)


def _check_forms(doc: _Doc, known_forms: set[str] | None) -> Iterator[Problem]:
    """A user task may have no form (a plain "done" confirmation), but a named form must exist."""
    for task in doc.find("//bpmn:userTask"):
        value, prop = _properties(doc, task).get("formKey", (None, None))
        if prop is None:
            continue
        if not (value or "").strip():
            yield doc.problem("missing_form", task,
                              f"{_title(task)} has an empty formKey. Choose its form, or remove the "
                              "formKey property if the task needs no form.", at=prop)
        elif known_forms is not None and value.strip() not in known_forms:
            yield doc.problem("unknown_form", task,
                              f'{_title(task)} uses form "{value.strip()}", which does not exist.'
                              f"{_did_you_mean(value.strip(), known_forms)}", at=prop)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=3)
    return f" Did you mean: {', '.join(close)}?" if close else ""


# --- 6. service tasks -------------------------------------------------------------------

def _check_service_tasks(doc: _Doc, operation_names: set[str]) -> Iterator[Problem]:
    for task in doc.find("//bpmn:serviceTask"):
        operator = next(iter(doc.find("./bpmn:extensionElements/spiffworkflow:serviceTaskOperator", task)), None)
        name = (operator.get("id") or "").strip() if operator is not None else ""
        if not name:
            yield doc.problem("unknown_operation", task,
                              f"{_title(task)} does not say which operation it runs. Choose one of the "
                              "registered operations.")
        elif name not in operation_names:
            yield doc.problem("unknown_operation", task,
                              f'{_title(task)} runs operation "{name}", which HMS does not have.'
                              f"{_did_you_mean(name, operation_names)}", at=operator)
        else:
            yield from _check_parameters(doc, task, operator, name)


def _accepted_parameters(name: str) -> dict[str, bool] | None:
    """Parameter -> required for a registered operation; None when only its name is known."""
    try:
        op = operations.get(name)
    except operations.OperationError:
        return None
    # Without a schema the operation takes its parameters as they come.
    return None if op.params is None else op.param_names()


def _check_parameters(doc: _Doc, task, operator, name: str) -> Iterator[Problem]:
    given = doc.find(".//spiffworkflow:parameter", operator)
    accepted = _accepted_parameters(name)
    element_ids = {e.get("id") for e in doc.find("//bpmn:*[@id]")}
    for param in given:
        pid = param.get("id") or ""
        if pid in element_ids:
            # The engine finds elements by id anywhere in the file, parameters included.
            yield doc.problem("bad_parameters", task,
                              f'{_title(task)} gives parameter "{pid}", which is also the id of an element of '
                              f'this diagram; the engine would confuse them. Rename the element.', at=param)
        elif accepted is not None and pid not in accepted:
            takes = ", ".join(sorted(accepted)) or "no parameters"
            yield doc.problem("bad_parameters", task,
                              f'{_title(task)} gives parameter "{pid}", which operation {name} does not take '
                              f"(it takes: {takes}).", at=param)
        elif param.get("value") is None or not param.get("value").strip():
            # The engine drops a parameter without a value, so the operation would not get it.
            yield doc.problem("bad_parameters", task,
                              f'{_title(task)}: parameter "{pid}" has no value.', at=param)
        elif error := _compile_error(compile_expression, param.get("value"), f"{doc.file}:{task.get('id')}:{pid}"):
            yield doc.problem("bad_parameters", task,
                              f'{_title(task)}: the value of parameter "{pid}" is not a valid expression '
                              f'({error}). Text must be in quotes, e.g. "CBC".', at=param)
    given_ids = {p.get("id") for p in given}
    for missing in sorted(k for k, required in (accepted or {}).items() if required and k not in given_ids):
        yield doc.problem("bad_parameters", task,
                          f'{_title(task)} must give parameter "{missing}" to operation {name}.', at=operator)


# --- 7. scripts and conditions ----------------------------------------------------------

def _check_scripts(doc: _Doc) -> Iterator[Problem]:
    for task in doc.find("//bpmn:scriptTask"):
        script = next(iter(doc.find("./bpmn:script", task)), None)
        if script is None or not (script.text or "").strip():
            yield doc.problem("script_error", task, f"{_title(task)} has no script.")
        elif problem := _script_problem(doc, task, script, script.text):
            yield problem
    for hook in doc.find("//bpmn:extensionElements/spiffworkflow:preScript"
                         " | //bpmn:extensionElements/spiffworkflow:postScript"):
        # An empty hook is harmless: the engine skips it.
        if (hook.text or "").strip() and (problem := _script_problem(doc, hook.getparent().getparent(),
                                                                      hook, hook.text)):
            yield problem


def _check_conditions(doc: _Doc) -> Iterator[Problem]:
    for flow in doc.find("//bpmn:sequenceFlow[bpmn:conditionExpression]"):
        cond = doc.find("./bpmn:conditionExpression", flow)[0]
        if (cond.text or "").strip() and (
                error := _compile_error(compile_expression, cond.text, f"{doc.file}:{flow.get('id')}")):
            yield doc.problem("condition_error", flow,
                              f"The condition on {_label(flow)} is not a valid expression: {error}. "
                              'Text must be in quotes, e.g. acuity == "urgent".', at=cond)
    for loop in doc.find("//bpmn:loopCondition | //bpmn:completionCondition | //bpmn:loopCardinality"):
        owner = loop.getparent().getparent()
        if (loop.text or "").strip() and (
                error := _compile_error(compile_expression, loop.text, f"{doc.file}:{owner.get('id')}")):
            yield doc.problem("condition_error", owner,
                              f"{_title(owner)}: the loop setting {_local(loop)} is not a valid expression: "
                              f"{error}", at=loop)


def _check_gateway_flows(doc: _Doc) -> Iterator[Problem]:
    """Of two or more ways out of a decision, each but the default needs a condition."""
    flows_from: dict[str, list] = {}
    for flow in doc.find("//bpmn:sequenceFlow"):
        flows_from.setdefault(flow.get("sourceRef"), []).append(flow)
    for gateway in doc.find("//bpmn:exclusiveGateway | //bpmn:inclusiveGateway"):
        outgoing = flows_from.get(gateway.get("id"), [])
        if len(outgoing) < 2:
            continue
        for flow in outgoing:
            if flow.get("id") != gateway.get("default") and not _text(
                    next(iter(doc.find("./bpmn:conditionExpression", flow)), None)):
                yield doc.problem("missing_condition", flow,
                                  f"{_title(flow)} out of {_label(gateway)} has no condition. Give it a "
                                  "condition, or make it the gateway's default flow.")


# --- 8. timers --------------------------------------------------------------------------

TIMER_EXAMPLES = {
    "timeDuration": '"PT4H" (4 hours) or "P1D" (1 day)',
    "timeDate": '"2025-01-31T09:00:00+05:00"',
    "timeCycle": '"R3/PT4H" (three times, every 4 hours)',
}


def _timer_value_error(kind: str, value: str) -> str | None:
    """Why an ISO-8601 timer value cannot be used, or None when the engine accepts it."""
    try:
        if kind == "timeDuration":
            parse_duration(value)
            # The engine computes the due time with its own parser; both must accept it.
            TimerEventDefinition.parse_iso_duration(value)
        elif kind == "timeDate":
            if not isinstance(TimerEventDefinition.parse_time_or_duration(value), datetime):
                return "a date timer needs a date and time; use a duration timer for a delay"
        else:
            if not value.upper().startswith("R"):
                return 'a repeating timer starts with "R"'
            TimerEventDefinition.parse_iso_recurring_interval(value)
    except Exception:  # the ISO parsers raise bare Exception/ValueError/AttributeError
        return f"it is not a valid ISO-8601 value such as {TIMER_EXAMPLES[kind]}"
    return None


def _string_literal(source: str) -> str | None:
    try:
        value = ast.literal_eval(source)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, str) else None


def _check_timers(doc: _Doc) -> Iterator[Problem]:
    for definition in doc.find("//bpmn:timerEventDefinition"):
        event = definition.getparent()
        times = doc.find("./bpmn:timeDuration | ./bpmn:timeDate | ./bpmn:timeCycle", definition)
        if not times:
            yield doc.problem("timer_invalid", event, f"{_title(event)} is a timer with no time set.")
        for time_el in times:
            error = _timer_error(doc, event, time_el)
            if error:
                yield doc.problem("timer_invalid", event, f"{_title(event)}: {error}", at=time_el)


def _timer_error(doc: _Doc, event, time_el) -> str | None:
    """The timer's expression is Python: a literal ISO value must be a quoted string."""
    kind, source = _local(time_el), _text(time_el)
    if not source:
        return "the timer's time is empty."
    if _timer_value_error(kind, source) is None:
        # A classic SpiffWorkflow trap: unquoted, PT4H is read as a variable name.
        return (f"the time {source} is not in quotes, so the engine would read it as the name of a variable "
                f'and fail when the timer starts; quote it: "{source}"')
    error = _compile_error(compile_expression, source, f"{doc.file}:{event.get('id')}")
    if error:
        return f"the timer's time is not a valid expression: {error}"
    literal = _string_literal(source)
    if literal is not None and (reason := _timer_value_error(kind, literal)):
        return f'the time "{literal}" cannot be used: {reason}.'
    return None


# --- 9. loops ---------------------------------------------------------------------------

def _flow_graph(doc: _Doc) -> dict[str, set[str]]:
    """Element id -> ids it can pass to: sequence flows, and a task to its boundary events."""
    graph: dict[str, set[str]] = {}
    for flow in doc.find("//bpmn:sequenceFlow"):
        graph.setdefault(flow.get("sourceRef"), set()).add(flow.get("targetRef"))
    for boundary in doc.find("//bpmn:boundaryEvent[@attachedToRef]"):
        graph.setdefault(boundary.get("attachedToRef"), set()).add(boundary.get("id"))
    return graph


def _waits(el, callee_roots: dict) -> bool:
    """Does passing through `el` wait for a person, a clock or a message?"""
    kind = _local(el)
    if kind in HUMAN_TASKS or kind == "receiveTask":
        return True
    if kind in ("intermediateCatchEvent", "boundaryEvent"):
        return any(_local(d) in WAITING_EVENT_DEFINITIONS for d in el)
    if kind in CONTAINERS:
        return any(_waits(child, callee_roots) for child in el.iterdescendants()
                   if isinstance(child.tag, str) and child.get("id"))
    if kind == "callActivity":
        callee = callee_roots.get(el.get("calledElement"))
        return callee is not None and any(
            _waits(child, {}) for child in callee.iter() if isinstance(child.tag, str) and child.get("id"))
    return False


def _reachable(graph: dict[str, set[str]], start: str, allowed: set[str]) -> set[str]:
    """Elements reachable from `start` in one or more steps, passing only through `allowed`."""
    seen: set[str] = set()
    pending = [start]
    while pending:
        for target in graph.get(pending.pop(), ()):
            if target in allowed and target not in seen:
                seen.add(target)
                pending.append(target)
    return seen


def _cycles(graph: dict[str, set[str]], allowed: set[str]) -> list[list[str]]:
    """The loops of `graph` within `allowed`: groups of elements that reach each other.

    One search per element is quadratic, which is nothing for a diagram of a few hundred
    elements and much easier to trust than a linear strongly-connected-components walk.
    """
    reach = {node: _reachable(graph, node, allowed) for node in allowed}
    loops, placed = [], set()
    for node in sorted(allowed):
        if node in reach[node] and node not in placed:
            loop = {other for other in reach[node] if node in reach[other]}
            placed |= loop
            loops.append(sorted(loop))
    return loops


def _check_loops(doc: _Doc, callee_roots: dict) -> Iterator[Problem]:
    """A loop is allowed only if every way round it waits for a person or a clock.

    Removing the waiting elements from the graph leaves exactly the cycles that do not.
    """
    graph = _flow_graph(doc)
    automatic = {i for i in set(graph) | {t for ts in graph.values() for t in ts}
                 if i in doc.by_id and not _waits(doc.by_id[i], callee_roots)}
    for component in _cycles(graph, automatic):
        members = sorted((doc.by_id[i] for i in component), key=lambda el: el.sourceline or 0)
        anchor = next((el for el in members if _local(el) in GATEWAYS), members[0])
        names = ", ".join(_label(el) for el in members[:6])
        if len(members) > 6:
            names += f" and {len(members) - 6} more"
        yield doc.problem("unbounded_loop", anchor,
                          f"The loop through {names} runs on its own without waiting for a person or a timer. "
                          f"SpiffWorkflow silently stops such a loop after about {SILENT_STOP_ROUNDS} rounds "
                          "and the pathway gets stuck without an error. Put a user task or a timer in the loop, "
                          "or use a task with loop settings and a maximum number of rounds.")


def _check_standard_loops(doc: _Doc) -> Iterator[Problem]:
    for loop in doc.find("//bpmn:standardLoopCharacteristics"):
        task = loop.getparent()
        maximum = (loop.get("loopMaximum") or "").strip()
        if not maximum:
            yield doc.problem("loop_without_maximum", task,
                              f"{_title(task)} repeats without a maximum number of rounds. Set loopMaximum "
                              "(e.g. 10) so it cannot repeat forever.", at=loop)
        elif not maximum.isdigit() or int(maximum) < 1:
            yield doc.problem("loop_without_maximum", task,
                              f'{_title(task)}: the maximum number of rounds "{maximum}" must be a whole number '
                              "of at least 1.", at=loop)


# --- 10. task properties ----------------------------------------------------------------

def _check_properties(doc: _Doc) -> Iterator[Problem]:
    for el in doc.find("//*[bpmn:extensionElements/spiffworkflow:properties]"):
        props = _properties(doc, el)
        for name, check in (("priority", _priority_error), ("due_in", _due_in_error)):
            value, prop = props.get(name, (None, None))
            if prop is not None and (error := check(doc, el, (value or "").strip())):
                yield doc.problem("properties", el, f"{_title(el)}: {error}", at=prop)


def _expression_property_error(doc: _Doc, el, value: str) -> str | None:
    error = _compile_error(compile_expression, value[1:], f"{doc.file}:{el.get('id')}")
    return f'the expression "{value}" is not valid: {error}' if error else None


def _priority_error(doc: _Doc, el, value: str) -> str | None:
    if value.startswith("="):
        return _expression_property_error(doc, el, value)
    if value.lower() in PRIORITY_NAMES or (value.isdigit() and 1 <= int(value) <= 4):
        return None
    return (f'priority "{value}" must be 1 to 4 (1 is most urgent), one of '
            f'{", ".join(PRIORITY_NAMES)}, or "=<expression>".')


def _due_in_error(doc: _Doc, el, value: str) -> str | None:
    if value.startswith("="):
        return _expression_property_error(doc, el, value)
    try:
        parse_duration(value)
    except (SandboxError, ValueError, TypeError):
        return f'due_in "{value}" must be an ISO-8601 duration such as PT4H (4 hours), or "=<expression>".'
    return None


# --- 11. call activities ----------------------------------------------------------------

def _check_call_activities(doc: _Doc, known: set[str]) -> Iterator[Problem]:
    for call in doc.find("//bpmn:callActivity"):
        called = (call.get("calledElement") or "").strip()
        if not called:
            yield doc.problem("call_activity_unknown", call,
                              f"{_title(call)} does not say which pathway it calls.")
        elif called not in known:
            yield doc.problem("call_activity_unknown", call,
                              f'{_title(call)} calls pathway "{called}", which HMS does not have. Publish it '
                              f"first, or correct the name.{_did_you_mean(called, known)}")


# --- 12. messages -----------------------------------------------------------------------

CATCHING = ("intermediateCatchEvent", "boundaryEvent", "startEvent")


def _check_messages(doc: _Doc) -> Iterator[Problem]:
    """Catching events must name their message: without one the engine falls back to the
    event's label, so renaming the label in the editor would silently break delivery."""
    messages = {m.get("id") for m in doc.find("//bpmn:message")}
    refs = [(d.getparent(), d) for d in doc.find("//bpmn:messageEventDefinition")]
    refs += [(t, t) for t in doc.find("//bpmn:receiveTask | //bpmn:sendTask")]
    for owner, ref_el in refs:
        ref = (ref_el.get("messageRef") or "").strip()
        if not ref and (_local(owner) in CATCHING or _local(owner) == "receiveTask"):
            yield doc.problem("message_classes", owner,
                              f"{_title(owner)} waits for a message but does not say which one. Choose the "
                              "message it waits for.", at=ref_el)
        elif ref and ref not in messages:
            yield doc.problem("message_classes", owner,
                              f'{_title(owner)} refers to message "{ref}", which is not defined in this file.',
                              at=ref_el)


# --- public API -------------------------------------------------------------------------

def lint_xml(xml: str, key: str, *, forms=None, operation_names: Iterable[str] | None = None,
             known_keys: Iterable[str] | None = None, callee_xml: dict[str, str] | None = None,
             filename: str | None = None) -> list[Problem]:
    """Every problem that stops `xml` being published as pathway `key`; empty when clean.

    forms: a FormRegistry or a set of form keys; None skips the form-existence check.
    operation_names: the operations service tasks may run (default: the registry).
    known_keys: pathways call activities may call, besides those in `callee_xml` and the
    processes of this document. callee_xml: the XML of called pathways by key, parsed with
    this one exactly as the engine will at start.
    """
    file = filename or f"{key}.bpmn"
    root, not_xml = _parse(xml, file)
    if not_xml:
        return [not_xml]
    doc = _Doc(xml, root, key, file)
    if _local(root) != "definitions" or etree.QName(root).namespace != BPMN_NS:
        return [doc.problem("bpmn_invalid", root, "The file is not a BPMN diagram (it must start with "
                                                  "bpmn:definitions).")]
    callee_xml = {k: v for k, v in (callee_xml or {}).items() if k != key}
    own_ids = {p.get("id") for p in doc.find("/bpmn:definitions/bpmn:process") if p.get("id")}
    known = set(known_keys or ()) | set(callee_xml) | own_ids
    names = set(operations.names() if operation_names is None else operation_names)
    callees = _callee_closure(own_ids, root, callee_xml)
    problems = _own_checks(doc, own_ids, forms, names, known, _callee_roots(callees))
    if not any(p.code == "key_mismatch" for p in problems):
        engine = _engine_problem(doc, callees)
        unknown = {c.get("calledElement") for c in doc.find("//bpmn:callActivity")} - known
        if engine is not None and not _explained(engine, problems, unknown):
            problems.append(engine)
    return sorted(problems, key=lambda p: (p.file != file, p.line or 0))


def _own_checks(doc: _Doc, own_ids, forms, operation_names, known, callee_roots) -> list[Problem]:
    checks = (
        _check_key(doc, own_ids), _check_lanes(doc), _check_human_tasks_in_lanes(doc),
        _check_plain_tasks(doc), _check_forms(doc, _form_keys(forms)),
        _check_service_tasks(doc, operation_names), _check_scripts(doc), _check_conditions(doc),
        _check_gateway_flows(doc), _check_timers(doc), _check_loops(doc, callee_roots),
        _check_standard_loops(doc), _check_properties(doc), _check_call_activities(doc, known),
        _check_messages(doc),
    )
    return [problem for check in checks for problem in check]


def _callee_roots(callee_xml: dict[str, str]) -> dict:
    """Parsed callee documents by key (for "does this call wait?"); unparseable ones skipped."""
    roots = {}
    for key, xml in callee_xml.items():
        root, broken = _parse(xml, f"{key}.bpmn")
        if not broken:
            roots[key] = root
    return roots


def lint_file(path: str | Path, key: str | None = None, **kwargs) -> list[Problem]:
    """Lint a BPMN file; the key defaults to the file stem (the BPMN process id convention)."""
    path = Path(path)
    kwargs.setdefault("filename", str(path))
    return lint_xml(path.read_text(encoding="utf-8"), key or path.stem, **kwargs)


def register(forms_dir: str | Path) -> Callable:
    """Make `specs.publish` lint every document, with the forms in `forms_dir` and the
    latest published version of each pathway it calls. Returns the installed linter."""

    def linter(session, key: str, xml: str) -> list[Problem]:
        return lint_for_publish(session, key, xml, forms_dir)

    specs.set_linter(linter)
    return linter


def lint_for_publish(session, key: str, xml: str, forms_dir: str | Path) -> list[Problem]:
    """The publish-time lint: forms read fresh (they may have changed since start-up)."""
    from hms.forms import FormDefinitionError, FormRegistry

    try:
        forms, problems = FormRegistry.from_directory(forms_dir), []
    except FormDefinitionError as err:
        # Without the forms no form key can be checked; refuse rather than guess.
        forms = None
        problems = [Problem("forms_unreadable", f"The form definitions could not be loaded: {line}",
                            None, None, str(forms_dir)) for line in err.problems]
    return problems + lint_xml(xml, key, forms=forms, callee_xml=_published_callees(session, key, xml))


def _published_callees(session, key: str, xml: str) -> dict[str, str]:
    """Latest published XML of every pathway `xml` calls, directly or not.

    A callee that is not published is left out; lint_xml reports it (call_activity_unknown).
    """
    root, broken = _parse(xml, f"{key}.bpmn")
    if broken:
        return {}
    own = {p.get("id") for p in root.iterfind(f"{{{BPMN_NS}}}process")}
    found: dict[str, str] = {}
    pending = [el.get("calledElement") for el in root.iter(f"{{{BPMN_NS}}}callActivity")]
    while pending:
        callee = pending.pop()
        if not callee or callee in found or callee in own:
            continue
        try:
            found[callee] = specs.latest_version(session, callee).bpmn_xml
        except NotFound:
            continue
        pending.extend(specs.called_keys(found[callee]))
    return found
