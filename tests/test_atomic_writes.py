"""Writers never destroy a file: every writer is atomic, the command line never writes over an
input of its run, options are checked before any work, write_anchors validates what it writes,
and the model and config readers turn hostile files into errors that name them.

A failed write is a real one: the child process that writes runs under a file-size limit
(RLIMIT_FSIZE), so the system refuses the write part way, as a full disk would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_hostile_files import PYTHON_DIR, assert_refused, run_child, voc_xml

from fastanchor.export import read_anchors, set_aspect_ratios, write_anchors
from fastanchor.export._formats import MAX_DECIMALS
from fastanchor.export._tfconfig import parse_text_proto

YOLOV5_MODEL = """# YOLOv5 model (a template)
nc: 80  # number of classes
depth_multiple: 0.33
anchors:
  - [10,13, 16,30, 33,23]  # P3/8
  - [30,61, 62,45, 59,119]  # P4/16
  - [116,90, 156,198, 373,326]  # P5/32
backbone:
  [[-1, 1, Conv, [64, 6, 2, 2]],
  ]
"""


def _levels(n: int = 3, per: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [np.sort(rng.uniform(5, 400, (per, 2)), axis=0) for _ in range(n)], [8.0 * 2**i for i in range(n)]


def _files(folder: Path) -> set:
    return {p.name for p in folder.iterdir()}


# ---------------------------------------------------------------------------------------------
# Atomic writes under a real write failure


def run_limited(code: str, fsize: int, cwd: Path) -> subprocess.CompletedProcess:
    """Run python ``code`` with files limited to ``fsize`` bytes (writes past it fail with EFBIG)."""

    def limit():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=cwd, preexec_fn=limit
    )


@pytest.mark.parametrize("suffix", [".yaml", ".cfg", ".json", ".py"])
def test_a_write_that_fails_part_way_leaves_the_file_as_it_was(tmp_path, suffix):
    target = tmp_path / f"model{suffix}"
    original = b"# the user's model: must survive\n" * 20
    target.write_bytes(original)
    code = f"""
import numpy as np
from fastanchor.export import write_anchors
levels = [np.full((400, 2), 12.5) + np.arange(800).reshape(400, 2) for _ in range(3)]
try:
    write_anchors({str(target)!r}, levels, [8, 16, 32], decimals=3)
except OSError as exc:
    print("ERROR", exc)
"""
    proc = run_limited(code, 4096, tmp_path)
    assert "ERROR" in proc.stdout, proc.stdout + proc.stderr
    assert str(target) in proc.stdout and "File too large" in proc.stdout
    assert target.read_bytes() == original
    assert _files(tmp_path) == {target.name}, "a temporary file was left behind"


def test_the_cli_updating_a_model_in_place_keeps_it_when_the_write_fails(tmp_path):
    model = tmp_path / "yolov5s.yaml"
    model.write_text(YOLOV5_MODEL + "# padding\n" * 600)  # the new model is larger than the limit
    original = model.read_bytes()
    data = tmp_path / "ann"
    data.mkdir()
    for i in range(40):
        (data / f"{i}.xml").write_text(voc_xml(box=(1, 2, 10 + 3 * i, 15 + 2 * i)))
    code = f"""
import sys
from fastanchor.cli import main
sys.exit(main(["anchors", {str(data)!r}, "--model", {str(model)!r}, "--out", {str(model)!r}, "--generations", "5",
               "-q"]))
"""
    proc = run_limited(code, len(original) - 100, tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert f"cannot write {model}" in proc.stderr and "File too large" in proc.stderr
    assert model.read_bytes() == original
    assert _files(tmp_path) == {"yolov5s.yaml", "ann"}


def test_plots_and_configs_are_written_atomically(tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "anchors.png"
    plot.write_bytes(b"old plot")
    config = tmp_path / "pipeline.config"
    config.write_text("model { ssd { anchor_generator { ssd_anchor_generator { aspect_ratios: 1.0 } } } }\n")
    before = config.read_bytes()
    code = f"""
import numpy as np
from fastanchor.plot import plot_anchors
from fastanchor._fileio import atomic_write
from fastanchor.export import set_aspect_ratios
wh = np.random.default_rng(0).uniform(5, 300, (5000, 2))
for what, fn in (("plot", lambda: plot_anchors(wh, [wh[:9]], {str(plot)!r})),
                 ("config", lambda: atomic_write({str(config)!r}, set_aspect_ratios(open({str(config)!r}).read(),
                                                                               [0.5] * 200, 4)))):
    try:
        fn()
    except OSError as exc:
        print("ERROR", what, exc)
"""
    proc = run_limited(code, 2000, tmp_path)
    assert f"ERROR plot cannot write {plot}" in proc.stdout, proc.stdout + proc.stderr
    assert f"ERROR config cannot write {config}" in proc.stdout
    assert plot.read_bytes() == b"old plot" and config.read_bytes() == before
    assert _files(tmp_path) == {"anchors.png", "pipeline.config"}


def test_atomic_writes_keep_permissions_and_write_through_links(tmp_path):
    from fastanchor._fileio import atomic_write

    real = tmp_path / "real.yaml"
    real.write_text("old")
    os.chmod(real, 0o640)
    link = tmp_path / "link.yaml"
    os.symlink(real, link)
    atomic_write(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert real.stat().st_mode & 0o777 == 0o640


# ---------------------------------------------------------------------------------------------
# The command line never writes over an input


def _dataset(tmp_path: Path, fmt: str) -> Path:
    if fmt == "voc":
        d = tmp_path / "voc"
        d.mkdir()
        for i in range(12):
            (d / f"{i}.xml").write_text(voc_xml(box=(1, 2, 10 + 3 * i, 15 + 2 * i)))
        return d
    if fmt == "coco":
        doc = {
            "images": [{"id": i, "width": 100, "height": 80, "file_name": f"{i}.jpg"} for i in range(12)],
            "annotations": [
                {"id": i, "image_id": i, "category_id": 1, "bbox": [1, 2, 10 + 3 * i, 15 + 2 * i]} for i in range(12)
            ],
            "categories": [{"id": 1, "name": "a"}],
        }
        (tmp_path / "coco").mkdir()
        path = tmp_path / "coco" / "instances.json"
        path.write_text(json.dumps(doc))
        return path
    from test_hostile_files import yolo_tree

    return yolo_tree(tmp_path / "yolo", n=12)


def _alias(path: Path, how: str) -> Path:
    """Another name for the same file."""
    if how == "same":
        return path
    other = path.parent / ("alias-" + path.name)
    if how == "symlink":
        os.symlink(path, other)
    elif how == "hardlink":
        os.link(path, other)
    elif how == "dotted":
        return path.parent / "." / path.name
    return other


def _cli(*argv) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "fastanchor", *map(str, argv)], capture_output=True, text=True, timeout=300, env=env
    )


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "dotted"])
@pytest.mark.parametrize(
    "case", ["coco json", "yolo data.yaml", "voc folder member", "plot over the model", "plot over out"]
)
def test_outputs_over_an_input_are_refused_before_any_work(tmp_path, case, how):
    extra = []
    option = "--out"
    if case in ("coco json", "yolo data.yaml"):
        dataset = _dataset(tmp_path, "coco" if case == "coco json" else "yolo")
        victim = dataset
    elif case == "voc folder member":
        dataset = _dataset(tmp_path, "voc")
        victim = dataset / "0.json"
        victim.write_text('{"anything": "the dataset folder holds"}')
    elif case == "plot over the model":
        dataset = _dataset(tmp_path, "voc")
        victim = tmp_path / "yolov5s.yaml"
        victim.write_text(YOLOV5_MODEL)
        extra = ["--model", victim]
        option = "--plot"
    else:
        dataset = _dataset(tmp_path, "voc")
        victim = tmp_path / "a.json"
        victim.write_text("{}")
        extra = ["--out", victim]
        option = "--plot"
    before = victim.read_bytes()
    proc = _cli("anchors", dataset, option, _alias(victim, how), "--generations", "3", "-q", *extra)
    assert proc.returncode == 2, proc.stderr
    assert "argument --out" in proc.stderr or "argument --plot" in proc.stderr
    assert "loaded" not in proc.stderr and victim.read_bytes() == before


def test_updating_the_model_in_place_is_allowed(tmp_path):
    dataset = _dataset(tmp_path, "voc")
    model = tmp_path / "yolov5s.yaml"
    model.write_text(YOLOV5_MODEL)
    proc = _cli("anchors", dataset, "--model", model, "--out", model, "--generations", "3", "-q")
    assert proc.returncode == 0, proc.stderr
    text = model.read_text()
    assert text.startswith("# YOLOv5 model (a template)") and "backbone:" in text
    assert read_anchors(str(model)).anchors.shape == (9, 2)


def test_ssd_never_writes_over_the_dataset_but_updates_its_config(tmp_path):
    dataset = _dataset(tmp_path, "coco")
    proc = _cli("ssd", dataset, "--out", dataset)
    assert proc.returncode == 2 and "argument --out" in proc.stderr
    config = tmp_path / "pipeline.config"
    config.write_text("model { ssd { anchor_generator { ssd_anchor_generator { aspect_ratios: 1.0 } } } }")
    proc = _cli("ssd", dataset, "--config", config, "--out", config, "-n", "2")
    assert proc.returncode == 0, proc.stderr
    ratios = [c.value for c in parse_text_proto(config.read_text()).walk() if c.name == "aspect_ratios"]
    assert len(ratios) == 2


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_out_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    dataset = _dataset(tmp_path, "voc")
    out = tmp_path / "out.json"
    os.mkdir(out) if kind == "folder" else os.mkfifo(out)
    proc = _cli("anchors", dataset, "--out", out, "--generations", "3", "-q")
    assert proc.returncode == 2 and "not a regular file" in proc.stderr


# ---------------------------------------------------------------------------------------------
# Options checked up front

BAD_OPTIONS = {
    "--decimals": ["400", "-1", "13", "1e3", "nan", "9" * 5000],
    "--img-size": ["1e308", "inf", "nan", "0", "-640", "640x1e308", "1e6"],
    "--strides": ["8,16,1e308", "nan", "0", "-8", ",".join(["8"] * 40)],
    "-k": ["0", "-3", "1e9", "10000000"],
    "--levels": ["0", "17", "99999999999999999999"],
    "--generations": ["-1", "1e12", "100000000000"],
    "--seed": ["-1", str(2**64), "abc"],
    "--thr": ["0", "inf", "nan", "-4", "1e308"],
    "--min-size": ["-1", "nan", "inf", "1e308"],
}


@pytest.mark.parametrize("option, value", [(o, v) for o, vs in BAD_OPTIONS.items() for v in vs])
def test_bad_options_exit_2_naming_the_option_before_loading(tmp_path, option, value):
    from fastanchor.cli import main

    missing = tmp_path / "no-such-dataset"  # loading it would fail with status 1
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "anchors",
                str(missing),
                f"{option}={value}" if value.startswith("-") else option,
                *([] if value.startswith("-") else [value]),
            ]
        )
    assert exc.value.code == 2


@pytest.mark.parametrize(
    "option, value",
    [("--decimals", "400"), ("--img-size", "1e308"), ("-n", "0"), ("--seed", "-5"), ("--image-size", "1e308x300")],
)
def test_bad_ssd_options_name_the_option(tmp_path, option, value, capsys):
    from fastanchor.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["ssd", str(tmp_path / "none"), f"{option}={value}"])
    assert exc.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err or option == "--image-size"


# ---------------------------------------------------------------------------------------------
# write_anchors validates


@given(
    bad=st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0, -1e-300, -np.finfo(float).max]),
    level=st.integers(0, 2),
    row=st.integers(0, 2),
    col=st.integers(0, 1),
    suffix=st.sampled_from([".yaml", ".cfg", ".py", ".json"]),
)
@settings(max_examples=40)
def test_write_anchors_refuses_anchors_that_are_not_sizes(tmp_path_factory, bad, level, row, col, suffix):
    levels, strides = _levels()
    levels[level][row, col] = bad
    path = tmp_path_factory.mktemp("w") / f"m{suffix}"
    with pytest.raises(ValueError, match=rf"levels\[{level}\]\[{row}\].*finite and positive"):
        write_anchors(str(path), levels, strides)
    assert not path.exists()


@pytest.mark.parametrize("decimals", [-1, 13, 308, 400, 10**20, 2.5, True, "2", None])
def test_write_anchors_refuses_decimals_out_of_range(tmp_path, decimals):
    levels, strides = _levels()
    with pytest.raises((ValueError, TypeError), match="decimals"):
        write_anchors(str(tmp_path / "m.json"), levels, strides, decimals=decimals)


@given(
    decimals=st.integers(0, MAX_DECIMALS),
    scale=st.floats(1e-3, 1e6),
    suffix=st.sampled_from([".yaml", ".cfg", ".py", ".json"]),
)
@settings(max_examples=40)
def test_written_anchors_read_back_finite_and_positive(tmp_path_factory, decimals, scale, suffix):
    levels, strides = _levels()
    levels = [a * scale for a in levels]
    path = tmp_path_factory.mktemp("w") / f"m{suffix}"
    write_anchors(str(path), levels, strides, decimals=decimals)
    text = path.read_text()
    assert "nan" not in text.lower() and "inf" not in text.lower()
    back = read_anchors(str(path)).anchors
    assert np.isfinite(back).all() and (back > 0).all() and back.shape == (9, 2)


# ---------------------------------------------------------------------------------------------
# Model and config readers on hostile files

HOSTILE_MODELS = {
    ".yaml": {
        "deep": "anchors: " + "[" * 5000 + "]" * 5000 + "\n",
        "digits": "anchors:\n  - [" + "9" * 5000 + ", 13]\n",
        "huge float": "anchors:\n  - [1e400, 13]\n",
        "negative": "anchors:\n  - [-10, 13, 16, 30]\n",
        "text": "anchors:\n  - [a, b]\n",
        "mapping": "anchors: {a: 1}\n",
        "recursive": "anchors: &a [*a]\n",
    },
    ".json": {
        "deep": '{"anchors": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "digits": '{"anchors": [[' + "9" * 5000 + ", 13]]}",
        "huge": '{"anchors": [[1e400, 13]], "img_size": 1e400, "strides": [1e400]}',
        "strides of text": '{"anchors": [[[10, 13]], [[20, 30]]], "strides": ["a", 8]}',
        "nested strides": '{"anchors": [[[10, 13]], [[20, 30]]], "strides": [[1], [2]]}',
        "img nan": '{"anchors": [[10, 13]], "img_size": NaN}',
    },
    ".cfg": {
        "digits": "[net]\nwidth=" + "9" * 5000 + "\nheight=416\n[yolo]\nmask=0\nanchors=10,13\n",
        "huge": "[yolo]\nmask=0\nanchors=1e400,13\n",
        "mask digits": "[yolo]\nmask=" + "9" * 5000 + "\nanchors=10,13\n",
    },
    ".py": {
        "deep": "x = " + "[" * 100_000 + "]" * 100_000 + "\n",
        "deep dict": "m = dict(prior_generator=dict(type='YOLOAnchorGenerator', base_sizes="
        + "[" * 3000
        + "]" * 3000
        + "))\n",
        "digits": "m = dict(type='YOLOAnchorGenerator', base_sizes=[[(" + "9" * 5000 + ", 13)]], strides=[8])\n",
        "huge stride": "m = dict(type='YOLOAnchorGenerator', base_sizes=[[(10, 13)]], strides=[10**400])\n",
        "nul": "m = 1\x00\n",
    },
}


@pytest.mark.parametrize("suffix, case", [(s, c) for s, cs in HOSTILE_MODELS.items() for c in cs])
def test_hostile_model_files_raise_a_value_error_naming_the_file(tmp_path, suffix, case):
    path = tmp_path / f"model{suffix}"
    path.write_text(HOSTILE_MODELS[suffix][case])
    result = run_child(f"from fastanchor.export import read_anchors\nreport(read_anchors, {str(path)!r})")
    if result["ok"]:  # a file whose bad parts are not needed may still give anchors
        assert case in ("digits", "huge", "img nan", "strides of text", "nested strides"), result
        return
    assert_refused(result, path, kinds=("ValueError",))


@pytest.mark.parametrize("levels, fanout", [(9, 9), (6, 30), (26, 2)])
def test_a_model_yaml_alias_bomb_is_refused(tmp_path, levels, fanout):
    """The bomb inside the anchors block itself (the reader parses that block only)."""
    lines = ["anchors:", "  - &l0 [10, 13]"]
    lines += [f"  - &l{i} [{', '.join([f'*l{i - 1}'] * fanout)}]" for i in range(1, levels + 1)]
    path = tmp_path / "model.yaml"
    path.write_text(YOLOV5_MODEL.replace("anchors:", "\n".join(lines) + "\nold_anchors:"))
    result = run_child(f"from fastanchor.export import read_anchors\nreport(read_anchors, {str(path)!r})")
    assert_refused(result, path, kinds=("ValueError",), contains="aliases")
    proc = _cli("check", tmp_path, "--model", path)  # the command line: one line, exit 1, the file named
    assert proc.returncode == 1 and str(path) in proc.stderr and "MemoryError" not in proc.stderr


@pytest.mark.parametrize("data", [b"\xff\xfe\x00a", b"anchors: [[10, 13]]\n\xe9\n"])
def test_a_model_that_is_not_utf8_is_named(tmp_path, data):
    path = tmp_path / "m.yaml"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="m.yaml.*UTF-8"):
        read_anchors(str(path))


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_a_model_that_is_a_special_file_is_refused(tmp_path, kind):
    path = tmp_path / "m.yaml"
    os.mkfifo(path) if kind == "fifo" else os.symlink("/dev/zero", path)
    result = run_child(f"from fastanchor.export import read_anchors\nreport(read_anchors, {str(path)!r})")
    assert_refused(result, path, kinds=("OSError",), contains="not a regular file")


# ---------------------------------------------------------------------------------------------
# pipeline.config in any layout

PIPELINE_TOKENS = [
    "model",
    "{",
    "ssd",
    "{",
    "num_classes",
    ":",
    "3",
    "image_resizer",
    "{",
    "fixed_shape_resizer",
    "{",
    "height",
    ":",
    "320",
    "width",
    ":",
    "300",
    "}",
    "}",
    "anchor_generator",
    "{",
    "ssd_anchor_generator",
    "{",
    "num_layers",
    ":",
    "6",
    "aspect_ratios",
    ":",
    "1.0",
    "aspect_ratios",
    ":",
    "2.0",
    "reduce_boxes_in_lowest_layer",
    ":",
    "true",
    "}",
    "}",
    "}",
    "}",
    "train_config",
    ":",
    "{",
    "batch_size",
    ":",
    "24",
    "fine_tune_checkpoint",
    ":",
    '"a {b} # c"',
    "}",
]


@given(
    seps=st.lists(
        st.sampled_from([" ", "\n", "  ", "\t", " # a comment { \n", "\r\n", "\n\n  "]),
        min_size=len(PIPELINE_TOKENS),
        max_size=len(PIPELINE_TOKENS),
    ),
    ratios=st.lists(st.floats(0.05, 20), min_size=1, max_size=6),
)
@settings(max_examples=60)
def test_aspect_ratios_are_set_in_any_layout(seps, ratios):
    text = "".join(tok + sep for tok, sep in zip(PIPELINE_TOKENS, seps))
    out = set_aspect_ratios(text, ratios, 3)

    def fields(t):
        return [(f.name, f.value) for f in parse_text_proto(t).walk() if f.value is not None]

    before, after = fields(text), fields(out)
    assert [v for n, v in after if n == "aspect_ratios"] == [f"{r:.3f}" for r in ratios]
    assert [f for f in after if f[0] != "aspect_ratios"] == [f for f in before if f[0] != "aspect_ratios"]
    from fastanchor.export import config_image_size

    assert config_image_size(out) == (300.0, 320.0)


def test_a_one_line_config_is_edited_in_place():
    text = (
        "model { ssd { anchor_generator { ssd_anchor_generator { num_layers: 6 aspect_ratios: 1.0 "
        "aspect_ratios: 2.0 min_scale: 0.2 } } } }"
    )
    assert set_aspect_ratios(text, [0.5, 3.0], 1) == text.replace(
        "aspect_ratios: 1.0 aspect_ratios: 2.0", "aspect_ratios: 0.5 aspect_ratios: 3.0"
    )


@pytest.mark.parametrize(
    "text",
    [
        "model { ssd {",
        "model { } }",
        "a: ",
        "model { x: [1, 2 }",
        "{" * 500 + "}" * 500,
        "a" + " { a" * 200 + " }" * 200,
    ],
)
def test_malformed_configs_raise_a_value_error(text):
    with pytest.raises(ValueError):
        set_aspect_ratios(text, [1.0], 1)
