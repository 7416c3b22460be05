"""Hydra callbacks: the folder a run writes to (a fresh one, or the resumed run's), config checks
before any folder exists, and the summary of a sweep."""

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

from mobilenet_lab.runs.errors import ConfigError, exits_as_documented

# Launchers that run the jobs on this machine, whose hardware the jobs will then use.
LOCAL_LAUNCHERS = frozenset({
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "hydra_plugins.mobilenet_lab_submitit_launcher.LocalLauncher",
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
        with exits_as_documented():
            self.check(config)

    def on_multirun_start(self, config: DictConfig, config_name: str, **kwargs: Any) -> None:
        parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        hardware = not runs_elsewhere(config)
        for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None):
            for job_overrides in batch:
                with exits_as_documented():  # Hydra's errors too: a callback's are only warned
                    job = compose(config_name, overrides=job_overrides, return_hydra_config=True)
                    self.check(job, hardware=hardware)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN and runs_elsewhere(config):
            with exits_as_documented():
                self.check(config)


class RunFolder(Callback):
    """Decides the folder a run writes to, before Hydra creates it.

    A new run never shares a folder with another run (Lightning's loggers would delete or mix
    its files): a ``hydra.run.dir`` that already holds a run is refused. With ``resume`` (the
    train entry point), ``ckpt_path=last`` or a checkpoint path continues that run in its own
    folder instead: the path is resolved and Hydra's run folder pointed at the run's; Hydra's
    files for the resumed part go to ``.hydra/resumed_<time>`` beside the first ones.
    ``task_name`` names the folders, so it must be a folder name."""

    def __init__(self, resume: bool = False) -> None:
        self.resume = resume

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with exits_as_documented():
            check_task_name(config.task_name)
            if self.resume and config.get("ckpt_path"):
                self._point_at_resumed_run(config)
            elif not _joins_another_process(config):
                check_fresh_run_dir(Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with exits_as_documented():
            check_task_name(config.task_name)

    @staticmethod
    def _point_at_resumed_run(config: DictConfig) -> None:
        from mobilenet_lab.jobs.startup_checks import resolve_resume

        checkpoint = resolve_resume(config.ckpt_path, config.paths.log_dir, config.task_name)
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
        with read_write(config), open_dict(config):
            config.ckpt_path = str(checkpoint)
            config.hydra.run.dir = str(checkpoint.parent.parent)
            config.hydra.output_subdir = f".hydra/resumed_{stamp}"


def check_task_name(task_name: object) -> None:
    """``task_name`` is a free label, but it becomes a folder under ``paths.log_dir``."""
    name = str(task_name)
    if not name or name in (".", "..") or any(c in name for c in '/\\:*?"<>|\0'):
        raise ConfigError(
            f"task_name={task_name!r} is not a folder name: use letters, digits, '-', '_' or '.' "
            "(e.g. task_name=cifar_ablation; runs go to logs/<task_name>/)"
        )


def check_fresh_run_dir(run_dir: Path) -> None:
    """A folder that holds a run (Hydra's ``.hydra``, checkpoints or metrics) is not reused."""
    markers = [m for m in (".hydra", "checkpoints", "metrics.json") if (run_dir / m).exists()]
    if markers:
        raise ConfigError(
            f"hydra.run.dir={str(run_dir)!r} already holds a run ({', '.join(markers)}): "
            "give a new folder, or leave hydra.run.dir unset for a new timestamped one (to "
            "continue that training run: ckpt_path=<its checkpoints/last.ckpt>)"
        )


def _joins_another_process(config: DictConfig) -> bool:
    """Processes of rank > 0 write into rank 0's folder (Lightning's DDP children) or into a
    temporary one (``OneFolderPerRun``): the folder is rank 0's to check."""
    return _rank() > 0 or int(os.environ.get("LOCAL_RANK", "0")) > 0


class OneFolderPerRun(Callback):
    """Processes of rank > 0 started by torchrun or SLURM (not by Lightning, which passes its
    children the run folder) would each make a run folder of their own: their Hydra output goes
    to a temporary folder instead, and rank 0's folder holds the run (Lightning broadcasts the
    checkpoint folder, and only rank 0 writes metrics)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        rank = _rank()
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
    sweep's folder by default), its latencies timed as ``speed`` says (``conf/speed/``). Failed
    jobs of this sweep end it with a short message naming them and exit status 1."""

    def __init__(
        self,
        columns: list[str],
        speed: DictConfig,
        report: bool = False,
        report_dir: str | None = None,
    ) -> None:
        self.columns = ["job", *columns, "status"]
        self.speed = speed
        self.report = report
        self.report_dir = report_dir

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mobilenet_lab.analysis.report import summarise_sweep, write_report
        from mobilenet_lab.analysis.runs_table import read_runs
        from mobilenet_lab.analysis.tables import print_table
        from mobilenet_lab.jobs.failures import failures_message

        sweep_dir = Path(config.hydra.sweep.dir)
        rows = jobs = summarise_sweep(sweep_dir)
        report_dir = Path(self.report_dir) if self.report_dir else sweep_dir
        if self.report:
            report_dir.mkdir(parents=True, exist_ok=True)
            title = f"{config.task_name}: accuracy against cost ({report_dir})"
            all_rows = rows if report_dir == sweep_dir else read_runs([report_dir])
            rows = write_report(report_dir, all_rows, title, self.speed)
        print_table(rows, self.columns, title=f"{config.task_name} multirun summary")
        failed = [job for job in jobs if job["status"] != "ok"]
        if failed:
            print(failures_message(failed, len(jobs), report_dir), file=sys.stderr)
            sys.exit(1)


def _rank() -> int:
    """The global rank torchrun or SLURM gave this process (0 when neither started it)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
