"""The Lloyd iteration cost and whole fits of whichever fastanchor build is imported, for
before/after comparisons of two builds in alternating fresh processes. Run on demand:

    PYTHONPATH=/path/to/old/build python benchmarks/ab_lloyd.py    # the old build
    python benchmarks/ab_lloyd.py                                   # the installed one
    python benchmarks/ab_lloyd.py --n 100000                        # a smaller set
    python benchmarks/ab_lloyd.py --float64                         # the boxes as float64 rows
    python benchmarks/ab_lloyd.py --weighted                        # every box weighted (integers in [1, 4])

(an old build: a worktree of the old commit built with CMake, ``-DFASTANCHOR_PYTHON=ON``, its
``python/fastanchor`` folder with the built ``_core*.so`` copied in.)

One Lloyd iteration is the marginal cost of an iteration inside a fit, ``(t(max_iter=11) -
t(max_iter=1)) / 10`` from the same init (as in ``run.py``), medians of 5; whole default fits
(median and mean update) medians of 3. COCO-like boxes, k = 9, all threads.

``--fits`` times whole fits instead: from one fixed initialisation (``init="random"`` on the
first 20,000 boxes, seed 0), which any two builds with the same Lloyd rule run through the same
iterations, so their times compare the engines alone; and default fits for seeds 0-5, whose
k-means++ draws may differ between builds (iterations are printed with each time); and
k-means++ alone (``max_iter=0``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(1, str(Path(__file__).resolve().parent))

from datasets import coco_like

import fastanchor


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="boxes")
    ap.add_argument("--fits", action="store_true", help="whole fits from a fixed init and for six seeds")
    ap.add_argument(
        "--float64", action="store_true", help="pass the boxes as float64 rows (as run.py's iteration rows)"
    )
    ap.add_argument("--weighted", action="store_true", help="every box weighted by a seeded integer in [1, 4]")
    args = ap.parse_args()
    wh = coco_like(args.n, seed=0)
    if args.float64:
        wh = wh.astype(np.float64)
    w = np.random.default_rng(2).integers(1, 5, args.n).astype(np.float64) if args.weighted else None
    if args.fits:
        fits(wh, w)
        return
    init = fastanchor.kmeans_iou(wh[:20_000], 9, seed=0).anchors
    parts = []
    for update in ("mean", "median"):
        kw = dict(init=init, update=update, sample_weight=w)
        one = median_time(lambda: fastanchor.kmeans_iou(wh, 9, max_iter=1, **kw), 5)
        more = median_time(lambda: fastanchor.kmeans_iou(wh, 9, max_iter=11, **kw), 5)
        parts.append(f"{update} iteration {(more - one) / 10 * 1e3:.2f} ms")
    for update in ("median", "mean"):
        fit = median_time(lambda: fastanchor.kmeans_iou(wh, 9, seed=0, update=update, sample_weight=w), 3)
        parts.append(f"{update} fit {fit:.3f} s")
    print(f"{fastanchor.__file__}: " + " | ".join(parts))


def fits(wh: np.ndarray, w: np.ndarray | None = None) -> None:
    init = fastanchor.kmeans_iou(wh[:20_000], 9, init="random", seed=0).anchors
    parts = []
    for update in ("median", "mean"):
        r = fastanchor.kmeans_iou(wh, 9, init=init, update=update, sample_weight=w)
        t = median_time(lambda: fastanchor.kmeans_iou(wh, 9, init=init, update=update, sample_weight=w), 5)
        parts.append(
            f"{update} fit from a fixed init {t:.3f} s ({r.n_iter} iterations, {t / r.n_iter * 1e3:.2f} ms each)"
        )
    seeds = []
    for seed in range(6):
        r = fastanchor.kmeans_iou(wh, 9, seed=seed, sample_weight=w)
        t = median_time(lambda: fastanchor.kmeans_iou(wh, 9, seed=seed, sample_weight=w), 2)
        seeds.append(f"{t:.3f}/{r.n_iter}")
    parts.append("default fits, seeds 0-5 (s/iterations): " + " ".join(seeds))
    pp = median_time(lambda: fastanchor.kmeans_iou(wh, 9, seed=0, max_iter=0), 3)
    parts.append(f"k-means++ alone (max_iter=0) {pp:.3f} s")
    print(f"{fastanchor.__file__}: " + " | ".join(parts))


if __name__ == "__main__":
    main()
