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


def scheduled(total_steps: int, **kwargs):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return opt, cosine(opt, total_steps=total_steps, steps_per_epoch=10, **kwargs)


def test_cosine_is_torchs_warmup_and_cosine_in_closed_form() -> None:
    """The same values as torch's LinearLR + CosineAnnealingLR in SequentialLR (recursive)."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    warm = LinearLR(opt, start_factor=0.1, total_iters=10)
    torchs = SequentialLR(opt, [warm, CosineAnnealingLR(opt, T_max=90)], milestones=[10])
    expected = []
    for _ in range(100):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        torchs.step()
    assert lrs(cosine, 100, warmup_epochs=1) == pytest.approx(expected, abs=1e-12)


def test_an_extended_run_follows_the_new_horizon_from_its_step() -> None:
    """A 40-step schedule's state loaded into an 80-step one (a 4-epoch run extended to 8): the
    learning rate at step 40 is the 80-step schedule's, and it decays from there to 0 at 80,
    never climbing back (torch's restored CosineAnnealingLR rose to the peak again)."""
    opt, short = scheduled(40, warmup_epochs=1)
    for _ in range(40):
        opt.step()
        short.step()
    opt, extended = scheduled(80, warmup_epochs=1)
    extended.load_state_dict(short.state_dict())
    fresh_opt, fresh = scheduled(80, warmup_epochs=1)
    for _ in range(40):
        fresh_opt.step()
        fresh.step()
    values = []
    for _ in range(40):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        extended.step()
    assert values[0] == fresh_opt.param_groups[0]["lr"] == pytest.approx(0.61, abs=0.01)
    assert all(a >= b for a, b in itertools.pairwise(values)) and values[-1] < 0.01


def test_the_same_horizon_resumes_exactly_and_reads_torchs_old_state() -> None:
    """A checkpoint of the same horizon gives back the very lr of its step; a checkpoint of
    the torch schedulers used before (SequentialLR's state) is read by its step."""
    from torch.optim.lr_scheduler import CosineAnnealingLR

    opt, first = scheduled(50)
    for _ in range(20):
        opt.step()
        first.step()
    opt2, again = scheduled(50)
    again.load_state_dict(first.state_dict())
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    old = CosineAnnealingLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 50)
    old.last_epoch = 20
    opt3, from_old = scheduled(50)
    from_old.load_state_dict(old.state_dict())
    assert opt3.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
