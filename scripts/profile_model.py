"""Profile a model: ``python scripts/profile_model.py model=mobilenet_v1 data.image_size=160``.

Prints a table and writes ``metrics.json`` / ``profile.csv`` in the run folder; with ``-m``,
one row per job in the sweep folder's ``summary.csv``.
"""

import hydra
from omegaconf import DictConfig

import mobilenet_lab.data.resolvers  # noqa: F401  (registers the resolvers the configs use)
from mobilenet_lab.runs.errors import exit_on_config_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="profile")
def main(cfg: DictConfig) -> None:
    from mobilenet_lab.profile import profile

    with exit_on_config_error():
        profile(cfg)


if __name__ == "__main__":
    main()
