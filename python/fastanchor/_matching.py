"""Matching ground truth to SSD priors, and the SSD box encoding (``encode``/``decode``)."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from . import _core
from ._box_iou import as_boxes
from ._validation import as_float, as_positive, as_real_array, resolve_threads

__all__ = ["decode", "encode", "match_priors"]


def _checked_images(parts: Sequence[Any]) -> Tuple[np.ndarray, np.ndarray]:
    """The images' boxes validated and concatenated, and the number of boxes of each image.

    Arrays of a real dtype are concatenated and checked in one call (per image, the checks cost
    more than the matching of a small image); when that finds a bad row, or for other inputs,
    every image is checked on its own, so that an error names the image.
    """
    if all(isinstance(g, np.ndarray) and g.ndim == 2 and g.shape[1] == 4 and g.dtype.kind in "fiu" for g in parts):
        n = np.array([g.shape[0] for g in parts], dtype=np.int64)
        try:
            return as_boxes(np.concatenate(parts) if len(parts) else np.zeros((0, 4)), "gt_boxes", allow_empty=True), n
        except ValueError:
            pass  # checked again image by image below, for a message that names the image
    images = [as_boxes(g, f"gt_boxes[{b}]", allow_empty=True) for b, g in enumerate(parts)]
    n = np.array([g.shape[0] for g in images], dtype=np.int64)
    return (np.concatenate(images) if images else np.zeros((0, 4))), n


def _gt_list(gt_boxes: Any, counts: Any) -> Tuple[np.ndarray, np.ndarray, bool]:
    """The ground truth of all images, validated and concatenated; the number of boxes of each
    image; and whether a single image was given."""
    if isinstance(gt_boxes, (list, tuple)) and (
        len(gt_boxes) == 0 or not np.isscalar(gt_boxes[0]) and np.ndim(gt_boxes[0]) == 2
    ):
        if counts is not None:
            raise ValueError("counts is for a padded (B, G, 4) array of gt_boxes, not a list")
        return (*_checked_images(gt_boxes), False)
    arr = as_real_array(gt_boxes, "gt_boxes")
    if arr.ndim == 2:
        if counts is not None:
            raise ValueError("counts is for a padded (B, G, 4) array of gt_boxes")
        return as_boxes(arr, "gt_boxes", allow_empty=True), np.array([arr.shape[0]], dtype=np.int64), True
    if arr.ndim != 3 or arr.shape[2] != 4:
        raise ValueError(
            f"gt_boxes must be (G, 4), a list of (G_i, 4) arrays or a padded (B, G, 4) array, got shape {arr.shape}"
        )
    if counts is None:
        n = np.full(arr.shape[0], arr.shape[1], dtype=np.int64)
    else:
        c = as_real_array(counts, "counts")
        if c.shape != (arr.shape[0],) or c.dtype.kind not in "iu":
            raise ValueError(f"counts must be ({arr.shape[0]},) integers, one per image, got {c.dtype} {c.shape}")
        if (c < 0).any() or (c > arr.shape[1]).any():
            b = int(np.flatnonzero((c < 0) | (c > arr.shape[1]))[0])
            raise ValueError(f"counts[{b}] = {int(c[b])} is outside [0, {arr.shape[1]}]")
        n = c.astype(np.int64)
    return (*_checked_images([arr[b, : n[b]] for b in range(arr.shape[0])]), False)


def match_priors(
    priors: npt.ArrayLike,
    gt_boxes: Union[npt.ArrayLike, Sequence[npt.ArrayLike]],
    *,
    threshold: float = 0.5,
    counts: Optional[npt.ArrayLike] = None,
    n_threads: Optional[int] = None,
) -> npt.NDArray[np.int32]:
    """Match ground-truth boxes to priors (SSD training): the GT index of every prior, -1 for background.

    Per image, on the IoU matrix of its G ground-truth boxes with the P priors:

    1. **Forced matches** (every GT gets a prior): ``min(G, P)`` greedy rounds; each takes the
       largest IoU among the GT boxes and priors not yet matched this way and gives that prior
       to that GT. Exact ties go to the lowest GT index, then the lowest prior index. So when
       two GT boxes want the same prior, the one with the higher IoU gets it (on a tie, the lower
       GT index) and the other takes its best remaining prior.
    2. **Threshold matches**: every other prior takes its best GT (the lowest GT index on ties)
       when their IoU is ``>= threshold``, else -1.

    Parameters
    ----------
    priors : array_like, shape (P, 4)
        Priors in corner form ``(x1, y1, x2, y2)`` (``to_corners(ssd_default_boxes(...))``).
    gt_boxes : array_like
        Corner boxes of one image ``(G, 4)``, a list of ``(G_i, 4)`` arrays (one per image, may
        be empty), or a padded ``(B, G, 4)`` array with ``counts``.
    threshold : float
        The IoU a prior needs to take a GT in step 2.
    counts : array_like of int, shape (B,), optional
        With a padded array: how many rows of each image are boxes (default: all).
    n_threads : int, optional
        Images are matched in parallel; as in :func:`box_iou`.

    Returns
    -------
    ndarray of int32
        ``(P,)`` for one image, ``(B, P)`` for a batch.
    """
    p = as_boxes(priors, "priors")
    thr = as_float(threshold, "threshold")
    gt, n, single = _gt_list(gt_boxes, counts)
    offsets = np.zeros(n.size + 1, dtype=np.int64)
    np.cumsum(n, out=offsets[1:])
    out = _core.match_priors(priors=p, gt=gt, offsets=offsets, threshold=thr, n_threads=resolve_threads(n_threads))
    return out[0] if single else out


def _variances(v: Any) -> Tuple[float, float]:
    try:
        v0, v1 = v
    except (TypeError, ValueError):
        raise TypeError(f"variances must be a pair of numbers, got {v!r}") from None
    return as_positive(v0, "variances[0]"), as_positive(v1, "variances[1]")


def _center_priors(priors: Any) -> np.ndarray:
    arr = as_real_array(priors, "priors")
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"priors must have shape (P, 4) of (cx, cy, w, h), got shape {arr.shape}")
    out = np.ascontiguousarray(arr, dtype=np.float64)
    with np.errstate(all="ignore"):
        ok = np.isfinite(out).all(1) & (out[:, 2] > 0) & (out[:, 3] > 0)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        raise ValueError(
            f"priors has {bad.size} bad row{'s' if bad.size > 1 else ''}: priors are (cx, cy, w, h) with finite "
            f"values and w, h > 0; the first is row {int(bad[0])}: {arr[int(bad[0])].tolist()}"
        )
    return out


def _against_priors(x: Any, name: str, priors: Any, variances: Any) -> Tuple[np.ndarray, float, float, np.ndarray]:
    """The checked priors (center form) and variances, and ``x`` as a real array of shape (P, 4) or
    (B, P, 4) to match the priors (its values are checked by the caller)."""
    d = _center_priors(priors)
    v0, v1 = _variances(variances)
    arr = as_real_array(x, name)
    if arr.ndim not in (2, 3) or arr.shape[-2:] != d.shape:
        raise ValueError(f"{name} must have shape {d.shape} or (B, {d.shape[0]}, 4) to match priors, got {arr.shape}")
    return d, v0, v1, arr


def encode(
    matched_gt: npt.ArrayLike, priors: npt.ArrayLike, variances: Sequence[float] = (0.1, 0.2)
) -> npt.NDArray[np.float64]:
    """SSD regression targets of matched boxes relative to their priors.

    ``t_xy = (g_c - d_c) / (d_wh * v0)`` and ``t_wh = log(g_wh / d_wh) / v1``, where ``g`` is the
    matched ground truth in corner form (its centre ``0.5 * (p1 + p2)``, size ``p2 - p1``) and
    ``d`` the prior in center form ``(cx, cy, w, h)``.

    Parameters
    ----------
    matched_gt : array_like, shape (P, 4) or (B, P, 4)
        The GT box of each prior in corner form, e.g. ``gt[np.maximum(matches, 0)]``.
    priors : array_like, shape (P, 4)
        Priors in center form, as :func:`ssd_default_boxes` returns them.
    variances : pair of float

    Returns
    -------
    ndarray, the shape of ``matched_gt``, float64. :func:`decode` is the inverse formula; in
    floating point ``decode(encode(g))`` equals ``g`` to a few ulps (relative to the box sizes).

    Raises
    ------
    ValueError
        When the scale ``d_wh * v0`` of a prior is not a finite positive float64 (e.g. variances
        of 1e308, even with no boxes to encode), naming the first such prior row; or when a
        target is beyond float64 range (e.g. a 1e10 box against a 1e-300 prior), naming the
        first such row (and image, for a batch).
    """
    d, v0, v1, g = _against_priors(matched_gt, "matched_gt", priors, variances)
    flat = as_boxes(g.reshape(-1, 4), "matched_gt", allow_empty=True).reshape(g.shape)
    scale = _prior_scale(d, v0)
    with np.errstate(all="ignore"):
        gc = 0.5 * (flat[..., :2] + flat[..., 2:])
        gwh = flat[..., 2:] - flat[..., :2]
        t_xy = (gc - d[:, :2]) / scale
        t_wh = np.log(gwh / d[:, 2:]) / v1
        out = np.concatenate([t_xy, t_wh], axis=-1)
    _finite_rows(out, "matched_gt gives targets beyond float64 range against its priors and variances")
    return out


def decode(
    loc: npt.ArrayLike, priors: npt.ArrayLike, variances: Sequence[float] = (0.1, 0.2)
) -> npt.NDArray[np.float64]:
    """Boxes in corner form from SSD offsets: the inverse formulas of :func:`encode`.

    ``c = d_c + t_xy * v0 * d_wh``, ``wh = d_wh * exp(t_wh * v1)``, corners ``c -/+ 0.5 * wh``.
    ``loc`` has shape (P, 4) or (B, P, 4); returns float64 of the same shape.

    Raises
    ------
    ValueError
        When ``loc`` is not finite; when the scale ``d_wh * v0`` of a prior is not a finite
        positive float64 (as in :func:`encode`: e.g. variances of 1e308), naming the prior row;
        or when ``loc`` gives boxes beyond float64 range (inf or NaN corners, e.g. ``loc = 1e4``,
        where ``exp(1e4 * v1)`` overflows): "loc gives boxes beyond float64 range", naming the
        first such row (and image, for a batch).
    """
    d, v0, v1, t = _against_priors(loc, "loc", priors, variances)
    t = t.astype(np.float64, copy=False)
    if not np.isfinite(t).all():
        raise ValueError("loc must be finite")
    _prior_scale(d, v0)
    with np.errstate(all="ignore"):
        c = d[:, :2] + t[..., :2] * v0 * d[:, 2:]
        wh = d[:, 2:] * np.exp(t[..., 2:] * v1)
        out = np.concatenate([c - 0.5 * wh, c + 0.5 * wh], axis=-1)
    _finite_rows(out, "loc gives boxes beyond float64 range")
    return out


def _prior_scale(d: np.ndarray, v0: float) -> np.ndarray:
    """The scale ``d_wh * v0`` of the offsets of every prior; a ValueError naming the first prior
    row where it is not a finite positive float64."""
    with np.errstate(all="ignore"):
        scale = d[:, 2:] * v0
    bad = ~(np.isfinite(scale) & (scale > 0)).all(1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"priors row {row} has (w, h) = {d[row, 2:].tolist()} which times variances[0] = {v0!r} "
            f"is {scale[row].tolist()}: it must be finite and positive in float64"
        )
    return scale


def _finite_rows(out: np.ndarray, what: str) -> None:
    """A ValueError naming the first row of ``out`` (rows of 4, flattened over a batch) that is not finite."""
    rows = out.reshape(-1, 4)
    ok = np.isfinite(rows).all(1)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        first = int(bad[0])
        where = f"row {first}" if out.ndim == 2 else f"image {first // out.shape[1]}, row {first % out.shape[1]}"
        raise ValueError(
            f"{what}: {bad.size} row{'s' if bad.size > 1 else ''} would be inf or NaN; "
            f"the first is {where}: {rows[first].tolist()}"
        )
