"""Profile a model: ``python scripts/profile.py model=mobilenet_v1 data.image_size=160``.

Prints a table and writes ``metrics.json`` / ``profile.csv`` in the run folder; with ``-m``,
one row per job in the sweep folder's ``summary.csv``.
"""

import sys
from pathlib import Path

# This file's name shadows the standard library's `profile` module (which cProfile, imported by
# torch, imports): keep the script's own folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="profile")
def main(cfg: DictConfig) -> None:
    from mobilenet_lab.profiling import profile

    profile(cfg)


if __name__ == "__main__":
    main()
