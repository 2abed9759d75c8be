"""``fastanchor demo``: write the example dataset as real annotation files."""

from __future__ import annotations

import argparse

from ._common import MAX_IMAGES, MAX_SEED, UI, int_in_range


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``demo`` command to the subcommands ``sub``; returns its parser."""
    pd = sub.add_parser(
        "demo",
        help="write the example dataset as real annotation files",
        description="Write the generated example dataset (COCO-like boxes in 8 classes) to FOLDER.",
    )
    pd.add_argument("folder")
    pd.add_argument("--format", default="voc", choices=("voc", "coco", "yolo"))
    pd.add_argument("--images", type=int_in_range(1, MAX_IMAGES), default=1000, help="number of images (default 1000)")
    pd.add_argument("--seed", type=int_in_range(0, MAX_SEED), default=0)
    return pd


def run(args: argparse.Namespace, ui: UI) -> int:
    """Run ``fastanchor demo``: write the example dataset; returns the exit status."""
    from .._demo import make_demo

    path = make_demo(args.folder, args.format, n_images=args.images, seed=args.seed)
    print(
        f"wrote a demo dataset of {args.images:,} images ({args.format}) to {args.folder}; load it with "
        f"`fastanchor anchors {path}`",
        file=ui.out,
    )
    return 0
