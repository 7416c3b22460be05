"""fp32, post-training int8 (PTQ) and quantization-aware int8 (QAT) test accuracy on the digits
(issue 31), over seeds: each model trained in float, then fine-tuned with ``qat=<format>``
whose end writes the QAT file and scores the fp32 and PTQ files of the float run beside it, on
the same test images. Per-channel int8 weights, and per-tensor too for the ``--per-tensor``
models.

    python scripts/benchmark_qat.py [--seeds 3] [--models v1_0.25 v1_0.75 v2_0.35 v3_small]
        [--format executorch] [--per-tensor v1_0.25 v1_0.75] [--out logs/benchmark_qat]

Prints, per model and quantizer setting, the median and lowest of each accuracy, QAT's
distance to fp32 and the share of PTQ's loss that QAT recovers; writes ``results_<format>.json``
and ``qat_<format>.png`` to ``--out``. Runs already finished in ``--out`` are read, not trained
again (the float runs are shared by the formats). V1's training speed on this machine is
printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from mobilenet_lab.analysis.timing import training_images_per_second

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "v1_0.25": ["model=mobilenet_v1", "model.alpha=0.25"],
    "v1_0.75": ["model=mobilenet_v1", "model.alpha=0.75"],
    "v2_0.35": ["model=mobilenet_v2", "model.alpha=0.35"],
    "v3_small": ["model=mobilenet_v3_small"],
}
# --quick: 3 batches an epoch, 2 epochs, a few calibration and check images (a smoke run)
QUICK_FLOAT = ["debug=limit"]
QUICK_QAT = ["debug=limit", "qat.freeze_observers_epoch=1"]
FILES = {"fp32": "fp32/test_acc", "ptq": "int8/test_acc", "qat": "qat/test_acc"}


def run(folder: Path, *overrides: str) -> dict[str, Any]:
    """``src/train.py`` into ``folder`` (its ``metrics.json`` read if it is there already)."""
    metrics = folder / "metrics.json"
    if not metrics.is_file():
        command = [sys.executable, "src/train.py", *overrides, f"hydra.run.dir={folder}",
                   "trainer.enable_progress_bar=false", "~callbacks.model_summary"]  # fmt: skip
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        refused = done.returncode == 1 and '"status": "refused"' in _text(metrics)
        if done.returncode != 0 and not refused:  # a refused int8 file is a result too
            sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(metrics.read_text())


def _text(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def measure(
    out: Path, name: str, seed: int, file_format: str, per_channel: bool, quick: bool
) -> dict:
    """One seed of one model: the float run (shared by both settings), then its QAT run."""
    float_run = out / name / f"float_seed{seed}"
    run(float_run, *MODELS[name], f"seed={seed}", *(QUICK_FLOAT if quick else []))
    setting = "per_channel" if per_channel else "per_tensor"
    qat = run(out / name / f"qat_{file_format}_{setting}_seed{seed}", f"qat={file_format}",
              f"qat.from={float_run / 'checkpoints' / 'best.ckpt'}", f"seed={seed}",
              f"qat.per_channel={str(per_channel).lower()}",
              *(QUICK_QAT if quick else []))  # fmt: skip
    exported = qat["export"]
    return {**{file: exported[key] for file, key in FILES.items()},
            "agreement": exported["qat/top1_agreement"],
            "qat_torch": qat["test"]["test/acc"]}  # fmt: skip


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    """Median and lowest of each accuracy over the seeds; QAT's median distance to fp32; the
    share of PTQ's median loss QAT's median recovers (None when PTQ lost under a point)."""
    out: dict[str, Any] = {}
    for key in (*FILES, "agreement"):
        values = [row[key] for row in rows]
        out[f"{key}_median"], out[f"{key}_lowest"] = statistics.median(values), min(values)
    out["qat_minus_fp32"] = out["qat_median"] - out["fp32_median"]
    ptq_loss = out["fp32_median"] - out["ptq_median"]
    recovered = out["qat_median"] - out["ptq_median"]
    out["recovered_share"] = recovered / ptq_loss if ptq_loss >= 0.01 else None
    return out


def weight_sqnr(ckpt_path: Path) -> dict[str, tuple[float, float]]:
    """Median signal-to-quantization-noise ratio (dB) of symmetric int8 weights, one scale per
    tensor and one per output channel, over each kind of V1 convolution (BatchNorm folded into
    them, as the files have it): why depthwise layers want per-channel scales."""
    from omegaconf import OmegaConf

    from mobilenet_lab.deploy.loading import load_network
    from mobilenet_lab.runs.checkpoint import load_checkpoint
    from mobilenet_lab.runs.record import RunRecord

    checkpoint = load_checkpoint(str(ckpt_path))
    net = load_network(OmegaConf.create(RunRecord.of(checkpoint).config), checkpoint, "averaged")
    modules = dict(net.named_modules())
    found: dict[str, list[tuple[float, float]]] = {}
    for name, conv in modules.items():
        if not isinstance(conv, torch.nn.Conv2d):
            continue
        parent, index = name.rsplit(".", 1)
        norm = modules.get(f"{parent}.{int(index) + 1}")  # V1's conv -> BatchNorm -> ReLU
        weight = conv.weight.detach()
        if isinstance(norm, torch.nn.BatchNorm2d):
            weight = weight * (norm.weight / torch.sqrt(norm.running_var + norm.eps)).detach().view(
                -1, 1, 1, 1
            )
        channel_max = weight.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        kind = (
            "depthwise"
            if conv.groups > 1
            else "pointwise"
            if conv.kernel_size == (1, 1)
            else "stem"
        )
        found.setdefault(kind, []).append(
            (_sqnr(weight, channel_max.max() / 127), _sqnr(weight, channel_max / 127))
        )
    return {kind: (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows))
            for kind, rows in found.items()}  # fmt: skip


def _sqnr(weight: torch.Tensor, scale: torch.Tensor) -> float:
    rounded = (weight / scale).round().clamp(-127, 127) * scale
    return 10 * math.log10(float(weight.pow(2).sum() / (weight - rounded).pow(2).sum()))


def plot(
    results: dict[str, dict[str, Any]], path: Path, throughput: float, file_format: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.9 * len(names) + 2), 4.5))  # the labels fit
    width = 0.8 / 3
    for i, (file, label) in enumerate([("fp32", "fp32"), ("ptq", "PTQ int8"),
                                       ("qat", "QAT int8")]):  # fmt: skip
        medians = [100 * results[n][f"{file}_median"] for n in names]
        lowest = [100 * results[n][f"{file}_lowest"] for n in names]
        xs = [j + (i - 1) * width for j in range(len(names))]
        ax.bar(xs, medians, width, label=f"{label} (median; tick: lowest seed)")
        ax.scatter(xs, lowest, marker="_", color="black", s=120, zorder=3)
    ax.set_xticks(range(len(names)), [n.replace("_", " ", 1) for n in names])
    floor = min(100 * r[f"{f}_lowest"] for r in results.values() for f in FILES)
    ax.set_ylim(max(0, floor - 3), 100.5)
    ax.set_ylabel("test accuracy on the digits (%)")
    ax.set_xlabel(f"model and int8 weight scales (V1 trains {throughput:.0f} images/s here)")
    ax.set_title(f"fp32 vs post-training vs quantization-aware int8 ({file_format} files)")
    ax.legend(loc="upper left", fontsize=8)  # above the lower bars: no bar under it
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--format", default="executorch", choices=["executorch", "tflite"])
    parser.add_argument(
        "--per-tensor",
        nargs="*",
        default=[],
        choices=list(MODELS),
        help="models also run with per-tensor int8 weights",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "benchmark_qat")
    parser.add_argument("--quick", action="store_true", help="3 batches an epoch (smoke run)")
    args = parser.parse_args()
    throughput = training_images_per_second(10)
    print(f"V1 (alpha 1.0) training throughput on this machine: {throughput:.0f} images/s")
    results: dict[str, dict[str, Any]] = {}
    for name in args.models:
        for per_channel in [True, False] if name in args.per_tensor else [True]:
            rows = [measure(args.out.resolve(), name, seed, args.format, per_channel, args.quick)
                    for seed in range(args.seeds)]  # fmt: skip
            label = f"{name} {'per-channel' if per_channel else 'per-tensor'}"
            results[label] = {**summary(rows), "seeds": rows}
            r = results[label]
            shown = "-" if r["recovered_share"] is None else f"{r['recovered_share']:.0%}"
            print(f"{label:24s} fp32 {r['fp32_median']:.2%} (lowest {r['fp32_lowest']:.2%})  "
                  f"PTQ {r['ptq_median']:.2%} ({r['ptq_lowest']:.2%})  "
                  f"QAT {r['qat_median']:.2%} ({r['qat_lowest']:.2%})  "
                  f"QAT-fp32 {100 * r['qat_minus_fp32']:+.2f} pt  recovered {shown}  "
                  f"file/network agreement {r['agreement_lowest']:.2%} lowest",
                  flush=True)  # fmt: skip
    float_runs = {name: args.out.resolve() / name / "float_seed0" for name in args.models}
    sqnr = {name: weight_sqnr(run / "checkpoints" / "best.ckpt")
            for name, run in float_runs.items() if name.startswith("v1")}  # fmt: skip
    for name, kinds in sqnr.items():
        shown = ", ".join(f"{kind} {tensor:.1f} / {channel:.1f} dB"
                          for kind, (tensor, channel) in kinds.items())  # fmt: skip
        print(f"{name} int8 weight SQNR per tensor / per channel (median layer): {shown}")
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"v1_images_per_s": throughput, "format": args.format, "results": results,
              "weight_sqnr_db": sqnr}  # fmt: skip
    results_path = args.out / f"results_{args.format}.json"
    picture = args.out / f"qat_{args.format}.png"
    results_path.write_text(json.dumps(record, indent=2) + "\n")
    plot(results, picture, throughput, args.format)
    print(f"Wrote {results_path} and {picture}")


if __name__ == "__main__":
    main()
