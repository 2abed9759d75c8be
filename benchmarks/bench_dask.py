"""In-memory kmeans_iou against fastanchor.dask (1 and 2 worker processes) and
fastanchor.out_of_core (a memmapped .npy file) on 10^7 COCO-like boxes, from the same initial
anchors, side by side in one run; each mode runs in its own process, which reports its peak RSS.

    nice -n 10 python benchmarks/bench_dask.py [--n 10000000] [--max-iter 20] [--update median]

Every mode runs the same Lloyd iterations (max_iter caps them, so the time per iteration compares)
and must return the same anchors, bit for bit; the script checks it.
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
from datasets import coco_like

import fastanchor

K = 9


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not inherited across fork)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_mode(mode: str, path: str, init: np.ndarray, max_iter: int, update: str) -> dict:
    wh = np.load(path, mmap_mode="r")
    if mode == "in_memory":
        rows = np.array(wh)
        t = time.perf_counter()
        r = fastanchor.kmeans_iou(rows, K, init=init, update=update, max_iter=max_iter)
        secs = time.perf_counter() - t
    elif mode == "out_of_core":
        from fastanchor import out_of_core

        t = time.perf_counter()
        r = out_of_core.kmeans_iou(path, K, init=init, update=update, max_iter=max_iter, return_labels=False)
        secs = time.perf_counter() - t
    else:
        import dask.array as da
        import distributed

        import fastanchor.dask as fd

        workers = int(mode[-1])
        with (
            distributed.LocalCluster(
                n_workers=workers, processes=True, threads_per_worker=1, dashboard_address=":0", silence_logs=40
            ) as cl,
            distributed.Client(cl) as client,
        ):
            x = da.from_array(np.array(wh), chunks=(1 << 20, 2)).persist()
            distributed.wait(x)
            t = time.perf_counter()
            r = fd.kmeans_iou(x, K, init=init, update=update, max_iter=max_iter, client=client)
            secs = time.perf_counter() - t
            worker_rss = max(client.run(peak_rss_mb).values())
    out = {
        "mode": mode,
        "seconds": secs,
        "n_iter": r.n_iter,
        "anchors": _digest(r.anchors),
        "avg_iou": r.avg_iou,
        "peak_rss_mb": peak_rss_mb(),
    }
    if mode.startswith("dask"):
        out["worker_peak_rss_mb"] = worker_rss
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--max-iter", type=int, default=20)
    ap.add_argument("--update", default="median")
    ap.add_argument("--path", default="/tmp/bench_dask_wh.npy")
    ap.add_argument("--mode")
    args = ap.parse_args()
    init = coco_like(100_000, seed=1)[:K].astype(np.float64)
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.path, init, args.max_iter, args.update)))
        return
    if not os.path.exists(args.path) or np.load(args.path, mmap_mode="r").shape[0] != args.n:
        np.save(args.path, coco_like(args.n, seed=0))
    print(f"N = {args.n:,} COCO-like float32 boxes, k = {K}, update = {args.update}, max_iter = {args.max_iter}")
    rows = []
    for mode in ("in_memory", "dask1", "dask2", "out_of_core"):
        cmd = [sys.executable, __file__, "--mode", mode, "--path", args.path]
        cmd += ["--max-iter", str(args.max_iter), "--update", args.update]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        print(rows[-1], flush=True)
    assert len({r["anchors"] for r in rows}) == 1, "the modes' anchors differ"
    assert len({r["avg_iou"] for r in rows}) == 1 and len({r["n_iter"] for r in rows}) == 1
    base = rows[0]["seconds"]
    print("\n| mode | time (s) | per iteration (s) | vs in memory | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for r in rows:
        rss = f"{r['peak_rss_mb']:.0f}"
        if "worker_peak_rss_mb" in r:
            rss += f" (client), {r['worker_peak_rss_mb']:.0f} (largest worker)"
        per = r["seconds"] / max(r["n_iter"], 1)
        print(f"| {r['mode']} | {r['seconds']:.2f} | {per:.3f} | {r['seconds'] / base:.1f}x | {rss} |")


if __name__ == "__main__":
    main()
