"""The run record a checkpoint written by ``src/train.py`` carries: one typed object, read from
the checkpoint once, instead of dict look-ups of the checkpoint wherever a reader needs a fact.

It holds what rebuilds and continues the run from the checkpoint alone: the resolved config
(the network, data and module as trained), the config as composed (interpolations kept: what a
resume restores, so that paths and values that follow other keys re-resolve), the group
choices, the run's command-line overrides, the data module's class names and normalisation,
the loggers' run ids, and what a resume changed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mobilenet_lab.runs.files import RUN_CONFIG_KEY


@dataclass(frozen=True)
class RunRecord:
    config: dict[str, Any]  # resolved
    choices: dict[str, str]
    class_names: list[str] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    logger_ids: dict[str, str] = field(default_factory=dict)
    composed: dict[str, Any] | None = None  # unresolved; None in checkpoints before issue 27
    overrides: list[str] = field(default_factory=list)  # every segment's, ckpt_path left out
    changed_on_resume: dict[str, dict[str, Any]] = field(default_factory=dict)
    epoch: int = 0  # the checkpoint's own (finished epochs), not part of the stored record
    global_step: int = 0

    @classmethod
    def of(cls, checkpoint: dict[str, Any]) -> RunRecord:
        """The record in a checkpoint already read (``runs.checkpoint.load_checkpoint``)."""
        stored = checkpoint[RUN_CONFIG_KEY]
        known = {f.name for f in dataclasses.fields(cls)} - {"epoch", "global_step"}
        return cls(
            **{key: value for key, value in stored.items() if key in known and value is not None},
            epoch=int(checkpoint.get("epoch", 0)),
            global_step=int(checkpoint.get("global_step", 0)),
        )

    def stored(self) -> dict[str, Any]:
        """What ``SaveRunConfig`` puts under ``RUN_CONFIG_KEY`` (plain data only)."""
        record = dataclasses.asdict(self)
        del record["epoch"], record["global_step"]
        return record
