"""The IoU objectives scored with the anchors on the detector's grids (``grid=``), against the
numpy reference, in the search, and on real datasets."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import voc  # noqa: F401  (fixture)

import fastanchor
from fastanchor import DetectorGrid, datasets
from fastanchor._validation import resolve_seed, sample_index

RAW = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raw"


def random_grid(rng: np.random.Generator, n: int, size: float = 320.0, strides=(8, 16, 32)):
    """n boxes in images of random sizes up to `size`, with their grid."""
    img = rng.uniform(0.3, 1.0, (n, 2)) * size
    wh = np.minimum(np.exp(rng.normal(3.0, 0.9, (n, 2))), img)
    x1 = rng.uniform(0, 1, (n, 2)) * (img - wh)
    xyxy = np.concatenate([x1, x1 + wh], axis=1)
    wh = xyxy[:, 2:] - xyxy[:, :2]  # the widths the grid's boxes have, rounded alike
    return wh, DetectorGrid(xyxy, img, strides)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 60),
    st.sampled_from([(8,), (8, 16), (8, 16, 32)]),
    st.integers(1, 3),
    st.sampled_from(["avg_iou", "recall"]),
    st.booleans(),
    st.booleans(),
    st.floats(0.05, 1.0),
    st.integers(0, 2**32 - 1),
)
def test_grid_objective_equals_the_reference(n, strides, per, objective, weighted, iou_weighted, iou_thr, seed):
    rng = np.random.default_rng(seed)
    wh, grid = random_grid(rng, n, strides=strides)
    anchors = np.exp(rng.normal(3.0, 0.9, (per * len(strides), 2)))
    sw = rng.uniform(0.0, 2.0, n) if weighted else None
    if sw is not None:
        sw[0] = 1.0
    got = fastanchor.anchor_objective(
        anchors, wh, objective, grid=grid, iou_thr=iou_thr, iou_weighted=iou_weighted, sample_weight=sw
    )
    want = ref.grid_objective(
        anchors, grid.boxes_xyxy, grid.image_wh, strides, objective, iou_thr, iou_weighted, sample_weight=sw
    )
    assert got == want
    if objective == "recall" and not iou_weighted and sw is None:
        # the same count as grid_recall, which places the anchors the same way
        assert got == pytest.approx(
            fastanchor.grid_recall(anchors, grid.boxes_xyxy, grid.image_wh, strides=strides, iou=iou_thr), abs=1e-15
        )


def test_grid_value_does_not_depend_on_threads_and_differs_from_corner_alignment():
    rng = np.random.default_rng(5)
    wh, grid = random_grid(rng, 20_000)
    anchors = fastanchor.kmeans_iou(wh, 9, seed=0).anchors
    for objective in ("avg_iou", "recall"):
        one = fastanchor.anchor_objective(anchors, wh, objective, grid=grid, n_threads=1)
        two = fastanchor.anchor_objective(anchors, wh, objective, grid=grid, n_threads=2)
        assert one == two
        assert one < fastanchor.anchor_objective(anchors, wh, objective)  # off-centre boxes lose overlap


def test_search_on_the_grid():
    rng = np.random.default_rng(8)
    wh, grid = random_grid(rng, 3000)
    start = fastanchor.kmeans_iou(wh, 6, seed=0).anchors
    grid2 = DetectorGrid(grid.boxes_xyxy, grid.image_wh, (8, 16))
    runs = [
        fastanchor.evolve_anchors(start, wh, objective="recall", grid=grid2, generations=120, seed=1, n_threads=t)
        for t in (1, 2)
    ]
    np.testing.assert_array_equal(runs[0].anchors, runs[1].anchors)
    r = runs[0]
    assert r.fitness == fastanchor.anchor_objective(r.anchors, wh, "recall", grid=grid2)
    assert r.fitness >= r.initial_fitness == fastanchor.anchor_objective(start, wh, "recall", grid=grid2)
    assert np.all(np.diff(r.history) >= 0)
    # YOLOv5's strategy is its sequential search, on the grid-scored objective too
    y = fastanchor.evolve_anchors(
        start, wh, objective="avg_iou", grid=grid2, strategy="yolov5", generations=40, seed=3, batch=4
    )
    assert y.fitness == ref.grid_objective(y.anchors, grid.boxes_xyxy, grid.image_wh, (8, 16), "avg_iou")


def test_autoanchor_searches_a_sample_of_the_grid():
    rng = np.random.default_rng(12)
    wh, grid = random_grid(rng, 3000)
    kw = dict(objective="avg_iou", generations=40, budget=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = fastanchor.autoanchor(wh, 9, grid=grid, search_sample=700, seed=3, **kw)
        gen = np.random.default_rng(resolve_seed(3))
        km = fastanchor.kmeans_iou(wh, 9, tol=1e-3, seed=gen)
        index = sample_index(gen, len(wh), 700)
        ev = fastanchor.evolve_anchors(km.anchors, wh[index], grid=grid.subset(index), seed=gen, **kw)
    np.testing.assert_array_equal(r.anchors, ev.anchors)
    assert r.evolved_objectives["avg_iou"] == fastanchor.anchor_objective(r.anchors, wh, "avg_iou", grid=grid)
    assert r.kmeans_objectives["recall"] == fastanchor.anchor_objective(km.anchors, wh, "recall", grid=grid)


def test_autoanchor_drops_the_grid_rows_it_drops():
    rng = np.random.default_rng(9)
    wh, grid = random_grid(rng, 500)
    tiny = np.array([[10.0, 10.0, 11.0, 11.5]])
    xyxy = np.concatenate([grid.boxes_xyxy, tiny])
    img = np.concatenate([grid.image_wh, [[320.0, 320.0]]])
    wh = np.concatenate([wh, tiny[:, 2:] - tiny[:, :2]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = fastanchor.autoanchor(
            wh, 9, objective="avg_iou", grid=DetectorGrid(xyxy, img), generations=100, budget=0, seed=0
        )
    assert r.n_dropped == 1 and r.n_boxes == 500
    assert r.evolved_objectives["avg_iou"] == fastanchor.anchor_objective(r.anchors, wh[:500], "avg_iou", grid=grid)
    assert r.evolved_objectives["avg_iou"] >= r.kmeans_objectives["avg_iou"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"grid": "grid"}, TypeError, "DetectorGrid"),
        ({"grid": DetectorGrid([[0, 0, 5, 5]], (64, 64))}, ValueError, "grid has 1 boxes but wh has 2"),
        ({"grid": DetectorGrid([[0, 0, 5, 5], [1, 1, 4, 9]], (64, 64), (8, 16))}, ValueError, "split evenly"),
    ],
)
def test_bad_grids_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        fastanchor.anchor_objective([[5, 5], [3, 8], [9, 9]], [[5, 5], [3, 8]], "avg_iou", **kwargs)


def test_grid_under_scale_augmentation_is_the_mean_over_resized_images():
    rng = np.random.default_rng(12)
    wh, grid = random_grid(rng, 200, strides=(8, 16))
    anchors = np.exp(rng.normal(3.0, 0.8, (4, 2)))
    for objective in ("avg_iou", "recall"):
        got = fastanchor.anchor_objective(anchors, wh, objective, grid=grid, scale=(0.5, 1.0), scale_steps=4)
        per_scale = [
            ref.grid_objective(anchors, s * grid.boxes_xyxy, s * grid.image_wh, (8, 16), objective)
            for s in fastanchor.scale_grid((0.5, 1.0), 4)
        ]
        assert got == pytest.approx(float(np.mean(per_scale)), abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = fastanchor.autoanchor(
            wh, 4, objective="recall", grid=grid, scale=0.3, scale_steps=3, generations=60, seed=0
        )
    assert r.value == fastanchor.anchor_objective(r.anchors, wh, "recall", grid=grid, scale=0.3, scale_steps=3)


def test_bad_grid_boxes_are_refused():
    with pytest.raises(ValueError, match=r"x1 < x2 and y1 < y2; the first is row 1"):
        DetectorGrid([[0, 0, 5, 5], [4, 1, 4, 9]], (64, 64))
    with pytest.raises(ValueError, match="image_wh"):
        DetectorGrid([[0, 0, 5, 5]], (0, 64))


def stretched(path: Path, size: float = 416.0):
    """Boxes of a real dataset resized to size x size (darknet's and mmdetection's YOLOv3), with their grid."""
    if not path.exists():
        pytest.skip(f"{path} is absent")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = datasets.load(str(path))
    ok = np.isfinite(b.image_wh).all(1) & np.isfinite(b.xy).all(1)
    b = b[ok]
    r = size / b.image_wh
    xyxy = b.xyxy * np.concatenate([r, r], axis=1)
    wh = xyxy[:, 2:] - xyxy[:, :2]
    keep = (wh >= 2.0).any(axis=1)  # as autoanchor keeps them
    return wh[keep], DetectorGrid(xyxy[keep], (size, size), (8, 16, 32))


@pytest.mark.parametrize("name", ["raccoon_voc", "kangaroo_voc", "deepforest_voc"])
def test_real_data_grid_search_beats_kmeans_on_the_grid(name):
    wh, grid = stretched(RAW / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = fastanchor.autoanchor(wh, 9, objective="recall", seed=0)
        on_grid = fastanchor.autoanchor(wh, 9, objective="recall", grid=grid, seed=0)
    score = [fastanchor.anchor_objective(a, wh, "recall", grid=grid) for a in (plain.anchors, on_grid.anchors)]
    assert on_grid.evolved_objectives["recall"] == score[1]
    assert score[1] >= on_grid.kmeans_objectives["recall"]
    assert score[1] >= score[0]


def test_cli_grid(capsys, tmp_path, voc):  # noqa: F811
    from test_cli import GENERATIONS, MMDET_PY, run_json

    doc, _ = run_json(capsys, "anchors", voc, "--objective", "recall", "--grid", "--generations", GENERATIONS, "-q")
    assert doc["grid"] is True and doc["objective"] == "recall"
    # the grid recomputed here: letterboxed to 640 and centred in the padded square
    b = datasets.load(voc).filter(drop_difficult=True)
    r = 640.0 / b.image_wh.max(axis=1)
    x1y1 = b.xy * r[:, None] + (640.0 - b.image_wh * r[:, None]) / 2
    wh = b.wh * r[:, None]
    keep = (wh >= 2).any(axis=1)
    grid = DetectorGrid(np.concatenate([x1y1, x1y1 + wh], axis=1)[keep], (640, 640), (8, 16, 32))
    written = [a for level in doc["anchors"] for a in level]
    got = doc["objectives"]["written"]["recall"]
    assert got == fastanchor.anchor_objective(written, wh[keep], "recall", grid=grid)
    assert doc["objectives"]["written"]["fitness"] == fastanchor.anchor_objective(written, wh[keep], "fitness")
    # on by default for an mmdetection config (recall), off with --no-grid; not with scale augmentation
    mmdet = tmp_path / "yolov3_config.py"
    mmdet.write_text(MMDET_PY)
    doc, _ = run_json(capsys, "anchors", voc, "--model", mmdet, "--generations", GENERATIONS, "-q")
    assert doc["grid"] is True and doc["objective"] == "recall"
    doc, _ = run_json(capsys, "anchors", voc, "--model", mmdet, "--no-grid", "--generations", GENERATIONS, "-q")
    assert doc["grid"] is False
    doc, _ = run_json(capsys, "anchors", voc, "--generations", GENERATIONS, "-q")
    assert doc["grid"] is False
    doc, _ = run_json(capsys, "anchors", voc, "--grid", "--objective", "recall", "--scale", "0.5", "-q")
    assert doc["grid"] is True and doc["scale"] == [0.5, 1.5]
    got = doc["objectives"]["written"]["recall"]
    written = [a for level in doc["anchors"] for a in level]
    assert got == fastanchor.anchor_objective(written, wh[keep], "recall", grid=grid, scale=0.5)
