"""The multi-GPU and cluster paths, checked on the CPU: SyncBatchNorm conversion, RNG state per
rank, device counts, data workers, unreadable images and the SLURM launcher's config checks."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from mobilenet_lab.training.trainer import build_trainer
from tests.conftest import norm_layer_types, reverted_types, synced_types

CONF = Path(__file__).resolve().parents[1] / "conf"
FAMILIES = sorted(path.stem for path in (CONF / "model").glob("*.yaml"))


@pytest.mark.slow
def test_ddp_preset_syncs_batchnorm_without_losing_timm_activations(make_cfg) -> None:
    """The layer sync the ``ddp`` preset gives DDP converts every BatchNorm of every family
    (timm's BatchNormAct2d into timm's SyncBatchNormAct) into a network that computes the same
    logits, and reverts each to a plain BatchNorm (timm's to its own type) computing them again.
    No process group is needed for this: tests/test_gpu.py sees the same inside a DDP fit."""
    cfg = make_cfg("train", ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                             "trainer.precision=32"])  # fmt: skip
    layer_sync = build_trainer(cfg).strategy._layer_sync  # what DDPStrategy applies in fit
    assert layer_sync is not None
    images = torch.randn(2, 1, 32, 32)
    for family in FAMILIES:
        net = instantiate(make_cfg("train", [f"model={family}"]).model).eval()
        with torch.no_grad():
            for _ in range(2):  # give BatchNorm running statistics that are not 0 and 1
                net.train()(torch.randn(4, 1, 32, 32))
            expected = net.eval()(images)
            built = norm_layer_types(net)
            converted = layer_sync.apply(copy.deepcopy(net)).eval()
            assert built and norm_layer_types(converted) == synced_types(built), family
            torch.testing.assert_close(converted(images), expected, msg=family)
            reverted = layer_sync.revert(converted).eval()
            assert norm_layer_types(reverted) == reverted_types(built), family
            torch.testing.assert_close(reverted(images), expected, msg=family)


class FakeCuda:
    """``torch.cuda``'s RNG functions on a machine with ``visible`` GPUs, ``current`` in use."""

    def __init__(self, visible: int, current: int) -> None:
        self.states = [torch.tensor([10 * visible + i], dtype=torch.uint8) for i in range(visible)]
        self.current = current

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(self.states))
        monkeypatch.setattr(torch.cuda, "get_rng_state", self.get_rng_state)
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set_rng_state)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(self.states))
        monkeypatch.setattr(
            torch.cuda,
            "set_rng_state_all",
            lambda states: [self.set_rng_state(s, i) for i, s in enumerate(states)],
        )

    def _index(self, device: int | str) -> int:
        return self.current if device == "cuda" else int(device)

    def get_rng_state(self, device: int | str = "cuda") -> torch.Tensor:
        return self.states[self._index(device)].clone()

    def set_rng_state(self, state: torch.Tensor, device: int | str = "cuda") -> None:
        self.states[self._index(device)] = state.clone()  # IndexError past the visible GPUs


def test_rng_state_keeps_the_current_gpus_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Saved on GPU 1 of a 2-GPU machine, resumed on a machine that shows one GPU."""
    from mobilenet_lab.training.callbacks import RNGState

    saving = FakeCuda(visible=2, current=1)
    saving.install(monkeypatch)
    state = RNGState().state_dict()
    resuming = FakeCuda(visible=1, current=0)
    resuming.install(monkeypatch)
    RNGState().load_state_dict(copy.deepcopy(state))
    assert resuming.states[0].item() == saving.states[1].item()


def _save_and_resume_on_rank(rank: int, port: int, results: Path) -> None:
    """One of two gloo processes, seeded differently per rank (as diverging augmentation streams
    are); saves, draws on, then restores from the checkpoint rank 0 wrote."""
    import torch.distributed as dist

    from mobilenet_lab.training.callbacks import RNGState

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(100 + rank)
        state = RNGState().state_dict()  # a collective: every rank saves at the same step
        expected = torch.rand(3)  # what this rank draws next in an uninterrupted run
        if rank == 0:  # only rank 0 writes the checkpoint; every rank reads it on resume
            torch.save(state, results / "rng.ckpt")
        dist.barrier()
        torch.manual_seed(0)  # the resumed process starts freshly seeded
        RNGState().load_state_dict(torch.load(results / "rng.ckpt", weights_only=True))
        torch.save({"expected": expected, "resumed": torch.rand(3)}, results / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_rng_state_is_saved_and_restored_per_rank(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    from tests.test_distributed import free_port

    mp.spawn(_save_and_resume_on_rank, args=(free_port(), tmp_path), nprocs=2)
    for rank in (0, 1):
        draws = torch.load(tmp_path / f"{rank}.pt")
        torch.testing.assert_close(draws["resumed"], draws["expected"], msg=f"rank {rank}")


SLURM = ["hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2"]


def _validate_multirun(overrides: list[str]) -> None:
    """What ``python src/train.py -m <overrides>`` checks in the submitting process."""
    from hydra import compose, initialize_config_dir

    from mobilenet_lab.jobs.hydra_callbacks import ValidateConfig

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        ValidateConfig(cfg.hydra.callbacks.validate.check).on_multirun_start(cfg, "train")


def test_slurm_submission_checks_no_gpu_on_the_login_node(capsys) -> None:
    _validate_multirun([*SLURM, "trainer.devices=8"])  # this machine has no GPU: no exit
    with pytest.raises(SystemExit) as exit_info:  # jobs that run here are checked in full
        _validate_multirun(["trainer=ddp_cpu", "trainer.devices=8"])
    assert exit_info.value.code == 2
    assert "trainer.devices=8" in capsys.readouterr().err


def test_slurm_needs_a_number_of_devices(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _validate_multirun(SLURM)  # the ddp preset's devices: auto
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trainer.devices=auto" in err and "devices=<GPUs" in err


def test_a_slurm_job_checks_the_hardware_it_runs_on(make_cfg, capsys) -> None:
    from hydra.types import RunMode
    from omegaconf import read_write

    from mobilenet_lab.jobs.hydra_callbacks import ValidateConfig

    cfg = make_cfg("train", [*SLURM, "trainer.devices=8"])
    with read_write(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    with pytest.raises(SystemExit) as exit_info:
        ValidateConfig(cfg.hydra.callbacks.validate.check).on_job_start(cfg, task_function=print)
    assert exit_info.value.code == 2 and "has no GPU" in capsys.readouterr().err


def test_global_batch_counts_devices_as_lightning_does(make_cfg, monkeypatch) -> None:
    from mobilenet_lab.jobs.startup_checks import check_train_config
    from mobilenet_lab.runs.errors import ConfigError
    from mobilenet_lab.training.trainer import per_device_batch_size

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)  # a GPU machine, run on its CPU
    cpu_auto = make_cfg("train", ["trainer.devices=auto", "global_batch_size=256"])
    assert per_device_batch_size(cpu_auto) == 256  # Lightning: one CPU process for "auto"
    cpu_list = make_cfg("train", ["trainer=ddp_cpu", "trainer.devices=[0,1]",
                                  "global_batch_size=256"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"trainer\.devices=\[0, 1\]"):
        per_device_batch_size(cpu_list)  # Lightning takes a list of GPUs, not of CPU processes
    monkeypatch.undo()
    every_core = make_cfg("train", ["trainer.devices=-1", "global_batch_size=256"])
    with pytest.raises(ConfigError, match=r"trainer\.devices=-1"):
        check_train_config(every_core)  # Lightning refuses -1 CPU processes


def test_a_batch_of_unreadable_images_is_filled_with_readable_ones(tmp_path: Path) -> None:
    """DDP refuses a training step without a loss, so no batch may come out empty."""
    from mobilenet_lab.data.imagefolder import ImageFolderDataModule
    from tests.data_files import write_image_tree

    tree = write_image_tree(tmp_path, classes=2, per_class=4)
    broken = sorted(str(path) for path in (tree / "val" / "class_0").iterdir())
    for path in broken:  # the whole first val batch
        Path(path).write_bytes(b"not a jpeg")
    dm = ImageFolderDataModule(str(tree), num_classes=2, num_workers=0, image_size=32,
                               batch_size=4)  # fmt: skip
    dm.setup()
    images, labels, bad = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, 32, 32) and labels.tolist() == [1, 1, 1, 1]  # class_1's
    # still named, with the reason, for BadFileReport
    assert bad == [f"{path} (not a readable image (cannot identify image file {path!r}))"
                   for path in broken]  # fmt: skip


def test_loader_workers_share_this_process_cpus(tmp_path: Path, monkeypatch) -> None:
    from types import SimpleNamespace

    from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

    from mobilenet_lab.data.imagefolder import ImageFolderDataModule
    from tests.data_files import write_image_tree

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(32)))
    monkeypatch.setattr("os.cpu_count", lambda: 32)
    dm = ImageFolderDataModule(str(write_image_tree(tmp_path)), num_classes=3, image_size=32)
    dm.setup()
    for environment, workers in ((LightningEnvironment(), 4), (SLURMEnvironment(), 6)):
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
        strategy = SimpleNamespace(cluster_environment=environment)
        dm.trainer = SimpleNamespace(num_devices=8, world_size=8, global_rank=0, strategy=strategy)
        assert dm.train_dataloader().num_workers == workers  # 32 CPUs / 8 processes; SLURM's 6
