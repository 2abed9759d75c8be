"""fastanchor's autoanchor per objective against YOLOv5's unmodified ``kmean_anchors``, same boxes.

Run with an interpreter that has yolov5 (7.0.14) and torch installed, e.g.::

    PYTHONPATH=python nice -n 10 /work/venv-torch/bin/python benchmarks/bench_objectives.py --seeds 5

For every real dataset (``../shared/data/boxes/*.npz``, letterboxed to --img-size as YOLOv5 scales
them) and seed, YOLOv5's ``kmean_anchors`` runs on a dataset object holding the boxes (its own
k-means, 1000 generations, ``np.random``/``random`` seeded), and ``fastanchor.autoanchor`` runs on
exactly the boxes YOLOv5 fits (those >= 2 pixels on a side, float32) for each objective. Every
anchor set is scored with ``fastanchor.anchor_objective`` on those boxes. Printed: per dataset and
objective the median over seeds of k-means, YOLOv5's search, fastanchor, and the times.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List

import numpy as np

import fastanchor

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "boxes"


def yolov5_boxes(path: Path, img_size: int):
    """A dataset object as kmean_anchors reads it, and the float32 boxes it fits."""
    z = np.load(path)
    wh, img = z["wh"].astype(np.float64), z["img_wh"].astype(np.float64)
    ok = (wh > 0).all(1) & (img > 0).all(1)
    wh, img = wh[ok], img[ok]
    norm = (wh / img).astype(np.float32)
    labels = [np.array([[0.0, 0.5, 0.5, w, h]], dtype=np.float32) for w, h in norm]
    ds = SimpleNamespace(shapes=img, labels=labels)
    shapes = img_size * img / img.max(1, keepdims=True)
    wh0 = np.concatenate([lab[:, 3:5] * s for s, lab in zip(shapes, labels)])
    fitted = wh0[(wh0 >= 2.0).any(1)].astype(np.float32)
    return ds, fitted


def run_yolov5(ds, img_size: int, seed: int) -> np.ndarray:
    from yolov5.utils.autoanchor import kmean_anchors

    np.random.seed(seed)
    random.seed(seed)
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        return np.asarray(kmean_anchors(ds, n=9, img_size=img_size, thr=4.0, gen=1000, verbose=False), np.float64)


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="*", help="dataset names (default: every npz)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--img-size", type=int, default=640)
    ap.add_argument("--objectives", nargs="*", default=list(fastanchor.OBJECTIVES))
    ap.add_argument("--budget", type=int, default=None, help="autoanchor's budget (default: its default)")
    ap.add_argument("--no-yolov5", action="store_true", help="skip YOLOv5's search")
    ap.add_argument("--json", help="write the per-seed values here")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from yolov5.utils.general import LOGGER

    LOGGER.disabled = True
    names = args.datasets or sorted(p.stem for p in DATA.glob("*.npz"))
    extra = {} if args.budget is None else {"budget": args.budget}
    rows: Dict[str, Dict] = {}
    print(
        f"{'dataset':24} {'boxes':>7} {'objective':8} {'k-means':>8} {'YOLOv5':>8} {'fastanchor':>10} "
        f"{'fa-y5':>8} {'t YOLOv5':>9} {'t fa':>7}"
    )
    for name in names:
        ds, wh = yolov5_boxes(DATA / f"{name}.npz", args.img_size)
        y5: List[np.ndarray] = []
        y5_t: List[float] = []
        if not args.no_yolov5:
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                y5.append(run_yolov5(ds, args.img_size, seed))
                y5_t.append(time.perf_counter() - t0)
        rows[name] = {"boxes": len(wh)}
        for obj in args.objectives:
            km, fa, yv, ft = [], [], [], []
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                r = fastanchor.autoanchor(wh, 9, objective=obj, seed=seed, n_threads=1, **extra)
                ft.append(time.perf_counter() - t0)
                km.append(r.kmeans_objectives[obj])
                fa.append(r.evolved_objectives[obj])
                if y5:
                    yv.append(fastanchor.anchor_objective(y5[seed], wh, obj, n_threads=1))
            med = {
                k: float(np.median(v)) if v else float("nan")
                for k, v in {"kmeans": km, "yolov5": yv, "fastanchor": fa, "t_yolov5": y5_t, "t_fastanchor": ft}.items()
            }
            rows[name][obj] = {**med, "per_seed": {"kmeans": km, "yolov5": yv, "fastanchor": fa}}
            print(
                f"{name:24} {len(wh):7d} {obj:8} {med['kmeans']:8.4f} {med['yolov5']:8.4f} "
                f"{med['fastanchor']:10.4f} {med['fastanchor'] - med['yolov5']:+8.4f} {med['t_yolov5']:8.2f}s "
                f"{med['t_fastanchor']:6.2f}s",
                flush=True,
            )
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(rows, f, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
