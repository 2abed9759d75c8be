"""fastanchor quick start: YOLO anchors for a synthetic COCO-like dataset of 200,000 boxes.

Run: python examples/quickstart.py
"""

import time

import numpy as np

import fastanchor


def coco_like_boxes(n: int, seed: int = 0) -> np.ndarray:
    """Box (width, height) in pixels of a 640-pixel letterboxed image: log-normal sizes with a
    mixture of tall, square and wide aspect ratios, as object-detection datasets have."""
    rng = np.random.default_rng(seed)
    size = np.exp(rng.normal(np.log(60), 1.0, n))  # sqrt(area) in pixels
    mode = rng.choice(np.log([0.45, 1.0, 1.8]), n, p=[0.35, 0.4, 0.25])
    ratio = np.exp(mode + rng.normal(0, 0.35, n))  # width / height
    wh = np.stack([size * np.sqrt(ratio), size / np.sqrt(ratio)], axis=1)
    return np.clip(wh, 1.0, 640.0).astype(np.float32)


wh = coco_like_boxes(200_000)
t0 = time.perf_counter()
result = fastanchor.kmeans_iou(wh, 9, seed=0)
elapsed = time.perf_counter() - t0

print(f"{len(wh):,} boxes, k = 9, {elapsed:.2f} s, {result.n_iter} Lloyd iterations, converged: {result.converged}")
print(f"average IoU of each box with its best anchor: {result.avg_iou:.4f}")
print("anchors (width, height), smallest first:")
for level, group in enumerate(np.split(np.round(result.anchors).astype(int), 3)):
    print(f"  P{level + 3}: " + ", ".join(f"{w},{h}" for w, h in group))
