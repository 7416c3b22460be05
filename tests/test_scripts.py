"""Each benchmark script in a smoke mode: it runs to the end and prints its ratios."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

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
    """Every input path's row: its images/s per worker, the ratio to V1's training speed at
    224 px, and the workers for the model, 2,000 and 10,000 images/s (or, for a data module
    not in this checkout, the reason it was skipped)."""
    result = run_main("scripts/benchmark_data.py", "--quick")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"V1 \(alpha 1.0, 224 px, batch 8\) trains at [\d,.]+ images/s", out)
    figures = r" +[\d,]+ +[\d.]+x +\d+ +\d+ +\d+$"
    for name in ("image folder, PIL", "GPU decode, CPU side"):
        assert re.search(rf"^{re.escape(name)}{figures}", out, re.M), name
    for name in ("hf (parquet), PIL", "shards (LitData), PIL"):
        assert re.search(rf"^{re.escape(name)}({figures}| +skipped: No module)", out, re.M), name


def test_benchmark_distillation_smoke(run_main, digits_teacher) -> None:
    quick = ["--rounds", "1", "--steps", "1", "--speed-seconds", "0.2", "--batch-size", "8"]
    result = run_main("scripts/benchmark_distillation.py", "--teacher", str(digits_teacher),
                      *quick)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"trains at [\d,]+ images/s here", result.stdout)
    for variant in ("plain", r"distilled, \w+/best\.ckpt \(40 px\)", r"cached, \w+/best\.ckpt"):
        assert re.search(rf"{variant} .* [\d.]+ ms a step +[\d.]+x plain", result.stdout), variant


def test_benchmark_qat_smoke(run_main, learned_run: Path, tmp_path: Path) -> None:
    """One seed of V1 0.25 for LiteRT, its float run the suite's learned one (read as finished,
    as the script reads an interrupted benchmark's runs), its fine-tune 3 batches an epoch: its
    line of medians, the weights' SQNR, the results and the picture written, and the one
    command's ``.tflite`` file, which predicts as the QAT network on every test image (the
    ExecuTorch file and per-tensor QAT: tests/test_qat.py)."""
    from mobilenet_lab.deploy.formats import FORMATS
    from tests.test_qat import file_accuracy_and_agreement, qat_network

    shutil.copytree(learned_run.parents[1], tmp_path / "v1_0.25" / "float_seed0")
    result = run_main("scripts/benchmark_qat.py", "--quick", "--seeds", "1", "--models",
                      "v1_0.25", "--format", "tflite", "--out", str(tmp_path))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"training throughput on this machine: [\d.]+ images/s", result.stdout)
    line = r"v1_0.25 per-channel +fp32 [\d.]+% \(lowest [\d.]+%\) +PTQ [\d.]+% .* QAT-fp32 "
    assert re.search(line, result.stdout)
    assert re.search(r"v1_0.25 int8 weight SQNR .* depthwise [\d.]+ / [\d.]+ dB", result.stdout)
    results = json.loads((tmp_path / "results_tflite.json").read_text())
    assert set(results["results"]) == {"v1_0.25 per-channel"}
    assert (tmp_path / "qat_tflite.png").stat().st_size > 10_000
    run_dir = tmp_path / "v1_0.25" / "qat_tflite_per_channel_seed0"
    exported = json.loads((run_dir / "metrics.json").read_text())["export"]
    assert exported["files"] == [str(run_dir / "model.int8.tflite")]
    assert exported["tflite_qat/latency_ms_batch_1"] > 0
    net, cfg = qat_network(run_dir / "checkpoints" / "best.ckpt")
    tflite = FORMATS["tflite"].open(str(run_dir / "model.int8.tflite"))
    accuracy, agreement = file_accuracy_and_agreement(tflite, net, cfg)
    assert agreement >= 0.97
    assert accuracy == pytest.approx(exported["qat/test_acc"])


def test_gpu_check_dry_run(tmp_path: Path) -> None:
    """The GPU proof script's dry run (``--cpu``), from another folder and with PYTHONPATH
    emptied (the script sets it itself): the table of the four models, written."""
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": ""}
    script = ROOT / "scripts/gpu_check.sh"
    result = subprocess.run(["bash", str(script), "--cpu", str(tmp_path / "out")], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "pytest -m gpu skipped (--cpu); benchmark passed" in result.stdout
    table = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    names = {"V1 1.0 (ours)", "timm mobilenetv1_100", "timm mobilenetv2_100",
             "timm mobilenetv3_large_100"}  # fmt: skip
    decode = "GPU decode (data.decode=gpu)"
    assert {row["name"] for row in table["rows"]} == {*names, decode}
    assert all(row["status"] == "ok" and row["images_per_s"] > 0 for row in table["rows"])
    rates = {row["name"]: row["images_per_s"] for row in table["rows"]}
    markdown = (tmp_path / "out" / "gpu_check.md").read_text()
    for name in names:  # each model row ends with the ratio input / model
        ratio = re.search(rf"^\| {re.escape(name)} \| false \| .* \| ([\d.]+) \|$", markdown, re.M)
        assert ratio and float(ratio[1]) == pytest.approx(rates[decode] / rates[name], rel=0.01)
    assert re.search(rf"Input, {re.escape(decode)}: 16 JPEGs .* [\d,]+ images/s", markdown)
    bad = subprocess.run(["bash", str(script), "--gpus=2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option --gpus=2" in bad.stderr
