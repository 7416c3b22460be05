"""Loads timm's ``mobilenetv1_100`` weights into our hand-built V1, to fine-tune from ImageNet.

The two networks hold the same tensors (stem conv + BN, then depthwise conv + BN and pointwise
conv + BN for each of the 13 blocks, then the classifier) under other names; the port renames
each of timm's tensors; ``pretrained.load_ported_tensors`` checks the shapes.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import Tensor

from mobilenet_lab.models.mobilenet_v1 import MobileNetV1
from mobilenet_lab.models.ported_tensors import load_ported_tensors
from mobilenet_lab.runs.errors import ConfigError, load_tensors

TIMM_PREFIX = "timm:"
TIMM_HINT = "give a timm mobilenetv1_100 state dict, into alpha=1.0 with the same in_chans"


def read_timm_state_dict(source: str) -> dict[str, Tensor]:
    if source.startswith(TIMM_PREFIX):
        from mobilenet_lab.models.timm_models import cached_weights

        source = str(cached_weights(source.removeprefix(TIMM_PREFIX)))
    path = Path(source)
    if not path.is_file():
        raise ConfigError(
            f"init_from={source!r} does not exist: give a file with a timm mobilenetv1_100 "
            "state dict, or timm:mobilenetv1_100 for timm's cached weights"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state = load_tensors(
        path,
        "init_from",
        "give a .safetensors file or a torch.save file "
        "of tensors holding a timm mobilenetv1_100 state dict",
    )
    return state.get("state_dict", state) if isinstance(state, dict) else state


def load_timm_state_dict(model: MobileNetV1, timm_state: dict[str, Tensor]) -> list[str]:
    """Copies ``timm_state`` into ``model`` under our names; returns the names left out (the
    classifier, when the class counts differ)."""
    renamed = timm_names_to_ours(timm_state)
    ported = {name: (timm_name, timm_state[timm_name]) for timm_name, name in renamed.items()}
    return load_ported_tensors(model, ported, TIMM_HINT)


def timm_names_to_ours(timm_state: dict[str, Tensor]) -> dict[str, str]:
    """timm name -> our name. timm numbers blocks per stage (``blocks.3.5``); we number the
    13 blocks of Table 1 in order (``blocks.10``)."""
    parsed = {name: BLOCK_KEY.fullmatch(name) for name in timm_state}
    stage_blocks = sorted({(int(m[1]), int(m[2])) for m in parsed.values() if m})
    flat_index = {pair: index for index, pair in enumerate(stage_blocks)}
    renamed = {}
    for name, match in parsed.items():
        if match:
            index = flat_index[(int(match[1]), int(match[2]))]
            renamed[name] = f"blocks.{index}.{BLOCK_PARTS[match[3]]}.{match[4]}"
        elif name.split(".")[0] in TOP_PARTS and name.count(".") == 1:
            part, field = name.split(".")
            renamed[name] = f"{TOP_PARTS[part]}.{field}"
        else:
            raise ConfigError(
                f"init_from tensor {name} is not part of timm's mobilenetv1_100: give a timm "
                "mobilenetv1_100 state dict"
            )
    return renamed


BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(\d+)\.(conv_dw|bn1|conv_pw|bn2)\.(\w+)")
BLOCK_PARTS = {"conv_dw": "depthwise.0", "bn1": "depthwise.1", "conv_pw": "pointwise.0",
               "bn2": "pointwise.1"}  # fmt: skip
TOP_PARTS = {"conv_stem": "stem.0", "bn1": "stem.1", "classifier": "classifier"}
