"""k-means, the mutation search, autoanchor, average IoU and anchor fitness over boxes that need
not fit in memory: a ``numpy.memmap``, the path of a ``.npy`` file, or a list of them (shards, read
in order as one array of rows), read ``block_rows`` rows at a time. No Dask needed.

The results are those of the in-memory :func:`fastanchor.kmeans_iou`,
:func:`fastanchor.evolve_anchors`, :func:`fastanchor.autoanchor`, :func:`fastanchor.avg_iou` and
:func:`fastanchor.anchor_fitness` on the same rows, bit for bit (from the same initial anchors for
k-means); see :doc:`/guides/scale`.

The blocks run on ``n_threads`` threads (default: all; the kernels release the GIL). Resident
memory: per thread, one block of rows (copied from the file: 8 or 16 bytes per row) and up to about
64 bytes per row of the block for the kernels' temporaries, plus the block being read, the partials (a few kB; the median's
histograms 16 kB per anchor), and, unless ``return_labels=False``, the labels (4 bytes per box).
With ``sample_weight`` (avg_iou, anchor_fitness, evolve_anchors), each block's weights too: 8
bytes per row as read and 8 as scaled.
The search lays out each block as the in-memory search lays out all boxes (a sorted copy of its
rows and tile bounds: 9 bytes per float32 row, 17 per float64 one) and keeps the layouts of the
first blocks, up to ``cache_bytes``. A seeded fit gathers its sample of ``init_sample`` rows into
memory and fits it there (2 to 16 MB of rows, and about 60 bytes per sampled row while the row
indices are drawn).
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from . import _chunked
from ._evolve import (
    DEFAULT_BUDGET,
    DEFAULT_INIT_SAMPLE,
    DEFAULT_SEARCH_SAMPLE,
    AutoAnchorResult,
    Callback,
    EvolveResult,
)
from ._fitness import DEFAULT_IOU_THR, DEFAULT_THR, FitnessResult, as_anchors, as_thr
from ._kmeans import KMeansResult
from ._validation import SeedLike, as_int, as_real_array, as_wh, resolve_seed, resolve_threads

__all__ = [
    "DEFAULT_BLOCK_ROWS",
    "anchor_fitness",
    "autoanchor",
    "avg_iou",
    "evolve_anchors",
    "kmeans_iou",
    "open_rows",
]

#: Rows read at a time (16 MB of float64 rows).
DEFAULT_BLOCK_ROWS = 1 << 20

Source = Union[str, "os.PathLike[str]", np.ndarray, Sequence[Union[str, "os.PathLike[str]", np.ndarray]]]
#: One weight per row: an array-like, a memmap, a ``.npy`` path, or a list of those (in order).
WeightSource = Union[str, "os.PathLike[str]", npt.ArrayLike, Sequence[Union[str, "os.PathLike[str]", np.ndarray]]]


def is_source_list(x: Any) -> bool:
    """Whether ``x`` is a list or tuple of sources read in order as one array (shards): paths and
    arrays, not the rows or values of one array."""
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(i, (str, os.PathLike, np.ndarray)) for i in x)


def open_rows(source: Any, name: str = "wh") -> List[np.ndarray]:
    """The (n_i, 2) arrays of ``source``: an array (a memmap, read in place), the path of a ``.npy``
    file (memory-mapped) or a list/tuple of those (shards, in order)."""

    def one(x: Any) -> np.ndarray:
        if isinstance(x, (str, os.PathLike)):
            arr = np.load(os.fspath(x), mmap_mode="r")
        else:
            arr = np.asarray(x)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"{name} must have shape (N, 2) of (width, height), got shape {arr.shape}")
        return arr

    if is_source_list(source):
        return [one(x) for x in source]
    return [one(source)]


def open_weights(source: Any, n: int) -> List[Tuple[np.ndarray, Optional[str]]]:
    """The 1-D arrays of ``source`` (an array, a memmap, the path of a ``.npy`` file or a list/tuple
    of those, read in order as one array of ``n`` weights), each with the path it was opened from
    (None for an array): checked for a real dtype and their total length, not yet for their values
    (the first pass checks those)."""

    def one(x: Any) -> Tuple[np.ndarray, Optional[str]]:
        path = os.fspath(x) if isinstance(x, (str, os.PathLike)) else None
        arr = np.load(path, mmap_mode="r") if path is not None else as_real_array(x, "sample_weight")
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"sample_weight must hold real numbers, got dtype {arr.dtype}")
        if arr.ndim != 1:
            raise ValueError(f"sample_weight must be one-dimensional, got shape {arr.shape}")
        return arr, path

    items = list(source) if is_source_list(source) else [source]
    parts = [one(x) for x in items]
    total = sum(int(a.shape[0]) for a, _ in parts)
    if total != n:
        raise ValueError(f"sample_weight must have shape ({n},) to match the boxes, got shape ({total},)")
    return parts


def _executor(source: Any, block_rows: Any, n_threads: Any = None, sample_weight: Any = None) -> _chunked.LocalExecutor:
    """The blocks of ``source`` (with the weights of ``sample_weight``, unless None), run on
    ``n_threads`` threads (None: all)."""
    arrays = open_rows(source)
    items = list(source) if len(arrays) > 1 or isinstance(source, (list, tuple)) else [source]
    paths = [os.fspath(x) if isinstance(x, (str, os.PathLike)) else None for x in items]
    if len(paths) != len(arrays):  # a list of rows, not of sources
        paths = [None] * len(arrays)
    block = as_int(block_rows, "block_rows", minimum=1)
    n = sum(int(a.shape[0]) for a in arrays)
    weights = None if sample_weight is None else open_weights(sample_weight, n)
    return _chunked.LocalExecutor(arrays, block, resolve_threads(n_threads), paths, weights)


def _take_rows(ex: _chunked.LocalExecutor, index: Optional[np.ndarray]) -> np.ndarray:
    """Rows ``index`` (sorted) of the whole array, or all rows (index None)."""
    parts, offset = [], 0
    for a in ex.arrays:
        n = a.shape[0]
        if index is None:
            parts.append(np.asarray(a))
        else:
            lo, hi = np.searchsorted(index, [offset, offset + n])
            parts.append(np.asarray(a[index[lo:hi] - offset]))
        offset += n
    return np.concatenate([_chunked.chunk_rows(p) for p in parts]) if len(parts) > 1 else _chunked.chunk_rows(parts[0])


def kmeans_iou(
    wh: Source,
    k: int,
    *,
    init: Union[str, npt.ArrayLike] = "k-means++",
    update: str = "median",
    n_init: Optional[int] = None,
    max_iter: int = 300,
    tol: float = 0.0,
    sample_weight: Optional[WeightSource] = None,
    seed: SeedLike = None,
    init_sample: int = _chunked.DEFAULT_INIT_SAMPLE,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    return_labels: bool = True,
    cache_bytes: int = _chunked.DEFAULT_CACHE_BYTES,
    n_threads: Optional[int] = None,
    progress: bool = False,
) -> KMeansResult:
    """:func:`fastanchor.kmeans_iou` over rows read ``block_rows`` at a time.

    From ``init`` given as (k, 2) anchors, the result (anchors, labels, avg_iou, n_iter,
    converged) is ``fastanchor.kmeans_iou(rows, k, init=init, ...)``'s, bit for bit. With
    "k-means++" or "random", the initial anchors are drawn by the in-memory core from a uniform
    sample of ``init_sample`` rows (row indices drawn from ``seed``; all rows when there are no
    more, and then the result is ``fastanchor.kmeans_iou(rows, k, seed=seed)``'s): they depend on
    the seed and the rows, never on ``block_rows`` or the shards. One Lloyd iteration is one pass
    over the rows (the median's: one more pass while the medians move far, as they do in the first
    iterations).

    ``sample_weight`` as in :func:`avg_iou`: the weighted median and mean add integer weights (each
    weight in units of 2^-30 of the largest, at least one unit, as in memory), whose sums merge
    exactly. Zero-weight rows take no part in the fit and are labelled after it; the seeding
    sample is drawn among the rows of positive weight, and weighted. ``n_init`` seeded runs (None: 1) start from
    the same sample, each from the in-memory run's stream of the seed; the best average IoU wins,
    as in memory. With
    ``return_labels=False`` the result's ``labels`` is an empty array (no 4 bytes per box held).
    Up to ``cache_bytes`` (default 1 GiB; 0: none), the fit keeps each block's state from one pass to
    the next: its rows, labels and label bounds (about 11 bytes per float32 box for up to 254
    anchors), so that a pass reads none of those blocks again and ranks only the boxes whose
    bounds cannot prove their label, as the in-memory fit does; where the budget runs out, the
    labels alone (1 byte per box), so that a pass labels those blocks once instead of twice. Ctrl-C stops the fit between blocks.
    """
    k, update, n_init, max_iter, tol = _chunked.check_fit_options(k, update, n_init, max_iter, tol)
    ex = _executor(wh, block_rows, n_threads, sample_weight)
    sc, ws = _chunked.scan_weights(ex, sample_weight is not None)
    out, avg = _chunked.fit(
        ex,
        sc,
        k,
        init,
        update,
        max_iter,
        tol,
        seed,
        init_sample,
        progress,
        lambda index: _take_rows(ex, index),
        "kmeans_iou",
        _chunked.as_cache_bytes(cache_bytes),
        n_init,
        ws=ws,
    )
    if return_labels:
        labels = np.empty(sc.n, np.int32)
        for block, offset in ex.blocks():
            labels[offset : offset + _chunked.row_count(block)] = _chunked.assign_labels(block, out.anchors)
    else:
        labels = np.empty(0, np.int32)
    return KMeansResult(anchors=out.anchors, labels=labels, avg_iou=avg, n_iter=out.n_iter, converged=out.converged)


def avg_iou(
    anchors: npt.ArrayLike,
    wh: Source,
    *,
    sample_weight: Optional[WeightSource] = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    n_threads: Optional[int] = None,
) -> float:
    """:func:`fastanchor.avg_iou` over rows read ``block_rows`` at a time (the same value, bit for
    bit). ``sample_weight``: one weight per row, as an array, a memmap, the path of a ``.npy``
    file or a list of those (read in order, block by block like the rows); the first pass checks
    them with the rows."""
    a = as_wh(anchors, "anchors")
    ex = _executor(wh, block_rows, n_threads, sample_weight)
    sc, ws = _chunked.scan_weights(ex, sample_weight is not None)
    return _chunked.avg_iou(ex, a, sc.n, ws)


def anchor_fitness(
    anchors: npt.ArrayLike,
    wh: Source,
    *,
    thr: float = DEFAULT_THR,
    sample_weight: Optional[WeightSource] = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    n_threads: Optional[int] = None,
) -> FitnessResult:
    """:func:`fastanchor.anchor_fitness` over rows read ``block_rows`` at a time (the same values,
    bit for bit). ``sample_weight`` as in :func:`avg_iou`."""
    a = as_anchors(anchors)
    t = as_thr(thr)
    ex = _executor(wh, block_rows, n_threads, sample_weight)
    sc, ws = _chunked.scan_weights(ex, sample_weight is not None)
    fit, bpr, aat, iou = _chunked.fitness(ex, a, t, sc.n, ws)
    return FitnessResult(fitness=fit, bpr=bpr, aat=aat, avg_iou=iou, thr=t)


def evolve_anchors(
    anchors: npt.ArrayLike,
    wh: Source,
    *,
    thr: float = DEFAULT_THR,
    generations: int = 1000,
    mutation_prob: float = 0.9,
    sigma: float = 0.1,
    min_size: float = 2.0,
    strategy: str = "anchorwise",
    batch: int = 8,
    objective: str = "fitness",
    iou_thr: float = DEFAULT_IOU_THR,
    iou_weighted: bool = False,
    budget: int = 0,
    sample_weight: Optional[WeightSource] = None,
    seed: SeedLike = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    cache_bytes: int = _chunked.DEFAULT_CACHE_BYTES,
    n_threads: Optional[int] = None,
    progress: bool = False,
    callback: Optional[Callback] = None,
) -> EvolveResult:
    """:func:`fastanchor.evolve_anchors` over rows read ``block_rows`` at a time: every pass
    scores a batch of ``batch`` candidates on all rows, and the result is the in-memory search's
    from the same seed, bit for bit (no ``scale`` or ``grid``). ``sample_weight`` as in
    :func:`avg_iou` (weighted, the search takes one more pass, for the total weight).

    A pass reads the rows once, so the search reads them about ``generations / batch`` times (a
    larger ``batch`` means fewer passes; "yolov5" gives the same result for every batch size).
    The layouts of the first blocks (9 bytes per float32 box, 17 per float64 one, 8 more when
    weighted) are kept for the
    later passes, up to ``cache_bytes`` (default 1 GiB; 0: none); the other blocks are laid out
    again in every pass.
    Ctrl-C stops the search between blocks.
    """
    a = as_anchors(anchors)
    s = _chunked.check_search(
        thr,
        generations,
        mutation_prob,
        sigma,
        min_size,
        strategy,
        batch,
        objective,
        iou_thr,
        iou_weighted,
        budget,
        callback,
    )
    ex = _executor(wh, block_rows, n_threads, sample_weight)
    sc, ws = _chunked.scan_weights(ex, sample_weight is not None)
    cache = _chunked.as_cache_bytes(cache_bytes)
    return _chunked.evolve(ex, sc.n, a, s, resolve_seed(seed), progress, callback, "evolve_anchors", cache, ws)


def autoanchor(
    wh: Source,
    k: int = 9,
    *,
    thr: float = DEFAULT_THR,
    generations: int = 1000,
    strategy: str = "anchorwise",
    mutation_prob: float = 0.9,
    sigma: float = 0.1,
    min_size: float = 2.0,
    n_init: Optional[int] = None,
    tol: float = 1e-3,
    batch: int = 8,
    objective: str = "fitness",
    iou_thr: float = DEFAULT_IOU_THR,
    iou_weighted: bool = False,
    budget: int = DEFAULT_BUDGET,
    sample_weight: Optional[WeightSource] = None,
    seed: SeedLike = None,
    init_sample: int = DEFAULT_INIT_SAMPLE,
    search_sample: int = DEFAULT_SEARCH_SAMPLE,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    cache_bytes: int = _chunked.DEFAULT_CACHE_BYTES,
    n_threads: Optional[int] = None,
    progress: bool = False,
    callback: Optional[Callback] = None,
) -> AutoAnchorResult:
    """:func:`fastanchor.autoanchor` over rows read ``block_rows`` at a time: small boxes counted
    and dropped block by block, then :func:`kmeans_iou` and :func:`evolve_anchors` on the kept rows.

    From the same seed, ``init_sample`` and ``search_sample`` the result is the in-memory
    ``fastanchor.autoanchor(rows, k, seed=seed, init_sample=init_sample,
    search_sample=search_sample)``'s, bit for bit, never depending on ``block_rows`` or the
    shards: on more than ``init_sample`` kept boxes (default 2**20), k-means runs in memory on a
    uniform sample of that many first, and then block by block from its anchors, a few passes; on
    more than ``search_sample`` (default 2**20), the search runs in memory on a uniform sample of
    that many (gathered in one pass), else block by block. The reports take one more pass. No
    ``scale`` or ``grid``. ``sample_weight`` as in :func:`avg_iou`: the samples are gathered with
    their weights (a pass each), and the k-means on all kept rows adds integer weights as
    :func:`kmeans_iou` does. ``cache_bytes`` as in :func:`evolve_anchors`.
    Resident memory is bounded as the module says, whatever the number of rows.
    """
    s = _chunked.check_search(
        thr,
        generations,
        mutation_prob,
        sigma,
        min_size,
        strategy,
        batch,
        objective,
        iou_thr,
        iou_weighted,
        budget,
        callback,
    )
    ex = _executor(wh, block_rows, n_threads, sample_weight)
    cache = _chunked.as_cache_bytes(cache_bytes)
    take = lambda index: _take_rows(ex, index)  # noqa: E731
    return _chunked.autoanchor(
        ex,
        k,
        s,
        n_init,
        tol,
        seed,
        init_sample,
        search_sample,
        progress,
        callback,
        take,
        "autoanchor",
        cache,
        n_threads,
        weighted=sample_weight is not None,
    )
