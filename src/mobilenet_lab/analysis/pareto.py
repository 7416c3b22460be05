"""Which runs are worth their cost: the Pareto front of accuracy against a cost (mult-adds,
parameters, latency), as the report's table and plot mark it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ACCURACY = "test/acc"


def pareto_optimal(
    rows: Sequence[dict[str, Any]], cost: str, accuracy: str = ACCURACY
) -> list[bool]:
    """Which finished rows no other row beats: as cheap or cheaper in ``cost`` and as accurate
    or more, and strictly better in one of the two."""
    points = [
        (row[cost], row[accuracy]) if finished(row, cost) and finished(row, accuracy) else None
        for row in rows
    ]
    return [
        p is not None
        and not any(q is not None and q[0] <= p[0] and q[1] >= p[1] and q != p for q in points)
        for p in points
    ]


def finished(row: dict[str, Any], key: str) -> bool:
    """A run that ended well with a number for ``key``: the only rows a front can hold."""
    return row.get("status") == "ok" and isinstance(row.get(key), int | float)
