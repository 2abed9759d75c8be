"""Writing anchors into YOLOv5 yaml, darknet cfg, mmdetection config and json files."""

from __future__ import annotations

import ast
import json
import math
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

from .._fileio import atomic_write, excerpt
from ._formats import (
    cfg_value,
    check_anchors,
    check_decimals,
    darknet_sections,
    export_format,
    find_anchor_generator,
    format_anchor_list,
    format_number,
    level_name,
    read_model_text,
    round_anchors,
    yaml_block,
)
from ._mmconfig import (
    has_base,
    load_generator,
    merged_strides,
    override_text,
    rebase,
    replace_nodes,
    resolve,
    top_level_literals,
)
from ._yolov5arch import yolov5_layout


def write_anchors(
    path: str,
    levels: Sequence[npt.ArrayLike],
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
        The output file (its suffix picks the format; see :mod:`fastanchor.export`).
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

    The file is written atomically (a temporary file in the same folder, renamed over
    ``path``): a failure part way leaves an existing ``path`` as it was, so ``template`` may be
    ``path`` itself to update a model in place.

    Raises
    ------
    ValueError
        An anchor is not finite and positive (the message names it), a stride is not, or
        ``decimals`` is not from 0 to :data:`~fastanchor.export._formats.MAX_DECIMALS`; the
        template is malformed or of another format.
    OSError
        The template cannot be read, or ``path`` cannot be written (the message names it; an
        existing file there is unchanged).
    """
    fmt = export_format(path)
    decimals = check_decimals(decimals)
    lv = [round_anchors(check_anchors(a, f"levels[{i}]"), decimals) for i, a in enumerate(levels)]
    try:
        st = [float(s) for s in strides]
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"strides must be numbers, got {excerpt(strides)}") from None
    if not all(math.isfinite(s) and s > 0 for s in st):
        raise ValueError(f"strides must be finite and positive, got {excerpt(st)}")
    if len(lv) != len(st):
        raise ValueError(f"{len(lv)} levels of anchors but {len(st)} strides")
    if template is not None:
        template_fmt = export_format(template)
        if template_fmt != fmt:
            raise ValueError(
                f"the template {template} is a {template_fmt} file but {path} is {fmt}: use the same kind of file"
            )
        text: Optional[str] = read_model_text(template)
    else:
        text = None
    if fmt == "yolov5":
        out = _yolov5_text(text, lv, st, decimals, header, template)
    elif fmt == "darknet":
        out = _darknet_text(text, lv, st, decimals, header, template)
    elif fmt == "mmdet":
        out = _mmdet_text(text, lv, st, decimals, header, template, path)
    else:
        doc: Dict[str, Any] = {
            "anchors": [[[_jsnum(w, decimals), _jsnum(h, decimals)] for w, h in a.tolist()] for a in lv],
            "strides": [_jsnum(s, 6) for s in st],
        }
        doc.update(metadata or {})
        out = dumps_json(doc) + "\n"
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    atomic_write(path, out)
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


def _yolov5_block(lv: List[np.ndarray], st: List[float], decimals: int, key_line: str) -> List[str]:
    out = [key_line]
    for a, s in zip(lv, st):
        out.append(f"  - [{format_anchor_list(a, decimals)}]  # {level_name(s)}\n")
    return out


def _yolov5_text(
    text: Optional[str], lv: List[np.ndarray], st: List[float], decimals: int, header: str, template: Optional[str]
) -> str:
    if text is None:
        lines = [f"# {header}\n"] if header else []
        return "".join(lines + _yolov5_block(lv, st, decimals, "anchors:\n"))
    lines = text.splitlines(keepends=True)
    block = yaml_block(lines, "anchors")
    if block is None:
        raise ValueError(f"{template} has no top-level 'anchors:' entry (an anchor-free model?): nothing to replace")
    first, end = block
    layout = yolov5_layout(text, str(template))
    if layout is not None and layout.n_levels != len(lv):
        raise ValueError(
            f"{template}: its Detect layer (line {layout.detect_line}) takes {layout.n_levels} levels, "
            f"but {len(lv)} levels of anchors were given"
        )
    key_line = lines[first]
    # keep a comment on the key's line, drop an inline value and the comment about it
    # ("anchors: 3  # AutoAnchor evolves 3 anchors per P output layer" is stale above explicit anchors)
    m = re.match(r"^(anchors\s*:)\s*([^#\n]*?)\s*(#.*)?$", key_line.rstrip("\n"))
    comment = f"  {m.group(3)}" if m and m.group(3) and not m.group(2) else ""
    newline = "\r\n" if key_line.endswith("\r\n") else "\n"
    new = _yolov5_block(lv, st, decimals, f"anchors:{comment}{newline}")
    new = [s.replace("\n", newline) if newline != "\n" else s for s in new]
    return "".join(lines[:first] + new + lines[end:])


def _darknet_filters(
    lines: List[str], sections: List[Tuple[str, int, int]], first: int, end: int, n_new: int, template: Optional[str]
) -> Optional[Tuple[int, int]]:
    """``(line, filters)`` for the [convolutional] before the [yolo] section at ``first`` when its
    anchor count changes: darknet needs ``filters = (classes + 5) * len(mask)`` there (``+ 9`` for
    [Gaussian_yolo]), so the old filters per anchor are kept and multiplied by the new count.
    None when the count is unchanged."""
    mask = cfg_value(lines, first, end, "mask")
    num = cfg_value(lines, first, end, "num")
    try:
        n_old = len([x for x in mask[1].split(",") if x.strip()]) if mask else int(num[1]) if num else None
    except ValueError:
        n_old = None
    if n_old == n_new:
        return None
    conv = [sec for sec in sections if sec[2] <= first and sec[0] == "convolutional"]
    found = cfg_value(lines, conv[-1][1], conv[-1][2], "filters") if conv else None
    where = f"{template}:{first + 1}"
    if found is None or n_old is None:
        raise ValueError(
            f"{where}: this [yolo] section gets {n_new} anchors, but the filters= of the "
            "[convolutional] before it cannot be found to match (filters = (classes + 5) * anchors)"
        )
    try:
        old_filters = int(found[1])
    except ValueError:
        raise ValueError(f"{template}:{found[0] + 1}: filters={found[1]!r} is not an integer") from None
    if n_old <= 0 or old_filters % n_old:
        raise ValueError(
            f"{template}:{found[0] + 1}: filters={old_filters} is not a multiple of the {n_old} anchors "
            f"of the [yolo] section at line {first + 1}: cannot update it for {n_new} anchors"
        )
    return found[0], old_filters // n_old * n_new


def _darknet_text(
    text: Optional[str], lv: List[np.ndarray], st: List[float], decimals: int, header: str, template: Optional[str]
) -> str:
    everything = np.concatenate(lv)
    k = everything.shape[0]
    all_anchors = ",  ".join(
        f"{format_number(w, decimals)},{format_number(h, decimals)}" for w, h in everything.tolist()
    )
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
    sections = [s for s in darknet_sections(lines) if s[0] in ("yolo", "gaussian_yolo")]
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
        found = cfg_value(lines, first, end, "mask")
        try:
            keys.append((min(int(x) for x in found[1].split(",") if x.strip()), order) if found else (order, order))
        except ValueError:
            raise ValueError(f"{template}:{found[0] + 1}: mask={excerpt(found[1])} is not a list of integers") from None
    level_of = {order: level for level, (_, order) in enumerate(sorted(keys))}
    edits: Dict[int, str] = {}
    inserts: Dict[int, List[str]] = {}
    all_sections = darknet_sections(lines)
    for order, (_, first, end) in enumerate(sections):
        level = level_of[order]
        newline = "\r\n" if lines[first].endswith("\r\n") else "\n"
        filters = _darknet_filters(lines, all_sections, first, end, len(lv[level]), template)
        if filters is not None:
            edits[filters[0]] = f"filters={filters[1]}{newline}"
        for key, value in (("mask", masks[level]), ("anchors", all_anchors), ("num", str(k))):
            found = cfg_value(lines, first, end, key)
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


def _mmdet_literal(
    lv: List[np.ndarray], st: List[float], decimals: int, indent: str, order: List[int]
) -> Tuple[str, str]:
    rows = []
    for level in order:
        pairs = ", ".join(
            f"({format_number(w, decimals)}, {format_number(h, decimals)})" for w, h in lv[level].tolist()
        )
        rows.append(f"{indent}    [{pairs}],  # {level_name(st[level])}\n")
    base = "[\n" + "".join(rows) + f"{indent}]"
    strides = "[" + ", ".join(f"{s:g}" for s in (st[i] for i in order)) + "]"
    return base, strides


def _mmdet_text(
    text: Optional[str],
    lv: List[np.ndarray],
    st: List[float],
    decimals: int,
    header: str,
    template: Optional[str],
    path: str,
) -> str:
    coarse_first = list(range(len(lv)))[::-1]  # mmdetection's YOLOv3 lists the coarsest level first
    if text is None:
        base, strides = _mmdet_literal(lv, st, decimals, "            ", coarse_first)
        out = [f"# {header}\n"] if header else []
        out.append(
            "# an override for an mmdetection YOLOv3 config (YOLOV3Head's anchor_generator, coarsest level\n"
            "# first): add _base_ = 'your_config.py' above it. mmyolo's heads call it prior_generator and\n"
            "# list the finest level first: write with --model your_mmyolo_config.py to get its form.\n"
        )
        out.append(
            f"model = dict(\n    bbox_head=dict(\n        anchor_generator=dict(\n"
            f"            base_sizes={base},\n            strides={strides},\n        )))\n"
        )
        return "".join(out)
    tree = ast.parse(text)
    try:
        call, where = find_anchor_generator(text, template)
    except ValueError as exc:
        if "no YOLOAnchorGenerator" not in str(exc) or not has_base(text):
            raise
        return _mmdet_override(lv, st, decimals, header, template, path)
    kw = {k.arg: k.value for k in call.keywords if k.arg}
    if "base_sizes" not in kw:
        raise ValueError(f"{template}:{call.lineno}: the anchor generator has no base_sizes to replace")
    names = top_level_literals(tree)
    try:
        _, base_node = resolve(kw["base_sizes"], names)
        old_strides, strides_node = resolve(kw["strides"], names) if "strides" in kw else (None, None)
        if old_strides is None:  # an override of base_sizes only: the inherited strides give the order
            old_strides = merged_strides(template)
    except ValueError as exc:
        raise ValueError(
            f"{template}:{call.lineno}: base_sizes and strides must be literal lists or top-level names "
            f"bound to them ({exc})"
        ) from None
    if old_strides is not None:
        try:
            old_strides = [float(s) if not isinstance(s, (list, tuple)) else float(s[0]) for s in old_strides]
        except (TypeError, ValueError):
            old_strides = None
    if old_strides is not None and len(old_strides) != len(lv):
        raise ValueError(
            f"{template}:{call.lineno}: the anchor generator has {len(old_strides)} levels but {len(lv)} were "
            "computed: "
            f"use --levels {len(old_strides)}"
        )
    order = coarse_first if old_strides is None or old_strides[0] > old_strides[-1] else list(range(len(lv)))
    lines = text.splitlines(keepends=True)
    indent = re.match(r"\s*", lines[base_node.lineno - 1]).group(0)  # type: ignore[attr-defined]
    if isinstance(kw["base_sizes"], ast.Name):  # a top-level assignment: its rows start at column 0
        indent = ""
    base, strides = _mmdet_literal(lv, st, decimals, indent, order)
    if strides_node is base_node:
        raise ValueError(
            f"{template}:{call.lineno}: base_sizes and strides are the same expression: cannot rewrite them"
        )
    replacements = [(base_node, base)]
    if strides_node is not None:
        replacements.append((strides_node, strides))
    return rebase(replace_nodes(text, replacements), tree, template, path)


def _mmdet_override(
    lv: List[np.ndarray], st: List[float], decimals: int, header: str, template: Optional[str], path: str
) -> str:
    """An override of an inherited config: mmengine reads the template's chain to learn the key
    and the order of the levels; the new file inherits the template."""
    key, gen, _ = load_generator(template)
    old = gen.get("strides")
    old_strides = [float(s) if not isinstance(s, (list, tuple)) else float(s[0]) for s in old] if old else None
    n_old = len(gen["base_sizes"])
    if n_old != len(lv):
        raise ValueError(f"{template}: its {key} has {n_old} levels but {len(lv)} were computed: use --levels {n_old}")
    coarse = old_strides is not None and old_strides[0] > old_strides[-1]
    order = list(range(len(lv)))[::-1] if coarse else list(range(len(lv)))
    base, strides = _mmdet_literal(lv, st, decimals, "            ", order)
    assert template is not None  # an override is written only for a template that was read
    rel = os.path.relpath(os.path.abspath(template), os.path.dirname(os.path.abspath(path))).replace(os.sep, "/")
    return override_text(key, base, strides, rel, header)
