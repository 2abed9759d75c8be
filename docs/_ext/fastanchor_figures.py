"""Figures and generated text of the documentation, made when the docs build.

Nothing here is committed output: the box-density figure comes from the built-in demo dataset run
through the public API, the speed and scaling figures from the measured figures in
``benchmarks/RESULTS.md`` (the newest measurement of each), and the command-line reference from
the argument parser itself. A figure whose source figures cannot be found stops the build with a
message that says which, so the pages cannot drift from the benchmarks.

Run as a script, it writes the README's picture: ``python docs/_ext/fastanchor_figures.py``.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


class FigureSourceError(RuntimeError):
    """A figure's source numbers were not found in benchmarks/RESULTS.md."""


# --------------------------------------------------------------------------------------------
# The demo data, through the public API
# --------------------------------------------------------------------------------------------
def demo_boxes(img_size: int = 640) -> np.ndarray:
    """The demo dataset's boxes, written as Pascal VOC files, loaded back and letterboxed."""
    from fastanchor import datasets
    from fastanchor.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(io.StringIO()):
            status = main(["demo", tmp, "--format", "voc"])
        if status != 0:
            raise RuntimeError("`fastanchor demo` failed")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the demo's few degenerate boxes are dropped on purpose
            boxes = datasets.load(tmp, format="voc")
    return boxes.filter(drop_difficult=True).letterbox(img_size)


def density_figure(path: Path, *, small: bool = False) -> None:
    """Box widths and heights of the demo data with the anchors autoanchor finds for them."""
    import fastanchor
    from fastanchor.cli import YOLOV5_DEFAULT_ANCHORS
    from fastanchor.plot import plot_anchors

    wh = demo_boxes()
    result = fastanchor.autoanchor(wh, 9, seed=0)
    levels = fastanchor.split_levels(result.anchors, strides=(8, 16, 32))
    fig = plot_anchors(
        wh,
        levels,
        strides=(8, 16, 32),
        reference=YOLOV5_DEFAULT_ANCHORS,
        title=f"{len(wh):,} demo boxes (letterboxed to 640) and their 9 anchors",
    )
    if small:
        fig.set_size_inches(6.4, 5.0)
        fig.savefig(path, dpi=80, bbox_inches="tight")
    else:
        fig.savefig(path, dpi=110, bbox_inches="tight")


# --------------------------------------------------------------------------------------------
# Figures from benchmarks/RESULTS.md
# --------------------------------------------------------------------------------------------
def _table_rows(text: str) -> list[list[str]]:
    """Every row of every Markdown table, as stripped cells, in document order."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.match(r"^\|[-:| ]+\|$", line):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def _number(cell: str) -> float:
    m = re.search(r"([\d,]+(?:\.\d+)?)", cell.replace("**", ""))
    if not m:
        raise FigureSourceError(f"no number in {cell!r}")
    value = float(m.group(1).replace(",", ""))
    return value / 1000.0 if re.search(r"\d\s*ms\b", cell) else value


#: (label on the chart, the peer, a pattern of the row's first cell): the newest row that matches.
SPEED_ROWS = (
    ("autoanchor, 1M boxes", "YOLOv5-style numpy/scipy pipeline", None),
    ("one Lloyd iteration, median update", "numpy reference", r"^one Lloyd iteration, median update"),
    ("one Lloyd iteration, mean update", "numpy reference", r"^one Lloyd iteration, mean update"),
    ("kmeans_iou defaults, 1M boxes", "scikit-learn KMeans", r"^`kmeans_iou\(wh, 9\)` defaults, 1M"),
    ("kmeans_iou defaults, 10M boxes", "scikit-learn KMeans", r"^same, 10M boxes"),
    ("wh_iou 2000 x 2000", "numpy", r"^`wh_iou` 2000 x 2000"),
    ("box_iou 10,000 x 10,000", "numpy", r"^`box_iou` 10,000 x 10,000, float64"),
    ("match_priors, SSD300 priors", "numpy reference", r"^`match_priors`, 64 images x 50 GT, 8,732"),
)


def speed_rows(text: str) -> list[tuple[str, str, float, float]]:
    """(label, peer, fastanchor seconds, peer seconds) for SPEED_ROWS, newest measurement first."""
    rows = _table_rows(text)
    flat = " ".join(text.split())
    out = []
    for label, peer, pattern in SPEED_ROWS:
        if pattern is None:  # the autoanchor comparison is stated in prose
            m = re.search(
                r"`autoanchor\(wh, 9\)` with 1000 generations on 1M boxes ([\d.]+) s against "
                r"([\d.]+) s for the YOLOv5-style",
                flat,
            )
            if not m:
                raise FigureSourceError("the autoanchor vs YOLOv5-style pipeline figure")
            out.append((label, peer, float(m.group(1)), float(m.group(2))))
            continue
        for cells in rows:
            if len(cells) >= 4 and re.search(pattern, cells[0]) and re.search(r"\d", cells[1]):
                out.append((label, peer, _number(cells[1]), _number(cells[2])))
                break
        else:
            raise FigureSourceError(f"no table row matching {pattern!r}")
    return out


def scaling_runs(text: str) -> dict[str, list[float]]:
    """ns per box at 10^5 / 10^6 / 10^7 boxes: the newest whole-fit and one-iteration figures."""
    flat = " ".join(text.split())
    fit = re.search(r"whole default fits:? ([\d.]+) / ([\d.]+) / ([\d.]+) ns per box", flat)
    it = re.search(r"one median-update iteration ([\d.]+) / ([\d.]+) / ([\d.]+) ns per box", flat)
    if not fit or not it:
        raise FigureSourceError("the scaling figures (ns per box at 10^5 / 10^6 / 10^7)")
    return {
        "whole default fit (kmeans_iou, k = 9)": [float(g) for g in fit.groups()],
        "one Lloyd iteration, median update": [float(g) for g in it.groups()],
    }


def _figure(width: float, height: float) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    return fig, fig.add_subplot(1, 1, 1)


def speed_figure(path: Path, text: str) -> None:
    rows = speed_rows(text)
    fig, ax = _figure(8.0, 4.2)
    ratios = [p / f for _, _, f, p in rows]
    y = np.arange(len(rows))[::-1]
    ax.barh(y, ratios, color="#3b75af", height=0.6)
    ax.set_xscale("log")
    ax.set_yticks(y, [f"{label}\nvs {peer}" for label, peer, _, _ in rows], fontsize=8)
    for yi, r, (_, _, f, p) in zip(y, ratios, rows):
        ax.text(
            r * 1.08,
            yi,
            f"{r:,.0f}x  ({_fmt_s(f)} vs {_fmt_s(p)})" if r >= 10 else f"{r:.1f}x  ({_fmt_s(f)} vs {_fmt_s(p)})",
            va="center",
            fontsize=8,
        )
    ax.set_xlim(1, max(ratios) * 40)
    ax.set_xlabel("times as fast (log scale)")
    ax.set_title("fastanchor against the tools people use (2 cores; benchmarks/RESULTS.md)", fontsize=10)
    ax.grid(True, axis="x", which="major", lw=0.3, alpha=0.6)
    fig.savefig(path, bbox_inches="tight")


def _fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def scaling_figure(path: Path, text: str) -> None:
    runs = scaling_runs(text)
    fig, ax = _figure(6.4, 3.8)
    n = [1e5, 1e6, 1e7]
    for (label, ns), marker in zip(runs.items(), "os"):
        rel = [v / ns[1] for v in ns]
        ax.plot(n, rel, marker=marker, label=f"{label} ({ns[1]:g} ns per box at 10^6)")
    ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_ylim(0, 2.0)
    ax.set_xlabel("boxes")
    ax.set_ylabel("time per box, relative to 10^6 boxes")
    ax.set_title("Time per box at 10^5, 10^6 and 10^7 boxes", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(True, lw=0.3, alpha=0.6)
    fig.savefig(path, bbox_inches="tight")


# --------------------------------------------------------------------------------------------
# Command-line help
# --------------------------------------------------------------------------------------------
def cli_help(folder: Path) -> None:
    import os

    from fastanchor.cli import build_parser

    os.environ.setdefault("COLUMNS", "100")  # argparse wraps to the terminal; fix the width
    parser = build_parser()
    (folder / "cli-fastanchor.txt").write_text(parser.format_help())
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        (folder / f"cli-{name}.txt").write_text(p.format_help())


# --------------------------------------------------------------------------------------------
# Sphinx hook
# --------------------------------------------------------------------------------------------
def generate(app: Any = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    GENERATED.mkdir(exist_ok=True)
    text = RESULTS.read_text(encoding="utf-8")
    density_figure(GENERATED / "density.png")
    speed_figure(GENERATED / "speed.png", text)
    scaling_figure(GENERATED / "scaling.png", text)
    cli_help(GENERATED)


#: Toctree globs of pages other contributors add (guides, design notes): a glob that matches no
#: page yet is left out of the toctree instead of failing the build.
OPTIONAL_GLOBS = ("guides/*", "design*")


def drop_empty_globs(app: Any, docname: str, source: list[str]) -> None:
    if docname != "index":
        return
    srcdir = Path(app.srcdir)
    lines = source[0].splitlines(keepends=True)
    for pattern in OPTIONAL_GLOBS:
        if not any(srcdir.glob(pattern + ".md")) and not any(srcdir.glob(pattern + ".rst")):
            lines = [line for line in lines if line.strip() != pattern]
    source[0] = "".join(lines)


def setup(app: Any) -> dict:
    app.connect("builder-inited", generate)
    app.connect("source-read", drop_empty_globs)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")
    out = DOCS / "_static" / "boxes-and-anchors.png"
    density_figure(out, small=True)
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
