"""Robustness of learned anchors to their start (the paper's claim), on streams of real boxes.

For each dataset: a seeded stream of mini-batches of real box sizes; the anchors alone are trained
(network offsets held at zero) with SGD from three starts (identical, uniform in log space,
k-means IoU), with the warm-ups (soft assignment then hand-over, online clustering) and without
(hard assignment from step 0). Reports the largest per-side relative difference between the
ending anchors of any two starts (anchors matched by the Hungarian method in log space), the dead
anchors (nearest to no box of the dataset), the distinct anchors (within 1% per side counts as one)
a quarter into the run and at its end, the log-space k-means objective, and that of the core's
kmeans_log from the k-means start. Saves the trajectories for plot_paths.py.

    PYTHONPATH=python nice -n 10 /work/venv-torch/bin/python benchmarks/learned_anchors/robustness.py \\
        --out /tmp/learned_anchors
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import dead_anchors, distinct_anchors, log_objective, max_side_diff, real_boxes  # noqa: E402

import fastanchor  # noqa: E402
from fastanchor.torch import LearnedAnchors, WarmupSchedule  # noqa: E402


def train(
    wh: np.ndarray,
    init,
    k: int,
    schedule: WarmupSchedule,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    record_every: int,
    jitter: float,
):
    torch.manual_seed(seed)
    anchors = LearnedAnchors(init, k, wh=wh, schedule=schedule, seed=seed, jitter=jitter, dtype=torch.float64)
    opt = torch.optim.SGD(anchors.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + np.cos(np.pi * min(t, steps) / steps)))
    rng = np.random.default_rng(seed)
    g = torch.as_tensor(wh)
    path = [anchors.numpy()]
    for t in range(steps):
        idx = torch.as_tensor(rng.integers(0, len(wh), batch))
        opt.zero_grad()
        anchors.loss(g[idx]).backward()
        opt.step()
        sched.step()
        anchors.advance()
        if (t + 1) % record_every == 0:
            path.append(anchors.numpy())
    return anchors.numpy(), np.stack(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--datasets",
        nargs="+",
        default=["coco_mini:640", "voc2007_train:416"],
        help="NAME:IMG_SIZE of ../shared/data/boxes/NAME.npz",
    )
    ap.add_argument("--k", type=int, default=9)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/learned_anchors")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warm = WarmupSchedule(
        soft_steps=args.steps // 4,
        handover_steps=args.steps // 4,
        temperature=0.5,
        cluster_weight=1.0,
        cluster_steps=args.steps // 2,
    )
    configs = {"warm-ups": warm, "no warm-ups": WarmupSchedule.off()}
    report = {"args": vars(args), "datasets": {}}
    paths = {}
    for spec in args.datasets:
        name, size = spec.split(":")
        wh = real_boxes(name, int(size))
        km = fastanchor.kmeans_iou(wh, args.k, seed=args.seed)
        starts = {
            "identical": ("identical", 1e-3),
            "uniform": ("uniform", 0.0),
            "k-means": (km, 0.0),
            "identical, no jitter": ("identical", 0.0),
        }
        entry = {"boxes": int(len(wh)), "img_size": int(size)}
        kl = fastanchor.kmeans_log(wh, args.k, init=km.anchors, n_init=1).anchors
        entry["kmeans_log_from_kmeans"] = {"objective": log_objective(kl, wh), "anchors": np.round(kl, 2).tolist()}
        for cname, schedule in configs.items():
            ends = {}
            runs = {}
            for sname, (init, jitter) in starts.items():
                t0 = time.perf_counter()
                end, path = train(wh, init, args.k, schedule, args.steps, args.batch, args.lr, args.seed, 20, jitter)
                ends[sname] = end
                paths[f"{name}|{cname}|{sname}"] = path
                runs[sname] = {
                    "dead": dead_anchors(end, wh),
                    "distinct": distinct_anchors(end),
                    "distinct_at_quarter": distinct_anchors(path[len(path) // 4]),
                    "objective": log_objective(end, wh),
                    "seconds": round(time.perf_counter() - t0, 2),
                    "anchors": np.round(end, 2).tolist(),
                }
            names = [n for n in ends if n != "identical, no jitter"]
            pairs = {
                f"{a} vs {b}": max_side_diff(ends[a], ends[b]) for i, a in enumerate(names) for b in names[i + 1 :]
            }
            entry[cname] = {"runs": runs, "max_side_diff": pairs}
            print(
                f"{name} ({len(wh)} boxes) {cname}: max per-side diff "
                + ", ".join(f"{p} {100 * v:.2f}%" for p, v in pairs.items())
                + " | dead "
                + ", ".join(f"{s} {r['dead']}" for s, r in runs.items())
                + " | distinct at 1/4 and at the end "
                + ", ".join(f"{s} {r['distinct_at_quarter']}/{r['distinct']}" for s, r in runs.items())
                + " | objective "
                + ", ".join(f"{s} {r['objective']:.4f}" for s, r in runs.items()),
                flush=True,
            )
        print(f"  kmeans_log from the k-means start: objective {entry['kmeans_log_from_kmeans']['objective']:.4f}")
        report["datasets"][name] = entry
    (out / "robustness.json").write_text(json.dumps(report, indent=1))
    np.savez_compressed(out / "paths.npz", **paths)
    print(f"wrote {out / 'robustness.json'} and {out / 'paths.npz'}")


if __name__ == "__main__":
    main()
