"""ExecuTorch files (``.pte``) of this kit: the eval network (BatchNorm folded by XNNPACK into
the convolution before it) ``torch.export``ed at batch 1 and lowered to the XNNPACK delegate,
fp32 or int8 (PT2E with XNNPACK's quantizer), the run's preprocessing inside the file as a
constant method; run by ExecuTorch's Python runtime.

ExecuTorch reads a channels-last input as if it were contiguous, silently (its tracker, 2026):
the network is exported and fed in the contiguous layout whatever the run trained in."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mobilenet_lab.deploy.preprocessing import Preprocessing
from mobilenet_lab.runs.errors import UnreadableFile

METADATA_METHOD = "mobilenet_lab_metadata"  # returns the preprocessing as UTF-8 JSON bytes
EXAMPLE = "logs/train/runs/<time>/model.pte (written by src/export.py)"


def _quiet_torchao() -> None:
    """torchao, imported with ExecuTorch, warns through torch's logger of a deprecation inside
    torch: silenced before ExecuTorch is imported (here, not when this module is: the format
    table imports it in every process)."""
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def xnnpack_quantizer(per_channel: bool, qat: bool) -> Any:
    """XNNPACK's PT2E quantizer: symmetric int8, weights per channel or per tensor. For QAT,
    its fake quantizers are torchao's plain ``FakeQuantize`` (``_unfused``) and activations are
    observed by histogram, as its post-training calibration observes them: its moving min-max
    took every outlier of the augmented batches into the scales, and a timm V3-small (64 px,
    fp32 98.7%) fell to 77% in PyTorch before any weight had moved (97.1% by histogram)."""
    _quiet_torchao()
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    config = get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=qat)
    if qat:
        from torchao.quantization.pt2e.observer import HistogramObserver

        config = dataclasses.replace(
            config,
            input_activation=_unfused(config.input_activation, HistogramObserver),
            output_activation=_unfused(config.output_activation, HistogramObserver),
            weight=_unfused(config.weight),
        )
    return XNNPACKQuantizer().set_global(config)


def _unfused(spec: Any, observer: Any = None) -> Any:
    """``spec`` with torchao's ``FakeQuantize`` in place of its fused one, same arguments and
    observer (or ``observer``). torch 2.14's fused kernel is not what ``convert_pt2e`` writes:
    its symmetric weight scales are max|w|/127.5 (convert: /127, pytorch/ao#4824), and a
    channel whose weights share one sign gets half the scale and a zero point of +-127, which
    an int8 file's symmetric weights cannot hold; so the file left the grid the network
    trained on (a fresh timm V2 0.35: logits 0.36 apart of 1.9). ``FakeQuantize`` computes its
    scales as convert does."""
    from torchao.quantization.pt2e import FakeQuantize

    arguments = spec.observer_or_fake_quant_ctr.p.keywords
    if observer is not None:
        arguments = {**arguments, "observer": observer}
    return dataclasses.replace(spec, observer_or_fake_quant_ctr=FakeQuantize.with_args(**arguments))


def write_pte(
    net: nn.Module, prep: Preprocessing, example: Tensor, path: Path, quantizer: Any = None
) -> dict[str, Any]:
    """Writes ``net``, the eval network or its int8 PT2E graph (``quantizer``: the one that
    made it, which XNNPACK's lowering does not need); returns what XNNPACK took: operators
    before lowering, delegate calls after, and the operators left outside."""
    _quiet_torchao()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    # an int8 graph (quantizer given) is already in eval mode: exported graphs refuse .eval()
    program = net if quantizer is not None else net.eval().to(memory_format=torch.contiguous_format)
    example = example[:1].contiguous()
    exported = torch.export.export(program, (example,))
    metadata = json.dumps(prep.to_metadata()).encode()
    edge = to_edge_transform_and_lower(
        exported,
        partitioner=[XnnpackPartitioner()],
        constant_methods={METADATA_METHOD: torch.tensor(list(metadata), dtype=torch.uint8)},
    )
    report = delegation(exported, edge.exported_program())
    path.write_bytes(edge.to_executorch().buffer)
    return report


def delegation(exported: Any, lowered: Any) -> dict[str, Any]:
    """Convolutions (depthwise among them) before lowering; XNNPACK delegate calls and the
    operators XNNPACK did not take after it."""
    before = [n for n in exported.graph.nodes if n.op == "call_function"]
    convs = [n for n in before if "conv" in str(n.target)]
    depthwise = [n for n in convs if _is_depthwise(n)]
    after = Counter(
        "delegate" if "delegate" in str(n.target) else getattr(n.target, "__name__", str(n.target))
        for n in lowered.graph.nodes
        if n.op == "call_function" and "getitem" not in str(n.target)
    )
    return {
        "executorch/convolutions": len(convs),
        "executorch/depthwise_convolutions": len(depthwise),
        "executorch/delegate_calls": after.pop("delegate", 0),
        "executorch/not_delegated": dict(after),
    }


def _is_depthwise(conv: Any) -> bool:
    """One input channel per filter, more than one channel: read from the traced shapes."""
    channels = conv.args[0].meta["val"].shape[1]
    return conv.args[1].meta["val"].shape[1] == 1 and channels > 1


def read_pte_metadata(path: str) -> Preprocessing:
    """The preprocessing ``src/export.py`` stored in the file; other files are
    ``UnreadableFile``."""
    return _metadata(path, load_program(path))


def load_program(path: str) -> Any:
    """The file as ExecuTorch's runtime loads it; ``UnreadableFile`` for what is not a program."""
    _quiet_torchao()
    from executorch.runtime import Runtime

    if not Path(path).is_file():
        raise UnreadableFile(path, "does not exist", EXAMPLE)
    with open(path, "rb") as file:
        header = file.read(8)
    try:
        if header[4:6] != b"ET":  # the flatbuffer's identifier, ET12 today
            raise ValueError(f"identifier {header[4:8]!r}")
        program = Runtime.get().load_program(path)
    except Exception as error:  # the runtime's own RuntimeError / ValueError
        raise UnreadableFile(path, "is not a readable ExecuTorch file", EXAMPLE) from error
    return program


def _metadata(path: str, program: Any) -> Preprocessing:
    if METADATA_METHOD not in program.method_names:
        raise UnreadableFile(
            path,
            "is an ExecuTorch file without this kit's metadata (class names, image size, mean "
            "and std): export it with src/export.py",
            EXAMPLE,
        )
    (data,) = program.load_method(METADATA_METHOD).execute([])
    return Preprocessing.from_metadata(json.loads(bytes(data.tolist())))


class PteModel:
    """A ``.pte`` file written by ``src/export.py``, run by ExecuTorch's runtime (XNNPACK)."""

    def __init__(self, path: str) -> None:
        program = load_program(path)  # once: its metadata and its forward method
        self.preprocessing = _metadata(path, program)
        self.method = program.load_method("forward")

    def logits(self, images: Tensor) -> Tensor:
        """One image at a time (the file's batch), in the contiguous layout it was exported in."""
        rows = [self.method.execute([image.contiguous()])[0] for image in images.split(1)]
        return torch.cat(rows).float()


def set_threads(threads: int) -> None:
    """ExecuTorch's XNNPACK thread pool size (one pool for the process)."""
    _quiet_torchao()
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    _unsafe_reset_threadpool(threads)
