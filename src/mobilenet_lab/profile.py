"""Profiles a model at one input size: parameters, mult-adds and their share by layer type,
activation size for one image, and measured latency / throughput on the current device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from mobilenet_lab.analysis.counting import LAYER_TYPES, count_by_layer_type
from mobilenet_lab.analysis.tables import print_table, write_csv
from mobilenet_lab.analysis.timing import default_device, measure_speed
from mobilenet_lab.runs.metrics import metrics_record, write_metrics


def profile(cfg: DictConfig) -> dict[str, Any]:
    """One row of the profile table for ``cfg.model`` at ``cfg.data.image_size``."""
    choices = HydraConfig.get().runtime.choices
    size = cfg.data.image_size
    device = torch.device(cfg.device if cfg.device != "auto" else default_device())
    model = instantiate(cfg.model, num_classes=cfg.num_classes, in_chans=cfg.in_chans).eval()
    image = torch.randn(1, cfg.in_chans, size, size)
    counts = count_by_layer_type(model, image)
    total_macs = sum(counts["mult_adds"].values())
    layer_params = sum(counts["params"].values())
    row: dict[str, Any] = {
        "model": choices.get("model"),
        "alpha": cfg.model.get("alpha"),
        "image_size": size,
        "params": sum(p.numel() for p in model.parameters()),
        "mult_adds": total_macs,
        "activations": (activations := sum(counts["activations"].values())),
        "activation_mib_fp32": activations * 4 / 2**20,
    }
    for kind in LAYER_TYPES:
        row[f"mult_adds_%_{kind}"] = 100 * counts["mult_adds"].get(kind, 0) / total_macs
    for kind in LAYER_TYPES:
        row[f"params_%_{kind}"] = 100 * counts["params"].get(kind, 0) / layer_params
    row.update(measure_speed(model, image, cfg.speed, device))
    output_dir = Path(cfg.paths.output_dir)
    write_metrics(output_dir, metrics_record("profile", cfg.task_name, "ok", row))
    write_csv(output_dir / "profile.csv", [row])
    print_table([row], cfg.summary_columns, title="profile")
    return row
