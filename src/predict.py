"""Predict image files' classes: ``python src/predict.py ckpt_path=<.ckpt|.onnx> input=<path>``."""

import hydra
from omegaconf import DictConfig

import mobilenet_lab.data.resolvers  # noqa: F401  (registers the resolvers the configs use)
from mobilenet_lab.jobs.shown_config import show_run_config
from mobilenet_lab.runs.errors import exit_on_config_error, exit_on_refusal


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from mobilenet_lab.predict import predict  # imported here so --help and --cfg stay fast

    # an input of which no file can be read: one line, exit 2; a refused result: exit 1
    with exit_on_config_error(), exit_on_refusal():
        predict(cfg)


if __name__ == "__main__":
    if not show_run_config(__file__, "predict"):  # --cfg with ckpt_path: the checkpoint's config
        main()
