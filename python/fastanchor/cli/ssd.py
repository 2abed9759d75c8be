"""``fastanchor ssd``: aspect ratios for an SSD anchor generator, written into a TensorFlow
``pipeline.config``."""

from __future__ import annotations

import argparse
import os

import numpy as np

from ..export._formats import MAX_DECIMALS
from ._common import (
    MAX_RATIOS,
    MAX_SEED,
    UI,
    CLIError,
    add_dataset_options,
    describe,
    int_in_range,
    load_dataset,
    parse_img_size,
)

#: TensorFlow's default ssd_anchor_generator aspect ratios (its sample configs).
TF_DEFAULT_ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 0.3333)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``ssd`` command to the subcommands ``sub``; returns its parser."""
    ps = sub.add_parser(
        "ssd",
        help="aspect ratios for an SSD anchor generator (TensorFlow pipeline.config)",
        description="Load a dataset, stretch its boxes to the network input (SSD's resize), cluster "
        "their shapes at unit area into N aspect ratios and report them with the average "
        "IoU, beside TensorFlow's default ratios; --out writes them into the "
        "ssd_anchor_generator block of a pipeline config.",
    )
    add_dataset_options(ps, demo=False)
    ps.add_argument(
        "--image-size",
        dest="img_size",
        type=parse_img_size,
        metavar="WxH",
        help="network input size (default: the --config's fixed_shape_resizer, else 300x300); the same as --img-size",
    )
    s_ = ps.add_argument_group("aspect ratios")
    s_.add_argument(
        "-n",
        type=int_in_range(1, MAX_RATIOS),
        help="number of aspect ratios (default: as many as the --config has, which keeps its prior count "
        "and predictor shape; else 4)",
    )
    s_.add_argument(
        "--method",
        choices=("iou", "euclidean"),
        default="iou",
        help="iou: k-means with 1 - IoU (default); euclidean: the TensorFlow notebook's k-means",
    )
    s_.add_argument("--seed", type=int_in_range(0, MAX_SEED), default=0, help="random seed (default 0)")
    s_.add_argument(
        "--config",
        help="a TensorFlow Object Detection API pipeline config (text proto): its image size "
        "is used, and --out writes a copy of it with new aspect ratios",
    )
    s_.add_argument(
        "--out",
        help="write a pipeline config whose ssd_anchor_generator has the new aspect_ratios lines "
        "(a copy of --config, or the file itself when it exists, everything else kept)",
    )
    s_.add_argument(
        "--decimals", type=int_in_range(0, MAX_DECIMALS), default=4, help="decimal places written (default 4)"
    )
    s_.add_argument(
        "--force", action="store_true", help="write the new ratios even when they score below the --config's own"
    )
    return ps


def run(args: argparse.Namespace, ui: UI) -> int:
    """Run ``fastanchor ssd``: cluster aspect ratios, report and write them; returns the exit status."""
    from .. import __version__, avg_iou, ssd_aspect_ratios
    from .._fileio import atomic_write
    from .._ratios import unit_area
    from ..export import EXPORT_FORMATS, config_aspect_ratios, config_image_size, dumps_json, set_aspect_ratios
    from ..export._formats import read_model_text

    suffix = os.path.splitext(args.out or "")[1].lower()
    if args.out and suffix in EXPORT_FORMATS:
        raise CLIError(
            f"--out {args.out}: a pipeline config is a text proto; {suffix} is the suffix of another format "
            "(use .config or .pbtxt)"
        )
    template = None
    own = None
    source = args.config or (args.out if args.out and os.path.isfile(args.out) else None)
    if args.config and (not os.path.lexists(args.config) or os.path.isdir(args.config)):
        raise CLIError(f"no such config file: {args.config}")
    if source:
        template = read_model_text(source)
        try:
            set_aspect_ratios(template, [1.0], 1)  # a config we can edit: checked before the work
            config_size = config_image_size(template)
            own = config_aspect_ratios(template)
        except ValueError as exc:
            raise CLIError(f"{source}: {exc}") from None
    if args.n is None:
        args.n = len(own) if own else 4
        if own:
            ui.note(
                f"{len(own)} aspect ratios, as the config has (its prior count and box predictor shape stay); "
                "give -n to change"
            )
    if args.resize == "letterbox":
        raise CLIError("SSD stretches every image to the input size: --resize letterbox does not apply")
    args.resize = "stretch"
    if args.img_size is None:
        args.img_size = (config_size if template else None) or (300.0, 300.0)
    ld = load_dataset(args, ui, args.dataset, None, None)
    res = ssd_aspect_ratios(ld.wh, args.n, method=args.method, seed=args.seed)
    other = ssd_aspect_ratios(ld.wh, args.n, method="euclidean" if args.method == "iou" else "iou", seed=args.seed)
    u = unit_area(ld.wh)
    tf_ratios = np.array(TF_DEFAULT_ASPECT_RATIOS)
    tf_iou = avg_iou(np.stack([np.sqrt(tf_ratios), 1 / np.sqrt(tf_ratios)], 1), u)
    written = [round(float(r), args.decimals) for r in res.aspect_ratios]
    written_iou = avg_iou(np.stack([np.sqrt(written), 1 / np.sqrt(written)], 1), u)
    own_iou = avg_iou(np.stack([np.sqrt(own), 1 / np.sqrt(own)], 1), u) if own else None

    ui.print(f"fastanchor {__version__} ssd: {describe(ld)}")
    ui.print(
        f"aspect ratios (w/h), {args.method} k-means: " + ", ".join(f"{r:.{args.decimals}f}" for r in res.aspect_ratios)
    )
    ui.print("avg IoU of the unit-area boxes with the unit-area anchors:")
    ui.print(f"  {args.method + ' k-means':<22} {res.avg_iou:.4f}")
    other_ratios = ", ".join(f"{r:.3g}" for r in other.aspect_ratios)
    ui.print(f"  {other.method + ' k-means':<22} {other.avg_iou:.4f}  ({other_ratios})")
    ui.print(f"  {'TensorFlow defaults':<22} {tf_iou:.4f}  ({', '.join(f'{r:.4g}' for r in tf_ratios)})")
    if own_iou is not None:
        ui.print(f"  {'--config own':<22} {own_iou:.4f}  ({', '.join(f'{r:.4g}' for r in own)})")
    if args.out and own_iou is not None and written_iou < own_iou and not args.force:
        raise CLIError(
            f"the new aspect ratios score {written_iou:.4f}, below the config's own {own_iou:.4f}: "
            f"{args.out} not written (--force writes them anyway)"
        )
    if args.out:
        text = set_aspect_ratios(template or "", written, args.decimals)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        atomic_write(args.out, text)
        ui.print(f"wrote the aspect ratios into the anchor generator of {args.out}")
    if ui.json_mode:
        doc = {
            "dataset": {
                "path": ld.name,
                "format": ld.fmt,
                "boxes": len(ld.boxes),
                "images": ld.boxes.n_images,
                "left_out": ld.dropped,
            },
            "img_size": list(ld.img_size),
            "method": args.method,
            "aspect_ratios": res.aspect_ratios.tolist(),
            "avg_iou": res.avg_iou,
            "other": {"method": other.method, "aspect_ratios": other.aspect_ratios.tolist(), "avg_iou": other.avg_iou},
            "tf_default": {"aspect_ratios": list(TF_DEFAULT_ASPECT_RATIOS), "avg_iou": tf_iou},
            "config": {"aspect_ratios": list(own), "avg_iou": own_iou} if own else None,
            "written": {"aspect_ratios": written, "avg_iou": written_iou} if args.out else None,
            "out": args.out,
        }
        print(dumps_json(doc), file=ui.out)
    return 0
