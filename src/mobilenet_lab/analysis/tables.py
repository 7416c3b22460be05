"""Rows of results as people and programs read them: a CSV written whole or not at all, and a
table on the console with counts as people read them. Every flow that ends in rows uses these."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] = ()) -> None:
    """Every key of ``rows`` (or just ``columns``) as a CSV, written whole or not at all."""
    columns = list(columns) or list(dict.fromkeys(key for row in rows for key in row))
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str) -> None:
    """A table of ``columns``; full width when the output is a file or pipe, not a terminal."""
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(format_value(row.get(key)) for key in columns))
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 240))
    console.print(table)


def format_value(value: Any) -> str:
    """Counts as people read them (76524800 -> 76.5 M); the CSV keeps the exact numbers."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**4:
        for scale, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {suffix}"
    if isinstance(value, float):  # 4 significant digits: 0.9383, 0.25, 23.66, 1235
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return "" if value is None else str(value)
