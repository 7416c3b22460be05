"""Argument checks shared by models and data modules, so bad config values fail with one line;
safe loading of the files users name; and the exits every entry point ends with: a config error
(ours or Hydra's) one line and status 2, a refused result or any other failure one line and
status 1."""

from __future__ import annotations

import logging
import math
import os
import pickle
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import ContextDecorator, contextmanager
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and what is valid."""


class Refused(RuntimeError):
    """A result the kit will not put in place (a file that fails its check); the message names
    the values that failed, what was kept, and what to try."""


class RecordedRefusal(Refused):
    """A refusal the job has written into its own ``metrics.json`` already (status
    ``refused``, with every figure it measured), which a failure record must not replace."""


class UnreadableFile(ConfigError):
    """A file its reader does not take (missing, of another kind, without this kit's metadata),
    told about the file alone: the reader does not know which command-line key named it, so
    the caller words it for its key (``named_by``); uncaught, it is still one line."""

    def __init__(self, path: str, problem: str, example: str) -> None:
        self.path, self.problem, self.example = str(path), problem, example
        super().__init__(f"{self.path!r} {problem}: e.g. {example}")

    def named_by(self, key: str) -> str:
        """The message as the key that named the file gives it: ``key='path' is not ...``."""
        return f"{key}={self.path!r} {self.problem}: e.g. {key}={self.example}"


@contextmanager
def named_by(key: str) -> Iterator[None]:
    """An ``UnreadableFile`` raised inside becomes a ConfigError naming ``key``, the command-line
    key that gave the file (``ckpt_path``, ``module.distill.teacher``)."""
    try:
        yield
    except UnreadableFile as error:
        raise ConfigError(error.named_by(key)) from error


def is_number(value: object) -> bool:
    """True for real ints and floats (not bools, not NaN): what a numeric config key may hold."""
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} is not valid: use a whole number >= 1")


WORDED = "MOBILENET_LAB_WORDS_ERRORS"


class exits_as_documented(ContextDecorator):
    """Every entry point's exits (docs/training.md, "Exit statuses"), one line on stderr each:
    a ``ConfigError`` or Hydra's own config error (an unknown key or option, an override it
    cannot parse) exits 2; a ``Refused`` result exits 1; any other error exits 1 too, its
    traceback kept in the job's log file. Used around the Hydra task function (so Hydra never
    sees the error), around the call of the Hydra main (for what Hydra raises itself), and in
    Hydra callbacks (whose errors Hydra would only warn about). A class, not a generator: the
    task function it decorates is pickled by submitit's SLURM launcher."""

    def __enter__(self) -> None:
        # Hydra prints its own errors over several lines and exits 1 (run_and_report), unless
        # HYDRA_FULL_ERROR is set: then it raises them as they are, and they are worded here.
        # WORDED marks the setting as ours (processes a run starts inherit both), so that only
        # a user's own HYDRA_FULL_ERROR=1 keeps an unforeseen error's whole traceback.
        self.previous = {key: os.environ.get(key) for key in ("HYDRA_FULL_ERROR", WORDED)}
        asked = self.previous == {"HYDRA_FULL_ERROR": "1", WORDED: None}
        self.user_asked = asked or self.previous[WORDED] == "user"
        os.environ.update({"HYDRA_FULL_ERROR": "1", WORDED: "user" if self.user_asked else "1"})

    def __exit__(self, kind: type | None, error: BaseException | None, trace: Any) -> bool:
        for key, value in self.previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        from hydra.errors import CompactHydraException

        if isinstance(error, ConfigError):
            _exit(2, str(error))
        if isinstance(error, CompactHydraException):
            _exit(2, hydra_one_line(error))
        if isinstance(error, Refused):
            _exit(1, str(error))
        # a bug, or a library's failure: one line, the traceback kept (the user who asked for
        # Hydra's full tracebacks gets it as it is)
        if isinstance(error, Exception) and not self.user_asked:
            _exit(1, f"{one_line(error)} (traceback in {_keep_traceback(error)})")
        return False


def _keep_traceback(error: BaseException) -> str:
    """Writes ``error``'s traceback to the job's log file (Hydra's, where there is a job), else
    to a temporary file, and returns the file's path. Written to the file itself: through the
    logger it would reach the console handler too."""
    files = [h.baseFilename for h in logging.getLogger().handlers
             if isinstance(h, logging.FileHandler) and h.baseFilename != os.devnull]  # fmt: skip
    text = "".join(traceback.format_exception(error))
    if files:
        with open(files[0], "a") as file:
            file.write(text)
        return files[0]
    with tempfile.NamedTemporaryFile("w", prefix="error_", suffix=".log", delete=False) as file:
        file.write(text)
    return file.name


def _exit(status: int, line: str) -> None:
    print(f"Error: {line}", file=sys.stderr, flush=True)
    sys.exit(status)


def one_line(error: BaseException) -> str:
    """The error's first line, prefixed with its type unless it is one of ours."""
    text = (str(error).strip().splitlines() or [""])[0]
    if isinstance(error, ConfigError | Refused):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def hydra_one_line(error: Exception) -> str:
    """Hydra's message on one line: its lines joined, without the config search path; a
    missing group option followed by the options there are."""
    from hydra.errors import MissingConfigException, OverrideParseException

    message = str(error).split("Config search path:")[0]
    if isinstance(error, MissingConfigException) and error.options:  # a group's options
        not_found = message.split("Available options")[0].strip()
        message = f"{not_found}: use one of {', '.join(error.options)}"
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    return f"{error.override}: {text}" if isinstance(error, OverrideParseException) else text


def load_tensors(path: Path, key: str, valid: str) -> Any:
    """``torch.load`` for files the user names: tensors and plain data only. A file that holds
    other Python objects (a pickle that could run code when loaded) is refused in our words,
    and so is one that is not a readable PyTorch file; ``valid`` says what would be."""
    import torch  # here, so that the entry points' --help does not wait for torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # weights_only refused an object: never load it
        raise ConfigError(
            f"{key}={str(path)!r} holds Python objects (a pickle that could run code when "
            f"loaded), refused for safety: {valid}"
        ) from error
    except Exception as error:  # a damaged archive: torch raises many types
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        raise ConfigError(
            f"{key}={str(path)!r} is not a readable PyTorch file ({reason}): {valid}"
        ) from error
