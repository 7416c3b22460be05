"""Measures the default run against issue #2's targets: whole-process wall time (< 60 s on
2 CPU cores), time from the command to the first training step, and test accuracy (>= 98%).

    python scripts/benchmark_train.py [--seeds 42,0,1,2] [extra overrides for src/train.py]

Each run is ``python src/train.py seed=<s>`` in a fresh process writing to a temp folder; seed
42 is the default run, the others show the spread. Timings are taken from outside (launch to
exit) and from the run's own ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WALL_TARGET_S = 60.0
ACC_TARGET = 0.98


def one_run(seed: int, overrides: list[str], log_dir: Path) -> dict[str, float]:
    command = [sys.executable, "src/train.py", f"seed={seed}", f"paths.log_dir={log_dir}",
               "trainer.enable_progress_bar=false", *overrides]  # fmt: skip
    launched = time.time()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    wall = time.time() - launched
    (metrics_file,) = (log_dir / "train" / "runs").glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    return {
        "seed": seed,
        "wall_s": wall,
        "first_step_s": metrics["first_step_at"] - launched,
        "train_s": metrics["wall_time_s"],
        "test_acc": metrics["test"]["test/acc"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42,0,1,2", help="comma-separated; 42 is the default")
    parser.add_argument("overrides", nargs="*", help="extra overrides for src/train.py")
    args = parser.parse_args()
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as log_dir:
            results.append(one_run(seed, args.overrides, Path(log_dir)))
        r = results[-1]
        print(f"seed {r['seed']}: wall {r['wall_s']:.1f} s, first step after "
              f"{r['first_step_s']:.1f} s, test acc {r['test_acc']:.4f}")  # fmt: skip
    wall = statistics.median(r["wall_s"] for r in results)
    first = statistics.median(r["first_step_s"] for r in results)
    accs = [r["test_acc"] for r in results]
    default = next((r["test_acc"] for r in results if r["seed"] == 42), None)
    if default is not None:
        print(
            f"default run (seed 42)  test acc {default:.4f}  = {default / ACC_TARGET:.3f}x the "
            "98% target"
        )
    print(f"\nmedian wall time      {wall:6.1f} s  = {wall / WALL_TARGET_S:.2f}x the 60 s target")
    print(f"median to first step  {first:6.1f} s  = {first / wall:.0%} of the wall time")
    print(f"test accuracy         min {min(accs):.4f}  median {statistics.median(accs):.4f}  "
          f"= {min(accs) / ACC_TARGET:.3f}x the 98% target (min)")  # fmt: skip


if __name__ == "__main__":
    main()
