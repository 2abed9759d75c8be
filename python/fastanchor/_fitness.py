"""YOLOv5's anchor fitness (the side-ratio metric), the report on a set of anchors, and the split
of anchors over the detection levels."""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import numpy.typing as npt

from . import _core
from ._augment import DEFAULT_SCALE_STEPS, scale_augment, scale_grid
from ._results import Result
from ._validation import MAX_ANCHORS, as_float, as_real_array, as_weights, as_wh, resolve_threads

#: YOLOv5's ``anchor_t``: the largest side ratio a box may have to its anchor.
DEFAULT_THR = 4.0
#: YOLOv5 recomputes anchors when the best possible recall is below this.
DEFAULT_BPR_THRESHOLD = 0.98
#: The objectives of the mutation search: YOLOv5's ratio fitness, the average best IoU, and the
#: recall at an IoU threshold.
OBJECTIVES = ("fitness", "avg_iou", "recall")
#: The IoU threshold of the "recall" objective (that of darknet, mmdet's assigners and SSD).
DEFAULT_IOU_THR = 0.5


def as_anchors(x: Any, name: str = "anchors") -> np.ndarray:
    """Validated (k, 2) float64 anchors. Besides (k, 2), accepts YOLOv5's per-level layout: rows
    of ``w, h`` pairs (``[[10, 13, 16, 30, 33, 23], ...]``, shape (levels, 2m)) or (levels, m, 2)."""
    arr = as_real_array(x, name)
    if (arr.ndim == 2 and arr.shape[1] > 2 and arr.shape[1] % 2 == 0) or (arr.ndim == 3 and arr.shape[2] == 2):
        arr = arr.reshape(-1, 2)
    return as_wh(arr, name, max_rows=MAX_ANCHORS)


def as_thr(thr: Any) -> float:
    value = as_float(thr, "thr")
    if not value > 1.0:
        raise ValueError(
            f"thr must be > 1 (the largest side ratio of a box to its anchor, YOLOv5's anchor_t), got {value}"
        )
    return value


@dataclass(frozen=True, repr=False)
class FitnessResult(Result):
    """The fit of a set of anchors to a set of boxes (YOLOv5's metrics).

    Immutable, compared by value (its fields are numbers) and hashable.

    With ``x_ij = min over (w, h) of min(r, 1/r)``, ``r = wh_i / anchor_j``, ``best_i = max_j x_ij``
    and ``t = 1 / thr``; means weighted by the sample weights:

    Attributes
    ----------
    fitness : float
        ``mean_i(best_i * [best_i > t])``: what the evolution maximises.
    bpr : float
        Best possible recall, ``mean_i [best_i > t]``: the share of boxes that some anchor can
        be trained on.
    aat : float
        Anchors above threshold, ``mean_i #{j : x_ij > t}``.
    avg_iou : float
        ``mean_i max_j IoU_ij`` of corner-aligned boxes, as :func:`avg_iou` (to within rounding).
    thr : float
        The threshold used.
    """

    fitness: float
    bpr: float
    aat: float
    avg_iou: float
    thr: float


@dataclass(frozen=True, repr=False)
class CheckResult(Result):
    """The report of :func:`check_anchors`.

    Immutable, compared by value (its fields are numbers) and hashable.

    Attributes
    ----------
    fitness, bpr, aat, avg_iou, thr : float
        As in :class:`FitnessResult`.
    bpr_threshold : float
        The best possible recall below which new anchors are recommended.
    recommend_recompute : bool
        ``bpr < bpr_threshold``: YOLOv5 would compute new anchors (see :func:`autoanchor`).
    """

    fitness: float
    bpr: float
    aat: float
    avg_iou: float
    thr: float
    bpr_threshold: float
    recommend_recompute: bool


def _metrics(anchors: np.ndarray, boxes: Any, weights: Optional[np.ndarray], thr: float, threads: int) -> FitnessResult:
    """The report of anchors on validated rows and weights, or on a search layout of them (which
    holds its weights)."""
    if isinstance(boxes, _core._SearchLayout):
        fitness, bpr, aat, iou = _core._layout_metrics(layout=boxes, anchors=anchors, thr=thr, n_threads=threads)
    else:
        fitness, bpr, aat, iou = _core.anchor_fitness(
            anchors=anchors, wh=boxes, weights=weights, thr=thr, n_threads=threads
        )
    return FitnessResult(fitness=float(fitness), bpr=float(bpr), aat=float(aat), avg_iou=float(iou), thr=thr)


def anchor_fitness(
    anchors: npt.ArrayLike,
    wh: npt.ArrayLike,
    *,
    thr: float = DEFAULT_THR,
    sample_weight: Optional[npt.ArrayLike] = None,
    n_threads: Optional[int] = None,
) -> FitnessResult:
    """YOLOv5's anchor fitness, best possible recall, anchors above threshold and average IoU.

    For box ``i`` and anchor ``j``, per side ``r = wh_i / anchor_j``; the ratio metric is
    ``x_ij = min over (w, h) of min(r, 1/r)`` (1 for a perfect fit, ``1/thr`` for a box whose
    worse side is ``thr`` times too large or too small); ``best_i = max_j x_ij``; ``t = 1/thr``.

    Parameters
    ----------
    anchors : array_like, shape (k, 2)
        Anchor widths and heights (YOLOv5's per-level rows ``[[w, h, w, h, ...], ...]`` work too).
    wh : array_like, shape (N, 2)
        Box widths and heights: finite and strictly positive.
    thr : float
        YOLOv5's ``anchor_t`` (> 1): the largest side ratio a box may have to its anchor.
    sample_weight : array_like, shape (N,), optional
        Finite, non-negative weights with a positive sum (default: all ones).
    n_threads : int, optional
        None for all threads (honours ``OMP_NUM_THREADS``), a positive count, or a negative one
        counting back from the maximum (-1 = all).

    Returns
    -------
    FitnessResult
        ``fitness = mean_i(best_i * [best_i > t])``, ``bpr = mean_i [best_i > t]``,
        ``aat = mean_i #{j : x_ij > t}`` and ``avg_iou``, means weighted by ``sample_weight``.

    Notes
    -----
    Every threshold decision is exactly numpy's on ``r = wh / anchor; min(r, 1 / r)`` (ties such
    as a side ratio of exactly ``thr`` count as not above), and the sums are exact fixed-point
    sums of the per-box terms (rounded to 2^-50), so the result is the same for any number of
    threads and any order of the boxes. With unit weights ``bpr`` and ``aat`` equal numpy's means
    exactly; the other values agree with a float64 numpy evaluation to about 1e-15.
    """
    a = as_anchors(anchors)
    boxes = as_wh(wh)
    weights = as_weights(sample_weight, boxes.shape[0])
    return _metrics(a, boxes, weights, as_thr(thr), resolve_threads(n_threads))


def as_objective(objective: Any) -> str:
    """``objective`` checked: one of :data:`OBJECTIVES`."""
    if not (isinstance(objective, str) and objective in OBJECTIVES):
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return objective


def as_iou_thr(iou_thr: Any) -> float:
    """``iou_thr`` checked: a float in (0, 1]."""
    value = as_float(iou_thr, "iou_thr")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"iou_thr must be in (0, 1], got {value}")
    return value


def _objective(
    anchors: np.ndarray,
    boxes: np.ndarray,
    weights: Optional[np.ndarray],
    objective: str,
    thr: float,
    iou_thr: float,
    iou_weighted: bool,
    threads: int,
    grid: Any = None,
    layout: Any = None,
) -> float:
    """One objective's value; with ``grid`` (a DetectorGrid of the same boxes) the IoU objectives
    are scored on the detector's grids (the ratio fitness does not depend on positions). Scored on
    ``layout`` (a search layout of the boxes and weights) when given, unless on a grid."""
    grid_kw = grid.core_args(boxes.shape[0], anchors.shape[0]) if grid is not None and objective != "fitness" else {}
    kw: Dict[str, Any] = dict(anchors=anchors, objective=objective, thr=thr, iou_thr=iou_thr)
    kw.update(iou_weighted=iou_weighted, n_threads=threads)
    if layout is not None and not grid_kw:
        return float(_core._layout_objective(layout=layout, **kw))
    return float(_core.anchor_objective(wh=boxes, weights=weights, **kw, **grid_kw))


def _all_objectives(
    anchors: np.ndarray,
    boxes: np.ndarray,
    weights: Optional[np.ndarray],
    thr: float,
    iou_thr: float,
    iou_weighted: bool,
    threads: int,
    grid: Any = None,
    layout: Any = None,
    fitness: Optional[float] = None,
) -> Dict[str, float]:
    """Every objective's value; ``fitness``, when given, is the ratio fitness already computed
    (by :func:`_metrics`, which gives the same value bit for bit) and saves its pass."""
    return {
        name: fitness
        if name == "fitness" and fitness is not None
        else _objective(anchors, boxes, weights, name, thr, iou_thr, iou_weighted, threads, grid, layout)
        for name in OBJECTIVES
    }


def anchor_objective(
    anchors: npt.ArrayLike,
    wh: npt.ArrayLike,
    objective: str = "avg_iou",
    *,
    thr: float = DEFAULT_THR,
    iou_thr: float = DEFAULT_IOU_THR,
    iou_weighted: bool = False,
    sample_weight: Optional[npt.ArrayLike] = None,
    scale: Any = None,
    scale_steps: int = DEFAULT_SCALE_STEPS,
    grid: Any = None,
    n_threads: Optional[int] = None,
) -> float:
    """The value of anchors on one of the search's objectives (what :func:`evolve_anchors` maximizes).

    Boxes and anchors are compared corner-aligned (same top-left corner); ``best_i`` is the box's
    highest IoU with any anchor, ``IoU = min(w, aw) min(h, ah) / (w h + aw ah - min(w, aw) min(h, ah))``.

    Parameters
    ----------
    anchors : array_like, shape (k, 2)
        Anchor widths and heights.
    wh : array_like, shape (N, 2)
        Box widths and heights: finite and strictly positive.
    objective : {"fitness", "avg_iou", "recall"}
        "fitness": YOLOv5's ratio fitness (:func:`anchor_fitness`). "avg_iou": the (weighted) mean
        of ``best_i``. "recall": the (weighted) share of boxes with ``best_i >= iou_thr``, or with
        ``iou_weighted`` the mean of ``best_i * [best_i >= iou_thr]``.
    thr : float
        YOLOv5's ``anchor_t`` (> 1), for "fitness".
    iou_thr : float
        In (0, 1]: the IoU a box needs to count as recalled ("recall").
    iou_weighted : bool
        "recall": count each recalled box with its IoU instead of 1.
    sample_weight : array_like, shape (N,), optional
        Finite, non-negative weights with a positive sum (default: all ones).
    scale, scale_steps : float or (float, float), int
        Scale augmentation (default None: none): the objective's mean over a uniform rescaling of
        the boxes by a factor in ``(lo, hi)`` (one number ``g``: YOLOv5's ``hyp.scale``, meaning
        ``(1 - g, 1 + g)``), over ``scale_steps`` scales (:func:`scale_augment`).
    grid : DetectorGrid, optional
        Score "avg_iou" and "recall" with the anchors placed on the detector's grids (the boxes
        of ``grid`` are those of ``wh``; ``k`` must split evenly over its levels) instead of
        corner-aligned. With ``scale``, the images are resized by each scale (boxes, image sizes
        and so the cell counts scale; the strides do not), as multi-scale training resizes them.
    n_threads : int, optional
        None for all threads, a positive count, or a negative one counting back from the maximum.

    Returns
    -------
    float

    Notes
    -----
    Every IoU and every threshold decision is numpy's float64 value of the formula above, and the
    sum is an exact fixed-point sum of the per-box terms (each rounded to a multiple of 2^-50), so
    the value is the same for any number of threads and any order of the boxes.

    Examples
    --------
    >>> import fastanchor
    >>> wh = [[10.0, 10.0], [20.0, 10.0]]
    >>> fastanchor.anchor_objective([[10.0, 10.0]], wh, "avg_iou")
    0.75
    >>> fastanchor.anchor_objective([[10.0, 10.0]], wh, "recall", iou_thr=0.6)
    0.5
    """
    a = as_anchors(anchors)
    boxes = as_wh(wh)
    weights = as_weights(sample_weight, boxes.shape[0])
    from ._grid import as_grid

    grid = as_grid(grid)
    if scale is not None:
        boxes, weights = scale_augment(boxes, scale, steps=scale_steps, sample_weight=weights)
        if grid is not None:
            grid = grid.scaled(scale_grid(scale, scale_steps))
    if not isinstance(iou_weighted, (bool, np.bool_)):
        raise TypeError(f"iou_weighted must be a bool, got {type(iou_weighted).__name__}")
    return _objective(
        a,
        boxes,
        weights,
        as_objective(objective),
        as_thr(thr),
        as_iou_thr(iou_thr),
        bool(iou_weighted),
        resolve_threads(n_threads),
        grid,
    )


def check_anchors(
    anchors: npt.ArrayLike,
    wh: npt.ArrayLike,
    *,
    thr: float = DEFAULT_THR,
    bpr_threshold: float = DEFAULT_BPR_THRESHOLD,
    sample_weight: Optional[npt.ArrayLike] = None,
    n_threads: Optional[int] = None,
) -> CheckResult:
    """Check existing anchors against a dataset before training, as YOLOv5's ``check_anchors``.

    Parameters
    ----------
    anchors : array_like, shape (k, 2)
        The model's anchors in pixels (YOLOv5's per-level rows ``[[w, h, w, h, ...], ...]``
        work too).
    wh : array_like, shape (N, 2)
        The dataset's box widths and heights in pixels, at the training image size (letterboxed).
    thr : float
        YOLOv5's ``anchor_t`` (> 1).
    bpr_threshold : float
        In [0, 1]: recompute when the best possible recall is below it (YOLOv5: 0.98).
    sample_weight, n_threads
        As in :func:`anchor_fitness`.

    Returns
    -------
    CheckResult
        The metrics of :func:`anchor_fitness` and ``recommend_recompute = bpr < bpr_threshold``.
    """
    a = as_anchors(anchors)
    boxes = as_wh(wh)
    weights = as_weights(sample_weight, boxes.shape[0])
    t = as_thr(thr)
    level = as_float(bpr_threshold, "bpr_threshold")
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"bpr_threshold must be in [0, 1], got {level}")
    m = _metrics(a, boxes, weights, t, resolve_threads(n_threads))
    return CheckResult(
        fitness=m.fitness,
        bpr=m.bpr,
        aat=m.aat,
        avg_iou=m.avg_iou,
        thr=t,
        bpr_threshold=level,
        recommend_recompute=bool(m.bpr < level),
    )


def sort_by_area(anchors: np.ndarray) -> np.ndarray:
    """Anchors sorted by area ascending, ties by width (stable)."""
    order = np.lexsort((np.arange(anchors.shape[0]), anchors[:, 0], anchors[:, 0] * anchors[:, 1]))
    return anchors[order]


def _as_strides(strides: Any) -> List[float]:
    if (
        isinstance(strides, (str, bytes))
        or not isinstance(strides, (Sequence, np.ndarray))
        or (isinstance(strides, np.ndarray) and strides.ndim != 1)
    ):
        raise TypeError(f"strides must be a sequence of numbers, got {type(strides).__name__}")
    out = []
    for s in strides:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Real):
            raise TypeError(f"strides must hold numbers, got {s!r}")
        v = float(s)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"every stride must be finite and positive, got {s!r}")
        out.append(v)
    if not out:
        raise ValueError("strides must not be empty")
    return out


def _fmt(x: float) -> str:
    return f"{x:g}"


def split_levels(anchors: npt.ArrayLike, strides: Sequence[float] = (8, 16, 32)) -> List[npt.NDArray[np.float64]]:
    """Split anchors over the detection levels: in area order, evenly, the smallest to ``strides[0]``.

    Parameters
    ----------
    anchors : array_like, shape (k, 2)
        Anchor widths and heights in pixels, in any order (YOLOv5's per-level rows work too);
        ``k`` must be a multiple of ``len(strides)``.
    strides : sequence of float
        The levels' strides in pixels, in the model's level order (YOLOv5: P3/8, P4/16, P5/32).

    Returns
    -------
    list of ndarray
        ``len(strides)`` arrays of shape (k / len(strides), 2): level ``i`` gets the i-th group
        of anchors in ascending area (ties by width), for ``strides[i]``.

    Raises
    ------
    ValueError
        When ``k`` is not divisible by the number of levels.

    Warns
    -----
    UserWarning
        When ``strides`` are not increasing (then larger anchors land on a finer level than
        smaller ones: the order does not follow the strides), or when an anchor is smaller than
        its level's stride (both its sides below it: the anchor fits inside one grid cell).
    """
    a = sort_by_area(as_anchors(anchors))
    levels = _as_strides(strides)
    k, n = a.shape[0], len(levels)
    if k % n:
        raise ValueError(f"{k} anchors cannot be split evenly over {n} levels (strides {tuple(levels)})")
    groups = [a[i * (k // n) : (i + 1) * (k // n)].copy() for i in range(n)]
    if any(levels[i + 1] <= levels[i] for i in range(n - 1)):
        warnings.warn(
            f"strides ({', '.join(_fmt(s) for s in levels)}) are not increasing: anchors are assigned in increasing "
            "area, so a finer level gets larger anchors than a coarser one (the order does not follow the "
            "strides); list the strides from the finest level to the coarsest",
            UserWarning,
            stacklevel=2,
        )
    small = [
        f"[{_fmt(w)}, {_fmt(h)}] (stride {_fmt(s)})" for s, g in zip(levels, groups) for w, h in g if max(w, h) < s
    ]
    if small:
        warnings.warn(
            f"{len(small)} anchor{'s are' if len(small) > 1 else ' is'} smaller than the stride of its level: "
            + ", ".join(small),
            UserWarning,
            stacklevel=2,
        )
    return groups
