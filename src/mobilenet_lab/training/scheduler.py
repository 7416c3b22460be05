"""Learning-rate schedules selectable as ``scheduler=<name>``, stepped once per optimizer step.

Each is torch's own scheduler behind a linear warmup (torch's ``LinearLR`` + ``SequentialLR``);
durations are given in epochs and converted with the steps per epoch the trainer reports.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
    StepLR,
)


def cosine(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.1,
    min_lr: float = 0.0,
) -> LRScheduler:
    """Linear warmup, then cosine decay to ``min_lr`` at the last step of training."""
    warmup_steps = _warmup_steps(warmup_epochs, steps_per_epoch, total_steps)
    decay = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=min_lr)
    return _with_warmup(optimizer, decay, warmup_steps, warmup_start_factor)


def step(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    decay_epochs: float = 2.5,
    gamma: float = 0.94,
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.1,
) -> LRScheduler:
    """Linear warmup, then the LR times ``gamma`` every ``decay_epochs`` (TF-slim: 0.94 / 2.5)."""
    warmup_steps = _warmup_steps(warmup_epochs, steps_per_epoch, total_steps)
    decay = StepLR(optimizer, step_size=max(1, round(decay_epochs * steps_per_epoch)), gamma=gamma)
    return _with_warmup(optimizer, decay, warmup_steps, warmup_start_factor)


def _warmup_steps(warmup_epochs: float, steps_per_epoch: int, total_steps: int) -> int:
    return min(round(warmup_epochs * steps_per_epoch), max(0, total_steps - 1))


def _with_warmup(
    optimizer: Optimizer, decay: LRScheduler, warmup_steps: int, start_factor: float
) -> LRScheduler:
    if warmup_steps == 0:
        return decay
    warmup = LinearLR(optimizer, start_factor=start_factor, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, decay], milestones=[warmup_steps])
