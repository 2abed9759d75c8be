"""SSD default boxes (priors) on the feature maps of a detector."""

from __future__ import annotations

import math
import numbers
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._box_iou import to_center, to_corners
from ._validation import MAX_SIDE, as_float, as_int, as_positive

__all__ = ["MAX_PRIORS", "ssd_default_boxes"]

#: The most priors :func:`ssd_default_boxes` makes: 2**29 rows, 16 GiB of float64 output (the
#: construction needs a few times that at its peak). More is a ValueError, decided from the feature
#: map sizes before anything is allocated (``ssd_default_boxes([10**6])`` would need 10**12 rows).
MAX_PRIORS = 2**29


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
    return [as_positive(a, f"{name}[{i}]") for i, a in enumerate(x)]


def _image_scale(image_size: Any) -> Tuple[float, float]:
    """Width and height factors that make a ratio-1 box square in pixels (TensorFlow's rule)."""
    if image_size is None:
        return 1.0, 1.0
    if isinstance(image_size, numbers.Real) and not isinstance(image_size, (bool, np.bool_)):
        as_positive(image_size, "image_size")
        return 1.0, 1.0
    try:
        w, h = image_size
    except (TypeError, ValueError):
        raise TypeError(f"image_size must be a number or a (width, height) pair, got {image_size!r}") from None
    w, h = as_positive(w, "image_size width"), as_positive(h, "image_size height")
    m = min(w, h)
    return m / w, m / h


def _image_wh(image_size: Any) -> Tuple[float, float]:
    """The image's (width, height) in pixels; (1, 1) without an image size (normalized units)."""
    if image_size is None:
        return 1.0, 1.0
    if isinstance(image_size, numbers.Real) and not isinstance(image_size, (bool, np.bool_)):
        v = as_positive(image_size, "image_size")
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
        f = as_positive(v, label) if positive else as_float(v, label)
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
    base_h = as_positive(base_anchor_height, "base_anchor_height")
    base_w = as_positive(base_anchor_width, "base_anchor_width")
    strides = _tf_grid("height_stride", "width_stride", height_stride, width_stride, m, True)
    offsets = _tf_grid("height_offset", "width_offset", height_offset, width_offset, m, False)
    if style != "tf" and (base_h != 1.0 or base_w != 1.0 or strides is not None or offsets is not None):
        raise ValueError("base_anchor_height/width, height/width_stride and height/width_offset are "
                         "TensorFlow's ssd_anchor_generator fields: use them with style='tf'")
    if scales is None:
        lo, hi = as_positive(min_scale, "min_scale"), as_positive(max_scale, "max_scale")
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
