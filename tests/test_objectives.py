"""The search objectives (average best IoU, recall at an IoU threshold) and the work budget."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from conftest import clean, load_real, needs_data, real_box_files
from hypothesis import given
from hypothesis import strategies as st
from strategies import weights_for, wh_arrays

import fastanchor
from fastanchor._validation import resolve_seed


@st.composite
def problems(draw, max_rows=50, max_k=6):
    wh = draw(wh_arrays(max_rows=max_rows))
    anchors = draw(wh_arrays(min_rows=1, max_rows=max_k))
    weights = draw(st.none() | weights_for(wh.shape[0]))
    return wh, anchors, weights


@given(problems(), st.sampled_from([0.5, 0.25, 0.75, 1.0, 1 / 3]), st.booleans())
def test_objectives_are_the_reference_bit_for_bit(problem, iou_thr, iou_weighted):
    wh, anchors, weights = problem
    for objective in ("avg_iou", "recall"):
        expected = ref.iou_objective(anchors, wh, objective, iou_thr, iou_weighted, weights)
        for threads in (1, 2):
            got = fastanchor.anchor_objective(
                anchors,
                wh,
                objective,
                iou_thr=iou_thr,
                iou_weighted=iou_weighted,
                sample_weight=weights,
                n_threads=threads,
            )
            assert got == expected


def test_fitness_objective_is_anchor_fitness():
    rng = np.random.default_rng(3)
    wh = rng.uniform(2, 300, size=(500, 2))
    anchors = rng.uniform(5, 200, size=(9, 2))
    assert fastanchor.anchor_objective(anchors, wh, "fitness") == fastanchor.anchor_fitness(anchors, wh).fitness


def test_objectives_on_many_chunks_and_any_order():
    rng = np.random.default_rng(4)
    wh = rng.uniform(1, 400, size=(20_000, 2))
    weights = rng.uniform(0, 3, size=20_000)
    anchors = rng.uniform(5, 300, size=(9, 2))
    perm = rng.permutation(20_000)
    for objective in ("avg_iou", "recall"):
        for sw in (None, weights):
            expected = ref.iou_objective(anchors, wh, objective, 0.5, False, sw)
            assert fastanchor.anchor_objective(anchors, wh, objective, sample_weight=sw, n_threads=3) == expected
            swp = None if sw is None else sw[perm]
            assert fastanchor.anchor_objective(anchors, wh[perm], objective, sample_weight=swp) == expected


@given(
    problems(max_rows=30, max_k=4),
    st.sampled_from(["avg_iou", "recall"]),
    st.integers(0, 25),
    st.integers(1, 9),
    st.integers(0, 2**32),
)
def test_yolov5_strategy_on_iou_objectives_is_the_sequential_search(problem, objective, generations, batch, seed):
    wh, anchors, weights = problem

    def value(a):
        return ref.iou_objective(a, wh, objective, 0.5, False, weights)

    expected = ref.yolov5_evolve(
        anchors, wh, generations=generations, min_size=0.5, seed=resolve_seed(seed), fitness=value
    )
    got = fastanchor.evolve_anchors(
        anchors,
        wh,
        generations=generations,
        min_size=0.5,
        strategy="yolov5",
        batch=batch,
        objective=objective,
        sample_weight=weights,
        seed=seed,
    )
    np.testing.assert_array_equal(got.anchors, expected["anchors"])
    np.testing.assert_array_equal(got.history, expected["history"])
    assert got.fitness == expected["fitness"] and got.objective == objective
    assert got.n_improved == expected["n_improved"]


@pytest.mark.parametrize("objective", ["avg_iou", "recall"])
@pytest.mark.parametrize("strategy", ["anchorwise", "yolov5"])
def test_search_on_an_objective(objective, strategy):
    rng = np.random.default_rng(5)
    s = np.exp(rng.normal(3.5, 0.8, size=12_000))
    r = np.exp(0.6 * rng.normal(size=12_000))
    wh = np.c_[s * np.sqrt(r), s / np.sqrt(r)].clip(2, 640)
    init = fastanchor.kmeans_iou(wh, 6, seed=0).anchors
    kw = dict(objective=objective, iou_thr=0.6, generations=300, strategy=strategy, seed=2)
    runs = [fastanchor.evolve_anchors(init, wh, n_threads=t, **kw) for t in (1, 2, 3)]
    for other in runs[1:]:
        np.testing.assert_array_equal(other.anchors, runs[0].anchors)
        np.testing.assert_array_equal(other.history, runs[0].history)
    res = runs[0]
    start = fastanchor.anchor_objective(init, wh, objective, iou_thr=0.6)
    assert res.initial_fitness == start
    assert res.fitness == fastanchor.anchor_objective(res.anchors, wh, objective, iou_thr=0.6)
    assert res.fitness > start  # never below the k-means start, and here above it
    assert np.all(np.diff(res.history) >= 0) and res.history[-1] == res.fitness
    assert res.avg_iou == fastanchor.anchor_fitness(res.anchors, wh).avg_iou


def test_budget_restarts_only_add():
    rng = np.random.default_rng(6)
    wh = rng.lognormal(3.5, 0.7, size=(300, 2))
    init = fastanchor.kmeans_iou(wh, 9, seed=0).anchors
    for objective in fastanchor.OBJECTIVES:
        base = fastanchor.evolve_anchors(init, wh, generations=500, objective=objective, seed=1)
        more = fastanchor.evolve_anchors(init, wh, generations=500, objective=objective, seed=1, budget=300 * 2000)
        assert more.history.shape == (2000,) and not more.stopped
        np.testing.assert_array_equal(more.history[:500], base.history)
        assert more.fitness >= base.fitness
    # a budget below generations x boxes adds nothing
    small = fastanchor.evolve_anchors(init, wh, generations=500, seed=1, budget=1000)
    plain = fastanchor.evolve_anchors(init, wh, generations=500, seed=1)
    np.testing.assert_array_equal(small.anchors, plain.anchors)
    assert small.history.shape == (500,)


def test_callback_stops_during_restarts():
    rng = np.random.default_rng(7)
    wh = rng.lognormal(3.0, 0.6, size=(200, 2))
    init = fastanchor.kmeans_iou(wh, 4, seed=0).anchors
    seen = []

    def cb(g, f, a):
        seen.append(g)
        return g < 700

    r = fastanchor.evolve_anchors(init, wh, generations=100, budget=200 * 5000, seed=0, callback=cb)
    assert r.stopped and r.history.shape == (700,) and seen == list(range(1, 701))


def test_autoanchor_reports_every_objective():
    rng = np.random.default_rng(8)
    wh = rng.lognormal(3.5, 0.8, size=(2000, 2)).clip(3, 640)
    for objective in fastanchor.OBJECTIVES:
        r = fastanchor.autoanchor(wh, 6, objective=objective, iou_thr=0.6, generations=200, seed=0, budget=0)
        assert r.objective == objective
        for name in fastanchor.OBJECTIVES:
            assert r.kmeans_objectives[name] == fastanchor.anchor_objective(r.kmeans_anchors, wh, name, iou_thr=0.6)
            assert r.evolved_objectives[name] == fastanchor.anchor_objective(r.anchors, wh, name, iou_thr=0.6)
        assert r.value == r.evolved_objectives[objective] >= r.kmeans_objectives[objective]
        assert r.evolved == fastanchor.anchor_fitness(r.anchors, wh)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(objective="iou"), ValueError, "objective must be one of"),
        (dict(objective=None), ValueError, "objective must be one of"),
        (dict(iou_thr=0.0), ValueError, r"iou_thr must be in \(0, 1\]"),
        (dict(iou_thr=1.5), ValueError, r"iou_thr must be in \(0, 1\]"),
        (dict(iou_thr=float("nan")), ValueError, "iou_thr"),
        (dict(iou_weighted="yes"), TypeError, "iou_weighted must be a bool"),
        (dict(budget=-1), ValueError, "budget"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    wh = [[10.0, 12.0], [30.0, 20.0]]
    with pytest.raises(error, match=match):
        fastanchor.evolve_anchors([[10.0, 10.0]], wh, generations=5, **kwargs)
    with pytest.raises(error, match=match):
        fastanchor.autoanchor(wh, 1, generations=5, **kwargs)
    if "budget" not in kwargs:
        with pytest.raises(error, match=match):
            fastanchor.anchor_objective([[10.0, 10.0]], wh, **{"objective": "recall", **kwargs})


@needs_data
@pytest.mark.parametrize("name", ["raccoon", "coco128"])
@pytest.mark.parametrize("objective", ["avg_iou", "recall"])
def test_real_data_iou_objectives_beat_kmeans(name, objective):
    path = next((p for p in real_box_files() if p.stem == name), None)
    if path is None:
        pytest.skip(f"{name}.npz is absent")
    wh = clean(load_real(path, 640))
    wh = wh[(wh >= 3.0).all(axis=1)]  # no small-box warning
    r = fastanchor.autoanchor(wh, 9, objective=objective, seed=0)
    assert r.value >= r.kmeans_objectives[objective]
    assert r.evolved_objectives["avg_iou"] >= r.kmeans_objectives["avg_iou"] or objective == "recall"


@pytest.mark.parametrize("k", [1, 7, 9, 20, 70])
def test_pruned_search_scores_equal_the_report(k):
    # The search scores on its tiled layout with per-tile pruning; the report evaluates every
    # anchor for every box in input order. Both must agree to the last bit.
    rng = np.random.default_rng(k)
    n = 9000
    s = np.exp(rng.normal(3.0, 1.0, size=n))
    r = np.exp(0.7 * rng.normal(size=n))
    wh = np.c_[s * np.sqrt(r), s / np.sqrt(r)]
    wh[:50] = np.round(wh[:50])  # some exact ties
    weights = rng.uniform(0, 2, size=n)
    for trial in range(3):
        anchors = np.exp(rng.normal(3.0, 1.0, size=(k, 2)))
        if trial == 2:
            anchors[: min(k, 5)] = wh[: min(k, 5)]  # anchors equal to boxes: IoU exactly 1
        for objective in ("avg_iou", "recall"):
            for sw in (None, weights):
                for iw in (False, True):
                    kw = dict(objective=objective, iou_thr=0.55, iou_weighted=iw, sample_weight=sw)
                    res = fastanchor.evolve_anchors(anchors, wh, generations=0, min_size=1e-3, **kw)
                    assert res.initial_fitness == fastanchor.anchor_objective(anchors, wh, **kw)
                    assert res.initial_fitness == ref.iou_objective(anchors, wh, objective, 0.55, iw, sw)
