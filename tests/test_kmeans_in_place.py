"""k-means of the boxes kept, read in place among dropped ones (the core's skip_below), and
autoanchor's use of it: the same results, bit for bit, as a fit of a copy of the kept rows."""

from __future__ import annotations

import sys
import tracemalloc
import warnings

import numpy as np
import pytest
import reference as ref
from conftest import clean, interrupt_latency, load_real, needs_data, real_box_files, tied_boxes
from hypothesis import given
from hypothesis import strategies as st
from simd import portable
from strategies import n_distinct, sides, wh_arrays

import fastanchor
from fastanchor import _core, _evolve
from fastanchor._kmeans import kmeans_present

DROP = 2.0


def core_fit(wh, k, init, update="median", tol=0.0, max_iter=300, threads=1, skip_below=0.0):
    return _core.kmeans_iou(
        wh=wh,
        weights=None,
        k=k,
        init="given",
        init_anchors=np.ascontiguousarray(init, dtype=np.float64),
        update=update,
        n_init=1,
        max_iter=max_iter,
        tol=tol,
        seed=0,
        n_threads=threads,
        callback=None,
        skip_below=skip_below,
    )


def kept_of(wh, below=DROP):
    return np.ascontiguousarray(wh[np.maximum(wh[:, 0], wh[:, 1]) >= below])


def assert_same_fit(got, expected):
    np.testing.assert_array_equal(got["anchors"], expected["anchors"])
    assert got["n_iter"] == expected["n_iter"] and got["converged"] == expected["converged"]


# Boxes below 2 pixels on both sides, mixed in among the others.
tiny = st.floats(1e-4, 1.99, allow_nan=False)


@st.composite
def rows_with_dropped(draw):
    wh = draw(wh_arrays(min_rows=1, max_rows=60))
    small = draw(wh_arrays(min_rows=0, max_rows=30, elements=tiny))
    rows = np.concatenate([wh, small])
    rows = rows[draw(st.permutations(range(len(rows))))] if len(rows) > 1 else rows
    kept = kept_of(rows)
    # (k within the kept rows' distinct boxes, as kmeans_iou asks; fewer kept rows than k is an error)
    k = draw(st.integers(1, max(1, min(7, n_distinct(kept) if len(kept) else 7))))
    init = np.array(draw(st.lists(st.tuples(sides, sides), min_size=k, max_size=k)), dtype=np.float64)
    return np.ascontiguousarray(rows), k, init


@given(
    rows_with_dropped(),
    st.sampled_from(["median", "mean"]),
    st.sampled_from([0.0, 1e-3]),
    st.sampled_from([np.float64, np.float32]),
    st.integers(1, 3),
    st.booleans(),
)
def test_left_out_rows_fit_as_a_copy_of_the_kept_ones(problem, update, tol, dtype, threads, portable_kernels):
    rows, k, init = problem
    rows = rows.astype(dtype)
    kept = kept_of(rows)
    if len(kept) < k:  # fewer rows than k at all are refused first
        with pytest.raises(ValueError, match="left out" if len(rows) >= k else r"k must be in \[1, len\(wh\)\]"):
            core_fit(rows, k, init, update, tol, skip_below=DROP)
        return
    with portable(portable_kernels):
        got = core_fit(rows, k, init, update, tol, threads=threads, skip_below=DROP)
        copy = core_fit(kept, k, init, update, tol, threads=1)
    assert_same_fit(got, copy)
    assert got["labels"] is None and got["avg_iou"] is None
    expected = ref.lloyd(kept.astype(np.float64), init, update=update, tol=tol)
    np.testing.assert_allclose(got["anchors"], expected["anchors"], rtol=1e-9)
    assert got["n_iter"] == expected["n_iter"] and got["converged"] == expected["converged"]


@pytest.mark.parametrize("k", [9, 15, 16, 40])
@pytest.mark.parametrize("update", ["median", "mean"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_left_out_rows_on_many_chunks(k, update, dtype):
    # Several 4096-box chunks, bounded passes, and k on both sides of the AVX2 kernels' 16-entry
    # tables (a left-out box's label is not a cluster's).
    rng = np.random.default_rng(k)
    rows = tied_boxes(k, 60_000, dtype)
    small = rng.random(len(rows)) < 0.1
    rows[small] = rng.uniform(0.05, 1.99, (int(small.sum()), 2))
    kept = kept_of(rows)
    init = kept[rng.choice(len(kept), k, replace=False)]
    copy = core_fit(kept, k, init, update, threads=2)
    for threads in (1, 2, 3):
        for portable_kernels in (False, True):
            with portable(portable_kernels):
                assert_same_fit(core_fit(rows, k, init, update, threads=threads, skip_below=DROP), copy)


def test_a_float64_row_just_below_the_limit_is_left_out():
    # Read as float, 2 - 2^-40 would round to 2.0: the exact value decides, as numpy's mask does.
    rows = np.array([[2.0 - 2.0**-40, 1.0], [10.0, 12.0], [30.0, 20.0], [2.0, 0.5], [5.0, 5.0]])
    kept = kept_of(rows)
    assert len(kept) == 4
    init = np.array([[3.0, 3.0], [20.0, 20.0]])
    assert_same_fit(core_fit(rows, 2, init, skip_below=DROP), core_fit(kept, 2, init))


def test_empty_clusters_take_kept_boxes_only():
    # The anchor (1, 1) has no box; the box of lowest IoU among the kept ones fills it, not a
    # dropped one (their IoU with every anchor is lower still).
    rows = np.array([[0.1, 0.1], [10.0, 10.0], [11.0, 10.0], [40.0, 3.0], [0.2, 0.3]])
    init = np.array([[1.0, 1.0], [10.0, 10.0], [12.0, 12.0]])
    got = core_fit(rows, 3, init, max_iter=1, skip_below=DROP)
    assert_same_fit(got, core_fit(kept_of(rows), 3, init, max_iter=1))
    assert [40.0, 3.0] in got["anchors"].tolist()


def test_leaving_rows_out_refuses_what_it_cannot_do():
    rows = np.array([[1.0, 1.0], [10.0, 10.0], [11.0, 12.0], [20.0, 5.0]])
    init = np.array([[10.0, 10.0], [20.0, 5.0]])
    args = dict(wh=rows, k=2, init_anchors=init, update="median", n_init=1, max_iter=300, tol=0.0, seed=0)
    with pytest.raises(ValueError, match="given anchors"):
        _core.kmeans_iou(**{**args, "init": "k-means++"}, weights=None, n_threads=1, callback=None, skip_below=DROP)
    with pytest.raises(ValueError, match="unit weights"):
        _core.kmeans_iou(**args, init="given", weights=np.ones(4), n_threads=1, callback=None, skip_below=DROP)
    with pytest.raises(ValueError, match="every box is left out"):
        core_fit(rows, 2, init, skip_below=100.0)
    with pytest.raises(ValueError, match="k <= the number"):
        core_fit(rows, 2, init, skip_below=15.0)
    many = np.exp(np.random.default_rng(0).normal(3, 1, (600, 2)))
    with pytest.raises(ValueError, match="k < 255"):
        core_fit(many, 255, many[:255], skip_below=DROP)
    # the mean's sums exact over the kept values only: 2^-90 beside 2^20 is beyond them
    wide = np.array([[2.0**-90, 3.0], [2.0**20, 5.0], [9.0, 9.0]])
    with pytest.raises(ValueError, match="exact mean sums"):
        core_fit(wide, 2, wide[1:], update="mean", skip_below=DROP)


def test_kmeans_present_wraps_the_core():
    rows = tied_boxes(2, 20_000, np.float32)
    rows[::7] = 1.0
    kept = kept_of(rows)
    init = kept[:9].astype(np.float64) * 1.01
    got = kmeans_present(rows, 9, init, tol=1e-3, skip_below=DROP, n_threads=2)
    np.testing.assert_array_equal(got, fastanchor.kmeans_iou(kept, 9, init=init, tol=1e-3).anchors)


# ---- autoanchor reads the kept rows in place when some are dropped ----


def fields(r):
    return (
        r.anchors.tobytes(),
        r.kmeans_anchors.tobytes(),
        r.kmeans,
        r.evolved,
        r.history.tobytes(),
        r.n_boxes,
        r.n_dropped,
        r.n_small,
        r.kmeans_objectives,
        r.evolved_objectives,
    )


def with_copy(monkeypatch, *args, **kwargs):
    """autoanchor through its copy of the kept rows."""
    with monkeypatch.context() as m:
        m.setattr(_evolve, "IN_PLACE_MAX_K", 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fastanchor.autoanchor(*args, **kwargs)


def with_dropped(n, seed, dtype=np.float32, frac=0.05):
    rng = np.random.default_rng(seed)
    rows = tied_boxes(seed, n, dtype)
    small = rng.random(n) < frac
    rows[small] = rng.uniform(0.1, 1.99, (int(small.sum()), 2))
    return rows


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("objective", ["fitness", "avg_iou"])
def test_autoanchor_in_place_is_the_copy_s_result(monkeypatch, dtype, objective):
    rows = with_dropped(40_000, 1, dtype)
    kw = dict(seed=7, init_sample=6000, search_sample=5000, generations=80, objective=objective)
    calls = []
    monkeypatch.setattr(_evolve, "kmeans_present", lambda *a, **k: calls.append(1) or kmeans_present(*a, **k))
    with pytest.warns(UserWarning, match="extremely small") as record:
        got = fastanchor.autoanchor(rows, 9, **kw)
    assert calls == [1]
    assert record[0].filename == __file__  # the warning points at the caller
    assert fields(got) == fields(with_copy(monkeypatch, rows, 9, **kw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert fields(fastanchor.autoanchor(rows, 9, n_threads=1, **kw)) == fields(got)
    assert got.n_dropped == int(np.sum(np.maximum(rows[:, 0], rows[:, 1]) < DROP))


def test_autoanchor_in_place_falls_back_when_the_sample_has_too_few_shapes(monkeypatch):
    # 3 shapes in bulk and 2 rare ones, among dropped boxes: the sample of 50 holds only the 3,
    # and k-means runs on all kept boxes from the seed, as through the copy.
    bulk = np.repeat([[10.0, 20.0], [30.0, 15.0], [50.0, 50.0]], 2000, axis=0)
    rows = np.r_[bulk, np.full((500, 2), 1.5), [[100.0, 120.0], [7.0, 90.0]]]
    kw = dict(seed=0, init_sample=50, search_sample=60, generations=20, budget=0)
    with pytest.warns(UserWarning):
        got = fastanchor.autoanchor(rows, 5, **kw)
    assert fields(got) == fields(with_copy(monkeypatch, rows, 5, **kw))


def test_autoanchor_keeps_its_other_paths(monkeypatch):
    # Weights, scale and grid, and no more kept boxes than the samples, go through the copy.
    rows = with_dropped(8000, 3)
    calls = []
    monkeypatch.setattr(_evolve, "kmeans_present", lambda *a, **k: calls.append(1) or kmeans_present(*a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fastanchor.autoanchor(rows, 5, seed=1, init_sample=1000, search_sample=1000, generations=10, scale=0.5)
        fastanchor.autoanchor(rows, 5, seed=1, generations=10)
        w = np.ones(len(rows))
        fastanchor.autoanchor(rows, 5, seed=1, init_sample=1000, search_sample=1000, generations=10, sample_weight=w)
    assert calls == []


@pytest.mark.parametrize("in_place", [True, False])
def test_autoanchor_does_not_copy_the_kept_rows(monkeypatch, in_place):
    # numpy's allocations (traced) stay below half a copy of the rows (8 bytes per row; the
    # blocks of a pass take about 10 MB); the core's one byte of label and two of bound per row
    # are not traced. Through the copy they do not.
    if not in_place:
        monkeypatch.setattr(_evolve, "IN_PLACE_MAX_K", 0)
    rows = with_dropped(4_000_000, 5, frac=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fastanchor.autoanchor(rows, 9, seed=1, init_sample=20_000, search_sample=20_000, generations=5)
        tracemalloc.start()
        try:
            fastanchor.autoanchor(rows, 9, seed=1, init_sample=20_000, search_sample=20_000, generations=5)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert (peak < rows.nbytes / 2) == in_place, peak


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("after", [0.05, 0.3])
def test_autoanchor_in_place_stops_on_ctrl_c(after):
    # Early: in the passes over the blocks or the k-means in place (tol=0: it runs on to a fixed
    # point); later: in the search. Either way KeyboardInterrupt, soon, and nothing left behind.
    rows = with_dropped(3_000_000, 9, frac=0.01)
    kw = dict(seed=0, tol=0.0, init_sample=50_000, search_sample=50_000, generations=10**7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert interrupt_latency(lambda: fastanchor.autoanchor(rows, 9, **kw), after=after) < 2.0
        done = fastanchor.autoanchor(rows, 9, seed=0, init_sample=50_000, search_sample=50_000, generations=20)
    assert done.anchors.shape == (9, 2)


@needs_data
def test_autoanchor_in_place_on_wider_face(monkeypatch):
    path = next((p for p in real_box_files() if p.stem == "widerface_train"), None)
    if path is None:
        pytest.skip("widerface_train.npz is absent")
    rows = clean(load_real(path, 640)).astype(np.float32)
    dropped = int(np.sum(np.maximum(rows[:, 0], rows[:, 1]) < DROP))
    assert dropped > 0  # the tiny faces of the data
    kw = dict(seed=3, init_sample=20_000, search_sample=20_000, generations=100)
    with pytest.warns(UserWarning):
        got = fastanchor.autoanchor(rows, 9, **kw)
    assert got.n_dropped == dropped
    assert fields(got) == fields(with_copy(monkeypatch, rows, 9, **kw))
