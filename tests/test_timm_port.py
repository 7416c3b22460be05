"""timm's mobilenetv1_100 weights ported into our V1 give the same network."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from mobilenet_lab.models import MobileNetV1, build_mobilenet_v1
from mobilenet_lab.models.timm_port import load_timm_state_dict
from mobilenet_lab.runs.errors import ConfigError


def randomised_timm_v1() -> torch.nn.Module:
    """timm's V1 with random weights and random BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv1_100")
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_ported_weights_give_the_same_logits(tmp_path: Path) -> None:
    reference = randomised_timm_v1()
    path = tmp_path / "mobilenetv1_100.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
    ours = build_mobilenet_v1(init_from=str(path), act="relu6").eval()
    images = torch.randn(4, 3, 224, 224)
    with torch.no_grad():
        difference = (ours(images) - reference(images)).abs().max().item()
    assert difference < 1e-4


def test_a_torch_save_file_and_a_new_classifier(tmp_path: Path) -> None:
    reference = randomised_timm_v1()
    path = tmp_path / "v1.pth"
    torch.save(reference.state_dict(), path)
    ours = MobileNetV1(num_classes=10, act="relu6")
    skipped = load_timm_state_dict(ours, torch.load(path, weights_only=True))
    assert skipped == ["classifier.weight", "classifier.bias"]  # fine-tuning to 10 classes
    assert torch.equal(ours.stem[0].weight, reference.conv_stem.weight)
    assert torch.equal(
        ours.blocks[12].pointwise[1].running_var, reference.blocks[4][1].bn2.running_var
    )


def test_tensors_that_do_not_fit_are_named_with_both_shapes() -> None:
    state = timm.create_model("mobilenetv1_100").state_dict()
    message = (r"conv_stem\.weight has shape \(32, 3, 3, 3\) but MobileNetV1's stem\.0\.weight "
               r"has shape \(32, 1, 3, 3\)")  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        load_timm_state_dict(MobileNetV1(in_chans=1), state)
    with pytest.raises(ConfigError, match=r"no tensor for MobileNetV1's classifier\.bias"):
        load_timm_state_dict(MobileNetV1(), dict(list(state.items())[:-2]))
    with pytest.raises(ConfigError, match=r"init_from tensor head\.fc\.weight is not part"):
        load_timm_state_dict(MobileNetV1(), {**state, "head.fc.weight": torch.zeros(1)})
    with pytest.raises(ConfigError, match=r"init_from tensor conv_stem\.weight has shape"):
        load_timm_state_dict(MobileNetV1(alpha=0.5), state)


def test_missing_init_from_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"init_from='.*nothing\.pth' does not exist"):
        build_mobilenet_v1(init_from=str(tmp_path / "nothing.pth"))


def test_init_from_timm_reads_the_local_cache(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub.constants
    from safetensors.torch import load_file

    from tests.test_timm_models import fake_hf_cache

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match="no cached weights for mobilenetv1_100"):
        build_mobilenet_v1(init_from="timm:mobilenetv1_100")
    weights = load_file(fake_hf_cache(tmp_path, "mobilenetv1_100"))
    ours = build_mobilenet_v1(init_from="timm:mobilenetv1_100", act="relu6")
    assert torch.equal(ours.stem[0].weight, weights["conv_stem.weight"])
    assert torch.equal(ours.classifier.weight, weights["classifier.weight"])
