"""The table of runs: every run's ``metrics.json`` under some folders as one row each (with the
entry point that made it), and the report's rows: the training runs, their Pareto-optimal runs
marked (the files made of them: ``analysis/report.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mobilenet_lab.analysis.pareto import pareto_optimal
from mobilenet_lab.analysis.report_markdown import INT8_COLUMNS
from mobilenet_lab.runs.errors import ConfigError
from mobilenet_lab.runs.metrics import EXPORTED, job_name, read_metrics

# Overrides left out of the report's ``varied`` column: those shown as columns already, and
# those that say where a run is or how it was resumed, not what it is (a resumed or requeued
# run is one run of its setting, grouped with its seeds).
SHOWN_KEYS = ("model", "model.alpha", "data.image_size", "module.distill.teacher")
NOT_A_SETTING = ("ckpt_path", "resume", "paths", "hydra", "task_name")


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


def find_runs(folder: Path) -> list[Path]:
    """The run folders in ``folder`` (itself, or any below it): those with a ``metrics.json``
    or Hydra's ``.hydra/`` (a job that was killed, or still runs, has only the latter)."""
    found = {p.parent for p in folder.rglob("metrics.json")}
    found |= {p.parent.parent for p in folder.rglob(".hydra/config.yaml")}
    return sorted(found, key=_path_order)


def read_runs(folders: Sequence[Path]) -> list[dict[str, Any]]:
    """One row per run under ``folders``: the flattened ``metrics.json`` plus ``run_dir``,
    ``job`` (the path below the folder given), ``status`` (``incomplete`` without one) and
    ``entry_point`` (``runs.metrics``: the file's, else Hydra's job name)."""
    rows = []
    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"{folder} is not a folder: give run or sweep folders")
        for run_dir in find_runs(folder):
            job = run_dir.relative_to(folder).as_posix()
            rows.append({"job": job if job != "." else run_dir.name, **_read_run(run_dir)})
    return rows


def report_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of training runs (eval runs left out), sorted by mult-adds, with ``pareto`` and
    ``varied`` added. Anything else (another tool's ``metrics.json``) is refused with one line,
    and so are rows of eval runs only."""
    if rows and all(row.get("entry_point") == "eval" for row in rows):
        raise ConfigError(
            f"only eval runs (src/eval.py) under {Path(rows[0]['run_dir']).parent}: the report "
            "is of training runs: give folders of src/train.py runs"
        )
    rows = [row for row in rows if row.get("entry_point") != "eval"]
    for row in rows:
        other = row.get("entry_point") not in ("train", None)  # export's, profile's
        unknown = any(row.get(key) is None for key in ("task", "model", "image_size"))
        if other or (row["status"] != "incomplete" and unknown):
            why = f"entry_point: {row['entry_point']}" if other else "no task, model and image_size"
            raise ConfigError(
                f"{row['run_dir']}/metrics.json was not written by src/train.py ({why}): give "
                "folders of training runs"
            )
    rows = sorted(rows, key=lambda r: (r.get("mult_adds") is None, r.get("mult_adds") or 0))
    front = pareto_optimal(rows, "mult_adds")
    varied = _varied_overrides(rows)
    return [
        {**row, "run": row["job"], "pareto": "yes" if best else "", "varied": extra}
        for row, best, extra in zip(rows, front, varied, strict=True)
    ]


def _read_run(run_dir: Path) -> dict[str, Any]:
    metrics = read_metrics(run_dir)
    if metrics is None:  # killed, or still running: Hydra's files only
        overrides = run_dir / ".hydra" / "overrides.yaml"
        listed = OmegaConf.to_container(OmegaConf.load(overrides)) if overrides.is_file() else []
        return {
            "run_dir": str(run_dir),
            "status": "incomplete",
            "overrides": listed,
            "entry_point": job_name(run_dir),
        }
    exported = flatten(read_metrics(run_dir, EXPORTED) or {})  # its int8 file's accuracy
    return {
        "run_dir": str(run_dir),
        **{key: exported[key] for key in INT8_COLUMNS if key in exported},
        **flatten(metrics),
        "overrides": metrics.get("overrides", []),
    }


def _varied_overrides(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Each row's overrides that differ between the rows and are not shown as columns."""
    sets = [set(row.get("overrides") or []) for row in rows]
    common = set.intersection(*sets) if sets else set()
    return [" ".join(_short(o) for o in sorted(s - common) if _is_setting(_key(o))) for s in sets]


def _is_setting(key: str) -> bool:
    return key not in SHOWN_KEYS and key.split(".")[0] not in NOT_A_SETTING


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _short(override: str) -> str:
    """``optimizer.lr=0.028057582076672527`` -> ``optimizer.lr=0.02806`` (Optuna's draws)."""
    key, _, value = override.partition("=")
    try:
        return f"{key}={float(value):.4g}" if "." in value or "e" in value else override
    except ValueError:
        return override


def _path_order(run_dir: Path) -> tuple[tuple[int, str], ...]:
    """Job folders in job order (2 before 10), whatever their depth."""
    return tuple((int(p) if p.isdigit() else -1, p) for p in run_dir.parts)
