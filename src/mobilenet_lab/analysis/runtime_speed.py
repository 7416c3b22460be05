"""Batch-1 latency of one network in every runtime the kit exports to (PyTorch eager, ONNX
Runtime, ExecuTorch with XNNPACK, LiteRT; fp32 and int8), measured one after the other in this
process, beside the machine's own limit: the multiply-adds per second of a large matrix
multiply at the same thread count (fp32, and int8 where the CPU has VNNI dot products)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mobilenet_lab.analysis.timing import median_seconds
from mobilenet_lab.deploy.formats import FORMATS, by_suffix
from mobilenet_lab.deploy.preprocessing import Preprocessing

CPU = torch.device("cpu")


def has_vnni() -> bool:
    """The CPU multiplies int8 vectors in one instruction (x86's AVX-512 VNNI or AVX-VNNI)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def matmul_macs_per_second(threads: int, int8: bool = False, size: int = 2048) -> float:
    """Multiply-adds per second of a ``size`` x ``size`` matrix product at ``threads``
    threads, the better of torch's and NumPy's (OpenBLAS) GEMM: what these cores reach on
    the easiest dense work. int8: ``torch._int_mm`` (int8 x int8 -> int32)."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    if int8:
        a = torch.randint(-128, 128, (size, size), dtype=torch.int8)
        b = torch.randint(-128, 128, (size, size), dtype=torch.int8)
        seconds = median_seconds(lambda: torch._int_mm(a, b), repeats=5, warmup=2, device=CPU)
        return size**3 / seconds
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds = median_seconds(lambda: a @ b, repeats=5, warmup=2, device=CPU)
    x, y = a.numpy(), b.numpy()
    with threadpool_limits(threads):
        seconds = min(seconds, median_seconds(lambda: x @ y, repeats=5, warmup=2, device=CPU))
    return size**3 / seconds


RUNTIMES = ("torch", *(f"{name}_{kind}" for name in FORMATS for kind in ("fp32", "int8")))


def export_all(
    net: nn.Module,
    prep: Preprocessing,
    example: Tensor,
    folder: Path,
    calibration: list[Tensor],
    runtimes: tuple[str, ...] = RUNTIMES,
) -> dict[str, Path]:
    """The files of ``net`` the ``runtimes`` run (``onnx_int8``: ONNX Runtime's quantizer on
    the fp32 file, the others PT2E: ``Format.write_int8``), written to ``folder``."""
    files: dict[str, Path] = {}
    for name, fmt in FORMATS.items():
        fp32, int8 = folder / f"{name}{fmt.suffix}", folder / f"{name}.int8{fmt.suffix}"
        wants_int8 = f"{name}_int8" in runtimes
        if f"{name}_fp32" in runtimes or (wants_int8 and fmt.int8_from_file is not None):
            fmt.write(net, prep, example, fp32)
            files[f"{name}_fp32"] = fp32
        if wants_int8:
            fmt.write_int8(net, prep, example, fp32, int8, calibration)
            files[f"{name}_int8"] = int8
    return {name: path for name, path in files.items() if name in runtimes}


def latencies(
    net: nn.Module, files: dict[str, Path], image: Tensor, threads: int, repeats: int
) -> dict[str, float]:
    """Milliseconds per image at batch 1 of eager PyTorch and each file, at ``threads``."""
    torch.set_num_threads(threads)
    runners: dict[str, Any] = {"torch": net.eval()}
    for fmt in {by_suffix(str(path)) for path in files.values()}:
        fmt.set_threads(threads)  # ExecuTorch's XNNPACK pool: its own, not torch's
    for name, path in files.items():
        runners[name] = by_suffix(str(path)).open(str(path), threads).logits
    with torch.inference_mode():
        return {
            name: 1000 * median_seconds(lambda: run(image), repeats, 3, CPU)  # noqa: B023
            for name, run in runners.items()
        }


def table_rows(
    network: str, mult_adds: int, measured: dict[str, float], threads: int, limits: dict
) -> list[dict[str, Any]]:
    """One row per runtime: latency, achieved multiply-adds per second, fraction of the limit."""
    rows = []
    for runtime, ms in measured.items():
        achieved = mult_adds / (ms / 1000)
        row = {"network": network, "threads": threads, "runtime": runtime,
               "latency_ms": ms, "gmacs_per_s": achieved / 1e9,
               "of_fp32_limit": achieved / limits["fp32"]}  # fmt: skip
        if runtime.endswith("int8") and limits.get("int8"):
            row["of_int8_limit"] = achieved / limits["int8"]
        rows.append(row)
    return rows
