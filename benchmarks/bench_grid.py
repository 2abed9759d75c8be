"""The recall objective scored on the detector's grids against corner-aligned, on real datasets.

    PYTHONPATH=python nice -n 10 /work/venv/bin/python benchmarks/bench_grid.py --seeds 5

Every annotation set in ``../shared/data/raw`` that has box positions and image sizes is resized
to 416 x 416 (darknet's and mmdetection's YOLOv3 input), with strides 8, 16, 32 and three anchors
per level. For each: ``autoanchor(wh, 9, objective="recall")`` corner-aligned, and with
``grid=DetectorGrid(...)``; every anchor set (and the k-means start) is scored by the recall at
IoU 0.5 with the anchors on the grids (:func:`fastanchor.grid_recall`'s placement). Medians over
seeds, with the searches' times.
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
from fastanchor import DetectorGrid, datasets

RAW = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raw"
SETS = {
    "raccoon_voc": "raccoon_voc",
    "kangaroo_voc": "kangaroo_voc",
    "deepforest_voc": "deepforest_voc",
    "coco128_val2017_json": "coco128_val2017_json/instances_val2017.json",
    "coco_mini_json": "coco_mini_json/instances_train2017.json",
    "voc_coco_json": "voc_coco_json",
}


def stretched(path: Path, size: float):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = datasets.load(str(path))
    ok = np.isfinite(b.image_wh).all(1) & np.isfinite(b.xy).all(1)
    b = b[ok]
    r = size / b.image_wh
    xyxy = b.xyxy * np.concatenate([r, r], axis=1)
    wh = xyxy[:, 2:] - xyxy[:, :2]
    keep = (wh >= 2.0).any(axis=1)
    return wh[keep], DetectorGrid(xyxy[keep], (size, size), (8, 16, 32))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--size", type=float, default=416.0)
    args = ap.parse_args(argv)
    print(f"recall@0.5 on the grids at {args.size:g} x {args.size:g}, strides 8/16/32; median of {args.seeds} seeds")
    print("| dataset | boxes | k-means | corner-aligned search | grid search | gain | time corner / grid |")
    print("|---|---:|---:|---:|---:|---:|---|")
    warnings.simplefilter("ignore")
    for name, rel in SETS.items():
        path = RAW / rel
        if not path.exists():
            continue
        if path.is_dir() and any(path.glob("*.json")):
            path = next(path.glob("*.json"))
        wh, grid = stretched(path, args.size)
        rows = []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            corner = fastanchor.autoanchor(wh, 9, objective="recall", seed=seed)
            t1 = time.perf_counter()
            on_grid = fastanchor.autoanchor(wh, 9, objective="recall", grid=grid, seed=seed)
            t2 = time.perf_counter()
            rows.append(
                [
                    fastanchor.anchor_objective(corner.kmeans_anchors, wh, "recall", grid=grid),
                    fastanchor.anchor_objective(corner.anchors, wh, "recall", grid=grid),
                    on_grid.value,
                    t1 - t0,
                    t2 - t1,
                ]
            )
        m = np.median(np.array(rows), axis=0)
        print(
            f"| {name} | {len(wh):,} | {m[0]:.4f} | {m[1]:.4f} | {m[2]:.4f} | {m[2] - m[1]:+.4f} | "
            f"{m[3]:.2f} / {m[4]:.2f} s |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
