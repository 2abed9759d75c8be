"""Time of the default ``autoanchor(wh, 9)`` on 1,000,000 COCO-like boxes, before and after the
search objectives and the work budget, side by side in one run; and the IoU objectives' time.

    PYTHONPATH=python nice -n 10 /work/venv/bin/python benchmarks/bench_objective_speed.py \\
        --before /work/venv/bin/python --repeats 3

"before" runs ``fastanchor`` as installed in the --before interpreter (without PYTHONPATH), "after"
this tree's ``python/`` package. The two alternate repeat by repeat, each in a fresh process
that times only the call (the boxes are made first); the anchors' checksum shows whether both
gave the same result. Times are medians.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

CHILD = r"""
import sys, time, hashlib, warnings
sys.path.insert(0, {bench!r})
from datasets import coco_like
import fastanchor
wh = coco_like({n}, seed=0).astype("float64")
kw = {kw}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    r = fastanchor.autoanchor(wh, 9, seed=0, **kw)
    t = time.perf_counter() - t0
print(t, hashlib.sha256(r.anchors.tobytes()).hexdigest()[:12], r.fitness, fastanchor.__file__)
"""


def child(python: str, n: int, kw: dict, tree: bool) -> tuple:
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = str(HERE.parent / "python")
    else:
        env.pop("PYTHONPATH", None)
    code = CHILD.format(bench=str(HERE), n=n, kw=repr(kw))
    out = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, check=True, cwd="/")
    t, digest, fit, where = out.stdout.split()
    return float(t), digest, float(fit), where


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="/work/venv/bin/python", help="interpreter with the old fastanchor installed")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--objectives", action="store_true", help="also time objective='avg_iou' and 'recall' (after)")
    args = ap.parse_args()
    times: dict = {"before": [], "after": []}
    info: dict = {}
    for _ in range(args.repeats):
        for label, tree in (("before", False), ("after", True)):
            t, digest, fit, where = child(args.before if not tree else sys.executable, args.n, {}, tree)
            times[label].append(t)
            info[label] = (digest, fit, where)
            print(f"{label}: {t:.3f} s  anchors {digest}  fitness {fit:.6f}  ({where})", flush=True)
    b, a = np.median(times["before"]), np.median(times["after"])
    print(
        f"median before {b:.3f} s, after {a:.3f} s: {a / b:.2f}x; same anchors: {info['before'][0] == info['after'][0]}"
    )
    if args.objectives:
        for obj in ("avg_iou", "recall"):
            ts = [child(sys.executable, args.n, {"objective": obj}, True)[0] for _ in range(args.repeats)]
            print(f"after, objective={obj}: median {np.median(ts):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
