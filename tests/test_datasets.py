"""Dataset loaders: Pascal VOC XML, COCO json, YOLO labels; the Boxes container.

Most tests write small annotation files themselves (including every malformed case); the ones
marked ``needs_raw`` read the real files in ../shared/data/raw and skip when it is absent.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import struct
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastanchor import datasets
from fastanchor._demo import demo_images, make_demo, sizes_of, write_blank_png
from fastanchor.datasets import AnnotationError, AnnotationWarning, Boxes, image_size

RAW = DATA_DIR / "raw"
needs_raw = pytest.mark.skipif(not RAW.is_dir(), reason=f"real data folder {RAW} is absent")


# --- helpers that write annotation files ------------------------------------------------------------------


def voc_xml(objects, size=(640, 480), filename="img.jpg", extra=""):
    objs = "".join(
        f"<object><name>{name}</name><difficult>{diff}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>\n"
        for name, diff, (x1, y1, x2, y2) in objects
    )
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>\n" if size else ""
    return f"<annotation>\n<filename>{filename}</filename>\n{size_xml}{extra}{objs}</annotation>\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def coco_doc(anns, images=((1, 640, 480),), cats=((1, "person"), (3, "car"))):
    return {
        "images": [{"id": i, "file_name": f"{i:06d}.jpg", "width": w, "height": h} for i, w, h in images],
        "annotations": [dict(id=j + 1, **a) for j, a in enumerate(anns)],
        "categories": [{"id": c, "name": n} for c, n in cats],
    }


def yolo_dataset(root: Path, labels: dict, sizes: dict, names=("a", "b"), split="train") -> Path:
    """Images (blank PNGs of the given sizes) and label files under root; returns data.yaml."""
    for stem, (w, h) in sizes.items():
        p = root / "images" / split / f"{stem}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        write_blank_png(str(p), w, h)
    for stem, text in labels.items():
        write(root / "labels" / split / f"{stem}.txt", text)
    names_yaml = "".join(f"  {i}: {n}\n" for i, n in enumerate(names))
    return write(root / "data.yaml", f"path: .\n{split}: images/{split}\nval: images/{split}\nnames:\n{names_yaml}")


# --- Pascal VOC --------------------------------------------------------------------------------------------


def test_voc_basic(tmp_path):
    write(tmp_path / "a.xml", voc_xml([("dog", 0, (10, 20, 110, 70)), ("cat", 1, (0, 0, 640, 480))]))
    write(tmp_path / "sub" / "b.xml", voc_xml([("dog", 0, (5.5, 5, 15.5, 25))], size=(320, 240)))
    write(tmp_path / "sub" / "empty.xml", voc_xml([]))
    write(tmp_path / ".hidden" / "c.xml", "not even xml")  # hidden folders are skipped
    write(tmp_path / "notes.txt", "ignored")
    b = datasets.load_voc(tmp_path)
    assert len(b) == 3 and b.n_images == 3 and b.format == "voc"
    assert b.class_names == ("cat", "dog")
    np.testing.assert_array_equal(b.wh, [[100, 50], [640, 480], [10, 20]])
    np.testing.assert_array_equal(b.image_wh, [[640, 480], [640, 480], [320, 240]])
    np.testing.assert_array_equal(b.class_id, [1, 0, 1])
    np.testing.assert_array_equal(b.difficult, [False, True, False])
    assert not b.crowd.any()
    assert [os.path.basename(b.files[i]) for i in b.image_id] == ["a.xml", "a.xml", "b.xml"]
    # a single file, and a list of paths
    assert len(datasets.load_voc(tmp_path / "a.xml")) == 2
    assert len(datasets.load_voc([tmp_path / "a.xml", str(tmp_path / "sub")])) == 3


def test_voc_workers_give_the_same_result(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(60):
        objs = [
            ("ab"[j % 2], 0, (int(x), int(y), int(x) + 5 + j, int(y) + 7))
            for j, (x, y) in enumerate(rng.integers(0, 300, (i % 5, 2)))
        ]
        write(tmp_path / f"{i:03d}.xml", voc_xml(objs))
    one = datasets.load_voc(tmp_path, workers=1)
    two = datasets.load_voc(tmp_path, workers=2)
    for f in ("wh", "image_wh", "image_id", "class_id", "difficult"):
        np.testing.assert_array_equal(getattr(one, f), getattr(two, f))
    assert one.files == two.files and one.class_names == two.class_names


def test_voc_degenerate_boxes_dropped_with_one_warning(tmp_path):
    write(tmp_path / "good.xml", voc_xml([("a", 0, (1, 1, 11, 11))]))
    write(tmp_path / "zero.xml", voc_xml([("a", 0, (1, 1, 11, 11)), ("a", 0, (5, 5, 5, 9))]))
    write(tmp_path / "neg.xml", voc_xml([("a", 0, (9, 5, 4, 9))]))
    write(tmp_path / "nan.xml", voc_xml([("a", 0, ("nan", 5, 4, 9))]))
    write(tmp_path / "out.xml", voc_xml([("a", 0, (600, 5, 700, 9))]))
    with pytest.warns(AnnotationWarning, match="dropped 4 degenerate boxes of 6") as rec:
        b = datasets.load_voc(tmp_path)
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert (
        "zero or negative size: 2" in msg and "NaN or infinite coordinate: 1" in msg and "outside the image: 1" in msg
    )
    assert "nan.xml" in msg  # the first few files are named
    assert len(b) == 2
    # strict: the first bad box raises, with its file and line
    with pytest.raises(AnnotationError, match=r"nan\.xml:4: degenerate box \(a NaN") as exc:
        datasets.load_voc(tmp_path, strict=True)
    assert exc.value.path.endswith("nan.xml") and exc.value.line == 4


def test_voc_border_tolerance(tmp_path):
    # VOC coordinates are 1-based: xmax == width is inside; 1 px beyond is tolerated.
    write(tmp_path / "a.xml", voc_xml([("a", 0, (1, 1, 640, 480)), ("a", 0, (0, 0, 641, 481))]))
    assert len(datasets.load_voc(tmp_path, strict=True)) == 2


@pytest.mark.parametrize(
    "text, line, what",
    [
        ("<annotation>\n<size><width>5</width>\n</annotation>\n", 3, "not well-formed XML"),
        ("<annotation><object>", 1, "not well-formed XML"),
        ("", 1, "not well-formed XML"),
        ("<notvoc/>", 1, "not a Pascal VOC annotation"),
        (voc_xml([("a", 0, (1, 1, "x1", 5))]), 4, r"object 1 has <xmax>x1</xmax>, not a number"),
        ("<annotation>\n<object><name>a</name></object>\n</annotation>", 2, "object 1 has no <bndbox>"),
        ("<annotation>\n\n<object><bndbox><xmin>1</xmin></bndbox></object></annotation>", 3, "object 1 has no <name>"),
        (
            "<annotation><object><name>a</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>3</xmax></bndbox></object></annotation>",
            1,
            "has no <ymax>",
        ),
    ],
)
def test_voc_malformed_files(tmp_path, text, line, what):
    write(tmp_path / "good.xml", voc_xml([("a", 0, (1, 1, 11, 11))]))
    bad = write(tmp_path / "z_bad.xml", text)
    with pytest.raises(AnnotationError, match=f"z_bad.xml:{line}: .*{what}") as exc:
        datasets.load_voc(tmp_path)
    assert exc.value.path == str(bad) and exc.value.line == line
    assert "strict=False" in str(exc.value)  # the message says how to skip it
    with pytest.warns(AnnotationWarning, match=r"skipped 1 malformed entries in 1 files: .*z_bad.xml"):
        b = datasets.load_voc(tmp_path, strict=False)
    assert len(b) == 1 and b.n_images == 1


def test_voc_unreadable_and_binary_files(tmp_path):
    write(tmp_path / "good.xml", voc_xml([("a", 0, (1, 1, 11, 11))]))
    (tmp_path / "binary.xml").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(AnnotationError, match="binary.xml"):
        datasets.load_voc(tmp_path)
    with pytest.warns(AnnotationWarning, match="binary.xml"):
        assert len(datasets.load_voc(tmp_path, strict=False)) == 1


def test_voc_missing_size_read_from_the_image(tmp_path):
    ann = tmp_path / "Annotations"
    write(ann / "a.xml", voc_xml([("a", 0, (1, 1, 11, 21))], size=None, filename="a.png"))
    write(ann / "b.xml", voc_xml([("a", 0, (1, 1, 11, 21))], size=(0, 0), filename="b.png"))
    (tmp_path / "JPEGImages").mkdir()
    write_blank_png(str(tmp_path / "JPEGImages" / "a.png"), 300, 200)
    write_blank_png(str(ann / "b.png"), 50, 40)
    b = datasets.load_voc(ann)
    np.testing.assert_array_equal(b.image_wh, [[300, 200], [50, 40]])
    # no image to be found: a warning, NaN sizes, and letterbox() refuses
    write(ann / "c.xml", voc_xml([("a", 0, (1, 1, 11, 21))], size=None, filename="missing.png"))
    with pytest.warns(AnnotationWarning, match="1 files have no image size"):
        b = datasets.load_voc(ann)
    assert np.isnan(b.image_wh[2]).all()
    with pytest.raises(ValueError, match="letterbox.* 1 boxes have none; the first is in .*c.xml"):
        b.letterbox(640)
    assert len(b[np.isfinite(b.image_wh).all(1)].letterbox(640)) == 2


def test_voc_no_files(tmp_path):
    with pytest.raises(ValueError, match="no .xml files"):
        datasets.load_voc(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        datasets.load_voc(tmp_path / "nope")


# --- COCO ---------------------------------------------------------------------------------------------------


def test_coco_basic(tmp_path):
    doc = coco_doc(
        [
            {"image_id": 1, "category_id": 3, "bbox": [10, 20, 30.5, 40], "iscrowd": 0},
            {"image_id": 2, "category_id": 1, "bbox": [0, 0, 100, 50], "iscrowd": 1},
            {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]},
        ],
        images=((1, 640, 480), (2, 300, 200), (3, 100, 100)),
    )
    path = write(tmp_path / "instances.json", json.dumps(doc))
    b = datasets.load_coco(path)
    assert len(b) == 3 and b.n_images == 3 and b.format == "coco"
    assert b.class_names == ("person", "car")
    np.testing.assert_array_equal(b.wh, [[30.5, 40], [100, 50], [3, 4]])
    np.testing.assert_array_equal(b.image_wh, [[640, 480], [300, 200], [640, 480]])
    np.testing.assert_array_equal(b.class_id, [1, 0, 0])
    np.testing.assert_array_equal(b.crowd, [False, True, False])
    assert b.files == ("000001.jpg", "000002.jpg", "000003.jpg")
    assert len(b.filter(drop_crowd=True)) == 2


@pytest.mark.parametrize("use_orjson", [False, True])
def test_coco_invalid_json_names_the_line(tmp_path, monkeypatch, use_orjson):
    if use_orjson:
        pytest.importorskip("orjson")
    else:
        monkeypatch.setitem(sys.modules, "orjson", None)  # import fails: the json module is used
    path = write(tmp_path / "bad.json", '{"images": [],\n "annotations": [\n {"bbox": [1, 2,, 3]}]}')
    with pytest.raises(AnnotationError, match=r"bad.json:3: not valid json") as exc:
        datasets.load_coco(path)
    assert exc.value.line == 3
    # invalid json raises even with strict=False: there is nothing else to load
    with pytest.raises(AnnotationError):
        datasets.load_coco(path, strict=False)


def test_coco_not_a_detection_file(tmp_path):
    path = write(tmp_path / "x.json", json.dumps([1, 2, 3]))
    with pytest.raises(AnnotationError, match="not a COCO detection file"):
        datasets.load_coco(path)


@pytest.mark.parametrize(
    "ann, what",
    [
        (
            {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3]},
            r"annotations\[1\] \(id 2\) has a bbox that is not 4 numbers",
        ),
        ({"image_id": 1, "category_id": 1, "bbox": [1, 2, None, 4]}, "not 4 numbers"),
        ({"image_id": 1, "category_id": 1}, "has no 'bbox'"),
        ({"image_id": 9, "category_id": 1, "bbox": [1, 2, 3, 4]}, "refers to image id 9, which is not in 'images'"),
        ({"image_id": 1, "category_id": 7, "bbox": [1, 2, 3, 4]}, "category_id 7, which is not in 'categories'"),
    ],
)
def test_coco_malformed_entries(tmp_path, ann, what):
    good = {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}
    path = write(tmp_path / "c.json", json.dumps(coco_doc([good, ann])))
    with pytest.raises(AnnotationError, match=what):
        datasets.load_coco(path)
    with pytest.warns(AnnotationWarning, match="skipped 1 malformed entries"):
        b = datasets.load_coco(path, strict=False)
    assert len(b) == 1


def test_coco_degenerate_boxes(tmp_path):
    anns = [
        {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]},
        {"image_id": 1, "category_id": 1, "bbox": [1, 2, 0, 4]},
        {"image_id": 1, "category_id": 1, "bbox": [630, 2, 30, 4]},
        {"image_id": 1, "category_id": 1, "bbox": [-5, 2, 3, 4]},
    ]
    path = write(tmp_path / "c.json", json.dumps(coco_doc(anns)))
    with pytest.warns(
        AnnotationWarning, match=r"dropped 3 degenerate boxes of 4 \(zero or negative size: 1, outside the image: 2\)"
    ):
        assert len(datasets.load_coco(path)) == 1
    with pytest.raises(AnnotationError, match=r"annotations\[1\] \(id 2\) has bbox \[1, 2, 0, 4\]"):
        datasets.load_coco(path, strict=True)


# --- YOLO ---------------------------------------------------------------------------------------------------------


def test_yolo_basic(tmp_path):
    data = yolo_dataset(
        tmp_path,
        labels={
            "img1": "0 0.5 0.5 0.25 0.5\n\n1 0.1 0.2 0.1 0.2\n",
            "img2": "1 0.5 0.5 1.0 1.0\n",
            "img3": "",  # empty: background
        },
        sizes={"img1": (640, 480), "img2": (200, 100), "img3": (50, 50), "img4": (60, 60)},  # img4: no label file
    )
    b = datasets.load_yolo(data)
    assert len(b) == 3 and b.n_images == 4 and b.format == "yolo"
    assert b.class_names == ("a", "b")
    np.testing.assert_allclose(b.wh, [[160, 240], [64, 96], [200, 100]])
    np.testing.assert_array_equal(b.image_wh, [[640, 480], [640, 480], [200, 100]])
    np.testing.assert_array_equal(b.class_id, [0, 1, 1])
    assert os.path.basename(b.files[0]) == "img1.png"
    # the same through every way of pointing at it
    for path in (tmp_path, tmp_path / "labels" / "train", tmp_path / "images" / "train"):
        other = datasets.load_yolo(path)
        np.testing.assert_allclose(np.sort(other.wh, 0), np.sort(b.wh, 0))
    # a .txt list of images in data.yaml
    write(tmp_path / "list.txt", "./images/train/img1.png\nimages/train/img2.png\n")
    write(tmp_path / "list.yaml", "path: .\ntrain: list.txt\nnames: [a, b]\n")
    assert len(datasets.load_yolo(tmp_path / "list.yaml")) == 3
    with pytest.raises(AnnotationError, match="has no 'test' split"):
        datasets.load_yolo(data, split="test")


@pytest.mark.parametrize(
    "text, line, what",
    [
        ("0 0.5 0.5 0.5\n", 1, "expected 5 fields"),
        ("0 0.5 0.5 0.5 0.5\n0 0.5 0.5 0.5 0.5 0.1\n", 2, "expected 5 fields .*got 6"),
        ("0 0.5 0.5 abc 0.5\n", 1, "'abc' is not a number"),
        ("\n\n-1 0.5 0.5 0.5 0.5\n", 3, "the class must be a non-negative integer"),
        ("0.5 0.5 0.5 0.5 0.5\n", 1, "the class must be a non-negative integer"),
        ("7 0.5 0.5 0.5 0.5\n", 1, "class 7 is out of range: the dataset names 2 classes"),
    ],
)
def test_yolo_malformed_lines(tmp_path, text, line, what):
    data = yolo_dataset(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n", "b": text}, {"a": (100, 100), "b": (100, 100)})
    with pytest.raises(AnnotationError, match=f"b.txt:{line}: {what}") as exc:
        datasets.load_yolo(data)
    assert exc.value.line == line
    with pytest.warns(AnnotationWarning, match="skipped 1 malformed entries in 1 files: .*b.txt"):
        b = datasets.load_yolo(data, strict=False)
    assert len(b) == 1 and b.n_images == 1


def test_yolo_huge_class_id_without_names(tmp_path):
    # Without a data.yaml every class up to the largest id gets a name: an id of 125 million
    # (a corrupt line, found by the loader fuzzer) once took 35 s and gigabytes to name them all.
    yolo_dataset(
        tmp_path,
        {"a": "3 0.5 0.5 0.5 0.5\n", "b": "0 0.5 0.5 0.5 0.5\n125603839 0.5 0.5 0.2 0.2\n"},
        {"a": (100, 100), "b": (100, 100)},
    )
    labels = tmp_path / "labels" / "train"
    with pytest.raises(AnnotationError, match=r"b.txt:2: class 125603839 is out of range: without class names"):
        datasets.load_yolo(labels)
    with pytest.warns(AnnotationWarning, match="skipped 1 malformed entries in 1 files: .*b.txt"):
        b = datasets.load_yolo(labels, strict=False)
    assert len(b) == 1 and b.class_names == ("0", "1", "2", "3")
    # the largest id that is read
    write(labels / "b.txt", f"{datasets._yolo.MAX_UNNAMED_CLASSES - 1} 0.5 0.5 0.2 0.2\n")
    assert len(datasets.load_yolo(labels).class_names) == datasets._yolo.MAX_UNNAMED_CLASSES


def test_yolo_degenerate_boxes(tmp_path):
    labels = {"a": "0 0.5 0.5 0.5 0.5\n0 0.5 0.5 0 0.5\n0 1.5 0.5 0.2 0.2\n0 0.5 0.5 nan 0.2\n0 0.95 0.5 0.2 0.2\n"}
    data = yolo_dataset(tmp_path, labels, {"a": (100, 100)})
    with pytest.warns(AnnotationWarning, match=r"dropped 4 degenerate boxes of 5 .* the first, .*a.txt:2") as rec:
        b = datasets.load_yolo(data)
    assert len(rec) == 1 and len(b) == 1
    with pytest.raises(AnnotationError, match=r"a.txt:2: degenerate box \(zero or negative size\)"):
        datasets.load_yolo(data, strict=True)


def test_yolo_polygons_duplicates_and_orphans(tmp_path):
    labels = {
        "a": "1 0.1 0.2 0.5 0.2 0.3 0.6\n0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n",  # a polygon, a duplicate
        "orphan": "0 0.5 0.5 0.5 0.5\n",
    }
    data = yolo_dataset(tmp_path, labels, {"a": (200, 100)})
    with pytest.warns(AnnotationWarning) as rec:
        b = datasets.load_yolo(data)
    messages = " | ".join(str(r.message) for r in rec)
    assert "1 label files have no image and were ignored: " in messages and "orphan.txt" in messages
    assert "removed 1 duplicate label lines in 1 files" in messages
    np.testing.assert_allclose(b.wh, [[80, 40], [40, 20]])
    with pytest.raises(AnnotationError, match="orphan.txt: this label file has no image"):
        datasets.load_yolo(data, strict=True)


def test_yolo_labels_without_images_say_why_images_are_needed(tmp_path):
    labels = tmp_path / "coco" / "labels" / "train2017"
    write(labels / "a.txt", "0 0.5 0.5 0.5 0.5\n")
    for path in (labels, tmp_path / "coco"):
        with pytest.raises(ValueError) as info:
            datasets.load_yolo(path)
        message = str(info.value)
        assert message.startswith(f"no images found for {labels.parent}")
        assert ": a YOLO dataset needs its images to know the boxes' pixel sizes" in message
        assert "pixel sizes" in message and "only the image headers are read" in message
        assert "images/<split>/a.jpg" in message
    (tmp_path / "coco" / "images" / "train2017").mkdir(parents=True)  # the folder, empty
    with pytest.raises(ValueError, match="a YOLO dataset needs its images to know the boxes' pixel sizes"):
        datasets.load_yolo(labels)


def test_yolo_bad_images(tmp_path):
    data = yolo_dataset(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n"}, {"a": (10, 10)})
    (tmp_path / "images" / "train" / "b.jpg").write_bytes(b"not an image at all")
    with pytest.raises(AnnotationError, match=r"b.jpg: cannot read the image size"):
        datasets.load_yolo(data)
    with pytest.warns(AnnotationWarning, match="b.jpg"):
        assert datasets.load_yolo(data, strict=False).n_images == 1


def test_yolo_layout_errors(tmp_path):
    write(tmp_path / "data.yaml", "path: nowhere\ntrain: images\n")
    with pytest.raises(AnnotationError, match="the dataset root .*nowhere.* does not exist"):
        datasets.load_yolo(tmp_path / "data.yaml")
    write(tmp_path / "data.yaml", "train: images/missing\n")
    with pytest.raises(AnnotationError, match="neither a folder nor a .txt list"):
        datasets.load_yolo(tmp_path / "data.yaml")
    write(tmp_path / "data.yaml", "train: [unclosed\n")
    with pytest.raises(AnnotationError, match="data.yaml"):
        datasets.load_yolo(tmp_path / "data.yaml")
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="is not a YOLO dataset"):
        datasets.load_yolo(tmp_path / "other")


# --- image headers --------------------------------------------------------------------------------------------------


def _jpeg(width, height, orientation=None):
    out = b"\xff\xd8"
    if orientation is not None:
        tiff = (
            b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + struct.pack(">HHIHH", 274, 3, 1, orientation, 0)
        )
        tiff += struct.pack(">I", 0)
        app1 = b"Exif\x00\x00" + tiff
        out += b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1
    out += b"\xff\xdb" + struct.pack(">H", 4) + b"\x00\x00"  # a segment to skip
    out += b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return out + b"\xff\xd9"


def test_image_headers(tmp_path):
    cases = {
        "a.png": None,
        "b.jpg": _jpeg(640, 427),
        "c.jpg": _jpeg(640, 427, orientation=6),  # rotated 90 degrees: displayed as 427 x 640
        "d.jpg": _jpeg(640, 427, orientation=3),
        "e.gif": b"GIF89a" + struct.pack("<HH", 33, 44) + b"\x00" * 8,
        "f.bmp": b"BM" + b"\x00" * 12 + struct.pack("<Iii", 40, 55, -66) + b"\x00" * 8,
        "g.webp": b"RIFF\x00\x00\x00\x00WEBPVP8X"
        + b"\x00" * 8
        + (99).to_bytes(3, "little")
        + (49).to_bytes(3, "little"),
        "h.tif": b"II*\x00"
        + struct.pack("<I", 8)
        + struct.pack("<H", 2)
        + struct.pack("<HHIHH", 256, 3, 1, 77, 0)
        + struct.pack("<HHII", 257, 4, 1, 88),
    }
    expected = {
        "a.png": (300, 7),
        "b.jpg": (640, 427),
        "c.jpg": (427, 640),
        "d.jpg": (640, 427),
        "e.gif": (33, 44),
        "f.bmp": (55, 66),
        "g.webp": (100, 50),
        "h.tif": (77, 88),
    }
    for name, data in cases.items():
        if data is None:
            write_blank_png(str(tmp_path / name), 300, 7)
        else:
            (tmp_path / name).write_bytes(data)
        assert image_size(str(tmp_path / name)) == expected[name], name
    (tmp_path / "trunc.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(datasets.ImageSizeError):
        image_size(str(tmp_path / "trunc.png"))
    (tmp_path / "trunc.jpg").write_bytes(_jpeg(10, 10)[:8])
    with pytest.raises(datasets.ImageSizeError, match="trunc.jpg"):
        image_size(str(tmp_path / "trunc.jpg"))


# --- Boxes ---------------------------------------------------------------------------------------------------------


def make_boxes():
    return Boxes(
        wh=[[10, 20], [30, 40], [2, 2], [100, 50]],
        image_wh=[[640, 480], [320, 640], [640, 480], [100, 100]],
        image_id=[0, 1, 0, 2],
        class_id=[0, 1, 2, 1],
        class_names=("a", "b", "c"),
        files=("x", "y", "z"),
        difficult=[False, True, False, False],
        crowd=[False, False, True, False],
    )


def test_boxes_scaling():
    b = make_boxes()
    np.testing.assert_allclose(b.letterbox(640), [[10, 20], [30, 40], [2, 2], [640, 320]])
    np.testing.assert_allclose(b.letterbox(320), b.wh * (320 / b.image_wh.max(1))[:, None])
    np.testing.assert_allclose(b.stretch(300, 200), b.wh * np.array([300, 200]) / b.image_wh)
    np.testing.assert_allclose(b.stretch(416), b.wh * 416 / b.image_wh)
    np.testing.assert_allclose(b.normalized(), b.wh / b.image_wh)
    with pytest.raises(ValueError, match="img_size must be positive"):
        b.letterbox(0)
    with pytest.raises(TypeError):
        b.letterbox("640")


def test_boxes_filter_and_index():
    b = make_boxes()
    assert len(b.filter(["b"])) == 2 and len(b.filter([0, "c"])) == 2 and len(b.filter("a")) == 1
    assert len(b.filter(min_size=10)) == 3
    assert len(b.filter(drop_difficult=True)) == 3 and len(b.filter(drop_crowd=True)) == 3
    f = b.filter(["b"], drop_difficult=True)
    assert len(f) == 1 and f.class_names == b.class_names and f.files == b.files
    np.testing.assert_array_equal(f.wh, [[100, 50]])
    with pytest.raises(ValueError, match="unknown class name 'dog': the classes are 'a', 'b', 'c'"):
        b.filter(["dog"])
    with pytest.raises(ValueError, match="class id 5 is out of range"):
        b.filter([5])
    assert len(b[1:3]) == 2 and len(b[[0]]) == 1 and len(b[np.array([True, False, True, False])]) == 2
    assert b.class_counts() == {"a": 1, "b": 2, "c": 1}
    assert repr(b).startswith("Boxes(4 boxes in 3 images, 3 classes")


def test_boxes_are_immutable():
    b = make_boxes()
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.wh = np.zeros((4, 2))
    with pytest.raises(ValueError):
        b.wh[0, 0] = 5.0
    with pytest.raises(ValueError, match=r"image_wh must have shape \(4, 2\)"):
        Boxes(wh=np.ones((4, 2)), image_wh=np.ones((3, 2)))
    with pytest.raises(ValueError, match="class_id must index class_names"):
        Boxes(wh=np.ones((1, 2)), image_wh=[10, 10], class_id=[3], class_names=("a",))


# --- load() and the demo dataset ------------------------------------------------------------------------------------


def test_demo_dataset_round_trips_through_every_format(tmp_path):
    images = demo_images(40, seed=3)
    wh, img = sizes_of(images)
    for fmt in ("voc", "coco", "yolo"):
        path = make_demo(str(tmp_path / fmt), fmt, n_images=40, seed=3)
        assert datasets.detect_format(path) == fmt
        assert datasets.detect_format(tmp_path / fmt) == fmt
        b = datasets.load(path)
        assert b.format == fmt and b.n_images == 40
        np.testing.assert_allclose(b.wh, wh, atol=1e-3)  # YOLO stores 6 decimals
        np.testing.assert_array_equal(b.image_wh, img)
        b2 = datasets.load(tmp_path / fmt)
        np.testing.assert_array_equal(b2.wh, b.wh)


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="format must be 'auto' or one of"):
        datasets.load(tmp_path, format="pascal")
    with pytest.raises(ValueError, match="cannot find annotations"):
        datasets.load(tmp_path)
    write(tmp_path / "x.csv", "a,b")
    with pytest.raises(ValueError, match="cannot tell the dataset format"):
        datasets.load(tmp_path / "x.csv")


# --- the real annotation files ---------------------------------------------------------------------------------------


def _same_sizes(a: np.ndarray, b: np.ndarray, atol: float) -> None:
    a = a[np.lexsort(np.round(a, 2).T[::-1])]  # rounded keys: float32 and float64 sort alike
    b = b[np.lexsort(np.round(b, 2).T[::-1])]
    np.testing.assert_allclose(a, b, atol=atol)


@needs_raw
def test_real_coco128_val2017_json():
    b = datasets.load_coco(RAW / "coco128_val2017_json" / "instances_val2017.json")
    assert len(b) == 939 and b.n_images == 128 and len(b.class_names) == 80
    assert int(b.crowd.sum()) == 10
    with np.load(DATA_DIR / "boxes" / "coco128_val2017_json.npz") as z:
        _same_sizes(b.wh, z["wh"].astype(np.float64), atol=1e-4)


@needs_raw
@pytest.mark.parametrize("name, count, images", [("raccoon", 217, 200), ("kangaroo", 266, 164), ("deepforest", 951, 4)])
def test_real_voc(name, count, images):
    b = datasets.load(RAW / f"{name}_voc")
    assert b.format == "voc" and len(b) == count and b.n_images == images
    with np.load(DATA_DIR / "boxes" / f"{name}.npz") as z:
        _same_sizes(b.wh, z["wh"].astype(np.float64), atol=0)
        _same_sizes(b.image_wh, z["img_wh"].astype(np.float64), atol=0)


@needs_raw
def test_real_coco128_yolo(tmp_path):
    src = RAW / "coco128_yolo"
    root = tmp_path / "coco128"
    shutil.copytree(src / "labels", root / "labels")
    shutil.copy(src / "data.yaml", root / "data.yaml")
    with open(src / "image_sizes.csv", newline="") as f:
        for row in csv.DictReader(f):
            p = root / "images" / row["image"]
            p.parent.mkdir(parents=True, exist_ok=True)
            write_blank_png(str(p), int(row["width"]), int(row["height"]))
    # two label files of train2017 have no image (ignored, as Ultralytics does)
    with pytest.warns(AnnotationWarning, match="2 label files have no image"):
        b = datasets.load(root)
    assert b.format == "yolo" and len(b) == 929 and b.n_images == 128 and len(b.class_names) == 80
    with np.load(DATA_DIR / "boxes" / "coco128.npz") as z:
        _same_sizes(b.wh, z["wh"].astype(np.float64), atol=1e-3)
    val = datasets.load_yolo(root / "data.yaml", split="val")
    assert val.n_images == 128


@needs_raw
def test_real_coco_json_of_voc():
    b = datasets.load(RAW / "voc_coco_json" / "pascal_train2007.json")
    assert len(b) == 7844 and len(b.class_names) == 20


@pytest.fixture(scope="module")
def widerface(tmp_path_factory):
    archive = RAW / "widerface_voc.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} is absent")
    folder = tmp_path_factory.mktemp("widerface")
    with tarfile.open(archive) as tar:
        if sys.version_info >= (3, 12):
            tar.extractall(folder, filter="data")
        else:
            tar.extractall(folder)
    return folder


@needs_raw
def test_real_widerface_voc(widerface):
    # 16,106 files, 199,132 boxes, 42 of them with zero or negative size
    with pytest.warns(AnnotationWarning, match=r"dropped 42 degenerate boxes of 199,132 \(zero or negative size: 42\)"):
        b = datasets.load_voc(widerface)
    assert b.n_images == 16106 and len(b) == 199132 - 42
    first = widerface / "WIDER_train_annotations" / "0_Parade_Parade_0_452.xml"
    with pytest.raises(
        AnnotationError, match=r"0_Parade_Parade_0_452\.xml:1: degenerate box \(zero or negative size\)"
    ):
        datasets.load_voc([first, widerface / "WIDER_val_annotations"], strict=True)


# --- nothing crashes: mutated files give a result or an AnnotationError --------------------------------------------

_VALID_VOC = voc_xml([("dog", 0, (10, 20, 110, 70)), ("cat", 1, (5, 5, 50, 60))])
_VALID_LABELS = "0 0.5 0.5 0.25 0.5\n1 0.1 0.2 0.1 0.2\n"


@st.composite
def mutated(draw, text: str):
    """``text`` with a slice deleted, replaced by random characters, or duplicated."""
    i = draw(st.integers(0, len(text)))
    j = draw(st.integers(i, min(len(text), i + 40)))
    kind = draw(st.sampled_from(["delete", "replace", "insert", "duplicate"]))
    junk = draw(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12))
    if kind == "delete":
        return text[:i] + text[j:]
    if kind == "replace":
        return text[:i] + junk + text[j:]
    if kind == "insert":
        return text[:i] + junk + text[i:]
    return text[:j] + text[i:j] + text[j:]


def _load_or_annotation_error(load, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationWarning)
        try:
            return load(*args, **kwargs)
        except AnnotationError:
            return None


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(text=mutated(_VALID_VOC), strict=st.sampled_from([None, True, False]))
def test_fuzz_voc_never_crashes(text, strict):
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp) / "a.xml", voc_xml([("dog", 0, (1, 1, 9, 9))]))
        write(Path(tmp) / "b.xml", text)
        b = _load_or_annotation_error(datasets.load_voc, tmp, strict=strict)
        if strict is False:
            assert b is not None and len(b) >= 1  # the good file is always loaded
        if b is not None:
            assert np.isfinite(b.wh).all() and (b.wh > 0).all()


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(text=mutated(_VALID_LABELS), strict=st.sampled_from([None, True, False]))
def test_fuzz_yolo_never_crashes(text, strict):
    with tempfile.TemporaryDirectory() as tmp:
        data = yolo_dataset(Path(tmp), {"a": "0 0.5 0.5 0.5 0.5\n", "b": text}, {"a": (10, 10), "b": (20, 10)})
        b = _load_or_annotation_error(datasets.load_yolo, data, strict=strict)
        if strict is False:
            assert b is not None and len(b) >= 1
        if b is not None:
            assert np.isfinite(b.wh).all() and (b.wh > 0).all()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(
    where=st.sampled_from(["doc", "images", "image", "annotations", "annotation", "bbox", "categories", "category"]),
    key=st.sampled_from(
        [
            "id",
            "image_id",
            "category_id",
            "bbox",
            "width",
            "height",
            "iscrowd",
            "name",
            "images",
            "annotations",
            "categories",
        ]
    ),
    value=_json_values,
    strict=st.sampled_from([None, True, False]),
)
def test_fuzz_coco_never_crashes(where, key, value, strict):
    doc = coco_doc(
        [
            {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]},
            {"image_id": 1, "category_id": 3, "bbox": [5, 6, 7, 8]},
        ]
    )
    if where == "doc":
        doc[key] = value
    elif where in ("images", "annotations", "categories"):
        doc[where] = value
    elif where == "bbox":
        doc["annotations"][1]["bbox"] = value
    else:
        target = {"image": doc["images"][0], "annotation": doc["annotations"][1], "category": doc["categories"][1]}[
            where
        ]
        target[key] = value
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp) / "c.json", json.dumps(doc))
        b = _load_or_annotation_error(datasets.load_coco, path, strict=strict)
        if b is not None:
            assert np.isfinite(b.wh).all() and (b.wh > 0).all()
