"""A preempted SLURM job, requeued by submitit, resumes from its own ``last.ckpt`` in its own
folder: submitit's local executor (``hydra/launcher=slurm_local``) takes the same path as SLURM's,
and a job is preempted the way submitit's own tests do it, with SIGUSR2 to its process."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import lightning as L
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
TINY = ["debug=limit", "model.alpha=0.25", "trainer.max_epochs=4", "sweep_report=false",
        "trainer.enable_progress_bar=false", "~callbacks.model_summary"]  # fmt: skip


class PreemptOnce(L.Callback):
    """Writes each training epoch it sees start to ``record``, and sends SIGUSR2 to this process
    as epoch ``epoch`` starts (the checkpoints of the epoch before are written), once."""

    def __init__(self, epoch: int, record: str) -> None:
        self.epoch = epoch
        self.record = Path(record)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seen = self.record.read_text() if self.record.exists() else ""
        line = f"{trainer.current_epoch}\n"
        if trainer.current_epoch == self.epoch and "preempted" not in seen:
            line += "preempted\n"
        self.record.write_text(seen + line)
        if line.endswith("preempted\n"):
            os.kill(os.getpid(), signal.SIGUSR2)  # submitit's preemption signal


def test_a_preempted_job_resumes_from_its_own_last_checkpoint(run_main, tmp_path: Path) -> None:
    record = tmp_path / "epochs_started"
    preempt = ["+callbacks.preempt._target_=tests.test_slurm_requeue.PreemptOnce",
               "+callbacks.preempt.epoch=2", f"+callbacks.preempt.record={record}"]  # fmt: skip
    result = run_main("src/train.py", "-m", "hydra/launcher=slurm_local", *TINY, *preempt,
                      f"paths.log_dir={tmp_path}", env={"PYTHONPATH": str(ROOT)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (job_dir,) = (tmp_path / "train" / "multiruns").glob("*/0")
    (job_log,) = job_dir.parent.glob(".submitit/*/*_0_log.err")
    log = job_log.read_text()
    assert "this job is preempted" in log
    # the requeued job started at epoch 2, from the job's own last.ckpt: 0 and 1 not trained again
    assert record.read_text().split() == ["0", "1", "2", "preempted", "2", "3"]
    last = job_dir / "checkpoints" / "last.ckpt"
    assert f"Restored all states from the checkpoint at {last}" in log

    metrics = json.loads((job_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["epochs"] == 4
    assert metrics["segments"] == 2  # the requeued job continued the first one's checkpoint
    assert metrics["resumed_from"] == str(last)  # and the setting is the job's own (the report
    assert not any(o.startswith("ckpt_path") for o in metrics["overrides"])  # groups it so)
    with open(job_dir / "csv" / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    # the rows of epochs 0 and 1, logged before the preemption, kept; each epoch once
    assert [int(row["epoch"]) for row in rows if row.get("val/acc")] == [0, 1, 2, 3]
    assert len([row for row in rows if row.get("lr-SGD/pg1")]) == 4
    # the first part's Hydra files stay; the requeued part's go beside them
    assert "ckpt_path" not in (job_dir / ".hydra" / "overrides.yaml").read_text()
    (resumed,) = job_dir.glob(".hydra/resumed_*/overrides.yaml")
    assert "ckpt_path" in resumed.read_text()
