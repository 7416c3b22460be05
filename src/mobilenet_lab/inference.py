"""A trained network ready to score images: from a checkpoint (PyTorch) or an exported ONNX file
(ONNX Runtime), each with the preprocessing of its run, behind one ``logits(images)`` call."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from mobilenet_lab.checks import ConfigError
from mobilenet_lab.evaluation import checkpoint_weights
from mobilenet_lab.models.pretrained import as_trained
from mobilenet_lab.preprocessing import METADATA_KEY, Preprocessing
from mobilenet_lab.run_config import load_checkpoint
from mobilenet_lab.run_files import RUN_CONFIG_KEY

ONNX_EXAMPLE = "e.g. ckpt_path=logs/train/runs/<time>/model.onnx (written by src/export.py)"


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
        run_cfg = OmegaConf.create(checkpoint[RUN_CONFIG_KEY]["config"])
        self.device = torch.device(device)
        self.net = load_network(run_cfg, checkpoint, weights).to(self.device)

    @torch.inference_mode()
    def logits(self, images: Tensor) -> Tensor:
        return self.net(images.to(self.device)).float().cpu()


class OnnxModel:
    """An ONNX file written by ``src/export.py``, run by ONNX Runtime."""

    def __init__(self, path: str, threads: int | None = None) -> None:
        self.preprocessing = read_onnx_metadata(path)
        self.session = onnx_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, images: Tensor) -> Tensor:
        feed = {self.input_name: images.numpy().astype(np.float32, copy=False)}
        return torch.from_numpy(self.session.run(None, feed)[0])


def open_model(ckpt_path: str, weights: str = "averaged", device: str = "cpu") -> Any:
    """A ``.onnx`` file -> ``OnnxModel``; anything else is read as a checkpoint."""
    if Path(ckpt_path).suffix.lower() == ".onnx":
        return OnnxModel(ckpt_path)
    return TorchModel(ckpt_path, weights, device)


def read_onnx_metadata(path: str) -> Preprocessing:
    """The preprocessing ``src/export.py`` stored in the file's metadata; refuses other files."""
    import onnx

    if not Path(path).is_file():
        raise ConfigError(f"ckpt_path={path!r} does not exist: {ONNX_EXAMPLE}")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends
        message = f"ckpt_path={path!r} is not a readable ONNX file: {ONNX_EXAMPLE}"
        raise ConfigError(message) from error
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    if METADATA_KEY not in metadata:
        raise ConfigError(
            f"ckpt_path={path!r} is an ONNX file without this kit's metadata (class names, "
            f"image size, mean and std): export it with src/export.py, {ONNX_EXAMPLE}"
        )
    return Preprocessing.from_metadata(metadata)


def onnx_session(path: str, threads: int | None = None) -> Any:
    """An ONNX Runtime session on the CPU (and CUDA first when ONNX Runtime has it);
    ``threads``: its intra-op threads (None: ONNX Runtime's default, one per physical core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                 if p in ort.get_available_providers()]  # fmt: skip
    return ort.InferenceSession(path, options, providers=providers)


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
