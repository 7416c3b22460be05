"""A run's config as its checkpoint stores it: reading a checkpoint safely, with the names of
moved modules brought up to date (the config ``eval.py`` scores it with is rebuilt from it in
``jobs/restored_config.py``)."""

from __future__ import annotations

import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from mobilenet_lab.runs.errors import ConfigError, load_tensors
from mobilenet_lab.runs.files import RUN_CONFIG_KEY
from mobilenet_lab.runs.record import RunRecord

EVAL_EXAMPLE = "e.g. ckpt_path=logs/train/runs/<time>/checkpoints/best.ckpt"
RESUME_EXAMPLE = "e.g. ckpt_path=last"

# Modules whose functions and classes a run's config names (``_target_``, ``config_check``) and
# that moved when the package was arranged by stage (issue 19) and in layers (issue 29):
# checkpoints written before then name the old modules; read, they name today's.
MOVED_MODULES = {
    "mobilenet_lab.module": "mobilenet_lab.training.module",
    "mobilenet_lab.trainer": "mobilenet_lab.training.trainer",
    "mobilenet_lab.callbacks": "mobilenet_lab.training.callbacks",
    "mobilenet_lab.loggers": "mobilenet_lab.training.loggers",
    "mobilenet_lab.scheduler": "mobilenet_lab.training.scheduler",
    "mobilenet_lab.optimizer": "mobilenet_lab.training.optimizer",
    "mobilenet_lab.startup_checks": "mobilenet_lab.jobs.startup_checks",
    "mobilenet_lab.hydra_callbacks": "mobilenet_lab.jobs.hydra_callbacks",
    "mobilenet_lab.runs.startup_checks": "mobilenet_lab.jobs.startup_checks",
    "mobilenet_lab.runs.hydra_callbacks": "mobilenet_lab.jobs.hydra_callbacks",
    "mobilenet_lab.runs.slurm": "mobilenet_lab.jobs.slurm",
    "mobilenet_lab.runs.shown_config": "mobilenet_lab.jobs.shown_config",
    "mobilenet_lab.training.failures": "mobilenet_lab.jobs.failures",
    "mobilenet_lab.training.ddp_job": "mobilenet_lab.jobs.ddp_job",
    "mobilenet_lab.runs.resolvers": "mobilenet_lab.data.resolvers",
    "mobilenet_lab.runs.network": "mobilenet_lab.analysis.network",
}


def load_checkpoint(
    ckpt_path: str | None, example: str = EVAL_EXAMPLE, key: str = "ckpt_path"
) -> dict[str, Any]:
    """Reads a checkpoint written by ``src/train.py`` (tensors and plain data only); its errors
    name ``key``, the command-line key that gave the file."""
    if not ckpt_path:
        raise ConfigError(f"{key} is not set: give the checkpoint to score, {example}")
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"{key}={ckpt_path!r} does not exist: {example}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise ConfigError(
            f"{key}={ckpt_path!r} is not a PyTorch checkpoint (not the zip archive that "
            f"torch.save writes): {example}"
        )
    checkpoint = load_tensors(path, key, f"give a checkpoint written by src/train.py, {example}")
    if not isinstance(checkpoint, dict) or RUN_CONFIG_KEY not in checkpoint:
        raise ConfigError(
            f"{key}={ckpt_path!r} is a PyTorch file but not a checkpoint written by "
            f"src/train.py (it has no run config inside): {example}"
        )
    run = checkpoint[RUN_CONFIG_KEY]
    run["config"] = with_moved_modules(run["config"])
    return checkpoint


def read_checkpoint(
    ckpt_path: str | Path, example: str = EVAL_EXAMPLE
) -> tuple[dict[str, Any], RunRecord]:
    """The checkpoint and its run record, read once per process however many checks and flows
    ask for them (keyed by the file's size and time too: a rewritten file is read anew)."""
    path = Path(ckpt_path)
    if not path.is_file():
        load_checkpoint(str(ckpt_path), example)  # its one-line error
    stat = path.stat()
    return _read_once(str(path.resolve()), stat.st_mtime_ns, stat.st_size, example)


@lru_cache(maxsize=2)
def _read_once(
    path: str, mtime_ns: int, size: int, example: str
) -> tuple[dict[str, Any], RunRecord]:
    checkpoint = load_checkpoint(path, example)
    return checkpoint, RunRecord.of(checkpoint)


def with_moved_modules(node: Any) -> Any:
    """``node`` (a config as plain data) with every name of a moved module's function or class
    (``mobilenet_lab.module.ImageClassifier``) replaced by its name today."""
    if isinstance(node, dict):
        return {key: with_moved_modules(value) for key, value in node.items()}
    if isinstance(node, list):
        return [with_moved_modules(value) for value in node]
    if isinstance(node, str):
        module, _, name = node.rpartition(".")
        if module in MOVED_MODULES:
            return f"{MOVED_MODULES[module]}.{name}"
    return node


def checkpoint_weights(checkpoint: dict[str, Any], weights: str) -> dict[str, Any]:
    """``averaged``: the checkpoint's ``state_dict`` (the EMA weights when the run used
    ``callbacks=ema``, else the trained ones); ``trained``: the weights the optimizer trained."""
    if weights == "trained":
        return checkpoint.get("current_model_state") or checkpoint["state_dict"]
    return checkpoint["state_dict"]
