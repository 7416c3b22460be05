"""DDP on CPU processes (gloo) started by torchrun "nodes"; loggers; SLURM's config. (DDP by
Lightning's launcher: tests/test_cli.py; DDP multiruns: tests/test_combinations.py.)"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.conftest import started

pytestmark = pytest.mark.slow
TINY = ["debug=limit", "trainer.enable_progress_bar=false", "~callbacks.model_summary",
        "model.alpha=0.25"]  # fmt: skip


def free_port() -> int:
    """A port free now; torchrun binds it a moment later, so the caller retries on a clash."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_nodes(nodes: int, tmp_path: Path, *train_args: str) -> Path:
    """Runs ``src/train.py`` as ``nodes`` torchrun "nodes" of one process each on 127.0.0.1
    (one agent per node, as on a cluster), output to log files, and asserts that all succeed;
    returns their ``paths.log_dir``. Another process may take the port between ``free_port()``
    and torchrun's bind: a clash is retried, up to 3 attempts."""
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
        with started(commands, logs) as procs:
            codes = [proc.wait(timeout=300) for proc in procs]
        output = "".join(log.read_text()[-3000:] for log in logs)
        if codes == [0] * nodes or "address already in use" not in output.lower():
            break
    assert codes == [0] * nodes, output
    return attempt_dir / "logs"


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
    the whole set's, as one process scores it."""
    full_test = [*TINY, "trainer.limit_test_batches=1.0", "data.test_fraction=0.101"]
    log_dir = torchrun_nodes(3, tmp_path, *full_test)
    (run_dir,) = (log_dir / "train" / "runs").glob("*")  # ranks 1 and 2 made no folder of their own
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_batch_size"] == 3 * 64 and metrics["epochs"] == 2
    ddp = metrics["test"]
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    result = run_main("src/eval.py", f"ckpt_path={ckpt}", "trainer.enable_progress_bar=false",
                      f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (eval_dir,) = (tmp_path / "eval" / "runs").glob("*")
    single = json.loads((eval_dir / "metrics.json").read_text())["test"]
    assert ddp["test/acc"] == pytest.approx(single["test/acc"], abs=1e-6)
    assert ddp["test/loss"] == pytest.approx(single["test/loss"], rel=1e-4)
