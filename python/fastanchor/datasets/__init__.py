"""Load box sizes from annotation files: Pascal VOC XML, COCO json, YOLO (Ultralytics) labels.

>>> from fastanchor import datasets
>>> boxes = datasets.load("data/VOC2007/Annotations")     # the format is detected
>>> boxes                                                # Boxes(... boxes in ... images ...)
>>> wh = boxes.filter(drop_difficult=True).letterbox(640)   # (N, 2) as YOLOv5 sees them

Every loader returns a :class:`Boxes`. Degenerate boxes (zero or negative size, NaN, outside the
image) are dropped with one :class:`AnnotationWarning` that counts them and names the first
files; ``strict=True`` raises instead. Malformed files raise :class:`AnnotationError` naming the
file and line; ``strict=False`` skips them with a warning.
"""

from __future__ import annotations

import os
from typing import Optional

from .._fileio import iter_files, sanitize, walk_files
from ._boxes import AnnotationError, AnnotationWarning, Boxes
from ._coco import load_coco
from ._files import PathLike
from ._imagesize import ImageSizeError, image_size
from ._voc import load_voc
from ._yolo import load_yolo

__all__ = [
    "AnnotationError",
    "AnnotationWarning",
    "Boxes",
    "FORMATS",
    "ImageSizeError",
    "detect_format",
    "image_size",
    "load",
    "load_coco",
    "load_voc",
    "load_yolo",
]

#: The formats :func:`load` knows.
FORMATS = ("voc", "coco", "yolo")


def detect_format(path: PathLike) -> str:
    """``"voc"``, ``"coco"`` or ``"yolo"`` for a dataset file or folder.

    A ``.json`` file is COCO, an ``.xml`` file VOC, a ``.yaml`` or ``.txt`` file YOLO. A folder
    is YOLO if it holds a dataset YAML or ``images/`` and ``labels/``; otherwise the first
    annotation files found in it decide (``.xml``: VOC; one ``.json``: COCO; ``.txt`` under a
    ``labels`` folder: YOLO), searched recursively.
    """
    p = os.fspath(path)
    if os.path.lexists(p) and not os.path.isdir(p):  # a file (a special one is refused by its reader)
        low = p.lower()
        for suffixes, fmt in (((".json",), "coco"), ((".xml",), "voc"), ((".yaml", ".yml", ".txt"), "yolo")):
            if low.endswith(suffixes):
                return fmt
        raise ValueError(
            f"cannot tell the dataset format of {sanitize(p)}: expected .json (COCO), .xml (VOC) or .yaml (YOLO)"
        )
    if not os.path.isdir(p):
        raise FileNotFoundError(f"no such file or folder: {sanitize(p)}")
    top = [e for e in os.scandir(p) if not e.name.startswith(".")]
    names = {e.name.lower() for e in top}
    if any(n.endswith((".yaml", ".yml")) for n in names) or {"images", "labels"} <= names:
        return "yolo"
    jsons = []
    for seen, (folder, file, _) in enumerate(iter_files(p)):
        low = os.path.basename(file).lower()
        if low.endswith(".xml"):
            return "voc"
        if low.endswith(".txt") and "labels" in os.path.normpath(folder).split(os.sep):
            return "yolo"
        if low.endswith(".json"):
            jsons.append(file)
        if seen > 100_000:
            break
    if len(jsons) == 1:
        return "coco"
    if len(jsons) > 1:
        raise ValueError(f"{p} holds several json files: pass the COCO annotation file itself")
    raise ValueError(
        f"cannot find annotations in {p}: expected Pascal VOC .xml files, a COCO .json file, or a YOLO dataset "
        f"(data.yaml, or images/ and labels/)"
    )


def _single_json(folder: str) -> str:
    found = walk_files(folder, (".json",))
    if len(found) != 1:
        raise ValueError(
            f"{folder}: expected one COCO .json file in the folder, found {len(found)}: pass the file itself"
        )
    return found[0]


def load(
    path: PathLike,
    *,
    format: str = "auto",
    split: str = "train",
    strict: Optional[bool] = None,
    workers: Optional[int] = None,
    progress: bool = False,
) -> Boxes:
    """Load a dataset in any supported format (detected by :func:`detect_format` by default).

    Parameters
    ----------
    path : path
        A VOC folder or XML file, a COCO json file, or a YOLO data.yaml or folder.
    format : {"auto", "voc", "coco", "yolo"}
    split : str
        For YOLO: which split to load (default ``"train"``).
    strict, workers, progress
        As in :func:`load_voc` (``workers`` and ``progress`` do not apply to COCO, which is one
        file).
    """
    if format == "auto":
        format = detect_format(path)
    if format == "voc":
        return load_voc(path, strict=strict, workers=workers, progress=progress)
    if format == "coco":
        p = os.fspath(path)
        if os.path.isdir(p):
            p = _single_json(p)
        return load_coco(p, strict=strict)
    if format == "yolo":
        return load_yolo(path, split=split, strict=strict, workers=workers, progress=progress)
    raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {format!r}")
