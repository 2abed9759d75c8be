"""Malformed annotation files (issue 7): every loader, on hostile numbers, structures, encodings,
entity bombs, deep nesting and broken image headers, either loads finite positive boxes or raises a
ValueError (AnnotationError/ImageSizeError) that names the file; never another exception, a hang or
a warning other than its own AnnotationWarning. Character-level mutations of valid files are in
test_datasets.py (test_fuzz_*_never_crashes); these are the structural cases.
"""

from __future__ import annotations

import atexit
import shutil
import struct
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastanchor import datasets
from fastanchor.datasets import AnnotationWarning

# ---------------------------------------------------------------------------------------------
# The contract


def check_load(load, *args, seconds: float = 30.0, **kwargs):
    """The loader's result (or None after a clean ValueError), asserting the contract."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            boxes = load(*args, **kwargs)
        except ValueError as exc:  # AnnotationError and ImageSizeError are ValueErrors
            assert len(str(exc)) > 10
            boxes = None
    assert time.perf_counter() - start < seconds, "the loader took too long"
    for w in caught:
        assert issubclass(w.category, AnnotationWarning), f"a {w.category.__name__} leaked: {w.message}"
    if boxes is not None:
        assert boxes.wh.dtype == np.float64 and boxes.wh.shape == (len(boxes), 2)
        assert np.isfinite(boxes.wh).all() and (boxes.wh > 0).all()
        assert (boxes.class_id >= 0).all() and (boxes.image_id >= 0).all()
    return boxes


#: Numbers as annotation tools write them, and as they should not.
HOSTILE_NUMBERS = [
    "30",
    "30.5",
    " 30 ",
    "3e1",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e400",
    "-1e400",
    "9" * 400,
    "1e-400",
    "4.9e-324",
    "-5",
    "0",
    "-0",
    "0x10",
    "0x1p-1",
    "30abc",
    "3_0",
    "",
    " ",
    "\u0663\u0660",
    "\uff13\uff10",
    "1,5",
    "+30",
    "30.",
    ".5",
    "1e",
    "--1",
    "\x00",
    "30\x00",
    "١e٢",
]
bad_number = (
    st.sampled_from(HOSTILE_NUMBERS)
    | st.floats(allow_nan=True, allow_infinity=True).map(repr)
    | st.integers(-(10**30), 10**30).map(str)
)


def tmpdir() -> Path:
    """A fresh folder (hypothesis examples cannot use tmp_path), removed when the tests end."""
    path = tempfile.mkdtemp(prefix="fa-fuzz-")
    atexit.register(shutil.rmtree, path, True)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Pascal VOC

VOC_FIELDS = ("width", "height", "xmin", "ymin", "xmax", "ymax")


def voc_doc(values: dict, *, drop=(), extra="", name="dog", difficult="0") -> str:
    v = {"width": "100", "height": "80", "xmin": "1", "ymin": "2", "xmax": "30", "ymax": "40", **values}
    size = "".join(f"<{k}>{v[k]}</{k}>" for k in ("width", "height") if k not in drop)
    box = "".join(f"<{k}>{v[k]}</{k}>" for k in ("xmin", "ymin", "xmax", "ymax") if k not in drop)
    return (
        f"<annotation><size>{size}</size><object><name>{name}</name><difficult>{difficult}</difficult>"
        f"<bndbox>{box}</bndbox>{extra}</object></annotation>"
    )


def _xml_text(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;")


@given(
    values=st.dictionaries(st.sampled_from(VOC_FIELDS), bad_number.map(_xml_text), max_size=3),
    drop=st.sets(st.sampled_from(VOC_FIELDS + ("size", "bndbox")), max_size=2),
    extra=st.sampled_from(["", "<bndbox><xmin>5</xmin></bndbox>", "<object><name>x</name></object>", "<pose/>"]),
    name=st.sampled_from(["dog", "", "\u00e9\u4e2d", "a" * 300]),
    difficult=st.sampled_from(["0", "1", "yes", "", "nan"]),
    strict=st.sampled_from([None, True, False]),
)
def test_fuzz_voc_structure(values, drop, extra, name, difficult, strict):
    folder = tmpdir()
    (folder / "good.xml").write_text(voc_doc({}))
    text = voc_doc(values, drop=drop, extra=extra, name=_xml_text(name), difficult=difficult)
    if "size" in drop:
        text = text.replace("<size>", "<sizes>").replace("</size>", "</sizes>")
    if "bndbox" in drop:
        text = text.replace("bndbox>", "box>")
    (folder / "z.xml").write_text(text, encoding="utf-8")
    boxes = check_load(datasets.load_voc, folder, strict=strict, workers=1)
    if strict is False:
        assert boxes is not None and len(boxes) >= 1  # the good file always loads


_LOL = "".join(f'<!ENTITY l{i + 1} "' + f"&l{i};" * 10 + '">' for i in range(9))
VOC_FILES = {
    "billion laughs": f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY l0 "lol">{_LOL}]>' + voc_doc({}, name="&l9;"),
    "quadratic blowup": '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "'
    + "x" * 50_000
    + '">]>'
    + voc_doc({}, name="&x;" * 2_000),
    "external entity": '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    + voc_doc({}, name="&x;"),
    "external dtd": '<?xml version="1.0"?><!DOCTYPE a SYSTEM "http://example.invalid/a.dtd">' + voc_doc({}),
    "deep nesting": "<annotation>" + "<a>" * 100_000 + "</a>" * 100_000 + "</annotation>",
    "deep objects": "<annotation>" + "<object>" * 5_000 + "</object>" * 5_000 + "</annotation>",
    "utf-16": voc_doc({}).encode("utf-16"),
    "utf-8 bom": b"\xef\xbb\xbf" + voc_doc({}).encode(),
    "declared utf-16, utf-8 bytes": '<?xml version="1.0" encoding="utf-16"?>' + voc_doc({}),
    "latin-1 bytes": voc_doc({}, name="\u00e9").encode("latin-1"),
    "unknown encoding": '<?xml version="1.0" encoding="klingon"?>' + voc_doc({}),
    "truncated": voc_doc({})[:57],
    "empty": "",
    "only whitespace": "  \n\t ",
    "binary": bytes(range(256)) * 4,
    "nul bytes": voc_doc({}).replace("<name>", "<name>\x00"),
    "wrong root": "<foo>" + voc_doc({}) + "</foo>",
    "two roots": voc_doc({}) + voc_doc({}),
    "cdata numbers": voc_doc({"xmax": "<![CDATA[30]]>"}),
    "comment in number": voc_doc({"xmax": "3<!-- x -->0"}),
    "processing instruction": '<?xml version="1.0"?><?evil x?>' + voc_doc({}),
    "attributes not text": voc_doc({}).replace("<xmax>30</xmax>", '<xmax value="30"/>'),
    "object without name": voc_doc({}).replace("<name>dog</name>", ""),
    "many objects": "<annotation><size><width>100</width><height>80</height></size>"
    + "<object><name>a</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
    * 20_000
    + "</annotation>",
}


@pytest.mark.parametrize("case", sorted(VOC_FILES))
@pytest.mark.parametrize("strict", [None, False])
def test_malformed_voc_files(case, strict):
    folder = tmpdir()
    data = VOC_FILES[case]
    (folder / "z.xml").write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    boxes = check_load(datasets.load_voc, folder, strict=strict, workers=1)
    if case == "external entity" and boxes is not None:
        assert "root:" not in " ".join(boxes.class_names)  # nothing was read from /etc/passwd


# ---------------------------------------------------------------------------------------------
# COCO json, with orjson and with the json module


@pytest.fixture(params=["json", "orjson"])
def json_backend(request, monkeypatch):
    if request.param == "orjson":
        pytest.importorskip("orjson")
    else:
        monkeypatch.setitem(sys.modules, "orjson", None)  # the import fails: the json module is used
    return request.param


def coco_text(bbox="[1, 2, 30, 40]", width="100", image_id="1", category_id="1", extra="") -> str:
    return (
        '{"images": [{"id": 1, "width": %s, "height": 80, "file_name": "a.jpg"}], '
        '"annotations": [{"id": 1, "image_id": %s, "category_id": %s, "bbox": %s, "iscrowd": 0}%s], '
        '"categories": [{"id": 1, "name": "a"}]}'
    ) % (width, image_id, category_id, bbox, extra)


_JSON_NUMBERS = [
    "30",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "1" + "0" * 400,
    "-1",
    "1e-400",
    "4.9e-324",
    "true",
    "null",
    '"30"',
    "[30]",
    "{}",
    "-0",
    "0",
    "1.7976931348623157e308",
]
COCO_FILES = {
    **{f"bbox width {v[:12]}": coco_text(bbox=f"[1, 2, {v}, 40]") for v in _JSON_NUMBERS},
    **{f"image width {v[:12]}": coco_text(width=v) for v in _JSON_NUMBERS},
    **{f"image_id {v[:12]}": coco_text(image_id=v) for v in _JSON_NUMBERS},
    **{f"category_id {v[:12]}": coco_text(category_id=v) for v in _JSON_NUMBERS},
    "bbox of 3": coco_text(bbox="[1, 2, 3]"),
    "bbox of 5": coco_text(bbox="[1, 2, 3, 4, 5]"),
    "bbox a string": coco_text(bbox='"1,2,3,4"'),
    "bbox nested": coco_text(bbox="[[1, 2], [3, 4]]"),
    "annotation a list": coco_text(extra=", [1, 2]"),
    "annotation null": coco_text(extra=", null"),
    "deep array": "[" * 100_000 + "]" * 100_000,
    "deep in images": '{"images": ' + "[" * 5_000 + "]" * 5_000 + ', "annotations": []}',
    "deep in bbox": coco_text(bbox="[" * 3_000 + "]" * 3_000),
    "top-level array": "[1, 2, 3]",
    "top-level string": '"coco"',
    "images not a list": '{"images": {}, "annotations": []}',
    "no annotations": '{"images": []}',
    "empty": "",
    "utf-8 bom": "\ufeff" + coco_text(),
    "utf-16": coco_text().encode("utf-16"),
    "latin-1": coco_text().replace('"a.jpg"', '"\u00e9.jpg"').encode("latin-1"),
    "lone surrogate": coco_text().replace('"a.jpg"', '"\\ud800.jpg"'),
    "truncated": coco_text()[:60],
    "duplicate keys": coco_text().replace('"bbox"', '"bbox": [1, 2, 3, 4], "bbox"'),
    "huge id": coco_text(image_id="1" + "0" * 5000),
    "many annotations": coco_text(extra=', {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}' * 20_000),
}


@pytest.mark.parametrize("case", sorted(COCO_FILES))
@pytest.mark.parametrize("strict", [None, False])
def test_malformed_coco_files(case, strict, json_backend):
    path = tmpdir() / "c.json"
    data = COCO_FILES[case]
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    check_load(datasets.load_coco, path, strict=strict)


@given(
    number=bad_number,
    where=st.sampled_from(["bbox0", "bbox2", "width", "image_id", "category_id", "iscrowd"]),
    strict=st.sampled_from([None, True, False]),
    backend=st.sampled_from(["json", "orjson"]),
)
def test_fuzz_coco_numbers(number, where, strict, backend):
    token = number if number and number.strip() else '""'
    if where.startswith("bbox"):
        parts = ["1", "2", "30", "40"]
        parts[int(where[-1])] = token
        text = coco_text(bbox="[" + ", ".join(parts) + "]")
    elif where == "iscrowd":
        text = coco_text().replace('"iscrowd": 0', f'"iscrowd": {token}')
    else:
        text = coco_text(**{where: token})
    path = tmpdir() / "c.json"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    saved = sys.modules.get("orjson", "absent")
    try:
        if backend == "json":
            sys.modules["orjson"] = None
        check_load(datasets.load_coco, path, strict=strict)
    finally:
        if saved == "absent":
            sys.modules.pop("orjson", None)
        else:
            sys.modules["orjson"] = saved


# ---------------------------------------------------------------------------------------------
# YOLO labels and image headers


def bmp(width: int, height: int) -> bytes:
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHH", 40, width, height, 1, 24) + bytes(24)


def png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def jpeg(width: int, height: int, orientation: int = 1) -> bytes:
    exif = (
        b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01"
        + struct.pack(">H", orientation)
        + b"\x00\x00\x00\x00\x00\x00"
    )
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app1 + sof + b"\xff\xd9"


def yolo_folder(label: bytes, image: bytes, suffix=".bmp") -> Path:
    root = tmpdir()
    (root / "images").mkdir()
    (root / "labels").mkdir()
    (root / "images" / f"a{suffix}").write_bytes(image)
    (root / "labels" / "a.txt").write_bytes(label)
    (root / "images" / "good.bmp").write_bytes(bmp(64, 32))
    (root / "labels" / "good.txt").write_bytes(b"0 0.5 0.5 0.25 0.5\n")
    return root / "labels"


token = bad_number | st.sampled_from(["0", "0.5", "0.25", "1", "1.0"])


@given(
    lines=st.lists(st.lists(token, min_size=0, max_size=9).map(" ".join), min_size=0, max_size=4),
    sep=st.sampled_from(["\n", "\r\n", "\r", "\n\n", "\x0b", "\u2028"]),
    strict=st.sampled_from([None, True, False]),
)
def test_fuzz_yolo_lines(lines, sep, strict):
    labels = yolo_folder(sep.join(lines).encode("utf-8"), bmp(64, 32))
    boxes = check_load(datasets.load_yolo, labels, strict=strict, workers=1)
    if strict is False:
        assert boxes is not None and len(boxes) >= 1


@pytest.mark.parametrize(
    "line",
    ["30 30 30 30 30 30 30 30 inf", "0 0.1 0.1 inf 0.2 0.3 -inf", "0 1e308 0.5 1e308 0.5", "0 0.5 0.5 1e308 1e308"],
)
def test_yolo_infinite_polygons_are_dropped_without_a_numpy_warning(line):
    boxes = check_load(datasets.load_yolo, yolo_folder(line.encode(), bmp(64, 32)), workers=1)
    assert boxes is not None and len(boxes) == 1  # only the good file's box


def _mutations(data: bytes):
    return st.one_of(
        st.integers(0, len(data)).map(lambda i: data[:i]),  # truncated
        st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)).map(
            lambda t: data[: t[0]] + bytes([t[1]]) + data[t[0] + 1 :]
        ),  # one byte changed
        st.binary(max_size=64),
    )


IMAGES = {
    ".bmp": bmp(64, 32),
    ".png": png(64, 32),
    ".jpg": jpeg(64, 32, 6),
}


@given(data=st.data(), suffix=st.sampled_from(sorted(IMAGES)), strict=st.sampled_from([None, False]))
def test_fuzz_image_headers(data, suffix, strict):
    image = data.draw(_mutations(IMAGES[suffix]))
    labels = yolo_folder(b"0 0.5 0.5 0.25 0.5\n", image, suffix)
    boxes = check_load(datasets.load_yolo, labels, strict=strict, workers=1)
    if boxes is not None:
        assert np.isfinite(boxes.image_wh).all() and (boxes.image_wh > 0).all()
    try:
        w, h = datasets.image_size(str(labels.parent / "images" / f"a{suffix}"))
    except ValueError:
        return
    assert isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0


@pytest.mark.parametrize(
    "image",
    [
        bmp(0, 32),
        bmp(64, 0),
        bmp(2**31 - 1, -(2**31)),
        bmp(-64, 32),
        png(0, 0),
        png(2**32 - 1, 2**32 - 1),
        jpeg(0, 32),
        jpeg(65535, 65535, 8),
        jpeg(64, 32, 99),
        b"",
        b"BM",
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",
    ],
    ids=[
        "bmp w0",
        "bmp h0",
        "bmp huge",
        "bmp negative w",
        "png 0x0",
        "png huge",
        "jpeg w0",
        "jpeg max rotated",
        "jpeg bad orientation",
        "empty",
        "bmp magic only",
        "png magic only",
        "jpeg magic only",
    ],
)
def test_extreme_image_headers(image):
    labels = yolo_folder(
        b"0 0.5 0.5 0.25 0.5\n",
        image,
        ".bmp" if image[:2] == b"BM" or not image else ".png" if image[:4] == b"\x89PNG" else ".jpg",
    )
    boxes = check_load(datasets.load_yolo, labels, workers=1)
    if boxes is not None:
        assert np.isfinite(boxes.image_wh).all() and (boxes.image_wh > 0).all()


YOLO_YAMLS = {
    "not a mapping": "- a\n- b\n",
    "empty": "",
    "invalid yaml": "train: [unclosed\n",
    "python tag": "!!python/object/apply:os.system ['echo pwned']\n",
    "anchors alias bomb": "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "train: images\nnames: [*d]\n",
    "names a number": "path: .\ntrain: images\nnames: 5\n",
    "names with gaps": "path: .\ntrain: images\nnames: {0: a, 5: b}\n",
    "train a number": "path: .\ntrain: 5\nnames: [a]\n",
    "path missing": "path: /nonexistent/x\ntrain: images\nnames: [a]\n",
    "binary": "\x00\x01\x02",
}


@pytest.mark.parametrize("case", sorted(YOLO_YAMLS))
def test_malformed_yolo_yaml(case):
    labels = yolo_folder(b"0 0.5 0.5 0.25 0.5\n", bmp(64, 32))
    data = labels.parent / "data.yaml"
    data.write_text(YOLO_YAMLS[case])
    check_load(datasets.load_yolo, data, workers=1)
    check_load(datasets.load, labels.parent)


def test_malformed_case_counts():
    """The number of fixed malformed-file cases (reported in the README's guarantees table)."""
    assert len(VOC_FILES) >= 20 and len(COCO_FILES) >= 80 and len(YOLO_YAMLS) >= 10
