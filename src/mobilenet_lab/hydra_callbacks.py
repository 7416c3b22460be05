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
from hydra.utils import get_method
from omegaconf import DictConfig, open_dict, read_write

from mobilenet_lab.checks import ConfigError


class ValidateConfig(Callback):
    """Runs ``check`` on the composed config (on each job's config in a multirun) before Hydra
    creates a folder; a ``ConfigError`` becomes one line on stderr and exit status 2."""

    def __init__(self, check: str) -> None:
        self.check: Callable[[DictConfig], None] = get_method(check)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_on_config_error(self.check, config)

    def on_multirun_start(self, config: DictConfig, config_name: str, **kwargs: Any) -> None:
        parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None):
            for job_overrides in batch:
                job = compose(config_name, overrides=job_overrides, return_hydra_config=True)
                _exit_on_config_error(self.check, job)


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


class ResumeStudy(Callback):
    """With Hydra's Optuna sweeper and a ``storage``, ``n_trials`` counts the study's trials,
    not this command's: the same command after a kill runs only the trials still missing. A
    trial the kill left running is queued again with its parameters (Optuna's waiting state),
    so it runs once more under its own number instead of being lost or repeated; a seeded
    sampler's seed moves on by the number of trials, so new trials do not repeat old ones."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = config.hydra.sweeper
        if "optuna" not in str(sweeper.get("_target_", "")) or not sweeper.get("storage"):
            return
        import optuna

        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        url = str(sweeper.storage)
        if url.startswith("sqlite:///"):  # SQLite makes the file, not its folder
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.get_storage(url)
        try:
            study = storage.get_study_id_from_name(sweeper.study_name)
        except KeyError:  # a new study
            return
        running = optuna.trial.TrialState.RUNNING
        for trial in storage.get_all_trials(study, deepcopy=False, states=(running,)):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study, trial.number)
            storage.set_trial_system_attr(trial_id, "fixed_params", trial.params)
            storage.set_trial_state(trial_id, optuna.trial.TrialState.WAITING)
        trials = storage.get_all_trials(study)
        finished = [t for t in trials if t.state.is_finished()]
        with read_write(config), open_dict(config):
            config.hydra.sweeper.n_trials = max(0, sweeper.n_trials - len(finished))
            if sweeper.get("sampler") and sweeper.sampler.get("seed") is not None:
                # a seeded sampler would draw the first command's parameters again
                config.hydra.sweeper.sampler.seed = sweeper.sampler.seed + len(trials)
        print(
            f"Optuna study {sweeper.study_name!r} has {len(finished)} finished trial(s): "
            f"running {config.hydra.sweeper.n_trials} more"
        )


class SummariseSweep(Callback):
    """After a multirun, gathers every job's ``metrics.json`` into ``summary.csv`` and prints
    the ``columns`` of it as a table; with ``report``, also writes the accuracy-cost report
    (``report.md``, ``report.csv``, ``tradeoff.png``) over the runs under ``report_dir`` (the
    sweep's folder by default). Failed jobs of this sweep end it with a short message naming
    them and exit status 1."""

    def __init__(self, columns: list[str], report: bool = False, report_dir: str | None = None):
        self.columns = ["job", *columns, "status"]
        self.report = report
        self.report_dir = report_dir

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mobilenet_lab.failures import failures_message
        from mobilenet_lab.summary import print_table, read_runs, summarise_sweep, write_report

        sweep_dir = Path(config.hydra.sweep.dir)
        rows = jobs = summarise_sweep(sweep_dir)
        report_dir = Path(self.report_dir) if self.report_dir else sweep_dir
        if self.report:
            report_dir.mkdir(parents=True, exist_ok=True)
            title = f"{config.task_name}: accuracy against cost ({report_dir})"
            all_rows = rows if report_dir == sweep_dir else read_runs([report_dir])
            rows = write_report(report_dir, all_rows, title)
        print_table(rows, self.columns, title=f"{config.task_name} multirun summary")
        failed = [job for job in jobs if job["status"] != "ok"]
        if failed:
            print(failures_message(failed, len(jobs), report_dir), file=sys.stderr)
            sys.exit(1)


def _exit_on_config_error(check: Callable[[DictConfig], None], config: DictConfig) -> None:
    try:
        check(config)
    except ConfigError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(2)
