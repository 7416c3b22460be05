"""Every augmentation switch of every data set changes the training batches and leaves the eval
batches alone; ``data.augment=false`` turns all of a data set's off; ``debug=overfit`` trains on
the same batches every epoch, whatever the data set.

The switches: digits ``max_translate`` (shift), ``max_rotate_deg``, ``max_scale``; CIFAR
``padding`` (random crop), ``flip``; image folders the random resized crop (on unless
``augment=false``), ``hflip``, ``color_jitter``, ``auto_augment`` (RandAugment), ``re_prob``
(random erasing); the module's ``mixup`` (``mixup_alpha``, ``cutmix_alpha``); ``augment`` for all.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mobilenet_lab.data.cifar import CIFARDataModule
from mobilenet_lab.data.digits import DigitsDataModule
from mobilenet_lab.data.imagefolder import ImageFolderDataModule
from mobilenet_lab.data.in_memory import InMemoryDataModule
from mobilenet_lab.data.synthetic import SyntheticDataModule
from mobilenet_lab.train import train
from tests.batch_log import read_batch_logs
from tests.data_files import write_cifar

# Each in-memory data set with all its switches off, and each switch alone
STILL = {
    "digits": {"max_translate": 0.0, "max_rotate_deg": 0.0, "max_scale": 0.0},
    "cifar10": {"padding": 0, "flip": False},
}
SWITCHES = [
    ("digits", {"max_translate": 0.1}),
    ("digits", {"max_rotate_deg": 10.0}),
    ("digits", {"max_scale": 0.1}),
    ("cifar10", {"padding": 4}),
    ("cifar10", {"flip": True}),
]


def in_memory(name: str, tmp_path: Path, **kwargs: Any) -> InMemoryDataModule:
    if name == "digits":
        dm = DigitsDataModule(batch_size=32, **kwargs)
    elif name == "synthetic":
        dm = SyntheticDataModule(image_size=16, size=32, num_classes=4, batch_size=32, **kwargs)
    else:
        write_cifar(tmp_path, "cifar10", per_file=20)
        dm = CIFARDataModule("cifar10", str(tmp_path), False, val_size=10, batch_size=32, **kwargs)
    dm.setup()
    return dm


def draws(dm: InMemoryDataModule, training: bool, count: int = 2) -> list[Tensor]:
    """The first validation batch (uint8, as stored) prepared ``count`` times, as a training
    batch or as an eval batch (the same images either way, so the two can be compared)."""
    dm.trainer = None  # outside a fit: no DDP share of the split to take
    batch = next(iter(dm.val_dataloader()))
    dm.trainer = SimpleNamespace(training=training)
    return [dm.on_after_batch_transfer(batch, 0)[0] for _ in range(count)]


@pytest.mark.parametrize(("name", "switch"), SWITCHES, ids=lambda v: str(v))
def test_each_in_memory_switch_changes_training_batches_only(
    tmp_path: Path, name: str, switch: dict
) -> None:
    torch.manual_seed(0)
    still = in_memory(name, tmp_path, **STILL[name])
    first, again = draws(still, training=True)
    assert torch.equal(first, again)  # every switch off: nothing random is left
    moving = in_memory(name, tmp_path, **{**STILL[name], **switch})
    first, again = draws(moving, training=True)
    assert not torch.allclose(first, again)  # this switch alone changes the training batches
    evaluated, evaluated_again = draws(moving, training=False)
    assert torch.equal(evaluated, evaluated_again)
    assert torch.equal(evaluated, draws(still, training=False)[0])  # and never the eval ones


@pytest.mark.parametrize("name", ["digits", "cifar10", "synthetic"])
def test_augment_false_trains_on_the_eval_batches(tmp_path: Path, name: str) -> None:
    """Every other switch at its default (on), ``augment=false`` alone stops them all."""
    torch.manual_seed(0)
    dm = in_memory(name, tmp_path, augment=False)
    assert dm.random_augmentation() is None  # what module.distill.cache=true asks
    first, again = draws(dm, training=True)
    assert torch.equal(first, again) and torch.equal(first, draws(dm, training=False)[0])
    if name != "synthetic":  # the defaults augment
        assert in_memory(name, tmp_path).random_augmentation()


def test_synthetic_images_have_no_augmentation_to_turn_on() -> None:
    with pytest.raises(ValueError, match=r"augment=True is not valid: synthetic images"):
        SyntheticDataModule(augment=True)


# Image folders: timm's train transform always starts with a random resized crop, drawn from
# Python's `random` before any other switch draws; so, seeded alike, a transform with one more
# switch on sees the same crops, and only that switch can make its images differ.
FOLDER_STILL = {"hflip": 0.0, "color_jitter": 0.0, "auto_augment": None, "re_prob": 0.0}
FOLDER_SWITCHES = [
    {"hflip": 1.0},
    {"color_jitter": 0.4},
    {"auto_augment": "rand-m9-mstd0.5"},
    {"re_prob": 1.0},
]


def folder(tree: Path, **kwargs: Any) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(str(tree), num_classes=3, num_workers=0, image_size=32, **kwargs)
    dm.setup()
    return dm


def seeded_images(dm: ImageFolderDataModule, split: str, seed: int = 0) -> Tensor:
    """Every image of a loader's data set (``train``: augmented), all generators seeded."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    dataset = getattr(dm, f"{split}_dataloader")().dataset
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def test_image_folder_crops_change_training_images_unless_augment_is_false(
    image_tree: Path,
) -> None:
    crops_only = folder(image_tree, **FOLDER_STILL)
    first = seeded_images(crops_only, "train", seed=0)
    assert torch.equal(first, seeded_images(crops_only, "train", seed=0))  # seeded: repeatable
    assert not torch.allclose(first, seeded_images(crops_only, "train", seed=1))
    everything_off = folder(image_tree, augment=False)  # the other switches at their defaults
    first = seeded_images(everything_off, "train", seed=0)
    assert torch.equal(first, seeded_images(everything_off, "train", seed=1))
    # Training then sees the training images exactly as evaluation would
    assert torch.equal(first, seeded_images(everything_off, "calibration"))


@pytest.mark.parametrize("switch", FOLDER_SWITCHES, ids=lambda v: str(v))
def test_each_image_folder_switch_changes_training_images_only(
    image_tree: Path, switch: dict
) -> None:
    still = seeded_images(folder(image_tree, **FOLDER_STILL), "train")
    moving = folder(image_tree, **{**FOLDER_STILL, **switch})
    assert not torch.allclose(seeded_images(moving, "train"), still)
    evaluated = seeded_images(moving, "val", seed=0)
    assert torch.equal(evaluated, seeded_images(moving, "val", seed=1))
    assert torch.equal(evaluated, seeded_images(folder(image_tree, **FOLDER_STILL), "val"))


class SeesItsInput(nn.Module):
    """A network that keeps a copy of the images it was given."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.seen = net, None

    def forward(self, images: Tensor) -> Tensor:
        self.seen = images.detach().clone()
        return self.net(images)


@pytest.mark.parametrize(
    "mixup",
    [{"mixup_alpha": 0.8, "cutmix_alpha": 0.0}, {"mixup_alpha": 0.0, "cutmix_alpha": 1.0}, None],
    ids=["mixup", "cutmix", "off"],
)
def test_mixup_and_cutmix_change_training_batches_only(mixup: dict | None) -> None:
    from mobilenet_lab.models import MobileNetV1
    from mobilenet_lab.training.module import ImageClassifier

    net = SeesItsInput(MobileNetV1(num_classes=10, alpha=0.25, in_chans=1))
    module = ImageClassifier(net, num_classes=10, mixup=mixup)
    torch.manual_seed(0)
    images, labels = torch.randn(8, 1, 32, 32), torch.arange(8)
    module.training_step((images.clone(), labels), 0)  # timm mixes the batch in place
    assert torch.equal(net.seen, images) == (mixup is None)
    module.validation_step((images.clone(), labels), 0)
    assert torch.equal(net.seen, images)


OVERFIT_DATA = {
    "digits": [],
    "cifar10": ["data.val_size=40"],
    "cifar100": ["data.val_size=40"],
    "imagefolder": ["data.num_workers=0"],
    "synthetic": ["data.size=32", "data.num_classes=10"],
}


@pytest.mark.parametrize("name", sorted(OVERFIT_DATA))
def test_overfit_preset_trains_on_the_same_batches_every_epoch(
    make_cfg, tmp_path: Path, image_tree: Path, name: str
) -> None:
    overrides = [f"data={name}", *OVERFIT_DATA[name]]
    if name.startswith("cifar"):
        classes = 100 if name == "cifar100" else 10
        write_cifar(tmp_path / "cifar", name, per_file=200 if classes == 100 else 20,
                    classes=classes)  # fmt: skip
        overrides += [f"data.data_dir={tmp_path / 'cifar'}", "data.download=false"]
    if name == "imagefolder":
        overrides.append(f"data.data_dir={image_tree}")
    logs = tmp_path / "batches"
    overrides += ["debug=overfit", "trainer.max_epochs=2", "model.alpha=0.25",
                  "data.image_size=32", "data.batch_size=4", "trainer.limit_test_batches=2",
                  "trainer.enable_progress_bar=false",
                  "~callbacks.model_summary",
                  "+callbacks.batch_log._target_=tests.batch_log.BatchLog",
                  f"+callbacks.batch_log.out_dir={logs}"]  # fmt: skip
    cfg = make_cfg("train", overrides, tmp_path / "run")
    # Nothing that keeps the loss off ~0 either: smoothed or mixed targets
    assert cfg.module.label_smoothing == 0 and cfg.module.mixup is None
    report = train(cfg)
    assert report["status"] == "ok" and report["epochs"] == 2
    (rows,) = read_batch_logs(logs).values()
    epochs = [[row["digest"] for row in rows if row["epoch"] == epoch] for epoch in (0, 1)]
    assert len(epochs[0]) == 2 and epochs[0] == epochs[1]  # overfit_batches: 2, unaugmented
