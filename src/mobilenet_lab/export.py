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
from mobilenet_lab.deploy.formats import FORMATS, Format, output_paths, refused_on_failure
from mobilenet_lab.deploy.loading import eval_batches, load_float_network, load_network
from mobilenet_lab.deploy.parity import logit_parity
from mobilenet_lab.deploy.preprocessing import Preprocessing
from mobilenet_lab.jobs.restored_config import restore_run_config
from mobilenet_lab.runs.checkpoint import load_checkpoint
from mobilenet_lab.runs.errors import Refused
from mobilenet_lab.runs.metrics import EXPORTED, metrics_record, write_metrics


def export(cfg: DictConfig) -> dict[str, Any]:
    """Writes the file(s), checks them, prints and saves (``metrics.json``) the report."""
    hydra_cfg = HydraConfig.get()
    checkpoint = load_checkpoint(cfg.ckpt_path)
    cfg, choices = restore_run_config(
        cfg, checkpoint, hydra_cfg.overrides.task, dict(hydra_cfg.runtime.choices)
    )
    report, refusal = export_checkpoint(cfg, checkpoint, choices)
    status = "refused" if refusal else "ok"  # refused: no file, or the fp32 file alone
    write_metrics(
        Path(cfg.paths.output_dir), metrics_record("export", cfg.task_name, status, report)
    )
    if refusal:
        raise Refused(refusal)
    return report


def export_after_qat(ckpt_path: str) -> tuple[dict[str, Any], str | None]:
    """A quantization-aware run's int8 file, as ``src/export.py ckpt_path=<its checkpoint>``
    makes it (called by the run itself at its end, inside its Hydra job)."""
    from hydra import compose

    checkpoint = load_checkpoint(ckpt_path)
    cfg = compose("export", overrides=[f"ckpt_path={ckpt_path}"])
    cfg, choices = restore_run_config(cfg, checkpoint, [], {})
    return export_checkpoint(cfg, checkpoint, choices)


def export_checkpoint(
    cfg: DictConfig, checkpoint: dict[str, Any], choices: dict[str, str]
) -> tuple[dict[str, Any], str | None]:
    """The export of a checkpoint whose run config ``cfg`` holds: the report and, if a file
    was refused, why. A float run's fp32 file (and with ``quantize=int8`` its post-training
    int8 file); a quantization-aware run's (``cfg.qat``) int8 file, with the fp32 and
    post-training int8 files of the float run it was fine-tuned from made beside it to compare
    (their own export writes those)."""
    qat = cfg.get("qat")
    prep = Preprocessing.from_checkpoint(checkpoint)
    net = load_network(cfg, checkpoint, cfg.weights)  # a QAT run's: its fake-quantized network
    float_net = load_float_network(qat["from"], cfg.weights) if qat else net
    datamodule = instantiate(cfg.data)
    images, _ = next(eval_batches(datamodule, "test", cfg.check_images))
    file_format = FORMATS[qat.format if qat else cfg.format]
    quantize = "int8" if qat else cfg.quantize
    paths = output_paths(cfg.ckpt_path, cfg.output_path, quantize, file_format.name)
    made = ["fp32", "int8", "qat"] if qat else ["fp32", "int8"][: len(paths)]
    # "model.fp32.tmp.pte": the runtimes read a file by its suffix
    temporary = {name: paths[0].with_suffix(f".{name}.tmp{paths[0].suffix}") for name in made}
    placed = {"qat": paths[1]} if qat else dict(zip(made, paths, strict=True))
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    try:
        report = {"model": choices.get("model"), "alpha": prep.alpha,
                  "image_size": prep.image_size, "format": file_format.name}  # fmt: skip
        report.update(file_format.write(float_net, prep, images[:1], temporary["fp32"]))
        fp32 = file_format.open(str(temporary["fp32"]))
        with refused_on_failure(f"running the {file_format.name} file in {file_format.runtime}"):
            got = fp32.logits(images)
        parity = logit_parity(float_net, got, images, cfg.parity_factor)
        report.update({f"fp32/{key}": value for key, value in parity.items() if key != "passed"})
        refusal = None if parity["passed"] else parity_refusal(report, cfg, len(images))
        report["fp32/refused"] = refusal
        if refusal:
            placed = {}
        else:
            report.update(speed(float_net, {"fp32": fp32}, images, cfg.speed, file_format.name))
            if quantize:
                with refused_on_failure(
                    f"format={file_format.name}: making and scoring the int8 file"
                ):
                    report.update(
                        quantize_files(
                            cfg, datamodule, file_format, float_net, net, prep, temporary, fp32
                        )
                    )
                judged = "qat" if qat else "int8"
                refusal = int8_refusal(report, cfg, paths[0], judged)
                refusal = refusal or (conversion_refusal(report) if qat else None)
                report[f"{judged}/refused"] = refusal
                if refusal:  # an earlier export's int8 file would not match this one
                    placed.pop(judged).unlink(missing_ok=True)
        for name, path in placed.items():
            os.replace(temporary[name], path)
    finally:
        for tmp in temporary.values():
            tmp.unlink(missing_ok=True)
    report.update({"ckpt_path": str(Path(cfg.ckpt_path).resolve()), "weights": cfg.weights,
                   "files": [str(path) for path in placed.values()]})  # fmt: skip
    if placed and not cfg.output_path:  # in the training run's folder: its record beside them
        status = "refused" if refusal else "ok"
        record = metrics_record("export", cfg.task_name, status, report)
        write_metrics(paths[0].parent, record, EXPORTED)
    print_table([report], [c for c in cfg.summary_columns if c in report], title="export")
    if placed:
        print("Wrote " + " and ".join(str(path) for path in placed.values()))
    return report, refusal


def int8_refusal(
    report: dict[str, Any], cfg: DictConfig, fp32_path: Path, judged: str = "int8"
) -> str | None:
    """Why the int8 file (``judged``: ``int8``, post-training, or ``qat``) is not put in place
    (None: it is): its test accuracy under ``int8_min_ratio`` times the fp32 file's on the same
    images (MLPerf's rule for int8)."""
    fp32, int8 = report["fp32/test_acc"], report[f"{judged}/test_acc"]
    if int8 >= cfg.int8_min_ratio * fp32:
        return None
    what = "quantization-aware int8" if judged == "qat" else "int8"
    advice = (
        "fine-tune longer or at a smaller learning rate, or freeze the observers later "
        "(qat.freeze_observers_epoch); the run's checkpoints are kept"
        if judged == "qat"
        else f"{fp32_path} was written, no int8 file. Try more calibration images "
        f"(calibration_images={cfg.calibration_images} now, e.g. "
        f"calibration_images={4 * cfg.calibration_images}), "
        f"{'' if cfg.per_channel else 'per-channel weights (per_channel=true), '}"
        "or quantization-aware training (qat=<format>, docs/deployment.md); if nothing helps, "
        "keep the fp32 file"
    )
    return (
        f"{what} file refused: its test accuracy {int8:.2%} is {int8 / fp32:.3f} of the fp32 "
        f"file's {fp32:.2%} on the same {report['int8/test_images']} test images, under "
        f"int8_min_ratio={cfg.int8_min_ratio}; {advice}"
    )


# The share of the test images on which a QAT file must give the QAT network's own class
# (V1: >= 99.3%; timm's V2 and V3, where the runtime's int8 arithmetic departs from PyTorch's
# emulation: 66-97%, docs/deployment.md)
QAT_MIN_AGREEMENT = 0.95


def conversion_refusal(report: dict[str, Any]) -> str | None:
    """Why a QAT file that keeps its accuracy is still not put in place (None: it is): it does
    not predict as the network it was converted from, so its accuracy is luck."""
    agreement = report["qat/top1_agreement"]
    if agreement >= QAT_MIN_AGREEMENT:
        return None
    return (
        f"quantization-aware int8 file refused: it gives the QAT network's class on "
        f"{agreement:.2%} of the {report['int8/test_images']} test images, under "
        f"{QAT_MIN_AGREEMENT:.0%}: the file does not compute the network that was fine-tuned "
        "(seen with timm's V2 and V3, docs/deployment.md); use post-training int8 "
        "for this network (src/export.py quantize=int8); the run's checkpoints are kept"
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


def quantize_files(
    cfg: DictConfig,
    datamodule: Any,
    file_format: Format,
    float_net: nn.Module,
    net: nn.Module,
    prep: Preprocessing,
    temporary: dict[str, Path],
    fp32: Any,
) -> dict[str, Any]:
    """The post-training int8 file (ONNX: from the fp32 file; ExecuTorch, LiteRT: PT2E from
    the network) and, for a quantization-aware ``net``, its int8 file; test accuracy of each
    (``fp32``: the file already open) on the run's whole test split, and their speed."""
    started = time.time()
    with torch.random.fork_rng():  # the same calibration images every time
        torch.manual_seed(0)
        calibration = eval_batches(datamodule, "calibration", cfg.calibration_images)
        batches = [images for images, _ in calibration]
    example = batches[0][:1]
    qat = cfg.get("qat")  # the post-training file beside it quantized as its network was
    per_channel = qat.per_channel if qat else cfg.per_channel
    file_format.write_int8(float_net, prep, example, temporary["fp32"], temporary["int8"],
                           batches, per_channel)  # fmt: skip
    report: dict[str, Any] = {"int8/quantize_s": round(time.time() - started, 2)}
    if "qat" in temporary:
        file_format.write_qat(net, prep, example, temporary["qat"])
    models = {name: file_format.open(str(path)) for name, path in temporary.items()}
    models["fp32"] = fp32
    correct = dict.fromkeys(models, 0)
    agree = total = 0
    for images, labels in eval_batches(datamodule, "test"):
        total += len(labels)
        predicted = {name: model.logits(images).argmax(1) for name, model in models.items()}
        for name, classes in predicted.items():
            correct[name] += int((classes == labels).sum())
        if "qat" in models:  # the file against the network it was converted from
            with torch.inference_mode():
                agree += int((net(images).argmax(1) == predicted["qat"]).sum())
    report.update({f"{name}/test_acc": correct[name] / total for name in models})
    report["int8/test_images"] = total
    if "qat" in models:
        report["qat/top1_agreement"] = agree / total
    check_images = next(eval_batches(datamodule, "test", cfg.check_images))[0]
    # int8 is judged by its test accuracy (int8_refusal): its logit difference is only reported
    int8 = logit_parity(float_net, models["int8"].logits(check_images), check_images, factor=1)
    report.update({f"int8/{key}": int8[key] for key in ("max_abs_diff", "top1_agreement")})
    # the fp32 file was timed already, beside PyTorch
    int8_files = {name: model for name, model in models.items() if name != "fp32"}
    report.update(speed(None, int8_files, check_images, cfg.speed, file_format.name))
    return report
