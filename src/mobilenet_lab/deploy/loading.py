"""A trained network ready to score images: from a checkpoint (PyTorch) or an exported file
(ONNX, ExecuTorch, LiteRT), each with the preprocessing of its run, behind one ``logits(images)``
call."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from mobilenet_lab.deploy.formats import format_of
from mobilenet_lab.deploy.preprocessing import Preprocessing
from mobilenet_lab.models.pretrained import as_trained
from mobilenet_lab.runs.checkpoint import checkpoint_weights, load_checkpoint
from mobilenet_lab.runs.record import RunRecord


def load_network(cfg: DictConfig, checkpoint: dict[str, Any], weights: str) -> nn.Module:
    """The run's network in eval mode with the checkpoint's ``weights`` (averaged or trained).
    ``cfg`` holds the run's ``model`` and ``module`` groups; the network is rebuilt as it was
    trained (``models.as_trained``): no weights fetched, the checkpoint's replace them."""
    module = instantiate(cfg.module, net=instantiate(as_trained(cfg.model)))
    module.load_state_dict(checkpoint_weights(checkpoint, weights))
    return module.net.eval().to(memory_format=torch.contiguous_format)


class TorchModel:
    """A checkpoint's network on ``device``; logits as a float tensor on the CPU."""

    def __init__(self, ckpt_path: str, weights: str, device: str) -> None:
        checkpoint = load_checkpoint(ckpt_path)
        self.preprocessing = Preprocessing.from_checkpoint(checkpoint)
        run_cfg = OmegaConf.create(RunRecord.of(checkpoint).config)
        self.device = torch.device(device)
        self.net = load_network(run_cfg, checkpoint, weights).to(self.device)

    @torch.inference_mode()
    def logits(self, images: Tensor) -> Tensor:
        return self.net(images.to(self.device)).float().cpu()


def open_model(ckpt_path: str, weights: str = "averaged", device: str = "cpu") -> Any:
    """An exported file (a suffix of ``deploy.formats.FORMATS``) in its runtime; anything else
    is read as a checkpoint."""
    if (file_format := format_of(ckpt_path)) is not None:
        return file_format.open(ckpt_path)
    return TorchModel(ckpt_path, weights, device)


def eval_batches(datamodule: Any, split: str, max_images: int | None = None) -> Iterator[tuple]:
    """(images, labels) of ``split`` as the test step sees them (normalised, eval-size), the
    first ``max_images`` of them. ``calibration`` is the training images in that same eval
    preprocessing (never the training augmentation), shuffled."""
    datamodule.setup("fit" if split in ("train", "calibration") else "test")
    loader = getattr(datamodule, f"{split}_dataloader")()
    seen = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a DataLoader's worker-count hint is noise here
        for batch in loader:
            images, labels = datamodule.on_after_batch_transfer(batch, 0)
            if max_images is not None:
                images, labels = images[: max_images - seen], labels[: max_images - seen]
            seen += len(labels)
            yield images, labels
            if max_images is not None and seen >= max_images:
                return
