"""Resizing and augmentation applied to whole batches of tensors, on the batch's device.

Small data sets are held as tensors, so a batch is transformed with one ``grid_sample``
call instead of one PIL pipeline per image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def random_affine_resize(
    images: Tensor, size: int, max_translate: float, max_rotate_deg: float, max_scale: float
) -> Tensor:
    """Resize to ``size`` with a random shift, rotation and zoom per image (bilinear, zero fill).

    ``max_translate`` is a fraction of the image side; ``max_scale`` the largest relative zoom.
    """
    n = images.shape[0]
    uniform = lambda low, high: torch.empty(n, device=images.device).uniform_(low, high)  # noqa: E731
    angle = uniform(-max_rotate_deg, max_rotate_deg) * (math.pi / 180)
    scale = uniform(1 - max_scale, 1 + max_scale)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    shift_x, shift_y = (uniform(-max_translate, max_translate) * 2 for _ in range(2))
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
    )
    grid = F.affine_grid(theta, [n, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def resize(images: Tensor, size: int) -> Tensor:
    """Bilinear resize of a batch to ``size`` x ``size`` (identity when already that size)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def random_crop_flip(images: Tensor, padding: int, flip: bool) -> Tensor:
    """The CIFAR augmentation for a whole batch: zero-pad by ``padding``, crop back to the
    original size at a random offset per image, and mirror half of the images left-right."""
    n, _, height, width = images.shape
    padded = F.pad(images, [padding] * 4)
    device = images.device
    top = torch.randint(0, 2 * padding + 1, (n, 1), device=device)
    left = torch.randint(0, 2 * padding + 1, (n, 1), device=device)
    rows = (top + torch.arange(height, device=device))[:, None, :, None]  # n x 1 x H x 1
    cols = (left + torch.arange(width, device=device))[:, None, None, :]  # n x 1 x 1 x W
    if flip:
        mirrored = torch.rand(n, device=device) < 0.5
        cols = torch.where(mirrored[:, None, None, None], cols.flip(-1), cols)
    batch = torch.arange(n, device=device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=device)[None, :, None, None]
    return padded[batch, channels, rows, cols]
