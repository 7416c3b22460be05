"""Measures issue #9's targets for ONNX export, int8 quantization and predict.py.

    python scripts/benchmark_export.py [--ckpt <digits run>/checkpoints/best.ckpt] [--repeats 20]

1. Speed, MobileNet V1 alpha 1.0 at 224 px (ImageNet shape, 1,000 classes, untrained weights:
   speed does not depend on them): PyTorch eager, ONNX Runtime fp32 and int8 (calibrated on 32
   random images), measured one after the other in this process; batch-1 latency and batch
   throughput, and the ratios the targets name (fp32 / eager <= 0.6, int8 / fp32 <= 0.8).
2. With ``--ckpt`` (a digits run): the user's commands end to end in fresh processes.
   ``eval.py`` test accuracy; ``export.py quantize=int8`` fp32 vs int8 test accuracy; the
   test split written as PNG files, ``predict.py`` on them from the ``.ckpt`` and from the
   ``.onnx``: accuracy against eval.py's (target: within one image) and top-1 agreement
   (target >= 99.5%).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import argparse
import csv
import json
import subprocess
import tempfile

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from mobilenet_lab.deploy.onnx import INPUT_NAME, OnnxModel, write_onnx
from mobilenet_lab.deploy.preprocessing import RESIZE_WHOLE, Preprocessing
from mobilenet_lab.deploy.quantization import quantize_int8
from mobilenet_lab.export import speed
from mobilenet_lab.models import build_mobilenet_v1

ROOT = Path(__file__).resolve().parents[1]


def speed_at_224(folder: Path, repeats: int, batch_size: int, threads: int) -> dict[str, float]:
    net = build_mobilenet_v1(num_classes=1000, in_chans=3, alpha=1.0).eval()
    prep = Preprocessing(RESIZE_WHOLE, 224, 3, (0.5,) * 3, (0.25,) * 3, None, alpha=1.0)
    images = torch.randn(32, 3, 224, 224)
    fp32, int8 = folder / "v1_224.onnx", folder / "v1_224.int8.onnx"
    write_onnx(net, prep, images[:1], fp32)
    quantize_int8(fp32, int8, INPUT_NAME, iter(images.split(8)))
    models = {"fp32": OnnxModel(str(fp32), threads), "int8": OnnxModel(str(int8), threads)}
    settings = OmegaConf.create({"batch_size": batch_size, "repeats": repeats, "warmup": 3})
    return speed(net, models, images, settings)


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
    from mobilenet_lab.runs.checkpoint import load_checkpoint

    data_cfg = load_checkpoint(ckpt)["mobilenet_lab_run"]["config"]["data"]
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
    parser.add_argument("--batch-size", type=int, default=32, help="for the throughput")
    parser.add_argument("--threads", type=int, default=0, help="0: each library's default")
    parser.add_argument("--skip-speed", action="store_true", help="only the --ckpt figures")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"threads: torch {torch.get_num_threads()}, ONNX Runtime {args.threads or 'default'}")
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[str, float] = {}
        if not args.skip_speed:
            results = speed_at_224(Path(tmp), args.repeats, args.batch_size, args.threads)
            eager = results["torch/latency_ms_batch_1"]
            fp32 = results["onnx_fp32/latency_ms_batch_1"]
            int8 = results["onnx_int8/latency_ms_batch_1"]
            results["onnx_fp32_over_eager"] = fp32 / eager
            results["onnx_int8_over_fp32"] = int8 / fp32
        if args.ckpt:
            results.update(digits_end_to_end(args.ckpt, Path(tmp) / "digits"))
    width = max(map(len, results))
    for key, value in results.items():
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    print("targets: onnx_fp32_over_eager <= 0.6, onnx_int8_over_fp32 <= 0.8, int8 within 1 point,")
    print("predict within one image of eval, ckpt/onnx top-1 agreement >= 0.995")


if __name__ == "__main__":
    main()
