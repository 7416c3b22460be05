"""Images kept encoded (a file's path, or its bytes) until they are decoded: the part that image
folders, Hugging Face data sets and shards share. With ``decode="cpu"`` loader workers decode
each image with ``open_image`` and apply timm's train or eval transform; with ``decode="gpu"``
they hand the encoded bytes on, and the batch is decoded and transformed on the training
device (``device_decode.py``). A file that fails to decode is replaced by another readable one,
so that every batch is full, and named at the end of the epoch (``BadFileReport``)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
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

Encoded = str | bytes  # an image file's path, or the file's bytes
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PIXELS_KEY = "data.max_image_pixels"
DECODERS = ("cpu", "gpu")


def default_num_workers(local_processes: int, slurm_task: bool) -> int:
    """Loader workers per process: the CPUs this process may use (SLURM's ``cpus_per_task``
    in a SLURM task, else its CPU affinity shared by the ``local_processes`` of this node's
    training), at most 8, at least 1."""
    if slurm_task and os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        share = int(os.environ["SLURM_CPUS_PER_TASK"])
    else:
        share = usable_cpus() // max(1, local_processes)
    return max(1, min(8, share))


def encoded_bytes(encoded: Encoded) -> bytes:
    """The file's bytes, read from its path when it is one."""
    return Path(encoded).read_bytes() if isinstance(encoded, str) else encoded


class Decoder:
    """One encoded image to what the loader hands on: the transformed image tensor
    (``on_device=False``) or the encoded bytes as a uint8 tensor for the device to decode.
    Raises ``UnreadableImage`` (only when decoding here)."""

    def __init__(self, transform: Callable, max_pixels: int | None, on_device: bool) -> None:
        self.transform, self.max_pixels, self.on_device = transform, max_pixels, on_device

    def __call__(self, encoded: Encoded) -> Tensor:
        if self.on_device:
            return torch.frombuffer(bytearray(encoded_bytes(encoded)), dtype=torch.uint8)
        source = encoded if isinstance(encoded, str) else io.BytesIO(encoded)
        return self.transform(open_image(source, 3, self.max_pixels, setting=PIXELS_KEY))


def describe(encoded: Encoded, name: str | None = None) -> str:
    """How a bad image is named: its path, else ``name`` (a sample's key), else its size."""
    if isinstance(encoded, str):
        return encoded
    return name or f"<{len(encoded)} bytes>"


class ReplaceBadImages(Dataset):
    """Decodes one image; a file that fails is replaced by the next readable one of the split
    (with that image's label), so every batch is full, and its name comes back with the sample
    for the data module to report. Distributed training needs this: a rank whose batch came out
    empty would have no loss to give its DDP peers. ``samples[i]`` is ``(encoded, label)``:
    any sequence (a list, or a view of a Hugging Face data set)."""

    def __init__(self, samples: Sequence[tuple[Encoded, int]], decoder: Decoder) -> None:
        self.samples, self.decoder = samples, decoder

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int, list[str]]:
        bad = []
        for offset in range(len(self.samples)):
            encoded, label = self.samples[(index + offset) % len(self.samples)]
            try:
                return self.decoder(encoded), label, bad
            except UnreadableImage as error:
                bad.append(f"{describe(encoded)} ({error})")
        raise RuntimeError(f"no image of {len(bad)} in this split can be decoded, e.g. {bad[0]}")


def collate_naming_bad(samples: list[tuple[Tensor, int, list[str]]]) -> tuple:
    """A batch, and the unreadable files its samples replaced. Encoded images (1-D byte
    tensors of different lengths) stay a list, for the device to decode."""
    images, labels = zip(*((image, label) for image, label, _ in samples), strict=True)
    stacked = list(images) if images[0].dim() == 1 else default_collate(list(images))
    return stacked, torch.as_tensor(labels), sorted({path for *_, bad in samples for path in bad})


class EncodedImageDataModule(L.LightningDataModule):
    """timm's train and eval transforms over encoded images; subclasses say where the images
    are (``split_samples``) and may replace ``_loader`` (an iterable data set has no sampler).

    ``batch_size`` is per device; ``num_workers=null`` means one per CPU this process may use
    (see ``default_num_workers``; at most 8). ``augment=false`` gives training the eval
    transform (``debug=overfit``). ``max_image_pixels``: the largest image read (``null``:
    Pillow's limit); larger ones are skipped as unreadable, naming their size. ``decode``:
    ``cpu`` (PIL in the loader workers) or ``gpu`` (the batch on the training device).
    ``test_split``: the split the test step scores."""

    test_split = "test"

    def __init__(
        self,
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
        augment: bool = True,
        max_image_pixels: int | None = None,
        decode: str = "cpu",
    ) -> None:
        super().__init__()
        check_positive_int("image_size", image_size)
        check_positive_int("batch_size", batch_size)
        if max_image_pixels is not None:
            check_positive_int("max_image_pixels", max_image_pixels)
        if in_chans != 3:
            raise ConfigError(f"data.in_chans={in_chans} is not valid: images are read as RGB (3)")
        if decode not in DECODERS:
            raise ConfigError(f"data.decode={decode!r} is not valid: use one of {DECODERS}")
        # the subclass's own arguments too (Lightning reads every __init__ frame up the chain)
        self.save_hyperparameters()
        self.num_classes, self.in_chans, self.image_size = num_classes, in_chans, image_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.bad_files: set[str] = set()
        if decode == "gpu":  # imported here: torchvision's decoders only this path needs
            from mobilenet_lab.data.device_decode import (
                CpuDecodedCount,
                DeviceTransform,
                check_device_settings,
            )

            check_device_settings(auto_augment, interpolation)
            self.decoded_on_cpu = CpuDecodedCount()  # not JPEG, or refused by the device
            self.device_transform = DeviceTransform(
                image_size, crop_pct, interpolation, hflip, color_jitter, re_prob, self.mean,
                self.std,
            )  # fmt: skip

    def split_samples(self, split: str) -> Sequence[tuple[Encoded, int]]:
        """``(encoded, label)`` of every image of ``split`` (train, val or test)."""
        raise NotImplementedError

    def _transform(self, training: bool) -> Callable:
        from timm.data import create_transform  # imported here: only these data sets need it

        hp = self.hparams
        common = {"input_size": hp.image_size, "interpolation": hp.interpolation,
                  "mean": tuple(hp.mean), "std": tuple(hp.std)}  # fmt: skip
        if not (training and hp.augment):
            return create_transform(**common, is_training=False, crop_pct=hp.crop_pct)
        return create_transform(
            **common, is_training=True, hflip=hp.hflip, color_jitter=hp.color_jitter,
            auto_augment=hp.auto_augment, re_prob=hp.re_prob,
        )  # fmt: skip

    def decoder(self, training: bool) -> Decoder:
        on_device = self.hparams.decode == "gpu"
        return Decoder(self._transform(training), self.hparams.max_image_pixels, on_device)

    @property
    def num_workers(self) -> int:
        if self.hparams.num_workers is not None:
            return self.hparams.num_workers
        trainer = self.trainer
        local_processes = trainer.num_devices if trainer is not None else 1
        environment = getattr(trainer.strategy, "cluster_environment", None) if trainer else None
        return default_num_workers(local_processes, isinstance(environment, SLURMEnvironment))

    def _loader(self, split: str, training: bool, shuffle: bool | None = None) -> DataLoader:
        dataset = ReplaceBadImages(self.split_samples(split), self.decoder(training))
        workers = self.num_workers
        shuffle = training if shuffle is None else shuffle
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            # timm's rule: a training split's last, short batch is dropped, or its few images'
            # statistics end each epoch in BatchNorm's running ones (1,347 digits in batches of
            # 64: a batch of 3, and the test accuracy fell from 96% to 59%); kept where the
            # split is smaller than one batch, which would otherwise train on nothing
            drop_last=training and len(dataset) > self.hparams.batch_size,
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
                f"Testing on val: {self.source_name()} has no test split, and val also "
                "chose best.ckpt, so the test metrics are not of held-out images"
            )
        return self._loader("test", training=False)

    def source_name(self) -> str:
        """The data set as the user named it, for messages."""
        raise NotImplementedError

    def calibration_dataloader(self) -> DataLoader:
        """Training images in the eval preprocessing, shuffled so the first batches span the
        classes: what int8 calibration measures activation ranges on."""
        return self._loader("train", training=False, shuffle=True)

    def transfer_batch_to_device(self, batch: tuple, device: torch.device, dataloader_idx: int):
        images, labels, bad = batch
        if isinstance(images, list):  # decode="gpu": decode_jpeg reads the bytes from the CPU
            return images, labels.to(device), bad
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch: tuple, dataloader_idx: int) -> tuple[Tensor, Tensor]:
        images, labels, bad = batch
        self.bad_files.update(bad)
        if isinstance(images, list):  # decode="gpu": encoded bytes, decoded here on the device
            return self._decode_on_device(images, labels)
        return images, labels

    def _decode_on_device(self, encoded: list[Tensor], labels: Tensor) -> tuple[Tensor, Tensor]:
        """The batch decoded and transformed on the labels' device (``device_decode.py``); an
        image that fails is replaced by a readable one of the batch, so that it stays full."""
        from mobilenet_lab.data.device_decode import decode_batch

        max_pixels = self.hparams.max_image_pixels
        images, kept, bad, cpu_decoded = decode_batch(encoded, labels.device, max_pixels)
        if not kept:
            raise RuntimeError(f"no image of a batch of {len(encoded)} can be decoded: {bad[0]}")
        self.bad_files.update(bad)
        if bad:
            images += [images[i % len(kept)] for i in range(len(bad))]
            kept += [kept[i % len(kept)] for i in range(len(bad))]
            labels = labels[torch.as_tensor(kept, device=labels.device)]
        trainer = self.trainer
        stage = getattr(getattr(trainer, "state", None), "stage", None)
        where = f"{stage.value} epoch {trainer.current_epoch}" if stage else "this pass"
        self.decoded_on_cpu.add(where, cpu_decoded)
        training = bool(getattr(trainer, "training", False)) and self.hparams.augment
        return self.device_transform(images, training), labels

    def teardown(self, stage: str) -> None:
        if self.hparams.decode == "gpu":
            self.decoded_on_cpu.flush()
