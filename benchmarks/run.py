"""Side-by-side benchmarks of fastanchor against the numpy reference and scikit-learn.

Run on demand, never as a test:

    python benchmarks/run.py            # full figures for benchmarks/RESULTS.md (20-40 minutes)
    python benchmarks/run.py --quick    # smoke mode: tiny sizes, seconds (CI runs this)

Peers: the plain-numpy reference (tests/reference.py), scikit-learn's Euclidean Lloyd KMeans
(the speed reference for an optimized Lloyd loop; its anchors are scored with IoU too), and a
faithful numpy/scipy port of YOLOv5's autoanchor (scipy k-means on whitened boxes with 30
restarts, then the 1000-generation mutation search) as users run it today. Optional peers are
skipped when not installed (pip install ".[bench]").

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

import reference  # noqa: E402
from datasets import coco_like, load_real, real_datasets  # noqa: E402

import fastanchor  # noqa: E402


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


_PEAK_SCRIPT = """
import sys, warnings
sys.path.insert(0, {here!r})
import numpy as np
from datasets import coco_like
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])
wh = coco_like({n}, seed=0)
import fastanchor
{setup}
base = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # restart the high-water mark from here
{call}
print(status("VmHWM:") - base)
"""


def extra_peak_mb(n: int, call: str, setup: str = "") -> float:
    """Extra peak resident memory (MB) of `call` on coco_like(n) boxes, measured in a fresh Python
    process (Linux): its high-water mark after the call minus its resident size before it, the
    input included in both. A fresh process, because OpenMP runtimes do not survive fork()."""
    import subprocess

    if not Path("/proc/self/status").exists():
        return float("nan")
    code = _PEAK_SCRIPT.format(here=str(HERE), n=n, setup=setup, call=call)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
    try:
        return int(out.stdout.strip().splitlines()[-1]) / 1024
    except (ValueError, IndexError):
        return float("nan")


def yolov5_fitness(k: np.ndarray, wh: np.ndarray, thr: float) -> float:
    """YOLOv5's autoanchor fitness (utils/autoanchor.py), in float32 as its torch code runs."""
    r = wh[:, None] / k[None]
    x = np.minimum(r, 1 / r).min(2)
    best = x.max(1)
    return float((best * (best > 1 / thr)).mean())


def yolov5_pipeline(wh: np.ndarray, k: int = 9, thr: float = 4.0, gen: int = 1000, seed: int = 0) -> np.ndarray:
    """YOLOv5's kmean_anchors as users run it, ported to numpy/scipy: drop boxes below 2 px on both
    sides, scipy k-means on whitened boxes (30 restarts), then the mutation search (per
    generation one rho ~ U(0, 1), v = clip(1 + [U < 0.9] * rho * N(0, 1) * 0.1, 0.3, 3), accepted if
    the fitness is higher). Anchors sorted by area."""
    from scipy.cluster.vq import kmeans

    rng = np.random.default_rng(seed)
    wh = wh[(wh >= 2.0).any(1)].astype(np.float32)
    s = wh.std(0)
    anchors = (kmeans(wh / s, k, iter=30, seed=seed)[0] * s).astype(np.float32)
    f = yolov5_fitness(anchors, wh, thr)
    for _ in range(gen):
        v = np.ones(anchors.shape, dtype=np.float32)
        while (v == 1).all():
            v = (rng.random(anchors.shape) < 0.9) * rng.random() * rng.standard_normal(anchors.shape) * 0.1 + 1
            v = v.clip(0.3, 3.0).astype(np.float32)
        cand = (anchors * v).clip(min=2.0)
        fc = yolov5_fitness(cand, wh, thr)
        if fc > f:
            f, anchors = fc, cand
    return anchors[np.argsort(anchors.prod(1))].astype(np.float64)


def anchor_quality(anchors: np.ndarray, wh: np.ndarray) -> dict:
    m = fastanchor.anchor_fitness(anchors, wh)
    return {"fitness": m.fitness, "bpr": m.bpr, "avg_iou": m.avg_iou}


def bench_pipeline(wh: np.ndarray, gen: int, repeats: int) -> dict:
    """fastanchor.autoanchor vs the YOLOv5-style numpy/scipy pipeline, same boxes, same budget."""
    import warnings

    keep = (wh >= 2.0).any(1)
    out: dict = {"n": len(wh), "generations": gen}
    results: dict = {}

    def ours():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results["fastanchor"] = fastanchor.autoanchor(wh, 9, generations=gen, seed=0).anchors

    def theirs():
        results["yolov5"] = yolov5_pipeline(wh, 9, gen=gen, seed=0)

    t = race({"fastanchor autoanchor": ours, "YOLOv5-style numpy/scipy": theirs}, repeats)
    out.update({f"{k}_s": v for k, v in t.items()})
    out["speedup"] = t["YOLOv5-style numpy/scipy"] / t["fastanchor autoanchor"]
    out["fastanchor_quality"] = anchor_quality(results["fastanchor"], wh[keep])
    out["yolov5_quality"] = anchor_quality(results["yolov5"], wh[keep])
    return out


def bench_scaling(sizes: List[int], repeats: int) -> List[dict]:
    """Time per box of one Lloyd iteration (median update) and of a whole default fit, by size."""
    rows = []
    for n in sizes:
        wh = coco_like(n, seed=0).astype(np.float64)
        it = bench_lloyd_iteration(wh, 9, "median", repeats)
        fit = race({"fit": lambda: fastanchor.kmeans_iou(wh, 9, seed=0)}, repeats)["fit"]
        rows.append(
            {
                "n": n,
                "iteration_s": it["fastanchor_s"],
                "iteration_ns_per_box": it["fastanchor_s"] / n * 1e9,
                "fit_s": fit,
                "fit_iterations": fastanchor.kmeans_iou(wh, 9, seed=0).n_iter,
            }
        )
    return rows


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
        "n": len(wh),
        "k": k,
        "update": update,
        "fastanchor_s": ours,
        "numpy reference_s": t["numpy reference"],
        "speedup": t["numpy reference"] / ours,
        "fastanchor_call_max_iter_1_s": t["first"],
        "iterations": extra,
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
    out["input_mb"] = wh.nbytes / 2**20
    out["fastanchor_extra_peak_mb"] = extra_peak_mb(len(wh), "fastanchor.kmeans_iou(wh, 9, seed=0)")
    # The same boxes as float64 rows (read in place too, plus a float32 copy for the ranking).
    out["fastanchor_extra_peak_mb_float64"] = extra_peak_mb(
        len(wh), "fastanchor.kmeans_iou(wh, 9, seed=0)", "wh = wh.astype(np.float64)"
    )
    if "sklearn KMeans" in t:
        from sklearn.cluster import KMeans

        out["ratio_vs_sklearn"] = t["sklearn KMeans"] / t["fastanchor"]
        centers = KMeans(k, random_state=0, algorithm="lloyd").fit(wh).cluster_centers_
        out["sklearn_avg_iou"] = fastanchor.avg_iou(np.clip(centers, 1e-6, None), wh)
        out["sklearn_extra_peak_mb"] = extra_peak_mb(
            len(wh), "KMeans(9, random_state=0, algorithm='lloyd').fit(wh)", "from sklearn.cluster import KMeans"
        )
    return out


def bench_real(repeats: int) -> List[dict]:
    rows = []
    for name in real_datasets():
        wh = load_real(name).astype(np.float64)
        t = race({"fastanchor": lambda: fastanchor.kmeans_iou(wh, 9, seed=0)}, repeats)["fastanchor"]
        r = fastanchor.kmeans_iou(wh, 9, seed=0)
        rows.append({"dataset": name, "n": len(wh), "seconds": t, "avg_iou": r.avg_iou, "n_iter": r.n_iter})
    return rows


def bench_pipeline_report(wh: np.ndarray, gen: int, results: dict) -> None:
    """autoanchor against the YOLOv5-style pipeline (needs scipy), printed and stored in results."""
    try:
        import scipy  # noqa: F401
    except ImportError:
        print("autoanchor vs YOLOv5-style pipeline: skipped (scipy is not installed)")
        return
    r = bench_pipeline(wh, gen, 1)
    results["autoanchor_vs_yolov5"] = r
    fq, yq = r["fastanchor_quality"], r["yolov5_quality"]
    print(
        f"autoanchor (k=9, {gen} generations), N={r['n']:,}: fastanchor {r['fastanchor autoanchor_s']:.2f} s"
        f" (fitness {fq['fitness']:.4f}, BPR {fq['bpr']:.4f}, avg IoU {fq['avg_iou']:.4f});"
        f" YOLOv5-style numpy/scipy {r['YOLOv5-style numpy/scipy_s']:.2f} s (fitness {yq['fitness']:.4f},"
        f" BPR {yq['bpr']:.4f}, avg IoU {yq['avg_iou']:.4f}); speedup {r['speedup']:.0f}x"
    )


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes, one repeat")
    ap.add_argument("--n", type=int, default=1_000_000, help="boxes for the synthetic benchmarks")
    ap.add_argument("--big", type=int, default=10_000_000, help="boxes for the large fit (0: skip)")
    ap.add_argument("--generations", type=int, default=1000, help="generations of both autoanchor pipelines")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=str(HERE / "results.json"), help="where to write the JSON results")
    ap.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["pipeline", "scaling", "real"],
        help="parts to leave out (the YOLOv5-style pipeline alone takes about 15 minutes)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        n, big, gen, repeats, sizes = 5_000, 0, 5, 1, [2_000, 5_000]
    else:
        n, big, gen, repeats = args.n, args.big, args.generations, args.repeats
        sizes = [s for s in (100_000, 1_000_000, 10_000_000) if s <= max(n, big)]

    results: dict = {
        "machine": machine(),
        "n": n,
        "repeats": repeats,
        "quick": args.quick,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    print(f"machine: {results['machine']}; load average {results['load_average']}")
    wh = coco_like(n, seed=0)

    r = bench_wh_iou(min(n, 2000), 2000, repeats)
    results["wh_iou"] = r
    print(
        f"wh_iou {r['n']}x{r['m']}: fastanchor {r['fastanchor_s'] * 1e3:.2f} ms, numpy {r['numpy_s'] * 1e3:.2f} ms,"
        f" speedup {r['speedup']:.1f}x"
    )

    results["lloyd_iteration"] = []
    for update in ("median", "mean"):
        # A difference of two fits' times, each a median: more repeats than the other figures
        # (with 2 the figure read 0.95-2.85 ms for the same build on a shared machine).
        r = bench_lloyd_iteration(wh.astype(np.float64), 9, update, 2 * repeats + 1)
        results["lloyd_iteration"].append(r)
        if not np.isfinite(r["fastanchor_s"]):
            print(f"one Lloyd iteration ({update}), N={r['n']:,}: too few iterations to measure (smoke run)")
            continue
        print(
            f"one Lloyd iteration ({update}), N={r['n']:,}, k=9: fastanchor {r['fastanchor_s'] * 1e3:.2f} ms"
            f" (a whole max_iter=1 call: {r['fastanchor_call_max_iter_1_s'] * 1e3:.1f} ms),"
            f" numpy reference {r['numpy reference_s'] * 1e3:.1f} ms, speedup {r['speedup']:.0f}x"
        )

    results["kmeans_iou_defaults"] = []
    for size in [n] + ([big] if big else []):
        data = wh if size == n else coco_like(size, seed=0)
        r = bench_full_fit(data, 9, repeats if size == n else max(1, repeats // 2))
        results["kmeans_iou_defaults"].append(r)
        line = (
            f"kmeans_iou(wh, 9) defaults, N={r['n']:,}: {r['fastanchor_s']:.3f} s ({r['n_iter']} iterations,"
            f" avg IoU {r['avg_iou']:.4f}, extra peak memory {r['fastanchor_extra_peak_mb']:.0f} MB"
            f" for {r['input_mb']:.0f} MB of float32 input, {r['fastanchor_extra_peak_mb_float64']:.0f} MB"
            f" for the same as float64)"
        )
        if "ratio_vs_sklearn" in r:
            line += (
                f"; sklearn KMeans {r['sklearn KMeans_s']:.3f} s (avg IoU of its anchors {r['sklearn_avg_iou']:.4f},"
                f" extra peak {r['sklearn_extra_peak_mb']:.0f} MB), fastanchor {r['ratio_vs_sklearn']:.2f}x as fast"
            )
        print(line)

    if "pipeline" not in args.skip:
        bench_pipeline_report(wh, gen, results)

    if "scaling" not in args.skip:
        results["scaling"] = bench_scaling(sizes, max(1, repeats // 2))
        for row in results["scaling"]:
            it = f"{row['iteration_ns_per_box']:.2f} ns/box per iteration" if np.isfinite(row["iteration_s"]) else "n/a"
            print(
                f"  scaling N={row['n']:>10,}: {it}; default fit {row['fit_s']:.3f} s"
                f" ({row['fit_s'] / row['n'] * 1e9:.0f} ns/box, {row['fit_iterations']} iterations)"
            )

    if not args.quick and "real" not in args.skip:
        results["real_datasets"] = bench_real(repeats)
        for row in results["real_datasets"]:
            print(
                f"  {row['dataset']:22s} {row['n']:8,d} boxes  {row['seconds'] * 1e3:8.1f} ms"
                f"  avg IoU {row['avg_iou']:.4f}  {row['n_iter']} iterations"
            )

    Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
