"""Resuming a training run as its record says: ``ckpt_path=<file>`` or ``ckpt_path=last``
restores the run's whole config from its checkpoint (every group, the seed), and puts on top
only the command-line settings that cannot change what the run learns (``FREE_ON_RESUME``).

Any other setting of the command line that differs from the record is refused in one line
naming each key with its recorded and its new value; ``resume.allow_changes=true`` takes them,
and the run's ``metrics.json`` lists them as ``changed_on_resume``. A setting counts as given on
the command line when the command line changes it from the config composed without overrides
(so ``callbacks=ema`` counts as the keys that group adds, and a value the user repeats that the
record already holds changes nothing).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from mobilenet_lab.runs.checkpoint import RESUME_EXAMPLE, read_checkpoint
from mobilenet_lab.runs.errors import ConfigError
from mobilenet_lab.runs.record import RunRecord

# How long the run trains: taken from the command line, and listed in changed_on_resume; the
# learning-rate schedule follows the new horizon (training/scheduler.py).
HORIZON = ("trainer.max_epochs", "trainer.max_steps")
# Where and how the run is shown, logged and stored, and on what hardware it runs with the same
# numerics: taken from the command line, not listed. (The per-device batch is checked apart:
# more devices without global_batch_size would change the images per step.)
FREE_ON_RESUME = (
    *HORIZON,
    "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy",
    "trainer.plugins.checkpoint_io", "trainer.default_root_dir",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
    "callbacks.model_summary", "callbacks.lr_monitor", "callbacks.bad_files",
    "data.num_workers", "data.pin_memory", "data.persistent_workers", "data.data_dir",
    "data.max_image_pixels",
    "logger", "paths", "task_name", "ckpt_path", "resume", "global_batch_size",
    "optimized_metric", "summary_columns", "sweep_report", "config_check",
)  # fmt: skip
# Never changed on a resume, not even with resume.allow_changes: the checkpoint's weights are
# of this network.
NEVER_ON_RESUME = ("model",)
# The same numerics under another name (Lightning's precision flags).
SAME_PRECISION = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}
ABSENT = "<absent>"


@dataclass(frozen=True)
class Resumed:
    """A run to continue: its config as recorded with the free settings on top, the checkpoint
    and its record, what this segment changes, and the run's overrides (every segment's)."""

    config: DictConfig
    checkpoint: dict[str, Any]
    record: RunRecord
    changes: dict[str, dict[str, Any]]  # key -> {"recorded": ..., "now": ...}
    overrides: list[str]

    def all_changes(self) -> dict[str, dict[str, Any]]:
        """This segment's changes and the earlier segments' (a key changed twice: from its
        first recorded value to its newest)."""
        earlier = self.record.changed_on_resume
        merged = dict(earlier)
        for key, change in self.changes.items():
            merged[key] = {"recorded": earlier.get(key, change)["recorded"], "now": change["now"]}
        return merged

    def record_choices(self) -> dict[str, str]:
        """The run's group options as recorded (not this command's loggers and paths)."""
        kept = lambda group: group not in ("logger", "paths") and not group.startswith("hydra")  # noqa: E731
        return {group: option for group, option in self.record.choices.items() if kept(group)}

    def summary(self) -> str:
        """One line saying what is continued and what changes."""
        changed = "; ".join(listed(self.changes))
        return (
            f"Resuming {self.config.ckpt_path} after {self.record.epoch + 1} epoch(s) (step "
            f"{self.record.global_step}) with the run's recorded config"
            + (f"; changed: {changed}" if changed else "")
        )


def listed(changes: dict[str, dict[str, Any]]) -> list[str]:
    """Changes as ``metrics.json`` lists them: ``trainer.max_epochs: 4 -> 8``."""
    return [f"{key}: {_show(c['recorded'])} -> {_show(c['now'])}" for key, c in changes.items()]


def resume_run(cfg: DictConfig) -> Resumed:
    """The recorded run of ``cfg.ckpt_path`` with the command line's free settings on top; a
    ConfigError names every other setting the command line changes (unless
    ``resume.allow_changes``). Hydra's config of this command: ``cfg.hydra`` (a start-up
    check's config), else ``HydraConfig`` (a flow's)."""
    hydra_cfg = cfg.hydra if "hydra" in cfg else HydraConfig.get()
    checkpoint, record = read_checkpoint(cfg.ckpt_path, RESUME_EXAMPLE)
    new = _plain(cfg)
    touched, explicit = _given_keys(new, record, hydra_cfg)
    changes, refused = {}, []
    for key in touched:
        before, now = _select(record.config, key), _resolved(cfg, key, new)
        if _same(key, before, now) or _under(key, ("ckpt_path", "resume", "paths")):
            continue
        free = _under(key, FREE_ON_RESUME) and (key in explicit or not _under(key, HORIZON))
        if _under(key, NEVER_ON_RESUME):
            raise ConfigError(
                f"ckpt_path={cfg.ckpt_path!r} holds another network ({key}={_show(before)} "
                f"there, {_show(now)} here): resume with the run's own model settings"
            )
        if not free or _under(key, HORIZON):
            changes[key] = {"recorded": before, "now": now}
        if not free:
            refused.append(f"{key}={_show(before)} recorded, {_show(now)} now")
    if refused and not OmegaConf.select(cfg, "resume.allow_changes", default=False):
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path!r} continues a run recorded with other settings: "
            f"{'; '.join(refused)}. Leave them out (the run's own config is restored), start a "
            "new run, or add resume.allow_changes=true to change them (listed in metrics.json "
            "as changed_on_resume)"
        )
    restored = _restored(record, new, touched, changes, cfg)
    overrides = _run_overrides(record, hydra_cfg.overrides.task, changes)
    return Resumed(restored, checkpoint, record, changes, overrides)


def _given_keys(new: dict, record: RunRecord, hydra_cfg: DictConfig) -> tuple[list[str], set[str]]:
    """The keys the command line sets, and those of them it names itself (``key=value``,
    ``+key=...``, ``~key``). A group option (``callbacks=ema``) sets the keys it changes from
    the config composed without it; an option other than the run's also every key of its
    group that differs from the record (``callbacks=default`` on an EMA run drops the EMA)."""
    overrides = _parse(hydra_cfg.overrides.task)
    groups = set(hydra_cfg.runtime.choices)
    explicit = {o.key_or_group for o in overrides if o.key_or_group not in groups}
    keys = set(explicit)
    recorded = record.composed or record.config
    for option in (o for o in overrides if o.key_or_group in groups):
        others = [o.input_line for o in overrides if o is not option]
        group = option.key_or_group
        theirs, ours = recorded.get(group), new.get(group)
        try:
            keys.update(_differing_keys(new, _plain(_compose(hydra_cfg, others))))
            whole_group = record.choices.get(group) != option.value()
        except HydraException:  # the other overrides need this option (data.data_dir of
            whole_group = True  # data=imagefolder): then it sets its whole group
        if whole_group and isinstance(theirs, dict):
            keys.update(
                f"{group}.{key}"
                for key in _differing_keys(ours if isinstance(ours, dict) else {}, theirs)
                if not _is_location(_select(ours, key))
            )
    return sorted(keys), explicit


def _restored(
    record: RunRecord, new: dict, touched: Iterable[str], changes: dict, cfg: DictConfig
) -> DictConfig:
    """The recorded config (as composed, interpolations kept; older checkpoints: resolved),
    with this command's paths, free settings and accepted changes on top."""
    restored = OmegaConf.create(record.composed or record.config)
    with open_dict(restored):
        for key in new.keys() - restored.keys():  # keys the kit gained since the run
            restored[key] = new[key]
        if record.composed is None:  # resolved: where the run's files go must follow this one
            for key, value in _leaves(new):
                if _is_location(value):
                    OmegaConf.update(restored, key, value, force_add=True)
        for key in ("ckpt_path", "resume", "paths"):
            restored[key] = new[key]
        for key in touched:
            if _under(key, FREE_ON_RESUME) or key in changes:
                _put(restored, key, _select(new, key))
    return restored


def _run_overrides(record: RunRecord, command: Iterable[str], changes: dict) -> list[str]:
    """The run's own overrides, then this command's that change a recorded setting (by key: a
    later value replaces an earlier); ``ckpt_path`` and ``resume.*`` are not settings."""
    changing = [o for o in _parse(command) if any(_under(k, [o.key_or_group]) for k in changes)]
    chosen: dict[str, str] = {}
    for override in [*_parse(record.overrides), *changing]:
        chosen.pop(override.key_or_group, None)  # the newest at the end
        chosen[override.key_or_group] = override.input_line
    return [line for key, line in chosen.items() if not _under(key, ("ckpt_path", "resume"))]


def _parse(overrides: Iterable[str]) -> list[Any]:
    return OverridesParser.create().parse_overrides(list(overrides))


def _compose(hydra_cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """This entry point's config composed from today's files with ``overrides``."""
    name = hydra_cfg.job.config_name
    if GlobalHydra.instance().is_initialized():
        return compose(name, overrides=overrides)
    main = next(s.path for s in hydra_cfg.runtime.config_sources if s.provider == "main")
    with initialize_config_dir(main, version_base="1.3"):
        return compose(name, overrides=overrides)


def _is_location(value: Any) -> bool:
    """A value that says where the run's files go: it follows the run folder."""
    return isinstance(value, str) and ("${paths." in value or "${hydra:" in value)


def _plain(cfg: DictConfig, resolve: bool = False) -> dict[str, Any]:
    """The config as plain data, without Hydra's own node."""
    return OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]), resolve=resolve
    )


def _differing_keys(new: dict, old: dict, prefix: str = "") -> list[str]:
    """The dotted keys where two configs differ: the highest node one of them lacks, or a leaf."""
    keys = []
    for key in sorted(set(new) | set(old), key=str):
        name = f"{prefix}{key}"
        if key not in new or key not in old:
            keys.append(name)
        elif isinstance(new[key], dict) and isinstance(old[key], dict):
            keys.extend(_differing_keys(new[key], old[key], f"{name}."))
        elif new[key] != old[key]:
            keys.append(name)
    return keys


def _leaves(node: dict, prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _resolved(cfg: DictConfig, key: str, plain: dict) -> Any:
    """The value of ``key`` resolved; as written where it cannot be resolved yet (a start-up
    check runs before Hydra knows the run's folder, which ``paths`` interpolate)."""
    try:
        value = OmegaConf.select(cfg, key, default=ABSENT)
    except OmegaConfBaseException:
        return _select(plain, key)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _select(node: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return ABSENT
        node = node[part]
    return node


def _put(config: DictConfig, key: str, value: Any) -> None:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(config, parent) if parent else config
    if value == ABSENT:
        if node is not None and leaf in node:
            del node[leaf]
    else:
        OmegaConf.update(config, key, value, force_add=True, merge=False)


def _same(key: str, recorded: Any, now: Any) -> bool:
    """Equal, or the same under two spellings: a null entry is no entry (a callback or plugin
    set to null is not built), Lightning's precision flags by their numerics."""
    recorded, now = (None if v == ABSENT else v for v in (recorded, now))
    if key == "trainer.precision":
        recorded, now = (SAME_PRECISION.get(str(v), str(v)) for v in (recorded, now))
    return recorded == now


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def _show(value: Any) -> str:
    """A value for a one-line message: a config node by its class (``EMAWeightAveraging(...)``)."""
    if isinstance(value, dict):
        return f"{str(value.get('_target_', '')).rpartition('.')[2]}(...)" if value else "{}"
    return "absent" if value == ABSENT else repr(value)
