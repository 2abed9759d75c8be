"""Anchors under scale augmentation: fitted to the plain boxes against fitted for the rescaled ones.

    PYTHONPATH=python nice -n 10 /work/venv/bin/python benchmarks/bench_scale.py --seeds 5

For every real dataset (``../shared/data/boxes/*.npz``, letterboxed to 640, boxes >= 2 pixels on
a side) and objective, ``autoanchor(wh, 9, objective=...)`` runs without augmentation and with
``scale=0.5`` (YOLOv5's default ``hyp.scale``: factors uniform in [0.5, 1.5], 16 scales). Both
anchor sets are scored plainly and under the augmentation (median over seeds). Also printed: the
error of 16 scales against 1024 for the plain anchors (largest over the three objectives), and
the two fits' times.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

import numpy as np

import fastanchor

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "boxes"


def boxes(path: Path, size: int) -> np.ndarray:
    z = np.load(path)
    wh, img = z["wh"].astype(np.float64), z["img_wh"].astype(np.float64)
    ok = (wh > 0).all(1) & (img > 0).all(1)
    wh = wh[ok] * size / img[ok].max(1, keepdims=True)
    return np.ascontiguousarray(wh[(wh >= 2).any(1)])


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="*", help="dataset names (default: every npz)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--img-size", type=int, default=640)
    args = ap.parse_args(argv)
    names = args.datasets or sorted(p.stem for p in DATA.glob("*.npz"))
    g = args.scale
    print(f"scale augmentation [{1 - g:g}, {1 + g:g}], 16 scales; median of {args.seeds} seeds")
    print(
        "| dataset | boxes | objective | plain fit: plain / augmented | augmented fit: plain / augmented | gain under aug. | 16 vs 1024 scales | time plain / aug. |"
    )
    print("|---|---:|---|---|---|---:|---:|---|")
    warnings.simplefilter("ignore")
    for name in names:
        wh = boxes(DATA / f"{name}.npz", args.img_size)
        for objective in fastanchor.OBJECTIVES:
            rows = []
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                plain = fastanchor.autoanchor(wh, 9, objective=objective, seed=seed).anchors
                t1 = time.perf_counter()
                aug = fastanchor.autoanchor(wh, 9, objective=objective, seed=seed, scale=g).anchors
                t2 = time.perf_counter()

                def score(a: np.ndarray, scale: Optional[float]) -> float:
                    return fastanchor.anchor_objective(a, wh, objective, scale=scale)

                rows.append([score(plain, None), score(plain, g), score(aug, None), score(aug, g), t1 - t0, t2 - t1])
            m = np.median(np.array(rows), axis=0)
            km = fastanchor.kmeans_iou(wh, 9, seed=0).anchors
            err = abs(
                fastanchor.anchor_objective(km, wh, objective, scale=g)
                - fastanchor.anchor_objective(km, wh, objective, scale=g, scale_steps=1024)
            )
            print(
                f"| {name} | {len(wh):,} | {objective} | {m[0]:.4f} / {m[1]:.4f} | {m[2]:.4f} / {m[3]:.4f} | "
                f"{m[3] - m[1]:+.4f} | {err:.1e} | {m[4]:.2f} / {m[5]:.2f} s |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
