"""The package boundaries of the house style, enforced on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    # pipelines return plain findings: no DICOM writers, no networking, no SQL, no other package
    "pipelines": {
        "highdicom",
        "pynetdicom",
        "sqlalchemy",
        "fastapi",
        "node",
        "dicom_sr",
        "alembic",
    },
    # writers never need torch or a network
    "dicom_sr": {
        "torch",
        "monai",
        "pynetdicom",
        "sqlalchemy",
        "fastapi",
        "node",
        "alembic",
        "httpx",
    },
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_boundaries(package: str) -> None:
    offenders = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imports(path) & FORBIDDEN[package]
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_only_the_cli_prints() -> None:
    offenders = []
    for package in ("node", "pipelines", "dicom_sr"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "cli.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_no_assert_used_for_validation() -> None:
    offenders = []
    for package in ("node", "pipelines", "dicom_sr"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Assert):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


# -- import graph: no cycles, and node/ imports only go down the flow ----------------------

PACKAGES = ("node", "pipelines", "dicom_sr")
#: node/'s stages in the order data flows; a module imports its own stage or those before it.
NODE_LAYERS = (
    (
        "node.errors",
        "node.config",
        "node.logs",
        "node.dimse",
        "node.part10",
        "node.spool",
        "node.multipart",
    ),
    ("node.db",),
    ("node.ingress", "node.metrics"),
    ("node.study",),
    ("node.jobs",),
    ("node.egress",),
    ("node.retrieve",),
    ("node.http",),
    ("node.app", "node.demo", "node.cli"),
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _import_graph() -> dict[str, set[str]]:
    """Every module of the three packages -> the modules of them it imports (anywhere in it)."""
    modules = {
        _module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            found: list[str] = []
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                if node.level:
                    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{node.module}"
                found = [base] + [f"{base}.{alias.name}" for alias in node.names]
            # a package's own modules import their parents anyway: not an edge back to it
            targets.update(
                f for f in found if f in modules and f != name and not name.startswith(f + ".")
            )
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    """Not even through an import inside a function (a cycle dodged is still a cycle)."""
    assert _cycles(_import_graph()) == []


def _layer(module: str) -> int:
    for number, prefixes in enumerate(NODE_LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return number
    raise AssertionError(f"{module} belongs to no stage of NODE_LAYERS: add it there")


def test_node_imports_go_down_the_flow() -> None:
    upward = []
    for module, targets in _import_graph().items():
        if not module.startswith("node.") or module == "node":
            continue
        for target in targets:
            if target.startswith("node.") and _layer(target) > _layer(module):
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_modules_stay_small() -> None:
    """The house style aims for modules under ~500 lines."""
    long = {
        str(p.relative_to(ROOT)): n
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert long == {}
