"""How a run turns one image file into the tensor its network was tested on, as plain data that
travels in the checkpoint's run config and in an exported ONNX file's metadata.

Two families: the in-memory sets (digits, CIFAR, synthetic) scale the whole image to 0-1 and
resize it bilinearly to ``image_size`` (``batch_transforms.resize``, as their test batches are);
image folders use timm's eval transform (resize to ``image_size / crop_pct``, center crop).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mobilenet_lab.data.batch_transforms import resize
from mobilenet_lab.data.images import open_image
from mobilenet_lab.runs.record import RunRecord

TIMM_EVAL = "timm_eval"  # image folders
RESIZE_WHOLE = "resize_whole"  # in-memory sets
METADATA_KEY = "mobilenet_lab"  # an ONNX file of this kit has this metadata key


@dataclass(frozen=True)
class Preprocessing:
    """Everything needed to read an image as the run read its test images, and name classes."""

    resize: str
    image_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] | None
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    model: str | None = None
    alpha: float | None = None
    # the data's split seed (the digits: which images are held out for test), so that a
    # teacher made from an exported file can be checked against a student's split
    split_seed: int | None = None

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> Preprocessing:
        """From the run config a checkpoint carries (class names and normalisation: see
        ``SaveRunConfig``; checkpoints older than that fall back to the data config)."""
        run = RunRecord.of(checkpoint)
        data, model = run.config["data"], run.config["model"]
        folders = "data_dir" in data and "crop_pct" in data
        mean = run.mean or data.get("mean")
        std = run.std or data.get("std")
        if mean is None or std is None:  # an in-memory set's checkpoint from before SaveRunConfig
            mean, std = _data_module_normalisation(data)
        return cls(
            resize=TIMM_EVAL if folders else RESIZE_WHOLE,
            image_size=int(data["image_size"]),
            in_chans=int(data["in_chans"]),
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
            class_names=tuple(run.class_names) if run.class_names else None,
            crop_pct=float(data.get("crop_pct", 1.0)),
            interpolation=str(data.get("interpolation", "bilinear")),
            model=run.choices.get("model"),
            alpha=model.get("alpha"),
            split_seed=data.get("split_seed"),
        )

    def to_metadata(self) -> dict[str, str]:
        """ONNX ``metadata_props``: one JSON value per field, plus the kit's marker key."""
        fields = {key: json.dumps(value) for key, value in dataclasses.asdict(self).items()}
        return {METADATA_KEY: "1", **fields}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> Preprocessing:
        # a field newer than the file (split_seed) keeps its default
        fields = [f for f in dataclasses.fields(cls) if f.name in metadata]
        values = {f.name: json.loads(metadata[f.name]) for f in fields}
        for key in ("mean", "std", "class_names"):
            values[key] = tuple(values[key]) if values[key] is not None else None
        return cls(**values)

    def label(self, index: int) -> str:
        return self.class_names[index] if self.class_names else str(index)

    def load(self, path: str, max_pixels: int | None = None) -> Tensor:
        """One image file -> normalised C x H x W float tensor; raises ``UnreadableImage``
        for a file ``open_image`` does not read (``max_pixels``: its pixel limit)."""
        image = open_image(path, self.in_chans, max_pixels)
        if self.resize == TIMM_EVAL:
            return self._timm_transform(image)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
        pixels = pixels.unsqueeze(-1) if pixels.ndim == 2 else pixels
        resized = resize(pixels.permute(2, 0, 1).unsqueeze(0), self.image_size)[0]
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (resized - mean) / std

    @cached_property
    def _timm_transform(self) -> Any:
        from timm.data import create_transform

        return create_transform(
            input_size=self.image_size, interpolation=self.interpolation, mean=self.mean,
            std=self.std, is_training=False, crop_pct=self.crop_pct,
        )  # fmt: skip


def _data_module_normalisation(data: dict[str, Any]) -> tuple[tuple[float, ...], ...]:
    """The data module's own mean and std (the digits compute theirs from the train split)."""
    from hydra.utils import instantiate

    module = instantiate(data)
    module.setup("test")
    return module.mean, module.std
