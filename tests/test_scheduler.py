"""Warmup + cosine / step schedules: the learning rate at the points that define them."""

from __future__ import annotations

import itertools

import pytest
import torch

from mobilenet_lab.training.scheduler import cosine, step


def lrs(factory, steps: int, **kwargs) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = factory(opt, total_steps=steps, steps_per_epoch=10, **kwargs)
    values = []
    for _ in range(steps):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return values


def test_cosine_with_warmup() -> None:
    values = lrs(cosine, 100, warmup_epochs=1, warmup_start_factor=0.1)
    assert values[0] == pytest.approx(0.1)
    assert values[10] == pytest.approx(1.0)  # warmup done after one epoch
    assert values[55] == pytest.approx(0.5, abs=0.02)  # half way down the cosine
    assert values[-1] < 0.01
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))


def test_cosine_without_warmup_starts_at_the_base_lr() -> None:
    assert lrs(cosine, 50)[0] == pytest.approx(1.0)


def test_step_decays_by_gamma_every_decay_epochs() -> None:
    values = lrs(step, 60, decay_epochs=2, gamma=0.5)
    assert values[19] == pytest.approx(1.0) and values[20] == pytest.approx(0.5)
    assert values[40] == pytest.approx(0.25)


def test_step_with_fractional_decay_epochs_after_a_warmup() -> None:
    """2.5 epochs of 10 steps = a decay every 25 steps, counted from the end of the warmup."""
    values = lrs(step, 70, decay_epochs=2.5, gamma=0.5, warmup_epochs=1, warmup_start_factor=0.1)
    assert values[0] == pytest.approx(0.1) and values[5] == pytest.approx(0.55)
    assert values[10] == pytest.approx(1.0) and values[34] == pytest.approx(1.0)
    assert values[35] == pytest.approx(0.5) and values[59] == pytest.approx(0.5)
    assert values[60] == pytest.approx(0.25)
