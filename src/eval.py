"""Score a checkpoint on its run's test split: ``python src/eval.py ckpt_path=<file>``."""

import hydra
from omegaconf import DictConfig

import mobilenet_lab.data.resolvers  # noqa: F401  (registers the resolvers the configs use)
from mobilenet_lab.jobs.shown_config import show_run_config
from mobilenet_lab.runs.errors import exit_on_config_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from mobilenet_lab.evaluate import evaluate  # imported here so --help and --cfg stay fast

    with exit_on_config_error():  # errors raised at run time too: one line, exit 2
        evaluate(cfg)


if __name__ == "__main__":
    if not show_run_config(__file__, "eval"):  # --cfg with ckpt_path: the checkpoint's config
        main()
