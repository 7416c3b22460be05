"""Export a checkpoint to ONNX: ``python src/export.py ckpt_path=<file> [quantize=int8]``."""

import hydra
from omegaconf import DictConfig

import mobilenet_lab.runs.resolvers  # noqa: F401  (registers the resolvers the configs use)


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    from mobilenet_lab.export import export  # imported here so --help and --cfg stay fast

    export(cfg)


if __name__ == "__main__":
    main()
