"""The embedded digits data module: stratified fixed splits, batch resizing and augmentation."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.datasets import load_digits
from sklearn.utils import Bunch

from mobilenet_lab.data.batch_transforms import random_affine_resize, resize
from mobilenet_lab.data.digits import DigitsDataModule


def splits(dm: DigitsDataModule) -> dict[str, torch.Tensor]:
    return {name: ds.tensors[1] for name, ds in dm.splits.items()}


def test_splits_are_stratified_fixed_and_cover_the_set() -> None:
    dm = DigitsDataModule()
    dm.setup()
    labels = splits(dm)
    # 70 / 5 / 25 %: a 450-image test split, so one image is 0.22 points of test accuracy.
    assert {k: len(v) for k, v in labels.items()} == {"train": 1257, "val": 90, "test": 450}
    for split in labels.values():  # every class in every split, in proportion
        counts = torch.bincount(split, minlength=10).float()
        assert (counts / counts.sum() - 0.1).abs().max() < 0.02
    again = DigitsDataModule()
    again.setup()
    assert all(torch.equal(labels[k], splits(again)[k]) for k in labels)
    other = DigitsDataModule(split_seed=1)
    other.setup()
    assert not torch.equal(labels["test"], splits(other)["test"])


def test_the_shipped_config_uses_this_split() -> None:
    """``python src/train.py`` (conf/data/digits.yaml) splits as the module's defaults do."""
    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "data" / "digits.yaml")
    defaults = inspect.signature(DigitsDataModule).parameters
    for key in ("val_fraction", "test_fraction", "split_seed"):
        assert cfg[key] == defaults[key].default, key


def test_splits_share_no_image_index(monkeypatch) -> None:
    """The digits repeat a few images, so pixels cannot tell indices apart: mark each image
    with its index (base 17 in its first three pixels) and read the indices back."""
    import mobilenet_lab.data.digits as digits_module

    real = load_digits()
    marked = real.images.copy()
    index = np.arange(len(marked))
    for place in range(3):
        marked[:, 0, place] = index // 17**place % 17
    monkeypatch.setattr(
        digits_module, "load_digits", lambda: Bunch(images=marked, target=real.target)
    )
    dm = DigitsDataModule()
    dm.setup()

    def indices(split: str) -> set[int]:
        pixels = dm.splits[split].tensors[0][:, 0, 0, :3].long()
        return set((pixels * torch.tensor([1, 17, 17**2])).sum(1).tolist())

    train, val, test = indices("train"), indices("val"), indices("test")
    assert len(train) + len(val) + len(test) == 1797
    assert not (train & val or train & test or val & test)
    assert train | val | test == set(range(1797))


@pytest.mark.parametrize("size", [32, 64])
def test_batches_are_resized_and_normalised(size: int) -> None:
    dm = DigitsDataModule(image_size=size, batch_size=16)
    dm.setup()
    images, labels = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)
    assert images.shape == (16, 1, size, size) and labels.shape == (16,)
    assert abs(images.mean().item()) < 0.5 and 0.5 < images.std().item() < 2


def test_augmentation_moves_pixels_but_keeps_shape() -> None:
    torch.manual_seed(0)
    images = torch.rand(8, 1, 8, 8)
    plain = resize(images, 32)
    augmented = random_affine_resize(images, 32, 0.1, 10.0, 0.1)
    assert augmented.shape == plain.shape == (8, 1, 32, 32)
    assert not torch.allclose(augmented, plain)
    identity = random_affine_resize(images, 32, 0.0, 0.0, 0.0)
    # Same bilinear sampling as plain resizing; only the border differs (zero fill vs clamp).
    assert torch.allclose(identity[..., 2:-2, 2:-2], plain[..., 2:-2, 2:-2], atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 0}, "image_size=0"),
        ({"batch_size": "x"}, "batch_size='x'"),
        ({"num_classes": 100}, "num_classes=100"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "val_fraction=0.6"),
    ],
)
def test_bad_arguments_name_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DigitsDataModule(**kwargs)
