"""The LightningModule: metric names per split, top-5 only with > 5 classes, weight decay groups."""

from __future__ import annotations

import pytest
import torch

from mobilenet_lab.models import MobileNetV1
from mobilenet_lab.training.module import ImageClassifier, parameter_groups


@pytest.mark.parametrize(("num_classes", "names"), [(10, {"acc", "acc5"}), (5, {"acc"})])
def test_top5_only_with_more_than_five_classes(num_classes: int, names: set[str]) -> None:
    module = ImageClassifier(MobileNetV1(num_classes=num_classes, alpha=0.25), num_classes)
    assert {key.split("/")[1] for key in module.test_metrics.keys(keep_base=False)} == names


def test_no_weight_decay_on_norm_bias_and_depthwise() -> None:
    net = MobileNetV1(alpha=0.25, num_classes=10)
    decay, no_decay = parameter_groups(net, ["norm", "bias", "depthwise"])
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    decayed = {id(p) for p in decay["params"]}
    assert id(net.classifier.weight) in decayed and id(net.classifier.bias) not in decayed
    assert id(net.blocks[0].pointwise[0].weight) in decayed
    assert id(net.blocks[0].depthwise[0].weight) not in decayed
    assert id(net.blocks[0].depthwise[1].weight) not in decayed  # BatchNorm scale
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))
    decay, _ = parameter_groups(net, ["norm", "bias"])
    assert id(net.blocks[0].depthwise[0].weight) in {id(p) for p in decay["params"]}


def test_unknown_no_weight_decay_kind_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown \['bn'\]"):
        parameter_groups(MobileNetV1(alpha=0.25), ["bn"])


def test_channels_last_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    net = MobileNetV1(alpha=0.25, num_classes=10, in_chans=1).eval()
    images = torch.randn(2, 1, 32, 32)
    expected = net(images)
    module = ImageClassifier(net, 10, channels_last=True).eval()
    torch.testing.assert_close(module(images), expected, rtol=1e-4, atol=1e-4)


def test_compile_switch_compiles_in_place() -> None:
    net = MobileNetV1(alpha=0.25, num_classes=10)
    names = set(net.state_dict())
    module = ImageClassifier(net, 10, compile=True)
    module.configure_model()
    assert net._compiled_call_impl is not None  # compiled on first call
    assert set(module.net.state_dict()) == names  # checkpoints keep the plain names
    plain = ImageClassifier(MobileNetV1(alpha=0.25), 1000)
    plain.configure_model()
    assert plain.net._compiled_call_impl is None
