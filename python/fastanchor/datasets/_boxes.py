"""The :class:`Boxes` container and the handling of bad files and degenerate boxes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._fileio import sanitize
from .._validation import as_float

__all__ = ["Boxes", "AnnotationError", "AnnotationWarning"]

#: Longest message of an AnnotationError (after its file and line).
MAX_MESSAGE_CHARS = 2000


class AnnotationError(ValueError):
    """An annotation file is malformed, or a box is degenerate under ``strict=True``.

    Attributes
    ----------
    path : str
        The file at fault.
    line : int or None
        The line in that file, when known.
    """

    def __init__(self, path: str, line: Optional[int], message: str) -> None:
        self.path = str(path)
        self.line = line
        # Bounded and printable whatever a foreign file put into the path or the message.
        where = sanitize(self.path, 1000) + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: {sanitize(str(message), MAX_MESSAGE_CHARS)}")


class AnnotationWarning(UserWarning):
    """Boxes or files were dropped while loading annotations (the message counts them)."""


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    if a.flags.writeable:
        if not a.flags.owndata:
            a = a.copy()
        a.flags.writeable = False
    return a


@dataclass(frozen=True, repr=False, eq=False)
class Boxes:
    """Bounding boxes loaded from a dataset: their sizes, images and classes.

    All per-box arrays have the same length N and are read-only. ``Boxes`` objects are
    immutable: :meth:`filter` and indexing return new ones.

    Attributes
    ----------
    wh : ndarray (N, 2) float64
        Box width and height in pixels of the original image.
    image_wh : ndarray (N, 2) float64
        Width and height of the image each box belongs to (NaN when the size is unknown).
    image_id : ndarray (N,) int64
        Index of each box's image in ``files``.
    class_id : ndarray (N,) int64
        Index of each box's class in ``class_names``.
    class_names : tuple of str
        The dataset's class names.
    files : tuple of str
        One entry per image, boxes or not: the VOC XML file, the COCO ``file_name``, or the
        YOLO image file.
    difficult : ndarray (N,) bool
        VOC's ``difficult`` flag (False for other formats).
    crowd : ndarray (N,) bool
        COCO's ``iscrowd`` flag (False for other formats).
    format : str
        ``"voc"``, ``"coco"``, ``"yolo"`` or ``"array"``.
    source : str
        What was loaded (a folder or file), for messages.
    xy : ndarray (N, 2) float64
        Top-left corner ``(x1, y1)`` of each box in pixels of the original image (NaN when the
        position is unknown, e.g. a ``Boxes`` built from sizes only). See :attr:`xyxy`.
    """

    wh: np.ndarray
    image_wh: np.ndarray
    image_id: Optional[np.ndarray] = None
    class_id: Optional[np.ndarray] = None
    class_names: Tuple[str, ...] = ()
    files: Tuple[str, ...] = ()
    difficult: Optional[np.ndarray] = None
    crowd: Optional[np.ndarray] = None
    format: str = "array"
    source: str = ""
    xy: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        wh = np.asarray(self.wh, dtype=np.float64)
        if wh.ndim != 2 or wh.shape[1] != 2:
            raise ValueError(f"wh must have shape (N, 2), got {wh.shape}")
        n = wh.shape[0]
        image_wh = np.asarray(self.image_wh, dtype=np.float64)
        if image_wh.shape == (2,):
            image_wh = np.broadcast_to(image_wh, (n, 2))
        if image_wh.shape != (n, 2):
            raise ValueError(f"image_wh must have shape ({n}, 2) to match wh, got {image_wh.shape}")

        def per_box(name: str, value: Any, dtype: Any, default: Any) -> np.ndarray:
            arr = np.full(n, default, dtype=dtype) if value is None else np.asarray(value).astype(dtype, copy=False)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},) to match wh, got {arr.shape}")
            return _readonly(arr)

        image_id = per_box("image_id", self.image_id, np.int64, 0)
        class_id = per_box("class_id", self.class_id, np.int64, 0)
        files = tuple(str(f) for f in self.files)
        class_names = tuple(str(c) for c in self.class_names)
        if n:
            if not files:
                files = ("",)
            if not class_names:
                class_names = tuple(str(i) for i in range(int(class_id.max()) + 1))
            if image_id.min() < 0 or image_id.max() >= len(files):
                raise ValueError(f"image_id must index files (0..{len(files) - 1})")
            if class_id.min() < 0 or class_id.max() >= len(class_names):
                raise ValueError(f"class_id must index class_names (0..{len(class_names) - 1})")
        setattr_ = object.__setattr__
        setattr_(self, "wh", _readonly(wh))
        setattr_(self, "image_wh", _readonly(image_wh))
        setattr_(self, "image_id", image_id)
        setattr_(self, "class_id", class_id)
        setattr_(self, "class_names", class_names)
        setattr_(self, "files", files)
        setattr_(self, "difficult", per_box("difficult", self.difficult, bool, False))
        setattr_(self, "crowd", per_box("crowd", self.crowd, bool, False))
        xy = np.full((n, 2), np.nan) if self.xy is None else np.asarray(self.xy, dtype=np.float64)
        if xy.shape != (n, 2):
            raise ValueError(f"xy must have shape ({n}, 2) to match wh, got {xy.shape}")
        setattr_(self, "xy", _readonly(xy))

    # --- size and description -------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.wh.shape[0])

    @property
    def n_images(self) -> int:
        """Number of images (including images without boxes)."""
        return len(self.files)

    def __repr__(self) -> str:
        return (
            f"Boxes({len(self):,} boxes in {self.n_images:,} images, {len(self.class_names)} classes, "
            f"format={self.format!r}, source={self.source!r})"
        )

    def class_counts(self) -> Dict[str, int]:
        """``{class name: number of boxes}`` in ``class_names`` order."""
        counts = np.bincount(self.class_id, minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, counts)}

    # --- selection ---------------------------------------------------------------------------

    def __getitem__(self, index: Any) -> Boxes:
        """A new ``Boxes`` with the selected boxes (boolean mask, integer indices or slice).

        ``files`` and ``class_names`` are kept whole, so ``image_id`` and ``class_id`` keep
        their meaning.
        """
        if isinstance(index, (int, np.integer)):
            index = [index]
        idx = np.arange(len(self))[index]
        return replace(
            self,
            wh=self.wh[idx],
            image_wh=self.image_wh[idx],
            image_id=self.image_id[idx],
            class_id=self.class_id[idx],
            difficult=self.difficult[idx],
            crowd=self.crowd[idx],
            xy=self.xy[idx],
        )

    def filter(
        self,
        classes: Optional[Iterable[Union[int, str]]] = None,
        *,
        min_size: float = 0.0,
        drop_difficult: bool = False,
        drop_crowd: bool = False,
    ) -> Boxes:
        """Keep the boxes that pass every given test.

        Parameters
        ----------
        classes : iterable of int or str, optional
            Class ids (indices into ``class_names``) or names to keep.
        min_size : float
            Keep boxes whose width and height are both at least this, in original-image pixels.
        drop_difficult : bool
            Drop VOC boxes flagged ``difficult``.
        drop_crowd : bool
            Drop COCO boxes flagged ``iscrowd``.
        """
        keep = np.ones(len(self), dtype=bool)
        if classes is not None:
            if isinstance(classes, (str, int, np.integer)):
                classes = [classes]
            ids = []
            for c in classes:
                if isinstance(c, str):
                    if c not in self.class_names:
                        shown = ", ".join(repr(n) for n in self.class_names[:20])
                        more = ", ..." if len(self.class_names) > 20 else ""
                        raise ValueError(f"unknown class name {c!r}: the classes are {shown}{more}")
                    ids.append(self.class_names.index(c))
                elif isinstance(c, (int, np.integer)) and not isinstance(c, (bool, np.bool_)):
                    if not 0 <= int(c) < len(self.class_names):
                        raise ValueError(f"class id {c} is out of range: there are {len(self.class_names)} classes")
                    ids.append(int(c))
                else:
                    raise TypeError(f"classes must hold class ids (int) or names (str), got {c!r}")
            keep &= np.isin(self.class_id, ids)
        min_size = as_float(min_size, "min_size")
        if min_size > 0:
            keep &= (self.wh >= min_size).all(axis=1)
        if drop_difficult:
            keep &= ~self.difficult
        if drop_crowd:
            keep &= ~self.crowd
        return self[keep]

    @property
    def xyxy(self) -> np.ndarray:
        """Corner boxes ``(x1, y1, x2, y2)`` in pixels of the original image, (N, 4) float64
        (NaN where the position is unknown)."""
        return np.concatenate([self.xy, self.xy + self.wh], axis=1)

    # --- rescaling -------------------------------------------------------------------------------

    def _known_sizes(self, what: str) -> np.ndarray:
        img = self.image_wh
        bad = ~(np.isfinite(img) & (img > 0)).all(axis=1)
        if bad.any():
            first = self.files[int(self.image_id[np.flatnonzero(bad)[0]])]
            raise ValueError(
                f"{what} needs each box's image size, but {int(bad.sum())} boxes have none; the first is "
                f"in {first}. Drop them with boxes[np.isfinite(boxes.image_wh).all(1)]"
            )
        return img

    def letterbox(self, img_size: float) -> np.ndarray:
        """Box sizes after scaling each image's long side to ``img_size`` (YOLOv5's convention).

        Returns ``wh * img_size / max(image width, image height)``, an (N, 2) float64 array.
        """
        size = as_float(img_size, "img_size")
        if size <= 0:
            raise ValueError(f"img_size must be positive, got {img_size}")
        img = self._known_sizes("letterbox()")
        return self.wh * (size / img.max(axis=1))[:, None]

    def stretch(self, width: float, height: Optional[float] = None) -> np.ndarray:
        """Box sizes after resizing every image to ``width`` x ``height`` (SSD/TensorFlow and
        darknet's convention; the aspect ratio changes). ``height`` defaults to ``width``."""
        w = as_float(width, "width")
        h = w if height is None else as_float(height, "height")
        if w <= 0 or h <= 0:
            raise ValueError(f"width and height must be positive, got {w} x {h}")
        img = self._known_sizes("stretch()")
        return self.wh * (np.array([w, h]) / img)

    def normalized(self) -> np.ndarray:
        """Box sizes as fractions of their image's width and height."""
        return self.wh / self._known_sizes("normalized()")


# --- problems found while loading ------------------------------------------------------------------

#: Why a box is degenerate, by code (0 = fine).
REASONS = {
    1: "a NaN or infinite coordinate",
    2: "zero or negative size",
    3: "outside the image",
    4: "an image size of zero, negative or not a number",
}
#: The reason code of boxes whose file states an image size that is not one.
INVALID_SIZE = 4
_SHOWN = 3


@dataclass
class Problems:
    """Collects malformed files and degenerate boxes while loading; decides raise or warn.

    strict=None: degenerate boxes are dropped with one warning, malformed files raise.
    strict=True: both raise. strict=False: both are dropped with one warning each.
    """

    strict: Optional[bool]
    skipped: List[Tuple[str, Optional[int], str]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    #: Keep the warnings' messages in ``emitted`` instead of issuing them: for loads in worker
    #: threads, where catching warnings is not thread-safe (the caller issues them).
    quiet: bool = False
    emitted: List[str] = field(default_factory=list)

    def bad_file(self, path: str, line: Optional[int], message: str) -> None:
        """A file (or an entry of it) that cannot be read. Raises unless strict=False."""
        if self.strict is False:
            self.skipped.append((str(path), line, message))
        else:
            raise AnnotationError(
                path, line, message + " (pass strict=False, or --skip-bad-files on the command line, to skip it)"
            )

    def degenerate(
        self,
        reason: np.ndarray,
        box_files: Sequence[str],
        first_line: Optional[int],
        detail: str,
        total: int,
    ) -> None:
        """Degenerate boxes, in file order: their ``reason`` codes, the file of each (at least
        the first few), the line of the first one when known, a description of its values, and
        the number of boxes loaded. Raises under strict=True, else records one warning."""
        if len(reason) == 0:
            return
        if self.strict:
            raise AnnotationError(box_files[0], first_line, f"degenerate box ({REASONS[int(reason[0])]}): {detail}")
        counts = ", ".join(
            f"{REASONS[code]}: {int((reason == code).sum()):,}" for code in sorted(REASONS) if (reason == code).any()
        )
        shown: List[str] = []
        for f in box_files:
            if f not in shown:
                if len(shown) == _SHOWN:
                    shown.append("...")
                    break
                shown.append(f)
        first = f"{box_files[0]}:{first_line}" if first_line is not None else box_files[0]
        self.notes.append(
            f"dropped {len(reason):,} degenerate boxes of {total:,} ({counts}) in {', '.join(shown)}; "
            f"the first, {first}: {detail} (strict=True raises instead)"
        )

    def _warn(self, message: str, stacklevel: int) -> None:
        """One warning, ``stacklevel`` counted from emit()'s frame."""
        if self.quiet:
            self.emitted.append(message)
        else:
            warnings.warn(message, AnnotationWarning, stacklevel=stacklevel + 1)

    def emit(self, stacklevel: int = 3) -> None:
        """Issue the collected warnings (one per kind of problem), or keep them when ``quiet``."""
        if self.skipped:
            paths = dict.fromkeys(path for path, _, _ in self.skipped)
            path, line, message = self.skipped[0]
            where = f"{path}:{line}" if line is not None else path
            more = f", and {len(paths) - 1} more" if len(paths) > 1 else ""
            self._warn(
                sanitize(
                    f"skipped {len(self.skipped):,} malformed entries in {len(paths):,} files: "
                    f"{where}: {message}{more}",
                    2 * MAX_MESSAGE_CHARS,
                ),
                stacklevel,
            )
        for note in self.notes:
            self._warn(sanitize(note, 2 * MAX_MESSAGE_CHARS), stacklevel)


def box_reasons(
    x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray, img_w: np.ndarray, img_h: np.ndarray, tol: float
) -> np.ndarray:
    """int8 reason codes for boxes given by corners in pixels (0: fine). ``tol`` is how far, in
    pixels, a box may reach past the image border (VOC's 1-based coordinates reach the width)."""
    reason = np.zeros(x1.shape[0], dtype=np.int8)
    with np.errstate(invalid="ignore", over="ignore"):
        known = np.isfinite(img_w) & np.isfinite(img_h)
        outside = known & ((x1 < -tol) | (y1 < -tol) | (x2 > img_w + tol) | (y2 > img_h + tol))
        reason[outside] = 3
        w, h = x2 - x1, y2 - y1
        reason[~((w > 0) & (h > 0))] = 2
        # a size beyond the double range (-1e308 to 1e308) counts as infinite
        finite = np.isfinite(x1) & np.isfinite(y1) & np.isfinite(x2) & np.isfinite(y2) & np.isfinite(w) & np.isfinite(h)
    reason[~finite] = 1
    return reason


def fmt_num(x: float) -> str:
    return f"{x:g}"
