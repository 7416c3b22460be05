"""Builds the Lightning loggers of the ``logger`` group, and makes a resumed run continue them.

A run resumed from a checkpoint keeps its whole history: the CSV file keeps every row logged
before the checkpoint and appends after it (rows the interrupted process logged after the
checkpoint are dropped, so each epoch appears once); TensorBoard purges the events after the
checkpoint's step; MLflow and W&B continue the same run, whose id the checkpoint carries.
Lightning's own loggers would start afresh (its CSV logger deletes ``metrics.csv``).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from typing import Any

import lightning as L
from hydra.utils import get_class, instantiate
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import (
    CSVLogger,
    Logger,
    MLFlowLogger,
    TensorBoardLogger,
    WandbLogger,
)
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from omegaconf import DictConfig


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run picks up: the checkpoint's optimizer step and its loggers' run ids."""

    step: int
    logger_ids: dict[str, str] = field(default_factory=dict)


def logger_ids(trainer: L.Trainer) -> dict[str, str]:
    """The run ids of the loggers that keep runs on a server or store (MLflow, W&B), by class."""
    return {
        type(logger).__name__: str(logger.version)
        for logger in trainer.loggers
        if isinstance(logger, MLFlowLogger | WandbLogger) and logger.version
    }


def build_loggers(cfg: DictConfig, resume: ResumePoint | None = None) -> list[Logger]:
    """One logger per entry of the ``logger`` group (empty with ``logger=null``); when
    ``resume`` is given, each continues the interrupted run's history."""
    nodes = [node for node in (cfg.get("logger") or {}).values() if node]
    return [instantiate(node, **_continuing(node, resume)) for node in nodes]


def _continuing(node: DictConfig, resume: ResumePoint | None) -> dict[str, Any]:
    if resume is None:
        return {}
    target = get_class(node._target_)
    if issubclass(target, ContinuingCSVLogger):
        return {"resume_step": resume.step}
    if issubclass(target, TensorBoardLogger):
        return {"purge_step": resume.step}  # SummaryWriter drops events at or after this step
    run_id = resume.logger_ids.get(target.__name__)
    if run_id and issubclass(target, MLFlowLogger):
        return {"run_id": run_id}
    if run_id and issubclass(target, WandbLogger):
        return {"id": run_id, "resume": "allow"}
    return {}


class ContinuingCSVLogger(CSVLogger):
    """Lightning's CSV logger that, resumed at ``resume_step``, keeps the rows logged before
    that step instead of deleting ``metrics.csv``."""

    def __init__(self, *args: Any, resume_step: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(self.log_dir, self.resume_step)
        return self._experiment


class _ContinuingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        """Called by Lightning's writer to delete an old file; here it trims it instead."""
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as file:
            reader = csv.DictReader(file)
            header = list(reader.fieldnames or [])
            rows = [row for row in reader if self._before_resume(row)]
        tmp = f"{self.metrics_file_path}.tmp"
        with open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.metrics_file_path)
        self.metrics_keys = header  # appended rows keep the header's columns

    def _before_resume(self, row: dict[str, str]) -> bool:
        step = row.get("step")
        return self.resume_step is not None and bool(step) and int(step) < self.resume_step
