"""DDP on CPU processes (gloo) started by torchrun "nodes"; loggers; SLURM's config. (DDP by
Lightning's launcher: tests/test_cli.py; DDP multiruns: tests/test_combinations.py.)"""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import pytest

from tests.batch_log import read_batch_logs
from tests.conftest import ROOT, started

pytestmark = pytest.mark.slow
TINY = ["debug=limit", "trainer.enable_progress_bar=false", "~callbacks.model_summary",
        "model.alpha=0.25"]  # fmt: skip


def free_port() -> int:
    """A port free now; torchrun binds it a moment later, so the caller retries on a clash."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_nodes(
    nodes: int, tmp_path: Path, *train_args: str, env: dict[str, str] | None = None
) -> Path:
    """Runs ``src/train.py`` as ``nodes`` torchrun "nodes" of one process each on 127.0.0.1
    (one agent per node, as on a cluster), output to log files, with ``env`` added to the
    environment, and asserts that all succeed; returns their ``paths.log_dir``. Another process
    may take the port between ``free_port()`` and torchrun's bind: a clash is retried, up to 3
    attempts."""
    for attempt in range(3):
        port, attempt_dir = free_port(), tmp_path / f"attempt_{attempt}"
        attempt_dir.mkdir()
        commands = [["-m", "torch.distributed.run", f"--nnodes={nodes}", "--nproc-per-node=1",
                     f"--node-rank={rank}", "--master-addr=127.0.0.1", f"--master-port={port}",
                     "src/train.py", "trainer=ddp_cpu", "trainer.devices=1",
                     f"trainer.num_nodes={nodes}", *train_args,
                     f"paths.log_dir={attempt_dir / 'logs'}"]
                    for rank in range(nodes)]  # fmt: skip
        logs = [attempt_dir / f"node_{rank}.log" for rank in range(nodes)]
        with started(commands, logs, env) as procs:
            codes = [proc.wait(timeout=300) for proc in procs]
        output = "".join(log.read_text()[-3000:] for log in logs)
        if codes == [0] * nodes or "address already in use" not in output.lower():
            break
    assert codes == [0] * nodes, output
    return attempt_dir / "logs"


def loss_per_image(rows: list[dict]) -> float:
    """The mean training loss over the images of some rows of tests/batch_log.py."""
    return sum(row["loss"] * row["images"] for row in rows) / sum(row["images"] for row in rows)


def test_every_logger_writes_its_files(run_main, tmp_path: Path) -> None:
    result = run_main("src/train.py", "logger=[csv,tensorboard,mlflow,wandb]", *TINY,
                     f"paths.log_dir={tmp_path}", env={"WANDB_MODE": "offline"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "train" / "runs").glob("*")
    assert (run_dir / "csv" / "metrics.csv").is_file()
    hparams = (run_dir / "csv" / "hparams.yaml").read_text()
    assert "mult_adds:" in hparams and "global_batch_size: 64" in hparams
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert list((tmp_path / "mlflow").glob("*/*/metrics/test/acc"))
    assert list((run_dir / "wandb").glob("offline-run-*"))


def test_slurm_launcher_config_composes(run_main) -> None:
    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2",
                 "hydra.launcher.partition=gpu"]  # fmt: skip
    result = run_main("src/train.py", *overrides, "--cfg", "hydra")
    assert result.returncode == 0, result.stderr[-3000:]
    for line in ("nodes: ${trainer.num_nodes}", "tasks_per_node: ${trainer.devices}",
                 "gpus_per_node: ${trainer.devices}", "partition: gpu", "max_num_timeout: 3",
                 "submitit_launcher.SlurmLauncher"):  # fmt: skip
        assert line in result.stdout


def test_readme_slurm_command_gets_to_slurm_on_a_machine_without_gpus(
    run_main, tmp_path: Path
) -> None:
    """The login node has no GPU and no SLURM here: the config checks pass and submitit is
    the first to stop (no ``srun``), before any job or run folder exists."""
    readme = ["-m", "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=8",
              "trainer.num_nodes=2"]  # fmt: skip
    result = run_main("src/train.py", *readme, f"paths.log_dir={tmp_path}")
    assert result.returncode != 0 and "no GPU" not in result.stderr
    assert 'Could not detect "srun"' in result.stderr, result.stderr[-3000:]
    assert not list(tmp_path.glob("train/multiruns/*/0"))


def test_torchrun_nodes_share_one_run_and_sync_their_metrics(run_main, tmp_path: Path) -> None:
    """Three torchrun "nodes" of one process each on localhost (the config check refuses 3
    devices of one node on a 2-core machine) make one run folder, with a global batch of 3 x 64.
    They test 182 digits (61 + 61 + 60: nothing padded or counted twice); the synced result is
    the whole set's, as one process scores it. Each epoch's train/loss is the mean over every
    rank's training images (tests/batch_log.py writes down what each rank trained on), not
    rank 0's alone."""
    full_test = [*TINY, "trainer.limit_test_batches=1.0", "data.test_fraction=0.101"]
    batch_logs = tmp_path / "batches"
    batch_log = ["+callbacks.batch_log._target_=tests.batch_log.BatchLog",
                 f"+callbacks.batch_log.out_dir={batch_logs}"]  # fmt: skip
    log_dir = torchrun_nodes(3, tmp_path, *full_test, *batch_log, env={"PYTHONPATH": str(ROOT)})
    (run_dir,) = (log_dir / "train" / "runs").glob("*")  # ranks 1 and 2 made no folder of their own
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_batch_size"] == 3 * 64 and metrics["epochs"] == 2
    ranks = read_batch_logs(batch_logs)
    assert sorted(ranks) == [0, 1, 2]
    with open(run_dir / "csv" / "metrics.csv") as file:
        logged = {int(row["epoch"]): float(row["train/loss_epoch"])
                  for row in csv.DictReader(file) if row["train/loss_epoch"]}  # fmt: skip
    assert sorted(logged) == [0, 1]
    for epoch, value in logged.items():
        seen = {rank: [r for r in rows if r["epoch"] == epoch] for rank, rows in ranks.items()}
        assert all(len(rows) == 3 for rows in seen.values())  # debug=limit: 3 batches each
        every_rank = [row for rows in seen.values() for row in rows]
        assert value == pytest.approx(loss_per_image(every_rank), rel=1e-6)
        # Near ln(10) after so few steps, the ranks' own means still differ by about 1e-3
        assert value != pytest.approx(loss_per_image(seen[0]), rel=1e-4)  # rank 0's alone
    ddp = metrics["test"]
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    result = run_main("src/eval.py", f"ckpt_path={ckpt}", "trainer.enable_progress_bar=false",
                      f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (eval_dir,) = (tmp_path / "eval" / "runs").glob("*")
    single = json.loads((eval_dir / "metrics.json").read_text())["test"]
    assert ddp["test/acc"] == pytest.approx(single["test/acc"], abs=1e-6)
    assert ddp["test/loss"] == pytest.approx(single["test/loss"], rel=1e-4)
