"""Pascal VOC XML annotations: one file per image."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from array import array
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._fileio import EXCERPT_CHARS, read_regular, sanitize
from ._boxes import INVALID_SIZE, Boxes, Problems, box_reasons, fmt_num
from ._files import PathLike, list_files, resolve_workers, run_chunks
from ._imagesize import ImageSizeError, image_size

_COORDS = ("xmin", "ymin", "xmax", "ymax")
#: How far (pixels) a VOC box may reach past the image border before it counts as outside:
#: VOC coordinates are 1-based, so xmax equals the width for a box that touches the border.
VOC_TOLERANCE = 1.0
#: Largest VOC file read (one image's annotation is a few kB).
MAX_XML_BYTES = 16 << 20


def load_voc(
    path_or_paths: Union[PathLike, Iterable[PathLike]],
    *,
    strict: Optional[bool] = None,
    workers: Optional[int] = None,
    progress: bool = False,
) -> Boxes:
    """Load Pascal VOC XML annotations.

    Parameters
    ----------
    path_or_paths : path or list of paths
        A folder (searched recursively for ``*.xml``; hidden entries skipped), one XML file, or a
        list of files and folders.
    strict : bool or None
        None (default): degenerate boxes (zero or negative size, NaN, outside the image) are
        dropped with one :class:`AnnotationWarning`; a malformed file raises
        :class:`AnnotationError`. True: degenerate boxes raise too. False: malformed files are
        skipped with a warning as well.
    workers : int, optional
        Processes that parse files. None: all CPUs for large folders on Linux (forked workers),
        else 1 (in this process).
    progress : bool
        Show a tqdm progress bar over the files.

    Returns
    -------
    Boxes
        ``wh = (xmax - xmin, ymax - ymin)`` in pixels; ``image_wh`` from ``<size>`` (or, when it
        is missing or zero, from the header of the image named by ``<filename>`` beside the XML
        or in a sibling ``JPEGImages``/``images`` folder); ``class_names`` sorted; ``files`` the
        XML files; ``difficult`` from ``<difficult>``.

    Raises
    ------
    AnnotationError
        A file is not well-formed XML, is not a VOC annotation, or has an object without a name
        or with a missing or non-numeric coordinate (the message names the file and line).
    FileNotFoundError
        ``path_or_paths`` does not exist.
    ValueError
        No XML files were found.
    """
    files, source = voc_files(path_or_paths)
    n_workers = resolve_workers(workers, len(files))
    bar = _bar(progress, len(files), "loading VOC")
    try:
        chunks = run_chunks(_parse_chunk, files, n_workers, bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    return assemble_voc(files, source, chunks, strict, stacklevel=4)


def voc_files(path_or_paths: Union[PathLike, Iterable[PathLike]]) -> Tuple[List[str], str]:
    """The XML files to load, in order, and a description of them for messages."""
    files = list_files(path_or_paths, (".xml",), "Pascal VOC XML")
    source = _describe(path_or_paths)
    if not files:
        raise ValueError(f"no .xml files found in {source}")
    return files, source


def assemble_voc(
    files: List[str], source: str, chunks: Sequence[Dict[str, Any]], strict: Optional[bool], stacklevel: int = 3
) -> Boxes:
    """The Boxes of ``files`` from the results of :func:`_parse_chunk` on consecutive runs of them
    (wherever they ran); problems raise or warn (one warning per kind) as ``strict`` says."""
    problems = Problems(strict)
    # Merge the chunks: global class table, file order kept.
    names: Dict[str, int] = {}
    coords, obj_file, obj_class, obj_diff, sizes = [], [], [], [], []
    offset = 0
    for chunk in chunks:
        for local, line, message in chunk["errors"]:
            problems.bad_file(files[offset + local], line, message)
        remap = np.array([names.setdefault(n, len(names)) for n in chunk["names"]], dtype=np.int64)
        coords.append(np.frombuffer(chunk["coords"], dtype=np.float64).reshape(-1, 4))
        obj_file.append(np.frombuffer(chunk["obj_file"], dtype=np.int32).astype(np.int64) + offset)
        local_class = np.frombuffer(chunk["obj_class"], dtype=np.int32)
        obj_class.append(remap[local_class] if remap.size else np.zeros(0, np.int64))
        obj_diff.append(np.frombuffer(chunk["obj_diff"], dtype=np.int8).astype(bool))
        sizes.append(np.frombuffer(chunk["sizes"], dtype=np.float64).reshape(-1, 2))
        offset += len(chunk["sizes"]) // 16
    xyxy = np.concatenate(coords)
    image_id = np.concatenate(obj_file)
    class_local = np.concatenate(obj_class)
    difficult = np.concatenate(obj_diff)
    img_sizes = np.concatenate(sizes)

    # Files skipped as malformed contribute neither boxes nor images.
    skipped = {f for f, _, _ in problems.skipped}
    keep_file = np.array([f not in skipped for f in files], dtype=bool)

    # Images whose <size> is missing or zero: read the image header when the image is there.
    missing = np.flatnonzero(keep_file & ~(img_sizes > 0).all(axis=1))
    unresolved = []
    invalid_size = np.zeros(len(files), dtype=bool)  # a <size> given as zero, negative or not a number
    for i in missing:
        size = _size_from_image(files[i], chunks, i)
        if size is not None:
            img_sizes[i] = size
        elif np.isnan(img_sizes[i]).all():
            unresolved.append(files[i])
        else:
            invalid_size[i] = True
            img_sizes[i] = np.nan

    # Class names sorted (VOC's own order is alphabetical); remap the ids.
    order = sorted(names, key=str)
    to_sorted = np.empty(len(names), dtype=np.int64)
    for new, name in enumerate(order):
        to_sorted[names[name]] = new
    class_id = to_sorted[class_local] if class_local.size else class_local

    img_wh = img_sizes[image_id] if image_id.size else np.zeros((0, 2))
    reason = box_reasons(xyxy[:, 0], xyxy[:, 1], xyxy[:, 2], xyxy[:, 3], img_wh[:, 0], img_wh[:, 1], VOC_TOLERANCE)
    reason[invalid_size[image_id]] = INVALID_SIZE
    reason[~keep_file[image_id]] = 0
    bad = np.flatnonzero(reason)
    if bad.size:
        first = int(bad[0])
        obj_index = int((image_id[:first] == image_id[first]).sum())
        x1, y1, x2, y2 = xyxy[first]
        w, h = img_wh[first]
        detail = (
            f"object {obj_index + 1} has xmin={fmt_num(x1)} ymin={fmt_num(y1)} xmax={fmt_num(x2)} ymax={fmt_num(y2)} "
            f"in an image of {fmt_num(w)}x{fmt_num(h)}"
        )
        problems.degenerate(
            reason[bad],
            [files[i] for i in image_id[bad[:1000]]],
            _object_line(files[image_id[first]], obj_index),
            detail,
            len(reason),
        )
    keep = (reason == 0) & keep_file[image_id]
    if unresolved:
        problems.notes.append(
            f"{len(unresolved):,} files have no image size (<size> missing or zero, and the image was not "
            f"found beside them): {', '.join(unresolved[:3])}{', ...' if len(unresolved) > 3 else ''}; "
            f"their boxes have a NaN image_wh"
        )
    problems.emit(stacklevel)

    # Renumber images to drop skipped files.
    new_index = np.cumsum(keep_file) - 1
    kept_files = tuple(f for f, k in zip(files, keep_file) if k)
    if not kept_files:
        raise ValueError(f"no readable VOC annotation files in {source}")
    xyxy = xyxy[keep]
    return Boxes(
        wh=np.stack([xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], axis=1),
        image_wh=img_wh[keep],
        image_id=new_index[image_id[keep]],
        class_id=class_id[keep],
        class_names=tuple(order),
        files=kept_files,
        difficult=difficult[keep],
        format="voc",
        source=source,
        xy=xyxy[:, :2],
    )


def _describe(path_or_paths: Any) -> str:
    if isinstance(path_or_paths, (str, os.PathLike)):
        return os.fspath(path_or_paths)
    items = list(path_or_paths) if not isinstance(path_or_paths, (str, bytes)) else [path_or_paths]
    return f"{len(items)} paths" if len(items) != 1 else os.fspath(items[0])


def _bar(progress: bool, total: int, desc: str) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="file", dynamic_ncols=True, leave=False)


def _parse_chunk(paths: Sequence[str]) -> Dict[str, Any]:
    """Parse VOC files; never raises for bad content (errors are returned, by local index).

    Returns compact buffers (cheap to send back from a worker process): per file the image size
    (NaN when unknown) and ``<filename>``; per object the corners, local file index, a class
    index into ``names``, and the difficult flag.
    """
    coords = array("d")
    obj_file = array("i")
    obj_class = array("i")
    obj_diff = array("b")
    sizes = array("d")
    image_names: List[Optional[str]] = []
    names: Dict[str, int] = {}
    errors: List[Tuple[int, Optional[int], str]] = []
    nan = float("nan")
    inf = float("inf")
    fromstring = ET.fromstring
    for index, path in enumerate(paths):
        image_names.append(None)
        try:
            data = read_regular(path, MAX_XML_BYTES)
        except OSError as exc:
            errors.append((index, None, f"cannot read the file: {exc.strerror or exc}"))
            sizes.extend((nan, nan))
            continue
        try:
            root = fromstring(data)
        except ET.ParseError as exc:
            line = exc.position[0] if getattr(exc, "position", None) else None
            message = str(exc).split(":")[0] if str(exc) else "parse error"
            errors.append((index, line, f"not well-formed XML ({message})"))
            sizes.extend((nan, nan))
            continue
        except (LookupError, ValueError, RecursionError) as exc:  # an unknown or impossible declared encoding
            errors.append((index, 1, f"not well-formed XML ({type(exc).__name__}: {sanitize(str(exc), 80)})"))
            sizes.extend((nan, nan))
            continue
        if root.tag != "annotation":
            tag = sanitize(root.tag, EXCERPT_CHARS)
            errors.append((index, 1, f"not a Pascal VOC annotation (root element <{tag}>, expected <annotation>)"))
            sizes.extend((nan, nan))
            continue
        image_names[index] = root.findtext("filename")
        w = h = nan
        size = root.find("size")
        if size is not None and (size.find("width") is not None or size.find("height") is not None):
            try:
                w = float(size.findtext("width") or "nan")
                h = float(size.findtext("height") or "nan")
            except ValueError:
                w = h = nan
            if not (0 < w < inf and 0 < h < inf):
                w = h = 0.0  # given, but not a size: the image header may tell, else its boxes are dropped
        start = len(obj_file)
        failure = None
        for k, obj in enumerate(root.iterfind("object")):
            name = obj.findtext("name")
            if name is None or not name.strip():
                failure = (k, "has no <name>")
                break
            box = obj.find("bndbox")
            if box is None:
                failure = (k, "has no <bndbox>")
                break
            values = []
            for tag in _COORDS:
                text = box.findtext(tag)
                if text is None:
                    failure = (k, f"has no <{tag}> in its <bndbox>")
                    break
                try:
                    values.append(float(text))
                except ValueError:
                    failure = (k, f"has <{tag}>{sanitize(text.strip(), EXCERPT_CHARS)}</{tag}>, not a number")
                    break
            if failure is not None:
                break
            diff = obj.findtext("difficult")
            coords.extend(values)
            obj_file.append(index)
            obj_class.append(names.setdefault(name.strip(), len(names)))
            obj_diff.append(1 if diff is not None and diff.strip() not in ("", "0", "0.0", "false", "False") else 0)
        if failure is not None:
            k, what = failure
            errors.append((index, _line_of(data, b"<object", k), f"object {k + 1} {what}"))
            # drop this file's objects: it is skipped whole
            n_drop = len(obj_file) - start
            if n_drop:
                del coords[4 * start :]
                del obj_file[start:]
                del obj_class[start:]
                del obj_diff[start:]
        sizes.extend((w, h))
    return {
        "coords": coords.tobytes(),
        "obj_file": obj_file.tobytes(),
        "obj_class": obj_class.tobytes(),
        "obj_diff": obj_diff.tobytes(),
        "sizes": sizes.tobytes(),
        "image_names": image_names,
        "names": list(names),
        "errors": errors,
    }


def _line_of(data: bytes, needle: bytes, k: int) -> Optional[int]:
    """1-based line of the k-th (0-based) occurrence of ``needle`` in ``data``."""
    pos = -1
    for _ in range(k + 1):
        pos = data.find(needle, pos + 1)
        if pos < 0:
            return None
    return data.count(b"\n", 0, pos) + 1


def _object_line(path: str, k: int) -> Optional[int]:
    try:
        return _line_of(read_regular(path, MAX_XML_BYTES), b"<object", k)
    except OSError:
        return None


def _size_from_image(xml_path: str, chunks: Sequence[Dict[str, Any]], index: int) -> Optional[Tuple[int, int]]:
    """The size of the image a VOC file names, read from its header, if it can be found."""
    offset = 0
    name = None
    for chunk in chunks:
        n = len(chunk["image_names"])
        if index < offset + n:
            name = chunk["image_names"][index - offset]
            break
        offset += n
    if not name:
        return None
    folder = os.path.dirname(xml_path)
    base = os.path.basename(name.strip())
    for candidate in (
        os.path.join(folder, base),
        os.path.join(folder, os.pardir, "JPEGImages", base),
        os.path.join(folder, os.pardir, "images", base),
    ):
        if os.path.isfile(candidate):
            try:
                return image_size(candidate)
            except (ImageSizeError, OSError):
                return None
    return None
