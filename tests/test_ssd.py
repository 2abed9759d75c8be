"""SSD and grid-aware anchors (issue 6): box_iou, default boxes, prior matching, encoding,
aspect ratios and grid recall, against the numpy reference, with properties and real data."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import reference as ref
from conftest import DATA_DIR, needs_data, real_box_files
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from simd import portable

import fastanchor
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
    size = draw(
        hnp.arrays(
            np.float64, (n, 2), elements=st.one_of(st.integers(1, 6).map(float), st.floats(0.01, 40.0, allow_nan=False))
        )
    )
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
        ([[0, 0, 1, 1], [2, 0, 2, 1]], 1),  # x2 == x1
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
    np.testing.assert_allclose(
        b[:4],
        [
            [0.25, 0.25, s0, s0],
            [0.25, 0.25, np.sqrt(s0 * s1), np.sqrt(s0 * s1)],
            [0.25, 0.25, s0 * np.sqrt(2), s0 / np.sqrt(2)],
            [0.25, 0.25, s0 / np.sqrt(2), s0 * np.sqrt(2)],
        ],
    )
    np.testing.assert_allclose(b[4:8, :2], [[0.75, 0.25]] * 4)  # next location: x moves first
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
    np.testing.assert_allclose(d[0, 2] * 600, d[0, 3] * 300)  # square in pixels


def test_default_boxes_known_counts():
    # ssd.pytorch's SSD300 (per-layer ratios): 8732 priors
    ssd300 = fastanchor.ssd_default_boxes([38, 19, 10, 5, 3, 1], [[2], [2, 3], [2, 3], [2, 3], [2], [2]])
    assert ssd300.shape == (8732, 4)
    # TensorFlow's ssd_mobilenet_v1 300x300: 1917 anchors
    tf = fastanchor.tf_anchor_generator(
        [19, 10, 5, 3, 2, 1], [1.0, 2.0, 0.5, 3.0, 1 / 3], min_scale=0.2, max_scale=0.95, clip=False
    )
    assert tf.shape == (1917, 4)
    np.testing.assert_allclose(
        tf[:3, 2:], [[0.1, 0.1], [0.2 * np.sqrt(2), 0.2 / np.sqrt(2)], [0.2 * np.sqrt(0.5), 0.2 / np.sqrt(0.5)]]
    )
    s1, s2 = 0.2 + 0.75 / 5, 0.2 + 0.75 * 2 / 5
    np.testing.assert_allclose(tf[19 * 19 * 3 + 5, 2:], [np.sqrt(s1 * s2)] * 2)  # interpolated box


@given(
    st.lists(st.integers(1, 6), min_size=1, max_size=4),
    st.lists(st.floats(0.2, 5.0), min_size=0, max_size=4),
    st.floats(0.05, 0.5),
    st.floats(0.5, 1.5),
    st.sampled_from(["ssd", "tf"]),
)
def test_default_boxes_inside_unit_square_when_clipped(maps, ratios, lo, hi, style):
    ratios = ratios or [1.0]
    make = fastanchor.ssd_default_boxes if style == "ssd" else fastanchor.tf_anchor_generator
    b = make(maps, ratios, min_scale=lo, max_scale=hi)
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


def test_tf_fields_default_to_the_current_boxes():
    maps, ratios = [19, 10, 5, 3, 2, 1], [1.0, 2.0, 0.5, 3.0, 1 / 3]
    for size in (None, 300, (640, 480)):
        plain = fastanchor.tf_anchor_generator(maps, ratios, min_scale=0.2, max_scale=0.95, image_size=size)
        explicit = fastanchor.tf_anchor_generator(
            maps, ratios, min_scale=0.2, max_scale=0.95, image_size=size, base_anchor_height=1.0, base_anchor_width=1.0
        )
        np.testing.assert_array_equal(explicit, plain)
    # Strides and offsets equal to TensorFlow's defaults give the same centres (to rounding).
    maps2 = [(4, 6), (2, 3), (1, 1)]
    plain = fastanchor.tf_anchor_generator(maps2, [1.0, 2.0], clip=False)
    strided = fastanchor.tf_anchor_generator(
        maps2, [1.0, 2.0], clip=False, height_stride=[1 / 4, 1 / 2, 1.0], width_stride=[1 / 6, 1 / 3, 1.0]
    )
    np.testing.assert_allclose(strided, plain, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(strided[:, 2:], plain[:, 2:])


def test_tf_fields_hand_computed():
    # Two layers: 2 x 2 (scale 0.2) and 1 x 1 (scale 0.8); ratios 1 and 2, no interpolated box,
    # no reduced lowest layer. Image 200 x 100 (W x H): TensorFlow scales the base anchor
    # (height 0.5, width 1.0) by min(W, H) / H = 1 and min(W, H) / W = 0.5, so a box of scale s
    # and ratio a is w = s * sqrt(a) * 1.0 * 0.5 wide and h = s / sqrt(a) * 0.5 * 1.0 high.
    # Centres: y_i = (40 i + 10) / 100, x_j = (80 j + 20) / 200 on layer 0; layer 1 strides 100 x
    # 200 with offsets 50 x 100: its one box sits at (0.5, 0.5).
    b = fastanchor.tf_anchor_generator(
        [2, 1],
        [1.0, 2.0],
        min_scale=0.2,
        max_scale=0.8,
        image_size=(200, 100),
        interpolated_scale_aspect_ratio=0.0,
        reduce_boxes_in_lowest_layer=False,
        clip=False,
        base_anchor_height=0.5,
        base_anchor_width=1.0,
        height_stride=[40, 100],
        width_stride=[80, 200],
        height_offset=[10, 50],
        width_offset=[20, 100],
    )
    r2 = np.sqrt(2.0)
    w0, h0 = [0.1, 0.2 * r2 * 0.5], [0.1, 0.2 / r2 * 0.5]
    w1, h1 = [0.4, 0.8 * r2 * 0.5], [0.4, 0.8 / r2 * 0.5]
    expected = []
    for y in (0.1, 0.5):
        for x in (0.1, 0.5):
            expected += [[x, y, w0[0], h0[0]], [x, y, w0[1], h0[1]]]
    expected += [[0.5, 0.5, w1[0], h1[0]], [0.5, 0.5, w1[1], h1[1]]]
    np.testing.assert_allclose(b, expected, rtol=1e-15, atol=1e-16)
    # Strides without offsets: the offset is half the stride (TensorFlow's default).
    c = fastanchor.tf_anchor_generator(
        [2],
        [1.0],
        image_size=(200, 100),
        clip=False,
        interpolated_scale_aspect_ratio=0.0,
        reduce_boxes_in_lowest_layer=False,
        height_stride=30,
        width_stride=60,
    )
    np.testing.assert_allclose(c[:, :2], [[0.15, 0.15], [0.45, 0.15], [0.15, 0.45], [0.45, 0.45]], rtol=1e-15)


@given(
    st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5)), min_size=1, max_size=4),
    st.lists(st.floats(0.2, 5.0), min_size=1, max_size=3),
    st.booleans(),
    st.sampled_from([0.0, 1.0, 2.0]),
    st.sampled_from([None, (300, 300), (640, 360), (100, 400)]),
    st.tuples(st.floats(0.25, 4.0), st.floats(0.25, 4.0)),
    st.booleans(),
    st.booleans(),
    st.data(),
)
def test_tf_fields_equal_the_reference(maps, ratios, reduce, interp, size, base, with_strides, with_offsets, data):
    m = len(maps)
    im_w, im_h = size if size is not None else (1.0, 1.0)
    strides = offsets = None
    kw = {}
    if with_strides:
        pair = st.tuples(st.floats(0.01, 50.0), st.floats(0.01, 50.0))
        strides = data.draw(st.lists(pair, min_size=m, max_size=m))
        kw.update(height_stride=[s[0] for s in strides], width_stride=[s[1] for s in strides])
    if with_offsets:
        pair = st.tuples(st.floats(-5.0, 50.0), st.floats(-5.0, 50.0))
        offsets = data.draw(st.lists(pair, min_size=m, max_size=m))
        kw.update(height_offset=[o[0] for o in offsets], width_offset=[o[1] for o in offsets])
    got = fastanchor.tf_anchor_generator(
        maps,
        ratios,
        min_scale=0.1,
        max_scale=0.9,
        clip=False,
        image_size=size,
        interpolated_scale_aspect_ratio=interp,
        reduce_boxes_in_lowest_layer=reduce,
        base_anchor_height=base[0],
        base_anchor_width=base[1],
        **kw,
    )
    want = ref.tf_ssd_anchors(maps, ratios, 0.1, 0.9, interp, reduce, base, strides, offsets, im_h, im_w)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


def test_tf_fields_errors():
    with pytest.raises(ValueError, match="style='tf'"):
        fastanchor.ssd_default_boxes([3], [2.0], base_anchor_height=2.0)
    with pytest.raises(ValueError, match="style='tf'"):
        fastanchor.ssd_default_boxes([3], [2.0], height_stride=1, width_stride=1)
    with pytest.raises(ValueError, match="height_stride needs width_stride"):
        fastanchor.tf_anchor_generator([3], [2.0], height_stride=16)
    with pytest.raises(ValueError, match="width_offset needs height_offset"):
        fastanchor.tf_anchor_generator([3], [2.0], width_offset=8)
    with pytest.raises(ValueError, match="height_stride has 1 values but there are 2 feature maps"):
        fastanchor.tf_anchor_generator([3, 1], [2.0], height_stride=[16], width_stride=[16])
    with pytest.raises(ValueError, match=r"width_stride\[1\] must be positive"):
        fastanchor.tf_anchor_generator([3, 1], [2.0], height_stride=[16, 32], width_stride=[16, 0])
    with pytest.raises(ValueError, match="base_anchor_width must be positive"):
        fastanchor.tf_anchor_generator([3], [2.0], base_anchor_width=-1.0)
    with pytest.raises(ValueError, match="height_offset must be finite"):
        fastanchor.tf_anchor_generator([3], [2.0], height_offset=float("inf"), width_offset=0)
    with pytest.raises(TypeError, match="height_stride must be a number or a sequence"):
        fastanchor.tf_anchor_generator([3], [2.0], height_stride="16", width_stride=16)


TF_FIELDS = dict(
    interpolated_scale_aspect_ratio=2.0,
    reduce_boxes_in_lowest_layer=False,
    base_anchor_height=2.0,
    base_anchor_width=0.5,
    height_stride=16,
    width_stride=16,
    height_offset=8,
    width_offset=8,
)


@given(
    st.lists(st.one_of(st.integers(1, 5), st.tuples(st.integers(1, 5), st.integers(1, 5))), min_size=1, max_size=4),
    st.lists(st.floats(0.2, 5.0), min_size=1, max_size=3),
    st.sampled_from(["default", "range", "scales"]),
    st.sampled_from([{}, dict(interpolated_scale_aspect_ratio=0.0), dict(interpolated_scale_aspect_ratio=2.5)]),
    st.sampled_from([{}, dict(reduce_boxes_in_lowest_layer=False), dict(reduce_boxes_in_lowest_layer=True)]),
    st.sampled_from([{}, dict(base_anchor_height=0.5, base_anchor_width=2.0)]),
    st.sampled_from([{}, dict(height_stride=16, width_stride=8, height_offset=4, width_offset=0)]),
    st.sampled_from([None, 300, (640, 360)]),
    st.booleans(),
    st.data(),
)
def test_deprecated_style_tf_gives_the_arrays_of_tf_anchor_generator(
    maps, ratios, scale_kind, interp, reduce, base, grid, size, clip, data
):
    kw = dict(**interp, **reduce, **base, **grid, image_size=size, clip=clip)
    if scale_kind == "range":
        kw.update(min_scale=data.draw(st.floats(0.05, 0.5)), max_scale=data.draw(st.floats(0.5, 1.0)))
    elif scale_kind == "scales":
        kw.update(scales=data.draw(st.lists(st.floats(0.05, 1.0), min_size=len(maps), max_size=len(maps))))
    with pytest.warns(DeprecationWarning, match=r"style='tf'\) is deprecated: call fastanchor.tf_anchor_generator"):
        old = fastanchor.ssd_default_boxes(maps, ratios, style="tf", **kw)
    if scale_kind == "default":  # the defaults style="tf" had: min_scale 0.2, max_scale 0.9
        kw.update(min_scale=0.2, max_scale=0.9)
    new = fastanchor.tf_anchor_generator(maps, ratios, **kw)
    assert old.dtype == new.dtype == np.float64
    np.testing.assert_array_equal(old, new)


def test_deprecated_style_tf_keeps_its_defaults():
    maps = [19, 10, 5, 3, 2, 1]
    with pytest.warns(DeprecationWarning, match="tf_anchor_generator"):
        old = fastanchor.ssd_default_boxes(maps, style="tf")
    np.testing.assert_array_equal(old, fastanchor.tf_anchor_generator(maps, (2.0, 3.0), min_scale=0.2, max_scale=0.9))
    # TensorFlow's default max_scale is 0.95: the new function's default differs from the old call's
    assert not np.array_equal(old, fastanchor.tf_anchor_generator(maps, (2.0, 3.0)))
    np.testing.assert_array_equal(
        fastanchor.tf_anchor_generator(maps, (2.0, 3.0)),
        fastanchor.tf_anchor_generator(maps, (2.0, 3.0), min_scale=0.2, max_scale=0.95),
    )
    # and a warning points at the caller's line
    with pytest.warns(DeprecationWarning) as record:
        fastanchor.ssd_default_boxes([2], style="tf")
    assert record[0].filename == __file__


def test_parameters_that_do_not_apply_raise():
    # every TensorFlow field, alone, with the SSD paper's layout (even at TensorFlow's default value)
    for name, value in TF_FIELDS.items():
        with pytest.raises(
            ValueError,
            match=rf"^{name} is a field of TensorFlow's ssd_anchor_generator and does "
            r"not apply to the SSD paper's layout: use tf_anchor_generator",
        ):
            fastanchor.ssd_default_boxes([3], [2.0], **{name: value})
    defaults = dict(interpolated_scale_aspect_ratio=1.0, reduce_boxes_in_lowest_layer=True, base_anchor_height=1.0)
    with pytest.raises(
        ValueError,
        match="^interpolated_scale_aspect_ratio, reduce_boxes_in_lowest_layer, "
        "base_anchor_height are fields of TensorFlow's",
    ):
        fastanchor.ssd_default_boxes([3], [2.0], **defaults)
    # the SSD paper's reciprocals with TensorFlow's layout (True or False, both were ignored before)
    for value in (True, False):
        with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="reciprocals is an option of the SSD"):
            fastanchor.ssd_default_boxes([3], [2.0], style="tf", reciprocals=value)
    assert "reciprocals" not in inspect.signature(fastanchor.tf_anchor_generator).parameters
    # explicit scales with min_scale or max_scale (the range was ignored before)
    for make, extra in ((fastanchor.ssd_default_boxes, {}), (fastanchor.tf_anchor_generator, {})):
        for kw, named in (
            (dict(min_scale=0.2), "min_scale"),
            (dict(max_scale=0.9), "max_scale"),
            (dict(min_scale=0.1, max_scale=0.9), "min_scale and max_scale"),
        ):
            with pytest.raises(ValueError, match=f"give scales or {named}, not both"):
                make([3, 1], [2.0], scales=[0.2, 0.5], **kw, **extra)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="give scales or max_scale, not both"):
        fastanchor.ssd_default_boxes([3, 1], [2.0], style="tf", scales=[0.2, 0.5], max_scale=0.9)
    # per-layer ratios: TensorFlow has one list
    with pytest.raises(ValueError, match="one list of aspect ratios for all layers"):
        fastanchor.tf_anchor_generator([3, 1], [[2.0], [3.0]])
    # the bad style itself
    for style in ("TF", None, 1):
        with pytest.raises(ValueError, match="style must be 'ssd' or 'tf'"):
            fastanchor.ssd_default_boxes([3], style=style)


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


@st.composite
def near_tie_problem(draw):
    """Matching inputs full of exact and near ties: duplicated priors, GT boxes equal to priors,
    pairs with IoU exactly 0.5 (a box and its half, scaled by a power of two and shifted by an
    integer), (a, 1/a) prior pairs inside a GT box (IoUs equal up to rounding), and thresholds at
    and one ulp around 0.5. Up to ~150 priors: the kernels work in blocks of 8 priors."""
    scale = 2.0 ** draw(st.integers(-3, 3))
    shift = float(draw(st.integers(-4, 4)))
    cells = draw(
        st.lists(
            st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(1, 3), st.integers(1, 3)),
            min_size=1,
            max_size=40,
        )
    )
    boxes = [[x, y, x + w, y + h] for x, y, w, h in cells]
    halves = [[b[0], b[1], (b[0] + b[2]) / 2, b[3]] for b in boxes[: draw(st.integers(0, 5))]]
    cx, cy, r = 4.0, 4.0, draw(st.sampled_from([2.0, 3.0, 1.5]))
    recip = [[cx - r, cy - 1 / r, cx + r, cy + 1 / r], [cx - 1 / r, cy - r, cx + 1 / r, cy + r]]
    priors = np.array(boxes + halves + recip * draw(st.integers(0, 2)), dtype=float)
    priors = np.concatenate([priors, priors[: draw(st.integers(0, priors.shape[0]))]])  # duplicates
    priors = priors[draw(st.permutations(range(priors.shape[0])))]
    if draw(st.booleans()):  # many copies: more than a block, a tail after the blocks
        priors = np.concatenate([priors] * draw(st.integers(2, 4)))
    n_gt = draw(st.integers(0, 8))
    picks = draw(st.lists(st.integers(0, priors.shape[0] - 1), min_size=n_gt, max_size=n_gt))
    gt = priors[picks] if picks else np.zeros((0, 4))
    if draw(st.booleans()):
        gt = np.concatenate([gt, [[cx - 4, cy - 4, cx + 4, cy + 4]], np.array(boxes[:2], float) * [1, 1, 2, 1]])
    thr = draw(st.sampled_from([0.5, np.nextafter(0.5, 0.0), np.nextafter(0.5, 1.0), 0.25, 1.0]))
    return priors * scale + shift, gt * scale + shift, float(thr)


@settings(max_examples=150)
@given(near_tie_problem())
def test_match_priors_near_ties_equal_reference(problem):
    priors, gt, thr = problem
    want = ref.match_priors(priors, gt, thr)
    np.testing.assert_array_equal(fastanchor.match_priors(priors, gt, threshold=thr), want)
    offsets = np.array([0, gt.shape[0]], dtype=np.int64)
    for stored, portable_kernels in [(0, False), (1 << 22, True), (0, True)]:
        with portable(portable_kernels):
            got = fastanchor._core.match_priors(priors, np.ascontiguousarray(gt, dtype=float), offsets, thr, 1, stored)
        np.testing.assert_array_equal(got[0], want)
    # the same image twice in a batch, and in a padded array
    np.testing.assert_array_equal(fastanchor.match_priors(priors, [gt, gt], threshold=thr), [want, want])


@st.composite
def grid_match_problem(draw):
    """SSD-like priors, cell by cell on one or two square grids with several shapes a cell: the
    row kernels skip the blocks of 8 priors whose bounding box a GT box misses, the AVX2 kernel
    works in vectors of 4 and chunks of 512 priors, and a few priors are cut off the end (a
    count that is not a multiple of 8; P < G too). The GT boxes are priors, copies of each other
    and integer boxes (exact and near ties)."""
    side = 24.0
    shapes = draw(
        st.lists(
            st.sampled_from([(1.0, 1.0), (2.0, 2.0), (2.0, 1.0), (1.0, 2.0), (3.0, 1 / 3), (1 / 3, 3.0), (1.5, 1.5)]),
            min_size=1,
            max_size=6,
        )
    )
    rows = []
    for f in draw(st.lists(st.integers(1, 20), min_size=1, max_size=2)):
        s = side / f
        for i in range(f):
            for j in range(f):
                cx, cy = (j + 0.5) * s, (i + 0.5) * s
                rows += [[cx - w * s / 2, cy - h * s / 2, cx + w * s / 2, cy + h * s / 2] for w, h in shapes]
    priors = np.array(rows)
    priors = priors[: priors.shape[0] - draw(st.integers(0, min(7, priors.shape[0] - 1)))]
    gt = [priors[i] for i in draw(st.lists(st.integers(0, priors.shape[0] - 1), max_size=6))]
    for x, y, w, h in draw(
        st.lists(
            st.tuples(st.integers(-2, 23), st.integers(-2, 23), st.integers(1, 12), st.integers(1, 12)), max_size=8
        )
    ):
        gt.append(np.array([x, y, x + w, y + h], float))
    gt += gt[:1] * draw(st.integers(0, 3))  # copies: GT boxes that want the same priors
    gt = np.array(gt).reshape(-1, 4)
    thr = draw(st.sampled_from([0.5, np.nextafter(0.5, 0.0), np.nextafter(0.5, 1.0), 0.2, 0.0]))
    return priors, gt, float(thr)


@settings(max_examples=80, deadline=None)
@given(grid_match_problem())
def test_match_priors_skipped_blocks_equal_reference(problem):
    # both row kernels (AVX2 where the CPU has it, and the portable one), with and without the
    # stored matrix whose skipped blocks are never written
    priors, gt, thr = problem
    want = ref.match_priors(priors, gt, thr)
    offsets = np.array([0, gt.shape[0]], dtype=np.int64)
    for stored in (1 << 22, 0):
        for portable_kernels in (False, True):
            with portable(portable_kernels):
                got = fastanchor._core.match_priors(priors, np.ascontiguousarray(gt), offsets, thr, 1, stored)
            np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(
        fastanchor.match_priors(priors, [gt, gt[:1], gt], threshold=thr),
        [want, ref.match_priors(priors, gt[:1], thr), want],
    )


def test_match_iou_exactly_at_the_threshold():
    # IoU exactly 0.5 (1 / 2): the prior takes the GT at threshold 0.5, not one ulp above.
    priors = np.array([[0, 0, 2, 1], [0, 0, 1, 1], [5, 5, 6, 6]], float)
    gt = np.array([[0, 0, 1, 1], [5, 5, 6, 6]], float)
    assert ref.box_iou(gt, priors)[0, 0] == 0.5
    np.testing.assert_array_equal(fastanchor.match_priors(priors, gt, threshold=0.5), [0, 0, 1])
    np.testing.assert_array_equal(fastanchor.match_priors(priors, gt, threshold=np.nextafter(0.5, 1)), [-1, 0, 1])
    for thr in (0.5, np.nextafter(0.5, 1)):
        np.testing.assert_array_equal(
            fastanchor.match_priors(priors, gt, threshold=thr), ref.match_priors(priors, gt, thr)
        )


def test_match_ssd_layouts_equal_reference():
    # the benchmark's layouts (blocks of 32 priors, a tail) with GT boxes on and between priors
    rng = np.random.default_rng(7)
    for priors_c in (
        fastanchor.tf_anchor_generator(
            [19, 10, 5, 3, 2, 1], [1.0, 2.0, 0.5, 3.0, 1 / 3], min_scale=0.2, max_scale=0.95
        ),
        fastanchor.ssd_default_boxes([38, 19, 10, 5, 3, 1], [[2], [2, 3], [2, 3], [2, 3], [2], [2]]),
    ):
        priors = fastanchor.to_corners(priors_c)
        gts = [random_boxes(rng, 20, 1.0, 0.02, 0.6) for _ in range(4)]
        gts.append(priors[rng.choice(priors.shape[0], 20)])  # GT boxes equal to priors
        gts.append(np.repeat(priors[rng.choice(priors.shape[0], 5)], 3, axis=0))  # duplicated GT boxes
        got = fastanchor.match_priors(priors, gts)
        for b, g in enumerate(gts):
            np.testing.assert_array_equal(got[b], ref.match_priors(priors, g, 0.5))
        # large enough for the images to be matched in parallel: the same result
        np.testing.assert_array_equal(fastanchor.match_priors(priors, gts, n_threads=2), got)
        np.testing.assert_array_equal(fastanchor.match_priors(priors, gts, n_threads=1), got)


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
    np.testing.assert_array_equal(
        fastanchor.match_priors(priors, gts, n_threads=1), fastanchor.match_priors(priors, gts, n_threads=3)
    )
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
    priors = np.concatenate(
        [
            centers[:, :2] + rng.normal(0, 1, (len(gt), 2)) * centers[:, 2:],
            centers[:, 2:] * rng.uniform(0.3, 3, (len(gt), 2)),
        ],
        1,
    )
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
    # not ==: fastanchor sums the IoUs in fixed chunks (float64), numpy pairwise; equal to rounding
    assert r.avg_iou == pytest.approx(ref.avg_iou(r.anchors, u), rel=1e-12)
    r2 = fastanchor.ssd_aspect_ratios(wh, 4, seed=1)
    np.testing.assert_array_equal(r.aspect_ratios, r2.aspect_ratios)
    e = fastanchor.ssd_aspect_ratios(wh, 4, seed=1, method="euclidean")
    assert e.avg_iou <= r.avg_iou + 1e-3  # k-means on IoU optimizes the IoU score
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
    anchors = draw(
        hnp.arrays(
            np.float64,
            (draw(st.integers(1, 3)), 2),
            elements=st.one_of(st.integers(1, 40).map(float), st.floats(0.5, 60.0)),
        )
    )
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
    on_cell = np.array([[16.0, 16.0, 32.0, 32.0]])  # centre (24, 24): cell (1, 1) of stride 16
    assert fastanchor.grid_best_iou(anchors, on_cell, (64, 64), strides=(16,))[0] == 1.0
    off = np.array([[0.0, 0.0, 16.0, 16.0]])  # centre (8, 8): cell (0, 0) of stride 16
    assert fastanchor.grid_best_iou(anchors, off, (64, 64), strides=(16,))[0] == 1.0
    half = np.array([[8.0, 0.0, 24.0, 16.0]])  # centre (16, 8): half a cell off in x
    assert fastanchor.grid_best_iou(anchors, half, (64, 64), strides=(16,))[0] == pytest.approx(
        8 * 16 / (2 * 256 - 128)
    )
    assert fastanchor.grid_recall(anchors, np.concatenate([off, half]), (64, 64), strides=(16,), iou=0.5) == 0.5
    # a (k, 2) array is split over the levels in area order; wh_iou would say 1.0 for all
    wh = np.array(
        [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198], [373, 326]], float
    )
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
    assert (best <= centered + 1e-12).all()  # an offset never helps: wh-IoU bounds it
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
        wh = (wh[ok] * (300.0 / img[ok]))[:20000]  # stretched to 300x300, as SSD trains
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
    from fastanchor.export import config_image_size, set_aspect_ratios

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
    assert (
        "reduce_boxes_in_lowest_layer: true\n        aspect_ratios: 0.50\n        aspect_ratios: 1.25\n      }" in again
    )
    assert set_aspect_ratios("", [2.0], 1) == "ssd_anchor_generator {\n  aspect_ratios: 2.0\n}\n"


def test_cli_ssd(tmp_path, capsys):
    from fastanchor._demo import make_demo
    from fastanchor.cli import main

    path = make_demo(str(tmp_path / "demo"), "voc", n_images=60, seed=0)
    cfg = tmp_path / "pipeline.config"
    cfg.write_text(PIPELINE)
    out = tmp_path / "new.config"
    # 3 ratios score below the config's own 5: written only with --force
    assert main(["ssd", path, "-n", "3", "--config", str(cfg), "--out", str(out), "-q"]) == 1
    assert "below the config's own" in capsys.readouterr().err and not out.exists()
    assert main(["ssd", path, "-n", "3", "--config", str(cfg), "--out", str(out), "-q", "--force"]) == 0
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


# --- regressions: inputs the fuzzing found (issue 7) ---------------------------------------------------


@pytest.mark.parametrize(
    "loc, variances",
    [
        (np.full((1, 4), 1e4), (0.1, 0.2)),  # exp(2000) overflows
        (np.full((1, 4), 1.0), (1e308, 1e308)),
    ],
)  # the prior's scale overflows
def test_decode_beyond_float64_is_a_value_error(loc, variances):
    with pytest.raises(ValueError, match="loc gives boxes beyond float64 range.*row 0|priors row 0"):
        fastanchor.decode(loc, [[0.5, 0.5, 0.1, 0.1]], variances)
    # in a batch the message names the image and the row
    loc = np.zeros((2, 3, 4))
    loc[1, 2, 2] = 1e4
    with pytest.raises(ValueError, match="float64 range: 1 row would be inf or NaN; the first is image 1, row 2"):
        fastanchor.decode(loc, np.tile([0.5, 0.5, 0.1, 0.1], (3, 1)))
    # large offsets that stay finite still decode
    assert np.isfinite(fastanchor.decode(np.full((1, 4), 1e3), [[0.5, 0.5, 0.1, 0.1]])).all()


def test_encode_beyond_float64_is_a_value_error():
    # (a unit box against a 1e-300 prior is 5e300: large, but finite)
    assert np.isfinite(fastanchor.encode([[0.0, 0.0, 1.0, 1.0]], [[0.0, 0.0, 1e-300, 1e-300]])).all()
    with pytest.raises(ValueError, match="matched_gt gives targets beyond float64 range.*row 1: \\[inf, inf"):
        fastanchor.encode(
            [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1e10, 1e10]], [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1e-300, 1e-300]]
        )
    # d_wh * v0 must be a finite positive double, even with no boxes to encode
    for v, side in [((1e308, 1e308), 10.0), ((5e-324, 0.2), 0.1)]:  # 1e309 and 5e-325
        priors = [[0.5, 0.5, 1.0, 1.0], [0.5, 0.5, side, side]]
        for fn in (fastanchor.encode, fastanchor.decode):
            with pytest.raises(ValueError, match="priors row 1 .* variances\\[0\\]"):
                fn(np.zeros((0, 2, 4)), priors, v)


@pytest.mark.parametrize(
    "kwargs, what",
    [
        (dict(feature_map_sizes=[1], aspect_ratios=[1e308], scales=[1e308], clip=False), "width inf"),
        (
            dict(feature_map_sizes=[1], aspect_ratios=[1e308], scales=[1e308], clip=True),
            "width inf",
        ),  # not clipped away
        (dict(feature_map_sizes=[1], image_size=(1e308, 5e-324)), "width 0.0"),
        (dict(feature_map_sizes=[1, 1], aspect_ratios=[2.0], scales=[1e-200, 1e-200]), "layer 0: box 1 .* width 0.0"),
    ],
)
def test_default_boxes_whose_sides_overflow_or_vanish_are_a_value_error(kwargs, what):
    with pytest.raises(ValueError, match=what + ".*scales .*aspect_ratios, image_size"):
        fastanchor.ssd_default_boxes(**kwargs)


def test_default_boxes_count_is_limited_before_any_allocation(monkeypatch):
    """Only the size arithmetic runs: the limit is checked before the grids are built."""
    import fastanchor._priors as ssd

    assert ssd.MAX_PRIORS == 2**29  # 16 GiB of float64 output
    for sizes in ([10**6], [2**31], [(2**62, 2**62)], [2**15]):  # 2**15: 2**30 * 6 boxes
        with pytest.raises(ValueError, match=r"priors: at most 536870912 \(MAX_PRIORS: 16 GiB"):
            fastanchor.ssd_default_boxes(sizes)
    monkeypatch.setattr(ssd, "MAX_PRIORS", 6 * 4 + 6)  # one 2x2 map and a 1x1 map of 6 boxes each
    assert fastanchor.ssd_default_boxes([2, 1]).shape == (30, 4)
    with pytest.raises(ValueError, match="give 32 priors: at most 30"):
        fastanchor.ssd_default_boxes([2, (1, 1)], [[2.0, 3.0], [2.0, 3.0, 4.0]])  # 4 * 6 + 8 boxes
    # TensorFlow strides that put centres beyond float64 are refused too
    with pytest.raises(ValueError, match="layer 0: height/width_stride"):
        fastanchor.tf_anchor_generator([3], [2.0, 3.0], height_stride=1e308, width_stride=1.0)


def test_default_boxes_options_must_be_what_they_say():
    with pytest.raises(TypeError, match="aspect_ratios must be a sequence of numbers, got ndarray"):
        fastanchor.ssd_default_boxes([2], np.array(2.0))
    with pytest.raises(TypeError, match="scales must be a sequence"):
        fastanchor.ssd_default_boxes([2], scales=np.array(0.2))
    with pytest.raises(TypeError, match="feature_map_sizes"):
        fastanchor.ssd_default_boxes(np.array(3))
    with pytest.raises(TypeError, match="height_stride"):
        fastanchor.tf_anchor_generator([2], [2.0], height_stride=np.array(8.0), width_stride=8.0)
    for name, bads in (("clip", ("no", None, 1, np.array(True))), ("reciprocals", ("no", 1, np.array(True)))):
        for bad in bads:  # reciprocals=None is its default (True)
            with pytest.raises(TypeError, match=f"{name} must be True or False"):
                fastanchor.ssd_default_boxes([2], **{name: bad})
    for name in ("clip", "reduce_boxes_in_lowest_layer"):
        for bad in ("no", None, 1, np.array(True)):
            with pytest.raises(TypeError, match=f"{name} must be True or False"):
                fastanchor.tf_anchor_generator([2], [2.0], **{name: bad})
    np.testing.assert_array_equal(
        fastanchor.ssd_default_boxes([2], clip=np.bool_(False), reciprocals=np.True_),
        fastanchor.ssd_default_boxes([2], clip=False),
    )
    np.testing.assert_array_equal(
        fastanchor.ssd_default_boxes([2], np.array([2.0, 3.0])), fastanchor.ssd_default_boxes([2], [2.0, 3.0])
    )


def test_euclidean_aspect_ratios_take_the_counts_of_kmeans_iou():
    wh = [[1, 2], [3, 1], [2, 2]]
    for method in ("iou", "euclidean"):
        for kwargs, what in [
            (dict(n_init=2**40), "n_init must be <= 2147483647"),
            (dict(max_iter=2**31), "max_iter must be <= 2147483647"),
            (dict(n_init=0), "n_init must be >= 1"),
            (dict(max_iter=-1), "max_iter must be >= 0"),
        ]:
            with pytest.raises(ValueError, match=what):
                fastanchor.ssd_aspect_ratios(wh, 2, method=method, **kwargs)
        r = fastanchor.ssd_aspect_ratios(wh, 3, method=method, max_iter=0, seed=0)  # the seeds, as kmeans_iou
        np.testing.assert_allclose(r.aspect_ratios, [1 / 3**0 / 2, 1.0, 3.0])
    with pytest.raises(ValueError, match="method"):
        fastanchor.ssd_aspect_ratios(wh, 2, method=np.array(["iou"]))


@pytest.mark.parametrize("method", ["iou", "euclidean"])
def test_aspect_ratios_count_only_boxes_of_positive_weight(method):
    wh = [[1, 2], [3, 1], [2, 2]]
    with pytest.raises(ValueError, match="n=2 is larger than the number of distinct boxes with positive weight"):
        fastanchor.ssd_aspect_ratios(wh, 2, method=method, sample_weight=[1, 0, 0], seed=0)
    with pytest.raises(ValueError, match="n=4 is larger than the number of distinct boxes in wh \\(3\\)"):
        fastanchor.ssd_aspect_ratios(wh, 4, method=method, seed=0)
    # the zero-weight boxes are never centres
    r = fastanchor.ssd_aspect_ratios(wh, 2, method=method, sample_weight=[1, 1, 0], seed=0)
    np.testing.assert_allclose(r.aspect_ratios, [0.5, 3.0])


def test_euclidean_centres_of_subnormal_weights_do_not_underflow():
    wh = [[1, 1], [1, 1], [1, 1], [1, 10], [10, 1]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = fastanchor.ssd_aspect_ratios(
            wh, 3, method="euclidean", max_iter=1, sample_weight=[1, 0, 0, 1, 5e-324], seed=0
        )
    # the boxes of positive weight are the centres, whatever the weights' scale
    assert np.isfinite(r.aspect_ratios).all() and np.isfinite(r.avg_iou)
    assert {0.1, 10.0} <= set(np.round(r.aspect_ratios, 12))
    for seed in range(5):
        a = fastanchor.ssd_aspect_ratios(wh[3:], 2, method="euclidean", sample_weight=[1, 5e-324], seed=seed)
        np.testing.assert_allclose(a.aspect_ratios, [0.1, 10.0], rtol=1e-14)
    # a cluster's mean does not depend on the scale of its weights
    wh = [[1, 2], [1, 3], [3, 1]]
    base = fastanchor.ssd_aspect_ratios(wh, 2, method="euclidean", sample_weight=[1, 3, 1], seed=0)
    tiny = fastanchor.ssd_aspect_ratios(wh, 2, method="euclidean", sample_weight=[1e-320, 3e-320, 1], seed=0)
    np.testing.assert_allclose(tiny.aspect_ratios, base.aspect_ratios, rtol=1e-3)  # 1e-320 has 4 digits only


def test_aspect_ratios_of_ratio_1e60_stay_within_the_side_range():
    """Unit-area boxes and anchors of a 1e60 ratio round one ulp beyond 1e30 or below 1e-30: kept
    inside, so no message about "anchors" (an argument the caller never gave)."""
    from fastanchor._ratios import unit_area

    wh = [[1e-30, 1e30], [1e30, 1e-30], [1.0, 1.0]]
    u = unit_area(wh)
    assert (u >= 1e-30).all() and (u <= 1e30).all()
    for method in ("iou", "euclidean"):
        r = fastanchor.ssd_aspect_ratios(wh, 3, seed=0, method=method)
        np.testing.assert_allclose(r.aspect_ratios, [1e-60, 1.0, 1e60], rtol=1e-14)
        assert (r.anchors >= 1e-30).all() and (r.anchors <= 1e30).all()
        assert r.avg_iou == pytest.approx(1.0)
