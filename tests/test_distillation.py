"""Logit distillation (issue 21, its core): a frozen teacher trained by the kit, outside the
student's children and checkpoint, in eval mode whatever Lightning calls; bad teachers and
settings refused in one line before any run folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mobilenet_lab.evaluate import evaluate
from mobilenet_lab.models import build_mobilenet_v1
from mobilenet_lab.train import train
from mobilenet_lab.training.distillation import distillation_loss, fingerprint
from mobilenet_lab.training.module import ImageClassifier
from tests.conftest import compose_cfg

TINY = ["debug=limit", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "~callbacks.model_summary", "model.alpha=0.25", "data.image_size=32"]  # fmt: skip


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher trained by the kit: V1 alpha 0.5 at 40 px on the digits (the student: 32 px)."""
    run_dir = tmp_path_factory.mktemp("teacher")
    overrides = [*TINY, "model.alpha=0.5", "data.image_size=40"]
    return Path(train(compose_cfg("train", overrides, run_dir))["best_checkpoint"])


def test_the_loss_is_timms_kl_of_softened_logits() -> None:
    student, teacher_logits = torch.randn(6, 10), torch.randn(6, 10)
    expected = F.kl_div(F.log_softmax(student / 4, -1), F.softmax(teacher_logits / 4, -1),
                        reduction="batchmean") * 16  # fmt: skip
    assert distillation_loss(student, teacher_logits, 4.0) == pytest.approx(float(expected))
    assert float(distillation_loss(student, student, 2.0)) == pytest.approx(0.0, abs=1e-6)


def test_the_teacher_is_frozen_in_eval_and_no_child_of_the_student(teacher: Path) -> None:
    net = build_mobilenet_v1(alpha=0.25, num_classes=10, in_chans=1)
    module = ImageClassifier(net, num_classes=10, distill={"teacher": str(teacher)})
    module.setup("fit")
    (held,) = module._teacher
    module.train()  # what Lightning calls at every training epoch
    assert not held.net.training and not any(p.requires_grad for p in held.net.parameters())
    assert all(not key.startswith("_teacher") for key in module.state_dict())
    assert set(module.state_dict()) == set(ImageClassifier(net, num_classes=10).state_dict())
    assert sum(1 for _ in module.parameters()) == sum(1 for _ in net.parameters())
    logits = held.logits(torch.randn(3, 1, 32, 32))  # resized to the teacher's 40 px
    assert logits.shape == (3, 10) and not held.net.training


def test_a_distilled_run_records_its_teacher_and_evaluates_without_it(
    teacher: Path, tmp_path: Path
) -> None:
    before = fingerprint(str(teacher))
    copy = tmp_path / "teacher.ckpt"
    shutil.copy(teacher, copy)
    overrides = [*TINY, f"module.distill.teacher={copy}", "module.distill.weight=1.0"]
    report = train(compose_cfg("train", overrides, tmp_path / "student"))
    assert (report["teacher"], report["teacher_sha256"]) == (str(copy.resolve()), before)
    assert fingerprint(str(copy)) == before  # the teacher's file, and so its weights, unchanged
    last = tmp_path / "student" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert not [key for key in checkpoint["state_dict"] if "teacher" in key]
    (state,) = checkpoint["optimizer_states"]
    assert len(state["state"]) <= sum(1 for _ in build_mobilenet_v1(
        alpha=0.25, num_classes=10, in_chans=1).parameters())  # fmt: skip
    copy.unlink()  # eval (and export, predict) of the student never needs the teacher
    scored = evaluate(compose_cfg("eval", [f"ckpt_path={last}", "debug=limit"], tmp_path / "e"))
    assert scored["test"]["test/acc"] == pytest.approx(report["test"]["test/acc"])
    saved = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert saved["teacher_sha256"] == before
    from mobilenet_lab.analysis.runs_table import read_runs

    (row,) = read_runs([tmp_path / "student"])  # a column of the runs table, not nested keys
    assert row["teacher"] == str(copy.resolve()) and "sha256" not in row


def test_bad_teachers_and_settings_are_one_line_and_no_run_folder(
    run_main, teacher: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.ckpt"  # a teacher of 1000 classes and 3 channels
    checkpoint = torch.load(teacher, map_location="cpu", weights_only=True)
    checkpoint["mobilenet_lab_run"]["config"]["model"].update(num_classes=1000, in_chans=3)
    torch.save(checkpoint, other)
    cases = {
        f"module.distill.teacher={tmp_path / 'none.ckpt'}": "module.distill.teacher='",
        f"module.distill.teacher={other}": "has model.num_classes=1000, this run 10",
        f"module.distill.teacher={teacher} module.distill.weight=1.5": "weight=1.5 is not valid",
        f"module.distill.teacher={teacher} module.distill.temperature=0": "temperature=0 is not",
    }
    for overrides, message in cases.items():
        result = run_main("src/train.py", *overrides.split(), f"paths.log_dir={tmp_path / 'l'}")
        assert result.returncode == 2, result.stderr[-2000:]
        (line,) = result.stderr.strip().splitlines()
        assert message in line, line
    assert not (tmp_path / "l").exists()
