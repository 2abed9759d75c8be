"""Editing the text of a TensorFlow Object Detection API ``pipeline.config`` (a text proto): the
``aspect_ratios`` of its ``ssd_anchor_generator``, and its ``fixed_shape_resizer`` size.

The text is parsed structurally by a small tokenizer and parser for the subset of the text
format these files use: nested blocks (``name { ... }`` or ``name: { ... }``, also with ``< >``),
scalar fields (``name: value``), lists (``name: [1, 2]``), quoted strings with escapes, ``#``
comments, and any layout (a whole config on one line included). Edits are made in the original
text at the places the parser found, so everything else is kept byte for byte.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

from .._fileio import excerpt

#: Deepest nesting of blocks accepted (pipeline configs nest about 6 deep).
MAX_DEPTH = 100

_TOKEN = re.compile(
    r"""(?P<space>[ \t\r\n\f\v,;]+)
      | (?P<comment>\#[^\n]*)
      | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      | (?P<open>[{<])
      | (?P<close>[}>])
      | (?P<colon>:)
      | (?P<lbracket>\[)
      | (?P<rbracket>\])
      | (?P<word>[^\s{}<>:\#"',;\[\]]+)
      | (?P<bad>.)""",
    re.VERBOSE | re.DOTALL,
)


@dataclass
class Field:
    """One field of a text proto: ``start``/``end`` are offsets in the text of the whole field
    (name to value or closing brace); a block has ``children`` and ``body`` (the offsets just
    inside its braces), a scalar has ``value`` (its text as written)."""

    name: str
    start: int
    end: int = -1
    value: Optional[str] = None
    children: Optional[List[Field]] = None
    body: Tuple[int, int] = (-1, -1)

    def walk(self) -> Iterator[Field]:
        """This field and every field inside it, depth first in text order."""
        stack = [self]
        while stack:
            f = stack.pop()
            yield f
            if f.children:
                stack.extend(reversed(f.children))


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _tokens(text: str) -> List[Tuple[str, str, int, int]]:
    out = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "bad"
        if kind in ("space", "comment"):
            continue
        if kind == "bad":
            raise ValueError(f"line {_line(text, m.start())}: unexpected character {excerpt(m.group())}")
        out.append((kind, m.group(), m.start(), m.end()))
    return out


def parse_text_proto(text: str) -> Field:
    """The fields of a text proto, as a root :class:`Field` whose ``children`` are the top-level
    fields. Raises ValueError with the line on a syntax error or nesting deeper than
    :data:`MAX_DEPTH`."""
    toks = _tokens(text)
    root = Field("", 0, len(text), children=[], body=(0, len(text)))
    stack = [root]
    i, n = 0, len(toks)
    while i < n:
        kind, tok, start, end = toks[i]
        if kind == "close":
            if len(stack) == 1:
                raise ValueError(f"line {_line(text, start)}: a closing {tok!r} without an opening one")
            block = stack.pop()
            block.end = end
            block.body = (block.body[0], start)
            i += 1
            continue
        if kind != "word":
            raise ValueError(f"line {_line(text, start)}: expected a field name, got {excerpt(tok)}")
        f = Field(tok, start)
        i += 1
        if i < n and toks[i][0] == "colon":
            i += 1
        if i >= n:
            raise ValueError(f"line {_line(text, start)}: the field {excerpt(tok)} has no value")
        vkind, vtok, vstart, vend = toks[i]
        if vkind == "open":
            if len(stack) > MAX_DEPTH:
                raise ValueError(f"line {_line(text, vstart)}: blocks nested deeper than {MAX_DEPTH}")
            f.children = []
            f.body = (vend, -1)
            stack[-1].children.append(f)  # type: ignore[union-attr]
            stack.append(f)
            i += 1
            continue
        if vkind == "lbracket":  # a list of values: kept as written
            j = i + 1
            while j < n and toks[j][0] not in ("rbracket", "open", "close"):
                j += 1
            if j >= n or toks[j][0] != "rbracket":
                raise ValueError(f"line {_line(text, vstart)}: an unclosed '[' list")
            f.value, f.end = text[vstart : toks[j][3]], toks[j][3]
            i = j + 1
        elif vkind in ("word", "string"):
            j = i + 1
            while vkind == "string" and j < n and toks[j][0] == "string":  # "a" "b": one string
                j += 1
            f.value, f.end = text[vstart : toks[j - 1][3]], toks[j - 1][3]
            i = j
        else:
            raise ValueError(f"line {_line(text, vstart)}: the field {excerpt(tok)} has no value")
        stack[-1].children.append(f)  # type: ignore[union-attr]
    if len(stack) > 1:
        raise ValueError(f"line {_line(text, stack[-1].start)}: the block {excerpt(stack[-1].name)} is not closed")
    return root


def _find(root: Field, name: str) -> Optional[Field]:
    for f in root.walk():
        if f.children is not None and f.name == name and f is not root:
            return f
    return None


#: The anchor generators whose aspect_ratios are rewritten: SSD's, and TF2's multiscale one
#: (SSD-FPN, RetinaNet: min_level, max_level, anchor_scale, aspect_ratios, scales_per_octave).
#: Both take ratios as width / height.
GENERATOR_BLOCKS = ("ssd_anchor_generator", "multiscale_anchor_generator")


def _generator(root: Field) -> Optional[Field]:
    """The config's first anchor generator block among :data:`GENERATOR_BLOCKS`."""
    for name in GENERATOR_BLOCKS:
        block = _find(root, name)
        if block is not None:
            return block
    return None


def config_aspect_ratios(text: str) -> Optional[Tuple[float, ...]]:
    """The ``aspect_ratios`` of a pipeline config's anchor generator (ssd_anchor_generator or
    multiscale_anchor_generator), in file order; None when it has no such block or the block
    lists none.

    Raises ValueError when the config is not a readable text proto or a ratio is not a number."""
    block = _generator(parse_text_proto(text))
    if block is None:
        return None
    ratios: List[float] = []
    for c in block.children or ():
        if c.name == "aspect_ratios" and c.value is not None:
            for v in re.findall(r"[^\s\[\],]+", str(c.value)):
                try:
                    ratios.append(float(v))
                except ValueError:
                    raise ValueError(f"the {block.name}'s aspect_ratios {excerpt(c.value)} is not a number") from None
    return tuple(ratios) or None


def config_image_size(text: str) -> Optional[Tuple[float, float]]:
    """(width, height) of a pipeline config's fixed_shape_resizer, if it has one.

    Raises ValueError when the config is not a readable text proto, or states a width or height
    that is not a positive finite number."""
    block = _find(parse_text_proto(text), "fixed_shape_resizer")
    if block is None:
        return None
    values = {c.name: c.value for c in block.children or () if c.value is not None}
    if "width" not in values or "height" not in values:
        return None
    size = []
    for key in ("width", "height"):
        try:
            v = float(str(values[key]))
        except ValueError:
            v = math.nan
        if not (math.isfinite(v) and 0 < v <= 1e6):
            raise ValueError(f"the fixed_shape_resizer {key} {excerpt(values[key])} is not an image size")
        size.append(v)
    return size[0], size[1]


def _line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def _alone_on_line(text: str, f: Field) -> bool:
    """Whether only blanks precede ``f`` on its line and only blanks or a comment follow it."""
    before = text[_line_start(text, f.start) : f.start]
    nl = text.find("\n", f.end)
    after = text[f.end : nl if nl >= 0 else len(text)].strip()
    return not before.strip() and (not after or after.startswith("#"))


def set_aspect_ratios(text: str, ratios: Sequence[float], decimals: int = 4) -> str:
    """The pipeline config ``text`` with the ``aspect_ratios`` fields of its ssd_anchor_generator
    (or multiscale_anchor_generator) block replaced by one field per ratio, at the first old
    field's place (one per line with its indentation, or side by side when the config is written
    on one line); everything else is kept byte for byte. Without such a block, just the block is
    returned for an empty config.

    Raises
    ------
    ValueError
        The text is not a readable text proto, a non-empty one has no ssd_anchor_generator or
        multiscale_anchor_generator block, a ratio is not finite and positive, or ``decimals`` is
        out of range.
    """
    from ._formats import check_decimals

    decimals = check_decimals(decimals)
    for r in ratios:
        if not (isinstance(r, (int, float)) and math.isfinite(r) and r > 0):
            raise ValueError(f"aspect ratios must be finite and positive, got {excerpt(r)}")
    values = [f"{r:.{decimals}f}" for r in ratios]
    block = _generator(parse_text_proto(text))
    if block is None:
        if text.strip():
            raise ValueError("the config has no ssd_anchor_generator or multiscale_anchor_generator block")
        return "ssd_anchor_generator {\n" + "".join(f"  aspect_ratios: {v}\n" for v in values) + "}\n"
    newline = "\r\n" if "\r\n" in text else "\n"
    old = [c for c in block.children or () if c.name == "aspect_ratios"]
    multiline = "\n" in text[block.body[0] : block.body[1]]
    edits: List[Tuple[int, int, str]] = []  # (start, end, replacement), applied from the end
    if old and multiline and _alone_on_line(text, old[0]):
        first = old[0]
        indent = text[_line_start(text, first.start) : first.start]
        at = _line_start(text, first.start)
        edits.append((at, at, "".join(f"{indent}aspect_ratios: {v}{newline}" for v in values)))
    elif old:
        at = old[0].start
        edits.append((at, at, " ".join(f"aspect_ratios: {v}" for v in values)))
    else:
        close = block.body[1]
        if multiline and not text[_line_start(text, close) : close].strip():
            first_child = (block.children or [None])[0]
            indent = text[_line_start(text, first_child.start) : first_child.start] if first_child else "  "
            at = _line_start(text, close)
            edits.append((at, at, "".join(f"{indent}aspect_ratios: {v}{newline}" for v in values)))
        else:
            edits.append((close, close, "".join(f"aspect_ratios: {v} " for v in values)))
    for f in old:
        if multiline and _alone_on_line(text, f):
            nl = text.find("\n", f.end)
            edits.append((_line_start(text, f.start), nl + 1 if nl >= 0 else len(text), ""))
        elif f is old[0]:  # beside other fields: the first is replaced where it is
            edits.append((f.start, f.end, ""))
        else:  # the others go with the blanks before them
            start = f.start
            while start > 0 and text[start - 1] in " \t":
                start -= 1
            edits.append((start, f.end, ""))
    out = text
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        out = out[:start] + new + out[end:]
    return out
