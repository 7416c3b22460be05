"""Train and test a model: ``python src/train.py [group=option ...] [key=value ...]``."""

import hydra
from omegaconf import DictConfig

import mobilenet_lab.resolvers  # noqa: F401  (registers the resolvers the configs use)
from mobilenet_lab.checks import exit_on_config_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from mobilenet_lab.training import train  # imported here so --help and --cfg stay fast

    with exit_on_config_error():  # errors raised at run time too: one line, exit 2
        return train(cfg)["val"].get(cfg.optimized_metric, float("nan"))


if __name__ == "__main__":
    main()
