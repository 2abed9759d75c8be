"""``fastanchor torchvision``: AnchorGenerator / DefaultBoxGenerator arguments for a dataset."""

from __future__ import annotations

import argparse
import os
import warnings
from typing import Any

from ._common import MAX_PIXELS, MAX_RATIOS, UI, CLIError, int_in_range

DETECTOR_CHOICES = ("fasterrcnn", "retinanet", "ssd")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``torchvision`` command to the subcommands ``sub``; returns its parser."""
    p = sub.add_parser(
        "torchvision",
        help="anchors for torchvision's Faster R-CNN / RetinaNet (AnchorGenerator) or SSD (DefaultBoxGenerator)",
        description="Fit the arguments of torchvision's AnchorGenerator(sizes, aspect_ratios) (Faster R-CNN, "
        "RetinaNet) or DefaultBoxGenerator(aspect_ratios, scales, steps) (SSD) to a dataset's boxes, "
        "at the model's input scale, and print or write them as Python. Each box counts for the FPN "
        "level of its best-IoU anchor, as the detectors' matchers assign it.",
    )
    p.add_argument("dataset", help="a VOC folder, a COCO .json or a YOLO data.yaml / folder")
    p.add_argument(
        "--detector",
        choices=DETECTOR_CHOICES,
        default="fasterrcnn",
        help="the torchvision detector (default fasterrcnn)",
    )
    p.add_argument(
        "--min-size",
        type=int_in_range(1, int(MAX_PIXELS)),
        default=800,
        help="Faster R-CNN / RetinaNet: the transform's min_size (default 800)",
    )
    p.add_argument(
        "--max-size",
        type=int_in_range(1, int(MAX_PIXELS)),
        default=1333,
        help="Faster R-CNN / RetinaNet: the transform's max_size (default 1333)",
    )
    p.add_argument(
        "--size", type=int_in_range(1, int(MAX_PIXELS)), default=300, help="SSD: the input size (default 300)"
    )
    p.add_argument(
        "--ratios",
        type=int_in_range(1, MAX_RATIOS),
        default=3,
        help="Faster R-CNN / RetinaNet: aspect ratios per level (default 3)",
    )
    p.add_argument("--split", default="train", help="YOLO: the split to load (default train)")
    p.add_argument("--out", help="write the Python that builds the generator into this .py file")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors and the result")
    p.add_argument("--json", action="store_true", help="print the result as json")
    return p


def run(args: argparse.Namespace, ui: UI) -> int:
    from .. import datasets
    from .._fileio import atomic_write
    from ..export import dumps_json
    from ..integrations import torchvision as tv

    if args.out is not None:
        if not args.out.endswith(".py"):
            raise CLIError(f"--out {args.out}: the torchvision output is Python source; give a .py file name")
        folder = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(folder):
            raise CLIError(f"--out {args.out}: the folder {folder} does not exist")
    if args.min_size > args.max_size:
        raise CLIError(f"--min-size {args.min_size} is larger than --max-size {args.max_size}")
    boxes = datasets.load(args.dataset, split=args.split)
    if len(boxes) == 0:
        raise CLIError(f"{args.dataset}: no boxes")
    fit: Any
    if args.detector == "ssd":
        wh = boxes.stretch(args.size)
        fit = tv.ssd_boxes(wh, args.size)
        scaling = f"stretched to {args.size}x{args.size}"
    else:
        scale = tv.rcnn_scale(boxes.image_wh, args.min_size, args.max_size)
        wh = boxes.wh * scale[:, None]
        fit = tv.fpn_anchors(wh, args.detector, n_ratios=args.ratios)
        scaling = f"resized as GeneralizedRCNNTransform(min_size={args.min_size}, max_size={args.max_size})"
    source = f"# dataset: {args.dataset}, {len(wh):,} boxes {scaling}\n" + fit.python()
    if args.json:
        doc = {
            "detector": args.detector,
            "dataset": args.dataset,
            "boxes": int(len(wh)),
            "scaling": scaling,
            "kwargs": fit.kwargs(),
            "avg_iou": fit.avg_iou,
            "default_avg_iou": fit.default_avg_iou,
            "coverage": fit.coverage,
            "default_coverage": fit.default_coverage,
            "level_counts": list(fit.level_counts),
            "out": args.out,
        }
        print(dumps_json(doc), file=ui.out)
    else:
        ui.print(source.rstrip("\n"))
    if args.out is not None:
        atomic_write(args.out, source)
        ui.print(f"wrote {args.out}")
    if fit.avg_iou < fit.default_avg_iou:  # possible when --ratios differs from the defaults' 3
        warnings.warn(
            f"the fitted anchors' average IoU {fit.avg_iou:.4f} is below torchvision's defaults' "
            f"{fit.default_avg_iou:.4f}",
            UserWarning,
            stacklevel=1,
        )
    return 0
