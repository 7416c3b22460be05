"""Predicts the classes of image files with a checkpoint or an exported ONNX file, reading each
image as the run read its test images (``data.images.open_image``), and writes the top-k labels
to ``predictions.csv`` and the files it could not read, with the reason, to ``skipped.csv``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.progress import track

from mobilenet_lab.analysis.tables import write_csv
from mobilenet_lab.analysis.timing import default_device
from mobilenet_lab.data.images import UnreadableImage
from mobilenet_lab.deploy.inputs import INPUT_EXAMPLE, list_inputs
from mobilenet_lab.deploy.loading import open_model
from mobilenet_lab.runs.errors import ConfigError, named_by


def predict(cfg: DictConfig) -> list[dict[str, Any]]:
    """Top-k predictions for every readable file of ``cfg.input`` in ``predictions.csv``; the
    files not read are listed with their reason, on the console and in ``skipped.csv``. An
    input of which no file is read is a bad ``input`` (``ConfigError``: exit status 2)."""
    device = default_device() if cfg.device == "auto" else cfg.device
    with named_by("ckpt_path"):  # an exported file's reader tells of the file, not the key
        model = open_model(cfg.ckpt_path, cfg.weights, device)
    prep = model.preprocessing
    if prep.class_names is None:
        print("Note: this checkpoint predates stored class names: labels are class indices")
    files = list_inputs(cfg.input)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    batches = [files[i : i + cfg.batch_size] for i in range(0, len(files), cfg.batch_size)]
    for batch in track(batches, description="predicting", disable=not sys.stdout.isatty()):
        images, paths = [], []
        for path in batch:
            try:
                images.append(prep.load(path, cfg.max_image_pixels))
                paths.append(path)
            except UnreadableImage as error:
                skipped.append({"path": path, "reason": str(error)})
        if images:
            probabilities = model.logits(torch.stack(images)).softmax(dim=1)
            top_k = min(cfg.top_k, probabilities.shape[1])
            values, indices = probabilities.topk(top_k, dim=1)
            for path, probs, classes in zip(paths, values.tolist(), indices.tolist(), strict=True):
                row: dict[str, Any] = {"path": path}
                for rank, (prob, index) in enumerate(zip(probs, classes, strict=True), start=1):
                    row[f"label_{rank}"] = prep.label(index)
                    row[f"prob_{rank}"] = round(prob, 6)
                rows.append(row)
    if not rows:
        first = skipped[0]
        raise ConfigError(
            f"input={cfg.input!r}: none of its {len(files)} file(s) is an image that can be read "
            f"(e.g. {first['path']}: {first['reason']}): {INPUT_EXAMPLE}"
        )
    out = Path(cfg.paths.output_dir)
    if skipped:
        write_csv(out / "skipped.csv", skipped)
        listing = "\n  ".join(f"{s['path']}: {s['reason']}" for s in skipped)
        print(f"Skipped {len(skipped)} file(s), listed in {out / 'skipped.csv'}:\n  {listing}")
    write_csv(out / "predictions.csv", rows)
    print(f"Wrote {len(rows)} prediction(s) to {out / 'predictions.csv'}")
    return rows
