"""A resumed run keeps its whole history (CSV rows, TensorBoard folder, the MLflow run), and no
new run writes into a folder that holds another run."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.kill_switch import kill_env

pytestmark = pytest.mark.slow
# Validated every epoch, so that each epoch leaves a row of val metrics to count.
TINY = ["model.alpha=0.25", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "trainer.check_val_every_n_epoch=1",
        "trainer.enable_progress_bar=false", "~callbacks.model_summary"]  # fmt: skip


def the_run(log_dir: Path, task: str = "train") -> Path:
    (run_dir,) = sorted((log_dir / task / "runs").glob("*"))
    return run_dir


def val_epochs(run_dir: Path) -> list[int]:
    """The epoch of every row of ``metrics.csv`` that holds validation metrics, in file order."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        return [int(row["epoch"]) for row in csv.DictReader(file) if row.get("val/acc")]


def test_resume_continues_csv_tensorboard_and_the_mlflow_run(run_main, tmp_path: Path) -> None:
    logged = [*TINY, f"paths.log_dir={tmp_path}", "logger=[csv,tensorboard,mlflow]"]
    first = run_main("src/train.py", *logged, "trainer.max_epochs=2")
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = the_run(tmp_path)
    assert val_epochs(run_dir) == [0, 1]

    resumed = run_main("src/train.py", *logged, "trainer.max_epochs=4", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert the_run(tmp_path) == run_dir
    assert "will be deleted" not in resumed.stderr + resumed.stdout
    assert val_epochs(run_dir) == [0, 1, 2, 3]  # the first run's rows kept, each epoch once
    assert [p.name for p in run_dir.iterdir() if p.name.startswith("tensorboard")] == [
        "tensorboard"
    ]
    # MLflow's file store: <store>/<experiment id>/<run id>/metrics/<key>, one line per value
    run_folders = [p.parent for p in (tmp_path / "mlflow").glob("*/*/meta.yaml")]
    assert len(run_folders) == 1, run_folders  # one run id before and after the resume
    history = (run_folders[0] / "metrics" / "val" / "acc").read_text().splitlines()
    assert len(history) == 4


def test_kill_in_epoch_3_then_resume_logs_each_epoch_once(run_main, tmp_path: Path) -> None:
    args = [*TINY, f"paths.log_dir={tmp_path}", "trainer.max_epochs=4"]
    env = {"PYTHONPATH": str(ROOT), **kill_env(3, batch=1)}
    killed = run_cli("src/train.py", *args, "+callbacks.kill._target_=tests.kill_switch.KillSwitch",
                     env=env)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL, in the middle of epoch 3
    run_dir = the_run(tmp_path)
    assert not (run_dir / "metrics.json").exists()

    resumed = run_main("src/train.py", *args, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert val_epochs(run_dir) == [0, 1, 2, 3]
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        lr_rows = [row["step"] for row in csv.DictReader(file) if row.get("lr-SGD/pg1")]
    assert len(lr_rows) == len(set(lr_rows)) == 4  # epoch 3's start logged once, not twice
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 4


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_a_run_into_an_occupied_folder_is_refused_and_changes_nothing(
    run_main, tmp_path: Path
) -> None:
    run_dir = tmp_path / "my_run"
    first = run_main("src/train.py", *TINY, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}")
    assert first.returncode == 0, first.stderr[-3000:]
    before = folder_digest(run_dir)
    assert "csv/metrics.csv" in before and "checkpoints/last.ckpt" in before

    best = run_dir / "checkpoints" / "best.ckpt"
    for command in [["src/train.py", *TINY, "trainer.max_epochs=1"],
                    ["src/eval.py", f"ckpt_path={best}"]]:  # fmt: skip
        second = run_main(*command, f"hydra.run.dir={run_dir}")
        assert second.returncode == 2, second.stderr[-3000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "already holds a run" in lines[0] and str(run_dir) in lines[0]
        assert folder_digest(run_dir) == before


def test_task_name_is_a_free_label_for_train_and_eval(run_main, tmp_path: Path) -> None:
    label = ["task_name=cifar_ablation", f"paths.log_dir={tmp_path}"]
    trained = run_main("src/train.py", *TINY, "trainer.max_epochs=1", *label)
    assert trained.returncode == 0, trained.stderr[-3000:]
    (run_dir,) = sorted((tmp_path / "cifar_ablation" / "runs").glob("*"))
    best = run_dir / "checkpoints" / "best.ckpt"
    evaluated = run_main("src/eval.py", f"ckpt_path={best}", *label)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    folders = sorted((tmp_path / "cifar_ablation" / "runs").glob("*/metrics.json"))
    assert len(folders) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar_ablation"]

    bad = run_main("src/train.py", "task_name=a/b", f"paths.log_dir={tmp_path}")
    assert bad.returncode == 2 and "task_name='a/b' is not a folder name" in bad.stderr


def test_cifar_download_failure_offline_is_one_line(run_main, tmp_path: Path) -> None:
    # No network here, and a proxy that does not exist makes sure of it anywhere.
    offline = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    result = run_main("src/train.py", "data=cifar10", "data.download=true",
                     f"data.data_dir={tmp_path / 'cifar'}", f"paths.log_dir={tmp_path}",
                     env=offline)  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "cifar-10-python.tar.gz" in line and "https://www.cs.toronto.edu/" in line
    assert "failed" in line and str(tmp_path / "cifar") in line


class CreatesAFile:
    """Unpickling this calls ``open(path, "w")``: the file appears if the pickle is loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize(
    ("script", "key"),
    [
        ("src/train.py", "ckpt_path"),
        ("src/eval.py", "ckpt_path"),
        ("src/train.py", "model.init_from"),
    ],
)
def test_a_pickle_that_runs_code_is_refused_in_one_line(
    run_main, tmp_path: Path, script: str, key: str
) -> None:
    import torch

    marker = tmp_path / "created_by_the_pickle"
    evil = tmp_path / "evil.ckpt"
    torch.save({"mobilenet_lab_run": {}, "state_dict": {}, "payload": CreatesAFile(marker)}, evil)
    result = run_main(script, f"{key}={evil}", f"paths.log_dir={tmp_path / 'logs'}")
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds Python objects" in lines[0] and "refused" in lines[0]
    assert "weights_only" not in result.stderr
    assert not marker.exists()
    assert not (tmp_path / "logs").exists()


# Issue 27: a resume continues the recorded run. Non-default data, optimizer, EMA and a teacher.
RECORDED = ["debug=limit", "model.alpha=0.25", "data.image_size=36", "optimizer.lr=0.03",
            "callbacks=ema", "trainer.limit_train_batches=4", "trainer.max_epochs=4",
            "trainer.deterministic=true", "trainer.enable_progress_bar=false",
            "~callbacks.model_summary"]  # fmt: skip


def record_of(run_dir: Path):
    from mobilenet_lab.runs.checkpoint import load_checkpoint
    from mobilenet_lab.runs.record import RunRecord

    return RunRecord.of(load_checkpoint(str(run_dir / "checkpoints" / "last.ckpt")))


def lr_by_epoch(run_dir: Path) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        return [float(row["lr-SGD/pg1"]) for row in csv.DictReader(file) if row.get("lr-SGD/pg1")]


def test_ckpt_path_last_alone_continues_the_recorded_run(
    run_main, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, digits_teacher: Path
) -> None:
    """Crashed as epoch 2 starts, resumed with ``ckpt_path=last`` alone: the run's own data,
    optimizer, EMA and teacher come back from its checkpoint, and it ends with the config and
    the metrics of the same run uninterrupted. Then: a changed setting is refused in one line
    (no folder, the run untouched); with resume.allow_changes=true it is taken and recorded;
    the longer horizon's learning rate goes on down, never back up."""
    from mobilenet_lab.analysis.runs_table import read_runs, report_rows
    from mobilenet_lab.training.callbacks import RunClock

    settings = [*RECORDED, f"module.distill.teacher={digits_teacher}"]
    straight = run_main("src/train.py", *settings, f"paths.log_dir={tmp_path / 'a'}")
    assert straight.returncode == 0, straight.stderr[-3000:]

    def crash(self, trainer, module) -> None:  # a kill, outside the run's config
        if trainer.current_epoch == 2 and trainer.ckpt_path is None:
            raise RuntimeError("crashed on purpose")

    logs = tmp_path / "b"
    with monkeypatch.context() as patch:
        patch.setattr(RunClock, "on_train_epoch_start", crash, raising=False)
        crashed = run_main("src/train.py", *settings, f"paths.log_dir={logs}")
    assert crashed.returncode == 1 and "crashed on purpose" in crashed.stderr
    resumed = run_main("src/train.py", "ckpt_path=last", f"paths.log_dir={logs}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "with the run's recorded config" in resumed.stdout

    run_a, run_b = the_run(tmp_path / "a"), the_run(logs)
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (run_a, run_b)]
    assert metrics[1]["test"] == metrics[0]["test"] and metrics[1]["val"] == metrics[0]["val"]
    assert metrics[1]["segments"] == 2 and metrics[1]["changed_on_resume"] == []
    assert "ckpt_path=last" not in metrics[1]["overrides"]
    records = [record_of(run) for run in (run_a, run_b)]
    for group in ("model", "data", "module", "optimizer", "scheduler", "seed"):
        assert records[1].config[group] == records[0].config[group], group
    assert records[1].config["module"]["distill"]["teacher"] == str(digits_teacher)
    assert set(records[1].config["callbacks"]) == set(records[0].config["callbacks"])
    assert records[1].config["trainer"]["max_epochs"] == 4
    (row_a,), (row_b,) = read_runs([run_a]), read_runs([run_b])
    varied = [row["varied"] for row in report_rows([row_a, row_b])]
    assert varied[0] == varied[1]  # one setting: the resumed run is one of its seeds

    last = run_b / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    command = ["src/train.py", "ckpt_path=last", f"paths.log_dir={logs}", "trainer.max_epochs=6"]
    refused = run_main(*command, "optimizer.lr=0.05", "callbacks=default")
    assert refused.returncode == 2, refused.stderr[-3000:]
    (line,) = refused.stderr.strip().splitlines()
    assert "optimizer.lr=0.03 recorded, 0.05 now" in line and "callbacks.ema=" in line
    assert "resume.allow_changes=true" in line and "max_epochs" not in line
    assert last.read_bytes() == before and the_run(logs) == run_b

    changed = run_main(*command, "optimizer.lr=0.05", "resume.allow_changes=true")
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert "Learning-rate schedule resumed at step 16 over 24 steps" in changed.stdout
    final = json.loads((run_b / "metrics.json").read_text())
    assert final["changed_on_resume"] == [
        "optimizer.lr: 0.03 -> 0.05",
        "trainer.max_epochs: 4 -> 6",
    ]
    assert (
        "optimizer.lr=0.05" in final["overrides"] and "trainer.max_epochs=6" in final["overrides"]
    )
    assert final["epochs"] == 6 and final["lr"] == 0.05
    # at each epoch's start: warm-up, down the 4-epoch cosine, then down the 6-epoch one from
    # its step 16 (a function of the step and the new horizon), never back to the peak
    lrs = lr_by_epoch(run_b)
    assert len(lrs) == 6 and lrs[1] > lrs[2] > lrs[3] and lrs[4] > lrs[5] and max(lrs[4:]) < 0.025
