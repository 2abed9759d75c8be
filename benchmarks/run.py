"""Side-by-side benchmarks of fastanchor against the numpy reference and scikit-learn.

Run on demand, never as a test:

    python benchmarks/run.py            # full figures for benchmarks/RESULTS.md (a few minutes)
    python benchmarks/run.py --quick    # smoke mode: tiny sizes, seconds (CI runs this)

Every ratio is measured in the same run, contenders interleaved repeat by repeat (the machines
are shared and noisy); times are medians of the repeats. Results are printed as a table and
written as JSON (--json PATH, default benchmarks/results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # benchmarks/datasets.py (a name other packages use too)
sys.path.insert(1, str(HERE.parent / "tests"))  # tests/reference.py

import fastanchor  # noqa: E402
import reference  # noqa: E402
from datasets import coco_like, load_real, real_datasets  # noqa: E402


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def race(contenders: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, float]:
    """Median seconds of each contender, the contenders interleaved within every repeat."""
    times: Dict[str, List[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            times[name].append(timed(fn))
    return {name: statistics.median(ts) for name, ts in times.items()}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, fastanchor threads {fastanchor._core.max_threads()}"


def bench_wh_iou(n: int, m: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    a = coco_like(n, seed=1).astype(np.float64)
    b = coco_like(m, seed=2).astype(np.float64)
    del rng
    t = race({"fastanchor": lambda: fastanchor.wh_iou(a, b), "numpy": lambda: reference.wh_iou(a, b)}, repeats)
    return {"n": n, "m": m, **{f"{k}_s": v for k, v in t.items()}, "speedup": t["numpy"] / t["fastanchor"]}


def bench_lloyd_iteration(wh: np.ndarray, k: int, update: str, repeats: int, extra: int = 10) -> dict:
    """The cost of one Lloyd iteration (assignment + update) on N boxes.

    fastanchor: the marginal cost of an iteration inside a fit, (t(max_iter=1 + extra) -
    t(max_iter=1)) / extra from the same explicit init, so the fixed costs of a call (validation,
    sorting, final scoring) cancel out. The numpy reference: one assignment plus one update step
    (tests/reference.py), on the same boxes and init.
    """
    init = fastanchor.kmeans_iou(wh[:20_000], k, seed=0).anchors
    first = lambda: fastanchor.kmeans_iou(wh, k, init=init, update=update, max_iter=1)  # noqa: E731
    more = lambda: fastanchor.kmeans_iou(wh, k, init=init, update=update, max_iter=1 + extra)  # noqa: E731
    wt = np.ones(len(wh))

    def ref_iteration():
        labels, best = reference.assign(init, wh)
        return reference._update_step(init, labels, best, wh, wt, update)

    extra = more().n_iter - 1  # fewer if the fit converged sooner
    t = race({"first": first, "more": more, "numpy reference": ref_iteration}, repeats)
    # A difference of two noisy times: meaningful only over enough iterations.
    ours = (t["more"] - t["first"]) / extra if extra >= 5 and t["more"] > t["first"] else float("nan")
    return {
        "n": len(wh), "k": k, "update": update, "fastanchor_s": ours, "numpy reference_s": t["numpy reference"],
        "speedup": t["numpy reference"] / ours, "fastanchor_call_max_iter_1_s": t["first"], "iterations": extra,
    }


def bench_full_fit(wh: np.ndarray, k: int, repeats: int) -> dict:
    """kmeans_iou with its defaults vs scikit-learn's Euclidean Lloyd KMeans with its defaults
    (k-means++, n_init="auto" = one run) on the same boxes."""
    out: dict = {"n": len(wh), "k": k}
    contenders: Dict[str, Callable[[], object]] = {"fastanchor": lambda: fastanchor.kmeans_iou(wh, k, seed=0)}
    try:
        from sklearn.cluster import KMeans

        contenders["sklearn KMeans"] = lambda: KMeans(k, random_state=0, algorithm="lloyd").fit(wh)
    except ImportError:
        out["sklearn"] = "not installed"
    t = race(contenders, repeats)
    res = fastanchor.kmeans_iou(wh, k, seed=0)
    out.update({f"{name}_s": v for name, v in t.items()})
    out.update({"avg_iou": res.avg_iou, "n_iter": res.n_iter, "n_init": fastanchor.DEFAULT_N_INIT})
    if "sklearn KMeans" in t:
        out["ratio_vs_sklearn"] = t["sklearn KMeans"] / t["fastanchor"]
    return out


def bench_real(repeats: int) -> List[dict]:
    rows = []
    for name in real_datasets():
        wh = load_real(name).astype(np.float64)
        t = race({"fastanchor": lambda: fastanchor.kmeans_iou(wh, 9, seed=0)}, repeats)["fastanchor"]
        r = fastanchor.kmeans_iou(wh, 9, seed=0)
        rows.append({"dataset": name, "n": len(wh), "seconds": t, "avg_iou": r.avg_iou, "n_iter": r.n_iter})
    return rows


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes, one repeat")
    ap.add_argument("--n", type=int, default=1_000_000, help="boxes for the synthetic benchmarks")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=str(HERE / "results.json"), help="where to write the JSON results")
    args = ap.parse_args(argv)
    n, repeats = (5_000, 1) if args.quick else (args.n, args.repeats)

    results: dict = {"machine": machine(), "n": n, "repeats": repeats, "quick": args.quick}
    print(f"machine: {results['machine']}")
    wh = coco_like(n, seed=0)

    r = bench_wh_iou(min(n, 2000), 2000, repeats)
    results["wh_iou"] = r
    print(f"wh_iou {r['n']}x{r['m']}: fastanchor {r['fastanchor_s'] * 1e3:.2f} ms, numpy {r['numpy_s'] * 1e3:.2f} ms,"
          f" speedup {r['speedup']:.1f}x")

    results["lloyd_iteration"] = []
    for update in ("median", "mean"):
        r = bench_lloyd_iteration(wh.astype(np.float64), 9, update, max(1, repeats // 2 + 1))
        results["lloyd_iteration"].append(r)
        if not np.isfinite(r["fastanchor_s"]):
            print(f"one Lloyd iteration ({update}), N={r['n']:,}: too few iterations to measure (smoke run)")
            continue
        print(f"one Lloyd iteration ({update}), N={r['n']:,}, k=9: fastanchor {r['fastanchor_s'] * 1e3:.2f} ms"
              f" (a whole max_iter=1 call: {r['fastanchor_call_max_iter_1_s'] * 1e3:.1f} ms),"
              f" numpy reference {r['numpy reference_s'] * 1e3:.1f} ms, speedup {r['speedup']:.0f}x")

    r = bench_full_fit(wh, 9, repeats)
    results["kmeans_iou_defaults"] = r
    line = f"kmeans_iou(wh, 9) defaults, N={r['n']:,}: {r['fastanchor_s']:.3f} s ({r['n_iter']} iterations," \
           f" avg IoU {r['avg_iou']:.4f})"
    if "ratio_vs_sklearn" in r:
        line += f"; sklearn KMeans {r['sklearn KMeans_s']:.3f} s, fastanchor {r['ratio_vs_sklearn']:.2f}x as fast"
    print(line)

    if not args.quick:
        results["real_datasets"] = bench_real(repeats)
        for row in results["real_datasets"]:
            print(f"  {row['dataset']:22s} {row['n']:8,d} boxes  {row['seconds'] * 1e3:8.1f} ms"
                  f"  avg IoU {row['avg_iou']:.4f}  {row['n_iter']} iterations")

    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
