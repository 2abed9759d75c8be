"""Reading anchors back from the files :func:`write_anchors` writes, and from anchor text."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np
import numpy.typing as npt
import yaml

from .._results import Result
from ._formats import cfg_value, darknet_sections, export_format, find_anchor_generator, yaml_block
from ._mmconfig import has_base, image_size_of, load_generator, merged_strides, resolve, top_level_literals
from ._yolov5arch import yolov5_layout


@dataclass(frozen=True, eq=False, repr=False)
class ReadAnchors(Result):
    """Anchors read from a file.

    Immutable, with read-only arrays, and compared by identity (so hashable).

    Attributes
    ----------
    levels : list of ndarray (m, 2) float64
        The anchors of each detection level, finest level (smallest stride) first.
    strides : tuple of float or None
        The levels' strides when the file gives them (mmdetection, json) or its architecture
        implies them (a YOLOv5 yaml's Detect layer inputs), else None.
    format : str
        ``"yolov5"``, ``"darknet"``, ``"mmdet"`` or ``"json"``.
    img_size : tuple of int or None
        The network input size ``(width, height)`` the file states (darknet ``[net]``, json).
    """

    levels: List[npt.NDArray[np.float64]]
    strides: Optional[Tuple[float, ...]]
    format: str
    img_size: Optional[Tuple[int, int]] = None

    @property
    def anchors(self) -> npt.NDArray[np.float64]:
        """All anchors, (k, 2), level after level."""
        return np.concatenate(self.levels) if self.levels else np.zeros((0, 2))


def read_anchors(path: str) -> ReadAnchors:
    """Read per-level anchors from a YOLOv5 yaml, darknet cfg, mmdetection config or json file.

    The json may be fastanchor's or the ``anchor_optimize_result.json`` of mmyolo's and
    mmdetection's ``optimize_anchors.py``.

    Levels come back finest first (for darknet, by the ``mask`` indices; for mmdetection and
    json, by stride; for YOLOv5, in file order, which is P3 first).

    Raises
    ------
    ValueError
        The file has no anchors to read (the message says why and where).
    """
    fmt = export_format(path)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if fmt == "yolov5":
        return _read_yolov5(text, path)
    if fmt == "darknet":
        return _read_darknet(text, path)
    if fmt == "mmdet":
        return _read_mmdet(text, path)
    return _read_json(text, path)


def _pairs(values: Any, where: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: the anchors are not numbers") from None
    if arr.size == 0 or arr.size % 2:
        raise ValueError(f"{where}: anchors must be (width, height) pairs, got {arr.size} numbers")
    return arr.reshape(-1, 2)


def _read_yolov5(text: str, path: str) -> ReadAnchors:
    lines = text.splitlines(keepends=True)
    block = yaml_block(lines, "anchors")
    if block is None:
        raise ValueError(f"{path} has no top-level 'anchors:' entry (an anchor-free model?)")
    first, end = block
    snippet = "".join(lines[first:end])
    try:
        value = yaml.safe_load(snippet)["anchors"]
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}:{first + 1}: cannot read the anchors ({exc})") from None
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(
            f"{path}:{first + 1}: 'anchors: {value}' asks for {value} anchors per level computed at training time: "
            f"there are no anchors in the file"
        )
    if not isinstance(value, list) or not value:
        raise ValueError(f"{path}:{first + 1}: 'anchors' must be a list of levels")
    levels = [_pairs(level, f"{path}:{first + 1}") for level in value]
    layout = yolov5_layout(text, path)
    strides = None
    if layout is not None:
        if layout.n_levels != len(levels):
            raise ValueError(
                f"{path}:{first + 1}: 'anchors' has {len(levels)} levels but the {layout.n_levels}-input Detect layer "
                f"(line {layout.detect_line}) needs {layout.n_levels}"
            )
        strides = layout.strides
    return ReadAnchors(levels=levels, strides=strides, format="yolov5")


def _read_darknet(text: str, path: str) -> ReadAnchors:
    lines = text.splitlines(keepends=True)
    sections = darknet_sections(lines)
    yolo = [s for s in sections if s[0] in ("yolo", "gaussian_yolo")]
    if not yolo:
        raise ValueError(f"{path} has no [yolo] section")
    img_size = None
    for name, first, end in sections:
        if name == "net":
            w = cfg_value(lines, first, end, "width")
            h = cfg_value(lines, first, end, "height")
            if w and h:
                try:
                    img_size = (int(w[1]), int(h[1]))
                except ValueError:
                    img_size = None
    levels = []
    anchors = None
    for _, first, end in yolo:
        found = cfg_value(lines, first, end, "anchors")
        if found is None:
            raise ValueError(f"{path}:{first + 1}: this [yolo] section has no anchors= line")
        try:
            values = [float(x) for x in found[1].replace(" ", "").split(",") if x]
        except ValueError:
            raise ValueError(f"{path}:{found[0] + 1}: anchors={found[1]!r} is not a list of numbers") from None
        this = _pairs(values, f"{path}:{found[0] + 1}")
        anchors = this if anchors is None else anchors
        mask = cfg_value(lines, first, end, "mask")
        try:
            idx = [int(x) for x in mask[1].split(",") if x.strip()] if mask else list(range(this.shape[0]))
        except ValueError:
            raise ValueError(f"{path}:{mask[0] + 1}: mask={mask[1]!r} is not a list of integers") from None
        if any(not 0 <= i < this.shape[0] for i in idx):
            raise ValueError(f"{path}:{(mask or found)[0] + 1}: mask indices {idx} out of range for "
                             f"{this.shape[0]} anchors")
        levels.append((min(idx) if idx else 0, this[idx]))
    levels.sort(key=lambda t: t[0])
    return ReadAnchors(levels=[a for _, a in levels], strides=None, format="darknet", img_size=img_size)


def _read_mmdet(text: str, path: str) -> ReadAnchors:
    try:
        call, _ = find_anchor_generator(text, path)
    except ValueError as exc:
        if "no YOLOAnchorGenerator" not in str(exc) or not has_base(text):
            raise
        # inherited through _base_ (or an override of num_classes only): mmengine merges the chain
        _, gen, img = load_generator(path)
        return _mmdet_levels(gen["base_sizes"], gen.get("strides"), f"{path} (merged config)", img)
    kw = {k.arg: k.value for k in call.keywords if k.arg}
    if "base_sizes" not in kw:
        raise ValueError(f"{path}:{call.lineno}: the anchor generator has no base_sizes")
    names = top_level_literals(ast.parse(text))
    try:
        base, _ = resolve(kw["base_sizes"], names)
        strides = resolve(kw["strides"], names)[0] if "strides" in kw else merged_strides(path)
    except ValueError as exc:
        raise ValueError(f"{path}:{call.lineno}: base_sizes and strides must be literal lists or top-level names "
                         f"bound to them ({exc})") from None
    return _mmdet_levels(base, strides, f"{path}:{call.lineno}", image_size_of(path))


def _mmdet_levels(base: Any, strides: Any, where: str, img_size: Optional[Tuple[int, int]]) -> ReadAnchors:
    if not isinstance(base, (list, tuple)) or not base:
        raise ValueError(f"{where}: base_sizes must be a list of levels")
    levels = [_pairs(level, where) for level in base]
    st = None
    if strides is not None:
        try:
            st = [float(s) if not isinstance(s, (list, tuple)) else float(s[0]) for s in strides]
        except (TypeError, ValueError):
            raise ValueError(f"{where}: strides must be numbers or (w, h) pairs, got {strides!r}") from None
    if st is not None and len(st) == len(levels):
        order = sorted(range(len(levels)), key=lambda i: st[i])
        levels = [levels[i] for i in order]
        st = [st[i] for i in order]
    return ReadAnchors(levels=levels, strides=tuple(st) if st else None, format="mmdet", img_size=img_size)


def _read_json(text: str, path: str) -> ReadAnchors:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}:{getattr(exc, 'lineno', '?')}: not valid json ({getattr(exc, 'msg', exc)})") from None
    if isinstance(doc, list):
        return _read_optimize_result(doc, path)
    if not isinstance(doc, dict) or "anchors" not in doc:
        raise ValueError(f"{path}: expected a json object with an 'anchors' list, or mmyolo's list of levels")
    value = doc["anchors"]
    if isinstance(value, list) and value and isinstance(value[0], list) and value[0] and isinstance(value[0][0], list):
        levels = [_pairs(level, path) for level in value]
    else:
        levels = [_pairs(value, path)]
    strides = doc.get("strides")
    img = doc.get("img_size")
    img_size = (int(img), int(img)) if isinstance(img, (int, float)) else None
    if isinstance(strides, list) and len(strides) == len(levels):
        order = sorted(range(len(levels)), key=lambda i: strides[i])
        levels = [levels[i] for i in order]
        strides = tuple(float(strides[i]) for i in order)
    else:
        strides = None
    return ReadAnchors(levels=levels, strides=strides, format="json", img_size=img_size)


def _read_optimize_result(doc: List[Any], path: str) -> ReadAnchors:
    """The ``anchor_optimize_result.json`` of the OpenMMLab ``optimize_anchors.py``: mmyolo writes
    ``[[[w, h], ...] per level]`` (finest level first: its optimizer sorts the anchors by area
    before splitting them), mmdetection one list ``[[w, h], ...]`` (read as one level). The file
    gives no strides."""
    if not doc:
        raise ValueError(f"{path}: the list of anchors is empty")

    def is_pair(p: Any) -> bool:
        return isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) for v in p)

    if all(is_pair(p) for p in doc):
        return ReadAnchors(levels=[_pairs(doc, path)], strides=None, format="json")
    levels = []
    for i, level in enumerate(doc):
        if not (isinstance(level, list) and level and all(is_pair(p) for p in level)):
            raise ValueError(f"{path}: level {i} must be a list of [width, height] pairs, got {level!r:.80}")
        levels.append(_pairs(level, f"{path}: level {i}"))
    return ReadAnchors(levels=levels, strides=None, format="json")


def parse_anchor_text(text: str) -> np.ndarray:
    """Anchors from a string such as ``"10,13, 16,30, 33,23"`` or YOLOv5's
    ``"[10,13, 16,30, 33,23], [30,61, 62,45, 59,119]"``: every number, taken in pairs."""
    numbers = re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", text)
    rest = re.sub(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[\s,;\[\]()|]", "", text)
    if rest:
        raise ValueError(f"anchors must be numbers separated by commas, got {text!r}")
    if not numbers or len(numbers) % 2:
        raise ValueError(f"anchors must be (width, height) pairs, got {len(numbers)} numbers in {text!r}")
    return np.array([float(x) for x in numbers]).reshape(-1, 2)
