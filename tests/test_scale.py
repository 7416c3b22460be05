"""The multi-GPU and cluster paths, checked on the CPU: SyncBatchNorm conversion, RNG state per
rank, device counts, data workers, unreadable images and the SLURM launcher's config checks."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from mobilenet_lab.trainer import build_trainer

CONF = Path(__file__).resolve().parents[1] / "conf"
FAMILIES = sorted(path.stem for path in (CONF / "model").glob("*.yaml"))


def test_ddp_preset_syncs_batchnorm_without_losing_timm_activations(make_cfg) -> None:
    """The layer sync the ``ddp`` preset gives DDP converts every family (timm's BatchNormAct2d
    included) into a network that computes the same logits, and reverts to one too."""
    cfg = make_cfg("train", ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                             "trainer.precision=32"])  # fmt: skip
    layer_sync = build_trainer(cfg).strategy._layer_sync  # what DDPStrategy applies in fit
    assert layer_sync is not None
    images = torch.randn(2, 1, 32, 32)
    for family in FAMILIES:
        net = instantiate(make_cfg("train", [f"model={family}"]).model).eval()
        with torch.no_grad():
            for _ in range(2):  # give BatchNorm running statistics that are not 0 and 1
                net.train()(torch.randn(4, 1, 32, 32))
            expected = net.eval()(images)
            converted = layer_sync.apply(copy.deepcopy(net)).eval()
            assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules())
            torch.testing.assert_close(converted(images), expected, msg=family)
            reverted = layer_sync.revert(converted).eval()
            assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in reverted.modules())
            torch.testing.assert_close(reverted(images), expected, msg=family)
