"""Exports a checkpoint's eval network (BatchNorm folded into the convolutions, the run's
preprocessing and class names inside the file) to ONNX, ExecuTorch (``.pte``, XNNPACK) or
LiteRT (``.tflite``), optionally also int8, and checks each file in its own runtime against
PyTorch on the run's test images before putting it in place: an fp32 file only if its logits
are PyTorch's up to float rounding (``deploy.parity``), an int8 file only if it keeps
``int8_min_ratio`` of the fp32 file's test accuracy. A file refused, or one its converter or
runtime fails on, is one ``Refused`` line and nothing written."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn

from mobilenet_lab.analysis.tables import print_table
from mobilenet_lab.analysis.timing import median_seconds
from mobilenet_lab.deploy.formats import FORMATS, output_paths, refused_on_failure
from mobilenet_lab.deploy.loading import eval_batches, load_network
from mobilenet_lab.deploy.parity import logit_parity
from mobilenet_lab.deploy.preprocessing import Preprocessing
from mobilenet_lab.jobs.restored_config import restore_run_config
from mobilenet_lab.runs.checkpoint import load_checkpoint
from mobilenet_lab.runs.errors import Refused
from mobilenet_lab.runs.metrics import metrics_record, write_metrics


def export(cfg: DictConfig) -> dict[str, Any]:
    """Writes the file(s), checks them, prints and saves (``metrics.json``) the report."""
    hydra_cfg = HydraConfig.get()
    checkpoint = load_checkpoint(cfg.ckpt_path)
    cfg, choices = restore_run_config(
        cfg, checkpoint, hydra_cfg.overrides.task, dict(hydra_cfg.runtime.choices)
    )
    prep = Preprocessing.from_checkpoint(checkpoint)
    net = load_network(cfg, checkpoint, cfg.weights)
    datamodule = instantiate(cfg.data)
    images, _ = next(eval_batches(datamodule, "test", cfg.check_images))
    paths = output_paths(cfg.ckpt_path, cfg.output_path, cfg.quantize, cfg.format)
    # "model.tmp.pte": the runtimes read a file by its suffix
    temporary = [path.with_suffix(".tmp" + path.suffix) for path in paths]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    file_format = FORMATS[cfg.format]
    try:
        report = {"model": choices.get("model"), "alpha": prep.alpha,
                  "image_size": prep.image_size, "format": cfg.format}  # fmt: skip
        report.update(file_format.write(net, prep, images[:1], temporary[0]))
        fp32 = file_format.open(str(temporary[0]))
        with refused_on_failure(f"running the {cfg.format} file in {file_format.runtime}"):
            got = fp32.logits(images)
        parity = logit_parity(net, got, images, cfg.parity_factor)
        report.update({f"fp32/{key}": value for key, value in parity.items() if key != "passed"})
        refusal = None if parity["passed"] else parity_refusal(report, cfg, len(images))
        report["fp32/refused"] = refusal
        if refusal:
            paths = []  # nothing is put in place
        else:
            report.update(speed(net, {"fp32": fp32}, images, cfg.speed, cfg.format))
            if cfg.quantize:
                with refused_on_failure(f"format={cfg.format}: making and scoring the int8 file"):
                    report.update(quantize(cfg, datamodule, net, prep, temporary, fp32))
                refusal = report["int8/refused"] = int8_refusal(report, cfg, paths[0])
            if refusal:  # the fp32 file alone; an earlier export's int8 file would not match it
                paths[1].unlink(missing_ok=True)
                paths = paths[:1]
        for tmp, path in zip(temporary, paths, strict=False):
            os.replace(tmp, path)
    finally:
        for tmp in temporary:
            tmp.unlink(missing_ok=True)
    report.update({"ckpt_path": str(Path(cfg.ckpt_path).resolve()), "weights": cfg.weights,
                   "files": [str(path) for path in paths]})  # fmt: skip
    status = "refused" if refusal else "ok"  # refused: no file, or the fp32 file alone
    record = metrics_record("export", cfg.task_name, status, report)
    write_metrics(Path(cfg.paths.output_dir), record)
    print_table([report], [c for c in cfg.summary_columns if c in report], title="export")
    if paths:
        print("Wrote " + " and ".join(str(path) for path in paths))
    if refusal:
        raise Refused(refusal)
    return report


def int8_refusal(report: dict[str, Any], cfg: DictConfig, fp32_path: Path) -> str | None:
    """Why the int8 file is not put in place (None: it is): its test accuracy under
    ``int8_min_ratio`` times the fp32 file's on the same images (MLPerf's rule for int8)."""
    fp32, int8 = report["fp32/test_acc"], report["int8/test_acc"]
    if int8 >= cfg.int8_min_ratio * fp32:
        return None
    return (
        f"int8 file refused: its test accuracy {int8:.2%} is {int8 / fp32:.3f} of the fp32 "
        f"file's {fp32:.2%} on the same {report['int8/test_images']} test images, under "
        f"int8_min_ratio={cfg.int8_min_ratio}; {fp32_path} was written, no int8 file. Try more "
        f"calibration images (calibration_images={cfg.calibration_images} now, e.g. "
        f"calibration_images={4 * cfg.calibration_images}); the weights are already int8 per "
        "channel, so if more images do not help, keep the fp32 file (or train the network "
        "longer: an unsettled network quantizes worse)"
    )


def parity_refusal(report: dict[str, Any], cfg: DictConfig, images: int) -> str:
    """Why the fp32 file is not put in place: its logits differ from PyTorch's by more than
    ``parity_factor`` times PyTorch's own fp32 rounding (``deploy.parity``)."""
    return (
        f"{cfg.format} file refused: its logits differ from PyTorch's by "
        f"{report['fp32/max_abs_diff']:.3g} on {images} test images, over the bound "
        f"{report['fp32/bound']:.3g} (parity_factor={cfg.parity_factor} x PyTorch's own fp32 "
        f"rounding {report['fp32/rounding']:.3g}, max |fp32 - fp64|, logits up to "
        f"{report['fp32/logit_scale']:.3g}): the file does not compute the network, nothing "
        "was written"
    )


def speed(
    net: nn.Module | None,
    models: dict[str, Any],
    images: Tensor,
    settings: DictConfig,
    file_format: str = "onnx",
) -> dict[str, float]:
    """Batch-1 latency (ms) and batch throughput (images/s) of PyTorch eager (when ``net`` is
    given) and each exported model, measured one after the other in this process (the
    batch-1 ExecuTorch and LiteRT files take a batch one image after another)."""
    single = images[:1]
    batch = images[:1].repeat(settings.batch_size, 1, 1, 1)
    runners = {f"{file_format}_{name}": model.logits for name, model in models.items()}
    if net is not None:
        runners = {"torch": net, **runners}
    cpu, repeats, warmup = torch.device("cpu"), settings.repeats, settings.warmup
    report = {}
    with torch.inference_mode():
        for name, run in runners.items():
            latency = median_seconds(lambda: run(single), repeats, warmup, cpu)  # noqa: B023
            batch_time = median_seconds(lambda: run(batch), repeats, warmup, cpu)  # noqa: B023
            report[f"{name}/latency_ms_batch_1"] = 1000 * latency
            report[f"{name}/images_per_s_batch_{len(batch)}"] = len(batch) / batch_time
    return report


def quantize(
    cfg: DictConfig,
    datamodule: Any,
    net: nn.Module,
    prep: Preprocessing,
    temporary: list[Path],
    fp32: Any,
) -> dict[str, Any]:
    """int8 (ONNX: from the fp32 file; ExecuTorch, LiteRT: PT2E from the network); test
    accuracy of fp32 (``fp32``: the file already open) and int8 on the run's whole test
    split, and their speed."""
    started = time.time()
    with torch.random.fork_rng():  # the same calibration images every time
        torch.manual_seed(0)
        calibration = eval_batches(datamodule, "calibration", cfg.calibration_images)
        batches = [images for images, _ in calibration]
    file_format = FORMATS[cfg.format]
    file_format.write_int8(net, prep, batches[0][:1], temporary[0], temporary[1], batches)
    models = {"fp32": fp32, "int8": file_format.open(str(temporary[1]))}
    report: dict[str, Any] = {"int8/quantize_s": round(time.time() - started, 2)}
    correct = dict.fromkeys(models, 0)
    total = 0
    for images, labels in eval_batches(datamodule, "test"):
        total += len(labels)
        for name, model in models.items():
            correct[name] += int((model.logits(images).argmax(1) == labels).sum())
    report.update({f"{name}/test_acc": correct[name] / total for name in models})
    report["int8/test_images"] = total
    check_images = next(eval_batches(datamodule, "test", cfg.check_images))[0]
    # int8 is judged by its test accuracy (int8_refusal): its logit difference is only reported
    int8 = logit_parity(net, models["int8"].logits(check_images), check_images, factor=1)
    report.update({f"int8/{key}": int8[key] for key in ("max_abs_diff", "top1_agreement")})
    int8_speed = speed(None, models, check_images, cfg.speed, cfg.format)
    report.update({k: v for k, v in int8_speed.items() if k.startswith(f"{cfg.format}_int8")})
    return report
