"""Editing the text of a TensorFlow Object Detection API ``pipeline.config`` (a text proto): the
``aspect_ratios`` of its ``ssd_anchor_generator``, and its ``fixed_shape_resizer`` size."""

from __future__ import annotations

import re
from typing import Optional, Sequence, Tuple


def _find_block(text: str, name: str) -> Optional[Tuple[int, int]]:
    """(start of the block's opening line, index of its closing brace) of ``name { ... }`` in a
    text proto, braces in strings and comments aside (they do not occur in pipeline configs)."""
    m = re.search(r"(?m)^[ \t]*" + re.escape(name) + r"\s*\{", text)
    if m is None:
        return None
    depth, i = 0, m.end() - 1
    while i < len(text):
        c = text[i]
        if c == "#":
            nl = text.find("\n", i)
            i = len(text) if nl < 0 else nl
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return m.start(), i
        i += 1
    raise ValueError(f"unbalanced braces in the {name} block")


def config_image_size(text: str) -> Optional[Tuple[float, float]]:
    """(width, height) of a pipeline config's fixed_shape_resizer, if it has one."""
    span = _find_block(text, "fixed_shape_resizer")
    if span is None:
        return None
    block = text[span[0]:span[1]]
    h = re.search(r"\bheight\s*:\s*(\d+)", block)
    w = re.search(r"\bwidth\s*:\s*(\d+)", block)
    return (float(w.group(1)), float(h.group(1))) if h and w else None


#: The anchor generators whose aspect_ratios are rewritten: SSD's, and TF2's multiscale one
#: (SSD-FPN, RetinaNet: min_level, max_level, anchor_scale, aspect_ratios, scales_per_octave).
#: Both take ratios as width / height.
GENERATOR_BLOCKS = ("ssd_anchor_generator", "multiscale_anchor_generator")


def anchor_generator_block(text: str) -> Optional[Tuple[str, Tuple[int, int]]]:
    """(name, span) of the config's first anchor generator block among :data:`GENERATOR_BLOCKS`."""
    for name in GENERATOR_BLOCKS:
        span = _find_block(text, name)
        if span is not None:
            return name, span
    return None


def config_aspect_ratios(text: str) -> Optional[Tuple[float, ...]]:
    """The ``aspect_ratios`` of a pipeline config's anchor generator (ssd_anchor_generator or
    multiscale_anchor_generator), in file order; None when it has no such block or the block lists
    none."""
    found = anchor_generator_block(text)
    if found is None:
        return None
    span = found[1]
    body = text[span[0]:span[1]]
    values = re.findall(r"(?m)^[ \t]*aspect_ratios\s*:\s*([-+0-9.eE]+)", body)
    try:
        ratios = tuple(float(v) for v in values)
    except ValueError:
        raise ValueError(f"the {found[0]}'s aspect_ratios are not all numbers: {values}") from None
    return ratios or None


def set_aspect_ratios(text: str, ratios: Sequence[float], decimals: int = 4) -> str:
    """The pipeline config ``text`` with the ``aspect_ratios`` lines of its ssd_anchor_generator
    (or multiscale_anchor_generator) block replaced by one line per ratio (at the first old line's place and indentation);
    everything else is kept byte for byte. Without such a block, just the block is returned."""
    values = [f"{r:.{decimals}f}" for r in ratios]
    found = anchor_generator_block(text)
    span = found[1] if found else None
    if span is None:
        if text.strip():
            raise ValueError("the config has no ssd_anchor_generator or multiscale_anchor_generator "
                             "block")
        return "ssd_anchor_generator {\n" + "".join(f"  aspect_ratios: {v}\n" for v in values) + "}\n"
    start, end = span
    body_start = text.index("{", start) + 1
    body = text[body_start:end]
    newline = "\r\n" if "\r\n" in text else "\n"
    pattern = re.compile(r"(?m)^([ \t]*)aspect_ratios\s*:[^\n]*\n?")
    old = list(pattern.finditer(body))
    if old:
        indent = old[0].group(1)
        first = old[0].start()
    else:  # before the closing brace, indented like the block's other fields
        other = re.search(r"(?m)^([ \t]+)\S", body)
        indent = other.group(1) if other else "  "
        first = body.rfind("\n") + 1
    new_lines = "".join(f"{indent}aspect_ratios: {v}{newline}" for v in values)
    kept = pattern.sub("", body)
    # where the first old line was, counted in the body without the old lines
    pos = first - sum(len(m.group(0)) for m in old if m.start() < first)
    new_body = kept[:pos] + new_lines + kept[pos:]
    return text[:body_start] + new_body + text[end:]
