"""Shared helpers of the learned-anchor benchmarks: real boxes, matching anchors across runs."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def real_boxes(name: str, img_size: int) -> np.ndarray:
    """(N, 2) float64 box sizes of ``../shared/data/boxes/NAME.npz`` letterboxed to img_size (YOLOv5),
    rows with a side below 1 pixel dropped."""
    path = DATA / "boxes" / f"{name}.npz"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: these benchmarks need the real data in ../shared/data")
    with np.load(path) as z:
        wh = z["wh"].astype(np.float64) * (img_size / z["img_wh"].astype(np.float64).max(1))[:, None]
    return wh[np.isfinite(wh).all(1) & (wh >= 1.0).all(1)]


def match(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The permutation p minimising sum |log a - log b[p]|^2 (Hungarian; brute force for k <= 8)."""
    la, lb = np.log(a), np.log(b)
    cost = ((la[:, None, :] - lb[None, :, :]) ** 2).sum(-1)
    try:
        from scipy.optimize import linear_sum_assignment

        return linear_sum_assignment(cost)[1]
    except ImportError:  # pragma: no cover
        best = min(itertools.permutations(range(len(b))), key=lambda p: cost[np.arange(len(b)), p].sum())
        return np.array(best)


def max_side_diff(a: np.ndarray, b: np.ndarray) -> float:
    """The largest relative difference of one side between matched anchors: max |b/a - 1| over sides."""
    p = match(a, b)
    return float(np.abs(b[p] / a - 1.0).max())


def dead_anchors(anchors: np.ndarray, wh: np.ndarray) -> int:
    """Anchors that are the nearest (squared log distance) of no box."""
    d = ((np.log(wh)[:, None, :] - np.log(anchors)[None, :, :]) ** 2).sum(-1)
    return int(len(anchors) - len(np.unique(d.argmin(1))))


def distinct_anchors(anchors: np.ndarray, tol: float = 0.01) -> int:
    """The number of distinct anchors: anchors within ``tol`` of each other in log space on both
    sides (about 1% per side) are one (single linkage)."""
    la = np.log(np.asarray(anchors, dtype=np.float64).reshape(-1, 2))
    group = list(range(len(la)))
    for i in range(len(la)):
        for j in range(i):
            if np.abs(la[i] - la[j]).max() < tol:
                old, new = group[i], group[j]
                group = [new if g == old else g for g in group]
    return len(set(group))


def log_objective(anchors: np.ndarray, wh: np.ndarray) -> float:
    """k-means in log space' objective: mean over boxes of the smallest squared log distance."""
    d = ((np.log(wh)[:, None, :] - np.log(anchors)[None, :, :]) ** 2).sum(-1)
    return float(d.min(1).mean())


def coco128_labels(split: str = "train2017"):
    """The coco128 YOLO labels: a list of (n_i, 5) float arrays (class, x, y, w, h; normalized) and
    an (images, 2) array of the images' (width, height), from ../shared/data/raw/coco128_yolo."""
    root = DATA / "raw" / "coco128_yolo"
    if not root.is_dir():
        raise SystemExit(f"{root} is missing: these benchmarks need the real data in ../shared/data")
    sizes = {}
    for line in (root / "image_sizes.csv").read_text().splitlines()[1:]:
        name, w, h = line.split(",")
        sizes[name.rsplit(".", 1)[0]] = (float(w), float(h))
    labels, wh = [], []
    for f in sorted((root / "labels" / split).glob("*.txt")):
        if f"{split}/{f.stem}" not in sizes:  # a label file without its image's size: skipped
            continue
        rows = [list(map(float, ln.split())) for ln in f.read_text().splitlines() if ln.strip()]
        labels.append(np.array(rows, dtype=np.float64).reshape(-1, 5))
        wh.append(sizes[f"{split}/{f.stem}"])
    return labels, np.array(wh)


def synthetic_batch(labels, img_wh, idx, size: int, seed: int):
    """Letterboxed size x size images synthesized from real box layouts: a noisy grey background
    and every box filled with its class's colour (largest first), plus the boxes as YOLOv5 targets
    (image, class, x, y, w, h; normalized to the square input) and as pixel corners per image.

    Returns (images float32 (B, 3, size, size) in [0, 1], yolo_targets (n, 6), corners list)."""
    import torch

    rng = np.random.default_rng(seed)
    imgs = np.empty((len(idx), 3, size, size), dtype=np.float32)
    yolo, corners = [], []
    for b, i in enumerate(idx):
        w, h = img_wh[i]
        r = size / max(w, h)
        padx, pady = (size - w * r) / 2, (size - h * r) / 2
        im = 0.5 + 0.1 * rng.standard_normal((3, size, size)).astype(np.float32)
        lab = labels[i]
        x1 = lab[:, 1] * w * r + padx - lab[:, 3] * w * r / 2
        y1 = lab[:, 2] * h * r + pady - lab[:, 4] * h * r / 2
        x2, y2 = x1 + lab[:, 3] * w * r, y1 + lab[:, 4] * h * r
        box = np.stack([x1, y1, x2, y2], 1).clip(0, size)
        keep = ((box[:, 2] - box[:, 0]) >= 1) & ((box[:, 3] - box[:, 1]) >= 1)
        box, cls = box[keep], lab[keep, 0].astype(int)
        for j in np.argsort(-(box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])):
            c = cls[j]
            colour = np.array([(c * 37 % 255), (c * 91 % 255), (c * 151 % 255)], dtype=np.float32) / 255
            xa, ya, xb, yb = (int(round(v)) for v in box[j])
            im[:, ya : max(yb, ya + 1), xa : max(xb, xa + 1)] = colour[:, None, None]
        imgs[b] = im.clip(0, 1)
        cxcy = (box[:, :2] + box[:, 2:]) / 2 / size
        bwh = (box[:, 2:] - box[:, :2]) / size
        yolo.append(np.concatenate([np.full((len(box), 1), b), cls[:, None], cxcy, bwh], 1))
        corners.append((box, cls))
    return torch.from_numpy(imgs), torch.from_numpy(np.concatenate(yolo).astype(np.float32)), corners
