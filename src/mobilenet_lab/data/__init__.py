"""Data modules selectable as ``data=<name>`` (one config in ``conf/data/`` each)."""

from mobilenet_lab.data.digits import DigitsDataModule

__all__ = ["DigitsDataModule"]
