"""timm's V2 / V3 / V1 under our knobs: widths, forward passes, and pretrained weights offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file

from mobilenet_lab.jobs.startup_checks import check_train_config
from mobilenet_lab.models.timm_models import create
from mobilenet_lab.runs.errors import ConfigError

FAMILIES = ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "timm_mobilenet_v1"]
TWO_WIDTHS = {
    "mobilenet_v2": (0.5, 1.0),
    "mobilenet_v3_large": (0.75, 1.0),
    "mobilenet_v3_small": (0.5, 1.0),
    "timm_mobilenet_v1": (1.0, 1.25),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", [32, 64])
def test_family_builds_and_runs_at_two_widths(make_cfg, family: str, size: int) -> None:
    narrow, wide = TWO_WIDTHS[family]
    features = []
    for alpha in (narrow, wide):
        cfg = make_cfg("train", [f"model={family}", f"model.alpha={alpha}",
                                 f"data.image_size={size}", "model.drop_path=0.1"])  # fmt: skip
        net = instantiate(cfg.model).eval()
        out = net(torch.randn(2, 1, size, size))
        assert out.shape == (2, 10)  # num_classes and in_chans from the digits config
        assert net.min_input_size == 32
        features.append(sum(p.numel() for p in net.parameters()))
    assert features[0] < features[1]  # alpha widens the network


def test_alpha_timm_cannot_build_lists_the_widths() -> None:
    with pytest.raises(ConfigError, match=r"alpha=0\.6 .* mobilenet_v2: use one of \[0\.35, 0\.5"):
        create("mobilenet_v2", alpha=0.6)
    with pytest.raises(ConfigError, match=r"use one of \[1\.0, 1\.25\]"):
        create("timm_mobilenet_v1", alpha=0.5)


def test_bad_alpha_in_config_names_the_key(make_cfg) -> None:
    cfg = make_cfg("train", ["model=mobilenet_v3_large", "model.alpha=0.5"])
    with pytest.raises(ConfigError, match=r"^model\.alpha=0\.5 is not a width timm builds"):
        check_train_config(cfg)


def test_dropout_and_drop_path_reach_timm() -> None:
    net = create("mobilenet_v3_small", num_classes=7, in_chans=1, dropout=0.3, drop_path=0.2)
    assert net.drop_rate == 0.3
    assert any(type(m).__name__ == "DropPath" for m in net.modules())


def fake_hf_cache(root: Path, name: str) -> Path:
    """Lays out a Hugging Face cache entry for ``name`` with random timm weights in it."""
    import timm
    from safetensors.torch import save_file

    repo = timm.models.get_pretrained_cfg(name).hf_hub_id
    entry = root / f"models--{repo.replace('/', '--')}"
    snapshot = entry / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text("0123abcd")
    state = timm.create_model(name).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")
    return snapshot / "model.safetensors"


def test_pretrained_loads_from_the_local_cache(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match="no cached weights for mobilenetv3_small_100"):
        create("mobilenet_v3_small", pretrained=True)
    weights = fake_hf_cache(tmp_path, "mobilenetv3_small_100")
    net = create("mobilenet_v3_small", pretrained=True)
    expected = load_file(weights)["conv_stem.weight"]
    assert torch.equal(net.state_dict()["conv_stem.weight"], expected)
