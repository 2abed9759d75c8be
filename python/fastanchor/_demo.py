"""A realistic example dataset, generated on the fly and written as real annotation files.

``fastanchor anchors --demo`` writes one to a temporary folder and loads it back through the
ordinary loaders, so the demo exercises the same path as a user's data. The boxes follow a
COCO-like model: eight shape families (people, vehicles, tall, seating, furniture, compact,
animals, elongated objects) with log-normal sizes and aspect ratios, in 640-pixel images of
COCO's usual shapes (640x480, 640x427, ...).
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import numpy as np

__all__ = ["DemoImage", "make_demo", "demo_images", "write_blank_png", "write_voc", "write_coco", "write_yolo"]

# (class name, share of boxes, median w/h, sd of ln(w/h), median sqrt(area) px, sd of ln sqrt(area)):
# shares from COCO instance counts summed over similar classes; shapes as measured on COCO.
_FAMILIES = (
    ("person", 0.30, 0.52, 0.50, 50.0, 1.20),
    ("car", 0.12, 1.55, 0.55, 30.0, 1.25),
    ("bottle", 0.08, 0.45, 0.42, 22.0, 0.95),
    ("chair", 0.07, 1.00, 0.55, 48.0, 0.95),
    ("dining table", 0.06, 1.45, 0.55, 155.0, 0.85),
    ("cup", 0.17, 1.15, 0.45, 34.0, 1.00),
    ("dog", 0.07, 1.20, 0.55, 78.0, 1.15),
    ("book", 0.13, 0.80, 1.00, 27.0, 0.95),
)
CLASS_NAMES = tuple(f[0] for f in _FAMILIES)
# Image shapes: (short / long side, probability); landscape 78% of the time.
_RATIOS = ((0.75, 0.55), (2.0 / 3.0, 0.35), (0.5625, 0.05), (1.0, 0.05))
_MIN_SIDE = 4  # demo boxes are at least this many pixels on each side


@dataclass(frozen=True)
class DemoImage:
    """One generated image: its file name, size, and boxes as integer pixel corners."""

    name: str
    width: int
    height: int
    boxes: np.ndarray  # (n, 4) int64: x1, y1, x2, y2 with 0 <= x1 < x2 <= width
    classes: np.ndarray  # (n,) int64 into CLASS_NAMES
    difficult: np.ndarray  # (n,) bool


def demo_images(n_images: int = 1000, *, seed: int = 0, boxes_per_image: float = 7.0) -> List[DemoImage]:
    """Generate ``n_images`` images with about ``boxes_per_image`` boxes each (at least one)."""
    rng = np.random.default_rng(seed)
    share = np.array([f[1] for f in _FAMILIES])
    share = share / share.sum()
    ratios = np.array([r for r, _ in _RATIOS])
    p_ratio = np.array([p for _, p in _RATIOS])
    images = []
    for i in range(n_images):
        long_side = 640 if rng.random() < 0.95 else int(rng.integers(400, 640))
        short_side = int(round(long_side * ratios[rng.choice(len(ratios), p=p_ratio)]))
        w_img, h_img = (long_side, short_side) if rng.random() < 0.78 else (short_side, long_side)
        n = 1 + int(rng.poisson(boxes_per_image - 1))
        fam = rng.choice(len(_FAMILIES), size=n, p=share)
        params = np.array([_FAMILIES[f][2:] for f in fam])
        bw = np.zeros(n, dtype=np.int64)
        bh = np.zeros(n, dtype=np.int64)
        todo = np.arange(n)
        while todo.size:  # draw again the boxes below the smallest annotated size
            p = params[todo]
            log_size = np.log(p[:, 2]) + p[:, 3] * rng.standard_normal(todo.size)
            log_ar = np.log(p[:, 0]) + p[:, 1] * rng.standard_normal(todo.size)
            bw[todo] = np.rint(np.exp(log_size + 0.5 * log_ar))
            bh[todo] = np.rint(np.exp(log_size - 0.5 * log_ar))
            todo = todo[(bw[todo] < _MIN_SIDE) | (bh[todo] < _MIN_SIDE)]
        bw = np.minimum(bw, w_img)  # large objects are cut by the image border
        bh = np.minimum(bh, h_img)
        x1 = (rng.random(n) * (w_img - bw + 1)).astype(np.int64)
        y1 = (rng.random(n) * (h_img - bh + 1)).astype(np.int64)
        boxes = np.stack([x1, y1, x1 + bw, y1 + bh], axis=1)
        difficult = rng.random(n) < 0.03
        images.append(DemoImage(f"demo_{i:06d}.jpg", w_img, h_img, boxes, fam.astype(np.int64), difficult))
    return images


def write_voc(folder: str, images: List[DemoImage]) -> str:
    """One Pascal VOC XML file per image in ``folder``, the corners written as they are
    (``xmax - xmin`` is the box width, the loader's convention)."""
    os.makedirs(folder, exist_ok=True)
    for im in images:
        objects = "".join(
            f"\t<object>\n\t\t<name>{CLASS_NAMES[c]}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
            f"\t\t<difficult>{int(d)}</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{x1}</xmin>\n\t\t\t<ymin>{y1}</ymin>\n"
            f"\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>\n\t\t</bndbox>\n\t</object>\n"
            for (x1, y1, x2, y2), c, d in zip(im.boxes.tolist(), im.classes.tolist(), im.difficult.tolist())
        )
        text = (
            f"<annotation>\n\t<folder>JPEGImages</folder>\n\t<filename>{im.name}</filename>\n"
            f"\t<size>\n\t\t<width>{im.width}</width>\n\t\t<height>{im.height}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
            f"\t<segmented>0</segmented>\n{objects}</annotation>\n"
        )
        with open(os.path.join(folder, os.path.splitext(im.name)[0] + ".xml"), "w", encoding="utf-8") as f:
            f.write(text)
    return folder


def write_coco(path: str, images: List[DemoImage]) -> str:
    """One COCO json file with every image and box (category ids from 1)."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    anns: List[Dict[str, Any]] = []
    for i, im in enumerate(images):
        for (x1, y1, x2, y2), c in zip(im.boxes.tolist(), im.classes.tolist()):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": c + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    doc = {
        "info": {"description": "fastanchor demo dataset (synthetic)"},
        "images": [
            {"id": i + 1, "file_name": im.name, "width": im.width, "height": im.height} for i, im in enumerate(images)
        ],
        "annotations": anns,
        "categories": [{"id": c + 1, "name": name} for c, name in enumerate(CLASS_NAMES)],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    return path


def write_yolo(root: str, images: List[DemoImage], split: str = "train") -> str:
    """An Ultralytics dataset: ``data.yaml``, blank PNG images and normalized label files."""
    img_dir = os.path.join(root, "images", split)
    lab_dir = os.path.join(root, "labels", split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(lab_dir, exist_ok=True)
    for im in images:
        stem = os.path.splitext(im.name)[0]
        write_blank_png(os.path.join(img_dir, stem + ".png"), im.width, im.height)
        b = im.boxes.astype(np.float64)
        rows = np.stack(
            [
                (b[:, 0] + b[:, 2]) / 2 / im.width,
                (b[:, 1] + b[:, 3]) / 2 / im.height,
                (b[:, 2] - b[:, 0]) / im.width,
                (b[:, 3] - b[:, 1]) / im.height,
            ],
            axis=1,
        )
        with open(os.path.join(lab_dir, stem + ".txt"), "w", encoding="utf-8") as f:
            f.writelines(
                f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, (x, y, w, h) in zip(im.classes.tolist(), rows.tolist())
            )
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(CLASS_NAMES))
    with open(os.path.join(root, "data.yaml"), "w", encoding="utf-8") as f:
        f.write(
            f"# fastanchor demo dataset (synthetic)\npath: .\n{split}: images/{split}\nval: images/{split}\n\nnames:\n{names}"
        )
    return os.path.join(root, "data.yaml")


def make_demo(folder: str, format: str = "voc", *, n_images: int = 1000, seed: int = 0) -> str:
    """Write a demo dataset into ``folder`` in ``format`` ("voc", "coco" or "yolo") and return
    the path to load (the VOC folder, the COCO json, or the YOLO data.yaml)."""
    images = demo_images(n_images, seed=seed)
    if format == "voc":
        return write_voc(os.path.join(folder, "Annotations"), images)
    if format == "coco":
        return write_coco(os.path.join(folder, "annotations", "instances_demo.json"), images)
    if format == "yolo":
        return write_yolo(folder, images)
    raise ValueError(f"format must be 'voc', 'coco' or 'yolo', got {format!r}")


def write_blank_png(path: str, width: int, height: int) -> None:
    """A valid all-black PNG of the given size (1-bit grayscale, so even large ones are tiny)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte 0 and the packed pixels
    body = zlib.compress(row * height, 6)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)))
        f.write(chunk(b"IDAT", body))
        f.write(chunk(b"IEND", b""))


def sizes_of(images: List[DemoImage]) -> Tuple[np.ndarray, np.ndarray]:
    """All boxes' (w, h) and their images' (w, h), in image order."""
    wh = np.concatenate([im.boxes[:, 2:] - im.boxes[:, :2] for im in images]).astype(np.float64)
    img = np.concatenate([np.tile([im.width, im.height], (len(im.boxes), 1)) for im in images]).astype(np.float64)
    return wh, img
