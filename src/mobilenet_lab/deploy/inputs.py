"""The image files ``src/predict.py``'s ``input`` names: a file, a folder or a glob."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from mobilenet_lab.data.imagefolder import IMAGE_SUFFIXES
from mobilenet_lab.runs.errors import ConfigError

INPUT_EXAMPLE = "e.g. input=photo.png, input=images/ or input='images/*.jpg'"


def folder_files(root: Path) -> list[str]:
    """Every file under ``root``, hidden ones left out, following links to folders (which
    ``Path.rglob`` does not before Python 3.13); a folder reached again (a link to a parent)
    is not walked again."""
    seen: set[tuple[int, int]] = set()
    files = []
    for folder, folders, names in os.walk(root, followlinks=True):
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in seen:
            folders.clear()
            continue
        seen.add((stat.st_dev, stat.st_ino))
        folders[:] = [name for name in folders if not name.startswith(".")]
        paths = (os.path.join(folder, name) for name in names if not name.startswith("."))
        files.extend(path for path in paths if os.path.isfile(path))
    return files


def once(paths: list[str]) -> list[str]:
    """``paths`` sorted, a file reached through several (links, a glob's ``**`` through a link
    to a parent) listed once, by its first path."""
    first: dict[str, str] = {}
    for path in sorted(paths):
        first.setdefault(os.path.realpath(path), path)
    return list(first.values())


def list_inputs(input_path: str | None) -> list[str]:
    """The files ``input`` names: one file, every file under a folder (``folder_files``), or a
    glob pattern. Refuses an input that names no image file at all."""
    if not input_path:
        raise ConfigError(f"input is not set: give an image file, folder or glob, {INPUT_EXAMPLE}")
    path = Path(input_path)
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        files = once(folder_files(path))
    else:
        files = once([p for p in glob.glob(input_path, recursive=True) if os.path.isfile(p)])
        if not files and not glob.has_magic(input_path):
            raise ConfigError(f"input={input_path!r} does not exist: {INPUT_EXAMPLE}")
    if not any(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in files):
        raise ConfigError(
            f"input={input_path!r} holds no image files ({', '.join(IMAGE_SUFFIXES)}): "
            f"{INPUT_EXAMPLE}"
        )
    return files
