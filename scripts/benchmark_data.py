"""Images/s each input path delivers per loader worker process at 224 px on ImageNet-like JPEGs,
side by side in one run, beside the images/s MobileNet V1 (alpha 1.0) trains at on this machine
at the same size and batch, and the workers each path needs for the model, 2,000 and 10,000
images/s (issue 30, item 4).

    python scripts/benchmark_data.py [--seconds 5] [--images 512] [--quick]

The paths, over the same JPEG bytes (about 500 x 375, the ImageNet average, written here):
an image folder decoded with PIL; the same bytes as a Hugging Face parquet file (``data=hf``)
and as LitData shards (``data=shards``, written by ``scripts/make_shards.py``), decoded with
PIL in the workers too; and the CPU side of ``data.decode=gpu``, whose workers only read the
bytes (the decode is the device's: ``scripts/benchmark_gpu.py`` times it on a GPU). Each path is
a row factory; one that cannot be built in this checkout (a module not there) is skipped with
the reason. A path's figure: the training batches one worker delivers to the main process, per
second, each epoch's first batch (the workers' start) left out, at the training transform.
``--quick``: a smoke run (few images, batch 8) that the test suite runs.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import torch
from PIL import Image

from mobilenet_lab.analysis.timing import training_images_per_second
from mobilenet_lab.data.imagefolder import ImageFolderDataModule

ROOT = Path(__file__).resolve().parents[1]
TARGETS = (2000, 10_000)  # images/s: one current GPU training V1 in bf16, and a few of them
CLASSES = 4
# name -> factory(jpeg folder, work folder, data module settings) -> data module
RowFactory = Callable[[Path, Path, dict], L.LightningDataModule]


def image_folder(tree: Path, work: Path, settings: dict) -> L.LightningDataModule:
    return ImageFolderDataModule(str(tree), CLASSES, **settings)


def hf_parquet(tree: Path, work: Path, settings: dict) -> L.LightningDataModule:
    """The training JPEGs' bytes in one parquet file with Hugging Face's features."""
    import datasets

    from mobilenet_lab.data.hf import HFDataModule

    datasets.disable_progress_bars()
    classes = sorted(p.name for p in (tree / "train").iterdir())
    files = sorted((tree / "train").glob("*/*.jpg"))
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)}
    )
    rows = {"image": [{"bytes": f.read_bytes(), "path": None} for f in files],
            "label": [classes.index(f.parent.name) for f in files]}  # fmt: skip
    parquet = work / "train.parquet"
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(parquet))
    return HFDataModule(name=str(parquet), num_classes=CLASSES, **settings)


def litdata_shards(tree: Path, work: Path, settings: dict) -> L.LightningDataModule:
    """Shards of the same bytes, written by the kit's own command."""
    from mobilenet_lab.data.shards import ShardsDataModule

    out = work / "shards"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_shards.py"), str(tree), str(out)],
                   check=True, capture_output=True, text=True)  # fmt: skip
    return ShardsDataModule(data_dir=str(out), num_classes=CLASSES, **settings)


def gpu_decode_cpu_side(tree: Path, work: Path, settings: dict) -> L.LightningDataModule:
    return ImageFolderDataModule(str(tree), CLASSES, **settings, decode="gpu")


ROWS: dict[str, RowFactory] = {
    "image folder, PIL": image_folder,
    "hf (parquet), PIL": hf_parquet,
    "shards (LitData), PIL": litdata_shards,
    "GPU decode, CPU side": gpu_decode_cpu_side,
}


def delivered_per_second(dm: L.LightningDataModule, seconds: float) -> float:
    """Training batches the loader delivers per second, over as many epochs as ``seconds``
    takes, each from its second batch on: the first waits for the workers to start, which a
    loader may do at every epoch, once per epoch of ImageNet's 1.28 M images."""
    dm.trainer = SimpleNamespace(training=True, world_size=1, num_devices=1)
    dm.setup("fit")
    loader = dm.train_dataloader()
    images, elapsed = 0, 0.0
    while elapsed < seconds:
        start = None
        for _, labels, _ in loader:
            if start is None:
                start = time.perf_counter()
                continue
            images += len(labels)
            if elapsed + time.perf_counter() - start >= seconds:
                break
        elapsed += time.perf_counter() - start
    return images / elapsed


def write_jpeg_tree(root: Path, per_class: int) -> Path:
    """ImageNet-like JPEGs (500 x 375, the ImageNet average; quality 90) of smooth random
    content, in ``train/`` and a small ``val/``."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 2)):
        for c in range(CLASSES):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
                image = Image.fromarray(small).resize((500, 375), Image.BILINEAR)
                image.save(folder / f"{i}.jpg", quality=90)
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--images", type=int, default=512, help="training JPEGs written")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 32 images, batch 8")
    args = parser.parse_args()
    if args.quick:
        args.images, args.batch_size, args.seconds = 32, 8, min(args.seconds, 0.5)
    torch.manual_seed(0)
    size = 224
    model = training_images_per_second(args.seconds, args.batch_size, size, 1 if args.quick else 2)
    threads = torch.get_num_threads()
    print(f"MobileNet V1 (alpha 1.0, {size} px, batch {args.batch_size}) trains at "
          f"{model:,.1f} images/s on this machine ({threads} threads)\n")  # fmt: skip
    settings = {"image_size": size, "batch_size": args.batch_size, "num_workers": 1}
    needs = "".join(f"{f'for {t:,}/s':>13}" for t in TARGETS)
    print(f"{'input path (1 worker)':<26}{'images/s':>10}{'x model':>9}"
          f"{'workers: for model':>20}{needs}")  # fmt: skip
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        tree = write_jpeg_tree(Path(tmp) / "jpegs", per_class=math.ceil(args.images / CLASSES))
        for name, factory in ROWS.items():
            work = Path(tmp) / factory.__name__
            work.mkdir()
            try:
                rate = delivered_per_second(factory(tree, work, settings), args.seconds)
            except ImportError as error:
                print(f"{name:<26}skipped: {error} (not in this checkout)")
                continue
            except Exception as error:  # the other rows are still measured
                failed = True
                detail = getattr(error, "stderr", None) or str(error)
                print(f"{name:<26}failed: {type(error).__name__}: "
                      f"{(detail.strip().splitlines() or [''])[-1][:200]}")  # fmt: skip
                continue
            workers = "".join(f"{math.ceil(t / rate):>13}" for t in TARGETS)
            print(f"{name:<26}{rate:>10,.0f}{rate / model:>8.1f}x"
                  f"{math.ceil(model / rate):>20}{workers}", flush=True)  # fmt: skip
    print("\nWorkers: loader processes (about one CPU core each) at this machine's speed per "
          "core; GPU decode adds the device's decode time (scripts/benchmark_gpu.py).")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
