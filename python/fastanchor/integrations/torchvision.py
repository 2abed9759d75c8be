"""Anchors fitted to a dataset, in the form torchvision's detection models take them.

>>> from fastanchor.integrations import torchvision as fa_tv
>>> fit = fa_tv.fpn_anchors(wh, "fasterrcnn")       # wh at the model's input scale (see rcnn_scale)
>>> fit.sizes, fit.aspect_ratios                     # AnchorGenerator(sizes, aspect_ratios)
>>> model = fasterrcnn_resnet50_fpn(weights=None, rpn_anchor_generator=fit.anchor_generator())
>>> ssd = fa_tv.ssd_boxes(wh_300)                    # DefaultBoxGenerator(aspect_ratios, scales=...)

Which level's anchors must cover a box. Faster R-CNN's RPN and RetinaNet concatenate the
anchors of every FPN level and match each ground-truth box to anchors by IoU (torchvision's
``Matcher``: foreground at IoU >= 0.7 for the RPN, with each box's best anchor kept too, >= 0.5
for RetinaNet). So a box is learned by the level that holds its best-IoU anchor, and that is the
rule used here. (torchvision's ``LevelMapper``, ``k = floor(4 + log2(sqrt(w h) / 224))``, maps
*proposals* to feature levels for RoI pooling in the second stage; it does not decide which
anchors a box is matched to.) SSD matches the same way, against its default boxes.

The fitted layout keeps torchvision's structure: the same aspect ratios on every level, and sizes
that double from level to level (one octave per FPN level, ``scales_per_octave`` sizes in each),
so every level keeps the same anchor-to-stride ratio. What is fitted to the data: the aspect
ratios (IoU k-means of the box shapes) and the size of the finest level (the one maximizing the
average best IoU), within ``anchor_stride_range`` times the finest stride. IoU is that of boxes and
anchors sharing a centre (the grid offset is not modelled), as in every anchor k-means. The anchor
widths and heights are scored as torchvision generates them (``AnchorGenerator`` rounds the
half-sides to integers). Nothing here imports torch until a generator is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._iou import avg_iou, wh_iou
from .._ratios import ssd_aspect_ratios
from .._validation import as_float, as_int, as_wh, distinct_rows_at_least

__all__ = [
    "DETECTORS",
    "FPNAnchors",
    "SSDBoxes",
    "fpn_anchors",
    "rcnn_scale",
    "ssd_boxes",
]

#: torchvision's defaults per detector: FPN strides, anchor sizes of the finest level, the
#: foreground IoU of its matcher, and the resize of its GeneralizedRCNNTransform.
DETECTORS: Dict[str, Dict[str, Any]] = {
    "fasterrcnn": {
        "strides": (4, 8, 16, 32, 64),
        "base_size": 32.0,
        "scales_per_octave": 1,
        "aspect_ratios": (0.5, 1.0, 2.0),
        "fg_iou": 0.7,
        "min_size": 800,
        "max_size": 1333,
        "argument": "rpn_anchor_generator",
    },
    "retinanet": {
        "strides": (8, 16, 32, 64, 128),
        "base_size": 32.0,
        "scales_per_octave": 3,
        "aspect_ratios": (0.5, 1.0, 2.0),
        "fg_iou": 0.5,
        "min_size": 800,
        "max_size": 1333,
        "argument": "anchor_generator",
    },
}

#: torchvision's ssd300_vgg16 default boxes.
SSD300_ASPECT_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
SSD300_SCALES = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)
SSD300_STEPS = (8, 16, 32, 64, 100, 300)


def rcnn_scale(img_wh: Any, min_size: float = 800, max_size: float = 1333) -> np.ndarray:
    """The resize factor of torchvision's ``GeneralizedRCNNTransform`` for each image.

    ``min(min_size / shorter side, max_size / longer side)``: multiply a box's width and height
    by its image's factor to get them at the model's input scale (Faster R-CNN, RetinaNet).

    Parameters
    ----------
    img_wh : array_like, shape (N, 2)
        Image width and height per box (or per image).
    min_size, max_size : float
        The transform's ``min_size`` and ``max_size`` (torchvision's defaults: 800, 1333).
    """
    img = as_wh(img_wh, "img_wh")
    lo, hi = as_float(min_size, "min_size"), as_float(max_size, "max_size")
    if not (0 < lo <= hi):
        raise ValueError(f"need 0 < min_size <= max_size, got {min_size}, {max_size}")
    return np.minimum(lo / img.min(1), hi / img.max(1))


def _generated_wh(sizes: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """(w, h) of AnchorGenerator's cell anchors: per ratio (h / w) and size, half-sides rounded."""
    h_ratio = np.sqrt(ratios)
    ws = (1.0 / h_ratio)[:, None] * sizes[None, :]
    hs = h_ratio[:, None] * sizes[None, :]
    # base anchors are round([-ws, -hs, ws, hs] / 2): the generated side is twice the rounded half
    w = 2.0 * np.round(ws.reshape(-1) / 2.0)
    h = 2.0 * np.round(hs.reshape(-1) / 2.0)
    return np.stack([w, h], axis=1)


@dataclass(frozen=True)
class FPNAnchors:
    """Anchors for a torchvision FPN detector, as ``AnchorGenerator(sizes, aspect_ratios)``.

    Attributes
    ----------
    detector : str
        "fasterrcnn" or "retinanet".
    sizes : tuple of tuple of float
        Per level, the anchor sizes (square roots of the areas), finest level first.
    aspect_ratios : tuple of tuple of float
        Per level, the aspect ratios ``h / w`` (torchvision's convention), the same on every level.
    strides : tuple of int
        The FPN strides of the levels.
    avg_iou : float
        Average best IoU of the boxes with the anchors, as generated.
    default_avg_iou : float
        The same for torchvision's default anchors of this detector.
    coverage, default_coverage : float
        Fraction of boxes whose best IoU reaches the matcher's foreground threshold ``fg_iou``.
    level_counts : tuple of int
        Boxes per level (the level of each box's best-IoU anchor).
    level_coverage : tuple of float
        Per level, the fraction of its boxes at IoU >= ``fg_iou`` (NaN for a level with no box).
    fg_iou : float
        The matcher's foreground threshold used for coverage.
    n_boxes : int
    """

    detector: str
    sizes: Tuple[Tuple[float, ...], ...]
    aspect_ratios: Tuple[Tuple[float, ...], ...]
    strides: Tuple[int, ...]
    avg_iou: float
    default_avg_iou: float
    coverage: float
    default_coverage: float
    level_counts: Tuple[int, ...]
    level_coverage: Tuple[float, ...]
    fg_iou: float
    n_boxes: int
    _anchors: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros((0, 2)))

    @property
    def generated_wh(self) -> np.ndarray:
        """(k, 2) widths and heights of the anchors torchvision generates, level by level."""
        return self._anchors.copy()

    def kwargs(self) -> Dict[str, Any]:
        """``{"sizes": ..., "aspect_ratios": ...}`` for ``AnchorGenerator(**kwargs)``."""
        return {"sizes": self.sizes, "aspect_ratios": self.aspect_ratios}

    def anchor_generator(self) -> Any:
        """A ``torchvision.models.detection.anchor_utils.AnchorGenerator`` (imports torchvision)."""
        from torchvision.models.detection.anchor_utils import AnchorGenerator

        return AnchorGenerator(**self.kwargs())

    def python(self) -> str:
        """Python source that builds the generator and passes it to the model builder."""
        arg = DETECTORS[self.detector]["argument"]
        builder = "fasterrcnn_resnet50_fpn" if self.detector == "fasterrcnn" else "retinanet_resnet50_fpn"
        return (
            f"# fastanchor: {self.detector} anchors for {self.n_boxes} boxes; average IoU {self.avg_iou:.4f} "
            f"(torchvision's defaults: {self.default_avg_iou:.4f}),\n"
            f"# IoU >= {self.fg_iou:g} for {self.coverage:.2%} of the boxes (defaults: {self.default_coverage:.2%}); "
            f"boxes per level {list(self.level_counts)}\n"
            "from torchvision.models.detection.anchor_utils import AnchorGenerator\n\n"
            f"sizes = {_tuple_src(self.sizes)}\n"
            f"aspect_ratios = {_tuple_src(self.aspect_ratios)}\n"
            "anchor_generator = AnchorGenerator(sizes, aspect_ratios)\n"
            f"# model = torchvision.models.detection.{builder}(..., {arg}=anchor_generator)\n"
        )


def _tuple_src(levels: Sequence[Sequence[float]]) -> str:
    inner = ", ".join("(" + ", ".join(_num(v) for v in lv) + ("," if len(lv) == 1 else "") + ")" for lv in levels)
    return f"({inner}{',' if len(levels) == 1 else ''})"


def _num(v: float) -> str:
    return repr(int(v)) if float(v).is_integer() else repr(float(v))


def _ladder(base: float, n_levels: int, spo: int) -> np.ndarray:
    """(n_levels, spo) sizes: base * 2**level * 2**(j / spo)."""
    return base * 2.0 ** (np.arange(n_levels)[:, None] + np.arange(spo)[None, :] / spo)


#: At most this many boxes (a seeded random subset) are scored during the searches; the final
#: figures use every box.
SEARCH_SAMPLE = 20000


def _sample(boxes: np.ndarray, seed: int) -> np.ndarray:
    if boxes.shape[0] <= SEARCH_SAMPLE:
        return boxes
    rng = np.random.default_rng(seed)
    return boxes[np.sort(rng.choice(boxes.shape[0], SEARCH_SAMPLE, replace=False))]


def _score(wh: np.ndarray, anchors: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    iou = wh_iou(wh, anchors)
    return iou.argmax(1), iou.max(1)


def fpn_anchors(
    wh: Any,
    detector: str = "fasterrcnn",
    *,
    n_ratios: int = 3,
    scales_per_octave: Optional[int] = None,
    strides: Optional[Sequence[int]] = None,
    anchor_stride_range: Tuple[float, float] = (2.0, 16.0),
    decimals: int = 1,
    seed: int = 0,
) -> FPNAnchors:
    """Fit ``AnchorGenerator(sizes, aspect_ratios)`` for torchvision's Faster R-CNN or RetinaNet.

    Parameters
    ----------
    wh : array_like, shape (N, 2)
        Box widths and heights at the model's input scale (multiply by :func:`rcnn_scale`).
    detector : {"fasterrcnn", "retinanet"}
        Sets the defaults below and the matcher threshold (0.7 / 0.5) used for coverage.
    n_ratios : int
        Aspect ratios per level (torchvision: 3).
    scales_per_octave : int, optional
        Sizes per level (Faster R-CNN: 1, RetinaNet: 3).
    strides : sequence of int, optional
        FPN strides, finest first (Faster R-CNN: 4 ... 64, RetinaNet: 8 ... 128); one level each.
    anchor_stride_range : (float, float)
        Bounds of the finest level's anchor size in multiples of its stride (default 2 to 16:
        torchvision uses 8 for Faster R-CNN and 4 for RetinaNet).
    decimals : int
        Sizes and ratios are rounded to this many decimals, and scored after rounding.
    seed : int
        Seeds the aspect-ratio k-means.

    Returns
    -------
    FPNAnchors
    """
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {sorted(DETECTORS)}, got {detector!r}")
    spec = DETECTORS[detector]
    boxes = as_wh(wh)
    n_ratios = as_int(n_ratios, "n_ratios", minimum=1)
    spo = as_int(
        spec["scales_per_octave"] if scales_per_octave is None else scales_per_octave, "scales_per_octave", minimum=1
    )
    st = tuple(as_int(s, "strides", minimum=1) for s in (spec["strides"] if strides is None else strides))
    if not st or any(b <= a for a, b in zip(st, st[1:])):
        raise ValueError(f"strides must be increasing, got {list(st)}")
    lo, hi = (as_float(x, "anchor_stride_range") for x in anchor_stride_range)
    if not 0 < lo < hi:
        raise ValueError(f"anchor_stride_range must be (low, high) with 0 < low < high, got {anchor_stride_range}")
    decimals = as_int(decimals, "decimals", minimum=0, maximum=6)
    if distinct_rows_at_least(boxes, n_ratios) < n_ratios:
        raise ValueError(f"n_ratios={n_ratios} needs at least as many distinct boxes, got fewer")

    # torchvision's ratio is h / w; ssd_aspect_ratios returns w / h of the shape clusters
    shape = ssd_aspect_ratios(boxes, n_ratios, seed=seed)
    ratios = np.unique(np.round(1.0 / shape.aspect_ratios, decimals))
    ratios = ratios[ratios > 0]
    n_levels = len(st)

    search = _sample(boxes, seed)
    candidates = [ratios]
    default_ratios = np.asarray(spec["aspect_ratios"], dtype=np.float64)
    if len(default_ratios) == n_ratios and not np.array_equal(default_ratios, ratios):
        candidates.append(default_ratios)  # never worse than torchvision's ratios
    bases = list(np.geomspace(lo * st[0], hi * st[0], 161))
    if lo * st[0] <= spec["base_size"] <= hi * st[0]:
        bases.append(float(spec["base_size"]))  # ... nor than its sizes
    best: Optional[Tuple[float, float, np.ndarray]] = None
    for cand in candidates:
        for base in bases:
            sizes = np.round(_ladder(base, n_levels, spo), decimals)
            if not (sizes > 0).all():
                continue
            score = avg_iou(_anchors_of(sizes, cand), search)
            if best is None or score > best[1]:
                best = (float(base), score, cand)
    assert best is not None
    ratios = best[2]
    sizes = np.round(_ladder(best[0], n_levels, spo), decimals)
    anchors = _anchors_of(sizes, ratios)
    fg = float(spec["fg_iou"])
    level_of_anchor = np.repeat(np.arange(n_levels), len(ratios) * spo)
    idx, iou = _score(boxes, anchors)
    level = level_of_anchor[idx]
    counts = tuple(int((level == i).sum()) for i in range(n_levels))
    level_cov = tuple(float((iou[level == i] >= fg).mean()) if counts[i] else math.nan for i in range(n_levels))

    d_sizes = _ladder(spec["base_size"], len(spec["strides"]), spec["scales_per_octave"])
    d_anchors = _anchors_of(d_sizes, np.asarray(spec["aspect_ratios"], dtype=np.float64))
    _, d_iou = _score(boxes, d_anchors)
    return FPNAnchors(
        detector=detector,
        sizes=tuple(tuple(float(v) for v in row) for row in sizes),
        aspect_ratios=tuple(tuple(float(r) for r in ratios) for _ in range(n_levels)),
        strides=st,
        avg_iou=float(iou.mean()),
        default_avg_iou=float(d_iou.mean()),
        coverage=float((iou >= fg).mean()),
        default_coverage=float((d_iou >= fg).mean()),
        level_counts=counts,
        level_coverage=level_cov,
        fg_iou=fg,
        n_boxes=int(boxes.shape[0]),
        _anchors=anchors,
    )


def _anchors_of(sizes: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    return np.concatenate([_generated_wh(row, ratios) for row in sizes])


def _ssd_wh_pairs(scales: Sequence[float], aspect_ratios: Sequence[Sequence[float]], clip: bool) -> List[np.ndarray]:
    """DefaultBoxGenerator's per-level (w, h) pairs, relative to the image."""
    out = []
    for k, ratios in enumerate(aspect_ratios):
        s, s_next = scales[k], scales[k + 1]
        pairs = [[s, s], [math.sqrt(s * s_next)] * 2]
        for ar in ratios:
            q = math.sqrt(ar)
            pairs += [[s * q, s / q], [s / q, s * q]]
        p = np.asarray(pairs, dtype=np.float64)
        out.append(np.clip(p, 0.0, 1.0) if clip else p)
    return out


def _refine_scales(
    rel: np.ndarray, scales: List[float], ratios: Sequence[Sequence[float]], decimals: int
) -> Tuple[List[float], float]:
    """Coordinate ascent of the average best IoU over each scale (a few sweeps of factors)."""
    cur = [round(v, decimals) for v in scales]
    score = float(_ssd_eval(rel, cur, ratios)[0].mean())
    step = 10.0**-decimals
    for _ in range(4):
        improved = False
        for k in range(len(cur)):
            for f in np.geomspace(0.7, 1.4, 15):
                v = round(cur[k] * f, decimals)
                if v <= 0 or v > 1.5 or abs(v - cur[k]) < step / 2:
                    continue
                trial = cur[:k] + [v] + cur[k + 1 :]
                t = float(_ssd_eval(rel, trial, ratios)[0].mean())
                if t > score:
                    cur, score, improved = trial, t, True
        if not improved:
            break
    return cur, score


@dataclass(frozen=True)
class SSDBoxes:
    """Default boxes for torchvision's SSD, as ``DefaultBoxGenerator(aspect_ratios, scales=...)``.

    Attributes
    ----------
    aspect_ratios : list of list of float
        Per feature map, the ratios ``w / h`` >= 1 (each adds a box and its transpose).
    scales : list of float
        One more than the feature maps (the last only sets the extra square box of the last map).
    steps : list of int
        Passed through (torchvision's ssd300: 8, 16, 32, 64, 100, 300).
    avg_iou, default_avg_iou, coverage, default_coverage : float
        Average best IoU with the boxes (relative units), and the fraction at IoU >= 0.5 (SSD's
        matcher threshold), for the fitted and for torchvision's ssd300 default boxes.
    level_counts : tuple of int
        Boxes per feature map (the map of each box's best default box).
    n_boxes : int
    """

    aspect_ratios: List[List[float]]
    scales: List[float]
    steps: List[int]
    avg_iou: float
    default_avg_iou: float
    coverage: float
    default_coverage: float
    level_counts: Tuple[int, ...]
    n_boxes: int

    def kwargs(self) -> Dict[str, Any]:
        """``DefaultBoxGenerator(**kwargs)``."""
        return {"aspect_ratios": self.aspect_ratios, "scales": self.scales, "steps": self.steps}

    def default_box_generator(self) -> Any:
        """A ``torchvision.models.detection.anchor_utils.DefaultBoxGenerator`` (imports torchvision)."""
        from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

        return DefaultBoxGenerator(**self.kwargs())

    def python(self) -> str:
        """Python source that builds the generator."""
        return (
            f"# fastanchor: SSD default boxes for {self.n_boxes} boxes; average IoU {self.avg_iou:.4f} "
            f"(ssd300 defaults: {self.default_avg_iou:.4f}),\n"
            f"# IoU >= 0.5 for {self.coverage:.2%} of the boxes (defaults: {self.default_coverage:.2%}); "
            f"boxes per feature map {list(self.level_counts)}\n"
            "from torchvision.models.detection.anchor_utils import DefaultBoxGenerator\n\n"
            f"anchor_generator = DefaultBoxGenerator(\n    {self.aspect_ratios!r},\n"
            f"    scales={self.scales!r},\n    steps={self.steps!r},\n)\n"
            "# the SSD head must have anchor_generator.num_anchors_per_location() anchors per location\n"
        )


def _ssd_eval(rel: np.ndarray, scales: Sequence[float], ratios: Sequence[Sequence[float]]):
    pairs = _ssd_wh_pairs(scales, ratios, clip=True)
    anchors = np.concatenate(pairs)
    level_of = np.concatenate([np.full(len(p), i) for i, p in enumerate(pairs)])
    iou = wh_iou(rel, anchors)
    return iou.max(1), level_of[iou.argmax(1)]


def ssd_boxes(
    wh: Any,
    size: float = 300.0,
    *,
    ratios_per_map: Sequence[int] = (1, 2, 2, 2, 1, 1),
    steps: Sequence[int] = SSD300_STEPS,
    decimals: int = 2,
    seed: int = 0,
) -> SSDBoxes:
    """Fit ``DefaultBoxGenerator(aspect_ratios, scales=..., steps=...)`` for torchvision's SSD.

    The ratios are the IoU k-means of the box shapes, folded to ``w / h >= 1`` (each ratio gives
    a box and its transpose, as torchvision does); a map with one ratio gets the most common
    one. The scales are linear from ``s_min`` to ``s_max`` over the maps (SSD's rule, then 1.0
    for the last map's extra box), with ``s_min`` and ``s_max`` chosen on a grid for the highest
    average best IoU.

    Parameters
    ----------
    wh : array_like, shape (N, 2)
        Box widths and heights at the model's input size ``size`` x ``size`` (SSD stretches each
        image to it: scale widths by ``size / image width`` and heights by ``size / image height``).
    size : float
        The model's input size (ssd300: 300).
    ratios_per_map : sequence of int
        Ratios per feature map (ssd300: 1, 2, 2, 2, 1, 1); one map each.
    steps : sequence of int
        Passed to the generator (one per map).
    decimals : int
        Rounding of ratios and scales (scored after rounding).
    seed : int
        Seeds the k-means.
    """
    boxes = as_wh(wh)
    size = as_float(size, "size")
    if not size > 0:
        raise ValueError(f"size must be > 0, got {size}")
    counts = [as_int(c, "ratios_per_map", minimum=0) for c in ratios_per_map]
    st = [as_int(s, "steps", minimum=1) for s in steps]
    if len(counts) < 2 or len(st) != len(counts):
        raise ValueError(f"need >= 2 feature maps and one step per map, got {len(counts)} maps and {len(st)} steps")
    decimals = as_int(decimals, "decimals", minimum=0, maximum=6)
    rel = boxes / size
    k = max(counts)
    ratios: List[float] = []
    if k:
        # shape clusters folded to w / h >= 1; squares are already in every map
        n = min(2 * k + 1, distinct_rows_at_least(boxes, 2 * k + 1))
        shape = ssd_aspect_ratios(boxes, n, seed=seed)
        folded = np.maximum(shape.aspect_ratios, 1.0 / shape.aspect_ratios)
        pop = np.bincount(shape.labels, minlength=n)
        order = np.argsort(-pop, kind="stable")
        for j in order:
            r = float(np.round(folded[j], decimals))
            if r > 1.05 and all(abs(r - q) > 0.05 for q in ratios):
                ratios.append(r)
        default_order = [2.0, 3.0, 4.0]
        while len(ratios) < k:  # too few distinct non-square shapes: fill with SSD's usual ratios
            ratios.append(next(r for r in default_order if r not in ratios))
    per_map = [ratios[:c] for c in counts]

    n_maps = len(counts)
    search = _sample(rel, seed)
    candidates = [per_map]
    default_map = [list(SSD300_ASPECT_RATIOS[1][:c]) if c <= 2 else [2.0, 3.0, 4.0][:c] for c in counts]
    if default_map != per_map:
        candidates.append(default_map)  # never worse than SSD's usual ratios
    starts = []
    for s_min in np.linspace(0.02, 0.4, 10):
        for s_max in np.linspace(0.4, 1.0, 7):
            starts.append([float(s_min + (s_max - s_min) * i / (n_maps - 1)) for i in range(n_maps)] + [1.0])
    if n_maps == len(SSD300_SCALES) - 1:
        starts.append(list(SSD300_SCALES))
    best = None
    for cand in candidates:
        scored = sorted(((float(_ssd_eval(search, st0, cand)[0].mean()), st0) for st0 in starts), key=lambda t: -t[0])
        scales, score = _refine_scales(search, scored[0][1], cand, decimals)
        if best is None or score > best[0]:
            best = (score, scales, cand)
    assert best is not None
    _, scales, per_map = best
    b, lv = _ssd_eval(rel, scales, per_map)
    d_b, _ = _ssd_eval(rel, SSD300_SCALES, SSD300_ASPECT_RATIOS)
    return SSDBoxes(
        aspect_ratios=[list(map(float, r)) for r in per_map],
        scales=[float(s) for s in scales],
        steps=st,
        avg_iou=float(b.mean()),
        default_avg_iou=float(d_b.mean()),
        coverage=float((b >= 0.5).mean()),
        default_coverage=float((d_b >= 0.5).mean()),
        level_counts=tuple(int((lv == i).sum()) for i in range(n_maps)),
        n_boxes=int(boxes.shape[0]),
    )
