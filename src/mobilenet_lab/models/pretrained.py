"""Our V1 started from another library's trained weights: the builder ``conf/model/mobilenet_v1``
names, which hands ``init_from`` to its port (``timm_port``, ``keras_port``), and the settings a
checkpoint's network is rebuilt with (``as_trained``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

from mobilenet_lab.models.mobilenet_v1 import MobileNetV1


def build_mobilenet_v1(
    init_from: str | None = None,
    act: str | None = None,
    padding: str | None = None,
    bn_eps: float | None = None,
    **kwargs: object,
) -> MobileNetV1:
    """``MobileNetV1(**kwargs)``, then the weights ``init_from`` names:

    - ``keras:<file>``: Keras's MobileNet weights (``keras_port``); ``act``, ``padding`` and
      ``bn_eps`` left at None become Keras's (relu6, tf_same, 1e-3), said in one line;
    - ``timm:mobilenetv1_100`` or a file of timm's state dict (``timm_port``).

    None for ``act``, ``padding`` or ``bn_eps`` otherwise means MobileNetV1's own default.
    """
    chosen = {"act": act, "padding": padding, "bn_eps": bn_eps}
    if init_from and init_from.startswith("keras:"):
        from mobilenet_lab.models import keras_port

        weights = keras_port.read_keras_weights(init_from)  # a bad file fails before building
        unset = {key: value for key, value in keras_port.KERAS_BUILD.items() if chosen[key] is None}
        if unset:
            listing = ", ".join(f"model.{key}={value}" for key, value in unset.items())
            keras_port.say_once(f"model.init_from={init_from}: {listing}, as Keras built it")
        model = MobileNetV1(**kwargs, **{**_given(chosen), **unset})
        keras_port.load_keras_weights(model, weights)
        return model
    model = MobileNetV1(**kwargs, **_given(chosen))
    if init_from:
        from mobilenet_lab.models import timm_port

        timm_port.load_timm_state_dict(model, timm_port.read_timm_state_dict(init_from))
    return model


def as_trained(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A model config that rebuilds the trained network from itself alone: the settings
    ``init_from=keras:`` chose (relu6, tf_same, 1e-3) written out, and no weights to fetch
    (``init_from`` and timm's ``pretrained`` off: a checkpoint's weights replace them).

    Every rebuild of a trained run (resume, eval, predict, export, the report's latency) goes
    through here, so a file that has moved since, or a config saved before this existed (with
    ``act/padding/bn_eps: null``), still gives the network that was trained."""
    built = (
        OmegaConf.to_container(model_cfg, resolve=True)
        if OmegaConf.is_config(model_cfg)
        else dict(model_cfg)
    )
    init_from = str(built.get("init_from") or "")
    if init_from.startswith("keras:"):
        from mobilenet_lab.models.keras_port import KERAS_BUILD

        built.update({k: v for k, v in KERAS_BUILD.items() if k in built and built[k] is None})
    built.update({k: v for k, v in (("init_from", None), ("pretrained", False)) if k in built})
    return built


def _given(settings: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in settings.items() if value is not None}
