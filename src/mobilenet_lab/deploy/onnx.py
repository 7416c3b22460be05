"""ONNX files of this kit: written from the eval network with the run's preprocessing in their
metadata, read back and run by ONNX Runtime."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mobilenet_lab.deploy.preprocessing import METADATA_KEY, Preprocessing
from mobilenet_lab.runs.errors import Refused, UnreadableFile

INPUT_NAME, OUTPUT_NAME = "image", "logits"
EXAMPLE = "logs/train/runs/<time>/model.onnx (written by src/export.py)"


def write_onnx(net: nn.Module, prep: Preprocessing, example: Tensor, path: Path) -> None:
    """TorchScript-based export of the eval-mode network (which folds BatchNorm into the
    convolutions), batch axis dynamic, the preprocessing as metadata; refuses a graph that
    still has a BatchNormalization node."""
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy-exporter notice: it needs no onnxscript
        torch.onnx.export(
            net.eval(), (example,), buffer, dynamo=False, opset_version=17,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )  # fmt: skip
    model = onnx.load_from_string(buffer.getvalue())
    left = [node.name for node in model.graph.node if node.op_type == "BatchNormalization"]
    if left:  # a BatchNorm not right after a convolution: the exporter leaves it a node
        raise Refused(
            f"format=onnx: {len(left)} BatchNorm layer(s) were not folded into a convolution "
            f"({', '.join(left[:3])}): nothing was written"
        )
    for key, value in prep.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)


class OnnxModel:
    """An ONNX file written by ``src/export.py``, run by ONNX Runtime."""

    def __init__(self, path: str, threads: int | None = None) -> None:
        self.preprocessing = read_onnx_metadata(path)
        self.session = onnx_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, images: Tensor) -> Tensor:
        feed = {self.input_name: images.numpy().astype(np.float32, copy=False)}
        return torch.from_numpy(self.session.run(None, feed)[0])


def read_onnx_metadata(path: str) -> Preprocessing:
    """The preprocessing ``src/export.py`` stored in the file's metadata; other files are
    ``UnreadableFile``."""
    import onnx

    if not Path(path).is_file():
        raise UnreadableFile(path, "does not exist", EXAMPLE)
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends
        raise UnreadableFile(path, "is not a readable ONNX file", EXAMPLE) from error
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    if METADATA_KEY not in metadata:
        raise UnreadableFile(
            path,
            "is an ONNX file without this kit's metadata (class names, image size, mean and "
            "std): export it with src/export.py",
            EXAMPLE,
        )
    return Preprocessing.from_metadata(metadata)


def quantize_onnx(
    fp32_path: Path, int8_path: Path, calibration: list[Tensor], per_channel: bool = True
) -> None:
    """The int8 file made from the fp32 file by ONNX Runtime's static quantizer
    (``deploy.quantization``, imported here: it imports ONNX Runtime)."""
    from mobilenet_lab.deploy.quantization import quantize_int8

    quantize_int8(fp32_path, int8_path, INPUT_NAME, iter(calibration), per_channel)


def onnx_session(path: str, threads: int | None = None) -> Any:
    """An ONNX Runtime session on the CPU, named explicitly: with onnxruntime-gpu installed,
    ONNX Runtime would otherwise put every process (each DDP rank's teacher) on GPU 0. Its
    intra-op threads: ``threads``, by default this process's share of the cores as torch has it
    (Lightning's DDP gives each of N processes 1/N of them), not one per core in every process.
    The files' inputs and outputs are CPU tensors, and the runtimes of ``.pte`` and ``.tflite``
    run on the CPU too."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
