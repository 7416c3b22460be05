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

from mobilenet_lab.deploy.formats import FORMATS, format_of
from mobilenet_lab.deploy.preprocessing import Preprocessing
from mobilenet_lab.models.pretrained import as_trained
from mobilenet_lab.runs.checkpoint import checkpoint_weights, load_checkpoint
from mobilenet_lab.runs.record import RunRecord


def load_network(cfg: DictConfig, checkpoint: dict[str, Any], weights: str) -> nn.Module:
    """The run's network in eval mode with the checkpoint's ``weights`` (averaged or trained).
    ``cfg`` holds the run's ``model``, ``module`` and ``data`` groups (and ``qat`` for a
    quantization-aware run); the network is rebuilt as it was trained (``built_network``)."""
    module = instantiate(cfg.module, net=built_network(cfg))
    module.load_state_dict(checkpoint_weights(checkpoint, weights))
    return module.net.eval().to(memory_format=torch.contiguous_format)


def built_network(cfg: DictConfig, net: nn.Module | None = None) -> nn.Module:
    """The run's network rebuilt as trained (``models.as_trained``: no weights fetched, a
    checkpoint's replace them), or ``net``; a quantization-aware run's (``cfg.qat``) as the
    fake-quantized graph of its runtime's quantizer."""
    net = net if net is not None else instantiate(as_trained(cfg.model))
    qat = cfg.get("qat")
    if not qat:
        return net
    size = cfg.data.image_size
    example = torch.zeros(2, cfg.data.in_chans, size, size)  # batch 2: BatchNorm trains
    return FORMATS[qat.format].qat_network(net, example, qat.per_channel)


def load_float_network(ckpt_path: str, weights: str) -> nn.Module:
    """The float run a quantization-aware run is fine-tuned from (``qat.from``), as trained."""
    checkpoint = load_checkpoint(ckpt_path, key="qat.from")
    run_cfg = OmegaConf.create(RunRecord.of(checkpoint).config)
    return load_network(run_cfg, checkpoint, weights)


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
