"""Listing annotation files and running per-file parsers in worker processes."""

from __future__ import annotations

import multiprocessing
import os
import sys
import warnings
from typing import Any, Callable, Iterable, List, Optional, Sequence, Set, Tuple, TypeVar, Union

from .._fileio import iter_files, sanitize

PathLike = Union[str, "os.PathLike[str]"]
T = TypeVar("T")

#: Files below which parsing stays in the calling process (a pool costs ~20-50 ms to start).
POOL_MIN_FILES = 2000


def list_files(path_or_paths: Union[PathLike, Iterable[PathLike]], suffixes: Tuple[str, ...], what: str) -> List[str]:
    """Files with one of ``suffixes`` (lower-case, with the dot): a folder searched recursively,
    a single file, or a list of either. Sorted within each folder; the order of a list is kept.

    Each real file is listed once, however many paths reach it (links are followed, loops cut:
    see :func:`fastanchor._fileio.iter_files`)."""
    if isinstance(path_or_paths, (str, os.PathLike)):
        items = [path_or_paths]
    else:
        try:
            items = list(path_or_paths)
        except TypeError:
            raise TypeError(
                f"expected a path or a list of paths to {what} files, got {type(path_or_paths).__name__}"
            ) from None
    out: List[str] = []
    seen: Set[Tuple[int, int]] = set()
    for item in items:
        p = os.fspath(item)
        if os.path.isdir(p):
            for _, path, key in iter_files(p):
                if os.path.basename(path).lower().endswith(suffixes) and (key is None or not _seen(seen, key)):
                    out.append(path)
        elif os.path.exists(p):  # a file, or a special file that its reader will refuse by name
            st = os.stat(p)
            if not _seen(seen, (st.st_dev, st.st_ino)):
                out.append(p)
        elif os.path.islink(p):
            out.append(p)  # a broken or looping link: its reader reports it
        else:
            raise FileNotFoundError(f"no such file or folder: {sanitize(p)}")
    return out


def _seen(seen: Set[Tuple[int, int]], key: Tuple[int, int]) -> bool:
    """Whether a file was listed already (by device and inode); records it."""
    if key in seen:
        return True
    seen.add(key)
    return False


def resolve_workers(workers: Optional[int], n_items: int) -> int:
    """The number of worker processes: None picks all available CPUs on Linux for large inputs
    (fork makes workers cheap there) and 1 elsewhere; 1 parses in the calling process."""
    if workers is None:
        if n_items < POOL_MIN_FILES or not _can_fork():
            return 1
        return max(1, min(_cpu_count(), 8, n_items // 1000))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    return max(1, min(workers, n_items))


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _can_fork() -> bool:
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def run_chunks(
    func: Callable[[Sequence[Any]], T],
    items: Sequence[Any],
    workers: int,
    on_done: Optional[Callable[[int], None]] = None,
) -> List[T]:
    """``func`` over contiguous chunks of ``items``, in worker processes when ``workers > 1``.

    Results come back in chunk order, so the output does not depend on the number of workers.
    ``on_done(n)`` is called as chunks of n items complete (for a progress bar). ``func`` must
    not raise for bad input: it reports problems in its result.
    """
    if workers <= 1 or len(items) < 2:
        n_chunks = max(1, min(len(items) // 500, 64)) if on_done is not None else 1
    else:
        n_chunks = min(len(items), workers * 4)
    bounds = [len(items) * i // n_chunks for i in range(n_chunks + 1)]
    chunks = [items[bounds[i] : bounds[i + 1]] for i in range(n_chunks)]
    if workers <= 1 or n_chunks == 1:
        results = []
        for chunk in chunks:
            results.append(func(chunk))
            if on_done is not None:
                on_done(len(chunk))
        return results

    from concurrent.futures import ProcessPoolExecutor

    # fork: the workers share the parent's imported modules and start in milliseconds. They
    # only parse files with the standard library (no OpenMP, no new threads, no imports), so the
    # usual hazards of forking a threaded process do not apply; Python >= 3.12 still warns
    # about forking when any thread exists, which is silenced for this call only.
    from concurrent.futures.process import BrokenProcessPool

    method = "fork" if _can_fork() else "spawn"
    ctx = multiprocessing.get_context(method)
    results: List[T] = []
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*fork.*")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = [pool.submit(func, chunk) for chunk in chunks]
                for chunk, fut in zip(chunks, futures):
                    results.append(fut.result())
                    if on_done is not None:
                        on_done(len(chunk))
    except (BrokenProcessPool, OSError):
        # No processes to be had (a sandbox, a resource limit) or a worker died: finish here.
        for chunk in chunks[len(results) :]:
            results.append(func(chunk))
            if on_done is not None:
                on_done(len(chunk))
    return results
