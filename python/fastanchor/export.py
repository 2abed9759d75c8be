"""Write anchors into the files detectors read them from, and read them back.

The format follows the file name:

========================  =====================================================================
``.yaml`` / ``.yml``      YOLOv5 / Ultralytics model yaml: the top-level ``anchors:`` block of a
                          copy of the template (``--model``) is replaced, everything else
                          (comments included) is kept byte for byte. Without a template, a yaml
                          holding just the ``anchors:`` block.
``.cfg``                  darknet: the ``anchors=``, ``mask=`` and ``num=`` lines of every
                          ``[yolo]`` section of a copy of the template; without one, a snippet
                          of ``[yolo]`` sections to paste.
``.py``                   mmdetection: the ``base_sizes`` (and ``strides``) of the
                          ``YOLOAnchorGenerator`` in a copy of the template config; without one,
                          a ``prior_generator = dict(...)`` snippet.
``.json``                 ``{"anchors": [[[w, h], ...] per level], "strides": [...], ...}``.
========================  =====================================================================

Anchors are written rounded (:func:`round_anchors`); :func:`read_anchors` reads any of these
files back as per-level arrays, so what was written can be re-scored.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

__all__ = [
    "EXPORT_FORMATS",
    "ReadAnchors",
    "export_format",
    "format_anchor_list",
    "level_name",
    "read_anchors",
    "round_anchors",
    "write_anchors",
]

#: File suffix -> format name.
EXPORT_FORMATS = {".yaml": "yolov5", ".yml": "yolov5", ".cfg": "darknet", ".py": "mmdet", ".json": "json"}


@dataclass(frozen=True)
class ReadAnchors:
    """Anchors read from a file.

    Attributes
    ----------
    levels : list of ndarray (m, 2) float64
        The anchors of each detection level, finest level (smallest stride) first.
    strides : tuple of float or None
        The levels' strides when the file gives them (mmdetection, json), else None.
    format : str
        ``"yolov5"``, ``"darknet"``, ``"mmdet"`` or ``"json"``.
    img_size : tuple of int or None
        The network input size ``(width, height)`` the file states (darknet ``[net]``, json).
    """

    levels: List[np.ndarray]
    strides: Optional[Tuple[float, ...]]
    format: str
    img_size: Optional[Tuple[int, int]] = None

    @property
    def anchors(self) -> np.ndarray:
        """All anchors, (k, 2), level after level."""
        return np.concatenate(self.levels) if self.levels else np.zeros((0, 2))


def export_format(path: str) -> str:
    """The format written to ``path``, from its suffix (see the module docstring)."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in EXPORT_FORMATS:
        raise ValueError(
            f"cannot tell what to write to {path}: the file name must end in .yaml/.yml (YOLOv5 model), .cfg "
            f"(darknet), .py (mmdetection) or .json"
        )
    return EXPORT_FORMATS[suffix]


def round_anchors(anchors: Any, decimals: int = 0) -> np.ndarray:
    """Anchors as they are written: rounded to ``decimals`` places (whole pixels by default,
    YOLOv5's convention), and never below one unit of the last place."""
    a = np.asarray(anchors, dtype=np.float64)
    unit = 10.0 ** (-decimals)
    return np.maximum(np.round(a, decimals), unit)


def _num(v: float, decimals: int) -> str:
    return f"{v:.{decimals}f}" if decimals > 0 else f"{int(round(v))}"


def format_anchor_list(level: np.ndarray, decimals: int = 0) -> str:
    """``"10,13, 16,30, 33,23"``: one level's anchors as YOLOv5 and darknet write them."""
    return ", ".join(f"{_num(w, decimals)},{_num(h, decimals)}" for w, h in np.asarray(level).tolist())


def level_name(stride: float) -> str:
    """``"P3/8"`` for stride 8 (a power of two), else ``"stride 12"``."""
    p = math.log2(stride) if stride > 0 else 0.5
    return f"P{int(p)}/{stride:g}" if p == int(p) else f"stride {stride:g}"


# --- writing -----------------------------------------------------------------------------------------


def write_anchors(
    path: str,
    levels: Sequence[Any],
    strides: Sequence[float],
    *,
    template: Optional[str] = None,
    decimals: int = 0,
    header: str = "",
    metadata: Optional[Dict[str, Any]] = None,
) -> str:
    """Write per-level anchors to ``path`` in the format its suffix names; returns that format.

    Parameters
    ----------
    path : str
        The output file (its suffix picks the format; see the module docstring).
    levels : sequence of array_like (m, 2)
        The anchors of each level, finest first, in pixels of the network input.
    strides : sequence of float
        The levels' strides, finest first.
    template : str, optional
        A model file of the same format to copy with only its anchors replaced.
    decimals : int
        Decimal places written (0: whole pixels).
    header : str
        A one-line note written as a comment where the format allows it.
    metadata : dict, optional
        Extra fields for the json output.
    """
    fmt = export_format(path)
    lv = [round_anchors(np.asarray(a, dtype=np.float64).reshape(-1, 2), decimals) for a in levels]
    st = [float(s) for s in strides]
    if len(lv) != len(st):
        raise ValueError(f"{len(lv)} levels of anchors but {len(st)} strides")
    if template is not None:
        template_fmt = export_format(template)
        if template_fmt != fmt:
            raise ValueError(f"the template {template} is a {template_fmt} file but {path} is {fmt}: use the same kind of file")
        with open(template, encoding="utf-8") as f:
            text = f.read()
    else:
        text = None
    if fmt == "yolov5":
        out = _yolov5_text(text, lv, st, decimals, header, template)
    elif fmt == "darknet":
        out = _darknet_text(text, lv, st, decimals, header, template)
    elif fmt == "mmdet":
        out = _mmdet_text(text, lv, st, decimals, header, template)
    else:
        doc: Dict[str, Any] = {"anchors": [[[_jsnum(w, decimals), _jsnum(h, decimals)] for w, h in a.tolist()] for a in lv],
                               "strides": [_jsnum(s, 6) for s in st]}
        doc.update(metadata or {})
        out = dumps_json(doc) + "\n"
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(out)
    return fmt


def dumps_json(doc: Any) -> str:
    """Indented json with every innermost list of numbers on one line (``[10, 13]``)."""
    text = json.dumps(doc, indent=2)
    return re.sub(
        r"\[\s+((?:-?[\d.eE+-]+,\s+)*-?[\d.eE+-]+)\s+\]",
        lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
        text,
    )


def _jsnum(v: float, decimals: int) -> Any:
    return int(round(v)) if decimals == 0 or float(v).is_integer() else round(float(v), decimals)


def _yaml_block(lines: List[str], key: str) -> Optional[Tuple[int, int]]:
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


def _yolov5_block(lv: List[np.ndarray], st: List[float], decimals: int, key_line: str) -> List[str]:
    out = [key_line]
    for a, s in zip(lv, st):
        out.append(f"  - [{format_anchor_list(a, decimals)}]  # {level_name(s)}\n")
    return out


def _yolov5_text(text: Optional[str], lv, st, decimals, header, template) -> str:
    if text is None:
        lines = [f"# {header}\n"] if header else []
        return "".join(lines + _yolov5_block(lv, st, decimals, "anchors:\n"))
    lines = text.splitlines(keepends=True)
    block = _yaml_block(lines, "anchors")
    if block is None:
        raise ValueError(f"{template} has no top-level 'anchors:' entry (an anchor-free model?): nothing to replace")
    first, end = block
    key_line = lines[first]
    # keep a comment on the key's line, drop an inline value
    m = re.match(r"^(anchors\s*:)\s*([^#\n]*?)\s*(#.*)?$", key_line.rstrip("\n"))
    comment = f"  {m.group(3)}" if m and m.group(3) else ""
    newline = "\r\n" if key_line.endswith("\r\n") else "\n"
    new = _yolov5_block(lv, st, decimals, f"anchors:{comment}{newline}")
    new = [s.replace("\n", newline) if newline != "\n" else s for s in new]
    return "".join(lines[:first] + new + lines[end:])


_SECTION = re.compile(r"^\s*\[([^\]]+)\]")


def _darknet_sections(lines: List[str]) -> List[Tuple[str, int, int]]:
    """(name, first line, end line) of every ``[section]``."""
    starts = [(m.group(1).strip().lower(), i) for i, line in enumerate(lines) if (m := _SECTION.match(line))]
    return [(name, i, starts[j + 1][1] if j + 1 < len(starts) else len(lines)) for j, (name, i) in enumerate(starts)]


def _cfg_value(lines: List[str], first: int, end: int, key: str) -> Optional[Tuple[int, str]]:
    for i in range(first + 1, end):
        s = lines[i].split("#", 1)[0].split(";", 1)[0]
        if "=" in s:
            k, v = s.split("=", 1)
            if k.strip().lower() == key:
                return i, v.strip()
    return None


def _darknet_text(text: Optional[str], lv, st, decimals, header, template) -> str:
    everything = np.concatenate(lv)
    k = everything.shape[0]
    all_anchors = ",  ".join(f"{_num(w, decimals)},{_num(h, decimals)}" for w, h in everything.tolist())
    masks, start = [], 0
    for a in lv:
        masks.append(",".join(str(start + j) for j in range(a.shape[0])))
        start += a.shape[0]
    if text is None:
        out = [f"# {header}\n"] if header else []
        out.append("# paste into the [yolo] sections of your darknet .cfg (finest level first here)\n")
        for level, (mask, s) in enumerate(zip(masks, st)):
            out.append(f"\n[yolo]\n# {level_name(s)}\nmask={mask}\nanchors={all_anchors}\nnum={k}\n")
        return "".join(out)
    lines = text.splitlines(keepends=True)
    sections = [s for s in _darknet_sections(lines) if s[0] in ("yolo", "gaussian_yolo")]
    if not sections:
        raise ValueError(f"{template} has no [yolo] section: nothing to replace")
    if len(sections) != len(lv):
        raise ValueError(
            f"{template} has {len(sections)} [yolo] sections but {len(lv)} levels of anchors were computed: "
            f"use --levels {len(sections)}"
        )
    # Which section is which level: by the anchors its current mask points to (finest first);
    # without masks, darknet's yolov3 order (coarsest first) cannot be told from yolov4's, so
    # the file order is taken as finest first.
    keys = []
    for order, (_, first, end) in enumerate(sections):
        found = _cfg_value(lines, first, end, "mask")
        try:
            keys.append((min(int(x) for x in found[1].split(",") if x.strip()), order) if found else (order, order))
        except ValueError:
            raise ValueError(f"{template}:{found[0] + 1}: mask={found[1]!r} is not a list of integers") from None
    level_of = {order: level for level, (_, order) in enumerate(sorted(keys))}
    edits: Dict[int, str] = {}
    inserts: Dict[int, List[str]] = {}
    for order, (_, first, end) in enumerate(sections):
        level = level_of[order]
        newline = "\r\n" if lines[first].endswith("\r\n") else "\n"
        for key, value in (("mask", masks[level]), ("anchors", all_anchors), ("num", str(k))):
            found = _cfg_value(lines, first, end, key)
            if found is not None:
                edits[found[0]] = f"{key}={value}{newline}"
            else:
                inserts.setdefault(first, []).append(f"{key}={value}{newline}")
    out = []
    for i, line in enumerate(lines):
        out.append(edits.get(i, line))
        if i in inserts:
            if not out[-1].endswith("\n"):
                out[-1] += "\n"
            out.extend(inserts[i])
    return "".join(out)


def _mmdet_literal(lv, st, decimals, indent: str, order: List[int]) -> Tuple[str, str]:
    rows = []
    for level in order:
        pairs = ", ".join(f"({_num(w, decimals)}, {_num(h, decimals)})" for w, h in lv[level].tolist())
        rows.append(f"{indent}    [{pairs}],  # {level_name(st[level])}\n")
    base = "[\n" + "".join(rows) + f"{indent}]"
    strides = "[" + ", ".join(f"{s:g}" for s in (st[i] for i in order)) + "]"
    return base, strides


def _mmdet_text(text: Optional[str], lv, st, decimals, header, template) -> str:
    coarse_first = list(range(len(lv)))[::-1]  # mmdetection's YOLOv3 lists the coarsest level first
    if text is None:
        base, strides = _mmdet_literal(lv, st, decimals, "    ", coarse_first)
        out = [f"# {header}\n"] if header else []
        out.append("# paste into model.bbox_head of an mmdetection YOLOv3-style config\n")
        out.append(
            f"prior_generator = dict(\n    type=\"YOLOAnchorGenerator\",\n    base_sizes={base},\n    strides={strides},\n)\n"
        )
        return "".join(out)
    call, where = _find_anchor_generator(text, template)
    kw = {k.arg: k.value for k in call.keywords if k.arg}
    if "base_sizes" not in kw:
        raise ValueError(f"{template}:{call.lineno}: the anchor generator has no base_sizes to replace")
    old_strides = None
    if "strides" in kw:
        try:
            old_strides = [float(s) for s in ast.literal_eval(kw["strides"])]
        except (ValueError, TypeError):
            old_strides = None
    if old_strides is not None and len(old_strides) != len(lv):
        raise ValueError(
            f"{template}:{call.lineno}: the anchor generator has {len(old_strides)} levels but {len(lv)} were computed: "
            f"use --levels {len(old_strides)}"
        )
    order = coarse_first if old_strides is None or old_strides[0] > old_strides[-1] else list(range(len(lv)))
    lines = text.splitlines(keepends=True)
    node = kw["base_sizes"]
    indent = re.match(r"\s*", lines[node.lineno - 1]).group(0)
    base, strides = _mmdet_literal(lv, st, decimals, indent, order)
    replacements = [(node, base)]
    if "strides" in kw:
        replacements.append((kw["strides"], strides))
    offsets = np.cumsum([0] + [len(s) for s in lines])
    out = text
    for n, new in sorted(replacements, key=lambda r: (r[0].lineno, r[0].col_offset), reverse=True):
        a = offsets[n.lineno - 1] + _char_col(lines[n.lineno - 1], n.col_offset)
        b = offsets[n.end_lineno - 1] + _char_col(lines[n.end_lineno - 1], n.end_col_offset)
        out = out[:a] + new + out[b:]
    return out


def _char_col(line: str, byte_col: int) -> int:
    """ast gives UTF-8 byte columns; the character column of the same place."""
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


def _find_anchor_generator(text: str, path: Optional[str]) -> Tuple[ast.Call, str]:
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid Python ({exc.msg})") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            kw = {k.arg: k.value for k in node.keywords if k.arg}
            t = kw.get("type")
            if isinstance(t, ast.Constant) and t.value == "YOLOAnchorGenerator":
                return node, "YOLOAnchorGenerator"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and any(k.arg == "base_sizes" for k in node.keywords):
            return node, "base_sizes"
    raise ValueError(f"{path} has no YOLOAnchorGenerator (dict(type='YOLOAnchorGenerator', base_sizes=...))")


# --- reading -----------------------------------------------------------------------------------------------


def read_anchors(path: str) -> ReadAnchors:
    """Read per-level anchors from a YOLOv5 yaml, darknet cfg, mmdetection config or json file.

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
    block = _yaml_block(lines, "anchors")
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
    return ReadAnchors(levels=levels, strides=None, format="yolov5")


def _read_darknet(text: str, path: str) -> ReadAnchors:
    lines = text.splitlines(keepends=True)
    sections = _darknet_sections(lines)
    yolo = [s for s in sections if s[0] in ("yolo", "gaussian_yolo")]
    if not yolo:
        raise ValueError(f"{path} has no [yolo] section")
    img_size = None
    for name, first, end in sections:
        if name == "net":
            w = _cfg_value(lines, first, end, "width")
            h = _cfg_value(lines, first, end, "height")
            if w and h:
                try:
                    img_size = (int(w[1]), int(h[1]))
                except ValueError:
                    img_size = None
    levels = []
    anchors = None
    for _, first, end in yolo:
        found = _cfg_value(lines, first, end, "anchors")
        if found is None:
            raise ValueError(f"{path}:{first + 1}: this [yolo] section has no anchors= line")
        try:
            values = [float(x) for x in found[1].replace(" ", "").split(",") if x]
        except ValueError:
            raise ValueError(f"{path}:{found[0] + 1}: anchors={found[1]!r} is not a list of numbers") from None
        this = _pairs(values, f"{path}:{found[0] + 1}")
        anchors = this if anchors is None else anchors
        mask = _cfg_value(lines, first, end, "mask")
        try:
            idx = [int(x) for x in mask[1].split(",") if x.strip()] if mask else list(range(this.shape[0]))
        except ValueError:
            raise ValueError(f"{path}:{mask[0] + 1}: mask={mask[1]!r} is not a list of integers") from None
        if any(not 0 <= i < this.shape[0] for i in idx):
            raise ValueError(f"{path}:{(mask or found)[0] + 1}: mask indices {idx} out of range for {this.shape[0]} anchors")
        levels.append((min(idx) if idx else 0, this[idx]))
    levels.sort(key=lambda t: t[0])
    return ReadAnchors(levels=[a for _, a in levels], strides=None, format="darknet", img_size=img_size)


def _read_mmdet(text: str, path: str) -> ReadAnchors:
    call, _ = _find_anchor_generator(text, path)
    kw = {k.arg: k.value for k in call.keywords if k.arg}
    if "base_sizes" not in kw:
        raise ValueError(f"{path}:{call.lineno}: the anchor generator has no base_sizes")
    try:
        base = ast.literal_eval(kw["base_sizes"])
        strides = [float(s) if not isinstance(s, (list, tuple)) else float(s[0]) for s in ast.literal_eval(kw["strides"])] if "strides" in kw else None
    except (ValueError, TypeError, SyntaxError):
        raise ValueError(f"{path}:{call.lineno}: base_sizes and strides must be literal lists") from None
    levels = [_pairs(level, f"{path}:{call.lineno}") for level in base]
    if strides is not None and len(strides) == len(levels):
        order = sorted(range(len(levels)), key=lambda i: strides[i])
        levels = [levels[i] for i in order]
        strides = [strides[i] for i in order]
    return ReadAnchors(levels=levels, strides=tuple(strides) if strides else None, format="mmdet")


def _read_json(text: str, path: str) -> ReadAnchors:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}:{getattr(exc, 'lineno', '?')}: not valid json ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(doc, dict) or "anchors" not in doc:
        raise ValueError(f"{path}: expected a json object with an 'anchors' list")
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
