"""Keras's MobileNet weights ported into our V1 give Keras's own logits, from each file layout.

Keras (3, torch backend) is a test-only dependency: it builds the reference network with random
weights and BatchNorm statistics, saves it the ways Keras saves, and scores the same images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from mobilenet_lab.models import build_mobilenet_v1
from mobilenet_lab.runs.errors import ConfigError

os.environ["KERAS_BACKEND"] = "torch"  # before Keras is imported: its default is TensorFlow
import keras  # test-only (in .[dev]); the kit reads the files with h5py alone

SIZES = (224, 160, 161)  # 161: odd, and odd again after the stem (81), where Keras pads (0, 1)


def keras_mobilenet(alpha: float, size: int, classes: int = 1000) -> keras.Model:
    """Keras's MobileNet giving logits (with its classifier, Keras needs a fixed input size)."""
    return keras.applications.MobileNet(
        input_shape=(size, size, 3), alpha=alpha, weights=None, classes=classes,
        classifier_activation=None,
    )  # fmt: skip


def randomised_keras_mobilenet(alpha: float, size: int = 224, classes: int = 1000) -> keras.Model:
    """Keras's MobileNet with random weights and random BatchNorm statistics."""
    keras.utils.set_random_seed(0)
    model = keras_mobilenet(alpha, size, classes)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = (w.shape for w in layer.get_weights())
            layer.set_weights(
                [rng.uniform(0.5, 1.5, gamma), rng.uniform(-0.2, 0.2, beta),
                 rng.uniform(-0.5, 0.5, mean), rng.uniform(0.5, 2.0, var)]
            )  # fmt: skip
    return model


def write_keras2_h5(model: keras.Model, path: Path) -> Path:
    """The legacy layout Keras's applications download, written as Keras 2 named it:
    ``<layer>/<layer>/<weight>:0``, ``depthwise_kernel`` for a depthwise conv's kernel."""
    with h5py.File(path, "w") as file:
        file.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        file.attrs["backend"], file.attrs["keras_version"] = b"tensorflow", b"2.2.4"
        for layer in model.layers:
            group = file.create_group(layer.name)
            names = []
            for variable in layer.weights:
                name = variable.name
                if isinstance(layer, keras.layers.DepthwiseConv2D) and name == "kernel":
                    name = "depthwise_kernel"
                names.append(f"{layer.name}/{name}:0".encode())
                group[names[-1].decode()] = keras.ops.convert_to_numpy(variable.value)
            group.attrs["weight_names"] = names
    return path


def keras_logits(model: keras.Model, images: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(images, training=False))


def our_logits(init_from: str, images: np.ndarray, **kwargs: object) -> np.ndarray:
    net = build_mobilenet_v1(init_from=init_from, **kwargs).eval()
    with torch.no_grad():
        return net(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [1.0, 0.75, 0.5, 0.25])
def test_ported_weights_give_keras_logits(tmp_path: Path, alpha: float) -> None:
    reference = randomised_keras_mobilenet(alpha)
    files = {"keras 2 .h5": f"keras:{write_keras2_h5(reference, tmp_path / 'k2.h5')}"}
    reference.save_weights(tmp_path / "k3.weights.h5")
    files["keras 3 .weights.h5"] = f"keras:{tmp_path / 'k3.weights.h5'}"
    if alpha == 0.5:  # the other two layouts, once: the whole-model legacy .h5 and .keras
        reference.save(tmp_path / "k3_legacy.h5")
        reference.save(tmp_path / "k3.keras")
        files["keras 3 legacy .h5"] = f"keras:{tmp_path / 'k3_legacy.h5'}"
        files["keras 3 .keras"] = f"keras:{tmp_path / 'k3.keras'}"
    rng = np.random.default_rng(1)
    for size in SIZES:
        at_size = keras_mobilenet(alpha, size)  # the same weights, built for this input size
        at_size.set_weights(reference.get_weights())
        images = rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
        expected = keras_logits(at_size, images)
        assert expected.std() > 0.1  # logits that differ between classes: a real comparison
        for layout, init_from in files.items():
            logits = our_logits(init_from, images, alpha=alpha)
            difference = np.abs(logits - expected).max()
            assert difference < 1e-4, f"{layout}, {size} px: max |diff| {difference:.2e}"
            assert (logits.argmax(1) == expected.argmax(1)).all()


def test_tf_same_convs_pad_as_tensorflow() -> None:
    """Independently of the model code: TensorFlow's "same" on the stem is F.pad by
    (0, 1) for an even size and (1, 1) for an odd one, then a valid conv; Keras pads its
    stride-2 depthwise convs by (0, 1) for every size."""
    net = build_mobilenet_v1(alpha=0.25, padding="tf_same").eval()
    stem, depthwise = net.stem[0], net.blocks[1].depthwise[0]
    for size, before in ((224, 0), (161, 1)):
        image = torch.randn(1, 3, size, size)
        padded = torch.nn.functional.pad(image, (before, 1, before, 1))
        expected = torch.nn.functional.conv2d(padded, stem.weight, stride=2)
        assert torch.allclose(stem(image), expected, atol=1e-6)
        features = torch.randn(1, depthwise.in_channels, size // 2, size // 2)
        padded = torch.nn.functional.pad(features, (0, 1, 0, 1))
        expected = torch.nn.functional.conv2d(
            padded, depthwise.weight, stride=2, groups=depthwise.groups
        )
        assert torch.allclose(depthwise(features), expected, atol=1e-6)
    symmetric = build_mobilenet_v1(alpha=0.25).eval()
    image = torch.randn(1, 3, 224, 224)
    assert not torch.allclose(symmetric.stem[0](image), stem(image))  # padding=1 differs


def test_padding_and_bn_eps_change_no_count() -> None:
    from mobilenet_lab.analysis.counting import count_by_layer_type

    image = torch.zeros(1, 3, 224, 224)
    counts = [
        count_by_layer_type(build_mobilenet_v1(padding=padding, bn_eps=eps).eval(), image)
        for padding, eps in (("symmetric", 1e-5), ("tf_same", 1e-3))
    ]
    assert counts[0]["mult_adds"] == counts[1]["mult_adds"]
    assert counts[0]["params"] == counts[1]["params"]
    assert sum(counts[0]["mult_adds"].values()) == pytest.approx(569e6, rel=0.01)


def test_keras_settings_unless_given_and_a_new_classifier(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    reference = randomised_keras_mobilenet(0.25, size=32, classes=5)
    init_from = f"keras:{write_keras2_h5(reference, tmp_path / 'five.h5')}"
    net = build_mobilenet_v1(init_from=init_from, alpha=0.25, num_classes=5)
    assert isinstance(net.stem[2], torch.nn.ReLU6)
    assert net.stem[1].eps == 1e-3 and type(net.stem[0]).__name__ == "Conv2dSame"
    assert "model.padding=tf_same, model.act=relu6, model.bn_eps=0.001" in capsys.readouterr().out
    given = build_mobilenet_v1(init_from=init_from, alpha=0.25, num_classes=5, act="relu")
    assert isinstance(given.stem[2], torch.nn.ReLU) and given.stem[1].eps == 1e-3
    kernel = reference.get_layer("conv_preds").get_weights()[0]
    assert torch.equal(net.classifier.weight, torch.from_numpy(kernel[0, 0].T))
    fresh = build_mobilenet_v1(init_from=init_from, alpha=0.25, num_classes=7)  # fine-tuning
    assert fresh.classifier.weight.shape == (7, 256)
    assert torch.equal(fresh.stem[0].weight, net.stem[0].weight)


def test_bad_files_are_named_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.h5").write_text("not an HDF5 file")
    keras.utils.set_random_seed(0)
    v2 = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None)
    v2.save_weights(tmp_path / "v2.weights.h5")
    v2.save(tmp_path / "v2.h5")
    v1 = tmp_path / "v1.h5"
    write_keras2_h5(randomised_keras_mobilenet(0.5, size=32, classes=3), v1)
    cases = {
        "keras:missing.h5": r"init_from='keras:missing\.h5' does not exist",
        f"keras:{tmp_path / 'notes.h5'}": r"notes\.h5' is not an HDF5 file",
        f"keras:{tmp_path / 'v2.weights.h5'}": r"holds 35 conv2d layers where Keras's Mobi",
        f"keras:{tmp_path / 'v2.h5'}": r"v2\.h5' has no layer conv1: it holds Keras weights of",
        f"keras:{v1}": r"init_from holds alpha=0\.5 weights .* not model\.alpha=1: set mode",
    }
    for init_from, message in cases.items():
        with pytest.raises(ConfigError, match=message) as error:
            build_mobilenet_v1(init_from=init_from, num_classes=3)
        assert "\n" not in str(error.value)


def write_png_tree(root: Path, classes: int = 3, per_class: int = 2, size: int = 32) -> Path:
    """``train/`` and ``val/`` of lossless PNGs already at the network's input size."""
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for c in range(classes):
            (root / split / f"class_{c}").mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / f"class_{c}" / f"{i}.png")
    return root


@pytest.mark.slow
def test_eval_scores_keras_weights_without_a_checkpoint(run_main, tmp_path: Path) -> None:
    """``eval.py`` with ``model.init_from=keras:`` and ``data=imagenet_keras`` scores the
    images as Keras's own network scores them, preprocessed as x / 127.5 - 1."""
    data = write_png_tree(tmp_path / "images")
    reference = randomised_keras_mobilenet(0.25, size=32, classes=3)
    init_from = f"keras:{write_keras2_h5(reference, tmp_path / 'three.h5')}"
    result = run_main(
        "src/eval.py", f"model.init_from={init_from}", "model.alpha=0.25", "data=imagenet_keras",
        f"data.data_dir={data}", "data.image_size=32", "data.crop_pct=1.0", "data.num_workers=0",
        f"paths.log_dir={tmp_path / 'logs'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"model.init_from={init_from}: model.padding=tf_same, model.act=relu6" in result.stdout
    (metrics,) = (tmp_path / "logs" / "eval" / "runs").glob("*/metrics.json")
    report = json.loads(metrics.read_text())
    assert report["ckpt_path"] is None and report["init_from"] == init_from
    paths = sorted((data / "val").glob("*/*.png"))
    images = np.stack([np.asarray(Image.open(p), dtype=np.float32) / 127.5 - 1 for p in paths])
    labels = np.array([int(p.parent.name.removeprefix("class_")) for p in paths])
    expected = (keras_logits(reference, images).argmax(1) == labels).mean()
    assert report["test"]["test/acc"] == pytest.approx(expected)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keras_files")
    (root / "notes.h5").write_text("not an HDF5 file")
    keras.utils.set_random_seed(0)
    keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None).save(
        root / "mobilenet_v2.h5"
    )
    write_keras2_h5(randomised_keras_mobilenet(0.5, size=32), root / "mobilenet_5_0.h5")
    return {"notes": root / "notes.h5", "v2": root / "mobilenet_v2.h5",
            "half": root / "mobilenet_5_0.h5"}  # fmt: skip


CLI_BAD_INPUT = [
    (["model.init_from=keras:missing.h5"], "model.init_from='keras:missing.h5' does not exist"),
    (["model.init_from=keras:{notes}"], "notes.h5' is not an HDF5 file"),
    (["model.init_from=keras:{v2}"], "mobilenet_v2.h5' has no layer conv1: it holds Keras weigh"),
    (["model.init_from=keras:{half}"], "model.init_from holds alpha=0.5 weights (conv_pw_13 has"),
    (
        ["model.init_from=keras:{half}", "model.alpha=0.5", "model.padding=valid"],
        "model.padding='valid' is not valid: use symmetric",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "message"), CLI_BAD_INPUT)
def test_bad_input_fails_in_one_line_before_any_run_folder(
    run_main, tmp_path: Path, bad_files: dict[str, Path], overrides: list[str], message: str
) -> None:
    overrides = [override.format(**bad_files) for override in overrides]
    result = run_main("src/eval.py", *overrides, f"paths.log_dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert message in result.stderr
    assert not any(tmp_path.iterdir()), "a run folder was created"
