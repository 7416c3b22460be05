"""Loads Keras's ``applications.MobileNet`` weights into our hand-built V1: Google's released
networks for every alpha and input size of the paper's Tables 6 and 7 (``mobilenet_<alpha>_
<rows>_tf.h5``, converted from TF-slim's checkpoints).

Three layouts are read, with h5py only (no Keras needed):

- legacy HDF5, as ``keras.applications`` downloads it and Keras 2 saves: root attribute
  ``layer_names``, datasets ``<layer>/<layer>/<weight>:0`` (Keras 3's legacy saver drops ``:0``
  and calls a depthwise kernel ``kernel``), under ``model_weights/`` in a whole-model file;
- Keras 3's ``.weights.h5``: ``layers/<class>_<n>/vars/<i>``, layers named by class and
  numbered in the order the network builds them;
- Keras 3's ``.keras`` archive, which holds that file as ``model.weights.h5``.

Keras names layers ``conv1`` (stem), ``conv_dw_<i>`` / ``conv_pw_<i>`` (block i = 1..13),
``<layer>_bn`` (their BatchNorm) and ``conv_preds`` (the 1x1-conv classifier). Its kernels are
HWIO (depthwise: H, W, C, 1); ours are OIHW.
"""

from __future__ import annotations

import functools
import io
import zipfile
from pathlib import Path

import h5py
import numpy as np
import torch

from mobilenet_lab.models.mobilenet_v1 import BLOCKS, MobileNetV1
from mobilenet_lab.models.ported_tensors import CLASSIFIER_KEYS, load_ported_tensors
from mobilenet_lab.runs.errors import ConfigError

KERAS_PREFIX = "keras:"
# How Keras built the network the weights were trained in (MobileNetV1's own defaults differ).
KERAS_BUILD = {"padding": "tf_same", "act": "relu6", "bn_eps": 1e-3}
EXAMPLE = "e.g. model.init_from=keras:mobilenet_5_0_160_tf.h5"
BN_WEIGHTS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
              "moving_variance": "running_var"}  # fmt: skip
# Keras 3's native layout names layers by class, numbered in building order.
NATIVE_ORDER = {"conv2d": ["conv1", *(f"conv_pw_{i}" for i in range(1, 14)), "conv_preds"],
                "depthwise_conv2d": [f"conv_dw_{i}" for i in range(1, 14)],
                "batch_normalization": ["conv1_bn", *(f"conv_{kind}_{i}_bn" for i in range(1, 14)
                                                      for kind in ("dw", "pw"))]}  # fmt: skip
NATIVE_VARS = {"conv2d": ["kernel", "bias"], "depthwise_conv2d": ["kernel", "bias"],
               "batch_normalization": list(BN_WEIGHTS)}  # fmt: skip

KerasWeights = dict[str, dict[str, np.ndarray]]  # layer -> weight name -> array


def read_keras_weights(init_from: str) -> KerasWeights:
    """The layers of Keras's MobileNet in the file ``keras:<file>`` names, each as
    ``{weight: array}`` with Keras 2's weight names (``kernel``, ``gamma``, ...)."""
    path = Path(init_from.removeprefix(KERAS_PREFIX))
    if not path.is_file():
        raise ConfigError(f"init_from={init_from!r} does not exist: {EXAMPLE}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if "model.weights.h5" not in archive.namelist():
                raise ConfigError(
                    f"init_from={init_from!r} is a zip archive without model.weights.h5: give a "
                    f"Keras .keras file, .weights.h5 or .h5 file, {EXAMPLE}"
                )
            contents = io.BytesIO(archive.read("model.weights.h5"))
        return _read_hdf5(contents, init_from)
    if not h5py.is_hdf5(path):
        raise ConfigError(
            f"init_from={init_from!r} is not an HDF5 file: give a Keras weight file (.h5, "
            f".weights.h5 or .keras), {EXAMPLE}"
        )
    return _read_hdf5(path, init_from)


def _read_hdf5(source: Path | io.BytesIO, init_from: str) -> KerasWeights:
    with h5py.File(source, "r") as file:
        root = file.get("model_weights", file)
        if "layer_names" in root.attrs:
            weights = _read_legacy(root)
        elif "layers" in root:
            weights = _read_native(root["layers"], init_from)
        else:
            raise ConfigError(
                f"init_from={init_from!r} is an HDF5 file but not Keras weights (no layer_names, "
                f"no layers/): {EXAMPLE}"
            )
    absent = [layer for layer in NATIVE_ORDER["conv2d"][:-1] if layer not in weights]
    if absent:
        raise ConfigError(
            f"init_from={init_from!r} has no layer {absent[0]}: it holds Keras weights of "
            f"another network (layers {', '.join(list(weights)[:3])} ...), not Keras's "
            f"MobileNet (V1), {EXAMPLE}"
        )
    return weights


def _read_legacy(root: h5py.Group) -> KerasWeights:
    weights: KerasWeights = {}
    for layer in map(_text, root.attrs["layer_names"]):
        names = [_text(name) for name in root[layer].attrs.get("weight_names", [])]
        if names:
            weights[layer] = {_weight_name(name): np.asarray(root[layer][name]) for name in names}
    return weights


def _read_native(layers: h5py.Group, init_from: str) -> KerasWeights:
    weights: KerasWeights = {}
    for kind, keras_names in NATIVE_ORDER.items():
        stored = sorted((name for name in layers if _class_of(name) == kind), key=_number)
        if len(stored) not in (len(keras_names), len(keras_names) - (kind == "conv2d")):
            raise ConfigError(
                f"init_from={init_from!r} holds {len(stored)} {kind} layers where Keras's "
                f"MobileNet (V1) has {len(keras_names)}: it holds another network, {EXAMPLE}"
            )
        for name, keras_name in zip(stored, keras_names, strict=False):
            variables = layers[name]["vars"]
            count = len(variables)
            weights[keras_name] = {NATIVE_VARS[kind][i]: np.asarray(variables[str(i)])
                                   for i in range(count)}  # fmt: skip
    return weights


def load_keras_weights(model: MobileNetV1, weights: KerasWeights) -> list[str]:
    """Copies Keras's layers into ``model``; returns the names left at their initialisation
    (the classifier, when the class counts differ or the file has no ``conv_preds``)."""
    width = weights["conv_pw_13"]["kernel"].shape[-1]
    if width != model.num_features:
        file_alpha = width / BLOCKS[-1][0]
        raise ConfigError(
            f"init_from holds alpha={file_alpha:g} weights (conv_pw_13 has {width} channels), "
            f"not model.alpha={model.alpha:g}: set model.alpha={file_alpha:g}"
        )
    ported = {}
    for ours, layer in [("stem", "conv1"), *_block_layers()]:
        kernel = torch.from_numpy(weights[layer]["kernel"])
        to_oihw = (2, 3, 0, 1) if layer.startswith("conv_dw") else (3, 2, 0, 1)
        ported[f"{ours}.0.weight"] = (layer, kernel.permute(*to_oihw))
        for keras_name, name in BN_WEIGHTS.items():
            bn_weight = torch.from_numpy(weights[f"{layer}_bn"][keras_name])
            ported[f"{ours}.1.{name}"] = (f"{layer}_bn/{keras_name}", bn_weight)
    if "conv_preds" in weights:  # a 1x1 conv: kernel (1, 1, features, classes)
        head = weights["conv_preds"]
        ported["classifier.weight"] = ("conv_preds", torch.from_numpy(head["kernel"][0, 0].T))
        ported["classifier.bias"] = ("conv_preds/bias", torch.from_numpy(head["bias"]))
    ported = {name: (source, t.float().contiguous()) for name, (source, t) in ported.items()}
    hint = "give Keras's MobileNet (V1) weights, with model.in_chans=3"
    return load_ported_tensors(model, ported, hint, optional=CLASSIFIER_KEYS)


def _block_layers() -> list[tuple[str, str]]:
    """(our module, Keras's layer) for each conv of the 13 blocks."""
    return [
        (f"blocks.{i - 1}.{ours}", f"conv_{keras}_{i}")
        for i in range(1, len(BLOCKS) + 1)
        for ours, keras in (("depthwise", "dw"), ("pointwise", "pw"))
    ]


def _text(name: str | bytes) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def _weight_name(name: str) -> str:
    """``conv_dw_1/depthwise_kernel:0`` (Keras 2) or ``conv_dw_1/kernel`` (Keras 3) -> kernel."""
    base = name.split("/")[-1].removesuffix(":0")
    return "kernel" if base == "depthwise_kernel" else base


def _class_of(name: str) -> str:
    """``batch_normalization_12`` -> ``batch_normalization``."""
    stem, _, number = name.rpartition("_")
    return stem if number.isdigit() else name


def _number(name: str) -> int:
    number = name.rpartition("_")[2]
    return int(number) if number.isdigit() else 0


@functools.cache
def say_once(line: str) -> None:
    """Prints ``line`` once per process: the config check builds the network before the run
    builds it again."""
    print(line)
