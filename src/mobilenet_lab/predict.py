"""Predicts the classes of image files with a checkpoint or an exported ONNX file, reading each
image as the run read its test images, and writes the top-k labels to ``predictions.csv``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.progress import track

from mobilenet_lab.analysis.tables import write_csv
from mobilenet_lab.analysis.timing import default_device
from mobilenet_lab.deploy.inputs import list_inputs
from mobilenet_lab.deploy.loading import open_model


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
