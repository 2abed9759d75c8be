"""The fast COCO path (datasets/_coco_stream.py) against the ordinary one.

The fast path either returns exactly what parsing the whole document and checking it entry by
entry returns (the same boxes, the same warnings), or gives up so that the ordinary path runs.
These tests load each document both ways and compare everything, on the real COCO files, on
generated documents (with the arrays cut into pieces of a few bytes and the scan done in
blocks of a few bytes, so that every boundary is crossed), and on corrupted documents.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Tuple

import numpy as np
import pytest
from conftest import DATA_DIR
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastanchor import datasets
from fastanchor.datasets import AnnotationError, _coco, _coco_stream

RAW = Path(os.environ.get("FASTANCHOR_TEST_DATA", DATA_DIR)) / "raw"
REAL_COCO = sorted(RAW.glob("*/*.json")) if RAW.is_dir() else []

FIELDS = ("wh", "image_wh", "image_id", "class_id", "difficult", "crowd", "xy")


@pytest.fixture(params=["json", "orjson"])
def json_backend(request, monkeypatch):
    if request.param == "orjson":
        pytest.importorskip("orjson")
    else:
        monkeypatch.setitem(sys.modules, "orjson", None)  # the import fails: the json module is used
    return request.param


def _ordinary(path: Path, strict: Any) -> Any:
    def give_up(_path: str) -> Any:
        raise _coco_stream.Fallback

    saved = _coco.read_coco
    _coco.read_coco = give_up
    try:
        return datasets.load_coco(path, strict=strict)
    finally:
        _coco.read_coco = saved


def outcome(load: Any, path: Path, strict: Any = None) -> Tuple[Any, ...]:
    """Everything a caller sees: the boxes and warnings, or the error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            b = load(path, strict)
        except (AnnotationError, OSError, ValueError) as exc:
            return ("error", type(exc).__name__, str(exc), [str(w.message) for w in caught])
    arrays = tuple((getattr(b, f).dtype.str, getattr(b, f).tobytes()) for f in FIELDS)
    meta = (b.files, b.class_names, b.format, b.source, len(b))
    return ("ok", arrays, meta, [(w.category.__name__, str(w.message)) for w in caught])


def fast(path: Path, strict: Any = None) -> Any:
    return datasets.load_coco(path, strict=strict)


def assert_same(path: Path, strict: Any = None) -> Tuple[Any, ...]:
    new, old = outcome(fast, path, strict), outcome(_ordinary, path, strict)
    assert new == old
    return new


@pytest.fixture
def small_pieces(monkeypatch):
    """Every array streamed, in pieces of a few elements; the scan in 7-byte blocks."""
    monkeypatch.setattr(_coco_stream, "STREAM_ARRAY_BYTES", 0)
    monkeypatch.setattr(_coco_stream, "PIECE_BYTES", 150)
    monkeypatch.setattr(_coco_stream, "BLOCK_BYTES", 7)


# --- real files ----------------------------------------------------------------------------------------


@pytest.mark.skipif(not REAL_COCO, reason=f"real data folder {RAW} is absent")
@pytest.mark.parametrize("pieces", ["default", "small"])
def test_real_coco_files_same_as_the_ordinary_path(json_backend, pieces, monkeypatch):
    if pieces == "small":
        monkeypatch.setattr(_coco_stream, "STREAM_ARRAY_BYTES", 0)
        monkeypatch.setattr(_coco_stream, "PIECE_BYTES", 20_000)
        monkeypatch.setattr(_coco_stream, "BLOCK_BYTES", 65_537)
    for path in REAL_COCO:
        extract = _coco_stream.read_coco(str(path))  # the fast path handles them (no fallback)
        assert len(extract.xywh) > 0
        result = assert_same(path)
        assert result[0] == "ok"


# --- generated documents ----------------------------------------------------------------------------------

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6) | st.sampled_from(
    ['a"b', "c\\d", "[x]", "{y}", "\\", '\\"', "e\u00e9\u4e2d", ""]
)
coords = st.one_of(
    st.integers(-5, 700),
    st.floats(-5, 700, allow_nan=False),
    st.sampled_from([0, 0.0, -0.0, 1e-300, 640, 480.5]),
)


@st.composite
def coco_docs(draw: Any) -> Tuple[dict, dict]:
    n_images = draw(st.integers(0, 6))
    image_ids = draw(st.lists(st.integers(-3, 10**12), min_size=n_images, max_size=n_images, unique=True))
    images = []
    for i in image_ids:
        im = {
            "id": i,
            "width": draw(st.sampled_from([640, 480.0, 33, 1e-3])),
            "height": draw(st.sampled_from([480, 7])),
        }
        if draw(st.booleans()):
            im["file_name"] = draw(names)
        if draw(st.booleans()):
            im["extra"] = {"nested": [1, [2, {"]": "["}]]}
        images.append(im)
    cat_ids = draw(st.lists(st.integers(-2, 100), max_size=4, unique=True))
    categories = [{"id": c, "name": draw(names)} for c in cat_ids]
    usable_cats = cat_ids or [draw(st.integers(0, 9)) for _ in range(3)]
    annotations = []
    for k in range(draw(st.integers(0, 12))):
        if not image_ids:
            break
        ann = {
            "image_id": draw(st.sampled_from(image_ids)),
            "bbox": draw(st.lists(coords, min_size=4, max_size=4)),
            "category_id": draw(st.sampled_from(usable_cats)),
        }
        if draw(st.booleans()):
            ann["id"] = draw(st.integers(0, 10**6) | names)
        if draw(st.booleans()):
            ann["iscrowd"] = draw(st.sampled_from([0, 1, 2, True, False, None, "0", "1", 0.0]))
        if draw(st.booleans()):
            ann["segmentation"] = draw(st.sampled_from([[[1, 2, 3, 4]], {"counts": "a]b[c", "size": [2, 2]}, []]))
        annotations.append(ann)
    doc: dict = {}
    keys = ["images", "annotations", "categories", "info", "licenses"]
    for key in draw(st.permutations(keys)):
        if key == "images":
            doc[key] = images
        elif key == "annotations":
            doc[key] = annotations
        elif key == "categories":
            if categories or draw(st.booleans()):
                doc[key] = categories
        elif draw(st.booleans()):
            doc[key] = {"info": [{"x": draw(names)}]} if key == "info" else [{"id": 1, "name": draw(names)}]
    style = draw(
        st.fixed_dictionaries(
            {"indent": st.sampled_from([None, 0, 2]), "ensure_ascii": st.booleans(), "compact": st.booleans()}
        )
    )
    return doc, style


def dump(doc: dict, style: dict) -> str:
    seps = (",", ":") if style["compact"] else None
    return json.dumps(doc, indent=style["indent"], ensure_ascii=style["ensure_ascii"], separators=seps)


def tmpdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="fa-coco-stream-"))
    return path


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(coco_docs(), st.sampled_from([None, True, False]))
def test_generated_documents_same_as_the_ordinary_path(json_backend, small_pieces, doc_style, strict):
    doc, style = doc_style
    folder = tmpdir()
    try:
        path = folder / "c.json"
        path.write_text(dump(doc, style), encoding="utf-8")
        assert_same(path, strict)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@SETTINGS
@given(coco_docs(), st.data())
def test_corrupted_documents_same_as_the_ordinary_path(json_backend, small_pieces, doc_style, data):
    """A byte deleted, replaced or inserted anywhere: the same error (file and line) or result."""
    doc, style = doc_style
    text = dump(doc, style).encode()
    at = data.draw(st.integers(0, len(text)))
    edit = data.draw(st.sampled_from(["delete", "replace", "insert", "truncate"]))
    byte = data.draw(st.sampled_from(list(b'{}[],:"\\ 0a\n') + [0xFF]))
    if edit == "delete":
        text = text[:at] + text[at + 1 :]
    elif edit == "replace":
        text = text[:at] + bytes([byte]) + text[at + 1 :]
    elif edit == "insert":
        text = text[:at] + bytes([byte]) + text[at:]
    else:
        text = text[:at]
    folder = tmpdir()
    try:
        path = folder / "c.json"
        path.write_bytes(text)
        assert_same(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- the pieces: what the fast path handles itself, and where it gives up ----------------------------------


def _doc(n_ann: int = 30) -> dict:
    return {
        "info": {"a": '[{\\"', "b": [1, 2]},
        "images": [{"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in range(1, 11)],
        "annotations": [
            {"id": 100 + k, "image_id": 1 + k % 10, "bbox": [k, 2.5, 30, 40], "category_id": 1 + k % 3, "iscrowd": 0}
            for k in range(n_ann)
        ],
        "categories": [{"id": c, "name": f"c{c}"} for c in (3, 1, 2)],
    }


def test_pieces_are_parsed_apart(tmp_path, json_backend, small_pieces):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_doc()))
    extract = _coco_stream.read_coco(str(path))
    assert extract.xywh.shape == (30, 4) and extract.class_names == ("c1", "c2", "c3")
    assert extract.files == [f"{i}.jpg" for i in range(1, 11)]
    assert extract.image_idx.tolist() == [k % 10 for k in range(30)]
    assert assert_same(path)[0] == "ok"


@pytest.mark.parametrize(
    "text, why",
    [
        ('{"images": [], "annotations": [], "annotations": []}', None),  # a repeated key: the last one counts
        ('[{"images": []}]', "not an object"),
        ('{"images": [1], "annotations": []}', "an image that is not an object"),
        ('{"images": [{"id": 1.0, "width": 1, "height": 1}], "annotations": []}', "a float id"),
        ('{"images": [{"id": 1, "width": "1", "height": 1}], "annotations": []}', "a width as text"),
        (
            '{"images": [{"id": 1, "width": 1, "height": 1}, {"id": 1, "width": 1, "height": 1}], "annotations": []}',
            "a repeated id",
        ),
        (
            '{"images": [{"id": 1, "width": 1, "height": 1}], "annotations": [{"image_id": 2, "bbox": [0,0,1,1]}]}',
            "an unknown image",
        ),
        (
            '{"images": [{"id": 1, "width": 1, "height": 1}], "annotations": [{"image_id": 1, "bbox": [0,0,1,true]}]}',
            "a bool",
        ),
        (
            '{"images": [{"id": 1, "width": 1, "height": 1}], "annotations": [{"image_id": 1, "bbox": [0,0,1,1]}]}',
            "no category",
        ),
        (
            '{"images": [{"id": 1, "width": 1, "height": 1}], "annotations": [{"image_id": 1, "bbox": [0,0,1,1], "category_id": 1}], "x": [1,]}',
            "invalid json",
        ),
        ("\ufeff" + '{"images": [], "annotations": []}', "a BOM"),
    ],
)
def test_unusual_documents_take_the_ordinary_path(tmp_path, json_backend, small_pieces, text, why):
    path = tmp_path / "c.json"
    path.write_text(text, encoding="utf-8")
    if why is None:
        _coco_stream.read_coco(str(path))
    else:
        with pytest.raises(_coco_stream.Fallback):
            _coco_stream.read_coco(str(path))
    assert_same(path)


@pytest.mark.parametrize("cut", ["[", "]", "{", "}", ",", '"'])
def test_malformed_large_document_names_the_file_and_line(tmp_path, json_backend, small_pieces, cut):
    """A structural character removed deep inside a streamed array: the ordinary error, with its line."""
    path = tmp_path / "big.json"
    text = json.dumps(_doc(200), indent=1)
    at = text.rindex(cut, 0, len(text) * 2 // 3)
    path.write_text(text[:at] + text[at + 1 :])
    with pytest.raises(AnnotationError) as info:
        datasets.load_coco(path)
    message = str(info.value)
    assert str(path) in message and "not valid json" in message
    assert info.value.line is not None and info.value.line > 1
    assert assert_same(path)[0] == "error"


def test_degenerate_boxes_one_warning_with_the_first_id(tmp_path, json_backend, small_pieces):
    doc = _doc(40)
    doc["annotations"][17]["bbox"] = [1, 1, 0, 5]
    doc["annotations"][33]["bbox"] = [700, 1, 5, 5]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    result = assert_same(path)
    assert result[0] == "ok" and len(result[3]) == 1
    category, message = result[3][0]
    assert category == "AnnotationWarning"
    assert "dropped 2 degenerate boxes of 40" in message and "annotations[17] (id 117)" in message
    with pytest.raises(AnnotationError, match=r"annotations\[17\] \(id 117\)"):
        datasets.load_coco(path, strict=True)


def test_escapes_across_block_borders(tmp_path, json_backend, monkeypatch):
    """Backslash runs and quotes cut at every block border."""
    doc = _doc(5)
    for k, im in enumerate(doc["images"]):
        im["file_name"] = "\\" * k + '"]}' + "\\" * (k + 1) + "[{"
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    want = outcome(_ordinary, path)
    monkeypatch.setattr(_coco_stream, "STREAM_ARRAY_BYTES", 0)
    for block in (1, 2, 3, 5, 8, 13):
        monkeypatch.setattr(_coco_stream, "BLOCK_BYTES", block)
        assert outcome(fast, path) == want
        assert _coco_stream.read_coco(str(path)).files == [im["file_name"] for im in doc["images"]]


def test_no_categories_numbered_in_order_of_appearance(tmp_path, json_backend, small_pieces):
    doc = _doc(12)
    del doc["categories"]
    for k, ann in enumerate(doc["annotations"]):
        ann["category_id"] = [7, 3, 7, 9][k % 4]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    assert _coco_stream.read_coco(str(path)).class_names == ("7", "3", "9")
    assert assert_same(path)[0] == "ok"


def test_sparse_ids_use_a_sorted_search(tmp_path, json_backend, small_pieces):
    doc = _doc(20)
    for im in doc["images"]:
        im["id"] = im["id"] * 10**15 - 2**62
    for ann in doc["annotations"]:
        ann["image_id"] = ann["image_id"] * 10**15 - 2**62
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    assert np.array_equal(_coco_stream.read_coco(str(path)).image_idx, [k % 10 for k in range(20)])
    assert assert_same(path)[0] == "ok"


def test_repeated_and_escaped_top_level_keys(tmp_path, json_backend, small_pieces):
    """The last of repeated keys counts (as in a whole parse), escaped key names are read as
    their text, and an array that no key keeps must still be valid json."""
    doc = _doc(6)
    images = json.dumps(doc["images"])
    anns = json.dumps(doc["annotations"])
    other = json.dumps(doc["annotations"][:2])
    text = (
        f'{{"annotations": {other},\r\n\t"images": {images}, "ann\\u006ftations": {anns}, '
        f'"categories": {json.dumps(doc["categories"])}}}'
    )
    path = tmp_path / "c.json"
    path.write_text(text)
    assert len(_coco_stream.read_coco(str(path)).xywh) == 6
    assert assert_same(path)[0] == "ok"
    path.write_text(text.replace('"annotations": [{', '"annotations": [{,', 1))  # the dropped array, broken
    with pytest.raises(_coco_stream.Fallback):
        _coco_stream.read_coco(str(path))
    assert assert_same(path)[0] == "error"


@given(st.lists(st.integers(0, 40), unique=True).map(sorted), st.booleans())
def test_escaped_bytes_follow_the_backslash_rule(backslashes, first_escaped):
    """Vectorized escapes against the rule applied byte by byte."""
    want = {0} if first_escaped else set()
    for p in backslashes:
        if p not in want:  # an escaped backslash escapes nothing
            want.add(p + 1)
    got = _coco_stream._escaped(np.array(backslashes, dtype=np.int64), first_escaped)
    assert got.tolist() == sorted(want)


def test_memory_stays_below_twice_the_file(tmp_path, monkeypatch):
    """Peak memory allocated while loading (numpy arrays and Python objects, by tracemalloc):
    under twice the file's size, where the whole document as objects takes about eight times.
    The pieces are made small to keep this file's proportions those of a large one."""
    import tracemalloc

    rng = np.random.default_rng(0)
    n_images, n_boxes = 5_000, 60_000
    doc = {
        "images": [
            {"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": 640, "height": 480, "license": 1}
            for i in range(n_images)
        ],
        "annotations": [
            {
                "area": 100.5,
                "iscrowd": 0,
                "image_id": int(rng.integers(1, n_images + 1)),
                "bbox": [round(float(x), 2) for x in rng.uniform([0, 0, 1, 1], [100, 100, 300, 300])],
                "category_id": int(rng.integers(1, 81)),
                "id": k + 1,
            }
            for k in range(n_boxes)
        ],
        "categories": [{"id": c, "name": f"class{c}"} for c in range(1, 81)],
    }
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    del doc
    size = path.stat().st_size
    monkeypatch.setattr(_coco_stream, "STREAM_ARRAY_BYTES", size // 100)
    monkeypatch.setattr(_coco_stream, "PIECE_BYTES", size // 60)
    monkeypatch.setattr(_coco_stream, "BLOCK_BYTES", size // 30)
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            boxes = datasets.load_coco(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(boxes) == n_boxes
    assert peak < 2 * size, f"peak {peak:,} bytes for a file of {size:,}"
