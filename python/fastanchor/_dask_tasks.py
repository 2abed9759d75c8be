"""The functions fastanchor.dask's passes run on Dask's workers. They live outside the
fastanchor.dask package: a worker imports the module of each function it runs, and that package
imports dask.array, which took 0.2 s on each worker's first task; this module needs only what the
chunk kernels need anyway."""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

import numpy as np

from . import _chunked


def read_rows(region: _chunked.NpyRegion, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a .npy file (of boxes, or of weights), read where the task runs."""
    return region.read(start, stop)


def merge_all(merge: Callable[[Any, Any], Any], *parts: Any) -> Any:
    """The partials merged by ``merge``, left to right."""
    acc = parts[0]
    for part in parts[1:]:
        acc = merge(acc, part)
    return acc


def held_runs(
    task: Callable[..., Any], merge: Callable[[Any, Any], Any], blocks: List[Any], meta: List[Tuple[int, int, Any]]
) -> List[Tuple[int, Any]]:
    """``task`` on each chunk of a group (``meta``: its index, offset and arguments), each run of
    consecutive chunks merged in order: [(first chunk's index, partial)], each partial compact
    for its way to the client."""
    runs: List[Tuple[int, Any]] = []
    last = None
    for block, (i, offset, chunk_args) in zip(blocks, meta):
        if isinstance(block, tuple):  # rows and weights
            block = _chunked.WeightedBlock(*block)
        part = task(block, offset, *chunk_args)
        if last is not None and i == last + 1:
            runs[-1] = (runs[-1][0], merge(runs[-1][1], part))
        else:
            runs.append((i, part))
        last = i
    return [(i, _chunked.compact(part)) for i, part in runs]
