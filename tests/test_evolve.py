"""evolve_anchors (both strategies) and autoanchor: the YOLOv5 search exactly, and the properties
every search must have."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
import reference as ref
from conftest import clean, interrupt_latency, load_real, needs_data, real_box_files
from hypothesis import given
from hypothesis import strategies as st
from strategies import weights_for, wh_arrays

import fastanchor
from fastanchor import _core
from fastanchor._validation import resolve_seed, sample_index

STRATEGIES = ["anchorwise", "yolov5"]


@st.composite
def problems(draw, max_rows=40, max_k=5):
    wh = draw(wh_arrays(max_rows=max_rows))
    anchors = draw(wh_arrays(min_rows=1, max_rows=max_k))
    weights = draw(st.none() | weights_for(wh.shape[0]))
    thr = draw(st.sampled_from([4.0, 2.0, 3.0]))
    min_size = draw(st.sampled_from([2.0, 1.0, 0.5]))
    return wh, anchors, weights, thr, min_size


@given(
    problems(),
    st.integers(0, 30),
    st.integers(1, 9),
    st.integers(0, 2**32),
    st.sampled_from([0.9, 0.5, 1.0]),
    st.sampled_from([0.1, 0.5]),
)
def test_yolov5_strategy_is_the_sequential_yolov5_search(problem, generations, batch, seed, mp, sigma):
    wh, anchors, weights, thr, min_size = problem

    def fitness(a):
        return fastanchor.anchor_fitness(a, wh, thr=thr, sample_weight=weights, n_threads=1).fitness

    expected = ref.yolov5_evolve(
        anchors,
        wh,
        thr=thr,
        generations=generations,
        mutation_prob=mp,
        sigma=sigma,
        min_size=min_size,
        seed=resolve_seed(seed),
        fitness=fitness,
    )
    got = fastanchor.evolve_anchors(
        anchors,
        wh,
        thr=thr,
        generations=generations,
        mutation_prob=mp,
        sigma=sigma,
        min_size=min_size,
        strategy="yolov5",
        batch=batch,
        sample_weight=weights,
        seed=seed,
    )
    np.testing.assert_array_equal(got.anchors, expected["anchors"])
    np.testing.assert_array_equal(got.history, expected["history"])
    assert got.fitness == expected["fitness"]
    assert got.n_improved == expected["n_improved"]


def test_yolov5_strategy_matches_the_numpy_search():
    # The same search with the plain numpy fitness: continuous sizes, so no decision is a near tie.
    rng = np.random.default_rng(8)
    wh = np.exp(rng.normal(3.0, 1.0, (400, 2)))
    anchors = fastanchor.kmeans_iou(wh, 6, seed=0).anchors
    expected = ref.yolov5_evolve(anchors, wh, generations=150, seed=resolve_seed(3))
    got = fastanchor.evolve_anchors(anchors, wh, generations=150, strategy="yolov5", seed=3)
    np.testing.assert_allclose(got.anchors, expected["anchors"], rtol=1e-15)
    np.testing.assert_allclose(got.history, expected["history"], rtol=1e-13)
    assert got.n_improved == expected["n_improved"] > 5


@given(problems(), st.sampled_from(STRATEGIES), st.integers(0, 40), st.integers(0, 2**32))
def test_search_properties(problem, strategy, generations, seed):
    wh, anchors, weights, thr, min_size = problem
    kw = dict(thr=thr, generations=generations, min_size=min_size, strategy=strategy, sample_weight=weights, seed=seed)
    runs = [fastanchor.evolve_anchors(anchors, wh, n_threads=t, **kw) for t in (1, 2, 3)]
    r = runs[0]
    for other in runs[1:]:  # deterministic per seed, whatever the thread count
        np.testing.assert_array_equal(other.anchors, r.anchors)
        np.testing.assert_array_equal(other.history, r.history)
    assert r.anchors.shape == anchors.shape and np.all(r.anchors >= min_size)
    np.testing.assert_array_equal(r.anchors, ref.sort_by_area(r.anchors))
    # monotone, starting from the initial anchors raised to min_size
    assert r.history.shape == (generations,) and not r.stopped
    assert np.all(np.diff(r.history) >= 0)
    initial = fastanchor.anchor_fitness(np.maximum(anchors, min_size), wh, thr=thr, sample_weight=weights)
    assert r.initial_fitness == initial.fitness
    assert r.fitness >= r.initial_fitness
    assert r.fitness == (r.history[-1] if generations else r.initial_fitness)
    assert r.n_improved == np.count_nonzero(np.diff(np.r_[r.initial_fitness, r.history]) > 0)
    # the reported metrics are the returned anchors' metrics
    m = fastanchor.anchor_fitness(r.anchors, wh, thr=thr, sample_weight=weights)
    assert (r.fitness, r.bpr, r.aat, r.avg_iou) == (m.fitness, m.bpr, m.aat, m.avg_iou)
    np.testing.assert_allclose(
        r.fitness, ref.anchor_fitness(r.anchors, wh, thr, weights)["fitness"], rtol=1e-12, atol=1e-14
    )


def coco_like(n=20_000, seed=0, smallest=1.0):
    rng = np.random.default_rng(seed)
    s = 40.0 * np.exp(1.1 * rng.normal(size=n))
    r = np.exp(0.7 * rng.normal(size=n))
    return np.clip(np.c_[s * np.sqrt(r), s / np.sqrt(r)], smallest, 640.0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_thread_invariance_on_many_chunks(strategy):
    wh = coco_like(50_000)
    anchors = fastanchor.kmeans_iou(wh[:5000], 9, seed=0).anchors
    runs = [
        fastanchor.evolve_anchors(anchors, wh, generations=200, strategy=strategy, seed=7, n_threads=t)
        for t in (1, 2, 3)
    ]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.anchors, runs[0].anchors)
        np.testing.assert_array_equal(r.history, runs[0].history)
    assert runs[0].fitness > runs[0].initial_fitness
    other = fastanchor.evolve_anchors(anchors, wh, generations=200, strategy=strategy, seed=8)
    assert not np.array_equal(other.anchors, runs[0].anchors)


def test_anchorwise_beats_yolov5_on_a_synthetic_set():
    wh = coco_like(20_000, seed=3)
    anchors = fastanchor.kmeans_iou(wh, 9, seed=0).anchors
    fits = {
        s: np.median([fastanchor.evolve_anchors(anchors, wh, strategy=s, seed=i).fitness for i in range(3)])
        for s in STRATEGIES
    }
    assert fits["anchorwise"] > fits["yolov5"]


def test_callback_sees_every_generation_and_can_stop():
    wh = coco_like(5000)
    anchors = fastanchor.kmeans_iou(wh, 6, seed=0).anchors
    full = fastanchor.evolve_anchors(anchors, wh, generations=100, seed=1)
    seen = []

    def callback(g, f, a):
        seen.append((g, f, a.copy()))
        return None if g < 37 else False

    r = fastanchor.evolve_anchors(anchors, wh, generations=100, seed=1, callback=callback)
    assert [g for g, _, _ in seen] == list(range(1, 38))
    np.testing.assert_array_equal([f for _, f, _ in seen], full.history[:37])
    assert r.stopped and r.history.shape == (37,)
    np.testing.assert_array_equal(r.history, full.history[:37])
    np.testing.assert_array_equal(r.anchors, seen[-1][2])
    assert r.fitness == seen[-1][1] == fastanchor.anchor_fitness(r.anchors, wh).fitness
    # a callback that always continues changes nothing
    same = fastanchor.evolve_anchors(anchors, wh, generations=100, seed=1, callback=lambda g, f, a: True)
    np.testing.assert_array_equal(same.anchors, full.anchors)


def test_callback_errors_propagate():
    def callback(g, f, a):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fastanchor.evolve_anchors([[10.0, 10.0]], [[12.0, 9.0]], generations=5, callback=callback)


def test_progress_bar_shows_fitness(capsys):
    wh = coco_like(5000)
    anchors = fastanchor.kmeans_iou(wh, 6, seed=0).anchors
    a = fastanchor.evolve_anchors(anchors, wh, generations=50, seed=2, progress=True)
    b = fastanchor.evolve_anchors(anchors, wh, generations=50, seed=2)
    np.testing.assert_array_equal(a.anchors, b.anchors)
    err = capsys.readouterr().err
    assert "evolve_anchors" in err and f"fitness {a.fitness:.5f}" in err


def test_edge_cases():
    wh = np.array([[10.0, 20.0], [30.0, 15.0], [1.0, 1.5]])
    r0 = fastanchor.evolve_anchors([[1.0, 30.0]], wh, generations=0)
    np.testing.assert_array_equal(r0.anchors, [[2.0, 30.0]])  # raised to min_size
    assert r0.history.shape == (0,) and r0.n_improved == 0 and not r0.stopped
    for strategy in STRATEGIES:
        still = fastanchor.evolve_anchors([[5.0, 5.0]], wh, generations=20, mutation_prob=0.0, strategy=strategy)
        np.testing.assert_array_equal(still.anchors, [[5.0, 5.0]])
        assert np.all(still.history == still.initial_fitness)
    # no box within the threshold of any anchor: fitness 0, nothing to improve on
    far = fastanchor.evolve_anchors([[1e6, 1e6]], wh, generations=20)
    assert far.fitness == 0.0 and far.bpr == 0.0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_stops_the_search():
    wh = coco_like(400_000)
    anchors = fastanchor.kmeans_iou(wh[:10_000], 9, seed=0).anchors
    latency = interrupt_latency(lambda: fastanchor.evolve_anchors(anchors, wh, generations=10**7, seed=0))
    assert latency < 2.0


def test_gil_is_released_during_the_search():
    wh = coco_like(300_000)
    anchors = fastanchor.kmeans_iou(wh[:10_000], 9, seed=0).anchors
    done = threading.Event()
    ticks = 0

    def run():
        fastanchor.evolve_anchors(anchors, wh, generations=600, seed=0, n_threads=1)
        done.set()

    t = threading.Thread(target=run)
    t.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    t.join()
    assert ticks > 20


GOOD = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 1.0], [2.0, 2.0]])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(thr=1.0), ValueError, "thr must be > 1"),
        (dict(mutation_prob=1.5), ValueError, r"mutation_prob must be in \[0, 1\]"),
        (dict(mutation_prob=-0.1), ValueError, r"mutation_prob must be in \[0, 1\]"),
        (dict(sigma=0.0), ValueError, "sigma must be > 0"),
        (dict(sigma=np.nan), ValueError, "sigma must be finite"),
        (dict(generations=-1), ValueError, "generations must be >= 0"),
        (dict(generations=10.0), TypeError, "generations must be an integer"),
        (dict(min_size=0.0), ValueError, "min_size must be > 0"),
        (dict(strategy="genetic"), ValueError, "strategy must be one of"),
        (dict(batch=0), ValueError, "batch must be >= 1"),
        (dict(callback=3), TypeError, "callback must be callable"),
        (dict(seed=-1), ValueError, "seed must be a non-negative integer"),
        (dict(n_threads=0), ValueError, "n_threads must not be 0"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fastanchor.evolve_anchors(GOOD, GOOD, **kwargs)
    with pytest.raises(error, match=match):
        fastanchor.autoanchor(GOOD, 2, **kwargs)


def test_bad_rows_are_named():
    with pytest.raises(ValueError, match=r"anchors has 1 bad row.*row 1: \[-1\.0, 2\.0\]"):
        fastanchor.evolve_anchors([[1.0, 2.0], [-1.0, 2.0]], GOOD)
    with pytest.raises(ValueError, match=r"wh has 1 bad row.*row 3: \[inf, 2\.0\]"):
        fastanchor.evolve_anchors(GOOD, np.r_[GOOD[:3], [[np.inf, 2.0]]])
    with pytest.raises(ValueError, match=r"wh has 1 bad row.*row 0: \[0\.0, 2\.0\]"):
        fastanchor.autoanchor([[0.0, 2.0], [3.0, 4.0]], 1)


def test_autoanchor_pipeline():
    wh = np.r_[coco_like(20_000, smallest=3.0), [[1.0, 1.5], [1.9, 1.9], [2.5, 40.0], [1.0, 2.0]]]
    with pytest.warns(UserWarning, match=r"4 of 20004 boxes are smaller than 3 pixels.*the 2 below 2 pixels"):
        r = fastanchor.autoanchor(wh, 9, seed=0)
    assert r.n_dropped == 2 and r.n_small == 4 and r.n_boxes == 20_002
    assert r.anchors.shape == (9, 2) and np.all(r.anchors >= 2.0)
    np.testing.assert_array_equal(r.anchors, ref.sort_by_area(r.anchors))
    kept = wh[(wh >= 2.0).any(1)]
    km = fastanchor.anchor_fitness(r.kmeans_anchors, kept)
    ev = fastanchor.anchor_fitness(r.anchors, kept)
    assert r.kmeans == km and r.evolved == ev
    assert (r.fitness, r.bpr, r.aat, r.avg_iou) == (ev.fitness, ev.bpr, ev.aat, ev.avg_iou)
    # 20,002 boxes: the default work budget adds restarts up to 2**26 // 20002 generations
    assert r.evolved.fitness > r.kmeans.fitness and r.history.shape == (2**26 // 20_002,)
    assert r.objective == "fitness" and r.evolved_objectives["fitness"] == r.fitness
    # reproducible, for any thread count
    with pytest.warns(UserWarning):
        again = fastanchor.autoanchor(wh, 9, seed=0, n_threads=1)
    np.testing.assert_array_equal(again.anchors, r.anchors)


def test_autoanchor_without_small_boxes_does_not_warn():
    wh = coco_like(3000, smallest=3.0)
    r = fastanchor.autoanchor(wh, 6, generations=50, seed=1, strategy="yolov5", budget=0)
    assert r.n_small == 0 and r.n_dropped == 0 and r.history.shape == (50,)
    # a budget of 3000 * 80 box evaluations: 30 generations more, continuing YOLOv5's search
    more = fastanchor.autoanchor(wh, 6, generations=50, seed=1, strategy="yolov5", budget=3000 * 80)
    assert more.history.shape == (80,)
    np.testing.assert_array_equal(more.history[:50], r.history)


def test_autoanchor_refuses_when_everything_is_dropped():
    with pytest.warns(UserWarning, match="2 of 2 boxes"):
        with pytest.raises(ValueError, match="all 2 boxes are smaller than 2 pixels"):
            fastanchor.autoanchor([[1.0, 1.0], [1.5, 0.5]], 1)


@given(n=st.integers(2, 5000), frac=st.floats(0.0, 1.0), seed=st.integers(0, 2**32))
def test_sample_index_is_a_sorted_subset(n, frac, seed):
    m = min(n - 1, max(1, int(n * frac)))
    got = sample_index(np.random.default_rng(seed), n, m)
    assert got.dtype == np.int64 and got.shape == (m,)
    assert np.all(np.diff(got) > 0) and got[0] >= 0 and got[-1] < n
    np.testing.assert_array_equal(got, sample_index(np.random.default_rng(seed), n, m))


def _same_sample(n, m, seed):
    gen, want_gen = np.random.default_rng(seed), np.random.default_rng(seed)
    np.testing.assert_array_equal(sample_index(gen, n, m), ref.sample_index(want_gen, n, m))
    assert gen.integers(2**62) == want_gen.integers(2**62)  # the same draws consumed


@given(n=st.integers(2, 10**12), m=st.integers(1, 3000), seed=st.integers(0, 2**32))
def test_sample_index_is_the_references(n, m, seed):
    # n > 8 m: repeated draws, else a permutation
    _same_sample(n, min(m, n - 1), seed)


@pytest.mark.parametrize("m", [1, 7, 2**16])
def test_sample_index_with_many_repeats_is_the_references(m):
    # n just above 8 m: the most repeats among the draws
    for seed in range(5):
        _same_sample(8 * m + 1, m, seed)


@given(seq=st.lists(st.integers(0, 40) | st.integers(0, 2**63 - 1), max_size=300), m=st.integers(0, 320))
def test_first_distinct_is_the_references(seq, m):
    arr = np.array(seq, dtype=np.int64)
    np.testing.assert_array_equal(_core._first_distinct(arr, m), ref.first_distinct(arr, m))


@given(values=st.lists(st.integers(0, 2000) | st.integers(0, 2**63 - 1), max_size=300))
def test_sorted_indices_is_numpys_sort(values):
    arr = np.array(values, dtype=np.int64)
    got = _core._sorted_indices(arr)
    np.testing.assert_array_equal(got, np.sort(arr))
    np.testing.assert_array_equal(arr, np.array(values, dtype=np.int64))  # a copy, the input as it was


def test_sample_kernels_refuse_negative_values():
    with pytest.raises(ValueError, match="negative"):
        _core._first_distinct(np.array([3, -1]), 2)
    with pytest.raises(ValueError, match="negative"):
        _core._sorted_indices(np.array([3, -1]))


@pytest.mark.parametrize("n, m", [(6, 2), (20, 2)])  # a permutation; repeated draws
def test_sample_index_draws_every_subset_alike(n, m):
    gen, trials = np.random.default_rng(1), 30_000
    pairs = {}
    for _ in range(trials):
        a, b = sample_index(gen, n, m)
        pairs[(a, b)] = pairs.get((a, b), 0) + 1
    subsets = n * (n - 1) // 2
    assert len(pairs) == subsets
    p = 1 / subsets
    counts = np.array(list(pairs.values()))
    assert np.abs(counts - trials * p).max() < 5 * np.sqrt(trials * p * (1 - p))


def _two_stage_kmeans(wh, k, seed, init_sample, weights=None):
    """autoanchor's k-means on more than init_sample boxes, from the public functions."""
    gen = np.random.default_rng(resolve_seed(seed))
    index = sample_index(gen, len(wh), init_sample)
    sample_weight = None if weights is None else weights[index]
    first = fastanchor.kmeans_iou(wh[index], k, n_init=1, tol=1e-3, sample_weight=sample_weight, seed=gen)
    return fastanchor.kmeans_iou(wh, k, init=first.anchors, tol=1e-3, sample_weight=weights)


def test_autoanchor_fits_a_sample_first_on_more_boxes():
    wh = coco_like(12_000, smallest=3.0)
    r = fastanchor.autoanchor(wh, 6, seed=3, init_sample=2000, generations=100, budget=0)
    km = _two_stage_kmeans(wh, 6, 3, 2000)
    np.testing.assert_array_equal(r.kmeans_anchors, km.anchors)
    assert r.kmeans == fastanchor.anchor_fitness(km.anchors, wh)
    assert r.evolved.fitness >= r.kmeans.fitness
    again = fastanchor.autoanchor(wh, 6, seed=3, init_sample=2000, generations=100, budget=0, n_threads=1)
    np.testing.assert_array_equal(again.anchors, r.anchors)
    # with no more boxes than init_sample, k-means runs on all of them from the seed
    whole = fastanchor.autoanchor(wh, 6, seed=3, init_sample=12_000, generations=100, budget=0)
    gen = np.random.default_rng(resolve_seed(3))
    np.testing.assert_array_equal(whole.kmeans_anchors, fastanchor.kmeans_iou(wh, 6, tol=1e-3, seed=gen).anchors)


def test_autoanchor_weighted_sample():
    wh = coco_like(8000, seed=4, smallest=3.0)
    w = np.random.default_rng(5).uniform(0.0, 2.0, len(wh))
    w[::3] = 0.0  # zero-weight boxes are sampled too, and take no part in either fit
    r = fastanchor.autoanchor(wh, 5, seed=2, init_sample=1500, sample_weight=w, generations=50, budget=0)
    np.testing.assert_array_equal(r.kmeans_anchors, _two_stage_kmeans(wh, 5, 2, 1500, w).anchors)


def test_autoanchor_falls_back_to_all_boxes_when_the_sample_has_too_few_shapes():
    # 3 shapes in bulk and 2 rare ones: the sample of 50 holds only the 3
    wh = np.r_[np.repeat([[10.0, 20.0], [30.0, 15.0], [50.0, 50.0]], 2000, axis=0), [[100.0, 120.0], [7.0, 90.0]]]
    r = fastanchor.autoanchor(wh, 5, seed=0, init_sample=50, generations=20, budget=0)
    gen = np.random.default_rng(resolve_seed(0))
    assert len(np.unique(wh[sample_index(gen, len(wh), 50)], axis=0)) == 3
    np.testing.assert_array_equal(r.kmeans_anchors, fastanchor.kmeans_iou(wh, 5, tol=1e-3, seed=gen).anchors)
    with pytest.raises(ValueError, match="init_sample must be >= 1"):
        fastanchor.autoanchor(wh, 5, init_sample=0)


def _sampled_search(wh, k, seed, search_sample, weights=None, generations=60):
    """autoanchor on more than search_sample boxes (and at most init_sample), from the public
    functions: k-means on all boxes, then the search on a sample drawn after it."""
    gen = np.random.default_rng(resolve_seed(seed))
    km = fastanchor.kmeans_iou(wh, k, tol=1e-3, sample_weight=weights, seed=gen)
    index = sample_index(gen, len(wh), search_sample)
    sample_weight = None if weights is None else weights[index]
    ev = fastanchor.evolve_anchors(
        km.anchors, wh[index], generations=generations, sample_weight=sample_weight, budget=0, seed=gen
    )
    return km, ev


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_autoanchor_searches_a_sample_on_more_boxes(dtype):
    wh = coco_like(9000, seed=7, smallest=3.0).astype(dtype)
    r = fastanchor.autoanchor(wh, 6, seed=4, search_sample=1500, generations=60, budget=0)
    km, ev = _sampled_search(wh, 6, 4, 1500)
    np.testing.assert_array_equal(r.kmeans_anchors, km.anchors)
    np.testing.assert_array_equal(r.anchors, ev.anchors)
    np.testing.assert_array_equal(r.history, ev.history)  # the search's own record, on the sample
    # every report is on all boxes
    assert r.kmeans == fastanchor.anchor_fitness(km.anchors, wh)
    assert r.evolved == fastanchor.anchor_fitness(ev.anchors, wh)
    assert r.evolved != fastanchor.anchor_fitness(ev.anchors, wh[:1500])
    for name, value in r.evolved_objectives.items():
        assert value == fastanchor.anchor_objective(ev.anchors, wh, name)
    again = fastanchor.autoanchor(wh, 6, seed=4, search_sample=1500, generations=60, budget=0, n_threads=1)
    np.testing.assert_array_equal(again.anchors, r.anchors)
    # with no more boxes than search_sample the search runs on all of them, as before
    whole = fastanchor.autoanchor(wh, 6, seed=4, search_sample=9000, generations=60, budget=0)
    gen = np.random.default_rng(resolve_seed(4))
    km = fastanchor.kmeans_iou(wh, 6, tol=1e-3, seed=gen)
    ev = fastanchor.evolve_anchors(km.anchors, wh, generations=60, budget=0, seed=gen)
    np.testing.assert_array_equal(whole.anchors, ev.anchors)
    assert (whole.evolved.fitness, whole.evolved.bpr, whole.evolved.aat) == (ev.fitness, ev.bpr, ev.aat)
    with pytest.raises(ValueError, match="search_sample must be >= 1"):
        fastanchor.autoanchor(wh, 6, search_sample=0)


def test_autoanchor_weighted_search_sample():
    wh = coco_like(6000, seed=8, smallest=3.0)
    w = np.random.default_rng(6).uniform(0.0, 2.0, len(wh))
    w[::4] = 0.0
    r = fastanchor.autoanchor(wh, 5, seed=1, search_sample=1000, sample_weight=w, generations=40, budget=0)
    km, ev = _sampled_search(wh, 5, 1, 1000, w, generations=40)
    np.testing.assert_array_equal(r.anchors, ev.anchors)
    assert r.evolved == fastanchor.anchor_fitness(ev.anchors, wh, sample_weight=w)


def test_autoanchor_searches_all_boxes_when_the_sample_has_no_weight():
    wh = coco_like(3000, seed=9, smallest=3.0)
    # the sample the search would draw after k-means (k=1 draws the same whatever the weights)
    gen = np.random.default_rng(resolve_seed(5))
    fastanchor.kmeans_iou(wh, 1, tol=1e-3, sample_weight=np.ones(len(wh)), seed=gen)
    drawn = sample_index(gen, len(wh), 100)
    w = np.ones(len(wh))
    w[drawn] = 0.0
    r = fastanchor.autoanchor(wh, 1, seed=5, search_sample=100, sample_weight=w, generations=30, budget=0)
    gen = np.random.default_rng(resolve_seed(5))
    km = fastanchor.kmeans_iou(wh, 1, tol=1e-3, sample_weight=w, seed=gen)
    np.testing.assert_array_equal(sample_index(gen, len(wh), 100), drawn)
    ev = fastanchor.evolve_anchors(km.anchors, wh, generations=30, sample_weight=w, budget=0, seed=gen)
    np.testing.assert_array_equal(r.anchors, ev.anchors)


@needs_data
@pytest.mark.parametrize("name", ["coco128", "voc2007_val"])
def test_real_data_default_strategy_at_least_yolov5(name):
    path = next((p for p in real_box_files() if p.stem == name), None)
    if path is None:
        pytest.skip(f"{name}.npz is absent")
    wh = clean(load_real(path, 640))
    wh = wh[(wh >= 2.0).any(1)]
    anchors = fastanchor.kmeans_iou(wh, 9, seed=0).anchors
    med = {
        s: np.median([fastanchor.evolve_anchors(anchors, wh, strategy=s, seed=i).fitness for i in range(5)])
        for s in STRATEGIES
    }
    assert med["anchorwise"] >= med["yolov5"]


@needs_data
def test_real_data_autoanchor_improves_bpr_and_fitness():
    path = next((p for p in real_box_files() if p.stem == "visdrone_val"), None)
    if path is None:
        pytest.skip("visdrone_val.npz is absent")
    wh = clean(load_real(path, 640))
    with pytest.warns(UserWarning, match="smaller than 3 pixels"):
        r = fastanchor.autoanchor(wh, 9, seed=0)
    assert r.evolved.fitness > r.kmeans.fitness and r.evolved.bpr >= r.kmeans.bpr - 1e-3
    # VisDrone's objects are tiny: even the largest anchors are below the coarse strides
    with pytest.warns(UserWarning, match="smaller than the stride of its level"):
        levels = fastanchor.split_levels(r.anchors)
    assert len(levels) == 3
