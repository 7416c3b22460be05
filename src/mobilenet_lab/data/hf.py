"""Hugging Face ``datasets`` data sets: a hub name (from the local cache; online where the
machine is) or a local ``save_to_disk`` folder, parquet or arrow files, read through the image
folders' timm transforms (``encoded.py``). Images stay encoded (their file bytes: the image
column is cast to ``Image(decode=False)``) until a loader worker, or the training device
(``decode=gpu``), decodes them. ``streaming=true`` reads a split as an iterable stream, shared
over DDP ranks and loader workers, and resumable mid-epoch (``StreamLoader``)."""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from mobilenet_lab.data.encoded import (
    Decoder,
    Encoded,
    EncodedImageDataModule,
    collate_naming_bad,
    describe,
)
from mobilenet_lab.data.images import UnreadableImage
from mobilenet_lab.runs.errors import ConfigError

SPLIT_NAMES = {  # our split -> the names data sets give it, most common first
    "train": ("train", "training"),
    "val": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing"),
}
LABEL_NAMES = ("label", "labels", "class", "target")  # an integer label column among several
HUB_TIMEOUT_S = 10  # the hub's answer to one look-up, before a name not cached is refused
FILE_FORMATS = {".parquet": "parquet", ".arrow": "arrow"}


def _hub_cache_folders(name: str) -> list[Path]:
    """Where a hub data set's files (huggingface_hub) or its arrow tables (datasets) would be."""
    from datasets import config
    from huggingface_hub import constants

    return [
        Path(constants.HF_HUB_CACHE) / f"datasets--{name.replace('/', '--')}",
        Path(config.HF_DATASETS_CACHE) / name.replace("/", "___"),
    ]


def _offline() -> bool:
    """HF_HUB_OFFLINE (or HF_DATASETS_OFFLINE) set, now or when huggingface_hub was imported."""
    from huggingface_hub import constants

    flags = [os.environ.get(key, "").upper() for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")]
    return bool(constants.HF_HUB_OFFLINE) or bool({"1", "ON", "YES", "TRUE"} & set(flags))


def check_reachable(name: str) -> None:
    """A hub name must be cached, or on the hub and the hub reachable within seconds: offline,
    ``load_dataset`` would fail only after its own look-ups, and where the network drops
    packets it would wait for minutes."""
    if any(folder.is_dir() for folder in _hub_cache_folders(name)):
        return
    cache = _hub_cache_folders(name)[0].parent
    if _offline():
        raise ConfigError(
            f"data.name={name!r} is neither a local path nor a data set in the Hugging Face cache "
            f"({cache}), and HF_HUB_OFFLINE=1: download it where the machine is online "
            "(python -c \"import datasets; datasets.load_dataset('NAME')\"), or give a local "
            "save_to_disk folder, parquet or arrow files"
        )
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        HfApi().dataset_info(name, timeout=HUB_TIMEOUT_S)
    except RepositoryNotFoundError as error:
        raise ConfigError(
            f"data.name={name!r} is neither a local path nor a data set on the hub (or one you "
            "may read: huggingface-cli login)"
        ) from error
    except Exception as error:  # huggingface_hub's HTTP client's errors: no network, no answer
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"data.name={name!r} is not in the Hugging Face cache ({cache}) and the hub could "
            f"not be asked within {HUB_TIMEOUT_S} s ({reason}): on a machine without network, "
            "copy the data set here and set HF_HUB_OFFLINE=1"
        ) from error


def _local_files(path: Path) -> tuple[str, dict[str, list[str]] | str]:
    """The packaged builder (parquet or arrow) and data files of a local file or folder."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    kinds = {FILE_FORMATS[p.suffix] for p in files if p.suffix in FILE_FORMATS}
    if len(kinds) != 1:
        found = "both parquet and arrow files" if kinds else "no .parquet or .arrow file"
        raise ConfigError(
            f"data.name={str(path)!r} holds {found}: give a save_to_disk folder, parquet files "
            "or arrow files (one format), or a hub name"
        )
    (kind,) = kinds
    if path.is_file():
        return kind, {"train": [str(path)]}
    return kind, str(path)


@functools.lru_cache(maxsize=8)
def open_source(name: str, streaming: bool) -> Any:
    """The data set's splits (a ``DatasetDict``, or an ``IterableDatasetDict`` when streaming);
    cached, so the config check, the resolver and the data module open it once."""
    import datasets

    path = Path(name).expanduser()
    if not path.exists() and (path.is_absolute() or name.startswith((".", "~")) or
                              name.count("/") > 1):  # fmt: skip
        raise ConfigError(
            f"data.name={name!r} does not exist: give a save_to_disk folder, parquet or arrow "
            "files, or a hub name (owner/name)"
        )
    if not path.exists():
        check_reachable(name)
    local = _local_files(path) if path.exists() and not _saved_to_disk(path) else None
    try:
        if _saved_to_disk(path):
            return _from_disk(path, streaming)
        if local is not None:
            kind, files = local
            where = {"data_dir": files} if isinstance(files, str) else {"data_files": files}
            return datasets.load_dataset(kind, **where, streaming=streaming)
        return datasets.load_dataset(name, streaming=streaming)
    except (OSError, ValueError) as error:  # files that are not what they say, a hub error
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"data.name={name!r} is not read: {first}") from error


def _saved_to_disk(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "state.json"))


def _from_disk(path: Path, streaming: bool) -> Any:
    """A ``save_to_disk`` folder's splits; streaming, as streams of their arrow files."""
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict(train=loaded)
    if not streaming:
        return loaded
    shards = {split: max(1, len(ds.cache_files)) for split, ds in loaded.items()}
    return datasets.IterableDatasetDict(
        {split: ds.to_iterable_dataset(shards[split]) for split, ds in loaded.items()}
    )


def split_names(source: Any) -> dict[str, str]:
    """Our split names (train, val, test) -> the data set's, for those it has."""
    found = {}
    for ours, names in SPLIT_NAMES.items():
        for name in names:
            if name in source:
                found[ours] = name
                break
    if "train" not in found:
        raise ConfigError(
            f"the data set has no train split (its splits: {', '.join(source)}): give one "
            "named train"
        )
    return found


def find_columns(features: Any, image: str | None, label: str | None) -> tuple[str, str]:
    """The image and label columns: the ones given, checked, else the first ``Image`` column
    and the first ``ClassLabel`` column, else the integer column (of several, the one named
    label, labels, class or target)."""
    from datasets import ClassLabel, Image

    columns = ", ".join(f"{k} ({type(v).__name__})" for k, v in features.items())
    for key, value in (("image_column", image), ("label_column", label)):
        if value is not None and value not in features:
            raise ConfigError(f"data.{key}={value!r} is not a column: the columns are {columns}")
    if image is None:
        image = next((k for k, v in features.items() if isinstance(v, Image)), None)
        if image is None:
            raise ConfigError(f"no Image column found: set data.image_column (columns: {columns})")
    if label is None:
        label = next((k for k, v in features.items() if isinstance(v, ClassLabel)), None)
    if label is None:
        integers = [k for k, v in features.items() if _is_integer(v)]
        named = [k for k in integers if k.lower() in LABEL_NAMES]
        candidates = named if len(named) == 1 else integers
        if len(candidates) != 1:
            which = f"several ({', '.join(integers)})" if integers else "no ClassLabel or"
            raise ConfigError(
                f"{which} integer columns: set data.label_column (columns: {columns})"
            )
        label = candidates[0]
    if not isinstance(features[image], Image):
        raise ConfigError(
            f"data.image_column={image!r} holds {_kind(features[image])}, not images: give an "
            f"Image column (columns: {columns})"
        )
    feature = features[label]
    if not (isinstance(feature, ClassLabel) or _is_integer(feature)):
        raise ConfigError(
            f"data.label_column={label!r} holds {_kind(feature)}, not class indices: give a "
            f"ClassLabel or integer column (columns: {columns})"
        )
    return image, label


def _kind(feature: Any) -> str:
    """A feature as the errors name it: a value's dtype, else its type."""
    return getattr(feature, "dtype", None) or type(feature).__name__


def _is_integer(feature: Any) -> bool:
    from datasets import Value

    return isinstance(feature, Value) and feature.dtype.startswith(("int", "uint"))


def _train_split(name: str, streaming: bool) -> Any:
    source = open_source(name, streaming)
    return source[split_names(source)["train"]]


def class_names(name: str, label_column: str | None, streaming: bool = False) -> list[str] | None:
    """The ``ClassLabel``'s names, or None for a plain integer label."""
    from datasets import ClassLabel

    features = _train_split(name, streaming).features
    feature = features[find_columns(features, None, label_column)[1]]
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def count_classes(name: str, label_column: str | None = None, streaming: bool = False) -> int:
    """What ``num_classes`` resolves to: the ``ClassLabel``'s names, else the largest label + 1
    (read from the label column alone)."""
    names = class_names(name, label_column, streaming)
    if names is not None:
        return len(names)
    train = _train_split(name, streaming)
    label = find_columns(train.features, None, label_column)[1]
    labels = train.select_columns([label])
    return 1 + max(int(row[label]) for row in labels)


def _encoded(value: dict) -> Encoded:
    """An ``Image(decode=False)`` value: the file's bytes, else its path."""
    return value["bytes"] if value.get("bytes") else value["path"]


class Rows(Sequence):
    """``(encoded, label)`` of a map-style split, read row by row (memory-mapped)."""

    def __init__(self, dataset: Any, image: str, label: str) -> None:
        self.dataset, self.image, self.label = dataset, image, label

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Encoded, int]:
        row = self.dataset[int(index)]
        return _encoded(row[self.image]), int(row[self.label])


class StreamedImages(IterableDataset):
    """One rank's share of a streamed split, decoded in the loader workers (datasets gives each
    worker its own shards). A bad image is replaced by the last good one of the worker (the
    next good one when none came yet) and named with the sample, as ``ReplaceBadImages`` does.
    Its state (``state_dict``) is the stream's position, which ``StatefulDataLoader`` keeps per
    worker."""

    def __init__(self, stream: Any, image: str, label: str, decoder: Decoder) -> None:
        self.stream, self.image, self.label, self.decoder = stream, image, label, decoder

    def __iter__(self) -> Iterator[tuple[Tensor, int, list[str]]]:
        last, waiting = None, []
        for row in self.stream:
            value = row[self.image]
            encoded = _encoded(value)
            try:
                good = (self.decoder(encoded), int(row[self.label]))
            except UnreadableImage as error:
                bad = f"{describe(encoded, value.get('path'))} ({error})"
                if last is None:
                    waiting.append(bad)
                else:
                    yield (*last, [bad])
                continue
            yield from ((*good, [bad]) for bad in waiting)
            waiting, last = [], good
            yield (*good, [])
        if waiting:
            raise RuntimeError(f"no image of this stream can be decoded, e.g. {waiting[0]}")

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)


def _gather(state: dict) -> list[dict]:
    """Every rank's ``state`` (one checkpoint, written by rank 0, resumes them all)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [state]
    states: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(states, state)
    return states


class StreamLoader:
    """A rank's training batches of a stream: exactly ``batches`` full batches an epoch on
    every rank (DDP's ranks must step together, or training hangs), the stream's remainder
    dropped, as ``drop_last`` does. Samples come from the workers one by one and are batched
    here, so at most a batch is dropped per rank, not one per worker. Having a length, it is
    not read ahead by Lightning, so its ``position`` is that of the batches trained on.

    The first pass started in an epoch is the training one, whose position is kept; a later
    one (``PreciseBatchNorm`` reading training batches after the epoch) reads the stream
    afresh. A ``resume_at`` position is gone on from only where Lightning resumes the same
    epoch after the same batches (``progress``: its ``(epoch, batches done)``, None outside a
    trainer); else the epoch starts anew.

    Where it stands goes into checkpoints through the data module's ``state_dict``, not the
    loader's: Lightning gives a loader its state only when it builds the loader after the
    checkpoint is read, and the learning-rate schedule (``estimated_stepping_batches``) has
    built it before; and Lightning's copy is rank 0's alone."""

    def __init__(
        self,
        dataset: StreamedImages,
        batch_size: int,
        batches: int,
        workers: int,
        progress: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.dataset, self.batch_size, self.batches = dataset, batch_size, batches
        self.workers, self.progress = workers, progress
        self.training: dict | None = None  # the training pass: epoch, done, loader
        self.resume_from: dict | None = None

    def __len__(self) -> int:
        return self.batches

    def _new_loader(self) -> Any:
        from torchdata.stateful_dataloader import StatefulDataLoader

        return StatefulDataLoader(
            self.dataset, batch_size=None, num_workers=self.workers, persistent_workers=False,
            pin_memory=torch.cuda.is_available(), snapshot_every_n_steps=self.batch_size,
        )  # fmt: skip

    def __iter__(self) -> Iterator[tuple]:
        saved, self.resume_from = self.resume_from, None
        epoch, done = self.progress() if self.progress else (None, None)
        if saved is not None and (epoch, done) in ((None, None), (saved["epoch"], saved["done"])):
            epoch = saved["epoch"]
        else:
            saved, epoch = None, 0 if epoch is None else epoch
        first = self.training is None or self.training["epoch"] != epoch or saved is not None
        now = {"epoch": epoch, "done": saved["done"] if saved else 0, "loader": self._new_loader()}
        if first:
            self.training = now
        self.dataset.set_epoch(epoch)
        if saved is not None:
            now["loader"].load_state_dict(saved["loader"])
        samples = iter(now["loader"])
        while now["done"] < self.batches:
            batch = list(itertools.islice(samples, self.batch_size))
            if len(batch) < self.batch_size:  # this rank's share ran out: its shards were small
                samples = iter(now["loader"])  # the stream again from its start
                batch += list(itertools.islice(samples, self.batch_size - len(batch)))
            now["done"] += 1
            yield collate_naming_bad(batch)

    def state_dict(self) -> dict:
        """Empty: Lightning's copy (see above); having it tells Lightning the loader resumes."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to load from Lightning's copy: ``resume_at`` goes on from the data module's."""

    def position(self) -> dict:
        """Every rank's epoch, batches done and loader state (the workers' stream positions)."""
        now = self.training or {"epoch": 0, "done": 0, "loader": self._new_loader()}
        state = {"epoch": now["epoch"], "done": now["done"], "loader": now["loader"].state_dict()}
        return {"ranks": _gather(state)}

    def resume_at(self, state: dict) -> None:
        """Goes on from a ``position`` (this rank's) when the next pass starts where it was."""
        ranks, distributed = state["ranks"], torch.distributed.is_initialized()
        world = torch.distributed.get_world_size() if distributed else 1
        if len(ranks) != world:
            raise ConfigError(
                f"the checkpoint holds the stream positions of {len(ranks)} rank(s), and this "
                f"run has {world}: resume a streamed run on as many devices"
            )
        self.resume_from = ranks[torch.distributed.get_rank() if distributed else 0]


class HFDataModule(EncodedImageDataModule):
    """``name``: a hub name or a local path (``save_to_disk`` folder, parquet or arrow files, or
    a folder of them). ``image_column`` / ``label_column`` (null: found by feature type).
    Splits: train, val (validation, valid, dev) and test; a missing val or test is held out
    of train: ``val_size`` images (a share of train when < 1), drawn with ``split_seed`` (a
    stream: its first ones). ``streaming``: read the splits as streams (``StreamLoader``);
    ``shuffle_buffer`` images are shuffled in a buffer (0: stream order; a resumed run loses
    the buffer's images of that epoch). Construction reads the features only (the config check
    builds this module too); ``setup`` opens the splits. Other settings:
    ``EncodedImageDataModule``."""

    def __init__(
        self,
        name: str,
        num_classes: int,
        image_column: str | None = None,
        label_column: str | None = None,
        streaming: bool = False,
        val_size: float = 0.1,
        split_seed: int = 0,
        shuffle_buffer: int = 1000,
        **settings: Any,
    ) -> None:
        super().__init__(num_classes, **settings)  # saves every argument as hparams
        if not (0 < val_size < 1 or (isinstance(val_size, int) and val_size >= 1)):
            raise ConfigError(
                f"data.val_size={val_size!r} is not valid: use a share of train in (0, 1) or a "
                "whole number of images >= 1"
            )
        source = open_source(name, streaming)
        self.names = split_names(source)
        train = source[self.names["train"]]
        self.image, self.label = find_columns(train.features, image_column, label_column)
        self.classes = class_names(name, self.label, streaming)
        self.held_out = [split for split in ("val", "test") if split not in self.names]
        self.splits: dict[str, Any] = {}
        self.train_stream: StreamLoader | None = None
        self.resume_position: dict | None = None

    def source_name(self) -> str:
        return self.hparams.name

    def setup(self, stage: str | None = None) -> None:
        """Opens the splits (once), holding out the missing ones from train, and says so."""
        if self.splits:
            return
        from datasets import Image

        hp = self.hparams
        source = open_source(hp.name, hp.streaming)
        splits = {ours: source[theirs] for ours, theirs in self.names.items()}
        splits = {k: v.select_columns([self.image, self.label]) for k, v in splits.items()}
        splits = {k: v.cast_column(self.image, Image(decode=False)) for k, v in splits.items()}
        self.rows = {k: self._rows(v) for k, v in splits.items()}
        for split in self.held_out:
            train = splits["train"]
            size = self._held_out_size(self.rows["train"])
            if hp.streaming:
                splits[split], splits["train"] = train.take(size), train.skip(size)
            else:
                parts = train.train_test_split(test_size=size, seed=hp.split_seed, shuffle=True)
                splits[split], splits["train"] = parts["test"], parts["train"]
            self.rows[split], self.rows["train"] = size, self.rows["train"] - size
            if rank_zero_only.rank == 0:
                how = "its first" if hp.streaming else f"split_seed={hp.split_seed}"
                print(
                    f"Holding out {split}: data.name={hp.name!r} has no {split} split, so "
                    f"{size} images of train ({how}) are held out as {split} (data.val_size="
                    f"{hp.val_size})"
                )
        self.splits = splits

    def _rows(self, split: Any) -> int:
        """A split's number of images: its length, else the data set's record of it, else
        counted (a stream without that record: its label column read once)."""
        if not self.hparams.streaming:
            return len(split)
        recorded = split.info.splits and split.info.splits.get(split.split)
        if recorded and recorded.num_examples:
            return recorded.num_examples
        return sum(1 for _ in split.select_columns([self.label]))

    def _held_out_size(self, train_rows: int) -> int:
        size = self.hparams.val_size
        size = round(size * train_rows) if size < 1 else size
        if not 0 < size < train_rows:
            raise ConfigError(
                f"data.val_size={self.hparams.val_size} holds out {size} of the {train_rows} "
                "train images: hold out at least one and leave at least one"
            )
        return size

    def split_samples(self, split: str) -> Sequence[tuple[Encoded, int]]:
        return Rows(self.splits[split], self.image, self.label)

    def _progress(self) -> tuple[int, int]:
        """The epoch Lightning trains, and the batches of it done (restored on a resume)."""
        trainer = self.trainer
        return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.ready

    def state_dict(self) -> dict:
        """The training stream's position (called on every rank as a checkpoint is written)."""
        return {"train_stream": self.train_stream.position()} if self.train_stream else {}

    def load_state_dict(self, state: dict) -> None:
        self.resume_position = state.get("train_stream")

    def _loader(self, split: str, training: bool, shuffle: bool | None = None) -> Any:
        if not self.hparams.streaming:
            return super()._loader(split, training, shuffle)
        from datasets.distributed import split_dataset_by_node

        hp, trainer = self.hparams, self.trainer
        stream = self.splits[split]
        if training and hp.shuffle_buffer:
            stream = stream.shuffle(seed=hp.split_seed, buffer_size=hp.shuffle_buffer)
        elif training:  # the digits as a class-sorted parquet: 97% with a buffer, 9% without
            rank_zero_warn(
                "data.shuffle_buffer=0: training reads the stream in its stored order; a set "
                "stored class by class then trains on one class a batch (near-chance accuracy)"
            )
        world = trainer.world_size if trainer is not None else 1
        if world > 1:
            stream = split_dataset_by_node(stream, trainer.global_rank, world)
        dataset = StreamedImages(stream, self.image, self.label, self.decoder(training))
        if training:
            batches = self.rows[split] // world // hp.batch_size
            if batches == 0:
                raise ConfigError(
                    f"data.batch_size={hp.batch_size} on {world} rank(s) needs at least "
                    f"{hp.batch_size * world} train images; {hp.name!r} has {self.rows[split]}"
                )
            self.train_stream = StreamLoader(
                dataset, hp.batch_size, batches, self.num_workers,
                self._progress if trainer is not None else None,
            )  # fmt: skip
            if self.resume_position is not None:
                self.train_stream.resume_at(self.resume_position)
                self.resume_position = None
            return self.train_stream
        return DataLoader(
            dataset, batch_size=hp.batch_size, num_workers=self.num_workers,
            collate_fn=collate_naming_bad, pin_memory=torch.cuda.is_available(),
        )  # fmt: skip
