"""Scale augmentation: the objectives' mean over a uniform random rescaling of the boxes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import GENERATIONS, fitted_boxes, run_json, run_main, voc  # noqa: F401  (voc: fixture)

import fastanchor

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "boxes"


def letterboxed(name: str, size: int = 640) -> np.ndarray:
    path = DATA / f"{name}.npz"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    z = np.load(path)
    wh, img = z["wh"].astype(np.float64), z["img_wh"].astype(np.float64)
    ok = (wh > 0).all(1) & (img > 0).all(1)  # the raw sets hold a few degenerate boxes
    wh = wh[ok] * size / img[ok].max(1, keepdims=True)
    return wh[(wh >= 2).any(1)]


def test_grid_and_replicas():
    np.testing.assert_array_equal(fastanchor.scale_grid(0.5, 4), [0.625, 0.875, 1.125, 1.375])
    np.testing.assert_array_equal(fastanchor.scale_grid((2.0, 2.0), 3), [2.0, 2.0, 2.0])
    wh = np.array([[10.0, 20.0], [3.0, 4.0]])
    aug, w = fastanchor.scale_augment(wh, (0.5, 1.5), steps=2, sample_weight=[1.0, 3.0])
    np.testing.assert_array_equal(aug, [[7.5, 15.0], [2.25, 3.0], [12.5, 25.0], [3.75, 5.0]])
    np.testing.assert_array_equal(w, [0.5, 1.5, 0.5, 1.5])
    aug, w = fastanchor.scale_augment(wh)  # YOLOv5's default hyp.scale 0.5, 16 scales
    assert aug.shape == (32, 2) and w.shape == (32,) and w.sum() == 2.0


@pytest.mark.parametrize(
    ("scale", "steps", "error", "match"),
    [
        (1.5, 4, ValueError, r"hyp.scale, in \[0, 1\)"),
        (-0.1, 4, ValueError, r"hyp.scale, in \[0, 1\)"),
        ((0.5, 0.4), 4, ValueError, "0 < lo <= hi"),
        ((0.0, 1.0), 4, ValueError, "0 < lo <= hi"),
        ((0.5, float("inf")), 4, ValueError, "finite"),
        ((0.5, 1.0, 2.0), 4, ValueError, "a pair"),
        ("0.5", 4, TypeError, "a number or a pair"),
        (0.5, 0, ValueError, "scale_steps"),
        (0.5, 5000, ValueError, "scale_steps"),
        ((1e20, 1e20), 4, ValueError, "leave the accepted sides"),
    ],
)
def test_bad_scales_are_refused(scale, steps, error, match):
    with pytest.raises(error, match=match):
        fastanchor.scale_augment([[1e12, 2.0]], scale, steps=steps)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 6),
    st.floats(0.2, 1.0),
    st.floats(1.0, 3.0),
    st.integers(1, 9),
    st.sampled_from(fastanchor.OBJECTIVES),
    st.integers(0, 2**32 - 1),
)
def test_objective_is_the_mean_over_the_scales(n, k, lo, hi, steps, objective, seed):
    rng = np.random.default_rng(seed)
    wh = np.exp(rng.normal(3.0, 0.8, (n, 2)))
    anchors = np.exp(rng.normal(3.0, 0.8, (k, 2)))
    weight = rng.uniform(0.1, 2.0, n)
    got = fastanchor.anchor_objective(
        anchors, wh, objective, sample_weight=weight, scale=(lo, hi), scale_steps=steps, iou_thr=0.6
    )
    scales = lo + (hi - lo) * (np.arange(steps) + 0.5) / steps
    per_scale = []
    for s in scales:
        if objective == "fitness":
            per_scale.append(ref.anchor_fitness(anchors, s * wh, sample_weight=weight)["fitness"])
        else:
            per_scale.append(ref.iou_objective(anchors, s * wh, objective, iou_thr=0.6, sample_weight=weight))
    # the objective sums per-box terms rounded to 2^-50: the mean over scales to that precision
    assert got == pytest.approx(float(np.mean(per_scale)), abs=1e-12)


def test_search_with_scale_is_the_search_on_the_replicas():
    rng = np.random.default_rng(3)
    wh = np.exp(rng.normal(3.0, 0.7, (400, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = fastanchor.autoanchor(wh, 6, generations=300, budget=0, seed=1, scale=0.4, scale_steps=8)
        aug, w = fastanchor.scale_augment(wh, 0.4, steps=8)
        s = fastanchor.autoanchor(aug, 6, generations=300, budget=0, seed=1, sample_weight=w)
    np.testing.assert_array_equal(r.anchors, s.anchors)
    assert r.evolved_objectives == s.evolved_objectives and r.scale == (0.6, 1.4) and r.n_boxes == 400
    e = fastanchor.evolve_anchors(r.kmeans_anchors, wh, generations=200, seed=2, scale=0.4, scale_steps=8)
    f = fastanchor.evolve_anchors(r.kmeans_anchors, aug, generations=200, seed=2, sample_weight=w)
    np.testing.assert_array_equal(e.anchors, f.anchors)
    np.testing.assert_array_equal(e.history, f.history)


def test_real_data_anchors_for_the_augmented_sizes_win_under_augmentation():
    wh = letterboxed("coco128")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = fastanchor.autoanchor(wh, 9, seed=0)
        aug = fastanchor.autoanchor(wh, 9, seed=0, scale=0.5)
    for objective in ("fitness", "avg_iou"):
        under_aug = [fastanchor.anchor_objective(a, wh, objective, scale=0.5) for a in (plain.anchors, aug.anchors)]
        assert under_aug[1] > under_aug[0], objective
    assert aug.evolved_objectives["fitness"] == fastanchor.anchor_objective(aug.anchors, wh, "fitness", scale=0.5)


@pytest.mark.parametrize("name", ["coco128", "voc2007_val", "widerface_val"])
def test_real_data_sixteen_scales_are_within_1e3_of_a_fine_grid(name):
    wh = letterboxed(name)
    anchors = fastanchor.kmeans_iou(wh, 9, seed=0).anchors
    for objective in fastanchor.OBJECTIVES:
        coarse = fastanchor.anchor_objective(anchors, wh, objective, scale=0.5)
        fine = fastanchor.anchor_objective(anchors, wh, objective, scale=0.5, scale_steps=1024)
        assert abs(coarse - fine) < 1e-3, (objective, coarse, fine)


def test_cli_scale_from_hyp_and_flag(capsys, tmp_path, voc):  # noqa: F811
    hyp = tmp_path / "hyp.scratch-low.yaml"
    hyp.write_text("lr0: 0.01\nanchor_t: 4.0\nscale: 0.5\n")
    doc, _ = run_json(capsys, "anchors", voc, "--hyp", hyp, "--generations", GENERATIONS, "-q")
    assert doc["scale"] == [0.5, 1.5]
    wh = fitted_boxes(voc)
    written = [a for level in doc["anchors"] for a in level]
    for name in fastanchor.OBJECTIVES:
        assert doc["objectives"]["written"][name] == fastanchor.anchor_objective(written, wh, name, scale=0.5)
        assert doc["objectives_without_scale"][name] == fastanchor.anchor_objective(written, wh, name)
    # an explicit --scale wins over the hyp file; no augmentation without either
    doc, _ = run_json(capsys, "anchors", voc, "--hyp", hyp, "--scale", "0.53,1", "--generations", GENERATIONS, "-q")
    assert doc["scale"] == [0.53, 1.0]
    doc, _ = run_json(capsys, "anchors", voc, "--generations", GENERATIONS, "-q")
    assert doc["scale"] is None and doc["objectives_without_scale"] is None
    bad = tmp_path / "hyp.yaml"
    bad.write_text("lr0: 0.01\n")
    code, _, err = run_main(capsys, "anchors", voc, "--hyp", bad, "-q")
    assert code == 1 and "no 'scale' entry" in err and str(bad) in err
    with pytest.raises(SystemExit) as exc:
        run_main(capsys, "anchors", voc, "--scale", "1.5", "-q")
    assert exc.value.code == 2 and "hyp.scale, in [0, 1)" in capsys.readouterr().err
