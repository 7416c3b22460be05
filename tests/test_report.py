"""The accuracy-cost report, runs that fail loudly, and the Optuna sweep."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from mobilenet_lab.summary import pareto_optimal, read_runs, report_rows, write_report
from tests.conftest import ROOT, run_cli

TINY = ["model.alpha=0.25", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
        "trainer.enable_progress_bar=false", "~callbacks.model_summary"]  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_pareto_marks_the_runs_no_other_run_beats() -> None:
    rows = [
        {"status": "ok", "mult_adds": 10, "test/acc": 0.90},  # cheapest: optimal
        {"status": "ok", "mult_adds": 20, "test/acc": 0.85},  # beaten by the first
        {"status": "ok", "mult_adds": 20, "test/acc": 0.95},  # optimal
        {"status": "ok", "mult_adds": 40, "test/acc": 0.95},  # as accurate, dearer: beaten
        {"status": "ok", "mult_adds": 80, "test/acc": 0.97},  # most accurate: optimal
        {"status": "diverged", "mult_adds": 5, "test/acc": 0.99},  # failed: never optimal
        {"status": "ok", "mult_adds": 80, "test/acc": 0.97},  # a tie: neither beats the other
    ]
    assert pareto_optimal(rows, "mult_adds") == [True, False, True, False, True, False, True]


def _fake_run(run_dir: Path, cfg: DictConfig, metrics: dict | str | None) -> Path:
    """A run folder as src/train.py leaves it: Hydra's config.yaml and a metrics.json."""
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    if metrics is not None:
        text = metrics if isinstance(metrics, str) else json.dumps(metrics)
        (run_dir / "metrics.json").write_text(text)
    return run_dir


def _metrics(alpha: float, size: int, mult_adds: int, acc: float, status: str = "ok") -> dict:
    return {"task": "train", "status": status, "model": "mobilenet_v1", "alpha": alpha,
            "image_size": size, "params": int(2e5 * alpha), "mult_adds": mult_adds,
            "val": {"val/acc_best": acc}, "test": {"test/acc": acc}, "wall_time_s": 1.0,
            "overrides": [f"model.alpha={alpha}", f"data.image_size={size}"]}  # fmt: skip


def test_report_reads_a_mixed_folder_measures_latency_once_and_caches_it(
    tmp_path: Path, make_cfg: Callable[..., DictConfig]
) -> None:
    sweep = tmp_path / "sweep"
    grid = [(0.25, 32, 800_000, 0.9), (0.5, 32, 3_000_000, 0.95), (0.25, 40, 1_250_000, 0.85)]
    for job, (alpha, size, macs, acc) in enumerate(grid):
        cfg = make_cfg("train", [f"model.alpha={alpha}", f"data.image_size={size}"])
        _fake_run(sweep / str(job), cfg, _metrics(alpha, size, macs, acc))
    failed = {"task": "train", "status": "failed", "error": "RuntimeError: no network",
              "model": "mobilenet_v1", "alpha": 1.0, "image_size": 32}  # fmt: skip
    _fake_run(sweep / "3", make_cfg("train"), failed)
    _fake_run(sweep / "4", make_cfg("train"), None)  # killed: Hydra's folder, no metrics.json

    rows = write_report(sweep, read_runs([sweep]), "test report")
    assert [r["job"] for r in rows] == ["0", "2", "1", "3", "4"]  # by mult-adds, failed last
    assert [r["pareto"] for r in rows] == ["yes", "", "yes", "", ""]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed", "incomplete"]
    assert all(r["latency_ms_batch_1"] > 0 for r in rows[:3])
    assert "latency_ms_batch_1" not in rows[3]
    assert (sweep / "tradeoff.png").read_bytes()[:8] == PNG_SIGNATURE
    markdown = (sweep / "report.md").read_text()
    assert "| 0 | mobilenet_v1 | 0.25 | 32 |" in markdown
    assert "failed: RuntimeError: no network" in markdown
    with open(sweep / "report.csv") as file:
        assert [r["status"] for r in csv.DictReader(file)] == [r["status"] for r in rows]

    cached = json.loads((sweep / "0" / "latency.json").read_text())
    cached["result"]["latency_ms_batch_1"] = 1234.5  # a second report reads the cache
    (sweep / "0" / "latency.json").write_text(json.dumps(cached))
    again = write_report(sweep, read_runs([sweep]), "test report")
    assert again[0]["latency_ms_batch_1"] == 1234.5


def test_report_refuses_another_tools_metrics(tmp_path: Path) -> None:
    rows = [{"job": "0", "run_dir": str(tmp_path), "status": "ok", "latency_ms_batch_1": 1.0}]
    with pytest.raises(ValueError, match=r"was not written by src/train\.py"):
        report_rows(rows)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does-not-exist is not a folder"),
        ('{"task": "train", "model": "mobilenet', "is not readable JSON (truncated?)"),
        ('{"model": "mobilenet_v1", "latency_ms_batch_1": 3}', "was not written by src/train.py"),
        ("[1, 2]", "holds a JSON list, not a run's metrics"),
        ("", "no runs under"),
    ],
)
def test_report_script_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, content: str | None, message: str
) -> None:
    folder = tmp_path / "does-not-exist"
    if content is not None:
        folder = tmp_path / "runs"
        folder.mkdir()
        if content:
            (folder / "0").mkdir()
            (folder / "0" / "metrics.json").write_text(content)
    result = run_cli("scripts/report.py", str(folder))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr
    assert not list(tmp_path.rglob("report*")) and not list(tmp_path.rglob("*.png"))


@pytest.mark.slow
def test_diverged_and_failed_jobs_are_recorded_and_the_others_run(tmp_path: Path) -> None:
    """lr 1e6 diverges; early stopping on a metric that is never logged fails at run time (a
    RuntimeError in a Lightning hook); the sweep runs every job and ends with the report, a
    short message naming the failed jobs, and exit status 1."""
    stop = "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping"
    result = run_cli("src/train.py", "-m", "optimizer.lr=0.05,1e6", stop,
                     "+callbacks.stop.monitor=val/acc,val/never_logged", *TINY,
                     f"paths.log_dir={tmp_path}", timeout=900)  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").glob("*")
    metrics = {job: json.loads((sweep / job / "metrics.json").read_text()) for job in "0123"}
    assert {job: m["status"] for job, m in metrics.items()} == {
        "0": "ok", "1": "failed", "2": "diverged", "3": "diverged"
    }  # fmt: skip
    assert metrics["1"]["error"].startswith("RuntimeError: Early stopping conditioned on metric")
    diverged = metrics["2"]["error"]
    assert diverged.startswith("loss nan at step") and "(epoch 0), lr 1e+06" in diverged
    assert "Traceback" not in result.stderr
    assert f"3 of 4 jobs failed (report: {sweep})" in result.stderr
    assert f"diverged   {sweep / '2'}  loss nan at step" in result.stderr
    report = (sweep / "report.md").read_text()
    assert "| test acc |" in report and report.count("| ok |") == 1
    assert f"`{sweep / '1'}`: failed: RuntimeError: Early stopping" in report
    assert (sweep / "tradeoff.png").read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.slow
def test_optuna_study_killed_midway_resumes_without_repeating_trials(tmp_path: Path) -> None:
    """4 tiny trials; the sweep is killed as its third trial starts, and the same command run
    again finishes the study: 4 trials, each finished once, with 4 different parameter sets."""
    command = [sys.executable, "src/train.py", "hparams_search=optuna", *TINY[1:],
               "hydra.sweeper.n_trials=4", "hydra.sweeper.study_name=kill_test",
               f"paths.log_dir={tmp_path}"]  # fmt: skip
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    study_dir = tmp_path / "train" / "optuna" / "kill_test"
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True) as sweep:  # fmt: skip
        deadline = time.time() + 400
        while not list(study_dir.glob("*/2")) and sweep.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        os.killpg(sweep.pid, signal.SIGKILL)
    assert len(list(study_dir.glob("*/*/metrics.json"))) == 2

    result = run_cli(*command[1:], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "has 2 finished trial(s): running 2 more" in result.stdout
    with sqlite3.connect(tmp_path / "optuna.db") as db:
        trials = db.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
        params = db.execute("SELECT trial_id, param_name, param_value FROM trial_params").fetchall()
    assert trials == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE"), (3, "COMPLETE")]
    by_trial: dict[int, tuple] = {}
    for trial_id, name, value in sorted(params):
        by_trial[trial_id] = (*by_trial.get(trial_id, ()), (name, value))
    assert len(by_trial) == 4 and len(set(by_trial.values())) == 4
    report = (study_dir / "report.md").read_text()
    assert report.count("| ok |") == 4 and "## Optuna's best trial" in report
