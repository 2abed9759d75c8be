"""Box sizes as the network sees them under random rescaling (scale augmentation).

Training rescales images at random: YOLOv5 draws a factor ``s`` uniformly in ``[1 - scale,
1 + scale]`` (``hyp.scale``, 0.5 by default), multi-scale pipelines resize to a random size in a
range. Anchors fitted to the unaugmented boxes fit a distribution the network never trains on.
Every objective here is a weighted mean over boxes, so its expectation over a uniform scale is
the objective of the boxes replicated at a grid of scales, each copy weighted by its share: the
midpoint rule, exact for that discrete distribution and within a stated error of the continuous
one.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

from ._validation import MAX_SIDE, MIN_SIDE, as_float, as_int, as_weights, as_wh

__all__ = ["DEFAULT_SCALE_STEPS", "as_scale_range", "scale_augment", "scale_grid"]

#: Scales of the midpoint rule by default. On the real datasets the objectives at 16 scales are
#: within 1.6e-3 (recall) and 1e-4 (fitness, average IoU) of their value at 1024
#: (benchmarks/RESULTS.md, "Under scale augmentation").
DEFAULT_SCALE_STEPS = 16
#: The most scales a grid may have.
MAX_SCALE_STEPS = 4096


def as_scale_range(scale: Any, name: str = "scale") -> Tuple[float, float]:
    """``scale`` as ``(lo, hi)`` with ``0 < lo <= hi``; a single number ``g`` means ``(1 - g, 1 + g)``
    (YOLOv5's ``hyp.scale``, which must then be in [0, 1))."""
    if isinstance(scale, (str, bytes)):
        raise TypeError(f"{name} must be a number or a pair (lo, hi), got {scale!r}")
    if np.ndim(scale) == 0:
        g = as_float(scale, name)
        if not 0.0 <= g < 1.0:
            raise ValueError(f"{name} as one number is YOLOv5's hyp.scale, in [0, 1): got {g}")
        return 1.0 - g, 1.0 + g
    pair: Sequence[Any] = list(scale) if np.ndim(scale) == 1 else []
    if len(pair) != 2:
        raise ValueError(f"{name} must be a number or a pair (lo, hi), got shape {np.shape(scale)}")
    lo, hi = as_float(pair[0], f"{name}[0]"), as_float(pair[1], f"{name}[1]")
    if not 0.0 < lo <= hi or not np.isfinite(hi):
        raise ValueError(f"{name} must be a range (lo, hi) with 0 < lo <= hi, got ({lo}, {hi})")
    return lo, hi


def scale_grid(scale: Any, steps: int = DEFAULT_SCALE_STEPS) -> npt.NDArray[np.float64]:
    """The midpoints of ``steps`` equal parts of the scale range (each drawn with probability 1/steps).

    Examples
    --------
    >>> from fastanchor import scale_grid
    >>> scale_grid(0.5, 4)
    array([0.625, 0.875, 1.125, 1.375])
    """
    lo, hi = as_scale_range(scale)
    n = as_int(steps, "scale_steps", minimum=1, maximum=MAX_SCALE_STEPS)
    return lo + (hi - lo) * (np.arange(n, dtype=np.float64) + 0.5) / n


def scale_augment(
    wh: npt.ArrayLike,
    scale: Any = 0.5,
    *,
    steps: int = DEFAULT_SCALE_STEPS,
    sample_weight: Optional[npt.ArrayLike] = None,
) -> Tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Boxes replicated at a grid of scales, with weights: the box sizes a network sees under scale augmentation.

    The scale ``s`` is uniform on ``[lo, hi]``. Each box appears once per midpoint ``s_q`` of
    ``steps`` equal parts of the range, as ``s_q * (w, h)`` with weight ``w_i / steps``. Since
    every objective of this library (fitness, BPR, average IoU, recall) is a weighted mean over
    boxes, its value on the result is the mean of its values at the ``steps`` scales: pass both
    arrays to :func:`kmeans_iou`, :func:`anchor_objective`, :func:`anchor_fitness`,
    :func:`evolve_anchors` or :func:`autoanchor` (``sample_weight=``), or use their ``scale=``
    argument, which does this.

    Parameters
    ----------
    wh : array_like, shape (N, 2)
        Box widths and heights at the training size.
    scale : float or (float, float)
        The scale range ``(lo, hi)``, ``0 < lo <= hi``; one number ``g`` means ``(1 - g, 1 + g)``,
        YOLOv5's ``hyp.scale`` (0.5 in its default hyperparameters).
    steps : int
        Scales of the midpoint rule (1 to 4096). The result is exact for the uniform distribution
        over those scales; against the continuous one, the error of a smooth objective falls as
        ``1 / steps**2`` and that of a count (BPR, recall) is at most the share of boxes that
        cross the threshold within one step, which falls as ``1 / steps``.
    sample_weight : array_like, shape (N,), optional
        The boxes' weights (default: all ones).

    Returns
    -------
    wh_aug : ndarray, shape (steps * N, 2), float64
        The scaled boxes, scale by scale (the first N rows are the smallest scale).
    weights : ndarray, shape (steps * N,), float64
        Their weights, summing to the weights' sum.

    Examples
    --------
    >>> import fastanchor
    >>> wh_aug, w = fastanchor.scale_augment([[10.0, 20.0]], (0.5, 1.5), steps=2)
    >>> wh_aug
    array([[ 7.5, 15. ],
           [12.5, 25. ]])
    >>> w
    array([0.5, 0.5])
    """
    boxes = as_wh(wh)
    n = boxes.shape[0]
    weights = as_weights(sample_weight, n)
    scales = scale_grid(scale, steps)
    out = (scales[:, None, None] * boxes[None, :, :]).reshape(-1, 2)
    if n and (out.min() < MIN_SIDE or out.max() > MAX_SIDE):
        raise ValueError(f"scaled boxes leave the accepted sides [{MIN_SIDE:g}, {MAX_SIDE:g}]: scale {scale!r}")
    base = np.ones(n) if weights is None else weights
    w = np.tile(base / scales.size, scales.size)
    return out, w
