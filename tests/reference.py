"""Plain-numpy reference implementation of fastanchor's anchor-box k-means.

This file is the *specification* the fast C++ core is tested against (with
hypothesis).  It values clarity and exact, documented semantics over speed:
every computation is done in float64 and follows a fixed operation order so
that the C++ implementation can reproduce the results bit-for-bit.

Boxes and anchors are arrays of shape (n, 2) holding (width, height).
"""

import numpy as np

__all__ = [
    "wh_iou",
    "wh_iou_dtype",
    "assign",
    "avg_iou",
    "weighted_median",
    "sort_anchors",
    "lloyd",
]


def _iou_matrix(wh1, wh2):
    """IoU of two corner-aligned box sets; operates in the arrays' own dtype."""
    w1, h1 = wh1[:, 0], wh1[:, 1]
    w2, h2 = wh2[:, 0], wh2[:, 1]
    inter = np.minimum(w1[:, None], w2[None, :]) * np.minimum(h1[:, None], h2[None, :])
    a1 = w1 * h1
    a2 = w2 * h2
    return inter / ((a1[:, None] + a2[None, :]) - inter)


def wh_iou(wh1, wh2):
    """(N, M) float64 IoU matrix between boxes wh1 (N, 2) and wh2 (M, 2)."""
    wh1 = np.asarray(wh1, dtype=np.float64).reshape(-1, 2)
    wh2 = np.asarray(wh2, dtype=np.float64).reshape(-1, 2)
    return _iou_matrix(wh1, wh2)


def wh_iou_dtype(wh1, wh2):
    """Same as wh_iou, but computed in the common dtype of the inputs
    (float32 when both are float32); non-float inputs are computed in float64."""
    wh1 = np.asarray(wh1)
    wh2 = np.asarray(wh2)
    dtype = np.result_type(wh1.dtype, wh2.dtype)
    if not np.issubdtype(dtype, np.floating):
        dtype = np.float64
    return _iou_matrix(wh1.astype(dtype).reshape(-1, 2), wh2.astype(dtype).reshape(-1, 2))


def assign(anchors, wh):
    """Assign each box to its best anchor.

    Returns (labels int64 (N,), best_iou float64 (N,)); on exact ties the
    lowest anchor index wins (np.argmax semantics).
    """
    iou = wh_iou(wh, anchors)  # rows: boxes, columns: anchors
    labels = np.argmax(iou, axis=1).astype(np.int64)
    best = np.max(iou, axis=1)
    return labels, best


def avg_iou(anchors, wh, sample_weight=None):
    """Weighted mean over boxes of the best IoU with any anchor."""
    _, best = assign(anchors, wh)
    wt = _weights(sample_weight, best.shape[0])
    return float(np.sum(wt * best) / np.sum(wt))


def weighted_median(x, wt):
    """Weighted median of 1-D x with positive weights wt.

    The lower weighted median, except that when the cumulative weight hits
    exactly half the total, the midpoint of that value and the next one is
    returned.  With unit weights this equals numpy.median (for both odd and
    even lengths).
    """
    x = np.asarray(x, dtype=np.float64)
    wt = np.asarray(wt, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    c = np.cumsum(wt[order])
    half = c[-1] / 2
    i = int(np.searchsorted(c, half, side="left"))  # first i with c[i] >= half
    if c[i] == half and i < len(xs) - 1:
        return float((xs[i] + xs[i + 1]) / 2)
    return float(xs[i])


def sort_anchors(anchors, labels):
    """Sort anchors by area ascending, then width ascending, then original index.

    Returns (sorted anchors float64 (k, 2), labels remapped to the sorted
    order as int32).
    """
    anchors = np.asarray(anchors, dtype=np.float64)
    labels = np.asarray(labels)
    k = anchors.shape[0]
    w, h = anchors[:, 0], anchors[:, 1]
    area = w * h
    order = np.lexsort((np.arange(k), w, area))  # last key is the primary key
    new_index = np.empty(k, dtype=np.int64)
    new_index[order] = np.arange(k)  # old anchor index -> position after sorting
    return anchors[order], new_index[labels].astype(np.int32)


def _weights(sample_weight, n):
    if sample_weight is None:
        return np.ones(n, dtype=np.float64)
    wt = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if wt.shape[0] != n:
        raise ValueError("sample_weight must have one entry per box")
    return wt


def _update_step(anchors, labels, best, wh, wt, update):
    """One Lloyd update: recompute non-empty clusters, re-seed empty ones.

    `best` is each box's best IoU with the current (pre-update) anchors.
    """
    k = anchors.shape[0]
    w, h = wh[:, 0], wh[:, 1]
    new = anchors.copy()
    counts = np.bincount(labels, minlength=k)
    nonempty = counts > 0

    if update == "mean":
        s_w = np.bincount(labels, weights=wt * w, minlength=k)
        s_h = np.bincount(labels, weights=wt * h, minlength=k)
        s_1 = np.bincount(labels, weights=wt, minlength=k)
        new[nonempty, 0] = s_w[nonempty] / s_1[nonempty]
        new[nonempty, 1] = s_h[nonempty] / s_1[nonempty]
    else:  # "median"
        for j in np.flatnonzero(nonempty):
            members = labels == j  # boolean mask keeps members in index order
            new[j, 0] = weighted_median(w[members], wt[members])
            new[j, 1] = weighted_median(h[members], wt[members])

    # Empty clusters, in increasing anchor index, take the worst-fitting boxes:
    # ordered by (best IoU ascending, box index ascending).
    empty = np.flatnonzero(~nonempty)
    if empty.size:
        worst_first = np.lexsort((np.arange(wh.shape[0]), best))
        for rank, j in enumerate(empty):
            new[j] = wh[worst_first[rank]]
    return new


def lloyd(wh, init_anchors, *, update="median", max_iter=300, tol=0.0, sample_weight=None):
    """Lloyd k-means on (width, height) boxes with 1 - IoU as the distance.

    Returns dict(anchors (k, 2) sorted by sort_anchors, labels int32 (N,),
    avg_iou float, n_iter int, converged bool).
    """
    if update not in ("median", "mean"):
        raise ValueError("update must be 'median' or 'mean'")
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    anchors = np.array(init_anchors, dtype=np.float64).reshape(-1, 2)  # copy
    n, k = wh.shape[0], anchors.shape[0]
    if not 1 <= k <= n:
        # k <= n guarantees enough boxes to re-seed every empty cluster.
        raise ValueError("need 1 <= number of anchors <= number of boxes")
    wt = _weights(sample_weight, n)

    prev = None
    n_iter = 0
    converged = False
    while True:
        labels, best = assign(anchors, wh)
        if prev is not None and np.array_equal(labels, prev):
            converged = True
            break
        if n_iter >= max_iter:
            break
        new = _update_step(anchors, labels, best, wh, wt, update)
        n_iter += 1
        rel_w = np.abs(new[:, 0] - anchors[:, 0]) / anchors[:, 0]
        rel_h = np.abs(new[:, 1] - anchors[:, 1]) / anchors[:, 1]
        shift = np.max(np.maximum(rel_w, rel_h))
        anchors = new
        prev = labels
        if tol > 0 and shift <= tol:
            labels, best = assign(anchors, wh)
            converged = True
            break

    sorted_anchors, _ = sort_anchors(anchors, labels)
    # The returned labels are the assignment to the returned (sorted) anchors, so that the
    # lowest-index rule holds for them even for boxes tied between anchors the sort reordered.
    sorted_labels = assign(sorted_anchors, wh)[0].astype(np.int32)
    return dict(
        anchors=sorted_anchors,
        labels=sorted_labels,
        avg_iou=avg_iou(sorted_anchors, wh, wt),
        n_iter=n_iter,
        converged=converged,
    )
