"""fastanchor.dask: the in-memory results bit for bit over dask arrays and DataFrames, whatever
the chunking, the scheduler, the number of workers, or a worker lost during a fit."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from conftest import both_workers, clean, load_real, needs_data, real_box_files, tied_boxes

import fastanchor
from fastanchor import _chunked
from fastanchor import out_of_core as ooc

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
fd = pytest.importorskip("fastanchor.dask")

# distributed's servers and worker restarts leave sockets for the garbage collector.
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:Port .* is already in use:UserWarning"),
]


def _same(got, want, client=None) -> None:
    """got (fastanchor.dask) is want (in memory); its labels computed by ``client`` (None: the
    default scheduler), which must be the client that holds the chunks they are read from."""
    np.testing.assert_array_equal(got.anchors, want.anchors)
    labels = got.labels.compute() if client is None else client.compute(got.labels, sync=True)
    np.testing.assert_array_equal(labels, want.labels)
    assert got.avg_iou == want.avg_iou
    assert (got.n_iter, got.converged) == (want.n_iter, want.converged)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("update", ["mean", "median"])
def test_explicit_init_is_the_in_memory_fit_for_any_chunking(dtype, update):
    wh = tied_boxes(1, 20_000, dtype)
    init = wh[np.random.default_rng(2).choice(len(wh), 7, replace=False)].astype(np.float64)
    want = fastanchor.kmeans_iou(wh, 7, init=init, update=update)
    for chunks in (20_000, 4096, (3000, 0, 1, 4999, 12_000)):
        x = da.from_array(wh, chunks=(chunks, 2))
        _same(fd.kmeans_iou(x, 7, init=init, update=update, scheduler="threads"), want)


def test_seeded_fit_does_not_depend_on_the_chunking():
    wh = tied_boxes(3, 30_000)
    want = fastanchor.kmeans_iou(wh, 6, seed=4)
    _same(fd.kmeans_iou(da.from_array(wh, chunks=(7000, 2)), 6, seed=4, scheduler="sync"), want)
    a = fd.kmeans_iou(da.from_array(wh, chunks=(7000, 2)), 6, seed=4, init_sample=3000, scheduler="sync")
    b = fd.kmeans_iou(da.from_array(wh, chunks=(2500, 2)), 6, seed=4, init_sample=3000, scheduler="threads")
    np.testing.assert_array_equal(a.anchors, b.anchors)
    np.testing.assert_array_equal(a.labels.compute(), b.labels.compute())


def test_dataframe_columns_and_metrics():
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    wh = tied_boxes(5, 10_000)
    df = dd.from_pandas(pd.DataFrame({"id": np.arange(len(wh)), "bw": wh[:, 0], "bh": wh[:, 1]}), npartitions=4)
    init = wh[:5].copy()
    want = fastanchor.kmeans_iou(wh, 5, init=init, update="mean")
    _same(fd.kmeans_iou(df, 5, init=init, update="mean", columns=("bw", "bh"), scheduler="sync"), want)
    assert fd.avg_iou(want.anchors, df, columns=("bw", "bh")) == fastanchor.avg_iou(want.anchors, wh)
    got = fd.anchor_fitness(want.anchors, df, columns=("bw", "bh"), thr=3.0)
    assert got == fastanchor.anchor_fitness(want.anchors, wh, thr=3.0)
    with pytest.raises(ValueError, match="no column 'w'"):
        fd.avg_iou(want.anchors, df)


def test_errors_as_in_memory():
    wh = tied_boxes(6, 3000)
    wh[2500] = np.nan
    x = da.from_array(wh, chunks=(1000, 2))
    with pytest.raises(ValueError, match=r"the first is row 2500: \[nan, nan\]"):
        fd.kmeans_iou(x, 3, init=wh[:3], scheduler="sync")
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(2000,\) to match the boxes"):
        fd.kmeans_iou(x[:2000], 3, update="mean", sample_weight=np.arange(1999.0), scheduler="sync")
    with pytest.raises(ValueError, match="must have shape"):
        fd.avg_iou(wh[:3], da.ones((10, 3)))


# --------------------------------------------------------------------------------------------
# A distributed cluster: two worker processes, started once for this module.


def test_one_and_two_workers_give_the_in_memory_fit(cluster):
    distributed = pytest.importorskip("distributed")
    _, client = cluster
    wh = tied_boxes(7, 40_000, np.float32)
    x = da.from_array(wh, chunks=(6000, 2)).persist()
    init = wh[:8].astype(np.float64)
    for update in ("mean", "median"):
        want = fastanchor.kmeans_iou(wh, 8, init=init, update=update)
        _same(fd.kmeans_iou(x, 8, init=init, update=update, client=client), want)
    a = fd.kmeans_iou(x, 8, seed=9, init_sample=5000, client=client)
    with (
        distributed.LocalCluster(
            n_workers=1, processes=True, threads_per_worker=1, dashboard_address=":0", silence_logs=40
        ) as one,
        distributed.Client(one, set_as_default=False) as c1,
    ):
        b = fd.kmeans_iou(da.from_array(wh, chunks=(9000, 2)), 8, seed=9, init_sample=5000, client=c1)
    np.testing.assert_array_equal(a.anchors, b.anchors)
    assert (a.avg_iou, a.n_iter) == (b.avg_iou, b.n_iter)
    # Restarts: the best of the seeded runs, as out of core (any chunking, any workers).
    runs = fd.kmeans_iou(x, 8, seed=9, n_init=3, init_sample=5000, client=client)
    want = ooc.kmeans_iou(wh, 8, seed=9, n_init=3, init_sample=5000, block_rows=7777)
    np.testing.assert_array_equal(runs.anchors, want.anchors)
    assert runs.avg_iou == want.avg_iou >= a.avg_iou


@pytest.mark.parametrize("persisted", [False, True])
def test_a_worker_lost_during_the_fit_changes_nothing(cluster, monkeypatch, persisted):
    # persisted: the passes run as one task per worker on the chunks it holds, and the lost
    # worker's chunks are computed again elsewhere
    cl, client = cluster
    both_workers(client)
    wh = tied_boxes(8, 40_000)
    init = wh[:7].copy()
    want = fastanchor.kmeans_iou(wh, 7, init=init, update="median")
    assert want.n_iter > 4
    killed = []
    pids = client.run(os.getpid)  # worker address -> process id

    class KillAtIteration3:
        def __init__(self, total, desc):
            pass

        def __call__(self, n_iter):
            if n_iter == 3 and not killed:
                worker = sorted(pids)[0]
                killed.append(worker)
                os.kill(pids[worker], signal.SIGKILL)  # its nanny starts a new worker

        def close(self):
            pass

    monkeypatch.setattr(_chunked, "IterationBar", KillAtIteration3)
    paths = _spy_on_passes(monkeypatch)
    x = da.from_array(wh, chunks=(4000, 2))
    if persisted:
        x = client.persist(x)
        client.gather(pytest.importorskip("distributed").futures_of(x))  # held before the fit starts
    got = fd.kmeans_iou(x, 7, init=init, update="median", client=client, progress=True)
    assert killed
    _same(got, want, client if persisted else None)
    if persisted:  # direct passes until the one sent to the lost worker; tasks after it
        i = paths.index("direct failed")
        before = [p for p in paths[:i] if p != "away"]  # (the tasks of chunks a worker took over)
        assert len(before) >= 4 and set(before) == {"direct"}
        assert paths[i + 1 :] and set(paths[i + 1 :]) == {"tasks"}
    else:
        assert set(paths) == {"graph"}
    both_workers(client)


def _spy_on_passes(monkeypatch) -> list:
    """How each DaskExecutor pass ran, in order: "graph" (a task per chunk), "tasks" (a task per
    group of held chunks), "direct" (Client.run on the workers), "direct failed" (then tasks), and
    "away" for the tasks of a direct pass's chunks that their workers did not hold."""
    from fastanchor.dask._api import DaskExecutor

    paths = []
    direct, tasks, compute = DaskExecutor._run_direct, DaskExecutor._run_tasks, DaskExecutor.compute
    inside = []

    def spy_direct(self, *args):
        inside.append(1)
        try:
            out = direct(self, *args)
        finally:
            inside.pop()
        paths.append("direct" if out is not None else "direct failed")
        return out

    def spy_tasks(self, *args):
        paths.append("away" if inside else "tasks")
        return tasks(self, *args)

    def spy_compute(self, obj):
        paths.append("graph")
        return compute(self, obj)

    monkeypatch.setattr(DaskExecutor, "_run_direct", spy_direct)
    monkeypatch.setattr(DaskExecutor, "_run_tasks", spy_tasks)
    monkeypatch.setattr(DaskExecutor, "compute", spy_compute)
    return paths


def test_passes_on_held_chunks_run_directly_on_the_workers(cluster, monkeypatch):
    distributed = pytest.importorskip("distributed")
    _, client = cluster
    both_workers(client)
    paths = _spy_on_passes(monkeypatch)
    wh = tied_boxes(15, 40_000, np.float32)
    x = client.persist(da.from_array(wh, chunks=(3000, 2)))
    client.gather(distributed.futures_of(x))
    init = wh[:8].astype(np.float64)
    for update in ("mean", "median"):
        paths.clear()
        _same(
            fd.kmeans_iou(x, 8, init=init, update=update, client=client),
            fastanchor.kmeans_iou(wh, 8, init=init, update=update),
            client,
        )
        # every pass through Client.run; chunks a worker took over (to even out the shares) and
        # does not hold yet run as tasks
        assert len(paths) > 3 and set(paths) <= {"direct", "away"} and paths[-1] == "direct"
    # a weighted autoanchor whose small boxes are dropped (the kept rows' chunks, with weights)
    wh[::40] = [1.5, 1.0]
    weights = np.random.default_rng(5).integers(1, 4, len(wh)).astype(np.float64)
    x = client.persist(da.from_array(wh, chunks=(3000, 2)))
    w = client.persist(da.from_array(weights, chunks=3000))
    client.gather(distributed.futures_of(x) + distributed.futures_of(w))
    paths.clear()
    kw = dict(seed=3, init_sample=4000, search_sample=5000, generations=30, budget=0)
    with pytest.warns(UserWarning, match="smaller than"):
        got = fd.autoanchor(x, 6, sample_weight=w, client=client, **kw)
    with pytest.warns(UserWarning, match="smaller than"):
        want = fastanchor.autoanchor(wh, 6, sample_weight=weights, **kw)
    np.testing.assert_array_equal(got.anchors, want.anchors)
    assert got.evolved == want.evolved and got.kmeans == want.kmeans
    assert "direct" in paths and set(paths) <= {"direct", "away"}


def test_a_direct_pass_raises_a_tasks_error_as_in_memory(cluster, monkeypatch):
    distributed = pytest.importorskip("distributed")
    _, client = cluster
    both_workers(client)
    paths = _spy_on_passes(monkeypatch)
    wh = tied_boxes(23, 20_000)
    wh[13_007] = [np.nan, 4.0]
    x = client.persist(da.from_array(wh, chunks=(2500, 2)))
    client.gather(distributed.futures_of(x))
    with pytest.raises(ValueError) as want:  # a task per chunk
        fd.avg_iou(wh[:5], da.from_array(wh, chunks=(2500, 2)), client=client)
    paths.clear()
    with pytest.raises(ValueError) as got:
        fd.avg_iou(wh[:5], x, client=client)
    assert str(got.value) == str(want.value) and "row 13007: [nan, 4.0]" in str(got.value)
    # raised by the direct pass (or by the task of a chunk a worker took over), not run again as tasks
    assert set(paths) <= {"away"}


def test_a_failed_direct_pass_leaves_it_and_the_later_ones_to_tasks(monkeypatch):
    distributed = pytest.importorskip("distributed")
    from fastanchor.dask._api import DaskExecutor

    paths = _spy_on_passes(monkeypatch)
    calls = []
    call_direct = DaskExecutor._call_direct

    def fails_once(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("the worker went away")
        return call_direct(self, *args)

    monkeypatch.setattr(DaskExecutor, "_call_direct", fails_once)
    wh = tied_boxes(16, 30_000, np.float32)
    init = wh[:7].astype(np.float64)
    with (
        distributed.LocalCluster(n_workers=2, processes=False, threads_per_worker=2, dashboard_address=":0") as cl,
        distributed.Client(cl, set_as_default=False) as client,
    ):
        x = client.persist(da.from_array(wh, chunks=(2500, 2)))
        client.gather(distributed.futures_of(x))
        got = fd.kmeans_iou(x, 7, init=init, client=client)
    want = fastanchor.kmeans_iou(wh, 7, init=init)
    np.testing.assert_array_equal(got.anchors, want.anchors)
    assert (got.avg_iou, got.n_iter) == (want.avg_iou, want.n_iter)
    # two direct passes (with the tasks of the chunks a worker took over, if any), the third
    # failed and ran as tasks, as every later one
    i = paths.index("direct failed")
    assert [p for p in paths[:i] if p != "away"] == ["direct", "direct"]
    assert len(paths) > i + 2 and set(paths[i + 1 :]) == {"tasks"}


def test_a_direct_pass_stops_waiting_for_a_worker_that_left(monkeypatch):
    import threading

    distributed = pytest.importorskip("distributed")
    from fastanchor import _dask_tasks

    paths = _spy_on_passes(monkeypatch)
    wh = tied_boxes(17, 30_000, np.float32)
    init = wh[:7].astype(np.float64)
    calls, release = [], threading.Event()
    with (
        distributed.LocalCluster(n_workers=2, processes=False, threads_per_worker=1, dashboard_address=":0") as cl,
        distributed.Client(cl, set_as_default=False) as client,
    ):
        x = client.persist(da.from_array(wh, chunks=(2500, 2)))
        client.gather(distributed.futures_of(x))
        run, nthreads = client.run, client.nthreads

        def second_pass_hangs(function, *args, **kwargs):
            if function is _dask_tasks.direct_runs:
                calls.append(1)
                if len(calls) == 2:  # as a call to a worker that died a moment before waits
                    release.wait(600)
                    raise OSError("timed out connecting")
            return run(function, *args, **kwargs)

        def one_worker_gone(*args, **kwargs):
            workers = nthreads(*args, **kwargs)
            if len(calls) >= 2:  # the scheduler has seen the worker go
                workers.pop(sorted(workers)[0])
            return workers

        monkeypatch.setattr(client, "run", second_pass_hangs)
        monkeypatch.setattr(client, "nthreads", one_worker_gone)
        try:
            got = fd.kmeans_iou(x, 7, init=init, client=client)
        finally:
            release.set()
    want = fastanchor.kmeans_iou(wh, 7, init=init)
    np.testing.assert_array_equal(got.anchors, want.anchors)
    assert (got.avg_iou, got.n_iter) == (want.avg_iou, want.n_iter)
    i = paths.index("direct failed")
    assert [p for p in paths[:i] if p != "away"] == ["direct"]
    assert len(paths) > i + 2 and set(paths[i + 1 :]) == {"tasks"}


def _spy_on_held_groups(monkeypatch) -> list:
    """The groups every DaskExecutor finds (None: a pass per chunk), in the order found."""
    from fastanchor.dask._api import DaskExecutor

    found = []
    held_groups = DaskExecutor._held_groups

    def spy(self):
        found.append(held_groups(self))
        return found[-1]

    monkeypatch.setattr(DaskExecutor, "_held_groups", spy)
    return found


def test_passes_on_held_chunks_run_per_worker_thread(monkeypatch):
    distributed = pytest.importorskip("distributed")
    from fastanchor.dask import _api

    found = _spy_on_held_groups(monkeypatch)
    wh = tied_boxes(12, 30_000, np.float32)
    wh[::50] = [1.5, 1.0]  # dropped by autoanchor: the kept rows' passes too
    with (
        distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=2, dashboard_address=":0") as cl,
        distributed.Client(cl, set_as_default=False) as client,
    ):
        x = client.persist(da.from_array(wh, chunks=(2500, 2)))
        client.gather(distributed.futures_of(x))
        with pytest.warns(UserWarning, match="smaller than"):
            got = fd.autoanchor(
                x, 6, seed=3, init_sample=4000, search_sample=5000, generations=30, budget=0, client=client
            )
        with pytest.warns(UserWarning, match="smaller than"):
            want = fastanchor.autoanchor(wh, 6, seed=3, init_sample=4000, search_sample=5000, generations=30, budget=0)
        # one group per thread, together every chunk once, each ascending, on the one worker
        groups = found[0]
        assert groups is not None and len(groups) == 2
        assert sorted(i for _, g in groups for i in g) == list(range(12))
        assert all(g == sorted(g) for _, g in groups) and len({w for w, _ in groups}) == 1
        # not persisted: a task per chunk, as before
        found.clear()
        kept = wh[wh[:, 0] > 1.5]
        fd.avg_iou(want.anchors, da.from_array(kept, chunks=(2500, 2)), client=client)
        assert found == [None]
        # held, but in more runs of consecutive chunks than may reach the client: a tree
        y = client.persist(da.from_array(kept, chunks=(2500, 2)))
        client.gather(distributed.futures_of(y))
        fd.avg_iou(want.anchors, y, client=client)
        assert found[-1] is not None
        monkeypatch.setattr(_api, "HELD_MAX_RUNS", 1)
        assert fd.avg_iou(want.anchors, y, client=client) == fastanchor.avg_iou(want.anchors, kept)
        assert found[-1] is None
    np.testing.assert_array_equal(got.anchors, want.anchors)
    np.testing.assert_array_equal(got.kmeans_anchors, want.kmeans_anchors)
    assert got.evolved == want.evolved and got.kmeans == want.kmeans
    assert got.evolved_objectives == want.evolved_objectives and got.n_dropped == want.n_dropped >= 600


def test_held_chunks_are_shared_out_by_threads():
    from fastanchor.dask._api import _balanced

    # 6 and 4 chunks on two single-threaded workers: one moves, the highest beyond the share
    assert _balanced({"a": [0, 1, 2, 4, 6, 8], "b": [3, 5, 7, 9]}, {"a": 1, "b": 1}) == {
        "a": [0, 1, 2, 4, 6],
        "b": [3, 5, 7, 8, 9],
    }
    # even already: nothing moves
    assert _balanced({"a": [0, 1, 2], "b": [3, 4, 5]}, {"a": 1, "b": 1}) == {"a": [0, 1, 2], "b": [3, 4, 5]}
    # every chunk on one worker of three; shares by threads
    assert _balanced({"a": list(range(10)), "b": [], "c": []}, {"a": 1, "b": 1, "c": 1}) == {
        "a": [0, 1, 2, 3],
        "b": [4, 5, 6],
        "c": [7, 8, 9],
    }
    assert _balanced({"a": [0, 1, 2], "b": list(range(3, 10))}, {"a": 2, "b": 1}) == {
        "a": [0, 1, 2, 7, 8, 9],
        "b": [3, 4, 5, 6],
    }
    # fewer chunks than workers: the idle ones are left out
    assert _balanced({"a": [0], "b": [], "c": []}, {"a": 1, "b": 1, "c": 1}) == {"a": [0]}


def test_chunks_held_by_one_worker_run_on_both(cluster, monkeypatch):
    distributed = pytest.importorskip("distributed")

    _, client = cluster
    both_workers(client)
    found = _spy_on_held_groups(monkeypatch)
    paths = _spy_on_passes(monkeypatch)
    wh = tied_boxes(21, 30_000, np.float32)
    first = sorted(client.nthreads())[0]
    x = client.persist(da.from_array(wh, chunks=(3000, 2)), workers=[first])
    client.gather(distributed.futures_of(x))
    assert {w for ws in client.who_has(distributed.futures_of(x)).values() for w in ws} == {first}
    init = wh[:7].astype(np.float64)
    for update in ("mean", "median"):
        _same(
            fd.kmeans_iou(x, 7, init=init, update=update, client=client),
            fastanchor.kmeans_iou(wh, 7, init=init, update=update),
            client,
        )
    assert found[0] is not None and sorted(len(g) for _, g in found[0]) == [5, 5]
    assert len({w for w, _ in found[0]}) == 2
    # In the first pass, the other worker's share runs as tasks, which fetch its chunks (it holds
    # none of them); the first worker's runs directly, and so does every later pass, where the
    # states it built hold the rows.
    assert paths[:2] == ["away", "direct"] and set(paths) == {"away", "direct"}
    assert paths.count("direct") > 2 * paths.count("away")


@pytest.mark.parametrize("persisted", [False, True])
def test_ctrl_c_stops_a_fit_on_the_cluster(cluster, persisted):
    from conftest import interrupt_latency

    _, client = cluster
    wh = tied_boxes(3, 400_000, np.float32)  # 116 iterations from these anchors
    init = wh[:9].astype(np.float64)
    x = da.from_array(wh, chunks=(50_000, 2))
    if persisted:
        x = client.persist(x)
        client.gather(pytest.importorskip("distributed").futures_of(x))
    latency = interrupt_latency(lambda: fd.kmeans_iou(x, 9, init=init, max_iter=10_000, tol=0, client=client), 0.4)
    assert latency < 2.0
    # the client goes on working
    _same(
        fd.kmeans_iou(x, 9, init=init, max_iter=3, client=client),
        fastanchor.kmeans_iou(wh, 9, init=init, max_iter=3),
        client,
    )


@needs_data
def test_real_data_on_the_cluster(cluster):
    _, client = cluster
    paths = [p for p in real_box_files() if p.stem == "voc2007_train"]
    if not paths:
        pytest.skip("voc2007_train is absent")
    wh = clean(load_real(paths[0], 640))
    init = wh[np.random.default_rng(0).choice(len(wh), 9, replace=False)]
    want = fastanchor.kmeans_iou(wh, 9, init=init)
    _same(fd.kmeans_iou(da.from_array(wh, chunks=(1500, 2)), 9, init=init, client=client), want)


def test_numpy_arrays_and_npy_paths_are_chunked(tmp_path):
    wh = tied_boxes(9, 5000, np.float32)
    path = tmp_path / "wh.npy"
    np.save(path, wh)
    init = wh[:4].astype(np.float64)
    want = fastanchor.kmeans_iou(wh, 4, init=init)
    x = fd.as_dask_rows([path, wh[:10]], block_rows=1500)
    assert x.shape == (5010, 2) and x.chunks[0][:3] == (1500, 1500, 1500)
    _same(fd.kmeans_iou(path, 4, init=init, scheduler="sync"), want)
    assert fd.avg_iou(want.anchors, wh, scheduler="sync") == fastanchor.avg_iou(want.anchors, wh)


def test_worker_threads_read_npy_files_without_parsing_their_headers(tmp_path, header_parses_off_the_main_thread):
    """numpy parses a .npy header with ast.literal_eval, which CPython 3.11 cannot run on two
    threads at once: the tasks that read a file on a worker's threads map it as the client found it."""
    distributed = pytest.importorskip("distributed")
    wh = tied_boxes(11, 60_000, np.float32)
    w = np.random.default_rng(11).integers(1, 4, len(wh)).astype(np.float64)
    np.save(tmp_path / "wh.npy", np.asfortranarray(wh))
    np.save(tmp_path / "w.npy", w.astype(">f8"))
    init = wh[:5].astype(np.float64)
    want = fastanchor.kmeans_iou(wh, 5, init=init, max_iter=5)
    with (
        distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=2, dashboard_address=":0") as cl,
        distributed.Client(cl, set_as_default=False) as client,
    ):
        x = fd.as_dask_rows(tmp_path / "wh.npy", block_rows=7000)
        _same(fd.kmeans_iou(x, 5, init=init, max_iter=5, client=client), want, client)
        fit = fd.anchor_fitness(want.anchors, x, sample_weight=tmp_path / "w.npy", client=client)
        assert fit == fastanchor.anchor_fitness(want.anchors, wh, sample_weight=w)
    assert header_parses_off_the_main_thread == []


def test_npy_paths_travel_as_paths(tmp_path, cluster):
    import pickle

    _, client = cluster
    wh = tied_boxes(10, 400_000, np.float32)
    paths = []
    for i, part in enumerate(np.array_split(wh, 3)):
        paths.append(tmp_path / f"s{i}.npy")
        np.save(paths[-1], part)
    x = fd.as_dask_rows(paths, block_rows=50_000)
    # The graph holds the paths and row ranges, not the 3.2 MB of rows.
    assert len(pickle.dumps(dict(x.__dask_graph__()))) < 100_000
    assert x.chunks[0][:4] == (50_000, 50_000, 33_334, 50_000)  # chunks within each shard
    init = wh[:5].astype(np.float64)
    want = fastanchor.kmeans_iou(wh, 5, init=init, max_iter=5)
    _same(fd.kmeans_iou(paths, 5, init=init, max_iter=5, client=client), want)
