"""Quality gained by k-means++ restarts: avg IoU of kmeans_iou(k=9) for n_init = 1, 3, 10 on
every real dataset (letterboxed to 640), over 10 seeds, with the time per fit.

    python benchmarks/bench_n_init.py            # prints a Markdown table (RESULTS.md, "Choosing n_init")
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datasets import load_real, real_datasets

import fastanchor

N_INITS = (1, 3, 10)
SEEDS = range(10)


def main() -> int:
    names = real_datasets()
    if not names:
        print("no real datasets found (../shared/data/boxes is absent)")
        return 0
    head = " | ".join(f"n_init={n}: median (min) avg IoU, ms" for n in N_INITS)
    print(f"| dataset | boxes | {head} |")
    print("|---|---:|" + "---|" * len(N_INITS))
    gains = []
    for name in names:
        wh = load_real(name).astype(np.float64)
        cells, medians = [], []
        for n_init in N_INITS:
            t = time.perf_counter()
            vals = np.array([fastanchor.kmeans_iou(wh, 9, n_init=n_init, seed=s).avg_iou for s in SEEDS])
            ms = (time.perf_counter() - t) / len(SEEDS) * 1e3
            medians.append(np.median(vals))
            cells.append(f"{np.median(vals):.4f} ({vals.min():.4f}), {ms:.1f}")
        gains.append(np.array(medians) - medians[0])
        print(f"| {name} | {len(wh):,} | " + " | ".join(cells) + " |")
    gains = np.array(gains)
    for j, n in enumerate(N_INITS[1:], start=1):
        print(f"\nn_init={n} vs 1: median avg IoU gain {gains[:, j].min():+.4f} to {gains[:, j].max():+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
