"""hydra-submitit-launcher's launchers, with a requeued job that resumes its own run.

On preemption or timeout submitit calls the launcher's ``checkpoint`` and resubmits what it
returns; the plugin's resubmits the job with the same overrides, so the job would train from
epoch 0 again in the same folder. Here the resubmitted job gets ``ckpt_path=<its folder>/
checkpoints/last.ckpt`` (when that file exists), so it continues from its last finished epoch
and keeps its CSV history, as ``ckpt_path=<file>`` does for a single run.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf, open_dict

# What the resubmission sets; the same keys given before (by the user, or by an earlier requeue)
# are replaced.
RESUME_KEYS = ("ckpt_path", "hydra.output_subdir")


class ResumingLauncher(BaseSubmititLauncher):
    """``checkpoint`` resubmits the job resuming from its own ``last.ckpt``. The launchers the
    configs name are in ``hydra_plugins.mobilenet_lab_submitit_launcher`` (Hydra instantiates
    launchers only from the ``hydra_plugins`` package)."""

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit in the job's process when the job is preempted or times out."""
        import submitit

        overrides, job_dir_key, job_num, *rest = args
        last = self.job_dir(list(overrides), job_dir_key, job_num) / "checkpoints" / "last.ckpt"
        if last.is_file():  # none yet: the job stopped before its first epoch ended
            overrides = resume_overrides(list(overrides), last)
        return submitit.helpers.DelayedSubmission(self, overrides, job_dir_key, job_num, *rest)

    def job_dir(self, overrides: list[str], job_dir_key: str, job_num: int) -> Path:
        """The job's folder, composed as ``__call__`` and Hydra's ``run_job`` compose it."""
        import submitit

        assert self.hydra_context is not None and self.config is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config.hydra.job):
            config.hydra.job.id = submitit.JobEnvironment().job_id
            config.hydra.job.num = job_num
        folder = Path(str(OmegaConf.select(config, job_dir_key)))
        return (folder / str(config.hydra.sweep.subdir)).absolute()


def resume_overrides(overrides: list[str], checkpoint: Path) -> list[str]:
    """``overrides`` resuming from ``checkpoint``, with Hydra's files for the resumed part in
    ``.hydra/resumed_<time>`` (the first part's stay where they are)."""
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in RESUME_KEYS]
    path = str(checkpoint)
    if not re.fullmatch(r"[\w/.:-]+", path):  # quoted, for Hydra's override parser
        path = f"'{path}'" if '"' in path else f'"{path}"'
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
    return [*kept, f"ckpt_path={path}", f"hydra.output_subdir=.hydra/resumed_{stamp}"]
