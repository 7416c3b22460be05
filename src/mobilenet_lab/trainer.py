"""Builds the Lightning Trainer from the ``trainer``, ``callbacks`` and ``logger`` groups."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """One logger per entry of the ``logger`` group (empty with ``logger=null``)."""
    return [instantiate(node) for node in (cfg.get("logger") or {}).values() if node]


def build_trainer(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """The trainer with every callback in the ``callbacks`` group plus the caller's own."""
    callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node]
    loggers = build_loggers(cfg)
    return instantiate(
        cfg.trainer, callbacks=[*callbacks, *extra_callbacks], logger=loggers or False
    )
