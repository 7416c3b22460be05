"""Runs that fail loudly: a failed job says why in one line, records ``status`` in its
``metrics.json`` and never exits 0; in a sweep the other jobs still run.

Hydra's sweepers stop at (or after the batch of) a job that raises, before the multirun-end
callbacks write the summary; so the task function catches the error here, records it and returns
``None``, and ``hydra_callbacks.SummariseSweep`` names the failed jobs and exits non-zero.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from mobilenet_lab.jobs.restored_config import with_float_run
from mobilenet_lab.runs import errors
from mobilenet_lab.runs.errors import ConfigError
from mobilenet_lab.runs.metrics import metrics_record, write_metrics
from mobilenet_lab.training.module import TrainingDiverged

log = logging.getLogger(__name__)
T = TypeVar("T")


def run_job(task: Callable[[DictConfig], T], cfg: DictConfig, entry_point: str) -> T | None:
    """``task(cfg)``; when it raises, ``metrics.json`` gets ``status: diverged`` (or ``failed``),
    the error and ``entry_point`` (the caller's), one line goes to stderr (the traceback to the
    job's log file), and then a single run exits non-zero (2 for a ConfigError, as at startup)
    while a sweep job returns ``None`` so that the sweep goes on (the Optuna sweeper counts it
    as a failed trial)."""
    started = time.time()
    try:
        return task(cfg)
    except Exception as error:  # any error: the job must say so, the sweep must go on
        status = "diverged" if isinstance(error, TrainingDiverged) else "failed"
        recorded = isinstance(error, errors.RecordedRefusal)  # its metrics.json says why
        status = "refused" if recorded else status
        message = errors.one_line(error)
        log.exception("job %s", status)  # the traceback, in the job's own log file
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        if rank_zero_only.rank == 0 and not recorded:
            seconds = time.time() - started
            write_metrics(output_dir, failure_record(cfg, entry_point, status, message, seconds))
        print(f"Error: {status}: {message} ({output_dir})", file=sys.stderr, flush=True)
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            sys.exit(2 if isinstance(error, ConfigError) else 1)
        return None


def failure_record(
    cfg: DictConfig, entry_point: str, status: str, message: str, seconds: float
) -> dict[str, Any]:
    """What ``metrics.json`` holds for a failed job: what was asked for, and why it failed."""
    hydra_cfg = HydraConfig.get()
    choices = dict(hydra_cfg.runtime.choices)
    if cfg.get("qat") and cfg.qat.get("from") and not cfg.get("ckpt_path"):
        with contextlib.suppress(Exception):  # the network fine-tuned: the float run's
            cfg, choices = with_float_run(cfg, hydra_cfg.overrides.task, choices)
    return metrics_record(
        entry_point,
        cfg.get("task_name"),
        status,
        {
            "error": message,
            "model": choices.get("model"),
            "data": choices.get("data"),
            "alpha": cfg.model.get("alpha"),
            "image_size": cfg.data.get("image_size"),
            "lr": cfg.get("optimizer", {}).get("lr"),
            "wall_time_s": round(seconds, 3),
            "overrides": list(hydra_cfg.overrides.task),
        },
    )


def failures_message(failed: Sequence[dict[str, Any]], total: int, report: Path) -> str:
    """The few lines a sweep ends with when jobs failed: which, where, why."""
    lines = [f"{len(failed)} of {total} jobs failed (report: {report}):"]
    for row in failed:
        reason = row.get("error") or "no metrics.json: killed, or still running"
        lines.append(f"  {row['status']:<10} {row['run_dir']}  {reason}")
    lines.append("Each job's metrics.json holds its error; the .log file beside it, the traceback.")
    return "\n".join(lines)
