"""The accuracy-cost report of training runs: ``python scripts/report.py <run or sweep folder>...``.

Reads every run's ``metrics.json`` under the folders (single runs, sweeps, Optuna studies, failed
jobs as failed rows; eval runs beside them left out, and counted), measures each trained network's
batch-1 latency on this machine once (timed as ``conf/speed/default.yaml`` says, cached in the
run folder), and writes ``report.md``,
``report.csv`` and ``tradeoff.png`` to ``--out`` (the first folder by default). Bad input: one
line on stderr, exit status 2, nothing written.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from omegaconf import OmegaConf

from mobilenet_lab.report import report
from mobilenet_lab.runs.errors import exits_as_documented


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run, sweep or study folders")
    parser.add_argument("--out", type=Path, help="where the report goes (default: first folder)")
    args = parser.parse_args()
    report(args.folders, OmegaConf.load(ROOT / "conf" / "speed" / "default.yaml"), args.out)


if __name__ == "__main__":
    with exits_as_documented():  # one line: exit 2 (bad input) or 1
        main()
