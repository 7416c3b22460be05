"""Export a checkpoint to ONNX: ``python src/export.py ckpt_path=<file> [quantize=int8]``."""

import hydra
from omegaconf import DictConfig

import mobilenet_lab.data.resolvers  # noqa: F401  (registers the resolvers the configs use)
from mobilenet_lab.jobs.shown_config import show_run_config
from mobilenet_lab.runs.errors import exits_as_documented


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@exits_as_documented()  # errors raised in the run: one line, exit 2 (config) or 1
def main(cfg: DictConfig) -> None:
    from mobilenet_lab.export import export  # imported here so --help and --cfg stay fast

    export(cfg)


if __name__ == "__main__":
    with exits_as_documented():  # Hydra's own errors too: one line, exit 2
        if not show_run_config(__file__, "export"):  # --cfg with ckpt_path: the run's config
            main()
