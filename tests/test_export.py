"""Writers of anchors into model files (YOLOv5 yaml, darknet cfg, mmdetection config, json),
the readers that read them back, and the plot."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import fastanchor
from fastanchor.export import (
    export_format,
    format_anchor_list,
    level_name,
    parse_anchor_text,
    read_anchors,
    round_anchors,
    write_anchors,
)

LEVELS = [
    np.array([[9.6, 12.4], [16.2, 29.7], [33.0, 23.4]]),
    np.array([[30.4, 61.2], [62.0, 45.1], [59.3, 118.8]]),
    np.array([[116.0, 90.2], [156.4, 198.1], [373.2, 326.4]]),
]
STRIDES = [8, 16, 32]
ROUNDED = [np.round(a) for a in LEVELS]

# A YOLOv5-style model file written for these tests (structure as in YOLOv5's models/*.yaml).
MODEL_YAML = """\
# Test model, YOLOv5 layout
# Parameters
nc: 20  # number of classes
depth_multiple: 0.33  # model depth multiple
width_multiple: 0.50  # layer channel multiple
anchors:  # three levels
  - [10,13, 16,30, 33,23]  # P3/8
  - [30,61, 62,45, 59,119]  # P4/16

  # a comment inside the block
  - [116,90, 156,198, 373,326]  # P5/32

# backbone
backbone:
  # [from, number, module, args]
  [[-1, 1, Conv, [64, 6, 2, 2]],  # 0-P1/2
   [-1, 3, C3, [128]],
   [-1, 1, SPPF, [1024, 5]],  # 9
  ]

head:
  [[-1, 1, Conv, [512, 1, 1]],
   [[17, 20, 23], 1, Detect, [nc, anchors]],  # Detect(P3, P4, P5)
  ]
"""

# darknet, yolov3 order: the first [yolo] section is the coarsest level (mask 6,7,8)
DARKNET_CFG = """\
[net]
batch=64
width=416
height=416

[convolutional]
size=1
filters=255

[yolo]
mask = 6,7,8
anchors = 10,13,  16,30,  33,23,  30,61,  62,45,  59,119,  116,90,  156,198,  373,326
classes=80
num=9
jitter=.3

[route]
layers = -4

[yolo]
mask = 3,4,5
anchors = 10,13,  16,30,  33,23,  30,61,  62,45,  59,119,  116,90,  156,198,  373,326
classes=80
num=9

[yolo]
mask = 0,1,2
anchors = 10,13,  16,30,  33,23,  30,61,  62,45,  59,119,  116,90,  156,198,  373,326
classes=80
num=9
"""

MMDET_PY = """\
_base_ = ['../_base_/default_runtime.py']
# model settings
model = dict(
    type='YOLOV3',
    bbox_head=dict(
        type='YOLOV3Head',
        num_classes=80,
        in_channels=[512, 256, 128],
        prior_generator=dict(
            type='YOLOAnchorGenerator',
            base_sizes=[[(116, 90), (156, 198), (373, 326)],
                        [(30, 61), (62, 45), (59, 119)],
                        [(10, 13), (16, 30), (33, 23)]],
            strides=[32, 16, 8]),
        featmap_strides=[32, 16, 8]),
    test_cfg=dict(nms_pre=1000))
"""


def check_levels(read, expected=ROUNDED):
    assert len(read.levels) == len(expected)
    for got, want in zip(read.levels, expected):
        np.testing.assert_array_equal(got, want)


def test_helpers():
    assert export_format("a/b.YAML") == "yolov5" and export_format("x.cfg") == "darknet"
    assert export_format("x.py") == "mmdet" and export_format("x.json") == "json"
    with pytest.raises(ValueError, match="cannot tell what to write to x.txt"):
        export_format("x.txt")
    np.testing.assert_array_equal(round_anchors([[0.2, 5.5], [6.49, 7.51]]), [[1, 6], [6, 8]])
    np.testing.assert_array_equal(round_anchors([[0.02, 5.55]], 1), [[0.1, 5.6]])
    assert format_anchor_list(ROUNDED[0]) == "10,12, 16,30, 33,23"
    assert format_anchor_list(LEVELS[0], 1) == "9.6,12.4, 16.2,29.7, 33.0,23.4"
    assert level_name(8) == "P3/8" and level_name(64) == "P6/64" and level_name(12) == "stride 12"


def test_parse_anchor_text():
    np.testing.assert_array_equal(parse_anchor_text("10,13, 16,30"), [[10, 13], [16, 30]])
    np.testing.assert_array_equal(parse_anchor_text("[10,13, 16,30], [33, 23.5]"), [[10, 13], [16, 30], [33, 23.5]])
    with pytest.raises(ValueError, match="pairs, got 3 numbers"):
        parse_anchor_text("10,13, 16")
    with pytest.raises(ValueError, match="numbers separated by commas"):
        parse_anchor_text("10,13, abc")


def test_yolov5_yaml_without_template(tmp_path):
    out = tmp_path / "anchors.yaml"
    assert write_anchors(str(out), LEVELS, STRIDES, header="made by a test") == "yolov5"
    text = out.read_text()
    assert text.startswith("# made by a test\nanchors:\n  - [10,12, 16,30, 33,23]  # P3/8\n")
    check_levels(read_anchors(str(out)))
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(text)["anchors"][2] == [116, 90, 156, 198, 373, 326]


@pytest.mark.parametrize("with_pyyaml", [True, False])
def test_yolov5_yaml_template_keeps_everything_else(tmp_path, monkeypatch, with_pyyaml):
    if not with_pyyaml:
        monkeypatch.setitem(sys.modules, "yaml", None)
    template = tmp_path / "model.yaml"
    template.write_text(MODEL_YAML)
    out = tmp_path / "new.yaml"
    write_anchors(str(out), LEVELS, STRIDES, template=str(template), header="ignored in a copy")
    old_lines, new_lines = MODEL_YAML.splitlines(), out.read_text().splitlines()
    start = old_lines.index("anchors:  # three levels")
    # before the block and from the blank line after it on: identical
    assert new_lines[: start + 1] == old_lines[: start + 1]
    assert new_lines[start + 1 : start + 4] == [
        "  - [10,12, 16,30, 33,23]  # P3/8",
        "  - [30,61, 62,45, 59,119]  # P4/16",
        "  - [116,90, 156,198, 373,326]  # P5/32",
    ]
    assert new_lines[start + 4 :] == old_lines[start + 6 :]  # the inner blank line and comment went with the block
    check_levels(read_anchors(str(out)))
    if with_pyyaml:
        yaml = pytest.importorskip("yaml")
        new, old = yaml.safe_load(out.read_text()), yaml.safe_load(MODEL_YAML)
        assert {k: v for k, v in new.items() if k != "anchors"} == {k: v for k, v in old.items() if k != "anchors"}


def test_yolov5_yaml_template_variants(tmp_path):
    t = tmp_path / "count.yaml"
    t.write_text("nc: 1\nanchors: 3  # per level, computed at training time\nbackbone: []\n")
    with pytest.raises(ValueError, match="'anchors: 3' asks for 3 anchors per level"):
        read_anchors(str(t))
    out = tmp_path / "out.yaml"
    write_anchors(str(out), LEVELS, STRIDES, template=str(t))
    # the comment described the count: stale above explicit anchors, so it goes with it
    assert out.read_text().startswith("nc: 1\nanchors:\n  - [10,12,")
    assert out.read_text().endswith("backbone: []\n")
    check_levels(read_anchors(str(out)))
    t.write_text("nc: 1\nbackbone: []\n")
    with pytest.raises(ValueError, match="no top-level 'anchors:' entry"):
        write_anchors(str(out), LEVELS, STRIDES, template=str(t))
    with pytest.raises(ValueError, match="the template .* is a darknet file"):
        write_anchors(str(out), LEVELS, STRIDES, template=str(tmp_path / "x.cfg"))


def test_darknet_cfg_template(tmp_path):
    template = tmp_path / "yolov3.cfg"
    template.write_text(DARKNET_CFG)
    out = tmp_path / "new.cfg"
    assert write_anchors(str(out), LEVELS, STRIDES, template=str(template)) == "darknet"
    text = out.read_text()
    anchors_line = "anchors=10,12,  16,30,  33,23,  30,61,  62,45,  59,119,  116,90,  156,198,  373,326"
    assert text.count(anchors_line) == 3
    # every section keeps its level: the first is still the coarsest
    assert text.index("mask=6,7,8") < text.index("mask=3,4,5") < text.index("mask=0,1,2")
    changed = [(a, b) for a, b in zip(DARKNET_CFG.splitlines(), text.splitlines()) if a != b]
    assert len(text.splitlines()) == len(DARKNET_CFG.splitlines())
    assert all(a.split("=")[0].strip() in ("mask", "anchors", "num") for a, _ in changed)
    read = read_anchors(str(out))
    check_levels(read)
    assert read.img_size == (416, 416)
    # fewer sections than levels
    with pytest.raises(ValueError, match="has 3 \\[yolo\\] sections but 2 levels"):
        write_anchors(str(out), LEVELS[:2], STRIDES[:2], template=str(template))


def test_darknet_cfg_snippet_and_yolov4_order(tmp_path):
    out = tmp_path / "snippet.cfg"
    write_anchors(str(out), LEVELS, STRIDES)
    check_levels(read_anchors(str(out)))
    # yolov4 lists the finest level first (mask 0,1,2); sections without num= get one
    v4 = DARKNET_CFG.replace("mask = 6,7,8", "mask = 0,1,2#x").replace("mask = 0,1,2\n", "mask = 6,7,8\n")
    v4 = v4.replace("mask = 0,1,2#x", "mask = 0,1,2").replace("num=9\njitter", "jitter")
    (tmp_path / "v4.cfg").write_text(v4)
    write_anchors(str(out), LEVELS, STRIDES, template=str(tmp_path / "v4.cfg"))
    text = out.read_text()
    assert text.index("mask=0,1,2") < text.index("mask=6,7,8") and text.count("num=9") == 3
    check_levels(read_anchors(str(out)))


def test_mmdet_config(tmp_path):
    out = tmp_path / "snippet.py"
    assert write_anchors(str(out), LEVELS, STRIDES, header="test") == "mmdet"
    read = read_anchors(str(out))
    check_levels(read)
    assert read.strides == (8, 16, 32)
    namespace: dict = {}
    exec(out.read_text(), namespace)  # valid Python
    # an override mmengine merges, with mmdetection YOLOV3Head's key
    assert namespace["model"]["bbox_head"]["anchor_generator"]["strides"] == [32, 16, 8]
    template = tmp_path / "yolov3_config.py"
    template.write_text(MMDET_PY)
    write_anchors(str(out), LEVELS, STRIDES, template=str(template))
    text = out.read_text()
    assert text.startswith(MMDET_PY[: MMDET_PY.index("base_sizes=")])
    assert text.endswith(
        MMDET_PY[MMDET_PY.index("            strides=[32, 16, 8]),") + len("            strides=[32, 16, 8]") :]
    )
    assert "(373, 326)" in text  # unchanged level values survive where they round the same
    read = read_anchors(str(out))
    check_levels(read)
    assert read.strides == (8, 16, 32)
    compile(text, str(out), "exec")


def test_json(tmp_path):
    out = tmp_path / "a.json"
    write_anchors(str(out), LEVELS, STRIDES, decimals=1, metadata={"img_size": 640, "note": "x"})
    doc = json.loads(out.read_text())
    assert doc["anchors"][0][0] == [9.6, 12.4] and doc["strides"] == [8, 16, 32] and doc["note"] == "x"
    read = read_anchors(str(out))
    check_levels(read, LEVELS)
    assert read.img_size == (640, 640)


def test_written_anchors_score_as_reported(tmp_path):
    """What a file holds, read back, scores exactly like the rounded anchors that were written."""
    rng = np.random.default_rng(0)
    wh = np.exp(rng.normal(3.5, 1.0, size=(2000, 2)))
    rounded = np.concatenate([round_anchors(a) for a in LEVELS])
    expected = fastanchor.anchor_fitness(rounded, wh)
    template = {".yaml": MODEL_YAML, ".cfg": DARKNET_CFG, ".py": MMDET_PY, ".json": None}
    for suffix, text in template.items():
        t = None
        if text is not None:
            t = tmp_path / f"template{suffix}"
            t.write_text(text)
        out = tmp_path / f"out{suffix}"
        write_anchors(str(out), LEVELS, STRIDES, template=str(t) if t else None)
        got = fastanchor.anchor_fitness(read_anchors(str(out)).anchors, wh)
        assert got == expected, suffix


def test_read_errors(tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text("[net]\nwidth=416\n")
    with pytest.raises(ValueError, match="has no \\[yolo\\] section"):
        read_anchors(str(bad))
    bad.write_text("[yolo]\nmask=0,1\nanchors=10,13,abc\n")
    with pytest.raises(ValueError, match="bad.cfg:3: anchors='10,13,abc' is not a list of numbers"):
        read_anchors(str(bad))
    bad = tmp_path / "bad.py"
    bad.write_text("x = (\n")
    with pytest.raises(ValueError, match="bad.py:1: not valid Python"):
        read_anchors(str(bad))
    bad.write_text("x = 1\n")
    with pytest.raises(ValueError, match="has no YOLOAnchorGenerator"):
        read_anchors(str(bad))
    bad = tmp_path / "bad.json"
    bad.write_text('{"strides": [8]}')
    with pytest.raises(ValueError, match="expected a json object with an 'anchors' list"):
        read_anchors(str(bad))


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from fastanchor.datasets import image_size
    from fastanchor.plot import plot_anchors

    rng = np.random.default_rng(1)
    wh = np.exp(rng.normal(3.5, 1.0, size=(3000, 2)))
    out = tmp_path / "a.png"
    fig = plot_anchors(wh, ROUNDED, str(out), strides=STRIDES, reference=LEVELS, title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = image_size(str(out))
    assert w > 300 and h > 300
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "log"


def test_plot_without_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from fastanchor.plot import plot_anchors

    with pytest.raises(ImportError, match=r"pip install 'fastanchor\[plot\]'"):
        plot_anchors([[1.0, 2.0]], ROUNDED)
