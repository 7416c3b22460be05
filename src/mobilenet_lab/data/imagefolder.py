"""ImageNet-style folders (``train/<class>/*.jpg``, ``val/<class>/*.jpg``, optional ``test/``)
with timm's train and eval transforms (``encoded.py``). Unreadable images are skipped, counted
and reported with their reason instead of ending a long run; empty classes or splits are
refused at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mobilenet_lab.data.encoded import (
    PIXELS_KEY,
    EncodedImageDataModule,
)
from mobilenet_lab.data.images import UnreadableImage, open_image
from mobilenet_lab.runs.errors import ConfigError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


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


class ImageFolderDataModule(EncodedImageDataModule):
    """``num_classes`` is the number of class folders in ``train/`` (the config resolves it
    from the data). Construction only checks the folders (cheap: the config check builds this
    module too); ``setup`` lists the images. ``strict=true`` decodes every image there and
    fails listing the broken ones; otherwise each is replaced by the next readable image and
    reported at the end of each epoch. ``test_split``: the folder the test step scores,
    ``test`` or, when there is none, ``val``. The other settings: ``EncodedImageDataModule``."""

    def __init__(
        self,
        data_dir: str,
        num_classes: int,
        strict: bool = False,
        **settings: Any,
    ) -> None:
        super().__init__(num_classes, **settings)  # saves every argument as hparams
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

    def split_samples(self, split: str) -> list[tuple[str, int]]:
        return self.samples[split]

    def source_name(self) -> str:
        return self.hparams.data_dir
