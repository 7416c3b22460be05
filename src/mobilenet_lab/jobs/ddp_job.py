"""One job of a run or a sweep under Lightning's DDP, so that a failing job fails alone.

Lightning starts DDP children by re-running the command line (with ``hydra.run.dir`` set), and
watches them with a thread that, when a child exits non-zero, SIGKILLs the children *and the
main process*: one diverged job of a multirun killed the whole sweep (exit 137, no summary).
Here each job's children are watched by ``ChildWatcher`` instead, which stops only the other
children: the main process then fails at its next collective, its task function records the
failure, and the sweep goes on to its next job.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import torch
from lightning.pytorch.strategies.launchers import subprocess_script

from mobilenet_lab.training.module import TrainingDiverged


class ChildWatcher(threading.Thread):
    """Polls a job's DDP children; when one exits non-zero, SIGKILLs the others (not the main
    process, unlike Lightning's observer) and remembers which one failed and how."""

    def __init__(self, children: list[subprocess.Popen], period_s: float = 0.5) -> None:
        super().__init__(daemon=True, name="ddp-child-watcher")
        self.children = children
        self.period_s = period_s
        self.failure: str | None = None
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.period_s):
            codes = [child.poll() for child in self.children]
            if all(code == 0 for code in codes):
                return
            failed = [(rank, code) for rank, code in enumerate(codes, start=1) if code]
            if failed:
                rank, code = failed[0]
                self.failure = f"DDP rank {rank} exited with status {code} (its error is above)"
                self._kill_all()
                return

    def finish(self, timeout_s: float = 30.0) -> None:
        """Stops watching, then waits for the children to end (SIGKILL after ``timeout_s``)."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._kill_all()

    def _kill_all(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
                child.wait()


@contextmanager
def ddp_job() -> Iterator[None]:
    """Runs one job so that Lightning's DDP works in a Hydra multirun and fails alone.

    - In a multirun (a basic sweep or Optuna), the children's command line is this job's own
      overrides, its folder and ``hydra.mode=RUN``: the sweep's command would start the sweep
      again in every child (with ``hparams_search=optuna``, a study of their own).
    - The children are watched by ``ChildWatcher``; a job whose child failed raises here, naming
      the rank, unless the main process found its own reason (a diverged loss, say).
    - After the job the process group is closed, the children reaped, and the environment
      Lightning set (``LOCAL_RANK``, ``MASTER_PORT``...) put back, so the next job launches
      its own children."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    hydra_cfg = HydraConfig.get()
    environment, argv = dict(os.environ), list(sys.argv)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sys.argv = [sys.argv[0], *hydra_cfg.overrides.task, "hydra.mode=RUN"]
        with read_write(hydra_cfg):
            hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    watchers: list[ChildWatcher] = []

    def watch(children: list[subprocess.Popen]) -> None:
        watchers.append(ChildWatcher(children))
        watchers[-1].start()

    try:
        with mock.patch.object(subprocess_script, "_launch_process_observer", watch):
            yield
    except Exception as error:
        failure = next((w.failure for w in watchers if w.failure), None)
        if failure is None or isinstance(error, TrainingDiverged):
            raise
        raise RuntimeError(f"{failure}; this process then stopped with: {error}") from error
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for watcher in watchers:
            watcher.finish()
        os.environ.clear()
        os.environ.update(environment)
        sys.argv = argv
