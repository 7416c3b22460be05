"""Small data sets written in their real on-disk formats, for the tests to read."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_LAYOUT = {  # name -> (folder, train files, test file, meta file, label key, meta key)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                "batches.meta", "labels", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", "fine_labels",
                 "fine_label_names"),
}  # fmt: skip


def write_cifar(root: Path, name: str, per_file: int = 20, classes: int = 10) -> Path:
    """torchvision's python-pickle layout: dicts of uint8 rows (3 x 32 x 32) and labels."""
    folder, train_files, test_file, meta_file, label_key, meta_key = CIFAR_LAYOUT[name]
    out = root / folder
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for file in [*train_files, test_file]:
        batch = {"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                 label_key: rng.integers(0, classes, per_file).tolist()}  # fmt: skip
        (out / file).write_bytes(pickle.dumps(batch))
    (out / meta_file).write_bytes(pickle.dumps({meta_key: [f"c{i}" for i in range(classes)]}))
    return root


def write_image_tree(
    root: Path,
    classes: int = 3,
    per_class: int = 4,
    corrupt: bool = False,
    empty_class: bool = False,
) -> Path:
    """``train/`` and ``val/`` of small JPEGs; optionally one truncated JPEG and one empty class."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    if corrupt:
        good = (root / "train" / "class_0" / "0.jpg").read_bytes()
        (root / "train" / "class_0" / "broken.jpg").write_bytes(good[: len(good) // 3])
    if empty_class:
        (root / "train" / "empty_class").mkdir()
        (root / "val" / "empty_class").mkdir()
    return root


def write_shards_of(tree: Path, out: Path) -> Path:
    """An image folder (``write_image_tree``) as LitData shards, as scripts/make_shards.py
    writes them."""
    from mobilenet_lab.data.imagefolder import ImageFolderDataModule, count_classes
    from mobilenet_lab.data.shards import write_shards

    module = ImageFolderDataModule(str(tree), count_classes(str(tree)))
    module.setup()
    write_shards(module, module.classes, str(out))
    return out


def write_twins(folder: Path, levels: np.ndarray, stem: str = "") -> dict[str, Path]:
    """``levels`` (8-bit grey) as an 8-bit PNG and its twins: 16-bit PNG, 16-bit TIFF, 16-bit
    PGM (Pillow's mode I), 32-bit float TIFF; 8-bit level p is 16-bit 257 p, float p / 255."""
    folder.mkdir(parents=True, exist_ok=True)
    wide = levels.astype(np.uint16) * 257
    names = ("8.png", "16.png", "16.tif", "16.pgm", "f.tif")
    files = {name: folder / f"{stem}{name}" for name in names}
    Image.fromarray(levels).save(files["8.png"])
    Image.fromarray(wide).save(files["16.png"])
    Image.fromarray(wide).save(files["16.tif"])
    height, width = levels.shape
    files["16.pgm"].write_bytes(
        b"P5 %d %d 65535\n" % (width, height) + wide.astype(">u2").tobytes()
    )
    Image.fromarray(levels.astype(np.float32) / 255).save(files["f.tif"])
    return files


def write_digit_pictures(folder: Path, count: int) -> Path:
    """The digits' first ``count`` test images as 8-bit grey PNGs (ink bright on dark, their
    0-16 levels rounded to 0-255), named in order with their label: ``000_7.png``."""
    from mobilenet_lab.data.digits import DigitsDataModule

    folder.mkdir(parents=True, exist_ok=True)
    datamodule = DigitsDataModule()
    datamodule.setup("test")
    images, labels = datamodule.splits["test"].tensors
    for i, image in enumerate(images[:count, 0].numpy()):
        pixels = np.round(image.astype(np.float32) * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}_{labels[i]}.png")
    return folder


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))
