"""The Lloyd iteration cost and whole fits of whichever fastanchor build is imported, for
before/after comparisons of two builds in alternating fresh processes. Run on demand:

    PYTHONPATH=/path/to/old/build python benchmarks/ab_lloyd.py    # the old build
    python benchmarks/ab_lloyd.py                                   # the installed one
    python benchmarks/ab_lloyd.py --n 100000                        # a smaller set

(an old build: a worktree of the old commit built with CMake, ``-DFASTANCHOR_PYTHON=ON``, its
``python/fastanchor`` folder with the built ``_core*.so`` copied in.)

One Lloyd iteration is the marginal cost of an iteration inside a fit, ``(t(max_iter=11) -
t(max_iter=1)) / 10`` from the same init (as in ``run.py``), medians of 5; whole default fits
(median and mean update) medians of 3. COCO-like boxes, k = 9, all threads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(1, str(Path(__file__).resolve().parent))

import fastanchor  # noqa: E402
from datasets import coco_like  # noqa: E402


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
    args = ap.parse_args()
    wh = coco_like(args.n, seed=0)
    init = fastanchor.kmeans_iou(wh[:20_000], 9, seed=0).anchors
    parts = []
    for update in ("mean", "median"):
        one = median_time(lambda: fastanchor.kmeans_iou(wh, 9, init=init, update=update, max_iter=1), 5)
        more = median_time(lambda: fastanchor.kmeans_iou(wh, 9, init=init, update=update, max_iter=11), 5)
        parts.append(f"{update} iteration {(more - one) / 10 * 1e3:.2f} ms")
    for update in ("median", "mean"):
        fit = median_time(lambda: fastanchor.kmeans_iou(wh, 9, seed=0, update=update), 3)
        parts.append(f"{update} fit {fit:.3f} s")
    print(f"{fastanchor.__file__}: " + " | ".join(parts))


if __name__ == "__main__":
    main()
