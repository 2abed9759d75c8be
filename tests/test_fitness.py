"""anchor_fitness, check_anchors and split_levels against the numpy reference, and their rules."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import reference as ref
from conftest import clean, load_real, needs_data, real_box_files
from hypothesis import given
from hypothesis import strategies as st
from strategies import weights_for, wh_arrays

import fastanchor

THRS = st.one_of(st.sampled_from([4.0, 2.0, 3.0, 1.5, 8.0]), st.floats(1.01, 20.0, allow_nan=False))


def assert_same_as_reference(got, expected, weighted):
    # Fixed-point sums: every term is rounded to 2^-50 (of the largest weight).
    np.testing.assert_allclose(got.fitness, expected["fitness"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got.avg_iou, expected["avg_iou"], rtol=1e-12, atol=1e-14)
    if weighted:
        np.testing.assert_allclose(got.bpr, expected["bpr"], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got.aat, expected["aat"], rtol=1e-12, atol=1e-14)
    else:
        # Unit weights: the threshold decisions and the means are numpy's exactly.
        assert got.bpr == expected["bpr"]
        assert got.aat == expected["aat"]


@given(wh_arrays(), wh_arrays(max_rows=12), THRS, st.data())
def test_metrics_match_reference(wh, anchors, thr, data):
    weights = data.draw(st.none() | weights_for(wh.shape[0]))
    got = fastanchor.anchor_fitness(anchors, wh, thr=thr, sample_weight=weights, n_threads=1)
    expected = ref.anchor_fitness(anchors, wh, thr, weights)
    assert_same_as_reference(got, expected, weights is not None)
    assert got.thr == thr


@pytest.mark.parametrize("thr", [4.0, 2.0, 3.0])
def test_threshold_ties_count_as_not_above(thr):
    # Side ratios of exactly thr: x == 1/thr, which is not above the threshold.
    anchors = np.array([[1.0, 1.0]])
    wh = np.array([[thr, 1.0], [1.0, thr], [1.0 / thr, 1.0], [thr, thr], [1.5, 1.0]])
    got = fastanchor.anchor_fitness(anchors, wh, thr=thr)
    expected = ref.anchor_fitness(anchors, wh, thr)
    assert got.bpr == expected["bpr"] == 0.2
    assert got.aat == expected["aat"] == 0.2
    np.testing.assert_allclose(got.fitness, expected["fitness"], rtol=1e-15)
    # ... and just inside the threshold they count
    inside = fastanchor.anchor_fitness(anchors, wh, thr=thr * (1 + 1e-15))
    assert inside.bpr == ref.anchor_fitness(anchors, wh, thr * (1 + 1e-15))["bpr"]


def test_many_ties_on_several_chunks_match_reference():
    rng = np.random.default_rng(4)
    wh = rng.integers(1, 40, (10_000, 2)).astype(np.float64)
    anchors = rng.integers(1, 40, (9, 2)).astype(np.float64)
    weights = rng.integers(1, 4, len(wh)).astype(np.float64)
    for thr in (2.0, 4.0):
        for w in (None, weights):
            got = fastanchor.anchor_fitness(anchors, wh, thr=thr, sample_weight=w)
            assert_same_as_reference(got, ref.anchor_fitness(anchors, wh, thr, w), w is not None)


def test_same_bits_for_any_thread_count_and_box_order():
    rng = np.random.default_rng(1)
    wh = np.exp(rng.normal(3.0, 1.0, (30_000, 2)))
    anchors = fastanchor.kmeans_iou(wh[:3000], 9, seed=0).anchors
    weights = rng.uniform(0.1, 2.0, len(wh))
    perm = rng.permutation(len(wh))
    for w in (None, weights):
        runs = [fastanchor.anchor_fitness(anchors, wh, sample_weight=w, n_threads=t) for t in (1, 2, 3)]
        pw = None if w is None else w[perm]
        runs.append(fastanchor.anchor_fitness(anchors[::-1], wh[perm], sample_weight=pw, n_threads=2))
        for r in runs[1:]:
            assert r == runs[0]


def test_weights_equal_repeated_boxes():
    rng = np.random.default_rng(2)
    wh = rng.integers(1, 30, (200, 2)).astype(np.float64)
    counts = rng.integers(1, 4, 200)
    anchors = np.array([[3.0, 4.0], [10.0, 7.0], [20.0, 25.0]])
    a = fastanchor.anchor_fitness(anchors, wh, sample_weight=counts)
    b = fastanchor.anchor_fitness(anchors, np.repeat(wh, counts, axis=0))
    # Weights are scaled to a largest value of 1 (1/3, 2/3 round): equal to within rounding.
    np.testing.assert_allclose([a.fitness, a.bpr, a.aat, a.avg_iou], [b.fitness, b.bpr, b.aat, b.avg_iou], rtol=1e-13)


def test_avg_iou_agrees_with_avg_iou():
    rng = np.random.default_rng(3)
    wh = np.exp(rng.normal(3.0, 1.0, (5000, 2)))
    anchors = wh[:9]
    np.testing.assert_allclose(
        fastanchor.anchor_fitness(anchors, wh).avg_iou, fastanchor.avg_iou(anchors, wh), rtol=1e-13
    )


def test_input_forms():
    wh = np.array([[10.0, 12.0], [30.0, 20.0], [5.0, 9.0]])
    anchors = np.array([[10.0, 13.0], [16.0, 30.0], [33.0, 23.0], [30.0, 61.0]])
    expected = fastanchor.anchor_fitness(anchors, wh)
    assert fastanchor.anchor_fitness(anchors.tolist(), wh.astype(np.float32)) == expected
    assert fastanchor.anchor_fitness(anchors.astype(np.int64), wh[::1].T.copy().T) == expected
    # YOLOv5's per-level rows: [[w, h, w, h], ...] and (levels, m, 2)
    assert fastanchor.anchor_fitness(anchors.reshape(2, 4), wh) == expected
    assert fastanchor.anchor_fitness(anchors.reshape(2, 2, 2), wh) == expected


def test_check_anchors_recommends_by_bpr():
    wh = np.array([[10.0, 10.0]] * 97 + [[100.0, 100.0]] * 3)
    anchors = np.array([[10.0, 10.0]])
    r = fastanchor.check_anchors(anchors, wh)
    assert r.bpr == 0.97 and r.recommend_recompute and r.bpr_threshold == 0.98
    assert not fastanchor.check_anchors(anchors, wh, bpr_threshold=0.97).recommend_recompute
    m = fastanchor.anchor_fitness(anchors, wh)
    assert (r.fitness, r.bpr, r.aat, r.avg_iou, r.thr) == (m.fitness, m.bpr, m.aat, m.avg_iou, m.thr)
    assert not fastanchor.check_anchors(np.r_[anchors, [[90.0, 110.0]]], wh).recommend_recompute


def test_split_levels_sorts_and_splits():
    anchors = np.array(
        [[116, 90], [10, 13], [373, 326], [30, 61], [16, 30], [62, 45], [33, 23], [59, 119], [156, 198]], dtype=float
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        levels = fastanchor.split_levels(anchors)
    assert [lv.shape for lv in levels] == [(3, 2)] * 3
    flat = np.concatenate(levels)
    np.testing.assert_array_equal(flat, ref.sort_by_area(anchors))
    np.testing.assert_array_equal(levels[0], [[10, 13], [16, 30], [33, 23]])
    # YOLOv5's yaml rows work as input
    yaml_rows = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
    for a, b in zip(fastanchor.split_levels(yaml_rows), levels):
        np.testing.assert_array_equal(a, b)
    assert len(fastanchor.split_levels(anchors, strides=[8])) == 1


def test_split_levels_warns_and_refuses():
    anchors = np.array([[4.0, 5.0], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119]])
    with pytest.warns(UserWarning, match=r"1 anchor is smaller than the stride of its level: \[4, 5\] \(stride 8\)"):
        fastanchor.split_levels(anchors, strides=(8, 16, 32))
    with pytest.warns(UserWarning, match=r"strides \(32, 16, 8\) are not increasing"):
        with pytest.warns(UserWarning, match="smaller than the stride"):
            fastanchor.split_levels(anchors, strides=(32, 16, 8))
    with pytest.raises(ValueError, match="6 anchors cannot be split evenly over 4 levels"):
        fastanchor.split_levels(anchors, strides=(8, 16, 32, 64))
    with pytest.raises(ValueError, match="finite and positive"):
        fastanchor.split_levels(anchors, strides=(8, 0, 32))
    with pytest.raises(ValueError, match="must not be empty"):
        fastanchor.split_levels(anchors, strides=())
    with pytest.raises(TypeError, match="sequence of numbers"):
        fastanchor.split_levels(anchors, strides=8)
    with pytest.raises(ValueError, match="anchors has 1 bad row.*row 2"):
        fastanchor.split_levels([[1.0, 2.0], [3.0, 4.0], [0.0, 1.0]], strides=(8,))


GOOD = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 1.0], [2.0, 2.0]])


@pytest.mark.parametrize(
    "bad, where",
    [
        ([[1.0, 2.0], [0.0, 3.0]], r"1 bad row.*row 1: \[0\.0, 3\.0\]"),
        ([[np.nan, 2.0], [1.0, 1.0]], r"row 0: \[nan, 2\.0\]"),
        ([[1.0, 2.0], [1.0, -np.inf]], r"row 1: \[1\.0, -inf\]"),
    ],
)
def test_bad_rows_are_named(bad, where):
    for f in (fastanchor.anchor_fitness, fastanchor.check_anchors):
        with pytest.raises(ValueError, match="wh has .*" + where):
            f(GOOD, bad)
        with pytest.raises(ValueError, match="anchors has .*" + where):
            f(bad, GOOD)


@pytest.mark.parametrize(
    "thr, error",
    [
        (1.0, ValueError),
        (0.5, ValueError),
        (-4, ValueError),
        (np.inf, ValueError),
        (np.nan, ValueError),
        ("4", TypeError),
    ],
)
def test_thr_must_exceed_one(thr, error):
    with pytest.raises(error, match="thr must"):
        fastanchor.anchor_fitness(GOOD, GOOD, thr=thr)
    with pytest.raises(error, match="thr must"):
        fastanchor.check_anchors(GOOD, GOOD, thr=thr)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match=r"bpr_threshold must be in \[0, 1\]"):
        fastanchor.check_anchors(GOOD, GOOD, bpr_threshold=1.5)
    with pytest.raises(ValueError, match="sample_weight has 1 bad value.*index 1"):
        fastanchor.anchor_fitness(GOOD, GOOD, sample_weight=[1.0, -1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        fastanchor.anchor_fitness(np.ones(3), GOOD)
    with pytest.raises(TypeError, match="real numbers"):
        fastanchor.anchor_fitness(GOOD, [["a", "b"]])
    with pytest.raises(ValueError, match="n_threads must not be 0"):
        fastanchor.anchor_fitness(GOOD, GOOD, n_threads=0)


def test_results_are_frozen():
    r = fastanchor.anchor_fitness(GOOD, GOOD)
    with pytest.raises(AttributeError):
        r.fitness = 1.0  # type: ignore[misc]


SMALL = [p for p in real_box_files() if np.load(p)["wh"].shape[0] <= 20_000]


@needs_data
@pytest.mark.parametrize("path", SMALL, ids=lambda p: getattr(p, "stem", None))
def test_real_data_matches_reference(path):
    wh = clean(load_real(path, 640))
    anchors = fastanchor.kmeans_iou(wh, 9, seed=0, n_init=1).anchors
    assert_same_as_reference(fastanchor.anchor_fitness(anchors, wh), ref.anchor_fitness(anchors, wh), False)


@needs_data
def test_yolov5_default_anchors_fit_coco():
    path = next((p for p in real_box_files() if p.stem == "coco128"), None)
    if path is None:
        pytest.skip("coco128.npz is absent")
    wh = clean(load_real(path, 640))
    p5 = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
    r = fastanchor.check_anchors(p5, wh)
    # YOLOv5 reports a best possible recall near 0.99+ for its default anchors on COCO.
    assert r.bpr > 0.98 and not r.recommend_recompute
    assert 4.0 < r.aat < 6.0
