"""Shared fixtures: configs composed exactly as the entry points compose them."""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

# Lightning imported now: its log handlers write to the session's stderr, not to the capture of
# the first test that runs an entry point in-process (closed after it).
import lightning.pytorch  # noqa: F401
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import mobilenet_lab.data.resolvers  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"


def pytest_configure(config: pytest.Config) -> None:
    """Each pytest-xdist worker gets its share of the cores, for torch here and OpenMP in the
    processes tests start: two workers of two threads each on two cores oversubscribe them,
    and torch's spinning threads then run the suite about twice as slowly."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` run where CUDA is present and are skipped, saying why, elsewhere."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu test: no CUDA device on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def compose_cfg(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Composes a top config as its entry point would, with ``output_dir`` as the run folder."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """Composes ``train`` or ``eval`` with overrides; its run folder is a fresh temp dir."""

    def make(config_name: str = "train", overrides: list[str] = (), run_dir: Path | None = None):
        return compose_cfg(config_name, overrides, run_dir or tmp_path / "run")

    yield make
    GlobalHydra.instance().clear()


def run_cli(
    *args: str, cwd: Path = ROOT, timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Runs ``python <args>`` from the repository root, as a user would, and captures output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@contextmanager
def global_state_put_back() -> Iterator[None]:
    """What an entry point run in this process changes for the next test is put back on leaving:
    environment variables, torch's threads and determinism, the root logger. Hydra's logging
    set-up (``logging.config.dictConfig``) closes every handler alive, pytest's own among them
    (its log file handler, then written to when closed): it closes only the run's own here."""
    import logging.config

    import torch

    env, threads = dict(os.environ), torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    alive = {ref() for ref in logging._handlerList}

    def close_only_new_handlers() -> None:
        logging._handlers.clear()
        logging.shutdown([ref for ref in logging._handlerList if ref() not in alive])
        del logging._handlerList[:]

    original = logging.config._clearExistingHandlers
    logging.config._clearExistingHandlers = close_only_new_handlers
    try:
        yield
    finally:
        logging.config._clearExistingHandlers = original
        os.environ.clear()
        os.environ.update(env)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        for handler in set(root.handlers) - set(handlers):
            handler.close()
        root.handlers[:], root.level = handlers, level


@pytest.fixture
def run_main(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., subprocess.CompletedProcess]:
    """``run_cli`` in this process: the script run as ``__main__`` with its arguments, from the
    repository root, its exit status and its output (file-descriptor level, so Lightning's and
    Hydra's logging are caught too). Saves a new interpreter's start and imports (about 5 s a
    run on 2 cores) where the process itself is not under test (killing it, DDP's ranks)."""

    def run(script: str, *args: str, env: dict[str, str] | None = None):
        capfd.readouterr()
        with monkeypatch.context() as patch, global_state_put_back():
            patch.chdir(ROOT)
            patch.setattr(sys, "argv", [str(ROOT / script), *args])
            for key, value in {"HYDRA_FULL_ERROR": "0", **(env or {})}.items():
                patch.setenv(key, value)
            GlobalHydra.instance().clear()
            try:
                runpy.run_path(str(ROOT / script), run_name="__main__")
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
            finally:
                GlobalHydra.instance().clear()
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess([script, *args], code, out, err)

    return run


@contextmanager
def started(
    commands: list[list[str]], logs: list[Path], env: dict[str, str] | None = None
) -> Iterator[list[subprocess.Popen]]:
    """Starts ``python <command>`` for each command, together, from the repository root, each in
    its own process group with stdout and stderr going to its log file (a pipe nobody reads
    can fill and block the child). On leaving, any still running is killed with its children
    (torchrun's workers, DDP's ranks), so a failed or timed-out test leaves nothing behind."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with ExitStack() as stack:
        procs = []
        for command, log in zip(commands, logs, strict=True):
            out = stack.enter_context(open(log, "w"))
            procs.append(subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env,
                                          stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True))  # fmt: skip
        try:
            yield procs
        finally:
            for proc in procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A distillation teacher trained by the kit: V1 alpha 0.5 at 40 px on the digits, 1 short
    epoch (students in the tests: alpha 0.25 at 32 px, so the teacher's batches are resized)."""
    from mobilenet_lab.train import train

    overrides = ["debug=limit", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                 "~callbacks.model_summary", "model.alpha=0.5", "data.image_size=40"]  # fmt: skip
    run_dir = tmp_path_factory.mktemp("teacher")
    return Path(train(compose_cfg("train", overrides, run_dir))["best_checkpoint"])


# 10 epochs of the whole digits training split at alpha 0.25, 32 px: a network that learned
# (about 93% test accuracy, in about 5 s), against which int8's loss can be measured (a 1-epoch
# slice guesses: about 11%)
LEARNED = ["trainer.enable_progress_bar=false", "~callbacks.model_summary", "model.alpha=0.25",
           "data.image_size=32", "trainer.max_epochs=10"]  # fmt: skip


@pytest.fixture(scope="session")
def learned_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits run that learned (``LEARNED``); returns its best checkpoint. Read it only: an
    export into its folder would change what other tests find there."""
    from mobilenet_lab.train import train

    run_dir = tmp_path_factory.mktemp("learned_run")
    return Path(train(compose_cfg("train", LEARNED, run_dir))["best_checkpoint"])


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.data_files import write_image_tree

    return write_image_tree(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def image_shards(image_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``image_tree`` as LitData shards (``data=shards``)."""
    from tests.data_files import write_shards_of

    return write_shards_of(image_tree, tmp_path_factory.mktemp("shards") / "shards")


def test_split_accuracy(
    logits: Callable[[Any], Any], datamodule: Any, max_images: int | None = None
) -> float:
    """The top-1 accuracy of ``logits`` over ``datamodule``'s test split (its first
    ``max_images``, as ``trainer.limit_test_batches`` cuts it), counted here: what a run's
    reported test/acc must equal."""
    import torch

    from mobilenet_lab.deploy.loading import eval_batches

    hits = total = 0
    with torch.no_grad():
        for images, labels in eval_batches(datamodule, "test", max_images):
            hits += int((logits(images).argmax(1) == labels).sum())
            total += len(labels)
    return hits / total


test_split_accuracy.__test__ = False  # a helper, not a test


def norm_layer_types(net: Any) -> list[type]:
    """The types of ``net``'s BatchNorm layers in order (timm's BatchNormAct2d and the
    SyncBatchNorm kinds are BatchNorms too)."""
    from torch.nn.modules.batchnorm import _BatchNorm

    return [type(module) for module in net.modules() if isinstance(module, _BatchNorm)]


def synced_types(types: list[type]) -> list[type]:
    """What the ``ddp`` preset's SyncBatchNorm plugin (timm's conversion) turns norm layers of
    ``types`` into: timm's BatchNormAct2d into SyncBatchNormAct, keeping its activation; any
    other BatchNorm into torch's SyncBatchNorm."""
    import torch
    from timm.layers import BatchNormAct2d
    from timm.layers.norm_act import SyncBatchNormAct

    return [SyncBatchNormAct if issubclass(t, BatchNormAct2d) else torch.nn.SyncBatchNorm
            for t in types]  # fmt: skip


def reverted_types(types: list[type]) -> list[type]:
    """What that plugin's ``revert`` gives back for norm layers of ``types``: timm's
    BatchNormAct2d whole; for any other, Lightning's ``_BatchNormXd`` (a BatchNorm of any
    dimension: Lightning's revert of torch's SyncBatchNorm)."""
    from lightning.pytorch.plugins.layer_sync import _BatchNormXd
    from timm.layers import BatchNormAct2d

    return [t if issubclass(t, BatchNormAct2d) else _BatchNormXd for t in types]
