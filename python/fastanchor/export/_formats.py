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

from .._fileio import sanitize

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


#: The most decimal places written (a double holds 15 to 17 significant digits).
MAX_DECIMALS = 12
#: Largest model or config file read (a YOLOv5 model yaml is 1-2 kB, a darknet cfg 10-30 kB).
MAX_MODEL_BYTES = 16 << 20


def check_decimals(decimals: object, name: str = "decimals") -> int:
    """``decimals`` as an int from 0 to :data:`MAX_DECIMALS`, else a TypeError or ValueError
    naming it."""
    if isinstance(decimals, (bool, np.bool_)) or not isinstance(decimals, (int, np.integer)):
        raise TypeError(f"{name} must be an integer from 0 to {MAX_DECIMALS}, got {type(decimals).__name__}")
    if not 0 <= int(decimals) <= MAX_DECIMALS:
        raise ValueError(f"{name} must be from 0 to {MAX_DECIMALS} (the places a double holds), got {decimals}")
    return int(decimals)


def _check_sizes(a: npt.NDArray[np.float64], name: str) -> None:
    bad = ~(np.isfinite(a) & (a > 0))
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1) if bad.ndim > 1 else bad)[0])
        shown = ", ".join(f"{v:g}" for v in np.atleast_1d(a[i]).ravel()[:4])
        raise ValueError(
            f"{name}[{i}] is ({shown}): anchors must be finite and positive ({int(bad.sum())} values are not)"
        )


def check_anchors(anchors: npt.ArrayLike, name: str = "anchors") -> npt.NDArray[np.float64]:
    """``anchors`` as a (k, 2) float64 array of finite positive sizes, else a ValueError that
    names the first bad anchor."""
    try:
        a = np.asarray(anchors, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be numbers (width, height pairs)") from None
    if a.size == 0 or a.size % 2:
        raise ValueError(f"{name} must be (width, height) pairs, got {a.size} numbers")
    a = a.reshape(-1, 2)
    _check_sizes(a, name)
    return a


def round_anchors(anchors: npt.ArrayLike, decimals: int = 0) -> npt.NDArray[np.float64]:
    """Anchors as they are written: rounded to ``decimals`` places (whole pixels by default,
    YOLOv5's convention), and never below one unit of the last place.

    Parameters
    ----------
    anchors : array_like
        Anchor widths and heights, any shape; finite and positive.
    decimals : int
        Decimal places kept, from 0 to :data:`MAX_DECIMALS`.

    Returns
    -------
    ndarray, float64
        The rounded anchors, of the shape of ``anchors``.

    Raises
    ------
    ValueError
        An anchor is not finite and positive (the message names the first), or ``decimals`` is
        out of range.
    """
    decimals = check_decimals(decimals)
    try:
        a = np.asarray(anchors, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("anchors must be numbers") from None
    _check_sizes(a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(-1), "anchors")
    unit = 10.0 ** (-decimals)
    return np.maximum(np.round(a, decimals), unit)


def read_model_text(path: str) -> str:
    """The text of a model or config file (a regular file of at most :data:`MAX_MODEL_BYTES`,
    UTF-8), newlines kept as they are. Raises ValueError naming the file when it is not UTF-8,
    OSError when it cannot be read."""
    from .._fileio import read_regular

    data = read_regular(path, MAX_MODEL_BYTES)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{sanitize(path)}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None


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
        raise ValueError(f"{path}:{exc.lineno}: not valid Python ({sanitize(str(exc.msg), 120)})") from None
    except (RecursionError, MemoryError, ValueError, OverflowError) as exc:  # nested too deeply, a NUL byte
        raise ValueError(f"{path}: not a readable Python config ({type(exc).__name__})") from None
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
