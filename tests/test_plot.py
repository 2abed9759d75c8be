"""fastanchor.plot: what the figure says (texts, limits, colour-bar ticks), checked on the figure's
objects (matplotlib Agg), not on pixels; and the plot that ``fastanchor anchors --plot`` draws."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import fastanchor
from fastanchor._demo import make_demo
from fastanchor.cli import main
from fastanchor.plot import dataset_label, plot_anchors

LEVELS = [np.array([[10.5, 13.25], [16.0, 30.0]]), np.array([[33.75, 23.0], [62.0, 45.5]])]


def _boxes(n=3000, seed=1):
    return np.exp(np.random.default_rng(seed).normal(3.5, 0.8, size=(n, 2)))


def _drawn(fig):
    fig.savefig(io.BytesIO(), format="png")  # lays out the ticks
    return fig


def _anchor_labels(fig):
    return {t.get_text() for t in fig.axes[0].texts if "x" in t.get_text() and "BPR" not in t.get_text()}


def _colourbar_labels(fig):
    return [t.get_text() for t in fig.axes[1].yaxis.get_ticklabels() if t.get_text()]


def test_anchor_labels_keep_the_decimals():
    fig = plot_anchors(_boxes(), LEVELS)
    assert _anchor_labels(fig) == {"10.50x13.25", "16.00x30.00", "33.75x23.00", "62.00x45.50"}
    fig = plot_anchors(_boxes(), LEVELS, decimals=1)
    assert "10.5x13.2" in _anchor_labels(fig) or "10.5x13.3" in _anchor_labels(fig)
    fig = plot_anchors(_boxes(), [np.array([[10.0, 13.0], [16.0, 30.0]])])
    assert _anchor_labels(fig) == {"10x13", "16x30"}
    with pytest.raises(ValueError, match="decimals"):
        plot_anchors(_boxes(), LEVELS, decimals=9)
    with pytest.raises(ValueError, match="level 2 anchor 1"):
        plot_anchors(_boxes(), [LEVELS[0], np.array([[1.0, 2.0], [0.0, 3.0]])])


def test_the_largest_reference_anchor_is_inside_the_axes():
    wh = _boxes()
    ref = [np.array([[10, 13], [16, 30]]), np.array([[373, 326], [2 * wh.max(), 1.5 * wh.max()]])]
    fig = plot_anchors(wh, LEVELS, reference=ref)
    ax = fig.axes[0]
    assert ax.get_xlim()[1] > 2 * wh.max() and ax.get_ylim()[1] > 1.5 * wh.max()
    assert ax.get_xlim()[0] < min(wh.min(), 10) and ax.get_ylim()[0] < min(wh.min(), 13)


def test_small_counts_get_whole_number_colour_ticks():
    wh = _boxes(n=40, seed=3)  # a few boxes per hexagon at most
    fig = _drawn(plot_anchors(wh, LEVELS))
    labels = _colourbar_labels(fig)
    assert labels and all(lbl.replace("\u2212", "-").isdigit() for lbl in labels), labels
    assert all(1 <= int(lbl) <= 10 for lbl in labels)
    assert "log" not in fig.axes[1].get_ylabel()


def test_large_counts_get_a_log_colour_scale_with_plain_numbers():
    wh = np.exp(np.random.default_rng(0).normal(3.5, 0.3, size=(20000, 2)))
    fig = _drawn(plot_anchors(wh, LEVELS))
    labels = _colourbar_labels(fig)
    assert "log" in fig.axes[1].get_ylabel()
    assert labels and all(lbl.replace(",", "").isdigit() and lbl.lstrip("125").strip("0,") == "" for lbl in labels), (
        labels
    )
    assert len(labels) >= 2


def test_the_bpr_box_states_thr_and_the_fitness_of_both_anchor_sets():
    wh = _boxes()
    ref = [np.array([[10, 13], [16, 30], [33, 23]])]
    fig = plot_anchors(wh, LEVELS, reference=ref, reference_label="YOLOv5 default", thr=3.0)
    (box,) = [t.get_text() for t in fig.axes[0].texts if "BPR" in t.get_text()]
    mine = fastanchor.anchor_fitness(np.concatenate(LEVELS), wh, thr=3.0)
    theirs = fastanchor.anchor_fitness(np.concatenate(ref), wh, thr=3.0)
    assert "thr 3:" in box
    assert f"BPR {mine.bpr:.4f}  fitness {mine.fitness:.4f}" in box.splitlines()[1]
    assert box.splitlines()[2].startswith("YOLOv5 default") and f"BPR {theirs.bpr:.4f}" in box
    fig = plot_anchors(wh, LEVELS, thr=None)
    assert not [t for t in fig.axes[0].texts if "BPR" in t.get_text()]


@pytest.mark.parametrize(
    "path, label",
    [
        ("datasets/coco128/data.yaml", "coco128/data.yaml"),
        ("VOCdevkit/VOC2007/Annotations/", "VOC2007/Annotations"),
        ("instances_val2017.json", "instances_val2017.json"),
        ("./a/b/../c.json", "a/c.json"),
    ],
)
def test_dataset_label(path, label):
    assert dataset_label(path) == label


def test_the_cli_plot_names_the_dataset_and_writes_into_a_new_folder(tmp_path, monkeypatch, capsys):
    import fastanchor.plot as plot

    data = make_demo(str(tmp_path / "mydata"), "yolo", n_images=40, seed=2)
    figures = []
    real_save = plot.save_figure
    monkeypatch.setattr(plot, "save_figure", lambda fig, path: (figures.append(fig), real_save(fig, path)))
    png = tmp_path / "new" / "folder" / "p.png"
    code = main(["anchors", data, "--generations", "30", "--decimals", "1", "--thr", "3.5", "--plot", str(png), "-q"])
    out = capsys.readouterr().out
    assert code == 0 and f"wrote {png}" in out and png.is_file()
    (fig,) = figures
    title = fig.axes[0].get_title()
    assert title.startswith(dataset_label(data) + ":") and os.path.basename(data) != dataset_label(data)
    labels = _anchor_labels(fig)
    assert len(labels) == 9 and all(len(part.split(".")[1]) == 1 for lbl in labels for part in lbl.split("x"))
    assert any("thr 3.5:" in t.get_text() for t in fig.axes[0].texts)
