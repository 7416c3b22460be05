"""A test-only Lightning callback that kills its own process with SIGKILL at a chosen step, so
kill-and-resume tests interrupt a run exactly where they mean to instead of racing it.

Each fires in the run's first segment only, as a kill would: the run's record keeps the
callback, and a resume (``trainer.ckpt_path`` set) restores it with the rest of the run.

From the command line (the repository root on ``PYTHONPATH``):
``+callbacks.kill._target_=tests.kill_switch.KillSwitch +callbacks.kill.epoch=3
+callbacks.kill.batch=2``.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L


class KillSwitch(L.Callback):
    """SIGKILL as training batch ``batch`` of epoch ``epoch`` (both 0-based) is about to start.

    ``batch=0`` kills right after the checkpoints of epoch ``epoch - 1`` are written (Lightning
    saves them at the end of that epoch, before the next one starts)."""

    def __init__(self, epoch: int, batch: int = 0) -> None:
        self.epoch = epoch
        self.batch = batch

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.ckpt_path is None and (trainer.current_epoch, batch_idx) == (
            self.epoch,
            self.batch,
        ):
            os.kill(os.getpid(), signal.SIGKILL)


class Crash(L.Callback):
    """Raises as training epoch ``epoch`` starts: an in-process test's stand-in for a kill
    (the checkpoints of the epoch before are written, nothing after them)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None and trainer.current_epoch == self.epoch:
            raise RuntimeError(f"crashed on purpose as epoch {self.epoch} starts")
