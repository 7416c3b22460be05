"""Every option of every config group composes, and instantiates into what its module expects."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from mobilenet_lab.data.digits import DigitsDataModule
from mobilenet_lab.module import ImageClassifier
from mobilenet_lab.optimizer import build_optimizer
from mobilenet_lab.trainer import build_trainer

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["model", "data", "module", "optimizer", "scheduler", "trainer", "callbacks", "logger",
          "experiment", "debug"]  # fmt: skip


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


ALL_OPTIONS = [(group, option) for group in GROUPS for option in options(group)]


def test_every_group_has_options() -> None:
    assert all(options(group) for group in GROUPS)


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS)
def test_option_composes_and_resolves(make_cfg, image_tree, group: str, option: str) -> None:
    folder = [f"data.data_dir={image_tree}"]  # a folder to count classes in
    needs = {"imagefolder": folder, "imagenet_keras": folder, "paper_v1": folder, "timm_v1": folder}
    cfg = make_cfg("train", [f"{group}={option}", *needs.get(option, [])])
    assert cfg.hydra.runtime.choices[group] == option
    assert OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_model_config_instantiates_the_network(make_cfg) -> None:
    cfg = make_cfg("train", ["model.alpha=0.5"])
    net = instantiate(cfg.model)
    assert isinstance(net, nn.Module) and net.num_features == 512
    assert net.classifier.out_features == cfg.data.num_classes == 10  # filled from data
    assert net.stem[0].in_channels == cfg.data.in_chans == 1


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_optimizer_and_scheduler_instantiate(make_cfg, optimizer: str, scheduler: str) -> None:
    cfg = make_cfg("train", [f"optimizer={optimizer}", f"scheduler={scheduler}"])
    params = [nn.Parameter(torch.zeros(2))]
    opt = build_optimizer(cfg.optimizer, global_batch_size=256)(params)
    assert isinstance(opt, torch.optim.Optimizer)
    if cfg.scheduler is None:
        assert scheduler == "none"
        return
    sched = instantiate(cfg.scheduler)(opt, total_steps=100, steps_per_epoch=10)
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)


def test_module_and_data_instantiate(make_cfg) -> None:
    cfg = make_cfg("train")
    module = instantiate(cfg.module, net=instantiate(cfg.model), optimizer=None)
    assert isinstance(module, ImageClassifier)
    assert isinstance(instantiate(cfg.data), DigitsDataModule)


@pytest.mark.parametrize(
    ("overrides", "strategy_name"),
    [
        (["trainer=cpu"], "SingleDeviceStrategy"),
        (["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32"],
         "DDPStrategy"),
    ],
)  # fmt: skip
def test_trainer_presets_build(make_cfg, overrides: list[str], strategy_name: str) -> None:
    cfg = make_cfg("train", [*overrides, "logger=many"])
    trainer = build_trainer(cfg)
    assert isinstance(trainer, L.Trainer)
    assert type(trainer.strategy).__name__ == strategy_name
    assert {type(logger).__name__ for logger in trainer.loggers} == {
        "CSVLogger",
        "TensorBoardLogger",
    }
    names = {type(callback).__name__ for callback in trainer.callbacks}
    assert {"ModelCheckpoint", "LearningRateMonitor", "RichModelSummary"} <= names


def test_gpu_preset_asks_for_a_gpu_with_mixed_precision(make_cfg) -> None:
    cfg = make_cfg("train", ["trainer=gpu"])
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("gpu", "bf16-mixed")
    ddp = make_cfg("train", ["trainer=ddp"])
    assert (ddp.trainer.strategy, ddp.trainer.sync_batchnorm) == ("ddp", True)


def test_run_dirs_use_microsecond_timestamps(make_cfg) -> None:
    cfg = make_cfg("train")
    stamp = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d{6}"
    assert re.fullmatch(f"logs/train/runs/{stamp}", cfg.hydra.run.dir)
    assert re.fullmatch(f"logs/train/multiruns/{stamp}", cfg.hydra.sweep.dir)


def test_eval_config_composes(make_cfg) -> None:
    cfg = make_cfg("eval", ["ckpt_path=x.ckpt"])
    assert cfg.task_name == "eval" and cfg.ckpt_path == "x.ckpt"
    assert cfg.hydra.callbacks.validate.check == "mobilenet_lab.startup_checks.check_eval_config"
