"""The functions fastanchor.dask's passes run on Dask's workers. They live outside the
fastanchor.dask package: a worker imports the module of each function it runs, and that package
imports dask.array, which took 0.2 s on each worker's first task; this module needs only what the
chunk kernels need anyway."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List, Optional, Tuple

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


class HeldRunner:
    """A worker's groups of held chunks, as a Dask actor: runs a pass on them (each group as
    held_runs does, the groups on threads of the runner's own) when the client calls it, which
    reaches the worker directly instead of through the scheduler. ``groups``: the chunks' indices
    of each group; ``blocks``: their rows (or pairs of rows and weights), in the order of the
    groups' indices, as Dask gives an actor the values of the futures it is made with."""

    def __init__(self, groups: List[List[int]], blocks: List[Any]) -> None:
        self.groups = groups
        self.blocks: List[List[Any]] = []
        at = 0
        for g in groups:
            self.blocks.append(blocks[at : at + len(g)])
            at += len(g)
        self._pool: Optional[ThreadPoolExecutor] = None

    def run(
        self, task: Callable[..., Any], merge: Callable[[Any, Any], Any], metas: List[List[Tuple[int, int, Any]]]
    ) -> List[Tuple[int, Any]]:
        """held_runs of every group (``metas``: each group's), their runs in one list."""
        if len(self.groups) == 1:
            return held_runs(task, merge, self.blocks[0], metas[0])
        if self._pool is None:
            self._pool = ThreadPoolExecutor(len(self.groups), thread_name_prefix="fastanchor-held")
        done = [self._pool.submit(held_runs, task, merge, b, m) for b, m in zip(self.blocks, metas)]
        return [r for f in done for r in f.result()]
