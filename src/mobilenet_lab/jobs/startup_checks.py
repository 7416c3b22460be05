"""Checks a composed config before any run folder exists: one check per entry point.

Everything here raises ``ConfigError`` with a one-line message naming the key, the bad value
and what would be valid; the Hydra callback in ``hydra_callbacks`` turns it into an exit code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from mobilenet_lab.deploy.formats import FORMATS, check_format, format_of, output_paths
from mobilenet_lab.deploy.loading import built_network
from mobilenet_lab.deploy.parity import FACTOR_RANGE
from mobilenet_lab.jobs.restored_config import restore_run_config, with_float_run
from mobilenet_lab.models.pretrained import as_trained
from mobilenet_lab.runs.checkpoint import EVAL_EXAMPLE, RESUME_EXAMPLE, load_checkpoint
from mobilenet_lab.runs.errors import ConfigError, is_number, named_by
from mobilenet_lab.runs.metrics import is_training_run
from mobilenet_lab.runs.resume import Resumed, resume_run
from mobilenet_lab.training.distillation import check_distill
from mobilenet_lab.training.trainer import (
    check_trainer_config,
    device_count,
    per_device_batch_size,
)


def check_train_config(cfg: DictConfig, hardware: bool = True) -> None:
    """What ``src/train.py`` needs before it may create a run folder (``hardware=False``: the
    job runs on another machine, which checks its own GPUs and cores)."""
    resuming = bool(cfg.get("ckpt_path"))
    if resuming:  # the run's own config, as train() will restore it
        resumed = resume_run(cfg)
        check_same_batch(resumed)
        cfg = resumed.config.copy()
        with open_dict(cfg):  # the checkpoint's weights replace init_from's, not read again
            cfg.model = as_trained(cfg.model)
    elif cfg.get("qat"):  # the float run's model and data, as train() will take them
        cfg, _ = with_float_run(cfg, cfg.hydra.overrides.task, dict(cfg.hydra.runtime.choices))
    check_limits(cfg)
    check_decode_device(cfg, hardware)
    check_trainer_config(cfg.trainer, hardware)
    per_device_batch_size(cfg)
    check_model_and_data(cfg)
    check_distill(cfg)
    if cfg.get("qat"):
        check_qat(cfg, build=not resuming)


def check_qat(cfg: DictConfig, build: bool = True) -> None:
    """A quantization-aware fine-tune: a format whose int8 file is PT2E (it carries the scales
    learned), freeze epochs inside the fine-tune, and (``build``) the float run's network
    prepared once, so a network the runtime's quantizer cannot take fails here."""
    qat = cfg.qat
    if qat.format not in FORMATS:
        raise ConfigError(f"qat.format={qat.format!r} is not valid: use executorch or tflite")
    if not isinstance(qat.per_channel, bool):
        raise ConfigError(f"qat.per_channel={qat.per_channel!r} is not valid: use true or false")
    if OmegaConf.select(cfg, "callbacks.ema"):
        raise ConfigError(
            f"callbacks=ema with qat={qat.format} is not valid: averaged weights are not the "
            "ones the learned int8 scales fit (the fine-tune starts from qat.from's averaged "
            "weights already); leave callbacks=ema out"
        )
    epochs = cfg.trainer.max_epochs
    for key in ("freeze_observers_epoch", "freeze_bn_epoch"):
        epoch = qat[key]
        if epoch is not None and epochs != -1 and epoch >= epochs:
            raise ConfigError(
                f"qat.{key}={epoch} is beyond the fine-tune's trainer.max_epochs={epochs} "
                f"(epochs 0-{epochs - 1}): use 0-{epochs - 1}, or null for never"
            )
    file_format = FORMATS[qat.format]
    if file_format.quantizer is None or build:
        file_format.check_installed()
        built_network(cfg, instantiate(as_trained(cfg.model)))


def check_decode_device(cfg: DictConfig, hardware: bool = True) -> None:
    """``data.decode=gpu`` decodes with ``decode_jpeg`` on the training device: nvJPEG on a
    CUDA GPU, or the CPU; another accelerator (none here, or Apple's MPS) cannot."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    if OmegaConf.select(cfg, "data.decode") != "gpu" or not hardware or accelerator == "cpu":
        return
    auto_cpu = accelerator == "auto" and not torch.backends.mps.is_available()  # Lightning's pick
    if torch.cuda.is_available() or auto_cpu:
        return
    raise ConfigError(
        f"data.decode=gpu with trainer.accelerator={accelerator} but this machine has no CUDA "
        "device for nvJPEG to decode on: use data.decode=cpu, or trainer=cpu (which decodes "
        "the batches on the CPU)"
    )


def resolve_resume(ckpt_path: str, log_dir: str, task: str) -> Path:
    """``last``: the ``last.ckpt`` of the newest training run of ``task``; else the path itself.

    The newest run, not the newest that has a ``last.ckpt``: a run killed before its first epoch
    ended has none, and quietly resuming an older run instead would continue the wrong one."""
    if ckpt_path != "last":
        path = Path(ckpt_path)
        if not path.is_file():
            raise ConfigError(f"ckpt_path={ckpt_path!r} does not exist: {RESUME_EXAMPLE}")
        return path.resolve()
    runs_dir = Path(log_dir, task, "runs")
    runs = sorted(run for run in runs_dir.glob("*") if is_training_run(run))
    if not runs:
        raise ConfigError(
            f"ckpt_path=last but there is no training run under {runs_dir}: start a run "
            "without ckpt_path first"
        )
    last = runs[-1] / "checkpoints" / "last.ckpt"  # folder names are timestamps: newest last
    if not last.is_file():
        older = [run / "checkpoints" / "last.ckpt" for run in runs[:-1]]
        older = [str(path) for path in older if path.is_file()]
        hint = f" (the newest that has one: ckpt_path={older[-1]})" if older else ""
        raise ConfigError(
            f"ckpt_path=last but the newest run, {runs[-1]}, has no checkpoints/last.ckpt (it "
            f"stopped before its first epoch ended): start afresh without ckpt_path, or give "
            f"the checkpoint of the run to continue{hint}"
        )
    return last.resolve()


def check_same_batch(resumed: Resumed) -> None:
    """More (or fewer) devices on a resume keep the images per optimizer step only through
    ``global_batch_size``; without it the run would go on at another batch."""
    cfg, recorded = resumed.config, OmegaConf.create(resumed.record.config)
    if cfg.get("global_batch_size"):
        return
    share = lambda c: device_count(c.trainer) * c.trainer.get("num_nodes", 1)  # noqa: E731
    before, now = share(recorded), share(cfg)
    if before != now and not cfg.resume.get("allow_changes"):
        batch = cfg.data.batch_size
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path!r}: {now} device(s) instead of the run's {before} would "
            f"train on {batch * now} images a step instead of {batch * before}: add "
            f"global_batch_size={batch * before * cfg.trainer.get('accumulate_grad_batches', 1)} "
            "to keep the run's batch (or resume.allow_changes=true)"
        )


def check_profile_config(cfg: DictConfig, hardware: bool = True) -> None:
    """What ``scripts/profile_model.py`` needs: the same model and input size checks as training
    (none of them depends on the hardware)."""
    check_limits(cfg)
    check_model_and_data(cfg)


def check_eval_config(cfg: DictConfig, hardware: bool = True) -> None:
    """What ``src/eval.py`` needs: a readable checkpoint, and its run's config still valid; or,
    with no ``ckpt_path``, a network the config builds from ``model.init_from``."""
    check_limits(cfg)
    check_decode_device(cfg, hardware)
    check_trainer_config(cfg.trainer, hardware)
    if cfg.weights not in ("averaged", "trained"):
        raise ConfigError(f"weights={cfg.weights!r} is not valid: use averaged or trained")
    if not cfg.ckpt_path:
        if not cfg.model.get("init_from"):
            raise ConfigError(
                f"ckpt_path is not set: give the checkpoint to score ({EVAL_EXAMPLE}), or "
                "model.init_from=keras:<file> to score ported weights"
            )
        check_model_and_data(cfg)
        return
    checkpoint = load_checkpoint(cfg.ckpt_path)
    merged, _ = restore_run_config(
        cfg, checkpoint, cfg.hydra.overrides.task, dict(cfg.hydra.runtime.choices)
    )
    check_model_and_data(merged)


def check_model_and_data(cfg: DictConfig) -> None:
    """Builds the data module and network once, so bad values fail here and not mid-run."""
    _instantiate_or_explain(cfg, "data")
    net = _instantiate_or_explain(cfg, "model")
    min_size = getattr(net, "min_input_size", 1)
    image_size = cfg.data.image_size
    if image_size < min_size:
        raise ConfigError(
            f"data.image_size={image_size} is too small for this network: it downsamples "
            f"{min_size}x, so use data.image_size >= {min_size}"
        )


def _instantiate_or_explain(cfg: DictConfig, key: str) -> Any:
    try:
        return instantiate(cfg[key])
    except MissingMandatoryValue as error:
        raise ConfigError(f"{error.full_key} is not set: give it on the command line") from error
    except InterpolationResolutionError as error:
        cause = _config_error_in(error)
        if cause is not None:
            raise cause from error
        raise ConfigError(f"{error.full_key}: {str(error).splitlines()[0]}") from error
    except InstantiationException as error:  # components name their argument; add the group
        cause = error.__cause__
        cause = cause if isinstance(cause, ValueError | TypeError) else error
        raise ConfigError(f"{key}.{cause}") from error


def _config_error_in(error: BaseException | None) -> ConfigError | None:
    """The ConfigError a resolver raised, found in the chain of errors OmegaConf wraps it in."""
    while error is not None and not isinstance(error, ConfigError):
        error = error.__cause__ or error.__context__
    return error


def check_export_config(cfg: DictConfig, hardware: bool = True) -> None:
    """What ``src/export.py`` needs: a checkpoint of this kit, a known format with its
    packages installed, a known quantization, a folder it can write, and the run's config
    still valid (its data set gives the check images), numbers in their ``LIMITS``. Export
    runs on the CPU, so ``hardware`` has nothing to check."""
    if cfg.weights not in ("averaged", "trained"):
        raise ConfigError(f"weights={cfg.weights!r} is not valid: use averaged or trained")
    if cfg.quantize is not None and cfg.quantize != "int8":
        raise ConfigError(
            f"quantize={cfg.quantize!r} is not valid: use int8 (or leave it out for fp32 alone)"
        )
    check_limits(cfg)
    _check_retired_keys(cfg)
    suffix = check_format(cfg.format).suffix
    if cfg.output_path and Path(cfg.output_path).suffix.lower() != suffix:
        raise ConfigError(
            f"output_path={cfg.output_path!r} does not end in {suffix}, as format={cfg.format} "
            f"files do: e.g. output_path=model{suffix}"
        )
    checkpoint = load_checkpoint(cfg.ckpt_path)
    where = output_paths(cfg.ckpt_path, cfg.output_path, cfg.quantize, cfg.format)[0].parent
    _writable_folder(where, f"output_path={cfg.output_path}" if cfg.output_path else "export")
    merged, _ = restore_run_config(
        cfg, checkpoint, cfg.hydra.overrides.task, dict(cfg.hydra.runtime.choices)
    )
    check_model_and_data(merged)
    qat = merged.get("qat")
    asked = [o for o in cfg.hydra.overrides.task if o.startswith("format=")]
    if qat and asked and cfg.format != qat.format:
        raise ConfigError(
            f"format={cfg.format} is not the format this quantization-aware run trained for "
            f"(qat.format={qat.format}): its int8 file is {qat.format}'s; leave format out"
        )


def _check_retired_keys(cfg: DictConfig) -> None:
    """``max_abs_diff`` (a fixed logit difference, which refused faithful files of networks with
    large logits) refused naming the key that replaced it."""
    if cfg.max_abs_diff is not None:
        raise ConfigError(
            f"max_abs_diff={cfg.max_abs_diff!r} is no longer a key: the fp32 file's logits are "
            "now judged against PyTorch's own fp32 rounding on the same images; set "
            "parity_factor instead (the multiple of that rounding accepted)"
        )


def check_predict_config(cfg: DictConfig, hardware: bool = True) -> None:
    """What ``src/predict.py`` needs: a checkpoint of this kit or a file it exported (ONNX,
    ExecuTorch, LiteRT), and an input that names at least one image file (one file: readable)."""
    from mobilenet_lab.data.images import UnreadableImage, open_image
    from mobilenet_lab.deploy.inputs import list_inputs

    if cfg.weights not in ("averaged", "trained"):
        raise ConfigError(f"weights={cfg.weights!r} is not valid: use averaged or trained")
    check_limits(cfg)
    if cfg.device not in ("auto", "cpu") and not str(cfg.device).startswith("cuda"):
        raise ConfigError(f"device={cfg.device!r} is not valid: use auto, cpu or cuda[:N]")
    if hardware and str(cfg.device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device!r} but this machine has no GPU: use auto or cpu")
    if cfg.ckpt_path and (file_format := format_of(cfg.ckpt_path)) is not None:
        with named_by("ckpt_path"):
            file_format.read_metadata(cfg.ckpt_path)
    else:
        load_checkpoint(cfg.ckpt_path, example=PREDICT_EXAMPLE)
    if len(files := list_inputs(cfg.input)) == 1:  # one file: decoding it is cheap, and tells
        try:
            open_image(files[0], 3, cfg.max_image_pixels)
        except UnreadableImage as error:
            raise ConfigError(f"input={cfg.input!r} is not read: {error}") from error


PREDICT_EXAMPLE = "e.g. ckpt_path=logs/train/runs/<time>/checkpoints/best.ckpt or " + ", ".join(
    f".../model{file_format.suffix}" for file_format in FORMATS.values()
)


def _writable_folder(folder: Path, key: str) -> None:
    """The nearest existing folder of ``folder`` must be writable: an export must not fail
    after its minutes of lowering, nor leave half a file."""
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{key}: {folder} cannot be written ({existing} is not a writable folder): give an "
            "output_path in a folder you can write"
        )


# Numeric settings: one rule per key, checked wherever the key is in an entry point's config
# (``top_k`` only in predict's, ``callbacks.ema.*`` only with callbacks=ema). The table in
# docs/training.md ("Numeric settings") lists the same rules, and a test holds the two equal.
# Keys a component checks itself when it is built at start-up (``model.alpha``,
# ``data.image_size``, ``data.batch_size``, ...) are listed there too, not here.


@dataclass(frozen=True)
class Limit:
    """The values a key accepts: ``valid`` in words (the error and the docs), ``accepts`` as a
    test."""

    valid: str
    accepts: Callable[[Any], bool]

    def __or__(self, other: Limit) -> Limit:
        return Limit(
            f"{self.valid}, or {other.valid}", lambda v: self.accepts(v) or other.accepts(v)
        )

    def why(self, reason: str) -> Limit:
        return Limit(f"{self.valid} ({reason})", self.accepts)


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def whole(low: int, high: int | None = None, what: str = "a whole number") -> Limit:
    """A whole number in ``[low, high]`` (``high=None``: no upper end)."""
    words = f"{what} >= {low}" if high is None else f"{what} in [{low}, {high}]"
    return Limit(words, lambda v: _is_whole(v) and low <= v and (high is None or v <= high))


def number(
    low: float, high: float | None = None, open_low: bool = False, open_high: bool = False,
    what: str = "a number",
) -> Limit:  # fmt: skip
    """A real number between ``low`` and ``high``, each end in or out (``open_*``)."""
    if high is None:
        words = f"{what} {'>' if open_low else '>='} {low}"
    else:
        words = f"{what} in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"

    def accepts(v: object) -> bool:
        if not is_number(v):
            return False
        above = v > low if open_low else v >= low
        below = high is None or (v < high if open_high else v <= high)
        return above and below

    return Limit(words, accepts)


def exactly(value: int | None, meaning: str) -> Limit:
    """One special value (``-1``, ``null``) with what it means."""
    shown = "null" if value is None else value
    if value is None:
        return Limit(f"null ({meaning})", lambda v: v is None)
    return Limit(f"{shown} ({meaning})", lambda v: _is_whole(v) and v == value)


def _two_betas(value: object) -> bool:
    pair = isinstance(value, list | tuple) and len(value) == 2
    return pair and all(is_number(b) and 0 <= b < 1 for b in value)


SEED = whole(0, 2**32 - 1)  # NumPy's seeds (Lightning's seed_everything, scikit-learn's splits)
BATCHES = whole(1, what="a whole number of batches") | number(
    0, 1, open_low=True, what="a share of them"
)
TIME = Limit(
    "a time 'DD:HH:MM:SS'", lambda v: isinstance(v, str) and bool(re.fullmatch(r"\d+(:\d+){3}", v))
)
PIXELS = whole(1, what="a whole number of pixels") | exactly(None, "Pillow's limit")
SPEED = {"speed.batch_size": whole(1), "speed.repeats": whole(1), "speed.warmup": whole(0)}

LIMITS: dict[str, Limit] = {
    "seed": SEED | exactly(None, "Lightning draws one and prints it"),
    "global_batch_size": whole(1) | exactly(None, "data.batch_size per device"),
    # trainer (train, eval)
    "trainer.max_epochs": whole(1) | exactly(-1, "no limit: trainer.max_steps must end the run"),
    "trainer.min_epochs": whole(0) | exactly(None, "none"),
    "trainer.max_steps": whole(1) | exactly(-1, "no limit: trainer.max_epochs ends the run"),
    "trainer.num_nodes": whole(1),
    "trainer.accumulate_grad_batches": whole(1),
    "trainer.gradient_clip_val": number(0) | exactly(None, "no clipping"),
    "trainer.check_val_every_n_epoch": whole(1)
    | exactly(None, "validation every trainer.val_check_interval batches, a whole number"),
    "trainer.val_check_interval": (
        whole(1, what="a whole number of batches")
        | number(0, 1, open_low=True, what="a share of the epoch")
        | TIME
    ),
    "trainer.log_every_n_steps": whole(1),
    "trainer.limit_train_batches": BATCHES.why("0 would train nothing"),
    "trainer.limit_val_batches": BATCHES.why(
        "best.ckpt, val/acc_best and a sweep's metric come from validation: to validate "
        "less often, trainer.check_val_every_n_epoch=N"
    ),
    "trainer.limit_test_batches": BATCHES.why("0 would score nothing"),
    "trainer.overfit_batches": (whole(0) | number(0, 1)).why("0: off"),
    "trainer.fast_dev_run": Limit("true, false", lambda v: isinstance(v, bool))
    | whole(0, what="a whole number of batches"),
    "trainer.num_sanity_val_steps": whole(0) | exactly(-1, "every validation batch"),
    # data (the keys their modules do not check themselves)
    "data.split_seed": SEED,
    "data.seed": SEED,
    "data.num_workers": whole(0) | exactly(None, "one per CPU core, at most 8"),
    "data.max_translate": number(0, 1).why("a share of the image side"),
    "data.max_rotate_deg": number(0, 180),
    "data.max_scale": number(0, 1, open_high=True).why("zoom in [1 - s, 1 + s]"),
    "data.padding": whole(0),
    "data.crop_pct": number(0, 1, open_low=True),
    "data.hflip": number(0, 1),
    "data.color_jitter": number(0),
    "data.re_prob": number(0, 1),
    "data.max_image_pixels": PIXELS,
    "data.shuffle_buffer": whole(0).why("images; 0: stream order"),
    # model (timm's networks; V1 checks its dropout itself too)
    "model.dropout": number(0, 1, open_high=True),
    "model.drop_path": number(0, 1, open_high=True),
    # module
    "module.label_smoothing": number(0, 1),
    "module.mixup.mixup_alpha": number(0),
    "module.mixup.cutmix_alpha": number(0),
    "module.mixup.prob": number(0, 1),
    "module.mixup.switch_prob": number(0, 1),
    "module.distill.weight": number(0, 1),
    "module.distill.temperature": number(0, open_low=True),
    # quantization-aware training
    "qat.freeze_observers_epoch": whole(0) | exactly(None, "never: the scales learn to the end"),
    "qat.freeze_bn_epoch": whole(0) | exactly(None, "never: BatchNorm's statistics update"),
    # optimizer
    "optimizer.lr": number(0, open_low=True),
    "optimizer.lr_base": number(0, open_low=True) | exactly(None, "optimizer.lr as given"),
    "optimizer.weight_decay": number(0),
    "optimizer.momentum": number(0, 1, open_high=True),
    "optimizer.alpha": number(0, 1),
    "optimizer.eps": number(0),
    "optimizer.betas": Limit("two numbers in [0, 1), e.g. [0.9, 0.999]", _two_betas),
    # scheduler
    "scheduler.warmup_epochs": number(0),
    "scheduler.warmup_start_factor": number(0, 1),
    "scheduler.min_lr": number(0),
    "scheduler.decay_epochs": number(0, open_low=True),
    "scheduler.gamma": number(0, 1, open_low=True),
    # callbacks
    "callbacks.precise_bn.num_batches": whole(1),
    "callbacks.ema.decay": number(0, 1),
    "callbacks.ema.warmup_gamma": number(0, open_low=True),
    "callbacks.ema.warmup_power": number(0, open_low=True),
    "callbacks.ema.update_every_n_steps": whole(1),
    "callbacks.ema.update_starting_at_step": whole(0) | exactly(None, "from the first step"),
    "callbacks.ema.update_starting_at_epoch": whole(0) | exactly(None, "from the first epoch"),
    # export
    "calibration_images": whole(1),
    "per_channel": Limit("true or false", lambda v: isinstance(v, bool)),
    "check_images": whole(1),
    "int8_min_ratio": number(0, 1, open_low=True).why(
        "the share of the fp32 file's test accuracy the int8 file must keep"
    ),
    "parity_factor": number(*FACTOR_RANGE).why(
        "the multiple of PyTorch's own fp32 rounding, its largest fp32 - fp64 logit difference "
        "on the check images, the file's logits may differ by"
    ),
    # export, profile
    **SPEED,
    # predict
    "top_k": whole(1),
    "batch_size": whole(1),
    "max_image_pixels": PIXELS,
    # profile
    "num_classes": whole(1),
    "in_chans": whole(1),
}


_ABSENT = object()


def check_limits(cfg: DictConfig) -> None:
    """Every key of ``LIMITS`` that ``cfg`` has, then the rules that join two keys (the run's
    horizon first: other keys may follow ``trainer.max_epochs``)."""
    trainer = cfg.get("trainer") or {}
    if trainer.get("max_epochs") == -1 and trainer.get("max_steps", -1) == -1:
        raise ConfigError(
            "trainer.max_epochs=-1 (no limit) needs trainer.max_steps >= 1: the learning-rate "
            "schedule and the test at the end need a last step (e.g. +trainer.max_steps=1000)"
        )
    for key, limit in LIMITS.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT:
            continue
        if isinstance(value, DictConfig | ListConfig):
            value = OmegaConf.to_object(value)
        if not limit.accepts(value):
            raise ConfigError(
                f"{key}={_shown(value)}{_source(cfg, key)} is not valid: use {limit.valid}"
            )
    _check_pairs(cfg)


def _source(cfg: DictConfig, key: str) -> str:
    """`` (${.max_epochs})`` when the value comes from another key, which the user set."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not OmegaConf.is_interpolation(parent, leaf):
        return ""
    return f" ({OmegaConf.to_container(parent, resolve=False)[leaf]})"


def _shown(value: object) -> str:
    """A value as it is written on the command line (``null``, ``true``), else its repr."""
    if value is None or isinstance(value, bool):
        return str(value).lower().replace("none", "null")
    return repr(value)


def _check_pairs(cfg: DictConfig) -> None:
    """Values valid alone that do not work together."""
    trainer = cfg.get("trainer") or {}
    every_epoch = trainer.get("check_val_every_n_epoch", 1)
    if every_epoch is None and not _is_whole(trainer.get("val_check_interval")):
        raise ConfigError(
            "trainer.check_val_every_n_epoch=null validates every trainer.val_check_interval "
            f"batches, which must then be a whole number (it is "
            f"{_shown(trainer.get('val_check_interval'))}): e.g. +trainer.val_check_interval=500"
        )
    optimizer = cfg.get("optimizer") or {}
    if optimizer.get("nesterov") and not optimizer.get("momentum", 0) > 0:
        raise ConfigError(
            f"optimizer.momentum={optimizer.momentum} with optimizer.nesterov=true: Nesterov "
            "momentum needs a momentum > 0 (or optimizer.nesterov=false)"
        )
    mixup = OmegaConf.select(cfg, "module.mixup")
    if mixup and not (mixup.get("mixup_alpha", 1.0) > 0 or mixup.get("cutmix_alpha", 0.0) > 0):
        raise ConfigError(
            "module.mixup has mixup_alpha=0 and cutmix_alpha=0, so it mixes nothing: give one "
            "of them > 0, or module.mixup=null"
        )
