"""kmeans_log (k-means in log space) against kmeans_iou on every real dataset in ../shared/data/boxes.

Boxes letterboxed to 640 (``wh * 640 / max(img_wh)``) and, as YOLOv5's autoanchor does, only those
with a side of at least 2 pixels. k = 9, n_init = 1, seeds 0, 1, 2; per method the median over the
seeds of: the average IoU, YOLOv5's anchor fitness and best possible recall (thr = 4), the mean
squared log distance of the boxes to their nearest anchor, and the time per fit.

    nice -n 10 python benchmarks/bench_kmeans_log.py     # prints a Markdown table (RESULTS.md)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datasets import load_real, real_datasets

import fastanchor

K = 9
SEEDS = (0, 1, 2)


def log_msd(anchors: np.ndarray, wh: np.ndarray) -> float:
    """Mean over boxes of the squared log distance to the nearest anchor."""
    lg, la = np.log(wh), np.log(anchors)
    best = np.full(len(wh), np.inf)
    for a in la:
        best = np.minimum(best, ((lg - a) ** 2).sum(1))
    return float(best.mean())


def measure(fit, wh: np.ndarray) -> dict[str, float]:
    rows = []
    for seed in SEEDS:
        t = time.perf_counter()
        r = fit(wh, K, seed=seed)
        ms = (time.perf_counter() - t) * 1e3
        f = fastanchor.anchor_fitness(r.anchors, wh)
        rows.append((r.avg_iou, f.fitness, f.bpr, log_msd(r.anchors, wh), ms))
    med = np.median(np.array(rows), axis=0)
    return dict(zip(("iou", "fit", "bpr", "msd", "ms"), med))


def main() -> int:
    names = real_datasets()
    if not names:
        print("no real datasets found (../shared/data/boxes is absent)")
        return 0
    print(
        "| dataset | boxes | avg IoU: iou / log | fitness: iou / log | BPR: iou / log "
        "| log MSD: iou / log | ms per fit: iou / log |"
    )
    print("|---|---:|---|---|---|---|---|")
    diffs = []
    for name in names:
        wh = load_real(name).astype(np.float64)
        wh = wh[(wh >= 2.0).any(1)]
        a = measure(fastanchor.kmeans_iou, wh)
        b = measure(fastanchor.kmeans_log, wh)
        diffs.append((b["iou"] - a["iou"], b["fit"] - a["fit"]))
        print(
            f"| {name} | {len(wh):,} | {a['iou']:.4f} / {b['iou']:.4f} | {a['fit']:.4f} / {b['fit']:.4f} "
            f"| {a['bpr']:.4f} / {b['bpr']:.4f} | {a['msd']:.4f} / {b['msd']:.4f} | {a['ms']:.1f} / {b['ms']:.1f} |"
        )
    d = np.array(diffs)
    print(
        f"\nlog - iou: avg IoU {d[:, 0].min():+.4f} to {d[:, 0].max():+.4f} (median {np.median(d[:, 0]):+.4f}); "
        f"fitness {d[:, 1].min():+.4f} to {d[:, 1].max():+.4f} (median {np.median(d[:, 1]):+.4f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
