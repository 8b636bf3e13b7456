"""The restricted engine that runs pathway scripts and expressions.

A BPMN file is code: script tasks, gateway conditions, timer expressions and service-task
parameters are Python, written by department heads.  This module runs that code so that it can
compute with task data and reach nothing else.

What is blocked
---------------
* Compilation goes through RestrictedPython with an HMS policy (`_Policy`) on top.  Refused at
  compile time: `import`, names and attributes starting with "_" (so `__class__`, `__globals__`,
  `__import__`, ...), the frame/code/generator attributes listed by RestrictedPython
  (`gi_frame`, `f_globals`, `tb_frame`, ...), `eval(...)`/`exec(...)`, class definitions, `with`,
  `try/finally`, `async` and `nonlocal`.
* Only our builtins exist.  `open`, `compile`, `getattr`, `setattr`, `delattr`, `type`, `vars`,
  `globals`, `locals`, `dir`, `help`, `breakpoint`, `input`, `bytes`, `format`, ... are stubs that
  raise `ScriptSecurityError` with a message that names them.  Exceptions that stop a process
  (`SystemExit`, `KeyboardInterrupt`, `BaseException`, `GeneratorExit`) are not available.
  `__import__`, which only C code inside the datetime helpers can reach, returns `time` and
  `_strptime` and refuses everything else.
* Guards: attribute reads refuse names starting with "_", `str.format`/`format_map`, `mro`, and
  any attribute of a module, function, method, frame, code object or generator.  Attribute and
  item writes are allowed on lists and dicts only.  An `except` clause cannot catch a sandbox
  refusal or a timeout: the policy makes every handler re-raise them.
* Helpers available by name: `datetime`, `date`, `timedelta`, `timezone` (the classes), `math`
  (a read-only namespace of float functions, not the module), `now_utc()`,
  `parse_duration("PT4H")`, `round_half_up(x, ndigits)`.  Task data shadows them.

Resource limits
---------------
* Time: each evaluation has a wall-clock budget (default 500 ms).  The policy inserts a check at
  the top of every `while` body, every function body and every lambda; every guard (attribute,
  item, iteration, arithmetic) checks too.  Once the budget is spent every later check fails, so
  code that catches the timeout cannot carry on.  We do not use `sys.settrace`: CPython drops a
  trace function that raises, so code that swallowed the first timeout (an `except`, or a
  generator being finalised) would continue unsupervised; inline checks have no such gap and leave
  debuggers and coverage alone.
* Iterations: at most `MAX_ITEMS` (1,000,000) loop iterations and iterated items per evaluation;
  `range()` refuses more than `MAX_ITEMS` items.
* Size of one operation: `**`, `pow()`, `*`, `<<` on integers stop at `MAX_INT_BITS` bits;
  `*` and `+` on text, lists and tuples stop at `MAX_ITEMS` items; `%` formatting and f-string
  format specs refuse widths over `MAX_FORMAT_WIDTH`; `str.ljust/rjust/center/zfill/expandtabs/
  replace/join/translate` check the size of their result before building it.
* Memory: resident memory is sampled at most once per millisecond (Linux `/proc/self/statm`);
  growth over `MEMORY_GROWTH_LIMIT_MB` stops the code with `ScriptLimitError`.
* Data: only the task-data variables the code names are deep-copied in, so the code works on
  a private copy and a failed script changes nothing.  A script keeps only values that can be
  stored (JSON types plus datetime and timedelta; at most `MAX_ITEMS` values and
  `MAX_STORED_CHARS` characters); an expression must produce a value, not a function or iterator.

Known limits (not closed here)
------------------------------
* A single C-level operation cannot be interrupted.  The per-operation caps bound the obvious
  cases (and `sum()` of lists is checked), but code can cheaply build a structure that shares
  references, such as a million references to one million-item list, and then a single `str()`,
  `repr()`, `sorted()` or `hash()` over it walks every shared element inside C: minutes of CPU
  and, for `str()`, gigabytes.  The time and memory checks see it only when it returns (storing
  such a value is refused).
* The memory check is process-wide and sampled: other threads' allocations count, a single
  operation can overshoot the limit about twofold before the next sample, and on systems without
  `/proc` memory is not checked at all.
* The hard fence therefore belongs one level up: engine steps should run in a worker process with
  its own timeout and address-space limit (RLIMIT_AS).
"""

from __future__ import annotations

import ast
import builtins
import copy
import functools
import json
import math as _math
import operator
import os
import re
import sys
import textwrap
import time
import traceback
import types
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from RestrictedPython import PrintCollector, compile_restricted_eval, compile_restricted_exec
from RestrictedPython import safe_builtins, utility_builtins
from RestrictedPython.Guards import guarded_unpack_sequence
from RestrictedPython.transformer import INSPECT_ATTRIBUTES, RestrictingNodeTransformer, copy_locations
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.script_engine.python_environment import BasePythonScriptEngineEnvironment
from SpiffWorkflow.exceptions import SpiffWorkflowException

__all__ = [
    "DEFAULT_TIME_LIMIT_MS",
    "RestrictedEnvironment",
    "SandboxError",
    "SandboxScriptEngine",
    "ScriptCompileError",
    "ScriptDataError",
    "ScriptLimitError",
    "ScriptSecurityError",
    "ScriptTimeout",
    "compile_expression",
    "compile_script",
    "evaluate",
    "execute",
    "now_utc",
    "parse_duration",
    "round_half_up",
]

DEFAULT_TIME_LIMIT_MS = 500
MAX_ITEMS = 1_000_000            # loop iterations, range() size, items/characters per operation
MAX_INT_BITS = 10_000            # about 3,000 decimal digits
MAX_FORMAT_WIDTH = 10_000        # widths and precisions in % and f-string formatting
MAX_STORED_CHARS = 10_000_000    # characters a script may leave in task data
MAX_DEPTH = 100                  # nesting of stored values
MEMORY_GROWTH_LIMIT_MB = 256
MEMORY_CHECK_INTERVAL_S = 0.001

SCRIPT_FILENAME = "<script>"
EXPRESSION_FILENAME = "<expression>"

ServiceCaller = Callable[[str, dict[str, Any], dict[str, Any]], Any]


# --------------------------------------------------------------------------- errors

class SandboxError(Exception):
    """A pathway script or expression was refused or stopped; the message is for its author."""


class ScriptCompileError(SandboxError):
    """The source does not compile: a syntax error, or a construct the sandbox refuses."""

    def __init__(self, message: str, line_number: int | None = None):
        super().__init__(message)
        self.line_number = line_number


class ScriptSecurityError(SandboxError):
    """While running, the code reached for something outside the sandbox."""


class ScriptLimitError(SandboxError):
    """The code went over a resource limit (size of a value, iterations, memory)."""


class ScriptTimeout(ScriptLimitError):
    """The code ran longer than its time limit."""


class ScriptDataError(SandboxError):
    """The code produced a value that cannot be kept in task data or used as a result."""


# --------------------------------------------------------------------------- compiling

# Names of the guards the policy inserts; user code cannot name them (leading "_").
_TICK = "_tick_"          # time check: function and lambda entry
_LOOP = "_loop_"          # time and iteration check: top of every while body
_CAUGHT = "_caught_"      # first statement of every except handler
_FORMAT = "_format_"      # f-string field that has a format spec
_BINOP_GUARDS = {ast.Pow: "_pow_", ast.Mult: "_mul_", ast.Add: "_add_", ast.Mod: "_mod_",
                 ast.LShift: "_lshift_"}
_OPERATOR_SYMBOLS = {ast.Pow: "**", ast.Mult: "*", ast.Add: "+", ast.Mod: "%", ast.LShift: "<<"}


def _guard_call(name: str, args: list[ast.expr], like: ast.AST) -> ast.Call:
    call = ast.Call(func=ast.Name(name, ast.Load()), args=args, keywords=[])
    copy_locations(call, like)
    return call


def _guard_statement(name: str, like: ast.AST) -> ast.Expr:
    statement = ast.Expr(_guard_call(name, [], like))
    copy_locations(statement, like)
    return statement


class _Policy(RestrictingNodeTransformer):
    """RestrictedPython's policy, tightened for pathway code and instrumented with limit checks."""

    def visit_Import(self, node):
        self.error(node, "Import statements are not allowed.")
        return node

    visit_ImportFrom = visit_Import

    def visit_ClassDef(self, node):
        self.error(node, "Defining classes is not allowed.")
        return node

    def visit_With(self, node):
        # No object a script can reach is a context manager; refusing `with` also removes
        # __exit__ as a way to swallow a timeout.
        self.error(node, "'with' statements are not allowed.")
        return node

    def visit_Try(self, node):
        # A finally block runs while a timeout propagates and could loop there; except
        # handlers are safe because each one starts with _caught_().
        if node.finalbody:
            self.error(node, "'finally' blocks are not allowed.")
        return super().visit_Try(node)

    def visit_ExceptHandler(self, node):
        node = super().visit_ExceptHandler(node)
        node.body.insert(0, _guard_statement(_CAUGHT, node))
        return node

    def visit_While(self, node):
        node = super().visit_While(node)
        node.body.insert(0, _guard_statement(_LOOP, node))
        return node

    def visit_FunctionDef(self, node):
        node = super().visit_FunctionDef(node)
        node.body.insert(0, _guard_statement(_TICK, node))
        return node

    def visit_Lambda(self, node):
        node = super().visit_Lambda(node)
        # `_tick_() or body`: _tick_ returns None, so the lambda still returns its body.
        node.body = ast.BoolOp(op=ast.Or(), values=[_guard_call(_TICK, [], node.body), node.body])
        copy_locations(node.body, node.body.values[1])
        return node

    def visit_BinOp(self, node):
        node = super().visit_BinOp(node)
        guard = _BINOP_GUARDS.get(type(node.op))
        if guard is None:
            return node
        return _guard_call(guard, [node.left, node.right], node)

    def visit_FormattedValue(self, node):
        node = super().visit_FormattedValue(node)
        if node.format_spec is None:
            return node
        # The spec (itself an f-string) is evaluated first and checked before format() runs.
        node.value = _guard_call(_FORMAT, [node.value, ast.Constant(node.conversion), node.format_spec],
                                 node)
        node.conversion = -1
        node.format_spec = None
        return node

    def visit_Starred(self, node):
        node = super().visit_Starred(node)
        if isinstance(node.ctx, ast.Load):
            # [*x, *x] builds lists in C; routing it through _getiter_ counts the items.
            node.value = _guard_call("_getiter_", [node.value], node)
        return node


_LINE_PREFIX = re.compile(r"^Line (\d+|None): ")


def _describe_compile_errors(errors: tuple[str, ...]) -> tuple[str, int | None]:
    messages, first_line = [], None
    for error in errors:
        match = _LINE_PREFIX.match(error)
        if match and match.group(1) != "None":
            first_line = first_line or int(match.group(1))
            error = f"line {match.group(1)}: {error[match.end():]}"
        messages.append(error)
    return " ".join(messages), first_line


@functools.lru_cache(maxsize=2048)
def _compile(source: str, filename: str, mode: str) -> tuple[types.CodeType | None, str, int | None]:
    """Compile once per distinct source; returns (code, error message, error line)."""
    compiler = compile_restricted_exec if mode == "exec" else compile_restricted_eval
    try:
        result = compiler(source, filename=filename, policy=_Policy)
    except SyntaxError as err:  # raised by compile() after the policy, e.g. 'return' outside a function
        return None, f"line {err.lineno}: {err.msg}", err.lineno
    except (ValueError, RecursionError, MemoryError) as err:
        return None, f"The code cannot be compiled: {type(err).__name__}: {err}", None
    if result.errors:
        message, line = _describe_compile_errors(result.errors)
        return None, message, line
    return result.code, "", None


def _compiled(source: str, filename: str, mode: str) -> types.CodeType:
    code, message, line = _compile(source, filename, mode)
    if code is None:
        raise ScriptCompileError(message, line)
    return code


def compile_script(source: str | None, filename: str = SCRIPT_FILENAME) -> types.CodeType:
    """Compile a script task's code in the sandbox; raise ScriptCompileError if it is refused."""
    if source is None:  # an empty <bpmn:script/> element
        source = ""
    if not isinstance(source, str):
        raise ScriptCompileError("A script must be text.")
    # BPMN editors indent script text inside the XML element.
    return _compiled(textwrap.dedent(source), filename, "exec")


def compile_expression(source: str, filename: str = EXPRESSION_FILENAME) -> types.CodeType:
    """Compile a condition or other expression in the sandbox; raise ScriptCompileError if refused."""
    if not isinstance(source, str):
        raise ScriptCompileError("An expression must be text.")
    source = source.strip()
    if not source:
        raise ScriptCompileError("The expression is empty.")
    return _compiled(source, filename, "eval")


# --------------------------------------------------------------------------- size checks

def _refuse(message: str) -> None:
    raise ScriptLimitError(message)


def _check_sequence_size(size: int) -> None:
    if size > MAX_ITEMS:
        _refuse(f"The result would hold {size:,} items or characters; the limit is {MAX_ITEMS:,}.")


def _check_int_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        _refuse(f"The number would be too large (about {bits:,} bits; the limit is {MAX_INT_BITS:,}).")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_SEQUENCE_TYPES = (str, bytes, list, tuple)

# A %-format directive: optional (key), flags, width, .precision, length modifier, conversion.
_PERCENT_DIRECTIVE = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?.")


def _check_width(text: str) -> None:
    if text == "*":
        _refuse("A '*' width or precision in % formatting is not allowed.")
    if text and int(text) > MAX_FORMAT_WIDTH:
        _refuse(f"A formatting width or precision of {text} is too large; "
                f"the limit is {MAX_FORMAT_WIDTH:,}.")


# Size checks run before an operator that can build a value far larger than its operands.
def _check_pow(base: Any, exponent: Any) -> None:
    if _is_int(base) and _is_int(exponent) and exponent > 0 and abs(base) > 1:
        _check_int_bits(exponent * abs(base).bit_length())


def _check_mul(left: Any, right: Any) -> None:
    if _is_int(left) and _is_int(right):
        _check_int_bits(left.bit_length() + right.bit_length())
    elif isinstance(left, _SEQUENCE_TYPES) and _is_int(right):
        _check_sequence_size(len(left) * right)
    elif isinstance(right, _SEQUENCE_TYPES) and _is_int(left):
        _check_sequence_size(len(right) * left)


def _check_add(left: Any, right: Any) -> None:
    if isinstance(left, _SEQUENCE_TYPES) and isinstance(right, _SEQUENCE_TYPES):
        _check_sequence_size(len(left) + len(right))


def _check_lshift(left: Any, right: Any) -> None:
    if _is_int(left) and _is_int(right) and left != 0 and right > 0:
        _check_int_bits(left.bit_length() + right)


def _check_mod(left: Any, right: Any) -> None:
    if isinstance(left, (str, bytes)):
        pattern = left if isinstance(left, str) else left.decode("latin-1")
        for match in _PERCENT_DIRECTIVE.finditer(pattern):
            _check_width(match.group(1) or "")
            _check_width(match.group(2) or "")


_SIZE_CHECKS: dict[str, Callable[[Any, Any], None]] = {
    "**": _check_pow, "*": _check_mul, "+": _check_add, "<<": _check_lshift, "%": _check_mod,
}
_OPERATIONS: dict[str, Callable[[Any, Any], Any]] = {
    "**": operator.pow, "*": operator.mul, "+": operator.add, "<<": operator.lshift, "%": operator.mod,
}


def _checked_pow(base: Any, exponent: Any, modulus: Any = None) -> Any:
    """The pow() builtin; with a modulus the result stays below it, so no size check."""
    if modulus is None:
        _check_pow(base, exponent)
        return base ** exponent
    return pow(base, exponent, modulus)


_CONVERSIONS = {-1: None, ord("s"): str, ord("r"): repr, ord("a"): ascii}


def _checked_format(value: Any, conversion: int, spec: str) -> str:
    convert = _CONVERSIONS[conversion]
    if convert is not None:
        value = convert(value)
    for number in re.findall(r"\d+", spec):
        _check_width(number)
    return format(value, spec)


def _checked_sum(iterable: Any, start: Any = 0) -> Any:
    """sum(); adding up lists or tuples concatenates them in C, so the total size is checked first."""
    if not isinstance(start, (list, tuple)):
        return sum(iterable, start)
    items = list(iterable)
    sizes = (len(item) for item in items if isinstance(item, _SEQUENCE_TYPES))
    _check_sequence_size(len(start) + sum(sizes))
    return sum(items, start)


def _checked_range(*args: int) -> range:
    numbers = range(*args)
    try:
        size = len(numbers)
    except OverflowError:
        size = MAX_ITEMS + 1
    if size > MAX_ITEMS:
        _refuse(f"range() may produce at most {MAX_ITEMS:,} numbers.")
    return numbers


# Text methods whose result can be far larger than their inputs; each is checked before running.
def _padded(method: str) -> Callable[..., Any]:
    def run(text, width, *args):
        if _is_int(width):
            _check_sequence_size(width)
        return getattr(text, method)(width, *args)
    return run


def _expandtabs(text, tabsize=8):
    if _is_int(tabsize) and tabsize > 0:
        tabs = text.count("\t" if isinstance(text, str) else b"\t")
        _check_sequence_size(len(text) + tabs * tabsize)
    return text.expandtabs(tabsize)


def _replace(text, old, new, count=-1):
    if isinstance(old, type(text)) and isinstance(new, type(text)):
        found = len(text) + 1 if not old else text.count(old)
        if _is_int(count) and count >= 0:
            found = min(found, count)
        _check_sequence_size(len(text) + found * max(len(new) - len(old), 0))
    return text.replace(old, new, count)


def _join(separator, iterable):
    parts = list(iterable)
    sizes = (len(part) for part in parts if isinstance(part, _SEQUENCE_TYPES))
    _check_sequence_size(sum(sizes) + len(separator) * max(len(parts) - 1, 0))
    return separator.join(parts)


def _translate(text, table, *args):
    # A dict (str.maketrans) or a bytes table (bytes.translate) can be sized; other mappings
    # and sequences could map one character to megabytes unseen, so they are refused.
    if table is not None and not isinstance(table, (dict, bytes)):
        raise ScriptSecurityError("translate() needs a table made with str.maketrans().")
    if isinstance(table, dict):
        longest = max((len(v) for v in table.values() if isinstance(v, str)), default=1)
        _check_sequence_size(len(text) * max(longest, 1))
    return text.translate(table, *args)


_SIZE_CHECKED_TEXT_METHODS: dict[str, Callable[..., Any]] = {
    "ljust": _padded("ljust"),
    "rjust": _padded("rjust"),
    "center": _padded("center"),
    "zfill": _padded("zfill"),
    "expandtabs": _expandtabs,
    "replace": _replace,
    "join": _join,
    "translate": _translate,
}


# --------------------------------------------------------------------------- attribute rules

# Objects whose attributes lead to code, frames or globals; nothing on them is useful to a script.
_OPAQUE_TYPES = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                 types.BuiltinMethodType, types.MethodWrapperType, types.WrapperDescriptorType,
                 types.MethodDescriptorType, types.ClassMethodDescriptorType, types.FrameType,
                 types.CodeType, types.TracebackType, types.GeneratorType, types.CoroutineType,
                 types.AsyncGeneratorType, functools.partial)

_REFUSED_ATTRIBUTES = frozenset({"mro"}) | INSPECT_ATTRIBUTES

_MISSING = object()


def _attribute_refusal(obj: Any, name: Any) -> str | None:
    """Why reading `obj.name` is refused, or None if it is allowed."""
    if type(name) is not str:
        return "Attribute names must be text."
    if name.startswith("_"):
        return f"Access to '{name}' is not allowed: names starting with '_' are internal."
    if isinstance(obj, _OPAQUE_TYPES):
        return f"Reading '{name}' of a {type(obj).__name__} is not allowed."
    if name in ("format", "format_map"):
        if isinstance(obj, str) or (isinstance(obj, type) and issubclass(obj, str)):
            return "str.format() is not allowed in pathway scripts; use an f-string instead."
        return None
    if name in _REFUSED_ATTRIBUTES:
        return f"Access to '{name}' is not allowed."
    return None


def _read_attribute(obj: Any, name: str, default: Any) -> Any:
    reason = _attribute_refusal(obj, name)
    if reason:
        raise ScriptSecurityError(reason)
    if name in _SIZE_CHECKED_TEXT_METHODS:
        checked = _SIZE_CHECKED_TEXT_METHODS[name]
        if isinstance(obj, (str, bytes)):
            return lambda *args, **kwargs: checked(obj, *args, **kwargs)
        if obj is str or obj is bytes:
            return checked
    if default is _MISSING:
        return getattr(obj, name)
    return getattr(obj, name, default)


# --------------------------------------------------------------------------- builtins and helpers

def now_utc() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(timezone.utc)


_NUMBER = r"(\d+(?:[.,]\d+)?)"
_DURATION = re.compile(
    rf"P(?:{_NUMBER}W|(?:{_NUMBER}D)?(?:T(?=\d)(?:{_NUMBER}H)?(?:{_NUMBER}M)?(?:{_NUMBER}S)?)?)",
    re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """An ISO-8601 duration such as "PT4H", "P2DT30M", "PT0.5S" or "P1W" as a timedelta.

    Years and months are refused because they have no fixed length.
    """
    if not isinstance(text, str):
        raise TypeError("parse_duration() needs text such as 'PT4H'.")
    cleaned = text.strip()
    match = _DURATION.fullmatch(cleaned)
    if not match or not any(match.groups()):
        if re.match(r"P[^T]*[YM]", cleaned, re.IGNORECASE):  # a Y or M before any T
            raise ValueError(f"'{text}' uses years or months, which have no fixed length; "
                             "write the duration in weeks, days, hours, minutes or seconds.")
        raise ValueError(f"'{text}' is not an ISO-8601 duration such as 'PT4H', 'P2D' or 'P1W'.")
    weeks, days, hours, minutes, seconds = (
        float(value.replace(",", ".")) if value else 0.0 for value in match.groups())
    try:
        return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
    except OverflowError:
        raise ValueError(f"The duration '{text}' is too long.") from None


def round_half_up(x: int | float, ndigits: int = 0) -> int | float:
    """Round halves away from zero as people do on paper: 2.5 -> 3, 2.675 to 2 places -> 2.68.

    Python's round() rounds halves to even and works on the binary value; this rounds the
    decimal value that is printed.  The result is an int when x is an int or ndigits <= 0.
    """
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        raise TypeError("round_half_up() needs a number.")
    if not _is_int(ndigits) or abs(ndigits) > 15:
        raise ValueError("round_half_up() needs a whole number of digits between -15 and 15.")
    if isinstance(x, float) and not _math.isfinite(x):
        return x
    try:
        rounded = Decimal(str(x)).quantize(Decimal(1).scaleb(-ndigits), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        raise ValueError("The number is too large to round.") from None
    return int(rounded) if ndigits <= 0 or isinstance(x, int) else float(rounded)


class _ReadOnlyNamespace:
    """Attribute access to a fixed set of values; no module or writable dict behind it."""

    __slots__ = ("_name", "_members")

    def __init__(self, name: str, members: Mapping[str, Any]):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_members", types.MappingProxyType(dict(members)))

    def __getattr__(self, attribute: str) -> Any:
        try:
            return self._members[attribute]
        except KeyError:
            raise AttributeError(f"{self._name} has no '{attribute}'") from None

    def __setattr__(self, attribute: str, value: Any) -> None:
        raise AttributeError(f"{self._name} is read-only")

    def __repr__(self) -> str:
        return f"<{self._name}: {', '.join(sorted(self._members))}>"


# Float functions only: factorial, comb, perm, prod and lcm can run for minutes inside C.
_MATH_MEMBERS = ("floor", "ceil", "trunc", "sqrt", "exp", "log", "log10", "log2", "pow", "fabs",
                 "fsum", "fmod", "copysign", "hypot", "isclose", "isfinite", "isinf", "isnan",
                 "sin", "cos", "tan", "radians", "degrees", "pi", "e", "inf", "nan")
MATH = _ReadOnlyNamespace("math", {name: getattr(_math, name) for name in _MATH_MEMBERS})

HELPERS: Mapping[str, Any] = types.MappingProxyType({
    "datetime": datetime,
    "date": date,
    "timedelta": timedelta,
    "timezone": timezone,
    "math": MATH,
    "now_utc": now_utc,
    "parse_duration": parse_duration,
    "round_half_up": round_half_up,
})

_FORBIDDEN_BUILTINS = {
    "__import__": "Importing modules is not allowed in pathway scripts.",
    "open": "'open' is not allowed: pathway scripts cannot read or write files.",
    "input": "'input' is not allowed: pathway scripts cannot ask for input.",
    "eval": "'eval' is not allowed in pathway scripts.",
    "exec": "'exec' is not allowed in pathway scripts.",
    "compile": "'compile' is not allowed in pathway scripts.",
    "breakpoint": "'breakpoint' is not allowed in pathway scripts.",
}
_UNAVAILABLE_BUILTINS = (
    "getattr", "setattr", "delattr", "hasattr", "globals", "locals", "vars", "dir", "type",
    "object", "super", "help", "exit", "quit", "copyright", "credits", "license", "memoryview",
    "bytearray", "bytes", "classmethod", "staticmethod", "property", "iter", "next", "aiter",
    "anext", "format", "id", "BaseException", "SystemExit", "KeyboardInterrupt", "GeneratorExit",
    "__build_class__",
)


# C code behind the helpers imports modules through the __import__ of the calling frame's
# builtins: datetime's strftime(), timetuple() and date.today() import "time", strptime()
# imports "_strptime".  Scripts themselves cannot reach __import__ (import statements and names
# starting with "_" are refused at compile time), so only what those helpers need is allowed.
_HELPER_IMPORTS = frozenset({"time", "_strptime"})


def _helper_import(name, globals=None, locals=None, fromlist=(), level=0):
    if name in _HELPER_IMPORTS and level == 0:
        return builtins.__import__(name, globals, locals, fromlist, level)
    raise ScriptSecurityError(_FORBIDDEN_BUILTINS["__import__"])


def _refusing_stub(name: str, message: str) -> Callable[..., Any]:
    def refused(*args, **kwargs):
        raise ScriptSecurityError(message)
    refused.__name__ = refused.__qualname__ = name
    return refused


def _base_builtins() -> dict[str, Any]:
    # RestrictedPython's safe_builtins, minus what can stop the process or reach objects
    # (BaseException & co, setattr/delattr, __build_class__) and with our own range/pow.
    dropped = set(_UNAVAILABLE_BUILTINS) | {"_getattr_", "pow", "range"}
    names = {name: value for name, value in safe_builtins.items() if name not in dropped}
    # From utility_builtins only the plain functions and set types: its string, math and
    # random entries are modules (or module proxies).
    names.update({name: utility_builtins[name]
                  for name in ("set", "frozenset", "same_type", "test", "reorder")})
    # limited_builtins' range/list/tuple are replaced: its range stops at 1,000 and its
    # list()/tuple() refuse text.
    names.update({
        "len": len, "min": min, "max": max, "sum": _checked_sum, "sorted": sorted, "any": any,
        "all": all, "abs": abs, "round": round, "enumerate": enumerate, "zip": zip,
        "range": _checked_range, "dict": dict, "list": list, "set": set, "tuple": tuple,
        "str": str, "int": int, "float": float, "bool": bool, "isinstance": isinstance,
        "map": map, "filter": filter, "reversed": reversed, "pow": _checked_pow,
        "_print_": PrintCollector,
        # Unpacking `a, b = pair` needs no item count: the values already exist.
        "_unpack_sequence_": lambda it, spec, _getiter_: guarded_unpack_sequence(it, spec, iter),
    })
    for name in _UNAVAILABLE_BUILTINS:
        names[name] = _refusing_stub(name, f"'{name}' is not available in pathway scripts.")
    for name, message in _FORBIDDEN_BUILTINS.items():
        names[name] = _refusing_stub(name, message)
    names["__import__"] = _helper_import
    names.update(HELPERS)
    return names


_BASE_BUILTINS: Mapping[str, Any] = types.MappingProxyType(_base_builtins())


# --------------------------------------------------------------------------- one evaluation

_STATM = "/proc/self/statm"
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _resident_bytes() -> int | None:
    try:
        with open(_STATM, "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


_INPLACE = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow, "<<=": operator.ilshift,
    ">>=": operator.irshift, "&=": operator.iand, "|=": operator.ior, "^=": operator.ixor,
    "@=": operator.imatmul,
}


def _checked_time_limit(time_limit_ms: Any) -> int | float:
    is_number = isinstance(time_limit_ms, (int, float)) and not isinstance(time_limit_ms, bool)
    if not is_number or time_limit_ms <= 0:
        raise ValueError(f"The script time limit must be a positive number of milliseconds, "
                         f"not {time_limit_ms!r}.")
    return time_limit_ms


class _Run:
    """The budget of one evaluation (deadline, iterations, memory); its methods are the guards."""

    def __init__(self, time_limit_ms: int | float):
        self.time_limit_ms = _checked_time_limit(time_limit_ms)
        now = time.perf_counter()
        self.deadline = now + time_limit_ms / 1000
        self.next_memory_check = now + MEMORY_CHECK_INTERVAL_S
        self.memory_baseline: int | None = None
        self.iterations = 0
        # Sticky: once a limit is hit every later check fails the same way.
        self.stopped: SandboxError | None = None

    def guards(self) -> dict[str, Any]:
        guards = {
            _TICK: self.check, _LOOP: self.step, _CAUGHT: self.caught, _FORMAT: self.format,
            "_getattr_": self.getattr, "_getitem_": self.getitem, "_getiter_": self.getiter,
            "_write_": self.write, "_inplacevar_": self.inplacevar, "_apply_": self.apply,
            "_iter_unpack_sequence_": self.iter_unpack_sequence,
        }
        for node_type, name in _BINOP_GUARDS.items():
            guards[name] = self._operator_guard(_OPERATOR_SYMBOLS[node_type])
        return guards

    def finish(self) -> None:
        # Functions the code defined may still be referenced somewhere; they must not run again.
        if self.stopped is None:
            self.stopped = ScriptSecurityError("This code belongs to a script that has finished.")

    # -- limits

    def _stop(self, error: SandboxError) -> None:
        self.stopped = error
        raise error

    def check(self) -> None:
        if self.stopped is not None:
            raise type(self.stopped)(str(self.stopped))
        now = time.perf_counter()
        if now > self.deadline:
            self._stop(ScriptTimeout(
                f"The code ran longer than its time limit of {self.time_limit_ms} ms and was stopped."))
        if now >= self.next_memory_check:
            self._check_memory(now)

    def _check_memory(self, now: float) -> None:
        self.next_memory_check = now + MEMORY_CHECK_INTERVAL_S
        resident = _resident_bytes()
        if resident is None:
            return
        if self.memory_baseline is None:
            self.memory_baseline = resident
        elif resident - self.memory_baseline > MEMORY_GROWTH_LIMIT_MB * 1024 * 1024:
            self._stop(ScriptLimitError(
                f"The code used more than {MEMORY_GROWTH_LIMIT_MB} MB of memory and was stopped."))

    def step(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_ITEMS:
            self._stop(ScriptLimitError(
                f"The code repeated a loop more than {MAX_ITEMS:,} times and was stopped."))
        self.check()

    def caught(self) -> None:
        # First statement of every except handler: refusals, limits and process-level
        # exceptions (GeneratorExit, SystemExit, ...) are never swallowed by user code.
        caught = sys.exc_info()[1]
        if isinstance(caught, SandboxError) or not isinstance(caught, Exception):
            raise caught
        self.check()

    # -- guards called by restricted code

    def getiter(self, iterable: Any) -> Iterator[Any]:
        self.check()
        return self._counted(iter(iterable))

    def _counted(self, iterator: Iterator[Any]) -> Iterator[Any]:
        for item in iterator:
            self.step()
            yield item

    def getattr(self, obj: Any, name: str, default: Any = _MISSING) -> Any:
        self.check()
        return _read_attribute(obj, name, default)

    def getitem(self, obj: Any, key: Any) -> Any:
        self.check()
        return obj[key]

    def write(self, obj: Any) -> Any:
        self.check()
        if type(obj) in (dict, list):
            return obj
        kind = obj._name if isinstance(obj, _ReadOnlyNamespace) else f"a {type(obj).__name__}"
        raise ScriptSecurityError(f"Only lists and dictionaries can be changed in place, not {kind}.")

    def apply(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.check()
        return function(*args, **kwargs)

    def inplacevar(self, op: str, target: Any, value: Any) -> Any:
        self.check()
        if op not in _INPLACE:
            raise ScriptSecurityError(f"The operator '{op}' is not supported.")
        size_check = _SIZE_CHECKS.get(op[:-1])
        if size_check is not None:
            size_check(target, value)
        return _INPLACE[op](target, value)

    def _operator_guard(self, symbol: str) -> Callable[[Any, Any], Any]:
        size_check, operation = _SIZE_CHECKS[symbol], _OPERATIONS[symbol]

        def guard(left: Any, right: Any) -> Any:
            self.check()
            size_check(left, right)
            return operation(left, right)
        return guard

    def format(self, value: Any, conversion: int, spec: str) -> str:
        self.check()
        return _checked_format(value, conversion, spec)

    def iter_unpack_sequence(self, iterable: Any, spec: dict, _getiter_: Any) -> Iterator[Any]:
        # `for a, b in pairs`: count the pairs, not the two values unpacked from each.
        for item in self.getiter(iterable):
            yield guarded_unpack_sequence(item, spec, iter)


@functools.lru_cache(maxsize=2048)
def _global_names(code: types.CodeType) -> frozenset[str]:
    """Every name the code, and the functions and comprehensions inside it, can look up.

    Restricted code has no globals() or vars(), so a variable it does not name can be neither
    read nor changed: only these are copied in.  co_names also lists attribute names, which
    merely makes the set larger than needed.
    """
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _global_names(constant)
    return frozenset(names)


def _namespace(run: _Run, code: types.CodeType, data: Mapping[str, Any],
               external: Mapping[str, Any] | None) -> dict[str, Any]:
    """Globals for one evaluation: our builtins plus a private deep copy of the data it names."""
    visible: dict[str, Any] = {}
    for name in _global_names(code):
        if name.startswith("_"):
            continue
        if name in data:  # task data wins over data objects, as in SpiffWorkflow
            visible[name] = data[name]
        elif external and name in external:
            visible[name] = external[name]
    try:
        namespace = copy.deepcopy(visible)
    except Exception as err:  # deepcopy raises whatever the odd object raises
        raise ScriptDataError(f"The task data holds a value that cannot be copied: {err}") from err
    script_builtins = dict(_BASE_BUILTINS)
    script_builtins.update(run.guards())
    namespace["__builtins__"] = script_builtins
    return namespace


def _run(code: types.CodeType, namespace: dict[str, Any], run: _Run) -> Any:
    try:
        # eval() also runs an exec-mode code object (returning None); the code was compiled by
        # RestrictedPython and sees only our builtins and guards.
        return eval(code, namespace)
    finally:
        run.finish()


# --------------------------------------------------------------------------- results

class _Budget:
    """Counts values and characters while a result is inspected, so huge results stop early."""

    def __init__(self) -> None:
        self.values = 0
        self.chars = 0

    def spend(self, value: Any, label: str) -> None:
        self.values += 1
        if isinstance(value, str):
            self.chars += len(value)
        if self.values > MAX_ITEMS or self.chars > MAX_STORED_CHARS:
            raise ScriptDataError(f"{label} is too large to keep in the task data.")


def _is_storable(value: Any, budget: _Budget, label: str, depth: int = 0) -> bool:
    """Whether the value survives the workflow serializer: JSON types plus datetime/timedelta."""
    budget.spend(value, label)
    kind = type(value)
    if value is None or kind in (bool, int, float, str, datetime, timedelta):
        return True
    if depth >= MAX_DEPTH:
        return False
    if kind in (list, tuple):
        return all(_is_storable(item, budget, label, depth + 1) for item in value)
    if kind is dict:
        return all(type(key) is str and _is_storable(item, budget, label, depth + 1)
                   for key, item in value.items())
    return False


def _is_tool(value: Any) -> bool:
    """Functions, classes, modules and iterators: means of computing, never task data."""
    return callable(value) or isinstance(value, (types.ModuleType, Iterator))


def _find_tool(value: Any, budget: _Budget, depth: int = 0) -> Any:
    budget.spend(value, "The expression's result")
    if _is_tool(value):
        return value
    if depth < MAX_DEPTH and type(value) in (list, tuple, set, frozenset, dict):
        items = value.values() if type(value) is dict else value
        for item in items:
            found = _find_tool(item, budget, depth + 1)
            if found is not None:
                return found
    return None


def _checked_result(value: Any) -> Any:
    if value is None or type(value) in (bool, int, float, str):
        return value
    tool = _find_tool(value, _Budget())
    if tool is not None:
        raise ScriptDataError(f"The expression produced a {type(tool).__name__}, not a value.")
    return value


def _changes(code: types.CodeType, namespace: dict[str, Any], data: Mapping[str, Any],
             external: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """What a script changed: (values to set, names to delete).

    New values that cannot be stored are dropped, as SpiffWorkflow drops functions; an existing
    variable that now holds a function is removed; an existing variable that now holds any other
    unstorable value is an error, because silently keeping its old value would be wrong.
    """
    budget = _Budget()
    updates: dict[str, Any] = {}
    deletions: list[str] = []
    for name, value in namespace.items():
        if name == "__builtins__" or name.startswith("_"):
            continue
        if external and name in external and name not in data:
            continue
        if _is_storable(value, budget, f"'{name}'"):
            updates[name] = value
        elif name not in data:
            continue
        elif _is_tool(value):
            deletions.append(name)
        else:
            raise ScriptDataError(
                f"'{name}' now holds a {type(value).__name__}, which cannot be kept in the task data; "
                "use text, numbers, true/false, lists, dictionaries, datetimes or timedeltas.")
    deletions.extend(name for name in _global_names(code)
                     if name in data and not name.startswith("_") and name not in namespace)
    return updates, deletions


# --------------------------------------------------------------------------- public functions

def _evaluate(expression: str, data: Mapping[str, Any], time_limit_ms: int,
              external: Mapping[str, Any] | None = None) -> Any:
    code = compile_expression(expression, EXPRESSION_FILENAME)
    run = _Run(time_limit_ms)
    return _checked_result(_run(code, _namespace(run, code, data, external), run))


def _execute(script: str, data: Mapping[str, Any], time_limit_ms: int,
             external: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    code = compile_script(script, SCRIPT_FILENAME)
    run = _Run(time_limit_ms)
    namespace = _namespace(run, code, data, external)
    _run(code, namespace, run)
    return _changes(code, namespace, data, external)


def evaluate(expression: str, data: dict, time_limit_ms: int = DEFAULT_TIME_LIMIT_MS) -> Any:
    """Evaluate an expression against a copy of `data`; raise a SandboxError if refused."""
    return _evaluate(expression, data, time_limit_ms)


def execute(script: str, data: dict, time_limit_ms: int = DEFAULT_TIME_LIMIT_MS) -> dict:
    """Run a script against a copy of `data` and return the updated data; `data` is untouched."""
    updates, deletions = _execute(script, data, time_limit_ms)
    result = {name: value for name, value in data.items() if name not in deletions}
    result.update(updates)
    return result


# --------------------------------------------------------------------------- SpiffWorkflow

class RestrictedEnvironment(BasePythonScriptEngineEnvironment):
    """SpiffWorkflow script environment that runs everything in the sandbox."""

    def __init__(self, time_limit_ms: int = DEFAULT_TIME_LIMIT_MS,
                 service_caller: ServiceCaller | None = None):
        super().__init__(environment_globals={})
        self.time_limit_ms = _checked_time_limit(time_limit_ms)
        self.service_caller = service_caller

    def evaluate(self, expression, context, external_context=None):
        return _evaluate(expression, context, self.time_limit_ms, external_context)

    def execute(self, script, context, external_context=None):
        updates, deletions = _execute(script, context, self.time_limit_ms, external_context)
        for name in deletions:
            context.pop(name, None)
        context.update(updates)
        return True

    def call_service(self, context, operation_name=None, operation_params=None, **kwargs):
        """Call the injected service_caller and return its result as a JSON string.

        SpiffWorkflow's ServiceTask has already evaluated every parameter expression through
        the engine (so in the sandbox) and passes {name: {"value": value, "type": ...}}.
        """
        if self.service_caller is None:
            raise SandboxError("No service connector is configured, so service tasks cannot run.")
        params = {name: spec.get("value") if isinstance(spec, dict) else spec
                  for name, spec in (operation_params or {}).items()}
        result = self.service_caller(operation_name, params, context)
        try:
            return json.dumps(result)
        except (TypeError, ValueError) as err:
            raise ScriptDataError(f"Its result cannot be stored as JSON: {err}") from err


def _error_line(source: str, filename: str, err: BaseException) -> tuple[int | None, str | None]:
    line_number = getattr(err, "line_number", None) if isinstance(err, ScriptCompileError) else None
    if line_number is None:
        for frame in traceback.extract_tb(err.__traceback__):
            if frame.filename == filename:
                line_number = frame.lineno
    if not isinstance(source, str):
        return line_number, None
    # The same normalisation as compile_expression/compile_script, so line numbers agree.
    text = source.strip() if filename == EXPRESSION_FILENAME else textwrap.dedent(source)
    lines = text.splitlines()
    if line_number and 0 < line_number <= len(lines):
        return line_number, lines[line_number - 1].strip()
    return line_number, None


def _describe(err: BaseException, line_number: int | None) -> str:
    detail = str(err) if isinstance(err, SandboxError) else f"{type(err).__name__}: {err}"
    if line_number and not isinstance(err, ScriptCompileError):
        detail = f"line {line_number}: {detail}"
    return detail


def _task_error(task, prefix: str, source: str, filename: str, err: Exception) -> WorkflowTaskException:
    line_number, error_line = _error_line(source, filename, err)
    # SpiffWorkflow appends ". " to the message, so ours must not end with a full stop.
    message = f"{prefix}: {_describe(err, line_number)}".rstrip(".")
    return WorkflowTaskException(message, task=task, exception=err, line_number=line_number,
                                 error_line=error_line)


class SandboxScriptEngine(PythonScriptEngine):
    """The script engine for every HMS workflow: all code runs in the sandbox.

    Cheap to build (one small object); build one per step with that step's service_caller.
    Errors reach SpiffWorkflow as WorkflowTaskException whose message carries ours and whose
    __cause__ is the original exception, so the task goes to ERROR with a readable reason.
    """

    def __init__(self, time_limit_ms: int = DEFAULT_TIME_LIMIT_MS,
                 service_caller: ServiceCaller | None = None):
        super().__init__(environment=RestrictedEnvironment(time_limit_ms, service_caller))

    def evaluate(self, task, expression, external_context=None):
        try:
            return self.environment.evaluate(expression, task.data, external_context)
        except SpiffWorkflowException as err:
            err.add_note(f"Error evaluating expression '{expression}'")
            raise
        except Exception as err:
            raise _task_error(task, f"Error evaluating expression '{expression}'", expression,
                              EXPRESSION_FILENAME, err) from err

    def execute(self, task, script, external_context=None):
        try:
            return self.environment.execute(script, task.data, external_context or {})
        except SpiffWorkflowException:
            raise
        except Exception as err:
            raise _task_error(task, "Error in script", script, SCRIPT_FILENAME, err) from err

    def call_service(self, task, **kwargs):
        # PythonScriptEngine.call_service in 3.2.0 references an undefined name in its except
        # branch, turning every connector error into NameError; this keeps the real message.
        try:
            return self.environment.call_service(task.data, **kwargs)
        except SpiffWorkflowException:
            raise
        except Exception as err:
            detail = (str(err) or type(err).__name__).rstrip(".")
            raise WorkflowTaskException(
                f"Service task operation '{kwargs.get('operation_name')}' failed: {detail}",
                task=task, exception=err) from err
