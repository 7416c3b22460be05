"""``callbacks=ema``: Lightning's EMA with timm's decay warm-up (``WarmupEMA``). Its runs with the
kit (validation, test, checkpoints, resume, export) are in test_train_eval.py and
test_combinations.py."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from timm.utils.model_ema import ModelEmaV3
from torch import nn
from torch.optim.swa_utils import AveragedModel

from mobilenet_lab.training.callbacks import WarmupEMA
from tests.conftest import compose_cfg


@pytest.mark.parametrize(("gamma", "power"), [(1.0, 2 / 3), (1.0, 0.75), (10.0, 0.5)])
def test_the_decay_is_timms_warmup(gamma: float, power: float) -> None:
    """Update n + 1 (n earlier ones) uses timm's decay for step n + 1, up to ``decay``."""
    ours = WarmupEMA(decay=0.999, warmup_gamma=gamma, warmup_power=power)
    timms = ModelEmaV3(nn.Linear(1, 1), decay=0.999, use_warmup=True, warmup_gamma=gamma,
                       warmup_power=power)  # fmt: skip
    for n in [1, 2, 5, 10, 140, 1_000, 31_000, 32_000, 10**6]:
        assert ours.decay_at(n) == pytest.approx(timms.get_decay(n + 1), rel=1e-12, abs=1e-15)
    assert ours.decay_at(10**9) == 0.999


def test_the_averaged_weights_follow_timms_ema(tmp_path: Path) -> None:
    """The averaged model as the callback builds it (the config's arguments) against timm's
    ``ModelEmaV3(use_warmup=True)`` fed the same weights: parameters and BatchNorm statistics."""
    cfg = compose_cfg("train", ["callbacks=ema"], tmp_path)
    callback = instantiate(cfg.callbacks.ema)
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    averaged = AveragedModel(net, use_buffers=True, **callback._kwargs)
    warmup = {"warmup_gamma": callback.warmup_gamma, "warmup_power": callback.warmup_power}
    timms = ModelEmaV3(net, decay=callback.decay, use_warmup=True, **warmup)
    torch.manual_seed(0)
    for step in range(1, 30):
        net(torch.randn(8, 4))  # moves the running statistics
        with torch.no_grad():
            for param in net.parameters():
                param.add_(torch.randn_like(param))
        averaged.update_parameters(net)
        timms.update(net, step=step)
    ours, theirs = averaged.module.state_dict(), timms.module.state_dict()
    for key, value in theirs.items():
        if value.is_floating_point():
            assert torch.allclose(ours[key], value, atol=1e-5), key
    assert int(averaged.n_averaged) == 29


class Separable(L.LightningModule):
    """A linear classifier of 8 features by the sign of a fixed direction: Adam at 0.01 moves its
    weights by about as much as their initial size in 150 steps."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 2), nn.BatchNorm1d(2))
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(4096, 8, generator=generator)
        self.y = (self.x @ torch.linspace(-1, 1, 8) > 0).long()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.01)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        data = torch.utils.data.TensorDataset(self.x, self.y)
        return torch.utils.data.DataLoader(data, batch_size=32, shuffle=True)

    def accuracy(self) -> float:
        self.eval()
        with torch.no_grad():
            hits = (self.net(self.x).argmax(1) == self.y).float().mean().item()
        self.train()
        return hits


class KeepTrained(L.Callback):
    """Keeps the trained weights as training ends, before the EMA callback replaces them."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.state = copy.deepcopy(pl_module.state_dict())


def test_a_short_run_averages_its_recent_weights(tmp_path: Path) -> None:
    """150 steps: the averaged weights (which Lightning validates, tests, saves and leaves in the
    module at the end) score as the trained ones do. A fixed decay of 0.999, without the
    warm-up, keeps 86% of the weight on the initial weights: 44% here against 99%."""
    cfg = compose_cfg("train", ["callbacks=ema"], tmp_path)
    L.seed_everything(0)
    module = Separable()
    initial = module.accuracy()
    kept = KeepTrained()
    trainer = L.Trainer(max_steps=150, callbacks=[kept, instantiate(cfg.callbacks.ema)],
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module)
    averaged = module.accuracy()
    module.load_state_dict(kept.state)
    trained = module.accuracy()
    assert trained > 0.95 > initial + 0.2, (initial, trained)
    assert averaged >= trained - 0.01, (averaged, trained)
