"""SSD and grid-aware anchors (issue 6): box_iou, default boxes, prior matching, encoding,
aspect ratios and grid recall, against the numpy reference, with properties and real data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastanchor
import reference as ref
from conftest import DATA_DIR, needs_data, real_box_files
from fastanchor import datasets
from fastanchor.cli import YOLOV5_DEFAULT_ANCHORS

RAW = DATA_DIR / "raw"
needs_raw = pytest.mark.skipif(not RAW.is_dir(), reason=f"real data folder {RAW} is absent")

# --- strategies ------------------------------------------------------------------------------------

# Small integer corners make exact IoU ties (equal boxes, touching edges, equal overlaps) common.
_int_coord = st.integers(0, 12).map(float)
_float_coord = st.floats(-50.0, 50.0, allow_nan=False, allow_subnormal=False)


@st.composite
def corner_boxes(draw, min_rows: int = 1, max_rows: int = 40):
    n = draw(st.integers(min_rows, max_rows))
    coord = draw(st.sampled_from([_int_coord, _float_coord]))
    p = draw(hnp.arrays(np.float64, (n, 2), elements=coord))
    size = draw(hnp.arrays(np.float64, (n, 2), elements=st.one_of(st.integers(1, 6).map(float),
                                                                   st.floats(0.01, 40.0, allow_nan=False))))
    return np.concatenate([p, p + size], axis=1)


def random_boxes(rng, n, scale=1.0, min_size=0.02, max_size=0.5):
    c = rng.uniform(0, 1, (n, 2))
    wh = rng.uniform(min_size, max_size, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], 1) * scale


# --- box_iou -----------------------------------------------------------------------------------------


@given(corner_boxes(), corner_boxes())
def test_box_iou_bit_identical_to_numpy_float64(a, b):
    np.testing.assert_array_equal(fastanchor.box_iou(a, b), ref.box_iou(a, b))


@given(corner_boxes(), corner_boxes())
def test_box_iou_symmetric_in_unit_interval_and_one_on_diagonal(a, b):
    ab, ba = fastanchor.box_iou(a, b), fastanchor.box_iou(b, a)
    np.testing.assert_array_equal(ab, ba.T)
    assert ((ab >= 0) & (ab <= 1)).all()
    assert (np.diag(fastanchor.box_iou(a, a)) == 1.0).all()


def test_box_iou_float32_output_and_dtypes():
    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 50, 100), random_boxes(rng, 70, 100)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    out = fastanchor.box_iou(a32, b32)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ref.box_iou(a32, b32).astype(np.float32))
    assert fastanchor.box_iou(a32, b).dtype == np.float64
    ints = np.array([[0, 0, 2, 2], [1, 1, 3, 3]], dtype=np.int16)
    np.testing.assert_array_equal(fastanchor.box_iou(ints, ints.tolist()), ref.box_iou(ints, ints))
    assert fastanchor.box_iou(ints, ints)[0, 1] == 1 / 7
    np.testing.assert_array_equal(fastanchor.box_iou(a[:, ::1].T.copy().T, b), ref.box_iou(a, b))  # strides


def test_box_iou_threads_do_not_change_results():
    rng = np.random.default_rng(2)
    a, b = random_boxes(rng, 900, 10), random_boxes(rng, 30, 10)
    one = fastanchor.box_iou(a, b, n_threads=1)
    np.testing.assert_array_equal(one, fastanchor.box_iou(a, b, n_threads=3))
    np.testing.assert_array_equal(one, ref.box_iou(a, b))


@pytest.mark.parametrize(
    "bad, row",
    [
        ([[0, 0, 1, 1], [2, 0, 2, 1]], 1),          # x2 == x1
        ([[0, 0, 1, 1], [0, 0, 1, 1], [0, 3, 1, 2]], 2),  # y2 < y1
        ([[0, np.nan, 1, 1]], 0),
        ([[0, 0, np.inf, 1]], 0),
    ],
)
def test_box_iou_bad_rows_are_named(bad, row):
    with pytest.raises(ValueError, match=rf"boxes2 has 1 bad row: .* x1 < x2 and y1 < y2; the first is row {row}"):
        fastanchor.box_iou([[0, 0, 1, 1]], bad)


def test_box_iou_bad_shapes_and_types():
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        fastanchor.box_iou(np.zeros((3, 2)), [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="empty"):
        fastanchor.box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]])
    with pytest.raises(TypeError, match="real numbers"):
        fastanchor.box_iou(np.ones((2, 4), dtype=complex), [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="n_threads"):
        fastanchor.box_iou([[0, 0, 1, 1]], [[0, 0, 1, 1]], n_threads=0)


@given(corner_boxes())
def test_center_corner_converters_are_inverse(b):
    c = fastanchor.to_center(b)
    np.testing.assert_allclose(fastanchor.to_corners(c), b, rtol=0, atol=1e-12 * (1 + np.abs(b).max()))
    np.testing.assert_array_equal(c[:, 2:], b[:, 2:] - b[:, :2])
    assert fastanchor.to_corners(np.zeros((2, 3, 4))).shape == (2, 3, 4)


# --- default boxes ----------------------------------------------------------------------------------


def test_default_boxes_equal_the_reference_loops():
    got = fastanchor.ssd_default_boxes([6, 3, 2, 1], [2.0, 3.0])
    np.testing.assert_array_equal(got, ref.ssd_default_boxes([6, 3, 2, 1], [2.0, 3.0]))
    got = fastanchor.ssd_default_boxes([5, 1], [1.0, 2.0], min_scale=0.3, max_scale=0.8, clip=False)
    np.testing.assert_array_equal(got, ref.ssd_default_boxes([5, 1], [2.0], 0.3, 0.8, clip=False))


def test_default_boxes_order_and_shapes():
    b = fastanchor.ssd_default_boxes([2, 1], [2.0], clip=False)
    # layer 0: scale 0.2; layer 1: 0.9; after the last, 1.0. 4 boxes per location.
    assert b.shape == (2 * 2 * 4 + 4, 4)
    s0, s1 = 0.2, 0.9
    np.testing.assert_allclose(b[:4], [[0.25, 0.25, s0, s0], [0.25, 0.25, np.sqrt(s0 * s1), np.sqrt(s0 * s1)],
                                       [0.25, 0.25, s0 * np.sqrt(2), s0 / np.sqrt(2)],
                                       [0.25, 0.25, s0 / np.sqrt(2), s0 * np.sqrt(2)]])
    np.testing.assert_allclose(b[4:8, :2], [[0.75, 0.25]] * 4)       # next location: x moves first
    np.testing.assert_allclose(b[8, :2], [0.25, 0.75])
    np.testing.assert_allclose(b[-4:, 2:3].ravel()[:2], [s1, np.sqrt(s1 * 1.0)])
    # reciprocals=False: the list as given, the extra square after ratio 1
    c = fastanchor.ssd_default_boxes([1], [0.5, 1.0, 3.0], reciprocals=False, clip=False, min_scale=0.4)
    np.testing.assert_allclose(c[:, 2] / c[:, 3], [0.5, 1.0, 1.0, 3.0])
    np.testing.assert_allclose(c[:, 2] * c[:, 3], [0.16, 0.16, 0.4, 0.16])
    # non-square feature maps (height, width) and images
    d = fastanchor.ssd_default_boxes([(2, 3)], [1.0], image_size=(600, 300), clip=False)
    assert d.shape == (2 * 3 * 2, 4)
    np.testing.assert_allclose(d[:6:2, 0], [1 / 6, 1 / 2, 5 / 6])
    np.testing.assert_allclose(d[0, 2] * 600, d[0, 3] * 300)     # square in pixels


def test_default_boxes_known_counts():
    # ssd.pytorch's SSD300 (per-layer ratios): 8732 priors
    ssd300 = fastanchor.ssd_default_boxes([38, 19, 10, 5, 3, 1], [[2], [2, 3], [2, 3], [2, 3], [2], [2]])
    assert ssd300.shape == (8732, 4)
    # TensorFlow's ssd_mobilenet_v1 300x300: 1917 anchors
    tf = fastanchor.ssd_default_boxes([19, 10, 5, 3, 2, 1], [1.0, 2.0, 0.5, 3.0, 1 / 3], style="tf",
                                      min_scale=0.2, max_scale=0.95, clip=False)
    assert tf.shape == (1917, 4)
    np.testing.assert_allclose(tf[:3, 2:], [[0.1, 0.1], [0.2 * np.sqrt(2), 0.2 / np.sqrt(2)],
                                            [0.2 * np.sqrt(0.5), 0.2 / np.sqrt(0.5)]])
    s1, s2 = 0.2 + 0.75 / 5, 0.2 + 0.75 * 2 / 5
    np.testing.assert_allclose(tf[19 * 19 * 3 + 5, 2:], [np.sqrt(s1 * s2)] * 2)   # interpolated box


@given(
    st.lists(st.integers(1, 6), min_size=1, max_size=4),
    st.lists(st.floats(0.2, 5.0), min_size=0, max_size=4),
    st.floats(0.05, 0.5),
    st.floats(0.5, 1.5),
    st.sampled_from(["ssd", "tf"]),
)
def test_default_boxes_inside_unit_square_when_clipped(maps, ratios, lo, hi, style):
    ratios = ratios or [1.0]
    b = fastanchor.ssd_default_boxes(maps, ratios, min_scale=lo, max_scale=hi, style=style)
    corners = fastanchor.to_corners(b)
    assert (corners >= -1e-15).all() and (corners <= 1 + 1e-15).all()
    assert (b[:, 2:] > 0).all()


def test_default_boxes_errors():
    with pytest.raises(ValueError, match="style"):
        fastanchor.ssd_default_boxes([3], [2.0], style="yolo")
    with pytest.raises(ValueError, match="aspect_ratios\\[1\\]"):
        fastanchor.ssd_default_boxes([3], [2.0, -1.0])
    with pytest.raises(ValueError, match="2 lists but there are 1"):
        fastanchor.ssd_default_boxes([3], [[2.0], [3.0]])
    with pytest.raises(ValueError, match="feature_map_sizes\\[0\\]"):
        fastanchor.ssd_default_boxes([0], [2.0])


# --- matching ------------------------------------------------------------------------------------------


@st.composite
def match_problem(draw):
    # up to 200 priors: the kernel's argmax works in blocks of 64
    priors = draw(corner_boxes(1, 30) if draw(st.booleans()) else corner_boxes(60, 200))
    gt = draw(corner_boxes(0, 12) if draw(st.booleans()) else corner_boxes(1, 12))
    thr = draw(st.sampled_from([0.0, 0.2, 0.5, 1.0]))
    return priors, gt, thr


@settings(max_examples=50)
@given(match_problem())
def test_match_priors_equals_reference(problem):
    priors, gt, thr = problem
    np.testing.assert_array_equal(fastanchor.match_priors(priors, gt, threshold=thr), ref.match_priors(priors, gt, thr))


@settings(max_examples=50)
@given(match_problem())
def test_match_priors_without_the_stored_matrix_equals_reference(problem):
    # images above kMaxStoredCells recompute a GT's IoU row when its best prior is taken
    priors, gt, thr = problem
    offsets = np.array([0, gt.shape[0]], dtype=np.int64)
    got = fastanchor._core.match_priors(priors, np.ascontiguousarray(gt), offsets, thr, 1, 0)
    np.testing.assert_array_equal(got[0], ref.match_priors(priors, gt, thr))


@settings(max_examples=50)
@given(match_problem())
def test_every_gt_is_matched_to_a_prior_of_its_own(problem):
    priors, gt, thr = problem
    m = fastanchor.match_priors(priors, gt, threshold=thr)
    assert m.shape == (priors.shape[0],) and m.dtype == np.int32
    assert ((m >= -1) & (m < gt.shape[0])).all()
    matched = set(m[m >= 0].tolist())
    if priors.shape[0] >= gt.shape[0]:
        assert matched == set(range(gt.shape[0]))


def test_match_tie_rules():
    priors = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], float)
    # Two GT boxes want prior 0 (equal best IoU): GT 0 (lower index) gets prior 0, GT 1 the
    # next best free prior: prior 1 (same IoU, lowest free index).
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float)
    np.testing.assert_array_equal(fastanchor.match_priors(priors, gt), [0, 1, -1])
    # The higher IoU claims first, whatever the GT order.
    gt = np.array([[0, 0, 10, 5], [0, 0, 10, 9]], float)
    np.testing.assert_array_equal(fastanchor.match_priors(priors, gt), [1, 0, -1])
    # Without overlap a GT still gets its own prior (IoU 0), the lowest free index.
    gt = np.array([[100, 100, 110, 110]], float)
    np.testing.assert_array_equal(fastanchor.match_priors(priors, gt), [0, -1, -1])
    # More GT boxes than priors: the P strongest claims win, nothing else.
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 8], [20, 20, 30, 29]], float)
    np.testing.assert_array_equal(fastanchor.match_priors(priors[:2], gt, threshold=0.5), [0, 2])
    np.testing.assert_array_equal(ref.match_priors(priors[:2], gt, 0.5), [0, 2])


def test_match_batched_forms_agree():
    rng = np.random.default_rng(3)
    priors = fastanchor.to_corners(fastanchor.ssd_default_boxes([8, 4, 2, 1], [2.0, 3.0]))
    gts = [random_boxes(rng, int(rng.integers(0, 9))) for _ in range(7)]
    batch = fastanchor.match_priors(priors, gts)
    assert batch.shape == (7, priors.shape[0])
    for b, g in enumerate(gts):
        np.testing.assert_array_equal(batch[b], ref.match_priors(priors, g, 0.5))
        np.testing.assert_array_equal(batch[b], fastanchor.match_priors(priors, g))
    padded = np.zeros((7, 9, 4))
    padded[..., 2:] = np.nan  # padding rows are never read
    counts = np.array([g.shape[0] for g in gts])
    for b, g in enumerate(gts):
        padded[b, : g.shape[0]] = g
    np.testing.assert_array_equal(fastanchor.match_priors(priors, padded, counts=counts), batch)
    np.testing.assert_array_equal(fastanchor.match_priors(priors, gts, n_threads=1),
                                  fastanchor.match_priors(priors, gts, n_threads=3))
    assert fastanchor.match_priors(priors, []).shape == (0, priors.shape[0])


def test_match_errors_name_the_image_and_row():
    priors = [[0, 0, 1, 1]]
    with pytest.raises(ValueError, match=r"gt_boxes\[1\] has 1 bad row: .* row 0: \[0.0, 0.0, -1.0, 1.0\]"):
        fastanchor.match_priors(priors, [np.array([[0, 0, 1, 1.0]]), np.array([[0, 0, -1, 1.0]])])
    with pytest.raises(ValueError, match=r"counts\[0\] = 5 is outside \[0, 2\]"):
        fastanchor.match_priors(priors, np.zeros((1, 2, 4)), counts=[5])
    with pytest.raises(ValueError, match="priors has 1 bad row"):
        fastanchor.match_priors([[0, 0, 0, 1]], [[0, 0, 1, 1]])


# --- encoding -----------------------------------------------------------------------------------------


@given(corner_boxes(1, 30), st.floats(0.05, 0.5), st.floats(0.1, 0.5))
def test_decode_inverts_encode(gt, v0, v1):
    centers = fastanchor.to_center(gt)
    rng = np.random.default_rng(gt.shape[0])
    priors = np.concatenate([centers[:, :2] + rng.normal(0, 1, (len(gt), 2)) * centers[:, 2:],
                             centers[:, 2:] * rng.uniform(0.3, 3, (len(gt), 2))], 1)
    t = fastanchor.encode(gt, priors, (v0, v1))
    np.testing.assert_array_equal(t, ref.ssd_encode(gt, priors, (v0, v1)))
    back = fastanchor.decode(t, priors, (v0, v1))
    np.testing.assert_array_equal(back, ref.ssd_decode(t, priors, (v0, v1)))
    scale = np.abs(gt).max(1, keepdims=True) + (gt[:, 2:] - gt[:, :2]).max(1, keepdims=True)
    assert (np.abs(back - gt) <= 64 * np.finfo(float).eps * scale).all()


def test_encode_decode_batched_and_ssd_training_flow():
    rng = np.random.default_rng(4)
    priors = fastanchor.ssd_default_boxes([10, 5, 3, 1], [2.0, 3.0])
    gts = [random_boxes(rng, 5) for _ in range(3)]
    matches = fastanchor.match_priors(fastanchor.to_corners(priors), gts)
    matched = np.stack([g[np.maximum(m, 0)] for g, m in zip(gts, matches)])
    t = fastanchor.encode(matched, priors)
    assert t.shape == (3, priors.shape[0], 4)
    np.testing.assert_allclose(fastanchor.decode(t, priors), matched, atol=1e-14)
    with pytest.raises(ValueError, match="priors has 1 bad row"):
        fastanchor.encode(matched[0][:1], [[0.5, 0.5, 0.0, 0.1]])
    with pytest.raises(ValueError, match="to match priors"):
        fastanchor.decode(np.zeros((2, 4)), priors)


# --- aspect ratios ------------------------------------------------------------------------------------


def test_aspect_ratios_recover_planted_ratios():
    rng = np.random.default_rng(5)
    ratios = np.array([0.5, 1.0, 2.0])
    a = rng.choice(ratios, 600)
    area = rng.uniform(10, 5000, 600)
    wh = np.stack([np.sqrt(area * a), np.sqrt(area / a)], 1)
    for method in ("iou", "euclidean"):
        r = fastanchor.ssd_aspect_ratios(wh, 3, seed=0, method=method)
        np.testing.assert_allclose(r.aspect_ratios, ratios, rtol=1e-12)
        assert r.avg_iou == pytest.approx(1.0)
        assert r.method == method


def test_aspect_ratios_score_and_reproducibility():
    rng = np.random.default_rng(6)
    wh = rng.lognormal(3, 0.6, (2000, 2))
    r = fastanchor.ssd_aspect_ratios(wh, 4, seed=1)
    assert (np.diff(r.aspect_ratios) > 0).all()
    u = wh / np.sqrt(wh[:, :1] * wh[:, 1:])
    np.testing.assert_allclose(r.anchors[:, 0] * r.anchors[:, 1], 1.0)
    assert r.avg_iou == ref.avg_iou(r.anchors, u)
    r2 = fastanchor.ssd_aspect_ratios(wh, 4, seed=1)
    np.testing.assert_array_equal(r.aspect_ratios, r2.aspect_ratios)
    e = fastanchor.ssd_aspect_ratios(wh, 4, seed=1, method="euclidean")
    assert e.avg_iou <= r.avg_iou + 1e-3   # k-means on IoU optimizes the IoU score
    with pytest.raises(ValueError, match="method"):
        fastanchor.ssd_aspect_ratios(wh, 4, method="cosine")
    with pytest.raises(ValueError, match="wh has 1 bad row"):
        fastanchor.ssd_aspect_ratios([[1, 2], [0, 3]], 1)


# --- grid recall --------------------------------------------------------------------------------------


@st.composite
def grid_problem(draw):
    W = draw(st.integers(8, 70).map(float))
    H = draw(st.integers(8, 70).map(float))
    boxes = draw(corner_boxes(1, 15))
    boxes = np.abs(boxes) % 60.0
    boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:]) + 0.5], 1)
    anchors = draw(hnp.arrays(np.float64, (draw(st.integers(1, 3)), 2),
                              elements=st.one_of(st.integers(1, 40).map(float), st.floats(0.5, 60.0))))
    strides = draw(st.sampled_from([(8.0,), (4.0, 16.0), (5.0, 7.0, 32.0)]))
    return anchors, boxes, np.array([W, H]), strides


@settings(max_examples=60)
@given(grid_problem())
def test_grid_best_iou_equals_reference_and_brute_force_over_all_cells(problem):
    anchors, boxes, img, strides = problem
    levels = [(s, anchors) for s in strides]
    got = fastanchor.grid_best_iou([anchors] * len(strides), boxes, img, strides=strides)
    imgs = np.broadcast_to(img, (len(boxes), 2))
    np.testing.assert_array_equal(got, ref.grid_best_iou(levels, boxes, imgs))
    # the nearest cells hold the maximum over all cells (to rounding: equal overlaps computed
    # from different cell corners may differ in the last bit)
    np.testing.assert_allclose(got, ref.grid_best_iou_all_cells(levels, boxes, imgs), rtol=1e-13, atol=0)
    r = fastanchor.grid_recall([anchors] * len(strides), boxes, img, strides=strides, iou=0.5)
    assert r == np.mean(got >= 0.5)


def test_grid_recall_examples():
    # an anchor exactly on a cell: IoU 1; shifted by half a cell: lower
    anchors = [np.array([[16.0, 16.0]])]
    on_cell = np.array([[16.0, 16.0, 32.0, 32.0]])      # centre (24, 24): cell (1, 1) of stride 16
    assert fastanchor.grid_best_iou(anchors, on_cell, (64, 64), strides=(16,))[0] == 1.0
    off = np.array([[0.0, 0.0, 16.0, 16.0]])            # centre (8, 8): cell (0, 0) of stride 16
    assert fastanchor.grid_best_iou(anchors, off, (64, 64), strides=(16,))[0] == 1.0
    half = np.array([[8.0, 0.0, 24.0, 16.0]])           # centre (16, 8): half a cell off in x
    assert fastanchor.grid_best_iou(anchors, half, (64, 64), strides=(16,))[0] == pytest.approx(8 * 16 / (2 * 256 - 128))
    assert fastanchor.grid_recall(anchors, np.concatenate([off, half]), (64, 64), strides=(16,), iou=0.5) == 0.5
    # a (k, 2) array is split over the levels in area order; wh_iou would say 1.0 for all
    wh = np.array([[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198], [373, 326]], float)
    r = fastanchor.grid_recall(wh, np.array([[0, 0, 10, 13], [3, 5, 13, 18]], float), (640, 640))
    assert 0 <= r <= 1
    with pytest.raises(ValueError, match="cannot be split evenly"):
        fastanchor.grid_recall(wh[:8], [[0, 0, 10, 13]], (640, 640))
    with pytest.raises(ValueError, match="image_wh"):
        fastanchor.grid_recall(wh, [[0, 0, 10, 13]], (640, 0))


# --- datasets keep positions, real data -----------------------------------------------------------------


def test_boxes_positions_are_optional_and_kept_by_selection():
    b = datasets.Boxes(wh=[[2.0, 3.0], [4.0, 5.0]], image_wh=[10.0, 10.0])
    assert np.isnan(b.xy).all() and b.xyxy.shape == (2, 4)
    b = datasets.Boxes(wh=[[2.0, 3.0], [4.0, 5.0]], image_wh=[10.0, 10.0], xy=[[1.0, 1.0], [0.0, 2.0]])
    np.testing.assert_array_equal(b[1:].xyxy, [[0.0, 2.0, 4.0, 7.0]])
    np.testing.assert_array_equal(b.filter(min_size=3).xy, [[0.0, 2.0]])
    with pytest.raises(ValueError, match="xy must have shape"):
        datasets.Boxes(wh=[[2.0, 3.0]], image_wh=[10.0, 10.0], xy=[[1.0, 1.0, 2.0]])


def _load_quiet(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", datasets.AnnotationWarning)
        return datasets.load(path, **kw)


@needs_raw
@pytest.mark.parametrize("name", ["kangaroo_voc", "raccoon_voc", "coco128_val2017_json/instances_val2017.json"])
def test_loaders_keep_positions_and_grid_recall_runs(name):
    boxes = _load_quiet(RAW / name)
    xyxy = boxes.xyxy
    assert np.isfinite(xyxy).all()
    np.testing.assert_allclose(xyxy[:, 2:] - xyxy[:, :2], boxes.wh, rtol=1e-9, atol=1e-9)
    img = boxes.image_wh
    assert (xyxy[:, :2] >= -1.5).all() and (xyxy[:, 2:] <= img + 1.5).all()
    # letterbox to 640 (YOLOv5) and score YOLOv5's default anchors on the grids
    scale = (640 / img.max(1))[:, None]
    box640 = np.clip(np.concatenate([xyxy[:, :2] * scale, xyxy[:, 2:] * scale], 1), 0, None)
    keep = (box640[:, 2:] > box640[:, :2] + 1e-6).all(1)
    wh = np.array(YOLOV5_DEFAULT_ANCHORS, float).reshape(-1, 2)
    best = fastanchor.grid_best_iou(wh, box640[keep], (img * scale)[keep])
    r = fastanchor.grid_recall(wh, box640[keep], (img * scale)[keep], iou=0.5)
    centered = fastanchor.wh_iou(box640[keep, 2:] - box640[keep, :2], wh).max(1)
    assert 0.0 < r <= 1.0
    assert (best <= centered + 1e-12).all()        # an offset never helps: wh-IoU bounds it
    assert r <= np.mean(centered >= 0.5)


def test_yolo_loader_keeps_positions(tmp_path):
    from fastanchor._demo import write_blank_png

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    write_blank_png(str(tmp_path / "images" / "a.png"), 200, 100)
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.1 0.2 0.1 0.2\n")
    b = datasets.load_yolo(tmp_path / "labels")
    np.testing.assert_allclose(b.xyxy, [[80, 30, 120, 70], [10, 10, 30, 30]], atol=1e-12)


@needs_data
def test_aspect_ratios_on_real_datasets():
    for path in real_box_files()[:4]:
        with np.load(path) as z:
            wh = z["wh"].astype(np.float64)
            img = z["img_wh"].astype(np.float64)
        ok = np.isfinite(wh).all(1) & (wh > 0).all(1) & np.isfinite(img).all(1) & (img > 0).all(1)
        wh = (wh[ok] * (300.0 / img[ok]))[:20000]     # stretched to 300x300, as SSD trains
        r = fastanchor.ssd_aspect_ratios(wh, 5, seed=0)
        e = fastanchor.ssd_aspect_ratios(wh, 5, seed=0, method="euclidean", n_init=2)
        assert 0.5 < r.avg_iou <= 1 and (np.diff(r.aspect_ratios) > 0).all()
        assert r.avg_iou >= e.avg_iou - 0.01, path.name


# --- command line ----------------------------------------------------------------------------------------

PIPELINE = """model {
  ssd {
    num_classes: 3
    image_resizer {
      fixed_shape_resizer {
        height: 320
        width: 320
      }
    }
    anchor_generator {
      ssd_anchor_generator {
        num_layers: 6
        min_scale: 0.2
        max_scale: 0.95
        aspect_ratios: 1.0
        aspect_ratios: 2.0
        aspect_ratios: 0.5  # tall
        aspect_ratios: 3.0
        aspect_ratios: 0.3333
        reduce_boxes_in_lowest_layer: true
      }
    }
  }
}
train_config {
  batch_size: 24  # { not a brace }
}
"""


def test_set_aspect_ratios_keeps_everything_else():
    from fastanchor.cli import config_image_size, set_aspect_ratios

    out = set_aspect_ratios(PIPELINE, [0.5, 1.25], 2)
    assert out == PIPELINE.replace(
        "        aspect_ratios: 1.0\n        aspect_ratios: 2.0\n        aspect_ratios: 0.5  # tall\n"
        "        aspect_ratios: 3.0\n        aspect_ratios: 0.3333\n",
        "        aspect_ratios: 0.50\n        aspect_ratios: 1.25\n",
    )
    assert config_image_size(PIPELINE) == (320.0, 320.0)
    bare = PIPELINE.replace("        aspect_ratios: 1.0\n", "").replace("        aspect_ratios: 2.0\n", "")
    bare = bare.replace("        aspect_ratios: 0.5  # tall\n", "").replace("        aspect_ratios: 3.0\n", "")
    bare = bare.replace("        aspect_ratios: 0.3333\n", "")
    again = set_aspect_ratios(bare, [0.5, 1.25], 2)
    assert "reduce_boxes_in_lowest_layer: true\n        aspect_ratios: 0.50\n        aspect_ratios: 1.25\n      }" in again
    assert set_aspect_ratios("", [2.0], 1) == "ssd_anchor_generator {\n  aspect_ratios: 2.0\n}\n"


def test_cli_ssd(tmp_path, capsys):
    from fastanchor._demo import make_demo
    from fastanchor.cli import main

    path = make_demo(str(tmp_path / "demo"), "voc", n_images=60, seed=0)
    cfg = tmp_path / "pipeline.config"
    cfg.write_text(PIPELINE)
    out = tmp_path / "new.config"
    assert main(["ssd", path, "-n", "3", "--config", str(cfg), "--out", str(out), "-q"]) == 0
    report = capsys.readouterr().out
    assert "stretched to 320x320" in report and "aspect ratios (w/h), iou k-means:" in report
    text = out.read_text()
    assert text.count("aspect_ratios:") == 3 and "num_layers: 6" in text and "batch_size: 24" in text
    assert main(["ssd", path, "-n", "2", "--image-size", "300x200", "--method", "euclidean", "--json"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert doc["img_size"] == [300.0, 200.0] and len(doc["aspect_ratios"]) == 2 and doc["method"] == "euclidean"
    assert main(["ssd", path, "--resize", "letterbox"]) == 1
    assert "stretches" in capsys.readouterr().err


def test_box_validation_takes_a_private_copy():
    from fastanchor._box_iou import as_boxes

    boxes = np.array([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 4.0]])
    checked = as_boxes(boxes)
    assert not np.shares_memory(checked, boxes)
    boxes[0] = np.nan  # a caller changing its array after the check cannot reach the core's copy
    assert np.isfinite(checked).all()
