"""Lightning callbacks of our own: what no Lightning callback records."""

from __future__ import annotations

import random
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

from mobilenet_lab.loggers import LOGGER_IDS_KEY, logger_ids

RUN_CONFIG_KEY = "mobilenet_lab_run"


class SaveRunConfig(L.Callback):
    """Stores the run's composed config in every checkpoint, so ``eval.py`` needs only the path,
    the data module's class names and normalisation, so predictions read as labels and new
    images are normalised as the run's were (the digits' mean and std come from their split),
    and its loggers' run ids, so that a resumed run continues them."""

    def __init__(self, config: dict[str, Any], choices: dict[str, str]) -> None:
        self.config = config
        self.choices = choices

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        data = trainer.datamodule
        checkpoint[RUN_CONFIG_KEY] = {
            "config": self.config,
            "choices": self.choices,
            "class_names": list(getattr(data, "classes", None) or []) or None,
            "mean": list(data.mean) if hasattr(data, "mean") else None,
            "std": list(data.std) if hasattr(data, "std") else None,
            LOGGER_IDS_KEY: logger_ids(trainer),  # a resumed run continues the same runs
        }


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


class RNGState(L.Callback):
    """Saves the random number generators' states in each checkpoint and restores them on
    resume, so that a resumed run draws the same shuffles and augmentations as an uninterrupted
    one (Lightning saves model, optimizer, scheduler and loop state, not the RNGs)."""

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        name, keys, *rest = state_dict["numpy"]
        np.random.set_state((name, keys.numpy(), *rest))
        random.setstate(_as_tuples(state_dict["python"]))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def _as_tuples(value: Any) -> Any:
    """random.setstate wants the tuples it gave, which a checkpoint may hand back as lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value
