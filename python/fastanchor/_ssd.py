"""SSD-style anchors: aspect ratios by clustering, default boxes on grids, prior matching and the
SSD box encoding, and the recall of anchors placed on a detector's grids."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from ._box_iou import as_boxes, to_center, to_corners
from ._fitness import _as_strides, as_anchors, sort_by_area
from ._iou import avg_iou
from ._kmeans import kmeans_iou
from ._validation import (
    INT_MAX,
    MAX_SIDE,
    MIN_SIDE,
    SeedLike,
    as_float,
    as_int,
    as_real_array,
    as_weights,
    as_wh,
    distinct_rows_at_least,
    resolve_seed,
    resolve_threads,
)

__all__ = [
    "AspectRatioResult",
    "decode",
    "encode",
    "grid_recall",
    "match_priors",
    "ssd_aspect_ratios",
    "ssd_default_boxes",
    "grid_best_iou",
    "unit_area",
]

#: The most priors :func:`ssd_default_boxes` makes: 2**29 rows, 16 GiB of float64 output (the
#: construction needs a few times that at its peak). More is a ValueError, decided from the feature
#: map sizes before anything is allocated (``ssd_default_boxes([10**6])`` would need 10**12 rows).
MAX_PRIORS = 2**29


# --- aspect ratios ---------------------------------------------------------------------------------


def unit_area(wh: Any) -> np.ndarray:
    """Every box scaled to unit area, its aspect ratio kept: ``(w / sqrt(w*h), h / sqrt(w*h))``.

    The sides are kept within ``[MIN_SIDE, MAX_SIDE]`` (1e-30, 1e30), the range every function
    accepts: a box of ratio 1e60 (the most that range allows) can round one ulp beyond it."""
    a = as_wh(wh)
    s = np.sqrt(a[:, 0] * a[:, 1])
    return np.clip(a / s[:, None], MIN_SIDE, MAX_SIDE)


def _ratio_boxes(ratios: np.ndarray) -> np.ndarray:
    """The unit-area anchors ``(sqrt(a), 1 / sqrt(a))`` of the ratios, kept within
    ``[MIN_SIDE, MAX_SIDE]`` as :func:`unit_area` (ratios near 1e60 round one ulp beyond it)."""
    r = np.sqrt(ratios)
    return np.clip(np.stack([r, 1.0 / r], axis=1), MIN_SIDE, MAX_SIDE)


@dataclass(frozen=True)
class AspectRatioResult:
    """The result of :func:`ssd_aspect_ratios`.

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

    aspect_ratios: np.ndarray
    anchors: np.ndarray
    avg_iou: float
    method: str
    labels: np.ndarray = field(repr=False)


def _weighted_mean(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The weighted mean of the rows of ``x`` (at least one weight positive). The weights are
    divided by their largest first, so that a group of tiny (even subnormal) weights neither
    underflows (a centre of 0) nor loses precision: only their ratios matter."""
    with np.errstate(under="ignore"):
        w = w / w.max()
    return (w[:, None] * x).sum(0) / w.sum()


def _kmeans_euclidean(x: np.ndarray, k: int, weights: Optional[np.ndarray], seed: int, n_init: int,
                      max_iter: int) -> np.ndarray:
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
    wh: Any,
    n: int,
    *,
    method: str = "iou",
    seed: SeedLike = None,
    n_init: Optional[int] = None,
    max_iter: int = 300,
    sample_weight: Any = None,
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
    labels = _core.assign(anchors, u, threads)
    score = avg_iou(anchors, u, sample_weight=weights, n_threads=threads)
    return AspectRatioResult(aspect_ratios=ratios, anchors=anchors, avg_iou=score, method=method, labels=labels)


# --- default boxes -----------------------------------------------------------------------------------


def _positive(x: Any, name: str) -> float:
    v = as_float(x, name)
    if v <= 0:
        raise ValueError(f"{name} must be positive, got {x!r}")
    return v


def _as_bool(x: Any, name: str) -> bool:
    """A bool option: ``bool`` or ``numpy.bool_`` only (``"no"`` or ``None`` are not read by truthiness)."""
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(x).__name__} {x!r}")
    return bool(x)


def _is_sequence(x: Any) -> bool:
    """A list-like argument: a sequence that is not a string, or an array of at least one dimension."""
    if isinstance(x, np.ndarray):
        return x.ndim > 0
    return isinstance(x, Sequence) and not isinstance(x, (str, bytes))


def _feature_maps(sizes: Any) -> List[Tuple[int, int]]:
    if not _is_sequence(sizes) or len(sizes) == 0:
        raise TypeError("feature_map_sizes must be a non-empty sequence of ints or (height, width) pairs")
    out = []
    for i, s in enumerate(sizes):
        if isinstance(s, (numbers.Integral,)) and not isinstance(s, (bool, np.bool_)):
            h = w = as_int(s, f"feature_map_sizes[{i}]", minimum=1)
        else:
            try:
                fh, fw = s
            except (TypeError, ValueError):
                raise TypeError(f"feature_map_sizes[{i}] must be an int or a (height, width) pair, got {s!r}") from None
            h = as_int(fh, f"feature_map_sizes[{i}][0]", minimum=1)
            w = as_int(fw, f"feature_map_sizes[{i}][1]", minimum=1)
        out.append((h, w))
    return out


def _ratio_list(x: Any, name: str) -> List[float]:
    if not _is_sequence(x):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(x).__name__} {x!r}")
    return [_positive(a, f"{name}[{i}]") for i, a in enumerate(x)]


def _image_scale(image_size: Any) -> Tuple[float, float]:
    """Width and height factors that make a ratio-1 box square in pixels (TensorFlow's rule)."""
    if image_size is None:
        return 1.0, 1.0
    if isinstance(image_size, numbers.Real) and not isinstance(image_size, (bool, np.bool_)):
        _positive(image_size, "image_size")
        return 1.0, 1.0
    try:
        w, h = image_size
    except (TypeError, ValueError):
        raise TypeError(f"image_size must be a number or a (width, height) pair, got {image_size!r}") from None
    w, h = _positive(w, "image_size width"), _positive(h, "image_size height")
    m = min(w, h)
    return m / w, m / h


def _image_wh(image_size: Any) -> Tuple[float, float]:
    """The image's (width, height) in pixels; (1, 1) without an image size (normalized units)."""
    if image_size is None:
        return 1.0, 1.0
    if isinstance(image_size, numbers.Real) and not isinstance(image_size, (bool, np.bool_)):
        v = _positive(image_size, "image_size")
        return v, v
    w, h = image_size  # already checked by _image_scale
    return float(w), float(h)


def _per_layer(x: Any, name: str, m: int, *, positive: bool) -> Optional[List[float]]:
    """None, or one number per layer from a number (every layer) or a sequence of ``m`` numbers."""
    if x is None:
        return None
    if not (_is_sequence(x) or isinstance(x, numbers.Real)) or isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number or a sequence of {m} numbers (one per layer), got {x!r}")
    values = [x] * m if isinstance(x, numbers.Real) else list(x)
    if len(values) != m:
        raise ValueError(f"{name} has {len(values)} values but there are {m} feature maps")
    out = []
    for i, v in enumerate(values):
        label = f"{name}[{i}]" if not isinstance(x, numbers.Real) else name
        f = _positive(v, label) if positive else as_float(v, label)
        if not math.isfinite(f):
            raise ValueError(f"{label} must be finite, got {v!r}")
        out.append(f)
    return out


def _tf_grid(name_h: str, name_w: str, h: Any, w: Any, m: int, positive: bool) -> Optional[List[Tuple[float, float]]]:
    """Per-layer (y, x) pairs of TensorFlow's anchor_strides or anchor_offsets, in pixels."""
    hs = _per_layer(h, name_h, m, positive=positive)
    ws = _per_layer(w, name_w, m, positive=positive)
    if (hs is None) != (ws is None):
        given, missing = (name_h, name_w) if ws is None else (name_w, name_h)
        raise ValueError(f"{given} needs {missing} as well (TensorFlow pairs them per layer)")
    return None if hs is None or ws is None else list(zip(hs, ws))


def _box_of(scale: float, a: float) -> Tuple[float, float]:
    """(w, h) of the box of scale ``scale`` and aspect ratio ``a``: ``(s * sqrt(a), s / sqrt(a))``."""
    r = math.sqrt(a)
    return scale * r, scale / r


def ssd_default_boxes(
    feature_map_sizes: Sequence[Union[int, Tuple[int, int]]],
    aspect_ratios: Sequence[Any] = (2.0, 3.0),
    *,
    min_scale: float = 0.2,
    max_scale: float = 0.9,
    scales: Optional[Sequence[float]] = None,
    image_size: Any = None,
    clip: bool = True,
    style: str = "ssd",
    reciprocals: bool = True,
    interpolated_scale_aspect_ratio: float = 1.0,
    reduce_boxes_in_lowest_layer: bool = True,
    base_anchor_height: float = 1.0,
    base_anchor_width: float = 1.0,
    height_stride: Any = None,
    width_stride: Any = None,
    height_offset: Any = None,
    width_offset: Any = None,
) -> np.ndarray:
    """SSD default boxes (priors) on a set of feature maps, normalized center form ``(cx, cy, w, h)``.

    Layer ``k`` of ``m`` has scale ``s_k = min_scale + (max_scale - min_scale) * k / (m - 1)``
    (``min_scale`` when ``m == 1``; or the given ``scales``), and ``s_m = 1`` after the last.
    A box of scale ``s`` and aspect ratio ``a`` has ``w = s * sqrt(a)`` and ``h = s / sqrt(a)``.

    Boxes per location, ``style="ssd"`` (the SSD paper):
      ``reciprocals=True`` (default): the square of scale ``s_k``, the extra square of scale
      ``sqrt(s_k * s_{k+1})``, then for each listed ratio ``a != 1`` in order, ``a`` and ``1/a``
      (ratios equal to 1 are skipped: the squares are always there).
      ``reciprocals=False``: each listed ratio in order at scale ``s_k``; a ratio of 1 is
      followed by the extra square.

    ``style="tf"`` (TensorFlow's ``ssd_anchor_generator``): the listed ``aspect_ratios`` at
    scale ``s_k``, then, if ``interpolated_scale_aspect_ratio > 0``, a box of that ratio at
    ``sqrt(s_k * s_{k+1})``; with ``reduce_boxes_in_lowest_layer`` the first layer has only
    ``(0.1, 1.0), (s_0, 2.0), (s_0, 0.5)`` (scale, ratio).

    Order of the output rows: layer by layer (in the order of ``feature_map_sizes``), then the
    locations row by row (y, then x), then the boxes of a location in the order above. The box
    at row ``i``, column ``j`` of an ``H x W`` map is centred at ``((j + 0.5) / W, (i + 0.5) / H)``.

    Parameters
    ----------
    feature_map_sizes : sequence of int or (height, width)
        The grid of each layer (an int for a square grid).
    aspect_ratios : sequence of float, or (``style="ssd"``) a sequence of sequences, one per layer
    min_scale, max_scale : float
        Scales of the first and last layer, as fractions of the image.
    scales : sequence of float, optional
        Explicit per-layer scales instead (``len(feature_map_sizes)`` of them).
    image_size : number or (width, height), optional
        For non-square inputs: widths are multiplied by ``min(W, H) / W`` and heights by
        ``min(W, H) / H`` so that a ratio of 1 is square in pixels (TensorFlow's rule).
    clip : bool
        Clip every box to the image ``[0, 1]`` (in corner form), as TensorFlow and ssd.pytorch do.
    base_anchor_height, base_anchor_width : float
        ``style="tf"`` only: TensorFlow's ``base_anchor_height``/``base_anchor_width`` (default
        1.0): every box height is multiplied by ``base_anchor_height`` and every width by
        ``base_anchor_width`` (before the ``image_size`` correction, which TensorFlow applies to
        the base anchor size).
    height_stride, width_stride : number or sequence of numbers (one per layer), optional
        ``style="tf"`` only: TensorFlow's ``height_stride``/``width_stride`` (the
        ``anchor_strides`` of ``MultipleGridAnchorGenerator``), the distance between box centres
        in pixels of ``image_size`` (in normalized units when ``image_size`` is not given, as
        TensorFlow with an image of 1 x 1). Given together; a single number serves every layer.
        By default the stride is ``1 / feature map size`` (normalized).
    height_offset, width_offset : number or sequence of numbers (one per layer), optional
        ``style="tf"`` only: TensorFlow's ``height_offset``/``width_offset`` (``anchor_offsets``),
        the centre of the first box of the layer, in the units of the strides. By default half
        the stride. With strides or offsets given, the box at row ``i``, column ``j`` is centred
        at ``(j * width_stride + width_offset, i * height_stride + height_offset)``, divided by
        the image width and height; without them the centres are exactly those above.

    Raises
    ------
    ValueError
        When a box side would overflow or vanish in float64 (scales, ratios or image sizes near
        1e308 or 5e-324), naming the layer and the box; when the maps give more than
        ``MAX_PRIORS`` (2**29) priors, decided from the sizes before anything is allocated.
    TypeError
        When ``clip``, ``reciprocals`` or ``reduce_boxes_in_lowest_layer`` is not a bool (or
        ``numpy.bool_``), or a list argument is not a sequence (e.g. a 0-d array).
    """
    if style not in ("ssd", "tf"):
        raise ValueError(f"style must be 'ssd' or 'tf', got {style!r}")
    maps = _feature_maps(feature_map_sizes)
    m = len(maps)
    base_h = _positive(base_anchor_height, "base_anchor_height")
    base_w = _positive(base_anchor_width, "base_anchor_width")
    strides = _tf_grid("height_stride", "width_stride", height_stride, width_stride, m, True)
    offsets = _tf_grid("height_offset", "width_offset", height_offset, width_offset, m, False)
    if style != "tf" and (base_h != 1.0 or base_w != 1.0 or strides is not None or offsets is not None):
        raise ValueError("base_anchor_height/width, height/width_stride and height/width_offset are "
                         "TensorFlow's ssd_anchor_generator fields: use them with style='tf'")
    if scales is None:
        lo, hi = _positive(min_scale, "min_scale"), _positive(max_scale, "max_scale")
        sc = [lo] if m == 1 else [lo + (hi - lo) * k / (m - 1) for k in range(m)]
    else:
        sc = _ratio_list(scales, "scales")
        if len(sc) != m:
            raise ValueError(f"scales has {len(sc)} values but there are {m} feature maps")
    sc.append(1.0)
    # Ratios per layer.
    clip = _as_bool(clip, "clip")
    reciprocals = _as_bool(reciprocals, "reciprocals")
    reduce_boxes_in_lowest_layer = _as_bool(reduce_boxes_in_lowest_layer, "reduce_boxes_in_lowest_layer")
    if _is_sequence(aspect_ratios) and len(aspect_ratios) and all(_is_sequence(r) for r in aspect_ratios):
        if style == "tf":
            raise ValueError("style='tf' takes one list of aspect ratios for all layers")
        if len(aspect_ratios) != m:
            raise ValueError(f"aspect_ratios has {len(aspect_ratios)} lists but there are {m} feature maps")
        per_layer = [_ratio_list(r, f"aspect_ratios[{i}]") for i, r in enumerate(aspect_ratios)]
    else:
        per_layer = [_ratio_list(aspect_ratios, "aspect_ratios")] * m
    interp = as_float(interpolated_scale_aspect_ratio, "interpolated_scale_aspect_ratio")
    fw, fh = _image_scale(image_size)
    im_w, im_h = _image_wh(image_size)

    # First the boxes of a location, layer by layer, and their count: all checked before anything
    # of the size of the grids is allocated.
    layers = []  # (H, W, widths, heights, (scale, ratio) of each box)
    for k, ((H, W), ratios) in enumerate(zip(maps, per_layer)):
        s, s_next = sc[k], sc[k + 1]
        extra = math.sqrt(s * s_next)
        # (scale, ratio, turned): the box (s * sqrt(a), s / sqrt(a)), or (turned) its height and width
        specs: List[Tuple[float, float, bool]] = []
        if style == "tf":
            if k == 0 and reduce_boxes_in_lowest_layer:
                specs = [(0.1, 1.0, False), (s, 2.0, False), (s, 0.5, False)]
            else:
                specs = [(s, a, False) for a in ratios]
                if interp > 0:
                    specs.append((extra, interp, False))
        elif reciprocals:
            specs = [(s, 1.0, False), (extra, 1.0, False)]
            for a in ratios:
                if a != 1.0:
                    specs += [(s, a, False), (s, a, True)]  # a and 1/a, as ssd.pytorch: (s/sqrt(a), s*sqrt(a))
        else:
            for a in ratios:
                specs.append((s, a, False))
                if a == 1.0:
                    specs.append((extra, 1.0, False))
        if not specs:
            raise ValueError(f"layer {k} has no boxes: give at least one aspect ratio")
        sides = []
        for scale, a, turned in specs:
            w, h = _box_of(scale, a)
            sides.append((h, w) if turned else (w, h))
        spec = np.array(sides)
        with np.errstate(all="ignore"):
            bw = spec[:, 0] * base_w * fw
            bh = spec[:, 1] * base_h * fh
        ok = np.isfinite(bw) & np.isfinite(bh) & (bw > 0) & (bh > 0)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            scale, a, turned = specs[i]
            raise ValueError(
                f"layer {k}: box {i} (scale {scale!r}, aspect ratio {1 / a if turned else a!r}) would "
                f"have width {float(bw[i])!r} and height {float(bh[i])!r}: box sides must be finite and "
                "positive in float64; "
                "scales (or min_scale/max_scale), aspect_ratios, image_size and base_anchor_height/width "
                "give them")
        layers.append((H, W, bw, bh))
    total = sum(H * W * bw.size for H, W, bw, _ in layers)  # Python ints: exact
    if total > MAX_PRIORS:
        raise ValueError(f"feature_map_sizes and aspect_ratios give {total} priors: at most {MAX_PRIORS} "
                         f"(MAX_PRIORS: {MAX_PRIORS * 32 / 2**30:g} GiB of output) are supported")

    out = []
    for k, (H, W, bw, bh) in enumerate(layers):
        if strides is None and offsets is None:
            cy, cx = np.meshgrid((np.arange(H) + 0.5) / H, (np.arange(W) + 0.5) / W, indexing="ij")
        else:
            # TensorFlow: strides and offsets in pixels over the image size; a stride not given is
            # 1 / grid size, an offset not given half the stride.
            sy, sx = (1.0 / H, 1.0 / W) if strides is None else (strides[k][0] / im_h, strides[k][1] / im_w)
            oy, ox = (0.5 * sy, 0.5 * sx) if offsets is None else (offsets[k][0] / im_h, offsets[k][1] / im_w)
            last = ((H - 1) * sy + oy, (W - 1) * sx + ox)  # Python floats: inf on overflow, no warning
            if not all(math.isfinite(v) and abs(v) <= MAX_SIDE for v in (sy, sx, oy, ox) + last):
                raise ValueError(f"layer {k}: height/width_stride and height/width_offset over image_size put "
                                 f"box centres at {last} (normalized): beyond {MAX_SIDE:g}")
            cy, cx = np.meshgrid(np.arange(H) * sy + oy, np.arange(W) * sx + ox, indexing="ij")
        nb = bw.size
        layer = np.empty((H, W, nb, 4))
        layer[..., 0] = cx[..., None]
        layer[..., 1] = cy[..., None]
        layer[..., 2] = bw
        layer[..., 3] = bh
        out.append(layer.reshape(-1, 4))
    boxes = np.concatenate(out, axis=0)
    if clip:
        boxes = to_center(np.clip(to_corners(boxes), 0.0, 1.0))
    return boxes


# --- matching and encoding -------------------------------------------------------------------------


def _checked_images(parts: Sequence[Any]) -> Tuple[np.ndarray, np.ndarray]:
    """The images' boxes validated and concatenated, and the number of boxes of each image.

    Arrays of a real dtype are concatenated and checked in one call (per image, the checks cost
    more than the matching of a small image); when that finds a bad row, or for other inputs,
    every image is checked on its own, so that an error names the image.
    """
    if all(isinstance(g, np.ndarray) and g.ndim == 2 and g.shape[1] == 4 and g.dtype.kind in "fiu" for g in parts):
        n = np.array([g.shape[0] for g in parts], dtype=np.int64)
        try:
            return as_boxes(np.concatenate(parts) if len(parts) else np.zeros((0, 4)), "gt_boxes",
                            allow_empty=True), n
        except ValueError:
            pass  # checked again image by image below, for a message that names the image
    images = [as_boxes(g, f"gt_boxes[{b}]", allow_empty=True) for b, g in enumerate(parts)]
    n = np.array([g.shape[0] for g in images], dtype=np.int64)
    return (np.concatenate(images) if images else np.zeros((0, 4))), n


def _gt_list(gt_boxes: Any, counts: Any) -> Tuple[np.ndarray, np.ndarray, bool]:
    """The ground truth of all images, validated and concatenated; the number of boxes of each
    image; and whether a single image was given."""
    if isinstance(gt_boxes, (list, tuple)) and (len(gt_boxes) == 0 or not np.isscalar(gt_boxes[0]) and
                                                np.ndim(gt_boxes[0]) == 2):
        if counts is not None:
            raise ValueError("counts is for a padded (B, G, 4) array of gt_boxes, not a list")
        return (*_checked_images(gt_boxes), False)
    arr = as_real_array(gt_boxes, "gt_boxes")
    if arr.ndim == 2:
        if counts is not None:
            raise ValueError("counts is for a padded (B, G, 4) array of gt_boxes")
        return as_boxes(arr, "gt_boxes", allow_empty=True), np.array([arr.shape[0]], dtype=np.int64), True
    if arr.ndim != 3 or arr.shape[2] != 4:
        raise ValueError(f"gt_boxes must be (G, 4), a list of (G_i, 4) arrays or a padded (B, G, 4) array, got shape {arr.shape}")
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
    priors: Any,
    gt_boxes: Any,
    *,
    threshold: float = 0.5,
    counts: Any = None,
    n_threads: Optional[int] = None,
) -> np.ndarray:
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
    out = _core.match_priors(p, gt, offsets, thr, resolve_threads(n_threads))
    return out[0] if single else out


def _variances(v: Any) -> Tuple[float, float]:
    try:
        v0, v1 = v
    except (TypeError, ValueError):
        raise TypeError(f"variances must be a pair of numbers, got {v!r}") from None
    return _positive(v0, "variances[0]"), _positive(v1, "variances[1]")


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


def encode(matched_gt: Any, priors: Any, variances: Any = (0.1, 0.2)) -> np.ndarray:
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
    d = _center_priors(priors)
    v0, v1 = _variances(variances)
    g = as_real_array(matched_gt, "matched_gt")
    if g.ndim not in (2, 3) or g.shape[-2:] != d.shape:
        raise ValueError(f"matched_gt must have shape {d.shape} or (B, {d.shape[0]}, 4) to match priors, got {g.shape}")
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


def decode(loc: Any, priors: Any, variances: Any = (0.1, 0.2)) -> np.ndarray:
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
    d = _center_priors(priors)
    v0, v1 = _variances(variances)
    t = as_real_array(loc, "loc")
    if t.ndim not in (2, 3) or t.shape[-2:] != d.shape:
        raise ValueError(f"loc must have shape {d.shape} or (B, {d.shape[0]}, 4) to match priors, got {t.shape}")
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
        raise ValueError(f"priors row {row} has (w, h) = {d[row, 2:].tolist()} which times variances[0] = {v0!r} "
                         f"is {scale[row].tolist()}: it must be finite and positive in float64")
    return scale


def _finite_rows(out: np.ndarray, what: str) -> None:
    """A ValueError naming the first row of ``out`` (rows of 4, flattened over a batch) that is not finite."""
    rows = out.reshape(-1, 4)
    ok = np.isfinite(rows).all(1)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        first = int(bad[0])
        where = f"row {first}" if out.ndim == 2 else f"image {first // out.shape[1]}, row {first % out.shape[1]}"
        raise ValueError(f"{what}: {bad.size} row{'s' if bad.size > 1 else ''} would be inf or NaN; "
                         f"the first is {where}: {rows[first].tolist()}")


# --- recall on the grids -----------------------------------------------------------------------------


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
            raise ValueError(f"{k} anchors cannot be split evenly over {n} levels (strides {tuple(levels)}); "
                             "give a list of per-level arrays instead")
        groups = [a[i * (k // n):(i + 1) * (k // n)] for i in range(n)]
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


def grid_best_iou(anchors: Any, boxes_xyxy: Any, image_wh: Any, *, strides: Any = (8, 16, 32),
                  n_threads: Optional[int] = None) -> np.ndarray:
    """Best IoU of every box with any anchor placed on the grids (see :func:`grid_recall`); (N,) float64."""
    levels = _grid_levels(anchors, strides)
    b, img = _grid_inputs(boxes_xyxy, image_wh)
    return _core.grid_best_iou(b, img, levels, resolve_threads(n_threads))


def grid_recall(
    anchors: Any,
    boxes_xyxy: Any,
    image_wh: Any,
    *,
    strides: Any = (8, 16, 32),
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
    """
    thr = as_float(iou, "iou")
    return float(np.mean(grid_best_iou(anchors, boxes_xyxy, image_wh, strides=strides, n_threads=n_threads) >= thr))
