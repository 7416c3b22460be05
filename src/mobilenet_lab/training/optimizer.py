"""The optimizer from the ``optimizer`` group, with timm's learning-rate scaling rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

REFERENCE_BATCH = 256  # lr_base is the learning rate at this global batch size (as in timm)


def build_optimizer(optimizer: DictConfig, global_batch_size: int) -> Callable[..., Any]:
    """A torch.optim partial. With ``lr_base`` set, ``lr = lr_base * global_batch / 256``."""
    node = OmegaConf.to_container(optimizer, resolve=True)
    lr_base = node.pop("lr_base", None)
    if lr_base is not None:
        node["lr"] = lr_base * global_batch_size / REFERENCE_BATCH
    return instantiate(node)
