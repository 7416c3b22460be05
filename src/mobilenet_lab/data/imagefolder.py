"""ImageNet-style folders (``train/<class>/*.jpg``, ``val/<class>/*.jpg``, optional ``test/``)
with timm's train and eval transforms. Unreadable images are skipped, counted and reported with
their reason instead of ending a long run; empty classes or splits are refused at start-up."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.plugins.environments import SLURMEnvironment
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from mobilenet_lab.data.distributed import unrepeated_sampler
from mobilenet_lab.data.images import UnreadableImage, open_image
from mobilenet_lab.runs.errors import ConfigError, check_positive_int
from mobilenet_lab.runs.machine import usable_cpus

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PIXELS_KEY = "data.max_image_pixels"


def class_names(split_dir: Path) -> list[str]:
    return sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir())


def count_classes(data_dir: str) -> int:
    """The number of class folders in ``<data_dir>/train``: what ``num_classes`` resolves to."""
    train = Path(data_dir) / "train"
    if not train.is_dir():
        raise ConfigError(f"data.data_dir={data_dir!r} has no train/ folder of class folders")
    return len(class_names(train))


def list_split(split_dir: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(path, class index) for every image of a split."""
    return [
        (str(path), index)
        for index, name in enumerate(classes)
        for path in sorted((split_dir / name).iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]


def empty_class_folders(split_dir: Path, classes: list[str]) -> list[str]:
    """Class folders holding no image; stops reading each folder at its first image."""
    return [
        str(split_dir / name)
        for name in classes
        if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in (split_dir / name).iterdir())
    ]


def unreadable(paths: list[str], max_pixels: int | None = None) -> list[str]:
    """The images among ``paths`` that ``open_image`` does not read, each as "path (reason)"."""
    bad = []
    for path in paths:
        try:
            open_image(path, 3, max_pixels, setting=PIXELS_KEY)
        except UnreadableImage as error:
            bad.append(f"{path} ({error})")
    return bad


class ReplaceBadImages(Dataset):
    """Decodes one image; a file that fails is replaced by the next readable one of the split
    (with that image's label), so every batch is full, and its path comes back with the sample
    for the data module to report. Distributed training needs this: a rank whose batch came out
    empty would have no loss to give its DDP peers."""

    def __init__(
        self, samples: list[tuple[str, int]], transform: Callable, max_pixels: int | None = None
    ) -> None:
        self.samples, self.transform, self.max_pixels = samples, transform, max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int, list[str]]:
        bad = []
        for offset in range(len(self.samples)):
            path, label = self.samples[(index + offset) % len(self.samples)]
            try:
                image = open_image(path, 3, self.max_pixels, setting=PIXELS_KEY)
            except UnreadableImage as error:
                bad.append(f"{path} ({error})")
                continue
            return self.transform(image), label, bad
        raise RuntimeError(f"no image of {len(bad)} in this split can be decoded, e.g. {bad[0]}")


def collate_naming_bad(samples: list[tuple[Tensor, int, list[str]]]) -> tuple[Tensor, ...]:
    """A batch, and the unreadable files its samples replaced."""
    images, labels = default_collate([(image, label) for image, label, _ in samples])
    return images, labels, sorted({path for _, _, bad in samples for path in bad})


def default_num_workers(local_processes: int, slurm_task: bool) -> int:
    """Loader workers per process: the CPUs this process may use (SLURM's ``cpus_per_task``
    in a SLURM task, else its CPU affinity shared by the ``local_processes`` of this node's
    training), at most 8, at least 1."""
    if slurm_task and os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        share = int(os.environ["SLURM_CPUS_PER_TASK"])
    else:
        share = usable_cpus() // max(1, local_processes)
    return max(1, min(8, share))


class ImageFolderDataModule(L.LightningDataModule):
    """``num_classes`` is the number of class folders in ``train/`` (the config resolves it
    from the data). ``batch_size`` is per device; ``num_workers=null`` means one per CPU this
    process may use (see ``default_num_workers``; at most 8). Construction only checks the
    folders (cheap: the config check builds this module too); ``setup`` lists the images.
    ``strict=true`` decodes every image there and fails listing the broken ones; otherwise each
    is replaced by the next readable image and reported at the end of each epoch.
    ``augment=false`` gives training the eval transform (``debug=overfit``).
    ``max_image_pixels``: the largest image read (``null``: Pillow's limit); larger ones are
    skipped as unreadable, naming their size. Images are read by ``open_image`` (16-bit and
    float images at their real range). ``test_split``:
    the folder the test step scores, ``test`` or, when there is none, ``val``."""

    def __init__(
        self,
        data_dir: str,
        num_classes: int,
        in_chans: int = 3,
        image_size: int = 224,
        batch_size: int = 64,
        num_workers: int | None = None,
        crop_pct: float = 0.875,
        interpolation: str = "bilinear",
        hflip: float = 0.5,
        color_jitter: float = 0.4,
        auto_augment: str | None = None,
        re_prob: float = 0.0,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        strict: bool = False,
        augment: bool = True,
        max_image_pixels: int | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("image_size", image_size)
        check_positive_int("batch_size", batch_size)
        if max_image_pixels is not None:
            check_positive_int("max_image_pixels", max_image_pixels)
        if in_chans != 3:
            raise ValueError(f"in_chans={in_chans} is not valid: image folders are read as RGB (3)")
        self.save_hyperparameters()
        self.num_classes, self.in_chans, self.image_size = num_classes, in_chans, image_size
        self.mean, self.std = tuple(mean), tuple(std)
        root = Path(data_dir)
        self.classes = class_names(root / "train")
        if not (root / "val").is_dir():
            raise ConfigError(f"data_dir={data_dir!r} has no val/ folder of class folders")
        self.test_split = "test" if (root / "test").is_dir() else "val"
        self.split_dirs = {"train": root / "train", "val": root / "val"}
        self.split_dirs["test"] = root / self.test_split
        for split_dir in dict.fromkeys(self.split_dirs.values()):
            empty = empty_class_folders(split_dir, self.classes)
            if empty:
                raise ConfigError(
                    f"data_dir={data_dir!r}: {len(empty)} class folder(s) of {split_dir.name}/ "
                    f"hold no images ({', '.join(empty[:5])}): add images or remove the folder(s)"
                )
        self.samples: dict[str, list[tuple[str, int]]] = {}
        self.bad_files: set[str] = set()

    def setup(self, stage: str | None = None) -> None:
        """Lists every image (once); with ``strict``, decodes them all and fails on broken ones."""
        if self.samples:
            return
        self.samples = {split: list_split(d, self.classes) for split, d in self.split_dirs.items()}
        if self.hparams.strict:
            paths = sorted({path for split in self.samples.values() for path, _ in split})
            bad = unreadable(paths, self.hparams.max_image_pixels)
            if bad:
                raise ConfigError(
                    f"data.strict=true: {len(bad)} image(s) cannot be decoded: "
                    f"{', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}"
                )

    def _transform(self, training: bool) -> Callable:
        from timm.data import create_transform  # imported here: only image-folder runs need it

        hp = self.hparams
        common = {"input_size": hp.image_size, "interpolation": hp.interpolation,
                  "mean": tuple(hp.mean), "std": tuple(hp.std)}  # fmt: skip
        if not (training and hp.augment):
            return create_transform(**common, is_training=False, crop_pct=hp.crop_pct)
        return create_transform(
            **common, is_training=True, hflip=hp.hflip, color_jitter=hp.color_jitter,
            auto_augment=hp.auto_augment, re_prob=hp.re_prob,
        )  # fmt: skip

    @property
    def num_workers(self) -> int:
        if self.hparams.num_workers is not None:
            return self.hparams.num_workers
        trainer = self.trainer
        local_processes = trainer.num_devices if trainer is not None else 1
        environment = getattr(trainer.strategy, "cluster_environment", None) if trainer else None
        return default_num_workers(local_processes, isinstance(environment, SLURMEnvironment))

    def _loader(self, split: str, training: bool, shuffle: bool | None = None) -> DataLoader:
        dataset = ReplaceBadImages(
            self.samples[split], self._transform(training), self.hparams.max_image_pixels
        )
        workers = self.num_workers
        shuffle = training if shuffle is None else shuffle
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            sampler=None if shuffle else unrepeated_sampler(dataset, self.trainer),
            num_workers=workers,
            collate_fn=collate_naming_bad,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", training=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", training=False)

    def test_dataloader(self) -> DataLoader:
        if self.test_split == "val" and rank_zero_only.rank == 0:
            print(
                f"Testing on val/: {self.hparams.data_dir} has no test/ folder, and val/ also "
                "chose best.ckpt, so the test metrics are not of held-out images"
            )
        return self._loader("test", training=False)

    def calibration_dataloader(self) -> DataLoader:
        """Training images in the eval preprocessing, shuffled so the first batches span the
        classes: what int8 calibration measures activation ranges on."""
        return self._loader("train", training=False, shuffle=True)

    def on_after_batch_transfer(self, batch: tuple, dataloader_idx: int) -> tuple[Tensor, Tensor]:
        images, labels, bad = batch
        self.bad_files.update(bad)
        return images, labels
