"""Images in LitData shards, streamed from a folder or object storage (``s3://...``): the
encoded bytes of each image (not decoded pixels), written once by ``scripts/make_shards.py``
from any ``EncodedImageDataModule`` (image folders, Hugging Face data sets), read in chunks as
training goes. Layout: ``<root>/classes.json`` (class names, image counts) and one LitData data
set per split, ``<root>/train/``, ``<root>/val/``, optional ``<root>/test/``, whose items are
``{"index", "name", "image", "label"}``.

Over DDP ranks and loader workers LitData gives each image to one of them per epoch; the
training split drops its last images so that every rank trains on as many batches (a rank with
one batch more would wait for the others forever). Lightning saves the loader's state in every
checkpoint, so a run killed mid-epoch resumes at the batch where it stopped."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from litdata import StreamingDataLoader, StreamingDataset, optimize
from litdata.streaming.fs_provider import FsProvider, _get_fs_provider
from torch import Tensor

from mobilenet_lab.data.encoded import (
    Decoder,
    EncodedImageDataModule,
    collate_naming_bad,
    encoded_bytes,
)
from mobilenet_lab.data.images import UnreadableImage
from mobilenet_lab.runs.errors import ConfigError

CLASSES_FILE = "classes.json"
INDEX_FILE = "index.json"  # LitData's, one per data set
ITEM_KEYS = ("index", "name", "image", "label")
SPLITS = ("train", "val", "test")
LAYOUT = (
    f"a folder (or s3://...) written by scripts/make_shards.py: {CLASSES_FILE}, "
    f"train/{INDEX_FILE}, val/{INDEX_FILE} and their chunk-*.bin files, optional test/"
)
OTHER_FORMATS = {  # what a folder of these files is read with instead
    ".parquet": "data=hf data.name=<folder>",
    ".arrow": "data=hf data.name=<folder>",
    ".tar": "WebDataset tars are not read by this kit",
    ".jpg": "data=imagefolder",
    ".jpeg": "data=imagefolder",
    ".png": "data=imagefolder",
}


def is_remote(root: str) -> bool:
    return "://" in root


def store(url: str) -> FsProvider:
    """LitData's client for the object store of ``url`` (s3://, gs://, ...)."""
    return _get_fs_provider(url)


def read_file(root: str, relative: str) -> bytes | None:
    """``<root>/<relative>``'s bytes, from a folder or object storage; None when absent (or,
    in object storage, not readable with the credentials at hand)."""
    if not is_remote(root):
        path = Path(root, relative)
        return path.read_bytes() if path.is_file() else None
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder, "file")
        try:
            store(root).download_file(f"{root.rstrip('/')}/{relative}", str(local))
        except Exception:
            return None
        return local.read_bytes()


def _not_shards(data_dir: str) -> ConfigError:
    """The error for a folder that holds no shards of this kit, naming what it holds instead."""
    folder = Path(data_dir)
    if is_remote(data_dir):
        held = f"no {CLASSES_FILE} could be read there (missing, or no access)"
    elif not folder.is_dir():
        held = "does not exist"
    else:
        suffixes = {path.suffix.lower() for path in folder.rglob("*") if path.is_file()}
        hints = sorted({OTHER_FORMATS[s] for s in suffixes if s in OTHER_FORMATS})
        if (folder / INDEX_FILE).is_file():
            held = f"is one LitData data set, not one per split with {CLASSES_FILE}"
        elif hints:
            formats = ", ".join(sorted(s for s in suffixes if s in OTHER_FORMATS))
            held = f"holds {formats} files, not shards (for those: {'; '.join(hints)})"
        else:
            held = "holds no shards" if any(folder.iterdir()) else "is empty"
    return ConfigError(f"data.data_dir={data_dir!r} {held}: use {LAYOUT}")


def check_index(data_dir: str, split: str) -> int:
    """The number of items of ``split``'s LitData index, refused unless its items are this
    kit's (``ITEM_KEYS``, the image as bytes)."""
    raw = read_file(data_dir, f"{split}/{INDEX_FILE}")
    if raw is None:
        raise ConfigError(f"data.data_dir={data_dir!r} has no {split}/{INDEX_FILE}: use {LAYOUT}")
    try:
        index = json.loads(raw)
        types = index["config"]["types"]
        count = sum(chunk["chunk_size"] for chunk in index["chunks"])
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"data.data_dir={data_dir!r}: {split}/{INDEX_FILE} is not a LitData index written "
            f"by scripts/make_shards.py ({type(error).__name__}: {error}): use {LAYOUT}"
        ) from error
    if set(types) != set(ITEM_KEYS) or types.get("image") != "bytes":
        raise ConfigError(
            f"data.data_dir={data_dir!r}: the items of {split}/ hold {types}, not this kit's "
            f"{list(ITEM_KEYS)} with the image's encoded bytes: use {LAYOUT}"
        )
    return count


def read_classes(data_dir: str) -> dict[str, Any]:
    """``classes.json`` (``classes``, ``splits``: images per split), every split's index checked."""
    raw = read_file(data_dir, CLASSES_FILE)
    if raw is None:
        raise _not_shards(data_dir)
    info = json.loads(raw)
    for split in info["splits"]:
        check_index(data_dir, split)
    return info


def count_shard_classes(data_dir: str) -> int:
    """What ``num_classes`` resolves to for ``data=shards``."""
    return len(read_classes(data_dir)["classes"])


class ShardItem:
    """One sample of a split as a shard item: picklable, for LitData's writer processes."""

    def __init__(self, samples: Any, split: str) -> None:
        self.samples, self.split = samples, split

    def __call__(self, index: int) -> dict[str, Any]:
        encoded, label = self.samples[index]
        # never a bare path: LitData would store the file a string names as an image
        name = f"{self.split}[{index}]" + (f" ({encoded})" if isinstance(encoded, str) else "")
        return {"index": index, "name": name, "image": encoded_bytes(encoded), "label": int(label)}


def write_shards(
    module: EncodedImageDataModule, classes: list[str], out: str, chunk_bytes: str = "64MB",
    num_workers: int = 1,
) -> dict[str, int]:  # fmt: skip
    """Writes every split of ``module`` (``setup`` done) as shards under ``out``; returns the
    images per split. ``out`` must be new or empty: shards are never overwritten. The training
    split is written in a random order: LitData shuffles chunks, and items only within a
    chunk, so chunks written in the source's class order would make one-class batches."""
    if _holds_files(out):
        raise ConfigError(
            f"out={out!r} is not empty: give a new folder (shards are never overwritten)"
        )
    splits = ["train", "val"] + (["test"] if module.test_split == "test" else [])
    counts = {}
    for split in splits:
        samples = module.split_samples(split)
        counts[split] = len(samples)
        order = range(len(samples))  # training: mixed, so that each chunk mixes the classes
        if split == "train":
            order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))
        optimize(
            fn=ShardItem(samples, split), inputs=[int(i) for i in order],
            output_dir=f"{out.rstrip('/')}/{split}", chunk_bytes=chunk_bytes,
            num_workers=num_workers, reorder_files=False, keep_data_ordered=True, verbose=False,
            start_method="fork" if sys.platform == "linux" else None,
        )  # fmt: skip
    info = json.dumps({"classes": list(classes), "splits": counts, "source": module.source_name()})
    if is_remote(out):
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, CLASSES_FILE).write_text(info)
            store(out).upload_file(str(Path(folder, CLASSES_FILE)), f"{out}/{CLASSES_FILE}")
    else:
        Path(out, CLASSES_FILE).write_text(info)
    return counts


def _holds_files(out: str) -> bool:
    if is_remote(out):
        return store(out).exists(out) and not store(out).is_empty(out)
    return Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir()))


class ShardImages(StreamingDataset):
    """A split's shards as ``(image, label, bad)`` (what ``collate_naming_bad`` takes): each
    item decoded by ``decoder``; one that fails is replaced by the next readable item of the
    split, named in ``bad``, so that every batch is full."""

    def __init__(
        self, input_dir: str, decoder: Decoder, shuffle: bool, drop_last: bool, seed: int
    ) -> None:
        super().__init__(input_dir, shuffle=shuffle, drop_last=drop_last, seed=seed)
        self.decoder = decoder

    def __getitem__(self, index: Any) -> tuple[Tensor, int, list[str]]:
        item, bad = super().__getitem__(index), []
        first = item["index"]
        total = len(self.cache)
        for offset in range(1, total + 1):
            try:
                return self.decoder(item["image"]), item["label"], bad
            except UnreadableImage as error:
                bad.append(f"{item['name']} ({error})")
            item = super().__getitem__((first + offset) % total)
        raise RuntimeError(f"no image of {total} in {self.input_dir.path} can be decoded")


class ShardLoader(StreamingDataLoader):
    """LitData's loader, resuming only the epoch it was restored in. LitData ends a restored
    epoch's replay when its iterator runs out, but Lightning stops at the epoch's length
    without running it out: the next epoch would replay the restored one's tail again."""

    def __iter__(self) -> Iterator[Any]:
        if getattr(self, "restored_epoch_started", False):
            self.restore = False
        self.restored_epoch_started = self.restore
        return super().__iter__()


class ShardsDataModule(EncodedImageDataModule):
    """Shards written by ``scripts/make_shards.py`` (``data_dir``: a folder or ``s3://...``),
    streamed through LitData's ``StreamingDataLoader``. ``num_classes`` comes from the shards'
    ``classes.json`` (the config resolves it); the test step scores ``test/``, or ``val/``
    where the shards have none. ``seed``: the training split's shuffle (a new order every
    epoch from it). The other settings: ``EncodedImageDataModule``."""

    def __init__(
        self,
        data_dir: str,
        num_classes: int,
        seed: int = 0,
        **settings: Any,
    ) -> None:
        super().__init__(num_classes, **settings)  # saves every argument as hparams
        self.info = read_classes(data_dir)
        self.classes = self.info["classes"]
        self.test_split = "test" if "test" in self.info["splits"] else "val"
        self.train_loader: ShardLoader | None = None
        self.restored: dict[str, Any] = {}

    def _loader(self, split: str, training: bool, shuffle: bool | None = None) -> ShardLoader:
        split = self.test_split if split == "test" else split
        shuffle = training if shuffle is None else shuffle
        dataset = ShardImages(
            f"{self.hparams.data_dir.rstrip('/')}/{split}", self.decoder(training),
            shuffle=shuffle, drop_last=training, seed=self.hparams.seed,
        )  # fmt: skip
        return ShardLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_naming_bad,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> ShardLoader:
        self.train_loader = self._loader("train", training=True)
        if self.restored.get("position"):
            self.train_loader.load_state_dict(self.restored["position"])
        elif self.restored:
            self.train_loader.current_epoch = self.restored["epoch"]
        return self.train_loader

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the training loader: its epoch (the shuffle goes on in
        order), and mid-epoch its position, so that a resumed run starts at the next batch.
        Kept here, not left to Lightning's own copy in the fit loop: Lightning 2.6 builds the
        loader for ``estimated_stepping_batches`` (the schedule) before it restores the fit
        loop, and then never loads that copy."""
        if self.train_loader is None:
            return {}
        trainer = self.trainer
        mid_epoch = trainer is not None and trainer.training and not (
            trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        )  # fmt: skip
        position = self.train_loader.state_dict() if mid_epoch else None
        return {"epoch": self.train_loader.current_epoch, "position": position}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.restored = state_dict

    def source_name(self) -> str:
        return self.hparams.data_dir
