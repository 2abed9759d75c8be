"""k-means of box shapes with the distance 1 - IoU (YOLOv2's anchor clustering)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

from . import _core
from ._progress import make_progress
from ._results import Result
from ._validation import (
    INT_MAX,
    SeedLike,
    as_float,
    as_int,
    as_weights,
    as_wh,
    as_wh_rows,
    distinct_rows_at_least,
    resolve_seed,
    resolve_threads,
    rows_where,
    unchanged_since,
)

#: Default number of restarts. Measured on the 14 real datasets (benchmarks/RESULTS.md,
#: "Choosing n_init"): 3 restarts instead of 1 raise the median average IoU over 10 seeds by
#: 0.0000 to 0.0040 for about 3x the time, 10 restarts by 0.0005 to 0.0051 for about 10x.
#: Greedy k-means++ already starts close to a good optimum, as scikit-learn found when it made
#: one k-means++ run its default (n_init="auto"); pass n_init=3 or 10 for the last fraction.
DEFAULT_N_INIT = 1

_UPDATES = ("median", "mean")
_INITS = ("k-means++", "random")


@dataclass(frozen=True, eq=False, repr=False)
class KMeansResult(Result):
    """The outcome of :func:`kmeans_iou` or :func:`kmeans_log`.

    Immutable, with read-only arrays, and compared by identity (so hashable).
    The repr shows ``labels`` by its shape.

    Attributes
    ----------
    anchors : ndarray (k, 2) float64
        Anchor widths and heights, sorted by area ascending (ties by width).
    labels : ndarray (N,) int32
        For every box, the index of its anchor in ``anchors`` (highest IoU for kmeans_iou, nearest in
        log space for kmeans_log; lowest index on ties).
    avg_iou : float
        Weighted mean over boxes of the best IoU with the anchors.
    n_iter : int
        Lloyd updates performed by the winning run.
    converged : bool
        Whether that run stopped because labels stopped changing (or on ``tol``), rather than
        on ``max_iter``. Labels count as unchanged only with the anchors in their returned (area)
        order, which decides exact ties; so with ``tol=0`` a converged result is a fixed point:
        refitting from ``anchors`` returns the same anchors and labels, after one update.
    """

    _summarized = ("labels",)

    anchors: npt.NDArray[np.float64]
    labels: npt.NDArray[np.int32]
    avg_iou: float
    n_iter: int
    converged: bool


@dataclass(frozen=True)
class _FitInputs:
    """The checked arguments of a k-means fit (shared by kmeans_iou and kmeans_log)."""

    init_name: str
    init_anchors: Optional[np.ndarray]
    n_init: int
    max_iter: int
    tol: float
    threads: int
    core_seed: int
    fit_boxes: np.ndarray
    fit_weights: Optional[np.ndarray]
    positive: Optional[np.ndarray]


def _fit_inputs(
    boxes: np.ndarray,
    weights: Optional[np.ndarray],
    k: int,
    init: Any,
    n_init: Any,
    max_iter: Any,
    tol: Any,
    n_threads: Any,
    seed: SeedLike,
) -> _FitInputs:
    """Validates the options of a fit; the boxes it fits (zero-weight boxes are labelled after it)."""
    init_anchors = None
    if isinstance(init, str):
        if init not in _INITS:
            raise ValueError(f"init must be one of {_INITS} or an array of shape (k, 2), got {init!r}")
        init_name = init
        n_init = DEFAULT_N_INIT if n_init is None else as_int(n_init, "n_init", minimum=1, maximum=INT_MAX)
    else:
        init_anchors = as_wh(init, "init")
        if init_anchors.shape[0] != k:
            raise ValueError(f"init has {init_anchors.shape[0]} anchors but k={k}")
        init_name = "given"
        if n_init is not None and as_int(n_init, "n_init", minimum=1, maximum=INT_MAX) != 1:
            raise ValueError(f"n_init must be 1 when init is an array (it is deterministic), got {n_init}")
        n_init = 1
    max_iter = as_int(max_iter, "max_iter", minimum=0, maximum=INT_MAX)
    tol = as_float(tol, "tol")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    threads = resolve_threads(n_threads)
    core_seed = resolve_seed(seed)

    # Zero-weight boxes take no part in the fit; they are labelled against the final anchors.
    fit_boxes, fit_weights, positive = boxes, weights, None
    if weights is not None and not (weights > 0).all():
        positive = weights > 0
        fit_boxes = rows_where(boxes, positive)
        fit_weights = np.ascontiguousarray(weights[positive])
    # Only the ratios of the weights matter: equal weights are no weights, and are fitted by the
    # same code, so that sample_weight=np.ones(N), with or without zero-weight boxes beside,
    # gives exactly the unweighted result.
    if fit_weights is not None and (fit_weights == fit_weights[0]).all():
        fit_weights = None
    distinct = distinct_rows_at_least(fit_boxes, k)
    if k > distinct:
        what = "distinct boxes with positive weight" if weights is not None else "distinct boxes"
        raise ValueError(f"k={k} is larger than the number of {what} ({distinct})")
    return _FitInputs(
        init_name, init_anchors, n_init, max_iter, tol, threads, core_seed, fit_boxes, fit_weights, positive
    )


def kmeans_iou(
    wh: npt.ArrayLike,
    k: int,
    *,
    init: Union[str, npt.ArrayLike] = "k-means++",
    update: str = "median",
    n_init: Optional[int] = None,
    max_iter: int = 300,
    tol: float = 0.0,
    sample_weight: Optional[npt.ArrayLike] = None,
    seed: SeedLike = None,
    n_threads: Optional[int] = None,
    progress: bool = False,
    copy: bool = False,
) -> KMeansResult:
    """Cluster box shapes into ``k`` anchors with the distance ``1 - IoU`` (YOLOv2).

    Lloyd iterations: every box goes to the anchor with the highest IoU (the lowest anchor
    index on an exact tie), then every anchor moves to the weighted median (or mean) width and
    height of its boxes, until no label changes.

    Parameters
    ----------
    wh : array_like, shape (N, 2)
        Box widths and heights: finite and strictly positive; any real dtype, strides or lists.
        A C-contiguous float32 or float64 array is read in place, not copied (the fit's extra
        memory is a few bytes per box): do not change it while the fit runs. What is checked
        then: a CRC-32 of the rows is taken when they are validated and again when the fit ends,
        and a difference raises RuntimeError. So a change still present when the fit ends is
        detected; a change made and undone during the fit (by another thread) is not, and the
        result may then mix the old and the new values. Pass ``copy=True`` to rule that out.
    k : int
        Number of anchors; at most the number of distinct boxes with positive weight.
    init : {"k-means++", "random"} or array_like of shape (k, 2)
        "k-means++": greedy k-means++ on ``D = 1 - best IoU`` (draws proportional to
        ``weight * D**2``, ``2 + floor(ln k)`` candidates per step, keeping the one that lowers
        ``sum(weight * D**2)`` most). "random": k distinct boxes drawn uniformly. An array is
        used as given (then ``n_init`` must be 1).
    update : {"median", "mean"}
        How an anchor moves to its boxes: the weighted median of each coordinate (interpolated
        like ``numpy.median`` for unit weights; robust, YOLO practice) or the weighted mean.
    n_init : int, optional
        Restarts from different seeds; the run with the highest average IoU wins. Default
        ``DEFAULT_N_INIT`` (1) for "k-means++"/"random" and for an explicit init; see
        ``DEFAULT_N_INIT`` for the measurements behind it.
    max_iter : int
        The most Lloyd updates a run may make (0: assign to the initial anchors only).
    tol : float
        If > 0, a run also stops when no anchor moved by more than ``tol`` relatively
        (``max(|dw|/w, |dh|/h)``), after one last assignment.
    sample_weight : array_like, shape (N,), optional
        Finite, non-negative weights multiplying each box's share in every sum, median and
        average. Zero-weight boxes do not influence the anchors; they still get labels. The
        weighted median and mean add the weights as integers in units of 2^-30 of the largest (at
        least one unit each), exactly: integer weights below 2**30 count as repeated boxes.
    seed : int, numpy.random.Generator, numpy.random.SeedSequence or None
        The same input and seed give bit-identical results for any ``n_threads``.
    n_threads : int, optional
        None for all threads (honours ``OMP_NUM_THREADS``), a positive count, or a negative one
        counting back from the maximum (-1 = all). 0 is an error.
    copy : bool
        Fit a private copy of ``wh`` (validated after the copy), so that nothing another thread
        does to the caller's array during the call can change the result. Costs 16 bytes per box
        (the rows as float64) for the duration of the call, and the copy's time (about 1 ms per
        10^5 boxes). Arrays that are not C-contiguous float32/float64 are always copied.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    KMeansResult

    Notes
    -----
    The fit can be interrupted with Ctrl-C: the core checks for it about every 50 ms of work
    (inside a Lloyd step too, whatever ``k``) and raises KeyboardInterrupt. The GIL is released
    while the core runs, so other Python threads keep going.
    """
    if not isinstance(copy, (bool, np.bool_)):
        raise TypeError(f"copy must be True or False, got {copy!r}")
    if copy:
        boxes, checksum = as_wh(wh), None
    else:
        boxes, checksum = as_wh_rows(wh)
    n = boxes.shape[0]
    k = as_int(k, "k", minimum=1)
    weights = as_weights(sample_weight, n)

    if isinstance(update, str) and update in _UPDATES:
        update_name = update
    else:
        raise ValueError(f"update must be one of {_UPDATES}, got {update!r}")

    f = _fit_inputs(boxes, weights, k, init, n_init, max_iter, tol, n_threads, seed)
    init_name, init_anchors, n_init, threads = f.init_name, f.init_anchors, f.n_init, f.threads
    fit_boxes, fit_weights, positive = f.fit_boxes, f.fit_weights, f.positive
    max_iter, tol, core_seed = f.max_iter, f.tol, f.core_seed

    bar = make_progress(progress, n_init, "kmeans_iou")
    try:
        out = _core.kmeans_iou(
            wh=fit_boxes,
            weights=fit_weights,
            k=k,
            init=init_name,
            init_anchors=init_anchors,
            update=update_name,
            n_init=n_init,
            max_iter=max_iter,
            tol=tol,
            seed=core_seed,
            n_threads=threads,
            callback=bar,
        )
    finally:
        if bar is not None:
            bar.close()

    labels = out["labels"]
    if positive is not None:
        all_labels = _core.assign(anchors=out["anchors"], wh=boxes, n_threads=threads)
        all_labels[positive] = labels
        labels = all_labels
    unchanged_since(boxes, checksum, "wh", "kmeans_iou")
    return KMeansResult(
        anchors=out["anchors"],
        labels=labels,
        avg_iou=float(out["avg_iou"]),
        n_iter=int(out["n_iter"]),
        converged=bool(out["converged"]),
    )


def kmeans_present(
    rows: np.ndarray,
    k: int,
    init: np.ndarray,
    *,
    tol: float,
    skip_below: float,
    n_threads: int,
    progress: bool = False,
) -> np.ndarray:
    """The anchors of ``kmeans_iou(kept, k, init=init, tol=tol)`` for the rows ``kept`` of
    ``rows`` with a side of at least ``skip_below``, bit for bit, without copying them: the core
    reads ``rows`` (C-contiguous, validated) in place and leaves the others out (a little more
    time per left-out row, none of the 8 bytes per kept row of a copy). ``init``: k distinct
    anchors (k < 255; unit weights, the median update). No labels and no average IoU."""
    bar = make_progress(progress, 1, "kmeans_iou")
    try:
        out = _core.kmeans_iou(
            wh=rows,
            weights=None,
            k=k,
            init="given",
            init_anchors=np.ascontiguousarray(init, dtype=np.float64),
            update="median",
            n_init=1,
            max_iter=300,
            tol=float(tol),
            seed=0,
            n_threads=n_threads,
            callback=bar,
            skip_below=float(skip_below),
        )
    finally:
        if bar is not None:
            bar.close()
    anchors: np.ndarray = out["anchors"]
    return anchors
