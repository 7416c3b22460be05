"""Networks selectable as ``model=<name>`` (one config in ``conf/model/`` each)."""

from mobilenet_lab.models.mobilenet_v1 import MobileNetV1
from mobilenet_lab.models.pretrained import as_trained, build_mobilenet_v1

__all__ = ["MobileNetV1", "as_trained", "build_mobilenet_v1"]
