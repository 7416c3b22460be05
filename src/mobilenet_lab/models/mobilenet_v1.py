"""MobileNet V1, written from the paper (Howard et al. 2017, arXiv:1704.04861).

The body is Table 1 as data: a 3x3 stem conv, then 13 depthwise-separable blocks. Every conv
is followed by BatchNorm and an activation and carries no bias; the classifier is global
average pooling, dropout, and one fully connected layer with no nonlinearity.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from mobilenet_lab.checks import check_positive_int, is_number

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


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> activation: the unit every layer of Table 1 is made of."""

    def __init__(
        self, in_chans: int, out_chans: int, kernel_size: int, stride: int, groups: int, act: str
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_chans,
                out_chans,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_chans),
            ACTIVATIONS[act](inplace=True),
        )


class DepthwiseSeparable(nn.Sequential):
    """Figure 3 (right): 3x3 depthwise conv, then 1x1 pointwise conv, each with BN and act."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, act: str) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(in_chans, in_chans, 3, stride, groups=in_chans, act=act)
        self.pointwise = ConvBNAct(in_chans, out_chans, 1, 1, groups=1, act=act)


def check_args(
    alpha: float, num_classes: int, in_chans: int, dropout: float, act: str, stem_stride: int
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


def scale_width(channels: int, alpha: float) -> int:
    """Width multiplier: int(channels * alpha), as in the paper and Keras (never below 1)."""
    return max(1, int(channels * alpha))


class MobileNetV1(nn.Module):
    """MobileNet V1 with width multiplier ``alpha``; the resolution multiplier is the input size.

    ``stem_stride`` is 2 in the paper. For small inputs (32-64 px) ``stem_stride=1`` keeps
    four times as many positions through the body (32 px ends at 2x2 instead of 1x1), the same
    change CIFAR ports of MobileNet make; the rest of the network is unchanged.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        alpha: float = 1.0,
        in_chans: int = 3,
        dropout: float = 0.0,
        act: str = "relu",
        stem_stride: int = 2,
    ) -> None:
        super().__init__()
        check_args(alpha, num_classes, in_chans, dropout, act, stem_stride)
        stem_chans = scale_width(STEM_CHANNELS, alpha)
        self.stem = ConvBNAct(in_chans, stem_chans, 3, stem_stride, groups=1, act=act)
        blocks, chans = [], stem_chans
        for out_chans, stride in BLOCKS:
            blocks.append(DepthwiseSeparable(chans, scale_width(out_chans, alpha), stride, act))
            chans = scale_width(out_chans, alpha)
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
