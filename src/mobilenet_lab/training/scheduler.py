"""Learning-rate schedules selectable as ``scheduler=<name>``, stepped once per optimizer step.

Each is a linear warmup, then a decay, written in closed form: the learning rate is a function
of the optimizer step and the run's horizon (total steps) alone, as timm's schedulers are. A
checkpoint gives back only the step, so a run resumed with a larger ``trainer.max_epochs``
follows the schedule of its new horizon from where it stopped. (torch's ``CosineAnnealingLR``
is recursive and its restored state carries the old ``T_max``: extended, its learning rate
climbed back to the peak.) Durations are given in epochs and converted with the steps per
epoch the trainer reports.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class StepSchedule(LRScheduler):
    """``lr_at(step, base_lr)`` for each parameter group; ``horizon``: the steps it spans.

    ``state_dict`` keeps the step and the horizon; ``load_state_dict`` sets the learning rate
    of the restored step on this schedule, and says in one line what it does next when the
    horizon is not the checkpoint's."""

    def __init__(self, optimizer: Optimizer, lr_at: partial, horizon: int) -> None:
        self.lr_at = lr_at
        self.horizon = horizon
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch, base) for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "_step_count": self._step_count,
                "horizon": self.horizon}  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Also reads the state of the torch schedulers used before (its ``last_epoch``)."""
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict.get("_step_count", self.last_epoch + 1))
        restored = self.optimizer.param_groups[0]["lr"]  # the optimizer's, loaded just before
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr
        before = state_dict.get("horizon")
        if before != self.horizon:
            end = self.lr_at(self.horizon, self.base_lrs[0])
            if rank_zero_only.rank == 0:  # on the console beside the resume's own line
                print(
                    f"Learning-rate schedule resumed at step {self.last_epoch} over "
                    f"{self.horizon} steps (the checkpoint's run: {before or 'unknown'}): lr "
                    f"{restored:.4g} at the checkpoint -> {self._last_lr[0]:.4g} now, {end:.4g} "
                    f"at step {self.horizon}"
                )


def cosine(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.1,
    min_lr: float = 0.0,
) -> StepSchedule:
    """Linear warmup, then cosine decay to ``min_lr`` at the last step of training."""
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch, total_steps)
    lr_at = partial(_cosine_lr, warmup=warmup, start_factor=warmup_start_factor,
                    decay_steps=max(1, total_steps - warmup), min_lr=min_lr)  # fmt: skip
    return StepSchedule(optimizer, lr_at, total_steps)


def step(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    decay_epochs: float = 2.5,
    gamma: float = 0.94,
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.1,
) -> StepSchedule:
    """Linear warmup, then the LR times ``gamma`` every ``decay_epochs`` (TF-slim: 0.94 / 2.5)."""
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch, total_steps)
    step_size = max(1, round(decay_epochs * steps_per_epoch))
    lr_at = partial(_step_lr, warmup=warmup, start_factor=warmup_start_factor,
                    step_size=step_size, gamma=gamma)  # fmt: skip
    return StepSchedule(optimizer, lr_at, total_steps)


def _warmup_steps(warmup_epochs: float, steps_per_epoch: int, total_steps: int) -> int:
    return min(round(warmup_epochs * steps_per_epoch), max(0, total_steps - 1))


def _warmup_lr(step: int, base_lr: float, warmup: int, start_factor: float) -> float:
    """torch's ``LinearLR``: from ``start_factor`` x base to the base over ``warmup`` steps."""
    return base_lr * (start_factor + (1 - start_factor) * step / warmup)


def _cosine_lr(
    step: int, base_lr: float, warmup: int, start_factor: float, decay_steps: int, min_lr: float
) -> float:
    if step < warmup:
        return _warmup_lr(step, base_lr, warmup, start_factor)
    progress = min(step - warmup, decay_steps) / decay_steps  # stays at min_lr past the end
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * progress)) / 2


def _step_lr(
    step: int, base_lr: float, warmup: int, start_factor: float, step_size: int, gamma: float
) -> float:
    if step < warmup:
        return _warmup_lr(step, base_lr, warmup, start_factor)
    return base_lr * gamma ** ((step - warmup) // step_size)
