"""Every numeric setting checked at start-up against its range (``LIMITS``), the docs' table of
those ranges, and bad numbers at the command line: one line, exit status 2, no run folder."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf, open_dict

from mobilenet_lab.jobs.startup_checks import LIMITS, check_limits
from mobilenet_lab.runs.errors import ConfigError
from tests.conftest import ROOT, compose_cfg

# The entry point and group options whose config holds each key (train's defaults otherwise).
HOLDERS = {
    "callbacks.ema.": ("train", ("callbacks=ema",)),
    "optimizer.alpha": ("train", ("optimizer=rmsprop",)),
    "optimizer.eps": ("train", ("optimizer=rmsprop",)),
    "optimizer.betas": ("train", ("optimizer=adamw",)),
    "scheduler.decay_epochs": ("train", ("scheduler=step",)),
    "scheduler.gamma": ("train", ("scheduler=step",)),
    "data.seed": ("train", ("data=synthetic",)),
    "data.padding": ("train", ("data=cifar10",)),
    "data.": ("train", ("data=imagefolder", "data.data_dir=/nowhere")),  # crop_pct, hflip...
    "model.drop_path": ("train", ("model=mobilenet_v2",)),
    "module.mixup.": ("train", ("module.mixup={mixup_alpha: 0.8, cutmix_alpha: 1.0}",)),
    "calibration_images": ("export", ()),
    "check_images": ("export", ()),
    "int8_min_ratio": ("export", ()),
    "speed.": ("export", ()),
    "top_k": ("predict", ()),
    "batch_size": ("predict", ()),
    "num_classes": ("profile", ()),
    "in_chans": ("profile", ()),
}
DIGITS_KEYS = ("data.split_seed", "data.max_translate", "data.max_rotate_deg", "data.max_scale")


def holder(key: str) -> tuple[str, tuple[str, ...]]:
    if key in DIGITS_KEYS:
        return "train", ()
    return next((v for k, v in HOLDERS.items() if key.startswith(k)), ("train", ()))


@cache
def composed(config_name: str, overrides: tuple[str, ...]) -> DictConfig:
    return compose_cfg(config_name, list(overrides), Path("/nonexistent/run"))


@pytest.mark.parametrize("key", list(LIMITS))
def test_every_limit_refuses_a_value_out_of_range_in_one_line(key: str) -> None:
    """-5 is out of every range in the table; the message names the key, the value and the
    valid values. The entry point's defaults pass the same check."""
    cfg = composed(*holder(key)).copy()
    check_limits(cfg)
    with open_dict(cfg):
        OmegaConf.update(cfg, key, -5, force_add=True)
    with pytest.raises(ConfigError) as error:
        check_limits(cfg)
    assert str(error.value) == f"{key}=-5 is not valid: use {LIMITS[key].valid}"


@pytest.mark.parametrize(
    ("key", "good", "bad"),
    [
        ("seed", [0, 2**32 - 1, None], [-1, 2**32, 1.5, "abc", True]),
        ("trainer.limit_train_batches", [1, 0.5, 1.0], [0, 0.0, 1.5, -1]),
        ("trainer.limit_val_batches", [3, 0.1], [0, 0.0]),
        ("trainer.limit_test_batches", [3, 0.1], [0, 0.0]),
        ("trainer.val_check_interval", [100, 0.25, "00:01:00:00"], [0, 1.5, "1h"]),
        ("trainer.max_steps", [-1, 10], [0, -2]),
        ("trainer.fast_dev_run", [True, False, 0, 3], [-1, 0.5]),
        ("optimizer.momentum", [0.9], [1.0, -0.1]),
        ("callbacks.ema.decay", [0.0, 0.999, 1.0], [1.5, -0.1]),
        ("module.distill.temperature", [0.5], [0, -1]),
        ("int8_min_ratio", [1, 0.5], [0, 1.5, None]),
    ],
)
def test_limits_take_their_ends_as_documented(key: str, good: list, bad: list) -> None:
    limit = LIMITS[key]
    assert [v for v in good if not limit.accepts(v)] == []
    assert [v for v in bad if limit.accepts(v)] == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_epochs=-1"], "trainer.max_epochs=-1 (no limit) needs trainer.max_steps"),
        (["optimizer.momentum=0"], "Nesterov momentum needs a momentum > 0"),
        (["module.mixup={mixup_alpha: 0}"], "it mixes nothing"),
        (["trainer.check_val_every_n_epoch=null"], "must then be a whole number"),
        (  # the digits validate at trainer.max_epochs: the message names where -1 comes from
            ["trainer.max_epochs=-1", "+trainer.max_steps=50"],
            "trainer.check_val_every_n_epoch=-1 (${.max_epochs}) is not valid",
        ),
    ],
)
def test_values_valid_alone_but_not_together_are_refused(
    overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_limits(composed("train", tuple(overrides)))


def test_the_docs_table_is_the_limits_table() -> None:
    text = (ROOT / "docs" / "training.md").read_text()
    section = text.split("## Numeric settings and their limits")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `([^`]+)` \| (.+) \|$", section, flags=re.MULTILINE)
    assert dict(rows) == {key: limit.valid for key, limit in LIMITS.items()}
    assert len(rows) == len(LIMITS)


@pytest.mark.parametrize(
    ("script", "override"),
    [
        ("src/train.py", "trainer.limit_train_batches=0"),
        ("src/train.py", "seed=-1"),
        ("src/train.py", "seed=4294967296"),
        ("src/train.py", "trainer.max_epochs=-1"),
        ("src/eval.py", "trainer.limit_test_batches=0"),
        ("src/export.py", "speed.repeats=0"),
        ("src/predict.py", "batch_size=0"),
        ("scripts/profile_model.py", "speed.warmup=-1"),
    ],
)
def test_a_bad_number_stops_the_entry_point_before_any_run_folder(
    run_main, tmp_path: Path, script: str, override: str
) -> None:
    result = run_main(script, override, f"paths.log_dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: {override.split('=')[0]}=")
    assert not any(tmp_path.iterdir()), "a run folder was created"


@pytest.mark.slow  # the teacher run: trained once per session
@pytest.mark.parametrize(
    ("script", "override", "key", "value"),
    [
        ("src/eval.py", "data.batch_size=7", "data.batch_size", 7),
        ("src/export.py", "speed.repeats=3", "speed.repeats", 3),
        ("src/predict.py", "top_k=2", "preprocessing.image_size", 40),
        ("src/train.py", "trainer.max_epochs=3", "trainer.max_epochs", 3),
    ],
)
def test_cfg_job_with_a_checkpoint_shows_the_config_that_will_run(
    run_main, digits_teacher: Path, tmp_path: Path, script: str, override: str, key: str,
    value: int,
) -> None:  # fmt: skip
    """The teacher run is V1 at alpha 0.5 on 40 px digits; today's eval default is alpha 1.0
    at 32 px. The command line's override shows on top of the checkpoint's config."""
    args = ["--cfg", "job", f"ckpt_path={digits_teacher}", override, f"paths.log_dir={tmp_path}"]
    result = run_main(script, *args)
    assert result.returncode == 0, result.stderr[-2000:]
    shown = OmegaConf.create(result.stdout)
    assert (shown.model.alpha, OmegaConf.select(shown, key)) == (0.5, value)
    assert "hydra" not in shown
    if script != "src/predict.py":
        assert shown.data.image_size == 40
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_cfg_all_keeps_hydra_and_a_bad_checkpoint_is_one_line(run_main, digits_teacher: Path,
                                                              tmp_path: Path) -> None:  # fmt: skip
    result = run_main("src/eval.py", "--cfg", "all", f"ckpt_path={digits_teacher}")
    shown = OmegaConf.create(result.stdout)
    assert result.returncode == 0 and shown.model.alpha == 0.5 and "run" in shown.hydra
    result = run_main("src/eval.py", "--cfg", "job", f"ckpt_path={tmp_path / 'none.ckpt'}")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: ckpt_path='{tmp_path / 'none.ckpt'}' does not exist")
    assert OmegaConf.create(run_main("src/eval.py", "--cfg", "job").stdout).model.alpha == 1.0


PRESETS = [f"{path.parent.name}={path.stem}" for group in ("experiment", "debug", "optimizer",
           "scheduler", "callbacks", "model", "data", "trainer")
           for path in sorted((ROOT / "conf" / group).glob("*.yaml"))]  # fmt: skip


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_passes_the_limits(preset: str) -> None:
    check_limits(composed("train", (preset, "++data.data_dir=/nowhere")))
