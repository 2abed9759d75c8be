"""Box-size data for the fastanchor benchmarks.

Two sources:

* :func:`coco_like` draws any number of synthetic, COCO-like box sizes from a seeded
  generative model, so benchmarks can go to sizes (10^6, 10^7 boxes) no real dataset has.
* :func:`load_real` reads the real annotation sets kept in ``../shared/data/boxes`` (relative
  to the repository root); :func:`real_datasets` lists them.

Both return ``(N, 2)`` arrays of ``(w, h)`` in pixels as YOLOv5 sees them after letterboxing
each image to the network input size (longest image side scaled to ``img_size``).

Run ``python benchmarks/datasets.py`` to print the size split and shape statistics of the
generator next to those of the real sets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["coco_like", "load_real", "real_datasets", "size_split", "DATA_DIR", "FAMILIES"]

# <repo>/benchmarks/datasets.py -> <repo>/../shared/data/boxes
DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "boxes"

# Shape families of the generator, one row each:
#   (name, share of boxes, median w/h, sd of ln(w/h), median sqrt(area) in px, sd of ln sqrt(area))
# Shares follow COCO train2017 instance counts summed over the member classes. Aspects were
# set from the COCO 2017 annotations kept in shared/data; relative sizes likewise, then all
# sizes were scaled together so the box areas hit COCO's small/medium/large split (see
# coco_like).
FAMILIES = (
    # person: 30% of COCO instances; standing people ~0.4 w/h, sitting or cut-off ones wider
    ("person", 0.30, 0.52, 0.50, 50.0, 1.20),
    # car, truck, bus, motorcycle, bicycle, boat, train, airplane: wide, often far away
    ("vehicle", 0.12, 1.55, 0.55, 30.0, 1.25),
    # bottle, traffic light, wine glass, vase, tie, fire hydrant, parking meter, toothbrush
    ("tall", 0.08, 0.45, 0.42, 22.0, 0.95),
    # chair, bench, potted plant, couch
    ("seating", 0.07, 1.00, 0.55, 48.0, 0.95),
    # dining table, bed, tv, laptop, sink, refrigerator, oven, toilet: large and wide
    ("furniture", 0.06, 1.45, 0.55, 155.0, 0.85),
    # cup, bowl, donut, fruit, cake, pizza, broccoli, clock, sports ball, teddy bear: compact
    ("compact", 0.17, 1.15, 0.45, 34.0, 1.00),
    # bird, sheep, cow, horse, elephant, dog, zebra, giraffe, cat, bear
    ("animal", 0.07, 1.20, 0.55, 78.0, 1.15),
    # book, bags, cutlery, phone, remote, umbrella, kite, skis, boards, rackets: any shape
    ("elongated", 0.13, 0.80, 1.00, 27.0, 0.95),
)

# Original image sizes: longest side 640 for most COCO images, otherwise smaller.
_P_LONG_640 = 0.95
_LONG_MIN = 400.0
# (short / long side, probability): 640x480, 640x427, 640x360, square
_IMAGE_RATIOS = ((0.75, 0.55), (2.0 / 3.0, 0.35), (0.5625, 0.05), (1.0, 0.05))
_P_LANDSCAPE = 0.78


def size_split(wh_original: np.ndarray) -> tuple[float, float, float]:
    """Fractions of boxes that COCO calls small (area < 32^2), medium (< 96^2) and large.

    ``wh_original`` must be in original-image pixels, as the COCO definition is.
    """
    area = np.asarray(wh_original, dtype=np.float64).prod(axis=1)
    small = float(np.mean(area < 32.0**2))
    medium = float(np.mean((area >= 32.0**2) & (area < 96.0**2)))
    return small, medium, 1.0 - small - medium


def _coco_like_original(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (w, h) in original-image pixels and the longest side of each box's image."""
    _, share, ar_med, ar_sd, size_med, size_sd = (np.array(col) for col in zip(*FAMILIES))
    fam = rng.choice(len(FAMILIES), size=n, p=share / share.sum())

    log_size = np.log(size_med[fam]) + size_sd[fam] * rng.standard_normal(n)
    log_ar = np.log(ar_med[fam]) + ar_sd[fam] * rng.standard_normal(n)
    w = np.exp(log_size + 0.5 * log_ar)
    h = np.exp(log_size - 0.5 * log_ar)

    long_side = np.where(rng.random(n) < _P_LONG_640, 640.0, rng.uniform(_LONG_MIN, 640.0, n))
    ratios, p_ratio = (np.array(col) for col in zip(*_IMAGE_RATIOS))
    short_side = long_side * ratios[rng.choice(len(ratios), size=n, p=p_ratio)]
    landscape = rng.random(n) < _P_LANDSCAPE
    img_w = np.where(landscape, long_side, short_side)
    img_h = np.where(landscape, short_side, long_side)

    wh = np.stack([np.minimum(w, img_w), np.minimum(h, img_h)], axis=1)
    return wh, long_side


def coco_like(n: int, *, seed: int = 0, img_size: int = 640, dtype=np.float32) -> np.ndarray:
    """``n`` synthetic COCO-like box sizes ``(w, h)``, letterboxed to ``img_size``.

    The model, per box:

    1. A shape family is drawn with the probabilities in :data:`FAMILIES` (person 30%,
       compact objects 17%, elongated hand-held objects 13%, vehicles 12%, tall thin objects 8%,
       seating 7%, animals 7%, large furniture 6%: COCO train2017 instance counts summed over
       the classes of each family).
    2. Its size ``s = sqrt(w * h)`` and aspect ``r = w / h`` are independent log-normals with
       the family's medians and log standard deviations: e.g. people ``r ~ 0.52`` (sd of
       ``ln r`` 0.50), vehicles ``r ~ 1.55``, tall objects (bottles, traffic lights)
       ``r ~ 0.45``, furniture ``r ~ 1.45`` and large (median ``s`` 155 px), elongated objects
       ``r ~ 0.8`` with a very wide spread (sd 1.0). Then ``w = s * sqrt(r)``, ``h = s / sqrt(r)``.
    3. The box's image has a longest side of 640 px with probability 0.95, else uniform in
       [400, 640); its short side is 0.75, 2/3, 0.5625 or 1 times that (probabilities 0.55,
       0.35, 0.05, 0.05), landscape with probability 0.78 (as in COCO). The box is clipped to
       the image.
    4. YOLOv5 letterboxing scales the box by ``img_size / longest side``; the result is
       clipped to ``[1, img_size]``, so no size is zero or negative.

    Calibration target: the COCO detection evaluation's size split, about 41% small
    (area < 32^2), 34% medium (32^2 to 96^2) and 24% large (> 96^2) objects at original
    resolution (https://cocodataset.org/#detection-eval). The family sizes are scaled so the
    *box* areas of the generated data hit that split (41.7/34.3/24.0 for large ``n``). Note that
    COCO's published split is by the annotation ``area`` field, which is the segmentation
    mask's area; box areas are larger, and the box-area split of real COCO annotations is
    closer to 34/34/32 (measured on the COCO 2017 samples in shared/data). So the generator
    is somewhat richer in small boxes than real COCO: a slightly harder case for anchors, and
    neutral for speed.

    The output is a deterministic function of ``(n, seed, img_size)`` for a given numpy
    version (``numpy.random.default_rng``).
    """
    if n < 0:
        raise ValueError("n must be non-negative")
    if img_size <= 0:
        raise ValueError("img_size must be positive")
    rng = np.random.default_rng(seed)
    wh, long_side = _coco_like_original(int(n), rng)
    wh *= (float(img_size) / long_side)[:, None]
    np.clip(wh, 1.0, float(img_size), out=wh)
    return wh.astype(dtype, copy=False)


def real_datasets() -> list[str]:
    """Names of the real box sets available in ``../shared/data/boxes`` (empty when absent)."""
    if not DATA_DIR.is_dir():
        return []
    return sorted(p.stem for p in DATA_DIR.glob("*.npz"))


def load_real(name: str, *, img_size: int = 640) -> np.ndarray:
    """The real box set ``name``, letterboxed to ``img_size`` (YOLOv5: ``wh * (S / max(img_wh))``).

    Rows whose letterboxed width or height is non-positive or non-finite (degenerate
    annotations, e.g. in WIDER FACE) are dropped. Returns float32 ``(N, 2)``.
    """
    path = DATA_DIR / f"{name}.npz"
    if Path(name).name != name or not path.is_file():
        raise FileNotFoundError(f"no box set {name!r} in {DATA_DIR} (available: {real_datasets()})")
    with np.load(path) as data:
        wh = np.asarray(data["wh"], dtype=np.float32)
        img_wh = np.asarray(data["img_wh"], dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = wh * (np.float32(img_size) / img_wh.max(axis=1))[:, None]
    keep = np.isfinite(out).all(axis=1) & (out > 0).all(axis=1)
    return np.ascontiguousarray(out[keep])


def _describe(name: str, wh: np.ndarray) -> str:
    wh = wh.astype(np.float64)
    s = np.quantile(np.sqrt(wh[:, 0] * wh[:, 1]), [0.1, 0.5, 0.9])
    r = np.exp(np.quantile(np.log(wh[:, 0] / wh[:, 1]), [0.1, 0.5, 0.9]))
    return (
        f"{name:24s} {len(wh):>9,d}  "
        f"sqrt(area) p10/p50/p90 {s[0]:6.1f} {s[1]:6.1f} {s[2]:6.1f}   "
        f"w/h p10/p50/p90 {r[0]:.2f} {r[1]:.2f} {r[2]:.2f}"
    )


def _main() -> None:
    rng = np.random.default_rng(0)
    orig, _ = _coco_like_original(1_000_000, rng)
    small, medium, large = size_split(orig)
    print(
        f"coco_like box-area split at original resolution: small {small:.3f} medium {medium:.3f} "
        f"large {large:.3f} (target 0.41 / 0.34 / 0.24)"
    )
    print("letterboxed to 640:")
    print(_describe("coco_like", coco_like(1_000_000)))
    for name in real_datasets():
        print(_describe(name, load_real(name)))


if __name__ == "__main__":
    _main()
