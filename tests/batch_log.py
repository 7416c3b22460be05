"""A test-only Lightning callback that writes down every training batch its process trained on,
so tests can check what each DDP rank saw (Lightning's loggers write on rank 0 only) and what
a debug preset feeds the model.

From the command line (the repository root on ``PYTHONPATH``):
``+callbacks.batch_log._target_=tests.batch_log.BatchLog +callbacks.batch_log.out_dir=<dir>``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import lightning as L


class BatchLog(L.Callback):
    """Writes ``<out_dir>/rank<global rank>.json`` as training ends: one row per training batch
    with its epoch, index, loss (the training step's, as the optimizer sees it), number of
    images, and a digest of its images and labels as the model got them (augmented)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.rows: list[dict[str, Any]] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        images, labels = batch[:2]
        digest = hashlib.sha1(images.detach().cpu().numpy().tobytes())
        digest.update(labels.cpu().numpy().tobytes())
        self.rows.append({"epoch": trainer.current_epoch, "batch": batch_idx,
                          "loss": float(outputs["loss"]), "images": len(labels),
                          "digest": digest.hexdigest()})  # fmt: skip

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.rows))


def read_batch_logs(out_dir: Path) -> dict[int, list[dict[str, Any]]]:
    """Each rank's rows, by global rank."""
    return {int(path.stem[4:]): json.loads(path.read_text()) for path in out_dir.glob("rank*.json")}
