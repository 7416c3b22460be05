"""The shape-checked copy every port of another library's weights (``timm_port``,
``keras_port``) goes through: below the ports and the builder that picks one, so that neither
imports the other."""

from __future__ import annotations

from collections.abc import Collection

from torch import Tensor

from mobilenet_lab.models.mobilenet_v1 import MobileNetV1
from mobilenet_lab.runs.errors import ConfigError

CLASSIFIER_KEYS = ("classifier.weight", "classifier.bias")


def load_ported_tensors(
    model: MobileNetV1,
    ported: dict[str, tuple[str, Tensor]],
    hint: str,
    optional: Collection[str] = (),
) -> list[str]:
    """Copies ``ported`` (our name -> (the source's name, tensor in our layout)) into ``model``;
    returns the names left at their initialisation.

    The classifier is left as it is when the class counts differ (fine-tuning to a new label
    set); a tensor of ours with no source tensor (BatchNorm's step counters and ``optional``
    aside), or any other that does not fit, is a ConfigError ending with ``hint``.
    """
    ours = model.state_dict()
    needed = {name for name in ours if not name.endswith("num_batches_tracked")}
    missing = sorted(needed - set(ported) - set(optional))
    if missing:
        raise ConfigError(
            f"init_from has no tensor for MobileNetV1's {', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''}: {hint}"
        )
    loaded, skipped = {}, sorted(needed - set(ported))
    for name, (source_name, tensor) in ported.items():
        if ours[name].shape == tensor.shape:
            loaded[name] = tensor
        elif name in CLASSIFIER_KEYS:
            skipped.append(name)
        else:
            raise ConfigError(
                f"init_from tensor {source_name} has shape {tuple(tensor.shape)} but "
                f"MobileNetV1's {name} has shape {tuple(ours[name].shape)}: {hint}"
            )
    model.load_state_dict(loaded, strict=False)
    return skipped
