"""The config ``eval.py`` scores a checkpoint with (and ``export.py`` exports it with): the
run's model, data and module, then the user's overrides. Here, above ``runs/``, because the
network is rebuilt as trained (``models.pretrained.as_trained``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from mobilenet_lab.models.pretrained import as_trained
from mobilenet_lab.runs.checkpoint import load_checkpoint
from mobilenet_lab.runs.errors import ConfigError
from mobilenet_lab.runs.record import RunRecord

QAT_EXAMPLE = "e.g. qat.from=logs/train/runs/<time>/checkpoints/best.ckpt (a float run's)"

RESTORED_GROUPS = ("model", "data", "module")


def restore_run_config(
    cfg: DictConfig,
    checkpoint: dict[str, Any],
    overrides: Sequence[str],
    choices: dict[str, str],
) -> tuple[DictConfig, dict[str, str]]:
    """The eval config with the run's ``model``, ``data`` and ``module`` (and ``qat``, as the
    run had it), then the user's own overrides.

    A group the user chose again (``data=...``) is taken whole from ``cfg``; a key the user set
    (``data.batch_size=...``) is copied from ``cfg`` onto the saved group. Returns the config
    and the group choices (model and data names) it stands for.
    """
    run = RunRecord.of(checkpoint)
    saved = OmegaConf.create(run.config)
    restored_choices = {**choices, **{g: run.choices[g] for g in RESTORED_GROUPS}}
    merged = cfg.copy()
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    keys = [override.key_or_group for override in parsed]
    for group in RESTORED_GROUPS:
        if group in keys:
            restored_choices[group] = choices[group]
            continue
        with open_dict(merged):  # the network as trained, from the checkpoint alone
            merged[group] = as_trained(saved.model) if group == "model" else saved[group]
        for key in keys:
            if key.startswith(f"{group}."):
                OmegaConf.update(merged, key, OmegaConf.select(cfg, key), force_add=True)
    with open_dict(merged):  # a quantization-aware run's network is its fake-quantized graph
        merged.qat = cfg.get("qat") or saved.get("qat")
    return merged, restored_choices


def with_float_run(
    cfg: DictConfig, overrides: Sequence[str], choices: dict[str, str]
) -> tuple[DictConfig, dict[str, str]]:
    """A quantization-aware fine-tune's config (``cfg.qat``): the ``model``, ``data`` and
    ``module`` of the float run it starts from (``qat.from``), then the command line's own
    overrides; a checkpoint of another tool, or of a quantization-aware run, is refused."""
    if not cfg.qat.get("from"):
        raise ConfigError(f"qat.from is not set: give the float run to fine-tune, {QAT_EXAMPLE}")
    checkpoint = load_checkpoint(cfg.qat["from"], QAT_EXAMPLE, key="qat.from")
    earlier = RunRecord.of(checkpoint).config.get("qat")
    if earlier:
        raise ConfigError(
            f"qat.from={cfg.qat['from']!r} is a quantization-aware run's checkpoint: fine-tune "
            f"from the float run it came from, qat.from={earlier['from']}"
        )
    return restore_run_config(cfg, checkpoint, overrides, choices)
