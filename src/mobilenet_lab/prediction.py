"""Predicts the classes of image files with a checkpoint or an exported ONNX file, reading each
image as the run read its test images, and writes the top-k labels to ``predictions.csv``."""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.progress import track

from mobilenet_lab.checks import ConfigError
from mobilenet_lab.data.imagefolder import IMAGE_SUFFIXES
from mobilenet_lab.inference import open_model
from mobilenet_lab.profiling import default_device
from mobilenet_lab.tables import write_csv

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


def predict(cfg: DictConfig) -> list[dict[str, Any]]:
    """Top-k predictions for every readable file of ``cfg.input``; unreadable files are listed
    at the end; fails (exit status 1) only when no file could be read."""
    device = default_device() if cfg.device == "auto" else cfg.device
    model = open_model(cfg.ckpt_path, cfg.weights, device)
    prep = model.preprocessing
    if prep.class_names is None:
        print("Note: this checkpoint predates stored class names: labels are class indices")
    files = list_inputs(cfg.input)
    num_classes = len(prep.class_names) if prep.class_names else None
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    batches = [files[i : i + cfg.batch_size] for i in range(0, len(files), cfg.batch_size)]
    for batch in track(batches, description="predicting", disable=not sys.stdout.isatty()):
        images, paths = [], []
        for path in batch:
            try:
                images.append(prep.load(path))
                paths.append(path)
            except Exception:  # PIL raises OSError, SyntaxError, ValueError... for bad files
                skipped.append(path)
        if images:
            probabilities = model.logits(torch.stack(images)).softmax(dim=1)
            num_classes = probabilities.shape[1]
            top_k = min(cfg.top_k, num_classes)
            values, indices = probabilities.topk(top_k, dim=1)
            for path, probs, classes in zip(paths, values.tolist(), indices.tolist(), strict=True):
                row: dict[str, Any] = {"path": path}
                for rank, (prob, index) in enumerate(zip(probs, classes, strict=True), start=1):
                    row[f"label_{rank}"] = prep.label(index)
                    row[f"prob_{rank}"] = round(prob, 6)
                rows.append(row)
    if skipped:
        listing = "\n  ".join(skipped)
        print(f"Skipped {len(skipped)} file(s) that are not readable images:\n  {listing}")
    if not rows:
        raise SystemExit(
            f"Error: none of the {len(files)} file(s) of input={cfg.input!r} is a readable image"
        )
    out = Path(cfg.paths.output_dir) / "predictions.csv"
    tmp = out.with_suffix(".csv.tmp")
    write_csv(tmp, rows)
    os.replace(tmp, out)
    print(f"Wrote {len(rows)} prediction(s) to {out}")
    return rows
