"""Loading annotation files in parallel with Dask: millions of VOC or YOLO files, many COCO files.

The files are listed here, parsed in Dask tasks (a ``dask.bag`` over the file list, a few
thousand files per task), and assembled here exactly as :func:`fastanchor.datasets.load` does:
the same boxes in the same order, the same errors naming the malformed file, the same single
warning counting the degenerate boxes. The workers must see the files at the same paths (one
machine, or a shared file system).
"""

from __future__ import annotations

import os
import warnings
from functools import partial
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

try:
    import dask  # type: ignore[import-not-found,unused-ignore]
    import dask.bag as db  # type: ignore[import-not-found,unused-ignore]
except ImportError as exc:  # pragma: no cover - tested in a subprocess without dask
    raise ImportError(f'fastanchor.dask needs Dask ({exc}): pip install "fastanchor[dask]"') from exc

from .. import datasets
from ..datasets import Boxes, _single_json, _voc, _yolo
from ..datasets._boxes import AnnotationWarning
from ..datasets._coco import load_coco_quiet
from ..datasets._files import PathLike

__all__ = ["load", "load_boxes"]

#: Files parsed by one Dask task (a VOC file or a YOLO image and label take ~0.1-0.5 ms).
FILES_PER_TASK = 2000


def load(
    path_or_paths: Union[PathLike, Iterable[PathLike]],
    *,
    format: Optional[str] = None,
    split: str = "train",
    strict: Optional[bool] = None,
    client: Any = None,
    scheduler: Optional[str] = None,
    files_per_task: int = FILES_PER_TASK,
) -> Boxes:
    """Load a dataset with the files parsed in Dask tasks; the same :class:`~fastanchor.datasets.Boxes`
    as :func:`fastanchor.datasets.load`.

    Parameters
    ----------
    path_or_paths : path or list of paths
        A Pascal VOC folder or XML file, or a list of them; a YOLO data.yaml or folder; a COCO
        json file or a list of them (each file is one task; their boxes are concatenated in
        order, their classes merged by name, first seen first).
    format : {None, "auto", "voc", "coco", "yolo"}
        None or "auto": detected as :func:`fastanchor.datasets.detect_format` does (from the
        first path of a list).
    split : str
        For YOLO: which split to load.
    strict : bool or None
        As in :func:`fastanchor.datasets.load_voc`: malformed files raise (naming the file and
        line), degenerate boxes are dropped with one warning; True: both raise; False: both
        warn.
    client : distributed.Client, optional
        Run on this cluster. Default: Dask's current scheduler (a ``distributed.Client`` made
        earlier becomes the default; else Dask's local threads).
    scheduler : str, optional
        A Dask scheduler name when no ``client`` is given: ``"threads"``, ``"processes"``,
        ``"synchronous"``.
    files_per_task : int
        Files parsed by one task.
    """
    if client is not None and scheduler is not None:
        raise ValueError("pass either client or scheduler, not both")
    if isinstance(files_per_task, bool) or not isinstance(files_per_task, int) or files_per_task < 1:
        raise ValueError(f"files_per_task must be a positive integer, got {files_per_task!r}")
    paths = _as_list(path_or_paths)
    fmt = format or "auto"
    if fmt == "auto":
        fmt = datasets.detect_format(paths[0])
    if fmt not in datasets.FORMATS:
        raise ValueError(f"format must be None, 'auto' or one of {datasets.FORMATS}, got {format!r}")
    run = _Runner(client, scheduler, files_per_task)
    if fmt == "voc":
        files, source = _voc.voc_files(paths if len(paths) != 1 else paths[0])
        return _voc.assemble_voc(files, source, run(_voc._parse_chunk, files), strict)
    if fmt == "yolo":
        if len(paths) != 1:
            raise ValueError("a YOLO dataset is one data.yaml or folder: pass one path")
        names, pairs, problems, source = _yolo.yolo_pairs(paths[0], split, strict)
        return _yolo.assemble_yolo(names, pairs, problems, source, run(_yolo._parse_chunk, pairs))
    return _load_coco(paths, strict, run)


def load_boxes(
    path_or_paths: Union[PathLike, Iterable[PathLike]],
    **kwargs: Any,
) -> np.ndarray:
    """The (N, 2) box widths and heights of :func:`load` (pixels of the original images)."""
    return np.asarray(load(path_or_paths, **kwargs).wh)


# --- running tasks ------------------------------------------------------------------------------------


class _Runner:
    """Maps a chunk parser over consecutive runs of items in Dask tasks; results in order."""

    def __init__(self, client: Any, scheduler: Optional[str], per_task: int) -> None:
        self.client = client
        self.scheduler = scheduler
        self.per_task = per_task

    def __call__(self, func: Any, items: Sequence[Any]) -> List[Any]:
        if not items:
            return []
        n_parts = max(1, -(-len(items) // self.per_task))
        bag = db.from_sequence(list(items), npartitions=n_parts)
        out = bag.map_partitions(_one_result, func)
        if self.client is not None:
            return list(self.client.compute(out).result())
        return list(dask.compute(out, scheduler=self.scheduler)[0])


def _one_result(part: Iterable[Any], func: Any) -> List[Any]:
    return [func(list(part))]


def _as_list(path_or_paths: Union[PathLike, Iterable[PathLike]]) -> List[Any]:
    if isinstance(path_or_paths, (str, os.PathLike)):
        return [path_or_paths]
    try:
        paths = list(path_or_paths)
    except TypeError:
        raise TypeError(f"expected a path or a list of paths, got {type(path_or_paths).__name__}") from None
    if not paths:
        raise ValueError("no paths given")
    return paths


# --- COCO: one task per file ------------------------------------------------------------------------------------


def _coco_task(paths: Sequence[Any], strict: Optional[bool]) -> Tuple[Boxes, List[str]]:
    """Load one COCO file; its warnings are returned (a worker's warnings are not the caller's)."""
    (path,) = paths
    p = os.fspath(path)
    if os.path.isdir(p):
        p = _single_json(p)
    # No warnings.catch_warnings here: it is not thread-safe, and tasks may run in threads.
    return load_coco_quiet(p, strict)


def _load_coco(paths: List[Any], strict: Optional[bool], run: _Runner) -> Boxes:
    per_file = _Runner(run.client, run.scheduler, 1)
    results = per_file(partial(_coco_task, strict=strict), paths)
    for _, messages in results:
        for message in messages:
            warnings.warn(message, AnnotationWarning, stacklevel=3)
    parts = [boxes for boxes, _ in results]
    if len(parts) == 1:
        return parts[0]
    return _concatenate(parts, f"{len(parts)} paths")


def _concatenate(parts: List[Boxes], source: str) -> Boxes:
    """Boxes of several files one after another; classes merged by name, first seen first."""
    names: Dict[str, int] = {}
    class_ids: List[np.ndarray] = []
    image_ids: List[np.ndarray] = []
    files: List[str] = []
    offset = 0
    for b in parts:
        remap = np.array([names.setdefault(n, len(names)) for n in b.class_names], dtype=np.int64)
        class_ids.append(remap[b.class_id] if len(b) else np.zeros(0, np.int64))
        image_ids.append(np.asarray(b.image_id) + offset)
        files.extend(b.files)
        offset += b.n_images
    return Boxes(
        wh=np.concatenate([b.wh for b in parts]),
        image_wh=np.concatenate([b.image_wh for b in parts]),
        image_id=np.concatenate(image_ids),
        class_id=np.concatenate(class_ids),
        class_names=tuple(names),
        files=tuple(files),
        difficult=np.concatenate([b.difficult for b in parts]),
        crowd=np.concatenate([b.crowd for b in parts]),
        format=parts[0].format,
        source=source,
        xy=np.concatenate([b.xy for b in parts]),
    )
