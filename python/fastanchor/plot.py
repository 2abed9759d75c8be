"""A picture of the boxes and the anchors: width/height density on log axes, anchors marked.

Needs matplotlib: ``pip install 'fastanchor[plot]'``.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np

from ._validation import as_wh
from .export import level_name

__all__ = ["dataset_label", "plot_anchors"]

_LEVEL_COLOURS = ("#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "plotting needs matplotlib: install it with `pip install 'fastanchor[plot]'` (or `pip install matplotlib`)"
        ) from None
    return matplotlib


def _decimals_needed(values: np.ndarray) -> int:
    """The fewest decimal places (0 to 3) that show every value as it is, to 3 decimals."""
    v = np.round(np.asarray(values, dtype=np.float64), 3)
    for d in range(3):
        if np.allclose(np.round(v, d), v, rtol=0, atol=1e-9):
            return d
    return 3


#: Up to this many boxes in the fullest cell, the colour scale is linear with whole-number ticks.
_LINEAR_MAX_COUNT = 10


def plot_anchors(
    wh: Any,
    levels: Sequence[Any],
    path: Optional[str] = None,
    *,
    strides: Optional[Sequence[float]] = None,
    reference: Optional[Sequence[Any]] = None,
    reference_label: str = "YOLOv5 default",
    title: Optional[str] = None,
    thr: Optional[float] = 4.0,
    decimals: Optional[int] = None,
    ax: Any = None,
) -> Any:
    """Draw the density of box widths and heights (log axes) with the anchors marked.

    Parameters
    ----------
    wh : array_like, shape (N, 2)
        Box widths and heights (pixels, at the network input size).
    levels : sequence of array_like (m, 2)
        Anchors per detection level, finest first (or one (k, 2) array in a list).
    path : str, optional
        Write the figure there (PNG, or any format matplotlib knows from the suffix); the folder is
        created when missing.
    strides : sequence of float, optional
        The levels' strides, for the legend.
    reference : sequence of array_like (m, 2), optional
        Other anchors to show for comparison (hollow markers), e.g. YOLOv5's defaults.
    reference_label : str
        Their legend label.
    title : str, optional
        Default: the number of boxes.
    thr : float or None
        YOLOv5's anchor threshold: a box counts as covered when both its sides are within a factor
        ``thr`` of some anchor's. The figure states the best possible recall (BPR), fitness and
        anchors per box at this threshold, of the anchors (and of the reference), on ``wh``, as
        :func:`fastanchor.anchor_fitness` computes them. None: no such box.
    decimals : int, optional
        Decimal places of the anchors' labels (give those of the written file). Default: as many
        as the values need (at most 3), so that 12.5 is not shown as 12.
    ax : matplotlib Axes, optional
        Draw into these axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    boxes = as_wh(wh)
    mpl = _matplotlib()
    if decimals is not None and (isinstance(decimals, bool) or not isinstance(decimals, (int, np.integer))):
        raise TypeError(f"decimals must be an integer, got {decimals!r}")
    if decimals is not None and not 0 <= decimals <= 6:
        raise ValueError(f"decimals must be between 0 and 6, got {decimals}")
    anchors = [np.asarray(a, dtype=np.float64).reshape(-1, 2) for a in levels]
    if not anchors or any(len(a) == 0 for a in anchors):
        raise ValueError("levels must hold at least one anchor per level")
    for i, a in enumerate(anchors):
        bad = ~(np.isfinite(a).all(1) & (a > 0).all(1))
        if bad.any():
            raise ValueError(
                f"level {i + 1} anchor {int(np.flatnonzero(bad)[0])} is {a[bad][0].tolist()}: sides must be > 0"
            )
    ref = None
    if reference is not None:
        ref = np.concatenate([np.asarray(r, dtype=np.float64).reshape(-1, 2) for r in reference])
    if ax is None:
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

        fig = Figure(figsize=(7.5, 6.0), dpi=120)
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    w, h = boxes[:, 0], boxes[:, 1]
    hb = ax.hexbin(w, h, xscale="log", yscale="log", gridsize=70, cmap="Blues", mincnt=1, linewidths=0.2)
    counts = hb.get_array()
    top = float(counts.max()) if counts is not None and len(counts) else 1.0
    if top > _LINEAR_MAX_COUNT:  # many boxes per cell: a log colour scale, ticks as plain numbers
        hb.set_norm(mpl.colors.LogNorm(vmin=1.0, vmax=top))
        cbar = fig.colorbar(hb, ax=ax, label="boxes per cell (log scale)")
        cbar.ax.yaxis.set_major_locator(mpl.ticker.LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
        cbar.ax.yaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else ""))
        cbar.ax.yaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    else:  # a few boxes per cell: whole numbers 1..top
        hb.set_norm(mpl.colors.Normalize(vmin=1.0, vmax=max(top, 2.0)))
        cbar = fig.colorbar(hb, ax=ax, label="boxes per cell")
        cbar.ax.yaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
        cbar.ax.yaxis.set_minor_locator(mpl.ticker.NullLocator())
    every = [boxes, *anchors] + ([ref] if ref is not None else [])
    lo = min(float(a.min()) for a in every) * 0.8
    hi = max(float(a.max()) for a in every) * 1.25
    ax.plot([lo, hi], [lo, hi], color="0.6", lw=0.8, ls=":", zorder=1, label="square (w = h)")
    if ref is not None:
        ax.scatter(
            ref[:, 0],
            ref[:, 1],
            s=70,
            facecolors="none",
            edgecolors="0.25",
            linewidths=1.3,
            marker="s",
            zorder=3,
            label=reference_label,
        )
    shown = _decimals_needed(np.concatenate(anchors)) if decimals is None else int(decimals)
    for i, a in enumerate(anchors):
        name = level_name(strides[i]) if strides is not None and i < len(strides) else f"level {i + 1}"
        ax.scatter(
            a[:, 0],
            a[:, 1],
            s=90,
            color=_LEVEL_COLOURS[i % len(_LEVEL_COLOURS)],
            edgecolors="black",
            linewidths=0.8,
            marker="o",
            zorder=4,
            label=f"anchors {name}",
        )
        for x, y in a:
            right = np.log(x / lo) > 0.8 * np.log(hi / lo)  # near the right edge: label on the left
            ax.annotate(
                f"{x:.{shown}f}x{y:.{shown}f}",
                (x, y),
                xytext=(-5 if right else 5, 4),
                textcoords="offset points",
                ha="right" if right else "left",
                fontsize=7,
                zorder=5,
            )
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("box width (pixels)")
    ax.set_ylabel("box height (pixels)")
    ax.set_title(title or f"{boxes.shape[0]:,} boxes and their anchors")
    ax.legend(loc="upper left", fontsize=8, framealpha=0.85)
    ax.grid(True, which="major", lw=0.3, alpha=0.5)
    if thr is not None:
        ax.text(
            0.98,
            0.02,
            _fitness_text(boxes, np.concatenate(anchors), ref, reference_label, float(thr)),
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            multialignment="left",
            fontsize=7.5,
            family="monospace",
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85, "edgecolor": "0.7"},
            zorder=6,
        )
    if path is not None:
        save_figure(fig, path)
    return fig


def _fitness_text(boxes: np.ndarray, anchors: np.ndarray, ref: Optional[np.ndarray], ref_label: str, thr: float) -> str:
    """The BPR / fitness box: what a user compares with YOLOv5's AutoAnchor line."""
    from ._fitness import anchor_fitness

    rows = [("anchors", anchor_fitness(anchors, boxes, thr=thr))]
    if ref is not None:
        rows.append((ref_label, anchor_fitness(ref, boxes, thr=thr)))
    width = max(len(name) for name, _ in rows)
    lines = [f"thr {thr:g}: a box is covered when w and h are within {thr:g}x of an anchor's"]
    lines += [f"{name:<{width}}  BPR {r.bpr:.4f}  fitness {r.fitness:.4f}  anchors/box {r.aat:.2f}" for name, r in rows]
    return "\n".join(lines)


def dataset_label(path: Any) -> str:
    """A short name of a dataset path for titles: its last two components (``coco128/data.yaml``,
    ``VOC2007/Annotations``), since a file name alone (``data.yaml``) names no dataset."""
    parts = [p for p in os.path.normpath(os.fspath(path)).replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts[-2:]) if parts else os.fspath(path)


def save_figure(fig: Any, path: str) -> None:
    """Save a matplotlib figure to ``path`` atomically (rendered in memory, then written to a
    temporary file in the same folder and renamed: a failure leaves an existing file as it was).
    The folder is created when missing; the format follows the suffix (PNG by default)."""
    import io

    from ._fileio import atomic_write

    suffix = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    buf = io.BytesIO()
    fig.savefig(buf, format=suffix, bbox_inches="tight")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, buf.getvalue())
