"""``data.decode=gpu``: a batch of encoded images decoded and transformed on the training device.

The loader workers only read each file's bytes; here the batch's JPEGs are decoded together
with ``torchvision.io.decode_jpeg(..., device=...)`` (nvJPEG on a CUDA device, libjpeg-turbo on
the CPU: the same code, which is how the tests run it), then cropped, flipped, resized and
normalised on that device as timm's transforms do it on the CPU (``encoded.py``):

- eval: the shorter side resized to ``floor(image_size / crop_pct)``, then the centre crop;
- train: ``RandomResizedCrop`` (scale (0.08, 1), ratio (3/4, 4/3)), a flip with probability
  ``hflip``, colour jitter (brightness, contrast and saturation, each factor drawn per image;
  one random order of the three per batch where timm draws one per image), normalisation, then
  timm's own ``RandomErasing`` on the batch (``re_prob``).

Resizing is torchvision's antialiased resize on uint8 images, made to match Pillow's.
``auto_augment`` runs on PIL images only and interpolations other than ``DEVICE_INTERPOLATIONS``
have no tensor kernel: both are refused at start-up. Images that are not JPEG (PNG, ...) are
decoded on the CPU by ``open_image`` (``images.py``), as ``decode=cpu`` reads them, and counted
(said once per epoch); one that fails to decode is replaced by a readable one of the same
batch, with its label, and named."""

from __future__ import annotations

import io
import math
from contextlib import suppress

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2 import functional as F

from mobilenet_lab.data.images import UnreadableImage, open_image
from mobilenet_lab.runs.errors import ConfigError

JPEG_MAGIC = (0xFF, 0xD8, 0xFF)  # every JPEG file starts with these bytes (SOI, then a marker)
DEVICE_INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # timm's RandomResizedCrop defaults


def check_device_settings(auto_augment: str | None, interpolation: str) -> None:
    """The transform settings the device path cannot do, refused in one line naming the key
    (the data module's own messages get the ``data.`` prefix from the start-up check)."""
    if auto_augment:
        raise ConfigError(
            f"auto_augment={auto_augment!r} runs on PIL images in the loader workers, not on "
            "the device: with decode=gpu use auto_augment=null, or decode=cpu"
        )
    if interpolation not in DEVICE_INTERPOLATIONS:
        raise ConfigError(
            f"interpolation={interpolation!r} has no resize on the device: with decode=gpu use "
            f"one of {', '.join(DEVICE_INTERPOLATIONS)}, or decode=cpu"
        )


def is_jpeg(encoded: Tensor) -> bool:
    return len(encoded) >= 3 and tuple(encoded[:3].tolist()) == JPEG_MAGIC


class CpuDecodedCount:
    """The images decoded on the CPU, said in one warning per epoch of each stage
    (when a batch of another epoch or stage comes, and at the data module's teardown)."""

    def __init__(self) -> None:
        self.where: str | None = None
        self.count = self.total = 0

    def add(self, where: str, count: int) -> None:
        if where != self.where:
            self.flush()
            self.where = where
        self.count += count
        self.total += count

    def flush(self) -> None:
        if self.count:
            rank_zero_warn(
                f"data.decode=gpu: {self.count} image(s) of {self.where} were decoded on the "
                "CPU, slower than on the device (not JPEG, or a JPEG the device's decoder does "
                "not take): convert them to baseline RGB JPEG for speed"
            )
        self.count = 0


def decode_batch(
    encoded: list[Tensor], device: torch.device, max_pixels: int | None = None
) -> tuple[list[Tensor], list[int], list[str], int]:
    """The batch's images as uint8 RGB ``(3, H, W)`` tensors on ``device``: JPEGs decoded
    there together, others (and a JPEG the device's decoder refuses) on the CPU by the kit's
    ``open_image``, as ``decode=cpu`` reads them. Also the
    index of each image kept, the unreadable ones as "<N bytes> (reason)", and how many were
    decoded on the CPU."""
    jpegs = [i for i, data in enumerate(encoded) if is_jpeg(data)]
    images: dict[int, Tensor] = {}
    bad: list[str] = []
    try:
        if jpegs:
            decoded = decode_jpeg(
                [encoded[i] for i in jpegs], mode=ImageReadMode.RGB, device=device
            )
            images.update(zip(jpegs, decoded, strict=True))
    except RuntimeError:  # one bad file fails the batch: decode one by one to find it
        for i in jpegs:  # one that fails is tried on the CPU below (nvJPEG does not take all)
            with suppress(RuntimeError):
                images[i] = decode_jpeg(encoded[i], mode=ImageReadMode.RGB, device=device)
    on_cpu = [i for i in range(len(encoded)) if i not in images]
    for i in on_cpu:  # the kit's one reader of image files: PNG, BMP, TIFF, 16-bit ... too
        try:
            source = io.BytesIO(encoded[i].numpy().tobytes())
            image = open_image(source, 3, max_pixels, setting="data.max_image_pixels")
            images[i] = F.pil_to_tensor(image).to(device)
        except UnreadableImage as error:
            bad.append(f"<{len(encoded[i])} bytes> ({error})")
    for i, image in list(images.items()):
        pixels = image.shape[-2] * image.shape[-1]
        if max_pixels is not None and pixels > max_pixels:
            size = f"{image.shape[-1]} x {image.shape[-2]} = {pixels:,} pixels"
            bad.append(f"<{len(encoded[i])} bytes> ({size}, over data.max_image_pixels of "
                       f"{max_pixels:,})")  # fmt: skip
            del images[i]
    kept = sorted(images)
    cpu_decoded = sum(1 for i in on_cpu if i in images)
    return [images[i] for i in kept], kept, bad, cpu_decoded


class DeviceTransform:
    """timm's train or eval transform (``EncodedImageDataModule._transform``) on a list of
    decoded uint8 images, giving one normalised float batch on their device."""

    def __init__(
        self, image_size: int, crop_pct: float, interpolation: str, hflip: float,
        color_jitter: float, re_prob: float, mean: tuple[float, ...], std: tuple[float, ...],
    ) -> None:  # fmt: skip
        check_device_settings(None, interpolation)
        self.size, self.crop_pct = image_size, crop_pct
        self.interpolation = DEVICE_INTERPOLATIONS[interpolation]
        self.hflip, self.color_jitter, self.re_prob = hflip, color_jitter, re_prob
        self.mean, self.std = mean, std

    def __call__(self, images: list[Tensor], training: bool) -> Tensor:
        size, mode = [self.size, self.size], self.interpolation
        if training:
            crops = [F.resized_crop(image, *RandomResizedCrop.get_params(image, SCALE, RATIO),
                                    size, mode, antialias=True) for image in images]  # fmt: skip
        else:
            short = math.floor(self.size / self.crop_pct)
            crops = [F.center_crop(F.resize(image, [short], mode, antialias=True), size)
                     for image in images]  # fmt: skip
        batch = torch.stack(crops).float().div_(255)
        if training:
            batch = self._augment(batch)
        mean = torch.tensor(self.mean, device=batch.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, -1, 1, 1)
        batch = (batch - mean) / std
        if training and self.re_prob > 0:
            from timm.data.random_erasing import RandomErasing

            batch = RandomErasing(self.re_prob, mode="const", device=batch.device)(batch)
        return batch

    def _augment(self, batch: Tensor) -> Tensor:
        """The flip and colour jitter of timm's train transform, drawn per image."""
        flip = (torch.rand(len(batch)) < self.hflip).to(batch.device)  # drawn as on the CPU
        batch[flip] = batch[flip].flip(-1)
        if self.color_jitter > 0:
            for op in torch.randperm(3).tolist():
                low, high = max(0.0, 1 - self.color_jitter), 1 + self.color_jitter
                factor = torch.empty(len(batch), 1, 1, 1).uniform_(low, high).to(batch.device)
                batch = _JITTERS[op](batch, factor).clamp_(0, 1)
        return batch


def _brightness(batch: Tensor, factor: Tensor) -> Tensor:
    return batch * factor


def _contrast(batch: Tensor, factor: Tensor) -> Tensor:
    """Blended with each image's mean grey level, as torchvision's ``adjust_contrast``."""
    mean = F.rgb_to_grayscale(batch).mean(dim=(-3, -2, -1), keepdim=True)
    return factor * batch + (1 - factor) * mean


def _saturation(batch: Tensor, factor: Tensor) -> Tensor:
    """Blended with the image in grey, as torchvision's ``adjust_saturation``."""
    return factor * batch + (1 - factor) * F.rgb_to_grayscale(batch)


_JITTERS = (_brightness, _contrast, _saturation)
