"""fastanchor: fast, exact and reproducible anchor boxes for object detectors.

>>> import fastanchor
>>> result = fastanchor.kmeans_iou(wh, 9, seed=0)   # wh: (N, 2) box widths and heights
>>> result.anchors, result.avg_iou
"""

from __future__ import annotations

import os
from typing import Any

# OpenMP workers that spin while idle (libgomp's default "active" wait policy) steal the CPU from
# the thread doing the sequential parts, and on small or shared machines (VMs, containers, busy
# CI runners) that slowed even single-threaded calls by 1.5-5x and 10,000-box calls by 100x in
# our benchmarks. The core's parallel regions are coarse, so sleeping workers cost nothing
# measurable. Honoured only when the user has not chosen a policy, and only if no other library
# loaded the OpenMP runtime before fastanchor.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - only when the build did not run
    raise ImportError(
        "fastanchor's compiled core (fastanchor._core) could not be imported: did the build run? "
        "Install with `pip install .` from the repository root (a C++17 compiler is needed)."
    ) from exc

from ._augment import scale_augment, scale_grid
from ._box_iou import box_iou, to_center, to_corners
from ._evolve import AutoAnchorResult, EvolveResult, autoanchor, evolve_anchors
from ._fitness import (
    OBJECTIVES,
    CheckResult,
    FitnessResult,
    anchor_fitness,
    anchor_objective,
    check_anchors,
    split_levels,
)
from ._grid import DetectorGrid, grid_best_iou, grid_recall
from ._iou import avg_iou, wh_iou
from ._kmeans import DEFAULT_N_INIT, KMeansResult, kmeans_iou
from ._kmeans_log import kmeans_log
from ._matching import decode, encode, match_priors
from ._priors import ssd_default_boxes, tf_anchor_generator
from ._ratios import AspectRatioResult, ssd_aspect_ratios
from ._validation import MAX_SIDE, MIN_SIDE
from ._version import __version__ as __version__

__all__ = [
    "DetectorGrid",
    "AspectRatioResult",
    "AutoAnchorResult",
    "CheckResult",
    "DEFAULT_N_INIT",
    "EvolveResult",
    "FitnessResult",
    "KMeansResult",
    "MAX_SIDE",
    "MIN_SIDE",
    "OBJECTIVES",
    "anchor_fitness",
    "anchor_objective",
    "autoanchor",
    "avg_iou",
    "box_iou",
    "check_anchors",
    "decode",
    "encode",
    "evolve_anchors",
    "grid_best_iou",
    "kmeans_log",
    "grid_recall",
    "kmeans_iou",
    "match_priors",
    "scale_augment",
    "scale_grid",
    "split_levels",
    "ssd_aspect_ratios",
    "ssd_default_boxes",
    "tf_anchor_generator",
    "to_center",
    "to_corners",
    "wh_iou",
]

#: Submodules imported on first attribute access (``fastanchor.export`` works after ``import
#: fastanchor``; ``datasets``, the loaders of Pascal VOC, COCO and YOLO annotations, took a third
#: of the package's import time, which every Dask worker pays on its first task; ``integrations``
#: imports no framework until one of its adapters is used; ``plot`` needs matplotlib only when a
#: plot is drawn).
_LAZY_SUBMODULES = ("datasets", "export", "integrations", "plot")


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        import importlib

        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
