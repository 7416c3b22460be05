"""Measures the exports side by side: every runtime's latency against the machine's limit.

    python scripts/benchmark_export.py [--ckpt <digits run>/checkpoints/best.ckpt] [--repeats 20]

1. One table, measured one after the other in this process, for MobileNet V1 alpha 1.0 at
   224 px (ImageNet shape, 1,000 classes, untrained: speed does not depend on the weights) and
   the run's network at its size (``--ckpt``; without it the default run's network, V1 0.75
   at 40 px, untrained), batch 1, at 1 thread and at all threads: PyTorch eager, ONNX Runtime,
   ExecuTorch (XNNPACK) and LiteRT, fp32 and int8 (calibrated on 32 random images): latency,
   multiply-adds per second achieved, and that as a fraction of a 2048 x 2048 matrix product
   at the same thread count (fp32; int8 through ``torch._int_mm`` where the CPU has VNNI).
   Issue 20's target: ExecuTorch fp32 latency <= ONNX Runtime fp32 x 1.2 at 1 thread.
2. With ``--ckpt`` (a digits run): the user's commands end to end in fresh processes.
   ``eval.py`` test accuracy; ``export.py quantize=int8`` fp32 vs int8 test accuracy; the
   test split written as PNG files, ``predict.py`` on them from the ``.ckpt`` and from the
   ``.onnx``: accuracy against eval.py's (target: within one image) and top-1 agreement
   (target >= 99.5%).
3. With ``--parity``: fp32 parity of the ExecuTorch and LiteRT files of V1 1.0 and 0.25 and
   timm's V2 and V3-small at 224 px against PyTorch eval.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import argparse
import csv
import json
import os
import subprocess
import tempfile

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from mobilenet_lab.analysis.counting import count_by_layer_type
from mobilenet_lab.analysis.runtime_speed import (
    RUNTIMES,
    export_all,
    has_vnni,
    latencies,
    matmul_macs_per_second,
    table_rows,
)
from mobilenet_lab.analysis.tables import print_table
from mobilenet_lab.analysis.timing import training_images_per_second
from mobilenet_lab.deploy.formats import FORMATS
from mobilenet_lab.deploy.loading import TorchModel
from mobilenet_lab.deploy.parity import logit_parity
from mobilenet_lab.deploy.preprocessing import RESIZE_WHOLE, Preprocessing
from mobilenet_lab.models import build_mobilenet_v1

PARITY_COLUMNS = ["network", "format", "max_abs_diff", "rounding", "bound", "logit_scale",
                  "passed", "top1_agreement", "not_delegated"]  # fmt: skip
COLUMNS = ["network", "threads", "runtime", "latency_ms", "gmacs_per_s", "of_fp32_limit",
           "of_int8_limit"]  # fmt: skip

ROOT = Path(__file__).resolve().parents[1]


def networks(ckpt: str | None, quick: bool) -> list[tuple[str, nn.Module, Preprocessing]]:
    """(name, eval network, preprocessing) of each network the table times."""
    nets = []
    if not quick:
        net = build_mobilenet_v1(num_classes=1000, in_chans=3, alpha=1.0).eval()
        prep = Preprocessing(RESIZE_WHOLE, 224, 3, (0.5,) * 3, (0.25,) * 3, None, alpha=1.0)
        nets.append(("V1 1.0 @224", net, prep))
    if ckpt:
        model = TorchModel(ckpt, "averaged", "cpu")
        prep = model.preprocessing
        nets.append((f"run: V1 {prep.alpha} @{prep.image_size}", model.net, prep))
    else:
        net = build_mobilenet_v1(num_classes=10, in_chans=1, alpha=0.75).eval()
        prep = Preprocessing(RESIZE_WHOLE, 40, 1, (0.5,), (0.25,), None, alpha=0.75)
        nets.append(("default: V1 0.75 @40", net, prep))
    return nets


def runtime_table(
    ckpt: str | None, quick: bool, repeats: int, folder: Path, runtimes: tuple[str, ...]
) -> list[dict]:
    all_threads = len(os.sched_getaffinity(0))
    thread_counts = sorted({1, all_threads})
    limits = {t: {"fp32": matmul_macs_per_second(t),
                  "int8": matmul_macs_per_second(t, int8=True) if has_vnni() else None}
              for t in thread_counts}  # fmt: skip
    rows = []
    for name, net, prep in networks(ckpt, quick):
        size = prep.image_size
        image = torch.randn(1, prep.in_chans, size, size)
        mult_adds = sum(count_by_layer_type(net, image)["mult_adds"].values())
        calibration = list(torch.randn(32, prep.in_chans, size, size).split(8))
        out = folder / name.replace(" ", "_").replace(":", "").replace("@", "")
        out.mkdir()
        files = export_all(net, prep, image, out, calibration, runtimes)
        for threads in thread_counts:
            measured = latencies(net, files, image, threads, repeats)
            rows += table_rows(name, mult_adds, measured, threads, limits[threads])
    for threads in thread_counts:
        limit = limits[threads]
        int8 = f", int8 {limit['int8'] / 1e9:.1f}" if limit["int8"] else " (no VNNI: no int8 limit)"
        print(f"limit at {threads} thread(s): fp32 {limit['fp32'] / 1e9:.1f} GMAC/s{int8}")
    return rows


def parity_rows(folder: Path) -> list[dict]:
    """fp32 parity of each phone format against PyTorch eval at 224 px (1,000 classes, random
    weights and BatchNorm statistics): V1 1.0 and 0.25, timm's V2 and V3-small, judged as
    ``export.py`` judges a file (``deploy.parity``, the default ``parity_factor``)."""
    import timm

    torch.manual_seed(0)
    nets = {"V1 1.0": build_mobilenet_v1(num_classes=1000, in_chans=3, alpha=1.0),
            "V1 0.25": build_mobilenet_v1(num_classes=1000, in_chans=3, alpha=0.25),
            "V2 1.0 (timm)": timm.create_model("mobilenetv2_100"),
            "V3-small 1.0 (timm)": timm.create_model("mobilenetv3_small_100")}  # fmt: skip
    prep = Preprocessing(RESIZE_WHOLE, 224, 3, (0.5,) * 3, (0.25,) * 3, None, alpha=1.0)
    images = torch.randn(8, 3, 224, 224)
    factor = OmegaConf.load(ROOT / "conf" / "export.yaml").parity_factor  # export.py's check
    rows = []
    for name, net in nets.items():
        for norm in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
            norm.running_mean.uniform_(-0.2, 0.2)
            norm.running_var.uniform_(0.5, 2.0)
        net.eval()
        for file_format in (fmt for fmt in FORMATS.values() if fmt.for_phones):
            path = folder / f"parity_{len(rows)}{file_format.suffix}"
            report = file_format.write(net, prep, images[:1], path)
            got = file_format.open(str(path)).logits(images)
            rows.append({"network": name, "format": file_format.name,
                         **logit_parity(net, got, images, factor),
                         "not_delegated": report.get("executorch/not_delegated", "-")})  # fmt: skip
    return rows


def run(*args: str) -> None:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")


def metrics_of(log_dir: Path, task: str) -> dict:
    (path,) = (log_dir / task / "runs").glob("*/metrics.json")
    return json.loads(path.read_text())


def write_test_pngs(ckpt: str, folder: Path) -> None:
    """The run's digits test split as 8-bit grey PNGs named ``<index>_<label>.png``."""
    from mobilenet_lab.data.digits import DigitsDataModule
    from mobilenet_lab.runs.checkpoint import read_checkpoint

    data_cfg = read_checkpoint(ckpt)[1].config["data"]
    data = DigitsDataModule(**{k: v for k, v in data_cfg.items() if not k.startswith("_")})
    data.setup("test")
    images, labels = data.splits["test"].tensors
    folder.mkdir()
    for i, (image, label) in enumerate(zip(images[:, 0].numpy(), labels.tolist(), strict=True)):
        pixels = np.round(image.astype(np.float32) * 255 / data.pixel_max).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}_{label}.png")


def predictions(log_dir: Path) -> dict[str, str]:
    (path,) = (log_dir / "predict" / "runs").glob("*/predictions.csv")
    with open(path, newline="") as file:
        return {Path(row["path"]).name: row["label_1"] for row in csv.DictReader(file)}


def digits_end_to_end(ckpt: str, folder: Path) -> dict[str, float]:
    logs = {name: folder / name for name in ("eval", "export", "predict_ckpt", "predict_onnx")}
    onnx_path = folder / "model.onnx"
    run("src/eval.py", f"ckpt_path={ckpt}", f"paths.log_dir={logs['eval']}", "logger=csv")
    run("src/export.py", f"ckpt_path={ckpt}", f"paths.log_dir={logs['export']}",
        f"output_path={onnx_path}", "quantize=int8")  # fmt: skip
    write_test_pngs(ckpt, folder / "pngs")
    for name, model in (("predict_ckpt", ckpt), ("predict_onnx", onnx_path)):
        run("src/predict.py", f"ckpt_path={model}", f"input={folder / 'pngs'}",
            f"paths.log_dir={logs[name]}")  # fmt: skip
    from_ckpt, from_onnx = predictions(logs["predict_ckpt"]), predictions(logs["predict_onnx"])
    truth = {name: name.split("_")[1].split(".")[0] for name in from_ckpt}
    exported = metrics_of(logs["export"], "export")
    test_acc = metrics_of(logs["eval"], "eval")["test"]["test/acc"]
    predict_acc = sum(from_ckpt[n] == truth[n] for n in truth) / len(truth)
    return {
        "test_images": len(truth),
        "eval_test_acc": test_acc,
        "predict_ckpt_acc": predict_acc,
        "predict_minus_eval_images": round((predict_acc - test_acc) * len(truth)),
        "ckpt_onnx_top1_agreement": sum(from_ckpt[n] == from_onnx[n] for n in truth) / len(truth),
        "onnx_fp32_test_acc": exported["fp32/test_acc"],
        "onnx_int8_test_acc": exported["int8/test_acc"],
        "int8_minus_fp32_points": 100 * (exported["int8/test_acc"] - exported["fp32/test_acc"]),
        "digits_torch_latency_ms": exported["torch/latency_ms_batch_1"],
        "digits_onnx_fp32_latency_ms": exported["onnx_fp32/latency_ms_batch_1"],
        "digits_onnx_int8_latency_ms": exported["onnx_int8/latency_ms_batch_1"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="a digits run's checkpoint for the end-to-end figures")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per measurement")
    parser.add_argument("--quick", action="store_true", help="the run's network only, not 224 px")
    parser.add_argument("--skip-speed", action="store_true", help="only the --ckpt figures")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated")
    parser.add_argument("--parity", action="store_true", help="fp32 parity of V1, V2, V3 files")
    args = parser.parse_args()
    print(f"V1 (alpha 1.0, 32 px, batch 128) trains at {training_images_per_second(3):.0f} "
          "images/s on this machine")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_speed:
            runtimes = tuple(args.runtimes.split(","))
            rows = runtime_table(args.ckpt, args.quick, args.repeats, Path(tmp), runtimes)
            print_table(rows, COLUMNS, title="batch-1 latency against the machine's limit (x86)")
            for name in dict.fromkeys(row["network"] for row in rows):
                at_1 = {r["runtime"]: r["latency_ms"] for r in rows
                        if r["network"] == name and r["threads"] == 1}  # fmt: skip
                if not {"executorch_fp32", "onnx_fp32"} <= at_1.keys():
                    continue
                ratio = at_1["executorch_fp32"] / at_1["onnx_fp32"]
                print(f"{name}: ExecuTorch fp32 / ONNX Runtime fp32 at 1 thread = {ratio:.2f} "
                      "(target <= 1.2)")  # fmt: skip
        if args.parity:
            print_table(parity_rows(Path(tmp)), PARITY_COLUMNS, title="fp32 parity, 224 px")
        if args.ckpt:
            results = digits_end_to_end(args.ckpt, Path(tmp) / "digits")
            width = max(map(len, results))
            for key, value in results.items():
                shown = f"{value:.4g}" if isinstance(value, float) else value
                print(f"{key:<{width}}  {shown}")
            print("targets: int8 within 1 point, predict within one image of eval, ckpt/onnx "
                  "top-1 agreement >= 0.995")  # fmt: skip


if __name__ == "__main__":
    main()
