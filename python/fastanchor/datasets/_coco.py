"""COCO json annotations: one file for a whole split."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .._fileio import excerpt, read_regular, sanitize
from ._boxes import AnnotationError, Boxes, Problems, box_reasons, fmt_num
from ._coco_stream import _MISSING, Fallback, read_coco
from ._files import PathLike

#: How far (pixels) a COCO box may reach past the image border before it counts as outside
#: (COCO's float boxes overshoot by rounding; the official annotations stay within 1 px).
COCO_TOLERANCE = 1.0
_NUMBER = (int, float)
#: Largest json file read (COCO's instances_train2017.json is 448 MB; LVIS's train file 1.1 GB).
MAX_JSON_BYTES = 4 << 30


def read_json(path: str, limit: Optional[int] = None) -> Any:
    """Parse a json file with orjson when it is installed (several times faster), else json.
    Raises AnnotationError naming the file and line when it is not valid json, and OSError when
    it is not a regular file or is larger than ``limit`` (default :data:`MAX_JSON_BYTES`)."""
    try:
        data = read_regular(path, MAX_JSON_BYTES if limit is None else limit)
    except MemoryError:
        raise AnnotationError(path, None, "too large to read in the memory available") from None
    try:
        import orjson  # type: ignore[import-not-found]
    except ImportError:
        orjson = None
    try:
        if orjson is not None:
            return orjson.loads(data)
        return json.loads(data)
    except RecursionError:  # the json module on arrays nested thousands deep (orjson has a depth limit)
        raise AnnotationError(path, None, "not valid json (nested too deeply)") from None
    except MemoryError:
        raise AnnotationError(path, None, f"too large to parse in the memory available ({len(data):,} bytes)") from None
    except ValueError as exc:  # json.JSONDecodeError, orjson.JSONDecodeError, UnicodeDecodeError
        line = getattr(exc, "lineno", None)
        if line is None and hasattr(exc, "pos") and isinstance(exc.pos, int):  # pragma: no cover
            line = data.count(b"\n", 0, exc.pos) + 1
        msg = getattr(exc, "msg", None) or str(exc)
        raise AnnotationError(path, line, f"not valid json ({sanitize(str(msg), 120)})") from None


def load_coco(json_path: PathLike, *, strict: Optional[bool] = None) -> Boxes:
    """Load a COCO object-detection json file (``instances_*.json``).

    Parameters
    ----------
    json_path : path
        The json file. orjson is used to parse it when installed. A large file is parsed a few
        MB at a time and only the fields the boxes need are kept, so loading takes about the
        time of parsing and less than twice the file's size of memory (the result is the same
        as reading the whole document; any unusual file is read that way).
    strict : bool or None
        None (default): degenerate boxes (zero or negative size, NaN, outside the image) are
        dropped with one :class:`AnnotationWarning`; a malformed entry (a bbox that is not four
        numbers, an unknown image or category id) raises :class:`AnnotationError`. True:
        degenerate boxes raise too. False: malformed entries are skipped with a warning.

    Returns
    -------
    Boxes
        ``wh`` from each ``bbox`` ``[x, y, width, height]``; ``image_wh`` from the image's
        ``width`` and ``height``; ``class_names`` the categories sorted by id (``class_id``
        indexes them); ``files`` the images' ``file_name`` (every image, with boxes or not);
        ``crowd`` from ``iscrowd``.

    Raises
    ------
    AnnotationError
        The file is not valid json (the message gives the line), is not a COCO detection file,
        or (unless ``strict=False``) has a malformed entry (the message gives its index and id).
    """
    return _load(os.fspath(json_path), Problems(strict))


def load_coco_quiet(json_path: PathLike, strict: Optional[bool] = None) -> Tuple[Boxes, List[str]]:
    """:func:`load_coco` that returns its warnings' messages instead of issuing them (thread-safe:
    for loads in worker threads, whose caller issues them)."""
    problems = Problems(strict, quiet=True)
    return _load(os.fspath(json_path), problems), problems.emitted


def _load(path: str, problems: Problems) -> Boxes:
    try:
        fast = read_coco(path)
    except Fallback:  # anything unusual: the whole document as Python objects, checked entry by entry
        return _load_parsed(path, problems)
    return _finish(
        path,
        problems,
        fast.files,
        fast.sizes,
        fast.xywh,
        fast.image_idx,
        fast.class_idx,
        fast.crowd,
        np.arange(len(fast.xywh)),
        fast.id_of,
        fast.class_names,
    )


def _load_parsed(path: str, problems: Problems) -> Boxes:
    doc = read_json(path)
    if not (isinstance(doc, dict) and isinstance(doc.get("annotations"), list) and isinstance(doc.get("images"), list)):
        raise AnnotationError(
            path, None, "not a COCO detection file: expected a json object with 'images' and 'annotations' lists"
        )

    # Images: id -> row; every image becomes a file entry.
    files: List[str] = []
    sizes: List[Tuple[float, float]] = []
    image_row: Dict[Any, int] = {}
    for i, im in enumerate(doc["images"]):
        try:
            image_id = im["id"]
            hash(image_id)
            w, h = float(im["width"]), float(im["height"])
            if not (0 < w < float("inf") and 0 < h < float("inf")):
                raise ValueError
            name = _name(im.get("file_name", image_id))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):  # Overflow: an int beyond a double
            problems.bad_file(
                path,
                None,
                f"images[{i}] needs an 'id', a positive 'width' and 'height' and a string 'file_name': {_short(im)}",
            )
            continue
        if image_id in image_row:
            problems.bad_file(path, None, f"images[{i}] repeats image id {_short(image_id)}")
            continue
        image_row[image_id] = len(files)
        files.append(name)
        sizes.append((w, h))

    # Categories sorted by id; class_id indexes them.
    categories = doc.get("categories") or []
    if not isinstance(categories, list):
        problems.bad_file(path, None, f"'categories' must be a list, got {type(categories).__name__}")
        categories = []
    cat_names: Dict[Any, str] = {}
    for i, cat in enumerate(categories):
        try:
            cat_names[cat["id"]] = _name(cat.get("name", cat["id"]))
        except (KeyError, TypeError, AttributeError, ValueError):
            problems.bad_file(path, None, f"categories[{i}] needs an 'id' and a string 'name': {_short(cat)}")
    cat_ids = sorted(
        cat_names, key=lambda c: (not isinstance(c, (int, float)), c if isinstance(c, (int, float)) else str(c))
    )
    cat_index = {c: i for i, c in enumerate(cat_ids)}

    anns = doc["annotations"]
    n = len(anns)
    xywh = np.empty((n, 4), dtype=np.float64)
    image_idx = np.empty(n, dtype=np.int64)
    class_idx = np.empty(n, dtype=np.int64)
    crowd = np.zeros(n, dtype=bool)
    ok = np.ones(n, dtype=bool)
    new_categories: Dict[Any, int] = {}
    for i, ann in enumerate(anns):
        problem = None
        if not isinstance(ann, dict):
            problem = f"is not a json object: {_short(ann)}"
        elif "bbox" not in ann:
            problem = "has no 'bbox'"
        else:
            bbox = ann["bbox"]
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(type(v) in _NUMBER for v in bbox)):
                problem = f"has a bbox that is not 4 numbers: {_short(bbox)}"
            elif not _fits_double(bbox):  # the json module reads 1e999 as inf but 10**999 as an int
                problem = f"has a bbox with a number too large for a double: {_short(bbox)}"
            elif "image_id" not in ann:
                problem = "has no 'image_id'"
            else:
                try:
                    row = image_row.get(ann["image_id"])
                except TypeError:  # an unhashable id (a list, an object)
                    row = None
                if row is None:
                    problem = f"refers to image id {_short(ann['image_id'])}, which is not in 'images'"
                else:
                    cat = ann.get("category_id")
                    try:
                        c = cat_index.get(cat)
                    except TypeError:
                        c = None
                    if c is None and cat_names:
                        problem = f"has category_id {_short(cat)}, which is not in 'categories'"
                    elif c is None:  # a file without categories: ids in order of appearance
                        try:
                            c = new_categories.setdefault(cat, len(new_categories))
                        except TypeError:
                            problem = f"has category_id {_short(cat)}, which is not an id"
        if problem is not None:
            problems.bad_file(path, None, f"annotations[{i}]{_id(ann)} {problem}")
            ok[i] = False
            continue
        xywh[i] = bbox
        image_idx[i] = row
        class_idx[i] = c
        crowd[i] = ann.get("iscrowd", 0) not in (0, False, None, "0")
    class_names = tuple(cat_names[c] for c in cat_ids) if cat_names else tuple(str(c) for c in new_categories)

    def ann_id(i: int) -> Any:
        ann = anns[i]
        return ann["id"] if isinstance(ann, dict) and "id" in ann else _MISSING

    ok_index = np.flatnonzero(ok)
    return _finish(
        path,
        problems,
        files,
        np.asarray(sizes, dtype=np.float64).reshape(-1, 2),
        xywh[ok],
        image_idx[ok],
        class_idx[ok],
        crowd[ok],
        ok_index,
        ann_id,
        class_names,
    )


def _finish(
    path: str,
    problems: Problems,
    files: List[str],
    sizes: np.ndarray,
    xywh: np.ndarray,
    image_idx: np.ndarray,
    class_idx: np.ndarray,
    crowd: np.ndarray,
    ann_index: np.ndarray,
    ann_id: Callable[[int], Any],
    class_names: Tuple[str, ...],
) -> Boxes:
    """Degenerate boxes dropped (one warning), the Boxes built: what both paths share.
    ``ann_index`` maps each box to its index in 'annotations'; ``ann_id(index)`` gives that
    annotation's 'id' (``_MISSING`` when it has none)."""
    img = sizes[image_idx]
    x, y, w, h = xywh.T
    with np.errstate(over="ignore", invalid="ignore"):  # x + w beyond 1.8e308: a degenerate box, not a warning
        x2, y2 = x + w, y + h
    reason = box_reasons(x, y, x2, y2, img[:, 0], img[:, 1], COCO_TOLERANCE)
    bad = np.flatnonzero(reason)
    if bad.size:
        first = int(bad[0])
        index = int(ann_index[first])
        value = ann_id(index)
        shown = "" if value is _MISSING else f" (id {excerpt(value)})"
        detail = (
            f"annotations[{index}]{shown} has bbox [{', '.join(fmt_num(v) for v in xywh[first])}] "
            f"in image {files[int(image_idx[first])]} of {fmt_num(img[first, 0])}x{fmt_num(img[first, 1])}"
        )
        problems.degenerate(reason[bad], [path] * bad.size, None, detail, len(reason))
    problems.emit()
    keep = reason == 0
    if not files:
        raise AnnotationError(path, None, "has no images")
    return Boxes(
        wh=xywh[keep, 2:4],
        image_wh=img[keep],
        image_id=image_idx[keep],
        class_id=class_idx[keep],
        class_names=class_names,
        files=tuple(files),
        crowd=crowd[keep],
        format="coco",
        source=path,
        xy=xywh[keep, 0:2],
    )


def _fits_double(values: List[Any]) -> bool:
    try:
        for v in values:
            float(v)
    except OverflowError:
        return False
    return True


def _id(ann: Any) -> str:
    return f" (id {excerpt(ann['id'])})" if isinstance(ann, dict) and "id" in ann else ""


def _short(x: Any) -> str:
    """A bounded excerpt of a json value for a message (never a deep repr)."""
    return excerpt(x, 80)


def _name(x: Any) -> str:
    """A file or class name from json: a string, or a number written as one. Anything else (a
    list, an object, an integer of thousands of digits) raises ValueError."""
    if isinstance(x, str):
        return x
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return str(x)  # ValueError beyond Python's int-to-string digit limit
    raise ValueError(f"expected a string, got {type(x).__name__}")
