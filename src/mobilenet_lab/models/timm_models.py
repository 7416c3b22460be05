"""MobileNet V2 / V3 (and timm's own V1) from timm, under the same knobs as our V1.

``alpha`` is the width multiplier for every family; timm builds each width as a named variant,
so an alpha timm has no variant for is refused with the list of widths it has.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from mobilenet_lab.runs.errors import ConfigError, check_positive_int

# family -> {alpha: timm model name}: the widths timm registers for each family.
VARIANTS: dict[str, dict[float, str]] = {
    "mobilenet_v2": {
        0.35: "mobilenetv2_035",
        0.5: "mobilenetv2_050",
        0.75: "mobilenetv2_075",
        1.0: "mobilenetv2_100",
        1.4: "mobilenetv2_140",
    },
    "mobilenet_v3_large": {0.75: "mobilenetv3_large_075", 1.0: "mobilenetv3_large_100"},
    "mobilenet_v3_small": {
        0.5: "mobilenetv3_small_050",
        0.75: "mobilenetv3_small_075",
        1.0: "mobilenetv3_small_100",
    },
    "timm_mobilenet_v1": {1.0: "mobilenetv1_100", 1.25: "mobilenetv1_125"},
}


def variant_name(family: str, alpha: float) -> str:
    """The timm model name for ``family`` at width ``alpha``; a ConfigError lists the options."""
    if family not in VARIANTS:
        raise ConfigError(f"family={family!r} is not valid: use one of {sorted(VARIANTS)}")
    widths = VARIANTS[family]
    if alpha not in widths:
        raise ConfigError(
            f"alpha={alpha!r} is not a width timm builds for {family}: use one of {sorted(widths)}"
        )
    return widths[alpha]


def create(
    family: str,
    num_classes: int = 1000,
    alpha: float = 1.0,
    in_chans: int = 3,
    dropout: float = 0.0,
    drop_path: float = 0.0,
    pretrained: bool = False,
) -> nn.Module:
    """``timm.create_model`` for the family's variant at ``alpha``.

    ``pretrained=True`` loads timm's weights from the local Hugging Face cache only: it never
    downloads, so an offline machine fails at once with a message instead of hanging.
    """
    import timm  # imported here: V1 runs do not pay for importing timm and torchvision

    name = variant_name(family, alpha)
    check_positive_int("num_classes", num_classes)
    check_positive_int("in_chans", in_chans)
    overlay = {"file": str(cached_weights(name))} if pretrained else None
    model = timm.create_model(
        name,
        pretrained=pretrained,
        pretrained_cfg_overlay=overlay,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=dropout,
        drop_path_rate=drop_path,
    )
    model.min_input_size = model.feature_info[-1]["reduction"]
    return model


def cached_weights(name: str) -> Path:
    """The file of timm's default pretrained weights for ``name`` in the local HF cache."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(name)
    repo = cfg.hf_hub_id if cfg is not None else None
    if not repo:
        raise ConfigError(f"pretrained=true: timm has no pretrained weights for {name}")
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(repo, filename)
        if isinstance(path, str):
            return Path(path)
    raise ConfigError(
        f"pretrained=true: no cached weights for {name} (Hugging Face repo {repo}). Download "
        f'them on a machine with internet (python -c "import timm; '
        f"timm.create_model('{name}', pretrained=True)\") and copy ~/.cache/huggingface here, "
        "or use pretrained=false"
    )
