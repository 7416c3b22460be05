"""Every entry point fails the same way (docs/training.md, "Exit statuses"): a config error, the
kit's own or Hydra's, is one line and exit status 2; a failure at run time one line and 1."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mobilenet_lab.runs.errors import ConfigError, Refused

# script, the flow it runs (module, function), and its start-up check (report.py has none)
ENTRY_POINTS = [
    ("src/train.py", "mobilenet_lab.train", "train", "check_train_config"),
    ("src/eval.py", "mobilenet_lab.evaluate", "evaluate", "check_eval_config"),
    ("src/export.py", "mobilenet_lab.export", "export", "check_export_config"),
    ("src/predict.py", "mobilenet_lab.predict", "predict", "check_predict_config"),
    ("scripts/profile_model.py", "mobilenet_lab.profile", "profile", "check_profile_config"),
    ("scripts/report.py", "mobilenet_lab.report", "report", None),
]
HYDRA_SCRIPTS = [script for script, *_, check in ENTRY_POINTS if check]
FAILURES = [  # raised by the flow at run time; the exit status; what the line says
    (ConfigError("model.alpha=0 is not valid"), 2, "model.alpha=0 is not valid"),
    (Refused("the file failed its check"), 1, "the file failed its check"),
    (RuntimeError("a bug\nits second line"), 1, "RuntimeError: a bug"),
]


@pytest.mark.parametrize(("script", "module", "flow", "check"), ENTRY_POINTS)
@pytest.mark.parametrize(("error", "status", "message"), FAILURES, ids=["config", "refused", "bug"])
def test_a_failure_at_run_time_is_one_line_and_its_status(
    run_main, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, script: str, module: str,
    flow: str, check: str | None, error: Exception, status: int, message: str,
) -> None:  # fmt: skip
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(f"{module}.{flow}", fail)
    if check:  # the config passes its start-up checks: the run starts, and fails
        monkeypatch.setattr(f"mobilenet_lab.jobs.startup_checks.{check}", lambda *a, **k: None)
        args = [f"paths.log_dir={tmp_path}"]
    else:
        args = [str(tmp_path)]
    result = run_main(script, *args)
    assert result.returncode == status, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and message in line and "second line" not in line
    if type(error) is RuntimeError:  # a bug: its traceback kept in a file the line names
        where = Path(re.fullmatch(r".*\((?:traceback in )?(.+)\)", line)[1])
        logs = [where] if where.is_file() else list(where.glob("*.log"))
        assert any("Traceback" in log.read_text() and "its second line" in log.read_text()
                   for log in logs), line  # fmt: skip


@pytest.mark.parametrize("script", HYDRA_SCRIPTS)
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("no_such_key=1", "Could not override 'no_such_key'. To append to your config use +"),
        ("paths=nowhere", "Could not find 'paths/nowhere': use one of default"),
        ("data.image_size=[", "data.image_size=[: no viable alternative at input"),
    ],
    ids=["unknown-key", "unknown-option", "unparsable"],
)
def test_hydras_own_config_errors_are_one_line_and_status_2(
    run_main, tmp_path: Path, script: str, override: str, message: str
) -> None:
    result = run_main(script, override, f"paths.log_dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and message in line
    assert not any(tmp_path.iterdir()), "a run folder was created"


def test_hydra_full_error_set_by_the_user_keeps_a_bugs_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mobilenet_lab.runs.errors import exits_as_documented

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    # the entry point's two: around the Hydra main, and around its task
    with pytest.raises(RuntimeError, match="a bug"), exits_as_documented(), exits_as_documented():
        raise RuntimeError("a bug")
    with pytest.raises(SystemExit) as stopped, exits_as_documented():  # ours: still one line
        raise ConfigError("model.alpha=0 is not valid")
    assert stopped.value.code == 2
