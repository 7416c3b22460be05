"""The launchers of ``hydra/launcher=slurm`` and ``slurm_local``: hydra-submitit-launcher's, whose
requeued jobs resume from their own ``last.ckpt`` (``mobilenet_lab.jobs.slurm``). Here because Hydra
instantiates launchers only from the ``hydra_plugins`` package, and scans every module in it on
each start: without hydra-submitit-launcher (the ``slurm`` extra) this module defines nothing."""

from __future__ import annotations

try:
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher
except ImportError:  # pragma: no cover - the slurm extra is not installed
    submitit_launcher = None

if submitit_launcher is not None:
    from mobilenet_lab.jobs.slurm import ResumingLauncher

    class SlurmLauncher(ResumingLauncher, submitit_launcher.SlurmLauncher):
        """``hydra/launcher=slurm``."""

    class LocalLauncher(ResumingLauncher, submitit_launcher.LocalLauncher):
        """``hydra/launcher=slurm_local``: submitit's local executor, to try the requeue path on
        one machine (SIGUSR2 to a job's process preempts it)."""
