"""Training images/s of our MobileNet V1 1.0, timm's mobilenetv1_100 (the same network), V2 and
V3-large on one GPU at 224 px, bf16-mixed, channels-last, with and without ``module.compile``,
then the images/s the GPU-decode input path (``data.decode=gpu``) prepares on the same GPU, and
the ratio input / model for each model row (issue 30, item 5). Run by ``scripts/gpu_check.sh``;
``--cpu`` is a dry run on the CPU at tiny sizes, without compile, for the test suite.

    python scripts/benchmark_gpu.py [--out logs/gpu_check] [--batch-size 256] [--cpu]

What is timed is what ``python src/train.py model=<m> data=synthetic trainer=gpu`` trains: the
config is composed from ``conf/`` with Hydra's compose API, and the network, the LightningModule
(``conf/module/classifier.yaml``: channels-last, label smoothing, ``module.compile``) and the
optimizer (the default SGD, ``lr_base`` rule included) are instantiated from it as
``mobilenet_lab.train`` does. A step is the module's own ``training_step`` (channels-last input,
cross-entropy, the train metrics' update, the finite-loss check) under bf16 autocast, as
Lightning's ``bf16-mixed`` runs it, then backward and a step of the optimizer
``configure_optimizers`` builds, in a plain loop rather than ``Trainer.fit``: the same work
without the Trainer's loop, logging and loaders, and with a first step that can be timed alone
(compiling, with ``module.compile``). The LR schedule, a scalar update a step, is left out.

Data: one batch of random normalised images and labels, made on the device once and used at
every step, so that the input costs nothing: the model alone (the synthetic data module would
cut uint8 batches on the CPU and copy them over at each step).

Measurement: the first step alone; warm-up windows, excluded; then the median of ``--windows``
timed windows of ``--steps`` steps each, the device synchronised at both ends of every window.
Peak GPU memory is that of each row alone (the peak statistic reset before it). Rows run
without compile first, so that a ``--budget-s`` spent on compiling still leaves those figures;
a row not measured in the budget says so, and the script then exits 1, as when a row fails.
The table is rewritten after every row (``gpu_check.md`` and ``gpu_check.json`` in ``--out``).

The GPU-decode row: ``--decode-images`` ImageNet-like JPEGs (about 500 x 375, written by
``benchmark_data.write_jpeg_tree``) read into memory once; a step takes a batch of their bytes
from the CPU, decodes it on the device (``decode_jpeg``: nvJPEG) and applies the training
transform there (random resized crop, flip, colour jitter 0.4, normalisation: ``data=imagefolder``'s
defaults), timed as the model rows. Its ratio to a model row above 1 means the device prepares
batches faster than that model trains on them; the two share the GPU, so a run doing both goes
at about ``1 / (1 / input + 1 / model)`` images/s, less what loading the bytes costs the CPU.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

import mobilenet_lab.data.resolvers  # noqa: F401
from benchmark_data import write_jpeg_tree  # scripts/, this script's folder
from mobilenet_lab.analysis.timing import device_name, median_seconds
from mobilenet_lab.data.device_decode import DeviceTransform, decode_batch
from mobilenet_lab.data.encoded import IMAGENET_MEAN, IMAGENET_STD
from mobilenet_lab.runs.files import write_json_atomic
from mobilenet_lab.training.optimizer import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
# conf/model/ name -> what the table calls it
MODELS = {
    "mobilenet_v1": "V1 1.0 (ours)",
    "timm_mobilenet_v1": "timm mobilenetv1_100",
    "mobilenet_v2": "timm mobilenetv2_100",
    "mobilenet_v3_large": "timm mobilenetv3_large_100",
}
COMPILE_RESERVE_S = 90  # a compiled row is not started with less budget left than this
DECODE = "GPU decode (data.decode=gpu)"


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    device = torch.device("cpu" if args.cpu else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmark_gpu: no CUDA device on this machine (use --cpu for a dry run)")
        return 2
    torch.manual_seed(0)
    header = {
        "device": device_name(device),
        "torch": torch.__version__,
        "host": platform.node(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "channels_last": True,
        "data": "one random batch made on the device once (the model alone)",
        "timing": f"first step alone, {args.warmup_windows} warm-up windows, median of "
        f"{args.windows} windows of {args.steps} steps",
        "input": f"{args.decode_images} JPEGs of 500 x 375, decoded and given the training "
        "transform on the device",
    }
    print("  ".join(f"{key}: {header[key]}" for key in ("device", "torch", "date")))
    # the input row after the eager rows: seconds, where the compiled rows may run out of budget
    plan = [(model, False) for model in MODELS] + [(DECODE, False)]
    plan += [] if args.no_compile else [(model, True) for model in MODELS]
    rows: list[dict[str, Any]] = []
    warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer: nothing is logged
    for model, compiled in plan:
        left = args.budget_s - (time.perf_counter() - started) if args.budget_s else None
        if left is not None and left < (COMPILE_RESERVE_S if compiled else 0):
            status = f"not measured: {left:.0f} s of the budget left"
            rows.append(row_of(model, compiled, status=status))
        else:
            rows.append(measure_row(model, compiled, device, args))
        print(format_row(rows[-1]), flush=True)
        write_table(args.out, header, rows)
    print()
    print((args.out / "gpu_check.md").read_text())
    return 0 if all(row["status"] == "ok" for row in rows) else 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "gpu_check")
    dry_run = "a dry run: 1 CPU thread, 32 px, batch 8, fp32, no compile"
    parser.add_argument("--cpu", action="store_true", help=dry_run)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=5, help="timed windows (median taken)")
    parser.add_argument("--warmup-windows", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="only the rows without compile")
    parser.add_argument("--decode-images", type=int, default=512,
                        help="JPEGs the GPU-decode row cycles through")  # fmt: skip
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds for all rows: rows past it are skipped")  # fmt: skip
    args = parser.parse_args()
    args.precision = "32-true" if args.cpu else "bf16-mixed"  # bf16 crawls on most CPUs
    if args.cpu:  # one thread: two on a loaded 2-core machine can be 10x slower
        torch.set_num_threads(1)
        args.batch_size, args.image_size, args.no_compile = 8, 32, True
        args.steps, args.windows, args.warmup_windows = 2, 1, 0
        args.decode_images = 16
    return args


def row_of(model: str, compiled: bool, status: str = "ok", **figures: Any) -> dict[str, Any]:
    return {"model": model, "name": MODELS.get(model, model), "compile": compiled,
            "status": status, **figures}  # fmt: skip


def measure_row(
    model: str, compiled: bool, device: torch.device, args: argparse.Namespace
) -> dict[str, Any]:
    """One row, or the one line of why it failed (the other rows are still measured)."""
    try:
        speed = decode_speed if model == DECODE else training_speed
        return row_of(model, compiled, **speed(model, compiled, device, args))
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        return row_of(model, compiled, status=f"failed: {type(error).__name__}: {first_line}")
    finally:  # nothing of this row is left on the device for the next one's peak memory
        if compiled:
            torch.compiler.reset()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def training_speed(
    model: str, compiled: bool, device: torch.device, args: argparse.Namespace
) -> dict[str, float]:
    cfg = composed(model, compiled, args)
    batch_size = cfg.data.batch_size
    module = instantiate(cfg.module, net=instantiate(cfg.model),
                         optimizer=build_optimizer(cfg.optimizer, batch_size),
                         scheduler=None).to(device)  # fmt: skip
    module.configure_model()  # torch.compile with module.compile, as Lightning's fit calls it
    module.train()
    optimizer = module.configure_optimizers()["optimizer"]
    size, channels = cfg.data.image_size, cfg.data.in_chans
    images = torch.randn(batch_size, channels, size, size, device=device)
    labels = torch.randint(0, cfg.data.num_classes, (batch_size,), device=device)
    bf16 = args.precision == "bf16-mixed"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = module.training_step((images, labels), 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return timed(step, batch_size, device, args)


def decode_speed(
    name: str, compiled: bool, device: torch.device, args: argparse.Namespace
) -> dict[str, float]:
    """Images/s the GPU-decode path prepares: a batch of JPEG bytes (on the CPU, as the loader
    hands them over) decoded and given the training transform on the device."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = write_jpeg_tree(Path(tmp), per_class=-(-args.decode_images // 4))
        files = sorted(tree.glob("train/*/*.jpg"))[: args.decode_images]
        encoded = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files]
    transform = DeviceTransform(args.image_size, 0.875, "bilinear", 0.5, 0.4, 0.0, IMAGENET_MEAN,
                                IMAGENET_STD)  # fmt: skip
    batches = [encoded[i : i + args.batch_size] for i in range(0, len(encoded), args.batch_size)]
    batches = [b for b in batches if len(b) == args.batch_size] or [encoded]
    done = [0]

    def step() -> None:
        batch = batches[done[0] % len(batches)]
        images, *_ = decode_batch(batch, device)
        transform(images, training=True)
        done[0] += 1

    size = len(batches[0])
    return {**timed(step, size, device, args), "batch_size": size}


def timed(
    step: Callable[[], None], images_per_step: int, device: torch.device, args: argparse.Namespace
) -> dict[str, float]:
    """The first ``step`` alone, then the median of ``args.windows`` windows of
    ``args.steps`` steps (after ``args.warmup_windows``), and the row's own peak GPU memory."""

    def window() -> None:
        for _ in range(args.steps):
            step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    first = median_seconds(step, repeats=1, warmup=0, device=device)
    seconds = median_seconds(window, args.windows, args.warmup_windows, device)
    figures = {
        "images_per_s": round(args.steps * images_per_step / seconds, 1),
        "ms_per_step": round(1000 * seconds / args.steps, 2),
        "first_step_s": round(first, 2),
    }
    if device.type == "cuda":
        figures["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return figures


def composed(model: str, compiled: bool, args: argparse.Namespace):
    """The config ``src/train.py`` composes for this row (its run folder is never made)."""
    overrides = [f"model={model}", "data=synthetic", f"data.image_size={args.image_size}",
                 f"data.batch_size={args.batch_size}", "module.channels_last=true",
                 f"module.compile={str(compiled).lower()}"]  # fmt: skip
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def format_row(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        figures = row["status"]
    else:
        memory = f"{row['peak_memory_gib']:.2f} GiB" if "peak_memory_gib" in row else "-"
        figures = (f"{row['images_per_s']:>10,.0f} images/s {row['ms_per_step']:>8.2f} ms/step "
                   f"first step {row['first_step_s']:>6.2f} s  peak {memory}")  # fmt: skip
    return f"{row['name']:<28}{'compile' if row['compile'] else 'eager':<9}{figures}"


def write_table(out: Path, header: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """``gpu_check.md`` (the table for the docs) and ``gpu_check.json`` (every figure)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "gpu_check.json", {**header, "rows": rows})
    h = header
    lines = [
        f"Training images/s on {h['device']}, torch {h['torch']}, {h['date']}: {h['image_size']} "
        f"px, batch {h['batch_size']}, precision {h['precision']}, channels-last, {h['data']}; "
        f"{h['timing']}.",
        "",
        "| model | module.compile | images/s | ms/step | first step (s) | peak GPU memory (GiB) "
        "| input / model |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    decode = next((r for r in rows if r["model"] == DECODE and r["status"] == "ok"), None)
    for row in (r for r in rows if r["model"] != DECODE):
        if row["status"] == "ok":
            memory = f"{row['peak_memory_gib']:.2f}" if "peak_memory_gib" in row else "-"
            ratio = f"{decode['images_per_s'] / row['images_per_s']:.2f}" if decode else "-"
            figures = (f"{row['images_per_s']:,.0f} | {row['ms_per_step']:.2f} | "
                       f"{row['first_step_s']:.2f} | {memory} | {ratio}")  # fmt: skip
        else:
            figures = f"{row['status']} | | | | "
        lines.append(f"| {row['name']} | {'true' if row['compile'] else 'false'} | {figures} |")
    measured = next((r for r in rows if r["model"] == DECODE), None)
    if measured is None or measured["status"] != "ok":
        said = measured["status"] if measured else "not measured yet"
    else:
        said = (f"{measured['images_per_s']:,.0f} images/s, {measured['ms_per_step']:.2f} ms a "
                f"batch of {measured['batch_size']}")  # fmt: skip
    lines += ["", f"Input, {DECODE}: {header['input']}, at {header['image_size']} px: {said}. "
              "input / model: its images/s over the model row's (above 1: the device prepares "
              "batches faster than it trains on them).", ""]  # fmt: skip
    (out / "gpu_check.md").write_text("\n".join(lines))


if __name__ == "__main__":
    with warnings.catch_warnings():
        raise SystemExit(main())
