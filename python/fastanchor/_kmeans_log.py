"""k-means of box shapes with the squared Euclidean distance in log space (geometric-mean anchors)."""

from __future__ import annotations

from typing import Any, Optional, Union

from . import _core
from ._kmeans import KMeansResult, _fit_inputs
from ._progress import make_progress
from ._validation import SeedLike, as_int, as_weights, as_wh_rows, unchanged_since


def kmeans_log(
    wh: Any,
    k: int,
    *,
    init: Union[str, Any] = "k-means++",
    n_init: Optional[int] = None,
    max_iter: int = 300,
    tol: float = 0.0,
    sample_weight: Any = None,
    seed: SeedLike = None,
    n_threads: Optional[int] = None,
    progress: bool = False,
) -> KMeansResult:
    """Cluster box shapes into ``k`` anchors with the squared distance in log space.

    Lloyd iterations with ``d = (log w - log a_w)**2 + (log h - log a_h)**2``: every box goes to
    the nearest anchor (the lowest anchor index on an exact tie), then every anchor moves to the
    weighted mean of its boxes' logs, i.e. their weighted geometric mean per side, until no label
    changes. An anchor left without boxes stays where it is.

    This is the fixed point of the online-clustering term of Zhong, Wang, Peng and Zhang,
    "Anchor Box Optimization for Object Detection" (WACV 2020), and so the natural start for
    anchors learned during training (a detector that regresses ``log(g / a)`` sees exactly this
    distance). Use :func:`kmeans_iou` when the anchors are used as they are (YOLO's matching is by
    shape ratio, SSD's and Faster R-CNN's by IoU): it maximizes the average IoU directly. The
    log-space fit treats scale and shape symmetrically and is not pulled by the few very large
    boxes; it gives slightly lower average IoU on most datasets (see the guide "k-means in log
    space" for measured figures).

    Parameters
    ----------
    wh : array_like, shape (N, 2)
        Box widths and heights: finite and strictly positive; any real dtype, strides or lists.
        Do not change the array while the fit runs (a change is detected and raises RuntimeError).
    k : int
        Number of anchors; at most the number of distinct boxes with positive weight.
    init : {"k-means++", "random"} or array_like of shape (k, 2)
        "k-means++": greedy k-means++ in log space (draws proportional to ``weight * D``, D the
        squared log distance to the nearest chosen centre, ``2 + floor(ln k)`` candidates per
        step, keeping the one that lowers ``sum(weight * D)`` most). "random": k boxes with
        distinct logs drawn uniformly. An array is used as given (then ``n_init`` must be 1).
    n_init : int, optional
        Restarts from different seeds; the run with the lowest log-space inertia
        ``sum(weight * d)`` wins (the first on a tie). Default ``DEFAULT_N_INIT``.
    max_iter : int
        The most Lloyd updates a run may make (0: assign to the initial anchors only).
    tol : float
        If > 0, a run also stops when no anchor moved by more than ``tol`` in log space
        (``max(|d log w|, |d log h|)``, about the relative change), after one last assignment.
    sample_weight : array_like, shape (N,), optional
        Finite, non-negative weights. Only their ratios matter: they enter the sums as integers,
        the largest weight at 40 bits (a weight below 2**-40 of the largest counts as 2**-40 of
        it). Zero-weight boxes do not influence the anchors; they still get labels.
    seed : int, numpy.random.Generator, numpy.random.SeedSequence or None
        The same input and seed give bit-identical results for any ``n_threads``.
    n_threads : int, optional
        None for all threads (honours ``OMP_NUM_THREADS``), a positive count, or a negative one
        counting back from the maximum (-1 = all). 0 is an error.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    KMeansResult
        ``anchors`` sorted by area ascending (ties by width), ``labels`` by the log-space
        distance to those anchors, ``avg_iou`` the weighted mean best IoU of the boxes with the
        anchors (comparable with :func:`kmeans_iou`), ``n_iter`` and ``converged``.

    Notes
    -----
    Exact and reproducible: the logs are computed once per box in float64 (the C library's
    ``log``), each rounded to a multiple of 2**-40; the sums of a cluster are exact 128-bit integer
    sums, so the geometric means do not depend on the order of the additions or on the number of
    threads. The fit can be interrupted with Ctrl-C (KeyboardInterrupt between two Lloyd steps);
    the GIL is released while the core runs.

    References
    ----------
    Y. Zhong, J. Wang, J. Peng, L. Zhang, "Anchor Box Optimization for Object Detection",
    WACV 2020.
    """
    boxes, checksum = as_wh_rows(wh)
    n = boxes.shape[0]
    k = as_int(k, "k", minimum=1)
    weights = as_weights(sample_weight, n)

    f = _fit_inputs(boxes, weights, k, init, n_init, max_iter, tol, n_threads, seed)
    threads, positive = f.threads, f.positive

    bar = make_progress(progress, f.n_init, "kmeans_log")
    try:
        out = _core.kmeans_log(
            wh=f.fit_boxes,
            weights=f.fit_weights,
            k=k,
            init=f.init_name,
            init_anchors=f.init_anchors,
            n_init=f.n_init,
            max_iter=f.max_iter,
            tol=f.tol,
            seed=f.core_seed,
            n_threads=threads,
            callback=bar,
        )
    finally:
        if bar is not None:
            bar.close()

    labels = out["labels"]
    if positive is not None:
        all_labels = _core.log_assign(log_anchors=out["log_anchors"], wh=boxes, n_threads=threads)
        all_labels[positive] = labels
        labels = all_labels
    avg = _core.avg_iou(anchors=out["anchors"], wh=boxes, weights=weights, n_threads=threads)
    unchanged_since(boxes, checksum, "wh", "kmeans_log")
    return KMeansResult(
        anchors=out["anchors"],
        labels=labels,
        avg_iou=float(avg),
        n_iter=int(out["n_iter"]),
        converged=bool(out["converged"]),
    )
