"""What a run leaves in its folder besides checkpoints: the config tree, and JSON files written
whole (``metrics.json``'s shape is ``runs/metrics.py``'s)."""

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
