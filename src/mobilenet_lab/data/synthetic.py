"""Random images and labels of any shape, for speed tests: no files, no decoding."""

from __future__ import annotations

import torch
from torch import Tensor

from mobilenet_lab.data.batch_transforms import resize
from mobilenet_lab.data.in_memory import InMemoryDataModule
from mobilenet_lab.runs.errors import check_positive_int


class SyntheticDataModule(InMemoryDataModule):
    """``size`` random uint8 images per split, generated once from ``seed``. They are never
    augmented: ``augment`` is there, and only ``false``, so that presets that turn augmentation
    off (``debug=overfit``) compose with every data set."""

    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        image_size: int = 224,
        batch_size: int = 64,
        size: int = 1024,
        seed: int = 0,
        augment: bool = False,
    ) -> None:
        if augment:
            raise ValueError("augment=True is not valid: synthetic images have no augmentation")
        super().__init__(image_size, batch_size, num_classes, in_chans, augment)
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        check_positive_int("size", size)
        self.save_hyperparameters()
        self.mean, self.std = self.mean[:1] * in_chans, self.std[:1] * in_chans

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        hp = self.hparams
        generator = torch.Generator().manual_seed(hp.seed)
        shape = (hp.size, hp.in_chans, hp.image_size, hp.image_size)
        return {
            split: (
                torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator),
                torch.randint(0, hp.num_classes, (hp.size,), generator=generator),
            )
            for split in ("train", "val", "test")
        }

    def augment(self, images: Tensor) -> Tensor:
        return resize(images, self.image_size)
