"""Reading anchors back from the files :func:`write_anchors` writes, and from anchor text."""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np
import numpy.typing as npt

from .._fileio import excerpt, sanitize
from .._results import Result
from ..datasets._yaml import load_yaml_text
from ._formats import (
    cfg_value,
    check_anchors,
    darknet_sections,
    export_format,
    find_anchor_generator,
    read_model_text,
    yaml_block,
)
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

    The file is read whole only if it is a regular file of at most
    :data:`~fastanchor.export._formats.MAX_MODEL_BYTES`; a YOLOv5 yaml through the bounded YAML
    reader of :mod:`fastanchor.datasets` (no alias expansion beyond its limits).

    Raises
    ------
    ValueError
        The file has no anchors to read, or is malformed in any way (not UTF-8, nested too
        deeply, numbers beyond the double range): the message names the file, and the line where
        known. Anchors that are not finite and positive are refused too.
    OSError
        The file cannot be read, is not a regular file, or is too large.
    """
    fmt = export_format(path)
    text = read_model_text(path)
    reader = {"yolov5": _read_yolov5, "darknet": _read_darknet, "mmdet": _read_mmdet}.get(fmt, _read_json)
    try:
        return reader(text, path)
    except ValueError as exc:
        if str(path) in str(exc):
            raise
        raise ValueError(f"{sanitize(path)}: {sanitize(str(exc), 300)}") from None
    except (TypeError, OverflowError, RecursionError, KeyError, IndexError, AttributeError) as exc:
        raise ValueError(
            f"{sanitize(path)}: cannot read the anchors ({type(exc).__name__}: {sanitize(str(exc), 120)})"
        ) from None


def _pairs(values: Any, where: str) -> np.ndarray:
    try:
        return check_anchors(values)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _read_yolov5(text: str, path: str) -> ReadAnchors:
    lines = text.splitlines(keepends=True)
    block = yaml_block(lines, "anchors")
    if block is None:
        raise ValueError(f"{path} has no top-level 'anchors:' entry (an anchor-free model?)")
    first, end = block
    snippet = "\n" * first + "".join(lines[first:end])  # blank lines before: errors give the file's lines
    doc = load_yaml_text(snippet, path)
    value = doc.get("anchors") if isinstance(doc, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(
            f"{path}:{first + 1}: 'anchors: {excerpt(value)}' asks for {excerpt(value)} anchors per level computed at "
            f"training time: "
            f"there are no anchors in the file"
        )
    if not isinstance(value, list) or not value:
        raise ValueError(f"{path}:{first + 1}: 'anchors' must be a list of levels")
    levels = [_pairs(level, f"{path}:{first + 1}") for level in value]
    try:
        layout = yolov5_layout(text, path)
    except ValueError:  # the rest of the file is not readable yaml: the anchors alone are still read
        layout = None
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
            raise ValueError(f"{path}:{found[0] + 1}: anchors={excerpt(found[1])} is not a list of numbers") from None
        this = _pairs(values, f"{path}:{found[0] + 1}")
        anchors = this if anchors is None else anchors
        mask = cfg_value(lines, first, end, "mask")
        try:
            idx = [int(x) for x in mask[1].split(",") if x.strip()] if mask else list(range(this.shape[0]))
        except ValueError:
            raise ValueError(f"{path}:{mask[0] + 1}: mask={excerpt(mask[1])} is not a list of integers") from None
        if any(not 0 <= i < this.shape[0] for i in idx):
            raise ValueError(
                f"{path}:{(mask or found)[0] + 1}: mask indices {idx} out of range for {this.shape[0]} anchors"
            )
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
        raise ValueError(
            f"{path}:{call.lineno}: base_sizes and strides must be literal lists or top-level names "
            f"bound to them ({exc})"
        ) from None
    return _mmdet_levels(base, strides, f"{path}:{call.lineno}", image_size_of(path))


def _mmdet_levels(base: Any, strides: Any, where: str, img_size: Optional[Tuple[int, int]]) -> ReadAnchors:
    if not isinstance(base, (list, tuple)) or not base:
        raise ValueError(f"{where}: base_sizes must be a list of levels")
    try:
        levels = [_pairs(level, where) for level in base]
        st = None
        if strides is not None:
            st = [float(s) if not isinstance(s, (list, tuple)) else float(s[0]) for s in strides]
            if not all(math.isfinite(s) and s > 0 for s in st):
                raise ValueError
    except (TypeError, OverflowError, IndexError, ValueError) as exc:
        if isinstance(exc, ValueError) and where in str(exc):
            raise
        raise ValueError(f"{where}: base_sizes and strides must be literal lists of positive numbers") from None
    if st is not None and len(st) == len(levels):
        order = sorted(range(len(levels)), key=lambda i: st[i])
        levels = [levels[i] for i in order]
        st = [st[i] for i in order]
    return ReadAnchors(levels=levels, strides=tuple(st) if st else None, format="mmdet", img_size=img_size)


def _read_json(text: str, path: str) -> ReadAnchors:
    try:
        doc = json.loads(text)
    except RecursionError:
        raise ValueError(f"{path}: not valid json (nested too deeply)") from None
    except ValueError as exc:
        message = sanitize(str(getattr(exc, "msg", exc)), 120)
        raise ValueError(f"{path}:{getattr(exc, 'lineno', '?')}: not valid json ({message})") from None
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
    ok_img = isinstance(img, (int, float)) and not isinstance(img, bool) and 0 < img < 1e9
    img_size = (int(img), int(img)) if ok_img else None
    if (
        isinstance(strides, list)
        and len(strides) == len(levels)
        and all(isinstance(s, (int, float)) and not isinstance(s, bool) and 0 < s < 1e9 for s in strides)
    ):
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
        raise ValueError(f"anchors must be numbers separated by commas, got {excerpt(text, 80)}")
    if not numbers or len(numbers) % 2:
        raise ValueError(f"anchors must be (width, height) pairs, got {len(numbers)} numbers in {excerpt(text, 80)}")
    return check_anchors([float(x) for x in numbers])
