"""The functions fastanchor.dask's passes run on Dask's workers. They live outside the
fastanchor.dask package: a worker imports the module of each function it runs, and that package
imports dask.array, which took 0.2 s on each worker's first task; this module needs only what the
chunk kernels need anyway."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, List, Optional, Tuple

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
    return _runs(task, merge, blocks, meta)[0]


def _runs(
    task: Callable[..., Any], merge: Callable[[Any, Any], Any], blocks: List[Any], meta: List[Tuple[int, int, Any]]
) -> Tuple[List[Tuple[int, Any]], List[int]]:
    """held_runs's runs, and the positions in the group of the chunks whose task needed rows the
    worker does not hold (ChunkAway: no run has them)."""
    runs: List[Tuple[int, Any]] = []
    away: List[int] = []
    last = None
    for j, (block, (i, offset, chunk_args)) in enumerate(zip(blocks, meta)):
        if isinstance(block, tuple):  # rows and weights
            block = _chunked.WeightedBlock(*block)
        try:
            part = task(block, offset, *chunk_args)
        except ChunkAway:
            away.append(j)
            last = None
            continue
        if last is not None and i == last + 1:
            runs[-1] = (runs[-1][0], merge(runs[-1][1], part))
        else:
            runs.append((i, part))
        last = i
    return [(i, _chunked.compact(part)) for i, part in runs], away


class ChunkAway(Exception):
    """A task of a direct pass needed the rows of a chunk its worker does not hold."""


class HeldOnWorker(_chunked.OnDemand):
    """A chunk of a direct pass: the value its worker holds under the chunk's key (rows, or
    weights), or None where the worker holds none; read only if the task needs it (a chunk whose
    Lloyd state the worker keeps is not), and then ChunkAway if it is not there."""

    def __init__(self, value: Any, n: int) -> None:
        self.value, self.n = value, n

    def __len__(self) -> int:
        return self.n

    def load(self) -> np.ndarray:
        if self.value is None:
            raise ChunkAway
        return np.asarray(self.value)


#: A direct pass's work for one worker: per group, its chunks' keys, their weights' keys (None:
#: unweighted), their row counts, and held_runs's meta.
DirectPlan = Dict[str, List[Tuple[List[Any], Optional[List[Any]], List[int], List[Tuple[int, int, Any]]]]]


async def direct_runs(
    task: Callable[..., Any], merge: Callable[[Any, Any], Any], plan: DirectPlan, dask_worker: Any = None
) -> List[Any]:
    """A pass on the groups of held chunks that ``plan`` gives this worker, run by
    ``Client.run`` (outside the scheduler's task queue): each group as held_runs runs it, on the
    worker's threads (the event loop stays free), the chunks taken from the worker's memory by
    key. Per group, its runs and the positions of the chunks that a task needed and the worker
    does not hold (for the client to run as tasks), or the exception a task raised: returned,
    so that the client tells a task's error (raised to the caller, as a task's) from a failed
    call (the pass then runs as tasks)."""
    data = dask_worker.data

    def held(key: Any, n: int) -> HeldOnWorker:
        return HeldOnWorker(data.get(key), n)

    loop = asyncio.get_running_loop()
    jobs = []
    for keys, wkeys, sizes, meta in plan.get(dask_worker.address, []):
        blocks: List[Any] = [held(key, n) for key, n in zip(keys, sizes)]
        if wkeys is not None:
            blocks = [(b, held(key, n)) for b, key, n in zip(blocks, wkeys, sizes)]
        jobs.append(loop.run_in_executor(dask_worker.executor, _runs, task, merge, blocks, meta))
    return list(await asyncio.gather(*jobs, return_exceptions=True))
