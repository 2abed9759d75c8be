"""SSD default boxes (priors) on the feature maps of a detector: the SSD paper's layout
(:func:`ssd_default_boxes`) and TensorFlow's ``ssd_anchor_generator`` (:func:`tf_anchor_generator`)."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union, cast

import numpy as np
import numpy.typing as npt

from ._box_iou import to_center, to_corners
from ._validation import MAX_SIDE, as_float, as_int, as_positive

__all__ = ["MAX_PRIORS", "ssd_default_boxes", "tf_anchor_generator"]

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


#: Defaults of the scale range: ``min_scale`` for both layouts, ``max_scale`` of the SSD paper's
#: layout (and of the deprecated ``style="tf"``), and ``max_scale`` of TensorFlow's
#: ``ssd_anchor_generator`` (its proto's default).
DEFAULT_MIN_SCALE = 0.2
DEFAULT_MAX_SCALE = 0.9
TF_DEFAULT_MAX_SCALE = 0.95


def _layer_scales(m: int, min_scale: Any, max_scale: Any, scales: Any, default_max: float) -> List[float]:
    """The scale of each of the ``m`` layers and ``1.0`` after the last: the given ``scales``, or the
    range from ``min_scale`` to ``max_scale`` (None: the defaults). Both at once is an error."""
    if scales is not None:
        if min_scale is not None or max_scale is not None:
            given = " and ".join(n for n, v in (("min_scale", min_scale), ("max_scale", max_scale)) if v is not None)
            raise ValueError(f"scales sets every layer's scale: give scales or {given}, not both")
        sc = _ratio_list(scales, "scales")
        if len(sc) != m:
            raise ValueError(f"scales has {len(sc)} values but there are {m} feature maps")
    else:
        lo = as_positive(DEFAULT_MIN_SCALE if min_scale is None else min_scale, "min_scale")
        hi = as_positive(default_max if max_scale is None else max_scale, "max_scale")
        sc = [lo] if m == 1 else [lo + (hi - lo) * k / (m - 1) for k in range(m)]
    return sc + [1.0]


def _boxes_on_grids(
    maps: List[Tuple[int, int]],
    specs_of_layer: List[List[Tuple[float, float, bool]]],
    image_size: Any,
    clip: bool,
    base: Tuple[float, float] = (1.0, 1.0),
    strides: Optional[List[Tuple[float, float]]] = None,
    offsets: Optional[List[Tuple[float, float]]] = None,
) -> npt.NDArray[np.float64]:
    """The priors of both layouts from the boxes of a location of every layer, ``(scale, ratio,
    turned)`` (turned: the box's height and width swapped), in center form.

    ``base`` is TensorFlow's base anchor (height, width); ``strides`` and ``offsets`` its per-layer
    (y, x) pairs in pixels of ``image_size``. Box sides and the number of priors are checked
    before anything of the size of the grids is allocated."""
    base_h, base_w = base
    fw, fh = _image_scale(image_size)
    im_w, im_h = _image_wh(image_size)
    layers = []  # (H, W, widths, heights)
    for k, ((H, W), specs) in enumerate(zip(maps, specs_of_layer)):
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
                "give them"
            )
        layers.append((H, W, bw, bh))
    total = sum(H * W * bw.size for H, W, bw, _ in layers)  # Python ints: exact
    if total > MAX_PRIORS:
        raise ValueError(
            f"feature_map_sizes and aspect_ratios give {total} priors: at most {MAX_PRIORS} "
            f"(MAX_PRIORS: {MAX_PRIORS * 32 / 2**30:g} GiB of output) are supported"
        )

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
                raise ValueError(
                    f"layer {k}: height/width_stride and height/width_offset over image_size put "
                    f"box centres at {last} (normalized): beyond {MAX_SIDE:g}"
                )
            cy, cx = np.meshgrid(np.arange(H) * sy + oy, np.arange(W) * sx + ox, indexing="ij")
        nb = bw.size
        layer = np.empty((H, W, nb, 4))
        layer[..., 0] = cx[..., None]
        layer[..., 1] = cy[..., None]
        layer[..., 2] = bw
        layer[..., 3] = bh
        out.append(layer.reshape(-1, 4))
    boxes: npt.NDArray[np.float64] = np.concatenate(out, axis=0)
    if clip:
        boxes = cast("npt.NDArray[np.float64]", to_center(np.clip(to_corners(boxes), 0.0, 1.0)))  # float64 in, out
    return boxes


#: The parameters of :func:`tf_anchor_generator` that ``ssd_default_boxes`` still takes for its
#: deprecated ``style="tf"``; they do not apply to the SSD paper's layout.
_TF_ONLY = (
    "interpolated_scale_aspect_ratio",
    "reduce_boxes_in_lowest_layer",
    "base_anchor_height",
    "base_anchor_width",
    "height_stride",
    "width_stride",
    "height_offset",
    "width_offset",
)


def ssd_default_boxes(
    feature_map_sizes: Sequence[Union[int, Tuple[int, int]]],
    aspect_ratios: Union[Sequence[float], Sequence[Sequence[float]]] = (2.0, 3.0),
    *,
    min_scale: Optional[float] = None,
    max_scale: Optional[float] = None,
    scales: Optional[Sequence[float]] = None,
    image_size: Union[float, Tuple[float, float], None] = None,
    clip: bool = True,
    style: str = "ssd",
    reciprocals: Optional[bool] = None,
    interpolated_scale_aspect_ratio: Optional[float] = None,
    reduce_boxes_in_lowest_layer: Optional[bool] = None,
    base_anchor_height: Optional[float] = None,
    base_anchor_width: Optional[float] = None,
    height_stride: Union[float, Sequence[float], None] = None,
    width_stride: Union[float, Sequence[float], None] = None,
    height_offset: Union[float, Sequence[float], None] = None,
    width_offset: Union[float, Sequence[float], None] = None,
) -> npt.NDArray[np.float64]:
    """SSD default boxes (priors) on a set of feature maps, normalized center form ``(cx, cy, w, h)``.

    The layout of the SSD paper (as ssd.pytorch builds it); for TensorFlow's
    ``ssd_anchor_generator`` use :func:`tf_anchor_generator`.

    Layer ``k`` of ``m`` has scale ``s_k = min_scale + (max_scale - min_scale) * k / (m - 1)``
    (``min_scale`` when ``m == 1``; or the given ``scales``), and ``s_m = 1`` after the last.
    A box of scale ``s`` and aspect ratio ``a`` has ``w = s * sqrt(a)`` and ``h = s / sqrt(a)``.

    Boxes per location:
      ``reciprocals=True`` (default): the square of scale ``s_k``, the extra square of scale
      ``sqrt(s_k * s_{k+1})``, then for each listed ratio ``a != 1`` in order, ``a`` and ``1/a``
      (ratios equal to 1 are skipped: the squares are always there).
      ``reciprocals=False``: each listed ratio in order at scale ``s_k``; a ratio of 1 is
      followed by the extra square.

    Order of the output rows: layer by layer (in the order of ``feature_map_sizes``), then the
    locations row by row (y, then x), then the boxes of a location in the order above. The box
    at row ``i``, column ``j`` of an ``H x W`` map is centred at ``((j + 0.5) / W, (i + 0.5) / H)``.

    Parameters
    ----------
    feature_map_sizes : sequence of int or (height, width)
        The grid of each layer (an int for a square grid).
    aspect_ratios : sequence of float, or a sequence of sequences (one per layer)
    min_scale, max_scale : float, optional
        Scales of the first and last layer, as fractions of the image (default 0.2 and 0.9).
    scales : sequence of float, optional
        Explicit per-layer scales instead (``len(feature_map_sizes)`` of them); not together with
        ``min_scale`` or ``max_scale``.
    image_size : number or (width, height), optional
        For non-square inputs: widths are multiplied by ``min(W, H) / W`` and heights by
        ``min(W, H) / H`` so that a ratio of 1 is square in pixels (TensorFlow's rule).
    clip : bool
        Clip every box to the image ``[0, 1]`` (in corner form), as TensorFlow and ssd.pytorch do.
    style : {"ssd", "tf"}
        ``"tf"`` is deprecated: it calls :func:`tf_anchor_generator` with the other arguments
        (and the defaults above: ``max_scale`` 0.9, ``aspect_ratios`` (2.0, 3.0)) and emits a
        ``DeprecationWarning``.
    reciprocals : bool, optional
        The layout of the boxes of a location, above (default True). Not with ``style="tf"``.
    interpolated_scale_aspect_ratio, reduce_boxes_in_lowest_layer : optional
        TensorFlow's fields, for the deprecated ``style="tf"`` only (see
        :func:`tf_anchor_generator`); with ``style="ssd"`` giving any of them is a ValueError.
    base_anchor_height, base_anchor_width, height_stride, width_stride : optional
        Likewise.
    height_offset, width_offset : optional
        Likewise.

    Returns
    -------
    ndarray, shape (P, 4), float64
        The priors ``(cx, cy, w, h)`` in units of the image.

    Raises
    ------
    ValueError
        When a box side would overflow or vanish in float64 (scales, ratios or image sizes near
        1e308 or 5e-324), naming the layer and the box; when the maps give more than
        ``MAX_PRIORS`` (2**29) priors, decided from the sizes before anything is allocated; when
        a parameter is given that does not apply (a TensorFlow field with ``style="ssd"``,
        ``reciprocals`` with ``style="tf"``, ``scales`` with ``min_scale`` or ``max_scale``).
    TypeError
        When ``clip`` or ``reciprocals`` is not a bool (or ``numpy.bool_``), or a list argument
        is not a sequence (e.g. a 0-d array).

    Warns
    -----
    DeprecationWarning
        With ``style="tf"``: use :func:`tf_anchor_generator`.
    """
    if not isinstance(style, str) or style not in ("ssd", "tf"):
        raise ValueError(f"style must be 'ssd' or 'tf', got {style!r}")
    tf_fields: Dict[str, Any] = dict(
        interpolated_scale_aspect_ratio=interpolated_scale_aspect_ratio,
        reduce_boxes_in_lowest_layer=reduce_boxes_in_lowest_layer,
        base_anchor_height=base_anchor_height,
        base_anchor_width=base_anchor_width,
        height_stride=height_stride,
        width_stride=width_stride,
        height_offset=height_offset,
        width_offset=width_offset,
    )
    given = {name: value for name, value in tf_fields.items() if value is not None}
    if style == "tf":
        warnings.warn(
            "ssd_default_boxes(style='tf') is deprecated: call fastanchor.tf_anchor_generator with the same "
            "arguments, without style (its defaults follow TensorFlow: max_scale 0.95, and aspect_ratios must "
            "be given)",
            DeprecationWarning,
            stacklevel=2,
        )
        if reciprocals is not None:
            raise ValueError(
                "reciprocals is an option of the SSD paper's layout (style='ssd'); TensorFlow's "
                "layout (tf_anchor_generator) has interpolated_scale_aspect_ratio instead"
            )
        if scales is None:  # the defaults style="tf" always had
            min_scale = DEFAULT_MIN_SCALE if min_scale is None else min_scale
            max_scale = DEFAULT_MAX_SCALE if max_scale is None else max_scale
        tf_ratios = cast(Sequence[float], aspect_ratios)  # per-layer lists: tf_anchor_generator raises
        return tf_anchor_generator(
            feature_map_sizes,
            tf_ratios,
            min_scale=min_scale,
            max_scale=max_scale,
            scales=scales,
            image_size=image_size,
            clip=clip,
            **given,
        )
    if given:
        names, one = ", ".join(given), len(given) == 1
        raise ValueError(
            f"{names} {'is a field' if one else 'are fields'} of TensorFlow's ssd_anchor_generator "
            f"and {'does' if one else 'do'} not apply to the SSD paper's layout: use "
            "tf_anchor_generator (formerly style='tf')"
        )
    maps = _feature_maps(feature_map_sizes)
    m = len(maps)
    sc = _layer_scales(m, min_scale, max_scale, scales, DEFAULT_MAX_SCALE)
    clip = _as_bool(clip, "clip")
    reciprocals = _as_bool(True if reciprocals is None else reciprocals, "reciprocals")
    if _is_sequence(aspect_ratios) and len(aspect_ratios) and all(_is_sequence(r) for r in aspect_ratios):
        if len(aspect_ratios) != m:
            raise ValueError(f"aspect_ratios has {len(aspect_ratios)} lists but there are {m} feature maps")
        per_layer = [_ratio_list(r, f"aspect_ratios[{i}]") for i, r in enumerate(aspect_ratios)]
    else:
        per_layer = [_ratio_list(aspect_ratios, "aspect_ratios")] * m
    _image_scale(image_size)  # checked before the boxes

    specs_of_layer = []  # per layer: (scale, ratio, turned): the box (s * sqrt(a), s / sqrt(a)), or its turn
    for k, ratios in enumerate(per_layer):
        s, extra = sc[k], math.sqrt(sc[k] * sc[k + 1])
        specs: List[Tuple[float, float, bool]] = []
        if reciprocals:
            specs = [(s, 1.0, False), (extra, 1.0, False)]
            for a in ratios:
                if a != 1.0:
                    specs += [(s, a, False), (s, a, True)]  # a and 1/a, as ssd.pytorch: (s/sqrt(a), s*sqrt(a))
        else:
            for a in ratios:
                specs.append((s, a, False))
                if a == 1.0:
                    specs.append((extra, 1.0, False))
        specs_of_layer.append(specs)
    return _boxes_on_grids(maps, specs_of_layer, image_size, clip)


def tf_anchor_generator(
    feature_map_sizes: Sequence[Union[int, Tuple[int, int]]],
    aspect_ratios: Sequence[float],
    *,
    min_scale: Optional[float] = None,
    max_scale: Optional[float] = None,
    scales: Optional[Sequence[float]] = None,
    interpolated_scale_aspect_ratio: float = 1.0,
    reduce_boxes_in_lowest_layer: bool = True,
    base_anchor_height: float = 1.0,
    base_anchor_width: float = 1.0,
    height_stride: Union[float, Sequence[float], None] = None,
    width_stride: Union[float, Sequence[float], None] = None,
    height_offset: Union[float, Sequence[float], None] = None,
    width_offset: Union[float, Sequence[float], None] = None,
    image_size: Union[float, Tuple[float, float], None] = None,
    clip: bool = True,
) -> npt.NDArray[np.float64]:
    """The anchors of TensorFlow's ``ssd_anchor_generator`` (Object Detection API), normalized
    center form ``(cx, cy, w, h)``.

    The parameters mirror the fields of the ``ssd_anchor_generator`` block of a
    ``pipeline.config`` (``num_layers`` is the number of ``feature_map_sizes``), with TensorFlow's
    defaults, so that a config can be read across field by field::

        anchors = fastanchor.tf_anchor_generator(
            [19, 10, 5, 3, 2, 1], [1.0, 2.0, 0.5, 3.0, 0.3333], min_scale=0.2, max_scale=0.95)

    gives the 1917 anchors of ``ssd_mobilenet_v1`` at 300 x 300. (This replaces
    ``ssd_default_boxes(..., style="tf")``, which still works but is deprecated; note its
    defaults: ``max_scale`` 0.9 and ``aspect_ratios`` (2.0, 3.0) there, 0.95 and no default
    here.)

    Layer ``k`` of ``m`` has scale ``s_k = min_scale + (max_scale - min_scale) * k / (m - 1)``
    (``min_scale`` when ``m == 1``; or the given ``scales``), and ``s_m = 1`` after the last.
    A box of scale ``s`` and aspect ratio ``a`` is ``s * sqrt(a) * base_anchor_width`` wide and
    ``s / sqrt(a) * base_anchor_height`` high. Boxes per location: the listed ``aspect_ratios``
    at scale ``s_k``, then, if ``interpolated_scale_aspect_ratio > 0``, a box of that ratio at
    ``sqrt(s_k * s_{k+1})``; with ``reduce_boxes_in_lowest_layer`` the first layer has only
    ``(0.1, 1.0), (s_0, 2.0), (s_0, 0.5)`` (scale, ratio).

    Order of the output rows: layer by layer (in the order of ``feature_map_sizes``), then the
    locations row by row (y, then x), then the boxes of a location in the order above. Without
    strides and offsets the box at row ``i``, column ``j`` of an ``H x W`` map is centred at
    ``((j + 0.5) / W, (i + 0.5) / H)``.

    Parameters
    ----------
    feature_map_sizes : sequence of int or (height, width)
        The grid of each layer (an int for a square grid): the sizes of the feature maps the
        model's box predictor sees (TensorFlow takes them from the model at run time).
    aspect_ratios : sequence of float
        The ``aspect_ratios`` lines of the config, one list for all layers.
    min_scale, max_scale : float, optional
        Scales of the first and last layer, as fractions of the image (default 0.2 and 0.95, as
        TensorFlow).
    scales : sequence of float, optional
        Explicit per-layer scales instead (``len(feature_map_sizes)`` of them); not together with
        ``min_scale`` or ``max_scale`` (TensorFlow would ignore those silently).
    interpolated_scale_aspect_ratio : float
        The ratio of the extra box at the interpolated scale; 0 or less for none (default 1.0).
    reduce_boxes_in_lowest_layer : bool
        Only the three boxes above on the first layer (default True).
    base_anchor_height, base_anchor_width : float
        Every box height is multiplied by ``base_anchor_height`` and every width by
        ``base_anchor_width`` (default 1.0; before the ``image_size`` correction, which
        TensorFlow applies to the base anchor size).
    height_stride, width_stride : number or sequence of numbers (one per layer), optional
        The distance between box centres (the ``anchor_strides`` of
        ``MultipleGridAnchorGenerator``) in pixels of ``image_size`` (in normalized units when
        ``image_size`` is not given, as TensorFlow with an image of 1 x 1). Given together; a
        single number serves every layer. By default the stride is ``1 / feature map size``
        (normalized).
    height_offset, width_offset : number or sequence of numbers (one per layer), optional
        The centre of the first box of the layer (``anchor_offsets``), in the units of the
        strides; by default half the stride. With strides or offsets given, the box at row
        ``i``, column ``j`` is centred at ``(j * width_stride + width_offset, i * height_stride +
        height_offset)``, divided by the image width and height.
    image_size : number or (width, height), optional
        The network input size (the config's ``fixed_shape_resizer``). For non-square inputs,
        widths are multiplied by ``min(W, H) / W`` and heights by ``min(W, H) / H`` so that a
        ratio of 1 is square in pixels (TensorFlow's rule).
    clip : bool
        Clip every box to the image ``[0, 1]`` (in corner form).

    Returns
    -------
    ndarray, shape (P, 4), float64
        The anchors ``(cx, cy, w, h)`` in units of the image.

    Raises
    ------
    ValueError
        When a box side would overflow or vanish in float64, naming the layer and the box; when
        the maps give more than ``MAX_PRIORS`` (2**29) anchors (decided before anything is
        allocated); when strides or offsets put centres beyond float64; when ``scales`` is given
        with ``min_scale`` or ``max_scale``, or a stride (offset) without its pair; when
        ``aspect_ratios`` is a list of lists (TensorFlow has one list for all layers).
    TypeError
        When ``clip`` or ``reduce_boxes_in_lowest_layer`` is not a bool (or ``numpy.bool_``), or
        a list argument is not a sequence (e.g. a 0-d array).
    """
    maps = _feature_maps(feature_map_sizes)
    m = len(maps)
    base_h = as_positive(base_anchor_height, "base_anchor_height")
    base_w = as_positive(base_anchor_width, "base_anchor_width")
    strides = _tf_grid("height_stride", "width_stride", height_stride, width_stride, m, True)
    offsets = _tf_grid("height_offset", "width_offset", height_offset, width_offset, m, False)
    sc = _layer_scales(m, min_scale, max_scale, scales, TF_DEFAULT_MAX_SCALE)
    clip = _as_bool(clip, "clip")
    reduce = _as_bool(reduce_boxes_in_lowest_layer, "reduce_boxes_in_lowest_layer")
    if _is_sequence(aspect_ratios) and len(aspect_ratios) and all(_is_sequence(r) for r in aspect_ratios):
        raise ValueError(
            "tf_anchor_generator takes one list of aspect ratios for all layers (TensorFlow's "
            "ssd_anchor_generator has no per-layer ratios)"
        )
    ratios = _ratio_list(aspect_ratios, "aspect_ratios")
    interp = as_float(interpolated_scale_aspect_ratio, "interpolated_scale_aspect_ratio")
    _image_scale(image_size)  # checked before the boxes

    specs_of_layer = []
    for k in range(m):
        s = sc[k]
        if k == 0 and reduce:
            specs = [(0.1, 1.0, False), (s, 2.0, False), (s, 0.5, False)]
        else:
            specs = [(s, a, False) for a in ratios]
            if interp > 0:
                specs.append((math.sqrt(s * sc[k + 1]), interp, False))
        specs_of_layer.append(specs)
    return _boxes_on_grids(maps, specs_of_layer, image_size, clip, (base_h, base_w), strides, offsets)
