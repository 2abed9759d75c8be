"""fastanchor.dask: the same boxes, errors and warnings as fastanchor.datasets, with the files
parsed in Dask tasks; and ``fastanchor anchors --scheduler``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Tuple

import numpy as np
import pytest

from fastanchor import datasets
from fastanchor._demo import make_demo
from fastanchor.cli import _common, main
from fastanchor.datasets import AnnotationError

dask = pytest.importorskip("dask")
from fastanchor.dask import _loading  # noqa: E402

PYTHON_DIR = Path(datasets.__file__).resolve().parent.parent.parent  # the folder fastanchor is imported from
FIELDS = ("wh", "image_wh", "image_id", "class_id", "difficult", "crowd", "xy")


def outcome(load: Any, *args: Any, **kwargs: Any) -> Tuple[Any, ...]:
    """The boxes and the warnings' texts, or the error's."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            b = load(*args, **kwargs)
        except (AnnotationError, ValueError, OSError) as exc:
            return ("error", type(exc).__name__, str(exc))
    arrays = tuple((getattr(b, f).dtype.str, getattr(b, f).tobytes()) for f in FIELDS)
    return ("ok", arrays, b.files, b.class_names, b.format, b.source, [str(w.message) for w in caught])


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos")
    return {fmt: make_demo(str(root / fmt), fmt, n_images=40, seed=3) for fmt in ("voc", "coco", "yolo")}


@pytest.mark.parametrize("fmt", ["voc", "coco", "yolo"])
@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_same_as_datasets_load(demos, fmt, scheduler):
    want = outcome(datasets.load, demos[fmt])
    assert want[0] == "ok"
    got = outcome(_loading.load, demos[fmt], scheduler=scheduler, files_per_task=7)  # several tasks
    assert got == want
    wh = _loading.load_boxes(demos[fmt], scheduler=scheduler)
    assert wh.shape == (len(datasets.load(demos[fmt])), 2) and np.array_equal(wh, datasets.load(demos[fmt]).wh)


def _voc_copy(src: str, dst: Path) -> Path:
    dst.mkdir()
    for name in sorted(os.listdir(src)):
        (dst / name).write_bytes((Path(src) / name).read_bytes())
    return dst


def test_voc_malformed_file_and_degenerate_boxes(demos, tmp_path):
    folder = _voc_copy(demos["voc"], tmp_path / "voc")
    files = sorted(folder.iterdir())
    text = files[5].read_text()
    files[5].write_text(text.replace("<xmax>", "<xmax>-", 1))  # a degenerate box (negative width)
    want = outcome(datasets.load_voc, folder)
    got = outcome(_loading.load, folder, scheduler="threads", files_per_task=3)
    assert got == want and got[0] == "ok"
    assert len(got[-1]) == 1 and "dropped 1 degenerate boxes" in got[-1][0] and files[5].name in got[-1][0]
    with pytest.raises(AnnotationError, match="degenerate box"):
        _loading.load(folder, strict=True, scheduler="synchronous")

    files[9].write_text(text.replace("</annotation>", ""))  # not well-formed
    want = outcome(datasets.load_voc, folder)
    got = outcome(_loading.load, folder, scheduler="threads", files_per_task=3)
    assert got == want and got[0] == "error" and f"{files[9]}:" in got[2] and "not well-formed XML" in got[2]
    assert outcome(_loading.load, folder, strict=False, files_per_task=4) == outcome(
        datasets.load_voc, folder, strict=False
    )


def test_yolo_bad_label_named(demos, tmp_path):
    import shutil

    root = tmp_path / "yolo"
    shutil.copytree(Path(demos["yolo"]).parent, root)
    data = root / Path(demos["yolo"]).name
    labels = sorted((root / "labels").rglob("*.txt"))
    labels[3].write_text("0 0.5 0.5 oops 0.1\n")
    want = outcome(datasets.load, data)
    got = outcome(_loading.load, data, scheduler="threads", files_per_task=5)
    assert got == want and got[0] == "error" and f"{labels[3]}:1" in got[2]


def test_coco_files_one_task_each(demos, tmp_path):
    doc = json.loads(Path(demos["coco"]).read_text())
    doc["annotations"][0]["bbox"][2] = 0  # a degenerate box, reported once by its file
    second = tmp_path / "second.json"
    second.write_text(json.dumps(doc))
    a = datasets.load(demos["coco"])
    with pytest.warns(datasets.AnnotationWarning, match="dropped 1 degenerate boxes") as rec:
        b = datasets.load(second)
    assert len(rec) == 1
    with pytest.warns(datasets.AnnotationWarning, match=r"second\.json") as rec:
        both = _loading.load([demos["coco"], second], scheduler="threads")
    assert len([w for w in rec if "degenerate" in str(w.message)]) == 1
    assert len(both) == len(a) + len(b) and both.n_images == a.n_images + b.n_images
    assert np.array_equal(both.wh, np.concatenate([a.wh, b.wh]))
    assert both.class_names == a.class_names and both.files == a.files + b.files
    assert np.array_equal(both.image_id[len(a) :], b.image_id + a.n_images)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [], "annotations": [')
    with pytest.raises(AnnotationError, match=r"bad\.json.*not valid json"):
        _loading.load([demos["coco"], bad], scheduler="synchronous")


def test_argument_errors(demos):
    with pytest.raises(ValueError, match="files_per_task"):
        _loading.load(demos["voc"], files_per_task=0)
    with pytest.raises(ValueError, match="either client or scheduler"):
        _loading.load(demos["voc"], client=object(), scheduler="threads")
    with pytest.raises(ValueError, match="format must be"):
        _loading.load(demos["voc"], format="pascal")
    with pytest.raises(ValueError, match="no paths"):
        _loading.load([])


def test_without_dask_the_import_error_says_what_to_install():
    code = (
        "import sys\n"
        "sys.modules['dask'] = None\n"
        "import fastanchor, fastanchor.datasets\n"
        "try:\n"
        "    import fastanchor.dask\n"
        "except ImportError as exc:\n"
        "    print('ImportError:', exc)\n"
        "from fastanchor.cli import main\n"
        "main(['anchors', '--demo', '--scheduler', 'threads', '-q'])\n"
    )
    env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "ImportError: fastanchor.dask needs Dask" in proc.stdout and 'pip install "fastanchor[dask]"' in proc.stdout
    assert '--scheduler needs Dask: pip install "fastanchor[dask]"' in proc.stderr


def _anchors(capsys: Any, *args: Any) -> Tuple[int, Any, str]:
    code = main(["anchors", *map(str, args), "--json", "-q"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def _without_timing(report: Any) -> Any:
    return json.loads(json.dumps(report), object_hook=lambda d: {k: v for k, v in d.items() if "second" not in k})


def test_cli_scheduler_local(demos, capsys):
    code, plain, _ = _anchors(capsys, demos["voc"], "--generations", "50")
    assert code == 0
    for scheduler in ("threads", "synchronous"):
        code, report, err = _anchors(capsys, demos["voc"], "--generations", "50", "--scheduler", scheduler)
        assert code == 0, err
        assert _without_timing(report) == _without_timing(plain)


def test_cli_scheduler_unreachable(demos, capsys, monkeypatch):
    monkeypatch.setattr(_common, "CONNECT_TIMEOUT", 1)
    code, _, err = _anchors(capsys, demos["voc"], "--scheduler", "tcp://127.0.0.1:9")
    assert code == 1
    assert "--scheduler tcp://127.0.0.1:9: cannot connect to a Dask scheduler there" in err


def test_local_cluster_and_cli_address(demos, capsys):
    """One real cluster (two worker processes): the library with a Client, and the CLI by address."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        for fmt in ("voc", "yolo", "coco"):
            assert outcome(_loading.load, demos[fmt], client=client, files_per_task=9) == outcome(
                datasets.load, demos[fmt]
            )
        code, report, err = _anchors(
            capsys, demos["voc"], "--generations", "50", "--scheduler", cluster.scheduler_address
        )
        assert code == 0, err
        code, plain, _ = _anchors(capsys, demos["voc"], "--generations", "50")
        assert _without_timing(report) == _without_timing(plain)


def test_voc_list_of_paths_in_order(demos):
    files = sorted(Path(demos["voc"]).glob("*.xml"))
    chosen = [files[7], files[2], files[30]]
    want = outcome(datasets.load_voc, chosen)
    assert want[0] == "ok" and want[2] == tuple(map(str, chosen))
    assert outcome(_loading.load, iter(chosen), scheduler="synchronous", files_per_task=2) == want


def test_coco_warnings_from_threads_all_arrive(demos, tmp_path):
    # Tasks in threads must not catch warnings (warnings.catch_warnings is process-wide state):
    # each file's warning arrives exactly once, however the threads interleave.
    doc = json.loads(Path(demos["coco"]).read_text())
    doc["annotations"][0]["bbox"][2] = 0
    paths = []
    for i in range(12):
        p = tmp_path / f"part{i}.json"
        p.write_text(json.dumps(doc))
        paths.append(p)
    for _ in range(3):
        with pytest.warns(datasets.AnnotationWarning) as rec:
            _loading.load(paths, scheduler="threads")
        got = sorted(str(w.message).split(" in ")[1].split(";")[0] for w in rec if "degenerate" in str(w.message))
        assert got == sorted(str(p) for p in paths)
