"""The private compiled core's own checks: misuse raises ValueError (never an out-of-bounds read),
and the SIMD level switch that the AVX2/portable identity tests use."""

from __future__ import annotations

import numpy as np
import pytest
from simd import simd_level

from fastanchor import _core

WH = np.exp(np.random.default_rng(0).normal(2, 1, (40, 2)))


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: _core.kmeans_iou(WH, None, 3, "given", np.ones((1, 2)), "median", 1, 5, 0.0, 1, 1, None),
            "init_anchors must have shape",
        ),
        (lambda: _core.kmeans_iou(WH, None, 3, "given", None, "median", 1, 5, 0.0, 1, 1, None), "needs init_anchors"),
        (lambda: _core.kmeans_iou(WH, None, 3, "kmeans", None, "median", 1, 5, 0.0, 1, 1, None), "init must be"),
        (lambda: _core.kmeans_iou(WH, None, 3, "random", None, "medoid", 1, 5, 0.0, 1, 1, None), "update must be"),
        (lambda: _core.kmeans_iou(WH, None, 41, "random", None, "median", 1, 5, 0.0, 1, 1, None), "k must be"),
        (
            lambda: _core.kmeans_iou(WH, np.ones(3), 3, "random", None, "median", 1, 5, 0.0, 1, 1, None),
            "weights must have shape",
        ),
        (
            lambda: _core.kmeans_iou(WH[:, :1], None, 3, "random", None, "median", 1, 5, 0.0, 1, 1, None),
            "wh must have shape",
        ),
        (lambda: _core.lloyd_trace(WH, None, np.ones((2, 3)), "mean", 1), "sets must have shape"),
        (lambda: _core.lloyd_trace(WH, None, np.ones((1, 3, 2)), "avg", 1), "update must be"),
        (lambda: _core.assign(np.ones((0, 2)), WH, 1), "anchors must have at least 1"),
        (lambda: _core.avg_iou(np.ones((2, 2)), WH, np.ones(2), 1), "weights must have shape"),
        (lambda: _core.wh_iou(np.ones((3, 3)), WH, False, 1), "wh1 must have shape"),
        (lambda: _core.anchor_fitness(np.ones((0, 2)), WH, None, 4.0, 1), "anchors must have at least 1"),
        (
            lambda: _core.evolve_anchors(
                _core._search_layout(WH), None, np.ones((2, 2)), 4.0, 1, 0.9, 0.1, 2.0, "genetic", 1, 0, 1, None, None
            ),
            "strategy must be",
        ),
        (
            lambda: _core.evolve_anchors(
                None, None, np.ones((2, 2)), 4.0, 1, 0.9, 0.1, 2.0, "anchorwise", 1, 0, 1, None, None
            ),
            "layout must be",
        ),
        (
            lambda: _core.evolve_anchors(
                _core._search_layout(WH),
                np.ones(3),
                np.ones((2, 2)),
                4.0,
                1,
                0.9,
                0.1,
                2.0,
                "anchorwise",
                1,
                0,
                1,
                None,
                None,
            ),
            "weights must have shape",
        ),
        (lambda: _core._search_layout(np.ones((0, 2))), "wh must have at least 1"),
        (lambda: _core._search_layout(WH[:, :1]), "wh must have shape"),
        (lambda: _core._search_layout(WH, np.ones(3)), "weights must have shape"),
        (
            lambda: _core._layout_metrics(_core._search_layout(WH), np.ones((0, 2)), 4.0, 1),
            "anchors must have at least",
        ),
        (
            lambda: _core._layout_objective(_core._search_layout(WH), np.ones((2, 2)), "iou", 4.0, 0.5, False, 1),
            "objective must be",
        ),
        (lambda: _core.box_iou(np.ones((2, 4)), np.ones((2, 2)), False, 1), "boxes2 must have shape"),
        (lambda: _core.match_priors(np.ones((3, 4)), np.ones((2, 4)), np.array([0, 5]), 0.5, 1), "offsets must lie in"),
        (lambda: _core.match_priors(np.ones((3, 4)), np.ones((2, 4)), np.array([0, 2, 1]), 0.5, 1), "non-decreasing"),
        (
            lambda: _core.grid_best_iou(np.ones((3, 4)), np.ones((2, 2)), [(8.0, np.ones((1, 2)))], 1),
            "image_wh must have shape",
        ),
        (lambda: _core._set_simd_level("sse4"), "simd level must be"),
    ],
)
def test_misuse_of_the_private_core_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_simd_level_switch_returns_and_restores_the_previous_level():
    before = _core._simd_level()
    with simd_level("portable"):
        assert _core._simd_level() == "portable"
        with simd_level("auto"):
            assert _core._simd_level() == "auto"
        assert _core._simd_level() == "portable"
    assert _core._simd_level() == before
    if _core._has_avx2():
        with simd_level("avx2"):
            assert _core._simd_level() == "avx2"
    else:
        with pytest.raises(ValueError, match="no AVX2"):
            _core._set_simd_level("avx2")
