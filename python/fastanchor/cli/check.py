"""``fastanchor check``: score existing anchors on a dataset, as YOLOv5 does before training."""

from __future__ import annotations

import argparse
import os

import numpy as np

from .._chunked import kept_mask
from .._evolve import DROP_BELOW
from .._validation import rows_where
from ._common import (
    DEFAULT_LEVELS,
    UI,
    CLIError,
    add_dataset_options,
    describe,
    float_in_range,
    load_dataset,
    metrics_row,
    parse_strides,
    print_levels,
    print_table,
    read_model,
    strides_for,
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``check`` command to the subcommands ``sub``; returns its parser."""
    pc = sub.add_parser(
        "check",
        help="check anchors against a dataset (best possible recall), as YOLOv5 does before training",
        description="Score existing anchors on a dataset and say whether to recompute them (YOLOv5: "
        "when the best possible recall is below 0.98).",
    )
    add_dataset_options(pc, demo=False)
    src = pc.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--anchors", dest="compare", metavar="ANCHORS", help='the anchors, e.g. "10,13, 16,30, 33,23, ..."'
    )
    src.add_argument("--model", help="read the anchors from a YOLOv5 .yaml, darknet .cfg, mmdetection .py or .json")
    pc.add_argument("--strides", type=parse_strides, help="the levels' strides for the report (default 8, 16, 32, ...)")
    pc.add_argument(
        "--bpr-threshold",
        type=float_in_range(0.0, 1.0, open_below=False),
        default=0.98,
        help="recompute below this best possible recall (default 0.98)",
    )
    return pc


def run(args: argparse.Namespace, ui: UI) -> int:
    """Run ``fastanchor check``: score the given anchors on the dataset; returns the exit status."""
    from .. import __version__, check_anchors, split_levels
    from ..export import dumps_json, parse_anchor_text

    model_img = model_fmt = None
    if args.model:
        model, per_level, model_img, model_fmt = read_model(args.model)
        if model is None:
            raise CLIError(
                f"{args.model} has 'anchors: {per_level}': the anchors are computed at training time, nothing to check"
            )
        anchors = model.anchors
        source = args.model
        n_levels = len(model.levels)
        strides = args.strides or model.strides or strides_for(n_levels)
    else:
        anchors = parse_anchor_text(args.compare)
        source = "--anchors"
        strides = args.strides or (strides_for(DEFAULT_LEVELS) if anchors.shape[0] % DEFAULT_LEVELS == 0 else (8.0,))
    if anchors.shape[0] % len(strides):
        listed = ", ".join(f"{s:g}" for s in strides)
        raise CLIError(f"{anchors.shape[0]} anchors cannot be split over {len(strides)} levels (strides {listed})")
    ld = load_dataset(args, ui, args.dataset, model_img, model_fmt)
    fit_wh = rows_where(ld.wh, kept_mask(ld.wh, DROP_BELOW))  # the boxes autoanchor would fit
    res = check_anchors(anchors, fit_wh, thr=args.thr, bpr_threshold=args.bpr_threshold)
    levels = split_levels(anchors, strides) if len(strides) > 1 else [anchors]

    ui.print(f"fastanchor {__version__} check: {describe(ld)}")
    ui.print(f"anchors from {source}:")
    print_levels(ui, levels, strides, 0 if np.all(anchors == np.round(anchors)) else 1)
    ui.print()
    print_table(ui, [("anchors", metrics_row(res))], args.thr)
    ui.print()
    if res.recommend_recompute:
        suggest = f" --model {args.model} --out NEW{os.path.splitext(args.model)[1]}" if args.model else ""
        verdict = (
            f"recompute: the best possible recall {res.bpr:.4f} is below {res.bpr_threshold:g}; run "
            f"`fastanchor anchors {args.dataset}{suggest}`"
        )
    else:
        verdict = (
            f"keep them: the best possible recall {res.bpr:.4f} is at least {res.bpr_threshold:g} "
            "(YOLOv5 would not recompute)"
        )
    ui.print(verdict)
    if ui.json_mode:
        doc = {
            "dataset": {
                "path": ld.name,
                "format": ld.fmt,
                "boxes": len(ld.boxes),
                "images": ld.boxes.n_images,
                "left_out": ld.dropped,
                "fitted_boxes": len(fit_wh),
            },
            "img_size": ld.img_size[0] if ld.resize == "letterbox" else list(ld.img_size),
            "resize": ld.resize,
            "anchors": [a.tolist() for a in levels],
            "strides": list(strides),
            "thr": res.thr,
            "fitness": res.fitness,
            "bpr": res.bpr,
            "aat": res.aat,
            "avg_iou": res.avg_iou,
            "bpr_threshold": res.bpr_threshold,
            "recommend_recompute": res.recommend_recompute,
        }
        print(dumps_json(doc), file=ui.out)
    return 0
