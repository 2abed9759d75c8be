"""The ``fastanchor`` command, end to end: subprocesses for the real entry points, ``main()`` in
this process for the many option combinations (faster). Every export format is written, read
back and re-scored."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_export import DARKNET_CFG, MMDET_PY, MODEL_YAML

import fastanchor
from fastanchor import datasets
from fastanchor._demo import make_demo
from fastanchor.cli import ROUNDING_TOLERANCE, YOLOV5_DEFAULT_ANCHORS, main
from fastanchor.export import read_anchors, round_anchors

GENERATIONS = "200"


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> str:
    return make_demo(str(tmp_path_factory.mktemp("voc")), "voc", n_images=150, seed=5)


@pytest.fixture(scope="module")
def yolo(tmp_path_factory) -> str:
    return make_demo(str(tmp_path_factory.mktemp("yolo")), "yolo", n_images=60, seed=6)


def fitted_boxes(path: str, size=640, stretch=None) -> np.ndarray:
    """The boxes the command scores on: difficult dropped, scaled, below 2 px on both sides dropped."""
    b = datasets.load(path).filter(drop_difficult=True, drop_crowd=True)
    wh = b.stretch(*stretch) if stretch else b.letterbox(size)
    return wh[(wh >= 2).any(axis=1)]


def run_main(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *args):
    code, out, err = run_main(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out), err


def rescore(doc, path_read, wh):
    """The file's anchors equal the reported ones and score exactly as reported."""
    read = read_anchors(str(path_read))
    reported = [np.array(a) for a in doc["anchors"]]
    assert len(read.levels) == len(reported)
    for got, want in zip(read.levels, reported):
        np.testing.assert_array_equal(got, want)
    fit = fastanchor.anchor_fitness(read.anchors, wh, thr=doc["thr"])
    m = doc["metrics"]["fastanchor"]
    assert (fit.fitness, fit.bpr, fit.aat, fit.avg_iou) == (m["fitness"], m["bpr"], m["aat"], m["avg_iou"])


# --- subprocesses: the real entry points -------------------------------------------------------------------


def test_python_dash_m_demo_json(tmp_path):
    out = tmp_path / "anchors.yaml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastanchor",
            "anchors",
            "--demo",
            "--generations",
            GENERATIONS,
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["k"] == 9 and doc["strides"] == [8, 16, 32] and doc["dataset"]["images"] == 1000
    assert doc["dataset"]["format"] == "voc" and doc["img_size"] == 640
    demo = make_demo(str(tmp_path / "demo"), "voc", n_images=1000, seed=0)  # the same dataset
    rescore(doc, out, fitted_boxes(demo))


def _entry_point() -> str:
    exe = Path(sys.executable).parent / ("fastanchor.exe" if os.name == "nt" else "fastanchor")
    if not exe.exists():
        pytest.skip("the fastanchor script is not installed beside this Python")
    return str(exe)


def test_console_script_text_report(tmp_path, voc):
    proc = subprocess.run(
        [_entry_point(), "anchors", voc, "--generations", GENERATIONS, "--out", str(tmp_path / "a.json"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for needle in (
        "Pascal VOC",
        "letterboxed to 640",
        "P3/8",
        "P4/16",
        "P5/32",
        "fitness",
        "BPR",
        "anchors/target",
        "avg IoU",
        "YOLOv5 default",
        "k-means only",
        "wrote ",
    ):
        assert needle in text, needle
    assert proc.stderr == ""  # --quiet: no bars, no notes (and no warnings on this data)
    # the anchors printed are the anchors written
    printed = [
        [float(v) for v in re.findall(r"[\d.]+", line.split(None, 1)[1])]
        for line in text.splitlines()
        if line.strip().startswith("P")
    ]
    read = read_anchors(str(tmp_path / "a.json"))
    assert printed == [a.ravel().tolist() for a in read.levels]


def test_errors_are_one_line_with_exit_status(tmp_path):
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "a.xml").write_text("<annotation>\n<object>\n</annotation>\n")
    proc = subprocess.run(
        [sys.executable, "-m", "fastanchor", "anchors", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastanchor: error: ")
    assert re.search(r"a\.xml:3: not well-formed XML", lines[0])
    proc = subprocess.run(
        [sys.executable, "-m", "fastanchor", "anchors", "--bogus"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


# --- main() in this process ----------------------------------------------------------------------------------


def test_yolov5_model_yaml(capsys, tmp_path, voc):
    model = tmp_path / "model.yaml"
    model.write_text(MODEL_YAML)
    out = tmp_path / "new.yaml"
    doc, _ = run_json(capsys, "anchors", voc, "--model", model, "--out", out, "--generations", GENERATIONS, "-q")
    rescore(doc, out, fitted_boxes(voc))
    assert "--model model.yaml" in doc["metrics"]
    old, new = MODEL_YAML.splitlines(), out.read_text().splitlines()
    assert new[:6] == old[:6] and new[-12:] == old[-12:]  # everything but the anchors block
    default = fastanchor.anchor_fitness(np.array(YOLOV5_DEFAULT_ANCHORS).reshape(-1, 2), fitted_boxes(voc))
    assert doc["metrics"]["YOLOv5 default"]["fitness"] == default.fitness
    assert doc["metrics"]["fastanchor"]["fitness"] >= doc["metrics"]["k-means only"]["fitness"] - 0.01


def test_darknet_cfg_stretches_to_the_net_size(capsys, tmp_path, voc):
    model = tmp_path / "yolov3.cfg"
    model.write_text(DARKNET_CFG)
    out = tmp_path / "new.cfg"
    doc, _ = run_json(capsys, "anchors", voc, "--model", model, "--out", out, "--generations", GENERATIONS, "-q")
    assert doc["resize"] == "stretch" and doc["img_size"] == [416, 416]
    rescore(doc, out, fitted_boxes(voc, stretch=(416, 416)))
    # --img-size wins over the cfg's [net] size, and letterboxes
    doc, _ = run_json(
        capsys, "anchors", voc, "--model", model, "--img-size", "512", "--out", out, "--generations", "50", "-q"
    )
    assert doc["resize"] == "letterbox" and doc["img_size"] == 512
    rescore(doc, out, fitted_boxes(voc, size=512))


def test_mmdet_and_json_outputs(capsys, tmp_path, voc):
    model = tmp_path / "yolov3_config.py"
    model.write_text(MMDET_PY)
    out = tmp_path / "new.py"
    doc, _ = run_json(capsys, "anchors", voc, "--model", model, "--out", out, "--generations", GENERATIONS, "-q")
    rescore(doc, out, fitted_boxes(voc))
    assert read_anchors(str(out)).strides == (8, 16, 32)
    out = tmp_path / "a.json"
    doc, _ = run_json(capsys, "anchors", voc, "--out", out, "--decimals", "1", "--generations", GENERATIONS, "-q")
    rescore(doc, out, fitted_boxes(voc))
    assert any(v != int(v) for level in doc["anchors"] for pair in level for v in pair)


def test_levels_k_and_strides(capsys, voc):
    doc, _ = run_json(capsys, "anchors", voc, "--levels", "2", "--generations", "50", "-q")
    assert doc["k"] == 6 and doc["strides"] == [8, 16] and [len(a) for a in doc["anchors"]] == [3, 3]
    doc, _ = run_json(capsys, "anchors", voc, "--strides", "8,16,32,64", "-k", "8", "--generations", "50", "-q")
    assert doc["k"] == 8 and [len(a) for a in doc["anchors"]] == [2, 2, 2, 2]
    code, _, err = run_main(capsys, "anchors", voc, "-k", "10")
    assert code == 1 and "-k 10 anchors cannot be split evenly over 3 levels" in err


def test_decimals_cost_little_fitness(capsys, tmp_path, voc):
    """By default anchors are written in whole pixels unless that costs more than
    ROUNDING_TOLERANCE fitness (tiny anchors); then with the fewest decimals that do not."""
    for size in ("1280", "64"):
        out = tmp_path / f"a{size}.yaml"
        doc, _ = run_json(capsys, "anchors", voc, "--img-size", size, "--generations", "50", "--out", out, "-q")
        wh = fitted_boxes(voc, size=int(size))
        exact = np.concatenate([np.array(a) for a in doc["anchors_exact"]])
        best = fastanchor.anchor_fitness(exact, wh).fitness
        cost = [
            best - fastanchor.anchor_fitness(round_anchors(exact, d), wh).fitness for d in range(doc["decimals"] + 1)
        ]
        assert cost[-1] <= ROUNDING_TOLERANCE and all(c > ROUNDING_TOLERANCE for c in cost[:-1])
        rescore(doc, out, wh)
    assert doc["decimals"] >= 1  # at 64 pixels, whole-pixel anchors would cost too much
    doc, _ = run_json(capsys, "anchors", voc, "--img-size", "64", "--decimals", "0", "--generations", "50", "-q")
    assert doc["decimals"] == 0 and all(
        float(v).is_integer() for level in doc["anchors"] for pair in level for v in pair
    )


def test_seed_makes_it_reproducible(capsys, voc):
    a, _ = run_json(capsys, "anchors", voc, "--generations", "100", "--seed", "3", "-q")
    b, _ = run_json(capsys, "anchors", voc, "--generations", "100", "--seed", "3", "-q")
    assert a["anchors_exact"] == b["anchors_exact"]


def test_compare_anchors_and_plot(capsys, tmp_path, voc):
    pytest.importorskip("matplotlib")
    png = tmp_path / "p.png"
    code, out, _ = run_main(
        capsys, "anchors", voc, "--anchors", "10,13, 16,30, 33,23", "--plot", png, "--generations", "50", "-q"
    )
    assert code == 0 and "--anchors" in out and f"wrote {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_yolo_dataset_and_filters(capsys, yolo):
    doc, _ = run_json(capsys, "anchors", yolo, "--classes", "person,car", "--generations", "50", "-q")
    b = datasets.load(yolo)
    assert doc["dataset"]["boxes"] == len(b.filter(["person", "car"]))
    assert doc["dataset"]["left_out"]["other classes"] == len(b) - doc["dataset"]["boxes"]
    code, _, err = run_main(capsys, "anchors", yolo, "--classes", "unicorn")
    assert code == 1 and "unknown class name 'unicorn'" in err


def test_check(capsys, tmp_path, voc):
    doc, _ = run_json(
        capsys, "check", voc, "--anchors", "10,13, 16,30, 33,23, 30,61, 62,45, 59,119, 116,90, 156,198, 373,326"
    )
    wh = fitted_boxes(voc)
    res = fastanchor.check_anchors(np.array(YOLOV5_DEFAULT_ANCHORS).reshape(-1, 2), wh)
    assert doc["bpr"] == res.bpr and doc["fitness"] == res.fitness
    assert doc["recommend_recompute"] == res.recommend_recompute
    # tiny anchors: recompute
    code, out, _ = run_main(capsys, "check", voc, "--anchors", "1,1, 2,2, 3,3")
    assert code == 0 and "recompute: the best possible recall" in out
    # from a model file written by the anchors command
    new = tmp_path / "m.yaml"
    assert run_main(capsys, "anchors", voc, "--out", new, "--generations", "100", "-q")[0] == 0
    doc, _ = run_json(capsys, "check", voc, "--model", new)
    assert doc["recommend_recompute"] is False and doc["anchors"] == [a.tolist() for a in read_anchors(str(new)).levels]
    code, out, _ = run_main(capsys, "check", voc, "--model", new)
    assert "keep them" in out
    count = tmp_path / "count.yaml"
    count.write_text("anchors: 3\n")
    code, _, err = run_main(capsys, "check", voc, "--model", count)
    assert code == 1 and "nothing to check" in err


def test_usage_errors(capsys, tmp_path, voc):
    for args, message in [
        (["anchors", str(tmp_path / "missing")], "no such file or folder"),
        (["anchors", voc, "--out", str(tmp_path / "x.txt")], "cannot tell what to write to"),
        (["anchors", voc, "--model", str(tmp_path / "nope.yaml")], "no such model file"),
        (["anchors", voc, "--img-size", "640x480"], "letterbox takes one size"),
        (["check", voc, "--anchors", "1,2,3"], "pairs, got 3 numbers"),
    ]:
        code, out, err = run_main(capsys, *args)
        assert code == 1, args
        assert err.startswith("fastanchor: error: ") and message in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["anchors", voc, "--demo"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["check", voc])  # --anchors or --model is required
    assert main([]) == 2
    capsys.readouterr()


def test_bad_files_strict_and_skip(capsys, tmp_path, voc):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in sorted(Path(voc).iterdir())[:40]:
        (folder / f.name).write_text(f.read_text())
    (folder / "zz_bad.xml").write_text("<annotation><object>")
    (folder / "zz_zero.xml").write_text(
        "<annotation><size><width>10</width><height>10</height></size><object><name>a</name><bndbox>"
        "<xmin>1</xmin><ymin>1</ymin><xmax>1</xmax><ymax>5</ymax></bndbox></object></annotation>"
    )
    code, _, err = run_main(capsys, "anchors", folder)
    assert code == 1 and "zz_bad.xml:1: not well-formed XML" in err and "--skip-bad-files" in err
    code, _, err = run_main(capsys, "anchors", folder, "--skip-bad-files", "--generations", "20", "-q")
    assert code == 0
    assert "fastanchor: warning: skipped 1 malformed entries" in err and "dropped 1 degenerate boxes" in err
    code, _, err = run_main(capsys, "anchors", folder, "--strict")
    assert code == 1 and "zz_bad.xml" in err


def test_demo_command(capsys, tmp_path):
    code, out, _ = run_main(capsys, "demo", tmp_path / "d", "--format", "coco", "--images", "20")
    assert code == 0 and "instances_demo.json" in out
    assert datasets.load(tmp_path / "d").n_images == 20
