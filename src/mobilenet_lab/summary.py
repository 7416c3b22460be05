"""Summarises a multirun: one row per job from its ``metrics.json``, as CSV and a table."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import rich
from rich.table import Table

COLUMNS = (
    "job", "model", "alpha", "image_size", "params", "val/acc", "test/acc", "test/acc5",
    "wall_time_s",
)  # fmt: skip


def summarise_sweep(sweep_dir: Path) -> list[dict[str, Any]]:
    """Reads ``<sweep_dir>/*/metrics.json`` and writes ``<sweep_dir>/summary.csv``."""
    rows = []
    for path in sorted(sweep_dir.glob("*/metrics.json"), key=lambda p: _job_number(p.parent)):
        metrics = json.loads(path.read_text())
        flat = {**metrics, **metrics.get("val", {}), **metrics.get("test", {})}
        rows.append({"job": path.parent.name, **{key: flat.get(key) for key in COLUMNS[1:]}})
    with open(sweep_dir / "summary.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def print_summary(rows: list[dict[str, Any]]) -> None:
    table = Table(*COLUMNS, title="multirun summary")
    for row in rows:
        table.add_row(*(_format(row[key]) for key in COLUMNS))
    rich.print(table)


def _format(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _job_number(job_dir: Path) -> tuple[int, str]:
    head = job_dir.name.split("_")[0]
    return (int(head) if head.isdigit() else -1, job_dir.name)
