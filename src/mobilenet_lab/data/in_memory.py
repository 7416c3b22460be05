"""The base of the small data sets held whole in memory as uint8 tensors (digits, CIFAR,
synthetic). Batches are cut from the tensors and augmented on the device they land on, in one
batched call, so no per-image Python or PIL work is done and no worker process is needed."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from mobilenet_lab.data.batch_transforms import resize
from mobilenet_lab.data.distributed import unrepeated_sampler
from mobilenet_lab.runs.errors import check_positive_int

Batch = tuple[Tensor, Tensor]
SPLITS = ("train", "val", "test")


class InMemoryDataModule(L.LightningDataModule):
    """Subclasses fill ``self.splits`` with uint8 image / int64 label tensors in ``load`` and
    say how a training batch is augmented in ``augment``. ``batch_size`` is per device;
    ``augment=False`` prepares training batches as eval batches (``debug=overfit``)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    pixel_max = 255.0  # value of a white pixel in the stored tensors
    test_split = "test"  # the split the test step scores: a held-out one here

    def __init__(
        self, image_size: int, batch_size: int, num_classes: int, in_chans: int, augment: bool
    ) -> None:
        super().__init__()
        check_positive_int("image_size", image_size)
        check_positive_int("batch_size", batch_size)
        self.image_size, self.batch_size, self.augmenting = image_size, batch_size, augment
        self.num_classes, self.in_chans = num_classes, in_chans
        self.splits: dict[str, TensorDataset] = {}

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        """(uint8 images N x C x H x W, int64 labels N) for each of train / val / test."""
        raise NotImplementedError

    def augment(self, images: Tensor) -> Tensor:
        """A training batch (float, 0-1, stored size) -> augmented, at ``image_size``."""
        raise NotImplementedError

    def random_augmentation(self) -> str | None:
        """The settings that change a training image from one epoch to the next, if any."""
        return None

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = {name: TensorDataset(*tensors) for name, tensors in self.load().items()}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.splits[split]
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=None if shuffle else unrepeated_sampler(dataset, self.trainer),
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def calibration_dataloader(self) -> DataLoader:
        """Training images, shuffled; outside a fit they take the eval resize, unaugmented."""
        return self._loader("train", shuffle=True)

    def attach_train_outputs(self, model: Callable[[Tensor], Tensor], device: torch.device) -> None:
        """Runs ``model`` once over the training images as every epoch shows them and serves
        its outputs beside them: a training batch is then (images, labels, outputs). Valid
        only without ``random_augmentation`` (``distillation.check_cache``)."""
        images, labels = self.splits["train"].tensors[:2]
        outputs = [model(self._prepare(chunk.to(device), training=True)).float().cpu()
                   for chunk in images.split(self.batch_size)]  # fmt: skip
        self.splits["train"] = TensorDataset(images, labels, torch.cat(outputs))

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        images, labels, *attached = batch  # attached: see attach_train_outputs
        training = self.trainer is not None and self.trainer.training
        return (self._prepare(images, training), labels, *attached)

    def _prepare(self, images: Tensor, training: bool) -> Tensor:
        """uint8 images -> normalised float at ``image_size`` (augmented for training)."""
        images = images.float() / self.pixel_max
        augmented = training and self.augmenting
        images = self.augment(images) if augmented else resize(images, self.image_size)
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return (images - mean) / std
