"""The file formats ``src/export.py`` writes and ``src/predict.py`` reads, one ``Format`` each
in ``FORMATS``: ONNX (a server runtime), ExecuTorch ``.pte`` and LiteRT ``.tflite`` (the two
that ship models inside Android and iOS apps). Each holds its suffix, the extra that installs
it, its writers, its reader and its runtime; its own module (``deploy/onnx.py``, ...) does the
work, importing the format's packages only when used. Adding a format is one entry here and its
module: export, predict, distillation's exported teacher, the start-up checks and the runtime
speed table all go through this table."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from mobilenet_lab.deploy import executorch, litert, onnx
from mobilenet_lab.deploy.preprocessing import Preprocessing
from mobilenet_lab.deploy.pt2e import QatNetwork, QuantizerFactory, pt2e_int8
from mobilenet_lab.runs.errors import ConfigError, Refused


@contextmanager
def refused_on_failure(what: str, outcome: str = "nothing was written") -> Iterator[None]:
    """A converter's or a runtime's own failure inside (an operator it does not take, a pass
    that fails, a file its runtime will not load) as a ``Refused`` line: ``what`` failed, the
    error's type and first line, ``outcome``. Our own one-line errors pass through."""
    try:
        yield
    except (ConfigError, Refused):
        raise
    except Exception as error:
        lines = str(error).strip().splitlines() or [""]
        reason = f"{type(error).__name__}: {lines[0][:300]}".rstrip(": ")
        raise Refused(f"{what} failed ({reason}); {outcome}") from error


@dataclass(frozen=True)
class Format:
    """One export format. ``writer`` writes the eval network, or its int8 PT2E graph made with
    the runtime's ``quantizer`` (post-training from calibration batches, or from a
    quantization-aware network), unless ``int8_from_file`` makes the int8 file from the fp32
    one (ONNX Runtime's quantizer); ``opener`` gives the file's runtime behind
    ``logits(images)`` and ``.preprocessing``; ``metadata_reader`` the preprocessing stored in
    a file (``UnreadableFile`` for any other); ``thread_setter`` sizes a runtime's own thread
    pool, where it has one outside the ``threads`` its opener takes."""

    name: str  # format=<name>
    suffix: str
    runtime: str  # its runtime's name in messages
    extra: str  # pip install -e '.[<extra>]'
    modules: tuple[str, ...]  # what that extra installs
    writer: Callable[..., dict[str, Any] | None]
    opener: Callable[[str, int | None], Any]
    metadata_reader: Callable[[str], Preprocessing]
    int8_from_file: Callable[[Path, Path, list[Tensor], bool], None] | None = None
    quantizer: QuantizerFactory | None = None  # PT2E: (per_channel, qat) -> the runtime's
    fold_quantize: bool = True  # False: the converter folds the weights' quantize nodes itself
    thread_setter: Callable[[int], None] | None = None
    for_phones: bool = False  # a format apps ship: scripts/benchmark_export.py --parity judges it

    def check_installed(self) -> None:
        missing = [name for name in self.modules if importlib.util.find_spec(name) is None]
        if missing:
            raise ConfigError(
                f"format={self.name} needs {', '.join(missing)}, not installed: "
                f"pip install -e '.[{self.extra}]'"
            )

    def write(
        self,
        net: nn.Module,
        prep: Preprocessing,
        example: Tensor,
        path: Path,
        quantizer: Any = None,
    ) -> dict[str, Any]:
        """Writes ``net`` (an int8 PT2E graph when ``quantizer``, the one that made it, is
        given); returns what the lowering reported. A network the converter does not take is
        ``Refused``."""
        precision = "fp32" if quantizer is None else "int8"
        what = f"format={self.name}: converting the network to an {precision} file"
        others = ", ".join(other for other in FORMATS if other != self.name)
        outcome = f"nothing was written (another format may take this network: format={others})"
        with refused_on_failure(what, outcome):
            if quantizer is None:
                return self.writer(net, prep, example, path) or {}
            return self.writer(net, prep, example, path, quantizer) or {}

    def write_int8(
        self,
        net: nn.Module,
        prep: Preprocessing,
        example: Tensor,
        fp32_path: Path,
        int8_path: Path,
        calibration: list[Tensor],
        per_channel: bool = True,
    ) -> dict[str, Any]:
        """The post-training int8 file, calibrated on ``calibration`` batches: from the fp32
        file at ``fp32_path`` (already written) where ``int8_from_file`` is set, else PT2E from
        ``net`` with the runtime's quantizer."""
        if self.int8_from_file is not None:
            self.int8_from_file(fp32_path, int8_path, calibration, per_channel)
            return {}
        quantizer = self.quantizer(per_channel, False)
        with refused_on_failure(f"format={self.name}: quantizing the network (PT2E)"):
            program = pt2e_int8(net, example, quantizer, calibration, self.fold_quantize)
        return self.write(program, prep, example, int8_path, quantizer)

    def qat_network(self, net: nn.Module, example: Tensor, per_channel: bool) -> QatNetwork:
        """``net`` as the quantization-aware graph of this runtime's quantizer; a network the
        quantizer or ``torch.export`` cannot take is ``Refused``."""
        if self.quantizer is None:
            pt2e = ", ".join(name for name, fmt in FORMATS.items() if fmt.quantizer)
            raise ConfigError(
                f"qat.format={self.name} is not valid: its int8 file is {self.runtime}'s "
                "post-training quantization of the fp32 file, which has no learned scales to "
                f"carry; quantization-aware training exports to format={pt2e}"
            )
        what = f"qat.format={self.name}: preparing the network for quantization-aware training"
        with refused_on_failure(what, "nothing was trained"):
            return QatNetwork(net, example, self.quantizer, per_channel)

    def write_qat(self, net: QatNetwork, prep: Preprocessing, example: Tensor, path: Path) -> dict:
        """The int8 file of a quantization-aware network, with the scales it learned."""
        with refused_on_failure(f"format={self.name}: converting the QAT network (PT2E)"):
            program = net.converted(self.fold_quantize)
        return self.write(program, prep, example, path, net.quantizer)

    def open(self, path: str, threads: int | None = None) -> Any:
        """The file's runtime behind ``logits(images)`` and ``preprocessing``; a file its
        runtime will not load is ``Refused``, one that is not this kit's ``UnreadableFile``."""
        self.check_installed()
        with refused_on_failure(f"loading {path} in {self.runtime}"):
            return self.opener(path, threads)

    def read_metadata(self, path: str) -> Preprocessing:
        """The preprocessing stored in the file; ``UnreadableFile`` for a file of another tool."""
        self.check_installed()
        return self.metadata_reader(path)

    def set_threads(self, threads: int) -> None:
        """The runtime's own thread pool, where it has one, at ``threads``."""
        if self.thread_setter is not None:
            self.thread_setter(threads)


FORMATS: dict[str, Format] = {
    fmt.name: fmt
    for fmt in (
        Format(
            "onnx", ".onnx", "ONNX Runtime", "export", ("onnx", "onnxruntime"),
            writer=onnx.write_onnx, opener=onnx.OnnxModel,
            metadata_reader=onnx.read_onnx_metadata, int8_from_file=onnx.quantize_onnx,
        ),
        Format(
            "executorch", ".pte", "ExecuTorch", "executorch", ("executorch",),
            writer=executorch.write_pte, opener=lambda path, threads: executorch.PteModel(path),
            metadata_reader=executorch.read_pte_metadata,
            quantizer=executorch.xnnpack_quantizer,
            thread_setter=executorch.set_threads, for_phones=True,
        ),
        Format(
            "tflite", ".tflite", "LiteRT", "litert", ("litert_torch", "ai_edge_litert"),
            writer=litert.write_tflite, opener=litert.TfliteModel,
            metadata_reader=litert.read_tflite_metadata, for_phones=True,
            quantizer=litert.litert_quantizer, fold_quantize=False,
        ),
    )
}  # fmt: skip
NOT_ON_THIS_SYSTEM = {
    "coreml": "Core ML's tools compile and run its files on macOS only; for iPhones export "
    "format=executorch or format=tflite, which both run on iOS",
}


def check_format(name: object) -> Format:
    """A format this kit writes, with its packages installed."""
    if name in NOT_ON_THIS_SYSTEM:
        raise ConfigError(f"format={name!r} is not available here: {NOT_ON_THIS_SYSTEM[name]}")
    if name not in FORMATS:
        raise ConfigError(f"format={name!r} is not valid: use one of {', '.join(FORMATS)}")
    fmt = FORMATS[str(name)]
    fmt.check_installed()
    return fmt


def format_of(path: str) -> Format | None:
    """The format a file's suffix names (None: not an exported file, e.g. a checkpoint)."""
    suffix = Path(path).suffix.lower()
    return next((fmt for fmt in FORMATS.values() if fmt.suffix == suffix), None)


def output_paths(
    ckpt_path: str, output_path: str | None, quantize: str | None, file_format: str = "onnx"
) -> list[Path]:
    """fp32 file first, then the int8 one: ``<run>/model.<suffix>`` and
    ``<run>/model.int8.<suffix>`` beside the run's ``checkpoints/`` folder unless
    ``output_path`` names the fp32 file."""
    suffix = FORMATS[file_format].suffix
    run_dir = Path(ckpt_path).resolve().parent.parent
    fp32 = Path(output_path) if output_path else run_dir / f"model{suffix}"
    return [fp32, fp32.with_suffix(".int8" + suffix)] if quantize else [fp32]


def by_suffix(path: str) -> Format:
    """The format of an exported file, by its suffix."""
    fmt = format_of(path)
    if fmt is None:
        known = ", ".join(fmt.suffix for fmt in FORMATS.values())
        raise ConfigError(f"{path!r} is not an exported file: its suffix is none of {known}")
    return fmt
