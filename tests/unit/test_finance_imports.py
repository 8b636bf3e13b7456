"""finance keeps the package rules of DESIGN.md: models, services and operations never
import the web stack or RQ; nothing imports the workflow engine (operations.py only its
registry) or another domain package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FINANCE = Path(__file__).resolve().parents[2] / "finance"
WEB_STACK = ("flask", "flask_login", "flask_principal", "flask_wtf", "rq", "werkzeug")
OTHER_DOMAINS = ("departments", "wards", "inventory")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _under(module: str, roots) -> bool:
    return any(module == root or module.startswith(root + ".") for root in roots)


@pytest.mark.parametrize("name", ["models.py", "services.py", "operations.py", "schemas.py", "pdf.py", "demo.py"])
def test_no_web_stack_outside_routes(name):
    assert not [m for m in imported_modules(FINANCE / name) if _under(m, WEB_STACK)]


@pytest.mark.parametrize("path", sorted(FINANCE.glob("*.py")), ids=lambda p: p.name)
def test_no_engine_and_no_other_domain_package(path):
    modules = imported_modules(path)
    assert not [m for m in modules if _under(m, ("SpiffWorkflow",) + OTHER_DOMAINS)]
    allowed_workflow = {"hms.workflow.operations"} if path.name == "operations.py" else set()
    assert not [m for m in modules if _under(m, ("hms.workflow",)) and m not in allowed_workflow]
