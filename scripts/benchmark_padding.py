"""Batch-1 latency of ``model.padding=tf_same`` against ``symmetric`` (issue #10's target:
at most 5% slower), measured side by side in one process.

    python scripts/benchmark_padding.py [--alphas 1.0,0.25] [--size 224] [--rounds 7]

Both networks are built with Keras's settings otherwise (relu6, bn_eps 1e-3) and the same
weights; each round times both, one after the other, in alternating order (so drifts of a shared
machine hit both), and the ratio is taken of the medians over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mobilenet_lab.analysis.timing import median_seconds
from mobilenet_lab.models import MobileNetV1

TARGET = 1.05


def latencies_ms(
    alpha: float, size: int, rounds: int, repeats: int, channels_last: bool
) -> dict[str, float]:
    """Median batch-1 latency (ms) of each padding over ``rounds`` alternating rounds."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    nets = {}
    for padding in ("symmetric", "tf_same"):
        torch.manual_seed(0)
        net = MobileNetV1(alpha=alpha, act="relu6", padding=padding, bn_eps=1e-3)
        nets[padding] = net.eval().to(memory_format=memory_format)
    image = torch.randn(1, 3, size, size).contiguous(memory_format=memory_format)
    times: dict[str, list[float]] = {padding: [] for padding in nets}
    cpu = torch.device("cpu")
    with torch.inference_mode():
        for i in range(rounds):
            order = list(nets) if i % 2 == 0 else list(reversed(nets))
            for padding in order:
                net = nets[padding]
                seconds = median_seconds(lambda net=net: net(image), repeats, 3, cpu)
                times[padding].append(1000 * seconds)
    return {padding: statistics.median(values) for padding, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alphas", default="1.0,0.75,0.5,0.25")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per round")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.size} px, batch 1")
    print(f"{'alpha':>5}  {'layout':<13} {'symmetric ms':>12} {'tf_same ms':>10} {'ratio':>6}")
    worst = 0.0
    for alpha in (float(a) for a in args.alphas.split(",")):
        for channels_last in (False, True):
            ms = latencies_ms(alpha, args.size, args.rounds, args.repeats, channels_last)
            ratio = ms["tf_same"] / ms["symmetric"]
            worst = max(worst, ratio)
            layout = "channels-last" if channels_last else "NCHW"
            print(f"{alpha:>5}  {layout:<13} {ms['symmetric']:>12.2f} {ms['tf_same']:>10.2f} "
                  f"{ratio:>6.3f}")  # fmt: skip
    verdict = "meets" if worst <= TARGET else "misses"
    print(f"worst tf_same / symmetric: {worst:.3f} ({verdict} the <= {TARGET:.2f} target)")


if __name__ == "__main__":
    main()
