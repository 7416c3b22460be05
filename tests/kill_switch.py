"""Test-only Lightning callbacks that interrupt a run exactly where a test means to, instead of
racing it: ``KillSwitch`` kills its own process with SIGKILL, ``Crash`` raises (an in-process
test's stand-in for a kill).

Where they fire is set by environment variables, not by the config: the run's record keeps the
callback, as it keeps every callback of the run, and a resume restores it with the rest of the
run; like a real kill, the interruption belongs to one process, not to the run. From the
command line (the repository root on ``PYTHONPATH``):
``KILL_SWITCH_AT=3,2 python src/train.py +callbacks.kill._target_=tests.kill_switch.KillSwitch``
(SIGKILL as batch 2 of epoch 3 starts; ``3`` alone: as epoch 3 starts, right after the
checkpoints of epoch 2 are written).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L

KILL_AT = "KILL_SWITCH_AT"  # "epoch" or "epoch,batch", 0-based
CRASH_AT = "CRASH_AT_EPOCH"


def kill_env(epoch: int, batch: int = 0) -> dict[str, str]:
    """The environment that makes a ``KillSwitch`` of the run fire there."""
    return {KILL_AT: f"{epoch},{batch}"}


class KillSwitch(L.Callback):
    """SIGKILL as training batch ``batch`` of epoch ``epoch`` is about to start
    (``KILL_SWITCH_AT``; unset: never)."""

    def __init__(self) -> None:
        where = os.environ.get(KILL_AT)
        self.at = tuple(int(v) for v in f"{where},0".split(",")[:2]) if where else None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if (trainer.current_epoch, batch_idx) == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


class Crash(L.Callback):
    """Raises as training epoch ``CRASH_AT_EPOCH`` starts (unset: never); the checkpoints of
    the epoch before are written, nothing after them."""

    def __init__(self) -> None:
        self.epoch = int(os.environ.get(CRASH_AT, "-1"))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError(f"crashed on purpose as epoch {self.epoch} starts")
