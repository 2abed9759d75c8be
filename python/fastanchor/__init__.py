"""fastanchor: fast, exact and reproducible anchor boxes for object detectors.

>>> import fastanchor
>>> result = fastanchor.kmeans_iou(wh, 9, seed=0)   # wh: (N, 2) box widths and heights
>>> result.anchors, result.avg_iou
"""

from __future__ import annotations

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - only when the build did not run
    raise ImportError(
        "fastanchor's compiled core (fastanchor._core) could not be imported: did the build run? "
        "Install with `pip install .` from the repository root (a C++17 compiler is needed)."
    ) from exc

from ._iou import avg_iou, wh_iou
from ._kmeans import DEFAULT_N_INIT, KMeansResult, kmeans_iou
from ._validation import MAX_SIDE, MIN_SIDE

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_N_INIT",
    "KMeansResult",
    "MAX_SIDE",
    "MIN_SIDE",
    "avg_iou",
    "kmeans_iou",
    "wh_iou",
]
