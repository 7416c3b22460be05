"""LiteRT files (``.tflite``, TensorFlow Lite's format) of this kit: the eval network converted
by ``litert-torch`` at batch 1, fp32 or int8 (PT2E with LiteRT's quantizer: int8 in and out,
the scales in the file), the run's preprocessing in the file's metadata; run by
``ai_edge_litert``'s interpreter (with its XNNPACK delegate)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mobilenet_lab.deploy.preprocessing import METADATA_KEY, Preprocessing
from mobilenet_lab.runs.errors import UnreadableFile

EXAMPLE = "logs/train/runs/<time>/model.tflite (written by src/export.py)"


def litert_quantizer(per_channel: bool, qat: bool) -> Any:
    """LiteRT's PT2E quantizer: symmetric static int8, weights per channel or per tensor. For
    quantization-aware training, XNNPACK's: litert-torch 0.10's QAT annotation hands
    ``torch.export`` a function where torchao 0.18 wants a module, and XNNPACK's is TFLite's
    int8 scheme too (int8 activations with zero points, symmetric int8 weights), whose graph
    LiteRT's converter takes as it is (tests/test_qat.py: its classes are the network's)."""
    if qat:
        from mobilenet_lab.deploy.executorch import xnnpack_quantizer

        return xnnpack_quantizer(per_channel, qat)
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )

    config = get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=False)
    return PT2EQuantizer().set_global(config)


def write_tflite(
    net: nn.Module, prep: Preprocessing, example: Tensor, path: Path, quantizer: Any = None
) -> dict[str, Any]:
    """Writes ``net``, the eval network or its int8 PT2E graph made by ``quantizer`` (unfolded:
    LiteRT's converter folds the weights' quantize nodes itself)."""
    import litert_torch

    # an int8 graph (quantizer given) is already in eval mode: exported graphs refuse .eval()
    program = net if quantizer is not None else net.eval().to(memory_format=torch.contiguous_format)
    example = example[:1].contiguous()
    quant_config = None
    if quantizer is not None:  # the converter reads only its mode, static int8, from it: the
        # graph's quantize / dequantize pairs carry the scales, whichever quantizer made them
        from litert_torch.quantize.quant_config import QuantConfig

        quant_config = QuantConfig(pt2e_quantizer=litert_quantizer(True, False))
    model = litert_torch.convert(program, (example,), quant_config=quant_config)
    path.write_bytes(with_metadata(model.model_content(), prep))
    return {}


def with_metadata(content: bytes, prep: Preprocessing) -> bytes:
    """The flatbuffer with the preprocessing as JSON in a ``metadata`` entry of its own."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(prep.to_metadata()).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_KEY, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_tflite_metadata(path: str) -> Preprocessing:
    """The preprocessing ``src/export.py`` stored in the file; other files are
    ``UnreadableFile``."""
    from ai_edge_litert import schema_py_generated as schema

    if not Path(path).is_file():
        raise UnreadableFile(path, "does not exist", EXAMPLE)
    content = Path(path).read_bytes()
    if content[4:8] != b"TFL3":
        raise UnreadableFile(path, "is not a LiteRT (.tflite) file", EXAMPLE)
    model = schema.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_KEY.encode():
            data = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
            return Preprocessing.from_metadata(json.loads(data))
    raise UnreadableFile(
        path,
        "is a LiteRT file without this kit's metadata (class names, image size, mean and std): "
        "export it with src/export.py",
        EXAMPLE,
    )


class TfliteModel:
    """A ``.tflite`` file written by ``src/export.py``, run by LiteRT's interpreter; int8
    inputs and outputs are quantized and dequantized with the file's own scales."""

    def __init__(self, path: str, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.preprocessing = read_tflite_metadata(path)
        self.interpreter = Interpreter(model_path=path, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def logits(self, images: Tensor) -> Tensor:
        rows = []
        for image in images.split(1):
            self.interpreter.set_tensor(self.input["index"], _to(self.input, image.numpy()))
            self.interpreter.invoke()
            rows.append(_from(self.output, self.interpreter.get_tensor(self.output["index"])))
        return torch.from_numpy(np.concatenate(rows))


def _to(detail: dict[str, Any], values: np.ndarray) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return values.astype(np.float32, copy=False)
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(values / scale + zero), info.min, info.max).astype(detail["dtype"])


def _from(detail: dict[str, Any], values: np.ndarray) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return values
    scale, zero = detail["quantization"]
    return ((values.astype(np.float32) - zero) * scale).astype(np.float32)
