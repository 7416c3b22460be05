"""The accuracy-cost report's files, made of the table of runs (``runs_table``): the sweep's
``summary.csv``, and each training run's batch-1 latency on this machine written with the rows
as ``report.md``, ``report.csv``, ``tradeoff.png`` (and ``distillation.png``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mobilenet_lab.analysis.report_markdown import markdown as report_markdown
from mobilenet_lab.analysis.report_markdown import report_columns
from mobilenet_lab.analysis.runs_table import read_runs, report_rows
from mobilenet_lab.analysis.tables import write_csv
from mobilenet_lab.runs.errors import ConfigError


def summarise_sweep(sweep_dir: Path) -> list[dict[str, Any]]:
    """Reads every job of ``sweep_dir`` in job order; writes ``summary.csv`` (every metric)."""
    rows = read_runs([sweep_dir])
    flat = [{**row, "overrides": " ".join(row["overrides"])} for row in rows]
    write_csv(sweep_dir / "summary.csv", flat)
    return rows


def write_report(
    out_dir: Path, rows: Sequence[dict[str, Any]], title: str, speed: DictConfig
) -> list[dict[str, Any]]:
    """Adds each finished training run's batch-1 latency (measured once per network on this
    machine with the ``speed`` settings, cached in the run folder; a ``latency_note`` instead
    when the network cannot be rebuilt), then writes ``report.md``, ``report.csv`` and
    ``tradeoff.png``, each to a temporary name first. Eval runs are left out, and counted in
    ``report.md``."""
    from mobilenet_lab.analysis.distillation_gain import save_gain_plot
    from mobilenet_lab.analysis.tradeoff_plot import save_tradeoff_plot

    latencies: dict[str, dict[str, Any]] = {}
    evals = [row for row in rows if row.get("entry_point") == "eval"]
    rows = [
        _with_latency(row, latencies, speed) if row["status"] == "ok" else row
        for row in report_rows(rows)
    ]
    device = next((r["latency_device"] for r in rows if r.get("latency_device")), "-")
    markdown = report_markdown(rows, title, device, evals)
    save_tradeoff_plot(rows, out_dir / "tradeoff.png", device)
    save_gain_plot(rows, out_dir / "distillation.png")  # when a setting was run both ways
    write_csv(out_dir / "report.csv", rows, report_columns(rows))
    tmp = out_dir / "report.md.tmp"
    tmp.write_text(markdown)
    os.replace(tmp, out_dir / "report.md")
    return rows


def _with_latency(
    row: dict[str, Any], measured: dict[str, dict[str, Any]], speed: DictConfig
) -> dict[str, Any]:
    """The row with its network's latency, or with why there is none (a row, not a traceback:
    the other runs' report is still worth having)."""
    from mobilenet_lab.analysis.timing import cached_latency

    try:
        return {**row, **cached_latency(Path(row["run_dir"]), measured, speed)}
    except ConfigError as error:
        return {**row, "latency_note": str(error)}
