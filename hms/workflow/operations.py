"""Registry of service-task operations: `<package>.<verb>` -> function.

Domain packages declare operations in their own `operations.py`:

    @operation("wards.reserve_bed", params=ReserveBedParams)
    def reserve_bed(ctx, params): ...

and the app factory imports those modules (`register_domain_operations`); the engine never
imports a domain package itself. An operation receives an OperationContext (database
session, acting user, instance and patient ids) and the parameters validated by its
marshmallow schema, and returns JSON-serialisable data for the task's result variable.
Business outcomes (no bed free, stock short) are data; exceptions are faults.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import Any, Callable

from marshmallow import Schema, ValidationError
from sqlalchemy.orm import Session

from hms.audit import Actor


class OperationError(Exception):
    """An operation could not run (unknown name, bad parameters, non-JSON result)."""


@dataclass(frozen=True)
class OperationContext:
    session: Session
    actor: Actor
    instance_id: int | None
    patient_id: int | None
    pathway_key: str | None


@dataclass(frozen=True)
class Operation:
    name: str
    fn: Callable[[OperationContext, dict], Any]
    params: type[Schema] | None
    description: str

    def param_names(self) -> dict[str, bool]:
        """Parameter name -> required, for the lint and the editor's side panel."""
        if self.params is None:
            return {}
        return {name: field.required for name, field in self.params().fields.items()}


_REGISTRY: dict[str, Operation] = {}

# Modules that define operations; the app factory imports them (never the engine).
DOMAIN_OPERATION_MODULES: list[str] = []


def operation(name: str, params: type[Schema] | None = None) -> Callable:
    """Register the decorated function as service-task operation `name`."""
    if "." not in name:
        raise ValueError(f"operation names are <package>.<verb>, got {name!r}")

    def decorator(fn):
        existing = _REGISTRY.get(name)
        if existing is not None and existing.fn is not fn:
            if existing.fn.__qualname__ != fn.__qualname__ or existing.fn.__module__ != fn.__module__:
                raise ValueError(f"operation {name} registered twice")
        _REGISTRY[name] = Operation(name, fn, params, (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return decorator


def get(name: str) -> Operation:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise OperationError(f"Unknown operation '{name}'.") from None


def names() -> list[str]:
    return sorted(_REGISTRY)


def catalogue() -> list[dict]:
    return [{"name": op.name, "description": op.description, "params": op.param_names()}
            for op in sorted(_REGISTRY.values(), key=lambda o: o.name)]


def register_domain_operations(modules: list[str] | tuple[str, ...] = ()) -> None:
    for module in list(modules) + DOMAIN_OPERATION_MODULES:
        importlib.import_module(module)


def call(name: str, ctx: OperationContext, raw_params: dict[str, Any]) -> Any:
    """Validate parameters, run the operation, check its result is JSON."""
    op = get(name)
    if op.params is not None:
        try:
            params = op.params().load(raw_params)
        except ValidationError as err:
            raise OperationError(f"Operation '{name}': invalid parameters {err.messages}") from None
    else:
        params = dict(raw_params)
    result = op.fn(ctx, params)
    try:
        json.dumps(result)
    except (TypeError, ValueError):
        raise OperationError(f"Operation '{name}' returned data that is not JSON") from None
    return result
