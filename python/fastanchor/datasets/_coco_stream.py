"""A lean, fast path for large COCO json files.

The whole document is never held as Python objects. A first pass over the bytes (numpy, in
blocks) finds the strings and brackets, and with them the top-level arrays and the bounds of
their elements. The top level is parsed as a small "skeleton" in which each large array is
replaced by a marker; the large arrays are then parsed in pieces of a few MB (orjson when it
is installed, else the json module), and each piece's images or annotations are pulled into
numpy arrays in bulk.

Exactness: the document is valid json exactly when the skeleton and every piece are (a json
array is the concatenation of its elements' texts with commas), and each piece is checked to
hold exactly the elements its brackets announce, so the values seen are the ones a parse of
the whole file gives. Anything this path does not handle plainly (a syntax error, a duplicate
top-level key, an entry of an unusual type, a dangling id, a nesting deeper than
:data:`MAX_DEPTH`) makes it give up with :class:`Fallback`; the caller then loads the file the
ordinary way, which names the problem exactly as before. So the fast path decides nothing on
its own: it either returns what the ordinary path would, or nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import numpy as np

from .._fileio import _open_fd

#: Bytes read per block by the scanning pass.
BLOCK_BYTES = 4 << 20
#: Top-level arrays larger than this are parsed in pieces; smaller ones with the skeleton.
STREAM_ARRAY_BYTES = 1 << 20
#: Target size of one piece of a large array.
PIECE_BYTES = 2 << 20
#: Deeper documents take the ordinary path (which reports the json parsers' own depth limits).
MAX_DEPTH = 500
#: Longest run of bytes between two elements (whitespace and a comma) accepted at a piece border.
_MAX_GLUE = 4096
_MARK = "\x00fastanchor-stream:"
_WS = b" \t\r\n"

_LUT = np.zeros(256, dtype=np.int8)
_LUT[ord('"')] = 1
_LUT[ord("\\")] = 2
_LUT[ord("{")] = 3
_LUT[ord("[")] = 3
_LUT[ord("}")] = 4
_LUT[ord("]")] = 4
_TABLE = _LUT.astype(np.uint8).tobytes()  # for bytes.translate, several times faster than indexing
_MISSING = object()
_INT_TYPES: Set[type] = {int}
_NUM_TYPES: Set[type] = {int, float}


class Fallback(Exception):
    """The fast path does not handle this file; load it the ordinary way."""


@dataclass
class Extract:
    """What :func:`read_coco` pulls from a file (every entry well-formed)."""

    files: List[str]
    sizes: np.ndarray  # (n_images, 2) float64
    xywh: np.ndarray  # (n, 4) float64
    image_idx: np.ndarray  # (n,) int64
    class_idx: np.ndarray  # (n,) int64
    crowd: np.ndarray  # (n,) bool
    class_names: Tuple[str, ...]
    first_bad: int = -1  # the first degenerate box (they are reported by the first one's 'id')
    first_bad_id: Any = _MISSING

    def id_of(self, index: int) -> Any:
        """The 'id' of the first degenerate annotation (``_MISSING`` when it has none)."""
        if index != self.first_bad:  # pragma: no cover - only the first one is ever shown
            raise ValueError(f"the id of annotation {index} was not kept")
        return self.first_bad_id


def _loader() -> Callable[[Any], Any]:
    try:
        import orjson  # type: ignore[import-not-found]
    except ImportError:
        return json.loads  # type: ignore[no-any-return]
    return orjson.loads  # type: ignore[no-any-return]


# --- pass 1: strings and brackets --------------------------------------------------------------------


@dataclass
class _Scan:
    """Brackets outside strings at nesting levels 0 to 2, in file order."""

    size: int
    pos: np.ndarray  # int64 file offsets
    level: np.ndarray  # int8: depth before an opening bracket, after a closing one
    opening: np.ndarray  # bool


def scan(fd: int, size: int, block: Optional[int] = None) -> _Scan:
    """Find the brackets at levels 0-2 of a json document read from ``fd`` (``size`` bytes)."""
    buf = bytearray(BLOCK_BYTES if block is None else block)
    view = memoryview(buf)
    in_string = 0
    escape_first = False  # the first byte of the next block is escaped by a backslash
    depth = 0
    offset = 0
    out_pos: List[np.ndarray] = []
    out_level: List[np.ndarray] = []
    out_open: List[np.ndarray] = []
    while True:
        n = _read_into(fd, view, offset)
        if n == 0:
            break
        cls = np.frombuffer(buf.translate(_TABLE), dtype=np.int8, count=n)
        nz = np.flatnonzero(cls != 0)
        codes = cls[nz]
        backslash = np.flatnonzero(codes == 2)
        if escape_first or backslash.size:
            esc = _escaped(nz[backslash], escape_first)
            escape_first = bool(esc.size) and int(esc[-1]) == n
            at = np.searchsorted(nz, esc)
            inside = at < nz.size
            hit = at[inside][nz[at[inside]] == esc[inside]]
            codes[hit] = 0  # an escaped quote does not end a string
        quote = codes == 1
        count = np.cumsum(quote, dtype=np.int64)
        outside = ((in_string + count - quote) & 1) == 0
        if count.size:
            in_string = int(in_string + count[-1]) & 1
        structural = (codes >= 3) & outside
        spos = nz[structural]
        if spos.size:
            delta = np.where(codes[structural] == 3, 1, -1).astype(np.int64)
            after = depth + np.cumsum(delta)
            if int(after.min()) < 0 or int(after.max()) > MAX_DEPTH:
                raise Fallback
            level = np.where(delta > 0, after - 1, after)
            keep = level <= 2
            out_pos.append(spos[keep] + offset)
            out_level.append(level[keep].astype(np.int8))
            out_open.append(delta[keep] > 0)
            depth = int(after[-1])
        offset += n
    if offset != size or in_string or depth or escape_first:
        raise Fallback
    if not out_pos:
        raise Fallback
    return _Scan(offset, np.concatenate(out_pos), np.concatenate(out_level), np.concatenate(out_open))


def _escaped(backslashes: np.ndarray, first_escaped: bool) -> np.ndarray:
    """Positions of the bytes escaped by a backslash, sorted (one may be one past the block).

    In a run of backslashes, the first escapes the second, the third the fourth, and so on; a
    run of odd length escapes the byte after it. ``first_escaped``: byte 0 is escaped by a
    backslash at the end of the previous block."""
    n = backslashes.size
    index = np.arange(n)
    starts = np.ones(n, dtype=bool)
    starts[1:] = backslashes[1:] != backslashes[:-1] + 1
    in_run = index - np.maximum.accumulate(np.where(starts, index, 0))
    if first_escaped and n and backslashes[0] == 0:  # the first run begins with an escaped backslash
        first_run = np.cumsum(starts) == 1
        in_run = in_run + first_run
    out = backslashes[in_run % 2 == 0] + 1
    if first_escaped:
        out = np.concatenate([[0], out])
    return out.astype(np.int64, copy=False)


def _read_into(fd: int, view: memoryview, offset: int) -> int:
    """Read into ``view`` from ``offset`` (short only at the end of the file)."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)  # pragma: no cover - a platform without preadv
    view[: len(data)] = data  # pragma: no cover
    return len(data)  # pragma: no cover


def _read(fd: int, start: int, stop: int) -> bytes:
    data = os.pread(fd, stop - start, start)
    if len(data) != stop - start:
        raise Fallback  # the file changed under us
    return data


# --- pass 2: the skeleton and the pieces of the large arrays ----------------------------------------------


@dataclass
class _Array:
    """A large top-level array: its brackets and its elements' bounds (each a json object)."""

    open: int
    close: int
    starts: np.ndarray
    stops: np.ndarray  # one past each element's closing bracket
    used: bool = False


def _structure(fd: int, sc: _Scan) -> Tuple[Dict[str, Any], List[_Array]]:
    """The parsed skeleton and the large arrays its markers stand for."""
    lv, op, pos = sc.level, sc.opening, sc.pos
    top = np.flatnonzero(lv == 0)
    if top.size != 2 or _read(fd, int(pos[top[0]]), int(pos[top[0]]) + 1) != b"{":
        raise Fallback
    ones = np.flatnonzero(lv == 1)  # opening, closing, opening, closing... (balanced by the scan)
    arrays: List[_Array] = []
    for k in range(0, ones.size, 2):
        o, c = int(pos[ones[k]]), int(pos[ones[k + 1]])
        if c - o <= STREAM_ARRAY_BYTES or _read(fd, o, o + 1) != b"[":
            continue
        lo, hi = ones[k] + 1, ones[k + 1]
        inner_open = op[lo:hi]
        inner_pos = pos[lo:hi]
        starts, stops = inner_pos[inner_open], inner_pos[~inner_open] + 1
        if starts.size != stops.size or (starts.size and _read(fd, int(starts[0]), int(starts[0]) + 1) != b"{"):
            raise Fallback
        arrays.append(_Array(o, c, starts, stops))
    # The skeleton: the file with each large array's inner text replaced by a marker.
    parts: List[bytes] = []
    at = 0
    for j, arr in enumerate(arrays):
        parts.append(_read(fd, at, arr.open + 1))
        parts.append(json.dumps(f"{_MARK}{j}").encode())
        at = arr.close
    parts.append(_read(fd, at, sc.size))
    if any(b"\\u0000" in p for p in parts[::2]):  # could spell a marker
        raise Fallback
    try:
        doc = _loader()(b"".join(parts))
    except Exception:
        raise Fallback from None
    if not isinstance(doc, dict):
        raise Fallback
    return doc, arrays


def _pieces(fd: int, value: Any, arrays: List[_Array]) -> Iterator[List[Any]]:
    """The elements of a top-level array value, a list at a time (the value itself when small)."""
    j = _marker(value)
    if j is None:
        yield value
        return
    arr = arrays[j]
    arr.used = True
    loads = _loader()
    n = arr.starts.size
    if n == 0:
        if _read(fd, arr.open + 1, arr.close).strip(_WS):
            raise Fallback
        return
    _glue(fd, arr.open + 1, int(arr.starts[0]), b"")
    _glue(fd, int(arr.stops[-1]), arr.close, b"")
    k0 = 0
    while k0 < n:
        limit = int(arr.starts[k0]) + PIECE_BYTES
        k1 = max(k0 + 1, int(np.searchsorted(arr.stops, limit, side="right")))
        k1 = min(k1, n)
        if k1 < n:
            _glue(fd, int(arr.stops[k1 - 1]), int(arr.starts[k1]), b",")
        start, stop = int(arr.starts[k0]), int(arr.stops[k1 - 1])
        buf = bytearray(stop - start + 2)
        buf[0], buf[-1] = 0x5B, 0x5D  # [ ]
        if _read_into(fd, memoryview(buf)[1:-1], start) != stop - start:
            raise Fallback
        try:
            items = loads(buf)
        except Exception:
            raise Fallback from None
        del buf
        if not isinstance(items, list) or len(items) != k1 - k0:
            raise Fallback
        yield items
        k0 = k1


def _glue(fd: int, start: int, stop: int, expected: bytes) -> None:
    if stop - start > _MAX_GLUE or _read(fd, start, stop).strip(_WS) != expected:
        raise Fallback


def _marker(value: Any) -> Optional[int]:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str) and value[0].startswith(_MARK):
        return int(value[0][len(_MARK) :])
    return None


# --- pulling the fields ---------------------------------------------------------------------------------


def _types_within(values: List[Any], allowed: Set[type]) -> bool:
    return set(map(type, values)) <= allowed


def _ints(values: List[Any]) -> np.ndarray:
    if not _types_within(values, _INT_TYPES):
        raise Fallback
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError:
        raise Fallback from None


def _floats(values: List[Any]) -> np.ndarray:
    if not _types_within(values, _NUM_TYPES):
        raise Fallback
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:  # an integer beyond the double range
        raise Fallback from None


def _images(items: List[Any]) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    if not _types_within(items, {dict}):
        raise Fallback
    try:
        ids = list(map(itemgetter("id"), items))
        w = _floats(list(map(itemgetter("width"), items)))
        h = _floats(list(map(itemgetter("height"), items)))
    except KeyError:
        raise Fallback from None
    if not ((w > 0) & (w < np.inf) & (h > 0) & (h < np.inf)).all():
        raise Fallback
    id_arr = _ints(ids)
    names: List[Any] = list(map(dict.get, items, repeat("file_name"), ids))
    if not _types_within(names, {str}):
        from ._coco import _name

        try:
            names = [_name(x) for x in names]
        except ValueError:
            raise Fallback from None
    return id_arr, np.stack([w, h], axis=1), names


def _categories(value: Any) -> Dict[Any, str]:
    if not isinstance(value, list):
        raise Fallback
    names: Dict[Any, str] = {}
    for cat in value:
        if not isinstance(cat, dict) or type(cat.get("id")) is not int:
            raise Fallback
        name = cat.get("name", cat["id"])
        if not isinstance(name, str):
            raise Fallback
        names[cat["id"]] = name
    return names


class _Index:
    """Rows of integer keys (unique): a table when the keys are dense, else a sorted search."""

    def __init__(self, keys: np.ndarray) -> None:
        self.n = keys.size
        self.low = int(keys.min()) if keys.size else 0
        span = int(keys.max()) - self.low + 1 if keys.size else 0
        self.table: Optional[np.ndarray] = None
        if keys.size and span <= 4 * keys.size + 1024:
            self.table = np.full(span, -1, dtype=np.int64)
            self.table[keys - self.low] = np.arange(keys.size)
        else:
            self.order = np.argsort(keys, kind="stable")
            self.sorted = keys[self.order]

    def rows(self, values: np.ndarray) -> np.ndarray:
        """The row of every value (Fallback if one is not a key)."""
        if values.size == 0:
            return np.zeros(0, dtype=np.int64)
        if self.n == 0:
            raise Fallback
        if self.table is not None:
            if int(values.min()) < self.low or int(values.max()) >= self.low + self.table.size:
                raise Fallback
            rows = self.table[values - self.low]
            if int(rows.min()) < 0:
                raise Fallback
            return rows
        at = np.minimum(np.searchsorted(self.sorted, values), self.n - 1)
        if not (self.sorted[at] == values).all():
            raise Fallback
        return self.order[at]


def read_coco(path: str) -> Extract:
    """The images, categories and annotations of a COCO file whose entries are all well-formed.

    Raises :class:`Fallback` for anything else (including files that are not valid json)."""
    if not hasattr(os, "pread"):  # pragma: no cover - Windows: positioned reads are missing
        raise Fallback
    try:
        fd, st = _open_fd(path)
    except OSError:
        raise Fallback from None
    try:
        from ._coco import MAX_JSON_BYTES

        if st.st_size > MAX_JSON_BYTES or st.st_size == 0:
            raise Fallback
        head = _read(fd, 0, min(4, st.st_size))
        if head[:1] not in (b"{", b" ", b"\t", b"\r", b"\n"):  # a BOM or UTF-16/32: the json module's rules
            raise Fallback
        sc = scan(fd, st.st_size)
        doc, arrays = _structure(fd, sc)
        del sc
        return _extract(fd, doc, arrays)
    finally:
        os.close(fd)


def _extract(fd: int, doc: Dict[str, Any], arrays: List[_Array]) -> Extract:
    if not (isinstance(doc.get("annotations"), list) and isinstance(doc.get("images"), list)):
        raise Fallback
    # Images: id -> row.
    id_parts, size_parts, files = [], [], []
    for items in _pieces(fd, doc["images"], arrays):
        ids, sizes, names = _images(items)
        id_parts.append(ids)
        size_parts.append(sizes)
        files.extend(names)
    image_ids = np.concatenate(id_parts) if id_parts else np.zeros(0, np.int64)
    sizes = np.concatenate(size_parts) if size_parts else np.zeros((0, 2))
    if image_ids.size > 1 and np.unique(image_ids).size != image_ids.size:
        raise Fallback  # a repeated image id
    images = _Index(image_ids)

    # Categories sorted by id (all integers here).
    categories = doc.get("categories") or []
    if _marker(categories) is not None:
        categories = [c for items in _pieces(fd, categories, arrays) for c in items]
    cat_names = _categories(categories)
    cat_sorted = np.array(sorted(cat_names), dtype=np.int64)

    # Annotations, a piece at a time.
    from ._boxes import box_reasons
    from ._coco import COCO_TOLERANCE

    anns = doc["annotations"]
    j = _marker(anns)
    n_total = len(anns) if j is None else int(arrays[j].starts.size)
    xywh_all = np.empty((n_total, 4), dtype=np.float64)
    image_idx = np.empty(n_total, dtype=np.int64)
    cats = np.empty(n_total, dtype=np.int64)
    crowd_all = np.empty(n_total, dtype=bool)
    first_bad, first_bad_id = -1, _MISSING
    total = 0
    get = dict.get
    for items in _pieces(fd, anns, arrays):
        n = len(items)
        if not _types_within(items, {dict}):
            raise Fallback
        try:
            bbox = list(map(itemgetter("bbox"), items))
            image_id = _ints(list(map(itemgetter("image_id"), items)))
        except KeyError:
            raise Fallback from None
        if not _types_within(bbox, {list}) or (n and set(map(len, bbox)) != {4}):
            raise Fallback
        xywh = _floats(list(chain.from_iterable(bbox))).reshape(n, 4)
        del bbox
        cat = _ints(list(map(get, items, repeat("category_id"))))
        crowd_values = list(map(get, items, repeat("iscrowd"), repeat(0)))
        crowd = None
        if _types_within(crowd_values, _INT_TYPES):
            try:
                crowd = np.array(crowd_values, dtype=np.int64) != 0
            except OverflowError:
                pass
        if crowd is None:  # the ordinary path's rule, value by value
            crowd = np.array([v not in (0, False, None, "0") for v in crowd_values], dtype=bool)
        rows = images.rows(image_id)
        if first_bad < 0:  # degenerate boxes are reported by the first one's annotation id
            img = sizes[rows]
            x, y, w, h = xywh.T
            with np.errstate(over="ignore", invalid="ignore"):
                reason = box_reasons(x, y, x + w, y + h, img[:, 0], img[:, 1], COCO_TOLERANCE)
            bad = np.flatnonzero(reason)
            if bad.size:
                first_bad = total + int(bad[0])
                first_bad_id = get(items[int(bad[0])], "id", _MISSING)
        xywh_all[total : total + n] = xywh
        image_idx[total : total + n] = rows
        cats[total : total + n] = cat
        crowd_all[total : total + n] = crowd
        total += n
        del items
    if total != n_total:  # pragma: no cover - each piece's count is checked
        raise Fallback
    if cat_names:
        class_idx = _Index(cat_sorted).rows(cats)
        class_names = tuple(cat_names[int(c)] for c in cat_sorted)
    else:  # no categories: ids numbered in order of appearance
        uniq, first, inverse = np.unique(cats, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        rank = np.empty(order.size, dtype=np.int64)
        rank[order] = np.arange(order.size)
        class_idx = rank[inverse.reshape(-1)] if cats.size else np.zeros(0, np.int64)
        class_names = tuple(str(int(c)) for c in uniq[order])

    # Every other large array must still be valid json.
    for arr_index, arr in enumerate(arrays):
        if not arr.used:
            for _ in _pieces(fd, [f"{_MARK}{arr_index}"], arrays):
                pass
    return Extract(files, sizes, xywh_all, image_idx, class_idx, crowd_all, class_names, first_bad, first_bad_id)
