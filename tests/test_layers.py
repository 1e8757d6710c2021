"""The architecture's one rule: imports point one way, benchmarks -> training -> gpicl_sklearn."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Each layer and the project layers it must not import (those above it).
ABOVE = {"gpicl_sklearn": ("training", "benchmarks"), "training": ("benchmarks",), "benchmarks": ()}


def project_imports(path: Path) -> dict[str, set[str]]:
    """The project modules ``path`` imports, at module level and inside functions alike."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name.split(".")[0] in ABOVE}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


@pytest.mark.parametrize("layer", sorted(ABOVE))
def test_no_layer_imports_a_layer_above_it(layer):
    wrong = {
        f"{module_name(path)} -> {name}"
        for path in (REPO / layer).rglob("*.py")
        for name in project_imports(path)
        if name.split(".")[0] in ABOVE[layer]
    }
    assert not wrong


def test_no_import_cycles():
    graph = {module_name(p): project_imports(p) for layer in ABOVE for p in (REPO / layer).rglob("*.py")}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import cycle: " + " -> ".join(path[path.index(module) :] + (module,))
        if module in done:
            return
        for name in graph.get(module, ()):
            visit(name, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())
