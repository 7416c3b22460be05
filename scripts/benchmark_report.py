"""Times ``scripts/report.py`` on a sweep folder: once measuring every latency, once cached.

    python scripts/benchmark_report.py logs/train/multiruns/<time>

Works on a copy of the folder (its ``latency.json`` files removed), so the sweep is left as it
was. Targets for a 12-run sweep on 2 CPU cores: under 60 s measuring, under 15 s cached. Beside
the timings, MobileNet V1's own speed on this machine (alpha 1.0, 224 px), to compare machines.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SPEED_SETTINGS = ROOT / "conf" / "speed" / "default.yaml"  # the report's and the profiler's

TARGETS_S = {"measuring": 60.0, "cached": 15.0}


def time_report(folder: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "report.py"), str(folder)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        sys.exit(f"report.py failed: {result.stderr.strip()}")
    return time.perf_counter() - started


def v1_speed() -> dict[str, float]:
    """The profiler's figures for the paper's MobileNet V1 (1000 classes, 224 px)."""
    import torch
    from omegaconf import OmegaConf

    from mobilenet_lab.analysis.timing import default_device, measure_speed
    from mobilenet_lab.models import build_mobilenet_v1

    speed = OmegaConf.load(SPEED_SETTINGS)
    net = build_mobilenet_v1(num_classes=1000, alpha=1.0).eval()
    device = torch.device(default_device())
    return measure_speed(net, torch.randn(1, 3, 224, 224), speed, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a sweep folder of src/train.py")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / args.sweep.name
        shutil.copytree(args.sweep, copy, ignore=shutil.ignore_patterns("*.ckpt", "latency.json"))
        runs = len(list(copy.glob("*/metrics.json")))
        timings = {"measuring": time_report(copy), "cached": time_report(copy)}
    print(f"report.py on {runs} runs of {args.sweep} (wall clock, shared machine):")
    for name, seconds in timings.items():
        target = TARGETS_S[name]
        print(f"  {name:<9} {seconds:6.1f} s  target < {target:.0f} s  ({seconds / target:.2f}x)")
    speed = v1_speed()
    rate = next(v for k, v in speed.items() if k.startswith("images_per_s"))
    print(
        f"MobileNet V1 (alpha 1.0, 224 px) on {speed['device']}: "
        f"{speed['latency_ms_batch_1']:.1f} ms at batch 1, {rate:.1f} images/s at batch 32"
    )


if __name__ == "__main__":
    main()
