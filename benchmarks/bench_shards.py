"""The chunked engines on boxes far larger than memory budgets: N COCO-like float32 boxes written as
.npy shards (10^9 boxes: 8 GB in 100 shards), read by fastanchor.out_of_core (memory-mapped, block
by block) and by fastanchor.dask on a LocalCluster of worker processes (one task per chunk of a
shard, read where the task runs; nothing persisted). Each measurement runs in its own process and reports its
time and peak RSS (the client's and every worker's).

    nice -n 10 python benchmarks/bench_shards.py [--n 1000000000] [--dir /tmp/shards]
        [--what fitness,kmeans,evolve,autoanchor] [--engines out_of_core,dask2]

fitness: one pass (anchor_fitness). autoanchor: a default autoanchor, end to end (seed 0,
budget 0). kmeans: k-means from fixed anchors, ``--iters`` Lloyd
iterations (median update). evolve: the search, ``--passes`` batches of 8 candidates, no layout
cache (a 10^9-box layout would take 33 GB). The times per pass and per iteration are what a full
autoanchor multiplies: the script prints that estimate, marked as such, beside the measurements.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dask import K, _status_mb, bytecode_as_installed, peak_rss_mb
from datasets import coco_like

SHARD = 10_000_000


def write_shards(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, start in enumerate(range(0, n, SHARD)):
        path = folder / f"boxes-{i:05d}.npy"
        rows = min(SHARD, n - start)
        if not path.exists() or np.load(path, mmap_mode="r").shape[0] != rows:
            tmp = folder / f".boxes-{i:05d}.tmp.npy"
            np.save(tmp, coco_like(rows, seed=1000 + i))
            os.replace(tmp, path)
        paths.append(path)
    return paths


def run(engine: str, what: str, paths: list[str], init: np.ndarray, args) -> dict:
    kw = {}
    if engine == "out_of_core":
        from fastanchor import out_of_core as mod

        wh = paths
        kw["block_rows"] = 1 << 22
        rss = None
    else:
        import distributed

        import fastanchor.dask as mod

        workers = int(engine[-1])
        cluster = distributed.LocalCluster(
            n_workers=workers, processes=True, threads_per_worker=1, dashboard_address=":0", silence_logs=40
        )
        client = distributed.Client(cluster)
        wh = mod.as_dask_rows(paths, block_rows=1 << 22)  # tasks that read their chunk of a shard
        kw["client"] = client
    t = time.perf_counter()
    if what == "fitness":
        r = mod.anchor_fitness(init, wh, **kw)
        out = {"fitness": r.fitness, "passes": 1}
    elif what == "kmeans":
        if engine == "out_of_core":
            kw["return_labels"] = False
        r = mod.kmeans_iou(wh, K, init=init, max_iter=args.iters, **kw)
        out = {"avg_iou": r.avg_iou, "iterations": r.n_iter}
    elif what == "evolve":
        r = mod.evolve_anchors(init, wh, generations=8 * args.passes, seed=0, cache_bytes=0, **kw)
        out = {"fitness": r.fitness, "passes": args.passes + 2}  # the initial score and the metrics
    else:  # a default autoanchor (1000 generations; budget 0, the Dask default)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the small boxes' warning
            r = mod.autoanchor(wh, K, seed=0, budget=0, **kw)
        out = {"fitness": r.evolved.fitness, "kmeans_fitness": r.kmeans.fitness, "n_boxes": r.n_boxes}
        out["anchors_sha256"] = hashlib.sha256(np.ascontiguousarray(r.anchors).tobytes()).hexdigest()[:16]
    out["seconds"] = time.perf_counter() - t
    out["client_peak_rss_mb"] = peak_rss_mb()
    if engine != "out_of_core":
        rss = client.run(peak_rss_mb)
        out["worker_peak_rss_mb"] = sorted(rss.values())
        client.close()
        cluster.close()
    out.update(engine=engine, what=what, rss_now_mb=_status_mb("VmRSS"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000_000)
    ap.add_argument("--dir", default="/tmp/shards")
    ap.add_argument("--what", default="fitness,kmeans,evolve")
    ap.add_argument("--engines", default="out_of_core,dask2")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--one", nargs=2, metavar=("ENGINE", "WHAT"))
    args = ap.parse_args()
    init = coco_like(100_000, seed=1)[:K].astype(np.float64)
    paths = sorted(str(p) for p in Path(args.dir).glob("boxes-*.npy"))
    if args.one:
        print(json.dumps(run(args.one[0], args.one[1], paths, init, args)))
        return
    t = time.perf_counter()
    paths = [str(p) for p in write_shards(Path(args.dir), args.n)]
    print(f"{args.n:,} boxes in {len(paths)} shards under {args.dir} ({time.perf_counter() - t:.0f} s to check/write)")
    bytecode_as_installed()
    for engine in args.engines.split(","):
        for what in args.what.split(","):
            cmd = [sys.executable, __file__, "--one", engine, what, "--dir", args.dir]
            cmd += ["--iters", str(args.iters), "--passes", str(args.passes)]
            res = subprocess.run(cmd, check=True, capture_output=True, text=True)
            print(res.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
