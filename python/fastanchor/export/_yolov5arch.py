"""The detection levels of a YOLOv5 model yaml, read from its architecture.

A YOLOv5 yaml lists layers as ``[from, number, module, args]`` in ``backbone`` then ``head``; the
last ``Detect`` (or ``Segment``) layer's ``from`` names the layers it detects on. Each layer's
stride follows from the modules that change resolution (``Conv``/``GhostConv``/``DWConv`` with a
stride argument, ``Focus``, ``nn.MaxPool2d``, ``nn.Upsample``, ``Contract``/``Expand``); every
other module keeps its first input's stride.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import yaml

#: Strides of the usual layouts by level count, used when the architecture cannot be walked.
#: Two levels are YOLOv3-tiny's P4/P5; four are YOLOv5-P6's P3-P6 (YOLOv5-P2's P2-P5 is also
#: four levels, which is why the walk is tried first).
WELL_KNOWN_STRIDES = {
    1: (32.0,),
    2: (16.0, 32.0),
    3: (8.0, 16.0, 32.0),
    4: (8.0, 16.0, 32.0, 64.0),
    5: (8.0, 16.0, 32.0, 64.0, 128.0),
}

_DOWN_ARG = ("Conv", "GhostConv", "DWConv", "CrossConv", "MixConv2d", "nn.Conv2d")
_DETECT = ("Detect", "Segment")


@dataclass(frozen=True)
class YOLOv5Layout:
    """What a YOLOv5 yaml says about its detection levels.

    Attributes
    ----------
    n_levels : int
        Inputs of the Detect layer.
    strides : tuple of float or None
        The levels' strides, in the Detect layer's order (finest first in every YOLOv5 model).
    source : str
        ``"architecture"`` (walked), ``"well-known"`` (guessed from the level count) or ``"none"``.
    anchors_per_level : int or None
        N when the file says ``anchors: N``.
    detect_line : int
        1-based line of the Detect layer (0 when unknown).
    """

    n_levels: int
    strides: Optional[Tuple[float, ...]]
    source: str
    anchors_per_level: Optional[int]
    detect_line: int = 0


def _stride_of(module: str, args: List[Any], s_in: float) -> float:
    name = module.split(".")[-1] if module.startswith("models.") else module
    if name in _DOWN_ARG:
        stride = args[2] if len(args) > 2 else 1
        return s_in * float(stride if isinstance(stride, (int, float)) else 1)
    if name == "Focus":
        return s_in * 2
    if name == "nn.MaxPool2d":
        k = args[0] if args else 1
        stride = args[1] if len(args) > 1 else k
        return s_in * float(stride if isinstance(stride, (int, float)) else 1)
    if name == "nn.Upsample":
        scale = args[1] if len(args) > 1 else 2
        return s_in / float(scale if isinstance(scale, (int, float)) else 2)
    if name in ("Contract", "Expand"):
        gain = args[0] if args and isinstance(args[0], (int, float)) else 2
        return s_in * gain if name == "Contract" else s_in / gain
    return s_in


def yolov5_layout(text: str, path: str = "<yaml>") -> Optional[YOLOv5Layout]:
    """The levels of a YOLOv5 model yaml, or None when it has no Detect layer to read.

    Raises
    ------
    ValueError
        The yaml does not parse, or its Detect layer's ``from`` is not a list of layer indices.
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid yaml ({exc})") from None
    if not isinstance(doc, dict):
        return None
    layers = [x for part in ("backbone", "head") for x in (doc.get(part) or []) if isinstance(doc.get(part), list)]
    detect_at = [i for i, x in enumerate(layers) if isinstance(x, list) and len(x) >= 3 and x[2] in _DETECT]
    if not detect_at:
        return None
    d = detect_at[-1]
    src = layers[d][0]
    if not (isinstance(src, list) and src and all(isinstance(i, int) for i in src)):
        raise ValueError(f"{path}: the {layers[d][2]} layer's inputs must be a list of layer indices, got {src!r}")
    per_level = doc.get("anchors")
    per_level = per_level if isinstance(per_level, int) and not isinstance(per_level, bool) else None
    line = _detect_line(text, layers[d][2])
    strides = _walk(layers, d, src)
    if strides is not None:
        return YOLOv5Layout(len(src), strides, "architecture", per_level, line)
    known = WELL_KNOWN_STRIDES.get(len(src))
    return YOLOv5Layout(len(src), known, "well-known" if known else "none", per_level, line)


def _walk(layers: List[Any], d: int, src: List[int]) -> Optional[Tuple[float, ...]]:
    strides: List[float] = []
    try:
        for i, (f, _n, module, args) in enumerate(layers[:d]):
            first = f[0] if isinstance(f, list) else f
            s_in = 1.0 if (i == 0 and first == -1) else strides[first if first >= 0 else i + first]
            strides.append(_stride_of(str(module), list(args or []), s_in))
        out = tuple(strides[j if j >= 0 else d + j] for j in src)
    except (IndexError, TypeError, ValueError):
        return None
    return out if all(s > 0 for s in out) else None


def _detect_line(text: str, module: str) -> int:
    hits = [n for n, line in enumerate(text.splitlines(), 1) if f", {module}," in line.replace(" ,", ",")]
    return hits[-1] if hits else 0
