"""Hostile dataset files: YAML bombs, special files, link loops, foreign content in messages,
exceptions that must name the file, and zero image sizes.

Every case is generated here (by shape and size), not copied from a reproducer. A case that could
take the machine if the protection regressed (gigabytes of memory, a read that blocks forever)
runs in a child process under an address-space limit and a timeout, so that a regression fails
fast. Walks that could explode run under an in-process deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastanchor import datasets
from fastanchor._fileio import excerpt, iter_files, read_regular, sanitize
from fastanchor.datasets import AnnotationError, AnnotationWarning

PYTHON_DIR = Path(datasets.__file__).resolve().parents[2]
#: Address space of a child process (importing fastanchor takes about 160 MB).
CHILD_MEMORY = 1 << 30
CHILD_SECONDS = 120
#: Longest message any refusal may have.
MESSAGE_LIMIT = 4000


# ---------------------------------------------------------------------------------------------
# Running a case in a bounded child process

_CHILD_PRELUDE = """
import json, sys, traceback, warnings
warnings.simplefilter("error", RuntimeWarning)
def report(fn, *args, **kwargs):
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            value = fn(*args, **kwargs)
        out = {"ok": True, "value": value, "warnings": [str(w.message)[:10000] for w in caught]}
    except BaseException as exc:
        out = {"ok": False, "type": type(exc).__name__, "mro": [c.__name__ for c in type(exc).__mro__],
               "message": str(exc)[:100000], "length": len(str(exc))}
    sys.stdout.write("\\nRESULT " + json.dumps(out, default=lambda o: type(o).__name__) + "\\n")
"""


#: Under AddressSanitizer (scripts/sanitize.sh preloads its runtime) the interpreter reserves terabytes of
#: shadow address space, so an address-space limit kills it at start; there the child runs without one,
#: bounded by the timeout and by ASan's own allocator limits.
_UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def _limits(memory: int) -> None:
    import resource

    if not _UNDER_ASAN:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_child(code: str, *, memory: int = CHILD_MEMORY, seconds: float = CHILD_SECONDS, cwd=None) -> dict:
    """Run ``code`` (which calls ``report(fn, ...)``) in a fresh interpreter under an address
    space of ``memory`` bytes; its report, as a dict. Fails the test on a timeout or a crash."""
    env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD_PRELUDE + textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=seconds,
            env=env,
            cwd=cwd,
            preexec_fn=lambda: _limits(memory),
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child did not finish in {seconds} s (a hang, or unbounded work)")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"the child crashed (status {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


def assert_refused(result: dict, path, *, kinds=("AnnotationError",), contains: str = "") -> str:
    """The child raised one of ``kinds`` (or a subclass), naming ``path``, in a bounded message."""
    assert not result["ok"], f"accepted: {result}"
    assert set(kinds) & set(result["mro"]), f"{result['type']}: {result['message'][:500]}"
    assert result["length"] < MESSAGE_LIMIT, f"a message of {result['length']:,} characters"
    assert str(path) in result["message"], result["message"][:500]
    assert contains in result["message"], result["message"][:500]
    return result["message"]


@contextlib.contextmanager
def deadline(seconds: float):
    """Raise TimeoutError in this thread after ``seconds`` (a walk that explodes fails fast)."""

    def expire(signum, frame):
        raise TimeoutError(f"not finished in {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------------------------
# Small valid datasets to attack


def voc_xml(name="a.jpg", width="100", height="80", box=(1, 2, 30, 40), cls="dog") -> str:
    x1, y1, x2, y2 = box
    return (
        f"<annotation><filename>{name}</filename><size><width>{width}</width><height>{height}</height></size>"
        f"<object><name>{cls}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
        f"<ymax>{y2}</ymax></bndbox></object></annotation>"
    )


def png_bytes(w: int, h: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\x00" * w for _ in range(h))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def yolo_tree(root: Path, n: int = 2, yaml_extra: str = "") -> Path:
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for i in range(n):
        (root / "images" / "train" / f"im{i}.png").write_bytes(png_bytes(20, 10))
        (root / "labels" / "train" / f"im{i}.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    data = root / "data.yaml"
    data.write_text(f"path: .\ntrain: images/train\nnames: [a]\n{yaml_extra}")
    return data


def coco_doc(n: int = 2) -> dict:
    return {
        "images": [{"id": i, "width": 100, "height": 80, "file_name": f"{i}.jpg"} for i in range(n)],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 2, 30, 40]} for i in range(n)],
        "categories": [{"id": 1, "name": "a"}],
    }


# ---------------------------------------------------------------------------------------------
# YAML: aliases, depth, huge numbers


def alias_bomb(shape: str, levels: int = 9, fanout: int = 9) -> str:
    """A YAML value of ``fanout ** levels`` leaves described in a few hundred bytes."""
    if shape == "list":
        lines = ['l0: &l0 ["lol"]']
        lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fanout)}]" for i in range(1, levels + 1)]
    elif shape == "mapping":
        lines = ["l0: &l0 {x: lol}"]
        lines += [
            f"l{i}: &l{i} {{{', '.join(f'k{j}: *l{i - 1}' for j in range(fanout))}}}" for i in range(1, levels + 1)
        ]
    elif shape == "string":  # few nodes, a long scalar repeated
        lines = ['l0: &l0 "' + "x" * 4000 + '"']
        lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fanout)}]" for i in range(1, levels - 2)]
        levels -= 3
    elif shape == "merge":  # merge keys copy a mapping into each level
        lines = ["l0: &l0 {a: 1, b: 2, c: 3}"]
        lines += [
            f"l{i}: &l{i} {{<<: [*l{i - 1}], n{i}: [{', '.join([f'*l{i - 1}'] * fanout)}]}}"
            for i in range(1, levels + 1)
        ]
    else:
        raise ValueError(shape)
    return "\n".join(lines) + f"\nbomb: *l{levels}\n"


BOMB_KEYS = {
    "train": "path: .\ntrain: *l{n}\nnames: [a]\n",
    "names": "path: .\ntrain: images/train\nnames: *l{n}\n",
    "path": "path: *l{n}\ntrain: images/train\nnames: [a]\n",
    "nc": "path: .\ntrain: images/train\nnc: *l{n}\n",
    "unused key": "path: .\ntrain: images/train\nnames: [a]\nextra: *l{n}\n",
}


@pytest.mark.parametrize("shape", ["list", "mapping", "string", "merge"])
@pytest.mark.parametrize("key", sorted(BOMB_KEYS))
def test_yaml_alias_bombs_are_refused_before_they_expand(tmp_path, shape, key):
    data = yolo_tree(tmp_path)
    bomb = alias_bomb(shape)
    n = bomb.rsplit("*l", 1)[1].strip()
    data.write_text(bomb + BOMB_KEYS[key].replace("{n}", n))
    assert data.stat().st_size < 200_000
    result = run_child(f"from fastanchor import datasets\nreport(datasets.load_yolo, {str(data)!r})")
    assert_refused(result, data, contains="aliases")


@pytest.mark.parametrize("recursive", ["&a [*a]", "&a {x: *a}", "&a [[[*a]]]"])
def test_recursive_yaml_aliases_are_refused(tmp_path, recursive):
    data = yolo_tree(tmp_path, yaml_extra=f"extra: {recursive}\n")
    with pytest.raises(AnnotationError, match="recursive alias") as exc:
        datasets.load_yolo(data)
    assert str(data) in str(exc.value)


@pytest.mark.parametrize("count", ["10**12", "1e308", "-1", "0", "true", "[1, 2]", "9" * 5000])
def test_a_huge_or_wrong_class_count_is_refused(tmp_path, count):
    data = yolo_tree(tmp_path)
    data.write_text(f"path: .\ntrain: images/train\nnc: {count.replace('10**12', '1000000000000')}\n")
    result = run_child(f"from fastanchor import datasets\nreport(datasets.load_yolo, {str(data)!r})")
    assert_refused(result, data)


@given(
    depth=st.integers(65, 20_000),
    style=st.sampled_from(["flow list", "flow map", "block list", "mixed"]),
    where=st.sampled_from(["train", "names", "extra"]),
)
@settings(max_examples=25)
def test_deep_yaml_is_refused_with_the_file_named(depth, style, where):
    root = Path(os.environ.get("TMPDIR", "/tmp"))
    import tempfile

    with tempfile.TemporaryDirectory(dir=root) as tmp:
        data = yolo_tree(Path(tmp))
        if style == "flow list":
            value = "[" * depth + "]" * depth
        elif style == "flow map":
            value = "{a: " * depth + "1" + "}" * depth
        elif style == "block list":
            depth = min(depth, 1000)
            value = "\n" + "".join("  " * i + "-\n" for i in range(depth)) + "  " * depth + "- 1"
        else:
            value = "[{a: " * (depth // 2) + "1" + "}]" * (depth // 2)
        base = {"train": "images/train", "names": "[a]", "extra": "1"}
        base[where] = value
        data.write_text("path: .\n" + "".join(f"{k}: {v}\n" for k, v in base.items()))
        with pytest.raises(AnnotationError) as exc:
            datasets.load_yolo(data)
        assert str(data) in str(exc.value) and len(str(exc.value)) < MESSAGE_LIMIT


@pytest.mark.parametrize("value", ["9" * 5000, "-" + "9" * 4400, "0x" + "f" * 5000, "0o" + "7" * 6000])
@pytest.mark.parametrize("key", ["nc", "names", "names map", "path"])
def test_yaml_integers_beyond_the_digit_limit_name_the_file(tmp_path, value, key):
    data = yolo_tree(tmp_path)
    text = {
        "nc": f"nc: {value}",
        "names": f"names: [{value}]",
        "names map": f"names: {{{value}: a}}",
        "path": f"path: {value}",
    }[key]
    data.write_text(f"train: images/train\n{text}\n")
    try:
        boxes = datasets.load_yolo(data)
    except AnnotationError as exc:
        assert str(data) in str(exc) and len(str(exc)) < MESSAGE_LIMIT
    else:  # 0x.../0o... in a names list: a hexadecimal integer or a string, both valid (if odd) names
        assert key == "names" and not value[1].isdigit() and len(boxes.class_names) == 1


@pytest.mark.parametrize("entry", ["[[a, b]]", "{x: 1}", "[1, [2]]", "12", "true"])
def test_split_entries_that_are_not_paths_are_refused(tmp_path, entry):
    data = yolo_tree(tmp_path)
    data.write_text(f"path: .\ntrain: {entry}\nnames: [a]\n")
    with pytest.raises(AnnotationError) as exc:
        datasets.load_yolo(data)
    assert str(data) in str(exc.value)


# ---------------------------------------------------------------------------------------------
# Special files: FIFOs, devices, huge sparse files


def _special(path: Path, kind: str) -> None:
    if path.exists():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        os.symlink("/dev/zero", path)
    elif kind == "urandom":
        os.symlink("/dev/urandom", path)
    elif kind == "sparse":  # 5 GB that would take minutes to scan and gigabytes to hold
        with open(path, "wb") as f:
            f.write(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" if path.suffix in (".jpg", ".png") else b"<annotation>")
            f.truncate(5 << 30)  # above every limit (COCO json: 4 GiB)
    else:
        raise ValueError(kind)


SPECIAL_TARGETS = {
    "voc xml": ("voc", "Annotations/b.xml"),
    "yolo image": ("yolo", "images/train/im1.png"),
    "yolo label": ("yolo", "labels/train/im1.txt"),
    "yolo data.yaml": ("yolo", "data.yaml"),
    "coco json": ("coco", "c.json"),
    "yolo image list": ("yolo list", "train.txt"),
}


def _special_dataset(tmp_path: Path, fmt: str) -> Path:
    """A small dataset of the format; the path to load."""
    if fmt == "voc":
        (tmp_path / "Annotations").mkdir()
        for name in ("a", "b", "c"):
            (tmp_path / "Annotations" / f"{name}.xml").write_text(voc_xml())
        return tmp_path / "Annotations"
    if fmt == "coco":
        (tmp_path / "c.json").write_text(json.dumps(coco_doc()))
        return tmp_path / "c.json"
    data = yolo_tree(tmp_path, n=3)
    if fmt == "yolo list":
        (tmp_path / "train.txt").write_text("./images/train/im0.png\n")
        data.write_text("path: .\ntrain: train.txt\nnames: [a]\n")
    return data


@pytest.mark.parametrize("kind", ["fifo", "zero", "urandom", "sparse"])
@pytest.mark.parametrize("target", sorted(SPECIAL_TARGETS))
def test_special_and_huge_files_are_refused_without_blocking_or_reading_them(tmp_path, target, kind):
    fmt, rel = SPECIAL_TARGETS[target]
    if kind == "sparse" and target == "yolo image list":
        pytest.skip("an image list is limited to 256 MiB: see test_read_regular_bounds_the_read")
    load = _special_dataset(tmp_path, fmt)
    bad = tmp_path / rel
    _special(bad, kind)
    result = run_child(f"from fastanchor import datasets\nreport(datasets.load, {str(load)!r})")
    if kind == "sparse" and target == "yolo image":  # read, found not to be an image: refused by name
        assert_refused(result, bad, contains="JPEG")
    elif kind == "sparse":
        assert_refused(result, bad, kinds=("AnnotationError", "OSError"), contains="too large")
    else:
        assert_refused(result, bad, kinds=("AnnotationError", "OSError"), contains="not a regular file")


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_special_files_are_skipped_with_a_warning_when_not_strict(tmp_path, kind):
    load = _special_dataset(tmp_path, "voc")
    _special(tmp_path / "Annotations" / "b.xml", kind)
    result = run_child(f"""
        from fastanchor import datasets
        report(lambda: len(datasets.load_voc({str(load)!r}, strict=False).files))
    """)
    assert result["ok"] and result["value"] == 2, result
    assert any("b.xml" in w and "not a regular file" in w for w in result["warnings"])


def test_read_regular_bounds_the_read(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    assert read_regular(path, 1000) == b"x" * 1000
    with pytest.raises(OSError, match="too large"):
        read_regular(path, 999)
    os.mkfifo(tmp_path / "p")
    with pytest.raises(OSError, match="not a regular file .a FIFO."):
        read_regular(tmp_path / "p")


# ---------------------------------------------------------------------------------------------
# Folders: links followed once, loops cut


def _real_files(root: Path, suffix: str) -> set:
    out = set()
    for folder, dirs, files in os.walk(root):  # does not follow links: each real file once
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out |= {
            os.path.realpath(os.path.join(folder, f))
            for f in files
            if f.endswith(suffix) and not os.path.islink(os.path.join(folder, f))
        }
    return out


@st.composite
def linked_trees(draw):
    """A tree of folders with XML files, plus links from folders to any folder (loops, fan-out,
    links to the root), links to files, broken and self-referencing links."""
    n_dirs = draw(st.integers(1, 7))
    parents = [None] + [draw(st.integers(0, i - 1)) for i in range(1, n_dirs)]
    files = [draw(st.integers(0, 3)) for _ in range(n_dirs)]
    links = draw(st.lists(st.tuples(st.integers(0, n_dirs - 1), st.integers(0, n_dirs - 1)), max_size=12))
    file_links = draw(st.lists(st.tuples(st.integers(0, n_dirs - 1), st.integers(0, n_dirs - 1)), max_size=4))
    odd = draw(st.lists(st.sampled_from(["broken", "self", "cycle"]), max_size=3))
    return parents, files, links, file_links, odd


def _build(root: Path, tree) -> None:
    parents, files, links, file_links, odd = tree
    paths = []
    for i, p in enumerate(parents):
        path = root if p is None else paths[p] / f"d{i}"
        path.mkdir(exist_ok=True)
        paths.append(path)
    for i, n in enumerate(files):
        for j in range(n):
            (paths[i] / f"f{i}_{j}.xml").write_text(voc_xml())
    for k, (src, dst) in enumerate(links):
        os.symlink(paths[dst], paths[src] / f"link{k}")
    for k, (src, dst) in enumerate(file_links):
        targets = sorted(paths[dst].glob("f*.xml"))
        if targets:
            os.symlink(targets[0], paths[src] / f"flink{k}.xml")
    for k, what in enumerate(odd):
        if what == "broken":
            os.symlink(root / "nowhere", root / f"broken{k}")
        elif what == "self":
            os.symlink(".", root / f"self{k}")
        else:
            os.symlink(root / f"cyc{k}b", root / f"cyc{k}a")
            os.symlink(root / f"cyc{k}a", root / f"cyc{k}b")


@given(tree=linked_trees())
@settings(max_examples=60)
def test_each_real_file_is_listed_once_whatever_the_links(tree):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        _build(root, tree)
        real = _real_files(root, ".xml")
        with deadline(30):
            listed = [p for _, p, st_ in iter_files(root) if p.endswith(".xml")]
        assert len(listed) == len(set(map(os.path.realpath, listed))), "a file was listed twice"
        assert set(map(os.path.realpath, listed)) == real
        if real:
            with deadline(30):
                boxes = datasets.load_voc(root)
            assert len(boxes.files) == len(real) and len(boxes) == len(real)


@pytest.mark.parametrize("fanout", [2, 4, 16])
def test_fan_out_links_do_not_multiply_boxes(tmp_path, fanout):
    """Each folder links to its parent ``fanout`` times: without loop detection the walk is
    exponential (16 links, 4 levels: 65,536 paths to every file)."""
    top = tmp_path / "ann"
    d = top
    for level in range(4):
        d.mkdir()
        (d / f"x{level}.xml").write_text(voc_xml())
        for k in range(fanout):
            os.symlink("..", d / f"up{k}")
        d = d / "sub"
    with deadline(60):
        boxes = datasets.load_voc(top)
    assert len(boxes) == 4 and len(boxes.files) == 4


@pytest.mark.parametrize("fmt", ["voc", "yolo", "coco"])
def test_a_self_loop_link_does_not_abort_the_load(tmp_path, fmt):
    """As Debian's own /usr/bin/X11 -> . : a link to its own folder, and a loop of two links."""
    load = _special_dataset(tmp_path, fmt)
    folder = load if load.is_dir() else load.parent
    for base in {folder, tmp_path / "images" / "train" if fmt == "yolo" else folder}:
        os.symlink(".", base / "X11")
        os.symlink(base / "loopb", base / "loopa.xml")
        os.symlink(base / "loopa.xml", base / "loopb")
    with deadline(60):
        if fmt == "voc":
            with pytest.raises(AnnotationError, match="loopa.xml"):  # a looping link named .xml: named
                datasets.load(load)
            with pytest.warns(AnnotationWarning, match="loopa.xml"):
                boxes = datasets.load(load, strict=False)
        else:
            boxes = datasets.load(load)
    assert len(boxes) == {"voc": 3, "yolo": 3, "coco": 2}[fmt]


# ---------------------------------------------------------------------------------------------
# Foreign content in messages

secret_lines = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
    min_size=1,
    max_size=300,
).filter(lambda s: len(s.split()) not in (0, 5) and s.strip())


@given(line=secret_lines, marker_at=st.integers(0, 200))
@settings(max_examples=40)
def test_a_label_file_linked_to_a_foreign_file_is_not_echoed(line, marker_at):
    import tempfile

    marker = "SECRETMARKER"
    text = line[:marker_at] + " " + marker + " " + line[marker_at:]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = yolo_tree(root)
        foreign = root / "foreign.conf"
        foreign.write_text(text + "\nsecond line " + marker + "\n")
        label = root / "labels" / "train" / "im1.txt"
        label.unlink()
        os.symlink(foreign, label)
        with pytest.raises(AnnotationError) as exc:
            datasets.load_yolo(data)
        message = str(exc.value)
        assert str(label) in message
        assert len(message) < len(str(label)) + 400
        assert message.isprintable()
        # at most a short excerpt of one field: no 25 characters of the file in a row
        foreign_text = foreign.read_text()
        assert not any(foreign_text[i : i + 25] in message for i in range(len(foreign_text) - 24))
        assert "second line" not in message


def test_an_image_list_pointing_at_a_foreign_file_shows_nothing_of_it(tmp_path):
    data = yolo_tree(tmp_path)
    foreign = tmp_path / "etc" / "shadow.txt"
    foreign.parent.mkdir()
    foreign.write_text("root:SECRETHASH:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    data.write_text(f"path: .\ntrain: {foreign}\nnames: [a]\n")
    with pytest.raises(ValueError) as exc:
        datasets.load_yolo(data)
    assert "SECRETHASH" not in str(exc.value) and "daemon" not in str(exc.value)


@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=200) | st.binary(max_size=50),
        lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=5), c, max_size=5),
        max_leaves=60,
    )
)
def test_excerpts_are_short_and_printable(value):
    text = excerpt(value)
    assert len(text) <= 48 and text.isprintable()


def test_excerpts_of_deep_and_huge_values():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert len(excerpt(deep)) <= 48
    from fastanchor.datasets._coco import _short  # what an old orjson hands over: 3,000-deep arrays

    assert len(_short(deep)) <= 90
    assert "digits" in excerpt(10**5000)
    assert sanitize("a\nb\x1b[31m\u202e") == "a\\nb\\x1b[31m\\u202e"


# ---------------------------------------------------------------------------------------------
# COCO: deep json under both parsers, numbers near the double range


@pytest.fixture(params=["json", "orjson"])
def json_backend(request, monkeypatch):
    if request.param == "orjson":
        pytest.importorskip("orjson")
    else:
        monkeypatch.setitem(sys.modules, "orjson", None)
    return request.param


@pytest.mark.parametrize("depth", [500, 1000, 3000, 50_000])
@pytest.mark.parametrize(
    "where", ["bbox", "image_id", "category_id", "file_name", "annotation", "image", "category name", "id"]
)
def test_deeply_nested_coco_values_name_the_file(tmp_path, json_backend, depth, where):
    doc = coco_doc()
    deep = "[" * depth + "]" * depth
    text = json.dumps(doc)
    slot = {
        "bbox": ('"bbox": [1, 2, 30, 40]', f'"bbox": {deep}'),
        "image_id": ('"image_id": 0', f'"image_id": {deep}'),
        "category_id": ('"category_id": 1', f'"category_id": {deep}'),
        "file_name": ('"file_name": "0.jpg"', f'"file_name": {deep}'),
        "annotation": ('"annotations": [', f'"annotations": [{deep}, '),
        "image": ('"images": [', f'"images": [{deep}, '),
        "category name": ('"name": "a"', f'"name": {deep}'),
        "id": ('{"id": 0, "image_id"', '{"id": ' + deep + ', "image_id"'),
    }[where]
    assert slot[0] in text
    path = tmp_path / "c.json"
    path.write_text(text.replace(slot[0], slot[1], 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for strict in (None, False):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", AnnotationWarning)
                    boxes = datasets.load_coco(path, strict=strict)
            except AnnotationError as exc:
                assert str(path) in str(exc) and len(str(exc)) < MESSAGE_LIMIT
            else:
                assert strict is False or where == "id"
                assert np.isfinite(boxes.wh).all()


@pytest.mark.parametrize("value", ["1.7976931348623157e308", "1e308", "-1e308", "8.98846567431158e307"])
@pytest.mark.parametrize("where", ["x", "w", "x and w", "image width"])
def test_coco_values_near_the_double_range_raise_no_numpy_warning(tmp_path, json_backend, value, where):
    doc = coco_doc()
    ann = doc["annotations"][0]
    if where == "image width":
        doc["images"][0]["width"] = abs(float(value))
    else:
        if "x" in where:
            ann["bbox"][0] = float(value)
        if "w" in where:
            ann["bbox"][2] = float(value)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning from numpy would be an exception
        warnings.simplefilter("ignore", AnnotationWarning)
        boxes = datasets.load_coco(path)
    assert np.isfinite(boxes.wh).all() and np.isfinite(boxes.xyxy).all()


# ---------------------------------------------------------------------------------------------
# VOC: a stated image size that is not one


@pytest.mark.parametrize("width", ["0", "-5", "nan", "inf", "abc", "", "1e999", "-0"])
def test_a_voc_size_that_is_not_one_drops_the_file_with_a_warning(tmp_path, width):
    (tmp_path / "Annotations").mkdir()
    for name in ("a", "b"):
        (tmp_path / "Annotations" / f"{name}.xml").write_text(voc_xml(name=f"{name}.jpg"))
    (tmp_path / "Annotations" / "z.xml").write_text(voc_xml(name="z.jpg", width=width))
    with pytest.warns(AnnotationWarning, match=r"image size of zero.*z.xml"):
        boxes = datasets.load_voc(tmp_path / "Annotations")
    assert len(boxes) == 2 and np.isfinite(boxes.image_wh).all() and (boxes.image_wh > 0).all()
    with pytest.raises(AnnotationError, match=r"z.xml.*image size of zero"):
        datasets.load_voc(tmp_path / "Annotations", strict=True)
    # beside the XML, the image gives its size
    (tmp_path / "Annotations" / "z.jpg").write_bytes(png_bytes(64, 48))
    boxes = datasets.load_voc(tmp_path / "Annotations")
    assert len(boxes) == 3 and boxes.image_wh.tolist()[2] == [64, 48]


# ---------------------------------------------------------------------------------------------
# JPEG headers: fill bytes and stray data across read chunks


@pytest.mark.parametrize("fill", [0, 1, 2, 65_535, 65_536, 65_537, 300_000])
@pytest.mark.parametrize("then", ["end", "frame", "stray then frame"])
def test_jpeg_fill_bytes_of_any_length_end_in_a_size_or_a_named_error(tmp_path, fill, then):
    import struct

    from fastanchor.datasets import ImageSizeError, image_size

    frame = b"\xff\xc0" + struct.pack(">HBHH", 11, 8, 48, 64) + b"\x01\x01\x11\x00"
    stray = b"\x00" * 70_000 if then == "stray then frame" else b""
    path = tmp_path / "a.jpg"
    path.write_bytes(b"\xff\xd8" + stray + b"\xff" * fill + (b"" if then == "end" else frame))
    with deadline(30):
        if then == "end":
            with pytest.raises(ImageSizeError, match="a.jpg"):
                image_size(str(path))
        else:
            assert image_size(str(path)) == (64, 48)
