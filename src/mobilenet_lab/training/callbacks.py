"""Lightning callbacks of our own: what no Lightning callback records."""

from __future__ import annotations

import dataclasses
import itertools
import random
import time
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import EMAWeightAveraging, WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch.optim.swa_utils import get_ema_multi_avg_fn, update_bn

from mobilenet_lab.runs.errors import check_positive_int
from mobilenet_lab.runs.files import RUN_CONFIG_KEY
from mobilenet_lab.runs.record import RunRecord
from mobilenet_lab.training.loggers import logger_ids


class SaveRunConfig(L.Callback):
    """Stores the run's record (``runs.record.RunRecord``) in every checkpoint, so ``eval.py``
    needs only the path and a resume continues the run as recorded; at each save it adds the
    data module's class names and normalisation (predictions read as labels, new images
    normalised as the run's were: the digits' mean and std come from their split) and the
    loggers' run ids (a resumed run continues the same runs)."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        data = trainer.datamodule
        checkpoint[RUN_CONFIG_KEY] = dataclasses.replace(
            self.record,
            class_names=list(getattr(data, "classes", None) or []) or None,
            mean=list(data.mean) if hasattr(data, "mean") else None,
            std=list(data.std) if hasattr(data, "std") else None,
            logger_ids=logger_ids(trainer),
        ).stored()


class RunClock(L.Callback):
    """The run's wall-clock time, over all its segments: a resumed run counts the time of the
    parts before it (each up to its last checkpoint, the work a kill lost after that being
    redone) plus its own. Also records when the first training batch of this segment starts."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.earlier_s = 0.0  # the segments before this one, from the checkpoint resumed
        self.segments = 1
        self.first_step_time: float | None = None

    def total_s(self) -> float:
        return self.earlier_s + time.time() - self.started

    def on_train_batch_start(self, *args: Any) -> None:
        if self.first_step_time is None:
            self.first_step_time = time.time()

    def state_dict(self) -> dict[str, Any]:
        return {"wall_time_s": self.total_s(), "segments": self.segments}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.earlier_s = state_dict["wall_time_s"]
        self.segments = state_dict["segments"] + 1


class PreciseBatchNorm(L.Callback):
    """Before each validation of a fit, recomputes BatchNorm's running statistics over
    ``num_batches`` training batches (at most an epoch's) with the weights as they stand
    ("precise BN": Wu and Johnson, Rethinking "Batch" in BatchNorm, 2021; torch's
    ``swa_utils.update_bn`` averages).

    Why: the running averages trail the weights, and they were taken on augmented images while
    val and test see clean ones. In a short run that costs accuracy: the default digits run's
    final weights scored 98.3% on average with Lightning's running statistics, 98.5% with these.
    The batches come through the data module's own transfer hooks at validation time, so the
    in-memory data sets (digits, CIFAR) give them unaugmented; image folders give their training
    transform. Each rank uses its own shard. The global random state is left as it was, so the
    rest of the run draws the same numbers as without this callback. Validations inside an epoch
    (``val_check_interval``) are left alone: a new pass over the training loader there would
    restart a loader with persistent workers under the epoch that is using it. With
    ``callbacks=ema`` the averaged weights are validated, tested and saved: their statistics are
    the ones recomputed."""

    def __init__(self, num_batches: int = 10) -> None:
        check_positive_int("num_batches", num_batches)
        self.num_batches = num_batches

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch_ended = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or not epoch_ended:
            return
        count = int(min(self.num_batches, trainer.num_training_batches))  # limit_train_batches
        validated = validated_module(trainer, pl_module)
        with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.no_grad():
            batches = itertools.islice(trainer.train_dataloader, count)
            update_bn((trainer.strategy.batch_to_device(batch)[0] for batch in batches), validated)


class FreezeQuantization(L.Callback):
    """torchvision's QAT recipe for a quantization-aware network (``deploy.pt2e.QatNetwork``):
    from epoch ``observers_epoch`` (0-based) the int8 scales stay as learned, from ``bn_epoch``
    BatchNorm keeps its running statistics; None: never. The flags live in the network's
    buffers, so a resumed run goes on frozen."""

    def __init__(self, observers_epoch: int | None, bn_epoch: int | None) -> None:
        self.observers_epoch, self.bn_epoch = observers_epoch, bn_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        net, epoch = pl_module.net, trainer.current_epoch
        if self.observers_epoch is not None and epoch >= self.observers_epoch:
            net.freeze_observers()
        if self.bn_epoch is not None and epoch >= self.bn_epoch:
            net.freeze_bn()


def validated_module(trainer: L.Trainer, pl_module: L.LightningModule) -> torch.nn.Module:
    """The module validation is about to run: with weight averaging (``callbacks=ema``),
    Lightning swaps the averaged copy's weights *and buffers* in when the validation epoch
    starts (and saves them as the checkpoint's ``state_dict``), so its statistics are the ones
    to recompute, for its weights. (``_average_model`` is the callback's own attribute: Lightning
    has no public accessor for the averaged model.)"""
    for callback in trainer.callbacks:
        if isinstance(callback, WeightAveraging) and callback._average_model is not None:
            return callback._average_model.module
    return pl_module


class WarmupEMA(EMAWeightAveraging):
    """Lightning's ``EMAWeightAveraging`` with the decay warm-up of timm's
    ``ModelEmaV3(use_warmup=True)``: the update that follows ``n`` earlier ones uses decay
    ``min(decay, 1 - (1 + n / warmup_gamma) ** -warmup_power)``, so a short run averages over its
    recent steps instead of keeping most of the weight on its first ones (a fixed 0.999 averages
    over about 1,000 steps; the default digits run has about 140). Everything else is Lightning's:
    validation, test, checkpoints (``current_model_state``), resume. ``n`` is the
    ``AveragedModel``'s own ``n_averaged`` buffer, which Lightning saves in ``averaging_state``,
    so a resumed run continues the schedule where it stopped."""

    def __init__(
        self, decay: float = 0.999, warmup_gamma: float = 1.0, warmup_power: float = 2 / 3,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(decay=decay, **kwargs)
        for name, value in (("warmup_gamma", warmup_gamma), ("warmup_power", warmup_power)):
            if not value > 0:
                raise ValueError(f"{name}={value!r} is not valid: use a number > 0")
        self.decay = decay
        self.warmup_gamma = warmup_gamma
        self.warmup_power = warmup_power
        # The parent gives the AveragedModel it builds in setup() a fixed-decay avg_fn; ours, in
        # the multi-tensor form, reads the update count once per update, not once per tensor.
        del self._kwargs["avg_fn"]
        self._kwargs["multi_avg_fn"] = self._update

    def decay_at(self, num_averaged: int) -> float:
        """The decay of the update that follows ``num_averaged`` earlier ones (timm's
        ``get_decay(num_averaged + 1)``: its first update, like the ``AveragedModel``'s, copies)."""
        warmup = 1.0 - (1.0 + num_averaged / self.warmup_gamma) ** -self.warmup_power
        return min(self.decay, warmup)

    def _update(
        self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor
    ) -> None:
        get_ema_multi_avg_fn(self.decay_at(int(num_averaged)))(averaged, current, num_averaged)


class BadFileReport(L.Callback):
    """At the end of each epoch, names the image files the data module had to skip."""

    def __init__(self) -> None:
        self.reported: set[str] = set()

    def _report(self, trainer: L.Trainer) -> None:
        bad = getattr(trainer.datamodule, "bad_files", set()) - self.reported
        if bad:
            self.reported |= bad
            listing = "\n  ".join(sorted(bad))
            rank_zero_warn(f"skipped {len(bad)} unreadable image(s) this epoch:\n  {listing}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer)


class RNGState(L.Callback):
    """Saves the random number generators' states in each checkpoint and restores them on
    resume, so that a resumed run draws the same shuffles and augmentations as an uninterrupted
    one (Lightning saves model, optimizer, scheduler and loop state, not the RNGs).

    Under DDP only rank 0 writes the checkpoint, so every rank's states are gathered into it
    (one entry per global rank), and each rank restores its own. Of CUDA, only the current
    device's generator is kept: the one this process draws from, which also resumes on a
    machine that shows fewer GPUs."""

    def state_dict(self) -> dict[str, Any]:
        ranks = [_rng_states()]
        if dist.is_available() and dist.is_initialized():
            ranks = [None] * dist.get_world_size()
            dist.all_gather_object(ranks, _rng_states())  # every rank saves at the same step
        return {"ranks": [_as_tensors(state) for state in ranks]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict.get("ranks", [state_dict])  # or one process's, as saved before
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if rank >= len(ranks):
            warnings.warn(
                f"the checkpoint holds the random states of {len(ranks)} process(es): rank "
                f"{rank} keeps its freshly seeded ones, so its draws differ from an "
                "uninterrupted run's",
                stacklevel=2,
            )
            return
        _set_rng_states(ranks[rank])


def _rng_states() -> dict[str, Any]:
    """This process's generators, as numpy arrays (which ``all_gather_object`` carries)."""
    state = {
        "torch": torch.get_rng_state().numpy(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state().numpy()  # the current device's
    return state


def _as_tensors(state: dict[str, Any]) -> dict[str, Any]:
    """The arrays as tensors, which a checkpoint loaded with ``weights_only`` may hold."""
    name, keys, *rest = state["numpy"]
    tensors = {**state, "numpy": (name, torch.from_numpy(keys.copy()), *rest)}
    for key in ("torch", "cuda"):
        if key in state:
            tensors[key] = torch.from_numpy(state[key].copy())
    return tensors


def _set_rng_states(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    random.setstate(_as_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """random.setstate wants the tuples it gave, which a checkpoint may hand back as lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value
