"""The image files ``src/predict.py``'s ``input`` names: a file, a folder or a glob."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from mobilenet_lab.data.imagefolder import IMAGE_SUFFIXES
from mobilenet_lab.runs.errors import ConfigError

INPUT_EXAMPLE = "e.g. input=photo.png, input=images/ or input='images/*.jpg'"


def list_inputs(input_path: str | None) -> list[str]:
    """The files ``input`` names: one file, every file under a folder (hidden ones left out),
    or a glob pattern. Refuses an input that names no image file at all."""
    if not input_path:
        raise ConfigError(f"input is not set: give an image file, folder or glob, {INPUT_EXAMPLE}")
    path = Path(input_path)
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        files = sorted(
            str(p) for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )  # fmt: skip
    else:
        files = sorted(p for p in glob.glob(input_path, recursive=True) if os.path.isfile(p))
        if not files and not glob.has_magic(input_path):
            raise ConfigError(f"input={input_path!r} does not exist: {INPUT_EXAMPLE}")
    if not any(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in files):
        raise ConfigError(
            f"input={input_path!r} holds no image files ({', '.join(IMAGE_SUFFIXES)}): "
            f"{INPUT_EXAMPLE}"
        )
    return files
