"""The GPU paths: bf16-mixed with channels-last, torch.compile, the SyncBatchNorm conversion
under DDP and the profiler on CUDA. Marked ``gpu``: skipped, with the reason shown, where CUDA
is absent."""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from mobilenet_lab.profile import profile
from mobilenet_lab.runs.checkpoint import load_checkpoint
from mobilenet_lab.train import train
from tests.conftest import norm_layer_types, reverted_types, synced_types

pytestmark = pytest.mark.gpu
TINY = ["debug=limit", "trainer.enable_progress_bar=false", "~callbacks.model_summary",
        "model.alpha=0.25"]  # fmt: skip


class SeesTheNetwork(L.Callback):
    """Records, as training starts, what the strategy made of the network and the batches, and
    as testing starts, the network's norm layers again."""

    seen: ClassVar[dict] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            SeesTheNetwork.seen = {
                "norms": norm_layer_types(pl_module.net),
                "world_size": trainer.world_size,
                "device": batch[0].device.type,
                "autocast": torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda")
                else None,
            }  # fmt: skip

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0:
            SeesTheNetwork.seen["test_norms"] = norm_layer_types(pl_module.net)


PROBE = ["+callbacks.probe._target_=tests.test_gpu.SeesTheNetwork"]


def test_bf16_mixed_channels_last_trains_one_epoch(make_cfg, tmp_path: Path) -> None:
    overrides = ["trainer=gpu", *TINY, "trainer.max_epochs=1", "module.channels_last=true", *PROBE]
    report = train(make_cfg("train", overrides, tmp_path / "run"))
    assert SeesTheNetwork.seen["device"] == "cuda"
    assert SeesTheNetwork.seen["autocast"] == torch.bfloat16
    assert math.isfinite(report["test"]["test/loss"]) and report["epochs"] == 1


def test_compile_keeps_plain_parameter_names(make_cfg, tmp_path: Path) -> None:
    overrides = ["trainer=gpu", *TINY, "trainer.max_epochs=1", "module.compile=true"]
    report = train(make_cfg("train", overrides, tmp_path / "run"))
    keys = load_checkpoint(report["best_checkpoint"])["state_dict"]
    assert "net.classifier.weight" in keys and not any("_orig_mod" in key for key in keys)
    assert math.isfinite(report["test"]["test/loss"])


@pytest.mark.parametrize("model", ["mobilenet_v1", "mobilenet_v3_small"])
def test_ddp_on_one_gpu_converts_every_batchnorm_to_sync_and_back(
    make_cfg, tmp_path: Path, model: str
) -> None:
    """The ``ddp`` preset's conversion as a DDP fit on a GPU applies it: every BatchNorm trains
    as a SyncBatchNorm (timm's BatchNormAct2d as timm's SyncBatchNormAct, its activation kept)
    and is reverted before testing. One process syncs nothing (torch's SyncBatchNorm computes
    plain batch statistics at world size 1): the statistics synced across GPUs need two."""
    overrides = [f"model={model}", "trainer=ddp", "trainer.devices=1", *TINY,
                 "trainer.max_epochs=1", *PROBE]  # fmt: skip
    if model != "mobilenet_v1":
        overrides.remove("model.alpha=0.25")  # timm builds 0.5, 0.75 and 1.0
    cfg = make_cfg("train", overrides, tmp_path / "run")
    built = norm_layer_types(instantiate(cfg.model))
    report = train(cfg)
    seen = SeesTheNetwork.seen
    assert seen["device"] == "cuda" and seen["world_size"] == 1
    assert built and seen["norms"] == synced_types(built)
    assert seen["test_norms"] == reverted_types(built)
    assert math.isfinite(report["test"]["test/loss"])


def test_profile_on_cuda(make_cfg) -> None:
    overrides = ["device=auto", "speed.repeats=3", "speed.warmup=1", "speed.batch_size=32"]
    row = profile(make_cfg("profile", overrides))
    assert row["device"] == "cuda" and row["latency_ms_batch_1"] > 0
    assert round(row["mult_adds"] / 1e6) == 569  # the counts do not depend on the device
