"""Networks selectable as ``model=<name>`` (one config in ``conf/model/`` each)."""

from mobilenet_lab.models.mobilenet_v1 import MobileNetV1

__all__ = ["MobileNetV1"]
