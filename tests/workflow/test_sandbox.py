"""The BPMN sandbox: escape payloads run as script tasks and as gateway conditions inside real
SpiffWorkflow runs, plus the everyday scripts department heads are expected to write."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator
from xml.sax.saxutils import escape

import pytest
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser
from SpiffWorkflow.util.task import TaskState

from hms.workflow import sandbox
from hms.workflow.sandbox import (
    SandboxError,
    SandboxScriptEngine,
    ScriptCompileError,
    ScriptDataError,
    ScriptLimitError,
    ScriptSecurityError,
    ScriptTimeout,
    compile_expression,
    compile_script,
    evaluate,
    execute,
    parse_duration,
    round_half_up,
)

FIXTURES = Path(__file__).parent / "fixtures" / "sandbox"
HOSTNAME_FILE = Path("/etc/hostname")
HOSTNAME = HOSTNAME_FILE.read_text().strip() if HOSTNAME_FILE.exists() else ""
TIME_LIMIT_MS = 200


# --------------------------------------------------------------------------- helpers

def _xml(fixture: str, payload: str) -> bytes:
    template = (FIXTURES / fixture).read_text(encoding="utf-8")
    return template.replace("__PAYLOAD__", escape(payload, {'"': "&quot;"})).encode("utf-8")


def _workflow(fixture: str, process_id: str, payload: str, data: dict | None = None,
              engine: SandboxScriptEngine | None = None) -> BpmnWorkflow:
    parser = SpiffBpmnParser()
    parser.add_bpmn_str(_xml(fixture, payload))
    workflow = BpmnWorkflow(parser.get_spec(process_id), parser.get_subprocess_specs(process_id),
                            script_engine=engine or SandboxScriptEngine(time_limit_ms=TIME_LIMIT_MS))
    start = workflow.get_tasks(spec_name="start")[0]
    start.data.update(data or {})
    return workflow


def _script_workflow(script: str, data: dict | None = None, **kwargs) -> BpmnWorkflow:
    return _workflow("sandbox_script.bpmn", "sandbox_script", script, data, **kwargs)


def _gateway_workflow(condition: str, data: dict | None = None) -> BpmnWorkflow:
    return _workflow("sandbox_gateway.bpmn", "sandbox_gateway", condition, data)


def _service_workflow(patient_expression: str, data: dict, caller=None) -> BpmnWorkflow:
    engine = SandboxScriptEngine(time_limit_ms=TIME_LIMIT_MS, service_caller=caller)
    return _workflow("sandbox_service.bpmn", "sandbox_service", patient_expression, data, engine=engine)


def _sandbox_cause(error: BaseException | None) -> SandboxError | None:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, SandboxError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            yield from _strings(item)


def _all_data(workflow: BpmnWorkflow) -> list[Any]:
    return [workflow.data] + [task.data for task in workflow.get_tasks()]


def _task_data(workflow: BpmnWorkflow, spec_name: str) -> dict:
    return workflow.get_tasks(spec_name=spec_name)[0].data


def _run_refused(workflow: BpmnWorkflow, marker: Path) -> SandboxError:
    """Run the workflow, expect a sandbox refusal, and check that nothing escaped."""
    with pytest.raises((SandboxError, WorkflowTaskException)) as caught:
        workflow.do_engine_steps()
    cause = _sandbox_cause(caught.value)
    assert cause is not None, f"not refused by the sandbox: {caught.value!r}"
    assert str(cause) and str(cause) in str(caught.value)
    assert not marker.exists(), "the payload created a file"
    if len(HOSTNAME) >= 3:
        leaked = [text for data in _all_data(workflow) for text in _strings(data) if HOSTNAME in text]
        assert not leaked, "the payload read /etc/hostname into task data"
    assert not workflow.is_completed()
    assert workflow.get_tasks(state=TaskState.ERROR)
    return cause


# --------------------------------------------------------------------------- escape payloads

@dataclass(frozen=True)
class Payload:
    name: str
    script: str
    condition: str | None = None  # defaults to `script`; given when the script is not an expression

    def as_script(self, marker: Path) -> str:
        return self.script.replace("MARKER", str(marker))

    def as_condition(self, marker: Path) -> str:
        return (self.condition or self.script).replace("MARKER", str(marker))


GENERATOR_FINALISER = """\
def numbers():
    try:
        yield 1
    except BaseException:
        pass
for attempt in range(100000):
    for number in numbers():
        break
while True:
    pass
"""

EXPONENTIAL_LAMBDA = "(lambda f: f(f, 60))(lambda f, n: 0 if n == 0 else f(f, n - 1) + f(f, n - 1)) > 0"

PAYLOADS = [
    Payload("import_os", "import os\nos.system('touch MARKER')", "import os"),
    Payload("dunder_import", "__import__('os').system('touch MARKER')"),
    Payload("open_read", "leak = open('/etc/hostname').read()", "open('/etc/hostname').read() != ''"),
    Payload("open_write", "open('MARKER', 'w').write('escaped')"),
    Payload("eval", "eval(\"__import__('os').system('touch MARKER')\")"),
    Payload("exec", "exec(\"import os; os.system('touch MARKER')\")"),
    Payload("compile", "compile(\"open('MARKER', 'w')\", 'payload', 'exec')"),
    Payload("subclasses", "().__class__.__base__.__subclasses__()"),
    Payload("getattr_dunder", "getattr((), '__class__')"),
    Payload("vars", "vars()"),
    Payload("globals", "globals()['__builtins__']"),
    Payload("locals", "locals()"),
    Payload("datetime_class", "datetime.__class__"),
    Payload("timedelta_init_globals", "timedelta.__init__.__globals__"),
    Payload("math_dict", "math.__dict__"),
    Payload("type_call", "type(1)"),
    Payload("list_mro", "[].__class__.__mro__"),
    Payload("lambda_code", "(lambda: 0).__code__"),
    Payload("breakpoint", "breakpoint()"),
    Payload("help", "help()"),
    Payload("generator_frame", "(x for x in [1]).gi_frame.f_globals"),
    Payload("str_format_attribute", "'{0.__class__}'.format(1)"),
    Payload("str_format_map", "'{x.__class__}'.format_map({'x': 1})"),
    Payload("setattr", "setattr(timedelta, 'max', 0)"),
    Payload("delattr", "delattr(timedelta, 'max')"),
    Payload("infinite_loop", "while True:\n    pass", "sum(i for i in range(10**12)) > 0"),
    Payload("pow_operator_bomb", "10**10**10 > 0"),
    Payload("pow_builtin_bomb", "pow(10, 10**10) > 0"),
    Payload("repeat_bomb", "len('a' * 10**10) > 0"),
    Payload("shift_bomb", "(1 << 10**10) > 0"),
    Payload("fstring_width_bomb", "f'{1:>{10**10}}' != ''"),
    Payload("percent_width_bomb", "'%10000000000d' % 1 != ''"),
    Payload("ljust_bomb", "'a'.ljust(10**10) != ''"),
    Payload("bytes_bomb", "bytes(10**10)"),
    Payload("doubling_bomb", "x = [0]\nwhile True:\n    x = x + x",
            "[*range(10**6), *range(10**6)] != []"),
    Payload("catch_timeout",
            "try:\n    while True:\n        pass\nexcept Exception:\n    pass\nwhile True:\n    pass",
            "[0 for i in range(10**6) for j in range(10**6)] != []"),
    Payload("catch_refusal",
            "try:\n    open('MARKER', 'w')\nexcept Exception:\n    pass\nsurvived = True",
            "[open('MARKER', 'w') for attempt in [1]] != []"),
    Payload("generator_finaliser", GENERATOR_FINALISER, EXPONENTIAL_LAMBDA),
    Payload("exponential_recursion",
            "def f(n):\n    if n == 0:\n        return 0\n    return f(n - 1) + f(n - 1)\n"
            "result = f(60)",
            "sorted(range(10**6), key=lambda i: sum(range(10**6))) != []"),
    Payload("class_definition", "class Escape:\n    pass", "type('Escape', (), {})"),
    Payload("helper_attribute_write", "math.floor = None", "now_utc.x"),
    Payload("system_exit", "raise SystemExit(0)", "SystemExit(0)"),
    Payload("str_mro", "str.mro()"),
    Payload("traceback_frame",
            "try:\n    1 / 0\nexcept Exception as err:\n    frame = err.__traceback__.tb_frame",
            "[err.__traceback__ for err in [ValueError()]]"),
]


def test_there_are_enough_payloads():
    assert len(PAYLOADS) >= 22
    assert len({payload.name for payload in PAYLOADS}) == len(PAYLOADS)


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda payload: payload.name)
def test_payload_is_refused_in_a_script_task(payload: Payload, tmp_path: Path):
    marker = tmp_path / "escaped"
    workflow = _script_workflow(payload.as_script(marker), {"score": 1})
    _run_refused(workflow, marker)
    assert "survived" not in _task_data(workflow, "payload_script")


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda payload: payload.name)
def test_payload_is_refused_in_a_gateway_condition(payload: Payload, tmp_path: Path):
    marker = tmp_path / "escaped"
    workflow = _gateway_workflow(payload.as_condition(marker), {"score": 1})
    _run_refused(workflow, marker)
    assert not workflow.get_tasks(spec_name="end_yes", state=TaskState.COMPLETED)
    assert not workflow.get_tasks(spec_name="end_no", state=TaskState.COMPLETED)


def test_refusal_reaches_the_task_error_with_line_and_message():
    workflow = _script_workflow("x = 1\ny = x + 1\nz = open('/etc/hostname')")
    with pytest.raises(WorkflowTaskException) as caught:
        workflow.do_engine_steps()
    error = caught.value
    assert isinstance(error.__cause__, ScriptSecurityError)
    assert error.line_number == 3
    assert error.error_line == "z = open('/etc/hostname')"
    assert "line 3: 'open' is not allowed" in str(error)
    assert [t.task_spec.name for t in workflow.get_tasks(state=TaskState.ERROR)] == ["payload_script"]


def test_compile_refusal_names_the_line():
    workflow = _script_workflow("x = 1\nimport os")
    with pytest.raises(WorkflowTaskException) as caught:
        workflow.do_engine_steps()
    assert isinstance(caught.value.__cause__, ScriptCompileError)
    assert "line 2: Import statements are not allowed" in str(caught.value)
    assert caught.value.line_number == 2


# --------------------------------------------------------------------------- everyday scripts

def test_script_updates_dicts_and_lists_in_task_data():
    workflow = _script_workflow(
        "patient['age'] = patient['age'] + 1\n"
        "patient['flags'].append('reviewed')\n"
        "items[0] = 'first'\n"
        "del patient['temporary']\n"
        "items.extend(['x', 'y'])",
        {"patient": {"age": 40, "flags": [], "temporary": 1}, "items": ["a"]})
    workflow.do_engine_steps()
    assert workflow.is_completed()
    assert workflow.data["patient"] == {"age": 41, "flags": ["reviewed"]}
    assert workflow.data["items"] == ["first", "x", "y"]


def test_loops_comprehensions_and_fstrings():
    workflow = _script_workflow(
        "total = 0\n"
        "for value in values:\n"
        "    total += value\n"
        "count = 0\n"
        "while count < 3:\n"
        "    count += 1\n"
        "squares = [v * v for v in values if v > 1]\n"
        "by_name = {name: score for name, score in pairs}\n"
        "unique = sorted({v % 2 for v in values})\n"
        "label = f\"{name!r} scored {total:>5} ({total / len(values):.1f} avg)\"\n"
        "def double(x):\n"
        "    return x * 2\n"
        "doubled = list(map(double, values))\n"
        "ranked = sorted(pairs, key=lambda pair: -pair[1])\n"
        "first, *rest = values",
        {"values": [1, 2, 3], "pairs": [["a", 5], ["b", 7]], "name": "Asha"})
    workflow.do_engine_steps()
    data = workflow.data
    assert data["total"] == 6 and data["count"] == 3
    assert data["squares"] == [4, 9]
    assert data["by_name"] == {"a": 5, "b": 7}
    assert data["unique"] == [0, 1]
    assert data["label"] == "'Asha' scored     6 (2.0 avg)"
    assert data["doubled"] == [2, 4, 6]
    assert data["ranked"] == [["b", 7], ["a", 5]]
    assert data["first"] == 1 and data["rest"] == [2, 3]
    assert "double" not in data


def test_datetime_and_timedelta_arithmetic():
    workflow = _script_workflow(
        "admitted = datetime(2024, 1, 1, 8, 0)\n"
        "due = admitted + timedelta(hours=4) + parse_duration('PT30M')\n"
        "hours = (due - admitted).total_seconds() / 3600\n"
        "due_text = due.isoformat()\n"
        "weekday = date(2024, 1, 1).weekday()\n"
        "stamped = now_utc()\n"
        "is_aware = stamped.tzinfo is not None")
    workflow.do_engine_steps()
    data = workflow.data
    assert data["due"] == datetime(2024, 1, 1, 12, 30)
    assert data["hours"] == 4.5
    assert data["due_text"] == "2024-01-01T12:30:00"
    assert data["weekday"] == 0
    assert data["is_aware"] is True
    assert abs(data["stamped"] - datetime.now(timezone.utc)) < timedelta(minutes=1)


def test_datetime_methods_that_import_inside_c_work():
    # strftime/timetuple/today import "time" and strptime imports "_strptime" through the
    # calling frame's __import__; the sandbox allows exactly those.
    data = execute(
        "parsed = datetime.strptime('02 Jan 2024 14:30', '%d %b %Y %H:%M')\n"
        "label = parsed.strftime('%A %d %B, %H:%M')\n"
        "year = date.today().year\n"
        "month = parsed.timetuple().tm_mon", {})
    assert data["parsed"] == datetime(2024, 1, 2, 14, 30)
    assert data["label"] == "Tuesday 02 January, 14:30"
    assert data["year"] >= 2024 and data["month"] == 1


@pytest.mark.parametrize("module", ["os", "sys", "builtins", "importlib", "time.os"])
def test_the_import_hook_for_helpers_refuses_every_other_module(module: str):
    with pytest.raises(ScriptSecurityError, match="Importing modules is not allowed"):
        sandbox._helper_import(module)
    with pytest.raises(ScriptSecurityError):
        sandbox._helper_import("time", None, None, (), 1)


def test_new_variables_land_in_task_data_but_helpers_and_tools_do_not():
    workflow = _script_workflow(
        "result = score * 2\n"
        "helper = lambda x: x\n"
        "def tool():\n"
        "    return 1\n"
        "seen = {1, 2}\n"
        "today = date(2024, 1, 1)\n"
        "print('printing is harmless')",
        {"score": 3})
    workflow.do_engine_steps()
    data = _task_data(workflow, "payload_script")
    assert data["result"] == 6
    for name in ("helper", "tool", "seen", "today", "datetime", "timedelta", "date", "math",
                 "now_utc", "parse_duration", "round_half_up", "__builtins__", "_print"):
        assert name not in data
    assert set(data) == {"score", "result"}


def test_gateway_condition_reads_task_data_helpers_and_data_shadows_helpers():
    workflow = _gateway_workflow("date == 'today' and math.floor(score) > 5 and parse_duration('PT1H')",
                                 {"score": 7.5, "date": "today"})
    workflow.do_engine_steps()
    assert workflow.get_tasks(spec_name="end_yes", state=TaskState.COMPLETED)


@pytest.mark.parametrize("score, branch", [(7, "end_yes"), (3, "end_no")])
def test_gateway_chooses_the_branch_from_task_data(score: int, branch: str):
    workflow = _gateway_workflow("score > 5", {"score": score})
    workflow.do_engine_steps()
    assert workflow.is_completed()
    assert workflow.get_tasks(spec_name=branch, state=TaskState.COMPLETED)
    other = {"end_yes", "end_no"} - {branch}
    assert not workflow.get_tasks(spec_name=other.pop(), state=TaskState.COMPLETED)


def test_failed_script_leaves_task_data_untouched():
    workflow = _script_workflow("patient['age'] = 99\nnew_value = 1\n1 / 0",
                                {"patient": {"age": 40}})
    with pytest.raises(WorkflowTaskException) as caught:
        workflow.do_engine_steps()
    assert "ZeroDivisionError" in str(caught.value)
    data = _task_data(workflow, "payload_script")
    assert data == {"patient": {"age": 40}}


def test_deleted_variables_leave_task_data_and_underscore_keys_are_kept():
    result = execute("del old\nkept = 1", {"old": 1, "_hidden": 2, "other": 3})
    assert result == {"_hidden": 2, "other": 3, "kept": 1}


def test_execute_returns_new_data_and_leaves_its_argument_alone():
    data = {"items": [1]}
    result = execute("items.append(2)\nflag = True", data)
    assert result == {"items": [1, 2], "flag": True}
    assert data == {"items": [1]}


def test_existing_variable_set_to_an_unstorable_value_is_an_error():
    with pytest.raises(ScriptDataError, match="'tags' now holds a set"):
        execute("tags = set(tags)", {"tags": ["a", "b"]})


def test_an_existing_variable_replaced_by_a_function_is_removed():
    assert execute("score = lambda: 1", {"score": 1, "other": 2}) == {"other": 2}


def test_expressions_cannot_change_task_data():
    data = {"items": [1], "patient": {"age": 40}}
    assert evaluate("items.append(2) or patient.update({'age': 1}) or True", data) is True
    assert data == {"items": [1], "patient": {"age": 40}}


def test_expressions_must_produce_values_not_functions():
    with pytest.raises(ScriptDataError, match="not a value"):
        evaluate("lambda: 1", {})
    with pytest.raises(ScriptDataError):
        evaluate("[map(str, [1])]", {})
    assert evaluate("[1, 'a', {'b': (2, 3)}]", {}) == [1, "a", {"b": (2, 3)}]


def test_indented_script_text_from_an_editor_runs():
    assert execute("\n    x = 1\n    if x:\n        y = 2\n", {}) == {"x": 1, "y": 2}


def test_external_context_is_visible_but_not_written_back():
    environment = SandboxScriptEngine().environment
    context = {"score": 1}
    assert environment.evaluate("score + bonus", context, {"bonus": 2}) == 3
    environment.execute("total = score + bonus", context, {"bonus": 2})
    assert context == {"score": 1, "total": 3}


# --------------------------------------------------------------------------- helpers

@pytest.mark.parametrize("text, expected", [
    ("PT4H", timedelta(hours=4)),
    ("P2DT3H30M", timedelta(days=2, hours=3, minutes=30)),
    ("P1W", timedelta(weeks=1)),
    ("PT1M30S", timedelta(minutes=1, seconds=30)),
    ("PT0.5S", timedelta(seconds=0.5)),
    ("P3D", timedelta(days=3)),
    (" pt15m ", timedelta(minutes=15)),
])
def test_parse_duration(text: str, expected: timedelta):
    assert parse_duration(text) == expected
    assert evaluate(f"parse_duration({text!r})", {}) == expected


@pytest.mark.parametrize("text", ["", "P", "PT", "4H", "PT4X", "P1DT", "P1W2D", "hello"])
def test_parse_duration_refuses_what_is_not_a_duration(text: str):
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_duration(text)


def test_parse_duration_explains_years_and_months():
    with pytest.raises(ValueError, match="years or months"):
        parse_duration("P1M")
    with pytest.raises(ValueError, match="years or months"):
        parse_duration("P1Y2M")


@pytest.mark.parametrize("value, digits, expected", [
    (2.5, 0, 3), (3.5, 0, 4), (-2.5, 0, -3), (2.675, 2, 2.68), (1.005, 2, 1.01), (1234, -2, 1200),
    (7, 0, 7),
])
def test_round_half_up(value, digits, expected):
    result = round_half_up(value, digits)
    assert result == expected and type(result) is type(expected)


def test_math_is_a_read_only_namespace_not_the_module():
    assert evaluate("math.floor(2.7) + math.ceil(0.2) + math.sqrt(16)", {}) == 7.0
    assert evaluate("round(math.pi, 2)", {}) == 3.14
    with pytest.raises(ScriptSecurityError):
        execute("math.floor = None", {})
    with pytest.raises(AttributeError):
        evaluate("math.factorial(5)", {})
    assert not isinstance(sandbox.MATH, type(sys))


# --------------------------------------------------------------------------- limits

def test_time_limit_is_configurable_and_enforced():
    started = time.perf_counter()
    with pytest.raises(ScriptTimeout, match="time limit of 50 ms"):
        evaluate("sorted(range(1000), key=lambda i: sum(range(10**5)))", {}, time_limit_ms=50)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("limit", [0, -5, None, "500", True])
def test_time_limit_must_be_a_positive_number(limit):
    with pytest.raises(ValueError, match="positive number of milliseconds"):
        SandboxScriptEngine(time_limit_ms=limit)
    with pytest.raises(ValueError):
        evaluate("1", {}, time_limit_ms=limit)


def test_time_limit_leaves_no_tracer_installed():
    before = sys.gettrace()
    with pytest.raises(ScriptTimeout):
        execute("while True:\n    x = sum(range(1000))", {}, time_limit_ms=50)
    assert sys.gettrace() is before
    execute("x = 1", {})
    assert sys.gettrace() is before


def test_a_timeout_cannot_be_caught():
    script = ("try:\n    while True:\n        x = sum(range(1000))\n"
              "except Exception:\n    pass\nescaped = True")
    with pytest.raises(ScriptTimeout):
        execute(script, {}, time_limit_ms=50)


def test_a_refusal_cannot_be_caught():
    with pytest.raises(ScriptSecurityError):
        execute("try:\n    vars()\nexcept:\n    pass\nescaped = True", {})


def test_ordinary_exceptions_can_still_be_caught():
    assert execute("try:\n    n = int(text)\nexcept ValueError:\n    n = 0", {"text": "x"})["n"] == 0


def test_loop_iterations_are_capped(monkeypatch):
    monkeypatch.setattr(sandbox, "MAX_ITEMS", 10_000)
    with pytest.raises(ScriptLimitError, match="more than 10,000 times"):
        execute("n = 0\nwhile True:\n    n += 1", {}, time_limit_ms=10_000)
    with pytest.raises(ScriptLimitError, match="more than 10,000 times"):
        evaluate("[i for i in range(5000) for j in range(5000)]", {}, time_limit_ms=10_000)


def test_range_is_capped():
    assert evaluate("len(range(1000000))", {}) == 1_000_000
    with pytest.raises(ScriptLimitError, match="range"):
        evaluate("range(1000001)", {})


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="memory is sampled from /proc")
def test_memory_growth_is_capped(monkeypatch):
    monkeypatch.setattr(sandbox, "MEMORY_GROWTH_LIMIT_MB", 32)
    with pytest.raises(ScriptLimitError, match="more than 32 MB"):
        execute("chunks = []\nwhile True:\n    chunks.append([0] * 100000)", {}, time_limit_ms=10_000)


@pytest.mark.parametrize("expression", [
    "'x'.replace('x', 'y' * 10**6).replace('y', 'z' * 10**6)",
    "','.join(['a' * 10**6] * 10**6)",
    "sum([[0] * 10**6] * 10**6, [])",
    "'ab'.center(10**7)",
    "'a\\tb'.expandtabs(10**7)",
    "'%*d' % (10**9, 1)",
    "(1 << 5000) * (1 << 6000)",
])
def test_operations_that_would_build_huge_values_are_refused(expression: str):
    with pytest.raises(ScriptLimitError):
        evaluate(expression, {})


def test_ordinary_sized_operations_are_allowed():
    assert evaluate("len('-' * 80 + ', '.join(['a'] * 100)) + sum([[1], [2]], [])[1]", {}) == 380
    assert evaluate("2 ** 100 > 10 ** 30 and 'ab'.center(6, '*') == '**ab**'", {}) is True
    assert evaluate("'%05.1f|%-4s|' % (3.14159, 'x')", {}) == "003.1|x   |"


# --------------------------------------------------------------------------- compiling

def test_compile_errors_name_the_line_and_the_problem():
    with pytest.raises(ScriptCompileError) as caught:
        compile_script("x = 1\nimport os")
    assert str(caught.value) == "line 2: Import statements are not allowed."
    assert caught.value.line_number == 2
    with pytest.raises(ScriptCompileError, match="line 1"):
        compile_expression("score >")
    with pytest.raises(ScriptCompileError, match="empty"):
        compile_expression("   ")
    with pytest.raises(ScriptCompileError, match="finally"):
        compile_script("try:\n    x = 1\nfinally:\n    x = 2")
    with pytest.raises(ScriptCompileError, match="with"):
        compile_script("with x:\n    pass")


def test_compiled_code_is_cached_by_source():
    assert compile_expression("score > 5") is compile_expression("score > 5")
    assert compile_script("x = 1") is compile_script("x = 1")


# --------------------------------------------------------------------------- service tasks

def test_service_task_calls_the_connector_with_sandbox_evaluated_params():
    calls = []

    def caller(operation_name, params, task_data):
        calls.append((operation_name, params, dict(task_data)))
        return {"order_id": 42}

    workflow = _service_workflow("patient_name.upper()", {"patient_name": "Asha", "score": 7}, caller)
    workflow.do_engine_steps()
    assert workflow.is_completed()
    assert calls == [("lab/send_order", {"patient": "ASHA", "urgent": True},
                      {"patient_name": "Asha", "score": 7})]
    assert workflow.data["order"] == {"order_id": 42}


def test_service_connector_errors_keep_their_message():
    def caller(operation_name, params, task_data):
        raise RuntimeError("The lab system is offline.")

    workflow = _service_workflow("patient_name", {"patient_name": "Asha", "score": 1}, caller)
    with pytest.raises(WorkflowTaskException) as caught:
        workflow.do_engine_steps()
    message = str(caught.value)
    assert "Service task operation 'lab/send_order' failed: The lab system is offline" in message
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert [t.task_spec.name for t in workflow.get_tasks(state=TaskState.ERROR)] == ["send_order"]


def test_service_task_without_a_connector_is_a_sandbox_error():
    workflow = _service_workflow("patient_name", {"patient_name": "Asha", "score": 1})
    with pytest.raises(WorkflowTaskException) as caught:
        workflow.do_engine_steps()
    assert isinstance(caught.value.__cause__, SandboxError)
    assert "No service connector is configured" in str(caught.value)


def test_service_parameters_are_evaluated_in_the_sandbox(tmp_path: Path):
    calls = []
    workflow = _service_workflow("open('/etc/hostname').read()", {"score": 1},
                                 lambda *args: calls.append(args))
    _run_refused(workflow, tmp_path / "escaped")
    assert calls == []
