"""MobileNet V1, written from the paper (Howard et al. 2017, arXiv:1704.04861).

The body is Table 1 as data: a 3x3 stem conv, then 13 depthwise-separable blocks. Every conv
is followed by BatchNorm and an activation and carries no bias; the classifier is global
average pooling, dropout, and one fully connected layer with no nonlinearity.

``padding`` says how the stride-2 convs pad: ``symmetric`` (PyTorch's ``padding=1`` on every
side) or ``tf_same``, as Keras's MobileNet pads them, so that Google's released weights (trained
in TensorFlow) give their own logits here: TensorFlow's "same" on the stem (for an even input, the
one extra row and column go at the bottom and right only; odd inputs pad both sides) and one row
and column at the bottom and right before each stride-2 depthwise conv (Keras's
``ZeroPadding2D(((0, 1), (0, 1)))``: "same" for the even sizes the weights were trained at; for an
odd input TF-slim's graph would pad both sides, Keras's does not, and we follow Keras's).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from mobilenet_lab.runs.errors import check_positive_int, is_number

# Table 1: (pointwise output channels, depthwise stride) of each depthwise-separable block.
# The paper prints the 13th depthwise conv as stride 2 on a 7x7 input; every reference
# implementation (TF-slim, Keras, timm) uses stride 1 there, and so do we.
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
STEM_CHANNELS = 32
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "relu6": nn.ReLU6}
PADDINGS = ("symmetric", "tf_same")


class Conv2dPadBottomRight(nn.Conv2d):
    """Keras's ``ZeroPadding2D(((0, 1), (0, 1)))`` then a valid conv: one zero row and column
    at the bottom and right, how Keras's MobileNet pads its stride-2 depthwise convs."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (0, 1, 0, 1)))


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> activation: the unit every layer of Table 1 is made of.
    ``conv`` is the conv class: ``nn.Conv2d`` padding kernel_size // 2 on every side, or one of
    the ``tf_same`` classes of ``conv_class``, which pad by themselves."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int,
        stride: int,
        groups: int,
        act: str,
        bn_eps: float,
        conv: type[nn.Conv2d] = nn.Conv2d,
    ) -> None:
        padding = kernel_size // 2 if conv is nn.Conv2d else 0
        super().__init__(
            conv(
                in_chans,
                out_chans,
                kernel_size,
                stride=stride,
                padding=padding,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_chans, eps=bn_eps),
            ACTIVATIONS[act](inplace=True),
        )


def conv_class(padding: str, stride: int, layer: str) -> type[nn.Conv2d]:
    """The conv class of a stem or depthwise conv: only stride-2 convs pad differently. Under
    ``tf_same`` the stem is timm's ``Conv2dSame``, which computes TensorFlow's "same" padding per
    side from the input size at run time (imported here: timm costs a second of start-up that
    the default run does not need)."""
    if padding != "tf_same" or stride != 2:
        return nn.Conv2d
    if layer == "depthwise":
        return Conv2dPadBottomRight
    from timm.layers import Conv2dSame

    return Conv2dSame


class DepthwiseSeparable(nn.Sequential):
    """Figure 3 (right): 3x3 depthwise conv, then 1x1 pointwise conv, each with BN and act."""

    def __init__(
        self, in_chans: int, out_chans: int, stride: int, act: str, padding: str, bn_eps: float
    ) -> None:
        super().__init__()
        conv = conv_class(padding, stride, "depthwise")
        self.depthwise = ConvBNAct(in_chans, in_chans, 3, stride, in_chans, act, bn_eps, conv)
        self.pointwise = ConvBNAct(in_chans, out_chans, 1, 1, 1, act, bn_eps)


def check_args(
    alpha: float,
    num_classes: int,
    in_chans: int,
    dropout: float,
    act: str,
    stem_stride: int,
    padding: str,
    bn_eps: float,
) -> None:
    """Fail before building anything, naming the bad value and what would be valid."""
    if not is_number(alpha) or not 0 < alpha < math.inf:
        raise ValueError(
            f"alpha={alpha!r} is not a valid width multiplier: use a number > 0 "
            "(the paper's are 1.0, 0.75, 0.5, 0.25)"
        )
    check_positive_int("num_classes", num_classes)
    check_positive_int("in_chans", in_chans)
    if not is_number(dropout) or not 0 <= dropout < 1:
        raise ValueError(f"dropout={dropout!r} is not valid: use a number in [0, 1)")
    if act not in ACTIVATIONS:
        raise ValueError(f"act={act!r} is not valid: use one of {sorted(ACTIVATIONS)}")
    if stem_stride not in (1, 2):
        raise ValueError(
            f"stem_stride={stem_stride!r} is not valid: use 2 (the paper) or 1 (small inputs)"
        )
    if padding not in PADDINGS:
        raise ValueError(
            f"padding={padding!r} is not valid: use symmetric (PyTorch's, on every side) or "
            "tf_same (TensorFlow's, as Keras's MobileNet pads: for Google's weights)"
        )
    if not is_number(bn_eps) or not 0 < bn_eps < 1:
        raise ValueError(
            f"bn_eps={bn_eps!r} is not valid: use a number in (0, 1) (1e-5 PyTorch's, 1e-3 Keras's)"
        )


def scale_width(channels: int, alpha: float) -> int:
    """Width multiplier: int(channels * alpha), as in the paper and Keras (never below 1)."""
    return max(1, int(channels * alpha))


class MobileNetV1(nn.Module):
    """MobileNet V1 with width multiplier ``alpha``; the resolution multiplier is the input size.

    ``stem_stride`` is 2 in the paper. For small inputs (32-64 px) ``stem_stride=1`` keeps
    four times as many positions through the body (32 px ends at 2x2 instead of 1x1), the same
    change CIFAR ports of MobileNet make; the rest of the network is unchanged. ``padding`` and
    ``bn_eps`` (BatchNorm's epsilon) change no parameter and no mult-add: ``tf_same`` and 1e-3
    build the network as TensorFlow ran it, for its weights.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        alpha: float = 1.0,
        in_chans: int = 3,
        dropout: float = 0.0,
        act: str = "relu",
        stem_stride: int = 2,
        padding: str = "symmetric",
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        check_args(alpha, num_classes, in_chans, dropout, act, stem_stride, padding, bn_eps)
        self.alpha = alpha
        stem_chans = scale_width(STEM_CHANNELS, alpha)
        stem_conv = conv_class(padding, stem_stride, "stem")
        self.stem = ConvBNAct(in_chans, stem_chans, 3, stem_stride, 1, act, bn_eps, stem_conv)
        blocks, chans = [], stem_chans
        for out_chans, stride in BLOCKS:
            width = scale_width(out_chans, alpha)
            blocks.append(DepthwiseSeparable(chans, width, stride, act, padding, bn_eps))
            chans = width
        self.blocks = nn.Sequential(*blocks)
        self.num_features = chans
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(chans, num_classes)
        self.min_input_size = stem_stride * 2 ** sum(stride == 2 for _, stride in BLOCKS)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.blocks(self.stem(x))

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.forward_features(x)).flatten(1)
        return self.classifier(self.dropout(x))
