"""The core on the real annotation data in ../shared/data/boxes (skipped when it is absent)."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from conftest import clean, load_real, needs_data, real_box_files

import fastanchor

pytestmark = needs_data
FILES = real_box_files()
SMALL = [p for p in FILES if np.load(p)["wh"].shape[0] <= 20_000]


@pytest.mark.parametrize("path", SMALL, ids=lambda p: getattr(p, "stem", None))
@pytest.mark.parametrize("update", ["median", "mean"])
def test_explicit_init_matches_reference(path, update):
    wh = clean(load_real(path, 640))
    init = wh[np.random.default_rng(0).choice(len(wh), 9, replace=False)]
    expected = ref.lloyd(wh, init, update=update)
    got = fastanchor.kmeans_iou(wh, 9, init=init, update=update)
    np.testing.assert_allclose(got.anchors, expected["anchors"], rtol=1e-9)
    np.testing.assert_array_equal(got.labels, expected["labels"])
    assert got.n_iter == expected["n_iter"] and got.converged == expected["converged"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: getattr(p, "stem", None))
def test_default_fit_is_sound_and_thread_invariant(path):
    wh = clean(load_real(path, 640))
    k = min(9, len(np.unique(wh, axis=0)))
    runs = [fastanchor.kmeans_iou(wh, k, seed=0, n_threads=t) for t in (1, 2)]
    np.testing.assert_array_equal(runs[0].anchors, runs[1].anchors)
    np.testing.assert_array_equal(runs[0].labels, runs[1].labels)
    r = runs[0]
    assert r.converged
    # anchors inside the data's range; IoU of the fit well above that of one anchor
    assert np.all(r.anchors >= wh.min(0)) and np.all(r.anchors <= wh.max(0))
    one = fastanchor.kmeans_iou(wh, 1, seed=0)
    assert r.avg_iou > one.avg_iou
    np.testing.assert_allclose(r.avg_iou, fastanchor.avg_iou(r.anchors, wh), rtol=1e-12)


def test_voc_anchors_are_of_the_known_quality():
    path = next((p for p in FILES if p.stem == "voc0712_trainval"), None)
    if path is None:
        pytest.skip("voc0712_trainval.npz is absent")
    wh = load_real(path, 416)
    r = fastanchor.kmeans_iou(wh, 5, seed=0)
    # YOLOv2 reports 61.0 avg IoU with 5 IoU-k-means centroids on VOC 2007+2012.
    assert 0.59 < r.avg_iou < 0.68


def test_degenerate_widerface_boxes_are_reported_with_their_row():
    path = next((p for p in FILES if p.stem == "widerface_train"), None)
    if path is None:
        pytest.skip("widerface_train.npz is absent")
    wh = load_real(path)
    bad = np.flatnonzero(~((wh > 0).all(1) & np.isfinite(wh).all(1)))
    assert bad.size > 0
    with pytest.raises(ValueError, match=rf"{bad.size} bad rows.*row {bad[0]}:"):
        fastanchor.kmeans_iou(wh, 9)
