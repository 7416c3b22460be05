"""Logit distillation (Hinton et al. 2015; the paper's section 4.5): a frozen teacher trained
by this kit, whose softened logits the student matches beside (or instead of) the labels.

timm's ``LogitDistillationTask`` owns the student and the training step, which here belong to
the LightningModule; its loss is the one below (KL divergence of the softened distributions,
batch mean, x T^2). The teacher is held outside the module's registered children, so
Lightning's ``.train()`` and ``.to()`` calls, DDP's wrapping and the checkpoint's
``state_dict`` never reach it; it is moved to the student's device and precision on first use.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mobilenet_lab.runs.errors import ConfigError

TEACHER_EXAMPLE = "e.g. module.distill.teacher=logs/train/runs/<time>/checkpoints/best.ckpt"


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """KL(teacher || student) of the logits softened by ``temperature``, x temperature^2."""
    log_student = F.log_softmax(student.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher.float() / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def check_distill(distill: Any, num_classes: int, in_chans: int) -> None:
    """The teacher a run names: a checkpoint of this kit for the same classes and channels,
    ``weight`` in [0, 1], ``temperature`` > 0. One line each, before any run folder."""
    if not distill or not distill.get("teacher"):
        return
    from mobilenet_lab.runs.checkpoint import load_checkpoint
    from mobilenet_lab.runs.files import RUN_CONFIG_KEY

    weight, temperature = distill.get("weight", 0.5), distill.get("temperature", 4.0)
    if not isinstance(weight, int | float) or not 0 <= weight <= 1:
        raise ConfigError(f"module.distill.weight={weight!r} is not valid: use a number in [0, 1]")
    if not isinstance(temperature, int | float) or temperature <= 0:
        raise ConfigError(
            f"module.distill.temperature={temperature!r} is not valid: use a number > 0"
        )
    try:
        checkpoint = load_checkpoint(str(distill.teacher), TEACHER_EXAMPLE)
    except ConfigError as error:  # its message names ckpt_path: here the key is the teacher's
        raise ConfigError(str(error).replace("ckpt_path=", "module.distill.teacher=", 1)) from None
    model = checkpoint[RUN_CONFIG_KEY]["config"]
    for key, ours in (("num_classes", num_classes), ("in_chans", in_chans)):
        theirs = model["model"][key]
        if theirs != ours:
            raise ConfigError(
                f"module.distill.teacher={str(distill.teacher)!r} has model.{key}={theirs}, "
                f"this run {ours}: give a teacher trained on the same data"
            )


def fingerprint(path: str) -> str:
    """The teacher file's SHA-256, for the run's ``metrics.json``."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Teacher:
    """A frozen network from a checkpoint of this kit, always in eval mode, with its own
    preprocessing: when its image size differs from the student's the batch is resized.
    (Normalisation: teacher and student of one data set share it, their data config's.)"""

    def __init__(self, ckpt_path: str) -> None:
        from omegaconf import OmegaConf

        from mobilenet_lab.deploy.loading import load_network
        from mobilenet_lab.runs.checkpoint import load_checkpoint
        from mobilenet_lab.runs.files import RUN_CONFIG_KEY

        checkpoint = load_checkpoint(ckpt_path, TEACHER_EXAMPLE)
        config = OmegaConf.create(checkpoint[RUN_CONFIG_KEY]["config"])
        self.image_size = int(config.data.image_size)
        self.net: nn.Module = load_network(config, checkpoint, "averaged").requires_grad_(False)
        self.path = str(Path(ckpt_path).resolve())

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        param = next(self.net.parameters())
        if param.device != images.device:
            self.net.to(images.device)
        self.net.eval()  # whatever was called on the student, the teacher stays in eval
        if images.shape[-1] != self.image_size:
            size = (self.image_size, self.image_size)
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        return self.net(images)
