"""``fastanchor anchors``: the objective chosen from the target format, and the report of every objective."""

from __future__ import annotations

from test_cli import DARKNET_CFG, GENERATIONS, MMDET_PY, fitted_boxes, run_json, voc  # noqa: F401  (voc: fixture)

import fastanchor


def test_objective_from_the_model_format(capsys, tmp_path, voc):  # noqa: F811
    darknet = tmp_path / "yolov3.cfg"
    darknet.write_text(DARKNET_CFG)
    mmdet = tmp_path / "yolov3_config.py"
    mmdet.write_text(MMDET_PY)
    doc, _ = run_json(capsys, "anchors", voc, "--generations", GENERATIONS, "-q")
    assert doc["objective"] == "fitness"
    doc, _ = run_json(capsys, "anchors", voc, "--model", darknet, "--generations", GENERATIONS, "-q")
    assert doc["objective"] == "avg_iou"
    ev, km = doc["objectives"]["evolved"], doc["objectives"]["kmeans"]
    assert set(ev) == set(fastanchor.OBJECTIVES) and ev["avg_iou"] >= km["avg_iou"]
    exact = [a for level in doc["anchors_exact"] for a in level]
    wh = fitted_boxes(voc, stretch=(416, 416))
    assert ev["avg_iou"] == fastanchor.anchor_objective(exact, wh, "avg_iou")
    # the report also scores the anchors as written (rounded), which is what the table scores
    written = [a for level in doc["anchors"] for a in level]
    for name in fastanchor.OBJECTIVES:
        assert doc["objectives"]["written"][name] == fastanchor.anchor_objective(written, wh, name)
    doc, _ = run_json(capsys, "anchors", voc, "--model", mmdet, "--generations", GENERATIONS, "-q")
    assert doc["objective"] == "recall" and doc["iou_thr"] == 0.5
    # an explicit --objective wins over the format
    doc, _ = run_json(
        capsys,
        "anchors",
        voc,
        "--model",
        darknet,
        "--objective",
        "recall",
        "--iou-thr",
        "0.6",
        "-q",
        "--generations",
        GENERATIONS,
    )
    assert doc["objective"] == "recall" and doc["iou_thr"] == 0.6
    assert doc["objectives"]["evolved"]["recall"] >= doc["objectives"]["kmeans"]["recall"]
