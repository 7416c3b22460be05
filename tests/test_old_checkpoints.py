"""Checkpoints and run folders written before a move of the package's modules still evaluate,
export, predict, resume and report: their config names ``_target_``s and ``config_check``s in
modules that moved (``mobilenet_lab.module.ImageClassifier``, ...), rewritten to today's names
on load (``runs/checkpoint.py``, ``MOVED_MODULES``).

``tests/data/run_record_8bb1273.json`` is the run record (config, group choices, classes,
normalisation) that commit 8bb1273, the last before the package was arranged by stage (issue
19), wrote into the checkpoint of ``python src/train.py debug=limit model.alpha=0.25
data.image_size=32``, copied verbatim. ``tests/data/run_1f7dd28/`` is the run folder that commit
1f7dd28, the last before the layers (issue 29), wrote for ``TINY``: Hydra's ``.hydra/``, the
``metrics.json``, and its checkpoint's run record (``run_record.json``), copied verbatim. The
tests put a record into a checkpoint trained now, in place of today's record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra.utils import get_method
from omegaconf import OmegaConf
from PIL import Image

from mobilenet_lab.deploy.loading import TorchModel
from mobilenet_lab.deploy.onnx import OnnxModel
from mobilenet_lab.evaluate import evaluate
from mobilenet_lab.export import export
from mobilenet_lab.predict import predict
from mobilenet_lab.report import report
from mobilenet_lab.runs.checkpoint import load_checkpoint
from mobilenet_lab.runs.files import RUN_CONFIG_KEY
from mobilenet_lab.train import train
from tests.conftest import compose_cfg

OLD_RECORD = Path(__file__).parent / "data" / "run_record_8bb1273.json"
RUN_BEFORE_LAYERS = Path(__file__).parent / "data" / "run_1f7dd28"
TINY = ["debug=limit", "model.alpha=0.25", "data.image_size=32", "trainer.deterministic=true",
        "trainer.enable_progress_bar=false", "~callbacks.model_summary"]  # fmt: skip
FAST = ["speed.repeats=1", "speed.warmup=0", "speed.batch_size=2", "check_images=8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The last checkpoint of a ``TINY`` run trained now, kept apart from the run folder (which
    a test that resumes writes to), trained once for the tests of this file."""
    run_dir = tmp_path_factory.mktemp("trained")
    train(compose_cfg("train", TINY, run_dir))
    kept = run_dir / "trained.ckpt"
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", kept)
    return kept


def assert_loads_and_exports_as(checkpoint: Path, today: Path, onnx_path: Path) -> None:
    """``checkpoint`` (an old record) gives ``today``'s logits, and so does its ONNX export."""
    images = torch.randn(4, 1, 32, 32)
    expected = TorchModel(str(today), "averaged", "cpu").logits(images)
    assert torch.equal(TorchModel(str(checkpoint), "averaged", "cpu").logits(images), expected)
    export(compose_cfg("export", [f"ckpt_path={checkpoint}", f"output_path={onnx_path}", *FAST],
                       onnx_path.parent / f"export_{onnx_path.stem}"))  # fmt: skip
    assert (OnnxModel(str(onnx_path)).logits(images) - expected).abs().max() < 1e-4


def test_a_checkpoint_of_the_old_layout_evaluates_exports_predicts_and_resumes(
    trained: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    new = run_dir / "checkpoints" / "last.ckpt"
    new.parent.mkdir(parents=True)
    shutil.copy(trained, new)
    checkpoint = torch.load(new, map_location="cpu", weights_only=True)
    checkpoint[RUN_CONFIG_KEY] = json.loads(OLD_RECORD.read_text())
    old = run_dir / "checkpoints" / "old_layout.ckpt"
    torch.save(checkpoint, old)
    old_module = checkpoint[RUN_CONFIG_KEY]["config"]["module"]["_target_"]
    assert old_module == "mobilenet_lab.module.ImageClassifier"
    with pytest.raises(ImportError):  # the name no longer leads anywhere by itself
        get_method(old_module)

    scored = [evaluate(compose_cfg("eval", [f"ckpt_path={path}"], tmp_path / f"eval_{path.stem}"))
              for path in (new, old)]  # fmt: skip
    assert scored[1]["test"] == scored[0]["test"]

    assert_loads_and_exports_as(old, new, tmp_path / "old.onnx")

    as_recorded = [o for o in TINY if "deterministic" not in o]  # the old run's: not set
    resumed = train(compose_cfg("train", [*as_recorded, "trainer.max_epochs=3", f"ckpt_path={old}"],
                                run_dir))  # fmt: skip
    assert resumed["epochs"] == 3 and resumed["segments"] == 2
    saved = torch.load(new, map_location="cpu", weights_only=True)[RUN_CONFIG_KEY]["config"]
    assert saved["module"]["_target_"] == "mobilenet_lab.training.module.ImageClassifier"


def test_a_run_folder_from_before_the_layers_evaluates_exports_predicts_reports_and_resumes(
    trained: Path, tmp_path: Path
) -> None:
    """Its record names ``runs.startup_checks`` (now ``jobs.startup_checks``), its
    ``.hydra/hydra.yaml`` the Hydra callbacks of ``runs.hydra_callbacks``."""
    run_dir = tmp_path / "logs" / "train" / "runs" / "2026-12-05_07-55-00_000000"
    shutil.copytree(RUN_BEFORE_LAYERS, run_dir, ignore=shutil.ignore_patterns("run_record.json"))
    checkpoint = torch.load(trained, map_location="cpu", weights_only=True)
    checkpoint[RUN_CONFIG_KEY] = json.loads((RUN_BEFORE_LAYERS / "run_record.json").read_text())
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    torch.save(checkpoint, ckpt)
    recorded = checkpoint[RUN_CONFIG_KEY]["config"]["config_check"]
    assert recorded == "mobilenet_lab.runs.startup_checks.check_train_config"
    with pytest.raises(ImportError):  # the name no longer leads anywhere by itself
        get_method(recorded)
    read = load_checkpoint(str(ckpt))[RUN_CONFIG_KEY]["config"]["config_check"]
    assert read == "mobilenet_lab.jobs.startup_checks.check_train_config"
    assert callable(get_method(read))

    scored = evaluate(compose_cfg("eval", [f"ckpt_path={ckpt}"], tmp_path / "eval"))
    assert set(scored["test"]) == {"test/acc", "test/acc5", "test/loss"}

    onnx_path = tmp_path / "before_layers.onnx"
    assert_loads_and_exports_as(ckpt, trained, onnx_path)
    (tmp_path / "in").mkdir()
    for n in range(3):
        Image.new("L", (32, 32), 80 * n).save(tmp_path / "in" / f"{n}.png")
    for source in (ckpt, onnx_path):
        rows = predict(compose_cfg("predict", [f"ckpt_path={source}", f"input={tmp_path / 'in'}"],
                                   tmp_path / f"predict_{source.suffix[1:]}"))  # fmt: skip
        assert len(rows) == 3 and {row["label_1"] for row in rows} <= set("0123456789")

    speed = OmegaConf.create({"batch_size": 2, "repeats": 1, "warmup": 0, "channels_last": False})
    (row,) = report([tmp_path / "logs"], speed, tmp_path / "report")
    assert row["status"] == "ok" and row["alpha"] == 0.25 and row["latency_ms_batch_1"] > 0
    assert row["test/acc"] == json.loads((run_dir / "metrics.json").read_text())["test"]["test/acc"]

    resumed = train(compose_cfg("train", [*TINY, "trainer.max_epochs=3", f"ckpt_path={ckpt}"],
                                run_dir))  # fmt: skip
    assert resumed["epochs"] == 3 and resumed["segments"] == 2
