"""Aspect ratios for SSD anchor generators: the box shapes clustered at unit area."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import numpy.typing as npt

from . import _core
from ._iou import avg_iou
from ._kmeans import kmeans_iou
from ._results import Result
from ._validation import (
    INT_MAX,
    MAX_SIDE,
    MIN_SIDE,
    SeedLike,
    as_int,
    as_weights,
    as_wh,
    distinct_rows_at_least,
    resolve_seed,
    resolve_threads,
)

__all__ = ["AspectRatioResult", "ssd_aspect_ratios", "unit_area"]


def unit_area(wh: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Every box scaled to unit area, its aspect ratio kept: ``(w / sqrt(w*h), h / sqrt(w*h))``.

    Parameters
    ----------
    wh : array_like, shape (N, 2)
        Box widths and heights, finite and strictly positive.

    Returns
    -------
    ndarray, shape (N, 2), float64
        The unit-area boxes. Their sides are kept within ``[MIN_SIDE, MAX_SIDE]`` (1e-30, 1e30),
        the range every function accepts: a box of ratio 1e60 (the most that range allows) can
        round one ulp beyond it.
    """
    a = as_wh(wh)
    s = np.sqrt(a[:, 0] * a[:, 1])
    return np.clip(a / s[:, None], MIN_SIDE, MAX_SIDE)


def _ratio_boxes(ratios: np.ndarray) -> np.ndarray:
    """The unit-area anchors ``(sqrt(a), 1 / sqrt(a))`` of the ratios, kept within
    ``[MIN_SIDE, MAX_SIDE]`` as :func:`unit_area` (ratios near 1e60 round one ulp beyond it)."""
    r = np.sqrt(ratios)
    return np.clip(np.stack([r, 1.0 / r], axis=1), MIN_SIDE, MAX_SIDE)


@dataclass(frozen=True, eq=False, repr=False)
class AspectRatioResult(Result):
    """The result of :func:`ssd_aspect_ratios`.

    Immutable, with read-only arrays, and compared by identity (so hashable).
    The repr shows ``labels`` by its shape.

    Attributes
    ----------
    aspect_ratios : ndarray (n,) float64
        The clustered aspect ratios ``w / h``, ascending.
    anchors : ndarray (n, 2) float64
        The unit-area anchors of those ratios: ``(sqrt(a), 1 / sqrt(a))``.
    avg_iou : float
        Weighted mean over the unit-area boxes of the best IoU with a unit-area anchor.
    method : str
        ``"iou"`` or ``"euclidean"``.
    labels : ndarray (N,) int32
        Each box's cluster, indexing ``aspect_ratios``.
    """

    _summarized = ("labels",)

    aspect_ratios: npt.NDArray[np.float64]
    anchors: npt.NDArray[np.float64]
    avg_iou: float
    method: str
    labels: npt.NDArray[np.int32]


def _weighted_mean(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The weighted mean of the rows of ``x`` (at least one weight positive). The weights are
    divided by their largest first, so that a group of tiny (even subnormal) weights neither
    underflows (a centre of 0) nor loses precision: only their ratios matter."""
    with np.errstate(under="ignore"):
        w = w / w.max()
    return (w[:, None] * x).sum(0) / w.sum()


def _kmeans_euclidean(
    x: np.ndarray, k: int, weights: Optional[np.ndarray], seed: int, n_init: int, max_iter: int
) -> np.ndarray:
    """Plain Lloyd k-means with squared Euclidean distance and k-means++ seeding (what the
    TensorFlow notebook does with scikit-learn); the centres of the run with the lowest inertia.

    Boxes of zero weight are never centres (the caller made sure there are at least ``k``
    distinct boxes of positive weight); ``max_iter=0`` returns the seeding's centres."""
    rng = np.random.default_rng(seed)
    wt = np.ones(x.shape[0]) if weights is None else weights
    positive = wt > 0
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        centers = [x[rng.choice(x.shape[0], p=wt / wt.sum())]]
        d2 = ((x - centers[0]) ** 2).sum(1)
        for _j in range(1, k):
            with np.errstate(under="ignore"):
                p = wt * d2
            total = p.sum()
            if total > 0:
                idx = rng.choice(x.shape[0], p=p / total)
            else:
                # every weight * distance underflowed: a positive-weight box that is no centre yet
                # (there is one: k <= the distinct boxes of positive weight)
                idx = int(rng.choice(np.flatnonzero(positive & (d2 > 0))))
            centers.append(x[idx])
            d2 = np.minimum(d2, ((x - x[idx]) ** 2).sum(1))
        c = np.array(centers)
        labels = ((x[:, None, :] - c[None, :, :]) ** 2).sum(2).argmin(1)
        for it in range(max_iter):
            if it:
                new = ((x[:, None, :] - c[None, :, :]) ** 2).sum(2).argmin(1)
                if np.array_equal(new, labels):
                    break
                labels = new
            for j in range(k):
                m = (labels == j) & positive
                if m.any():
                    c[j] = _weighted_mean(x[m], wt[m])
        inertia = float((wt * ((x - c[labels]) ** 2).sum(1)).sum())
        if best is None or inertia < best_inertia:
            best, best_inertia = c.copy(), inertia
    assert best is not None
    return best


def ssd_aspect_ratios(
    wh: npt.ArrayLike,
    n: int,
    *,
    method: str = "iou",
    seed: SeedLike = None,
    n_init: Optional[int] = None,
    max_iter: int = 300,
    sample_weight: Optional[npt.ArrayLike] = None,
    n_threads: Optional[int] = None,
) -> AspectRatioResult:
    """Aspect ratios for an SSD anchor generator, by clustering the box shapes at unit area.

    Every box is scaled to unit area (``w / sqrt(w*h)``, ``h / sqrt(w*h)``) so that only its
    shape counts, the unit-area boxes are clustered into ``n`` groups, and each group's centre
    gives an aspect ratio ``w / h``. The score is the average IoU of the unit-area boxes with the
    unit-area anchors ``(sqrt(a), 1 / sqrt(a))`` of the ratios.

    Parameters
    ----------
    wh : array_like, shape (N, 2)
        Box widths and heights, at the network's input resolution (after the resize the model
        does: SSD stretches images, which changes aspect ratios).
    n : int
        Number of aspect ratios.
    method : {"iou", "euclidean"}
        ``"iou"``: :func:`kmeans_iou` (distance ``1 - IoU``). ``"euclidean"``: k-means with
        Euclidean distance on the normalized ``(w, h)``, as the TensorFlow Object Detection API
        notebook does (for comparison).
    seed, n_init, max_iter, sample_weight, n_threads
        As in :func:`kmeans_iou` (``euclidean``: ``n_init`` defaults to 10, as scikit-learn;
        ``max_iter=0`` keeps the k-means++ seeds). ``n`` is at most the number of distinct boxes
        with positive weight, for both methods.

    Returns
    -------
    AspectRatioResult
    """
    if not isinstance(method, str) or method not in ("iou", "euclidean"):
        raise ValueError(f"method must be 'iou' or 'euclidean', got {method!r}")
    u = unit_area(wh)
    k = as_int(n, "n", minimum=1)
    weights = as_weights(sample_weight, u.shape[0])
    threads = resolve_threads(n_threads)
    if method == "euclidean":  # the count checks of kmeans_iou (which checks them for "iou")
        runs = 10 if n_init is None else as_int(n_init, "n_init", minimum=1, maximum=INT_MAX)
        iterations = as_int(max_iter, "max_iter", minimum=0, maximum=INT_MAX)
    # kmeans_iou's rule, for both methods (its message would name k): boxes of zero weight don't count
    distinct = distinct_rows_at_least(u if weights is None else u[weights > 0], k)
    if k > distinct:
        what = "distinct boxes with positive weight" if weights is not None else "distinct boxes"
        raise ValueError(f"n={k} is larger than the number of {what} in wh ({distinct})")
    if method == "iou":
        r = kmeans_iou(u, k, seed=seed, n_init=n_init, max_iter=max_iter, sample_weight=weights, n_threads=threads)
        centers = r.anchors
    else:
        centers = _kmeans_euclidean(u, k, weights, resolve_seed(seed), runs, iterations)
    ratios = np.sort(centers[:, 0] / centers[:, 1])
    anchors = _ratio_boxes(ratios)
    labels = _core.assign(anchors=anchors, wh=u, n_threads=threads)
    score = avg_iou(anchors, u, sample_weight=weights, n_threads=threads)
    return AspectRatioResult(aspect_ratios=ratios, anchors=anchors, avg_iou=score, method=method, labels=labels)
