"""A short training run in-process, then eval of the checkpoint it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import open_dict

from mobilenet_lab.data.digits import DigitsDataModule
from mobilenet_lab.deploy.loading import TorchModel
from mobilenet_lab.evaluate import evaluate
from mobilenet_lab.jobs.restored_config import restore_run_config
from mobilenet_lab.runs.checkpoint import load_checkpoint
from mobilenet_lab.runs.errors import ConfigError
from mobilenet_lab.runs.files import RUN_CONFIG_KEY
from mobilenet_lab.train import train
from tests.conftest import test_split_accuracy

TINY = ["debug=limit", "trainer.enable_progress_bar=false", "~callbacks.model_summary"]


@pytest.fixture
def trained(make_cfg, tmp_path: Path) -> dict:
    cfg = make_cfg("train", [*TINY, "model.alpha=0.25", "data.image_size=32"], tmp_path / "train")
    return train(cfg)


def test_train_writes_checkpoints_and_metrics(trained: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "train"
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "config_tree.log").read_text().count("model") >= 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(trained, default=str))
    assert (metrics["schema"], metrics["entry_point"], metrics["status"]) == (2, "train", "ok")
    assert (metrics["model"], metrics["data"], metrics["alpha"], metrics["image_size"]) == (
        "mobilenet_v1", "digits", 0.25, 32)  # fmt: skip
    assert set(metrics["val"]) == {"val/acc", "val/acc5", "val/acc_best", "val/loss"}
    assert set(metrics["test"]) == {"test/acc", "test/acc5", "test/loss"}
    best = TorchModel(metrics["best_checkpoint"], "averaged", "cpu")  # debug=limit: 2 x 64 images
    assert metrics["test"]["test/acc"] == pytest.approx(
        test_split_accuracy(
            best.logits, DigitsDataModule(image_size=32, batch_size=64), max_images=128
        )
    )
    assert metrics["params"] == sum(p.numel() for p in best.net.parameters())
    assert metrics["started_at"] <= metrics["first_step_at"] <= metrics["started_at"] + 60
    assert metrics["epochs"] == 2
    assert (run_dir / "csv" / "metrics.csv").is_file()


def test_checkpoint_carries_the_run_config(trained: dict) -> None:
    checkpoint = load_checkpoint(trained["best_checkpoint"])
    run = checkpoint[RUN_CONFIG_KEY]
    assert run["choices"]["model"] == "mobilenet_v1"
    assert run["config"]["model"]["alpha"] == 0.25
    assert run["config"]["model"]["num_classes"] == 10  # saved resolved


def test_eval_scores_the_checkpoint_with_its_own_config(
    trained: dict, make_cfg, tmp_path: Path
) -> None:
    ckpt = trained["best_checkpoint"]
    overrides = [f"ckpt_path={ckpt}", "trainer.limit_test_batches=2", "logger=csv"]
    cfg = make_cfg("eval", overrides, tmp_path / "eval")
    report = evaluate(cfg)
    assert report["alpha"] == 0.25  # from the checkpoint, although eval's default is 1.0
    # Same weights, same two test batches: the same metrics as the test at the end of training.
    assert report["test"] == pytest.approx(trained["test"], abs=1e-6)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["test"] == report["test"] and saved["ckpt_path"] == str(Path(ckpt).resolve())
    assert (saved["schema"], saved["entry_point"], saved["status"]) == (2, "eval", "ok")


def test_eval_overrides_win_over_the_saved_config(trained: dict, make_cfg) -> None:
    overrides = [f"ckpt_path={trained['best_checkpoint']}", "data.batch_size=7"]
    cfg = make_cfg("eval", overrides)
    checkpoint = load_checkpoint(cfg.ckpt_path)
    merged, choices = restore_run_config(
        cfg, checkpoint, overrides, dict(cfg.hydra.runtime.choices)
    )
    assert merged.data.batch_size == 7 and merged.model.alpha == 0.25
    assert choices["model"] == "mobilenet_v1"


def test_bad_checkpoints_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_checkpoint(str(tmp_path / "missing.ckpt"))
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ConfigError, match="is not a PyTorch checkpoint"):
        load_checkpoint(str(text))
    foreign = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ConfigError, match=r"not a checkpoint written by src/train\.py"):
        load_checkpoint(str(foreign))


def test_image_size_below_the_network_stride_is_refused(make_cfg) -> None:
    from mobilenet_lab.jobs.startup_checks import check_train_config

    cfg = make_cfg("train", ["data.image_size=8"])
    with pytest.raises(ConfigError, match=r"data\.image_size=8 is too small.*>= 32"):
        check_train_config(cfg)
    with open_dict(cfg):
        cfg.model.stem_stride = 1
        cfg.data.image_size = 16
    check_train_config(cfg)  # a stride-1 stem halves the minimum


def test_a_truncated_checkpoint_is_refused(trained: dict, tmp_path: Path) -> None:
    data = Path(trained["best_checkpoint"]).read_bytes()
    half = tmp_path / "half.ckpt"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="is not a"):
        load_checkpoint(str(half))


def test_fast_dev_run_and_tensorboard(make_cfg, tmp_path: Path) -> None:
    overrides = ["debug=fast_dev_run", "logger=many", "trainer.enable_progress_bar=false"]
    report = train(make_cfg("train", overrides, tmp_path / "fdr"))
    assert report["best_checkpoint"] == ""  # fast_dev_run saves no checkpoint
    assert set(report["test"]) == {"test/acc", "test/acc5", "test/loss"}
    assert (tmp_path / "fdr" / "metrics.json").is_file()


def test_tensorboard_logger_writes_event_files(make_cfg, tmp_path: Path) -> None:
    train(make_cfg("train", [*TINY, "trainer.max_epochs=1", "logger=many"], tmp_path / "tb"))
    assert list((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "tb" / "csv" / "metrics.csv").is_file()


def test_hardware_the_machine_lacks_is_refused(make_cfg, monkeypatch) -> None:
    from mobilenet_lab.jobs.startup_checks import check_train_config

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match=r"trainer\.accelerator=gpu but this machine has no GPU"):
        check_train_config(make_cfg("train", ["trainer=gpu"]))
    with pytest.raises(ConfigError, match=r"trainer\.precision=16-mixed needs a GPU.*bf16-mixed"):
        check_train_config(make_cfg("train", ["trainer.precision=16-mixed"]))
    with pytest.raises(ConfigError, match=r"trainer\.devices=512 but this machine has \d+ CPU"):
        check_train_config(make_cfg("train", ["trainer=ddp_cpu", "trainer.devices=512"]))
    check_train_config(make_cfg("train", ["trainer.precision=bf16-mixed"]))  # slow but valid


def test_resuming_another_network_is_refused(trained: dict, make_cfg) -> None:
    from mobilenet_lab.jobs.startup_checks import check_train_config

    ckpt = trained["best_checkpoint"]
    check_train_config(make_cfg("train", [f"ckpt_path={ckpt}", "model.alpha=0.25"]))
    with pytest.raises(
        ConfigError, match=r"holds another network \(model\.alpha=0\.25 there, 0\.75 here"
    ):
        check_train_config(make_cfg("train", [f"ckpt_path={ckpt}", "model.alpha=0.75"]))
    check_train_config(make_cfg("train", [f"ckpt_path={ckpt}"]))  # the run's own network
    overrides = [f"ckpt_path={ckpt}", "model.alpha=0.25", "data=synthetic"]
    with pytest.raises(ConfigError, match=r"data\.num_classes=10 recorded, 1000 now"):
        check_train_config(make_cfg("train", overrides))


def test_resume_last_picks_the_newest_run(tmp_path: Path) -> None:
    from mobilenet_lab.jobs.startup_checks import resolve_resume

    for stamp in ("2026-01-01_00-00-00_000001", "2026-01-01_00-00-00_000002"):
        folder = tmp_path / "train" / "runs" / stamp / "checkpoints"
        folder.mkdir(parents=True)
        (folder / "last.ckpt").write_bytes(b"x")
    assert resolve_resume("last", str(tmp_path), "train").parent.parent.name.endswith("000002")
    with pytest.raises(ConfigError, match="ckpt_path=last but there is no training run under"):
        resolve_resume("last", str(tmp_path / "empty"), "train")
    # An eval run sharing the task_name is no training run: passed over.
    for stamp, job in (("000003", "eval"), ("000004", "train")):
        hydra_dir = tmp_path / "train" / "runs" / f"2026-01-01_00-00-00_{stamp}" / ".hydra"
        hydra_dir.mkdir(parents=True)
        (hydra_dir / "hydra.yaml").write_text(f"hydra:\n  job:\n    name: {job}\n")
        if job == "eval":
            assert resolve_resume("last", str(tmp_path), "train").parts[-3].endswith("000002")
    # A training run killed before its first last.ckpt is the newest: refused, not passed over.
    with pytest.raises(ConfigError, match=r"000004, has no checkpoints/last\.ckpt.*000002"):
        resolve_resume("last", str(tmp_path), "train")


def test_a_checkpoint_save_killed_midway_leaves_the_previous_one(
    tmp_path: Path, monkeypatch
) -> None:
    from lightning.fabric.plugins import TorchCheckpointIO

    from mobilenet_lab.training.trainer import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "weights": torch.ones(3)}, path)

    def dies_while_writing(self, checkpoint, target, storage_options=None) -> None:
        Path(target).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt  # the process is stopped in the middle of the write

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", dies_while_writing)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "weights": torch.zeros(3)}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_without_ema_averaged_and_trained_are_the_same_weights(trained: dict) -> None:
    from mobilenet_lab.runs.checkpoint import checkpoint_weights

    checkpoint = load_checkpoint(trained["best_checkpoint"])
    averaged = checkpoint_weights(checkpoint, "averaged")
    plain = checkpoint_weights(checkpoint, "trained")
    assert averaged.keys() == plain.keys()
    assert all(torch.equal(averaged[key], plain[key]) for key in averaged)


@pytest.mark.slow
def test_ema_validates_and_tests_on_the_averaged_weights(make_cfg, tmp_path: Path) -> None:
    """The run's own test result is the averaged weights' result, and the trained weights
    (kept in ``current_model_state``) score differently."""
    report = train(make_cfg("train", ["callbacks=ema", *TINY, "model.alpha=0.25"], tmp_path / "t"))
    checkpoint = load_checkpoint(report["best_checkpoint"])
    assert "current_model_state" in checkpoint
    scores = {}
    for weights in ("averaged", "trained"):
        overrides = [f"ckpt_path={report['best_checkpoint']}", f"weights={weights}",
                     "trainer.limit_test_batches=2", "logger=csv"]  # fmt: skip
        result = evaluate(make_cfg("eval", overrides, tmp_path / weights))
        assert result["weights"] == weights
        scores[weights] = result["test"]
    assert scores["averaged"] == pytest.approx(report["test"], abs=1e-6)
    assert scores["trained"] != pytest.approx(report["test"], abs=1e-6)


@pytest.mark.slow
def test_lr_and_no_weight_decay_reach_the_optimizer_lightning_built(
    make_cfg, tmp_path: Path
) -> None:
    overrides = [*TINY, "model.alpha=0.25", "optimizer.lr_base=0.2", "global_batch_size=64"]
    report = train(make_cfg("train", overrides, tmp_path / "run"))
    assert report["global_batch_size"] == 64 and report["mult_adds"] > 0
    # The optimizer's state as Lightning saved it: 0.2 x 64 / 256 in both groups.
    decay, no_decay = load_checkpoint(str(tmp_path / "run" / "checkpoints" / "last.ckpt"))[
        "optimizer_states"
    ][0]["param_groups"]
    assert decay["initial_lr"] == no_decay["initial_lr"] == pytest.approx(0.05)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["lr"] == pytest.approx(0.05)
    # V1: 27 BatchNorms (scale + shift), 13 depthwise filters and the FC bias are exempt; the
    # stem, 13 pointwise convs and the FC weight are decayed (default SGD weight decay 5e-4).
    assert (len(no_decay["params"]), no_decay["weight_decay"]) == (27 * 2 + 13 + 1, 0.0)
    assert (len(decay["params"]), decay["weight_decay"]) == (1 + 13 + 1, 5e-4)


def test_a_global_batch_that_does_not_divide_is_refused(make_cfg) -> None:
    from mobilenet_lab.jobs.startup_checks import check_train_config

    overrides = ["trainer=ddp_cpu", "trainer.accumulate_grad_batches=3", "global_batch_size=100"]
    with pytest.raises(ConfigError, match=r"global_batch_size=100 does not divide over 6"):
        check_train_config(make_cfg("train", overrides))


def stem_statistics(run_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The stem BatchNorm's running mean in ``last.ckpt``, and the mean its conv's outputs have,
    with the same weights, over the clean (unaugmented) digits training split."""
    state = load_checkpoint(str(run_dir / "checkpoints" / "last.ckpt"))["state_dict"]
    datamodule = DigitsDataModule()
    datamodule.setup("fit")
    images, labels = datamodule.splits["train"].tensors
    clean, _ = datamodule.on_after_batch_transfer((images, labels), 0)  # no trainer: no augment
    outputs = F.conv2d(clean, state["net.stem.0.weight"], stride=2, padding=1)
    return state["net.stem.1.running_mean"], outputs.mean(dim=(0, 2, 3))


@pytest.mark.slow
def test_precise_bn_leaves_the_clean_training_statistics_in_the_checkpoint(
    make_cfg, tmp_path: Path
) -> None:
    """With the callback (10 batches of 128: the whole split) the stem's running mean is the
    clean training images' (to the unequal last batch's weighting); with Lightning's running
    averages alone it is far from it."""
    errors = {}
    whole_split = ["model.alpha=0.25", "data.image_size=32", "data.batch_size=128",
                   "trainer.limit_train_batches=10"]  # fmt: skip
    runs = {"precise": [], "running": ["~callbacks.precise_bn"], "ema": ["callbacks=ema"]}
    for name, extra in runs.items():
        train(make_cfg("train", [*TINY, *whole_split, *extra], tmp_path / name))
        running, clean = stem_statistics(tmp_path / name)
        errors[name] = ((running - clean).abs().max() / clean.abs().max()).item()
    # With EMA the checkpoint's state_dict is the averaged weights: their own statistics.
    assert max(errors["precise"], errors["ema"]) < 0.03 < errors["running"], errors


def test_precise_bn_runs_at_epoch_ends_only(make_cfg, tmp_path: Path, monkeypatch) -> None:
    """Validating every 2 of an epoch's 4 batches: the statistics are recomputed before the
    validation that ends each epoch, not before the one in the middle of it."""
    calls = []
    monkeypatch.setattr(
        "mobilenet_lab.training.callbacks.update_bn", lambda *args: calls.append(args)
    )
    overrides = [*TINY, "model.alpha=0.25", "trainer.limit_train_batches=4",
                 "+trainer.val_check_interval=2"]  # fmt: skip
    train(make_cfg("train", overrides, tmp_path / "run"))
    assert len(calls) == 2  # 2 epochs; 4 validations
