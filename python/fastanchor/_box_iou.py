"""Corner boxes ``(x1, y1, x2, y2)``: validation, IoU matrix, and center/corner conversion."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import numpy as np
import numpy.typing as npt

from . import _core
from ._validation import MAX_SIDE, as_real_array, float32_output, resolve_threads

__all__ = ["as_boxes", "box_iou", "to_center", "to_corners"]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def as_boxes(x: Any, name: str = "boxes", *, allow_empty: bool = False) -> np.ndarray:
    """Validated (N, 4) float64 C-contiguous corner boxes ``(x1, y1, x2, y2)``.

    Every coordinate must be finite and within ``[-MAX_SIDE, MAX_SIDE]``, with ``x1 < x2`` and
    ``y1 < y2`` (and a positive area in float64); the message counts the bad rows and shows the first.
    """
    arr = as_real_array(x, name)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) of (x1, y1, x2, y2), got shape {arr.shape}")
    if arr.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty: at least one box is needed")
    # A private copy, as in as_wh: the core reads it with the GIL released, so another thread
    # changing the caller's array meanwhile can neither race with the kernel nor slip values past
    # this check.
    out = np.array(arr, dtype=np.float64, order="C", copy=True)
    with np.errstate(all="ignore"):
        # |c| <= MAX_SIDE is false for NaN and infinities; w > 0 and w * h > 0 hold exactly when
        # x1 < x2, y1 < y2 and the area w * h is positive. Whole-array tests first: the row-wise
        # reductions of an (N, 4) array cost 4x more, and only the error message needs them.
        inside = np.abs(out) <= MAX_SIDE
        w = out[:, 2] - out[:, 0]
        h = out[:, 3] - out[:, 1]
        if inside.all() and ((w > 0) & (w * h > 0)).all():
            return out
        bad = np.flatnonzero(~(inside.all(axis=1) & (w > 0) & (w * h > 0)))
    first = int(bad[0])
    raise ValueError(
        f"{name} has {_plural(bad.size, 'bad row')}: every box needs finite corners (within "
        f"[{-MAX_SIDE:g}, {MAX_SIDE:g}]) with x1 < x2 and y1 < y2; the first is row {first}: {arr[first].tolist()}"
    )


def box_iou(
    boxes1: npt.ArrayLike, boxes2: npt.ArrayLike, *, n_threads: Optional[int] = None
) -> npt.NDArray[Union[np.float32, np.float64]]:
    """IoU of every box of ``boxes1`` with every box of ``boxes2``, corner form ``(x1, y1, x2, y2)``.

    ``iw = max(min(x2a, x2b) - max(x1a, x1b), 0)`` (``ih`` likewise), ``inter = iw * ih`` and
    ``iou = inter / ((area_a + area_b) - inter)`` with ``area = (x2 - x1) * (y2 - y1)``.

    Parameters
    ----------
    boxes1, boxes2 : array_like, shapes (N, 4) and (M, 4)
        Corner boxes; any real dtype, any strides, or nested lists. Every coordinate finite,
        ``x1 < x2`` and ``y1 < y2``; otherwise a ValueError names the first bad row.
    n_threads : int, optional
        Threads to use: None for all (honours ``OMP_NUM_THREADS``), a positive count, or a
        negative one counting back from the maximum (-1 = all).

    Returns
    -------
    ndarray, shape (N, M)
        float32 when both inputs are float32 arrays, else float64. Values are computed in
        double precision with the operations numpy performs in float64 (bit-identical), and
        rounded once to float32 when that is the output type. Symmetric, in [0, 1], exactly 1
        for identical boxes.
    """
    out32 = float32_output(boxes1, boxes2, ("boxes1", "boxes2"))
    a = as_boxes(boxes1, "boxes1")
    b = as_boxes(boxes2, "boxes2")
    return _core.box_iou(a, b, out32, resolve_threads(n_threads))


def _as_four(x: Any, name: str) -> np.ndarray:
    arr = as_real_array(x, name)
    if arr.ndim < 1 or arr.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4), got shape {arr.shape}")
    return arr.astype(np.float64, copy=False) if arr.dtype.kind != "f" else arr


def _convert(boxes: Any, formula: Callable[[np.ndarray], np.ndarray], what: str) -> np.ndarray:
    """``formula`` applied to validated ``(..., 4)`` boxes; a ValueError naming the first bad row
    when an input value is not finite or the result overflows the dtype (never inf or NaN out)."""
    b = _as_four(boxes, "boxes")
    with np.errstate(all="ignore"):
        out = formula(b)
        ok = (np.isfinite(b) & np.isfinite(out)).reshape(-1, 4).all(axis=1)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        first = int(bad[0])
        row = b.reshape(-1, 4)[first]
        cause = "is not finite" if not np.isfinite(row).all() else f"overflows {out.dtype} in {what}"
        raise ValueError(
            f"boxes has {_plural(bad.size, 'bad row')}: every value must be finite and so must the converted "
            f"box; the first is row {first} (of the boxes flattened to (-1, 4)), which {cause}: "
            f"{[float(v) for v in row]}"
        )
    return out


def to_corners(boxes: npt.ArrayLike) -> npt.NDArray[np.floating[Any]]:
    """Center form ``(cx, cy, w, h)`` to corner form ``(x1, y1, x2, y2)``: ``c -/+ 0.5 * size``.

    Any shape ``(..., 4)``; float arrays keep their dtype, integers become float64. Non-finite
    values, and corners that overflow the dtype, are a ValueError naming the first bad row.
    """

    def formula(b: np.ndarray) -> np.ndarray:
        c, half = b[..., :2], 0.5 * b[..., 2:]
        return np.concatenate([c - half, c + half], axis=-1)

    return _convert(boxes, formula, "to_corners")


def to_center(boxes: npt.ArrayLike) -> npt.NDArray[np.floating[Any]]:
    """Corner form ``(x1, y1, x2, y2)`` to center form ``(cx, cy, w, h)``: ``c = 0.5 * (p1 + p2)``,
    ``size = p2 - p1``. Any shape ``(..., 4)``; dtypes and errors as :func:`to_corners`."""

    def formula(b: np.ndarray) -> np.ndarray:
        p1, p2 = b[..., :2], b[..., 2:]
        return np.concatenate([0.5 * (p1 + p2), p2 - p1], axis=-1)

    return _convert(boxes, formula, "to_center")
