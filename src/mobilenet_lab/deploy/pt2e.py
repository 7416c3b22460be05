"""int8 for the phone runtimes: PyTorch 2 Export static quantization (``torchao``'s PT2E) with
the runtime's own quantizer (XNNPACK's for ExecuTorch, LiteRT's for ``.tflite``): per-channel
int8 weights, activations calibrated on training images in the run's eval preprocessing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn


def pt2e_int8(
    net: nn.Module,
    example: Tensor,
    quantizer: Any,
    batches: Iterable[Tensor],
    fold_quantize: bool = True,
) -> nn.Module:
    """The eval network exported, observed by ``quantizer`` on ``batches`` one image at a time
    (the files take batch 1), and converted to int8 quantize / dequantize pairs, which the
    runtime's lowering turns into int8 kernels."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = torch.export.export(net.eval(), (example,)).module()
    prepared = prepare_pt2e(graph, quantizer)
    move_exported_model_to_eval(prepared)
    with torch.no_grad():
        for images in batches:
            for image in images.split(1):
                prepared(image.contiguous())
    converted = convert_pt2e(prepared, fold_quantize=fold_quantize)
    move_exported_model_to_eval(converted)
    return converted
