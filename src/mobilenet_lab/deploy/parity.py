"""Whether an exported fp32 file computes the network it was exported from: its logits against
PyTorch's, judged against PyTorch's own float rounding on the same images rather than a fixed
number, so that a faithful file of a network with large logits passes and a wrong one fails.

Two fp32 implementations of one network (PyTorch, ONNX Runtime, XNNPACK) differ by rounding
alone: another summation order, BatchNorm folded into the weights before or after rounding.
Their difference is of the size of each one's distance from the exact result, which PyTorch
measures for itself by running the same network in fp64 on the same images (``rounding``).
The file passes if its logits differ from PyTorch's fp32 by at most ``factor`` times that, and
never less than a few fp32 steps of the largest logit (``FLOOR``: the precision fp32 holds the
logits in, should ``rounding`` be zero by chance). Faithful files measure a few times
``rounding``, a wrong layer or preprocessing hundreds of times the default bound and more
(measured in docs/deployment.md)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

# 8 fp32 steps (machine epsilon, 2**-23) of the largest logit: about 1e-6 of it
FLOOR = 8 * torch.finfo(torch.float32).eps
# how parity_factor may be set: under 1 a faithful file fails at random (it would have to be
# closer to PyTorch's fp32 than that is to the exact result); over 1000 the bound reaches 1e-3
# of the logits, where a planted wrong layer could hide
FACTOR_RANGE = (1, 1000)


def logit_parity(net: nn.Module, got: Tensor, images: Tensor, factor: float) -> dict[str, Any]:
    """The file's logits ``got`` on ``images`` against the eval ``net``'s: ``max_abs_diff``,
    PyTorch's own fp32 ``rounding`` (max |fp32 - fp64|), ``logit_scale`` (max |logit|), the
    ``bound`` the difference must not pass, ``passed`` and ``top1_agreement``."""
    with torch.inference_mode():
        expected = net(images)
        exact = copy.deepcopy(net).double()(images.double())
    scale = float(exact.abs().max())
    rounding = float((expected.double() - exact).abs().max())
    difference = float((got.double() - expected.double()).abs().max())
    bound = max(factor * rounding, FLOOR * scale)
    return {
        "max_abs_diff": difference,
        "rounding": rounding,
        "logit_scale": scale,
        "bound": bound,
        "passed": difference <= bound,
        "top1_agreement": float((got.argmax(1) == expected.argmax(1)).float().mean()),
    }
