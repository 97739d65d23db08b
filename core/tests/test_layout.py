"""The code's shape, checked: no import cycle between the project's modules, modules and
functions a reader can hold in mind, and sub-packages that each open with their map."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ("core", "usuarios", "bitacora", "clinica", "backups", "backup_restore", "alertas")
MODULE_MAX_LINES = 400
FUNCTION_MAX_LINES = 60

pytestmark = pytest.mark.no_test_db


def _product_modules() -> dict[str, Path]:
    modules = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "tests" in parts or "migrations" in parts:
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules a module imports, at its top or inside a function alike."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in modules}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return components


def test_no_module_imports_one_that_imports_it_back():
    modules = _product_modules()
    # A package's __init__ is imported with each of its modules; only its own imports count.
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert _cycles(graph) == []


def test_modules_and_functions_stay_readable():
    too_long = []
    for name, path in _product_modules().items():
        text = path.read_text()
        if text.count("\n") > MODULE_MAX_LINES:
            too_long.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_MAX_LINES:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert too_long == []


def test_every_sub_package_of_an_app_opens_with_a_map_of_its_modules():
    for app in ("backups", "backup_restore"):
        for init in (ROOT / app).glob("*/__init__.py"):
            if init.parent.name in ("tests", "migrations", "management"):
                continue
            docstring = ast.get_docstring(ast.parse(init.read_text())) or ""
            siblings = sorted(path.name for path in init.parent.glob("*.py") if path.name != "__init__.py")
            assert all(sibling in docstring for sibling in siblings), (init, siblings)
