"""SSD and corner boxes (issue 6): box_iou and match_priors against numpy. Run on demand:

    python benchmarks/bench_ssd.py                # Markdown tables for RESULTS.md
    python benchmarks/bench_ssd.py --quick        # smaller sizes, a smoke run

box_iou: 10,000 x 10,000 corner boxes (pixel-like, random), fastanchor with float64 output and
with float32 output (float32 inputs) against numpy float64 broadcasting done in chunks of 1,000
rows (the whole 10k x 10k broadcast needs ~5 temporaries of 800 MB each; the chunked numpy is
also faster than the whole broadcast). A 5,000 x 5,000 case adds the whole broadcast.

match_priors: a batch of 64 images with 50 ground-truth boxes each against SSD300's 8,732
priors and ssd_mobilenet_v1's 1,917 (normalized coordinates), fastanchor's batched call against
the numpy reference (tests/reference.py, one image at a time, the same result) and against a
vectorized numpy matcher in the style of ssd.pytorch (argmax per GT forced onto its prior,
later GT boxes overwriting earlier ones: a different tie rule, shown for scale).

Contenders are interleaved repeat by repeat (the machine is shared and noisy); times are medians.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(1, str(HERE.parent / "tests"))  # tests/reference.py

import reference  # noqa: E402
from run import race  # noqa: E402  (the shared timing helpers)

import fastanchor  # noqa: E402


def random_boxes(rng: np.random.Generator, n: int, scale: float, lo: float, hi: float) -> np.ndarray:
    c = rng.uniform(0, scale, (n, 2))
    wh = rng.uniform(lo, hi, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], 1)


def numpy_iou_chunked(a: np.ndarray, b: np.ndarray, rows: int = 1000) -> np.ndarray:
    out = np.empty((a.shape[0], b.shape[0]))
    for i in range(0, a.shape[0], rows):
        out[i : i + rows] = reference.box_iou(a[i : i + rows], b)
    return out


def ssd_pytorch_style(priors: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The common vectorized matcher (ssd.pytorch's rule, in numpy)."""
    iou = reference.box_iou(gt, priors)
    best_prior = iou.argmax(1)
    best_gt = iou.argmax(0)
    best_val = iou.max(0)
    best_val[best_prior] = 2.0
    for j, p in enumerate(best_prior):
        best_gt[p] = j
    return np.where(best_val >= threshold, best_gt, -1)


def bench_box_iou(n: int, repeats: int, threads: int) -> None:
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, n, 1000, 5, 200), random_boxes(rng, n, 1000, 5, 200)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    contenders = {
        "numpy float64, chunks of 1,000 rows": lambda: numpy_iou_chunked(a, b),
        "fastanchor float64": lambda: fastanchor.box_iou(a, b, n_threads=threads),
        "fastanchor float32 out": lambda: fastanchor.box_iou(a32, b32, n_threads=threads),
    }
    if n <= 5000:
        contenders["numpy float64, whole broadcast"] = lambda: reference.box_iou(a, b)
    assert np.array_equal(fastanchor.box_iou(a[:500], b), reference.box_iou(a[:500], b))
    t = race(contenders, repeats)
    base = t["numpy float64, chunks of 1,000 rows"]
    print(f"\n### box_iou {n:,} x {n:,} ({threads} threads, median of {repeats})\n")
    print("| | seconds | speed-up vs chunked numpy |\n|---|---:|---:|")
    for name, s in t.items():
        print(f"| {name} | {s:.3f} | {base / s:.1f}x |")


def bench_match(n_priors_maps: str, repeats: int, threads: int) -> None:
    if n_priors_maps == "ssd300":
        priors_c = fastanchor.ssd_default_boxes([38, 19, 10, 5, 3, 1], [[2], [2, 3], [2, 3], [2, 3], [2], [2]])
    else:
        priors_c = fastanchor.tf_anchor_generator(
            [19, 10, 5, 3, 2, 1], [1.0, 2.0, 0.5, 3.0, 1 / 3], min_scale=0.2, max_scale=0.95
        )
    priors = fastanchor.to_corners(priors_c)
    rng = np.random.default_rng(1)
    gts = [random_boxes(rng, 50, 1.0, 0.02, 0.6) for _ in range(64)]
    fast = fastanchor.match_priors(priors, gts, n_threads=threads)
    for b in range(64):
        assert np.array_equal(fast[b], reference.match_priors(priors, gts[b]))
    t = race(
        {
            "numpy reference (per image)": lambda: [reference.match_priors(priors, g) for g in gts],
            "numpy, ssd.pytorch-style rule": lambda: [ssd_pytorch_style(priors, g) for g in gts],
            "fastanchor.match_priors": lambda: fastanchor.match_priors(priors, gts, n_threads=threads),
        },
        repeats,
    )
    base = t["numpy reference (per image)"]
    print(
        f"\n### match_priors, 64 images x 50 GT boxes, {priors.shape[0]:,} priors ({n_priors_maps}; "
        f"{threads} threads, median of {repeats})\n"
    )
    print("| | seconds | speed-up vs the reference |\n|---|---:|---:|")
    for name, s in t.items():
        print(f"| {name} | {s:.4f} | {base / s:.1f}x |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    threads = args.threads or fastanchor._core.max_threads()
    print(f"fastanchor {fastanchor.__version__}, {os.cpu_count()} CPUs, numpy {np.__version__}")
    if args.quick:
        bench_box_iou(2000, 3, threads)
        bench_match("mobilenet", 3, threads)
        return
    bench_box_iou(10000, 3, threads)
    bench_box_iou(5000, 5, threads)
    bench_match("ssd300", 5, threads)
    bench_match("mobilenet", 5, threads)


if __name__ == "__main__":
    main()
