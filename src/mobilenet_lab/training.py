"""The training flow: compose -> instantiate -> fit -> test on the best checkpoint -> report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from mobilenet_lab.callbacks import FirstStepTimer, SaveRunConfig
from mobilenet_lab.run_files import print_config_tree, scalar_metrics, write_json_atomic
from mobilenet_lab.trainer import build_trainer


def train(cfg: DictConfig) -> dict[str, Any]:
    """Trains ``cfg.model`` on ``cfg.data``, tests the best checkpoint, writes ``metrics.json``."""
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    choices = dict(HydraConfig.get().runtime.choices)
    print_config_tree(cfg, save_to=output_dir / "config_tree.log")
    L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    net = instantiate(cfg.model)
    module = instantiate(
        cfg.module,
        net=net,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
    )
    timer = FirstStepTimer()
    run_config = SaveRunConfig(OmegaConf.to_container(cfg, resolve=True), choices)
    trainer = build_trainer(cfg, extra_callbacks=[timer, run_config])

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    val_metrics = scalar_metrics(trainer.callback_metrics, ["val/"])
    best = _best_checkpoint(trainer)
    test_metrics = scalar_metrics(
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None)[0], ["test/"]
    )
    finished = time.time()
    report = {
        "task": cfg.task_name,
        "model": choices.get("model"),
        "data": choices.get("data"),
        "alpha": cfg.model.get("alpha"),
        "image_size": cfg.data.image_size,
        "params": sum(p.numel() for p in net.parameters()),
        "val": val_metrics,
        "test": test_metrics,
        "epochs": trainer.current_epoch,
        "best_checkpoint": best,
        "wall_time_s": round(finished - started, 3),
        "started_at": started,
        "first_step_at": timer.first_step_time,
        "overrides": list(HydraConfig.get().overrides.task),
    }
    if trainer.is_global_zero:
        write_json_atomic(output_dir / "metrics.json", report)
    return report


def _best_checkpoint(trainer: L.Trainer) -> str:
    callback = trainer.checkpoint_callback
    return callback.best_model_path if isinstance(callback, ModelCheckpoint) else ""
