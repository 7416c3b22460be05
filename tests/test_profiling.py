"""The profiler against the paper's Tables 2, 6 and 7 and timm's published V2/V3 figures."""

from __future__ import annotations

import csv
import itertools
import json
import math
import time
from pathlib import Path

import pytest
import torch

from mobilenet_lab.analysis.timing import default_device, training_images_per_second
from mobilenet_lab.profile import profile

FAST = ["speed.repeats=1", "speed.warmup=0", "speed.batch_size=2"]

# Tables 6 and 7 of the paper: (alpha, size) -> (million mult-adds, million params), as printed.
PAPER = {
    (1.0, 224): (569, 4.2), (0.75, 224): (325, 2.6), (0.5, 224): (149, 1.3),
    (0.25, 224): (41, 0.5), (1.0, 192): (418, 4.2), (1.0, 160): (290, 4.2),
    (1.0, 128): (186, 4.2),
}  # fmt: skip
# Table 2 (alpha 1.0, 224): share of mult-adds and of parameters per layer type, in percent.
# The paper prints 1.19% for the 3x3 stem, which leaves its column summing to 99.29%; the stem's
# 112*112*32*27 = 10.84 M mult-adds are 1.91% of 568.7 M (the two digits swapped), and 1.91 is
# what makes the column sum to 100%.
TABLE_2 = {
    "pointwise_1x1": (94.86, 74.59),
    "depthwise_3x3": (3.06, 1.06),
    "stem_3x3": (1.91, 0.02),
    "fully_connected": (0.18, 24.33),
}
# timm's model cards (huggingface.co/timm/<name>, "Model Stats") at 224 px, printed to one
# decimal: params (M), GMACs, activations (M). V2: mobilenetv2_100.ra_in1k; V3:
# mobilenetv3_large_100.ra_in1k, mobilenetv3_small_100.lamb_in1k; V1:
# mobilenetv1_100.ra4_e3600_r224_in1k.
TIMM_CARDS = {
    "mobilenet_v2": (3.5, 0.3, 6.7),
    "mobilenet_v3_large": (5.5, 0.2, 4.4),
    "mobilenet_v3_small": (2.5, 0.1, 1.4),
    "timm_mobilenet_v1": (4.2, 0.6, 5.0),
}
# timm's inference benchmark table (results/benchmark-infer-amp-nchw-pt113-cu117-rtx3090.csv)
# prints two decimals: mobilenetv3_small_100 has 0.06 GMACs, 1.42 M activations, 2.54 M params.
TIMM_BENCHMARK_V3_SMALL = (2.54, 0.06, 1.42)


@pytest.mark.parametrize(("alpha", "size"), list(PAPER))
def test_v1_rows_reproduce_tables_6_and_7(make_cfg, alpha: float, size: int) -> None:
    overrides = [f"model.alpha={alpha}", f"data.image_size={size}", *FAST]
    row = profile(make_cfg("profile", overrides))
    macs, params = PAPER[(alpha, size)]
    if size == 160:  # printed 290: the exact 290.7 truncated, not rounded
        assert round(row["mult_adds"] / 1e6, 1) == 290.7
    else:
        assert round(row["mult_adds"] / 1e6) == macs
    assert round(row["params"] / 1e6, 1) == params


def test_v1_layer_shares_reproduce_table_2(make_cfg) -> None:
    row = profile(make_cfg("profile", FAST))
    for kind, (macs_share, params_share) in TABLE_2.items():
        assert row[f"mult_adds_%_{kind}"] == pytest.approx(macs_share, abs=0.02)
        assert row[f"params_%_{kind}"] == pytest.approx(params_share, abs=0.02)


@pytest.mark.parametrize("family", list(TIMM_CARDS))
def test_timm_rows_agree_with_timm_model_cards(make_cfg, family: str) -> None:
    row = profile(make_cfg("profile", [f"model={family}", *FAST]))
    params, gmacs, activations = TIMM_CARDS[family]
    assert round(row["params"] / 1e6, 1) == params
    assert round(row["mult_adds"] / 1e9, 1) == gmacs
    assert round(row["activations"] / 1e6, 1) == activations
    # fp32 activations: 4 bytes each, within the card's rounding of the count (+-0.05 M).
    mib = activations * 1e6 * 4 / 2**20
    assert row["activation_mib_fp32"] == pytest.approx(mib, abs=0.05e6 * 4 / 2**20)
    if family == "mobilenet_v3_small":
        params, gmacs, activations = TIMM_BENCHMARK_V3_SMALL
        assert round(row["params"] / 1e6, 2) == params
        assert round(row["mult_adds"] / 1e9, 2) == gmacs
        assert round(row["activations"] / 1e6, 2) == activations


def test_speed_figures_are_read_off_the_clock(make_cfg, tmp_path: Path, monkeypatch) -> None:
    """A clock that advances 4 ms per reading: every timed call takes 4 ms, so the row must say
    4 ms at batch 1 and 2 / 0.004 = 500 images/s at batch 2, whatever the machine's speed."""
    ticks = itertools.count()
    monkeypatch.setattr(time, "perf_counter", lambda: 0.004 * next(ticks))
    overrides = ["model.alpha=0.25", "data.image_size=128", "speed.repeats=3", "speed.warmup=1",
                 "speed.batch_size=2", "device=cpu"]  # fmt: skip
    row = profile(make_cfg("profile", overrides))
    monkeypatch.undo()
    assert row["latency_ms_batch_1"] == pytest.approx(4.0)
    assert row["images_per_s_batch_2"] == pytest.approx(500.0)
    assert row["device"] == "cpu"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["params"] == row["params"]
    with open(tmp_path / "run" / "profile.csv") as file:
        (saved,) = list(csv.DictReader(file))
    assert int(saved["mult_adds"]) == row["mult_adds"]


def test_device_auto_picks_cuda_when_there_is_one(make_cfg, monkeypatch) -> None:
    # Both answers on any machine: CUDA's presence is patched, not read off this one.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    row = profile(make_cfg("profile", ["model.alpha=0.25", "data.image_size=128", *FAST]))
    assert row["device"] == "cpu"
    assert math.isfinite(row["latency_ms_batch_1"]) and row["latency_ms_batch_1"] > 0


@pytest.mark.slow
def test_profile_multirun_writes_one_csv_row_per_model_and_size(run_main, tmp_path: Path) -> None:
    result = run_main("scripts/profile_model.py", "-m", "model.alpha=1.0,0.25",
                     "data.image_size=224,128", *FAST, f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "profile" / "multiruns").glob("*")
    with open(sweep / "summary.csv") as file:
        rows = list(csv.DictReader(file))
    assert {(row["alpha"], row["image_size"]) for row in rows} == {
        ("1.0", "224"), ("1.0", "128"), ("0.25", "224"), ("0.25", "128")}  # fmt: skip
    assert "profile multirun summary" in result.stdout


def test_training_speed_yardstick_gives_a_plausible_rate() -> None:
    """The images/s the benchmarks set their timings beside: whole batches over timed steps."""
    rate = training_images_per_second(seconds=0.2, batch_size=4, warmup_steps=1)
    assert 0 < rate < 1e6
