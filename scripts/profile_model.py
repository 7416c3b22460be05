"""Profile a model: ``python scripts/profile_model.py model=mobilenet_v1 data.image_size=160``.

Prints a table and writes ``metrics.json`` / ``profile.csv`` in the run folder; with ``-m``,
one row per job in the sweep folder's ``summary.csv``.
"""

import hydra
from omegaconf import DictConfig

import mobilenet_lab.data.resolvers  # noqa: F401  (registers the resolvers the configs use)
from mobilenet_lab.runs.errors import exits_as_documented


@hydra.main(version_base="1.3", config_path="../conf", config_name="profile")
@exits_as_documented()  # errors raised in the run: one line, exit 2 (config) or 1
def main(cfg: DictConfig) -> None:
    from mobilenet_lab.profile import profile  # imported here so --help and --cfg stay fast

    profile(cfg)


if __name__ == "__main__":
    with exits_as_documented():  # Hydra's own errors too: one line, exit 2
        main()
