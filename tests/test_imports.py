"""The package's shape (issue 19): every ``mobilenet_lab`` import, at module level or inside a
function, read from the source, makes a graph with no cycle, and no part (a module of a
subpackage: ``training/``, ``deploy/``, ...) imports a flow (a module at the top: ``train``,
``export``, ...)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mobilenet_lab"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, modules: set[str]) -> set[str]:
    """The package's modules ``path`` imports (``from a.b import c`` counts ``a.b.c`` when that
    is a module, else ``a.b``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = {f"{node.module}.{alias.name}" for alias in node.names}
            found |= {name if name in modules else node.module for name in names}
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    graph = {module_name(path): imported(path, modules) for path in paths}
    # A package's __init__ importing its own modules is how packages re-export: not a circle.
    return {name: {m for m in deps if not name.startswith(m + ".")} for name, deps in graph.items()}


def test_the_graph_sees_the_imports_it_should() -> None:
    graph = import_graph()
    assert "mobilenet_lab.analysis.tables" in graph["mobilenet_lab.profile"]
    assert "mobilenet_lab.models.ported_tensors" in graph["mobilenet_lab.models.keras_port"]


def test_no_import_circle() -> None:
    try:
        TopologicalSorter(import_graph()).prepare()
    except CycleError as error:
        raise AssertionError(f"import circle: {' -> '.join(error.args[1])}") from None


def test_no_part_imports_a_flow() -> None:
    graph = import_graph()
    flows = {
        name
        for name in graph
        if name.count(".") == 1 and (PACKAGE / f"{name.split('.')[1]}.py").is_file()
    }
    assert {"mobilenet_lab.train", "mobilenet_lab.export"} <= flows
    wrong = {
        part: deps & flows for part, deps in graph.items() if part.count(".") > 1 and deps & flows
    }
    assert not wrong, f"parts importing flows: {wrong}"


def test_every_folder_of_the_package_is_a_package() -> None:
    """setuptools' package finder installs only folders with an ``__init__.py``."""
    folders = {path.parent for path in PACKAGE.rglob("*.py")}
    assert not [folder for folder in folders if not (folder / "__init__.py").is_file()]
