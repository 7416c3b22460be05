"""scikit-learn's bundled handwritten digits: a real image data set that needs no download.

1,797 images, 8x8 grey levels 0-16, 10 classes. The whole set is held as one small tensor at
its native 8x8; each batch is resized to ``image_size`` (and augmented, for training) on the
device it lands on, so no per-image Python work is done.
"""

from __future__ import annotations

import lightning as L
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from mobilenet_lab.checks import check_positive_int
from mobilenet_lab.data.batch_transforms import random_affine_resize, resize

Batch = tuple[Tensor, Tensor]


class DigitsDataModule(L.LightningDataModule):
    """Stratified train/val/test split with a fixed seed; images normalised by train statistics.

    ``num_classes`` and ``in_chans`` are fixed by the data set; the config states them once
    here so that the model config can read them.
    ``batch_size`` is per device. Training augmentation is a light random affine (shift,
    rotation, zoom); flips are left out because they change what a digit means.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        image_size: int = 32,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        augment: bool = True,
        max_translate: float = 0.1,
        max_rotate_deg: float = 10.0,
        max_scale: float = 0.1,
    ) -> None:
        super().__init__()
        if (num_classes, in_chans) != (10, 1):
            raise ValueError(
                f"num_classes={num_classes}, in_chans={in_chans} do not fit the digits: "
                "they have 10 classes of 1-channel images (leave both at 10 and 1)"
            )
        self.num_classes, self.in_chans = num_classes, in_chans
        check_positive_int("image_size", image_size)
        check_positive_int("batch_size", batch_size)
        if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
            raise ValueError(
                f"val_fraction={val_fraction!r}, test_fraction={test_fraction!r} are not valid: "
                "use two fractions > 0 whose sum is < 1"
            )
        self.save_hyperparameters()
        self.splits: dict[str, TensorDataset] = {}
        self.mean, self.std = 0.0, 1.0

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        hp = self.hparams
        digits = load_digits()
        images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0
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
        for name, idx in (("train", train), ("val", val), ("test", test)):
            self.splits[name] = TensorDataset(images[idx], labels[idx])
        train_images = images[train]
        self.mean, self.std = train_images.mean().item(), train_images.std().item()

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.splits[split], batch_size=self.hparams.batch_size, shuffle=shuffle, drop_last=False
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        images, labels = batch
        hp = self.hparams
        training = self.trainer is not None and self.trainer.training
        if training and hp.augment:
            images = random_affine_resize(
                images, hp.image_size, hp.max_translate, hp.max_rotate_deg, hp.max_scale
            )
        else:
            images = resize(images, hp.image_size)
        return (images - self.mean) / self.std, labels
