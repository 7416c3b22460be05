"""``metrics.json``: the one shape every entry point writes, and its one reader.

Every file starts with ``schema`` (its version), ``entry_point`` (``train``, ``eval``,
``export``, ``profile``: the caller says which), ``task`` and ``status`` (``ok``, ``failed``,
``diverged``, ``refused``); the entry point's own fields follow. The reader trusts ``schema``;
a file without one was written before it existed (schema 1) and is brought up to today's shape
by ``upgrade_v1``, the one place that guesses from a file's shape which tool wrote it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mobilenet_lab.runs.errors import ConfigError
from mobilenet_lab.runs.files import write_json_atomic

SCHEMA = 2
ENTRY_POINTS = ("train", "eval", "export", "profile")
STATUSES = ("ok", "failed", "diverged", "refused")  # refused: export's checks said no


def metrics_record(
    entry_point: str, task: str | None, status: str, fields: dict[str, Any]
) -> dict[str, Any]:
    """``metrics.json``'s content: the shared head, then ``fields`` (a field may not replace
    the head: a tool that wrote its own ``status`` would make two shapes again)."""
    if entry_point not in ENTRY_POINTS or status not in STATUSES:
        raise ValueError(f"entry_point={entry_point!r}, status={status!r}: not one of "
                         f"{ENTRY_POINTS} and {STATUSES}")  # fmt: skip
    head = {"schema": SCHEMA, "entry_point": entry_point, "task": task, "status": status}
    if clash := head.keys() & fields.keys():
        raise ValueError(f"{sorted(clash)} belong to metrics.json's head, not to the fields")
    return {**head, **fields}


def write_metrics(output_dir: Path, record: dict[str, Any], name: str = "metrics.json") -> None:
    """Writes a ``metrics_record`` to ``output_dir/metrics.json`` (atomically); ``name``:
    ``EXPORTED``, the export's record beside the files it put in a training run's folder."""
    write_json_atomic(Path(output_dir) / name, record)


# An export's metrics_record in the training run's folder it wrote its files to (the sweep
# report's int8 column reads it); the export run's own folder has it as metrics.json.
EXPORTED = "export.json"


def read_metrics(run_dir: Path, name: str = "metrics.json") -> dict[str, Any] | None:
    """``run_dir/metrics.json`` (or ``EXPORTED``) in today's shape (None when there is none);
    a ConfigError when it is not a run's metrics or was written by a newer kit."""
    path = run_dir / name
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not readable JSON (truncated?): {error}") from error
    if not isinstance(metrics, dict):
        raise ConfigError(f"{path} holds a JSON {type(metrics).__name__}, not a run's metrics")
    schema = metrics.get("schema", 1)
    if schema == 1:
        return upgrade_v1(metrics, run_dir)
    if schema != SCHEMA:
        raise ConfigError(
            f"{path} has schema={schema!r}: this kit reads metrics.json of schema 1 and "
            f"{SCHEMA}; read it with the kit that wrote it"
        )
    return metrics


def upgrade_v1(metrics: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A file written before ``schema`` (schema 1) in today's shape: ``status`` is ``ok`` when
    absent (older than failure records); ``entry_point``, when absent, is Hydra's job name, else
    guessed from the shape (eval's names the weights it scored and has no ``val``), else None
    (not known: read as a training run, or refused by the report for lacking its keys)."""
    entry = metrics.get("entry_point") or job_name(run_dir)
    if not entry and "val" not in metrics and {"weights", "ckpt_path"} & metrics.keys():
        entry = "eval"
    head = {"schema": SCHEMA, "entry_point": entry or None, "task": metrics.get("task"),
            "status": metrics.get("status", "ok")}  # fmt: skip
    return {**head, **{k: v for k, v in metrics.items() if k not in head}}


def job_name(run_dir: Path) -> str | None:
    """``train`` or ``eval``: Hydra's job name in ``.hydra/hydra.yaml`` (there before any
    ``metrics.json``, so also for a run killed or failed early); None for anything else."""
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if not hydra_file.is_file():
        return None
    name = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.job.name")
    return name if name in ("train", "eval") else None


def entry_point(run_dir: Path) -> str | None:
    """Which entry point made the run in ``run_dir`` (runs of train and eval share a folder
    when they share a ``task_name``): its ``metrics.json``'s, else Hydra's job name."""
    metrics = read_metrics(run_dir)
    return metrics["entry_point"] if metrics is not None else job_name(run_dir)


def is_training_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a training run (not an eval run that shares the ``task_name``);
    a run whose ``metrics.json`` cannot be read may be one."""
    if not run_dir.is_dir():
        return False
    try:
        return entry_point(run_dir) in ("train", None)
    except ConfigError:
        return True
