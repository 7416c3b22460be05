"""Builds the Lightning Trainer from the ``trainer``, ``callbacks`` and ``logger`` groups."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.plugins import TorchSyncBatchNorm
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mobilenet_lab.runs.errors import ConfigError
from mobilenet_lab.runs.machine import usable_cpus
from mobilenet_lab.training.loggers import ResumePoint, build_loggers


def build_trainer(
    cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = (), resume: ResumePoint | None = None
) -> L.Trainer:
    """The trainer with every callback in the ``callbacks`` group plus the caller's own, the
    plugins named in ``trainer.plugins``, and the loggers of the ``logger`` group (continuing a
    resumed run's history at ``resume``)."""
    callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node]
    arguments = OmegaConf.to_container(cfg.trainer, resolve=True)
    named_plugins = arguments.pop("plugins", None) or {}
    plugins = [instantiate(node) for node in named_plugins.values() if node]
    loggers = build_loggers(cfg, resume)
    return instantiate(
        arguments,
        callbacks=[*callbacks, *extra_callbacks],
        logger=loggers or False,
        plugins=plugins or None,
    )


def check_trainer_config(trainer: DictConfig, hardware: bool = True) -> None:
    """Refuses trainer settings that cannot run, before any work starts. ``hardware=False``:
    the jobs run on other machines (a SLURM launcher), so this machine's GPUs and cores say
    nothing; only what holds anywhere is checked, and the job checks the rest where it runs."""
    accelerator = str(trainer.get("accelerator", "auto"))
    precision = str(trainer.get("precision", 32))
    if accelerator == "cpu":
        check_no_sync_batchnorm(trainer)
    if not hardware:
        devices = trainer.get("devices", "auto")
        if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
            raise ConfigError(
                f"trainer.devices={devices} but a launcher that starts jobs on other machines "
                "needs the number of devices per node: give trainer.devices=<GPUs per node>"
            )
        if accelerator == "cpu" and precision.startswith("16"):
            raise ConfigError(f"trainer.precision={precision} needs a GPU: use 32 or bf16-mixed")
        return
    gpus = torch.cuda.device_count()
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0)
    if on_gpu and gpus == 0:
        raise ConfigError(
            f"trainer.accelerator={accelerator} but this machine has no GPU: use trainer=cpu, "
            "or trainer=ddp_cpu for several CPU processes"
        )
    if not on_gpu and precision.startswith("16"):
        raise ConfigError(
            f"trainer.precision={precision} needs a GPU: on a CPU use 32 or bf16-mixed "
            "(bf16 on a CPU is much slower than 32: about 20x on the 2-core machines here)"
        )
    if not on_gpu:
        check_no_sync_batchnorm(trainer)
    devices = device_count(trainer)
    available = gpus if on_gpu else usable_cpus()
    if devices > available:
        kind = "GPUs" if on_gpu else "CPU cores"
        raise ConfigError(
            f"trainer.devices={trainer.get('devices')} but this machine has {available} {kind}: "
            f"use trainer.devices=1 to {available}"
        )


def check_no_sync_batchnorm(trainer: DictConfig) -> None:
    """SyncBatchNorm runs on GPUs only (torch's DDP refuses it at the first step on a CPU)."""
    plugins = trainer.get("plugins") or {}
    synced = [name for name, node in plugins.items() if node and "SyncBatchNorm" in node._target_]
    if synced or trainer.get("sync_batchnorm"):
        key = f"trainer.plugins.{synced[0]}" if synced else "trainer.sync_batchnorm"
        raise ConfigError(
            f"{key} (SyncBatchNorm) needs GPUs but trainer.accelerator is "
            f"{trainer.get('accelerator')}: for DDP over CPU processes use trainer=ddp_cpu "
            f"(trainer.devices=N), or drop it with ~{key}"
        )


def device_count(trainer: DictConfig) -> int:
    """The processes per node Lightning's Trainer starts for ``trainer.devices``: a number as
    given; ``auto``, ``-1``, lists and ``"0,1"`` counted by Lightning's own parsers."""
    devices = trainer.get("devices", "auto")
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        return devices
    from lightning.fabric.utilities.device_parser import _select_auto_accelerator
    from lightning.pytorch.accelerators import AcceleratorRegistry, MPSAccelerator
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    name = str(trainer.get("accelerator", "auto"))
    if name == "auto":
        name = _select_auto_accelerator()
    elif name == "gpu":
        name = "mps" if MPSAccelerator.is_available() else "cuda"
    flag = OmegaConf.to_object(devices) if OmegaConf.is_list(devices) else devices
    try:
        accelerator = AcceleratorRegistry.get(name)
        flag = accelerator.auto_device_count() if flag == "auto" else flag
        count = len(accelerator.get_parallel_devices(accelerator.parse_devices(flag)))
    except (KeyError, TypeError, ValueError, MisconfigurationException) as error:
        raise ConfigError(
            f"trainer.devices={devices} is not valid for trainer.accelerator={name} "
            f"({error}): use a number of devices >= 1"
        ) from error
    if count < 1:
        raise ConfigError(f"trainer.devices={devices} gives no device: use a number >= 1")
    return count


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it into place, so a run killed
    while saving leaves the previous ``last.ckpt`` whole."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        tmp = Path(f"{path}.tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)


class TimmSyncBatchNorm(TorchSyncBatchNorm):
    """SyncBatchNorm for DDP that keeps timm's ``BatchNormAct2d`` whole.

    Lightning's ``sync_batchnorm=True`` uses torch's conversion, which turns a ``BatchNormAct2d``
    (the norm with its activation inside: all of timm's MobileNets) into a plain SyncBatchNorm
    whose activation is never called. timm's ``convert_sync_batchnorm`` makes
    ``SyncBatchNormAct`` instead; ``revert`` (after ``fit``, before ``test``) gives back a
    ``BatchNormAct2d`` with the same activation, where Lightning's would drop it again."""

    def apply(self, model: nn.Module) -> nn.Module:
        from timm.layers import convert_sync_batchnorm

        return convert_sync_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        from timm.layers import BatchNormAct2d
        from timm.layers.norm_act import SyncBatchNormAct

        if not isinstance(model, SyncBatchNormAct):
            return super().revert(model)  # Lightning's, which calls this method on each child
        reverted = BatchNormAct2d(
            model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats
        )
        if model.affine:
            reverted.weight, reverted.bias = model.weight, model.bias
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(reverted, name, getattr(model, name))
        reverted.train(model.training)
        for name, child in model.named_children():  # the original act and drop modules
            reverted.add_module(name, self.revert(child))
        return reverted


def per_device_batch_size(cfg: DictConfig) -> int:
    """``data.batch_size``, or ``global_batch_size`` split over devices x nodes x accumulation
    (a ConfigError when it does not divide). Devices are counted as Lightning counts them."""
    if not cfg.get("global_batch_size"):
        return cfg.data.batch_size
    trainer = cfg.trainer
    devices = device_count(trainer)
    share = devices * trainer.get("num_nodes", 1) * trainer.get("accumulate_grad_batches", 1)
    if cfg.global_batch_size % share:
        raise ConfigError(
            f"global_batch_size={cfg.global_batch_size} does not divide over {share} "
            f"(devices x nodes x accumulation): use a multiple of {share}"
        )
    return cfg.global_batch_size // share
