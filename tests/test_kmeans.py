"""kmeans_iou against the numpy reference, and its properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference as ref
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from simd import portable
from strategies import boxes_and_k, n_distinct, sides, weights_for, wh_arrays

import fastanchor


def assert_same_as_reference(got, expected):
    np.testing.assert_allclose(got.anchors, expected["anchors"], rtol=1e-9)
    np.testing.assert_array_equal(got.labels, expected["labels"])
    assert got.n_iter == expected["n_iter"]
    assert got.converged == expected["converged"]
    np.testing.assert_allclose(got.avg_iou, expected["avg_iou"], rtol=1e-9)


@st.composite
def explicit_problems(draw):
    wh, k = draw(boxes_and_k())
    if draw(st.booleans()):
        rows = draw(st.lists(st.integers(0, wh.shape[0] - 1), min_size=k, max_size=k))
        init = wh[rows]  # may repeat rows: empty clusters
    else:
        init = np.array(draw(st.lists(st.tuples(sides, sides), min_size=k, max_size=k)), dtype=np.float64)
    update = draw(st.sampled_from(["median", "mean"]))
    weights = draw(st.none() | weights_for(wh.shape[0]))
    max_iter = draw(st.sampled_from([0, 1, 2, 5, 300]))
    tol = draw(st.sampled_from([0.0, 0.0, 1e-3, 0.1]))
    return wh, k, init, update, weights, max_iter, tol


@given(explicit_problems())
def test_explicit_init_matches_reference(problem):
    wh, k, init, update, weights, max_iter, tol = problem
    got = fastanchor.kmeans_iou(
        wh, k, init=init, update=update, sample_weight=weights, max_iter=max_iter, tol=tol, n_threads=1
    )
    expected = ref.lloyd(wh, init, update=update, max_iter=max_iter, tol=tol, sample_weight=weights)
    assert_same_as_reference(got, expected)


@pytest.mark.parametrize("update", ["median", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
def test_explicit_init_matches_reference_on_several_chunks(update, weighted):
    # More boxes than one 4096-box chunk, with integer sizes (many ties and duplicates).
    rng = np.random.default_rng(7)
    wh = rng.integers(1, 60, (10_000, 2)).astype(np.float64)
    weights = rng.integers(1, 5, 10_000).astype(np.float64) if weighted else None
    init = wh[rng.choice(len(wh), 6, replace=False)]
    expected = ref.lloyd(wh, init, update=update, sample_weight=weights)
    for t in (1, 2, 3):
        got = fastanchor.kmeans_iou(wh, 6, init=init, update=update, sample_weight=weights, n_threads=t)
        assert_same_as_reference(got, expected)


@given(boxes_and_k(), st.sampled_from(["median", "mean"]), st.sampled_from(["k-means++", "random"]), st.data())
def test_result_is_well_formed(problem, update, init, data):
    wh, k = problem
    weights = data.draw(st.none() | weights_for(wh.shape[0]))
    r = fastanchor.kmeans_iou(wh, k, init=init, update=update, sample_weight=weights, seed=0, n_init=2)
    assert r.anchors.shape == (k, 2) and r.anchors.dtype == np.float64
    assert r.labels.shape == (wh.shape[0],) and r.labels.dtype == np.int32
    assert np.all(np.isfinite(r.anchors)) and np.all(r.anchors > 0)
    area = r.anchors.prod(1)
    assert np.all(np.diff(area) >= 0)
    ties = np.diff(area) == 0
    assert np.all(np.diff(r.anchors[:, 0])[ties] >= 0)
    # labels are the assignment to the returned anchors, avg_iou their weighted best IoU
    labels, _ = ref.assign(r.anchors, wh)
    np.testing.assert_array_equal(r.labels, labels)
    np.testing.assert_allclose(r.avg_iou, ref.avg_iou(r.anchors, wh, weights), rtol=1e-9)
    assert 0 < r.avg_iou <= 1


@given(boxes_and_k(), st.sampled_from(["median", "mean"]), st.integers(0, 2**32))
def test_same_seed_same_result_for_any_thread_count(problem, update, seed):
    wh, k = problem
    runs = [fastanchor.kmeans_iou(wh, k, update=update, seed=seed, n_threads=t) for t in (1, 2, 3)]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.anchors, runs[0].anchors)
        np.testing.assert_array_equal(r.labels, runs[0].labels)
        assert r.avg_iou == runs[0].avg_iou and r.n_iter == runs[0].n_iter


@pytest.mark.parametrize("update", ["median", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
def test_bit_identical_for_any_thread_count_on_many_chunks(update, weighted):
    rng = np.random.default_rng(3)
    wh = np.exp(rng.normal(3.0, 1.0, (30_000, 2)))
    weights = rng.uniform(0.1, 3.0, len(wh)) if weighted else None
    runs = [
        fastanchor.kmeans_iou(wh, 9, update=update, sample_weight=weights, seed=11, n_threads=t, n_init=2)
        for t in (1, 2, 3)
    ]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.anchors, runs[0].anchors)
        np.testing.assert_array_equal(r.labels, runs[0].labels)
        assert r.avg_iou == runs[0].avg_iou


@given(wh_arrays(min_rows=8), st.sampled_from(["k-means++", "random"]))
def test_initial_anchors_are_input_boxes(wh, init):
    k = min(5, n_distinct(wh))
    r = fastanchor.kmeans_iou(wh, k, init=init, max_iter=0, seed=5)
    rows = {tuple(x) for x in wh}
    assert all(tuple(a) in rows for a in r.anchors)
    assert len({tuple(a) for a in r.anchors}) == k  # distinct


def test_kmeanspp_init_changes_with_the_seed():
    rng = np.random.default_rng(0)
    wh = np.exp(rng.normal(3, 1, (2000, 2)))
    inits = {fastanchor.kmeans_iou(wh, 9, max_iter=0, seed=s).anchors.tobytes() for s in range(5)}
    assert len(inits) == 5


def test_seed_accepts_generators_and_is_reproducible():
    rng = np.random.default_rng(0)
    wh = np.exp(rng.normal(3, 1, (3000, 2)))
    a = fastanchor.kmeans_iou(wh, 5, seed=np.random.default_rng(42))
    b = fastanchor.kmeans_iou(wh, 5, seed=np.random.default_rng(42))
    np.testing.assert_array_equal(a.anchors, b.anchors)
    c = fastanchor.kmeans_iou(wh, 5, seed=np.random.SeedSequence(42))
    assert c.anchors.shape == (5, 2)


@st.composite
def distinct_value_problems(draw):
    """Boxes whose values are all distinct (so no exact IoU ties), with distinct init anchors."""
    n = draw(st.integers(2, 60))
    flat = draw(hnp.arrays(np.float64, (2 * n,), elements=st.floats(0.01, 1000.0), unique=True))
    wh = flat.reshape(n, 2)
    k = draw(st.integers(1, min(6, n)))
    rows = draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k, unique=True))
    return wh, k, wh[rows], draw(st.sampled_from(["median", "mean"])), draw(st.sampled_from([1, 3, 300]))


@given(distinct_value_problems(), st.randoms(use_true_random=False))
def test_row_permutation_does_not_change_anchors_from_explicit_init(problem, rnd):
    # Only the empty-cluster rule looks at box order (to break exact IoU ties), so without ties
    # the fit does not depend on the order of the rows; sums of means may round differently.
    wh, k, init, update, max_iter = problem
    perm = np.array(rnd.sample(range(wh.shape[0]), wh.shape[0]))
    a = fastanchor.kmeans_iou(wh, k, init=init, update=update, max_iter=max_iter)
    b = fastanchor.kmeans_iou(wh[perm], k, init=init, update=update, max_iter=max_iter)
    np.testing.assert_allclose(a.anchors, b.anchors, rtol=1e-9)
    np.testing.assert_array_equal(a.labels[perm], b.labels)


@given(boxes_and_k(max_rows=40), st.sampled_from(["median", "mean"]), st.data())
def test_zero_weight_boxes_do_not_change_the_fit(problem, update, data):
    wh, k = problem
    extra = data.draw(wh_arrays(max_rows=10))
    init = wh[:k] if n_distinct(wh[:k]) == k else np.unique(wh, axis=0)[:k]
    both = np.vstack([wh, extra])
    weights = np.r_[np.ones(len(wh)), np.zeros(len(extra))]
    a = fastanchor.kmeans_iou(wh, k, init=init, update=update)
    b = fastanchor.kmeans_iou(both, k, init=init, update=update, sample_weight=weights)
    np.testing.assert_array_equal(a.anchors, b.anchors)
    np.testing.assert_array_equal(a.labels, b.labels[: len(wh)])
    np.testing.assert_array_equal(b.labels[len(wh) :], ref.assign(b.anchors, extra)[0])


def test_integer_weights_equal_repeated_boxes():
    rng = np.random.default_rng(5)
    wh = rng.integers(1, 50, (300, 2)).astype(np.float64)
    counts = rng.integers(1, 4, 300)
    init = np.unique(wh, axis=0)[::37][:6]
    for update in ("median", "mean"):
        a = fastanchor.kmeans_iou(wh, 6, init=init, update=update, sample_weight=counts)
        b = fastanchor.kmeans_iou(np.repeat(wh, counts, axis=0), 6, init=init, update=update)
        np.testing.assert_allclose(a.anchors, b.anchors, rtol=1e-12)


def test_more_restarts_never_lower_the_average_iou():
    rng = np.random.default_rng(2)
    wh = np.exp(rng.normal(3, 1, (5000, 2)))
    single = [fastanchor.kmeans_iou(wh, 9, seed=4, n_init=1).avg_iou]
    multi = fastanchor.kmeans_iou(wh, 9, seed=4, n_init=4)
    # run 0 of the multi-start is the single run with the same seed
    assert multi.avg_iou >= single[0]


def test_known_clusters_are_recovered():
    rng = np.random.default_rng(0)
    centers = np.array([[10.0, 10.0], [40.0, 20.0], [20.0, 80.0]])
    wh = np.vstack([c * np.exp(rng.normal(0, 0.05, (500, 2))) for c in centers])
    r = fastanchor.kmeans_iou(wh, 3, seed=0)
    np.testing.assert_allclose(r.anchors, centers[np.argsort(centers.prod(1))], rtol=0.03)
    assert r.converged and r.avg_iou > 0.9


def test_max_iter_zero_and_convergence_flags():
    rng = np.random.default_rng(0)
    wh = np.exp(rng.normal(3, 1, (2000, 2)))
    r0 = fastanchor.kmeans_iou(wh, 4, max_iter=0, seed=1)
    assert r0.n_iter == 0 and not r0.converged
    r1 = fastanchor.kmeans_iou(wh, 4, max_iter=1, seed=1)
    assert r1.n_iter == 1 and not r1.converged
    r = fastanchor.kmeans_iou(wh, 4, seed=1)
    assert r.converged and r.n_iter >= 1


def test_progress_bar_runs(capsys):
    rng = np.random.default_rng(0)
    wh = np.exp(rng.normal(3, 1, (2000, 2)))
    a = fastanchor.kmeans_iou(wh, 5, seed=3, progress=True)
    b = fastanchor.kmeans_iou(wh, 5, seed=3)
    np.testing.assert_array_equal(a.anchors, b.anchors)
    assert "kmeans_iou" in capsys.readouterr().err


def test_result_is_frozen():
    r = fastanchor.kmeans_iou([[1, 2], [3, 4]], 1)
    with pytest.raises(AttributeError):
        r.avg_iou = 2.0  # type: ignore[misc]


@given(boxes_and_k(), st.sampled_from(["median", "mean"]), st.floats(1e-3, 1e3), st.integers(0, 2**32))
def test_equal_weights_give_exactly_the_unweighted_fit(problem, update, w, seed):
    wh, k = problem
    a = fastanchor.kmeans_iou(wh, k, update=update, seed=seed)
    b = fastanchor.kmeans_iou(wh, k, update=update, seed=seed, sample_weight=np.full(len(wh), w))
    np.testing.assert_array_equal(a.anchors, b.anchors)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.avg_iou == b.avg_iou


# ---- the float ranking, the storage order and the bounds (kmeans.hpp) ----


def _boundary_boxes(a, b, w, rng):
    """Boxes of widths w on the boundary where IoU with anchors a and b is equal (bisection on
    the height, in float64), moved off it by relative steps float32 cannot resolve (1e-12 to
    1e-6), and by steps inside the margin of the AVX2 kernel's approximate reciprocal (1e-5 to
    3e-3): each must be flagged, or ranked right."""
    lo, hi = np.full_like(w, 1e-3), np.full_like(w, 1e3)

    def gap(h):
        box = np.stack([w, h], 1)
        return ref.wh_iou(box, a[None])[:, 0] - ref.wh_iou(box, b[None])[:, 0]

    sign_lo = np.sign(gap(lo))
    for _ in range(80):
        mid = np.sqrt(lo * hi)
        same = np.sign(gap(mid)) == sign_lo
        lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
    steps = [1e-12, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3]
    step = rng.choice([0.0] + steps + [-x for x in steps], w.size)
    return np.stack([w, lo * (1 + step)], 1)


@pytest.mark.parametrize("update", ["median", "mean"])
def test_near_ties_in_float_are_decided_exactly(update):
    # Boxes whose IoUs with two anchors differ by less than float32 can resolve: the float
    # ranking must flag them and the exact rule (highest double IoU, lowest index on ties)
    # decide. They sit on the boundaries between anchor pairs, moved off by 1e-12 to 1e-6.
    rng = np.random.default_rng(11)
    init = np.array([[10.0, 20.0], [25.0, 12.0], [40.0, 41.0], [5.0, 3.0]])
    parts = [rng.uniform(2, 60, (2000, 2))]
    for i, j in [(0, 1), (1, 2), (0, 2), (0, 3)]:
        w = rng.uniform(min(init[i, 0], init[j, 0]), max(init[i, 0], init[j, 0]) + 1, 2000)
        parts.append(_boundary_boxes(init[i], init[j], w, rng))
    wh = np.concatenate(parts)
    wh = wh[np.isfinite(wh).all(1) & (wh > 0).all(1)]
    got = fastanchor.kmeans_iou(wh, 4, init=init, update=update, max_iter=0)
    np.testing.assert_array_equal(got.labels, ref.assign(got.anchors, wh)[0])  # labels index sorted anchors
    expected = ref.lloyd(wh, init, update=update, max_iter=3)
    assert_same_as_reference(fastanchor.kmeans_iou(wh, 4, init=init, update=update, max_iter=3), expected)


@pytest.mark.parametrize("update", ["median", "mean"])
def test_wide_value_range_matches_reference(update):
    # Sides from 1e-20 to 1e20 do not fit float32's range under one scale: the double kernels run.
    rng = np.random.default_rng(12)
    wh = np.exp(rng.uniform(np.log(1e-20), np.log(1e20), (5000, 2)))
    init = wh[rng.choice(len(wh), 7, replace=False)]
    expected = ref.lloyd(wh, init, update=update, max_iter=20)
    assert_same_as_reference(fastanchor.kmeans_iou(wh, 7, init=init, update=update, max_iter=20), expected)
    # k-means++ on such rows draws in double too (it once read a float form that did not exist).
    for rows in (wh, wh.astype(np.float32)):
        got = fastanchor.kmeans_iou(rows, 7, update=update, seed=3)
        one = fastanchor.kmeans_iou(rows, 7, update=update, seed=3, n_threads=1)
        np.testing.assert_array_equal(got.anchors, one.anchors)
        np.testing.assert_array_equal(got.labels, ref.assign(got.anchors, rows.astype(np.float64))[0])


@pytest.mark.parametrize("update", ["median", "mean"])
def test_many_anchors_match_reference(update):
    # k above the fixed-K kernels (16) and above the 31 label bits of the block summaries.
    rng = np.random.default_rng(13)
    wh = np.exp(rng.normal(3, 0.8, (9000, 2)))
    init = wh[rng.choice(len(wh), 40, replace=False)]
    expected = ref.lloyd(wh, init, update=update, max_iter=30)
    for t in (1, 2):
        got = fastanchor.kmeans_iou(wh, 40, init=init, update=update, max_iter=30, n_threads=t)
        assert_same_as_reference(got, expected)


def test_long_fit_on_many_chunks_matches_reference():
    # A fit long enough for the bounds and the block summaries to skip most boxes, on a set
    # that creeps (COCO-like shapes): every iteration's labels must still be the exact ones.
    rng = np.random.default_rng(14)
    n = 30_000
    size = np.exp(rng.normal(3.5, 1.1, n))
    aspect = np.exp(rng.normal(0, 0.6, n))
    wh = np.stack([size * np.sqrt(aspect), size / np.sqrt(aspect)], 1).astype(np.float32).astype(np.float64)
    init = wh[rng.choice(n, 9, replace=False)]
    expected = ref.lloyd(wh, init, update="median", max_iter=60)
    got = fastanchor.kmeans_iou(wh, 9, init=init, max_iter=60)
    assert_same_as_reference(got, expected)


def test_avg_iou_equals_the_public_avg_iou():
    # kmeans_iou reports the average in input order, whatever order it stores the boxes in.
    rng = np.random.default_rng(15)
    wh = np.exp(rng.normal(3, 1, (20_000, 2)))
    weights = rng.uniform(0.5, 2, len(wh))
    for w in (None, weights):
        r = fastanchor.kmeans_iou(wh, 6, seed=0, sample_weight=w)
        assert r.avg_iou == fastanchor.avg_iou(r.anchors, wh, sample_weight=w)


def test_weighted_mean_survives_weights_spanning_300_orders():
    # weight * side underflows for the light boxes: their cluster's mean must still be exact.
    wh = np.array([[1, 1e-13], [1, 1], [1, 1], [1, 100], [1, 10], [10, 1], [1, 1]], dtype=np.float64)
    w = np.array([1, 1e300, 0, 1, 1, 1, 1], dtype=np.float64)
    for seed in range(10):
        r = fastanchor.kmeans_iou(wh, 5, update="mean", max_iter=1, sample_weight=w, seed=seed)
        pos = w > 0
        assert (r.anchors >= wh[pos].min(0) * (1 - 1e-12)).all()
        assert (r.anchors <= wh[pos].max(0) * (1 + 1e-12)).all()
        assert (r.anchors == [1.0, 1e-13]).all(axis=1).any()  # the light box alone: its own shape


# ---- the Lloyd assignment and updates of kmeans.hpp, driven step by step (_core.lloyd_trace) ----


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("update", ["median", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
def test_every_assignment_gives_the_exact_labels(update, weighted, dtype):
    # A sequence of anchor sets that takes every pass: the first assignment ranks every box and
    # stores its bound (0); a far move ranks every box for its label alone (2); the next small
    # move must renew the bounds (0) and the one after uses them, ranking only the boxes whose
    # bound fails (1). Boxes sit on the boundaries between anchor pairs of the sets, moved off by 1e-12
    # to 1e-6 (as far as the dtype allows), and the set spans several chunks: each assignment's
    # labels must be the exact rule's and each update the reference's, for any number of threads,
    # with the AVX2 or the portable float kernels, reading float32 or float64 rows in place.
    rng = np.random.default_rng(21)
    a0 = np.array([[10.0, 20.0], [25.0, 12.0], [40.0, 41.0], [5.0, 3.0], [90.0, 60.0]])
    a1 = a0 * np.exp(rng.normal(0, 0.4, a0.shape))  # far: 1 - IoU well above 0.05
    a2 = a1 * (1 + 1e-4)
    a3 = a2 * (1 + 1e-4)
    a4 = a3 * np.exp(rng.normal(0, 0.4, a0.shape))
    sets = np.stack([a0, a1, a2, a3, a4])
    parts = [np.exp(rng.normal(3, 0.9, (12000, 2)))]
    for a in (a1, a3):
        for i, j in [(0, 1), (1, 2), (0, 2), (0, 3), (2, 4)]:
            w = rng.uniform(min(a[i, 0], a[j, 0]), max(a[i, 0], a[j, 0]) + 1, 1500)
            parts.append(_boundary_boxes(a[i], a[j], w, rng))
    wh = np.concatenate(parts)
    wh = np.ascontiguousarray(wh[np.isfinite(wh).all(1) & (wh > 0).all(1)]).astype(dtype)
    exact = wh.astype(np.float64)
    weights = rng.uniform(0.1, 10.0, len(wh)) if weighted else None
    wt = weights if weighted else np.ones(len(wh))

    runs = [fastanchor._core.lloyd_trace(wh, weights, sets, update, t) for t in (1, 2, 3)]
    with portable():
        runs.append(fastanchor._core.lloyd_trace(wh, weights, sets, update, 2))
    assert runs[0]["passes"].tolist() == [0, 2, 0, 1, 2]
    for s, a in enumerate(sets):
        labels, best = ref.assign(a, exact)
        np.testing.assert_array_equal(runs[0]["labels"][s], labels)
        np.testing.assert_allclose(
            runs[0]["updated"][s], ref._update_step(a, labels, best, exact, wt, update), rtol=1e-9
        )
    for other in runs[1:]:
        np.testing.assert_array_equal(other["labels"], runs[0]["labels"])
        np.testing.assert_array_equal(other["updated"], runs[0]["updated"])
        np.testing.assert_array_equal(other["passes"], runs[0]["passes"])
    if dtype == np.float32:  # the same values as float64 rows: the same steps, bit for bit
        as64 = fastanchor._core.lloyd_trace(exact, weights, sets, update, 2)
        np.testing.assert_array_equal(as64["labels"], runs[0]["labels"])
        np.testing.assert_array_equal(as64["updated"], runs[0]["updated"])


def _median_cases(rng):
    """Data whose median bins are crowded in every way the histogram median meets: continuous
    values, many equal pixel values, a bin of over 2^15 distinct values (refined by a finer
    histogram), float64 values closer than a float32 step (one key, many values), even and odd
    cluster sizes."""
    n = 90_001
    yield "continuous", np.exp(rng.normal(3, 1.0, (n, 2)))
    yield "pixels", rng.integers(1, 641, (n, 2)).astype(np.float64)
    crowded = np.exp(rng.normal(3, 1.0, (n, 2)))
    crowded[: n // 2] = 50.0 + rng.uniform(0, 0.01, (n // 2, 2))  # one narrow bin, 45k distinct
    yield "crowded bin", crowded
    close = np.exp(rng.normal(3, 1.0, (n, 2)))
    close[: n // 2] = 50.0 * (1 + rng.integers(0, 1000, (n // 2, 2)) * 2.0**-52)  # within one float step
    yield "sub-float steps", close
    yield "few values", rng.integers(1, 5, (n - 1, 2)).astype(np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_histogram_median_is_the_exact_median(dtype):
    # The unit-weight median update against numpy.median of every cluster, exactly (no tolerance),
    # for anchor sets that split the data unevenly (k = 1 and 2 give clusters of tens of thousands;
    # 12 and 16 put labels in the upper half of the gathering pass's 16-entry range tables).
    rng = np.random.default_rng(31)
    for name, wh in _median_cases(rng):
        wh = wh.astype(dtype)
        exact = wh.astype(np.float64)
        for k in (1, 2, 7, 12, 16):
            anchors = np.quantile(exact, np.linspace(0.2, 0.8, k), axis=0)
            sets = anchors[None]
            out = fastanchor._core.lloyd_trace(wh, None, sets, "median", 2)
            labels, _ = ref.assign(anchors, exact)
            np.testing.assert_array_equal(out["labels"][0], labels)
            for j in range(k):
                members = exact[labels == j]
                if len(members):
                    assert out["updated"][0, j].tolist() == np.median(members, axis=0).tolist(), (name, k, j)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weights", ["small integers", "continuous"])
def test_weighted_histogram_median_is_the_exact_weighted_median(dtype, weights):
    # The weighted median update against the reference's weighted median of every cluster,
    # exactly, on the data of the unit-weight test above. Small integer weights meet exact halves
    # of a cluster's total; continuous ones are read as integers of 31 bits. A run of small moves
    # (the medians settle in their bins and are then read from the values cached around them,
    # kept up to date by the moves and their weights) must give the reference's update at each step.
    rng = np.random.default_rng(33)
    for name, wh in _median_cases(rng):
        wh = wh.astype(dtype)
        exact = wh.astype(np.float64)
        n = len(wh)
        wt = rng.integers(1, 5, n).astype(np.float64) if weights == "small integers" else rng.uniform(0.01, 3.0, n)
        units = ref.median_int_weights(wt)
        for k in (1, 2, 7, 12, 16):
            a = np.quantile(exact, np.linspace(0.2, 0.8, k), axis=0)
            sets = np.stack([a * (1 + 1e-3 * s) for s in range(4)])
            out = fastanchor._core.lloyd_trace(wh, wt, sets, "median", 2)
            for s, anchors in enumerate(sets):
                labels, _ = ref.assign(anchors, exact)
                np.testing.assert_array_equal(out["labels"][s], labels)
                for j in range(k):
                    members = labels == j
                    if members.any():
                        want = [ref.weighted_median(exact[members, X], units[members]) for X in (0, 1)]
                        assert out["updated"][s, j].tolist() == want, (name, k, s, j)


def test_a_fit_reads_float32_and_float64_rows_in_place():
    # No copy of a C-contiguous float32 or float64 input on the Python side: the largest numpy
    # allocation during the fit is the int32 labels it returns (tracemalloc sees numpy's memory).
    import tracemalloc

    rng = np.random.default_rng(32)
    for dtype in (np.float32, np.float64):
        wh = np.exp(rng.normal(3, 1.0, (300_000, 2))).astype(dtype)
        tracemalloc.start()
        try:
            r = fastanchor.kmeans_iou(wh, 9, seed=0, max_iter=3)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 4 * len(wh) + 2_000_000, (dtype, peak)
        same = fastanchor.kmeans_iou(wh.astype(np.float64), 9, seed=0, max_iter=3)
        np.testing.assert_array_equal(r.anchors, same.anchors)
        np.testing.assert_array_equal(r.labels, same.labels)


@pytest.mark.parametrize("portable_kernels", [False, True])
@pytest.mark.parametrize("update", ["median", "mean"])
def test_assignments_over_random_moves_match_reference(update, portable_kernels):
    # Anchor sets from random walks with steps of every size, on data of several kinds
    # (continuous, pixel-like, few distinct values: exact ties), with the AVX2 float kernels
    # (where the CPU has them) and the portable ones.
    rng = np.random.default_rng(22)
    for trial in range(6):
        kind = trial % 3
        n, k = 6000, int(rng.integers(2, 12))
        if kind == 0:
            wh = np.exp(rng.normal(2, 1.2, (n, 2)))
        elif kind == 1:
            wh = rng.uniform(1, 640, (n, 2)).astype(np.float32).astype(np.float64)
        else:
            wh = rng.integers(1, 9, (n, 2)).astype(np.float64)
        a = wh[rng.choice(n, k, replace=False)]
        sets = []
        for _ in range(8):
            sets.append(a)
            a = a * np.exp(rng.choice([0.0, 1e-6, 1e-3, 0.05, 0.5]) * rng.normal(0, 1, a.shape))
        sets = np.stack(sets)
        with portable(portable_kernels):
            out = fastanchor._core.lloyd_trace(wh, None, sets, update, 2)
        for s, a in enumerate(sets):
            labels, best = ref.assign(a, wh)
            np.testing.assert_array_equal(out["labels"][s], labels)
            np.testing.assert_allclose(
                out["updated"][s], ref._update_step(a, labels, best, wh, np.ones(n), update), rtol=1e-9
            )


def test_mean_of_exact_sums_is_the_correctly_rounded_mean():
    # Unit-weight means come from exact integer sums: a cluster of identical boxes has exactly
    # their value as its mean (a float64 running sum of 1e5 copies of 0.1 does not), and a
    # cluster mixing values 2^40 apart loses nothing of the small ones.
    wh = np.array([[0.1, 0.3]] * 100_000 + [[1e5, 1e5]] * 3 + [[1e5 + 2.0**-20, 1e5]])
    sets = np.array([[[0.1, 0.3], [1e5, 1e5]]])
    out = fastanchor._core.lloyd_trace(wh, None, sets, "mean", 2)
    assert out["updated"][0, 0].tolist() == [0.1, 0.3]
    assert out["updated"][0, 1].tolist() == [1e5 + 2.0**-22, 1e5]


@pytest.mark.parametrize("kind", ["float32 pixels", "float32 over 38 binary orders", "float64", "float64 of floats"])
def test_unit_weight_mean_is_exact_in_every_integer_form(kind):
    # The exact sums take one of three forms by the data's range (Problem::make): 64-bit sums
    # (float32 pixel sizes), 128-bit sums of 64-bit integers (float32 values 2^38 apart: one
    # value fits in 62 bits, the sum of two may not), 128-bit sums from the mantissa bits (float64
    # values with full mantissas). Float64 rows of floats are read as float32 rows. Whatever the
    # form, a cluster's mean is its correctly rounded sum (math.fsum) over its count, exactly,
    # after the first assignment (moves from no cluster) and after later ones (between clusters).
    rng = np.random.default_rng(50)
    n = 20_000
    if kind == "float32 pixels" or kind == "float64 of floats":
        wh = rng.integers(1, 641, (n, 2)).astype(np.float64) + rng.integers(0, 4, (n, 2)) * 0.25
    elif kind == "float32 over 38 binary orders":
        wh = np.exp2(rng.uniform(-20, 18, (n, 2)))
    else:
        wh = np.exp(rng.normal(3, 1.0, (n, 2)))
    if kind.startswith("float32"):
        wh = wh.astype(np.float32)
    exact = wh.astype(np.float64)
    a = exact[rng.choice(n, 6, replace=False)]
    sets = np.stack([a, a * np.exp(rng.normal(0, 0.3, a.shape)), a * np.exp(rng.normal(0, 0.3, a.shape))])
    for threads in (1, 2):
        out = fastanchor._core.lloyd_trace(wh, None, sets, "mean", threads)
        for s, anchors in enumerate(sets):
            labels, _ = ref.assign(anchors, exact)
            np.testing.assert_array_equal(out["labels"][s], labels)
            for j in range(len(anchors)):
                members = exact[labels == j]
                if len(members):
                    want = [math.fsum(members[:, X]) / len(members) for X in (0, 1)]
                    assert out["updated"][s, j].tolist() == want, (kind, threads, s, j)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avx2_and_portable_kernels_give_the_same_fit(dtype, weighted):
    # Whole fits from k-means++ (its potentials: potential_avx2 or potential_t, the same sums bit
    # for bit) through every kind of Lloyd pass (the labelling kernels: label_top2_avx2 or
    # label_top2): the same anchors, labels and iterations, where the CPU has AVX2 (elsewhere
    # both calls run the portable kernels). n is not a multiple of 8 or 16 (the kernels' tails).
    rng = np.random.default_rng(60)
    n = 50_003
    size = np.exp(rng.normal(3.5, 1.1, n))
    aspect = np.exp(rng.normal(0, 0.6, n))
    wh = np.stack([size * np.sqrt(aspect), size / np.sqrt(aspect)], 1).astype(dtype)
    weights = rng.uniform(0.1, 3.0, n) if weighted else None
    for update in ("median", "mean"):
        for seed in (0, 1):
            args = (wh, weights, 9, "k-means++", None, update, 1, 300, 0.0, seed, 2, None)
            fast = fastanchor._core.kmeans_iou(*args)
            with portable():
                slow = fastanchor._core.kmeans_iou(*args)
            np.testing.assert_array_equal(fast["anchors"], slow["anchors"])
            np.testing.assert_array_equal(fast["labels"], slow["labels"])
            assert fast["n_iter"] == slow["n_iter"] and fast["avg_iou"] == slow["avg_iou"]


@pytest.mark.parametrize("k", [17, 254, 255, 300, 4097])
@pytest.mark.parametrize("update", ["median", "mean"])
def test_large_k_takes_every_engine_and_matches_reference(k, update):
    # k > 16: the double kernels (no float ranking, no bounds); k >= 255: four-byte labels;
    # k > 4096 (median): the sort-based median instead of histograms.
    rng = np.random.default_rng(40 + k)
    wh = np.exp(rng.normal(3, 1.0, (9000, 2)))
    a = wh[rng.choice(len(wh), k, replace=False)]
    sets = np.stack([a, a * np.exp(rng.normal(0, 0.02, a.shape))])
    out = fastanchor._core.lloyd_trace(wh, None, sets, update, 2)
    for s, anchors in enumerate(sets):
        labels, best = ref.assign(anchors, wh)
        np.testing.assert_array_equal(out["labels"][s], labels)
        np.testing.assert_allclose(
            out["updated"][s], ref._update_step(anchors, labels, best, wh, np.ones(len(wh)), update), rtol=1e-9
        )


def test_equal_weights_fit_as_unit_weights():
    # Ten weights of 0.01: a float64 cumulative sum rounds past half the total at the fifth box, but equal
    # weights are unit weights, so the median is numpy's, the midpoint of the fifth and sixth heights.
    h = np.arange(1.0, 11.0)
    wh = np.c_[np.full(10, 5.0), h]
    weights = np.full(10, 0.01)
    assert np.cumsum(weights)[4] > np.cumsum(weights)[-1] / 2  # the trap this test is about
    got = fastanchor.kmeans_iou(wh, 1, init=[[5.0, 5.0]], update="median", sample_weight=weights, max_iter=1)
    assert got.anchors[0, 1] == 5.5 == np.median(h)
    expected = ref.lloyd(wh, [[5.0, 5.0]], update="median", max_iter=1, sample_weight=weights)
    assert expected["anchors"][0, 1] == 5.5
