"""CIFAR-10/100 and ImageFolder data modules on small files in their real on-disk formats."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from mobilenet_lab.data.batch_transforms import random_crop_flip
from mobilenet_lab.data.cifar import CIFARDataModule
from mobilenet_lab.data.imagefolder import ImageFolderDataModule
from mobilenet_lab.data.synthetic import SyntheticDataModule
from mobilenet_lab.deploy.loading import TorchModel
from mobilenet_lab.jobs.startup_checks import check_train_config
from mobilenet_lab.runs.errors import ConfigError
from mobilenet_lab.train import train
from tests.conftest import test_split_accuracy
from tests.data_files import write_cifar, write_image_tree

SHORT = ["model.alpha=0.25", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
         "~callbacks.model_summary", "data.batch_size=16"]  # fmt: skip


@pytest.mark.parametrize(("name", "classes"), [("cifar10", 10), ("cifar100", 100)])
def test_cifar_trains_one_epoch(make_cfg, tmp_path: Path, name: str, classes: int) -> None:
    write_cifar(tmp_path / "cifar", name, per_file=40 if name == "cifar10" else 200,
                classes=classes)  # fmt: skip
    overrides = [f"data={name}", f"data.data_dir={tmp_path / 'cifar'}", "data.download=false",
                 "data.val_size=40", *SHORT]  # fmt: skip
    report = train(make_cfg("train", overrides, tmp_path / "run"))
    assert report["data"] == name and set(report["test"]) == {"test/acc", "test/acc5", "test/loss"}
    dm = CIFARDataModule(name, str(tmp_path / "cifar"), False, classes, val_size=40)
    dm.setup()
    images = dm.splits["train"].tensors[0]
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)


def test_cifar_val_split_is_fixed_and_disjoint(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10", per_file=40)
    splits = []
    for _ in range(2):
        dm = CIFARDataModule("cifar10", str(tmp_path), download=False, val_size=30)
        dm.setup()
        splits.append(dm.splits)
    assert len(splits[0]["train"]) == 170 and len(splits[0]["val"]) == 30
    assert torch.equal(splits[0]["val"].tensors[0], splits[1]["val"].tensors[0])
    assert len(splits[0]["test"]) == 40
    # The written images are random, so each is unique: rows identify the source images.
    rows = {name: [tuple(x.flatten().tolist()) for x in splits[0][name].tensors[0]]
            for name in ("train", "val")}  # fmt: skip
    assert not set(rows["train"]) & set(rows["val"])
    assert len(set(rows["train"]) | set(rows["val"])) == 200  # every training image used once


def test_cifar_offline_without_files_says_where(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no cifar10 files in .*cifar-10-batches-py.*"
                                          r"data\.download=true"):  # fmt: skip
        CIFARDataModule("cifar10", str(tmp_path / "nowhere"), download=False)


def test_crop_flip_is_a_shifted_or_mirrored_copy() -> None:
    torch.manual_seed(0)
    images = torch.rand(64, 3, 8, 8)
    out = random_crop_flip(images, padding=2, flip=True)
    assert out.shape == images.shape
    centre = out[:, :, 2:6, 2:6]
    # Each output's centre is a window of its own (possibly mirrored) input.
    for i in range(4):
        candidates = [images[i], images[i].flip(-1)]
        windows = [
            c[:, y : y + 4, x : x + 4] for c in candidates for y in range(5) for x in range(5)
        ]
        assert any(torch.equal(centre[i], w) for w in windows)
    assert not torch.equal(out, images)


def test_imagefolder_skips_and_reports_a_corrupt_jpeg(make_cfg, tmp_path: Path) -> None:
    tree = write_image_tree(tmp_path / "tree", corrupt=True)
    overrides = ["data=imagefolder", f"data.data_dir={tree}", "data.image_size=32",
                 "data.num_workers=0", "data.batch_size=4", *SHORT]  # fmt: skip
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\)[\s\S]*broken\.jpg"):
        report = train(make_cfg("train", overrides, tmp_path / "run"))
    assert report["data"] == "imagefolder"
    best = TorchModel(report["best_checkpoint"], "averaged", "cpu")
    data = ImageFolderDataModule(str(tree), num_classes=3, num_workers=0, image_size=32)
    assert report["test"]["test/acc"] == pytest.approx(test_split_accuracy(best.logits, data))


def test_imagefolder_classes_come_from_the_data(make_cfg, image_tree: Path) -> None:
    cfg = make_cfg("train", ["data=imagefolder", f"data.data_dir={image_tree}"])
    assert cfg.data.num_classes == cfg.model.num_classes == 3
    dm = ImageFolderDataModule(str(image_tree), num_classes=3, num_workers=0, image_size=32)
    dm.setup()
    images, labels, bad = next(iter(dm.train_dataloader()))
    assert images.shape == (len(labels), 3, 32, 32) and bad == []
    assert dm.samples["test"] == dm.samples["val"]  # no test/ folder: test = val


def test_imagefolder_without_test_folder_says_it_tests_on_val(image_tree: Path, capsys) -> None:
    """metrics.json records ``test_split`` (tests/test_report.py reads it back); the test
    loader says in one line, at test time, that val/ is no held-out split."""
    dm = ImageFolderDataModule(str(image_tree), num_classes=3, num_workers=0, image_size=32)
    dm.setup()
    dm.val_dataloader()
    assert capsys.readouterr().out == ""
    dm.test_dataloader()
    assert dm.test_split == "val"
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"Testing on val: {image_tree} has no test split")
    assert "also chose best.ckpt" in line


def test_imagefolder_strict_lists_broken_files(tmp_path: Path) -> None:
    tree = write_image_tree(tmp_path, corrupt=True)
    dm = ImageFolderDataModule(str(tree), num_classes=3, strict=True)
    with pytest.raises(ConfigError, match=r"strict=true: 1 image\(s\) cannot be decoded: .*broken"):
        dm.setup()


def test_imagefolder_empty_class_and_missing_split_fail_at_start(make_cfg, tmp_path: Path) -> None:
    tree = write_image_tree(tmp_path / "tree", empty_class=True)
    cfg = make_cfg("train", ["data=imagefolder", f"data.data_dir={tree}"])
    with pytest.raises(
        ConfigError, match=r"class folder\(s\) of train/ hold no images.*empty_class"
    ):
        check_train_config(cfg)
    cfg = make_cfg("train", ["data=imagefolder", f"data.data_dir={tmp_path / 'none'}"])
    with pytest.raises(ConfigError, match=r"has no train/ folder"):
        check_train_config(cfg)
    cfg = make_cfg("train", ["data=imagefolder"])
    with pytest.raises(ConfigError, match=r"data\.data_dir is not set"):
        check_train_config(cfg)


def test_synthetic_and_mixup_train(make_cfg, tmp_path: Path, monkeypatch) -> None:
    from timm.data import Mixup

    mixed = []
    mix = Mixup.__call__
    monkeypatch.setattr(
        Mixup, "__call__", lambda self, x, y: mixed.append(len(y)) or mix(self, x, y)
    )
    overrides = ["data=synthetic", "data.image_size=32", "data.size=64", "data.num_classes=10",
                 "module.mixup={mixup_alpha: 0.8, cutmix_alpha: 1.0}", *SHORT]  # fmt: skip
    report = train(make_cfg("train", overrides, tmp_path / "run"))
    assert report["data"] == "synthetic" and report["params"] > 0
    assert mixed == [16] * 4  # every training batch of the fit mixed (64 images, batch 16)
    dm = SyntheticDataModule(image_size=16, size=8, in_chans=1)
    dm.setup()
    assert dm.splits["train"].tensors[0].shape == (8, 1, 16, 16)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["cifar_v1", "cifar_v3"])
def test_cifar_recipes_train(make_cfg, tmp_path: Path, recipe: str) -> None:
    write_cifar(tmp_path / "cifar", "cifar10", per_file=40)
    overrides = [f"experiment={recipe}", f"data.data_dir={tmp_path / 'cifar'}",
                 "data.download=false", "data.val_size=40", *SHORT]  # fmt: skip
    if recipe == "cifar_v3":
        overrides.remove("model.alpha=0.25")
    report = train(make_cfg("train", overrides, tmp_path / "run"))
    assert report["data"] == "cifar10" and report["epochs"] == 1


def test_mixup_trains_on_soft_targets_and_says_once_when_it_skips_an_odd_batch(
    monkeypatch,
) -> None:
    from mobilenet_lab.models import MobileNetV1
    from mobilenet_lab.training.module import ImageClassifier

    net = MobileNetV1(num_classes=10, alpha=0.25, in_chans=1)
    mixup = {"mixup_alpha": 0.8, "cutmix_alpha": 1.0}
    module = ImageClassifier(net, num_classes=10, label_smoothing=0.1, mixup=mixup)
    seen = []
    cross_entropy = torch.nn.functional.cross_entropy

    def spy(logits, targets, **kwargs):
        seen.append((targets, kwargs.get("label_smoothing", 0.0)))
        return cross_entropy(logits, targets, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", spy)
    torch.manual_seed(0)
    labels = torch.arange(8) % 10
    module.training_step((torch.randn(8, 1, 32, 32), labels), 0)
    ((targets, _),) = seen
    assert targets.shape == (8, 10) and targets.dtype.is_floating_point
    assert torch.allclose(targets.sum(1), torch.ones(8))
    assert targets.min() >= 0.1 / 10 - 1e-6  # label smoothing: every class keeps 0.1 / 10
    smoothed = 0.01 + 0.9 * torch.nn.functional.one_hot(labels, 10)
    assert not torch.allclose(targets, smoothed)  # mixed, not only smoothed
    seen.clear()
    with pytest.warns(UserWarning, match=r"mixup/cutmix skipped on a batch of 7 images") as said:
        for _ in range(2):
            module.training_step((torch.randn(7, 1, 32, 32), labels[:7]), 0)
    assert sum("mixup/cutmix skipped" in str(w.message) for w in said) == 1
    assert [(t.dtype, smoothing) for t, smoothing in seen] == [(torch.int64, 0.1)] * 2


def test_imagefolder_uses_a_test_folder_when_there_is_one(tmp_path: Path) -> None:
    tree = write_image_tree(tmp_path)
    shutil.copytree(tree / "val", tree / "test")
    (tree / "test" / "class_1" / "0.jpg").unlink()
    dm = ImageFolderDataModule(str(tree), num_classes=3, num_workers=0, image_size=32)
    dm.setup()
    assert len(dm.samples["test"]) == len(dm.samples["val"]) - 1 == 11
    assert all(Path(path).parent.parent.name == "test" for path, _ in dm.samples["test"])
    assert dm.test_split == "test"


@pytest.mark.parametrize("name", ["digits", "cifar10"])
def test_training_batches_are_augmented_and_eval_batches_are_not(tmp_path: Path, name: str):
    from types import SimpleNamespace

    from mobilenet_lab.data.digits import DigitsDataModule

    def make(**kwargs):
        if name == "digits":
            return DigitsDataModule(batch_size=32, **kwargs)
        write_cifar(tmp_path, "cifar10", per_file=20)
        return CIFARDataModule("cifar10", str(tmp_path), False, val_size=10, batch_size=32,
                               **kwargs)  # fmt: skip

    def transfer(dm, training: bool) -> torch.Tensor:
        dm.trainer = SimpleNamespace(training=training)
        images, _ = dm.on_after_batch_transfer(batch, 0)
        return images

    dm = make()
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    torch.manual_seed(0)
    evaluated = transfer(dm, False)
    assert torch.equal(evaluated, transfer(dm, False))  # eval: the same every time
    assert not torch.allclose(transfer(dm, True), evaluated)  # training: augmented
    # With the augmentation's ranges at zero, training sees the eval images: nothing else (no
    # hidden flip of the digits, no extra crop of CIFAR) is applied.
    still = {"max_translate": 0.0, "max_rotate_deg": 0.0, "max_scale": 0.0} if name == "digits" \
        else {"padding": 0, "flip": False}  # fmt: skip
    dm = make(**still)
    dm.setup()
    centre = (..., slice(2, -2), slice(2, -2))  # bilinear sampling's zero-filled border aside
    assert torch.allclose(transfer(dm, True)[centre], evaluated[centre], atol=1e-4)


def test_int8_calibration_sees_the_eval_preprocessing_of_training_images(tmp_path: Path) -> None:
    from mobilenet_lab.deploy.loading import eval_batches

    tree = write_image_tree(tmp_path, classes=3, per_class=4)
    augmenting = {"color_jitter": 0.4, "auto_augment": "rand-m9-mstd0.5", "re_prob": 0.5}
    dm = ImageFolderDataModule(str(tree), num_classes=3, num_workers=0, image_size=32, **augmenting)
    dm.setup()
    evaluated = dm._transform(training=False)
    reference = torch.stack([evaluated(Image.open(path).convert("RGB"))
                             for path, _ in dm.samples["train"]])  # fmt: skip
    torch.manual_seed(0)
    images, labels = next(eval_batches(dm, "calibration", 8))
    assert images.shape == (8, 3, 32, 32)
    # Every calibration image is a training image exactly as the test step would see it ...
    distances = torch.cdist(images.flatten(1), reference.flatten(1)).min(1).values
    assert distances.max() < 1e-4, distances
    assert len(set(labels.tolist())) > 1  # ... drawn across the classes, not class_0's first


def test_a_training_splits_short_last_batch_is_dropped(image_tree: Path) -> None:
    """12 training images in batches of 5: two full batches (a last batch of 2 would end the
    epoch in BatchNorm's running statistics); a split smaller than a batch still trains."""
    dm = ImageFolderDataModule(str(image_tree), num_classes=3, num_workers=0, image_size=32,
                               batch_size=5)  # fmt: skip
    dm.setup("fit")
    assert [len(labels) for _, labels, _ in dm.train_dataloader()] == [5, 5]
    assert [len(labels) for _, labels, _ in dm.val_dataloader()] == [5, 5, 2]  # scores them all
    small = ImageFolderDataModule(str(image_tree), num_classes=3, num_workers=0, image_size=32,
                                  batch_size=64)  # fmt: skip
    small.setup("fit")
    assert [len(labels) for _, labels, _ in small.train_dataloader()] == [12]
