"""Predict image files' classes: ``python src/predict.py ckpt_path=<.ckpt|.onnx> input=<path>``."""

import hydra
from omegaconf import DictConfig

import mobilenet_lab.runs.resolvers  # noqa: F401  (registers the resolvers the configs use)


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from mobilenet_lab.predict import predict  # imported here so --help and --cfg stay fast

    predict(cfg)


if __name__ == "__main__":
    main()
