"""The accuracy-cost report of training runs: ``python scripts/report.py <run or sweep folder>...``.

Reads every run's ``metrics.json`` under the folders (single runs, sweeps, Optuna studies, failed
jobs as failed rows; eval runs beside them left out, and counted), measures each trained network's
batch-1 latency on this machine once (cached in the run folder), and writes ``report.md``,
``report.csv`` and ``tradeoff.png`` to ``--out`` (the first folder by default). Bad input: one
line on stderr, exit status 2, nothing written.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mobilenet_lab.checks import ConfigError, exit_on_config_error
from mobilenet_lab.report_markdown import REPORT_COLUMNS
from mobilenet_lab.summary import read_runs, write_report
from mobilenet_lab.tables import print_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run, sweep or study folders")
    parser.add_argument("--out", type=Path, help="where the report goes (default: first folder)")
    args = parser.parse_args()
    out = args.out or args.folders[0]
    with exit_on_config_error():
        rows = read_runs(args.folders)
        if not rows:
            raise ConfigError(
                f"no runs under {', '.join(map(str, args.folders))}: give folders of "
                "src/train.py runs (with a metrics.json or .hydra/)"
            )
        out.mkdir(parents=True, exist_ok=True)
        title = f"Accuracy against cost: {', '.join(map(str, args.folders))}"
        rows = write_report(out, rows, title)
    print_table(rows, REPORT_COLUMNS, title=f"report: {out / 'report.md'}")


if __name__ == "__main__":
    main()
