"""IoU of corner-aligned boxes and the average best IoU of a set of anchors."""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import numpy.typing as npt

from . import _core
from ._validation import as_weights, as_wh, float32_output, resolve_threads


def wh_iou(
    wh1: npt.ArrayLike, wh2: npt.ArrayLike, *, n_threads: Optional[int] = None
) -> npt.NDArray[Union[np.float32, np.float64]]:
    """IoU of every box of ``wh1`` with every box of ``wh2``, the boxes aligned at a common corner.

    ``inter = min(w1, w2) * min(h1, h2)`` and ``iou = inter / (w1*h1 + w2*h2 - inter)``: the
    overlap of two shapes when their centres coincide, as YOLO anchor matching assumes.

    Parameters
    ----------
    wh1, wh2 : array_like, shapes (N, 2) and (M, 2)
        Widths and heights; any real dtype, any strides, or nested lists. Every value must be
        finite and strictly positive.
    n_threads : int, optional
        Threads to use: None for all (honours ``OMP_NUM_THREADS``), a positive count, or a
        negative one counting back from the maximum (-1 = all).

    Returns
    -------
    ndarray, shape (N, M)
        float32 when both inputs are float32 arrays, else float64. Values are computed in
        double precision, the same operations numpy performs in float64 (bit-identical), and
        rounded once to float32 when that is the output type.
    """
    out32 = float32_output(wh1, wh2, ("wh1", "wh2"))
    a = as_wh(wh1, "wh1")
    b = as_wh(wh2, "wh2")
    return _core.wh_iou(a, b, out32, resolve_threads(n_threads))


def avg_iou(
    anchors: npt.ArrayLike,
    wh: npt.ArrayLike,
    *,
    sample_weight: Optional[npt.ArrayLike] = None,
    n_threads: Optional[int] = None,
) -> float:
    """Average over boxes of the best IoU with any anchor: ``sum(w_i * max_j iou_ij) / sum(w_i)``.

    Parameters
    ----------
    anchors : array_like, shape (k, 2)
        Anchor widths and heights.
    wh : array_like, shape (N, 2)
        Box widths and heights.
    sample_weight : array_like, shape (N,), optional
        Finite, non-negative weights with a positive sum (default: all ones).
    n_threads : int, optional
        As in :func:`wh_iou`.

    Returns
    -------
    float
        The weighted average, in (0, 1].
    """
    a = as_wh(anchors, "anchors")
    boxes = as_wh(wh)
    weights = as_weights(sample_weight, boxes.shape[0])
    return float(_core.avg_iou(a, boxes, weights, resolve_threads(n_threads)))
