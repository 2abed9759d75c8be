"""Adapters that put fastanchor inside detection frameworks.

Each submodule is imported on first use, so ``import fastanchor.integrations`` imports no
framework (and no torch):

- :mod:`fastanchor.integrations.yolov5`: a drop-in ``kmean_anchors`` for YOLOv5 and its forks,
  and ``patch()`` that makes YOLOv5's own ``check_anchors`` (run by ``train.py``) use it.
- :mod:`fastanchor.integrations.torchvision`: ``AnchorGenerator`` / ``DefaultBoxGenerator``
  arguments fitted to a dataset, for Faster R-CNN, RetinaNet and SSD.
- :mod:`fastanchor.integrations.mmdet`: an anchor optimizer for the OpenMMLab
  ``optimize_anchors.py`` flow (mmdetection and mmyolo), and a reader of its result file.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import List

#: The integrations, each a submodule of this package.
SUBMODULES = ("mmdet", "torchvision", "yolov5")

__all__ = list(SUBMODULES)


def __getattr__(name: str) -> ModuleType:
    if name in SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(SUBMODULES))
