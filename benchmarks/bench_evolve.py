"""Anchor fitness and evolution (issue 3): search quality on the real datasets and speed on
1,000,000 COCO-like boxes. Run on demand, never as a test:

    python benchmarks/bench_evolve.py                 # both parts, Markdown tables for RESULTS.md
    python benchmarks/bench_evolve.py --part quality  # only the real datasets
    python benchmarks/bench_evolve.py --part speed    # only the timings

Quality: for every dataset in ../shared/data/boxes, letterboxed to 640 (``wh * 640 /
max(img_wh)``), without non-positive boxes and, as YOLOv5 does, without boxes below 2 pixels on
both sides; starting from ``fastanchor.kmeans_iou(wh, 9, seed=0)``, 1000 generations of
``evolve_anchors`` with strategy="yolov5" (YOLOv5's mutation, exactly) and with the default
strategy, seeds 0-4: the median final fitness of each.

Speed: one fitness evaluation (the numpy reference of YOLOv5's metric, the public
``anchor_fitness`` with all four metrics, and the marginal cost of a generation inside the
search), 1000 generations of ``evolve_anchors`` and the whole ``autoanchor(wh, 9)``. Contenders
are interleaved repeat by repeat (the machine is shared and noisy); times are medians.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, List

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # benchmarks/datasets.py
sys.path.insert(1, str(HERE.parent / "tests"))  # tests/reference.py

import reference  # noqa: E402
from datasets import coco_like, load_real, real_datasets  # noqa: E402
from run import machine, race  # noqa: E402  (the shared timing helpers)

import fastanchor  # noqa: E402

SEEDS = range(5)
STRATEGIES = ("yolov5", "anchorwise")


def yolov5_boxes(name: str) -> np.ndarray:
    wh = load_real(name).astype(np.float64)  # letterboxed to 640, non-positive rows dropped
    return wh[(wh >= 2.0).any(axis=1)]


def quality(generations: int) -> None:
    names = real_datasets()
    if not names:
        print("no real datasets (../shared/data/boxes is absent)")
        return
    print(
        f"\nMedian fitness over seeds {SEEDS.start}-{SEEDS.stop - 1}, {generations} generations from "
        "kmeans_iou(wh, 9, seed=0):\n"
    )
    print("| dataset | boxes | k-means | yolov5 | anchorwise (default) | gain | anchorwise >= yolov5 |")
    print("|---|---:|---:|---:|---:|---:|---|")
    wins = 0
    for name in names:
        wh = yolov5_boxes(name)
        init = fastanchor.kmeans_iou(wh, 9, seed=0).anchors
        start = fastanchor.anchor_fitness(init, wh).fitness
        med = {}
        for s in STRATEGIES:
            med[s] = float(
                np.median(
                    [
                        fastanchor.evolve_anchors(init, wh, generations=generations, strategy=s, seed=seed).fitness
                        for seed in SEEDS
                    ]
                )
            )
        ok = med["anchorwise"] >= med["yolov5"]
        wins += ok
        gain = (med["anchorwise"] - start) / max(med["yolov5"] - start, 1e-300)
        print(
            f"| {name} | {len(wh):,} | {start:.5f} | {med['yolov5']:.5f} | {med['anchorwise']:.5f} | "
            f"{gain:.2f}x | {'yes' if ok else 'NO'} |",
            flush=True,
        )
    print(
        f"\nanchorwise >= yolov5 on {wins} of {len(names)} datasets. gain = (anchorwise - k-means) / "
        "(yolov5 - k-means): the improvement over the k-means anchors, relative to YOLOv5's."
    )


def numpy_fitness(anchors: np.ndarray, wh: np.ndarray, thr: float = 4.0) -> float:
    """YOLOv5's anchor_fitness in plain numpy (float64): the reference's ratio metric."""
    best = reference.ratio_metric(anchors, wh).max(axis=1)
    return float(np.mean(best * (best > 1 / thr)))


def speed(n: int, repeats: int) -> None:
    wh = coco_like(n, seed=0).astype(np.float64)
    init = fastanchor.kmeans_iou(wh, 9, seed=0).anchors
    print(
        f"\n{n:,} COCO-like boxes (benchmarks/datasets.py coco_like(seed=0), float64), k = 9, "
        f"{fastanchor._core.max_threads()} threads, load average {os.getloadavg()[0]:.1f}:\n"
    )

    def evolve(g: int, strategy: str = "anchorwise") -> Callable[[], object]:
        return lambda: fastanchor.evolve_anchors(init, wh, generations=g, strategy=strategy, seed=0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # autoanchor warns about the boxes below 3 px
        t = race(
            {
                "numpy fitness": lambda: numpy_fitness(init, wh),
                "numpy all four": lambda: reference.anchor_fitness(init, wh),
                "anchor_fitness": lambda: fastanchor.anchor_fitness(init, wh),
                "evolve 0": evolve(0),
                "evolve 1000": evolve(1000),
                "evolve 1000 yolov5": evolve(1000, "yolov5"),
                "autoanchor": lambda: fastanchor.autoanchor(wh, 9, seed=0),
            },
            repeats,
        )
    per_gen = (t["evolve 1000"] - t["evolve 0"]) / 1000
    per_gen_y = (t["evolve 1000 yolov5"] - t["evolve 0"]) / 1000
    rows = [
        ("YOLOv5's fitness in numpy (`reference.ratio_metric`, one call)", t["numpy fitness"], ""),
        ("fitness + bpr + aat + avg IoU in numpy (`reference.anchor_fitness`)", t["numpy all four"], ""),
        (
            "`anchor_fitness(anchors, wh)`: all four metrics, validation included",
            t["anchor_fitness"],
            f"{t['numpy all four'] / t['anchor_fitness']:.0f}x the numpy metrics, "
            f"{t['numpy fitness'] / t['anchor_fitness']:.0f}x numpy's fitness alone",
        ),
        (
            "one fitness evaluation inside `evolve_anchors` (a generation, default strategy)",
            per_gen,
            f"{t['numpy fitness'] / per_gen:.0f}x numpy's fitness",
        ),
        ('one generation, strategy="yolov5"', per_gen_y, f"{t['numpy fitness'] / per_gen_y:.0f}x numpy's fitness"),
        ("`evolve_anchors(anchors, wh, generations=0)` (validation, sorting, report)", t["evolve 0"], ""),
        ("`evolve_anchors(anchors, wh)`: 1000 generations, default strategy", t["evolve 1000"], "target <= 1.5 s"),
        ('`evolve_anchors(..., strategy="yolov5")`: 1000 generations', t["evolve 1000 yolov5"], ""),
        ("`autoanchor(wh, 9)`: checks, k-means, 1000 generations, reports", t["autoanchor"], "target <= 3 s"),
    ]
    print("| what | time | ratio / note |")
    print("|---|---:|---|")
    for what, sec, note in rows:
        shown = f"{sec * 1e3:.2f} ms" if sec < 1 else f"{sec:.3f} s"
        print(f"| {what} | {shown} | {note} |")
    km = fastanchor.kmeans_iou(wh, 9, seed=0)
    print(
        f"\n(autoanchor's k-means alone: {race({'k': lambda: fastanchor.kmeans_iou(wh, 9, seed=1)}, 1)['k']:.3f} s,"
        f" {km.n_iter} iterations)"
    )


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("quality", "speed", "both"), default="both")
    ap.add_argument("--n", type=int, default=1_000_000, help="boxes for the timings")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--generations", type=int, default=1000)
    args = ap.parse_args(argv)
    print(f"machine: {machine()}")
    if args.part in ("quality", "both"):
        quality(args.generations)
    if args.part in ("speed", "both"):
        speed(args.n, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
