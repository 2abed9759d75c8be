"""The Dask executor and the public functions of fastanchor.dask."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import dask
import dask.array as da
import numpy as np
import numpy.typing as npt

from .. import _chunked, _dask_tasks
from .._chunked import DEFAULT_CACHE_BYTES
from .._evolve import DEFAULT_INIT_SAMPLE, DEFAULT_SEARCH_SAMPLE, AutoAnchorResult, Callback, EvolveResult
from .._fitness import DEFAULT_IOU_THR, DEFAULT_THR, FitnessResult, as_anchors, as_thr
from .._kmeans import KMeansResult
from .._validation import SeedLike, as_wh, resolve_seed
from ..out_of_core import DEFAULT_BLOCK_ROWS, is_source_list, open_rows

#: Partials merged per task of the reduction tree.
FAN_IN = 8
#: At most this many partials reach the client in a pass on held chunks (one per run of
#: consecutive chunks a worker thread holds); beyond it, a pass is a task per chunk and a tree.
HELD_MAX_RUNS = 64
#: While a direct pass waits, it checks this often (in seconds) that its workers are all alive.
DIRECT_POLL = 0.2

#: A pass's job on a worker: the worker, the indices of the chunks it runs, and held_runs's meta.
Job = Tuple[str, List[int], List[Tuple[int, int, Any]]]


class WorkerGone(Exception):
    """A worker of a direct pass left the cluster while the pass waited for it."""


def _is_dataframe(x: Any) -> bool:
    """Whether x is a Dask DataFrame. Only where dask.dataframe is imported already: a DataFrame
    cannot exist otherwise, and importing it (with pandas) would take about half a second."""
    dd = sys.modules.get("dask.dataframe")
    return dd is not None and isinstance(x, dd.DataFrame)


def _lazy_rows(item: Any, arr: np.ndarray, block_rows: int) -> da.Array:
    """The rows (or weights) of one source as a dask array: a .npy path as tasks that each read one
    block of it where they run (only the path travels to the workers), an array as it is."""
    chunks = (block_rows,) + arr.shape[1:]
    if not isinstance(item, (str, os.PathLike)):
        return da.from_array(arr, chunks=chunks)
    n = arr.shape[0]
    if n == 0:
        return da.from_array(np.asarray(arr), chunks=chunks)
    region = _chunked.npy_region(arr, os.fspath(item))
    parts = [
        da.from_delayed(
            dask.delayed(_dask_tasks.read_rows, pure=True)(region, b, min(n, b + block_rows)),
            shape=(min(n, b + block_rows) - b,) + arr.shape[1:],
            dtype=arr.dtype,
        )
        for b in range(0, n, block_rows)
    ]
    return da.concatenate(parts)


def as_dask_rows(
    wh: Any,
    columns: Sequence[str] = ("w", "h"),
    block_rows: int = DEFAULT_BLOCK_ROWS,
    lengths: Optional[Tuple[int, ...]] = None,
) -> da.Array:
    """``wh`` as a dask array of shape (N, 2) with one chunk along the columns and known row
    chunks: a dask array (rechunked along the columns only), a Dask DataFrame (its ``columns``,
    width then height), or what :func:`fastanchor.out_of_core.open_rows` reads (an array, a memmap,
    the path of a ``.npy`` file or a list of them), cut into chunks of ``block_rows`` rows. A
    ``.npy`` path becomes tasks that each read one chunk of the file where they run, so only the
    path travels to the workers (the file must be readable there). ``lengths``: a DataFrame's
    partition lengths, when known (else computed)."""
    if _is_dataframe(wh):
        cols = list(columns)
        if len(cols) != 2:
            raise ValueError(f"columns must name the width and height columns, got {columns!r}")
        missing = [c for c in cols if c not in wh.columns]
        if missing:
            raise ValueError(f"the DataFrame has no column {missing[0]!r} (columns: {list(wh.columns)})")
        x = wh[cols].to_dask_array(lengths=lengths if lengths is not None else True)
    elif isinstance(wh, da.Array):
        x = wh
    else:
        items = list(wh) if is_source_list(wh) else [wh]
        arrays = open_rows(items if len(items) > 1 else items[0])
        x = da.concatenate([_lazy_rows(item, a, block_rows) for item, a in zip(items, arrays)])
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"wh must have shape (N, 2) of (width, height), got shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise TypeError(f"wh must hold real numbers, got dtype {x.dtype}")
    if any(np.isnan(c) for c in x.chunks[0]):
        x = x.compute_chunk_sizes()
    if len(x.chunks[1]) != 1:
        x = x.rechunk({1: 2})
    return x


def as_dask_inputs(
    wh: Any, sample_weight: Any, columns: Sequence[str] = ("w", "h"), block_rows: int = DEFAULT_BLOCK_ROWS
) -> Tuple[da.Array, Optional[da.Array]]:
    """The rows as as_dask_rows gives them, and ``sample_weight`` (None: unit weights) as a 1-D
    dask array chunked as the rows: a dask array or Series, the name of a column of ``wh`` when it
    is a Dask DataFrame, or what :func:`fastanchor.out_of_core.open_weights` reads (an array, a
    memmap, the path of a ``.npy`` file or a list of them; a path becomes tasks that read it where
    they run). Their values are checked by the first pass."""
    if sample_weight is None:
        return as_dask_rows(wh, columns, block_rows), None
    if isinstance(sample_weight, str) and _is_dataframe(wh):
        if sample_weight not in wh.columns:
            raise ValueError(f"the DataFrame has no column {sample_weight!r} (columns: {list(wh.columns)})")
        lengths = tuple(int(n) for n in wh.map_partitions(len).compute())
        x = as_dask_rows(wh, columns, block_rows, lengths)
        w = wh[sample_weight].to_dask_array(lengths=lengths)
    else:
        x = as_dask_rows(wh, columns, block_rows)
        dd = sys.modules.get("dask.dataframe")
        if dd is not None and isinstance(sample_weight, dd.Series):
            w = sample_weight.to_dask_array(lengths=True)
        elif isinstance(sample_weight, da.Array):
            w = sample_weight
        else:
            from ..out_of_core import open_weights

            parts = open_weights(sample_weight, int(x.shape[0]))
            w = da.concatenate([_lazy_rows(path or a, a, block_rows) for a, path in parts])
    if w.ndim != 1:
        raise ValueError(f"sample_weight must be one-dimensional, got shape {w.shape}")
    if w.dtype.kind not in "fiu":
        raise TypeError(f"sample_weight must hold real numbers, got dtype {w.dtype}")
    if any(np.isnan(c) for c in w.chunks[0]):
        w = w.compute_chunk_sizes()
    if w.shape[0] != x.shape[0]:
        raise ValueError(f"sample_weight must have shape ({x.shape[0]},) to match the boxes, got shape {w.shape}")
    if w.chunks[0] != x.chunks[0]:
        w = w.rechunk((x.chunks[0],))
    return x, w


def _default_client() -> Any:
    """The active distributed client (where dask.compute would run), or None."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def _tree(parts: List[Any], merge: Callable[[Any, Any], Any]) -> Any:
    """Delayed merges of ``parts`` in a tree of fan-in FAN_IN (exact merges: any tree gives the
    same totals)."""
    while len(parts) > 1:
        parts = [
            dask.delayed(_dask_tasks.merge_all)(merge, *parts[i : i + FAN_IN]) for i in range(0, len(parts), FAN_IN)
        ]
    return parts[0]


def _balanced(held: Dict[str, List[int]], threads: Dict[str, int]) -> Dict[str, List[int]]:
    """The chunks each worker runs in a pass on held chunks: ``held``, the chunks each worker holds
    (every worker of the cluster, some holding none), shared out by ``threads``, the workers'
    thread counts. Each worker's share is its part of all chunks by threads (the remainder going
    to the workers that hold the most beyond their share, so that the fewest chunks move); it
    keeps the lowest chunks it holds up to its share, and the chunks beyond the shares go, in
    order, to the workers below theirs. Deterministic: the same holdings give the same plan."""
    workers = sorted(held)
    n = sum(len(c) for c in held.values())
    total = sum(threads[w] for w in workers)
    share = {w: n * threads[w] // total for w in workers}
    for w in sorted(workers, key=lambda w: (share[w] - len(held[w]), w))[: n - sum(share.values())]:
        share[w] += 1
    out = {w: sorted(held[w])[: share[w]] for w in workers}
    spare = sorted(i for w in workers for i in sorted(held[w])[share[w] :])
    for w in workers:
        need = share[w] - len(out[w])
        if need > 0:
            out[w], spare = sorted(out[w] + spare[:need]), spare[need:]
    return {w: c for w, c in out.items() if c}


class DaskExecutor:
    """Runs a pass as one task per chunk of rows and a tree of merges, computed by ``client`` (a
    ``distributed.Client``), else by ``scheduler`` (None: Dask's default, which is the active
    client if there is one); on an array whose chunks the client's cluster holds (persisted), as
    one job per worker thread on the chunks it holds (_run_held), sent with ``Client.run``."""

    #: Threads of the kernels that take a count: one per task (Dask runs the tasks in parallel).
    task_threads = 1

    def __init__(
        self, x: da.Array, client: Any = None, scheduler: Any = None, weights: Optional[da.Array] = None
    ) -> None:
        self.x = x
        # The weights, chunked as the rows (None: unit weights): a task gets each chunk of rows with
        # its chunk of weights (_chunked.WeightedBlock).
        self.weights = weights
        self.wblocks = None if weights is None else list(weights.to_delayed().ravel())
        if client is None and scheduler is None:
            client = _default_client()
        self.client = client
        self.scheduler = scheduler
        self.blocks = list(x.to_delayed().ravel())
        self.sizes = [int(c) for c in x.chunks[0]]
        self.offsets = [int(o) for o in np.concatenate([[0], np.cumsum(self.sizes)[:-1]])]
        self.n = int(sum(self.sizes))
        self._groups: Any = False  # not looked up yet
        self._held: List[Any] = []  # the chunks' futures, when every chunk is held
        self._last: List[Any] = []  # the last pass's futures (_run_tasks)
        self._direct = True  # passes on held chunks run directly on the workers (_run_direct)

    def compute(self, obj: Any) -> Any:
        if self.client is not None:
            return self.client.compute(obj, sync=True)
        return dask.compute(obj, scheduler=self.scheduler)[0]

    def run(self, task: Callable[..., Any], args: Tuple[Any, ...], merge: Callable[[Any, Any], Any]) -> Any:
        if self._groups is False:
            self._groups = self._held_groups()
        groups = self._groups
        if groups is not None:
            return self._run_held(groups, task, args, merge)
        if self.wblocks is None:
            parts = [
                dask.delayed(task)(b, off, *_chunked.chunk_args(args, off, size))
                for b, off, size in zip(self.blocks, self.offsets, self.sizes)
            ]
        else:
            parts = [
                dask.delayed(_chunked.with_weights)(task, b, wb, off, *_chunked.chunk_args(args, off, size))
                for b, wb, off, size in zip(self.blocks, self.wblocks, self.offsets, self.sizes)
            ]
        return self.compute(_tree(parts, merge))

    def _held_groups(self) -> Optional[List[Tuple[str, List[int]]]]:
        """The chunks' indices grouped by worker thread, when every chunk is held in the client's
        cluster (a persisted array): one group per thread of each worker, each ascending, with the
        worker it runs on. None otherwise (the chunks are computed by the pass's tasks). A worker
        runs the chunks it holds, up to its share of all chunks by threads (its lowest ones); the
        others go to the workers below their share, which fetch them (as a task) in the first
        pass that needs their rows and keep a copy for the next ones (an uneven persist, such as
        6 and 4 chunks on two workers, would otherwise make every pass wait for the busier
        worker). Found once per executor: if a worker is lost later, Dask computes its chunks
        again elsewhere and moves them to the tasks that need them, so the groups only place the
        work."""
        if self.client is None or not self.blocks:
            return None
        from distributed import futures_of

        futures = {f.key: f for f in futures_of(self.x)}
        held: List[Any] = [futures.get(b.key) for b in self.blocks]
        if any(f is None for f in held):
            return None
        if self.weights is not None and self.wblocks is not None:  # both persisted: pairs of futures
            wfutures = {f.key: f for f in futures_of(self.weights)}
            wheld = [wfutures.get(b.key) for b in self.wblocks]
            if any(f is None for f in wheld):
                return None
            held = [(f, g) for f, g in zip(held, wheld)]
        self._held = held
        who = self.client.who_has([h[0] if isinstance(h, tuple) else h for h in held])
        threads = self.client.nthreads()
        by_worker: Dict[str, List[int]] = {w: [] for w in threads}
        for i, b in enumerate(self.blocks):
            where = who.get(b.key) or ()
            if not where:  # not in memory now (lost with its worker): let the scheduler place it
                return None
            by_worker.setdefault(sorted(where)[0], []).append(i)
        by_worker = _balanced(by_worker, {w: max(1, int(threads.get(w, 1))) for w in by_worker})
        groups: List[Tuple[str, List[int]]] = []
        for worker, chunks in sorted(by_worker.items()):
            n = min(len(chunks), max(1, int(threads.get(worker, 1))))
            groups.extend((worker, chunks[j * len(chunks) // n : (j + 1) * len(chunks) // n]) for j in range(n))
        runs = sum(1 + sum(b != a + 1 for a, b in zip(g, g[1:])) for _, g in groups)
        if runs > HELD_MAX_RUNS:  # scattered chunks: the merges stay on the workers, in a tree
            return None
        return groups

    def _run_held(
        self,
        groups: List[Tuple[str, List[int]]],
        task: Callable[..., Any],
        args: Tuple[Any, ...],
        merge: Callable[[Any, Any], Any],
    ) -> Any:
        """The pass as one job per group of held chunks, on the worker that holds them: it merges
        each run of consecutive chunks and returns the runs' partials, which are merged here in
        chunk order (the left fold of the in-memory executor). The jobs run directly on the
        workers (_run_direct) while that works, else as tasks (_run_tasks)."""
        jobs = [
            (worker, g, [(i, self.offsets[i], _chunked.chunk_args(args, self.offsets[i], self.sizes[i])) for i in g])
            for worker, g in groups
        ]
        runs = self._run_direct(jobs, task, merge) if self._direct else None
        if runs is None:
            runs = self._run_tasks(jobs, task, merge)
        acc = None
        for _, part in sorted(runs, key=lambda r: r[0]):
            acc = part if acc is None else merge(acc, part)
        return acc

    def _run_tasks(self, jobs: List[Job], task: Callable[..., Any], merge: Callable[[Any, Any], Any]) -> List[Any]:
        """The jobs as one task each, submitted on the chunks' futures (no graph to build): a pass
        costs two tasks on two workers instead of a task per chunk and a tree of merges, about
        15 ms for an empty pass over 10 chunks instead of 36-45 ms. Their runs."""
        tasks = [
            # on its worker while it lives (a loose restriction: elsewhere if it is lost)
            self.client.submit(
                _dask_tasks.held_runs,
                task,
                merge,
                [self._held[i] for i in g],
                meta,
                pure=False,
                workers=[worker],
                allow_other_workers=True,
            )
            for worker, g, meta in jobs
        ]
        # The last pass's futures are released now, after this pass's submit. The client sends to
        # the scheduler at most once per 10 ms: released as soon as that pass returned, they would
        # hold this submit back by the rest of those 10 ms (6-7 ms per pass between two passes 4 ms
        # apart).
        self._last = tasks
        return [r for got in self.client.gather(tasks) for r in got]

    def _run_direct(self, jobs: List[Job], task: Callable[..., Any], merge: Callable[[Any, Any], Any]) -> Any:
        """The jobs through ``Client.run`` (_dask_tasks.direct_runs): each worker runs its groups
        on the chunks in its memory, without the scheduler's task queue, about 3 ms for an empty
        pass on two workers instead of 10-19 ms. A chunk whose rows a task needed and its worker
        does not hold (one a worker took over to even out the shares, once its copy is gone) runs
        as a task. Their runs, or None if the call failed (a worker lost or unreachable): then
        this pass and every later one run as tasks, which Dask reruns elsewhere."""
        plan: _dask_tasks.DirectPlan = {}
        jobs_of: Dict[str, List[Job]] = {}
        for job in jobs:
            worker, g, meta = job
            held = [self._held[i] for i in g]
            keys = [h[0].key if isinstance(h, tuple) else h.key for h in held]
            wkeys = [h[1].key for h in held] if isinstance(held[0], tuple) else None
            plan.setdefault(worker, []).append((keys, wkeys, [self.sizes[i] for i in g], meta))
            jobs_of.setdefault(worker, []).append(job)
        try:
            got = self._call_direct(plan, task, merge)
        except Exception:  # a worker lost or unreachable (a task's own error is returned instead)
            self._direct = False
            return None
        runs: List[Any] = []
        away: List[Job] = []
        results = [(job, result) for worker, mine in jobs_of.items() for job, result in zip(mine, got[worker])]
        for _, result in results:
            if isinstance(result, Exception):  # a task's error, as a task would raise it
                raise result
            if isinstance(result, BaseException):  # a job cancelled (its worker closing)
                self._direct = False
                return None
        for (worker, g, meta), (got_runs, missing) in results:
            runs.extend(got_runs)
            if missing:
                away.append((worker, [g[j] for j in missing], [meta[j] for j in missing]))
        self._last = []  # (the last tasks' results are not needed)
        if away:
            runs.extend(self._run_tasks(away, task, merge))
        return runs

    def _call_direct(
        self, plan: _dask_tasks.DirectPlan, task: Callable[..., Any], merge: Callable[[Any, Any], Any]
    ) -> Dict[str, Any]:
        """``Client.run`` of direct_runs on the plan's workers, from a helper thread, while this
        one checks every DIRECT_POLL seconds that they are all still in the cluster (WorkerGone if
        not): a call sent to a worker that died a moment before would wait for the connection's
        timeout, 30 s by default."""
        box: Dict[str, Any] = {}
        done = threading.Event()

        def call() -> None:
            try:
                box["out"] = self.client.run(_dask_tasks.direct_runs, task, merge, plan, workers=sorted(plan))
            except BaseException as e:  # (handed to the waiting thread)
                box["error"] = e
            finally:
                done.set()

        threading.Thread(target=call, name="fastanchor-direct-pass", daemon=True).start()
        while not done.wait(DIRECT_POLL):
            gone = set(plan) - set(self.client.nthreads())
            if gone:
                raise WorkerGone(f"workers of the pass left the cluster: {sorted(gone)}")
        if "error" in box:
            raise box["error"]
        out: Dict[str, Any] = box["out"]
        return out

    @property
    def release(self) -> Optional[Callable[[str], None]]:
        """Drops a search's cached chunk layouts where its tasks ran: on every worker of the client,
        or in this process for the in-process schedulers; None for the others (no cache)."""
        if self.client is not None:
            client = self.client

            def on_workers(token: str) -> None:
                client.run(_chunked.drop_layouts, token)
                _chunked.drop_layouts(token)

            return on_workers
        if self.scheduler in (None, "threads", "threading", "sync", "synchronous", "single-threaded"):
            return _chunked.drop_layouts
        return None

    def take(self, index: Optional[np.ndarray]) -> np.ndarray:
        rows = self.x if index is None else self.x[index]
        return _chunked.chunk_rows(self.compute(rows))


def kmeans_iou(
    wh: Any,
    k: int,
    *,
    init: Union[str, npt.ArrayLike] = "k-means++",
    update: str = "median",
    n_init: Optional[int] = None,
    max_iter: int = 300,
    tol: float = 0.0,
    sample_weight: Any = None,
    seed: SeedLike = None,
    init_sample: int = _chunked.DEFAULT_INIT_SAMPLE,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    progress: bool = False,
    client: Any = None,
    scheduler: Any = None,
    columns: Sequence[str] = ("w", "h"),
) -> KMeansResult:
    """:func:`fastanchor.kmeans_iou` over a dask array (N, 2) or a Dask DataFrame: one map-reduce
    per Lloyd iteration (mean; a second one gathers the values around the medians for the median).

    From ``init`` given as (k, 2) anchors the anchors, ``avg_iou``, ``n_iter`` and ``converged`` are
    ``fastanchor.kmeans_iou(rows, k, init=init, ...)``'s, bit for bit, and ``labels`` is a lazy dask
    array (int32, chunked as the rows) whose values are its labels. With "k-means++" or "random",
    the initial anchors are drawn by the in-memory core from a uniform sample of ``init_sample``
    rows (indices drawn from ``seed``; all rows when there are no more, and then the whole result
    is ``fastanchor.kmeans_iou(rows, k, seed=seed)``'s): the result does not depend on the
    chunking nor on the number of workers.

    Parameters beyond :func:`fastanchor.kmeans_iou`'s: ``client`` (a ``distributed.Client`` that
    runs the tasks; default: the active client if any, else ``scheduler``), ``scheduler`` (Dask's
    ``scheduler=`` of ``dask.compute``), ``columns`` (a DataFrame's width and height columns),
    ``init_sample``, ``cache_bytes`` (up to this many bytes, default 1 GiB, each worker keeps the
    state of the chunks it runs from one pass to the next, as
    :func:`fastanchor.out_of_core.kmeans_iou` does; 0: none). ``sample_weight`` as in
    :func:`avg_iou` (see :func:`fastanchor.out_of_core.kmeans_iou`);
    ``n_init`` as in :func:`fastanchor.out_of_core.kmeans_iou`.

    Tasks are pure, so a task lost with its worker is rerun by Dask with the same result. Persist
    the rows (``wh.persist()``) on a cluster so that the iterations do not reload them.
    """
    k, update, n_init, max_iter, tol = _chunked.check_fit_options(k, update, n_init, max_iter, tol)
    x, w = as_dask_inputs(wh, sample_weight, columns)
    ex = DaskExecutor(x, client, scheduler, w)
    sc, ws = _chunked.scan_weights(ex, w is not None)
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
        ex.take,
        "kmeans_iou (dask)",
        _chunked.as_cache_bytes(cache_bytes),
        n_init,
        ws=ws,
    )
    labels = x.map_blocks(_chunked.assign_labels, out.anchors, dtype=np.int32, drop_axis=1, chunks=(x.chunks[0],))
    return KMeansResult(anchors=out.anchors, labels=labels, avg_iou=avg, n_iter=out.n_iter, converged=out.converged)


def avg_iou(
    anchors: npt.ArrayLike,
    wh: Any,
    *,
    sample_weight: Any = None,
    client: Any = None,
    scheduler: Any = None,
    columns: Sequence[str] = ("w", "h"),
) -> float:
    """:func:`fastanchor.avg_iou` over a dask array or DataFrame (the same value, bit for bit).

    ``sample_weight``: one weight per box, as a 1-D dask array or Series (rechunked as the rows),
    the name of a column of the DataFrame ``wh``, or a numpy array or ``.npy`` path(s); the first
    pass checks the weights with the rows, with the in-memory function's messages."""
    a = as_wh(anchors, "anchors")
    x, w = as_dask_inputs(wh, sample_weight, columns)
    ex = DaskExecutor(x, client, scheduler, w)
    sc, ws = _chunked.scan_weights(ex, w is not None)
    return _chunked.avg_iou(ex, a, sc.n, ws)


def anchor_fitness(
    anchors: npt.ArrayLike,
    wh: Any,
    *,
    thr: float = DEFAULT_THR,
    sample_weight: Any = None,
    client: Any = None,
    scheduler: Any = None,
    columns: Sequence[str] = ("w", "h"),
) -> FitnessResult:
    """:func:`fastanchor.anchor_fitness` over a dask array or DataFrame (the same values, bit for
    bit). ``sample_weight`` as in :func:`avg_iou`."""
    a = as_anchors(anchors)
    t = as_thr(thr)
    x, w = as_dask_inputs(wh, sample_weight, columns)
    ex = DaskExecutor(x, client, scheduler, w)
    sc, ws = _chunked.scan_weights(ex, w is not None)
    fit, bpr, aat, iou = _chunked.fitness(ex, a, t, sc.n, ws)
    return FitnessResult(fitness=fit, bpr=bpr, aat=aat, avg_iou=iou, thr=t)


def evolve_anchors(
    anchors: npt.ArrayLike,
    wh: Any,
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
    sample_weight: Any = None,
    seed: SeedLike = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    progress: bool = False,
    callback: Optional[Callback] = None,
    client: Any = None,
    scheduler: Any = None,
    columns: Sequence[str] = ("w", "h"),
) -> EvolveResult:
    """:func:`fastanchor.evolve_anchors` over a dask array or DataFrame: every batch of ``batch``
    candidates is scored by one map-reduce over the chunks (exact fixed-point totals), so the
    result is the in-memory search's from the same seed, bit for bit, whatever the chunking and
    the number of workers (no ``scale`` or ``grid``). ``sample_weight`` as in :func:`avg_iou`
    (weighted, the search takes one more pass, for the total weight).

    The search runs about ``generations / batch`` map-reduces: a larger ``batch`` means fewer
    ("yolov5" gives the same result for every batch size). Each worker keeps the layouts of the
    chunks it scores (9 bytes per float32 box, 17 per float64 one, 8 more when weighted) up to
    ``cache_bytes`` (default 1 GiB; 0: none), so that the later passes do not lay them out again,
    and drops them when the search ends.
    ``client``, ``scheduler`` and ``columns`` as in :func:`kmeans_iou`.
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
    x, w = as_dask_inputs(wh, sample_weight, columns)
    ex = DaskExecutor(x, client, scheduler, w)
    sc, ws = _chunked.scan_weights(ex, w is not None)
    cache = _chunked.as_cache_bytes(cache_bytes)
    return _chunked.evolve(ex, sc.n, a, s, resolve_seed(seed), progress, callback, "evolve_anchors (dask)", cache, ws)


def autoanchor(
    wh: Any,
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
    budget: int = 0,
    sample_weight: Any = None,
    seed: SeedLike = None,
    init_sample: int = DEFAULT_INIT_SAMPLE,
    search_sample: int = DEFAULT_SEARCH_SAMPLE,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    progress: bool = False,
    callback: Optional[Callback] = None,
    client: Any = None,
    scheduler: Any = None,
    columns: Sequence[str] = ("w", "h"),
) -> AutoAnchorResult:
    """:func:`fastanchor.autoanchor` over a dask array or DataFrame: small boxes counted and
    dropped chunk by chunk, then :func:`kmeans_iou` and :func:`evolve_anchors` on the kept rows.

    From the same seed, ``budget``, ``init_sample`` and ``search_sample`` the result is the
    in-memory ``fastanchor.autoanchor(rows, k, seed=seed, budget=budget, init_sample=init_sample,
    search_sample=search_sample)``'s, bit for bit, never depending on the chunking or the number
    of workers: on more than ``init_sample`` kept boxes (default 2**20), k-means runs in memory on
    a uniform sample of that many first (gathered from the chunks), and then over the chunks from
    its anchors, a few passes; on more than ``search_sample`` (default 2**20), the search runs in
    memory on a uniform sample of that many (gathered in one pass), else over the chunks. The
    reports take one more pass. ``budget`` defaults to 0 here (the in-memory default adds restarts on sets
    of fewer than about 67,000 boxes: thousands of map-reduces). No ``scale`` or ``grid``.
    ``sample_weight`` as in :func:`avg_iou` (see :func:`fastanchor.out_of_core.autoanchor`).
    ``cache_bytes`` as in :func:`evolve_anchors`; ``client``, ``scheduler`` and ``columns`` as in
    :func:`kmeans_iou`.
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
    x, w = as_dask_inputs(wh, sample_weight, columns)
    ex = DaskExecutor(x, client, scheduler, w)
    cache = _chunked.as_cache_bytes(cache_bytes)
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
        ex.take,
        "autoanchor (dask)",
        cache,
        weighted=w is not None,
    )
