"""Features that hold together: the pairs users meet (issue 18), each a few seconds.

In-process (Hydra's compose API, as the entry points compose) where the command line itself is
not what is tested: resume x {EMA, Keras init, timm init}; predict / export / eval x {Keras
init, timm init, EMA}; the report over a resumed run. The sweeps with failing jobs under DDP and
Optuna, and a QAT fine-tune of a distilled run under DDP, run as a user runs them, from the
command line.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mobilenet_lab.deploy.loading import TorchModel, eval_batches, load_network
from mobilenet_lab.deploy.onnx import OnnxModel
from mobilenet_lab.models import build_mobilenet_v1
from mobilenet_lab.runs.checkpoint import load_checkpoint
from mobilenet_lab.runs.files import RUN_CONFIG_KEY
from mobilenet_lab.train import train
from mobilenet_lab.training.module import ImageClassifier
from tests.conftest import compose_cfg, run_cli, test_split_accuracy
from tests.kill_switch import CRASH_AT, kill_env

TINY = ["debug=limit", "model.alpha=0.25", "data.image_size=32", "trainer.deterministic=true",
        "trainer.enable_progress_bar=false", "~callbacks.model_summary"]  # fmt: skip
FAST_EXPORT = ["speed.repeats=1", "speed.warmup=0", "speed.batch_size=2", "check_images=8"]


def folder_data(image_tree: Path) -> list[str]:
    return ["data=imagefolder", f"data.data_dir={image_tree}", "data.image_size=32",
            "data.num_workers=0", "data.batch_size=4"]  # fmt: skip


@pytest.fixture
def keras_file(tmp_path: Path) -> Iterator[Path]:
    """Keras's MobileNet (alpha 0.25, random weights and statistics) in Keras 2's .h5 layout."""
    from tests.test_keras_port import randomised_keras_mobilenet, write_keras2_h5

    yield write_keras2_h5(randomised_keras_mobilenet(0.25), tmp_path / "keras_0_25.h5")


@pytest.fixture
def timm_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hugging Face cache holding (random) timm mobilenetv1_100 weights, the only one read."""
    import huggingface_hub.constants

    from tests.test_timm_models import fake_hf_cache

    cache = tmp_path / "hf_cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    fake_hf_cache(cache, "mobilenetv1_100")
    return cache


def initialised(kind: str, request: pytest.FixtureRequest, image_tree: Path) -> tuple[list, Path]:
    """The overrides of a run started from ported weights, and the file they come from."""
    if kind == "keras":
        source = request.getfixturevalue("keras_file")
        return [*folder_data(image_tree), f"model.init_from=keras:{source}"], source
    source = request.getfixturevalue("timm_cache")
    overrides = [
        *folder_data(image_tree),
        "model.init_from=timm:mobilenetv1_100",
        "model.act=relu6",
    ]
    return [*overrides, "model.alpha=1.0"], source


def as_built_by_init_from(checkpoint: dict, weights: str = "state_dict") -> torch.nn.Module:
    """The reference: the network ``init_from`` builds (while its file is still there), with
    the checkpoint's weights; independent of how the kit rebuilds a checkpoint."""
    model = checkpoint[RUN_CONFIG_KEY]["config"]["model"]
    settings = {k: v for k, v in model.items() if k not in ("_target_", "act", "padding", "bn_eps")}
    if "keras" not in str(model["init_from"]):
        settings["act"] = model["act"]
    module = ImageClassifier(build_mobilenet_v1(**settings), num_classes=model["num_classes"])
    module.load_state_dict(checkpoint[weights])
    return module.net.eval()


def test_ddp_with_sync_batchnorm_on_a_cpu_is_refused_at_start_up(run_main, tmp_path: Path) -> None:
    """Item 9: trainer=ddp trainer.accelerator=cpu failed at the first step inside torch."""
    result = run_main("src/train.py", "trainer=ddp", "trainer.accelerator=cpu",
                     f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert "trainer.plugins.sync_batchnorm" in line and "trainer=ddp_cpu" in line
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["keras", "timm"])
def test_a_ported_start_rebuilds_from_the_checkpoint_alone(
    kind: str, request: pytest.FixtureRequest, image_tree: Path, tmp_path: Path
) -> None:
    """Item 3: train from Keras's / timm's weights, move the weights away; predict, export,
    eval, resume and a QAT fine-tune use the network as trained (Keras: relu6, tf_same, eps
    1e-3)."""
    from mobilenet_lab.evaluate import evaluate
    from mobilenet_lab.export import export

    overrides, source = initialised(kind, request, image_tree)
    run_dir = tmp_path / "run"
    train(compose_cfg("train", [*TINY, "trainer.max_epochs=1", *overrides], run_dir))
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(str(last))
    reference = as_built_by_init_from(checkpoint)
    shutil.move(source, tmp_path / "moved")  # the weights file or cache is gone now

    run_cfg = OmegaConf.create(checkpoint[RUN_CONFIG_KEY]["config"])
    data = instantiate(run_cfg.data)
    images, _ = next(eval_batches(data, "test", 8))
    with torch.no_grad():
        expected = reference(images)
        rebuilt = load_network(run_cfg, checkpoint, "averaged")(images)
    assert (rebuilt - expected).abs().max() < 1e-5
    predicted = TorchModel(str(last), "averaged", "cpu").logits(images)
    assert (predicted - expected).abs().max() < 1e-5

    onnx_path = tmp_path / "model.onnx"
    export(compose_cfg("export", [f"ckpt_path={last}", f"output_path={onnx_path}", *FAST_EXPORT],
                       tmp_path / "export"))  # fmt: skip
    assert (OnnxModel(str(onnx_path)).logits(images) - expected).abs().max() < 1e-4

    scored = evaluate(compose_cfg("eval", [f"ckpt_path={last}"], tmp_path / "eval"))
    assert scored["test"]["test/acc"] == pytest.approx(test_split_accuracy(reference, data))
    extended = [*TINY, *overrides, "trainer.max_epochs=2", f"ckpt_path={last}"]
    resumed = train(compose_cfg("train", extended, run_dir))
    assert resumed["epochs"] == 2 and resumed["segments"] == 2
    # QAT x init_from: the fine-tune starts from the network as trained, the source gone
    qat = ["qat=executorch", f"qat.from={last}", "debug=limit", "qat.export=false",
           "qat.freeze_bn_epoch=1", "qat.freeze_observers_epoch=1",
           "trainer.enable_progress_bar=false", "~callbacks.model_summary"]  # fmt: skip
    fine_tuned = train(compose_cfg("train", qat, tmp_path / "qat"))
    assert fine_tuned["qat_from"] == str(last) and fine_tuned["status"] == "ok"


def csv_val_acc(run_dir: Path) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        return [float(row["val/acc"]) for row in csv.DictReader(file) if row.get("val/acc")]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["callbacks=ema"], ["callbacks=ema", "distill"]],
                         ids=["plain", "ema", "ema_distilled"])  # fmt: skip
def test_resume_continues_best_metric_wall_time_and_the_report(
    extra: list[str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Item 4 (and resume x EMA, x distillation): 4 epochs, crashed as epoch 2 starts, resumed
    in the same folder: the same metrics as 4 straight epochs, ``val/acc_best`` over all 4, the
    wall time of both parts, and the report's row says so."""
    from mobilenet_lab.analysis.runs_table import read_runs

    if "distill" in extra:  # the teacher's logits in each step, the teacher outside the state
        teacher = request.getfixturevalue("digits_teacher")
        extra = [*extra[:-1], f"module.distill.teacher={teacher}"]
    settings = [*TINY, *extra, "trainer.limit_train_batches=4", "trainer.max_epochs=4"]
    straight = train(compose_cfg("train", settings, tmp_path / "a"))
    run_dir = tmp_path / "b"
    crash = ["+callbacks.crash._target_=tests.kill_switch.Crash"]
    with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="crashed on purpose"):
        patch.setenv(CRASH_AT, "2")
        train(compose_cfg("train", [*settings, *crash], run_dir))
    last = run_dir / "checkpoints" / "last.ckpt"
    assert load_checkpoint(str(last))["epoch"] == 1
    resumed = train(compose_cfg("train", [*settings, f"ckpt_path={last}"], run_dir))
    assert resumed["test"] == straight["test"] and resumed["val"] == straight["val"]
    history = csv_val_acc(run_dir)
    assert len(history) == 4 and resumed["val"]["val/acc_best"] == pytest.approx(max(history))
    assert resumed["segments"] == 2 and resumed["wall_time_s"] > time.time() - resumed[
        "started_at"]  # fmt: skip
    (row,) = read_runs([run_dir])
    assert row["val/acc_best"] == pytest.approx(max(history))
    assert row["wall_time_s"] == resumed["wall_time_s"]


def test_the_best_metric_travels_in_the_checkpoint() -> None:
    """A resumed run whose best epoch came before the kill keeps that best."""
    net = build_mobilenet_v1(alpha=0.25, num_classes=10, in_chans=1)
    saved = ImageClassifier(net, num_classes=10)
    saved.val_acc_best.update(torch.tensor(0.9))
    checkpoint: dict = {}
    saved.on_save_checkpoint(checkpoint)
    resumed = ImageClassifier(build_mobilenet_v1(alpha=0.25, num_classes=10, in_chans=1), 10)
    resumed.on_load_checkpoint(checkpoint)
    resumed.val_acc_best.update(torch.tensor(0.5))
    assert resumed.val_acc_best.compute().item() == pytest.approx(0.9)


def test_ema_checkpoint_predicts_and_exports_the_averaged_weights(tmp_path: Path) -> None:
    """predict / export x EMA: the averaged weights, unless ``weights=trained``."""
    from mobilenet_lab.export import export

    run_dir = tmp_path / "run"
    train(compose_cfg("train", [*TINY, "callbacks=ema", "trainer.max_epochs=1"], run_dir))
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(str(last))
    images = torch.rand(4, 1, 32, 32)
    run_cfg = OmegaConf.create(checkpoint[RUN_CONFIG_KEY]["config"])
    with torch.no_grad():
        averaged = load_network(run_cfg, checkpoint, "averaged")(images)
        trained = load_network(run_cfg, checkpoint, "trained")(images)
    assert (averaged - trained).abs().max() > 1e-3  # two different sets of weights
    assert torch.allclose(TorchModel(str(last), "averaged", "cpu").logits(images), averaged)
    onnx_path = tmp_path / "model.onnx"
    export(compose_cfg("export", [f"ckpt_path={last}", f"output_path={onnx_path}", *FAST_EXPORT],
                       tmp_path / "export"))  # fmt: skip
    assert (OnnxModel(str(onnx_path)).logits(images) - averaged).abs().max() < 1e-4


FAILING_SWEEPS = {
    "ddp_multirun": ["-m", "trainer=ddp_cpu", "optimizer.lr=1e6,0.05"],
    # lr drawn from {1e6, 0.05}: with the config's sampler seed, trial 0 gets one, trial 1 the other
    "optuna_ddp": ["hparams_search=optuna", "trainer=ddp_cpu", "hydra.sweeper.n_trials=2",
                   'hydra.sweeper.params={optimizer.lr:"choice(1e6,0.05)"}'],
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("sweep", sorted(FAILING_SWEEPS))
def test_a_failing_job_under_ddp_fails_alone(sweep: str, tmp_path: Path) -> None:
    """Items 5 and 6: one job diverges on its 2 DDP processes; the other job still runs (once,
    on both processes), the summary and report are written, and the sweep exits 1 naming it.
    (Plain multiruns and Optuna with a failing job: tests/test_report.py.)"""
    result = run_cli("src/train.py", *FAILING_SWEEPS[sweep], "debug=limit", "model.alpha=0.25",
                     "data.image_size=32", "trainer.max_epochs=1",
                     "trainer.enable_progress_bar=false", "~callbacks.model_summary",
                     f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "1 of 2 jobs failed" in result.stderr and "diverged" in result.stderr
    metrics = sorted(tmp_path.rglob("metrics.json"))
    statuses = sorted(json.loads(path.read_text())["status"] for path in metrics)
    assert statuses == ["diverged", "ok"]  # each job once: no job's children ran a sweep
    (report,) = tmp_path.rglob("report.md")
    assert "diverged" in report.read_text()
    assert not (tmp_path / "train" / "runs").exists()  # no child made a run folder of its own
    (ok_job,) = (p.parent for p in metrics if json.loads(p.read_text())["status"] == "ok")
    assert (ok_job / "train_ddp_process_1.log").is_file()  # rank 1 wrote into its job's folder
    assert json.loads((ok_job / "metrics.json").read_text())["global_batch_size"] == 2 * 64
    if sweep == "optuna_ddp":
        import optuna

        study = optuna.load_study(study_name="train_mobilenet_v1_digits",
                                  storage=f"sqlite:///{tmp_path}/optuna.db")  # fmt: skip
        states = sorted(trial.state.name for trial in study.trials)
        assert states == ["COMPLETE", "FAIL"]


@pytest.mark.slow
def test_a_killed_ddp_run_resumes_on_all_its_processes(
    tmp_path: Path, digits_teacher: Path
) -> None:
    """resume x DDP (x distillation): both processes SIGKILLed as epoch 1 starts;
    ``ckpt_path=last`` continues the run on 2 processes in its own folder, each epoch logged
    once, both segments timed, each process with its own unwrapped teacher."""
    from tests.conftest import ROOT

    args = ["trainer=ddp_cpu", "debug=limit", "model.alpha=0.25", "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false", "~callbacks.model_summary",
            f"module.distill.teacher={digits_teacher}", f"paths.log_dir={tmp_path}"]  # fmt: skip
    kill = "+callbacks.kill._target_=tests.kill_switch.KillSwitch"
    with_tests = {"PYTHONPATH": str(ROOT)}  # the run's record names tests.kill_switch
    killed = run_cli("src/train.py", *args, kill, env={**with_tests, **kill_env(1)})
    assert killed.returncode == -9, killed.stderr[-3000:]
    (run_dir,) = (tmp_path / "train" / "runs").glob("*")
    assert load_checkpoint(str(run_dir / "checkpoints" / "last.ckpt"))["epoch"] == 0

    resumed = run_cli("src/train.py", *args, "ckpt_path=last", env=with_tests)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Starting with 2 processes" in resumed.stdout + resumed.stderr
    assert list((tmp_path / "train" / "runs").glob("*")) == [run_dir]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["segments"] == 2
    assert len(csv_val_acc(run_dir)) == 2  # epoch 0 from the first part, epoch 1 resumed
    assert metrics["teacher"] == str(digits_teacher.resolve())
    state = load_checkpoint(str(run_dir / "checkpoints" / "last.ckpt"))["state_dict"]
    assert not [key for key in state if "teacher" in key]


@pytest.mark.slow
def test_a_qat_run_under_ddp_trains_one_network_on_both_processes(
    digits_teacher: Path, tmp_path: Path
) -> None:
    """QAT x DDP x distillation: ``qat=executorch`` on 2 CPU processes from a distilled float
    run, whose teacher the fine-tune keeps. One run folder; the two ranks' test halves add up
    to what the checkpoint's QAT network scores alone on the whole test split, so both ranks
    ran the network it holds, its int8 scales included (DDP broadcasts rank 0's buffers). Its
    export: tests/test_qat.py."""
    from tests.test_qat import qat_network

    teacher = [f"module.distill.teacher={digits_teacher}"]
    float_run = train(compose_cfg("train", [*TINY, *teacher], tmp_path / "float"))
    result = run_cli("src/train.py", "qat=executorch", f"qat.from={float_run['best_checkpoint']}",
                     "trainer=ddp_cpu", "debug=limit", "trainer.limit_test_batches=1.0",
                     "qat.freeze_bn_epoch=1", "qat.freeze_observers_epoch=1", "qat.export=false",
                     "trainer.enable_progress_bar=false", f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr
    (run_dir,) = (tmp_path / "qat" / "runs").glob("*")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["teacher"] == str(digits_teacher.resolve())
    last = load_checkpoint(str(run_dir / "checkpoints" / "last.ckpt"))["state_dict"]
    assert bool(last["net.observers_frozen"]) and not [key for key in last if "teacher" in key]
    net, cfg = qat_network(run_dir / "checkpoints" / "best.ckpt")  # what the run tested
    alone = test_split_accuracy(net.eval(), instantiate(cfg.data))
    assert metrics["test"]["test/acc"] == pytest.approx(alone)
