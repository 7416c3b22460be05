"""The report's picture: test accuracy against mult-adds, measured latency and parameters (the
paper's Figures 4 and 5), one line per width multiplier across resolutions and one per
resolution across widths, the Pareto front of each panel highlighted; distilled runs hollow,
their lines dotted."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from mobilenet_lab.analysis.pareto import ACCURACY, pareto_optimal

MARKERS = {
    "mobilenet_v1": "o",
    "timm_mobilenet_v1": "D",
    "mobilenet_v2": "s",
    "mobilenet_v3_large": "^",
    "mobilenet_v3_small": "v",
}

# matplotlib's default colours without its red, which marks the Pareto front.
PALETTE = ("C0", "C1", "C2", "C4", "C5", "C6", "C8", "C9")


def save_tradeoff_plot(rows: Sequence[dict[str, Any]], path: Path, device: str) -> None:
    """Three panels side by side; the legend below them, so no text covers a point."""
    panels = (
        ("mult_adds", 1e-6, "mult-adds per image (millions, log scale)"),
        ("latency_ms_batch_1", 1.0, f"batch-1 latency on {device} (ms, log scale)"),
        ("params", 1e-6, "parameters (millions, log scale)"),
    )
    done = [r for r in rows if r["status"] == "ok" and isinstance(r.get(ACCURACY), float)]
    alphas = sorted({r.get("alpha") for r in done}, key=_none_last)
    sizes = sorted({r.get("image_size") for r in done}, key=_none_last)
    alpha_colour = {a: PALETTE[i % len(PALETTE)] for i, a in enumerate(alphas)}
    size_grey = {s: str(0.15 + 0.55 * i / max(1, len(sizes) - 1)) for i, s in enumerate(sizes)}
    figure = Figure(figsize=(16, 5.6), layout="constrained")
    axes = figure.subplots(1, 3, sharey=True)
    for ax, (cost, scale, label) in zip(axes, panels, strict=True):
        points = [r for r in done if isinstance(r.get(cost), int | float)]
        for (_, size, _), group in _groups(points, "image_size").items():
            _line(ax, group, cost, scale, color=size_grey[size], linestyle="--", linewidth=1)
        for (_, alpha, taught), group in _groups(points, "alpha").items():
            style = ":" if taught else "-"
            _line(ax, group, cost, scale, color=alpha_colour[alpha], linewidth=1.8, linestyle=style)
        for row in points:
            colour = alpha_colour[row.get("alpha")]
            taught = bool(row.get("teacher"))  # distilled: hollow, in its alpha's colour
            ax.scatter(
                row[cost] * scale,
                100 * row[ACCURACY],
                marker=MARKERS.get(row.get("model"), "P"),
                facecolor="white" if taught else colour,
                edgecolor=colour if taught else "black",
                linewidth=1.4 if taught else 0.5,
                s=36,
                zorder=3,
            )
        front = sorted(
            (r[cost] * scale, 100 * r[ACCURACY])
            for r, best in zip(points, pareto_optimal(points, cost), strict=True)
            if best
        )
        if front:
            xs, ys = zip(*front, strict=True)
            ax.plot(xs, ys, color="red", linewidth=3, alpha=0.35, zorder=2)
            ax.scatter(xs, ys, s=150, facecolor="none", edgecolor="red", linewidth=1.5, zorder=4)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.25)
    axes[0].set_ylabel("test accuracy (%)")
    failed = len(rows) - len(done)
    note = f"; {failed} failed or unfinished run(s) not shown" if failed else ""
    figure.suptitle(f"Accuracy against cost: {len(done)} runs{note}")
    taught = any(r.get("teacher") for r in done)
    handles = _legend(alpha_colour, size_grey, {r.get("model") for r in done}, taught)
    figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 7))
    tmp = path.with_suffix(".png.tmp")
    figure.savefig(tmp, format="png", dpi=110)
    os.replace(tmp, path)


def _groups(rows: Sequence[dict[str, Any]], key: str) -> dict[tuple, list[dict[str, Any]]]:
    """Runs of one model family sharing ``key``, distilled or not: a line through each group."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row.get("model"), row.get(key), bool(row.get("teacher")))].append(row)
    return groups


def _line(ax: Any, group: Sequence[dict[str, Any]], cost: str, scale: float, **style: Any) -> None:
    """A line through the group's best run at each cost (trials of one network share one)."""
    best: dict[float, float] = {}
    for row in group:
        x = row[cost] * scale
        best[x] = max(best.get(x, 0.0), 100 * row[ACCURACY])
    if len(best) > 1:
        xs = sorted(best)
        ax.plot(xs, [best[x] for x in xs], zorder=1, **style)


def _legend(alpha_colour: dict, size_grey: dict, models: set, taught: bool) -> list[Line2D]:
    handles = [
        Line2D([], [], color=colour, linewidth=1.8, label=f"alpha {alpha} across sizes")
        for alpha, colour in alpha_colour.items()
    ]
    handles += [
        Line2D([], [], color=grey, linestyle="--", label=f"{size} px across alphas")
        for size, grey in size_grey.items()
    ]
    if len(models) > 1:
        handles += [
            Line2D([], [], marker=MARKERS.get(m, "P"), color="grey", linestyle="", label=str(m))
            for m in sorted(models, key=str)
        ]
    if taught:
        hollow = {"color": "grey", "linestyle": ":", "marker": "o", "markerfacecolor": "white"}
        handles.append(Line2D([], [], label="distilled (report.md: its teacher)", **hollow))
    front = {"color": "red", "alpha": 0.5, "linewidth": 3, "marker": "o", "markersize": 10}
    handles.append(Line2D([], [], markerfacecolor="none", label="Pareto front", **front))
    return handles


def _none_last(value: Any) -> tuple[bool, Any]:
    return (value is None, value if value is not None else 0)
