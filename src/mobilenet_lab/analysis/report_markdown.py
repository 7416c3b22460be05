"""The text of ``report.md``: the table of training runs, and what the table does not show
(failed runs' reasons, runs without a latency, the eval runs left out, Optuna's best trial)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mobilenet_lab.analysis.distillation_gain import gain_lines, teacher_label
from mobilenet_lab.analysis.tables import format_value

# What report.md and report.csv show, one row per run, sorted by mult-adds.
REPORT_COLUMNS = (
    "run",
    "model",
    "alpha",
    "image_size",
    "teacher",
    "params",
    "mult_adds",
    "latency_ms_batch_1",
    "val/acc_best",
    "test/acc",
    "int8/test_acc",
    "qat/test_acc",
    "wall_time_s",
    "status",
    "pareto",
    "varied",
)

# Shown only where a run has them: the test accuracy of the run's int8 file, post-training
# (src/export.py quantize=int8) or quantization-aware (src/train.py qat=...), on its test split.
INT8_COLUMNS = ("int8/test_acc", "qat/test_acc")

HEADER = {
    "int8/test_acc": "int8 test acc (PTQ)",
    "qat/test_acc": "int8 test acc (QAT)",
    "val/acc_best": "val acc (best)",
    "test/acc": "test acc",
    "wall_time_s": "wall time s",
    "image_size": "image size",
    "mult_adds": "mult-adds",
    "varied": "other overrides",
}


def report_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """``REPORT_COLUMNS``, the int8 ones where some run has them."""
    return [c for c in REPORT_COLUMNS if c not in INT8_COLUMNS or any(c in r for r in rows)]


def markdown(
    rows: Sequence[dict[str, Any]], title: str, device: str, evals: Sequence[dict[str, Any]] = ()
) -> str:
    """``report.md``; ``evals``: the eval runs found beside the training runs, left out of the
    table (they trained nothing, and their config is not of the network they scored)."""
    header = {**HEADER, "latency_ms_batch_1": f"latency ms (batch 1, {device})"}
    columns = report_columns(rows)
    lines = [
        f"# {title}",
        "",
        "One row per run, sorted by mult-adds. `pareto`: no other run has both fewer mult-adds "
        "and a higher test accuracy (ties aside). Latency: median of batch-1 forward passes on "
        "this machine, as `scripts/profile_model.py` measures it.",
        "",
        "| " + " | ".join(header.get(c, c) for c in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        shown = {**row, "teacher": teacher_label(row.get("teacher"))}  # the CSV: its path
        cells = [format_value(shown.get(c)).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    if evals:
        jobs = ", ".join(f"`{row['job']}`" for row in evals)
        plural = "s" if len(evals) > 1 else ""
        lines += ["", f"{len(evals)} eval run{plural} (src/eval.py) left out: {jobs}."]
    failed = [row for row in rows if row["status"] != "ok"]
    if failed:
        lines += ["", "## Failed runs", ""]
        for row in failed:
            reason = row.get("error", "no metrics.json (killed, or still running)")
            lines.append(f"- `{row['run_dir']}`: {row['status']}: {reason}")
    on_val = [f"`{row['run']}`" for row in rows if row.get("test_split") == "val"]
    if on_val:
        lines += ["", "## Tested on val/", "", f"{', '.join(on_val)}: an image folder without "
                  "test/, so `test acc` is of val/, the split that also chose `best.ckpt`: "
                  "not of held-out images."]  # fmt: skip
    lines += gain_lines(rows)
    unmeasured = [row for row in rows if row.get("latency_note")]
    if unmeasured:
        lines += ["", "## Latency not measured", ""]
        lines += [f"- `{row['run_dir']}`: {row['latency_note']}" for row in unmeasured]
    optuna = optuna_results(rows)
    if optuna is not None:
        best = OmegaConf.load(optuna)
        lines += ["", f"## Optuna's best trial ({optuna})", "", f"- value: {best.best_value}"]
        lines += [f"- `{key}={value}`" for key, value in (best.get("best_params") or {}).items()]
    return "\n".join(lines) + "\n"


def optuna_results(rows: Sequence[dict[str, Any]]) -> Path | None:
    """The newest ``optimization_results.yaml`` the Optuna sweeper left beside these runs."""
    found = {Path(row["run_dir"]).parent / "optimization_results.yaml" for row in rows}
    found = {path for path in found if path.is_file()}
    return max(found, key=lambda path: path.stat().st_mtime) if found else None
