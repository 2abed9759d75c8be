"""wh_iou and avg_iou against the numpy reference, and their properties."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from hypothesis import given
from hypothesis import strategies as st
from strategies import weights_for, wh_arrays

import fastanchor


@given(wh_arrays(), wh_arrays())
def test_wh_iou_bit_identical_to_numpy_float64(a, b):
    np.testing.assert_array_equal(fastanchor.wh_iou(a, b), ref.wh_iou(a, b))


@given(wh_arrays(), wh_arrays())
def test_wh_iou_float32_is_the_float64_value_rounded_once(a, b):
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    out = fastanchor.wh_iou(a32, b32)
    assert out.dtype == np.float32
    expected64 = ref.wh_iou(a32.astype(np.float64), b32.astype(np.float64))
    np.testing.assert_array_equal(out, expected64.astype(np.float32))
    # and within float32 rounding of numpy's own float32 arithmetic
    np.testing.assert_allclose(out, ref.wh_iou_dtype(a32, b32), rtol=4 * np.finfo(np.float32).eps)


@given(wh_arrays(), wh_arrays())
def test_wh_iou_range_and_symmetry(a, b):
    iou = fastanchor.wh_iou(a, b)
    assert iou.shape == (a.shape[0], b.shape[0])
    assert np.all(iou > 0) and np.all(iou <= 1)
    np.testing.assert_array_equal(iou, fastanchor.wh_iou(b, a).T)


@given(wh_arrays())
def test_wh_iou_diagonal_is_one(a):
    np.testing.assert_array_equal(np.diag(fastanchor.wh_iou(a, a)), 1.0)


def test_wh_iou_known_values():
    iou = fastanchor.wh_iou([[2, 2]], [[1, 1], [2, 2], [4, 1], [4, 4]])
    np.testing.assert_array_equal(iou, [[0.25, 1.0, 2 / 6, 0.25]])


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.int64, np.float16, np.float32, np.float64])
def test_wh_iou_accepts_any_real_dtype(dtype):
    a = np.array([[3, 4], [5, 2]], dtype=dtype)
    b = np.array([[2, 2]], dtype=dtype)
    out = fastanchor.wh_iou(a, b)
    assert out.dtype == (np.float32 if dtype == np.float32 else np.float64)
    np.testing.assert_allclose(out, ref.wh_iou(a.astype(np.float64), b.astype(np.float64)), rtol=1e-7)


def test_wh_iou_mixed_float32_float64_gives_float64():
    assert fastanchor.wh_iou(np.float32([[1, 2]]), np.float64([[1, 2]])).dtype == np.float64


def test_wh_iou_accepts_lists_and_strided_views():
    base = np.arange(1, 41, dtype=np.float64).reshape(10, 4)
    strided = base[::-2, 1:3]  # negative row stride, non-contiguous columns
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(fastanchor.wh_iou(strided, strided.tolist()), ref.wh_iou(strided, strided))
    fortran = np.asfortranarray(base[:, :2])
    np.testing.assert_array_equal(fastanchor.wh_iou(fortran, fortran), ref.wh_iou(base[:, :2], base[:, :2]))


def test_wh_iou_large_parallel_matches_reference_for_every_thread_count():
    rng = np.random.default_rng(1)
    a = np.exp(rng.normal(3, 1, (700, 2)))
    b = np.exp(rng.normal(3, 1, (90, 2)))
    expected = ref.wh_iou(a, b)
    for t in (1, 2, 3):
        np.testing.assert_array_equal(fastanchor.wh_iou(a, b, n_threads=t), expected)


@given(wh_arrays(max_rows=12), wh_arrays(max_rows=80), st.data())
def test_avg_iou_matches_reference(anchors, wh, data):
    weights = data.draw(st.none() | weights_for(wh.shape[0]))
    got = fastanchor.avg_iou(anchors, wh, sample_weight=weights)
    np.testing.assert_allclose(got, ref.avg_iou(anchors, wh, weights), rtol=1e-12)
