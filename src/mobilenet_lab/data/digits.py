"""scikit-learn's bundled handwritten digits: a real image data set that needs no download.

1,797 images, 8x8 grey levels 0-16, 10 classes. The whole set is held as one small tensor at
its native 8x8; each batch is resized to ``image_size`` (and augmented, for training) on the
device it lands on, so no per-image Python work is done.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor

from mobilenet_lab.data.batch_transforms import random_affine_resize
from mobilenet_lab.data.in_memory import InMemoryDataModule


class DigitsDataModule(InMemoryDataModule):
    """Stratified train/val/test split with a fixed seed; images normalised by train statistics.

    ``num_classes`` and ``in_chans`` are fixed by the data set; the config states them once
    here so that the model config can read them. Training augmentation is a light random
    affine (shift, rotation, zoom); flips are left out because they change what a digit means.
    """

    pixel_max = 16.0  # the digits' grey levels run 0-16
    classes = tuple("0123456789")

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        image_size: int = 32,
        batch_size: int = 128,
        val_fraction: float = 0.05,
        test_fraction: float = 0.25,
        split_seed: int = 0,
        augment: bool = True,
        max_translate: float = 0.1,
        max_rotate_deg: float = 10.0,
        max_scale: float = 0.1,
        train_images: int | None = None,
    ) -> None:
        if (num_classes, in_chans) != (10, 1):
            raise ValueError(
                f"num_classes={num_classes}, in_chans={in_chans} do not fit the digits: "
                "they have 10 classes of 1-channel images (leave both at 10 and 1)"
            )
        super().__init__(image_size, batch_size, num_classes, in_chans, augment)
        if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
            raise ValueError(
                f"val_fraction={val_fraction!r}, test_fraction={test_fraction!r} are not valid: "
                "use two fractions > 0 whose sum is < 1"
            )
        self.save_hyperparameters()
        self.mean, self.std = (0.0,), (1.0,)
        if train_images is not None:  # checked here, before any run folder
            self._split()

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        images, labels, splits = self._split()
        train_images = images[splits["train"]].float() / self.pixel_max
        self.mean, self.std = (train_images.mean().item(),), (train_images.std().item(),)
        return {name: (images[index], labels[index]) for name, index in splits.items()}

    def _split(self) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """The images, labels and each split's indices (``train_images``: a stratified subset
        of the training split, for learning from fewer labels)."""
        hp = self.hparams
        digits = load_digits()
        images = torch.from_numpy(digits.images).to(torch.uint8).unsqueeze(1)
        labels = torch.from_numpy(digits.target).long()
        index = torch.arange(len(labels))
        rest, test = train_test_split(
            index, test_size=hp.test_fraction, stratify=labels, random_state=hp.split_seed
        )
        train, val = train_test_split(
            rest,
            test_size=hp.val_fraction / (1 - hp.test_fraction),
            stratify=labels[rest],
            random_state=hp.split_seed,
        )
        if hp.train_images is not None and not 10 <= hp.train_images <= len(train):
            raise ValueError(
                f"train_images={hp.train_images} is not valid: use 10 to {len(train)} "
                "(the training split's size; null: all of it)"
            )
        if hp.train_images is not None and hp.train_images < len(train):
            train, _ = train_test_split(
                train, train_size=hp.train_images, stratify=labels[train],
                random_state=hp.split_seed,
            )  # fmt: skip
        return images, labels, {"train": train, "val": val, "test": test}

    def random_augmentation(self) -> str | None:
        return "data.augment=true" if self.augmenting else None

    def augment(self, images: Tensor) -> Tensor:
        hp = self.hparams
        return random_affine_resize(
            images, self.image_size, hp.max_translate, hp.max_rotate_deg, hp.max_scale
        )
