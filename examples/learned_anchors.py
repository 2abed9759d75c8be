"""Learned anchors in a plain PyTorch training loop (no detection framework).

A toy "detector" predicts, for every ground-truth box and every anchor, the log-space offsets
(D^w, D^h) from a feature of the box (here a noisy view of the box itself), through the
shift-free normalization layer. The anchors are parameters next to the network's weights,
start from a poor place (all identical), and the warm-ups (soft assignment, then online
clustering) bring them to the boxes' clusters. At the end they are checked against the data and
written into a YOLOv5 model yaml.

    pip install "fastanchor[torch]"
    python examples/learned_anchors.py [--steps 600] [--out /tmp/learned-anchors.yaml]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

import fastanchor
from fastanchor.torch import LearnedAnchors, ShiftFreeNorm, WarmupSchedule


def boxes(n: int, rng: np.random.Generator) -> np.ndarray:
    """COCO-like box sizes in pixels of a 640 input: a mixture of shapes, log-normal around each."""
    centres = np.log([[12, 14], [30, 60], [60, 30], [90, 110], [200, 160], [380, 420]])
    pick = rng.integers(0, len(centres), n)
    return np.exp(centres[pick] + rng.normal(0, 0.3, (n, 2)))


class OffsetHead(nn.Module):
    """Predicts (D^w, D^h) for each box and anchor from a box feature. The outputs go through the
    shift-free normalization (batch norm without the bias: the anchors carry the mean offset) and
    are bounded to +-0.7 in log space (a factor of 2), as detectors bound theirs (YOLOv5: 0 to 4x),
    so every box needs an anchor within reach."""

    def __init__(self, num_anchors: int) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.net = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 2 * num_anchors))
        self.norm = ShiftFreeNorm(2)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        d = self.net(feature).view(-1, self.num_anchors, 2)
        return 0.7 * torch.tanh(self.norm(d))  # (N, A, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default=None, help="write the learned anchors to this .yaml/.cfg/.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    data = boxes(20000, rng)

    # 9 anchors over 3 levels, all starting at the boxes' geometric mean (a poor start)
    schedule = WarmupSchedule(
        soft_steps=args.steps // 5,
        handover_steps=args.steps // 5,
        temperature=0.5,
        cluster_weight=1.0,
        cluster_steps=args.steps // 2,
    )
    anchors = LearnedAnchors("identical", 9, wh=data, strides=(8, 16, 32), schedule=schedule)
    head = OffsetHead(anchors.num_anchors)
    optimizer = torch.optim.SGD(
        [{"params": head.parameters(), "weight_decay": 1e-4}, {"params": anchors.parameters(), "weight_decay": 0.0}],
        lr=0.05,
        momentum=0.9,
    )
    for step in range(args.steps):
        gt = torch.as_tensor(data[rng.integers(0, len(data), args.batch)], dtype=torch.float32)
        feature = gt.log() + 0.5 * torch.randn_like(gt)  # what the network "sees" of each box
        delta = head(feature)
        loss = anchors.loss(gt, delta)  # regression in log space + lambda(t) * online clustering
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        anchors.advance()
        if step % max(1, args.steps // 5) == 0 or step == args.steps - 1:
            shown = " ".join(f"{w:.0f}x{h:.0f}" for w, h in fastanchor.export.round_anchors(anchors.numpy()))
            print(
                f"step {step:5d}  loss {loss.item():.4f}  soft share {schedule.soft_weight(step):.2f}  "
                f"lambda {schedule.cluster_lambda(step):.2f}  anchors {shown}"
            )

    check = anchors.check(data)
    print(f"learned anchors: best possible recall {check.bpr:.4f}, average IoU {check.avg_iou:.4f}")
    km = fastanchor.kmeans_iou(data, 9, seed=0)
    print(f"k-means (IoU) anchors for comparison: average IoU {km.avg_iou:.4f}")
    if args.out:
        fmt = anchors.export(args.out)
        print(f"wrote {args.out} ({fmt})")


if __name__ == "__main__":
    main()
