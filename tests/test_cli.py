"""The README's commands, run as a user runs them, with tiny limits; and bad input at the CLI."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, run_cli, started
from tests.kill_switch import kill_env

pytestmark = pytest.mark.slow
TINY = ["debug=limit", "trainer.enable_progress_bar=false", "~callbacks.model_summary"]


def runs(log_dir: Path, task: str = "train") -> list[Path]:
    return sorted((log_dir / task / "runs").glob("*"))


def test_train_then_eval(run_main, tmp_path: Path) -> None:
    result = run_main("src/train.py", "model=mobilenet_v1", "model.alpha=0.75", *TINY,
                     f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "CONFIG" in result.stdout and "test/acc" in result.stdout
    (run_dir,) = runs(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["alpha"] == 0.75 and metrics["overrides"][:2] == [
        "model=mobilenet_v1",
        "model.alpha=0.75",
    ]
    assert (run_dir / ".hydra" / "config.yaml").is_file()

    ckpt = run_dir / "checkpoints" / "best.ckpt"
    result = run_main("src/eval.py", f"ckpt_path={ckpt}", "trainer.limit_test_batches=2",
                      "trainer.enable_progress_bar=false", f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (eval_dir,) = runs(tmp_path, "eval")
    scored = json.loads((eval_dir / "metrics.json").read_text())
    assert scored["alpha"] == 0.75 and scored["test"] == pytest.approx(metrics["test"], abs=1e-6)


@pytest.mark.parametrize("family", ["mobilenet_v2", "mobilenet_v3_large"])
def test_timm_family_trains(run_main, tmp_path: Path, family: str) -> None:
    result = run_main("src/train.py", f"model={family}", "model.alpha=0.75", *TINY,
                     f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = runs(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["model"], metrics["alpha"]) == (family, 0.75)


def test_multirun_grid_keeps_one_folder_per_job_and_a_summary(run_main, tmp_path: Path) -> None:
    result = run_main("src/train.py", "-m", "model.alpha=0.25,0.5", "data.image_size=32,64", *TINY,
                     "trainer.max_epochs=1", f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "train" / "multiruns").glob("*")
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name != ".hydra")
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    grid = {(m["alpha"], m["image_size"]) for m in
            (json.loads((job / "metrics.json").read_text()) for job in jobs)}  # fmt: skip
    assert grid == {(0.25, 32), (0.25, 64), (0.5, 32), (0.5, 64)}
    with open(sweep_dir / "summary.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["job"] for row in rows] == ["0", "1", "2", "3"]
    job_acc = [json.loads((job / "metrics.json").read_text())["test"]["test/acc"] for job in jobs]
    assert [float(row["test/acc"]) for row in rows] == pytest.approx(job_acc)
    assert "multirun summary" in result.stdout
    with open(sweep_dir / "report.csv") as file:  # the accuracy-cost report, by mult-adds
        report = list(csv.DictReader(file))
    assert [int(row["mult_adds"]) for row in report] == sorted(int(r["mult_adds"]) for r in rows)
    assert report[0]["pareto"] == "yes" and all(float(r["latency_ms_batch_1"]) > 0 for r in report)
    assert "| pareto |" in (sweep_dir / "report.md").read_text()
    assert (sweep_dir / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


BAD_INPUT = [
    (["model.alpha=0"], "model.alpha=0 is not a valid width multiplier"),
    (["model.alpha=-1"], "model.alpha=-1 is not a valid width multiplier"),
    (["model.alpha=abc"], "model.alpha='abc' is not a valid width multiplier"),
    (["model=mobilenet_v9"], "Could not find 'model/mobilenet_v9': use one of mobilenet_v1"),
    (["data.image_size=8"], "data.image_size=8 is too small"),
    (["model.act=gelu"], "model.act='gelu' is not valid"),
    (
        ["model=mobilenet_v2", "model.alpha=0.6"],
        "model.alpha=0.6 is not a width timm builds for mobilenet_v2: use one of [0.35, 0.5",
    ),
    (
        ["model=mobilenet_v3_small", "model.pretrained=true"],
        "model.pretrained=true: no cached weights for mobilenetv3_small_100",
    ),
    (["model.init_from=missing.safetensors"], "model.init_from='missing.safetensors' does not"),
    (["data=imagefolder"], "data.data_dir is not set"),
    (["ckpt_path=last"], "ckpt_path=last but there is no training run under"),
    (
        ["data=cifar10", "data.download=false", "data.data_dir=/nowhere"],
        "no cifar10 files in /nowhere/cifar-10-batches-py (data.download=false)",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUT)
def test_bad_train_input_fails_cleanly_and_creates_nothing(
    run_main, tmp_path: Path, overrides: list[str], message: str
) -> None:
    empty_cache = {"HF_HUB_CACHE": str(tmp_path.parent / "empty_hf_cache")}
    result = run_main("src/train.py", *overrides, f"paths.log_dir={tmp_path}", env=empty_cache)
    assert result.returncode == 2  # ours or Hydra's: exit status 2 and one line naming the value
    (line,) = result.stderr.strip().splitlines()
    assert message in line
    assert "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir()), "a run folder was created"


def test_bad_value_in_a_multirun_fails_before_any_job(tmp_path: Path) -> None:
    result = run_cli("src/train.py", "-m", "model.alpha=0.5,0", f"paths.log_dir={tmp_path}")
    assert result.returncode == 2 and "model.alpha=0 is not a valid" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_bad_checkpoints_fail_cleanly_and_create_nothing(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    logs = tmp_path / "logs"
    for ckpt, message in ((tmp_path / "missing.ckpt", "does not exist"),
                          (notes, "is not a PyTorch checkpoint")):  # fmt: skip
        result = run_cli("src/eval.py", f"ckpt_path={ckpt}", f"paths.log_dir={logs}")
        assert result.returncode == 2 and f"ckpt_path='{ckpt}' {message}" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr
        assert not logs.exists()


def test_two_runs_started_together_get_their_own_folders(tmp_path: Path) -> None:
    command = ["src/train.py", "debug=fast_dev_run", "trainer.enable_progress_bar=false",
               f"paths.log_dir={tmp_path / 'logs'}"]  # fmt: skip
    logs = [tmp_path / f"run_{i}.log" for i in range(2)]
    with started([command, command], logs) as procs:
        codes = [proc.wait(timeout=300) for proc in procs]
    assert codes == [0, 0], "".join(log.read_text()[-3000:] for log in logs)
    folders = runs(tmp_path / "logs")
    assert len(folders) == 2
    assert all((folder / "metrics.json").is_file() for folder in folders)


def test_ddp_on_two_cpu_processes_writes_one_run(tmp_path: Path) -> None:
    result = run_cli("src/train.py", "trainer=ddp_cpu", *TINY, "trainer.limit_test_batches=1.0",
                     f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr
    (run_dir,) = runs(tmp_path)  # the second rank joins the first rank's folder
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    # The two ranks' test halves add up to the whole test split, each image counted once.
    from mobilenet_lab.data.digits import DigitsDataModule
    from mobilenet_lab.deploy.loading import TorchModel
    from tests.conftest import test_split_accuracy

    best = TorchModel(str(run_dir / "checkpoints" / "best.ckpt"), "averaged", "cpu")
    data = DigitsDataModule(image_size=metrics["image_size"])
    assert metrics["test"]["test/acc"] == pytest.approx(test_split_accuracy(best.logits, data))


def test_default_command_trains_to_high_accuracy(run_main, tmp_path: Path) -> None:
    """``python src/train.py`` exactly as the README gives it (only the log folder moved).

    scripts/benchmark_train.py measures the targets over ten seeds (median >= 98%, none below
    97.5%); the worst of 20 runs (seeds 0-9 at 1 and at 2 threads) was 98.0% (441 of 450).
    The bar sits 4 images under it (97.1%): room for other CPUs' floating-point differences,
    none for a regression of a point."""
    result = run_main("src/train.py", "trainer.enable_progress_bar=false",
                      f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = runs(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert round(metrics["test"]["test/acc"] * 450) >= 437  # images right of 450
    assert metrics["epochs"] == 14 and metrics["model"] == "mobilenet_v1"
    assert (metrics["alpha"], metrics["image_size"]) == (0.75, 40)  # conf/data_model/


# The default run as a user runs it (validated once, at its end), shortened to 4 epochs of 3
# batches, on a 0.25-wide network at 32 px.
RESUMABLE = ["trainer.max_epochs=4", "trainer.limit_train_batches=3", "trainer.deterministic=true",
             "model.alpha=0.25", "data.image_size=32",
             "trainer.enable_progress_bar=false"]  # fmt: skip


KILL = "+callbacks.kill._target_=tests.kill_switch.KillSwitch"  # fires where kill_env says


def kill_at(epoch: int) -> dict[str, str]:
    """The environment for tests/kill_switch.py: SIGKILL as training epoch ``epoch`` starts."""
    return {"PYTHONPATH": str(ROOT), **kill_env(epoch)}


def saved_epoch(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=False, map_location="cpu")["epoch"]


def test_killed_run_resumed_twice_matches_an_uninterrupted_one(run_main, tmp_path: Path) -> None:
    """The default run (validated only at its end), kill -9 as epoch 2 starts, resumed with
    ckpt_path=last; kill -9 as epoch 3 starts, resumed with ckpt_path=<its last.ckpt>: the same
    metrics as a run never interrupted. last.ckpt is there after every epoch, validated or
    not (EMA and the other combinations: tests/test_combinations.py)."""
    straight = run_main("src/train.py", *RESUMABLE, f"paths.log_dir={tmp_path / 'a'}")
    assert straight.returncode == 0, straight.stderr[-3000:]
    (expected_dir,) = runs(tmp_path / "a")
    expected = json.loads((expected_dir / "metrics.json").read_text())

    logs = tmp_path / "b"
    killed = run_cli("src/train.py", *RESUMABLE, KILL, f"paths.log_dir={logs}", env=kill_at(2))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (run_dir,) = runs(logs)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert not (run_dir / "metrics.json").exists()
    assert saved_epoch(last) == 1  # last.ckpt holds the last finished epoch, not validated
    assert not (run_dir / "checkpoints" / "best.ckpt").exists()  # no validation yet

    killed = run_cli("src/train.py", f"paths.log_dir={logs}", "ckpt_path=last", env=kill_at(3))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert saved_epoch(last) == 2  # the resumed part trained epoch 2

    resumed = run_main("src/train.py", f"paths.log_dir={logs}", f"ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert runs(logs) == [run_dir]  # both resumptions continued in the run's own folder
    assert len(list((run_dir / ".hydra").glob("resumed_*/overrides.yaml"))) == 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == expected["epochs"] == 4 and metrics["segments"] == 3
    assert metrics["test"] == expected["test"]
    assert metrics["val"] == expected["val"]
