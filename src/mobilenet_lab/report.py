"""The accuracy-cost report of training runs, what ``scripts/report.py`` calls: every run under
some folders as one row (single runs, sweeps, Optuna studies; failed jobs as failed rows; eval
runs beside them left out, and counted), each trained network's batch-1 latency on this machine,
written as ``report.md``, ``report.csv`` and ``tradeoff.png``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mobilenet_lab.analysis.report import write_report
from mobilenet_lab.analysis.report_markdown import report_columns
from mobilenet_lab.analysis.runs_table import read_runs
from mobilenet_lab.analysis.tables import print_table
from mobilenet_lab.runs.errors import ConfigError


def report(
    folders: Sequence[Path], speed: DictConfig, out: Path | None = None
) -> list[dict[str, Any]]:
    """The report's rows, its files written to ``out`` (the first folder by default), the
    latencies timed as ``speed`` says (``conf/speed/``); a ConfigError, before anything is
    written, when the folders hold no runs."""
    out = out or folders[0]
    rows = read_runs(folders)
    if not rows:
        raise ConfigError(
            f"no runs under {', '.join(map(str, folders))}: give folders of "
            "src/train.py runs (with a metrics.json or .hydra/)"
        )
    out.mkdir(parents=True, exist_ok=True)
    title = f"Accuracy against cost: {', '.join(map(str, folders))}"
    rows = write_report(out, rows, title, speed)
    print_table(rows, report_columns(rows), title=f"report: {out / 'report.md'}")
    return rows
