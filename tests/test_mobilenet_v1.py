"""MobileNet V1 against the paper: Table 1's layers, the parameter and mult-add counts of
Tables 6 and 7 (Howard et al. 2017, arXiv:1704.04861), and the model's own argument checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mobilenet_lab.models import MobileNetV1


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
    macs = mult_adds(MobileNetV1().eval(), size) / 1e6
    if size == 160:  # the paper prints 290 where the exact count is 290.7 (truncated, not rounded)
        assert round(macs, 1) == 290.7
    else:
        assert round(macs) == TABLE_7[size]


def test_exact_parameter_count_alpha_1() -> None:
    # Conv weights + BN scale/shift + FC weight/bias; timm's mobilenetv1_100 has the same.
    assert param_count(MobileNetV1()) == 4_231_976


# Table 1 of the paper, written out row by row: (kind, kernel, in channels, out channels,
# stride, input side) of each conv at 224 px. The 13th depthwise conv is printed "s2" on a 7x7
# input; every reference implementation (TF-slim, Keras, timm) uses stride 1 there.
TABLE_1 = [
    ("conv", 3, 3, 32, 2, 224),
    ("dw", 3, 32, 32, 1, 112), ("pw", 1, 32, 64, 1, 112),
    ("dw", 3, 64, 64, 2, 112), ("pw", 1, 64, 128, 1, 56),
    ("dw", 3, 128, 128, 1, 56), ("pw", 1, 128, 128, 1, 56),
    ("dw", 3, 128, 128, 2, 56), ("pw", 1, 128, 256, 1, 28),
    ("dw", 3, 256, 256, 1, 28), ("pw", 1, 256, 256, 1, 28),
    ("dw", 3, 256, 256, 2, 28), ("pw", 1, 256, 512, 1, 14),
    *[("dw", 3, 512, 512, 1, 14), ("pw", 1, 512, 512, 1, 14)] * 5,
    ("dw", 3, 512, 512, 2, 14), ("pw", 1, 512, 1024, 1, 7),
    ("dw", 3, 1024, 1024, 1, 7), ("pw", 1, 1024, 1024, 1, 7),
]  # fmt: skip
# The same table as the issue spells it: output widths of the 27 convs' units and the
# depthwise strides.
WIDTHS = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
DEPTHWISE_STRIDES = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]


def test_table_1_layers() -> None:
    model = MobileNetV1().eval()
    seen = []  # (conv, input side) in the order the forward pass runs them
    hooks = [
        m.register_forward_hook(lambda mod, args, out: seen.append((mod, args[0].shape[-1])))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    for hook in hooks:
        hook.remove()
    rows = [
        ("dw" if c.groups > 1 else "pw" if c.kernel_size == (1, 1) else "conv",
         c.kernel_size[0], c.in_channels, c.out_channels, c.stride[0], side)
        for c, side in seen
    ]  # fmt: skip
    assert rows == TABLE_1
    assert [row[3] for row in rows if row[0] != "dw"] == WIDTHS
    assert [row[4] for row in rows if row[0] == "dw"] == DEPTHWISE_STRIDES
    assert all(c.groups == c.in_channels for c, _ in seen if c.groups > 1)
    assert all(c.bias is None for c, _ in seen)
    # Exactly 27 Conv -> BN -> ReLU units, then pool, dropout and the FC layer (28 layers).
    leaves = [type(m) for m in model.modules() if not list(m.children())]
    unit = [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert leaves == unit * 27 + [nn.AdaptiveAvgPool2d, nn.Dropout, nn.Linear]
    assert (model.classifier.in_features, model.classifier.out_features) == (1024, 1000)


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
