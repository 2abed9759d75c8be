"""kmeans_log (k-means in log space) against the numpy reference, and its properties."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import reference as ref
from conftest import interrupt_latency, load_real, needs_data, real_box_files
from hypothesis import given
from hypothesis import strategies as st
from strategies import boxes_and_k, sides, weights_for, wh_arrays

import fastanchor


def n_distinct_logs(wh):
    """Rows with distinct logs: neighbouring doubles of a large side can share one log, and the seeding
    draws distinct logs."""
    return int(np.unique(ref.log_rows(wh), axis=0).shape[0])


@st.composite
def log_boxes_and_k(draw):
    wh, k = draw(boxes_and_k())
    return wh, min(k, n_distinct_logs(wh))


@st.composite
def explicit_problems(draw):
    wh, k = draw(boxes_and_k())
    if draw(st.booleans()):
        rows = draw(st.lists(st.integers(0, wh.shape[0] - 1), min_size=k, max_size=k))
        init = wh[rows]  # may repeat rows: empty clusters
    else:
        init = np.array(draw(st.lists(st.tuples(sides, sides), min_size=k, max_size=k)), dtype=np.float64)
    weights = draw(st.none() | weights_for(wh.shape[0]))
    max_iter = draw(st.sampled_from([0, 1, 2, 5, 300]))
    tol = draw(st.sampled_from([0.0, 0.0, 1e-3, 0.1]))
    return wh, k, init, weights, max_iter, tol


def fit_weights(weights):
    """The weights the fit sees: positive ones only, none when they are all equal (as kmeans_log)."""
    if weights is None:
        return None, None
    positive = weights > 0
    w = weights[positive]
    return (None if (w == w[0]).all() else w), positive


def reference_fit(wh, init, weights=None, max_iter=300, tol=0.0):
    """The reference run on the boxes the fit sees, its result sorted and labelled like kmeans_log."""
    w, positive = fit_weights(weights)
    boxes = wh if positive is None else wh[positive]
    r = ref.kmeans_log(boxes, init, max_iter=max_iter, tol=tol, sample_weight=w)
    a, la = r["anchors"], r["log_anchors"]
    order = sorted(range(len(a)), key=lambda j: (a[j, 0] * a[j, 1], a[j, 0]))
    a, la = a[order], la[order]
    labels = np.argmin(ref.log_dist(la, ref.log_rows(wh)), axis=1)
    return a, labels, r["n_iter"], r["converged"]


def assert_same_as_reference(got, wh, init, weights=None, max_iter=300, tol=0.0):
    anchors, labels, n_iter, converged = reference_fit(wh, init, weights, max_iter, tol)
    np.testing.assert_array_equal(got.anchors, anchors)  # bit for bit
    np.testing.assert_array_equal(got.labels, labels)
    assert got.n_iter == n_iter and got.converged == converged


@given(explicit_problems())
def test_explicit_init_matches_reference_bit_for_bit(problem):
    wh, k, init, weights, max_iter, tol = problem
    got = fastanchor.kmeans_log(wh, k, init=init, sample_weight=weights, max_iter=max_iter, tol=tol, n_threads=1)
    assert_same_as_reference(got, wh, init, weights, max_iter, tol)
    np.testing.assert_allclose(got.avg_iou, ref.avg_iou(got.anchors, wh, weights), rtol=1e-9)


@pytest.mark.parametrize("weighted", [False, True])
def test_explicit_init_matches_reference_on_several_chunks_for_any_thread_count(weighted):
    rng = np.random.default_rng(7)
    wh = rng.integers(1, 60, (9_000, 2)).astype(np.float64)  # many ties and duplicates
    weights = rng.uniform(0.0, 5.0, len(wh)) if weighted else None
    init = wh[rng.choice(len(wh), 6, replace=False)]
    anchors, labels, n_iter, converged = reference_fit(wh, init, weights)
    for t in (1, 2, 3):
        got = fastanchor.kmeans_log(wh, 6, init=init, sample_weight=weights, n_threads=t)
        np.testing.assert_array_equal(got.anchors, anchors)
        np.testing.assert_array_equal(got.labels, labels)
        assert got.n_iter == n_iter and got.converged == converged


def test_empty_cluster_keeps_its_anchor():
    wh = np.array([[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]])
    init = np.array([[2.0, 2.0], [1000.0, 1000.0]])  # nothing near the second anchor
    r = fastanchor.kmeans_log(wh, 2, init=init)
    np.testing.assert_array_equal(r.anchors[1], [1000.0, 1000.0])  # never moved: the given value
    assert r.anchors[0, 0] == math.exp(
        math.ldexp(float(sum(round(math.ldexp(math.log(x), 40)) for x in (1, 2, 4))) / 3.0, -40)
    )
    assert abs(r.anchors[0, 0] - 2.0) < 1e-12  # the geometric mean of 1, 2, 4


@given(log_boxes_and_k(), st.integers(0, 2**32), st.sampled_from(["k-means++", "random"]), st.data())
def test_same_seed_same_result_for_any_thread_count(problem, seed, init, data):
    wh, k = problem
    weights = data.draw(st.none() | weights_for(wh.shape[0]))
    runs = [
        fastanchor.kmeans_log(wh, k, init=init, seed=seed, sample_weight=weights, n_init=2, n_threads=t)
        for t in (1, 2, 3)
    ]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.anchors, runs[0].anchors)
        np.testing.assert_array_equal(r.labels, runs[0].labels)
        assert r.avg_iou == runs[0].avg_iou and r.n_iter == runs[0].n_iter


@pytest.mark.parametrize("weighted", [False, True])
def test_bit_identical_for_any_thread_count_on_many_chunks(weighted):
    rng = np.random.default_rng(3)
    wh = np.exp(rng.normal(3.0, 1.0, (30_000, 2)))
    weights = rng.uniform(0.1, 3.0, len(wh)) if weighted else None
    runs = [fastanchor.kmeans_log(wh, 9, sample_weight=weights, seed=11, n_threads=t, n_init=2) for t in (1, 2, 3)]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.anchors, runs[0].anchors)
        np.testing.assert_array_equal(r.labels, runs[0].labels)
        assert r.avg_iou == runs[0].avg_iou and r.n_iter == runs[0].n_iter


@given(log_boxes_and_k(), st.sampled_from(["k-means++", "random"]), st.data())
def test_result_is_well_formed_and_a_fixed_point(problem, init, data):
    wh, k = problem
    weights = data.draw(st.none() | weights_for(wh.shape[0]))
    r = fastanchor.kmeans_log(wh, k, init=init, sample_weight=weights, seed=0, n_init=2)
    assert r.anchors.shape == (k, 2) and r.anchors.dtype == np.float64
    assert r.labels.shape == (wh.shape[0],) and r.labels.dtype == np.int32
    assert np.all(np.isfinite(r.anchors)) and np.all(r.anchors > 0)
    area = r.anchors.prod(1)
    assert np.all(np.diff(area) >= 0)
    assert np.all(np.diff(r.anchors[:, 0])[np.diff(area) == 0] >= 0)
    np.testing.assert_allclose(r.avg_iou, ref.avg_iou(r.anchors, wh, weights), rtol=1e-9)
    if r.converged:
        # every anchor with weighted boxes sits at their weighted geometric mean
        lg = np.log(wh)
        wt = np.ones(len(wh)) if weights is None else weights
        for j in range(k):
            m = (r.labels == j) & (wt > 0)
            if wt[m].sum() > 0:
                gm = np.exp((wt[m, None] * lg[m]).sum(0) / wt[m].sum())
                np.testing.assert_allclose(r.anchors[j], gm, rtol=1e-9)


@given(wh_arrays(min_rows=8), st.sampled_from(["k-means++", "random"]))
def test_initial_anchors_are_input_boxes(wh, init):
    k = min(5, n_distinct_logs(wh))
    r = fastanchor.kmeans_log(wh, k, init=init, max_iter=0, seed=5)
    rows = {tuple(x) for x in wh}
    assert all(tuple(a) in rows for a in r.anchors)
    assert len({tuple(a) for a in r.anchors}) == k
    assert r.n_iter == 0 and not r.converged


def test_restarts_pick_the_lowest_log_inertia():
    rng = np.random.default_rng(1)
    wh = np.exp(rng.normal(3.0, 1.0, (3_000, 2)))
    # restart 0 of a seed is the single run of that seed; the winner of 6 is at least as good
    for seed in range(3):
        multi = fastanchor.kmeans_log(wh, 9, seed=seed, n_init=6, init="random")
        first = fastanchor.kmeans_log(wh, 9, seed=seed, n_init=1, init="random")
        assert ref.log_inertia(np.log(multi.anchors), wh) <= ref.log_inertia(np.log(first.anchors), wh) * (1 + 1e-12)


def test_zero_weight_boxes_do_not_change_the_fit_and_are_labelled():
    rng = np.random.default_rng(2)
    wh = np.exp(rng.normal(2.0, 1.0, (500, 2)))
    extra = np.exp(rng.normal(5.0, 1.0, (50, 2)))
    both = np.concatenate([wh, extra])
    weights = np.r_[np.ones(500), np.zeros(50)]
    a = fastanchor.kmeans_log(wh, 5, seed=3)
    b = fastanchor.kmeans_log(both, 5, seed=3, sample_weight=weights)
    np.testing.assert_array_equal(a.anchors, b.anchors)
    np.testing.assert_array_equal(b.labels[:500], a.labels)
    expected = np.argmin(ref.log_dist(np.log(b.anchors), ref.log_rows(extra)), axis=1)
    np.testing.assert_array_equal(b.labels[500:], expected)


def test_integer_weights_equal_repeated_boxes():
    rng = np.random.default_rng(5)
    wh = np.exp(rng.normal(2.0, 0.7, (300, 2)))
    counts = rng.integers(1, 4, 300)
    init = wh[:6]
    a = fastanchor.kmeans_log(wh, 6, init=init, sample_weight=counts)
    b = fastanchor.kmeans_log(np.repeat(wh, counts, axis=0), 6, init=init)
    np.testing.assert_allclose(a.anchors, b.anchors, rtol=1e-12)


def test_known_clusters_are_recovered_at_their_geometric_means():
    rng = np.random.default_rng(0)
    centres = np.array([[10.0, 20.0], [60.0, 40.0], [200.0, 300.0]])
    wh = np.concatenate([c * np.exp(rng.normal(0, 0.05, (400, 2))) for c in centres])
    r = fastanchor.kmeans_log(wh, 3, seed=1)
    np.testing.assert_allclose(r.anchors, centres, rtol=0.02)
    assert r.converged


def test_float32_rows_fit_as_their_float64_values():
    rng = np.random.default_rng(9)
    wh = np.exp(rng.normal(3.0, 1.0, (5_000, 2))).astype(np.float32)
    a = fastanchor.kmeans_log(wh, 7, seed=2)
    b = fastanchor.kmeans_log(wh.astype(np.float64), 7, seed=2)
    np.testing.assert_array_equal(a.anchors, b.anchors)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_validation_errors_match_kmeans_iou():
    wh = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    cases = [
        dict(k=0),
        dict(k=4),
        dict(k=2, init="kmeans"),
        dict(k=2, init=np.ones((3, 2))),
        dict(k=2, init=np.ones((2, 2)), n_init=2),
        dict(k=2, max_iter=-1),
        dict(k=2, tol=-1.0),
        dict(k=2, n_threads=0),
        dict(k=2, sample_weight=[1.0, -1.0, 1.0]),
        dict(k=2, sample_weight=[1.0, 1.0]),
        dict(k=3, sample_weight=[1.0, 0.0, 1.0]),
    ]
    for kw in cases:
        with pytest.raises(ValueError) as iou_err:
            fastanchor.kmeans_iou(wh, **kw)
        with pytest.raises(ValueError) as log_err:
            fastanchor.kmeans_log(wh, **kw)
        assert str(log_err.value) == str(iou_err.value), kw
    for bad in ([[1.0, 0.0]], [[1.0, np.nan]], [[1.0, np.inf]], [1.0, 2.0, 3.0]):
        with pytest.raises(ValueError) as iou_err:
            fastanchor.kmeans_iou(bad, 1)
        with pytest.raises(ValueError) as log_err:
            fastanchor.kmeans_log(bad, 1)
        assert str(log_err.value) == str(iou_err.value)


def test_progress_bar_runs(capsys):
    wh = np.exp(np.random.default_rng(0).normal(3, 1, (2_000, 2)))
    a = fastanchor.kmeans_log(wh, 5, seed=3, progress=True, n_init=2)
    b = fastanchor.kmeans_log(wh, 5, seed=3, n_init=2)
    np.testing.assert_array_equal(a.anchors, b.anchors)
    assert "kmeans_log" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_interrupts_and_the_process_stays_usable():
    wh = np.exp(np.random.default_rng(0).normal(3, 1, (200_000, 2)))
    latency = interrupt_latency(lambda: fastanchor.kmeans_log(wh, 30, n_init=1000, seed=0), after=0.3)
    assert latency < 5.0
    assert fastanchor.kmeans_log(wh[:1_000], 5, seed=0).anchors.shape == (5, 2)


@needs_data
@pytest.mark.parametrize("path", real_box_files(), ids=lambda p: getattr(p, "stem", None))
def test_real_data_log_fit_against_the_iou_fit(path):
    wh = load_real(path, 640)
    wh = wh[np.isfinite(wh).all(1) & (wh > 0).all(1)]
    if len(wh) > 200_000:
        wh = wh[np.random.default_rng(0).choice(len(wh), 200_000, replace=False)]
    k = 9
    lg = fastanchor.kmeans_log(wh, k, seed=0)
    iou = fastanchor.kmeans_iou(wh, k, seed=0)
    # Lloyd never raises its own objective: started from the IoU fit's anchors, the log fit ends
    # with a log inertia at most theirs (one seed of either may end in a worse local optimum)
    refined = fastanchor.kmeans_log(wh, k, init=iou.anchors)
    assert ref.log_inertia(np.log(refined.anchors), wh) <= ref.log_inertia(np.log(iou.anchors), wh) * (1 + 1e-9)
    # the IoU fit maximizes the average IoU; the log fit stays close to it
    assert lg.avg_iou > 0.4 and abs(iou.avg_iou - lg.avg_iou) < 0.05
    # and at convergence the log anchors are the geometric means of their clusters
    assert lg.converged
    lgw = np.log(wh)
    for j in range(k):
        m = lg.labels == j
        if m.any():
            np.testing.assert_allclose(np.log(lg.anchors[j]), lgw[m].mean(0), atol=1e-9)
