"""Lightning callbacks of our own: what no Lightning callback records."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

RUN_CONFIG_KEY = "mobilenet_lab_run"


class SaveRunConfig(L.Callback):
    """Stores the run's composed config in every checkpoint, so ``eval.py`` needs only the path."""

    def __init__(self, config: dict[str, Any], choices: dict[str, str]) -> None:
        self.config = config
        self.choices = choices

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[RUN_CONFIG_KEY] = {"config": self.config, "choices": self.choices}


class FirstStepTimer(L.Callback):
    """Records the wall-clock time at which the first training batch starts."""

    def __init__(self) -> None:
        self.first_step_time: float | None = None

    def on_train_batch_start(self, *args: Any) -> None:
        if self.first_step_time is None:
            self.first_step_time = time.time()


class BadFileReport(L.Callback):
    """At the end of each epoch, names the image files the data module had to skip."""

    def __init__(self) -> None:
        self.reported: set[str] = set()

    def _report(self, trainer: L.Trainer) -> None:
        bad = getattr(trainer.datamodule, "bad_files", set()) - self.reported
        if bad:
            self.reported |= bad
            listing = "\n  ".join(sorted(bad))
            rank_zero_warn(f"skipped {len(bad)} unreadable image(s) this epoch:\n  {listing}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer)
