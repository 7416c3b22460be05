"""The code passes the same ruff lint and format checks that pre-commit runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_ruff(command: list[str]) -> None:
    result = run_cli("-m", "ruff", *command, "src", "tests", "scripts", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pre_commit_config_runs_ruff() -> None:
    text = (Path(ROOT) / ".pre-commit-config.yaml").read_text()
    assert "ruff check" in text and "ruff format" in text
