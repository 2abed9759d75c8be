"""Every bad-input rule: a clear ValueError/TypeError saying what and where, never a crash."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastanchor
from fastanchor._validation import rows_where

GOOD = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 1.0], [2.0, 2.0]])


@pytest.mark.parametrize(
    "bad, where",
    [
        ([[1.0, 2.0], [0.0, 3.0]], r"1 bad row.*row 1: \[0\.0, 3\.0\]"),
        ([[1.0, 2.0], [-1.0, 3.0], [2.0, -2.0]], r"2 bad rows.*row 1: \[-1\.0, 3\.0\]"),
        ([[np.nan, 2.0], [1.0, 1.0]], r"row 0: \[nan, 2\.0\]"),
        ([[1.0, 2.0], [1.0, np.inf]], r"row 1: \[1\.0, inf\]"),
        ([[1.0, 1e31]], r"row 0"),
        ([[1e-31, 1.0]], r"row 0"),
    ],
)
def test_bad_rows_name_the_count_and_first_row(bad, where):
    with pytest.raises(ValueError, match=where):
        fastanchor.kmeans_iou(bad, 1)
    with pytest.raises(ValueError, match=where):
        fastanchor.wh_iou(bad, GOOD)
    with pytest.raises(ValueError, match=where.replace("row", "row")):
        fastanchor.avg_iou(GOOD, bad)


@pytest.mark.parametrize(
    "bad, what",
    [
        (np.ones(4), r"shape \(N, 2\).*\(4,\)"),
        (np.ones((4, 3)), r"shape \(N, 2\).*\(4, 3\)"),
        (np.ones((2, 2, 2)), r"shape \(N, 2\)"),
        (np.ones((0, 2)), "empty"),
        (np.float64(3.0), r"shape \(N, 2\)"),
    ],
)
def test_bad_shapes(bad, what):
    with pytest.raises(ValueError, match=what):
        fastanchor.kmeans_iou(bad, 1)
    with pytest.raises(ValueError, match=what):
        fastanchor.wh_iou(bad, GOOD)


@pytest.mark.parametrize(
    "bad",
    [np.array([[1 + 1j, 2]]), np.array([[True, True]]), np.array([["a", "b"]]), [[1, 2], [3]], [[object(), 1]]],
)
def test_non_real_input_is_a_type_error(bad):
    with pytest.raises(TypeError, match="real numbers"):
        fastanchor.kmeans_iou(bad, 1)
    with pytest.raises(TypeError):
        fastanchor.wh_iou(bad, GOOD)


@pytest.mark.parametrize("k", [0, -1])
def test_k_must_be_positive(k):
    with pytest.raises(ValueError, match="k must be >= 1"):
        fastanchor.kmeans_iou(GOOD, k)


@pytest.mark.parametrize("k", [2.0, "3", None, True])
def test_k_must_be_an_int(k):
    with pytest.raises(TypeError, match="k must be an integer"):
        fastanchor.kmeans_iou(GOOD, k)


def test_k_larger_than_distinct_boxes_says_both_numbers():
    wh = np.array([[1.0, 2.0]] * 5 + [[2.0, 2.0]] * 5)
    with pytest.raises(ValueError, match=r"k=3 .* distinct boxes \(2\)"):
        fastanchor.kmeans_iou(wh, 3)
    fastanchor.kmeans_iou(wh, 2)  # fine
    with pytest.raises(ValueError, match=r"k=2 .*positive weight \(1\)"):
        fastanchor.kmeans_iou(wh, 2, sample_weight=np.r_[np.ones(5), np.zeros(5)])


def test_k_check_on_large_input_with_few_distinct_boxes():
    wh = np.tile([[1.0, 1.0], [2.0, 3.0], [4.0, 1.0]], (20_000, 1))
    with pytest.raises(ValueError, match=r"distinct boxes \(3\)"):
        fastanchor.kmeans_iou(wh, 4)
    assert fastanchor.kmeans_iou(wh, 3, seed=0).avg_iou == 1.0


@pytest.mark.parametrize(
    "weights, what",
    [
        (np.ones(3), r"shape \(4,\)"),
        (np.ones((4, 1)), r"shape \(4,\)"),
        (np.array([1.0, -1.0, 1.0, 1.0]), r"index 1: -1\.0"),
        (np.array([1.0, 1.0, np.nan, 1.0]), "index 2: nan"),
        (np.array([1.0, 1.0, 1.0, np.inf]), "index 3: inf"),
        (np.zeros(4), "at least one positive weight"),
    ],
)
def test_bad_weights(weights, what):
    with pytest.raises(ValueError, match=what):
        fastanchor.kmeans_iou(GOOD, 2, sample_weight=weights)
    with pytest.raises(ValueError, match=what):
        fastanchor.avg_iou(GOOD, GOOD, sample_weight=weights)


def test_bad_options():
    with pytest.raises(ValueError, match="update must be one of"):
        fastanchor.kmeans_iou(GOOD, 2, update="mode")
    with pytest.raises(ValueError, match="init must be one of"):
        fastanchor.kmeans_iou(GOOD, 2, init="kmeans++")
    with pytest.raises(ValueError, match="init has 3 anchors but k=2"):
        fastanchor.kmeans_iou(GOOD, 2, init=GOOD[:3])
    with pytest.raises(ValueError, match="init has 1 bad row"):
        fastanchor.kmeans_iou(GOOD, 2, init=[[1.0, 1.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="n_init must be 1 when init is an array"):
        fastanchor.kmeans_iou(GOOD, 2, init=GOOD[:2], n_init=3)
    with pytest.raises(ValueError, match="n_init must be >= 1"):
        fastanchor.kmeans_iou(GOOD, 2, n_init=0)
    with pytest.raises(ValueError, match="max_iter must be >= 0"):
        fastanchor.kmeans_iou(GOOD, 2, max_iter=-1)
    with pytest.raises(ValueError, match="tol must be >= 0"):
        fastanchor.kmeans_iou(GOOD, 2, tol=-1e-3)
    with pytest.raises(ValueError, match="tol must be finite"):
        fastanchor.kmeans_iou(GOOD, 2, tol=float("nan"))
    with pytest.raises(TypeError, match="seed must be"):
        fastanchor.kmeans_iou(GOOD, 2, seed="abc")
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        fastanchor.kmeans_iou(GOOD, 2, seed=-5)


def test_n_threads_rules():
    with pytest.raises(ValueError, match="n_threads must not be 0"):
        fastanchor.kmeans_iou(GOOD, 2, n_threads=0)
    with pytest.raises(ValueError, match="leaves no thread"):
        fastanchor.kmeans_iou(GOOD, 2, n_threads=-10_000)
    with pytest.raises(TypeError, match="n_threads must be an integer"):
        fastanchor.wh_iou(GOOD, GOOD, n_threads=1.5)
    a = fastanchor.kmeans_iou(GOOD, 2, n_threads=-1, seed=0)
    b = fastanchor.kmeans_iou(GOOD, 2, n_threads=None, seed=0)
    np.testing.assert_array_equal(a.anchors, b.anchors)


def test_read_only_and_integer_inputs_are_fine():
    wh = np.array([[3, 4], [5, 2], [1, 1], [2, 7]], dtype=np.int16)
    wh.setflags(write=False)
    r = fastanchor.kmeans_iou(wh, 2, seed=0)
    assert r.anchors.dtype == np.float64
    assert np.isfinite(r.avg_iou)


def test_extreme_but_supported_magnitudes_are_exact():
    import reference as ref

    rng = np.random.default_rng(0)
    for scale in (1e-25, 1e-6, 1.0, 1e6, 1e25):
        wh = np.exp(rng.normal(0, 1, (500, 2))) * scale
        init = wh[:5]
        for update in ("median", "mean"):
            got = fastanchor.kmeans_iou(wh, 5, init=init, update=update)
            exp = ref.lloyd(wh, init, update=update)
            np.testing.assert_allclose(got.anchors, exp["anchors"], rtol=1e-9)
            np.testing.assert_array_equal(got.labels, exp["labels"])
            assert np.isfinite(got.avg_iou)


@pytest.mark.parametrize("bad", [np.float32(1e30), np.float32(9e-31)])
def test_float32_rows_read_in_place_are_checked_against_the_float64_range(bad):
    # kmeans_iou checks float32 rows in place, without a float64 copy: the range is still
    # [1e-30, 1e30] as doubles. float32(1e30) is 1.00000002e30 (numpy would round the bound to
    # float32 and call it equal); float32(9e-31) is below 1e-30. Found by test_fuzz.
    wh = np.full((8, 2), 5.0, dtype=np.float32)
    wh[6, 0] = bad
    with pytest.raises(ValueError, match=r"the first is row 6"):
        fastanchor.kmeans_iou(wh, 2, seed=0)
    with pytest.raises(ValueError, match=r"the first is row 6"):
        fastanchor.kmeans_iou(wh.astype(np.float64), 2, seed=0)


@given(
    n=st.integers(0, 300),
    dtype=st.sampled_from([np.float32, np.float64]),
    strided=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_rows_where_is_boolean_indexing(n, dtype, strided, seed):
    rng = np.random.default_rng(seed)
    whole = rng.uniform(0.5, 50.0, (n, 4)).astype(dtype)
    rows = whole[:, 1:3] if strided else np.ascontiguousarray(whole[:, :2])
    mask = rng.random(n) < 0.6
    got = rows_where(rows, mask)
    assert got.dtype == dtype and got.flags.c_contiguous and not np.shares_memory(got, whole)
    np.testing.assert_array_equal(got, rows[mask])
