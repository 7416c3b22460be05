"""Train and test a model: ``python src/train.py [group=option ...] [key=value ...]``."""

import hydra
from omegaconf import DictConfig

import mobilenet_lab.data.resolvers  # noqa: F401  (registers the resolvers the configs use)
from mobilenet_lab.jobs.shown_config import show_run_config
from mobilenet_lab.runs.errors import exits_as_documented


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@exits_as_documented()  # run_job records a failed run first: metrics.json, then exit 2 or 1
def main(cfg: DictConfig) -> float | None:
    """The metric a sweeper optimises; None when the run failed (a failed trial for Optuna)."""
    from mobilenet_lab.jobs.failures import (
        run_job,  # imported here so --help and --cfg stay fast
    )
    from mobilenet_lab.train import train

    metrics = run_job(train, cfg, entry_point="train")
    return None if metrics is None else metrics["val"].get(cfg.optimized_metric, float("nan"))


if __name__ == "__main__":
    with exits_as_documented():  # Hydra's own errors too: one line, exit 2
        if not show_run_config(__file__, "train"):  # --cfg with ckpt_path: the run's config
            main()
