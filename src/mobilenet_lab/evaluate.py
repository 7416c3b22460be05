"""Scores a checkpoint on the test split with the model and data config of its own run, or,
with no ``ckpt_path``, the network the config builds from ``model.init_from`` (ported weights)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import rich
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from mobilenet_lab.deploy.loading import built_network
from mobilenet_lab.jobs.ddp_job import ddp_job
from mobilenet_lab.jobs.restored_config import restore_run_config
from mobilenet_lab.runs.checkpoint import checkpoint_weights, load_checkpoint
from mobilenet_lab.runs.files import print_config_tree, scalar_metrics
from mobilenet_lab.runs.metrics import metrics_record, write_metrics
from mobilenet_lab.training.trainer import build_trainer


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Tests ``cfg.ckpt_path`` (or ``model.init_from``'s weights); prints the metrics and writes
    them to ``metrics.json``."""
    with ddp_job():
        return _evaluate(cfg)


def _evaluate(cfg: DictConfig) -> dict[str, Any]:
    started = time.time()
    hydra_cfg = HydraConfig.get()
    checkpoint, choices = None, dict(hydra_cfg.runtime.choices)
    if cfg.ckpt_path:
        checkpoint = load_checkpoint(cfg.ckpt_path)
        cfg, choices = restore_run_config(cfg, checkpoint, hydra_cfg.overrides.task, choices)
    output_dir = Path(cfg.paths.output_dir)
    print_config_tree(cfg, save_to=output_dir / "config_tree.log")

    datamodule = instantiate(cfg.data)
    # a quantization-aware run's checkpoint: its fake-quantized network, as it was tested
    module = instantiate(cfg.module, net=built_network(cfg, instantiate(cfg.model)))
    if checkpoint is not None:
        module.load_state_dict(checkpoint_weights(checkpoint, cfg.weights))
    trainer = build_trainer(cfg)
    test_metrics = scalar_metrics(trainer.test(module, datamodule=datamodule)[0], ["test/"])
    report = metrics_record(  # the report leaves eval runs out of its table of training runs
        "eval",
        cfg.task_name,
        "ok",
        {
            "ckpt_path": str(Path(cfg.ckpt_path).resolve()) if checkpoint is not None else None,
            "init_from": cfg.model.get("init_from"),
            "model": choices.get("model"),
            "data": choices.get("data"),
            "alpha": cfg.model.get("alpha"),
            "image_size": cfg.data.image_size,
            "weights": cfg.weights,
            "test": test_metrics,
            "test_split": datamodule.test_split,  # image folders without test/: val
            "wall_time_s": round(time.time() - started, 3),
            "overrides": list(hydra_cfg.overrides.task),
        },
    )
    if trainer.is_global_zero:
        write_metrics(output_dir, report)
        rich.print(report)
    return report
