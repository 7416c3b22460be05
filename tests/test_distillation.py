"""Logit distillation (issue 21): a frozen teacher (a checkpoint of the kit, timm's weights or an
export) outside the student's children and checkpoint, in eval mode whatever Lightning calls,
each batch in its own preprocessing; cached outputs where valid; bad teachers and settings
refused in one line before any run folder. (Resume, EMA and DDP of a distilled run:
tests/test_combinations.py.)"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mobilenet_lab.evaluate import evaluate
from mobilenet_lab.export import export
from mobilenet_lab.models import build_mobilenet_v1
from mobilenet_lab.predict import predict
from mobilenet_lab.train import train
from mobilenet_lab.training.distillation import Teacher, distillation_loss
from mobilenet_lab.training.module import ImageClassifier
from tests.conftest import compose_cfg

TINY = ["debug=limit", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "~callbacks.model_summary", "model.alpha=0.25", "data.image_size=32"]  # fmt: skip
FAST_EXPORT = ["speed.repeats=1", "speed.warmup=0", "speed.batch_size=2", "check_images=8"]


def test_the_loss_is_timms_kl_of_softened_logits() -> None:
    student, teacher_logits = torch.randn(6, 10), torch.randn(6, 10)
    expected = F.kl_div(F.log_softmax(student / 4, -1), F.softmax(teacher_logits / 4, -1),
                        reduction="batchmean") * 16  # fmt: skip
    assert distillation_loss(student, teacher_logits, 4.0) == pytest.approx(float(expected))
    assert float(distillation_loss(student, student, 2.0)) == pytest.approx(0.0, abs=1e-6)


def test_the_teacher_is_frozen_in_eval_and_no_child_of_the_student(digits_teacher: Path) -> None:
    net = build_mobilenet_v1(alpha=0.25, num_classes=10, in_chans=1)
    distill = {"teacher": str(digits_teacher), "weight": 1.0, "temperature": 4.0}
    module = ImageClassifier(net, num_classes=10, distill=distill)
    module.setup("fit")
    held = module.teacher
    module.train()  # what Lightning calls at every training epoch
    assert not held.net.training and not any(p.requires_grad for p in held.net.parameters())
    assert all(not key.startswith("_teacher") for key in module.state_dict())
    assert set(module.state_dict()) == set(ImageClassifier(net, num_classes=10).state_dict())
    assert sum(1 for _ in module.parameters()) == sum(1 for _ in net.parameters())
    assert copy.deepcopy(module).teacher is held  # EMA's copy of the student shares it
    images = torch.randn(4, 1, 32, 32)
    logits = held.logits(images)  # resized to the teacher's 40 px
    assert logits.shape == (4, 10) and not held.net.training
    with pytest.warns(UserWarning):  # self.log outside a Trainer
        losses = [module._step((images, labels), "train") for labels in
                  (torch.tensor([0, 1, 2, 3]), torch.tensor([9, 9, 9, 9]))]  # fmt: skip
    assert losses[0] == losses[1]  # weight 1.0: the teacher alone, the labels unread


def test_a_distilled_run_records_its_teacher_and_exports_without_it(
    digits_teacher: Path, tmp_path: Path
) -> None:
    copy_ = tmp_path / "teacher.ckpt"
    shutil.copy(digits_teacher, copy_)
    before = Teacher(str(copy_)).record()
    overrides = [*TINY, f"module.distill.teacher={copy_}"]
    report = train(compose_cfg("train", overrides, tmp_path / "student"))
    assert {key: report[key] for key in before} == before == Teacher(str(copy_)).record()
    assert before["teacher"] == str(copy_.resolve()) and len(before["teacher_sha256"]) == 64
    last = tmp_path / "student" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert not [key for key in checkpoint["state_dict"] if "teacher" in key]
    (state,) = checkpoint["optimizer_states"]
    assert len(state["state"]) <= sum(1 for _ in build_mobilenet_v1(
        alpha=0.25, num_classes=10, in_chans=1).parameters())  # fmt: skip
    copy_.unlink()  # eval, export and predict of the student never need the teacher
    scored = evaluate(compose_cfg("eval", [f"ckpt_path={last}", "debug=limit"], tmp_path / "e"))
    assert scored["test"]["test/acc"] == pytest.approx(report["test"]["test/acc"])
    onnx = tmp_path / "student.onnx"
    export(
        compose_cfg(
            "export", [f"ckpt_path={last}", f"output_path={onnx}", *FAST_EXPORT], tmp_path / "x"
        )
    )  # fmt: skip (export checks the file's logits itself)
    from PIL import Image

    Image.new("L", (8, 8), 255).save(tmp_path / "white.png")
    rows = [predict(compose_cfg("predict", [f"ckpt_path={path}", f"input={tmp_path}/*.png"],
                                tmp_path / "p"))[0] for path in (last, onnx)]  # fmt: skip
    assert rows[0]["label_1"] == rows[1]["label_1"]
    saved = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert saved["teacher_sha256"] == before["teacher_sha256"]
    from mobilenet_lab.analysis.runs_table import read_runs

    (row,) = read_runs([tmp_path / "student"])  # a column of the runs table, not nested keys
    assert row["teacher"] == str(copy_.resolve()) and "sha256" not in row


def test_each_kind_of_teacher_sees_the_batch_in_its_own_preprocessing(
    digits_teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint and its ONNX export give one set of logits (resized 32 -> 40 px); timm's
    weights see the student's batch re-normalised to ImageNet's mean and std at 224 px."""
    import huggingface_hub.constants

    from tests.test_timm_models import fake_hf_cache

    onnx = tmp_path / "teacher.onnx"
    export(compose_cfg("export", [f"ckpt_path={digits_teacher}", f"output_path={onnx}",
                                  *FAST_EXPORT], tmp_path / "x"))  # fmt: skip
    images = torch.randn(3, 1, 32, 32)
    from_ckpt, from_onnx = Teacher(str(digits_teacher)), Teacher(str(onnx))
    assert (from_onnx.num_classes, from_onnx.image_size) == (10, 40)
    assert (from_onnx.logits(images) - from_ckpt.logits(images)).abs().max() < 1e-4
    assert from_onnx.record()["teacher_sha256"] != from_ckpt.record()["teacher_sha256"]
    half = from_ckpt.logits(images.bfloat16())  # bf16-true: the teacher follows the batch
    assert (
        half.dtype == torch.bfloat16 and (half.float() - from_onnx.logits(images)).abs().max() < 0.5
    )

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    weights = fake_hf_cache(tmp_path / "hf", "mobilenetv3_small_050")
    timm_teacher = Teacher("timm:mobilenetv3_small_050")
    timm_teacher.check_fits(num_classes=1000, in_chans=3)
    assert timm_teacher.record()["teacher"] == "timm:mobilenetv3_small_050"
    timm_teacher.match_student(mean=(0.5,) * 3, std=(0.25,) * 3)  # data=synthetic's
    batch = torch.randn(2, 3, 32, 32)
    pixels = batch * 0.25 + 0.5
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected_input = F.interpolate((pixels - mean) / std, size=(224, 224), mode="bilinear")
    with torch.no_grad():
        expected = timm_teacher.net(expected_input)
    assert (timm_teacher.logits(batch) - expected).abs().max() < 1e-4
    from safetensors.torch import load_file

    stem = timm_teacher.net.state_dict()["conv_stem.weight"]
    assert torch.equal(stem, load_file(weights)["conv_stem.weight"])


def test_cached_teacher_outputs_train_as_the_teacher_forward_does(
    digits_teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the training images fixed (data.augment=false), outputs computed once at the start
    give the run the teacher's forward in each step gives: the teacher runs once per image."""
    calls = []
    original = Teacher.logits
    monkeypatch.setattr(
        Teacher, "logits", lambda self, x: calls.append(len(x)) or original(self, x)
    )
    settings = [*TINY, "data.augment=false", "trainer.max_epochs=2", "trainer.deterministic=true",
                f"module.distill.teacher={digits_teacher}"]  # fmt: skip
    forward = train(compose_cfg("train", settings, tmp_path / "forward"))
    forward_calls, calls[:] = list(calls), []
    cached = train(compose_cfg("train", [*settings, "module.distill.cache=true"], tmp_path / "c"))
    assert sum(forward_calls) == 2 * 3 * 64  # 2 epochs of 3 batches of 64 (debug=limit)
    from mobilenet_lab.data.digits import DigitsDataModule

    assert sum(calls) == len(DigitsDataModule().load()["train"][1])  # each training image once
    assert cached["test"]["test/acc"] == pytest.approx(forward["test"]["test/acc"], abs=1e-6)
    assert cached["val"]["val/loss"] == pytest.approx(forward["val"]["val/loss"], rel=1e-4)


def test_bad_teachers_and_settings_are_one_line_and_no_run_folder(
    run_main, digits_teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    other = train(compose_cfg("train", [*TINY, "data=synthetic", "data.size=16",
                                        "data.batch_size=8"], tmp_path / "other"))  # fmt: skip
    key = "module.distill.teacher"
    cases = {
        f"{key}={tmp_path / 'none.ckpt'}": f"{key}='",
        f"{key}={other['best_checkpoint']}": "has num_classes=1000, this run model.num_classes=10",
        f"{key}=timm:no_such_net": "timm has no model 'no_such_net'",
        f"{key}=timm:mobilenetv3_small_050": "are not in the local Hugging Face cache",
        f"{key}={digits_teacher} module.distill.weight=1.5": "weight=1.5 is not valid",
        f"{key}={digits_teacher} module.distill.temperature=0": "temperature=0 is not",
        f"{key}={digits_teacher} module.distill.cache=true": "but data.augment=true changes",
    }
    for overrides, message in cases.items():
        result = run_main("src/train.py", *overrides.split(), f"paths.log_dir={tmp_path / 'l'}")
        assert result.returncode == 2, result.stderr[-2000:]
        (line,) = result.stderr.strip().splitlines()
        assert message in line, line
    assert not (tmp_path / "l").exists()


def test_an_unreadable_exported_teacher_is_named_by_the_teachers_key(tmp_path: Path) -> None:
    """The file's reader tells of the file; the teacher names its own key, in the example too."""
    from mobilenet_lab.runs.errors import ConfigError

    for name, problem in (("garbage.onnx", "is not a readable ONNX file"),
                          ("missing.pte", "does not exist")):  # fmt: skip
        path = tmp_path / name
        if name.startswith("garbage"):
            path.write_bytes(b"not a model")
        with pytest.raises(ConfigError) as error:
            Teacher(str(path))
        key = "module.distill.teacher"
        assert str(error.value).startswith(f"{key}={str(path)!r} {problem}: e.g. {key}=logs/")
        assert "ckpt_path" not in str(error.value)


def test_the_report_shows_the_teacher_and_what_it_bought(tmp_path: Path) -> None:
    """report.md: a teacher column and, for a setting run plainly and distilled, the median and
    lowest of each; distillation.png draws them; tradeoff.png draws distilled runs hollow."""
    from PIL import Image

    from mobilenet_lab.analysis.distillation_gain import distillation_gains, save_gain_plot
    from mobilenet_lab.analysis.report_markdown import markdown
    from mobilenet_lab.analysis.runs_table import report_rows
    from mobilenet_lab.analysis.tradeoff_plot import save_tradeoff_plot

    teacher = str(tmp_path / "2026-12-03_10-00-00" / "checkpoints" / "last.ckpt")

    def run(job: int, acc: float, distilled: bool, extra: tuple[str, ...] = ()) -> dict:
        how = {"teacher": teacher, "distill_weight": 0.5, "distill_temperature": 4.0}
        overrides = [f"seed={job}", *extra] + [f"module.distill.teacher={teacher}"] * distilled
        return {"run_dir": str(tmp_path / str(job)), "job": str(job), "status": "ok",
                "task": "train", "model": "mobilenet_v1", "alpha": 0.25, "image_size": 40,
                "mult_adds": 1_760_000, "params": 215_000, "test/acc": acc,
                "overrides": overrides, **(how if distilled else {})}  # fmt: skip

    few = ("data.train_images=200",)
    runs = [run(0, 0.95, False), run(1, 0.96, False), run(2, 0.97, True), run(3, 0.94, True),
            run(4, 0.99, True), run(5, 0.8, False, few)]  # fmt: skip
    rows = report_rows(runs)
    (gain,) = distillation_gains(rows)  # the 200-image setting has no distilled runs
    assert (gain["median"], gain["lowest"], gain["plain median"]) == (0.97, 0.94, 0.955)
    assert gain["gain (median)"] == pytest.approx(0.015) and gain["runs"] == "3 / 2"
    text = markdown(rows, "t", "cpu")
    assert "| teacher |" in text.replace("| image size | teacher |", "| teacher |")
    assert "2026-12-03_10-00-00/last.ckpt" in text and "## What the teacher bought" in text
    assert "| +1.50 |" in text
    assert "module.distill.teacher" not in text  # a column, not an "other override"
    assert save_gain_plot(rows, tmp_path / "distillation.png")
    assert not save_gain_plot(rows[:2], tmp_path / "none.png")  # nothing run both ways
    save_tradeoff_plot(rows, tmp_path / "tradeoff.png", "cpu")
    for name in ("distillation.png", "tradeoff.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size[0] > 500 and image.size[1] > 300


def test_a_teacher_of_other_classes_or_another_split_is_refused(
    run_main, digits_teacher: Path, tmp_path: Path
) -> None:
    """A CIFAR-10 teacher for a 10-class image-folder student (as many classes, other names);
    for a CIFAR-10 student whose meta file lists the same names in another order (its label i
    is another class); a digits teacher, checkpoint or export, of another ``data.split_seed``
    (it learned this run's test images): one line naming both, before any run folder. The
    teachers that match pass, and a run with one trains."""
    import pickle

    from mobilenet_lab.training.distillation import check_distill
    from tests.data_files import CIFAR_LAYOUT, write_cifar, write_image_tree

    def cifar_args(root: Path) -> list[str]:
        return ["data=cifar10", f"data.data_dir={root}", "data.download=false", "data.val_size=40"]

    cifar = write_cifar(tmp_path / "cifar", "cifar10", per_file=40)
    run = train(compose_cfg("train", [*TINY, *cifar_args(cifar)], tmp_path / "cifar_teacher"))
    cifar_teacher = run["best_checkpoint"]
    folders = write_image_tree(tmp_path / "folders", classes=10, per_class=1)
    shuffled = write_cifar(tmp_path / "shuffled", "cifar10", per_file=40)
    folder, _, _, meta_file, _, meta_key = CIFAR_LAYOUT["cifar10"]
    names = ["c1", "c0", *(f"c{i}" for i in range(2, 10))]
    (shuffled / folder / meta_file).write_bytes(pickle.dumps({meta_key: names}))
    onnx = tmp_path / "digits_teacher.onnx"
    export(compose_cfg("export", [f"ckpt_path={digits_teacher}", f"output_path={onnx}",
                                  *FAST_EXPORT], tmp_path / "x"))  # fmt: skip
    exported = Teacher(str(onnx))  # the file carries the class names and the split seed
    assert (exported.class_names, exported.split_seed) == (tuple("0123456789"), 0)

    key, logs = "module.distill.teacher", f"paths.log_dir={tmp_path / 'l'}"
    other_split = "was trained with data.split_seed=0, this run has data.split_seed=1"
    cases = {
        (f"{key}={cifar_teacher}", "data=imagefolder", f"data.data_dir={folders}"):
            "was trained on the classes (c0, c1, c2, c3, c4, c5, c6, c7, c8, c9), this run's "
            "data has (class_0, class_1, class_2, class_3, class_4, class_5, class_6, class_7, "
            "class_8, class_9): give a teacher trained on the same classes in the same order",
        (f"{key}={cifar_teacher}", *cifar_args(shuffled)):
            "this run's data has (c1, c0, c2, c3, c4, c5, c6, c7, c8, c9) in another order",
        (f"{key}={digits_teacher}", "data.split_seed=1"): other_split,
        (f"{key}={onnx}", "data.split_seed=1"): other_split,
    }  # fmt: skip
    for overrides, message in cases.items():
        result = run_main("src/train.py", *TINY, *overrides, logs)
        assert result.returncode == 2, result.stderr[-2000:]
        (line,) = result.stderr.strip().splitlines()
        assert message in line, line
    assert not (tmp_path / "l").exists()

    for teacher, data in ((digits_teacher, []), (onnx, ["data.split_seed=0"])):
        check_distill(compose_cfg("train", [f"{key}={teacher}", *data], tmp_path / "ok"))
    result = run_main("src/train.py", *TINY, f"{key}={cifar_teacher}", *cifar_args(cifar), logs)
    assert result.returncode == 0, result.stderr[-2000:]
    (metrics,) = (tmp_path / "l").glob("train/runs/*/metrics.json")
    assert json.loads(metrics.read_text())["teacher"] == str(Path(cifar_teacher).resolve())
