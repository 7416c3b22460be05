"""ExecuTorch (``.pte``, XNNPACK) and LiteRT (``.tflite``) exports (issue 20) on a tiny digits
run: each format exports fp32 and int8, checks itself in its own runtime, stores the run's
preprocessing, predicts the same CSV as the checkpoint, and refuses bad input in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mobilenet_lab.deploy.formats import FORMATS, check_format
from mobilenet_lab.deploy.loading import TorchModel, eval_batches
from mobilenet_lab.export import export
from mobilenet_lab.predict import predict
from mobilenet_lab.runs.errors import ConfigError
from mobilenet_lab.train import train
from tests.conftest import compose_cfg
from tests.data_files import read_csv, write_digit_pictures

# One xdist worker for the PT2E tests: torchao's pattern graphs are cached per process
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pt2e")]

# 10 epochs of the whole training split: a network that learned (about 93% test accuracy, in
# about 5 s), so that int8's loss against fp32 means something
TINY = ["trainer.max_epochs=10", "trainer.enable_progress_bar=false",
        "~callbacks.model_summary", "model.alpha=0.25", "data.image_size=32"]  # fmt: skip
FAST_EXPORT = ["speed.repeats=1", "speed.warmup=0", "speed.batch_size=2", "check_images=8",
               "calibration_images=16"]  # fmt: skip
SUFFIX = {"executorch": ".pte", "tflite": ".tflite"}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-epoch digits run at alpha 0.25 (channels-last, as the default module trains);
    returns its best checkpoint."""
    run_dir = tmp_path_factory.mktemp("digits_run")
    return Path(train(compose_cfg("train", TINY, run_dir))["best_checkpoint"])


@pytest.mark.parametrize("file_format", ["executorch", "tflite"])
def test_each_format_exports_checks_itself_and_predicts_as_the_checkpoint(
    file_format: str, digits_run: Path, tmp_path: Path
) -> None:
    fp32 = tmp_path / f"model{SUFFIX[file_format]}"
    overrides = [f"ckpt_path={digits_run}", f"format={file_format}", f"output_path={fp32}",
                 "quantize=int8", *FAST_EXPORT]  # fmt: skip
    report = export(compose_cfg("export", overrides, tmp_path / "run"))
    int8 = tmp_path / f"model.int8{SUFFIX[file_format]}"
    assert fp32.is_file() and int8.is_file() and not list(tmp_path.glob("*.tmp*"))
    assert report["fp32/max_abs_diff"] <= report["fp32/bound"] and report["fp32/refused"] is None
    assert report["fp32/top1_agreement"] == 1.0
    # a real floor: the network learned, and int8 kept int8_min_ratio (0.99) of its accuracy
    assert report["fp32/test_acc"] > 0.85 and report["int8/test_images"] == 450
    assert report["int8/test_acc"] >= 0.99 * report["fp32/test_acc"]
    assert report["int8/refused"] is None
    assert report[f"{file_format}_int8/latency_ms_batch_1"] > 0
    checkpoint = TorchModel(str(digits_run), "averaged", "cpu")
    read_metadata = FORMATS[file_format].read_metadata
    assert read_metadata(str(fp32)) == read_metadata(str(int8)) == checkpoint.preprocessing
    if file_format == "executorch":  # all of V1 in XNNPACK: its 13 depthwise convs included
        assert report["executorch/not_delegated"] == {}
        assert report["executorch/depthwise_convolutions"] == 13
        assert report["executorch/convolutions"] == 27 and report["executorch/delegate_calls"] >= 1

    pictures = write_digit_pictures(tmp_path / "pictures", 6)
    rows = {}
    for name, path in (("ckpt", digits_run), ("file", fp32)):
        predict(compose_cfg("predict", [f"ckpt_path={path}", f"input={pictures}"], tmp_path / name))
        rows[name] = read_csv(tmp_path / name / "predictions.csv")
    assert [r["label_1"] for r in rows["file"]] == [r["label_1"] for r in rows["ckpt"]]
    for ours, theirs in zip(rows["file"], rows["ckpt"], strict=True):
        assert float(ours["prob_1"]) == pytest.approx(float(theirs["prob_1"]), abs=1e-4)


def test_a_channels_last_network_exports_the_same_logits(digits_run: Path, tmp_path: Path) -> None:
    """ExecuTorch reads a channels-last input as contiguous (its tracker): the writer exports
    and feeds the contiguous layout, whatever the network was left in."""
    file_format = "executorch"
    model = TorchModel(str(digits_run), "averaged", "cpu")
    images = torch.randn(4, 1, 32, 32)
    expected = model.logits(images)
    net = model.net.to(memory_format=torch.channels_last)
    path = tmp_path / f"model{SUFFIX[file_format]}"
    FORMATS[file_format].write(net, model.preprocessing, images[:1], path)
    runtime = FORMATS[file_format].open(str(path))
    got = runtime.logits(images.contiguous(memory_format=torch.channels_last))
    assert (got - expected).abs().max() < 1e-4


@pytest.fixture(scope="module")
def foreign_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A ``.pte`` and a ``.tflite`` of another tool (no metadata of this kit) and garbage."""
    import litert_torch
    from executorch.exir import to_edge

    tmp_path = tmp_path_factory.mktemp("foreign")

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    example = (torch.randn(1, 1, 2, 2),)
    files = {"pte": tmp_path / "other.pte", "tflite": tmp_path / "other.tflite"}
    files["pte"].write_bytes(to_edge(torch.export.export(net, example)).to_executorch().buffer)
    files["tflite"].write_bytes(litert_torch.convert(net, example).model_content())
    files["garbage"] = tmp_path / "garbage.pte"
    files["garbage"].write_bytes(b"not a program")
    return files


def test_files_without_the_kits_metadata_are_refused_in_one_line(
    run_main, foreign_files: dict[str, Path], tmp_path: Path
) -> None:
    files = foreign_files
    expected = {
        "pte": "is an ExecuTorch file without this kit's metadata",
        "tflite": "is a LiteRT file without this kit's metadata",
        "garbage": "is not a readable ExecuTorch file",
    }
    for name, path in files.items():
        result = run_main("src/predict.py", f"ckpt_path={path}", f"input={tmp_path}",
                          f"paths.log_dir={tmp_path / 'logs'}")  # fmt: skip
        assert result.returncode == 2, result.stderr[-2000:]
        (line,) = result.stderr.strip().splitlines()
        assert expected[name] in line and str(path) in line
    assert not (tmp_path / "logs").exists()


def test_bad_export_input_is_one_line_and_writes_nothing(
    run_main, digits_run: Path, foreign_files: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "a_file").write_text("")
    cases = {
        "format=coreml": "format='coreml' is not available here: Core ML's tools compile",
        "format=mlir": "format='mlir' is not valid: use one of onnx, executorch, tflite",
        f"output_path={tmp_path / 'm.onnx'} format=tflite": "does not end in .tflite",
        f"output_path={tmp_path / 'a_file' / 'm.pte'} format=executorch": "cannot be written",
    }
    for overrides, message in cases.items():
        result = run_main("src/export.py", f"ckpt_path={digits_run}", *overrides.split(),
                          f"paths.log_dir={tmp_path / 'logs'}")  # fmt: skip
        assert result.returncode == 2, result.stderr[-2000:]
        (line,) = result.stderr.strip().splitlines()
        assert message in line, line
    other = foreign_files["pte"]
    result = run_main("src/export.py", f"ckpt_path={other}", "format=executorch",
                      f"paths.log_dir={tmp_path / 'logs'}")  # fmt: skip
    assert result.returncode == 2 and "is not a PyTorch checkpoint" in result.stderr
    assert not (tmp_path / "logs").exists() and not list(tmp_path.glob("m*"))


def test_a_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "executorch" else real(name)
    )
    with pytest.raises(ConfigError, match=r"needs executorch, not installed: pip install -e '\.\["):
        check_format("executorch")


def test_int8_calibrates_on_the_eval_preprocessing(digits_run: Path) -> None:
    """The calibration images are the training images as the test step sees them: no
    augmentation, the eval resize and normalisation."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from mobilenet_lab.runs.checkpoint import load_checkpoint
    from mobilenet_lab.runs.files import RUN_CONFIG_KEY

    config = OmegaConf.create(load_checkpoint(str(digits_run))[RUN_CONFIG_KEY]["config"])
    datamodule = instantiate(config.data)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        first = next(eval_batches(datamodule, "calibration", 8))[0]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        again = next(eval_batches(datamodule, "calibration", 8))[0]
    assert torch.equal(first, again)  # no random augmentation in them
    test_images = next(eval_batches(datamodule, "test", 8))[0]
    assert first.shape[1:] == test_images.shape[1:]
