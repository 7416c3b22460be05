"""Validation and test under DDP: every sample scored exactly once."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Dataset, Sampler


def unrepeated_sampler(dataset: Dataset, trainer: L.Trainer | None) -> Sampler | None:
    """Each rank's share of a val/test split, none twice; None outside distributed runs.

    Lightning's default for these loaders is torch's DistributedSampler, which pads the split to
    a multiple of the world size with repeated samples (270 images on 4 GPUs: 272 scored), and
    the synced metrics would count the repeats. Lightning keeps a DistributedSampler it is given;
    ranks then hold one sample more or less, which torchmetrics' sync weighs correctly (no
    gradients are synced in validation and test, so unequal batch counts cannot hang DDP)."""
    if trainer is None or trainer.world_size == 1:
        return None
    return UnrepeatedDistributedSampler(
        dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
    )
