"""What a run leaves in its folder besides checkpoints: the config tree and ``metrics.json``,
and which entry point left them."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

# Where a checkpoint written by src/train.py keeps its run's config (callbacks.SaveRunConfig).
RUN_CONFIG_KEY = "mobilenet_lab_run"
TREE_ORDER = ("model", "data", "module", "optimizer", "scheduler", "trainer", "callbacks", "logger")


def print_config_tree(cfg: DictConfig, save_to: Path | None = None) -> None:
    """Prints the composed config as a tree (main groups first) and saves it beside the run."""
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in TREE_ORDER if k in cfg] + [k for k in cfg if k not in TREE_ORDER]
    for key in keys:
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        tree.add(key, style="yellow", guide_style="yellow").add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
    if save_to is not None:
        with open(save_to, "w") as file:
            rich.print(tree, file=file)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Writes ``data`` as JSON through a temporary file, so a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def scalar_metrics(metrics: dict[str, Any], prefixes: Sequence[str]) -> dict[str, float]:
    """Lightning's logged tensors as plain floats, kept only for the given split prefixes."""
    return {
        key: float(value)
        for key, value in sorted(metrics.items())
        if key.startswith(tuple(prefixes))
    }


def entry_point(run_dir: Path, metrics: dict[str, Any] | None) -> str | None:
    """``train`` or ``eval``: which entry point made a run (runs of both share a folder when
    they share a ``task_name``). ``metrics.json``'s ``entry_point``; else Hydra's job name in
    ``.hydra/hydra.yaml`` (also there for a run that wrote no ``metrics.json``); else, for an
    older ``metrics.json``, its shape (eval's name the weights scored and have no ``val``).
    None when none of these tells."""
    if metrics is not None and metrics.get("entry_point"):
        return str(metrics["entry_point"])
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        name = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.job.name")
        if name in ("train", "eval"):
            return name
    if metrics is not None and "val" not in metrics and {"weights", "ckpt_path"} & metrics.keys():
        return "eval"
    return None


def is_training_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a training run (not an eval run that shares the ``task_name``)."""
    path = run_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text()) if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        metrics = None
    known = entry_point(run_dir, metrics if isinstance(metrics, dict) else None)
    return run_dir.is_dir() and known != "eval"
