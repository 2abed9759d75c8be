"""How to spend the work budget on small sets: restarts against longer searches, by measurement.

    PYTHONPATH=python nice -n 10 /work/venv/bin/python benchmarks/bench_budget.py --seeds 7

For each small real dataset (letterboxed to 640, boxes >= 2 pixels on a side, float32 as YOLOv5
fits them) and objective: the median over seeds of ``autoanchor(wh, 9, seed=s)`` with the
budget spent as (a) nothing, (b) one longer search (``generations = budget // N``, no
restarts), (c) restarts of the given length and perturbation scale, (d) YOLOv5's strategy with
more generations. Same budget of box evaluations everywhere.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List

import numpy as np

import fastanchor
import fastanchor._evolve as ev

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "boxes"


def boxes(name: str) -> np.ndarray:
    z = np.load(DATA / f"{name}.npz")
    wh, img = z["wh"].astype(np.float64), z["img_wh"].astype(np.float64)
    ok = (wh > 0).all(1) & (img > 0).all(1)
    wh0 = (wh[ok] / img[ok]).astype(np.float32) * (640 * img[ok] / img[ok].max(1, keepdims=True))
    return wh0[(wh0 >= 2.0).any(1)].astype(np.float32)


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="*", default=["raccoon", "kangaroo", "coco128", "deepforest", "coco_mini"])
    ap.add_argument("--objectives", nargs="*", default=list(fastanchor.OBJECTIVES))
    ap.add_argument("--seeds", type=int, default=7)
    ap.add_argument("--budget", type=int, default=ev.DEFAULT_BUDGET)
    args = ap.parse_args(argv)
    variants = [("none", {}, None), ("longer", {}, None), ("yolov5", {"strategy": "yolov5"}, None)]
    variants += [(f"restarts {n}/{s:g}", {}, (n, s)) for n in (100, 200, 500) for s in (0.1, 0.3, 0.6)]
    print(f"budget {args.budget} box evaluations, median of {args.seeds} seeds")
    print("| dataset | objective | " + " | ".join(v[0] for v in variants) + " |")
    print("|---|---|" + "---:|" * len(variants))
    for name in args.datasets:
        wh = boxes(name)
        n = len(wh)
        for obj in args.objectives:
            cells = []
            for label, kw, restart in variants:
                vals, ts = [], []
                for seed in range(args.seeds):
                    if restart is not None:
                        ev.RESTART_LENGTH, ev.RESTART_SIGMA = restart
                    extra = dict(kw)
                    if label == "none":
                        extra["budget"] = 0
                    elif label == "longer":
                        extra.update(budget=0, generations=max(1000, args.budget // n))
                    else:
                        extra["budget"] = args.budget
                    t0 = time.perf_counter()
                    r = fastanchor.autoanchor(wh, 9, objective=obj, seed=seed, n_threads=1, **extra)
                    ts.append(time.perf_counter() - t0)
                    vals.append(r.value)
                ev.RESTART_LENGTH, ev.RESTART_SIGMA = 500, 0.3
                cells.append(f"{np.median(vals):.4f} ({np.median(ts):.2f} s)")
            print(f"| {name} ({n}) | {obj} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
