"""Gathers run results: every job's ``metrics.json`` in a sweep as one CSV row, and tables."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def flatten(metrics: dict[str, Any]) -> dict[str, Any]:
    """One level of nesting folded in (``{"val": {"val/acc": x}}`` -> ``{"val/acc": x}``);
    lists are left out of a CSV row."""
    row: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            row.update(value)
        elif not isinstance(value, list):
            row[key] = value
    return row


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def summarise_sweep(sweep_dir: Path) -> list[dict[str, Any]]:
    """Reads ``<sweep_dir>/<job>/metrics.json`` in job order; writes ``summary.csv``."""
    rows = []
    for path in sorted(sweep_dir.glob("*/metrics.json"), key=lambda p: _job_number(p.parent)):
        rows.append({"job": path.parent.name, **flatten(json.loads(path.read_text()))})
    write_csv(sweep_dir / "summary.csv", rows)
    return rows


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str) -> None:
    """A table of ``columns``; full width when the output is a file or pipe, not a terminal."""
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(_format(row.get(key)) for key in columns))
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 240))
    console.print(table)


def _format(value: Any) -> str:
    """Counts as people read them (76524800 -> 76.5 M); the CSV keeps the exact numbers."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**4:
        for scale, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {suffix}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
    return "" if value is None else str(value)


def _job_number(job_dir: Path) -> tuple[int, str]:
    head = job_dir.name.split("_")[0]
    return (int(head) if head.isdigit() else -1, job_dir.name)
