"""YOLO (Ultralytics) datasets: normalized ``class x y w h`` label files beside the images."""

from __future__ import annotations

import math
import os
from array import array
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._fileio import excerpt, read_text, sanitize, walk_files
from ._boxes import AnnotationError, Boxes, Problems, box_reasons, fmt_num
from ._files import PathLike, resolve_workers, run_chunks
from ._imagesize import ImageSizeError, image_size
from ._yaml import load_yaml_file

#: Image file types Ultralytics trains on.
IMAGE_SUFFIXES = (".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic")
#: Class ids must be below this (they are stored as 64-bit integers; 2**31 leaves any consumer room).
MAX_CLASS = 2**31
#: Without class names (no data.yaml), class ids must be below this: each id up to the largest
#: gets a name ("0", "1", ...), and no dataset has that many classes (ImageNet-21k has 21,841).
MAX_UNNAMED_CLASSES = 100_000
#: How far (pixels of the image) a box may reach past the border before it counts as outside.
YOLO_TOLERANCE = 1.0
#: Largest label file or image list read (a label file of 1,000 boxes is about 40 kB).
MAX_LABEL_BYTES = 16 << 20
MAX_LIST_BYTES = 256 << 20
#: Field excerpts shown in messages about a label file (which may be any file a link points at).
_FIELD_CHARS = 20

#: The error when a YOLO dataset has no image to read sizes from.
NO_IMAGES = (
    "no images found for {source}: a YOLO dataset needs its images to know the boxes' pixel sizes (the labels "
    "are fractions of the image size; only the image headers are read). The image of .../labels/<split>/a.txt "
    "is .../images/<split>/a.jpg (or .png, ...)"
)

_SEP_IMAGES = f"{os.sep}images{os.sep}"
_SEP_LABELS = f"{os.sep}labels{os.sep}"


def label_path(image_path: str) -> str:
    """The label file of an image, Ultralytics' rule: the last ``/images/`` in the path becomes
    ``/labels/`` and the extension ``.txt``."""
    head, sep, tail = image_path.rpartition(_SEP_IMAGES)
    p = head + _SEP_LABELS + tail if sep else image_path
    return os.path.splitext(p)[0] + ".txt"


def load_yolo(
    data_yaml_or_labels_dir: PathLike,
    *,
    split: str = "train",
    strict: Optional[bool] = None,
    workers: Optional[int] = None,
    progress: bool = False,
) -> Boxes:
    """Load a YOLO dataset in the Ultralytics layout.

    Image sizes come from the image files' headers (no pixel is decoded), since YOLO labels are
    normalized. JPEG EXIF rotations are applied, as Ultralytics does before normalizing.

    Parameters
    ----------
    data_yaml_or_labels_dir : path
        One of:

        - a dataset YAML (``data.yaml``) with ``path`` (the dataset root, relative to the YAML
          file's folder; default that folder), the split keys (``train``, ``val``, ``test``: an
          images folder, a ``.txt`` list of images, or a list of those, relative to the root)
          and ``names`` (a list, or a mapping from class id to name) or ``nc``;
        - a folder holding such a YAML file;
        - a labels folder (``.../labels/train2017``) whose images are in the matching
          ``.../images/train2017``;
        - an images folder, or a dataset root with ``images/`` and ``labels/`` (then
          ``images/<split>`` when it exists).

        The label file of ``.../images/a/b.jpg`` is ``.../labels/a/b.txt``. Images without a
        label file have no boxes (background).
    split : str
        The YAML key to load (``"train"``, ``"val"`` or ``"test"``), or the sub-folder of
        ``images/`` for a dataset root.
    strict : bool or None
        None (default): degenerate boxes (zero or negative size, NaN, outside the image) and
        label files without an image are dropped with one :class:`AnnotationWarning` each; a
        malformed line (wrong number of fields, not a number, an unknown class) or an
        unreadable image raises :class:`AnnotationError`. True: all of these raise. False:
        malformed label files and unreadable images are skipped with a warning.
    workers : int, optional
        Processes that read files; as in :func:`load_voc`.
    progress : bool
        Show a tqdm progress bar over the images.

    Returns
    -------
    Boxes
        ``wh`` = normalized width and height times the image size; ``files`` the image files.
        A line of ``class x1 y1 x2 y2 ...`` (a segmentation polygon) gives the box around it.
        Exact duplicate lines of one file are dropped (with a warning), as Ultralytics does.
    """
    names, pairs, problems, source = yolo_pairs(data_yaml_or_labels_dir, split, strict)
    n_workers = resolve_workers(workers, len(pairs))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), desc="loading YOLO", unit="image", dynamic_ncols=True, leave=False)
    try:
        chunks = run_chunks(_parse_chunk, pairs, n_workers, bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    return assemble_yolo(names, pairs, problems, source, chunks, stacklevel=4)


def yolo_pairs(
    data_yaml_or_labels_dir: PathLike, split: str, strict: Optional[bool]
) -> Tuple[Optional[Tuple[str, ...]], List[Tuple[str, str]], Problems, str]:
    """(class names or None, [(image, label file)] in order, the problems so far, a description)."""
    root = os.fspath(data_yaml_or_labels_dir)
    problems = Problems(strict)
    names, pairs, orphans, source = _resolve(root, split)
    if not pairs:
        raise ValueError(NO_IMAGES.format(source=source))
    if orphans:
        shown = ", ".join(orphans[:3]) + (", ..." if len(orphans) > 3 else "")
        message = f"{len(orphans):,} label files have no image and were ignored: {shown}"
        if strict:
            looked = ", ".join(IMAGE_SUFFIXES[:4])
            raise AnnotationError(orphans[0], None, f"this label file has no image (looked for {looked}, ...)")
        problems.notes.append(message)
    return names, pairs, problems, source


def assemble_yolo(
    names: Optional[Tuple[str, ...]],
    pairs: List[Tuple[str, str]],
    problems: Problems,
    source: str,
    chunks: Sequence[Dict[str, Any]],
    stacklevel: int = 3,
) -> Boxes:
    """The Boxes of ``pairs`` from the results of :func:`_parse_chunk` on consecutive runs of them."""
    sizes_l, cls_l, box_l, item_l, line_l = [], [], [], [], []
    skipped_items = set()
    duplicates, dup_files = 0, []
    offset = 0
    for chunk in chunks:
        for local, path, line, message in chunk["errors"]:
            problems.bad_file(path, line, message)
            skipped_items.add(offset + local)
        sizes_l.append(np.frombuffer(chunk["sizes"], dtype=np.float64).reshape(-1, 2))
        cls_l.append(np.frombuffer(chunk["cls"], dtype=np.int64))
        box_l.append(np.frombuffer(chunk["boxes"], dtype=np.float64).reshape(-1, 4))
        item_l.append(np.frombuffer(chunk["item"], dtype=np.int32).astype(np.int64) + offset)
        line_l.append(np.frombuffer(chunk["line"], dtype=np.int32))
        for local, count in chunk["duplicates"]:
            duplicates += count
            dup_files.append(pairs[offset + local][1])
        offset += len(chunk["sizes"]) // 16
    sizes = np.concatenate(sizes_l)
    cls = np.concatenate(cls_l)
    xywhn = np.concatenate(box_l)
    item = np.concatenate(item_l)
    line = np.concatenate(line_l)

    if names is None:
        # Without names the classes are numbered 0..max; an id past MAX_UNNAMED_CLASSES is a
        # corrupt line, not a dataset of that many classes (it would cost a name per class).
        out_of_range = cls >= MAX_UNNAMED_CLASSES
        if out_of_range.any():
            j = int(np.argmax(out_of_range))
            problems.bad_file(
                pairs[item[j]][1],
                int(line[j]),
                f"class {int(cls[j])} is out of range: without class names (a data.yaml with 'names'), class ids "
                f"go up to {MAX_UNNAMED_CLASSES - 1:,}",
            )
            skipped_items |= set(item[out_of_range].tolist())
        in_range = cls[~out_of_range]
        n_classes = int(in_range.max()) + 1 if in_range.size else 0
        names = tuple(str(i) for i in range(n_classes))
    elif cls.size and int(cls.max()) >= len(names):
        j = int(np.argmax(cls >= len(names)))
        problems.bad_file(
            pairs[item[j]][1],
            int(line[j]),
            f"class {int(cls[j])} is out of range: the dataset names {len(names)} classes",
        )
        bad_items = set(item[cls >= len(names)].tolist())
        skipped_items |= bad_items

    keep_item = np.ones(len(pairs), dtype=bool)
    if skipped_items:
        keep_item[list(skipped_items)] = False
    img = sizes[item]
    xc, yc, w, h = (xywhn[:, j] for j in range(4))
    W, H = img[:, 0], img[:, 1]
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf (a polygon to inf) is a dropped box, not a warning
        x1, y1, x2, y2 = (xc - w / 2) * W, (yc - h / 2) * H, (xc + w / 2) * W, (yc + h / 2) * H
        reason = box_reasons(x1, y1, x2, y2, W, H, YOLO_TOLERANCE)
    reason[~keep_item[item]] = 0
    bad = np.flatnonzero(reason)
    if bad.size:
        first = int(bad[0])
        detail = (
            f"'{int(cls[first])} {' '.join(fmt_num(v) for v in xywhn[first])}' in an image of "
            f"{fmt_num(W[first])}x{fmt_num(H[first])}"
        )
        problems.degenerate(
            reason[bad], [pairs[i][1] for i in item[bad[:1000]]], int(line[first]), detail, int(keep_item[item].sum())
        )
    if duplicates:
        problems.notes.append(
            f"removed {duplicates:,} duplicate label lines in {len(dup_files):,} files (as Ultralytics does): "
            + ", ".join(dup_files[:3])
            + (", ..." if len(dup_files) > 3 else "")
        )
    problems.emit(stacklevel)

    keep = (reason == 0) & keep_item[item]
    new_index = np.cumsum(keep_item) - 1
    return Boxes(
        wh=xywhn[keep, 2:4] * img[keep],
        image_wh=img[keep],
        image_id=new_index[item[keep]],
        class_id=cls[keep],
        class_names=names,
        files=tuple(p[0] for p, k in zip(pairs, keep_item) if k),
        format="yolo",
        source=source,
        xy=(xywhn[keep, 0:2] - 0.5 * xywhn[keep, 2:4]) * img[keep],
    )


# --- finding images and labels -----------------------------------------------------------------------


def _resolve(path: str, split: str) -> Tuple[Optional[Tuple[str, ...]], List[Tuple[str, str]], List[str], str]:
    """(class names or None, [(image, label file)], orphan label files, description)."""
    if os.path.lexists(path) and not os.path.isdir(path):  # a file (a special one is refused when read)
        if path.lower().endswith((".yaml", ".yml")):
            return _from_yaml(path, split)
        if path.lower().endswith(".txt"):
            images = _read_list(path, os.path.dirname(path))
            return None, [(im, label_path(im)) for im in images], [], path
        raise ValueError(f"{path}: expected a dataset .yaml file, a labels folder or an images folder")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no such file or folder: {path}")
    yamls = sorted(e.path for e in os.scandir(path) if e.is_file() and e.name.lower().endswith((".yaml", ".yml")))
    if yamls:
        preferred = [y for y in yamls if os.path.basename(y).lower() in ("data.yaml", "data.yml", "dataset.yaml")]
        if preferred or len(yamls) == 1:
            return _from_yaml((preferred or yamls)[0], split)
        shown = ", ".join(map(os.path.basename, yamls))
        raise ValueError(f"{path} holds several YAML files ({shown}): pass the dataset's one")
    norm = os.path.normpath(os.path.abspath(path))
    if os.path.isdir(os.path.join(norm, "images")):  # a dataset root
        images_dir = os.path.join(norm, "images", split)
        if not os.path.isdir(images_dir):
            images_dir = os.path.join(norm, "images")
        return (None, *_from_images(images_dir), images_dir)
    if os.path.isdir(os.path.join(norm, "labels")):  # a root with labels only: images are missing
        labels_dir = os.path.join(norm, "labels", split)
        return _from_labels_dir(labels_dir if os.path.isdir(labels_dir) else os.path.join(norm, "labels"))
    parts = norm.split(os.sep)
    if "labels" in parts:
        return _from_labels_dir(norm)
    if "images" in parts:
        return (None, *_from_images(norm), norm)
    raise ValueError(
        f"{path} is not a YOLO dataset: expected a data.yaml file, a labels folder (.../labels/...), an images "
        f"folder (.../images/...), or a folder with images/ and labels/"
    )


def _from_yaml(yaml_path: str, split: str) -> Tuple[Optional[Tuple[str, ...]], List[Tuple[str, str]], List[str], str]:
    data = load_yaml_file(yaml_path)
    if not isinstance(data, dict):
        raise AnnotationError(yaml_path, None, "not a dataset YAML: expected a mapping with 'train', 'val' and 'names'")
    here = os.path.dirname(os.path.abspath(yaml_path))
    root = data.get("path")
    if root is not None and not isinstance(root, str):
        raise AnnotationError(yaml_path, None, f"'path' must be a folder name, got {type(root).__name__}")
    root = here if root in (None, "") else os.path.normpath(os.path.join(here, os.path.expanduser(root)))
    if not os.path.isdir(root):
        raise AnnotationError(yaml_path, None, f"the dataset root {sanitize(root, 200)} (its 'path') does not exist")
    names = _names(data, yaml_path)
    if split not in data or data[split] in (None, ""):
        keys = [k for k in ("train", "val", "test") if data.get(k)]
        raise AnnotationError(
            yaml_path, None, f"has no {excerpt(split)} split (it has {', '.join(map(repr, keys)) or 'none'})"
        )
    entries = data[split] if isinstance(data[split], list) else [data[split]]
    pairs: List[Tuple[str, str]] = []
    orphans: List[str] = []
    for k, entry in enumerate(entries):
        if not isinstance(entry, str):
            where = f"{split!r}" if len(entries) == 1 and not isinstance(data[split], list) else f"{split!r}[{k}]"
            raise AnnotationError(
                yaml_path,
                None,
                f"the {excerpt(where)} entry must be a folder or a .txt list of images, got "
                f"{type(entry).__name__} {excerpt(entry)}",
            )
        p = os.path.normpath(os.path.join(root, os.path.expanduser(entry)))
        if os.path.isdir(p):
            found, lost = _from_images(p)
            pairs.extend(found)
            orphans.extend(lost)
        elif os.path.lexists(p) and p.lower().endswith(".txt"):  # a special file is refused when read
            pairs.extend((im, label_path(im)) for im in _read_list(p, root))
        else:
            raise AnnotationError(
                yaml_path,
                None,
                f"the {excerpt(split)} entry {excerpt(entry)} is neither a folder nor a .txt list: "
                f"{sanitize(p, 200)} not found",
            )
    return names, pairs, orphans, f"{yaml_path} ({split})"


def _names(data: Dict[str, Any], yaml_path: str) -> Optional[Tuple[str, ...]]:
    names = data.get("names")
    if isinstance(names, dict):
        try:
            lookup = {_class_id(k): v for k, v in names.items()}
        except (TypeError, ValueError, OverflowError):
            raise AnnotationError(yaml_path, None, "'names' must map class ids (integers) to names") from None
        ids = sorted(lookup)
        if ids != list(range(len(ids))):
            raise AnnotationError(yaml_path, None, f"'names' must have the class ids 0..{len(ids) - 1}, got {ids[:10]}")
        values = [lookup[i] for i in ids]
    elif isinstance(names, list):
        values = names
    elif names is not None:
        raise AnnotationError(yaml_path, None, f"'names' must be a list or a mapping, got {type(names).__name__}")
    else:
        nc = data.get("nc")
        if nc is None:
            return None
        if not (isinstance(nc, int) and not isinstance(nc, bool) and 0 < nc <= MAX_UNNAMED_CLASSES):
            raise AnnotationError(
                yaml_path,
                None,
                f"'nc' must be a class count from 1 to {MAX_UNNAMED_CLASSES:,} (without 'names'), got {excerpt(nc)}",
            )
        return tuple(str(i) for i in range(nc))
    for k, v in enumerate(values):
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise AnnotationError(
                yaml_path, None, f"'names' entry {k} must be a name (a string), got {type(v).__name__} {excerpt(v)}"
            )
    return tuple(v if isinstance(v, str) else _number_name(v) for v in values)


def _class_id(key: Any) -> int:
    """A class id from a 'names' key: an integer, or a string or float holding one."""
    if isinstance(key, bool) or not isinstance(key, (int, str, float)):
        raise TypeError("not a class id")
    value = int(key)  # ValueError for text or a float with a fraction; OverflowError for inf
    if isinstance(key, float) and value != key:
        raise ValueError("not an integer")
    return value


def _number_name(v: Any) -> str:
    try:
        return str(v)
    except ValueError:  # an integer beyond Python's int-to-string digit limit
        return f"<an integer of {v.bit_length()} bits>"


def _read_list(txt: str, root: str) -> List[str]:
    """Image paths from a .txt list: ``./x`` relative to the list's folder, other relative paths
    to the dataset root."""
    base = os.path.dirname(os.path.abspath(txt))
    out = []
    try:
        text = read_text(txt, MAX_LIST_BYTES)
    except UnicodeDecodeError as exc:
        raise AnnotationError(txt, None, f"not a UTF-8 list of images ({exc.reason})") from None
    for raw in text.splitlines():
        s = raw.strip()
        # Only image files, as Ultralytics reads these lists: any other line (this may be any
        # text file on the system) is neither used nor shown.
        if not s.lower().endswith(IMAGE_SUFFIXES):
            continue
        if s.startswith("./"):
            p = os.path.join(base, s[2:])
        else:
            p = os.path.join(root, os.path.expanduser(s))
        out.append(os.path.normpath(p))
    return out


def _from_images(images_dir: str) -> Tuple[List[Tuple[str, str]], List[str]]:
    """(image, label) pairs of an images folder, and the label files of the matching labels
    folder that no image claims."""
    images = walk_files(images_dir, IMAGE_SUFFIXES)
    pairs = [(im, label_path(im)) for im in images]
    labels_dir = label_path(os.path.join(images_dir, "x"))[: -len("x.txt")]
    orphans: List[str] = []
    if os.path.normpath(labels_dir) != os.path.normpath(images_dir) and os.path.isdir(labels_dir):
        claimed = {lab for _, lab in pairs}
        orphans = [lab for lab in walk_files(labels_dir, (".txt",)) if lab not in claimed]
    return pairs, orphans


def _from_labels_dir(labels_dir: str) -> Tuple[None, List[Tuple[str, str]], List[str], str]:
    labels = walk_files(labels_dir, (".txt",))
    if not labels:
        raise ValueError(f"no .txt label files in {labels_dir}")
    pairs: List[Tuple[str, str]] = []
    orphans: List[str] = []
    for lab in labels:
        head, sep, tail = lab.rpartition(_SEP_LABELS)
        stem = os.path.splitext(head + _SEP_IMAGES + tail if sep else lab)[0]
        image = None
        for suffix in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
            if os.path.isfile(stem + suffix):
                image = stem + suffix
                break
        if image is None:
            orphans.append(lab)
        else:
            pairs.append((image, lab))
    return None, pairs, orphans, labels_dir


# --- parsing (in worker processes for large datasets) ----------------------------------------------------


def _parse_chunk(pairs: Sequence[Tuple[str, str]]) -> Dict[str, Any]:
    """Read image sizes and label files; never raises for bad content."""
    sizes = array("d")
    cls = array("q")
    boxes = array("d")
    item = array("i")
    lines = array("i")
    errors: List[Tuple[int, str, Optional[int], str]] = []
    duplicates: List[Tuple[int, int]] = []
    nan = float("nan")
    for index, (image, label) in enumerate(pairs):
        try:
            w, h = image_size(image)
        except (ImageSizeError, OSError) as exc:
            text = str(exc)
            if text.startswith(image + ": "):
                text = text[len(image) + 2 :]
            errors.append((index, image, None, f"cannot read the image size: {text}"))
            sizes.extend((nan, nan))
            continue
        sizes.extend((float(w), float(h)))
        try:
            text = read_text(label, MAX_LABEL_BYTES)
        except FileNotFoundError:
            if os.path.islink(label):
                errors.append((index, label, None, "cannot read the label file: a broken link"))
            continue  # an image without labels: background
        except OSError as exc:
            errors.append((index, label, None, f"cannot read the label file: {exc.strerror or exc}"))
            continue
        except UnicodeDecodeError as exc:
            errors.append((index, label, None, f"cannot read the label file: not UTF-8 text ({exc.reason})"))
            continue
        rows, row_lines, failure = _parse_labels(text)
        if failure is not None:
            errors.append((index, label, failure[0], failure[1]))
            continue
        if len(rows) > 1:
            seen = set()
            unique_rows, unique_lines = [], []
            for r, ln in zip(rows, row_lines):
                if r not in seen:
                    seen.add(r)
                    unique_rows.append(r)
                    unique_lines.append(ln)
            if len(unique_rows) < len(rows):
                duplicates.append((index, len(rows) - len(unique_rows)))
                rows, row_lines = unique_rows, unique_lines
        for (c, xc, yc, bw, bh), ln in zip(rows, row_lines):
            cls.append(c)
            boxes.extend((xc, yc, bw, bh))
            item.append(index)
            lines.append(ln)
    return {
        "sizes": sizes.tobytes(),
        "cls": cls.tobytes(),
        "boxes": boxes.tobytes(),
        "item": item.tobytes(),
        "line": lines.tobytes(),
        "errors": errors,
        "duplicates": duplicates,
    }


Row = Tuple[int, float, float, float, float]


def _parse_labels(text: str) -> Tuple[List[Row], List[int], Optional[Tuple[int, str]]]:
    """Rows ``(class, x, y, w, h)`` of a label file, their line numbers, and the first problem
    ``(line, message)`` if any (then the rows are incomplete)."""
    rows: List[Tuple[int, float, float, float, float]] = []
    row_lines: List[int] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        parts = raw.split()
        if not parts:
            continue
        n = len(parts)
        if n != 5 and (n < 7 or n % 2 == 0):
            return (
                rows,
                row_lines,
                (
                    lineno,
                    f"expected 5 fields (class x_center y_center width height) or a polygon (class x1 y1 x2 y2 x3 y3 ...), "
                    f"got {n}",
                ),
            )
        try:
            values = [float(p) for p in parts]
        except ValueError:
            k, bad = next((k, p) for k, p in enumerate(parts) if not _is_float(p))
            return rows, row_lines, (lineno, f"{excerpt(bad, _FIELD_CHARS)} is not a number (field {k + 1})")
        c = values[0]
        if not (math.isfinite(c) and 0 <= c < MAX_CLASS and c == int(c)):
            return (
                rows,
                row_lines,
                (
                    lineno,
                    f"the class must be a non-negative integer below 2**31, got {excerpt(parts[0], _FIELD_CHARS)}",
                ),
            )
        if n == 5:
            rows.append((int(c), values[1], values[2], values[3], values[4]))
        else:  # polygon: the box around its points
            xs, ys = values[1::2], values[2::2]
            x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
            rows.append((int(c), (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0))
        row_lines.append(lineno)
    return rows, row_lines, None


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
