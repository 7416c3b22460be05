"""Logit distillation (Hinton et al. 2015; the paper's section 4.5): a frozen teacher whose
softened logits the student matches beside (or instead of) the labels.

The teacher is a checkpoint of this kit, ``timm:<name>`` (timm's pretrained weights, from the
local cache) or a file ``src/export.py`` wrote (``.onnx``, ``.pte``, ``.tflite``, run in its own
runtime on the CPU). timm's ``LogitDistillationTask`` owns the student and the training step,
which here belong to the LightningModule, and computes its loss inline in its ``forward`` (no
function to import): the one below, line for line (KL divergence of the softened
distributions, batch mean, x T^2). timm's ``DistillationTeacher`` builds timm models by name
only, and as an ``nn.Module`` would become the student's child. Ours is held outside the
module's registered children, so Lightning's ``.train()`` and ``.to()`` calls, DDP's
wrapping, EMA's copy and the checkpoint's ``state_dict`` never reach it; it follows the
student's device and precision on first use, and sees each batch in its own preprocessing
(re-normalised, resized).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from mobilenet_lab.data.batch_transforms import resize
from mobilenet_lab.runs.errors import ConfigError, named_by

KEY = "module.distill.teacher"
TIMM_PREFIX = "timm:"
TEACHER_EXAMPLE = (
    f"e.g. {KEY}=logs/train/runs/<time>/checkpoints/best.ckpt, {KEY}=timm:mobilenetv3_large_100 "
    f"or {KEY}=<run>/model.onnx"
)


# module.distill's keys and their defaults (conf/module/classifier.yaml states the same).
DEFAULTS = {"teacher": None, "temperature": 4.0, "weight": 0.5, "cache": False}


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """KL(teacher || student) of the logits softened by ``temperature``, x temperature^2."""
    log_student = F.log_softmax(student.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher.float() / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


class Teacher:
    """A frozen network, always in eval mode, with its preprocessing: ``image_size``,
    ``in_chans``, ``mean``, ``std``; ``num_classes``, and where known (a checkpoint, an export)
    its ``class_names`` and its data's ``split_seed``; ``path`` and ``weights_file`` (what its
    fingerprint hashes)."""

    def __init__(self, source: str) -> None:
        self.source = str(source)
        self.net: nn.Module | None = None
        self.runtime: Any = None  # an exported file's runtime
        self.class_names: tuple[str, ...] | None = None  # timm's: not known here
        self.split_seed: int | None = None
        self.student_scale: Tensor | None = None  # x_teacher = x_student * scale + shift
        self.student_shift: Tensor | None = None
        if self.source.startswith(TIMM_PREFIX):
            self._open_timm(self.source.removeprefix(TIMM_PREFIX))
        else:
            self._open_file(self.source)
        if self.net is not None:
            self.net.eval().requires_grad_(False)

    def _open_timm(self, name: str) -> None:
        import timm

        from mobilenet_lab.models.timm_models import cached_weights

        if not timm.is_model(name):
            raise ConfigError(
                f"{KEY}={self.source!r}: timm has no model {name!r}, {TEACHER_EXAMPLE} "
                "(timm.list_models('mobilenet*') lists timm's MobileNets)"
            )
        try:
            self.weights_file = cached_weights(name)
        except ConfigError:
            raise ConfigError(
                f"{KEY}={self.source!r}: timm's weights for {name} are not in the local Hugging "
                f'Face cache: download them where there is internet (python -c "import timm; '
                f"timm.create_model('{name}', pretrained=True)\") and copy ~/.cache/huggingface "
                "here"
            ) from None
        self.net = timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay={"file": str(self.weights_file)}
        )
        cfg = self.net.pretrained_cfg
        self.in_chans, self.image_size = cfg["input_size"][0], cfg["input_size"][-1]
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self.num_classes, self.path = self.net.num_classes, self.source

    def _open_file(self, path: str) -> None:
        from mobilenet_lab.deploy.formats import format_of
        from mobilenet_lab.deploy.loading import load_network
        from mobilenet_lab.deploy.preprocessing import Preprocessing
        from mobilenet_lab.runs.checkpoint import load_checkpoint
        from mobilenet_lab.runs.record import RunRecord

        if (file_format := format_of(path)) is not None:
            with named_by(KEY):  # the reader tells of the file; the teacher's key named it
                self.runtime = file_format.open(path)
            prep = self.runtime.preprocessing
            probe = torch.zeros(1, prep.in_chans, prep.image_size, prep.image_size)
            self.num_classes = int(self.runtime.logits(probe).shape[-1])
        else:
            checkpoint = load_checkpoint(path, TEACHER_EXAMPLE, key=KEY)
            prep = Preprocessing.from_checkpoint(checkpoint)
            config = OmegaConf.create(RunRecord.of(checkpoint).config)
            self.net = load_network(config, checkpoint, "averaged")
            self.num_classes = int(config.model.num_classes)
        self.in_chans, self.image_size = prep.in_chans, prep.image_size
        self.mean, self.std = prep.mean, prep.std
        self.class_names, self.split_seed = prep.class_names, prep.split_seed
        self.path = str(Path(path).resolve())
        self.weights_file = Path(path)

    def __deepcopy__(self, memo: dict) -> Teacher:
        """Shared, not copied (EMA's ``AveragedModel`` deep-copies the student): it is frozen."""
        return self

    def check_fits(
        self,
        num_classes: int,
        in_chans: int,
        class_names: tuple[str, ...] | None = None,
        split_seed: int | None = None,
    ) -> None:
        """A one-line error unless the teacher predicts the student's classes from its
        channels: as many, and where both are known the same names in the same order; and,
        given the student's ``split_seed`` (the digits, whose seed decides the test images),
        trained on the same split, so that it has not learned the student's test images."""
        for key, theirs, ours in (("num_classes", self.num_classes, num_classes),
                                  ("in_chans", self.in_chans, in_chans)):  # fmt: skip
            if theirs != ours:
                raise ConfigError(
                    f"{KEY}={self.source!r} has {key}={theirs}, this run model.{key}={ours}: "
                    "give a teacher trained on the same data (its classes, its channels)"
                )
        if class_names and self.class_names and tuple(class_names) != tuple(self.class_names):
            order = " in another order" if sorted(class_names) == sorted(self.class_names) else ""
            raise ConfigError(
                f"{KEY}={self.source!r} was trained on the classes {_names(self.class_names)}, "
                f"this run's data has {_names(class_names)}{order}: give a teacher trained on "
                "the same classes in the same order (its logit i must mean the student's class i)"
            )
        if split_seed is not None and self.split_seed is not None and split_seed != self.split_seed:
            raise ConfigError(
                f"{KEY}={self.source!r} was trained with data.split_seed={self.split_seed}, this "
                f"run has data.split_seed={split_seed}: the teacher has learned images of this "
                f"run's test split; give a teacher trained with data.split_seed={split_seed}, or "
                f"train this run with data.split_seed={self.split_seed}"
            )

    def match_student(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        """Re-normalise the student's batches (normalised with ``mean``/``std``) to the
        teacher's normalisation, when the two differ."""
        if (tuple(mean), tuple(std)) == (tuple(self.mean), tuple(self.std)):
            return
        view = lambda values: torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)  # noqa: E731
        self.student_scale = view(std) / view(self.std)
        self.student_shift = (view(mean) - view(self.mean)) / view(self.std)

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """The teacher's logits for a batch the student sees, on the batch's device."""
        if self.student_scale is not None:
            scale = self.student_scale.to(images.device, images.dtype)
            images = images * scale + self.student_shift.to(images.device, images.dtype)
        images = resize(images, self.image_size)
        if self.runtime is not None:
            return self.runtime.logits(images.detach().float().cpu()).to(images.device)
        param = next(self.net.parameters())
        if param.device != images.device or param.dtype != images.dtype:
            self.net.to(device=images.device, dtype=images.dtype)  # the student's precision
        self.net.eval()  # whatever was called on the student, the teacher stays in eval
        return self.net(images)

    def record(self) -> dict[str, str]:
        """Its path and SHA-256 (of the checkpoint, export or timm weights file), for the run's
        ``metrics.json`` and loggers: flat keys, columns of the runs table."""
        digest = hashlib.sha256()
        with open(self.weights_file, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        return {"teacher": self.path, "teacher_sha256": digest.hexdigest()}


def _names(names: tuple[str, ...] | list[str]) -> str:
    """Class names for a one-line message: the first ten, then how many in all."""
    shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
    return f"({shown})"


def check_distill(cfg: DictConfig) -> None:
    """The run's ``module.distill``: a teacher that opens and fits the student's data (its
    classes, their names and order, and the digits' split), ``cache`` only where it is valid.
    One line each, before any run folder (``weight`` and ``temperature``: with every number, in
    ``jobs/startup_checks.py``)."""
    distill = {**DEFAULTS, **(cfg.module.get("distill") or {})}
    if not distill["teacher"]:
        return
    from hydra.utils import instantiate

    from mobilenet_lab.data.digits import DigitsDataModule

    data = instantiate(cfg.data)  # the student's class names, known before its set-up
    if distill["cache"]:
        check_cache(cfg, data)
    split_seed = data.hparams.split_seed if isinstance(data, DigitsDataModule) else None
    Teacher(str(distill["teacher"])).check_fits(
        cfg.model.num_classes, cfg.model.in_chans, getattr(data, "classes", None), split_seed
    )


def check_cache(cfg: DictConfig, data: Any) -> None:
    """Cached teacher outputs stand for the teacher's forward only when each training image
    reaches the student the same every epoch: in memory, not randomly augmented, not mixed."""
    from mobilenet_lab.data.in_memory import InMemoryDataModule

    if not isinstance(data, InMemoryDataModule):
        raise ConfigError(
            "module.distill.cache=true holds teacher outputs for the in-memory data sets "
            f"(digits, cifar10, cifar100, synthetic), not data={type(data).__name__}: use "
            "module.distill.cache=false"
        )
    changing = data.random_augmentation()
    if cfg.module.get("mixup"):
        changing = ", ".join(filter(None, (changing, "module.mixup (mixed images)")))
    if changing:
        raise ConfigError(
            "module.distill.cache=true needs training images that are the same every epoch, "
            f"but {changing} changes them: turn that off (digits: data.augment=false; CIFAR: "
            "data.padding=0 data.flip=false; module.mixup=null) or use module.distill.cache=false"
        )
