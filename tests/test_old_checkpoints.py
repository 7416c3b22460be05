"""Checkpoints written before the package was arranged by stage (issue 19) still evaluate,
export, predict and resume: their config names ``_target_``s in modules that moved
(``mobilenet_lab.module.ImageClassifier``, ...), rewritten to today's names on load.

``tests/data/run_record_8bb1273.json`` is the run record (config, group choices, classes,
normalisation) that commit 8bb1273, the last before the move, wrote into the checkpoint of
``python src/train.py debug=limit model.alpha=0.25 data.image_size=32``, copied verbatim; the
test puts it into a checkpoint trained now, in place of today's record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import get_method

from mobilenet_lab.deploy.loading import TorchModel
from mobilenet_lab.deploy.onnx import OnnxModel
from mobilenet_lab.evaluate import evaluate
from mobilenet_lab.export import export
from mobilenet_lab.runs.files import RUN_CONFIG_KEY
from mobilenet_lab.train import train
from tests.conftest import compose_cfg

OLD_RECORD = Path(__file__).parent / "data" / "run_record_8bb1273.json"
TINY = ["debug=limit", "model.alpha=0.25", "data.image_size=32", "trainer.deterministic=true",
        "trainer.enable_progress_bar=false", "~callbacks.model_summary"]  # fmt: skip


def test_a_checkpoint_of_the_old_layout_evaluates_exports_predicts_and_resumes(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    train(compose_cfg("train", TINY, run_dir))
    new = run_dir / "checkpoints" / "last.ckpt"
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

    images = torch.randn(4, 1, 32, 32)
    expected = TorchModel(str(new), "averaged", "cpu").logits(images)
    assert torch.equal(TorchModel(str(old), "averaged", "cpu").logits(images), expected)
    onnx_path = tmp_path / "old.onnx"
    fast = ["speed.repeats=1", "speed.warmup=0", "speed.batch_size=2", "check_images=8"]
    export(compose_cfg("export", [f"ckpt_path={old}", f"output_path={onnx_path}", *fast],
                       tmp_path / "export"))  # fmt: skip
    assert (OnnxModel(str(onnx_path)).logits(images) - expected).abs().max() < 1e-4

    as_recorded = [o for o in TINY if "deterministic" not in o]  # the old run's: not set
    resumed = train(compose_cfg("train", [*as_recorded, "trainer.max_epochs=3", f"ckpt_path={old}"],
                                run_dir))  # fmt: skip
    assert resumed["epochs"] == 3 and resumed["segments"] == 2
    saved = torch.load(new, map_location="cpu", weights_only=True)[RUN_CONFIG_KEY]["config"]
    assert saved["module"]["_target_"] == "mobilenet_lab.training.module.ImageClassifier"
