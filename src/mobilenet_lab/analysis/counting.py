"""Parameters, mult-adds and activations of a network by the paper's layer types (Table 2).

Mult-adds come from ``torch.utils.flop_counter`` (which counts a multiply-add as 2 FLOPs); the
layer type of each count is read from the module that ran it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

LAYER_TYPES = ("stem_3x3", "depthwise_3x3", "pointwise_1x1", "fully_connected")


def layer_type(module: nn.Module) -> str | None:
    """Table 2's layer types: which one a conv or linear layer is (None for other modules)."""
    if isinstance(module, nn.Linear):
        return "fully_connected"
    if not isinstance(module, nn.Conv2d):
        return None
    if module.groups > 1 and module.groups == module.in_channels:
        return "depthwise_3x3"
    if module.kernel_size == (1, 1):
        return "pointwise_1x1"
    return "stem_3x3"


def count_by_layer_type(model: nn.Module, image: Tensor) -> dict[str, dict[str, float]]:
    """Mult-adds, parameters and output elements of one forward pass, per layer type."""
    macs: dict[str, int] = defaultdict(int)
    params: dict[str, int] = defaultdict(int)
    activations: dict[str, int] = defaultdict(int)
    hooks = []
    for module in model.modules():
        kind = layer_type(module)
        if kind is None:
            continue
        params[kind] += sum(p.numel() for p in module.parameters(recurse=False))

        def record(mod: nn.Module, args: Any, output: Tensor, kind: str = kind) -> None:
            activations[kind] += output[0].numel()  # one image of the batch
            with FlopCounterMode(display=False) as counter:
                mod.forward(*args)  # not mod(): that would run this hook again
            macs[kind] += counter.get_total_flops() // 2 // output.shape[0]

        hooks.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(image)
    finally:
        for hook in hooks:
            hook.remove()
    return {"mult_adds": dict(macs), "params": dict(params), "activations": dict(activations)}
