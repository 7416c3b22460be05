"""Images/s each data module delivers at its defaults (loading, augmentation and normalisation,
ready for the model), beside the images/s MobileNet V1 (alpha 1.0, 32 px) trains at, measured
in one run on this machine. Issue #4's targets: the in-memory CIFAR pipeline >= 10x the model;
ImageFolder JPEGs at 224 px: images/s per worker and workers needed for a 2,000 images/s GPU.

    python scripts/benchmark_data.py [--seconds 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root on the import path, for the test-data writers in tests/data_files.py.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import math
import tempfile
import time
from types import SimpleNamespace

import lightning as L
import numpy as np
import torch
from PIL import Image
from tests.data_files import write_cifar

from mobilenet_lab.analysis.timing import training_images_per_second
from mobilenet_lab.data.cifar import CIFARDataModule
from mobilenet_lab.data.digits import DigitsDataModule
from mobilenet_lab.data.imagefolder import ImageFolderDataModule
from mobilenet_lab.data.synthetic import SyntheticDataModule

GPU_TARGET = 2000  # images/s a GPU trains a small MobileNet at (issue #4)


def delivered_per_second(dm: L.LightningDataModule, seconds: float) -> float:
    """Training batches through the loader and the batch-level augmentation, per second."""
    dm.trainer = SimpleNamespace(training=True)  # the batch hooks augment only in training
    dm.setup("fit")
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for batch in dm.train_dataloader():
            images += len(dm.on_after_batch_transfer(batch, 0)[1])
            if time.perf_counter() - start >= seconds:
                break
    return images / (time.perf_counter() - start)


def write_jpeg_tree(root: Path, classes: int = 4, per_class: int = 64) -> Path:
    """ImageNet-like JPEGs (500 x 375, the ImageNet average) of smooth random content."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        for split in ("train", "val"):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True)
            for i in range(per_class if split == "train" else 2):
                small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
                image = Image.fromarray(small).resize((500, 375), Image.BILINEAR)
                image.save(folder / f"{i}.jpg", quality=90)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = training_images_per_second(args.seconds)
    print(f"MobileNet V1 (alpha 1.0, 32 px, batch 128) trains at {model:,.0f} images/s\n")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_cifar(root / "cifar", "cifar10", per_file=10_000)  # full size: 50,000 + 10,000
        modules = {
            "digits": DigitsDataModule(),
            "cifar10": CIFARDataModule("cifar10", str(root / "cifar"), download=False),
            "synthetic (224 px)": SyntheticDataModule(),
        }
        print(f"{'data module':<28}{'images/s':>12}{'x model':>10}")
        for name, dm in modules.items():
            rate = delivered_per_second(dm, args.seconds)
            print(f"{name:<28}{rate:>12,.0f}{rate / model:>9.1f}x")
        tree = write_jpeg_tree(root / "jpegs")
        for workers in (0, 1, 2):
            dm = ImageFolderDataModule(str(tree), num_classes=4, num_workers=workers)
            rate = delivered_per_second(dm, args.seconds)
            label = f"imagefolder, {workers} worker{'s' if workers != 1 else ''}"
            print(f"{label:<28}{rate:>12,.0f}{rate / model:>9.1f}x")
            if workers == 1:
                per_worker = rate
        print(f"\nImageFolder JPEGs at 224 px: {per_worker:,.0f} images/s per worker; feeding a "
              f"GPU at {GPU_TARGET:,} images/s takes {math.ceil(GPU_TARGET / per_worker)} "
              "workers (cores) like these")  # fmt: skip


if __name__ == "__main__":
    main()
