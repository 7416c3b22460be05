"""The package's shape (issues 19 and 29): every ``mobilenet_lab`` import, at module level or
inside a function, read from the source, makes a graph with no cycle, no part (a module of a
subpackage: ``training/``, ``deploy/``, ...) imports a flow (a module at the top: ``train``,
``export``, ...), and every import goes down the declared order of layers (``LAYERS``) or stays
in its folder."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mobilenet_lab"
# The package's folders, top to bottom: a module imports from its own folder or from a layer
# below its own, never from a layer above nor from another folder of its own layer. The flows
# (the modules at the package's top) put the parts together; ``jobs/`` runs them as Hydra jobs
# (start-up checks, Hydra callbacks, failure records, SLURM requeue, the DDP guard, ``--cfg``);
# training and the analysis use deploy/ (a teacher's exported file, every runtime's speed);
# ``runs/`` is what every layer may use (errors, run files, the run record, checkpoints,
# metrics.json).
LAYERS: list[set[str]] = [
    {"flows"},
    {"jobs"},
    {"training", "analysis"},
    {"deploy"},
    {"data", "models"},
    {"runs"},
]


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


def folder(module: str) -> str:
    """The folder of the package ``module`` is in (``runs`` for ``mobilenet_lab.runs.files`` and
    for ``mobilenet_lab.runs`` itself); ``flows`` for a module at the top and the package."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return parts[1]
    return "flows"


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """``(importer, imported)`` for every import that leaves its folder and does not go down
    ``LAYERS``."""
    layer = {name: rank for rank, names in enumerate(LAYERS) for name in names}
    return sorted(
        (module, dep)
        for module, deps in graph.items()
        for dep in deps
        if folder(dep) != folder(module) and layer[folder(dep)] <= layer[folder(module)]
    )


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


def test_every_folder_is_in_one_layer() -> None:
    folders = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    declared = [name for names in LAYERS for name in names]
    assert sorted(declared) == sorted({*folders, "flows"}), "a folder missing from LAYERS"


def test_imports_go_down_the_layers() -> None:
    """A later import that points up (``runs/`` importing ``training/``, ``data/`` importing
    ``training/``) fails here: move the module, or what it imports, to where the order holds."""
    graph = import_graph()
    assert "mobilenet_lab.runs.errors" in graph["mobilenet_lab.data.imagefolder"]  # one seen
    upward = upward_imports(graph)
    print(f"imports that point up: {len(upward)}")
    assert len(upward) == 0, "imports that point up:\n" + "\n".join(
        f"  {module} ({folder(module)}) -> {dep} ({folder(dep)})" for module, dep in upward
    )


def test_every_folder_of_the_package_is_a_package() -> None:
    """setuptools' package finder installs only folders with an ``__init__.py``."""
    folders = {path.parent for path in PACKAGE.rglob("*.py")}
    assert not [folder for folder in folders if not (folder / "__init__.py").is_file()]
