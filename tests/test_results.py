"""The result objects follow datasets.Boxes: frozen, compared by identity when they hold arrays
(so hashable), their arrays read-only, and their per-box arrays shown by shape in the repr."""

from __future__ import annotations

import dataclasses
import pickle
import re

import numpy as np
import pytest

import fastanchor
from fastanchor._results import readonly
from fastanchor.export import read_anchors, write_anchors

RNG = np.random.default_rng(11)
WH = RNG.uniform(4.0, 300.0, (2000, 2))


def array_results():
    """(name, result, its array fields) of every result type that holds arrays."""
    km = fastanchor.kmeans_iou(WH, 6, seed=0)
    ev = fastanchor.evolve_anchors(km.anchors, WH, generations=20, seed=0)
    auto = fastanchor.autoanchor(WH, 6, generations=20, budget=0, seed=0)
    ratios = fastanchor.ssd_aspect_ratios(WH, 3, seed=0)
    return [
        ("KMeansResult", km, ("anchors", "labels")),
        ("EvolveResult", ev, ("anchors", "history")),
        ("AutoAnchorResult", auto, ("anchors", "kmeans_anchors", "history")),
        ("AspectRatioResult", ratios, ("aspect_ratios", "anchors", "labels")),
    ]


@pytest.mark.parametrize("index", range(4))
def test_array_results_compare_by_identity_and_hash(index):
    name, r, _ = array_results()[index]
    _, again, _ = array_results()[index]  # the same values (same seed), another object
    assert type(r).__name__ == name
    assert r == r and not (r == again) and r != again  # a plain bool, no "truth value is ambiguous"
    assert hash(r) == hash(r) and len({r, again, r}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.anchors = np.zeros((1, 2))  # type: ignore[misc]


@pytest.mark.parametrize("index", range(4))
def test_result_arrays_are_read_only(index):
    _, r, arrays = array_results()[index]
    for field in arrays:
        a = getattr(r, field)
        assert isinstance(a, np.ndarray) and not a.flags.writeable, field
        before = a.copy()
        with pytest.raises(ValueError, match="read-only"):
            a[0] = 1
        with pytest.raises(ValueError, match="read-only"):
            a += 1
        np.testing.assert_array_equal(a, before)
        assert a.flags.owndata  # the result owns them: nothing else can write them through a base


def test_results_do_not_freeze_the_callers_arrays():
    wh = WH.copy()
    init = wh[:6].copy()
    weights = np.ones(len(wh))
    fastanchor.kmeans_iou(wh, 6, init=init, sample_weight=weights)
    fastanchor.evolve_anchors(init, wh, generations=5, seed=0)
    fastanchor.autoanchor(wh, 6, generations=5, seed=0)
    fastanchor.ssd_aspect_ratios(wh, 3, seed=0)
    assert wh.flags.writeable and init.flags.writeable and weights.flags.writeable


def test_repr_shows_per_box_arrays_by_shape():
    km, ev, auto, ratios = (r for _, r, _ in array_results())
    text = repr(km)
    assert "labels=<ndarray (2000,) int32>" in text and text.startswith("KMeansResult(anchors=array(")
    assert f"avg_iou={km.avg_iou!r}" in text and f"n_iter={km.n_iter}" in text and "converged=" in text
    assert len(text) < 600  # 2000 labels would take about 6000 characters
    assert "labels=<ndarray (2000,) int32>" in repr(ratios) and "aspect_ratios=array(" in repr(ratios)
    assert "history=<ndarray (20,) float64>" in repr(ev) and "history=<ndarray (20,) float64>" in repr(auto)
    # the nested fitness results keep their full repr
    assert re.search(r"kmeans=FitnessResult\(fitness=[0-9.e-]+, bpr=", repr(auto))


def test_number_results_keep_value_comparison():
    a = fastanchor.anchor_fitness(WH[:9], WH)
    b = fastanchor.anchor_fitness(WH[:9], WH)
    assert a is not b and a == b and hash(a) == hash(b)
    assert a != fastanchor.anchor_fitness(WH[:9], WH, thr=3.0)
    c = fastanchor.check_anchors(WH[:9], WH)
    assert c == fastanchor.check_anchors(WH[:9], WH) and len({c, fastanchor.check_anchors(WH[:9], WH)}) == 1
    assert repr(a).startswith("FitnessResult(fitness=")


def test_read_anchors_result(tmp_path):
    path = str(tmp_path / "a.json")
    levels = [np.array([[10.0, 13.0], [16.0, 30.0]]), np.array([[30.0, 61.0], [62.0, 45.0]])]
    write_anchors(path, levels, [8, 16])
    r, s = read_anchors(path), read_anchors(path)
    assert r == r and r != s and len({r, s}) == 2
    for level in r.levels:
        assert not level.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            level[0, 0] = 1.0
    np.testing.assert_array_equal(r.anchors, np.concatenate(levels))
    assert "levels=[array(" in repr(r) and "format='json'" in repr(r)


def test_a_result_built_from_a_view_copies_it():
    base = np.arange(12.0).reshape(6, 2) + 1.0
    view = base[:3]
    r = fastanchor.KMeansResult(anchors=view, labels=np.zeros(4, np.int32), avg_iou=1.0, n_iter=0, converged=True)
    assert r.anchors is not view and not r.anchors.flags.writeable
    base[0, 0] = 100.0  # the caller's array stays writeable, and the result does not see the change
    assert r.anchors[0, 0] == 1.0 and view.flags.writeable


@pytest.mark.parametrize("index", range(4))
def test_results_stay_read_only_through_pickle(index):
    _, r, arrays = array_results()[index]
    again = pickle.loads(pickle.dumps(r))
    assert type(again) is type(r) and again != r and repr(again) == repr(r)
    for field in arrays:
        np.testing.assert_array_equal(getattr(again, field), getattr(r, field))
        assert not getattr(again, field).flags.writeable, field
    f = fastanchor.anchor_fitness(WH[:9], WH)
    assert pickle.loads(pickle.dumps(f)) == f


def test_readonly():
    own = np.ones(3)
    assert readonly(own) is own and not own.flags.writeable
    base = np.ones(4)
    view = readonly(base[1:])
    assert view.base is None and not view.flags.writeable and base.flags.writeable
    frozen = np.ones(2)
    frozen.flags.writeable = False
    assert readonly(frozen) is frozen
