"""The GPU paths: bf16-mixed with channels-last, torch.compile, SyncBatchNorm under DDP and the
profiler on CUDA. Marked ``gpu``: skipped, with the reason shown, where CUDA is absent."""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import lightning as L
import pytest
import torch

from mobilenet_lab.profile import profile
from mobilenet_lab.runs.checkpoint import load_checkpoint
from mobilenet_lab.train import train

pytestmark = pytest.mark.gpu
TINY = ["debug=limit", "trainer.enable_progress_bar=false", "~callbacks.model_summary",
        "model.alpha=0.25"]  # fmt: skip


class SeesTheNetwork(L.Callback):
    """Records, as training starts, what the strategy made of the network and the batches."""

    seen: ClassVar[dict] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            SeesTheNetwork.seen = {
                "sync_bn": any(isinstance(m, torch.nn.SyncBatchNorm) for m in pl_module.modules()),
                "device": batch[0].device.type,
                "autocast": torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda")
                else None,
            }  # fmt: skip


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


def test_ddp_on_one_gpu_uses_sync_batchnorm(make_cfg, tmp_path: Path) -> None:
    overrides = ["trainer=ddp", "trainer.devices=1", *TINY, "trainer.max_epochs=1", *PROBE]
    report = train(make_cfg("train", overrides, tmp_path / "run"))
    assert SeesTheNetwork.seen["sync_bn"] and SeesTheNetwork.seen["device"] == "cuda"
    assert math.isfinite(report["test"]["test/loss"])


def test_profile_on_cuda(make_cfg) -> None:
    overrides = ["device=auto", "speed.repeats=3", "speed.warmup=1", "speed.batch_size=32"]
    row = profile(make_cfg("profile", overrides))
    assert row["device"] == "cuda" and row["latency_ms_batch_1"] > 0
    assert round(row["mult_adds"] / 1e6) == 569  # the counts do not depend on the device
