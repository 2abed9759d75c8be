"""A picture of the boxes and the anchors: width/height density on log axes, anchors marked.

Needs matplotlib: ``pip install 'fastanchor[plot]'``.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np

from ._validation import as_wh
from .export import level_name

__all__ = ["plot_anchors"]

_LEVEL_COLOURS = ("#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "plotting needs matplotlib: install it with `pip install 'fastanchor[plot]'` (or `pip install matplotlib`)"
        ) from None
    return matplotlib


def plot_anchors(
    wh: Any,
    levels: Sequence[Any],
    path: Optional[str] = None,
    *,
    strides: Optional[Sequence[float]] = None,
    reference: Optional[Sequence[Any]] = None,
    reference_label: str = "YOLOv5 default",
    title: Optional[str] = None,
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
        Write the figure there (PNG, or any format matplotlib knows from the suffix).
    strides : sequence of float, optional
        The levels' strides, for the legend.
    reference : sequence of array_like (m, 2), optional
        Other anchors to show for comparison (hollow markers), e.g. YOLOv5's defaults.
    reference_label : str
        Their legend label.
    title : str, optional
    ax : matplotlib Axes, optional
        Draw into these axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    boxes = as_wh(wh)
    _matplotlib()
    if ax is None:
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

        fig = Figure(figsize=(7.5, 6.0), dpi=120)
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    w, h = boxes[:, 0], boxes[:, 1]
    hb = ax.hexbin(w, h, xscale="log", yscale="log", bins="log", gridsize=70, cmap="Blues", mincnt=1, linewidths=0.2)
    fig.colorbar(hb, ax=ax, label="boxes per cell (log scale)")
    lo = float(min(w.min(), h.min())) * 0.8
    hi = float(max(w.max(), h.max())) * 1.25
    for level_anchors in levels:
        a = np.asarray(level_anchors, dtype=np.float64).reshape(-1, 2)
        lo, hi = min(lo, float(a.min()) * 0.8), max(hi, float(a.max()) * 1.25)
    ax.plot([lo, hi], [lo, hi], color="0.6", lw=0.8, ls=":", zorder=1, label="square (w = h)")
    if reference is not None:
        ref = np.concatenate([np.asarray(r, dtype=np.float64).reshape(-1, 2) for r in reference])
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
    for i, level_anchors in enumerate(levels):
        a = np.asarray(level_anchors, dtype=np.float64).reshape(-1, 2)
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
            ax.annotate(f"{x:.0f}x{y:.0f}", (x, y), xytext=(5, 4), textcoords="offset points", fontsize=7, zorder=5)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("box width (pixels)")
    ax.set_ylabel("box height (pixels)")
    ax.set_title(title or f"{boxes.shape[0]:,} boxes and their anchors")
    ax.legend(loc="upper left", fontsize=8, framealpha=0.85)
    ax.grid(True, which="major", lw=0.3, alpha=0.5)
    if path is not None:
        save_figure(fig, path)
    return fig


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
