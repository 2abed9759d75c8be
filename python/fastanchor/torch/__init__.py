"""Anchors learned during training (the Anchor Box Optimization method), for PyTorch.

The anchor shapes become trainable parameters in log space, next to the network's weights
(Zhong, Wang, Peng and Zhang, "Anchor Box Optimization for Object Detection", WACV 2020).
Everything here works in a plain training loop; :mod:`fastanchor.torch.yolov5` and
:mod:`fastanchor.torch.torchvision` plug it into those detectors without editing their source.

>>> from fastanchor.torch import LearnedAnchors, WarmupSchedule
>>> anchors = LearnedAnchors(fastanchor.kmeans_iou(wh, 9, seed=0), strides=(8, 16, 32),
...                          schedule=WarmupSchedule(soft_steps=500, cluster_steps=1000))
>>> optimizer = torch.optim.SGD([*net.parameters(), *anchors.parameters()], lr=0.01)
>>> loss = detector_loss + anchors.loss(gt_wh)      # gt_wh: (N, 2) boxes of the batch, pixels
>>> loss.backward(); optimizer.step(); anchors.advance()

Needs the optional extra ``fastanchor[torch]`` (``pip install "fastanchor[torch]"``).
"""

from __future__ import annotations

try:
    import torch as _torch
except ImportError as exc:  # pragma: no cover - only without torch
    raise ImportError(
        "fastanchor.torch needs PyTorch, which is not installed: install the optional extra with "
        '`pip install "fastanchor[torch]"` (or install torch yourself)'
    ) from exc

from . import _anchors
from ._anchors import (
    LearnedAnchors,
    ShiftFreeNorm,
    ShiftFreeOutputs,
    WarmupSchedule,
    clustering_loss,
    hard_assignment,
    log_sq_distance,
    regression_loss,
    soft_assignment,
)

__all__ = list(_anchors.__all__)
