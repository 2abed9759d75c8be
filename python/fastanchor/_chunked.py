"""Exact k-means and metrics over boxes read chunk by chunk (out of core, or as a Dask map-reduce).

Every pass maps a task over the chunks of rows and merges the tasks' partials. The partials are
integers (counts, exact sums in units of a power of two, histograms, fixed-point sums) merged in any
order with the same totals, or, for the average IoU, the best-IoU sums of whole ``kChunk``-row
blocks and the values of the blocks a chunk holds in part, completed and added in the global block
order of the in-memory sums. So the results are the in-memory functions' results, bit for bit,
whatever the chunking and the order of the merges (the tests check it).

An executor runs a pass: ``run(task, args, merge)`` applies ``task(rows, offset, *args)`` to every
chunk (rows: the chunk's (n, 2) rows, which ``chunk_rows`` reads as a C-contiguous float32 or
float64 array, or a ``WeightedBlock`` of them and their weights, which ``chunk_weights`` reads;
offset: its first row's index) and merges the results with ``merge(a, b)``. Tasks are module-level functions of picklable arguments,
so that Dask can ship them to other processes.
"""

from __future__ import annotations

import functools
import math
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Literal, NamedTuple, Optional, Protocol, Sequence, Tuple

import numpy as np

from . import _core
from ._validation import MAX_SIDE, MIN_SIDE

#: Rows per block of the in-memory average IoU's sums (the core's kChunk).
K_CHUNK = 4096
#: Bins of the median histograms per coordinate and cluster.
MEDIAN_BINS = 1024
#: A median's candidates are gathered when at most this many values of its cluster fall in its
#: key range; otherwise the range is cut into MEDIAN_BINS finer bins by another pass.
GATHER_MAX = 1 << 16
#: A Lloyd pass gathers, along with its histograms, each cluster's values in a window of keys
#: around its anchor (about this many of the cluster's values, by the last pass's histogram, on
#: up to WINDOW_ROWS rows; see window_width): once the anchors settle the new medians lie there,
#: and the iteration needs no selection pass.
WINDOW_MAX = 1 << 12
#: ... on more rows, the windows widen in proportion, up to 16 times. Measured on COCO-like boxes
#: (out of core, default autoanchor): at 10^7 boxes 2^12 values hold the next medians and wider
#: windows only gather more; at 10^8, 2^12 and 2^13.8 miss them (two selection passes per Lloyd
#: pass), 2^14 and more hold them.
WINDOW_ROWS = 1 << 23
#: ... where the anchor's bin held at least this many of its cluster's values.
WINDOW_MIN_DENSITY = 16
#: ... and where the anchor's last move was at most this many half-widths (the window is stretched
#: by the move, on its side: at most (2 + WINDOW_REACH) / 2 * WINDOW_MAX values).
WINDOW_REACH = 2
#: The width, in values, of the first pass's windows after a sample's k-means (sample_windows):
#: about five standard errors of a median of 2^18 / 9 sampled boxes at 10^7 boxes, where the first
#: medians then need no selection pass; at 10^8 they are 10 times as many values away and the
#: first pass selects as it did without windows (wider windows would gather too many values).
SAMPLE_WINDOW_WIDTH = 1 << 15

Partial = Dict[str, Any]


class Executor(Protocol):
    """Runs a pass: ``task(chunk, offset, *args)`` on every chunk, the results merged by ``merge``
    (in any order and tree: the merges are exact). A PerChunk argument, at any depth of tuples in
    ``args``, is replaced by its value for the chunk."""

    n: int  # total rows

    def run(self, task: Callable[..., Any], args: Tuple[Any, ...], merge: Callable[[Any, Any], Any]) -> Any: ...


@dataclass(frozen=True)
class PerChunk:
    """An argument of a pass that differs by chunk: ``of(offset, n)`` for the chunk of ``n`` rows
    at ``offset`` (evaluated where the pass's tasks are made)."""

    of: Callable[[int, int], Any]


class RowIndex:
    """Sorted row indices (``index``, int64) as a task's argument. They travel with the tasks, so
    they pickle as the first and the gaps to the next ones, in the smallest unsigned type that
    holds the largest gap: one byte an index instead of 8 for a uniform sample of 2^20 of 10^7
    rows (8 MB that went through the scheduler to the workers with the tasks, now 1 MB)."""

    __slots__ = ("index",)

    def __init__(self, index: np.ndarray) -> None:
        self.index = index

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        index = self.index
        if index.size < 2:
            return RowIndex, (index,)
        return _row_index, (int(index[0]), narrow_ints(np.diff(index)))


def _row_index(first: int, gaps: np.ndarray) -> RowIndex:
    """A RowIndex from its pickled form."""
    index = np.empty(gaps.size + 1, np.int64)
    index[0] = first
    np.cumsum(gaps, dtype=np.int64, out=index[1:])
    index[1:] += first
    return RowIndex(index)


def chunk_positions(index: Any, offset: int, n: int) -> np.ndarray:
    """The positions in the chunk of ``n`` rows at ``offset`` of the sorted row indices ``index``
    (an array or a RowIndex) that fall in it."""
    rows = index.index if isinstance(index, RowIndex) else index
    lo, hi = np.searchsorted(rows, [offset, offset + n])
    return rows[lo:hi] - offset


def index_per_chunk(index: np.ndarray) -> PerChunk:
    """Sorted row indices as a pass argument that gives each chunk only its own: a task on Dask
    carries its slice, not all of them (a 2^20-row sample's 8 MB in each of hundreds of tasks)."""

    def of(offset: int, n: int) -> RowIndex:
        lo, hi = np.searchsorted(index, [offset, offset + n])
        return RowIndex(index[lo:hi])

    return PerChunk(of)


def chunk_args(args: Tuple[Any, ...], offset: int, n: int) -> Tuple[Any, ...]:
    """``args`` for the chunk of ``n`` rows at ``offset``: every PerChunk in them (in tuples too)
    replaced by its value."""
    return map_per_chunk(args, lambda a: a.of(offset, n))


def map_per_chunk(args: Tuple[Any, ...], f: Callable[[PerChunk], Any]) -> Tuple[Any, ...]:
    """``args`` with every PerChunk ``a`` in them (in tuples too) replaced by ``f(a)``."""
    return tuple(f(a) if isinstance(a, PerChunk) else map_per_chunk(a, f) if type(a) is tuple else a for a in args)


# --------------------------------------------------------------------------------------------
# Chunk rows.


class OnDemand:
    """A chunk whose rows are read only when a task needs them (a chunk whose Lloyd state a process
    keeps is not read again): its length, and load()."""

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self) -> np.ndarray:
        raise NotImplementedError


class NpyRegion(NamedTuple):
    """Where the array of a ``.npy`` file lies in it, taken from the memmap that ``np.load`` opened,
    so that a task maps the file again without parsing its header. numpy parses a header with
    ``ast.literal_eval``, and CPython 3.11's parser keeps its recursion depth per process, not per
    thread: two threads parsing at once can fail with "SystemError: AST constructor recursion depth
    mismatch". Tasks run on threads, here and on a Dask worker."""

    filename: str
    dtype: str
    shape: Tuple[int, ...]
    offset: int
    order: Literal["C", "F"]

    @classmethod
    def of(cls, m: np.memmap) -> NpyRegion:
        order: Literal["C", "F"] = "F" if m.flags.f_contiguous and not m.flags.c_contiguous else "C"
        return cls(str(m.filename), m.dtype.str, tuple(int(d) for d in m.shape), int(m.offset), order)

    def map(self) -> np.memmap:
        """The file's array, mapped read-only (the file must not be empty of rows)."""
        return np.memmap(self.filename, self.dtype, "r", self.offset, self.shape, self.order)

    def read(self, start: int, stop: int) -> np.ndarray:
        """A copy of rows [start, stop), read through a mapping held for this read only: its pages
        leave the resident set with it, where one mapping held for a whole pass would keep them all."""
        return np.array(self.map()[start:stop])


def npy_region(source: Any, path: Any) -> Optional[NpyRegion]:
    """The region of ``source``, an array ``np.load`` mapped from the file ``path``, or None when
    ``path`` is None (an array given as is)."""
    if path is None:
        return None
    if not isinstance(source, np.memmap):
        raise TypeError(f"expected the memmap of {path!r}, got {type(source).__name__}")
    return NpyRegion.of(source)


class RowsOnDemand(OnDemand):
    """Rows [start, stop) of an array, a memmap or a ``.npy`` file (``region``: where its rows lie
    in the file, or None to copy them from ``source``)."""

    def __init__(self, source: Any, region: Optional[NpyRegion], start: int, stop: int) -> None:
        self.source, self.region, self.start, self.stop = source, region, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def load(self) -> np.ndarray:
        if self.region is None:
            return np.array(self.source[self.start : self.stop])
        return self.region.read(self.start, self.stop)


class KeptOnDemand(OnDemand):
    """The ``count`` rows of a chunk with a side of at least ``drop_below`` (autoanchor's kept rows)."""

    def __init__(self, block: Any, drop_below: float, count: int) -> None:
        self.block, self.drop_below, self.count = block, drop_below, count

    def __len__(self) -> int:
        return self.count

    def load(self) -> np.ndarray:
        rows = chunk_rows(self.block)
        if self.count == rows.shape[0]:
            return rows
        # one pass of the core's over the chunk (numpy's mask and boolean index took four times as long)
        kept: np.ndarray = _core._chunk_kept_rows(wh=rows, drop_below=self.drop_below, count=self.count)
        return kept


class WeightsOnDemand(OnDemand):
    """Values [start, stop) of the weights held by one or more 1-D arrays, memmaps or ``.npy`` files
    (``sources``: (array, NpyRegion or None) in order), read when a task needs them."""

    def __init__(self, sources: Sequence[Tuple[Any, Any]], start: int, stop: int) -> None:
        self.sources, self.start, self.stop = sources, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def load(self) -> np.ndarray:
        parts, offset = [], 0
        for source, region in self.sources:
            n = int(source.shape[0])
            lo, hi = max(self.start, offset), min(self.stop, offset + n)
            if lo < hi:
                lo, hi = lo - offset, hi - offset
                parts.append(np.array(source[lo:hi]) if region is None else region.read(lo, hi))
            offset += n
        return np.concatenate(parts) if len(parts) != 1 else parts[0]


class WeightedBlock:
    """A chunk of rows with its weights (each an array or an OnDemand chunk): the tasks read the
    rows by chunk_rows, and the weights by chunk_weights."""

    __slots__ = ("rows", "weights")

    def __init__(self, rows: Any, weights: Any) -> None:
        self.rows, self.weights = rows, weights

    def __len__(self) -> int:
        return row_count(self.rows)


def with_weights(task: Callable[..., Any], rows: Any, weights: Any, offset: int, *args: Any) -> Any:
    """``task`` on a chunk of rows and its chunk of weights (a Dask task gets them apart)."""
    return task(WeightedBlock(rows, weights), offset, *args)


@dataclass(frozen=True)
class WeightScale:
    """How the chunks' weights are scaled as the in-memory functions scale them: ``top``, the
    largest weight of all chunks, and ``scaled``, that weight after scaling (the kernels divide
    the scaled weights by it); and what a fit needs to know of them: ``low``, the smallest positive
    weight, and ``zeros``, how many are zero."""

    top: float
    scaled: float
    low: float = 0.0
    zeros: int = 0

    @staticmethod
    def of(top: float, low: float = 0.0, zeros: int = 0) -> WeightScale:
        from ._validation import scaled_top

        return WeightScale(float(top), scaled_top(top), float(low), int(zeros))

    @property
    def equal(self) -> bool:
        """Whether every positive weight is the same: then a fit is the unit-weight fit of the rows
        of positive weight, as in memory, where equal weights are no weights."""
        return self.low == self.top


#: The bits of a weighted fit's integer weights (the core's Problem::kWeightBits): with up to 2^32
#: boxes, their sums are exact in 64 bits.
FIT_WEIGHT_BITS = 31


def weight_shift(top: float) -> int:
    """The exponent s of a weighted fit's integer weights max(1, rint(ldexp(w, s)))
    (weight_units.hpp): the largest weight ``top`` in [2^30, 2^31)."""
    return FIT_WEIGHT_BITS - 1 - (math.frexp(top)[1] - 1)


def raw_weights(block: Any) -> np.ndarray:
    """A WeightedBlock's weights as C-contiguous float64 (validated by the first pass)."""
    w = block.weights
    if isinstance(w, OnDemand):
        w = w.load()
    return np.ascontiguousarray(np.asarray(w, dtype=np.float64).reshape(-1))


def fit_rows(block: Any, wshift: Optional[int]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """A chunk's rows, and for a weighted fit (``wshift`` not None: a PositiveRows executor's
    chunk, every weight positive) their weights, from which the kernels take the integer weights
    (the weights as given: a power-of-two scaling into range, as in memory, gives the same units);
    else None."""
    rows = chunk_rows(block)
    return rows, None if wshift is None else raw_weights(block)


class PositiveOnDemand(OnDemand):
    """The rows (``part`` "rows") or the weights (``part`` "weights") of a WeightedBlock's ``count``
    rows of positive weight, the block read once (read_once) for both."""

    def __init__(self, block: Any, part: str, count: int) -> None:
        self.block, self.part, self.count = block, part, count

    def __len__(self) -> int:
        return self.count

    def load(self) -> np.ndarray:
        w = raw_weights(self.block)
        got = w if self.part == "weights" else chunk_rows(self.block)
        return got if self.count == w.shape[0] else np.ascontiguousarray(got[w > 0])


def task_positive(
    block: Any, offset: int, task: Callable[..., Partial], positive: Dict[int, Tuple[int, int]], *args: Any
) -> Partial:
    """``task`` on the chunk's rows of positive weight, with their weights, at their offset among
    all such rows (``positive``: per chunk offset, that offset and the count)."""
    pos_offset, count = positive[offset]
    once = read_once(block)
    part = WeightedBlock(PositiveOnDemand(once, "rows", count), PositiveOnDemand(once, "weights", count))
    return task(part, pos_offset, *args)


class RowSubset:
    """An executor over some rows of another's chunks, in their order (``counts``: per chunk offset
    of ``ex``, how many): every task sees a chunk's rows of the subset at their offset among all of
    them. ``wrap(block, offset, task, *wrap_args, subset, *args)`` makes a chunk's subset and runs
    the task on it; ``subset`` maps each chunk offset of ``ex`` to (offset in the subset, count)."""

    def __init__(self, ex: Executor, counts: Dict[int, int], wrap: Callable[..., Any], *wrap_args: Any) -> None:
        self.ex = ex
        self.task_threads = getattr(ex, "task_threads", 1)
        self.subset: Dict[int, Tuple[int, int]] = {}
        total = 0
        for offset in sorted(counts):
            self.subset[offset] = (total, counts[offset])
            total += counts[offset]
        self.n = total
        self._wrap, self._wrap_args = wrap, wrap_args

    def run(self, task: Callable[..., Any], args: Tuple[Any, ...], merge: Callable[[Any, Any], Any]) -> Any:
        def of_subset(a: PerChunk) -> PerChunk:  # a PerChunk argument is asked for the subset's rows
            return PerChunk(lambda offset, n: a.of(*self.subset[offset]))

        head = (task,) + self._wrap_args + (self.subset,)
        return self.ex.run(self._wrap, head + map_per_chunk(tuple(args), of_subset), merge)

    @property
    def release(self) -> Optional[Callable[[str], None]]:
        return getattr(self.ex, "release", None)


class PositiveRows(RowSubset):
    """An executor over the rows of positive weight of another's weighted chunks, in their order
    (``positive``: per chunk offset of ``ex``, the count): a weighted fit runs on them, as the
    in-memory fit leaves the zero-weight boxes out (and labels them after it), so that every
    offset, sample and block of the average IoU is the in-memory fit's."""

    def __init__(self, ex: Executor, positive: Dict[int, int]) -> None:
        super().__init__(ex, positive, task_positive)


def chunk_weights(block: Any, ws: WeightScale) -> np.ndarray:
    """A WeightedBlock's weights as C-contiguous float64, scaled as the in-memory functions scale
    them (validated by the first pass)."""
    from ._validation import scale_weights

    w = block.weights
    if isinstance(w, OnDemand):
        w = w.load()
    out = np.array(w, dtype=np.float64, order="C", copy=True)
    return scale_weights(out.reshape(-1), ws.top)


class LoadedOnce(OnDemand):
    """Another OnDemand chunk, read at most once (for two tasks on the chunk)."""

    def __init__(self, block: OnDemand) -> None:
        self.block = block
        self.rows: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.block)

    def load(self) -> np.ndarray:
        if self.rows is None:
            self.rows = self.block.load()
        return self.rows


def kept_mask(rows: np.ndarray, drop_below: float) -> np.ndarray:
    """Which (n, 2) rows have a side of at least ``drop_below`` (through the larger side: a tenth
    of the time of a reduction along the rows)."""
    return np.maximum(rows[:, 0], rows[:, 1]) >= drop_below


def small_count(rows: np.ndarray, warn_below: float) -> int:
    """How many (n, 2) rows have a side below ``warn_below``."""
    return int(np.count_nonzero(np.minimum(rows[:, 0], rows[:, 1]) < warn_below))


def row_count(block: Any) -> int:
    """The number of rows of a chunk, without reading it."""
    if isinstance(block, WeightedBlock):
        block = block.rows
    return len(block) if isinstance(block, OnDemand) else int(np.shape(block)[0])


def chunk_rows(block: Any) -> np.ndarray:
    """A chunk as a C-contiguous (n, 2) float32 or float64 array (other real dtypes as float64)."""
    if isinstance(block, WeightedBlock):
        block = block.rows
    if isinstance(block, OnDemand):
        block = block.load()
    arr = np.asarray(block)
    if arr.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"wh must hold real numbers, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    if arr.dtype.byteorder not in "=|":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr)


def _u128(pairs: np.ndarray) -> List[int]:
    """Python ints from rows of (hi, lo) uint64 pairs."""
    flat = pairs.reshape(-1, 2)
    return [(int(hi) << 64) | int(lo) for hi, lo in flat]


# --------------------------------------------------------------------------------------------
# Pass 0: validation and the key range of the median layout.


def task_scan(block: Any, offset: int, name: str) -> Partial:
    """Checks a chunk's rows (the messages of the in-memory checks, rows counted in the whole
    array) and returns its size, dtype and the range of its values' float32 bit patterns."""
    return _scanned(chunk_rows(block), offset, name, 0.0, 0.0)[0]


def _scanned(rows: np.ndarray, offset: int, name: str, warn_below: float, drop_below: float) -> Tuple[Partial, Partial]:
    """task_scan's partial of a chunk's rows, and its count of boxes with a side below
    ``warn_below`` and of those kept (a side of at least ``drop_below``), in one pass of the core's."""
    if rows.ndim != 2 or rows.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2) of (width, height), got a chunk of shape {rows.shape}")
    f32 = rows.dtype == np.float32
    if rows.shape[0] == 0:
        return {"n": 0, "lo": None, "hi": None, "f32": f32}, {"small": 0, "kept": {offset: 0}}
    got = _core._chunk_scan_rows(
        wh=rows, min_side=MIN_SIDE, max_side=MAX_SIDE, warn_below=warn_below, drop_below=drop_below
    )
    if not got["ok"]:
        values = rows.astype(np.float64)
        with np.errstate(all="ignore"):
            ok = (np.isfinite(values) & (values >= MIN_SIDE) & (values <= MAX_SIDE)).all(axis=1)
        bad = np.flatnonzero(~ok)
        raise ValueError(
            f"{name} has {bad.size} bad row{'s' if bad.size > 1 else ''} in the chunk of rows {offset} to "
            f"{offset + rows.shape[0] - 1}: every width and height must be finite and strictly positive (within "
            f"[{MIN_SIDE:g}, {MAX_SIDE:g}]); the first is row {offset + int(bad[0])}: {rows[bad[0]].tolist()}"
        )
    scan = {"n": rows.shape[0], "lo": list(got["lo"]), "hi": list(got["hi"]), "f32": f32}
    return scan, {"small": int(got["small"]), "kept": {offset: int(got["kept"])}}


def task_scan_weighted(block: Any, offset: int, name: str) -> Partial:
    """task_scan of a WeightedBlock's rows, and the check of its weights: their count, how many are
    bad (not finite and non-negative) and the first of those (global index and value), the largest,
    the smallest positive one and how many are zero."""
    scan = task_scan(block, offset, name)
    return {"scan": scan, "weights": _weight_stats(block, offset, scan["n"])[0]}


def _weight_stats(block: Any, offset: int, n: int, *keeps: np.ndarray) -> List[Partial]:
    """The check of a WeightedBlock's weights (``n`` of them, for rows from ``offset``), read once,
    with the largest, smallest positive and zero count of them all, then of those where each of
    ``keeps``."""
    from ._validation import weight_bad_values

    w = block.weights
    if isinstance(w, OnDemand):
        w = w.load()
    arr = np.asarray(w)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"sample_weight must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"sample_weight must have one value per box: its chunk of rows {offset} to {offset + n - 1} "
            f"holds {arr.shape[0] if arr.ndim == 1 else arr.shape} weights"
        )
    with np.errstate(all="ignore"):
        values = arr.astype(np.float64)
    bad = weight_bad_values(values)
    first = None if bad.size == 0 else (offset + int(bad[0]), arr[int(bad[0])].item())
    if bad.size:
        values = values[:0]

    def stats(values: np.ndarray) -> Partial:
        positive = values[values > 0]
        return {
            "bad": int(bad.size),
            "first": first,
            "top": float(values.max()) if values.size else 0.0,
            "low": float(positive.min()) if positive.size else math.inf,
            "zeros": int(values.size - positive.size),
            "positive": {offset: int(positive.size)},
        }

    return [stats(values)] + [stats(values if bad.size else values[keep]) for keep in keeps]


def merge_weight_stats(wa: Partial, wb: Partial) -> Partial:
    firsts = [f for f in (wa["first"], wb["first"]) if f is not None]
    return {
        "bad": wa["bad"] + wb["bad"],
        "first": min(firsts, key=lambda f: f[0]) if firsts else None,
        "top": max(wa["top"], wb["top"]),
        "low": min(wa["low"], wb["low"]),
        "zeros": wa["zeros"] + wb["zeros"],
        "positive": {**wa["positive"], **wb["positive"]},
    }


def merge_scan_weighted(a: Partial, b: Partial) -> Partial:
    return {"scan": merge_scan(a["scan"], b["scan"]), "weights": merge_weight_stats(a["weights"], b["weights"])}


def merge_scan(a: Partial, b: Partial) -> Partial:
    if a["lo"] is None:
        return {**b, "n": a["n"] + b["n"], "f32": a["f32"] and b["f32"]}
    if b["lo"] is None:
        return {**a, "n": a["n"] + b["n"], "f32": a["f32"] and b["f32"]}
    return {
        "n": a["n"] + b["n"],
        "lo": [min(x, y) for x, y in zip(a["lo"], b["lo"])],
        "hi": [max(x, y) for x, y in zip(a["hi"], b["hi"])],
        "f32": a["f32"] and b["f32"],
    }


# --------------------------------------------------------------------------------------------
# The Lloyd pass: labels against the anchors, the changes since the previous anchors, and the
# update's partials.


@dataclass(frozen=True)
class Layout:
    """The median histograms' bins: along X, key (a value's float32 bit pattern) in bin
    min((key - lo[X]) >> shift[X], bins - 1)."""

    lo: Tuple[int, int]
    shift: Tuple[int, int]
    bins: int

    @staticmethod
    def of(lo: Sequence[int], hi: Sequence[int], bins: int = MEDIAN_BINS) -> Layout:
        shifts = []
        for X in range(2):
            span, s = hi[X] - lo[X], 0
            while (span >> s) >= bins:
                s += 1
            shifts.append(s)
        return Layout((int(lo[0]), int(lo[1])), (shifts[0], shifts[1]), bins)

    def bin(self, X: int, key: int) -> int:
        """The bin of ``key`` along X."""
        return min((key - self.lo[X] if key >= self.lo[X] else 0) >> self.shift[X], self.bins - 1)

    def key_range(self, X: int, b_lo: int, b_hi: int) -> Tuple[int, int]:
        """Keys [first, last] of bins b_lo..b_hi (bin 0 and the last bin open-ended)."""
        first = 0 if b_lo == 0 else self.lo[X] + (b_lo << self.shift[X])
        last = 0xFFFFFFFF if b_hi == self.bins - 1 else self.lo[X] + ((b_hi + 1) << self.shift[X]) - 1
        return first, last


def layout_args(layout: Optional[Layout]) -> Dict[str, Any]:
    """The median histograms' layout as the kernels' arguments (one bin, for the mean or labels)."""
    if layout is None:
        return dict(key_lo_w=0, key_lo_h=0, shift_w=0, shift_h=0, bins=1)
    return dict(
        key_lo_w=layout.lo[0], key_lo_h=layout.lo[1], shift_w=layout.shift[0], shift_h=layout.shift[1], bins=layout.bins
    )


def weight_args(weights: Optional[np.ndarray], wshift: Optional[int]) -> Dict[str, Any]:
    """A weighted fit's chunk weights and their units as the kernels' arguments."""
    return dict(weights=weights, weight_shift=0 if wshift is None else wshift)


def task_lloyd(
    block: Any,
    offset: int,
    anchors: np.ndarray,
    prev: Optional[np.ndarray],
    mode: str,
    layout: Optional[Layout],
    cache: Optional[Tuple[str, int]] = None,
    windows: Optional[Windows] = None,
    wshift: Optional[int] = None,
) -> Partial:
    """The chunk's update partials against ``anchors`` and its count of boxes whose label changed
    since ``prev``. With ``cache`` (a fit's token and budget), the process keeps the chunk's Lloyd
    state for the next pass (the in-memory engine's bounded assignment, ChunkLloyd), or, where that
    does not fit the budget or give exact partials, its labels, so that a pass labels the chunk
    once instead of twice (against ``prev`` too). With ``windows`` (the median's key windows),
    the values in them too. A weighted fit (``wshift``: the units of its integer weights; the chunks
    of a PositiveRows executor) keeps states whose partials are those of their labels and weights,
    and its windows' counts add weights."""
    n = row_count(block)
    win = {} if windows is None else windows.kernel_args(n)
    loaded: List[Tuple[np.ndarray, Optional[np.ndarray]]] = []  # the rows and weights, read at most once

    def rows_of() -> np.ndarray:
        if not loaded:
            loaded.append(fit_rows(block, wshift))
        return loaded[0][0]

    def weights_of() -> Optional[np.ndarray]:
        rows_of()
        return loaded[0][1]

    state = None
    if cache is not None:
        k = anchors.shape[0]
        weighted = weights_of if wshift is not None else None
        state = CACHE.lloyd_state(cache[0], cache[1], offset, n, rows_of, k, mode, layout, weighted, wshift)
    if state is not None:  # (a kept state reads no rows and no weights)
        out, changed = state.step(anchors, prev, win)
    else:
        rows, weights = rows_of(), weights_of()
        known = CACHE.labels(cache[0], offset, rows.shape[0], prev) if cache is not None and prev is not None else None
        out = _core._chunk_lloyd(
            wh=rows,
            anchors=anchors,
            prev_anchors=prev if known is None else None,
            mode=mode,
            want_labels=cache is not None,
            **layout_args(layout),
            **weight_args(weights, wshift),
            **win,
        )
        changed = int(out["changed"]) if known is None else int(np.count_nonzero(out["labels"] != known))
        if cache is not None:
            CACHE.keep_labels(cache[0], cache[1], offset, out["labels"], anchors)
    part: Partial = {"changed": changed, "count": out["count"], "weight": out["weight"]}
    if mode == "mean":
        part["exp"] = out["sum_exp"]
        if "sums_hi" in out:  # weighted: sum = hi * 2**47 + lo
            split = MEAN_WEIGHTED_SPLIT
            part["sums"] = [(hi << split) + lo for hi, lo in zip(_u128(out["sums_hi"]), _u128(out["sums_lo"]))]
        else:
            part["sums"] = _u128(out["sums"])  # 2k Python ints: w then h per cluster
    else:
        part["hist"] = out["hist"]
        if windows is not None:
            gathered = [WindowRun(out["window_values"], out["window_counts"], out["window_slots"])]
            part["window"] = (gathered, out["window_below"], out["window_overflow"])
    return part


def assign_labels(block: Any, anchors: np.ndarray) -> np.ndarray:
    """The labels (int32) of a chunk's rows against the anchors, as the in-memory fit's."""
    out = _core._chunk_lloyd(
        wh=chunk_rows(block), anchors=anchors, prev_anchors=None, mode="assign", want_labels=True, **layout_args(None)
    )
    labels: np.ndarray = out["labels"]
    return labels


def merge_lloyd(a: Partial, b: Partial) -> Partial:
    out: Partial = {
        "changed": a["changed"] + b["changed"],
        "count": a["count"] + b["count"],
        "weight": a["weight"] + b["weight"],
    }
    if "hist" in a:
        out["hist"] = a["hist"] + b["hist"]
        if "window" in a:
            (ga, ba, oa), (gb, bb, ob) = a["window"], b["window"]
            out["window"] = (ga + gb, ba + bb, oa + ob)  # (the runs merged once, by compact or at the end)
        return out
    if a["exp"] is None:
        out["exp"], out["sums"] = b["exp"], b["sums"]
    elif b["exp"] is None:
        out["exp"], out["sums"] = a["exp"], a["sums"]
    else:
        e = min(a["exp"], b["exp"])
        da, db = a["exp"] - e, b["exp"] - e
        out["exp"] = e
        out["sums"] = [(x << da) + (y << db) for x, y in zip(a["sums"], b["sums"])]
    return out


#: A weighted mean's sums come from the core in two halves: hi * 2**MEAN_WEIGHTED_SPLIT + lo.
MEAN_WEIGHTED_SPLIT = 47


def mean_update(part: Partial, anchors: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The new anchors of the clusters with boxes (the in-memory mean: the exact sum rounded once
    to a double, scaled by its unit, divided by the count, or by the total integer weight when
    weighted, whose sums are of weight times value), and the mask of the empty clusters."""
    k = anchors.shape[0]
    new = anchors.copy()
    count, total = part["count"], part["weight"]
    for c in range(k):
        if count[c] > 0:
            for X in range(2):
                s = part["sums"][X * k + c]
                new[c, X] = math.ldexp(float(s), part["exp"]) / float(int(total[c]))
    return new, count == 0


# --------------------------------------------------------------------------------------------
# The median's selection passes: the values of each cluster's median ranks, found by narrowing the
# key range that holds them (histograms) until few enough values remain to be gathered.


def task_select(
    block: Any,
    offset: int,
    anchors: np.ndarray,
    plan: Dict[str, Any],
    cache: Optional[Tuple[str, int]] = None,
    wshift: Optional[int] = None,
) -> Partial:
    """For each target t (a rank of the median, 0 or 1) and coordinate X, the values of cluster c
    whose keys lie in [first, last] (gather), or their histogram over finer bins (refine). The
    chunk's labels against ``anchors`` come from the fit's cache when it holds them. A weighted fit
    (``wshift``) gathers the integer weights with the values, and makes histograms of weights."""
    mode = plan["gather"].astype(np.int8) + 2 * plan["refine"].astype(np.int8)
    kw = dict(first=plan["first"], last=plan["last"], mode=mode, shift=plan["shift"], bins=plan["bins"])
    # On the chunk's Lloyd state (its rows, labels and weights): no rows or weights read.
    out = CACHE.state_select(cache[0], offset, row_count(block), anchors, kw) if cache is not None else None
    if out is None:
        rows, weights = fit_rows(block, wshift)
        known = CACHE.labels(cache[0], offset, rows.shape[0], anchors) if cache is not None else None
        labels = None if known is None else known.astype(np.int32)
        out = _core._chunk_select(wh=rows, labels=labels, anchors=anchors, **kw, **weight_args(weights, wshift))
    keys = [(t, X) for t in range(2) for X in range(2)]
    part = {
        "values": dict(zip(keys, out["values"])),
        "labels": dict(zip(keys, out["labels"])),
        "hist": out["hist"],
    }
    if "weights" in out:
        part["weights"] = dict(zip(keys, out["weights"]))
    return part


def merge_select(a: Partial, b: Partial) -> Partial:
    out = {
        "values": {key: np.concatenate([v, b["values"][key]]) for key, v in a["values"].items()},
        "labels": {key: np.concatenate([v, b["labels"][key]]) for key, v in a["labels"].items()},
        "hist": a["hist"] + b["hist"],
    }
    if "weights" in a:
        out["weights"] = {key: np.concatenate([v, b["weights"][key]]) for key, v in a["weights"].items()}
    return out


def _narrow(cum: np.ndarray, rank: int) -> Tuple[int, int]:
    """The bin holding 0-based rank `rank` of a histogram's cumulative counts, and the count below it."""
    b = int(np.searchsorted(cum, rank, side="right"))
    return b, int(cum[b - 1]) if b > 0 else 0


@dataclass
class Windows:
    """The median's key windows of a Lloyd pass: (2, k) uint32 key bounds [lo, hi] per coordinate X
    and cluster c (lo > hi: none), the (X, c) that have one, the rows of all chunks, and the width
    the windows were sized to, in values (a chunk of m rows gathers at most about 8 * width * m / n
    distinct values per window)."""

    lo: np.ndarray
    hi: np.ndarray
    slots: List[Tuple[int, int]]
    n: int
    width: int
    from_sample: bool = False  # sized from a sample's histogram (sample_windows)

    def kernel_args(self, rows: int) -> Dict[str, Any]:
        cap = 8 * self.width * rows // max(self.n, 1) + 64
        return {"window_lo": self.lo, "window_hi": self.hi, "window_cap": cap}


def median_windows(
    anchors: np.ndarray,
    before: np.ndarray,
    layout: Layout,
    hist: np.ndarray,
    count: np.ndarray,
    n: int,
    width: Optional[int] = None,
    weight: Optional[np.ndarray] = None,
) -> Windows:
    """A window of keys around each cluster's anchor along each coordinate, as wide as about
    ``width`` (None: window_width(n)) of the cluster's distinct values by the density of the
    anchor's bin in the last pass's histogram ``hist`` (2, k, bins; of a weighted fit, whose
    histograms add weights, ``weight`` holds each cluster's total, and a bin's boxes are taken as
    its weight times the cluster's count over its weight), and stretched on the side the
    anchor moves to by its last move from ``before`` (the last pass's anchors): the anchors of a
    fit from a sample's creep on in one direction for several iterations, by about the window's
    half-width. None where the bins around the anchor held fewer than WINDOW_MIN_DENSITY of them,
    or where the anchor moved by more than WINDOW_REACH half-widths (the next median would likely
    fall outside it)."""
    k = anchors.shape[0]
    width = window_width(n) if width is None else width
    lo = np.full((2, k), 0xFFFFFFFF, np.uint32)
    hi = np.zeros((2, k), np.uint32)
    keys = anchors.astype(np.float32).view(np.uint32)  # (k, 2): the anchors' keys
    moved = keys.astype(np.int64) - before.astype(np.float32).view(np.uint32).astype(np.int64)
    slots: List[Tuple[int, int]] = []
    for X in range(2):
        for c in range(k):
            if count[c] == 0:
                continue
            key = int(keys[c, X])
            b = layout.bin(X, key)
            # The sparsest of the anchor's bin and its neighbours: a spike of equal values (one
            # distinct value gathered) does not narrow the window. Bins this sparse tell too
            # little (the anchor moved where its cluster had few boxes): no window.
            dense = int(hist[X, c, max(b - 1, 0) : b + 2].min())
            if weight is not None:  # in boxes, at the cluster's mean weight
                dense = dense * int(count[c]) // max(int(weight[c]), 1)
            if dense < WINDOW_MIN_DENSITY:
                continue
            half = (width // 2 << layout.shift[X]) // dense
            step = int(moved[c, X])
            if abs(step) > WINDOW_REACH * half:  # moving farther than the window reaches: it would miss
                continue
            lo[X, c], hi[X, c] = max(key - half + min(step, 0), 0), min(key + half + max(step, 0), 0xFFFFFFFE)
            slots.append((X, c))
    return Windows(lo, hi, slots, n, width)


def window_width(n: int) -> int:
    """The width, in values, of a Lloyd pass's windows over ``n`` rows: WINDOW_MAX up to
    WINDOW_ROWS rows, growing in proportion beyond, up to 16 * WINDOW_MAX."""
    return int(WINDOW_MAX * min(max(1.0, n / WINDOW_ROWS), 16.0))


def sample_windows(rows: np.ndarray, anchors: np.ndarray, layout: Layout, n: int) -> Windows:
    """The median's windows of a fit's first pass over ``n`` rows, from a uniform sample of them
    (``rows``) and its anchors: the sample's histogram against the anchors, scaled to ``n`` rows,
    with windows SAMPLE_WINDOW_WIDTH values wide (the first medians lie within the sample's
    noise of its anchors). They spare the first pass the selection passes of its medians."""
    out = _core._chunk_lloyd(
        wh=rows, anchors=anchors, prev_anchors=None, mode="median", want_labels=False, **layout_args(layout)
    )
    scale = n / max(rows.shape[0], 1)
    hist = np.floor(out["hist"].astype(np.float64) * scale).astype(np.int64)
    count = np.floor(out["count"].astype(np.float64) * scale).astype(np.int64)
    windows = median_windows(anchors, anchors, layout, hist, count, n, SAMPLE_WINDOW_WIDTH)
    windows.from_sample = True
    return windows


class WindowRun(tuple):  # type: ignore[type-arg]
    """The values a Lloyd pass gathered in the median's windows, from one chunk or merged from
    several (_core._merge_windows): (values, counts, slots), float64, int64 and int32 arrays
    ordered by (slot, value), each (slot, value) once. It crosses processes at every pass on
    Dask, so it pickles compactly: the values as float32 when they all are (always, for float32
    rows), the counts in the smallest unsigned type that holds them (mostly one byte), and the
    slots as (slot, length) runs; about 5 bytes per value instead of 20."""

    def __new__(cls, values: np.ndarray, counts: np.ndarray, slots: np.ndarray) -> WindowRun:
        return super().__new__(cls, (values, counts, slots))

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        values, counts, slots = self
        ids, lengths = np.unique(slots, return_counts=True)
        return _window_run, (narrow_values(values), narrow_ints(counts), ids, lengths)

    @staticmethod
    def merged(runs: Sequence[Any]) -> WindowRun:
        """The union of runs (each value once, its counts added)."""
        if len(runs) == 1:
            return WindowRun(*runs[0])
        return WindowRun(*_core._merge_windows(runs))


def _window_run(values: np.ndarray, counts: np.ndarray, ids: np.ndarray, lengths: np.ndarray) -> WindowRun:
    """A WindowRun from its pickled form."""
    slots = np.repeat(ids.astype(np.int32), lengths)
    return WindowRun(values.astype(np.float64), counts.astype(np.int64), slots)


def narrow_values(values: np.ndarray) -> np.ndarray:
    """Float64 values as float32 when every one is a float32 (the same values in half the bytes)."""
    narrow = values.astype(np.float32)
    return narrow if np.array_equal(narrow, values) else values


def narrow_ints(ints: np.ndarray) -> np.ndarray:
    """Non-negative integers in the smallest unsigned type that holds them (others as they are)."""
    if ints.size == 0 or int(ints.min()) < 0:
        return ints
    return ints.astype(np.min_scalar_type(int(ints.max())))


def compact(part: Any) -> Any:
    """A pass's partial about to leave its process (a Dask worker's runs of chunks), made smaller
    (within a pair or list of partials too): a Lloyd partial's window runs merged into one; a
    selection pass's values as float32 where they all are, and its labels and integer weights in
    the smallest type (one byte a label below 256 clusters): 5 bytes a value instead of 12. The
    medians read from them are the same (a float32 value is exactly its float64)."""
    if isinstance(part, dict) and "window" in part and len(part["window"][0]) > 1:
        gathered, below, overflow = part["window"]
        return {**part, "window": ([WindowRun.merged(gathered)], below, overflow)}
    if isinstance(part, dict) and "values" in part and "labels" in part:
        out = {**part, "values": {key: narrow_values(v) for key, v in part["values"].items()}}
        for name in ("labels", "weights"):
            if name in part:
                out[name] = {key: narrow_ints(v) for key, v in part[name].items()}
        return out
    if type(part) in (tuple, list):
        return type(part)(compact(p) for p in part)
    return part


def _window_values(part: Partial, windows: Optional[Windows], k: int) -> Dict[Tuple[int, int], Tuple[Any, Any]]:
    """Per (X, c) whose window no chunk overflowed: the distinct values the Lloyd pass gathered
    there, ascending (each once, its counts over the chunks added), and their cumulative counts."""
    if windows is None or "window" not in part:
        return {}
    gathered, _, overflow = part["window"]
    values, counts, slots = WindowRun.merged(gathered)
    starts = np.searchsorted(slots, np.arange(2 * k + 1))
    out = {}
    for X, c in windows.slots:
        if overflow[X, c] == 0:
            a, b = starts[X * k + c], starts[X * k + c + 1]
            out[(X, c)] = (values[a:b], np.cumsum(counts[a:b]))
    return out


def median_update(
    ex: Executor,
    part: Partial,
    anchors: np.ndarray,
    layout: Layout,
    f32: bool,
    cache: Optional[Tuple[str, int]] = None,
    windows: Optional[Windows] = None,
    wshift: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """The new anchors of the clusters with boxes (the median, interpolated like numpy.median:
    the mean of the values of ranks (n - 1) // 2 and n // 2) and the mask of the empty clusters.
    A weighted fit's (``wshift``) ranks are in units of its integer weights: with T a cluster's
    total, the values that cover units (T - 1) // 2 and T // 2 of its weight in ascending order,
    which is the in-memory weighted median (kmeans/median_sorted.hpp); unit weights are the case
    of one unit per box.

    Each rank is a target with a key range [first, last] known to hold it, and `rank`, its rank
    among the cluster's values in that range. A target whose range holds at most GATHER_MAX values
    of the cluster (or a single key) gathers them; another cuts its range into MEDIAN_BINS finer
    bins, so every pass narrows it until one of those holds. A rank inside its cluster's window
    (``windows``) is read from the values the Lloyd pass gathered there."""
    k = anchors.shape[0]
    new = anchors.copy()
    count = part["count"].astype(np.int64)
    total = part["weight"].astype(np.int64)  # the count, for unit weights
    found: Dict[Tuple[int, int, int], float] = {}
    state: Dict[Tuple[int, int, int], Dict[str, int]] = {}
    gathered = _window_values(part, windows, k)
    for X in range(2):
        for c in range(k):
            n = int(total[c])
            if count[c] == 0:
                continue
            cum = np.cumsum(part["hist"][X, c].astype(np.int64))
            for t, rank in enumerate(((n - 1) // 2, n // 2)):
                b, below = _narrow(cum, rank)
                if (X, c) in gathered:
                    assert windows is not None
                    b_lo = layout.bin(X, int(windows.lo[X, c]))
                    before = (int(cum[b_lo - 1]) if b_lo > 0 else 0) + int(part["window"][1][X, c])
                    vals, cum_in = gathered[(X, c)]
                    if vals.size and before <= rank < before + int(cum_in[-1]):
                        found[(t, X, c)] = float(vals[np.searchsorted(cum_in, rank - before, side="right")])
                        continue
                first, last = layout.key_range(X, b, b)
                state[(t, X, c)] = dict(first=first, last=last, rank=rank - below, inside=int(cum[b]) - below)
    while state:
        shape = (2, 2, k)
        plan_first, plan_last = np.zeros(shape, np.int64), np.full(shape, -1, np.int64)
        gather, refine, shift = np.zeros(shape, bool), np.zeros(shape, bool), np.zeros(shape, np.int64)
        for key, s in list(state.items()):
            if s["first"] == s["last"] and f32:
                found[key] = float(np.array([s["first"]], np.uint32).view(np.float32)[0])  # one key, one value
                del state[key]
                continue
            plan_first[key], plan_last[key] = s["first"], s["last"]
            span = s["last"] - s["first"]
            if s["inside"] <= GATHER_MAX or span == 0:
                gather[key] = True
            else:
                sh = 0
                while (span >> sh) >= MEDIAN_BINS:
                    sh += 1
                refine[key], shift[key] = True, sh
        if not state:
            break
        plan = dict(first=plan_first, last=plan_last, gather=gather, refine=refine, shift=shift, bins=MEDIAN_BINS)
        got = ex.run(task_select, (anchors, plan, cache, wshift), merge_select)
        for key, s in list(state.items()):
            t, X, c = key
            if gather[key]:
                mine = got["labels"][(t, X)] == c
                vals = got["values"][(t, X)][mine]
                if "weights" in got:  # the value that covers unit `rank` of the weight in the range
                    order = np.argsort(vals, kind="stable")
                    cum = np.cumsum(got["weights"][(t, X)][mine][order].astype(np.int64))
                    found[key] = float(vals[order][np.searchsorted(cum, s["rank"], side="right")])
                else:
                    found[key] = float(np.sort(vals)[s["rank"]])
                del state[key]
            else:
                cum = np.cumsum(got["hist"][t, X, c].astype(np.int64))
                b, below = _narrow(cum, s["rank"])
                sh = int(shift[key])
                first = s["first"] + (b << sh)
                last = s["last"] if b == MEDIAN_BINS - 1 else min(s["last"], s["first"] + ((b + 1) << sh) - 1)
                state[key] = dict(first=first, last=last, rank=s["rank"] - below, inside=int(cum[b]) - below)
    for c in range(k):
        if count[c] > 0:
            for X in range(2):
                lo, hi = found[(0, X, c)], found[(1, X, c)]
                new[c, X] = lo if total[c] % 2 == 1 else (lo + hi) / 2.0
    return new, count == 0


# --------------------------------------------------------------------------------------------
# Empty clusters: the boxes with the lowest best IoU, in increasing (best IoU, row) order.


def task_worst(block: Any, offset: int, anchors: np.ndarray, m: int) -> Partial:
    """The chunk's ``m`` boxes of the lowest best IoU against ``anchors``, with their row indices."""
    rows = chunk_rows(block)
    iou, index = _core._chunk_worst(wh=rows, anchors=anchors, m=m)
    return {"iou": iou, "index": index + offset, "rows": rows[index].astype(np.float64), "m": m}


def merge_worst(a: Partial, b: Partial) -> Partial:
    iou = np.concatenate([a["iou"], b["iou"]])
    index = np.concatenate([a["index"], b["index"]])
    rows = np.concatenate([a["rows"], b["rows"]])
    order = np.lexsort((index, iou))[: a["m"]]
    return {"iou": iou[order], "index": index[order], "rows": rows[order], "m": a["m"]}


# --------------------------------------------------------------------------------------------
# Average IoU and YOLOv5's metrics.


def task_avg_iou(
    block: Any, offset: int, anchors: np.ndarray, n_total: int, ws: Optional[WeightScale] = None
) -> Partial:
    """The chunk's sums of the blocks of K_CHUNK rows it holds whole (best IoU times weight, and
    weight), and the terms of the rows of the blocks it holds in part."""
    rows = chunk_rows(block)
    w = None if ws is None else chunk_weights(block, ws)
    out = _core._chunk_avg_iou(wh=rows, anchors=anchors, offset=offset, n_total=n_total, weights=w)
    ids, sums, parts = out["ids"].tolist(), out["sums"].tolist(), out["parts"]
    if w is None:
        whole = {c: (s, None) for c, s, p in zip(ids, sums, parts) if p.size == 0}
        cut = {c: [(offset, p, None)] for c, p in zip(ids, parts) if p.size > 0}
    else:
        dens, pws = out["weight_sums"].tolist(), out["part_weights"]
        whole = {c: (s, d) for c, s, d, p in zip(ids, sums, dens, parts) if p.size == 0}
        cut = {c: [(offset, p, pw)] for c, p, pw in zip(ids, parts, pws) if p.size > 0}
    return {"whole": whole, "parts": cut}


def merge_avg_iou(a: Partial, b: Partial) -> Partial:
    parts = {c: list(v) for c, v in a["parts"].items()}
    for c, v in b["parts"].items():
        parts.setdefault(c, []).extend(v)
    return {"whole": {**a["whole"], **b["whole"]}, "parts": parts}


def finish_avg_iou(part: Partial, n: int) -> float:
    """The in-memory average: best IoUs (times the weights, and the weights, when weighted) summed
    in order within each block of K_CHUNK rows, then the blocks' sums (and counts, for unit
    weights) in block order."""
    blocks = (n + K_CHUNK - 1) // K_CHUNK
    s = sw = 0.0
    for c in range(blocks):
        size = min(K_CHUNK, n - c * K_CHUNK)
        if c in part["whole"]:
            num, den = part["whole"][c]
        else:
            num, den = 0.0, None
            for _, values, weights in sorted(part["parts"][c], key=lambda t: t[0]):
                for v in values.tolist():
                    num += v
                if weights is not None:
                    den = 0.0 if den is None else den
                    for x in weights.tolist():
                        den += x
        s += num
        sw += float(size) if den is None else den
    return s / sw


def task_fitness(block: Any, offset: int, anchors: np.ndarray, thr: float, ws: Optional[WeightScale] = None) -> Partial:
    rows = chunk_rows(block).astype(np.float64, copy=False)
    if ws is None:
        return {"sums": _u128(_core._chunk_fitness(wh=rows, anchors=anchors, thr=thr))}
    w = chunk_weights(block, ws)
    return {"sums": _u128(_core._chunk_fitness(wh=rows, anchors=anchors, thr=thr, weights=w, top=ws.scaled))}


def merge_fitness(a: Partial, b: Partial) -> Partial:
    return {"sums": [x + y for x, y in zip(a["sums"], b["sums"])]}


def finish_fitness(part: Partial, n: int, k: Optional[int] = None) -> Tuple[float, float, float, float]:
    """(fitness, bpr, aat, avg_iou) from the merged sums of n boxes; with ``k``, the number of
    anchors, of weighted boxes (aat's terms are then fixed point too)."""
    fit, bpr, aat, iou, den = part["sums"]
    d = float(den)
    aat_value = float(aat) / float(n) if k is None else float(aat) * k / d
    return float(fit) / d, float(bpr) / d, aat_value, float(iou) / d


# --------------------------------------------------------------------------------------------
# The fit.


def area_order(anchors: np.ndarray) -> np.ndarray:
    """The core's area_order: by area, then width, then index."""
    w, h = anchors[:, 0], anchors[:, 1]
    return np.lexsort((np.arange(anchors.shape[0]), w, w * h))


@dataclass
class FitOutcome:
    anchors: np.ndarray  # sorted by area
    n_iter: int
    converged: bool


def lloyd(
    ex: Executor,
    init: np.ndarray,
    update: str,
    max_iter: int,
    tol: float,
    layout: Optional[Layout],
    f32: bool,
    tick: Optional[Callable[[int], None]] = None,
    cache: Optional[Tuple[str, int]] = None,
    windows: Optional[Windows] = None,
    wshift: Optional[int] = None,
) -> FitOutcome:
    """The in-memory Lloyd loop (kmeans/driver.hpp, lloyd) as passes over the chunks (with
    ``cache``, a fit's token and budget, the chunks' Lloyd states or labels are kept between
    passes; ``windows``, the median's windows of the first pass, e.g. from sample_windows). A
    weighted fit (``wshift``: the units of its integer weights) runs on a PositiveRows executor;
    its windows gather each value's weight."""
    anchors = np.array(init, dtype=np.float64)
    k = anchors.shape[0]
    prev: Optional[np.ndarray] = None
    n_iter, converged = 0, False
    while True:
        args = (anchors, prev, update, layout if update == "median" else None, cache, windows, wshift)
        part = ex.run(task_lloyd, args, merge_lloyd)
        if tick is not None:
            tick(n_iter)
        if n_iter > 0 and part["changed"] == 0:
            order = area_order(anchors)
            if np.array_equal(order, np.arange(k)):
                converged = True
                break
            prev, anchors = anchors, anchors[order]
            windows = None
            continue  # assign again with the anchors in area order
        if n_iter >= max_iter:
            break
        if update == "mean":
            new, empty = mean_update(part, anchors)
        else:
            assert layout is not None
            new, empty = median_update(ex, part, anchors, layout, f32, cache, windows, wshift)
            # After a first pass in a sample's windows, the move was the sample's noise, not the
            # direction of the fit's creep: the next windows are not stretched by it, and twice as
            # wide (the relabelling after that jump moves the medians farther than a creep does).
            after_sample = windows is not None and windows.from_sample
            width = window_width(ex.n)
            before, width = (new, 2 * width) if after_sample else (anchors, width)
            weight = None if wshift is None else part["weight"]  # (its histograms hold weights)
            windows = median_windows(new, before, layout, part["hist"], part["count"], ex.n, width, weight)
        if empty.any():
            which = np.flatnonzero(empty)
            m = min(which.size, ex.n)
            worst = ex.run(task_worst, (anchors, m), merge_worst)
            for t in range(m):
                new[which[t]] = worst["rows"][t]
        n_iter += 1
        with np.errstate(all="ignore"):
            shift = float(
                max(
                    np.max(np.abs(new[:, 0] - anchors[:, 0]) / anchors[:, 0]),
                    np.max(np.abs(new[:, 1] - anchors[:, 1]) / anchors[:, 1]),
                )
            )
        prev, anchors = anchors, new
        if tol > 0 and shift <= tol:
            converged = True
            break
    return FitOutcome(anchors[area_order(anchors)], n_iter, converged)


# --------------------------------------------------------------------------------------------
# The plain loop over chunks (out of core: one chunk in memory at a time).


class LocalExecutor:
    """Runs a pass as a loop over the row blocks of one or more (n_i, 2) arrays (numpy arrays or
    memmaps), ``block_rows`` rows at a time, on ``workers`` threads (the kernels release the GIL),
    merging in block order as it goes: at most ``workers`` + 1 blocks' rows are in memory at a time
    (copied from a memmap), besides the partials."""

    #: Threads of the kernels that take a count: one per task (the blocks run in parallel).
    task_threads = 1

    def __init__(
        self,
        arrays: Sequence[Any],
        block_rows: int,
        workers: int = 1,
        paths: Optional[Sequence[Any]] = None,
        weights: Optional[Sequence[Tuple[Any, Any]]] = None,
    ) -> None:
        self.arrays = list(arrays)
        # The weights' 1-D arrays, each with where it lies in the .npy file it was opened from
        # (None: an array given as is; weights None: unit weights).
        self.weights = None if weights is None else [(a, npy_region(a, path)) for a, path in weights]
        self.block_rows = int(block_rows)
        self.workers = max(1, int(workers))
        self.n = int(sum(a.shape[0] for a in self.arrays))
        # Where each array lies in the .npy file it was opened from (None: an array given as is).
        paths = list(paths) if paths is not None else [None] * len(self.arrays)
        self.regions = [npy_region(a, path) for a, path in zip(self.arrays, paths)]

    def blocks(self) -> Any:
        offset = 0
        for a, region in zip(self.arrays, self.regions):
            for b in range(0, a.shape[0], self.block_rows):
                e = min(a.shape[0], b + self.block_rows)
                rows = RowsOnDemand(a, region, b, e)
                if self.weights is None:
                    yield rows, offset + b
                else:
                    yield WeightedBlock(rows, WeightsOnDemand(self.weights, offset + b, offset + e)), offset + b
            offset += a.shape[0]

    def release(self, token: str) -> None:
        """Drops a search's cached chunk layouts."""
        drop_layouts(token)

    def run(self, task: Callable[..., Any], args: Tuple[Any, ...], merge: Callable[[Any, Any], Any]) -> Any:
        acc = None
        if self.workers == 1:
            for rows, offset in self.blocks():
                part = task(rows, offset, *chunk_args(args, offset, len(rows)))
                acc = part if acc is None else merge(acc, part)
            return acc
        from collections import deque
        from concurrent.futures import Future, ThreadPoolExecutor

        with ThreadPoolExecutor(self.workers, thread_name_prefix="fastanchor-block") as pool:
            pending: deque[Future[Any]] = deque()
            try:
                for rows, offset in self.blocks():
                    pending.append(pool.submit(task, rows, offset, *chunk_args(args, offset, len(rows))))
                    if len(pending) >= self.workers:
                        part = pending.popleft().result()
                        acc = part if acc is None else merge(acc, part)
                while pending:
                    part = pending.popleft().result()
                    acc = part if acc is None else merge(acc, part)
            finally:
                for f in pending:
                    f.cancel()
        return acc


# --------------------------------------------------------------------------------------------
# The front end shared by fastanchor.out_of_core and fastanchor.dask.

_UPDATES = ("median", "mean")
_INITS = ("k-means++", "random")
#: Rows of the sample on which a seeded initialisation runs (all rows when there are fewer).
DEFAULT_INIT_SAMPLE = 1 << 18
#: Bytes of chunk layouts a process keeps during a chunked search.
DEFAULT_CACHE_BYTES = 1 << 30


@dataclass(frozen=True)
class Scan:
    n: int
    f32: bool
    layout: Layout
    hi: Tuple[int, int]  # the largest float32 key per coordinate
    # Weighted chunks: per chunk offset, the count of rows of positive weight (None: unit weights).
    positive: Optional[Dict[int, int]] = None


def scan(ex: Executor, name: str = "wh") -> Scan:
    return as_scan(ex.run(task_scan, (name,), merge_scan), name)


def scan_weights(ex: Executor, weighted: bool, name: str = "wh") -> Tuple[Scan, Optional[WeightScale]]:
    """scan, and for an executor of weighted chunks (``weighted``) the check of the weights, with
    the in-memory functions' messages (values counted in the whole array), in the same pass: the
    Scan and the weights' scale (None for unit weights)."""
    if not weighted:
        return scan(ex, name), None
    part = ex.run(task_scan_weighted, (name,), merge_scan_weighted)
    sc = as_scan(None if part is None else part["scan"], name)
    ws = checked_weights(part["weights"])
    return Scan(sc.n, sc.f32, sc.layout, sc.hi, dict(part["weights"]["positive"])), ws


def checked_weights(w: Partial) -> WeightScale:
    """The scale of weights checked by a first pass (_weight_stats, merged), or the in-memory
    functions' error."""
    if w["bad"]:
        index, value = w["first"]
        raise ValueError(
            f"sample_weight has {w['bad']} bad value{'s' if w['bad'] > 1 else ''}: weights must be finite and "
            f"non-negative; the first is index {index}: {value!r}"
        )
    if not w["top"] > 0:
        raise ValueError("sample_weight must have at least one positive weight")
    return WeightScale.of(w["top"], w["low"], w["zeros"])


def as_scan(s: Optional[Partial], name: str) -> Scan:
    """The Scan of merged task_scan partials (None: no chunk)."""
    if s is None or s["n"] == 0:
        raise ValueError(f"{name} is empty: at least one box is needed")
    return Scan(int(s["n"]), bool(s["f32"]), Layout.of(s["lo"], s["hi"]), (int(s["hi"][0]), int(s["hi"][1])))


def as_cache_bytes(cache_bytes: Any) -> int:
    from ._validation import as_int

    return as_int(cache_bytes, "cache_bytes", minimum=0)


def check_fit_options(k: Any, update: Any, n_init: Any, max_iter: Any, tol: Any) -> Tuple[int, str, int, int, float]:
    """k, update, n_init (None: 1), max_iter and tol, checked."""
    from ._validation import INT_MAX, as_float, as_int

    k = as_int(k, "k", minimum=1)
    if not (isinstance(update, str) and update in _UPDATES):
        raise ValueError(f"update must be one of {_UPDATES}, got {update!r}")
    n_init = 1 if n_init is None else as_int(n_init, "n_init", minimum=1, maximum=INT_MAX)
    max_iter = as_int(max_iter, "max_iter", minimum=0, maximum=INT_MAX)
    tol = as_float(tol, "tol")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    return k, update, n_init, max_iter, tol


def initial_anchors(
    init: Any,
    k: int,
    n: int,
    seed: Any,
    init_sample: int,
    take_rows: Callable[[Optional[np.ndarray]], np.ndarray],
    runs: int = 1,
    take_pairs: Optional[Callable[[Optional[np.ndarray]], Tuple[np.ndarray, np.ndarray]]] = None,
) -> List[np.ndarray]:
    """The runs' initial anchors: ``init`` as given (k, 2), for one run, or k-means++/random on
    the rows ``take_rows(index)`` of a uniform sample of ``init_sample`` rows (sorted row indices
    drawn from the seed; all rows, index None, when there are no more) by the in-memory core, for
    each of ``runs`` runs (the in-memory fit's per-run streams of the seed). The sample depends on
    the seed and N only, so the initial anchors do not depend on the chunking. With ``take_pairs``
    (a weighted fit's, over rows of positive weight), the sample's rows and weights, which the
    draws weigh as the in-memory fit does (equal weights are none)."""
    from ._validation import (
        as_int,
        as_wh,
        distinct_rows_at_least,
        resolve_seed,
        resolve_threads,
        sample_index,
        scale_weights,
    )

    if isinstance(init, str):
        if init not in _INITS:
            raise ValueError(f"init must be one of {_INITS} or an array of shape (k, 2), got {init!r}")
        if k > n:
            raise ValueError(f"k={k} is larger than the number of boxes ({n})")
        init_sample = as_int(init_sample, "init_sample", minimum=1)
        take = (lambda index: (take_rows(index), None)) if take_pairs is None else take_pairs
        weights: Optional[np.ndarray]
        if n <= init_sample:
            (sample, weights), core_seed = take(None), resolve_seed(seed)
        else:
            rng = np.random.default_rng(resolve_seed(seed))
            (sample, weights), core_seed = take(sample_index(rng, n, init_sample)), resolve_seed(rng)
        if weights is not None:
            weights = scale_weights(np.array(weights, dtype=np.float64), float(weights.max()))  # as as_weights does
            if (weights == weights[0]).all():
                weights = None  # equal weights are no weights
        distinct = distinct_rows_at_least(sample, k)
        if k > distinct:
            what = "distinct boxes" if take_pairs is None else "distinct boxes with positive weight"
            where = what if n <= len(sample) else f"{what} in the sample of {len(sample)} rows"
            raise ValueError(f"k={k} is larger than the number of {where} ({distinct})")
        # The in-memory fit's initial anchors, in the order each run starts from.
        threads = resolve_threads(None)
        return [
            np.asarray(
                _core._chunk_init(
                    wh=sample, k=k, init=init, seed=core_seed, n_threads=threads, run=run, weights=weights
                )
            )
            for run in range(runs)
        ]
    if runs != 1:
        raise ValueError(f"n_init must be 1 when init is an array (it is deterministic), got {runs}")
    anchors = as_wh(init, "init")
    if anchors.shape[0] != k:
        raise ValueError(f"init has {anchors.shape[0]} anchors but k={k}")
    if k > n:
        raise ValueError(f"k={k} is larger than the number of boxes ({n})")
    return [anchors]


def check_mean_span(sc: Scan) -> None:
    """The mean's exact sums hold values spanning at most 94 bits of units (the last mantissa bit
    of the smallest value), as the in-memory fit's; beyond that it sums in floating point, which
    the chunked fits do not reproduce: refuse (with a bit to spare for the float32 keys' rounding)."""
    digits = 24 if sc.f32 else 53
    e_lo = (min(sc.layout.lo) >> 23) - 127
    e_hi = (max(sc.hi) >> 23) - 127
    if (e_hi + 1) - (e_lo - (digits - 1)) > 93:
        raise ValueError(
            "update='mean' over chunks needs box sides within a ratio of about 2**"
            f"{93 - digits - 1} ({'float32' if sc.f32 else 'float64'} rows): these span 2**{e_hi - e_lo}; "
            "use update='median' or the in-memory fastanchor.kmeans_iou"
        )


class IterationBar:
    """A tqdm bar over Lloyd iterations (shown on request)."""

    def __init__(self, total: int, desc: str) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=desc, unit="iter", dynamic_ncols=True)

    def __call__(self, n_iter: int) -> None:
        self._bar.update(n_iter - self._bar.n)

    def close(self) -> None:
        self._bar.close()


def fit(
    ex: Executor,
    sc: Scan,
    k: int,
    init: Any,
    update: str,
    max_iter: int,
    tol: float,
    seed: Any,
    init_sample: int,
    progress: bool,
    take_rows: Callable[[Optional[np.ndarray]], np.ndarray],
    desc: str,
    cache_bytes: int = 0,
    n_init: int = 1,
    with_avg_iou: bool = True,
    windows: Optional[Windows] = None,
    ws: Optional[WeightScale] = None,
) -> Tuple[FitOutcome, float]:
    """The fit and the average IoU of its (sorted) anchors: of ``n_init`` runs from a seeded
    initialisation (one from given anchors), the one of the highest average IoU (the first of
    equals), as in memory. Each process keeps the state of the chunks it runs, up to
    ``cache_bytes`` (when the executor can drop it at the end of each run). Without
    ``with_avg_iou``, a single run's average IoU is not computed (NaN: one pass fewer). ``windows``:
    the median's windows of a single run's first pass. ``ws``: the weights' scale of a weighted
    fit (``sc.positive`` counts the chunks' rows of positive weight): unless its
    weights are all positive, the fit runs on the rows of positive weight (PositiveRows), and its
    samples are drawn among them; the fit of equal weights is the unit-weight one (as in memory)."""
    wshift = None if ws is None or ws.equal else weight_shift(ws.top)
    if update == "mean":
        check_mean_span(sc)
    n = sc.n
    take: Optional[Callable[[Optional[np.ndarray]], Tuple[np.ndarray, np.ndarray]]] = None
    avg_ws = None if wshift is None else ws  # (the in-memory fit's weights: none when equal)
    if ws is not None and (ws.zeros or wshift is not None):
        assert sc.positive is not None
        ex = PositiveRows(ex, sc.positive)
        n = ex.n
        if k > n:
            raise ValueError(f"k={k} is larger than the number of boxes with positive weight ({n})")
        take = functools.partial(take_pairs, ex)
    starts = initial_anchors(init, k, n, seed, init_sample, take_rows, n_init, take)
    release = getattr(ex, "release", None)
    best: Optional[Tuple[FitOutcome, float]] = None
    for run, anchors in enumerate(starts):
        label = desc if len(starts) == 1 else f"{desc}, run {run + 1} of {len(starts)}"
        bar = IterationBar(max_iter, label) if progress else None
        cache = (uuid.uuid4().hex, cache_bytes) if cache_bytes > 0 and release is not None else None
        try:
            first = windows if len(starts) == 1 else None
            out = lloyd(ex, anchors, update, max_iter, tol, sc.layout, sc.f32, bar, cache, first, wshift)
        finally:
            if bar is not None:
                bar.close()
            if cache is not None and release is not None:
                release(cache[0])
        if len(starts) == 1 and not with_avg_iou:
            return out, math.nan
        avg = avg_iou(ex, out.anchors, n, avg_ws)
        if best is None or avg > best[1]:
            best = (out, avg)
    assert best is not None
    return best


def avg_iou(ex: Executor, anchors: np.ndarray, n: int, ws: Optional[WeightScale] = None) -> float:
    return finish_avg_iou(ex.run(task_avg_iou, (anchors, n, ws), merge_avg_iou), n)


def fitness(
    ex: Executor, anchors: np.ndarray, thr: float, n: int, ws: Optional[WeightScale] = None
) -> Tuple[float, float, float, float]:
    part = ex.run(task_fitness, (anchors, thr, ws), merge_fitness)
    return finish_fitness(part, n, None if ws is None else int(anchors.shape[0]))


# --------------------------------------------------------------------------------------------
# The mutation search: every batch of candidates is scored by one pass, each chunk's fixed-point
# totals of the objective added exactly (the in-memory search's totals, so its values bit for bit).

#: The fixed-point scale of the objectives' terms (fitness/metrics.hpp: units of 2**-50).
FIX_SCALE = 1 << 50


class LloydState:
    """A chunk's Lloyd state in a ChunkCache (the core's ChunkLloyd, reading ``rows`` in place),
    with the anchors of its last two steps: a pass steps it from the previous anchors to the new
    ones, so the number of labels changed comes from one assignment. A task run again (Dask
    retries, or runs a task twice) or a state that missed a pass is brought to the right anchors
    first: the partials are those of the labels against the pass's anchors, whatever the state's
    history."""

    def __init__(self, core: Any, rows: np.ndarray) -> None:
        self.core = core
        self.rows = rows  # (the core reads them in place)
        self.last: Optional[np.ndarray] = None
        self.before: Optional[np.ndarray] = None
        self.changed = -1
        self.lock = threading.Lock()

    def step(self, anchors: np.ndarray, prev: Optional[np.ndarray], win: Dict[str, Any]) -> Tuple[Partial, int]:
        def same(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> bool:
            return a is not None and b is not None and np.array_equal(a, b)

        with self.lock:
            if same(self.last, anchors) and (prev is None or same(self.before, prev)):
                return self.core.step(anchors, **win), self.changed if prev is not None else -1
            if prev is not None and not same(self.last, prev):
                self.core.step(prev)  # the labels against prev first
            out = self.core.step(anchors, **win)
            changed = int(out["changed"]) if prev is not None else -1
            self.before, self.last, self.changed = prev, np.array(anchors, copy=True), changed
            return out, changed

    def select(self, anchors: np.ndarray, plan: Dict[str, Any]) -> Optional[Partial]:
        """The median's selection pass (``plan``: _chunk_select's) on the chunk's rows, labels and
        weights, if its last step was against exactly ``anchors``."""
        with self.lock:
            if self.last is None or not np.array_equal(self.last, anchors):
                return None
            out: Partial = self.core.select(**plan)
            return out

    def labels(self, anchors: np.ndarray) -> Optional[np.ndarray]:
        """The chunk's labels (int32) if its last step was against exactly ``anchors``."""
        with self.lock:
            if self.last is None or not np.array_equal(self.last, anchors):
                return None
            labels: np.ndarray = self.core.labels()
            return labels


class ChunkCache:
    """What the passes of a running fit or search in this process keep per chunk: a search's chunk
    layouts (a layout costs about 10 times a pass's scoring to build), a fit's chunk Lloyd states
    (LloydState), or, for chunks whose state does not fit or gives no exact partials, their labels
    (so that a Lloyd pass labels each box once, not twice). A fit or search keeps an item while its
    items' bytes fit its budget (first come, first kept: the passes visit the chunks in a cycle,
    where evicting would only trade one rebuilt item for another) and drops them when it ends.
    Chunks are disjoint, so (offset, rows) names one. Thread-safe.

    A task still running when its fit ends (one that Ctrl-C left behind in a thread pool) keeps
    nothing: the last DROPPED_KEPT tokens dropped are remembered, and refused."""

    #: How many dropped tokens are remembered (a straggling task comes within moments of the drop).
    DROPPED_KEPT = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: Dict[Tuple[str, str, int, int], Tuple[Any, int]] = {}
        self._bytes: Dict[str, int] = {}
        self._dropped: Dict[str, None] = {}  # in the order dropped

    def _reserve(self, token: str, budget: int, need: int) -> bool:
        """Whether ``need`` more bytes fit the token's budget (then counted), never for a dropped
        token; under the lock."""
        if token in self._dropped:
            return False
        used = self._bytes.get(token, 0)
        if used + need > budget:
            return False
        self._bytes[token] = used + need
        return True

    def layout(
        self, token: str, budget: int, offset: int, block: Any, threads: int, ws: Optional[WeightScale] = None
    ) -> Any:
        """The search's layout of the chunk at ``offset`` (built now from the block's rows, and
        weights scaled by ``ws``, if its bytes fit), or None."""
        n = row_count(block)
        if n == 0:
            return None
        key = ("layout", token, offset, n)
        # Reserved before the rows are read: as doubles (a float32 chunk's layout takes 9 bytes per
        # box, and the reservation is trimmed to it once built) and eight doubles per tile of 64.
        need = n * (17 if ws is None else 25)
        with self._lock:
            if key in self._items:
                return self._items[key][0]
            if not self._reserve(token, budget, need):
                return None
        rows = chunk_rows(block)
        if ws is None:
            layout = _core._search_layout(wh=rows, n_threads=threads)
        else:
            layout = _core._search_layout(wh=rows, weights=chunk_weights(block, ws), n_threads=threads, top=ws.scaled)
        with self._lock:
            if token not in self._bytes:  # dropped meanwhile
                return layout
            if key in self._items:  # built by another thread meanwhile: give the reservation back
                self._bytes[token] -= need
                return self._items[key][0]
            self._bytes[token] -= need - layout.nbytes
            self._items[key] = (layout, layout.nbytes)
            return layout

    def lloyd_state(
        self,
        token: str,
        budget: int,
        offset: int,
        n: int,
        rows_of: Callable[[], np.ndarray],
        k: int,
        mode: str,
        layout: Optional[Layout],
        weights_of: Optional[Callable[[], Optional[np.ndarray]]] = None,
        wshift: Optional[int] = None,
    ) -> Optional[LloydState]:
        """The fit's Lloyd state of the chunk of ``n`` rows at ``offset`` (made now from its rows,
        ``rows_of()``, if their bytes and the state's fit the budget), or None (then the fit keeps
        labels, or nothing, for this chunk). A weighted fit's state (its rows' weights
        ``weights_of()``, in the units of ``wshift``) keeps the rows' integer weights too."""
        if n == 0 or mode not in ("mean", "median"):
            return None
        key = ("lloyd", token, offset, n)
        bins = layout.bins if layout is not None else 1
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                state: Optional[LloydState] = hit[0]
                return state
        rows = rows_of()
        weights = None if weights_of is None else weights_of()
        need = rows.nbytes + n * (1 if k < 255 else 4) + 2 * n + (4 * n if rows.dtype != np.float32 else 0)
        need += 16 * k * bins + (4 * n + 16 * k * bins if weights is not None else 0)
        with self._lock:
            if key in self._items or not self._reserve(token, budget, need):
                return None
        core = _core._chunk_state(wh=rows, k=k, mode=mode, **layout_args(layout), **weight_args(weights, wshift))
        made = LloydState(core, rows) if core.exact else None
        with self._lock:
            if token not in self._bytes:  # dropped meanwhile
                return made
            if made is None:  # no exact partials from this chunk's state: none kept, none made again
                self._bytes[token] -= need
                need = 0
            return self._items.setdefault(key, (made, need))[0]

    def state_select(
        self, token: str, offset: int, n: int, anchors: np.ndarray, plan: Dict[str, Any]
    ) -> Optional[Partial]:
        """LloydState.select on the chunk's Lloyd state, if the fit keeps one."""
        with self._lock:
            hit = self._items.get(("lloyd", token, offset, n))
        if hit is None or hit[0] is None:
            return None
        out: Optional[Partial] = hit[0].select(anchors, plan)
        return out

    def state_rows(self, token: str, offset: int, n: int, anchors: np.ndarray) -> Optional[Tuple[np.ndarray, Any]]:
        """The rows of the chunk's Lloyd state and its labels, if they are against ``anchors``."""
        with self._lock:
            hit = self._items.get(("lloyd", token, offset, n))
        if hit is None or hit[0] is None:
            return None
        labels = hit[0].labels(anchors)
        return None if labels is None else (hit[0].rows, labels)

    def labels(self, token: str, offset: int, n: int, anchors: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """The chunk's labels kept by the fit without a Lloyd state (keep_labels), if they are its
        labels against exactly ``anchors``."""
        with self._lock:
            hit = self._items.get(("labels", token, offset, n))
        if hit is None or anchors is None:
            return None
        (labelled, labels), _ = hit
        return labels if np.array_equal(labelled, anchors) else None

    def keep_labels(self, token: str, budget: int, offset: int, labels: np.ndarray, anchors: np.ndarray) -> None:
        """Keeps the chunk's labels against ``anchors`` (in the smallest integer type) if they fit."""
        if labels.shape[0] == 0:
            return
        k = anchors.shape[0]
        small = labels.astype(np.uint8 if k <= 256 else np.uint16 if k <= 65536 else np.int32)
        key = ("labels", token, offset, labels.shape[0])
        with self._lock:
            old = self._items.get(key)
            if old is None and not self._reserve(token, budget, small.nbytes):
                return
            if token in self._bytes:
                self._items[key] = ((np.array(anchors, copy=True), small), small.nbytes)

    def drop(self, token: str) -> None:
        with self._lock:
            for key in [key for key in self._items if key[1] == token]:
                del self._items[key]
            self._bytes.pop(token, None)
            self._dropped[token] = None
            while len(self._dropped) > self.DROPPED_KEPT:
                del self._dropped[next(iter(self._dropped))]

    def nbytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._items.values())


#: This process's cache of chunk layouts and labels.
CACHE = ChunkCache()


def cached_bytes() -> int:
    """Bytes of chunk layouts and labels cached in this process."""
    return CACHE.nbytes()


def drop_layouts(token: str) -> None:
    """Drops what a fit or search cached in this process (run on every Dask worker when it ends)."""
    CACHE.drop(token)


def task_objective_batch(
    block: Any,
    offset: int,
    cands: np.ndarray,
    objective: str,
    thr: float,
    iou_thr: float,
    iou_weighted: bool,
    threads: int,
    cache: Optional[Tuple[str, int]] = None,
    ws: Optional[WeightScale] = None,
) -> Partial:
    """The chunk's totals of the objective for every candidate; with ``cache`` (a search's token
    and budget in bytes), on the chunk's cached layout when there is room for it. ``ws``: the
    weights' scale (None: unit weights)."""
    layout = CACHE.layout(cache[0], cache[1], offset, block, threads, ws) if cache is not None else None
    rows = None if layout is not None else chunk_rows(block).astype(np.float64, copy=False)
    weights = None if ws is None or layout is not None else chunk_weights(block, ws)
    out = _core._chunk_objective_batch(
        wh=rows,
        layout=layout,
        candidates=cands,
        objective=objective,
        thr=thr,
        iou_thr=iou_thr,
        iou_weighted=iou_weighted,
        n_threads=threads,
        weights=weights,
        top=1.0 if ws is None else ws.scaled,
    )
    return {"totals": _u128(out)}


def task_weight_total(block: Any, offset: int, ws: WeightScale) -> Partial:
    """The chunk's fixed-point total weight (the objectives' denominator is the sum)."""
    return {"totals": _u128(_core._chunk_weight_total(weights=chunk_weights(block, ws), top=ws.scaled))}


def weight_total(ex: Executor, n: int, ws: Optional[WeightScale]) -> int:
    """The fixed-point total weight of all chunks, sum of round(w / top * 2**50): one pass
    (n * 2**50 for unit weights, without one)."""
    if ws is None:
        return n * FIX_SCALE
    return int(ex.run(task_weight_total, (ws,), merge_totals)["totals"][0])


def merge_totals(a: Partial, b: Partial) -> Partial:
    return {"totals": [x + y for x, y in zip(a["totals"], b["totals"])]}


def objective_values(
    ex: Executor,
    cands: np.ndarray,
    n: int,
    objective: str,
    thr: float,
    iou_thr: float,
    iou_weighted: bool,
    cache: Optional[Tuple[str, int]] = None,
    ws: Optional[WeightScale] = None,
    denom_fixed: Optional[int] = None,
) -> np.ndarray:
    """The objective of every candidate set (count, k, 2) on the rows: one pass (with ``cache``,
    a search's token and budget, on the chunks' cached layouts). Weighted rows (``ws``) need
    their fixed-point total weight, ``denom_fixed`` (weight_total)."""
    threads = getattr(ex, "task_threads", 1)
    part = ex.run(
        task_objective_batch,
        (np.ascontiguousarray(cands, dtype=np.float64), objective, thr, iou_thr, iou_weighted, threads, cache, ws),
        merge_totals,
    )
    denom = float(n * FIX_SCALE if denom_fixed is None else denom_fixed)
    return np.array([float(t) / denom for t in part["totals"]])


@dataclass(frozen=True)
class SearchArgs:
    """The checked options of the mutation search (as fastanchor.evolve_anchors takes them)."""

    thr: float
    generations: int
    mutation_prob: float
    sigma: float
    min_size: float
    strategy: str
    batch: int
    objective: str
    iou_thr: float
    iou_weighted: bool
    budget: int


def check_search(
    thr: Any,
    generations: Any,
    mutation_prob: Any,
    sigma: Any,
    min_size: Any,
    strategy: Any,
    batch: Any,
    objective: Any,
    iou_thr: Any,
    iou_weighted: Any,
    budget: Any,
    callback: Any,
) -> SearchArgs:
    from ._evolve import _check_objective_args, _check_search_args
    from ._fitness import as_thr

    t = as_thr(thr)
    generations, mutation_prob, sigma, min_size, batch = _check_search_args(
        generations, mutation_prob, sigma, min_size, strategy, batch, callback
    )
    objective, iou_thr, iou_weighted, budget = _check_objective_args(objective, iou_thr, iou_weighted, budget)
    return SearchArgs(
        t, generations, mutation_prob, sigma, min_size, strategy, batch, objective, iou_thr, iou_weighted, budget
    )


def evolve(
    ex: Executor,
    n: int,
    anchors: np.ndarray,
    s: SearchArgs,
    seed: int,
    progress: bool,
    callback: Any,
    desc: str,
    cache_bytes: int = 0,
    ws: Optional[WeightScale] = None,
) -> Any:
    """The in-memory search (fastanchor.evolve_anchors without scale or grid) with its candidates
    scored by passes over the chunks: the same EvolveResult, bit for bit. Each process keeps the
    layouts of the chunks it scores, up to ``cache_bytes`` (when the executor can drop them at the
    end: ``ex.release``). ``ws``: the weights' scale, for weighted rows (WeightedBlock chunks)."""
    from ._evolve import RESTART_LENGTH, RESTART_SIGMA, _EvolveProgress, _extra_generations, _search_result

    extra = _extra_generations(s.budget, n, s.generations)
    bar = _EvolveProgress(s.generations + extra, desc) if progress else None

    release = getattr(ex, "release", None)
    cache = (uuid.uuid4().hex, cache_bytes) if cache_bytes > 0 and release is not None else None

    denom = None if ws is None else weight_total(ex, n, ws)

    def score(cands: np.ndarray) -> np.ndarray:
        return objective_values(ex, cands, n, s.objective, s.thr, s.iou_thr, s.iou_weighted, cache, ws, denom)

    try:
        out = _core._evolve_scored(
            init=np.ascontiguousarray(anchors, dtype=np.float64),
            score=score,
            thr=s.thr,
            generations=s.generations,
            mutation_prob=s.mutation_prob,
            sigma=s.sigma,
            min_size=s.min_size,
            strategy=s.strategy,
            batch=s.batch,
            seed=seed,
            progress=bar,
            callback=callback,
            objective=s.objective,
            iou_thr=s.iou_thr,
            iou_weighted=s.iou_weighted,
            extra_generations=extra,
            restart_length=RESTART_LENGTH,
            restart_sigma=RESTART_SIGMA,
        )
    finally:
        if bar is not None:
            bar.close()
        if cache is not None and release is not None:
            release(cache[0])
    _, bpr, aat, iou = fitness(ex, out["anchors"], s.thr, n, ws)
    return _search_result(out, bpr, aat, iou, s.objective)


# --------------------------------------------------------------------------------------------
# autoanchor: the small boxes counted and dropped chunk by chunk, then k-means and the search on
# the kept rows.


def merge_small(a: Partial, b: Partial) -> Partial:
    return {"small": a["small"] + b["small"], "kept": {**a["kept"], **b["kept"]}}


def task_scan_small(block: Any, offset: int, name: str, warn_below: float, drop_below: float) -> Partial:
    """task_scan and the small and kept boxes' counts in one pass over the chunk: autoanchor's
    first pass."""
    scan, small = _scanned(chunk_rows(block), offset, name, warn_below, drop_below)
    return {"scan": scan, "small": small}


def merge_scan_small(a: Partial, b: Partial) -> Partial:
    return {"scan": merge_scan(a["scan"], b["scan"]), "small": merge_small(a["small"], b["small"])}


def task_scan_small_weighted(block: Any, offset: int, name: str, warn_below: float, drop_below: float) -> Partial:
    """task_scan_small of a WeightedBlock, and the check of its weights (task_scan_weighted's),
    with the largest, smallest positive and zero count of the kept rows' weights ("kept"), and of
    all ("all": the in-memory check of sample_weight comes before any box is dropped)."""
    rows = chunk_rows(block)
    scan, small = _scanned(rows, offset, name, warn_below, drop_below)
    every, kept = _weight_stats(block, offset, rows.shape[0], kept_mask(rows, drop_below))
    return {"scan": scan, "small": small, "all": every, "kept": kept}


def merge_scan_small_weighted(a: Partial, b: Partial) -> Partial:
    out = merge_scan_small(a, b)
    out["all"] = merge_weight_stats(a["all"], b["all"])
    out["kept"] = merge_weight_stats(a["kept"], b["kept"])
    return out


class KeptWeights(OnDemand):
    """The weights of a chunk's rows with a side of at least ``drop_below`` (``rows``: the chunk's
    rows, read once with KeptOnDemand's through LoadedOnce)."""

    def __init__(self, rows: Any, weights: Any, drop_below: float, count: int) -> None:
        self.rows, self.weights, self.drop_below, self.count = rows, weights, drop_below, count

    def __len__(self) -> int:
        return self.count

    def load(self) -> np.ndarray:
        w = raw_weights(WeightedBlock(None, self.weights))
        if self.count == w.shape[0]:
            return w
        return np.ascontiguousarray(w[kept_mask(chunk_rows(self.rows), self.drop_below)])


def task_take_pairs(block: Any, offset: int, index: Any) -> Dict[int, Tuple[np.ndarray, np.ndarray]]:
    """task_take of a WeightedBlock: the chunk's rows among the sorted row indices ``index`` (all for
    None), and their weights (float64)."""
    rows, w = chunk_rows(block), raw_weights(block)
    if index is not None:
        at = chunk_positions(index, offset, rows.shape[0])
        rows, w = rows[at], w[at]
    return {offset: (rows, w)}


def taken_pairs(parts: Dict[int, Tuple[np.ndarray, np.ndarray]]) -> Tuple[np.ndarray, np.ndarray]:
    """The rows and weights a task_take_pairs pass gathered, in row order."""
    rows = taken_rows({o: r for o, (r, _) in parts.items()})
    return rows, np.concatenate([parts[o][1] for o in sorted(parts)]).astype(np.float64, copy=False)


def take_pairs(ex: Executor, index: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """The rows and weights of an executor of weighted chunks at the sorted row indices ``index``
    (all for None): one pass."""
    return taken_pairs(ex.run(task_take_pairs, (None if index is None else index_per_chunk(index),), merge_take))


def task_many(block: Any, offset: int, tasks: Sequence[Tuple[Callable[..., Any], Tuple[Any, ...]]]) -> List[Any]:
    """Several tasks on one chunk, each part of it read at most once."""
    block = read_once(block)
    return [task(block, offset, *args) for task, args in tasks]


def merge_many(merges: Sequence[Callable[[Any, Any], Any]], a: List[Any], b: List[Any]) -> List[Any]:
    return [m(x, y) for m, x, y in zip(merges, a, b)]


def task_kept(
    block: Any,
    offset: int,
    task: Callable[..., Partial],
    drop_below: float,
    kept: Dict[int, Tuple[int, int]],
    *args: Any,
) -> Partial:
    """``task`` on the chunk's rows with a side of at least ``drop_below``, at their offset among
    the kept rows (``kept``: per chunk offset, the kept rows' offset and count; read and filtered
    only if the task needs them)."""
    kept_offset, count = kept[offset]
    if isinstance(block, WeightedBlock):  # the kept rows with their weights, the rows read once
        rows = LoadedOnce(block.rows) if isinstance(block.rows, OnDemand) else block.rows
        kept_block = WeightedBlock(
            KeptOnDemand(rows, drop_below, count), KeptWeights(rows, block.weights, drop_below, count)
        )
        return task(kept_block, kept_offset, *args)
    return task(KeptOnDemand(block, drop_below, count), kept_offset, *args)


def task_take(block: Any, offset: int, index: Any) -> Dict[int, np.ndarray]:
    """The chunk's rows among the sorted row indices ``index`` (an array or a RowIndex; all of them
    for None)."""
    rows = chunk_rows(block)
    if index is not None:
        rows = rows[chunk_positions(index, offset, rows.shape[0])]
    return {offset: rows}


def merge_take(a: Dict[int, np.ndarray], b: Dict[int, np.ndarray]) -> Dict[int, np.ndarray]:
    return {**a, **b}


class KeptRows(RowSubset):
    """An executor over the rows of another that have a side of at least ``drop_below`` (in their
    order): every task sees a chunk's kept rows at their offset among all kept rows."""

    def __init__(self, ex: Executor, drop_below: float, kept: Dict[int, int]) -> None:
        super().__init__(ex, kept, task_kept, drop_below)
        self.drop_below = drop_below

    def take(self, index: Optional[np.ndarray]) -> np.ndarray:
        return taken_rows(self.run(task_take, (None if index is None else index_per_chunk(index),), merge_take))


def taken_rows(parts: Dict[int, np.ndarray]) -> np.ndarray:
    """The rows a take pass gathered, in row order (float64 if any chunk is)."""
    rows = [chunk_rows(parts[o]) for o in sorted(parts)]
    f64 = any(r.dtype == np.float64 for r in rows)
    return np.ascontiguousarray(np.concatenate([r.astype(np.float64) if f64 else r for r in rows]))


def read_once(block: Any) -> Any:
    """A chunk (or a WeightedBlock's rows and weights) that several tasks read at most once."""
    if isinstance(block, OnDemand):
        return LoadedOnce(block)
    if isinstance(block, WeightedBlock):
        rows, w = block.rows, block.weights
        return WeightedBlock(
            LoadedOnce(rows) if isinstance(rows, OnDemand) else rows, LoadedOnce(w) if isinstance(w, OnDemand) else w
        )
    return block


def task_pair(block: Any, offset: int, first: Tuple[Callable[..., Any], Tuple[Any, ...]], second: Any) -> Any:
    """Two tasks on one chunk, read at most once."""
    block = read_once(block)
    return first[0](block, offset, *first[1]), second[0](block, offset, *second[1])


def merge_pair(merges: Tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]], a: Any, b: Any) -> Any:
    return merges[0](a[0], b[0]), merges[1](a[1], b[1])


class Rider:
    """An executor that runs one more task (the rider) along with the first pass asked of it, so
    that its result costs no pass (a round trip to every worker, on Dask) of its own: ``result``
    after that."""

    def __init__(self, ex: Executor, task: Callable[..., Any], args: Tuple[Any, ...], merge: Callable[..., Any]):
        self.ex = ex
        self.n = ex.n
        self.task_threads = getattr(ex, "task_threads", 1)
        self.pending: Optional[Tuple[Any, ...]] = (task, args, merge)
        self.result: Any = None

    @property
    def release(self) -> Optional[Callable[[str], None]]:
        return getattr(self.ex, "release", None)

    def run(self, task: Callable[..., Any], args: Tuple[Any, ...], merge: Callable[[Any, Any], Any]) -> Any:
        if self.pending is None:
            return self.ex.run(task, args, merge)
        r_task, r_args, r_merge = self.pending
        self.pending = None
        both = self.ex.run(
            task_pair, ((task, tuple(args)), (r_task, tuple(r_args))), functools.partial(merge_pair, (merge, r_merge))
        )
        if both is None:  # no chunks
            return None
        out, self.result = both
        return out


#: The IoU objectives the report gives for every anchor set, besides YOLOv5's metrics.
REPORT_OBJECTIVES = ("avg_iou", "recall")


def task_report(
    block: Any, offset: int, anchor_sets: np.ndarray, thr: float, iou_thr: float, iou_weighted: bool
) -> Partial:
    """YOLOv5's metrics (as task_fitness) and the IoU objectives' totals of several anchor sets on
    the chunk's rows (the core's ChunkReport: 2^16 rows at a time, in buffers it reuses). Kept rows
    are not copied out of their chunk: the core skips the others as it reads it."""
    skip_below = 0.0
    if isinstance(block, KeptOnDemand):
        block, skip_below = block.block, block.drop_below
    got = _core._chunk_report(
        wh=chunk_rows(block),
        anchor_sets=anchor_sets,
        thr=thr,
        iou_thr=iou_thr,
        iou_weighted=iou_weighted,
        objectives=REPORT_OBJECTIVES,
        skip_below=skip_below,
    )
    out: Partial = {"metrics": [_u128(m) for m in got["metrics"]]}
    out.update({name: _u128(got[name]) for name in REPORT_OBJECTIVES})
    return out


def merge_report(a: Partial, b: Partial) -> Partial:
    return {
        "metrics": [[x + y for x, y in zip(p, q)] for p, q in zip(a["metrics"], b["metrics"])],
        **{name: [x + y for x, y in zip(a[name], b[name])] for name in REPORT_OBJECTIVES},
    }


def report(
    ex: Executor, anchor_sets: Sequence[np.ndarray], n: int, thr: float, iou_thr: float, iou_weighted: bool
) -> List[Tuple[Tuple[float, float, float, float], Dict[str, float]]]:
    """For every anchor set: (fitness, bpr, aat, avg_iou) as anchor_fitness gives them, and every
    objective's value as anchor_objective gives it; one pass."""
    sets = np.ascontiguousarray(np.stack(anchor_sets), dtype=np.float64)
    part = ex.run(task_report, (sets, thr, iou_thr, iou_weighted), merge_report)
    denom = float(n * FIX_SCALE)
    out = []
    for i, sums in enumerate(part["metrics"]):
        metrics = finish_fitness({"sums": sums}, n)
        objectives = {"fitness": metrics[0]}
        objectives.update({name: float(part[name][i]) / denom for name in REPORT_OBJECTIVES})
        out.append((metrics, objectives))
    return out


def report_weighted(
    ex: Executor,
    anchor_sets: Sequence[np.ndarray],
    n: int,
    thr: float,
    iou_thr: float,
    iou_weighted: bool,
    ws: WeightScale,
) -> List[Tuple[Tuple[float, float, float, float], Dict[str, float]]]:
    """report() of weighted rows (``ws``: their scale): the metrics as the weighted anchor_fitness
    gives them (task_fitness), the objectives as the weighted search scores them
    (task_objective_batch, over the fixed-point total weight); one pass of several tasks."""
    sets = np.ascontiguousarray(np.stack(anchor_sets), dtype=np.float64)
    threads = getattr(ex, "task_threads", 1)
    tasks: List[Tuple[Callable[..., Any], Tuple[Any, ...]]] = [(task_weight_total, (ws,))]
    merges: List[Callable[[Any, Any], Any]] = [merge_totals]
    for anchors in sets:
        tasks.append((task_fitness, (anchors, thr, ws)))
        merges.append(merge_fitness)
    for name in REPORT_OBJECTIVES:
        tasks.append((task_objective_batch, (sets, name, thr, iou_thr, iou_weighted, threads, None, ws)))
        merges.append(merge_totals)
    parts = ex.run(task_many, (tasks,), functools.partial(merge_many, merges))
    denom = float(int(parts[0]["totals"][0]))
    out = []
    for i in range(len(sets)):
        metrics = finish_fitness(parts[1 + i], n, sets.shape[1])
        objectives = {"fitness": metrics[0]}
        for j, name in enumerate(REPORT_OBJECTIVES):
            objectives[name] = float(parts[1 + len(sets) + j]["totals"][i]) / denom
        out.append((metrics, objectives))
    return out


def autoanchor(
    ex: Executor,
    k: int,
    s: SearchArgs,
    n_init: Any,
    tol: Any,
    seed: Any,
    init_sample: int,
    search_sample: int,
    progress: bool,
    callback: Any,
    take_rows: Callable[[Optional[np.ndarray]], np.ndarray],
    desc: str,
    cache_bytes: int = 0,
    threads: Optional[int] = None,
    gen: Optional[np.random.Generator] = None,
    fit_all: Optional[Callable[[Optional[np.ndarray], np.random.Generator, int], np.ndarray]] = None,
    stacklevel: int = 3,
    weighted: bool = False,
) -> Any:
    """fastanchor.autoanchor (without scale or grid) by passes over the chunks: from the
    same seed, ``init_sample`` and ``search_sample``, its result bit for bit. On more kept boxes
    than ``init_sample``, the in-memory core fits the sample (gathered by ``take_rows``) and the
    chunked k-means goes on from its anchors, as in memory; on more than ``search_sample``, the
    search runs in memory on its sample (gathered likewise), else by passes over the chunks. The
    in-memory steps run on ``threads`` threads (None: all).

    ``gen``: the generator of the draws, made from ``seed`` when None. ``fit_all(start, gen,
    n_init)``: the k-means of all kept rows without passes over the chunks (rows in memory), from
    the sample's anchors ``start``, or, with ``start`` None (no sample, or one with fewer than
    ``k`` distinct boxes), ``n_init`` runs seeded from ``gen``, as the in-memory autoanchor runs
    them; it returns the anchors. ``stacklevel``: the small boxes' warning's, the caller's caller
    by default. ``weighted``: the executor's chunks are WeightedBlocks (the samples are gathered
    with their weights by passes over the chunks)."""
    import warnings

    from ._evolve import (
        DROP_BELOW,
        WARN_BELOW,
        AutoAnchorResult,
        _evolve,
        _layout,
        sampled_start,
        search_index,
        search_rows,
    )
    from ._fitness import FitnessResult
    from ._validation import as_int, resolve_seed, resolve_threads

    k, update, n_init, max_iter, tol = check_fit_options(k, "median", n_init, 300, tol)
    init_sample = as_int(init_sample, "init_sample", minimum=1)
    search_sample = as_int(search_sample, "search_sample", minimum=1)
    if weighted:  # checks every row, then every weight
        first = ex.run(task_scan_small_weighted, ("wh", WARN_BELOW, DROP_BELOW), merge_scan_small_weighted)
    else:  # checks every row
        first = ex.run(task_scan_small, ("wh", WARN_BELOW, DROP_BELOW), merge_scan_small)
    sc, counts = as_scan(None if first is None else first["scan"], "wh"), first["small"]
    ws: Optional[WeightScale] = None
    if weighted:
        checked_weights(first["all"])
    n, n_small = sc.n, int(counts["small"])
    kept = int(sum(counts["kept"].values()))
    n_dropped = n - kept
    if n_small:
        warnings.warn(
            f"{n_small} of {n} boxes are smaller than {WARN_BELOW:g} pixels in width or height (extremely small "
            f"objects); the {n_dropped} below {DROP_BELOW:g} pixels on both sides are dropped",
            UserWarning,
            stacklevel=stacklevel,
        )
    if n_dropped == n:
        raise ValueError(f"all {n} boxes are smaller than {DROP_BELOW:g} pixels on both sides: nothing to fit")
    if weighted:
        if not first["kept"]["top"] > 0:
            raise ValueError("every box with a positive weight is smaller than 2 pixels on both sides")
        ws = checked_weights(first["kept"])  # the kept boxes' weights, as in memory
    positive: Optional[Dict[int, int]] = dict(first["kept"]["positive"]) if weighted else None
    if n_dropped:
        kex = KeptRows(ex, DROP_BELOW, counts["kept"])
        ex, take_rows = kex, kex.take
        if positive is not None:  # per chunk offset among the kept rows
            positive = {kex.subset[offset][0]: count for offset, count in positive.items()}
    # (the layout of all rows holds the kept ones' values)
    sc = Scan(kept, sc.f32, sc.layout, sc.hi, positive)
    pairs_of = ex  # (the executor whose chunks a weighted take reads)

    def take_weighted(index: Optional[np.ndarray]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        if not weighted:
            return take_rows(index), None
        return take_pairs(pairs_of, index)

    if gen is None:
        gen = np.random.default_rng(resolve_seed(seed))
    init: Any = "k-means++"
    windows, rider = None, None
    start: Optional[np.ndarray] = None  # the sample's anchors
    if kept > init_sample:
        sampled: List[np.ndarray] = []

        def take(index: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
            rows, w = take_weighted(index)
            sampled.append(rows)
            return rows, w

        start = sampled_start(kept, take, k, n_init, tol, gen, init_sample, resolve_threads(threads), progress)
        if start is None and fit_all is None:
            raise ValueError(
                f"k={k} is larger than the number of distinct boxes in the sample of {init_sample} kept rows: "
                "pass a larger init_sample"
            )
        if start is not None and fit_all is None:
            init, n_init = start, 1  # one run on all rows, from the sample's anchors
            windows = sample_windows(sampled[0], start, sc.layout, kept)
            # The fit from given anchors draws nothing: the search sample is drawn now, as in
            # memory after the fit, and its rows are gathered by the fit's first pass.
            s_index = search_index(kept, gen, search_sample)
            if s_index is not None:
                rider = Rider(ex, task_take_pairs if weighted else task_take, (index_per_chunk(s_index),), merge_take)
        del sampled
    if fit_all is not None:
        km_anchors = fit_all(start, gen, n_init)
    else:
        km, _ = fit(
            rider or ex,
            sc,
            k,
            init,
            update,
            max_iter,
            tol,
            gen,
            init_sample,
            progress,
            take_rows,
            desc,
            cache_bytes,
            n_init,
            with_avg_iou=False,  # (n_init runs still compare theirs; the reports give the anchors')
            windows=windows,
            ws=ws,
        )
        km_anchors = km.anchors
    s_rows: Optional[np.ndarray]
    s_weights: Optional[np.ndarray] = None
    if rider is not None:
        if weighted:
            s_rows, s_weights = taken_pairs(rider.result)
        else:
            s_rows = taken_rows(rider.result)
    else:
        _, s_rows, s_weights = search_rows(kept, take_weighted, gen, search_sample)
    if s_weights is not None and not s_weights.sum() > 0:
        s_rows = s_weights = None  # a sample without weight: the search runs on all boxes, as in memory
    if s_rows is None:
        ev = evolve(ex, kept, km_anchors, s, resolve_seed(gen), progress, callback, desc, cache_bytes, ws)
    else:  # the search on its sample, in memory (as fastanchor.autoanchor runs it)
        threads = resolve_threads(threads)
        ev = _evolve(
            km_anchors,
            s_rows,
            s_weights,
            s.thr,
            s.generations,
            s.mutation_prob,
            s.sigma,
            s.min_size,
            s.strategy,
            s.batch,
            resolve_seed(gen),
            threads,
            progress,
            callback,
            s.objective,
            s.iou_thr,
            s.iou_weighted,
            s.budget,
            layout=_layout(s_rows, s_weights, threads),
        )
        del s_rows, s_weights
    if ws is not None:
        (km_m, km_obj), (ev_m, ev_obj) = report_weighted(
            ex, [km_anchors, ev.anchors], kept, s.thr, s.iou_thr, s.iou_weighted, ws
        )
    else:
        (km_m, km_obj), (ev_m, ev_obj) = report(ex, [km_anchors, ev.anchors], kept, s.thr, s.iou_thr, s.iou_weighted)
    return AutoAnchorResult(
        anchors=ev.anchors,
        kmeans_anchors=km_anchors,
        kmeans=FitnessResult(*km_m, thr=s.thr),
        evolved=FitnessResult(*ev_m, thr=s.thr),
        history=ev.history,
        n_boxes=kept,
        n_dropped=n_dropped,
        n_small=n_small,
        objective=s.objective,
        kmeans_objectives=km_obj,
        evolved_objectives=ev_obj,
        scale=None,
    )
