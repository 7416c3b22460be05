"""The training flow: compose -> instantiate -> fit -> test on the best checkpoint -> report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from mobilenet_lab.deploy.loading import built_network, load_float_network
from mobilenet_lab.export import export_after_qat
from mobilenet_lab.jobs.ddp_job import ddp_job
from mobilenet_lab.jobs.restored_config import with_float_run
from mobilenet_lab.models import as_trained
from mobilenet_lab.runs.errors import RecordedRefusal
from mobilenet_lab.runs.files import print_config_tree, scalar_metrics
from mobilenet_lab.runs.metrics import metrics_record, write_metrics
from mobilenet_lab.runs.record import RunRecord
from mobilenet_lab.runs.resume import listed, resume_run
from mobilenet_lab.training.callbacks import RunClock, SaveRunConfig
from mobilenet_lab.training.loggers import ResumePoint
from mobilenet_lab.training.optimizer import build_optimizer
from mobilenet_lab.training.trainer import build_trainer, per_device_batch_size


def train(cfg: DictConfig) -> dict[str, Any]:
    """Trains ``cfg.model`` on ``cfg.data``, tests the best checkpoint, writes ``metrics.json``."""
    with ddp_job():
        return _train(cfg)


def _train(cfg: DictConfig) -> dict[str, Any]:
    started = time.time()
    resumed = resume_run(cfg) if cfg.get("ckpt_path") else None
    choices = dict(HydraConfig.get().runtime.choices)
    if resumed:  # the run's own recorded config, with the free settings of this command on top
        cfg = resumed.config
        choices |= resumed.record_choices()
        print(resumed.summary())
    elif cfg.get("qat"):  # a quantization-aware fine-tune: the float run's model and data
        cfg, choices = with_float_run(cfg, HydraConfig.get().overrides.task, choices)
    output_dir = Path(cfg.paths.output_dir)
    with open_dict(cfg):
        cfg.data.batch_size = per_device_batch_size(cfg)
    print_config_tree(cfg, save_to=output_dir / "config_tree.log")
    L.seed_everything(cfg.seed, workers=True)

    clock = RunClock(started)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    # The checkpoint rebuilds the network as trained from itself alone (Keras's settings
    # written out); init_from stays in it as a record of where the weights came from.
    provenance = {k: v for k, v in resolved["model"].items() if k in ("init_from", "pretrained")}
    resolved["model"] = {**as_trained(resolved["model"]), **provenance}
    record = RunRecord(
        config=resolved,
        composed=OmegaConf.to_container(cfg, resolve=False),
        choices=choices,
        overrides=resumed.overrides if resumed else list(HydraConfig.get().overrides.task),
        changed_on_resume=resumed.all_changes() if resumed else {},
    )
    resume = None
    if resumed:
        resume = ResumePoint(resumed.record.global_step, resumed.record.logger_ids)
    trainer = build_trainer(cfg, extra_callbacks=[clock, SaveRunConfig(record)], resume=resume)
    global_batch = global_batch_size(cfg.data.batch_size, trainer)
    datamodule = instantiate(cfg.data)
    # Resumed: the checkpoint's weights replace any init_from, which is not read again.
    if resume:
        plain_net = instantiate(as_trained(resolved["model"]))
    elif cfg.get("qat"):  # the float run's weights
        plain_net = load_float_network(cfg.qat["from"], "averaged")
    else:
        plain_net = instantiate(cfg.model)
    net = built_network(cfg, plain_net)  # a QAT run's: the fake-quantized graph of plain_net
    module = instantiate(
        cfg.module,
        net=net,
        optimizer=build_optimizer(cfg.optimizer, global_batch),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
    )
    facts = {
        "model": choices.get("model"),
        "data": choices.get("data"),
        "alpha": cfg.model.get("alpha"),
        "image_size": cfg.data.image_size,
        "params": sum(p.numel() for p in plain_net.parameters()),
        "mult_adds": mult_adds(plain_net, cfg.data.in_chans, cfg.data.image_size),
        "global_batch_size": global_batch,
        "lr": module.optimizer_factory.keywords.get("lr"),
    }
    recipe = {key: resolved[key] for key in ("module", "optimizer", "scheduler")}
    for logger in trainer.loggers:  # once per run, beside the data module's own hparams
        logger.log_hyperparams({**facts, **recipe})

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    val_metrics = scalar_metrics(trainer.callback_metrics, ["val/"])
    best = _best_checkpoint(trainer)
    if best:  # its state_dict: the EMA weights with callbacks=ema (given as ckpt_path to test,
        # Lightning's EMA callback would reload the trained ones from current_model_state)
        module.load_state_dict(trainer.strategy.load_checkpoint(best)["state_dict"])
    test_metrics = scalar_metrics(trainer.test(module, datamodule=datamodule)[0], ["test/"])
    exported, refusal = {}, None
    if cfg.get("qat") and cfg.qat.export and best and trainer.is_global_zero:
        exported, refusal = export_after_qat(best)  # its int8 file, checked as export checks
    report = metrics_record(  # failed and diverged runs: see failures.run_job
        "train",
        cfg.task_name,
        "refused" if refusal else "ok",
        {
            **facts,
            "val": val_metrics,
            "test": test_metrics,
            "test_split": datamodule.test_split,  # image folders without test/: val
            "lr": built_lr(trainer),
            "epochs": trainer.current_epoch,
            "best_checkpoint": best,
            "wall_time_s": round(clock.total_s(), 3),  # every segment of a resumed run
            "segments": clock.segments,  # 1, or 1 + the times it was resumed
            "started_at": started,  # this segment's
            "first_step_at": clock.first_step_time,
            "overrides": record.overrides,  # a resumed run's: every segment's (not ckpt_path)
            "resumed_from": resumed.config.ckpt_path if resumed else None,
            "changed_on_resume": listed(record.changed_on_resume),  # every segment's
            **module.distillation_record(),  # which teacher taught it, if any
            **({"qat_from": cfg.qat["from"], "export": exported} if cfg.get("qat") else {}),
        },
    )
    if trainer.is_global_zero:
        write_metrics(output_dir, report)
    if refusal:  # the run's checkpoints and metrics.json are kept; the int8 file is not
        raise RecordedRefusal(refusal)
    return report


def global_batch_size(per_device: int, trainer: L.Trainer) -> int:
    """Images per optimizer step: per-device batch x devices x nodes x accumulation."""
    return per_device * trainer.num_devices * trainer.num_nodes * trainer.accumulate_grad_batches


def built_lr(trainer: L.Trainer) -> float | None:
    """The base learning rate of the optimizer Lightning built (before any schedule moved it)."""
    if not trainer.optimizers:
        return None
    group = trainer.optimizers[0].param_groups[0]
    return group.get("initial_lr", group["lr"])


def mult_adds(net: torch.nn.Module, in_chans: int, size: int) -> int:
    """Mult-adds of one image through ``net`` (counted in eval mode, which changes nothing)."""
    from mobilenet_lab.analysis.counting import count_by_layer_type

    was_training = net.training
    counts = count_by_layer_type(net.eval(), torch.zeros(1, in_chans, size, size))
    net.train(was_training)
    return sum(counts["mult_adds"].values())


def _best_checkpoint(trainer: L.Trainer) -> str:
    callback = trainer.checkpoint_callback
    return callback.best_model_path if isinstance(callback, ModelCheckpoint) else ""
