"""Argument checks shared by models and data modules, so bad config values fail with one line;
safe loading of the files users name; and the exits that turn a ``ConfigError`` (start-up) or a
``Refused`` result (run time) into that line."""

from __future__ import annotations

import math
import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and what is valid."""


class Refused(RuntimeError):
    """A result the kit will not put in place (a file that fails its check); the message names
    the values that failed, what was kept, and what to try."""


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


@contextmanager
def exit_on_config_error() -> Iterator[None]:
    """A ``ConfigError`` raised inside (at start-up, or in a Lightning hook at run time) becomes
    one line on stderr and exit status 2, instead of a traceback."""
    try:
        yield
    except ConfigError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(2)


@contextmanager
def exit_on_refusal() -> Iterator[None]:
    """A ``Refused`` result raised inside becomes one line on stderr and exit status 1, instead
    of Hydra's traceback."""
    try:
        yield
    except Refused as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)


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
