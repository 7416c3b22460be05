"""Argument checks shared by models and data modules, so bad config values fail with one line."""

from __future__ import annotations

import math


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and what is valid."""


def is_number(value: object) -> bool:
    """True for real ints and floats (not bools, not NaN): what a numeric config key may hold."""
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} is not valid: use a whole number >= 1")
