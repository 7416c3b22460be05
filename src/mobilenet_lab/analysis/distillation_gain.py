"""What a teacher bought: runs of one student setting trained plainly and distilled, side by
side (the sweep ``-m model.alpha=0.25,0.5 module.distill.teacher=<ckpt>`` beside the same sweep
without it), as the median and lowest test accuracy over their seeds."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Overrides that do not make another student setting: the seed, the distillation itself.
NOT_THE_SETTING = ("seed=", "module.distill.")


def teacher_label(teacher: str | None) -> str:
    """A teacher as a table shows it: ``timm:<name>``, an export's file name, or a checkpoint's
    run folder and file (``<run>/last.ckpt``)."""
    if not teacher:
        return ""
    path = Path(teacher)
    if path.suffix == ".ckpt" and path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}/{path.name}"
    return path.name if path.suffix else teacher


def grouped(rows: Sequence[dict[str, Any]]) -> dict[tuple, dict[tuple, list[float]]]:
    """Test accuracies of ``runs_table.report_rows``'s rows by student setting, then by
    (teacher, weight, temperature), ``PLAIN`` for plain runs: the settings run both ways only."""
    done = [r for r in rows if r.get("status") == "ok" and isinstance(r.get("test/acc"), float)]
    groups: dict[tuple, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in done:
        teacher = teacher_label(row.get("teacher"))
        how = (teacher, _number(row.get("distill_weight")), _number(row.get("distill_temperature")))
        groups[_setting(row)][how if teacher else PLAIN].append(row["test/acc"])
    first_plain = lambda item: (item[0] != PLAIN, str(item[0]))  # noqa: E731
    return {setting: dict(sorted(by.items(), key=first_plain)) for setting, by in groups.items()
            if PLAIN in by and len(by) > 1}  # fmt: skip


PLAIN = ("", None, None)


def distillation_gains(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (student setting, teacher, weight, temperature) that also has plain runs."""
    gains = []
    for setting, by_teacher in grouped(rows).items():
        plain = by_teacher[PLAIN]
        for (teacher, weight, temperature), accs in by_teacher.items():
            if teacher:
                median, plain_median = statistics.median(accs), statistics.median(plain)
                gains.append(
                    {
                        "student": student_name(setting),
                        "setting": " ".join(setting[3]),
                        "teacher": teacher,
                        "weight": weight,
                        "T": temperature,
                        "runs": f"{len(accs)} / {len(plain)}",
                        "median": median,
                        "lowest": min(accs),
                        "plain median": plain_median,
                        "plain lowest": min(plain),
                        "gain (median)": median - plain_median,
                    }
                )
    return gains


def student_name(setting: tuple) -> str:
    model, alpha, size, _ = setting
    return f"{model} {alpha} at {size} px"


def gain_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The ``report.md`` section; none when no setting was run both ways."""
    gains = distillation_gains(rows)
    if not gains:
        return []
    lines = [
        "",
        "## What the teacher bought",
        "",
        "Test accuracy (%) of each student setting distilled and trained plainly, over its runs "
        "(distilled / plain); the setting: model, alpha, image size and the overrides other "
        "than the seed and the distillation.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for gain in gains:
        lines.append("| " + " | ".join(_cell(column, gain[column]) for column in COLUMNS) + " |")
    return lines


COLUMNS = ("student", "setting", "teacher", "weight", "T", "runs", "median", "lowest",
           "plain median", "plain lowest", "gain (median)")  # fmt: skip
PERCENT = ("median", "lowest", "plain median", "plain lowest")


def _cell(column: str, value: Any) -> str:
    if column == "gain (median)":
        return f"{100 * value:+.2f}"
    if column in PERCENT:
        return f"{100 * value:.2f}"
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def _number(value: Any) -> float | None:
    """1, 1.0 and "1.0" (a weight from the command line or the config) as one value."""
    return None if value is None else float(value)


def _setting(row: dict[str, Any]) -> tuple:
    """(model, alpha, image size, the other overrides that vary between the runs, from the
    report's ``varied`` column, but the seed and the distillation's own)."""
    varied = row.get("varied", "").split()
    others = [o for o in varied if not o.lstrip("+~").startswith(NOT_THE_SETTING)]
    return (row.get("model"), row.get("alpha"), row.get("image_size"), tuple(others))


def save_gain_plot(rows: Sequence[dict[str, Any]], path: Path) -> bool:
    """``distillation.png``: one panel per student setting run both ways, each run's test
    accuracy a dot over its teacher (or none), the median a bar. False: nothing to draw."""
    import os

    from matplotlib.figure import Figure

    groups = grouped(rows)
    if not groups:
        return False
    counts = [len(by) for by in groups.values()]  # a panel's width: its number of teachers
    figure = Figure(figsize=(max(7.0, 1.4 * sum(counts) + 1.5), 5.2), layout="constrained")
    axes = figure.subplots(1, len(groups), squeeze=False, width_ratios=counts)[0]
    for ax, (setting, by_teacher) in zip(axes, groups.items(), strict=True):
        for x, ((teacher, *_), accs) in enumerate(by_teacher.items()):
            colour = "C0" if teacher else "0.35"
            jitter = [x + 0.06 * (i - (len(accs) - 1) / 2) for i in range(len(accs))]
            ax.scatter(jitter, [100 * a for a in accs], color=colour, s=22, zorder=3,
                       label="one run (seed)" if x == 1 else None)  # fmt: skip
            median = 100 * statistics.median(accs)
            ax.plot([x - 0.25, x + 0.25], [median, median], color="black", linewidth=2,
                    label="median" if x == 0 else None)  # fmt: skip
        ticks = [f"{t}\nweight {w}, T {temp:g}" if t else "plain (no teacher)"
                 for t, w, temp in by_teacher]  # fmt: skip
        ax.set_xticks(range(len(ticks)), ticks, fontsize=8)
        ax.set_xlim(-0.6, len(ticks) - 0.4)
        ax.set_title(f"{student_name(setting)}\n{' '.join(setting[3]) or 'as composed'}",
                     fontsize=9)  # fmt: skip
        ax.set_xlabel("teacher")
        ax.set_ylabel("test accuracy (%)")  # each panel on its own scale
        ax.grid(True, axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=2)
    figure.suptitle("What the teacher bought: students distilled and trained plainly")
    tmp = path.with_suffix(".png.tmp")
    figure.savefig(tmp, format="png", dpi=110)
    os.replace(tmp, path)
    return True
