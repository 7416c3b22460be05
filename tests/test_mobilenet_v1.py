"""MobileNet V1 against the paper: Table 1's layers, the parameter and mult-add counts of
Tables 6 and 7 (Howard et al. 2017, arXiv:1704.04861), and the model's own argument checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mobilenet_lab.models import MobileNetV1
from mobilenet_lab.models.mobilenet_v1 import BLOCKS


def mult_adds(model: nn.Module, size: int) -> int:
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, size, size))
    return counter.get_total_flops() // 2  # FlopCounterMode counts a multiply-add as 2


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Table 6: alpha -> (million mult-adds, million params) at 224 px, as printed.
TABLE_6 = {1.0: (569, 4.2), 0.75: (325, 2.6), 0.5: (149, 1.3), 0.25: (41, 0.5)}
# Table 7: input size -> million mult-adds at alpha 1.0.
TABLE_7 = {224: 569, 192: 418, 160: 290, 128: 186}


@pytest.mark.parametrize("alpha", list(TABLE_6))
def test_counts_match_paper_table_6_exactly(alpha: float) -> None:
    model = MobileNetV1(alpha=alpha).eval()
    paper_macs, paper_params = TABLE_6[alpha]
    assert round(mult_adds(model, 224) / 1e6) == paper_macs
    assert round(param_count(model) / 1e6, 1) == paper_params


@pytest.mark.parametrize("size", list(TABLE_7))
def test_mult_adds_match_paper_table_7(size: int) -> None:
    # Within 0.5%: the paper prints 290 at 160 px where the exact count is 290.7.
    assert mult_adds(MobileNetV1().eval(), size) / 1e6 == pytest.approx(TABLE_7[size], rel=0.005)


def test_exact_parameter_count_alpha_1() -> None:
    # Conv weights + BN scale/shift + FC weight/bias; timm's mobilenetv1_100 has the same.
    assert param_count(MobileNetV1()) == 4_231_976


def test_table_1_layers() -> None:
    model = MobileNetV1()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 27 and len(list(model.modules())) > 0  # + the FC layer = 28 layers
    assert all(conv.bias is None for conv in convs)
    depthwise = [c for c in convs if c.groups > 1]
    assert [c.stride[0] for c in depthwise] == [stride for _, stride in BLOCKS]
    assert all(c.groups == c.in_channels == c.out_channels for c in depthwise)
    pointwise = [c for c in convs if c.kernel_size == (1, 1)]
    assert [c.out_channels for c in pointwise] == [channels for channels, _ in BLOCKS]
    assert convs[0].out_channels == 32 and convs[0].stride == (2, 2)
    # Every conv is followed by BatchNorm then ReLU.
    for unit in (m for m in model.modules() if isinstance(m, nn.Sequential) and len(m) == 3):
        if isinstance(unit[0], nn.Conv2d):
            assert isinstance(unit[1], nn.BatchNorm2d) and isinstance(unit[2], nn.ReLU)
    assert model.classifier.in_features == 1024


@pytest.mark.parametrize(
    ("alpha", "widths"), [(0.75, (24, 768)), (0.5, (16, 512)), (0.3, (9, 307))]
)
def test_width_multiplier_scales_every_layer(alpha: float, widths: tuple[int, int]) -> None:
    model = MobileNetV1(alpha=alpha)
    assert (model.stem[0].out_channels, model.num_features) == widths


@pytest.mark.parametrize(("size", "stem_stride", "final"), [(224, 2, 7), (32, 2, 1), (32, 1, 2)])
def test_feature_map_sizes(size: int, stem_stride: int, final: int) -> None:
    model = MobileNetV1(num_classes=10, in_chans=1, stem_stride=stem_stride).eval()
    features = model.forward_features(torch.randn(2, 1, size, size))
    assert features.shape == (2, 1024, final, final)
    assert model(torch.randn(2, 1, size, size)).shape == (2, 10)
    assert model.min_input_size == 32 // (2 // stem_stride)


def test_relu6_option_and_dropout() -> None:
    model = MobileNetV1(act="relu6", dropout=0.2)
    assert any(isinstance(m, nn.ReLU6) for m in model.modules())
    assert not any(type(m) is nn.ReLU for m in model.modules())
    assert model.dropout.p == 0.2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0}, "alpha=0 is not a valid width multiplier"),
        ({"alpha": -1.0}, "alpha=-1.0"),
        ({"alpha": "abc"}, "alpha='abc'"),
        ({"act": "gelu"}, "act='gelu' is not valid: use one of ['relu', 'relu6']"),
        ({"num_classes": 0}, "num_classes=0"),
        ({"stem_stride": 3}, "stem_stride=3"),
        ({"dropout": 1.0}, "dropout=1.0"),
    ],
)
def test_bad_arguments_name_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        MobileNetV1(**kwargs)
