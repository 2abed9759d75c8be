"""In-memory kmeans_iou, evolve_anchors or autoanchor against fastanchor.dask (1 and 2 worker
processes) and fastanchor.out_of_core (a memmapped .npy file) on 10^7 COCO-like boxes, side by side
in one run; each mode runs in its own process, which reports its peak RSS.

    nice -n 10 python benchmarks/bench_dask.py [--what kmeans] [--n 10000000] [--max-iter 20]
        [--update median] [--init boxes] [--generations 200] [--modes in_memory,dask1,dask2,out_of_core]
        [--cache-bytes 1073741824] [--weighted] [--placement default]

Modes: in_memory (the rows loaded, then fastanchor's function), dask1 and dask2 (the rows
persisted on a LocalCluster of 1 or 2 worker processes), out_of_core (the .npy file, memory-mapped),
out_of_core_in_memory (fastanchor.out_of_core on the rows loaded).

kmeans: every mode runs the same Lloyd iterations from the same initial anchors (max_iter caps
them, so the time per iteration compares): the first boxes of a sample (``--init boxes``: early
iterations, where the anchors move far), or k-means++ seeds (``--init kmeans++`` with a large
``--max-iter``: a whole fit, whose later iterations creep). evolve: the search from the same anchors and seed for
``generations`` generations. autoanchor: seed 0, budget 0, ``generations``. Every mode must
return the same anchors, bit for bit; the script checks it. fitness: anchor_fitness of those
anchors. ``--weighted``: every box weighted by a seeded integer in [1, 4], from
``<path>.weights.npy`` (persisted with the rows on Dask, memory-mapped out of core).
``--placement one`` persists every chunk on one worker (the Dask modes report how many chunks
each worker held before the call).
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


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not inherited across fork)."""
    return _status_mb("VmHWM")


def _weights_path(path: str) -> str:
    return path + ".weights.npy"


def _call(module, what: str, wh, init: np.ndarray, args, **kw):
    """The benchmarked call of ``module`` (fastanchor, out_of_core or fastanchor.dask)."""
    if what == "fitness":
        return module.anchor_fitness(init, wh, **{k: v for k, v in kw.items() if k != "cache_bytes"})
    if what == "kmeans":
        return module.kmeans_iou(wh, K, init=init, update=args.update, max_iter=args.max_iter, **kw)
    if what == "evolve":
        return module.evolve_anchors(init, wh, generations=args.generations, seed=0, **kw)
    return module.autoanchor(wh, K, generations=args.generations, seed=0, budget=0, **kw)


def run_mode(mode: str, path: str, init: np.ndarray, args) -> dict:
    wh = np.load(path, mmap_mode="r")
    what = args.what
    base_rss = _status_mb("VmRSS")
    weights = np.load(_weights_path(path), mmap_mode="r") if args.weighted else None
    if mode == "in_memory":
        rows = np.array(wh)
        w = None if weights is None else np.array(weights)
        base_rss = _status_mb("VmRSS")  # with the rows in memory
        t = time.perf_counter()
        r = _call(fastanchor, what, rows, init, args, sample_weight=w)
        secs = time.perf_counter() - t
    elif mode in ("out_of_core", "out_of_core_in_memory"):
        from fastanchor import out_of_core

        kw = {"return_labels": False} if what == "kmeans" else {}
        kw["cache_bytes"] = args.cache_bytes
        source = path
        if args.weighted:
            kw["sample_weight"] = _weights_path(path)
        if mode == "out_of_core_in_memory":  # the chunked engine on rows already in memory
            source = np.array(wh)
            if args.weighted:
                kw["sample_weight"] = np.array(weights)
            base_rss = _status_mb("VmRSS")
        t = time.perf_counter()
        r = _call(out_of_core, what, source, init, args, **kw)
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
            on = {"workers": [sorted(client.nthreads())[0]]} if args.placement == "one" else {}
            x = client.persist(da.from_array(np.array(wh), chunks=(1 << 20, 2)), **on)
            distributed.wait(x)
            who = client.who_has(distributed.futures_of(x))
            held = sorted(sum(w in ws for ws in who.values()) for w in client.nthreads())
            kw = {}
            if args.weighted:
                kw["sample_weight"] = da.from_array(np.array(weights), chunks=1 << 20).persist()
                distributed.wait(kw["sample_weight"])
            t = time.perf_counter()
            r = _call(fd, what, x, init, args, client=client, cache_bytes=args.cache_bytes, **kw)
            secs = time.perf_counter() - t
            worker_rss = max(client.run(peak_rss_mb).values())
    out = {
        "mode": mode,
        "seconds": secs,
        # Lloyd iterations, or passes
        "n_iter": r.n_iter if what == "kmeans" else 1 if what == "fitness" else len(r.history) // 8,
        "anchors": _digest(init if what == "fitness" else r.anchors),
        "avg_iou": r.avg_iou if what != "autoanchor" else r.evolved.avg_iou,
        "fitness": r.evolved.fitness if what == "autoanchor" else getattr(r, "fitness", None),
        "peak_rss_mb": peak_rss_mb(),
        "extra_mb": peak_rss_mb() - base_rss,  # above the process (and the rows) before the call
    }
    if mode.startswith("dask"):
        out["worker_peak_rss_mb"] = worker_rss
        out["chunks_held"] = held
    return out


def bytecode_as_installed() -> None:
    """Writes the bytecode of fastanchor's modules, as ``pip install`` does. Each Dask worker
    imports fastanchor on its first task, inside the timed call; from a source tree without
    bytecode (or with PYTHONDONTWRITEBYTECODE set) every worker compiles each module first: the
    import took 70-74 ms instead of 24-25 ms (RESULTS.md), time an installed package never spends."""
    import compileall

    compileall.compile_dir(os.path.dirname(fastanchor.__file__), quiet=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--what", choices=("kmeans", "evolve", "autoanchor", "fitness"), default="kmeans")
    ap.add_argument("--generations", type=int, default=200)
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--max-iter", type=int, default=20)
    ap.add_argument(
        "--init",
        choices=("boxes", "kmeans++"),
        default="boxes",
        help="k-means from the first boxes of a sample, or from k-means++ seeds of the first 10^6 boxes",
    )
    ap.add_argument("--update", default="median")
    ap.add_argument("--path", default="/tmp/bench_dask_wh.npy")
    ap.add_argument("--mode")
    ap.add_argument("--modes", default="in_memory,dask1,dask2,out_of_core")
    ap.add_argument("--cache-bytes", type=int, default=1 << 30, help="the chunked modes' cache_bytes")
    ap.add_argument("--weighted", action="store_true", help="every box weighted by an integer in [1, 4]")
    ap.add_argument("--placement", choices=("default", "one"), default="default", help="the Dask modes' persist")
    args = ap.parse_args()
    init = coco_like(100_000, seed=1)[:K].astype(np.float64)
    if args.init == "kmeans++" and os.path.exists(args.path):
        sample = np.array(np.load(args.path, mmap_mode="r")[:1_000_000])
        init = fastanchor.kmeans_iou(sample, K, seed=0, max_iter=0).anchors
    if args.what != "kmeans":
        init = fastanchor.kmeans_iou(coco_like(200_000, seed=1), K, seed=0, tol=1e-3).anchors
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.path, init, args)))
        return
    if not os.path.exists(args.path) or np.load(args.path, mmap_mode="r").shape[0] != args.n:
        np.save(args.path, coco_like(args.n, seed=0))
    if args.weighted:
        wpath = _weights_path(args.path)
        if not os.path.exists(wpath) or np.load(wpath, mmap_mode="r").shape[0] != args.n:
            np.save(wpath, np.random.default_rng(2).integers(1, 5, args.n).astype(np.float64))
    setting = f"update = {args.update}, max_iter = {args.max_iter}, init = {args.init}"
    if args.what != "kmeans":
        setting = f"generations = {args.generations}"
    if args.weighted:
        setting += ", weighted"
    print(f"{args.what}: N = {args.n:,} COCO-like float32 boxes, k = {K}, {setting}")
    bytecode_as_installed()
    rows = []
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--mode", mode, "--path", args.path]
        cmd += ["--max-iter", str(args.max_iter), "--update", args.update, "--what", args.what, "--init", args.init]
        cmd += ["--generations", str(args.generations), "--cache-bytes", str(args.cache_bytes)]
        cmd += ["--weighted"] if args.weighted else []
        cmd += ["--placement", args.placement]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        print(rows[-1], flush=True)
    assert len({r["anchors"] for r in rows}) <= 1, "the modes' anchors differ"
    assert len({r["avg_iou"] for r in rows}) <= 1 and len({r["n_iter"] for r in rows}) <= 1
    base = rows[0]["seconds"]
    unit = "iteration" if args.what == "kmeans" else "pass of 8 candidates"
    print(f"\n| mode | time (s) | per {unit} (s) | vs in memory | peak RSS (MB) | extra (MB) | fitness |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        rss = f"{r['peak_rss_mb']:.0f}"
        if "worker_peak_rss_mb" in r:
            rss += f" (client), {r['worker_peak_rss_mb']:.0f} (largest worker); chunks held {r['chunks_held']}"
        per = r["seconds"] / max(r["n_iter"], 1)
        fit = "" if r["fitness"] is None else f"{r['fitness']:.6f}"
        row = f"| {r['mode']} | {r['seconds']:.2f} | {per:.3f} | {r['seconds'] / base:.1f}x | {rss} "
        print(row + f"| {r['extra_mb']:.0f} | {fit} |")


if __name__ == "__main__":
    main()
