"""The recall of anchors placed on a detector's grids (a YOLO metric): every anchor at every cell
centre of every level, compared with the boxes by their IoU."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from . import _core
from ._box_iou import as_boxes
from ._fitness import _as_strides, as_anchors, sort_by_area
from ._validation import as_float, as_real_array, as_wh, resolve_threads

__all__ = ["DetectorGrid", "grid_best_iou", "grid_recall"]


def _grid_levels(anchors: Any, strides: Any) -> List[Tuple[float, np.ndarray]]:
    levels = _as_strides(strides)
    if isinstance(anchors, (list, tuple)) and anchors and all(np.ndim(a) == 2 for a in anchors):
        if len(anchors) != len(levels):
            raise ValueError(f"anchors has {len(anchors)} levels but there are {len(levels)} strides")
        groups = [as_wh(a, f"anchors[{i}]") for i, a in enumerate(anchors)]
    else:
        a = sort_by_area(as_anchors(anchors))
        k, n = a.shape[0], len(levels)
        if k % n:
            raise ValueError(
                f"{k} anchors cannot be split evenly over {n} levels (strides {tuple(levels)}); "
                "give a list of per-level arrays instead"
            )
        groups = [a[i * (k // n) : (i + 1) * (k // n)] for i in range(n)]
    return [(s, np.ascontiguousarray(g)) for s, g in zip(levels, groups)]


def _grid_inputs(boxes_xyxy: Any, image_wh: Any) -> Tuple[np.ndarray, np.ndarray]:
    b = as_boxes(boxes_xyxy, "boxes_xyxy")
    img = as_real_array(image_wh, "image_wh").astype(np.float64)
    if img.shape == (2,):
        img = np.broadcast_to(img, b.shape[:1] + (2,))
    if img.shape != (b.shape[0], 2):
        raise ValueError(f"image_wh must have shape (2,) or ({b.shape[0]}, 2), got {img.shape}")
    with np.errstate(all="ignore"):
        ok = (np.isfinite(img) & (img > 0) & (img <= 1e30)).all(1)
    if not ok.all():
        first = int(np.flatnonzero(~ok)[0])
        raise ValueError(f"image_wh must be finite and positive; row {first} is {img[first].tolist()}")
    return b, np.ascontiguousarray(img)


def _check_cell_counts(levels: List[Tuple[float, np.ndarray]], b: np.ndarray, img: np.ndarray) -> None:
    # The core counts cells and finds the nearest ones in float64 (no integer conversion, so any
    # number of cells is fine) but needs every size and coordinate divided by a stride to be finite.
    reach = max(float(np.abs(b).max()), float(img.max()))
    for i, (s, _) in enumerate(levels):
        if not math.isfinite(reach / s):
            raise ValueError(
                f"strides[{i}] = {s!r} is too small for these boxes: a coordinate or image size "
                f"({reach:g}) divided by it overflows float64"
            )


@dataclass(frozen=True, eq=False)
class DetectorGrid:
    """Where a detector places its anchors: the grids of its levels, for the IoU objectives.

    Pass it as ``grid=`` to :func:`anchor_objective`, :func:`evolve_anchors` or
    :func:`autoanchor`: the objectives "avg_iou" and "recall" then score each box against the
    anchors placed at the cell centres of its image's grids (:func:`grid_best_iou`: the anchors
    sorted by area and split evenly over the levels, finest first), instead of corner-aligned
    with the box. The boxes are the same boxes, row for row, as the ``wh`` given with it.

    Parameters
    ----------
    boxes_xyxy : array_like, shape (N, 4)
        The boxes in pixels at the training size, corner form.
    image_wh : array_like, shape (2,) or (N, 2)
        The size of each box's image (the network input).
    strides : sequence of float
        The levels' strides in pixels, finest first.

    Examples
    --------
    >>> import fastanchor
    >>> grid = fastanchor.DetectorGrid([[0, 0, 16, 16], [100, 40, 140, 60]], (640, 640), strides=(8, 16))
    >>> round(fastanchor.anchor_objective([[16, 16], [40, 20]], [[16, 16], [40, 20]], "avg_iou", grid=grid), 4)
    1.0
    """

    boxes_xyxy: np.ndarray
    image_wh: np.ndarray
    strides: Tuple[float, ...] = (8, 16, 32)

    def __post_init__(self) -> None:
        b, img = _grid_inputs(self.boxes_xyxy, self.image_wh)  # finite corners, x1 < x2 and y1 < y2
        strides = tuple(_as_strides(self.strides))
        _check_cell_counts([(s, np.empty((0, 2))) for s in strides], b, img)
        for name, value in (("boxes_xyxy", b), ("image_wh", np.ascontiguousarray(img)), ("strides", strides)):
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.boxes_xyxy.shape[0])

    def scaled(self, scales: np.ndarray) -> DetectorGrid:
        """The grid of the images resized by each factor of ``scales`` in turn (boxes and image
        sizes scaled about the origin, the strides kept): the grid that goes with
        :func:`scale_augment`'s boxes, scale by scale."""
        s = np.asarray(scales, dtype=np.float64)
        return DetectorGrid(
            (s[:, None, None] * self.boxes_xyxy[None]).reshape(-1, 4),
            (s[:, None, None] * self.image_wh[None]).reshape(-1, 2),
            self.strides,
        )

    def subset(self, keep: np.ndarray) -> DetectorGrid:
        """The grid of the boxes selected by ``keep``: a boolean mask or row indices."""
        return DetectorGrid(self.boxes_xyxy[keep], self.image_wh[keep], self.strides)

    def core_args(self, n: int, k: int) -> Dict[str, Any]:
        """The core's keyword arguments, for ``n`` boxes and ``k`` anchors."""
        if len(self) != n:
            raise ValueError(f"grid has {len(self)} boxes but wh has {n}: give the grid of the same boxes")
        if k % len(self.strides):
            raise ValueError(
                f"{k} anchors cannot be split evenly over the grid's {len(self.strides)} levels (strides {self.strides})"
            )
        return {
            "grid_boxes": self.boxes_xyxy,
            "grid_image_wh": self.image_wh,
            "grid_strides": np.asarray(self.strides, dtype=np.float64),
        }


def as_grid(grid: Any) -> Optional[DetectorGrid]:
    """``grid`` checked: None or a :class:`DetectorGrid`."""
    if grid is None or isinstance(grid, DetectorGrid):
        return grid
    raise TypeError(f"grid must be a fastanchor.DetectorGrid or None, got {type(grid).__name__}")


def grid_best_iou(
    anchors: Union[npt.ArrayLike, Sequence[npt.ArrayLike]],
    boxes_xyxy: npt.ArrayLike,
    image_wh: npt.ArrayLike,
    *,
    strides: Sequence[float] = (8, 16, 32),
    n_threads: Optional[int] = None,
) -> npt.NDArray[np.float64]:
    """Best IoU of every box with any anchor placed on the detector's grids.

    Every anchor of a level is placed at every cell centre of that level, as described in
    :func:`grid_recall`, and compared with the boxes by :func:`box_iou`.

    Parameters
    ----------
    anchors, boxes_xyxy, image_wh, strides, n_threads
        As in :func:`grid_recall`.

    Returns
    -------
    ndarray, shape (N,), float64
        For every box, the largest IoU with an anchor at any cell of any level. Cells are counted
        in float64, so any image size and stride work (an image of more than 2^63 cells too).

    Raises
    ------
    ValueError
        When a stride is so small that a coordinate or image size divided by it overflows float64
        (the message names the stride).
    """
    levels = _grid_levels(anchors, strides)
    b, img = _grid_inputs(boxes_xyxy, image_wh)
    _check_cell_counts(levels, b, img)
    return _core.grid_best_iou(boxes=b, image_wh=img, levels=levels, n_threads=resolve_threads(n_threads))


def grid_recall(
    anchors: Union[npt.ArrayLike, Sequence[npt.ArrayLike]],
    boxes_xyxy: npt.ArrayLike,
    image_wh: npt.ArrayLike,
    *,
    strides: Sequence[float] = (8, 16, 32),
    iou: float = 0.5,
    n_threads: Optional[int] = None,
) -> float:
    """Fraction of boxes that some anchor, placed on the detector's grids, overlaps with IoU >= ``iou``.

    Level ``l`` (stride ``s``) covers a ``W x H`` image with ``ceil(W / s) x ceil(H / s)`` cells;
    each of its anchors is placed at every cell centre ``((i + 0.5) * s, (j + 0.5) * s)`` and
    compared with the boxes by :func:`box_iou`. Unlike :func:`wh_iou`, which assumes the centres
    coincide, this counts the offset between a box and the nearest cell centres.

    Parameters
    ----------
    anchors : array_like (k, 2), or a list of per-level (k_l, 2) arrays
        Anchor widths and heights in pixels; a single array is split evenly over the levels in
        area order (as :func:`split_levels`).
    boxes_xyxy : array_like, shape (N, 4)
        Boxes in pixels, corner form, in the same scale as ``anchors`` and ``image_wh``.
    image_wh : array_like, shape (2,) or (N, 2)
        The size of each box's image (the network input).
    strides : sequence of float
        The levels' strides in pixels.
    iou : float
        The IoU a box needs with some anchor to count as recalled.
    n_threads : int, optional
        As in :func:`box_iou`.

    Returns
    -------
    float
        The share of boxes whose :func:`grid_best_iou` is at least ``iou``.
    """
    thr = as_float(iou, "iou")
    return float(np.mean(grid_best_iou(anchors, boxes_xyxy, image_wh, strides=strides, n_threads=n_threads) >= thr))
