"""Checks a composed config before any run folder exists: one check per entry point.

Everything here raises ``ConfigError`` with a one-line message naming the key, the bad value
and what would be valid; the Hydra callback in ``hydra_callbacks`` turns it into an exit code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from mobilenet_lab.deploy.formats import (
    SUFFIXES,
    check_format,
    format_of,
    output_paths,
    read_metadata,
)
from mobilenet_lab.deploy.parity import FACTOR_RANGE
from mobilenet_lab.models.pretrained import as_trained
from mobilenet_lab.runs.checkpoint import (
    EVAL_EXAMPLE,
    RESUME_EXAMPLE,
    load_checkpoint,
    restore_run_config,
)
from mobilenet_lab.runs.errors import ConfigError, check_positive_int, is_number
from mobilenet_lab.runs.files import is_training_run
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
    if cfg.get("ckpt_path"):  # the run's own config, as train() will restore it
        resumed = resume_run(cfg)
        check_same_batch(resumed)
        cfg = resumed.config.copy()
        with open_dict(cfg):  # the checkpoint's weights replace init_from's, not read again
            cfg.model = as_trained(cfg.model)
    check_trainer_config(cfg.trainer, hardware)
    per_device_batch_size(cfg)
    check_model_and_data(cfg)
    check_distill(cfg)


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
    check_model_and_data(cfg)


def check_eval_config(cfg: DictConfig, hardware: bool = True) -> None:
    """What ``src/eval.py`` needs: a readable checkpoint, and its run's config still valid; or,
    with no ``ckpt_path``, a network the config builds from ``model.init_from``."""
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
    still valid (its data set gives the check images), an ``int8_min_ratio`` in (0, 1]. Export
    runs on the CPU, so ``hardware`` has nothing to check."""
    if cfg.weights not in ("averaged", "trained"):
        raise ConfigError(f"weights={cfg.weights!r} is not valid: use averaged or trained")
    if cfg.quantize is not None and cfg.quantize != "int8":
        raise ConfigError(
            f"quantize={cfg.quantize!r} is not valid: use int8 (or leave it out for fp32 alone)"
        )
    for key in ("calibration_images", "check_images"):
        _positive_int(cfg, key)
    ratio = cfg.int8_min_ratio
    if not is_number(ratio) or not 0 < ratio <= 1:
        raise ConfigError(
            f"int8_min_ratio={ratio!r} is not valid: use a number in (0, 1], the share of the "
            "fp32 file's test accuracy the int8 file must keep (default 0.99)"
        )
    _check_parity(cfg)
    check_format(cfg.format)
    suffix = SUFFIXES[cfg.format]
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


def _check_parity(cfg: DictConfig) -> None:
    """``parity_factor`` in its range; the key it replaced (a fixed logit difference, which
    refused faithful files of networks with large logits) refused naming it."""
    if cfg.max_abs_diff is not None:
        raise ConfigError(
            f"max_abs_diff={cfg.max_abs_diff!r} is no longer a key: the fp32 file's logits are "
            "now judged against PyTorch's own fp32 rounding on the same images; set "
            "parity_factor instead (the multiple of that rounding accepted)"
        )
    low, high = FACTOR_RANGE
    if not is_number(cfg.parity_factor) or not low <= cfg.parity_factor <= high:
        raise ConfigError(
            f"parity_factor={cfg.parity_factor!r} is not valid: use a number in [{low}, {high}], "
            "the multiple of PyTorch's own fp32 rounding (max |fp32 - fp64| of the network on "
            "the check images) the file's logits may differ by"
        )


def check_predict_config(cfg: DictConfig, hardware: bool = True) -> None:
    """What ``src/predict.py`` needs: a checkpoint of this kit or a file it exported (ONNX,
    ExecuTorch, LiteRT), and an input that names at least one image file."""
    from mobilenet_lab.deploy.inputs import list_inputs

    if cfg.weights not in ("averaged", "trained"):
        raise ConfigError(f"weights={cfg.weights!r} is not valid: use averaged or trained")
    for key in ("top_k", "batch_size"):
        _positive_int(cfg, key)
    if cfg.device not in ("auto", "cpu") and not str(cfg.device).startswith("cuda"):
        raise ConfigError(f"device={cfg.device!r} is not valid: use auto, cpu or cuda[:N]")
    if hardware and str(cfg.device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device!r} but this machine has no GPU: use auto or cpu")
    if cfg.ckpt_path and format_of(cfg.ckpt_path) is not None:
        read_metadata(cfg.ckpt_path)
    else:
        load_checkpoint(cfg.ckpt_path, example=PREDICT_EXAMPLE)
    list_inputs(cfg.input)


PREDICT_EXAMPLE = (
    "e.g. ckpt_path=logs/train/runs/<time>/checkpoints/best.ckpt or .../model.onnx, "
    ".../model.pte, .../model.tflite"
)


def _positive_int(cfg: DictConfig, key: str) -> None:
    try:
        check_positive_int(key, cfg[key])
    except ValueError as error:
        raise ConfigError(str(error)) from error


def _writable_folder(folder: Path, key: str) -> None:
    """The nearest existing folder of ``folder`` must be writable: an export must not fail
    after its minutes of lowering, nor leave half a file."""
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{key}: {folder} cannot be written ({existing} is not a writable folder): give an "
            "output_path in a folder you can write"
        )
