"""Export a checkpoint to ONNX: ``python src/export.py ckpt_path=<file> [quantize=int8]``."""

import hydra
from omegaconf import DictConfig

import mobilenet_lab.data.resolvers  # noqa: F401  (registers the resolvers the configs use)
from mobilenet_lab.jobs.shown_config import show_run_config
from mobilenet_lab.runs.errors import exit_on_config_error, exit_on_refusal


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    from mobilenet_lab.export import export  # imported here so --help and --cfg stay fast

    # a file that fails its check (logits, the int8 gate): one line, exit 1; nothing half-written
    with exit_on_config_error(), exit_on_refusal():
        export(cfg)


if __name__ == "__main__":
    if not show_run_config(__file__, "export"):  # --cfg with ckpt_path: the checkpoint's config
        main()
