"""``--cfg job`` (or ``all``) with a ``ckpt_path``: the config the command will run, restored
from the checkpoint with the command line's overrides on top, instead of today's defaults.

Hydra prints ``--cfg`` before any task function or callback runs, from the config files alone;
the entry points call ``show_run_config`` first, and leave everything else (no ``ckpt_path``,
``--cfg hydra``, ``--help``) to Hydra."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict


def show_run_config(script: str, config_name: str) -> bool:
    """Prints the config ``config_name``'s flow will run for this command line and returns
    True, when the command line asks for ``--cfg job|all`` and sets ``ckpt_path``; returns
    False otherwise. A bad ``ckpt_path`` is its one-line error, exit status 2."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    from mobilenet_lab.runs.errors import exits_as_documented

    args, _ = get_args_parser().parse_known_args()
    if args.cfg not in ("job", "all"):
        return False
    try:
        parsed = OverridesParser.create().parse_overrides(args.overrides)
    except OverrideParseException:  # Hydra's own message, from Hydra
        return False
    if not any(override.key_or_group == "ckpt_path" for override in parsed):
        return False
    conf_dir = Path(script).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf_dir), version_base="1.3"), exits_as_documented():
        cfg = compose(config_name, overrides=args.overrides, return_hydra_config=True)
        if not cfg.get("ckpt_path"):  # ckpt_path=null: today's config is the one that runs
            return False
        shown = RUN_CONFIGS[config_name](cfg)
    with open_dict(shown):
        shown.pop("hydra", None)
        if args.cfg == "all":
            shown.hydra = cfg.hydra
    node = OmegaConf.select(shown, args.package) if args.package else shown
    if node is None:
        print(f"package '{args.package}' not found in config", file=sys.stderr)
        sys.exit(1)
    if not isinstance(node, DictConfig):
        print(node)
        return True
    if args.resolve:
        OmegaConf.resolve(node)
    sys.stdout.write(OmegaConf.to_yaml(node))
    return True


def _resumed(cfg: DictConfig) -> DictConfig:
    """train.py: the resumed run's recorded config with this command's free settings on top."""
    from mobilenet_lab.jobs.startup_checks import resolve_resume
    from mobilenet_lab.runs.resume import resume_run

    with open_dict(cfg):
        cfg.ckpt_path = str(resolve_resume(cfg.ckpt_path, cfg.paths.log_dir, cfg.task_name))
    return resume_run(cfg).config


def _restored(cfg: DictConfig) -> DictConfig:
    """eval.py, export.py: the run's model, data and module, the command's overrides on top."""
    from mobilenet_lab.jobs.restored_config import restore_run_config
    from mobilenet_lab.runs.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(cfg.ckpt_path)
    overrides, choices = cfg.hydra.overrides.task, dict(cfg.hydra.runtime.choices)
    return restore_run_config(cfg, checkpoint, overrides, choices)[0]


def _predicted(cfg: DictConfig) -> DictConfig:
    """predict.py has no model or data of its own: its keys, then the network a checkpoint
    rebuilds (``model``; an exported file holds its network) and the ``preprocessing`` its
    images go through (size, normalisation, class names: the checkpoint's or the file's)."""
    from mobilenet_lab.deploy.formats import format_of
    from mobilenet_lab.deploy.preprocessing import Preprocessing
    from mobilenet_lab.jobs.startup_checks import PREDICT_EXAMPLE
    from mobilenet_lab.models.pretrained import as_trained
    from mobilenet_lab.runs.checkpoint import load_checkpoint
    from mobilenet_lab.runs.errors import named_by
    from mobilenet_lab.runs.record import RunRecord

    shown = cfg.copy()
    with open_dict(shown):
        if (file_format := format_of(cfg.ckpt_path)) is not None:
            with named_by("ckpt_path"):
                prep = file_format.read_metadata(cfg.ckpt_path)
        else:
            checkpoint = load_checkpoint(cfg.ckpt_path, example=PREDICT_EXAMPLE)
            shown.model = as_trained(RunRecord.of(checkpoint).config["model"])
            prep = Preprocessing.from_checkpoint(checkpoint)
        shown.preprocessing = dataclasses.asdict(prep)
    return shown


RUN_CONFIGS = {"train": _resumed, "eval": _restored, "export": _restored, "predict": _predicted}
