"""Out-of-core fits and metrics (fastanchor.out_of_core, the engine in fastanchor._chunked): the
in-memory results bit for bit, for any block size, shards and merge order."""

from __future__ import annotations

import functools
import pickle
import uuid

import numpy as np
import pytest
import reference as ref
from conftest import clean, load_real, needs_data, real_box_files, tied_boxes

import fastanchor
from fastanchor import _chunked, _core
from fastanchor import out_of_core as ooc


def _same(got: fastanchor.KMeansResult, want: fastanchor.KMeansResult) -> None:
    np.testing.assert_array_equal(got.anchors, want.anchors)
    np.testing.assert_array_equal(np.asarray(got.labels), want.labels)
    assert got.avg_iou == want.avg_iou
    assert (got.n_iter, got.converged) == (want.n_iter, want.converged)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("update", ["mean", "median"])
def test_explicit_init_is_the_in_memory_fit_for_any_block_size(dtype, update):
    wh = tied_boxes(1, 20_000, dtype)
    init = wh[np.random.default_rng(2).choice(len(wh), 7, replace=False)].astype(np.float64)
    want = fastanchor.kmeans_iou(wh, 7, init=init, update=update)
    assert want.n_iter > 3
    for block_rows in (999, 4096, 6000, 50_000):
        _same(ooc.kmeans_iou(wh, 7, init=init, update=update, block_rows=block_rows), want)
    for n_threads in (1, 3):  # blocks in sequence, or on threads merging in block order
        _same(ooc.kmeans_iou(wh, 7, init=init, update=update, block_rows=999, n_threads=n_threads), want)


def test_the_numpy_reference_on_a_small_fit():
    wh = tied_boxes(3, 600)
    init = wh[:5].copy()
    want = ref.lloyd(wh, init, update="median")
    got = ooc.kmeans_iou(wh, 5, init=init, block_rows=97)
    np.testing.assert_array_equal(got.anchors, want["anchors"])
    np.testing.assert_array_equal(got.labels, want["labels"])
    assert (got.n_iter, got.converged) == (want["n_iter"], want["converged"])


def test_memmap_npy_path_and_shards(tmp_path):
    wh = tied_boxes(4, 12_000, np.float32)
    path = tmp_path / "wh.npy"
    np.save(path, wh)
    shards = []
    for i, part in enumerate(np.array_split(wh, [3000, 3001, 9000])):
        shards.append(tmp_path / f"shard{i}.npy")
        np.save(shards[-1], part)
    init = wh[[5, 50, 500, 5000, 9000, 11_000]].astype(np.float64)
    want = fastanchor.kmeans_iou(wh, 6, init=init)
    for source in (path, str(path), np.load(path, mmap_mode="r"), shards):
        _same(ooc.kmeans_iou(source, 6, init=init, block_rows=2500), want)
    assert ooc.avg_iou(want.anchors, shards) == fastanchor.avg_iou(want.anchors, wh)
    assert ooc.anchor_fitness(want.anchors, path) == fastanchor.anchor_fitness(want.anchors, wh)


@pytest.mark.parametrize("layout", ["C", "F", "big-endian"])
def test_tasks_read_npy_files_without_parsing_their_headers(tmp_path, header_parses_off_the_main_thread, layout):
    wh = tied_boxes(5, 30_000, np.float32)
    w = np.random.default_rng(5).integers(1, 4, len(wh)).astype(np.float64)
    stored = {"C": wh, "F": np.asfortranarray(wh), "big-endian": wh.astype(">f4")}[layout]
    np.save(tmp_path / "wh.npy", stored)
    for i, part in enumerate(np.array_split(stored, [7001])):
        np.save(tmp_path / f"s{i}.npy", part)
    np.save(tmp_path / "w.npy", w if layout == "C" else w.astype(">f8"))
    init = wh[[1, 10, 100, 1000, 10_000]].astype(np.float64)
    want = fastanchor.kmeans_iou(wh, 5, init=init, update="median")
    for source in (tmp_path / "wh.npy", [tmp_path / "s0.npy", tmp_path / "s1.npy"]):
        _same(ooc.kmeans_iou(source, 5, init=init, update="median", block_rows=2000, n_threads=2), want)
        got = ooc.anchor_fitness(want.anchors, source, sample_weight=tmp_path / "w.npy", block_rows=3000, n_threads=2)
        assert got == fastanchor.anchor_fitness(want.anchors, wh, sample_weight=w)
    assert header_parses_off_the_main_thread == []


def test_seeded_init_does_not_depend_on_the_blocks():
    wh = tied_boxes(5, 30_000)
    # All rows in the sample: the in-memory fit from the same seed.
    _same(ooc.kmeans_iou(wh, 6, seed=11, block_rows=7000), fastanchor.kmeans_iou(wh, 6, seed=11))
    # A sample of the rows: the same result whatever the blocks and shards.
    a = ooc.kmeans_iou(wh, 6, seed=11, init_sample=5000, block_rows=7000)
    b = ooc.kmeans_iou([wh[:12_345], wh[12_345:]], 6, seed=11, init_sample=5000, block_rows=4096)
    _same(b, a)
    c = ooc.kmeans_iou(wh, 6, seed=12, init_sample=5000, block_rows=7000)
    assert not np.array_equal(a.anchors, c.anchors)


@pytest.mark.parametrize("update", ["mean", "median"])
def test_empty_clusters_tol_and_max_iter_as_in_memory(update):
    wh = tied_boxes(6, 8000)
    init = np.concatenate([wh[:4], [[1e6, 1e6], [2e6, 1e6]]])  # two anchors with no box
    for kw in ({}, {"tol": 1e-3}, {"max_iter": 0}, {"max_iter": 2}):
        want = fastanchor.kmeans_iou(wh, 6, init=init, update=update, **kw)
        _same(ooc.kmeans_iou(wh, 6, init=init, update=update, block_rows=1500, **kw), want)


def test_median_refines_crowded_bins(monkeypatch):
    # Few values gathered at a time: the median's key range is narrowed by finer histograms.
    monkeypatch.setattr(_chunked, "GATHER_MAX", 16)
    for dtype in (np.float32, np.float64):
        wh = tied_boxes(7, 10_000, dtype)
        init = wh[:8].astype(np.float64)
        want = fastanchor.kmeans_iou(wh, 8, init=init, update="median")
        _same(ooc.kmeans_iou(wh, 8, init=init, update="median", block_rows=3000), want)


def _partials_in_random_orders(task, merge, wh, args, rng):
    """Partials of random chunkings of wh, merged in random orders (left folds and pair trees)."""
    results = []
    n = len(wh)
    for _ in range(4):
        cuts = np.sort(rng.integers(0, n + 1, int(rng.integers(1, 9))))
        bounds = np.unique(np.concatenate([[0], cuts, [n]]))
        parts = [task(wh[b:e], int(b), *args) for b, e in zip(bounds[:-1], bounds[1:])]
        parts = [parts[i] for i in rng.permutation(len(parts))]
        while len(parts) > 1:
            i = int(rng.integers(0, len(parts) - 1))
            parts[i : i + 2] = [merge(parts[i], parts[i + 1])]
        results.append(parts[0])
    return results


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avg_iou_and_fitness_partials_merge_to_the_in_memory_values(dtype):
    rng = np.random.default_rng(8)
    wh = tied_boxes(9, 21_000, dtype)
    anchors = fastanchor.kmeans_iou(wh, 9, seed=0).anchors
    want_iou = fastanchor.avg_iou(anchors, wh)
    want_fit = fastanchor.anchor_fitness(anchors, wh)
    n = len(wh)
    for part in _partials_in_random_orders(_chunked.task_avg_iou, _chunked.merge_avg_iou, wh, (anchors, n), rng):
        assert _chunked.finish_avg_iou(part, n) == want_iou
    for part in _partials_in_random_orders(_chunked.task_fitness, _chunked.merge_fitness, wh, (anchors, 4.0), rng):
        assert _chunked.finish_fitness(part, n) == (want_fit.fitness, want_fit.bpr, want_fit.aat, want_fit.avg_iou)
    # And the numpy reference, for the values it defines exactly.
    want_ref = ref.anchor_fitness(anchors, wh.astype(np.float64))
    assert ooc.anchor_fitness(anchors, wh, block_rows=5000).bpr == want_ref["bpr"]


def test_mean_partials_merge_in_any_order():
    rng = np.random.default_rng(10)
    wh = tied_boxes(11, 9000, np.float32)
    anchors = wh[:6].astype(np.float64)
    merged = _partials_in_random_orders(
        _chunked.task_lloyd, _chunked.merge_lloyd, wh, (anchors, None, "mean", None), rng
    )
    updates = [_chunked.mean_update(p, anchors)[0] for p in merged]
    want = fastanchor._core.lloyd_trace(wh, None, anchors[None], "mean", 1)["updated"][0]
    for u in updates:
        np.testing.assert_array_equal(u, want)


def test_errors_name_the_argument_and_the_row():
    wh = tied_boxes(12, 5000)
    wh[4321, 1] = -1.0
    with pytest.raises(ValueError, match=r"the first is row 4321: \["):
        ooc.kmeans_iou(wh, 3, init=wh[:3] * 0 + 1, block_rows=1000)
    good = tied_boxes(12, 100)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(100,\) to match the boxes"):
        ooc.kmeans_iou(good, 3, update="mean", sample_weight=np.arange(99.0))
    with pytest.raises(ValueError, match="k=200 is larger than the number of boxes"):
        ooc.kmeans_iou(good, 200, seed=0)
    with pytest.raises(ValueError, match="init has 2 anchors but k=3"):
        ooc.kmeans_iou(good, 3, init=good[:2])
    with pytest.raises(ValueError, match="update must be one of"):
        ooc.kmeans_iou(good, 3, update="mode")
    with pytest.raises(ValueError, match="must have shape"):
        ooc.avg_iou(good[:2], good[:, :1])
    with pytest.raises(ValueError, match="n_init must be 1 when init is an array"):
        ooc.kmeans_iou(good, 3, init=good[:3], n_init=3)
    with pytest.raises(ValueError, match="n_init must be >= 1"):
        ooc.kmeans_iou(good, 3, n_init=0)


def test_labels_can_be_left_out():
    wh = tied_boxes(13, 3000)
    got = ooc.kmeans_iou(wh, 4, init=wh[:4], return_labels=False)
    assert got.labels.shape == (0,)
    np.testing.assert_array_equal(got.anchors, fastanchor.kmeans_iou(wh, 4, init=wh[:4]).anchors)


@needs_data
@pytest.mark.parametrize("name", ["voc2007_train", "coco128"])
@pytest.mark.parametrize("update", ["mean", "median"])
def test_real_data(name, update):
    paths = [p for p in real_box_files() if p.stem == name]
    if not paths:
        pytest.skip(f"{name} is absent")
    wh = clean(load_real(paths[0], 640))
    init = wh[np.random.default_rng(0).choice(len(wh), 9, replace=False)]
    want = fastanchor.kmeans_iou(wh, 9, init=init, update=update)
    _same(ooc.kmeans_iou(wh, 9, init=init, update=update, block_rows=1000), want)
    assert ooc.anchor_fitness(want.anchors, wh, block_rows=777) == fastanchor.anchor_fitness(want.anchors, wh)


def test_fastanchor_imports_without_dask_and_fastanchor_dask_says_what_to_install():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['dask'] = None\n"
        "import fastanchor, fastanchor.out_of_core\n"
        "try:\n"
        "    import fastanchor.dask\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "fastanchor[dask]"' in out


def test_ctrl_c_stops_a_chunked_fit():
    from conftest import interrupt_latency

    wh = tied_boxes(14, 1_000_000, np.float32)  # about 50 iterations of 20+ ms: seconds
    init = wh[:9].astype(np.float64)
    lat = interrupt_latency(lambda: ooc.kmeans_iou(wh, 9, init=init, max_iter=10_000, tol=0, block_rows=50_000), 0.3)
    assert lat < 2.0


def test_the_mean_refuses_ranges_its_exact_sums_do_not_hold():
    wh = np.array([[1e-12, 1.0], [1e12, 2.0], [3.0, 4.0]])
    with pytest.raises(ValueError, match="update='mean' over chunks needs box sides within a ratio"):
        ooc.kmeans_iou(wh, 2, init=wh[:2], update="mean")
    ooc.kmeans_iou(wh, 2, init=wh[:2], update="median")  # the median has no such limit


def test_median_of_doubles_that_share_a_float32_key(monkeypatch):
    # Many distinct float64 sides round to the same float32: the narrowed key range ends as one
    # key whose values are gathered and compared as doubles.
    monkeypatch.setattr(_chunked, "GATHER_MAX", 8)
    rng = np.random.default_rng(15)
    n = 6000
    wh = np.empty((n, 2))
    wh[:, 0] = 10.0 + rng.integers(0, 50, n) * 2.0**-40
    wh[:, 1] = np.exp(rng.normal(2, 0.3, n))
    wh[::3, 0] = np.exp(rng.normal(3, 0.5, n))[::3]
    init = wh[[0, 1, 3, 6]]
    for update in ("median", "mean"):
        want = fastanchor.kmeans_iou(wh, 4, init=init, update=update)
        _same(ooc.kmeans_iou(wh, 4, init=init, update=update, block_rows=1111), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_misaligned_rows_give_the_aligned_results(dtype):
    # numpy allows buffers at odd byte offsets (views, arrays unpickled in place from a network
    # frame, as Dask workers receive them); the core must not load doubles from them as such.
    rng = np.random.default_rng(31)
    wh = np.exp(rng.normal(3.0, 0.7, (3000, 2))).astype(dtype)
    buf = np.zeros(wh.nbytes + 1, np.uint8)
    odd = buf[1:].view(dtype).reshape(wh.shape)
    odd[:] = wh
    assert not odd.flags.aligned and np.array_equal(odd, wh)
    init = wh[:6].astype(np.float64)
    want = fastanchor.kmeans_iou(wh, 6, init=init)
    for got in (fastanchor.kmeans_iou(odd, 6, init=init), ooc.kmeans_iou(odd, 6, init=init, block_rows=1000)):
        np.testing.assert_array_equal(got.anchors, want.anchors)
        np.testing.assert_array_equal(got.labels, want.labels)
    assert ooc.avg_iou(want.anchors, odd, block_rows=700) == fastanchor.avg_iou(want.anchors, wh)
    assert ooc.anchor_fitness(want.anchors, odd, block_rows=700) == fastanchor.anchor_fitness(want.anchors, wh)


def test_chunk_kernels_take_misaligned_anchors():
    # The partials' anchors arrive unpickled on Dask workers, possibly at odd offsets.
    rng = np.random.default_rng(32)
    wh = np.exp(rng.normal(3.0, 0.7, (500, 2)))
    anchors = wh[:5].copy()
    buf = np.zeros(anchors.nbytes + 3, np.uint8)
    odd = buf[3:].view(np.float64).reshape(anchors.shape)
    odd[:] = anchors
    assert not odd.flags.aligned
    kw = dict(key_lo_w=0, key_lo_h=0, shift_w=0, shift_h=0, bins=1, want_labels=True, mode="assign")
    a = fastanchor._core._chunk_lloyd(wh=wh, anchors=anchors, prev_anchors=None, **kw)
    b = fastanchor._core._chunk_lloyd(wh=wh, anchors=odd, prev_anchors=odd, **kw)
    np.testing.assert_array_equal(a["labels"], b["labels"])
    np.testing.assert_array_equal(
        fastanchor._core._chunk_fitness(wh=wh, anchors=anchors, thr=4.0),
        fastanchor._core._chunk_fitness(wh=wh, anchors=odd, thr=4.0),
    )


@pytest.mark.parametrize("update", ["mean", "median"])
def test_labels_kept_between_passes_change_nothing(update, monkeypatch):
    wh = tied_boxes(21, 12_000, np.float32)
    init = wh[[1, 10, 100, 1000, 5000, 9000]].astype(np.float64)
    want = fastanchor.kmeans_iou(wh, 6, init=init, update=update)
    assert want.n_iter > 3
    calls = []
    real = _core._chunk_lloyd

    def counting(**kw):
        calls.append(kw["prev_anchors"] is None)
        return real(**kw)

    monkeypatch.setattr(_core, "_chunk_lloyd", counting)
    for cache_bytes, relabelled in ((0, "all"), (5000, "some"), (200_000, "states"), (1 << 30, "states")):
        calls.clear()
        got = ooc.kmeans_iou(wh, 6, init=init, update=update, block_rows=4000, cache_bytes=cache_bytes)
        _same(got, want)
        # Passes after the first label against the previous anchors only where no labels were kept;
        # where the chunks' Lloyd states are kept, the stateless kernel labels only at the end.
        later = calls[3 : -len(range(0, 12_000, 4000))]  # past the first pass, before the labels pass
        if relabelled == "states":
            assert len(calls) == 3 or (cache_bytes < 1 << 30 and 3 < len(calls) < 3 * (want.n_iter + 2))
        else:
            assert {"all": not any(later), "some": 0 < sum(later) < len(later)}[relabelled]
        assert _chunked.cached_bytes() == 0


def test_select_with_given_labels():
    wh = tied_boxes(22, 500)
    anchors = wh[:4].copy()
    plan = dict(
        first=np.zeros((2, 2, 4), np.int64),
        last=np.full((2, 2, 4), 2**32 - 1, np.int64),
        gather=np.ones((2, 2, 4), bool),
        refine=np.zeros((2, 2, 4), bool),
        shift=np.zeros((2, 2, 4), np.int64),
        bins=1024,
    )
    labels = _chunked.assign_labels(wh, anchors)
    mode = np.ones((2, 2, 4), np.int8)
    common = dict(wh=wh, anchors=anchors, first=plan["first"], last=plan["last"], mode=mode, shift=plan["shift"])
    a = _core._chunk_select(labels=None, bins=1024, **common)
    b = _core._chunk_select(labels=labels, bins=1024, **common)
    for x, y in zip(a["values"], b["values"]):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="one value per row"):
        _core._chunk_select(labels=labels[:-1], bins=1024, **common)
    bad = labels.copy()
    bad[7] = 4
    with pytest.raises(ValueError, match=r"in \[0, k\)"):
        _core._chunk_select(labels=bad, bins=1024, **common)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("window_max", [1 << 12, 4])
def test_median_windows_spare_selection_passes_and_change_nothing(dtype, window_max, monkeypatch):
    # Each Lloyd pass gathers the values around each anchor: once the anchors settle, the medians
    # are read from them and the iteration needs no selection pass. Tiny windows (most medians fall
    # outside them) and overflowing ones (a spike of equal values, a tiny cap) fall back to the
    # selection passes. Either way the fit is the in-memory one, bit for bit.
    monkeypatch.setattr(_chunked, "WINDOW_MAX", window_max)
    monkeypatch.setattr(_chunked, "WINDOW_MIN_DENSITY", 1)  # (sparse histograms: few boxes)
    rng = np.random.default_rng(33)
    wh = tied_boxes(33, 30_000, dtype)
    wh[rng.random(len(wh)) < 0.1, 1] = 48.0  # a spike of equal heights
    init = wh[rng.choice(len(wh), 6, replace=False)].astype(np.float64)
    want = fastanchor.kmeans_iou(wh, 6, init=init, max_iter=40)
    assert want.n_iter > 10
    passes = {"lloyd": 0, "select": 0}
    real_run = _chunked.LocalExecutor.run
    names = {_chunked.task_lloyd: "lloyd", _chunked.task_select: "select"}

    def counting(self, task, args, merge):
        if task in names:
            passes[names[task]] += 1
        return real_run(self, task, args, merge)

    monkeypatch.setattr(_chunked.LocalExecutor, "run", counting)
    _same(ooc.kmeans_iou(wh, 6, init=init, max_iter=40, block_rows=7000), want)
    with_windows = dict(passes)
    monkeypatch.setattr(_chunked, "median_windows", lambda *args: None)
    passes.update(lloyd=0, select=0)
    _same(ooc.kmeans_iou(wh, 6, init=init, max_iter=40, block_rows=7000), want)
    assert passes["lloyd"] == with_windows["lloyd"]
    assert passes["select"] >= want.n_iter  # one or more per update without windows
    if window_max > 4:
        assert with_windows["select"] <= 3  # the first updates only
    else:
        assert with_windows["select"] > want.n_iter // 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_partials_sent_compact_between_processes_change_nothing(dtype, weighted, monkeypatch):
    # On Dask every chunk task's partial leaves its worker compacted (window runs merged, selection
    # values as float32 where they are, labels and weights in the smallest type) and pickled. The
    # same here for every task of the local executor: the fit is still the in-memory one, bit for
    # bit, through its selection passes and windows; float64 rows that are not float32 stay exact.
    monkeypatch.setattr(_chunked, "WINDOW_MAX", 16)  # narrow windows: selection passes gather too
    monkeypatch.setattr(_chunked, "WINDOW_MIN_DENSITY", 1)
    rng = np.random.default_rng(34)
    wh = np.exp(rng.normal(3, 0.6, (20_000, 2))).astype(dtype)
    wh[rng.random(len(wh)) < 0.1, 1] = 48.0  # a spike of equal heights
    if dtype == np.float64:
        wh[::3] += 1e-9  # values no float32 holds
    w = rng.integers(1, 5, len(wh)).astype(np.float64) if weighted else None
    init = wh[rng.choice(len(wh), 7, replace=False)].astype(np.float64)
    want = fastanchor.kmeans_iou(wh, 7, init=init, max_iter=25, sample_weight=w)
    real_run = _chunked.LocalExecutor.run
    sizes = {"before": 0, "after": 0}

    def over_the_wire(task):
        @functools.wraps(task)
        def run(*args):
            part = task(*args)
            if isinstance(part, dict) and "labels" in part:  # a selection pass's values and labels
                sent = _chunked.compact(part)
                for name in ("values", "labels"):
                    sizes["before"] += sum(v.nbytes for v in part[name].values())
                    sizes["after"] += sum(v.nbytes for v in sent[name].values())
            return pickle.loads(pickle.dumps(_chunked.compact(part), protocol=5))

        return run

    monkeypatch.setattr(
        _chunked.LocalExecutor, "run", lambda self, task, args, merge: real_run(self, over_the_wire(task), args, merge)
    )
    got = ooc.kmeans_iou(wh, 7, init=init, max_iter=25, block_rows=6000, sample_weight=w)
    np.testing.assert_array_equal(got.anchors, want.anchors)
    np.testing.assert_array_equal(got.labels, want.labels)
    assert got.n_iter == want.n_iter
    if not (weighted and dtype == np.float32):  # (that fit's selection passes gather no values here)
        assert sizes["before"] > 0
    if dtype == np.float32:  # 5 bytes a value instead of 12
        assert sizes["after"] * 12 == sizes["before"] * 5


def test_median_windows_follow_anchors_that_creep(monkeypatch):
    # From a sample's anchors, k-means on all boxes creeps on in one direction for a few
    # iterations by about a window's half-width per step: windows stretched on the side the
    # anchor moves to still hold the new medians, so only the first updates need selection passes.
    wh = tied_boxes(41, 400_000, np.float32, ties=False)
    init = fastanchor.kmeans_iou(wh[:5000], 9, seed=0, tol=1e-3).anchors
    want = fastanchor.kmeans_iou(wh, 9, init=init, tol=1e-4)
    assert want.n_iter > 100
    passes = {"select": 0}
    real_run = _chunked.LocalExecutor.run

    def counting(self, task, args, merge):
        passes["select"] += task is _chunked.task_select
        return real_run(self, task, args, merge)

    monkeypatch.setattr(_chunked.LocalExecutor, "run", counting)
    _same(ooc.kmeans_iou(wh, 9, init=init, tol=1e-4, block_rows=50_000), want)
    assert passes["select"] <= 2  # (1 here; 3 with windows that did not follow the moves)


@pytest.mark.parametrize("update", ["mean", "median"])
def test_a_kept_chunk_state_gives_the_stateless_partials_whatever_its_history(update):
    # The process keeps each chunk's Lloyd state between passes. A task run twice (Dask retries
    # or duplicates tasks), a state that missed passes, and a first pass that is not the fit's
    # first all give the partials and change counts of the stateless kernel.
    rng = np.random.default_rng(34)
    wh = tied_boxes(34, 5000, np.float32)
    keys = wh.view(np.uint32)
    layout = _chunked.Layout.of(keys.min(axis=0), keys.max(axis=0)) if update == "median" else None
    sets = [wh[rng.choice(len(wh), 5, replace=False)].astype(np.float64) for _ in range(5)]
    token = f"test-state-{uuid.uuid4().hex}"  # a fresh token, as every fit has (a dropped one keeps nothing)
    cache = (token, 1 << 30)

    def task(anchors, prev, cached):
        part = _chunked.task_lloyd(wh, 0, anchors, prev, update, layout, cache if cached else None)
        return {key: (np.asarray(v) if key != "sums" else v) for key, v in part.items()}

    def same(a, b):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)

    try:
        same(task(sets[1], sets[0], True), task(sets[1], sets[0], False))  # fresh state, mid-fit
        assert _chunked.cached_bytes() > wh.nbytes
        same(task(sets[2], sets[1], True), task(sets[2], sets[1], False))  # the usual step
        same(task(sets[2], sets[1], True), task(sets[2], sets[1], False))  # the same task again
        same(task(sets[4], sets[3], True), task(sets[4], sets[3], False))  # passes missed
        same(task(sets[0], None, True), task(sets[0], None, False))  # back to a first pass
        rows, labels = _chunked.CACHE.state_rows(token, 0, len(wh), sets[0])
        np.testing.assert_array_equal(labels, _chunked.assign_labels(wh, sets[0]))
        np.testing.assert_array_equal(rows, wh)
        assert _chunked.CACHE.state_rows(token, 0, len(wh), sets[1]) is None
    finally:
        _chunked.drop_layouts(token)
    assert _chunked.cached_bytes() == 0


@pytest.mark.parametrize("update", ["mean", "median"])
def test_n_init_runs_are_the_in_memory_runs(update):
    # Seeded runs: with all rows in the sample, each run starts where the in-memory run of the same
    # index does, and the best average IoU wins as in memory; above the sample's size the result
    # still depends on the seed only, not on the blocks.
    wh = tied_boxes(35, 3000, np.float32)
    want = fastanchor.kmeans_iou(wh, 7, seed=5, n_init=4, update=update)
    single = [fastanchor.kmeans_iou(wh, 7, seed=5, n_init=1, update=update).avg_iou]
    assert want.avg_iou >= single[0]
    for block_rows in (700, 3000):
        _same(ooc.kmeans_iou(wh, 7, seed=5, n_init=4, update=update, block_rows=block_rows), want)
    sampled = [ooc.kmeans_iou(wh, 7, seed=5, n_init=3, init_sample=1000, block_rows=b) for b in (499, 2048)]
    _same(sampled[0], sampled[1])
    one = ooc.kmeans_iou(wh, 7, seed=5, n_init=1, init_sample=1000, block_rows=499)
    assert sampled[0].avg_iou >= one.avg_iou
