"""The search's layout of the boxes: its own sorted copy of the rows in their precision (float32
rows stay float32), the scaled weights and tile bounds. Every value scored on it is the value on the
rows, bit for bit, whatever the dtype, the number of sort blocks, the threads or the objective."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import weights_for, wh_arrays

import fastanchor
from fastanchor import _core

BLOCK = 1 << 16  # rows per sort block of the layout


def coco_like(n: int, seed: int = 0) -> np.ndarray:
    """COCO-like float32 boxes of at least 3 pixels a side (none small for autoanchor)."""
    rng = np.random.default_rng(seed)
    return np.exp(rng.normal(3.3, 1.0, (n, 2))).clip(3.0, 1000.0).astype(np.float32)


def fingerprint(r) -> tuple:
    return (
        r.anchors.tobytes(),
        r.history.tobytes(),
        r.fitness,
        r.bpr,
        r.aat,
        r.avg_iou,
        r.initial_fitness,
        r.n_improved,
    )


@st.composite
def problems(draw):
    wh = draw(wh_arrays(max_rows=300))
    anchors = draw(wh_arrays(min_rows=1, max_rows=7))
    weights = draw(st.none() | weights_for(wh.shape[0]))
    return wh, anchors, weights


@settings(max_examples=60, deadline=None)
@given(problems(), st.sampled_from([4.0, 2.0, 3.0]), st.sampled_from([np.float64, np.float32]))
def test_reports_on_a_layout_are_the_reports_on_the_rows(problem, thr, dtype):
    wh, anchors, weights = problem
    wh = wh.astype(dtype)
    layout = _core._search_layout(wh, weights, 1)
    assert layout.n == len(wh)
    rows = fastanchor.anchor_fitness(anchors, wh, thr=thr, sample_weight=weights, n_threads=1)
    got = _core._layout_metrics(layout=layout, anchors=anchors, thr=thr, n_threads=2)
    assert got == (rows.fitness, rows.bpr, rows.aat, rows.avg_iou)
    for objective in ("fitness", "avg_iou", "recall"):
        expected = fastanchor.anchor_objective(anchors, wh, objective, thr=thr, sample_weight=weights)
        value = _core._layout_objective(
            layout=layout, anchors=anchors, objective=objective, thr=thr, iou_thr=0.5, iou_weighted=False, n_threads=1
        )
        assert value == expected
    # and the IoU objectives are the numpy reference's, bit for bit
    value = _core._layout_objective(
        layout=layout, anchors=anchors, objective="recall", thr=thr, iou_thr=0.5, iou_weighted=True, n_threads=1
    )
    assert value == ref.iou_objective(anchors, wh.astype(np.float64), "recall", 0.5, True, weights)


@pytest.mark.parametrize("n", [BLOCK - 1, BLOCK + 37, 3 * BLOCK + 5])
def test_layouts_over_several_sort_blocks_score_as_the_rows(n):
    wh = coco_like(n, seed=n)
    rng = np.random.default_rng(n)
    weights = rng.uniform(0.0, 2.0, n)
    anchors = fastanchor.kmeans_iou(wh[:5000], 9, seed=0).anchors
    many = np.exp(rng.normal(3.3, 1.0, (80, 2)))  # more than 64 anchors: the unpruned kernels
    for w in (None, weights):
        for a in (anchors, many):
            rows = fastanchor.anchor_fitness(a, wh, sample_weight=w)
            for dtype in (np.float32, np.float64):
                layout = _core._search_layout(wh.astype(dtype), w, 2)
                assert _core._layout_metrics(layout=layout, anchors=a, thr=4.0, n_threads=2) == (
                    rows.fitness,
                    rows.bpr,
                    rows.aat,
                    rows.avg_iou,
                )
                for objective in ("avg_iou", "recall"):
                    value = _core._layout_objective(
                        layout=layout,
                        anchors=a,
                        objective=objective,
                        thr=4.0,
                        iou_thr=0.5,
                        iou_weighted=False,
                        n_threads=2,
                    )
                    assert value == fastanchor.anchor_objective(a, wh, objective, sample_weight=w)


def test_layout_bytes_are_its_rows_in_their_precision_and_tile_bounds():
    n = BLOCK + 100
    wh = coco_like(n)
    tiles = -(-n // 64)
    assert _core._search_layout(wh).nbytes == n * 8 + tiles * 64
    assert _core._search_layout(wh.astype(np.float64)).nbytes == n * 16 + tiles * 64
    assert _core._search_layout(wh, np.ones(n)).nbytes == n * 16 + tiles * 64


@pytest.mark.parametrize("objective", ["fitness", "avg_iou", "recall"])
@pytest.mark.parametrize("weighted", [False, True])
def test_search_on_float32_rows_is_the_search_on_float64_rows(objective, weighted):
    wh = coco_like(BLOCK + 3000, seed=1)
    weights = np.random.default_rng(2).uniform(0.5, 1.5, len(wh)) if weighted else None
    init = fastanchor.kmeans_iou(wh[:4000], 9, seed=0).anchors
    runs = [
        fastanchor.evolve_anchors(
            init, wh.astype(dtype), generations=24, objective=objective, sample_weight=weights, seed=3, n_threads=t
        )
        for dtype in (np.float32, np.float64)
        for t in (1, 2)
    ]
    assert len({fingerprint(r) for r in runs}) == 1


def test_autoanchor_on_float32_rows_is_autoanchor_on_float64_rows():
    wh = coco_like(20_000, seed=5)
    wh[:50] = 1.5  # dropped: below 2 pixels on both sides
    with pytest.warns(UserWarning, match="extremely small"):
        a = fastanchor.autoanchor(wh, 9, generations=40, seed=0)
    with pytest.warns(UserWarning, match="extremely small"):
        b = fastanchor.autoanchor(wh.astype(np.float64), 9, generations=40, seed=0)
    assert a.anchors.tobytes() == b.anchors.tobytes()
    assert a.kmeans == b.kmeans and a.evolved == b.evolved
    assert a.kmeans_objectives == b.kmeans_objectives and a.evolved_objectives == b.evolved_objectives
    assert a.n_dropped == b.n_dropped == 50
    # the reports are those of the kept boxes
    kept = wh[50:]
    assert a.evolved == fastanchor.anchor_fitness(a.anchors, kept)
    assert a.kmeans_objectives["avg_iou"] == fastanchor.anchor_objective(a.kmeans_anchors, kept, "avg_iou")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("drop", [False, True])
def test_autoanchor_reads_a_private_copy_once_the_search_starts(dtype, drop):
    # The caller's rows are read in place until the search's layout holds its copy (a change
    # before then raises); a callback that overwrites them afterwards changes nothing.
    wh = coco_like(5000, seed=6).astype(dtype)
    if drop:
        wh[:10] = 1.0
    with pytest.warns(UserWarning) if drop else _no_warning():
        expected = fastanchor.autoanchor(wh, 9, generations=30, seed=0)
    victim = wh.copy()

    def vandal(generation, fitness, best):
        victim[:] = np.nan

    with pytest.warns(UserWarning) if drop else _no_warning():
        got = fastanchor.autoanchor(victim, 9, generations=30, seed=0, callback=vandal)
    assert np.isnan(victim).all()
    assert got.anchors.tobytes() == expected.anchors.tobytes()
    assert got.kmeans == expected.kmeans and got.evolved == expected.evolved
    assert got.evolved_objectives == expected.evolved_objectives


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("function", ["evolve_anchors", "autoanchor"])
def test_a_change_while_the_layout_copies_the_rows_raises(monkeypatch, function):
    # A C-contiguous float32/float64 array is read in place into the layout: a change made
    # meanwhile (by another thread) is detected, never scored.
    wh = coco_like(3000, seed=7)
    init = fastanchor.kmeans_iou(wh, 9, seed=0).anchors
    real = _core._search_layout

    def racing(wh, weights=None, n_threads=1):
        layout = real(wh=wh, weights=weights, n_threads=n_threads)
        wh[0, 0] = np.nan
        return layout

    monkeypatch.setattr(_core, "_search_layout", racing)
    with pytest.raises(RuntimeError, match=f"wh changed while {function} was reading it"):
        if function == "evolve_anchors":
            fastanchor.evolve_anchors(init, wh, generations=2, seed=0)
        else:
            fastanchor.autoanchor(wh, 9, generations=2, seed=0)


@pytest.mark.parametrize("dtype, per_row", [(np.float32, 8), (np.float64, 16)])
def test_the_chunk_cache_counts_a_layout_at_its_size(dtype, per_row):
    from fastanchor import _chunked

    wh = coco_like(3000, seed=8).astype(dtype)
    cache = _chunked.ChunkCache()
    layout = cache.layout("t", 1 << 20, 0, wh, 1)
    assert layout.n == 3000 and layout.nbytes == 3000 * per_row + 47 * 64
    assert cache.nbytes() == layout.nbytes
    assert cache.layout("t", 1 << 20, 0, wh, 1) is layout  # kept
    # the reservation before the rows are read is 17 bytes per row: a budget below it keeps none
    assert _chunked.ChunkCache().layout("t", 17 * 3000 - 1, 0, wh, 1) is None
