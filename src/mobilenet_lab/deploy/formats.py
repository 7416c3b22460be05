"""The file formats ``src/export.py`` writes and ``src/predict.py`` reads: ONNX (a server
runtime), ExecuTorch ``.pte`` and LiteRT ``.tflite`` (the two that ship models inside Android
and iOS apps). Each one's writer, reader and runtime, imported only when used, and the extra
that installs it."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from mobilenet_lab.deploy.preprocessing import Preprocessing
from mobilenet_lab.runs.errors import ConfigError, Refused

SUFFIXES = {"onnx": ".onnx", "executorch": ".pte", "tflite": ".tflite"}
RUNTIMES = {"onnx": "ONNX Runtime", "executorch": "ExecuTorch", "tflite": "LiteRT"}
# format: (the pip extra, the modules it installs)
EXTRAS = {
    "onnx": ("export", ("onnx", "onnxruntime")),
    "executorch": ("executorch", ("executorch",)),
    "tflite": ("litert", ("litert_torch", "ai_edge_litert")),
}
NOT_ON_THIS_SYSTEM = {
    "coreml": "Core ML's tools compile and run its files on macOS only; for iPhones export "
    "format=executorch or format=tflite, which both run on iOS",
}


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


def check_format(name: object) -> None:
    """A format this kit writes, with its packages installed."""
    valid = ", ".join(SUFFIXES)
    if name in NOT_ON_THIS_SYSTEM:
        raise ConfigError(f"format={name!r} is not available here: {NOT_ON_THIS_SYSTEM[name]}")
    if name not in SUFFIXES:
        raise ConfigError(f"format={name!r} is not valid: use one of {valid}")
    check_installed(str(name))


def check_installed(name: str) -> None:
    extra, modules = EXTRAS[name]
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(
            f"format={name} needs {', '.join(missing)}, not installed: pip install -e '.[{extra}]'"
        )


def format_of(path: str) -> str | None:
    """The format a file's suffix names (None: not an exported file, e.g. a checkpoint)."""
    suffix = Path(path).suffix.lower()
    return next((name for name, known in SUFFIXES.items() if known == suffix), None)


def output_paths(
    ckpt_path: str, output_path: str | None, quantize: str | None, file_format: str = "onnx"
) -> list[Path]:
    """fp32 file first, then the int8 one: ``<run>/model.<suffix>`` and
    ``<run>/model.int8.<suffix>`` beside the run's ``checkpoints/`` folder unless
    ``output_path`` names the fp32 file."""
    suffix = SUFFIXES[file_format]
    run_dir = Path(ckpt_path).resolve().parent.parent
    fp32 = Path(output_path) if output_path else run_dir / f"model{suffix}"
    return [fp32, fp32.with_suffix(".int8" + suffix)] if quantize else [fp32]


def write_file(
    name: str,
    net: nn.Module,
    prep: Preprocessing,
    example: Tensor,
    path: Path,
    calibration: Any = None,
) -> dict[str, Any]:
    """Writes ``net`` as ``name`` (int8 with ``calibration`` batches, for the phone formats;
    ONNX's int8 is made from its fp32 file instead); returns what the lowering reported. A
    network the converter does not take is ``Refused``."""
    precision = "fp32" if calibration is None else "int8"
    what = f"format={name}: converting the network to an {precision} file"
    others = ", ".join(other for other in SUFFIXES if other != name)
    outcome = f"nothing was written (another format may take this network: format={others})"
    with refused_on_failure(what, outcome):
        if name == "onnx":
            from mobilenet_lab.deploy.onnx import write_onnx

            write_onnx(net, prep, example, path)
            return {}
        if name == "executorch":
            from mobilenet_lab.deploy.executorch import write_pte

            return write_pte(net, prep, example, path, calibration)
        from mobilenet_lab.deploy.litert import write_tflite

        return write_tflite(net, prep, example, path, calibration)


def open_file(path: str, threads: int | None = None) -> Any:
    """The exported file's runtime behind ``logits(images)`` and ``preprocessing``; a file its
    runtime will not load is ``Refused``."""
    name = format_of(path)
    check_installed(name)
    with refused_on_failure(f"loading {path} in {RUNTIMES[name]}"):
        if name == "onnx":
            from mobilenet_lab.deploy.onnx import OnnxModel

            return OnnxModel(path, threads)
        if name == "executorch":
            from mobilenet_lab.deploy.executorch import PteModel

            return PteModel(path)
        from mobilenet_lab.deploy.litert import TfliteModel

        return TfliteModel(path, threads)


def read_metadata(path: str) -> Preprocessing:
    """The preprocessing stored in an exported file; a ConfigError for a file of another tool."""
    name = format_of(path)
    check_installed(name)
    if name == "onnx":
        from mobilenet_lab.deploy.onnx import read_onnx_metadata

        return read_onnx_metadata(path)
    if name == "executorch":
        from mobilenet_lab.deploy.executorch import read_pte_metadata

        return read_pte_metadata(path)
    from mobilenet_lab.deploy.litert import read_tflite_metadata

    return read_tflite_metadata(path)
