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
from mobilenet_lab.training.module import ImageClassifier
from mobilenet_lab.training.optimizer import build_optimizer
from mobilenet_lab.training.trainer import build_trainer

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["model", "data", "module", "optimizer", "scheduler", "trainer", "callbacks", "logger",
          "experiment", "debug"]  # fmt: skip


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


ALL_OPTIONS = [(group, option) for group in GROUPS for option in options(group)]


def test_every_group_has_options() -> None:
    assert all(options(group) for group in GROUPS)


def parquet_of(folder: Path, path: Path) -> Path:
    """A class folder's images as a Hugging Face parquet file (image bytes, class label)."""
    from datasets import ClassLabel, Dataset, Features, Image

    classes = sorted(entry.name for entry in folder.iterdir())
    files = [(f, c) for c, name in enumerate(classes) for f in sorted((folder / name).iterdir())]
    features = Features({"image": Image(), "label": ClassLabel(names=classes)})
    rows = {"image": [{"bytes": f.read_bytes(), "path": None} for f, _ in files],
            "label": [c for _, c in files]}  # fmt: skip
    Dataset.from_dict(rows, features=features).to_parquet(str(path))
    return path


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS)
def test_option_composes_and_resolves(
    make_cfg, image_tree, request, tmp_path: Path, group: str, option: str
) -> None:
    folder = [f"data.data_dir={image_tree}"]  # a folder to count classes in
    needs = {"imagefolder": folder, "imagenet_keras": folder, "paper_v1": folder, "timm_v1": folder}
    if option == "shards":  # shards of those images, written only for this option
        needs["shards"] = [f"data.data_dir={request.getfixturevalue('image_shards')}"]
    if option == "hf":  # the same images as a parquet file, written only for this option
        needs["hf"] = [f"data.name={parquet_of(image_tree / 'train', tmp_path / 'train.parquet')}"]
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
        "ContinuingCSVLogger",
        "TensorBoardLogger",
    }
    names = {type(callback).__name__ for callback in trainer.callbacks}
    assert {"ModelCheckpoint", "LearningRateMonitor", "RichModelSummary"} <= names


def test_gpu_preset_asks_for_a_gpu_with_mixed_precision(make_cfg) -> None:
    cfg = make_cfg("train", ["trainer=gpu"])
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("gpu", "bf16-mixed")
    ddp = make_cfg("train", ["trainer=ddp"])
    assert ddp.trainer.strategy == "ddp" and "sync_batchnorm" not in ddp.trainer
    assert ddp.trainer.plugins.sync_batchnorm._target_.endswith("TimmSyncBatchNorm")


@pytest.mark.parametrize(
    ("overrides", "alpha_and_size"),
    [
        ([], (0.75, 40)),  # conf/data_model/digits_mobilenet_v1.yaml: the default run's recipe
        (["model.alpha=1.0", "data.image_size=32"], (1.0, 32)),  # the command line wins
        (["model=mobilenet_v2"], (1.0, 64)),  # timm's models on the digits: data_model/ too
        (["model=mobilenet_v3_small", "data.image_size=32"], (1.0, 32)),
        (["model=timm_mobilenet_v1"], (1.0, 32)),  # another model on the digits: its own defaults
        (["data=cifar10"], (1.0, 32)),  # V1 on another data set: the model's and data's
    ],
)
def test_the_digits_recipes_are_for_their_model_on_the_digits_only(
    make_cfg, overrides: list[str], alpha_and_size: tuple[float, int]
) -> None:
    cfg = make_cfg("train", overrides)
    assert (cfg.model.alpha, cfg.data.image_size) == alpha_and_size


def test_run_dirs_use_microsecond_timestamps(make_cfg) -> None:
    cfg = make_cfg("train")
    stamp = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d{6}"
    assert re.fullmatch(f"logs/train/runs/{stamp}", cfg.hydra.run.dir)
    assert re.fullmatch(f"logs/train/multiruns/{stamp}", cfg.hydra.sweep.dir)


def test_eval_config_composes(make_cfg) -> None:
    cfg = make_cfg("eval", ["ckpt_path=x.ckpt"])
    assert cfg.task_name == "eval" and cfg.ckpt_path == "x.ckpt"
    assert (
        cfg.hydra.callbacks.validate.check == "mobilenet_lab.jobs.startup_checks.check_eval_config"
    )


# The recipes' published values: the paper's section 3.2 with TF-slim's settings (RMSprop 0.045,
# weight decay 4e-5, x0.94 every 2.5 epochs), timm's style (AdamW), the CIFAR ports (SGD).
RECIPES = {
    "paper_v1": (torch.optim.RMSprop, 0.045, 4e-5, 224),
    "timm_v1": (torch.optim.AdamW, 0.002, 0.05, 224),
    "cifar_v1": (torch.optim.SGD, 0.1, 5e-4, 32),
    "cifar_v2": (torch.optim.SGD, 0.1, 5e-4, 32),
}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipe_builds_and_takes_one_step(make_cfg, image_tree, recipe: str) -> None:
    from mobilenet_lab.training.module import parameter_groups

    cfg = make_cfg("train", [f"experiment={recipe}", f"data.data_dir={image_tree}"])
    optimizer_type, lr, weight_decay, size = RECIPES[recipe]
    net = instantiate(cfg.model)
    groups = parameter_groups(net, cfg.module.no_weight_decay)
    optimizer = build_optimizer(cfg.optimizer, global_batch_size=256)(groups)
    scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=100, steps_per_epoch=10)
    assert type(optimizer) is optimizer_type and cfg.data.image_size == size
    assert [g["weight_decay"] for g in optimizer.param_groups] == [weight_decay, 0.0]
    warmup_start = 1.0 if recipe == "paper_v1" else 0.1  # the others warm up from 0.1 x lr
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lr * warmup_start)
    net(torch.randn(2, cfg.data.in_chans, size, size)).logsumexp(1).mean().backward()
    optimizer.step()
    scheduler.step()
    if recipe == "paper_v1":  # no warmup; x0.94 every 25 steps
        lr_at = scheduler.lr_at
        assert (lr_at.keywords["step_size"], lr_at.keywords["gamma"]) == (25, 0.94)
        assert cfg.module.label_smoothing == 0.0 and cfg.model.act == "relu"
    if recipe == "cifar_v1":  # the CIFAR port's stride-1 stem: 32 px ends at 2x2
        assert net.stem[0].stride == (1, 1)
        assert net.forward_features(torch.randn(1, 3, 32, 32)).shape[-1] == 2
    if recipe == "timm_v1":
        assert "ema" in cfg.callbacks and cfg.model.act == "relu6"
