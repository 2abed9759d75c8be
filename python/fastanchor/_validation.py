"""Argument checking shared by the public functions.

Python owns validation: the compiled core assumes its inputs are already checked. Every
message says what was wrong and where (which row, which value).
"""

from __future__ import annotations

import numbers
import operator
import zlib
from typing import Any, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

from . import _core

#: Smallest and largest box side fastanchor accepts. Inside this range every product the core
#: forms (areas, and the cross products of the division-free comparison, of order side**4)
#: stays a normal double, far from overflow and underflow, so results are exact; outside it a
#: ValueError is raised instead of returning inf or NaN.
MIN_SIDE = 1e-30
MAX_SIDE = 1e30

SeedLike = Union[None, int, np.integer, np.random.Generator, np.random.SeedSequence]


def as_real_array(x: Any, name: str) -> np.ndarray:
    """``x`` as an ndarray of a real dtype (bool, complex, object and strings are refused)."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be an array of real numbers: {exc}") from None
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def float32_output(x1: Any, x2: Any, names: Tuple[str, str]) -> bool:
    """The output dtype rule of the pairwise IoU functions (``wh_iou``, ``box_iou``): float32 when
    both inputs are float32 arrays, else float64. Both arguments are checked for a real dtype
    (a ``TypeError`` naming the argument otherwise), in order."""
    dtypes = [as_real_array(x, name).dtype for x, name in zip((x1, x2), names)]
    return all(d == np.float32 for d in dtypes)


def _wh_shape(arr: np.ndarray, name: str, max_rows: Optional[int]) -> None:
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2) of (width, height), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: at least one box is needed")
    if max_rows is not None and arr.shape[0] > max_rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows: at most {max_rows} are supported")


def _check_sides(values: np.ndarray, shown: np.ndarray, name: str, offset: int = 0) -> None:
    """Raises the ValueError of as_wh when a row of ``values`` (rows ``offset``... of the caller's
    array ``shown``) is not finite and within [MIN_SIDE, MAX_SIDE]."""
    # Fast path: two reductions (a NaN makes both comparisons False, an inf fails the second).
    # Compared as Python floats: against a float32 array numpy would round the bounds to float32
    # (NEP 50), and float32(1e30) is above 1e30.
    if float(values.min()) >= MIN_SIDE and float(values.max()) <= MAX_SIDE:
        return
    values = values.astype(np.float64, copy=False)  # float32: a block of CHECK_ROWS rows at most
    with np.errstate(all="ignore"):
        ok = np.isfinite(values) & (values >= MIN_SIDE) & (values <= MAX_SIDE)
    row_ok = ok.all(axis=1)
    if not row_ok.all():
        bad = np.flatnonzero(~row_ok)
        first = offset + int(bad[0])
        raise ValueError(
            f"{name} has {bad.size} bad row{'s' if bad.size > 1 else ''}: every width and height must be "
            f"finite and strictly positive (within [{MIN_SIDE:g}, {MAX_SIDE:g}]); the first is row {first}: "
            f"{shown[first].tolist()}"
        )


def as_wh(x: Any, name: str = "wh", *, max_rows: Optional[int] = None) -> np.ndarray:
    """Validated (N, 2) float64 C-contiguous array of box widths and heights.

    Accepts any real dtype, any strides and nested lists. Raises ValueError when the array is
    not (N, 2), is empty, or has a row that is not finite and strictly positive within
    [MIN_SIDE, MAX_SIDE]; the message counts the bad rows and shows the first.
    """
    arr = as_real_array(x, name)
    _wh_shape(arr, name, max_rows)
    # Always a private copy: the core reads it with the GIL released, so a caller's array that
    # another thread changes meanwhile (or a callback changes) can neither race with the kernel
    # nor slip values past this check. The copy costs a fraction of any kernel's time.
    out = np.array(arr, dtype=np.float64, order="C", copy=True)
    _check_sides(out, arr, name)
    return out


#: Rows checked at a time by as_wh_rows (a few MB of temporaries, whatever N is).
CHECK_ROWS = 1 << 18


def as_wh_rows(x: Any, name: str = "wh") -> Tuple[np.ndarray, Optional[int]]:
    """(N, 2) box widths and heights for a kernel that reads them in place (kmeans_iou), and a
    checksum of them when they are the caller's own array. That is the case when it is a
    C-contiguous, aligned float32 or float64 array in native byte order: it is checked block by
    block with no copy. Anything else (a misaligned view included: the core loads its values as
    floats and doubles) is made a private copy by as_wh (checksum None). The same checks and
    messages as as_wh. See unchanged_since for the checksum's use."""
    arr = as_real_array(x, name)
    if (
        arr.dtype not in (np.dtype(np.float32), np.dtype(np.float64))
        or not arr.flags.c_contiguous
        or not arr.flags.aligned
    ):
        return as_wh(arr, name), None
    _wh_shape(arr, name, None)
    for start in range(0, arr.shape[0], CHECK_ROWS):
        _check_sides(arr[start : start + CHECK_ROWS], arr, name, start)
    return arr, _checksum(arr)


def _checksum(arr: np.ndarray) -> int:
    return zlib.crc32(memoryview(arr).cast("B"))


def unchanged_since(arr: np.ndarray, checksum: Optional[int], name: str, function: str) -> None:
    """Raises RuntimeError when an array read in place (as_wh_rows) no longer has the checksum it
    had when it was checked: another thread or a callback changed it while the core read it, so
    the result would mix old and new values (or NaN). CRC-32 over the bytes: about 4 GB/s."""
    if checksum is not None and _checksum(arr) != checksum:
        raise RuntimeError(
            f"{name} changed while {function} was reading it: a C-contiguous float32/float64 array is read in "
            f"place, not copied, so the result would mix old and new values. Do not modify it during the call "
            f"(or pass a copy)."
        )


#: Weights whose largest value lies outside [2**-WEIGHT_EXP, 2**WEIGHT_EXP] are scaled by a power of
#: two (exactly: every result is unchanged) so that it lies in [0.5, 1): then no product of a weight
#: with a box side (<= MAX_SIDE) or a squared distance overflows, and tiny (even subnormal) weights
#: keep their full precision.
WEIGHT_EXP = 100


def as_weights(sample_weight: Any, n: int) -> Optional[np.ndarray]:
    """Validated (N,) float64 weights, or None. Finite, non-negative, with a positive sum.

    Only the ratios of the weights matter; extreme scales are brought into range by a power of two
    (see ``WEIGHT_EXP``). A positive weight that would underflow to 0 then is kept at the smallest
    positive double, so it stays positive (it still gets no measurable share of any sum)."""
    if sample_weight is None:
        return None
    arr = as_real_array(sample_weight, "sample_weight")
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"sample_weight must have shape ({n},) to match the boxes, got shape {arr.shape}")
    with np.errstate(all="ignore"):
        out = np.array(arr, dtype=np.float64, order="C", copy=True)  # private, as in as_wh
    bad = weight_bad_values(out)
    if bad.size:
        first = int(bad[0])
        raise ValueError(
            f"sample_weight has {bad.size} bad value{'s' if bad.size > 1 else ''}: weights must be finite and "
            f"non-negative; the first is index {first}: {arr[first].item()!r}"
        )
    top = float(out.max())
    if not top > 0:
        raise ValueError("sample_weight must have at least one positive weight")
    return scale_weights(out, top)


def weight_bad_values(arr: np.ndarray) -> np.ndarray:
    """The indices of the values of a weights array that are not finite and non-negative."""
    with np.errstate(all="ignore"):
        return np.flatnonzero(~(np.isfinite(arr) & (arr >= 0)))


def scale_weights(out: np.ndarray, top: float) -> np.ndarray:
    """Valid float64 weights (``out``, changed in place or returned anew) brought into range when
    ``top``, the largest weight of all (also of other chunks of the same weights), lies outside
    [2**-WEIGHT_EXP, 2**WEIGHT_EXP]: scaled by a power of two, and a positive weight that would
    underflow to 0 kept at the smallest positive double."""
    if not 2.0**-WEIGHT_EXP <= top <= 2.0**WEIGHT_EXP:
        exponent = int(np.frexp(top)[1])
        positive = out > 0
        with np.errstate(under="ignore"):
            out = np.ldexp(out, -exponent)
        out[positive & (out == 0)] = np.nextafter(0.0, 1.0)
    return out


def scaled_top(top: float) -> float:
    """The largest weight after scale_weights, for the largest weight ``top``."""
    return float(scale_weights(np.array([top], dtype=np.float64), top)[0])


def as_int(x: Any, name: str, *, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    """An integer argument (bool refused), optionally with bounds."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(x).__name__} {x!r}")
    value = operator.index(x)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


#: The largest count the core takes as a C int (iterations, restarts): a clear ValueError beyond it.
INT_MAX = 2**31 - 1
#: The most anchors (k) any function takes: the core counts anchors in C ints (boxes in 64-bit
#: integers, without a limit). Checked before any copy of the input is made.
MAX_ANCHORS = INT_MAX


def as_float(x: Any, name: str) -> float:
    """A finite real argument."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__} {x!r}")
    value = float(x)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def as_positive(x: Any, name: str) -> float:
    """A finite, strictly positive real argument."""
    v = as_float(x, name)
    if v <= 0:
        raise ValueError(f"{name} must be positive, got {x!r}")
    return v


def resolve_threads(n_threads: Any) -> int:
    """None: all threads OpenMP would use (honours OMP_NUM_THREADS); a positive count as given;
    a negative one counts back from the maximum (-1 = all); 0 is an error."""
    maximum = _core.max_threads()
    if n_threads is None:
        return maximum
    n = as_int(n_threads, "n_threads")
    if n == 0:
        raise ValueError("n_threads must not be 0: use None or -1 for all threads, or a positive count")
    if n < 0:
        resolved = maximum + 1 + n
        if resolved < 1:
            raise ValueError(f"n_threads={n} leaves no thread: this machine allows at most {maximum}")
        return resolved
    return min(n, 4096)


def resolve_seed(seed: SeedLike) -> int:
    """A 64-bit seed for the core from an int, a numpy Generator or SeedSequence, or None (fresh
    entropy). A Generator is advanced by one draw, as numpy's own functions would."""
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"seed must be an int, a numpy Generator or None, got {seed!r}")
    if seed is None or isinstance(seed, (numbers.Integral, np.random.SeedSequence)):
        try:
            gen = np.random.default_rng(seed)
        except ValueError as exc:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}") from exc
    elif isinstance(seed, np.random.Generator):
        gen = seed
    else:
        raise TypeError(f"seed must be an int, a numpy Generator or None, got {type(seed).__name__}")
    return int(gen.integers(0, 2**64, dtype=np.uint64))


def rows_where(rows: np.ndarray, mask: npt.ArrayLike) -> np.ndarray:
    """The C-contiguous copy of the (N, 2) rows where ``mask`` is true, each row moved as one
    item: numpy's boolean indexing of a 2-D array costs about 25 times more (6 s against 0.24 s
    for 10^8 float32 rows)."""
    rows = np.ascontiguousarray(rows)
    item = np.dtype((np.void, 2 * rows.dtype.itemsize))
    return rows.view(item).ravel()[mask].view(rows.dtype).reshape(-1, 2)


def sample_index(gen: np.random.Generator, n: int, m: int) -> np.ndarray:
    """Sorted int64 indices of a uniform random m-subset of range(n) (0 < m < n), drawn from gen
    in O(m) memory: the first m distinct values of a sequence of uniform draws (any m-subset is as
    likely as any other). ``Generator.choice(n, m, replace=False)`` holds a permutation of all n
    when m > n / 50: 8 bytes per row. Where m > n / 8 a permutation is O(m) too, and fewer draws."""
    if n <= 8 * m:
        return _core._sorted_indices(gen.permutation(n)[:m])
    chosen = np.empty(0, dtype=np.int64)
    while chosen.size < m:
        need = m - chosen.size
        seq = np.concatenate([chosen, gen.integers(0, n, size=need + need // 8 + 64, dtype=np.int64)])
        # the distinct values in the order of the sequence (chosen stays in front), by the core's
        # hash set: a fifth of the time of numpy's unique, which sorts the whole sequence
        chosen = _core._first_distinct(seq, m)
    return _core._sorted_indices(chosen)  # a radix sort: a fifth of numpy's time


def distinct_rows_at_least(wh: np.ndarray, k: int) -> int:
    """The number of distinct rows of wh if it is below k, else a number >= k (cheaply: a prefix
    of the rows usually has k distinct ones already)."""
    n = wh.shape[0]
    prefix = min(n, max(4 * k, 4096))
    while True:
        part = np.ascontiguousarray(wh[:prefix])
        count = np.unique(part.view(np.dtype((np.void, 2 * part.itemsize))).ravel()).size
        if count >= k or prefix == n:
            return count
        prefix = min(n, prefix * 8)
