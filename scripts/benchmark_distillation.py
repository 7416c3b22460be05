"""Step time of a distilled student against the same student trained plainly (issue 21): the
cost of the teacher's forward pass, and what ``module.distill.cache`` saves of it.

    python scripts/benchmark_distillation.py [--teacher <ckpt | timm:<name> | export>]...
    python scripts/benchmark_distillation.py --teacher <run>/checkpoints/last.ckpt --alpha 0.25

One training step (student forward, loss, backward, SGD) of V1 at ``--alpha`` on a batch of
digits-sized images: plain (cross-entropy), distilled (the teacher's forward in the step, as
``module.distill.teacher`` runs it) and cached (the teacher's logits given, as
``module.distill.cache=true`` serves them). The variants take turns, round after round, so
they share the machine's state; medians of the rounds. Without ``--teacher`` a V1 alpha 1.0
teacher at 40 px is trained for one short epoch first (its weights do not change its speed).
V1's training speed on this machine is printed beside the figures.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from mobilenet_lab.analysis.distillation_gain import teacher_label
from mobilenet_lab.analysis.timing import training_images_per_second
from mobilenet_lab.models import build_mobilenet_v1
from mobilenet_lab.training.distillation import Teacher, distillation_loss

ROOT = Path(__file__).resolve().parents[1]


def default_teacher(folder: Path) -> str:
    """A V1 alpha 1.0 teacher at 40 px (the default recipe's size), one short epoch."""
    command = [sys.executable, "src/train.py", "model.alpha=1.0", "debug=limit",
               "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
               f"hydra.run.dir={folder}"]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return str(folder / "checkpoints" / "last.ckpt")


def step_function(alpha: float, in_chans: int, num_classes: int, batch: torch.Tensor,
                  teacher_logits: Callable[[torch.Tensor], torch.Tensor] | None,
                  cached: torch.Tensor | None) -> Callable[[], None]:  # fmt: skip
    """One training step of a fresh student: plain, distilled or with cached teacher logits."""
    student = build_mobilenet_v1(alpha=alpha, num_classes=num_classes, in_chans=in_chans)
    student = student.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    labels = torch.randint(0, num_classes, (len(batch),))

    def step() -> None:
        logits = student(batch)
        loss = F.cross_entropy(logits, labels, label_smoothing=0.1)
        if teacher_logits is not None or cached is not None:
            taught = cached if cached is not None else teacher_logits(batch)
            loss = 0.5 * loss + 0.5 * distillation_loss(logits, taught, 4.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def median_step_ms(step: Callable[[], None], steps: int) -> float:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", action="append", help="repeat for several; default: V1 1.0")
    parser.add_argument("--alpha", type=float, default=0.25, help="the student's width")
    parser.add_argument("--image-size", type=int, default=40, help="the student's input side")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="turns of each variant")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per turn")
    parser.add_argument("--speed-seconds", type=float, default=5.0, help="per V1 speed reading")
    args = parser.parse_args()
    rate_before = training_images_per_second(args.speed_seconds)
    with tempfile.TemporaryDirectory() as folder:
        sources = args.teacher or [default_teacher(Path(folder, "teacher"))]
        teachers = [Teacher(source) for source in sources]
        for teacher in teachers:
            teacher.match_student((0.3,), (0.4,))  # digits-like: re-normalised, as in a run
        in_chans, num_classes = teachers[0].in_chans, teachers[0].num_classes
        size = (args.batch_size, in_chans, args.image_size, args.image_size)
        batch = torch.randn(size).contiguous(memory_format=torch.channels_last)
        variants = {"plain": step_function(args.alpha, in_chans, num_classes, batch, None, None)}
        for teacher in teachers:
            label = f"{teacher_label(teacher.path)} ({teacher.image_size} px)"
            variants[f"distilled, {label}"] = step_function(
                args.alpha, in_chans, num_classes, batch, teacher.logits, None
            )
            cached = teacher.logits(batch)
            variants[f"cached, {label}"] = step_function(
                args.alpha, in_chans, num_classes, batch, None, cached
            )
        for step in variants.values():  # warm-up
            step()
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, step in variants.items():
                times[name].append(median_step_ms(step, args.steps))
    rate_after = training_images_per_second(args.speed_seconds)
    print(f"MobileNet V1 (alpha 1.0, 32 px, batch 128) trains at {rate_before:,.0f} images/s "
          f"here before, {rate_after:,.0f} after; {torch.get_num_threads()} threads")  # fmt: skip
    print(f"student: V1 alpha {args.alpha} at {args.image_size} px, batch {args.batch_size}; "
          f"median of {args.rounds} rounds of {args.steps} steps")  # fmt: skip
    plain = statistics.median(times["plain"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<50} {median:8.1f} ms a step  {median / plain:5.2f}x plain")


if __name__ == "__main__":
    main()
