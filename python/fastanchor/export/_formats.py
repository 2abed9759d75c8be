"""What the writers and the readers share: the format of a file name, how numbers are written,
and where the anchors are in each format's text."""

from __future__ import annotations

import ast
import math
import os
import re
from typing import List, Optional, Tuple

import numpy as np
import numpy.typing as npt

#: File suffix -> format name.
EXPORT_FORMATS = {".yaml": "yolov5", ".yml": "yolov5", ".cfg": "darknet", ".py": "mmdet", ".json": "json"}


def export_format(path: str) -> str:
    """The format written to ``path``, from its suffix (see :mod:`fastanchor.export`)."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in EXPORT_FORMATS:
        raise ValueError(
            f"cannot tell what to write to {path}: the file name must end in .yaml/.yml (YOLOv5 model), .cfg "
            f"(darknet), .py (mmdetection) or .json"
        )
    return EXPORT_FORMATS[suffix]


def round_anchors(anchors: npt.ArrayLike, decimals: int = 0) -> npt.NDArray[np.float64]:
    """Anchors as they are written: rounded to ``decimals`` places (whole pixels by default,
    YOLOv5's convention), and never below one unit of the last place.

    Parameters
    ----------
    anchors : array_like
        Anchor widths and heights, any shape.
    decimals : int
        Decimal places kept.

    Returns
    -------
    ndarray, float64
        The rounded anchors, of the shape of ``anchors``.
    """
    a = np.asarray(anchors, dtype=np.float64)
    unit = 10.0 ** (-decimals)
    return np.maximum(np.round(a, decimals), unit)


def format_number(v: float, decimals: int) -> str:
    """``v`` as written: ``decimals`` places, or a whole number when ``decimals`` is 0."""
    return f"{v:.{decimals}f}" if decimals > 0 else f"{int(round(v))}"


def format_anchor_list(level: npt.ArrayLike, decimals: int = 0) -> str:
    """``"10,13, 16,30, 33,23"``: one level's anchors as YOLOv5 and darknet write them."""
    pairs = np.asarray(level).tolist()
    return ", ".join(f"{format_number(w, decimals)},{format_number(h, decimals)}" for w, h in pairs)


def level_name(stride: float) -> str:
    """``"P3/8"`` for stride 8 (a power of two), else ``"stride 12"``."""
    p = math.log2(stride) if stride > 0 else 0.5
    return f"P{int(p)}/{stride:g}" if p == int(p) else f"stride {stride:g}"


def yaml_block(lines: List[str], key: str) -> Optional[Tuple[int, int]]:
    """(first, end) line indexes of the top-level ``key:`` and its indented value block (the
    key's line included; trailing blank and comment lines excluded)."""
    pattern = re.compile(rf"^{re.escape(key)}\s*:(\s|$)")
    for i, line in enumerate(lines):
        if pattern.match(line):
            end = i + 1
            last = i + 1
            while end < len(lines):
                s = lines[end]
                stripped = s.strip()
                if stripped and not stripped.startswith("#") and s[0] not in " \t-":
                    break
                end += 1
                if stripped and not stripped.startswith("#"):
                    last = end
            return i, last
    return None


_SECTION = re.compile(r"^\s*\[([^\]]+)\]")


def darknet_sections(lines: List[str]) -> List[Tuple[str, int, int]]:
    """(name, first line, end line) of every ``[section]``."""
    starts = [(m.group(1).strip().lower(), i) for i, line in enumerate(lines) if (m := _SECTION.match(line))]
    return [(name, i, starts[j + 1][1] if j + 1 < len(starts) else len(lines)) for j, (name, i) in enumerate(starts)]


def cfg_value(lines: List[str], first: int, end: int, key: str) -> Optional[Tuple[int, str]]:
    for i in range(first + 1, end):
        s = lines[i].split("#", 1)[0].split(";", 1)[0]
        if "=" in s:
            k, v = s.split("=", 1)
            if k.strip().lower() == key:
                return i, v.strip()
    return None


def find_anchor_generator(text: str, path: Optional[str]) -> Tuple[ast.Call, str]:
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid Python ({exc.msg})") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            kw = {k.arg: k.value for k in node.keywords if k.arg}
            t = kw.get("type")
            if isinstance(t, ast.Constant) and t.value in ("YOLOAnchorGenerator", "mmdet.YOLOAnchorGenerator"):
                return node, "YOLOAnchorGenerator"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and any(k.arg == "base_sizes" for k in node.keywords):
            return node, "base_sizes"
    raise ValueError(f"{path} has no YOLOAnchorGenerator (dict(type='YOLOAnchorGenerator', base_sizes=...))")
