"""The network a training run trained, as the report rebuilds it to time it.

Taken from the resolved config the run's checkpoint holds: Hydra's ``.hydra/config.yaml`` is
unresolved, and an image-folder run's ``num_classes`` (``${count_classes:...}``) would count
the classes of a data folder that may be gone by report time. Runs without a readable
checkpoint (killed in their first epoch, or checkpoints deleted) fall back to that file, with
the kit's resolvers registered."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mobilenet_lab.models.pretrained import as_trained
from mobilenet_lab.runs.errors import ConfigError
from mobilenet_lab.runs.files import RUN_CONFIG_KEY

# The newest weights first: a resumed run's last.ckpt holds its latest segment's config.
CHECKPOINT_ORDER = ("last.ckpt", "best.ckpt")


def trained_network(run_dir: Path) -> dict[str, Any]:
    """``{"model": <config that builds the trained network>, "in_chans", "image_size"}``: what
    the report times. A ConfigError, in one line, says why when neither source gives it."""
    config = checkpoint_config(run_dir)
    if config is None:
        config = _hydra_config(run_dir)
    model, data = config["model"], config["data"]
    return {
        "model": as_trained(model),
        "in_chans": data["in_chans"],
        "image_size": data["image_size"],
    }


def checkpoint_config(run_dir: Path) -> dict[str, Any] | None:
    """The resolved config saved in the run's newest readable checkpoint (None without one).

    Memory-mapped and tensors-only: the weights are not read, and a checkpoint that holds other
    Python objects, is damaged, or predates the saved config is passed over."""
    import torch  # here: reading run folders without checkpoints needs no torch

    folder = run_dir / "checkpoints"
    preferred = [folder / name for name in CHECKPOINT_ORDER]
    others = sorted(set(folder.glob("*.ckpt")) - set(preferred))
    for path in [*(p for p in preferred if p.is_file()), *others]:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # unreadable in any of torch's many ways: try the next one
            continue
        run = checkpoint.get(RUN_CONFIG_KEY) if isinstance(checkpoint, Mapping) else None
        config = run.get("config") if isinstance(run, Mapping) else None
        if isinstance(config, Mapping) and {"model", "data"} <= config.keys():
            return dict(config)
    return None


def _hydra_config(run_dir: Path) -> dict[str, Any]:
    """``model`` and ``data`` of Hydra's saved config, resolved as the run resolved them."""
    import mobilenet_lab.data.resolvers  # noqa: F401  (count_classes, abspath: the configs use them)

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"no checkpoint and no {path}: the network is not known")
    try:
        config = OmegaConf.load(path)
        model = OmegaConf.to_container(config.model, resolve=True)
        data = {key: OmegaConf.select(config, f"data.{key}") for key in ("in_chans", "image_size")}
    except (OmegaConfBaseException, ConfigError) as error:
        raise ConfigError(
            f"no checkpoint, and {path} does not resolve: {_reason(error)}"
        ) from error
    return {"model": model, "data": data}


def _reason(error: BaseException) -> str:
    """The first line of the resolver's own error (OmegaConf wraps it, more than once), or of
    OmegaConf's when no resolver raised (``Unsupported interpolation type ...``)."""
    seen: BaseException | None = error
    while seen is not None and not isinstance(seen, ConfigError):
        seen = seen.__cause__ or seen.__context__
    text = str(seen if seen is not None else error).strip()
    return (text.splitlines() or [type(error).__name__])[0]
