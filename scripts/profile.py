"""Profile a model: ``python scripts/profile.py model=mobilenet_v1 data.image_size=160``.

Prints a table and writes ``metrics.json`` / ``profile.csv`` in the run folder; with ``-m``,
one row per job in the sweep folder's ``summary.csv``.
"""

import sys
from pathlib import Path

# Import from the repository root, not scripts/: scripts/profile.py would shadow the standard
# library's `profile`, which cProfile (imported by torch) imports.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import hydra
from omegaconf import DictConfig

import mobilenet_lab.resolvers  # noqa: F401  (registers the resolvers the configs use)


@hydra.main(version_base="1.3", config_path="../conf", config_name="profile")
def main(cfg: DictConfig) -> None:
    from mobilenet_lab.profiling import profile

    profile(cfg)


if __name__ == "__main__":
    main()
