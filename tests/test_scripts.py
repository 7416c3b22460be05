"""Each benchmark script in a smoke mode: it runs to the end and prints its ratios."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow


def test_benchmark_train_smoke(run_main) -> None:
    quick = ["--seeds", "42", "--speed-seconds", "1"]
    result = run_main("scripts/benchmark_train.py", *quick, "debug=limit", "model.alpha=0.25",
                      "trainer.enable_progress_bar=false")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"trains at [\d.]+ images/s here", result.stdout)
    per_seed = (r"seed 42: test acc [\d.]+ +wall +[\d.]+ s +first step after +[\d.]+ s +\d+ "
                r"training image passes +V1 at [\d.]+ images/s")  # fmt: skip
    assert re.search(per_seed, result.stdout)
    assert re.search(r"image passes +\d+ = [\d.]+x the 20,000 budget", result.stdout)
    assert re.search(r"median wall .* = [\d.]+x the 60 s target", result.stdout)


def test_benchmark_data_smoke(run_main) -> None:
    result = run_main("scripts/benchmark_data.py", "--seconds", "0.2")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("digits", "cifar10", "imagefolder"):
        assert name in result.stdout.lower()
    assert re.search(r"[\d.]+x", result.stdout)  # ratios against the model's training speed


def test_benchmark_distillation_smoke(run_main, digits_teacher) -> None:
    quick = ["--rounds", "1", "--steps", "1", "--speed-seconds", "0.2", "--batch-size", "8"]
    result = run_main("scripts/benchmark_distillation.py", "--teacher", str(digits_teacher),
                      *quick)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"trains at [\d,]+ images/s here", result.stdout)
    for variant in ("plain", r"distilled, \w+/best\.ckpt \(40 px\)", r"cached, \w+/best\.ckpt"):
        assert re.search(rf"{variant} .* [\d.]+ ms a step +[\d.]+x plain", result.stdout), variant
