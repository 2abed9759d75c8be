"""The learned anchors' paths over the box density in log w-h space (as the paper's Fig. 2).

Reads the trajectories robustness.py saved and draws, for one dataset, the density of its boxes
in (log w, log h) and the path of every anchor from each start (with the warm-ups), start marked
by a circle and end by a cross.

    PYTHONPATH=python /work/venv-torch/bin/python benchmarks/learned_anchors/plot_paths.py \\
        --paths /tmp/learned_anchors/paths.npz --dataset coco_mini:640 \\
        --out docs/_static/learned_anchors_paths.png
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import real_boxes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paths", default="/tmp/learned_anchors/paths.npz")
    ap.add_argument("--dataset", default="coco_mini:640")
    ap.add_argument("--config", default="warm-ups")
    ap.add_argument("--starts", nargs="+", default=["identical", "uniform", "k-means"])
    ap.add_argument("--out", default="docs/_static/learned_anchors_paths.png")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name, size = args.dataset.split(":")
    lg = np.log(real_boxes(name, int(size)))
    paths = np.load(args.paths)
    fig, axes = plt.subplots(1, len(args.starts), figsize=(3.2 * len(args.starts), 3.3), sharex=True, sharey=True)
    colours = plt.get_cmap("tab10")
    for ax, start in zip(np.atleast_1d(axes), args.starts):
        ax.hist2d(lg[:, 0], lg[:, 1], bins=60, cmap="Greys", cmin=1)
        p = np.log(paths[f"{name}|{args.config}|{start}"])  # (T, A, 2)
        for a in range(p.shape[1]):
            c = colours(a % 10)
            ax.plot(p[:, a, 0], p[:, a, 1], "-", color=c, lw=1.0)
            ax.plot(p[0, a, 0], p[0, a, 1], "o", color=c, ms=3.5, mfc="none")
            ax.plot(p[-1, a, 0], p[-1, a, 1], "x", color=c, ms=5)
        ax.set_title(f"{start} start", fontsize=9)
        ax.set_xlabel("log w (pixels)", fontsize=8)
        ax.tick_params(labelsize=7)
    np.atleast_1d(axes)[0].set_ylabel("log h (pixels)", fontsize=8)
    fig.suptitle(f"Learned anchors' paths over the boxes of {name} at {size} px ({args.config})", fontsize=9)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=out.parent)
    os.close(fd)
    fig.savefig(tmp, dpi=80)
    os.replace(tmp, out)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
