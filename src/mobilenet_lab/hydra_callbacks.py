"""Hydra callbacks: check every job's config before any run folder exists; summarise sweeps."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from mobilenet_lab.checks import ConfigError

# Launchers that run the jobs on this machine, whose hardware the jobs will then use.
LOCAL_LAUNCHERS = frozenset({
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
})  # fmt: skip


def runs_elsewhere(config: DictConfig) -> bool:
    """Whether a multirun's launcher (SLURM's, ...) starts the jobs on other machines."""
    return OmegaConf.select(config, "hydra.launcher._target_") not in (None, *LOCAL_LAUNCHERS)


class ValidateConfig(Callback):
    """Runs ``check`` on the composed config (on each job's config in a multirun) before Hydra
    creates a folder; a ``ConfigError`` becomes one line on stderr and exit status 2.

    With a launcher that runs the jobs elsewhere (SLURM), the submitting process (a login node,
    often without GPUs) checks only what does not depend on its hardware, and each job checks
    again, in full, where it runs, before training starts."""

    def __init__(self, check: str) -> None:
        self.check: Callable[..., None] = get_method(check)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_on_config_error(self.check, config)

    def on_multirun_start(self, config: DictConfig, config_name: str, **kwargs: Any) -> None:
        parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        hardware = not runs_elsewhere(config)
        for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None):
            for job_overrides in batch:
                job = compose(config_name, overrides=job_overrides, return_hydra_config=True)
                _exit_on_config_error(self.check, job, hardware=hardware)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN and runs_elsewhere(config):
            _exit_on_config_error(self.check, config)


class ResumeRun(Callback):
    """``ckpt_path=last`` (or a checkpoint path) continues that run in its own folder: the
    path is resolved and Hydra's run folder pointed at the run's, before Hydra creates one.
    Hydra's files for the resumed part go to ``.hydra/resumed_<time>`` beside the first ones."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.get("ckpt_path"):
            return
        from mobilenet_lab.startup_checks import resolve_resume

        try:
            checkpoint = resolve_resume(config.ckpt_path, config.paths.log_dir, config.task_name)
        except ConfigError as error:
            print(f"Error: {error}", file=sys.stderr)
            sys.exit(2)
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
        with read_write(config), open_dict(config):
            config.ckpt_path = str(checkpoint)
            config.hydra.run.dir = str(checkpoint.parent.parent)
            config.hydra.output_subdir = f".hydra/resumed_{stamp}"


class OneFolderPerRun(Callback):
    """Processes of rank > 0 started by torchrun or SLURM (not by Lightning, which passes its
    children the run folder) would each make a run folder of their own: their Hydra output goes
    to a temporary folder instead, and rank 0's folder holds the run (Lightning broadcasts the
    checkpoint folder, and only rank 0 writes metrics)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
        explicit = any(o.startswith("hydra.run.dir=") for o in config.hydra.overrides.hydra)
        if rank > 0 and not explicit:
            with read_write(config), open_dict(config):
                config.hydra.run.dir = tempfile.mkdtemp(prefix=f"mobilenet_lab_rank{rank}_")


class SummariseSweep(Callback):
    """After a multirun, gathers every job's ``metrics.json`` into ``summary.csv`` and prints
    the ``columns`` of it as a table."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = ["job", *columns]

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mobilenet_lab.summary import print_table, summarise_sweep

        rows = summarise_sweep(Path(config.hydra.sweep.dir))
        print_table(rows, self.columns, title=f"{config.task_name} multirun summary")


def _exit_on_config_error(
    check: Callable[..., None], config: DictConfig, hardware: bool = True
) -> None:
    try:
        check(config, hardware=hardware)
    except ConfigError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(2)
