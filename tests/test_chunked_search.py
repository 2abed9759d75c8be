"""The mutation search and autoanchor over chunks (fastanchor.out_of_core, fastanchor.dask): the
in-memory results bit for bit, for any block size, chunking or number of workers; the chunk kernel
of the objectives against the numpy reference."""

from __future__ import annotations

import functools
import os
import pickle
import signal
import warnings

import numpy as np
import pytest
import reference as ref
from conftest import both_workers, clean, interrupt_latency, load_real, needs_data, real_box_files, tied_boxes
from hypothesis import given
from hypothesis import strategies as st

import fastanchor
from fastanchor import _chunked, _core, _evolve
from fastanchor import out_of_core as ooc

# distributed's servers and worker restarts leave sockets for the garbage collector.
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:Port .* is already in use:UserWarning"),
]


def _same_search(got: fastanchor.EvolveResult, want: fastanchor.EvolveResult) -> None:
    np.testing.assert_array_equal(got.anchors, want.anchors)
    np.testing.assert_array_equal(got.history, want.history)
    assert (got.fitness, got.bpr, got.aat, got.avg_iou) == (want.fitness, want.bpr, want.aat, want.avg_iou)
    assert (got.n_improved, got.initial_fitness, got.stopped) == (want.n_improved, want.initial_fitness, want.stopped)
    assert got.objective == want.objective


def _same_autoanchor(got: fastanchor.AutoAnchorResult, want: fastanchor.AutoAnchorResult) -> None:
    np.testing.assert_array_equal(got.anchors, want.anchors)
    np.testing.assert_array_equal(got.kmeans_anchors, want.kmeans_anchors)
    np.testing.assert_array_equal(got.history, want.history)
    assert got.kmeans == want.kmeans and got.evolved == want.evolved
    assert got.kmeans_objectives == want.kmeans_objectives
    assert got.evolved_objectives == want.evolved_objectives
    assert (got.n_boxes, got.n_dropped, got.n_small) == (want.n_boxes, want.n_dropped, want.n_small)


def _with_smalltied_boxes(wh: np.ndarray) -> np.ndarray:
    out = wh.copy()
    out[10:60] = 1.0  # dropped: below 2 pixels on both sides
    out[100:140, 0] = 2.5  # counted: below 3 pixels on one side
    out[-30:] = [1.5, 1.9]  # dropped, in the last block
    return out


# --------------------------------------------------------------------------------------------
# The chunk kernel: totals of any chunks add up to the whole set's, and equal the reference.


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 700),
    k=st.integers(1, 12),
    count=st.integers(1, 4),
    cuts=st.lists(st.integers(0, 700), max_size=4),
    objective=st.sampled_from(["fitness", "avg_iou", "recall"]),
)
def test_chunk_totals_add_up_to_the_reference(seed, n, k, count, cuts, objective):
    rng = np.random.default_rng(seed)
    wh = np.exp(rng.normal(3, 1.2, (n, 2)))
    cands = np.exp(rng.normal(3, 1.2, (count, k, 2)))
    bounds = [0, *sorted(min(c, n) for c in cuts), n]
    totals = [0] * count
    for b, e in zip(bounds[:-1], bounds[1:]):
        part = _chunked.task_objective_batch(wh[b:e], b, cands, objective, 4.0, 0.5, False, 1)
        totals = [x + y for x, y in zip(totals, part["totals"])]
    values = [float(t) / float(n * _chunked.FIX_SCALE) for t in totals]
    for c in range(count):
        want = fastanchor.anchor_objective(cands[c], wh, objective)
        assert values[c] == want
        if objective == "fitness":
            expect = ref.anchor_fitness(cands[c], wh)["fitness"]
        else:
            expect = ref.iou_objective(cands[c], wh, objective)
        assert values[c] == pytest.approx(expect, rel=1e-12, abs=1e-14)


def test_chunk_totals_with_more_anchors_than_the_pruning_holds():
    wh = tied_boxes(11, 3000)
    cands = np.exp(np.random.default_rng(12).normal(3, 1, (2, 70, 2)))
    for objective in ("fitness", "avg_iou", "recall"):
        got = _chunked.objective_values(ooc._executor(wh, 1000), cands, len(wh), objective, 4.0, 0.5, True)
        want = [fastanchor.anchor_objective(c, wh, objective, iou_weighted=True) for c in cands]
        assert got.tolist() == want


def test_chunk_kernel_rejects_bad_candidates():
    with pytest.raises(ValueError, match=r"shape \(count, k, 2\)"):
        _core._chunk_objective_batch(
            wh=np.ones((3, 2)),
            layout=None,
            candidates=np.ones((2, 2)),
            objective="fitness",
            thr=4.0,
            iou_thr=0.5,
            iou_weighted=False,
            n_threads=1,
        )


# --------------------------------------------------------------------------------------------
# Out of core.


@pytest.mark.parametrize("strategy", ["anchorwise", "yolov5"])
@pytest.mark.parametrize("objective", ["fitness", "avg_iou", "recall"])
def test_search_is_the_in_memory_search_for_any_block_size(strategy, objective):
    wh = tied_boxes(1, 9000, np.float32)
    init = fastanchor.kmeans_iou(wh, 6, seed=0, tol=1e-2).anchors
    want = fastanchor.evolve_anchors(init, wh, generations=120, strategy=strategy, objective=objective, seed=3)
    assert want.n_improved > 0
    for block_rows in (1000, 4096, 20_000):
        got = ooc.evolve_anchors(
            init, wh, generations=120, strategy=strategy, objective=objective, seed=3, block_rows=block_rows
        )
        _same_search(got, want)


def test_search_with_all_some_or_no_layouts_cached():
    wh = tied_boxes(12, 10_000, np.float32)
    init = wh[:6].astype(np.float64)
    want = fastanchor.evolve_anchors(init, wh, generations=80, seed=2)
    seen = []
    real_get = _chunked.CACHE.layout

    def counting_get(*args):
        layout = real_get(*args)
        seen.append(layout is not None)
        return layout

    # (a layout is reserved at 17 bytes per row before its rows are read: 4000 rows' worth holds
    # some of the blocks of 3000 rows, not all)
    for cache_bytes, cached in ((0, "none"), (17 * 4000, "some"), (1 << 30, "all")):
        seen.clear()
        _chunked.CACHE.layout = counting_get
        try:
            got = ooc.evolve_anchors(init, wh, generations=80, seed=2, block_rows=3000, cache_bytes=cache_bytes)
        finally:
            _chunked.CACHE.layout = real_get
        _same_search(got, want)
        assert {"none": not any(seen), "some": 0 < sum(seen) < len(seen), "all": all(seen)}[cached], cached
        assert _chunked.cached_bytes() == 0  # dropped when the search ends
    with pytest.raises(ValueError, match="cache_bytes"):
        ooc.evolve_anchors(init, wh, cache_bytes=-1)


def test_search_with_restarts_callback_and_threads():
    wh = tied_boxes(2, 2000)
    init = wh[:5]
    seen = []

    def stop_at_150(g, f, a):
        seen.append((g, f, a.copy()))
        return g < 150

    want = fastanchor.evolve_anchors(init, wh, generations=50, budget=400_000, seed=4, n_threads=1)
    assert len(want.history) == 200  # 150 generations added as restarts
    _same_search(ooc.evolve_anchors(init, wh, generations=50, budget=400_000, seed=4, block_rows=700), want)
    got = ooc.evolve_anchors(
        init, wh, generations=50, budget=400_000, seed=4, block_rows=700, n_threads=2, callback=stop_at_150
    )
    assert got.stopped and len(got.history) == 150 and seen[-1][0] == 150
    np.testing.assert_array_equal(got.history, want.history[:150])
    np.testing.assert_array_equal(got.anchors, seen[-1][2])


def test_autoanchor_with_restarts_is_the_in_memory_one():
    wh = _with_smalltied_boxes(tied_boxes(36, 4000, np.float32))
    with pytest.warns(UserWarning, match="of 4000 boxes are smaller than 3 pixels"):
        want = fastanchor.autoanchor(wh, 6, seed=3, n_init=3, generations=100, budget=0)
        got = ooc.autoanchor(wh, 6, seed=3, n_init=3, generations=100, budget=0, block_rows=999)
    _same_autoanchor(got, want)


def test_autoanchor_is_the_in_memory_autoanchor(tmp_path):
    wh = _with_smalltied_boxes(tied_boxes(3, 6000, np.float32))
    with pytest.warns(UserWarning, match="of 6000 boxes are smaller than 3 pixels") as w_mem:
        want = fastanchor.autoanchor(wh, 9, seed=5, budget=2**23)
    assert want.n_dropped >= 80 and len(want.history) > 1000
    shards = []
    for i, part in enumerate(np.array_split(wh, [7, 2500, 2501])):
        shards.append(tmp_path / f"s{i}.npy")
        np.save(shards[-1], part)
    for source, block_rows in ((wh, 1000), (shards, 4096), (wh, 100_000)):
        with pytest.warns(UserWarning) as w_ooc:
            got = ooc.autoanchor(source, 9, seed=5, budget=2**23, block_rows=block_rows)
        assert [str(x.message) for x in w_ooc] == [str(x.message) for x in w_mem]
        _same_autoanchor(got, want)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("search_sample", [_evolve.DEFAULT_SEARCH_SAMPLE, 4000])
def test_autoanchor_from_a_sample_is_the_in_memory_one(dtype, search_sample):
    # more kept boxes than init_sample: k-means on the sample in memory, then over the blocks; and
    # more than search_sample: the search in memory on its sample, the reports over the blocks
    wh = _with_smalltied_boxes(tied_boxes(4, 12_000, dtype))
    kw = dict(seed=6, init_sample=3000, search_sample=search_sample, generations=200, budget=2**22)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        want = fastanchor.autoanchor(wh, 6, **kw)
        a = ooc.autoanchor(wh, 6, block_rows=5000, **kw)
        b = ooc.autoanchor([wh[:4321], wh[4321:]], 6, block_rows=777, n_threads=1, **kw)
    _same_autoanchor(a, want)
    _same_autoanchor(b, want)
    assert a.evolved.fitness >= a.kmeans.fitness


def _passes(monkeypatch) -> list:
    """The names of the tasks of every pass a LocalExecutor runs from now on (a pass of two tasks
    as "first+second", a task on the kept rows by its own name)."""
    names: list = []
    real_run = _chunked.LocalExecutor.run

    def name(task, args):
        if task is _chunked.task_kept:
            return name(args[0], args[3:])
        if task is _chunked.task_pair:
            return "+".join(name(t, a) for t, a in args)
        return task.__name__

    def counting(self, task, args, merge):
        names.append(name(task, args))
        return real_run(self, task, args, merge)

    monkeypatch.setattr(_chunked.LocalExecutor, "run", counting)
    return names


@pytest.mark.parametrize("dropped", [False, True])
def test_chunked_autoanchor_from_samples_spends_no_pass_on_the_search_sample_or_first_medians(monkeypatch, dropped):
    # The search sample's rows are gathered by the first Lloyd pass over all rows, and that pass's
    # medians fall in windows sized from the k-means sample: no pass of their own.
    wh = tied_boxes(44, 300_000, np.float32, ties=False)
    if dropped:
        wh = _with_smalltied_boxes(wh)
    kw = dict(seed=1, init_sample=20_000, search_sample=30_000, generations=50, budget=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        want = fastanchor.autoanchor(wh, 9, **kw)
        names = _passes(monkeypatch)
        got = ooc.autoanchor(wh, 9, block_rows=40_000, **kw)
    _same_autoanchor(got, want)
    assert names[:3] == ["task_scan_small", "task_take", "task_lloyd+task_take"]
    assert names[3] == "task_lloyd"  # (a selection pass, in the first version)
    assert names.count("task_take") == 1 and names[-1] == "task_report"


def test_windows_widen_with_the_rows_up_to_a_cap():
    w = _chunked.WINDOW_MAX
    rows = _chunked.WINDOW_ROWS
    assert [_chunked.window_width(n) for n in (0, rows, 2 * rows, 16 * rows, 10**12)] == [w, w, 2 * w, 16 * w, 16 * w]


def test_chunked_autoanchor_runs_its_in_memory_steps_on_the_threads_asked(monkeypatch):
    seen = []
    real = _evolve.sampled_start

    def recording(*args):
        seen.append(args[7])  # threads
        return real(*args)

    monkeypatch.setattr(_evolve, "sampled_start", recording)
    wh = tied_boxes(48, 20_000, np.float32, ties=False) + 3.0  # (no small boxes)
    kw = dict(seed=1, init_sample=5000, search_sample=6000, generations=20, budget=0)
    got = ooc.autoanchor(wh, 5, n_threads=1, block_rows=4000, **kw)
    assert seen == [1]
    _same_autoanchor(got, fastanchor.autoanchor(wh, 5, **kw))


def test_a_rider_takes_the_first_pass_and_only_that():
    wh = tied_boxes(45, 10_000, np.float32)
    ex = _chunked.LocalExecutor([wh], 3000, 2)
    index = np.array([0, 5, 2999, 3000, 9999])
    rider = _chunked.Rider(ex, _chunked.task_take, (_chunked.index_per_chunk(index),), _chunked.merge_take)
    assert rider.n == ex.n and rider.release is not None
    anchors = wh[:4].astype(np.float64)

    def avg_iou(executor):
        return _chunked.finish_avg_iou(
            executor.run(_chunked.task_avg_iou, (anchors, ex.n), _chunked.merge_avg_iou), ex.n
        )

    want = avg_iou(ex)
    assert avg_iou(rider) == want
    np.testing.assert_array_equal(_chunked.taken_rows(rider.result), wh[index])
    taken = rider.result
    assert avg_iou(rider) == want
    assert rider.result is taken  # the rider ran once
    empty = _chunked.Rider(_chunked.LocalExecutor([wh[:0]], 3000), _chunked.task_take, (index,), _chunked.merge_take)
    assert empty.run(_chunked.task_avg_iou, (anchors, 0), _chunked.merge_avg_iou) is None and empty.result is None


def _index_seen(block, offset, index):
    got = index.index if isinstance(index, _chunked.RowIndex) else index  # every index the task was given
    return {offset: (len(_chunked.chunk_rows(block)), got.tolist())}


def _merge_seen(a, b):
    return {**a, **b}


def test_a_sorted_index_reaches_each_chunk_as_its_own_slice():
    # Each task gets only the indices of its own rows (of its kept rows, behind KeptRows), on the
    # local executor and on Dask's executor (in-process: the tasks are this module's functions),
    # nested in a rider's arguments too.
    da = pytest.importorskip("dask.array")
    from fastanchor.dask._api import DaskExecutor

    wh = _with_smalltied_boxes(tied_boxes(49, 10_000, np.float32))
    keep = _chunked.kept_mask(wh, _evolve.DROP_BELOW)
    counts = {o: int(keep[o : o + 3000].sum()) for o in range(0, len(wh), 3000)}
    index = np.sort(np.random.default_rng(0).choice(int(keep.sum()), 500, replace=False))
    for ex in (
        _chunked.LocalExecutor([wh], 3000, 2),
        DaskExecutor(da.from_array(wh, chunks=(3000, 2)), scheduler="sync"),
    ):
        kept = _chunked.KeptRows(ex, _evolve.DROP_BELOW, counts)
        seen = kept.run(_index_seen, (_chunked.index_per_chunk(index),), _merge_seen)
        for offset, (n, got) in seen.items():
            assert got == [i for i in index.tolist() if offset <= i < offset + n]
        assert sum(len(got) for _, got in seen.values()) == len(index)
        np.testing.assert_array_equal(kept.take(index), wh[keep][index])
        rider = _chunked.Rider(kept, _index_seen, (_chunked.index_per_chunk(index),), _merge_seen)
        rider.run(_index_seen, (np.arange(3),), _merge_seen)
        assert rider.result == seen


def test_row_indices_pickle_as_gaps_and_come_back_the_same():
    rng = np.random.default_rng(3)
    sample = np.sort(rng.choice(10_000_000, 1 << 16, replace=False)).astype(np.int64)
    for index in (sample, sample[:1], sample[:0], np.array([5, 70_000, 2**40]), sample + 2**33):
        data = pickle.dumps(_chunked.RowIndex(index), protocol=5)
        back = pickle.loads(data)
        assert isinstance(back, _chunked.RowIndex) and back.index.dtype == np.int64
        np.testing.assert_array_equal(back.index, index)
    # 2^16 of 10^7 rows: gaps up to a few thousand, two bytes an index; 2^20: one byte
    assert len(pickle.dumps(_chunked.RowIndex(sample), protocol=5)) < 2 * sample.size + 200
    dense = np.unique(rng.integers(0, 10_000_000, 1 << 20))
    assert len(pickle.dumps(_chunked.RowIndex(dense), protocol=5)) < dense.size + 200


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_report_kernel_gives_the_totals_of_the_fitness_and_objective_kernels(dtype):
    # 70,000 rows: more than one of the core's sub-blocks of 2^16; every 7th row below 2 pixels
    # on both sides (left out of a KeptOnDemand chunk, read in place)
    wh = tied_boxes(46, 70_000, dtype)
    wh[::7] = np.array([1.5, 1.999], dtype=dtype)
    sets = np.stack([wh[1:7], wh[8:14] * 1.5]).astype(np.float64)
    keep = _chunked.kept_mask(wh, 2.0)

    def expected(rows):
        rows = rows.astype(np.float64)
        out = {"metrics": [_chunked._u128(_core._chunk_fitness(wh=rows, anchors=a, thr=0.25)) for a in sets]}
        for name in ("avg_iou", "recall"):
            got = _core._chunk_objective_batch(
                wh=rows,
                layout=None,
                candidates=sets,
                objective=name,
                thr=0.25,
                iou_thr=0.5,
                iou_weighted=True,
                n_threads=1,
            )
            out[name] = _chunked._u128(got)
        return out

    kept = _chunked.KeptOnDemand(wh, 2.0, int(keep.sum()))
    assert _chunked.task_report(kept, 0, sets, 0.25, 0.5, True) == expected(wh[keep])
    assert _chunked.task_report(wh, 0, sets, 0.25, 0.5, True) == expected(wh)
    # sums of any pieces are the whole's
    parts = [_chunked.task_report(wh[b : b + 999], b, sets, 0.25, 0.5, True) for b in range(0, len(wh), 999)]
    assert functools.reduce(_chunked.merge_report, parts) == expected(wh)
    # a chunk with no kept row adds nothing
    none_kept = _chunked.task_report(_chunked.KeptOnDemand(wh[::7], 2.0, 0), 0, sets, 0.25, 0.5, True)
    assert none_kept == _chunked.task_report(wh[:0], 0, sets, 0.25, 0.5, True)
    assert none_kept["metrics"][0] == [0] * 5 and none_kept["recall"] == [0, 0]


@given(st.lists(st.tuples(*[st.sampled_from([0.5, 1.999, 2.0, 2.001, 2.999, 3.0, 3.5, 1e30])] * 2), max_size=40))
def test_kept_and_small_masks_are_any_side_rules(pairs):
    rows = np.array(pairs, dtype=np.float32).reshape(-1, 2)
    np.testing.assert_array_equal(_chunked.kept_mask(rows, 2.0), (rows >= 2.0).any(axis=1))
    assert _chunked.small_count(rows, 3.0) == int((rows < 3.0).any(axis=1).sum())


@given(
    st.lists(st.tuples(*[st.sampled_from([0.5, 1.999, 2.0, 2.001, 3.5, 1e9])] * 2), max_size=40),
    st.sampled_from([np.float32, np.float64, np.int32]),
)
def test_kept_rows_of_a_chunk_are_its_masked_rows(pairs, dtype):
    rows = np.array(pairs, dtype=np.float64).reshape(-1, 2).astype(dtype)
    want = _chunked.chunk_rows(rows)[_chunked.kept_mask(_chunked.chunk_rows(rows), 2.0)]
    got = _chunked.KeptOnDemand(rows, 2.0, len(want)).load()
    assert got.dtype == (np.float32 if dtype == np.float32 else np.float64) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)
    for wrong in {len(want) - 1, len(want) + 1} - {-1, len(rows) + 1}:
        with pytest.raises(ValueError, match=f"the chunk holds {len(want)} kept rows, not {wrong}"):
            _core._chunk_kept_rows(wh=_chunked.chunk_rows(rows), drop_below=2.0, count=wrong)
    with pytest.raises(ValueError, match="count must be within"):
        _core._chunk_kept_rows(wh=_chunked.chunk_rows(rows), drop_below=2.0, count=len(rows) + 1)


_SIDES = st.sampled_from(
    [1e-29, 0.5, 1.999, 2.0 - 2**-40, 2.0, 2.0 + 2**-40, 2.999, 3.0, 3.0000001, 640.3, 1e29]
) | st.floats(1e-3, 1e4)


@given(st.lists(st.tuples(_SIDES, _SIDES), min_size=1, max_size=60), st.sampled_from([np.float32, np.float64]))
def test_scan_of_a_chunk_is_numpys(pairs, dtype):
    rows = np.array(pairs, dtype=np.float64).astype(dtype)
    scan, small = _chunked._scanned(rows, 5, "wh", 3.0, 2.0)
    keys = rows.astype(np.float32).view(np.uint32)
    assert scan == {
        "n": len(rows),
        "lo": [int(keys[:, 0].min()), int(keys[:, 1].min())],
        "hi": [int(keys[:, 0].max()), int(keys[:, 1].max())],
        "f32": dtype == np.float32,
    }
    assert small == {
        "small": int((rows.astype(np.float64) < 3.0).any(axis=1).sum()),
        "kept": {5: int((rows.astype(np.float64) >= 2.0).any(axis=1).sum())},
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scan_of_a_chunk_decides_the_bounds_as_doubles(dtype):
    # float32 rows are compared in float32 against thresholds that must decide as the doubles do
    edges = [np.float32(1e-30), np.float32(1e30), np.float32(2.0), np.float32(3.0)]
    values = [np.nextafter(e, d) for e in edges for d in (np.float32(0), np.float32(np.inf))] + edges
    for v in np.array(values, dtype=np.float32).astype(dtype):
        for rows in (np.array([[v, 640.0]], dtype=dtype), np.array([[v, v]], dtype=dtype)):
            wide = rows.astype(np.float64)
            valid = bool(((wide >= _chunked.MIN_SIDE) & (wide <= _chunked.MAX_SIDE)).all())
            if not valid:
                with pytest.raises(ValueError, match="bad row"):
                    _chunked._scanned(rows, 0, "wh", 3.0, 2.0)
                continue
            _, small = _chunked._scanned(rows, 0, "wh", 3.0, 2.0)
            assert small == {"small": int((wide < 3.0).any()), "kept": {0: int((wide >= 2.0).any())}}


@pytest.mark.parametrize("bad", [np.nan, np.inf, 0.0, -1.0, 1e-31, 2e30])
def test_scan_of_a_chunk_names_its_first_bad_row(bad):
    rows = np.full((6, 2), 4.0)
    rows[3, 1] = rows[5, 0] = bad
    with pytest.raises(ValueError, match=r"wh has 2 bad rows in the chunk of rows 10 to 15: .* the first is row 13"):
        _chunked.task_scan_small(rows, 10, "wh", 3.0, 2.0)


def test_autoanchor_refuses_a_sample_with_too_few_distinct_boxes():
    # 3 shapes in bulk and 2 rare ones: the sample of 50 holds 3 (in memory, k-means then fits all)
    wh = np.r_[np.repeat([[10.0, 20.0], [30.0, 15.0], [50.0, 50.0]], 2000, axis=0), [[100.0, 120.0], [7.0, 90.0]]]
    with pytest.raises(ValueError, match="k=5 is larger than the number of distinct boxes in the sample of 50"):
        ooc.autoanchor(wh, 5, seed=0, init_sample=50, generations=20, block_rows=1000)
    assert fastanchor.autoanchor(wh, 5, seed=0, init_sample=50, generations=20).anchors.shape == (5, 2)


def test_search_errors():
    wh = tied_boxes(5, 100)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(100,\) to match the boxes"):
        ooc.autoanchor(wh, 3, sample_weight=np.ones(99))
    with pytest.raises(ValueError, match="objective"):
        ooc.evolve_anchors(wh[:3], wh, objective="map")
    with pytest.raises(ValueError, match="n_init must be >= 1"):
        ooc.autoanchor(wh, 3, n_init=0)
    with pytest.raises(ValueError, match="all 100 boxes are smaller than 2 pixels"), pytest.warns(UserWarning):
        ooc.autoanchor(np.full((100, 2), 1.5), 3)
    bad = wh.copy()
    bad[57] = [np.nan, 3.0]
    with pytest.raises(ValueError, match="row 57"):
        ooc.autoanchor(bad, 3, block_rows=40)


def test_search_stops_on_ctrl_c():
    wh = tied_boxes(6, 200_000, np.float32)
    init = wh[:9].astype(np.float64)
    latency = interrupt_latency(lambda: ooc.evolve_anchors(init, wh, generations=10**6, block_rows=50_000))
    assert latency < 2.0


def test_a_task_that_outlives_its_search_keeps_nothing():
    # A task Ctrl-C left running in a thread pool may ask for its chunk's layout, state or labels
    # after the search or fit ended and dropped its token: it gets none kept (the task works on).
    cache = _chunked.ChunkCache()
    wh = tied_boxes(7, 5000, np.float32)
    anchors = wh[:4].astype(np.float64)
    assert cache.layout("live", 1 << 30, 0, wh, 1) is not None and cache.nbytes() > 0
    cache.drop("live")
    assert cache.nbytes() == 0
    assert cache.layout("live", 1 << 30, 0, wh, 1) is None
    assert cache.lloyd_state("live", 1 << 30, 0, len(wh), lambda: wh, 4, "mean", None) is None
    cache.keep_labels("live", 1 << 30, 0, np.zeros(len(wh), np.int32), anchors)
    assert cache.labels("live", 0, len(wh), anchors) is None and cache.nbytes() == 0
    # only the last DROPPED_KEPT tokens are remembered
    cache.DROPPED_KEPT = 2
    for token in ("a", "b", "c"):
        cache.drop(token)
    assert cache.layout("a", 1 << 30, 0, wh, 1) is not None and cache.layout("b", 1 << 30, 0, wh, 1) is None


@needs_data
def test_real_data_autoanchor_out_of_core():
    for path in real_box_files()[:3]:
        wh = clean(load_real(path, 640)).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            want = fastanchor.autoanchor(wh, 9, seed=1, budget=0)
            got = ooc.autoanchor(wh, 9, seed=1, budget=0, block_rows=max(1, len(wh) // 3))
        if len(wh) - got.n_dropped <= _chunked.DEFAULT_INIT_SAMPLE:
            _same_autoanchor(got, want)
        else:
            assert got.evolved.fitness == pytest.approx(want.evolved.fitness, abs=5e-3)


# --------------------------------------------------------------------------------------------
# Dask.


@pytest.mark.parametrize("strategy", ["anchorwise", "yolov5"])
def test_dask_search_is_the_in_memory_search(strategy):
    da = pytest.importorskip("dask.array")
    fd = pytest.importorskip("fastanchor.dask")
    wh = tied_boxes(7, 8000)
    init = wh[:7]
    want = fastanchor.evolve_anchors(init, wh, generations=64, strategy=strategy, objective="avg_iou", seed=8)
    for chunks in (8000, (3000, 0, 1, 4999)):
        x = da.from_array(wh, chunks=(chunks, 2))
        got = fd.evolve_anchors(
            init, x, generations=64, strategy=strategy, objective="avg_iou", seed=8, scheduler="threads"
        )
        _same_search(got, want)


def test_dask_autoanchor_on_one_and_two_workers(cluster):
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    fd = pytest.importorskip("fastanchor.dask")
    _, client = cluster
    wh = _with_smalltied_boxes(tied_boxes(9, 20_000, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        want = fastanchor.autoanchor(wh, 9, seed=2, generations=160, budget=0)
        samples = dict(init_sample=5000, search_sample=10_000)
        sampled = fastanchor.autoanchor(wh, 9, seed=2, generations=160, budget=0, **samples)
        x = da.from_array(wh, chunks=(6000, 2)).persist()
        _same_autoanchor(fd.autoanchor(x, 9, seed=2, generations=160, client=client), want)
        _same_autoanchor(fd.autoanchor(x, 9, seed=2, generations=160, client=client, **samples), sampled)
        with (
            distributed.LocalCluster(
                n_workers=1, processes=True, threads_per_worker=1, dashboard_address=":0", silence_logs=40
            ) as one,
            distributed.Client(one, set_as_default=False) as c1,
        ):
            x1 = da.from_array(wh, chunks=(3333, 2))
            got = fd.autoanchor(x1, 9, seed=2, generations=160, client=c1)
            got_sampled = fd.autoanchor(x1, 9, seed=2, generations=160, client=c1, **samples)
    _same_autoanchor(got, want)
    _same_autoanchor(got_sampled, sampled)


def test_dask_worker_lost_during_the_search_changes_nothing(cluster):
    da = pytest.importorskip("dask.array")
    fd = pytest.importorskip("fastanchor.dask")
    _, client = cluster
    both_workers(client)
    wh = tied_boxes(10, 30_000)
    init = wh[:8]
    want = fastanchor.evolve_anchors(init, wh, generations=96, seed=11)
    pids = client.run(os.getpid)
    killed = []

    def kill_at_40(g, f, a):
        if g == 40 and not killed:
            worker = sorted(pids)[0]
            killed.append(worker)
            os.kill(pids[worker], signal.SIGKILL)  # its nanny starts a new worker

    x = da.from_array(wh, chunks=(4000, 2))
    got = fd.evolve_anchors(init, x, generations=96, seed=11, client=client, callback=kill_at_40)
    assert killed
    _same_search(got, want)
    both_workers(client)
    # The workers dropped the search's cached layouts when it ended.
    assert set(client.run(_chunked.cached_bytes).values()) == {0}


def test_the_cluster_example_runs():
    pytest.importorskip("distributed")
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "dask_cluster.py"
    out = subprocess.run([sys.executable, str(script), "40000"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Dask and out of core agree bit for bit: True" in out.stdout
