"""The LightningModule that trains, validates and tests any image classifier in ``conf/model/``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from mobilenet_lab.runs.errors import Refused
from mobilenet_lab.training.distillation import DEFAULTS, Teacher, distillation_loss

VAL_ACC_BEST_KEY = "val_acc_best"
OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
SchedulerFactory = Callable[..., LRScheduler]


class TrainingDiverged(Refused):
    """The training loss became NaN or infinite: nothing after that step can be trusted (a
    result refused: its message is the one line to print)."""


class ImageClassifier(L.LightningModule):
    """Cross-entropy (optionally label-smoothed) with top-1/top-5 accuracy per split.

    The optimizer and scheduler arrive as partials from their config groups, so the module
    never needs to know which one was chosen (evaluation needs neither). Top-5 is logged only
    with more than 5 classes. ``mixup`` holds timm ``Mixup`` arguments (``mixup_alpha``,
    ``cutmix_alpha``, ``prob``, ``switch_prob``, ``mode``) to mix training batches; train
    accuracy is then measured against the unmixed labels.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        no_weight_decay: Sequence[str] = ("norm", "bias", "depthwise"),
        mixup: dict | None = None,
        compile: bool = False,
        distill: dict | None = None,
    ) -> None:
        super().__init__()
        distill = {**DEFAULTS, **(distill or {})}  # checkpoints from before a key existed
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.mixup = None
        self._said_odd_batch = False
        if mixup:  # timm's Mixup / CutMix; it also applies the label smoothing
            from timm.data import Mixup

            self.mixup = Mixup(**mixup, label_smoothing=label_smoothing, num_classes=num_classes)
        metrics = {"acc": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
        if num_classes > 5:
            metrics["acc5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
        collection = MetricCollection(metrics)
        self.train_metrics = collection.clone(prefix="train/")
        self.val_metrics = collection.clone(prefix="val/")
        self.test_metrics = collection.clone(prefix="test/")
        # Losses weighted by images, so DDP ranks holding unequal shares sync exactly
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        self._teacher: tuple[Teacher, ...] = ()  # a tuple: no registered child (distillation.py)

    def setup(self, stage: str) -> None:
        """The teacher is loaded for fitting only: eval, export and predict never need it."""
        distill = self.hparams.distill
        if stage == "fit" and distill["teacher"] and not self._teacher:
            teacher = Teacher(distill["teacher"])
            data = getattr(self._trainer, "datamodule", None)
            if hasattr(data, "mean"):  # the student's normalisation, set up before this hook
                teacher.match_student(data.mean, data.std)
            self._teacher = (teacher,)
            if distill["cache"]:  # before any training loader is built (Lightning builds
                # one to count the steps for the scheduler, before on_fit_start)
                data.attach_train_outputs(teacher.logits, self.trainer.strategy.root_device)

    @property
    def teacher(self) -> Teacher | None:
        """The distillation teacher, once ``setup("fit")`` has loaded it."""
        return self._teacher[0] if self._teacher else None

    def distillation_record(self) -> dict[str, Any]:
        """Which teacher taught the run (path, SHA-256) and how, as flat ``metrics.json`` keys
        (columns of the runs table); empty for a plain run."""
        if not self.teacher:
            return {}
        distill = self.hparams.distill
        return {**self.teacher.record(), "distill_weight": distill["weight"],
                "distill_temperature": distill["temperature"]}  # fmt: skip

    def configure_model(self) -> None:
        """``compile=true``: torch.compile the network in place (its parameter names and
        checkpoints stay those of the plain network)."""
        if self.hparams.compile and self.net._compiled_call_impl is None:
            self.net.compile()

    def forward(self, images: Tensor) -> Tensor:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def _step(self, batch: tuple[Tensor, ...], split: str) -> Tensor:
        images, labels, *cached = batch  # cached: the teacher's logits (module.distill.cache)
        mix = split == "train" and self.mixup is not None
        if mix and len(labels) % 2:  # timm's Mixup pairs images up: it needs an even batch
            if not self._said_odd_batch:
                rank_zero_warn(
                    f"mixup/cutmix skipped on a batch of {len(labels)} images (odd size): "
                    "odd batches train on plain (label-smoothed) labels. An even "
                    "data.batch_size and training set size avoid it (said once per run)"
                )
                self._said_odd_batch = True
            mix = False
        if mix:
            images, targets = self.mixup(images, labels)
            logits = self(images)
            loss = F.cross_entropy(logits, targets)  # soft targets
        else:
            logits = self(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        training = split == "train"
        if training and self._teacher:
            distill = self.hparams.distill
            weight = distill["weight"]
            taught = cached[0] if cached else self._teacher[0].logits(images)
            soft = distillation_loss(logits, taught, distill["temperature"])
            loss = soft if weight == 1 else (1 - weight) * loss + weight * soft
        if training and not torch.isfinite(loss):
            self._diverged(loss)
        metrics: MetricCollection = getattr(self, f"{split}_metrics")
        metrics.update(logits, labels)
        mean_loss: MeanMetric = getattr(self, f"{split}_loss")
        if training:  # forward: the step's value is this rank's batch alone (no all-reduce per
            # step); the epoch's is every rank's images, synced once as the epoch ends
            mean_loss(loss.detach(), weight=len(labels))
        else:
            mean_loss.update(loss, weight=len(labels))
        self.log(f"{split}/loss", mean_loss, on_step=training, on_epoch=True, prog_bar=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _diverged(self, loss: Tensor) -> None:
        """Stops the run at the first non-finite training loss, saying where and at what lr."""
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        raise TrainingDiverged(
            f"loss {loss.item()} at step {self.trainer.global_step} "
            f"(epoch {self.current_epoch}), lr {lr:.4g}"
        )

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.val_acc_best.update(self.val_metrics["acc"].compute())
            self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The best val/acc so far goes into the checkpoint (torchmetrics keeps its states out of
        the state_dict), so that a resumed run's ``val/acc_best`` covers the whole run."""
        if self.val_acc_best.update_count:
            checkpoint[VAL_ACC_BEST_KEY] = self.val_acc_best.max_value.detach().cpu()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if VAL_ACC_BEST_KEY in checkpoint:
            self.val_acc_best.update(checkpoint[VAL_ACC_BEST_KEY].to(self.device))

    def configure_optimizers(self) -> dict:
        if self.optimizer_factory is None:
            raise ValueError("ImageClassifier needs an optimizer to train: pass optimizer=...")
        optimizer = self.optimizer_factory(parameter_groups(self.net, self.hparams.no_weight_decay))
        if self.scheduler_factory is None:
            self._settings = _group_settings(optimizer, keep_lr=True)
            return {"optimizer": optimizer}
        trainer = self.trainer
        total_steps = int(trainer.estimated_stepping_batches)
        steps_per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
        scheduler = self.scheduler_factory(
            optimizer, total_steps=total_steps, steps_per_epoch=max(1, steps_per_epoch)
        )
        self._settings = _group_settings(optimizer, keep_lr=False)  # the schedule sets the lr
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_train_start(self) -> None:
        """A resumed run's optimizer keeps its restored state (momentum, Adam's moments) but
        runs with this run's settings: the checkpoint's, unless ``resume.allow_changes`` took
        a new one (``optimizer.lr=...``), which the restored param groups would silently undo."""
        optimizer = self.trainer.optimizers[0]
        for group, settings in zip(optimizer.param_groups, self._settings, strict=True):
            group.update(settings)


def _group_settings(optimizer: Optimizer, keep_lr: bool) -> list[dict[str, Any]]:
    """Each param group's hyperparameters as built (not its parameters; not the ``lr`` a
    schedule sets)."""
    dropped = {"params"} if keep_lr else {"params", "lr"}
    return [
        {k: v for k, v in group.items() if k not in dropped} for group in optimizer.param_groups
    ]


NO_DECAY_KINDS = frozenset({"norm", "bias", "depthwise"})


def parameter_groups(net: nn.Module, no_weight_decay: Sequence[str]) -> list[dict]:
    """Splits parameters into a decayed group and one with ``weight_decay=0``.

    ``no_weight_decay`` names what to exempt: ``norm`` (BatchNorm scale and shift), ``bias``,
    ``depthwise`` (depthwise conv filters: the paper puts very little or no weight decay on
    them). Written here rather than taken from timm so that V1 runs need not import timm.
    """
    unknown = set(no_weight_decay) - NO_DECAY_KINDS
    if unknown:
        raise ValueError(
            f"no_weight_decay={list(no_weight_decay)!r}: unknown {sorted(unknown)}, "
            f"use any of {sorted(NO_DECAY_KINDS)}"
        )
    decay, no_decay = [], []
    for module in net.modules():
        for name, param in module.named_parameters(recurse=False):
            (no_decay if _kind(module, name) in no_weight_decay else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def _kind(module: nn.Module, param_name: str) -> str:
    if isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm):
        return "norm"
    if param_name == "bias":
        return "bias"
    if isinstance(module, nn.Conv2d) and module.groups == module.in_channels > 1:
        return "depthwise"
    return "weight"
