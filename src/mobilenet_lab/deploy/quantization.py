"""int8 post-training quantization of an exported network with ONNX Runtime's static
quantizer: QDQ format, int8 weights (7 bits of them) per channel (or per tensor), activations
calibrated (min-max) on a fixed set of training images of the run's data set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import Tensor


class BatchReader(CalibrationDataReader):
    """The calibration batches, one ONNX Runtime feed at a time."""

    def __init__(self, input_name: str, batches: Iterator[Tensor]) -> None:
        self.feeds = iter([{input_name: images.numpy().astype(np.float32)} for images in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    input_name: str,
    batches: Iterator[Tensor],
    per_channel: bool = True,
) -> None:
    """Writes the int8 version of ``fp32_path`` to ``int8_path``, calibrated on ``batches``.
    ONNX Runtime's pre-processing runs first: it removes the Identity nodes the exporter leaves
    where two folded biases are equal, which the quantizer would otherwise keep in float.
    Weights take 7 bits (ONNX Runtime's ``reduce_range``): its uint8 x int8 kernels on AVX2 and
    AVX-512 CPUs without VNNI add pairs of products in int16, which 8-bit weights overflow (a
    V1 0.25 at 91.1% fp32 scored 80.0% in int8 on an AVX2 EPYC, 91.1% with 7-bit weights), and
    a file is run on CPUs other than the one that wrote it."""
    prepared = int8_path.with_name(int8_path.name + ".prepared")
    try:
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared),
            str(int8_path),
            BatchReader(input_name, batches),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=True,
        )
    finally:
        prepared.unlink(missing_ok=True)
