"""What autoanchor's search gives up by scoring its candidates on a uniform sample of the boxes
(``search_sample``) rather than on all of them: for a few seeds, the k-means anchors of
``autoanchor(..., generations=0)`` are evolved for ``--generations`` generations once on all boxes
and once on samples of each size, and the evolved anchors are scored on all boxes.

    nice -n 10 python benchmarks/bench_search_sample.py [--n 10000000] [--seeds 0,1,2]
        [--samples 20,22,24] [--generations 1000]

COCO-like float32 boxes (datasets.coco_like, seed 0), the boxes below 2 pixels on both sides
dropped first (as autoanchor drops them). Prints one row per seed: the fitness of the k-means
anchors, of the search on all boxes, and of the search on each sample (on the sample, then on all
boxes), with the search's time.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from datasets import coco_like

import fastanchor
from fastanchor._validation import sample_index


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--samples", default="20,22,24", help="sample sizes as powers of two")
    ap.add_argument("--generations", type=int, default=1000)
    args = ap.parse_args()
    wh = coco_like(args.n, seed=0)
    wh = wh[(wh >= 2).any(axis=1)]
    print(f"{len(wh):,} COCO-like float32 boxes, k = 9, {args.generations} generations, budget 0")
    powers = [int(p) for p in args.samples.split(",")]
    print("| seed | k-means | search on all boxes (time) | " + " | ".join(f"on 2^{p}" for p in powers) + " |")
    print("|---" * (3 + len(powers)) + "|")
    for seed in map(int, args.seeds.split(",")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            start = fastanchor.autoanchor(wh, 9, seed=seed, generations=0, budget=0, search_sample=len(wh))
        kw = dict(generations=args.generations, seed=seed + 100, budget=0)
        t = time.perf_counter()
        full = fastanchor.evolve_anchors(start.anchors, wh, **kw)
        cells = [f"{start.kmeans.fitness:.6f}", f"{full.fitness:.6f} ({time.perf_counter() - t:.1f} s)"]
        for power in powers:
            m = 1 << power
            if m >= len(wh):
                cells.append("")
                continue
            sample = wh[sample_index(np.random.default_rng(seed + 7), len(wh), m)]
            t = time.perf_counter()
            ev = fastanchor.evolve_anchors(start.anchors, sample, **kw)
            took = time.perf_counter() - t
            on_all = fastanchor.anchor_fitness(ev.anchors, wh).fitness
            cells.append(f"{ev.fitness:.6f} on the sample, {on_all:.6f} on all ({took:.1f} s)")
        print(f"| {seed} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
