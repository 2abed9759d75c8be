"""The ``fastanchor`` command: from annotation files to anchors in the model's config.

::

    fastanchor anchors DATASET [-k 9] [--img-size 640] [--levels 3 | --strides 8,16,32] [--out FILE] ...
    fastanchor check DATASET (--anchors "10,13, 16,30, ..." | --model FILE)
    fastanchor demo FOLDER [--format voc|coco|yolo]
    fastanchor ssd DATASET [-n 4] [--image-size 300x300] [--config pipeline.config] [--out FILE]
    fastanchor torchvision DATASET [--detector fasterrcnn|retinanet|ssd] [--out FILE.py]

Run ``fastanchor COMMAND --help`` for every option. Errors are reported on one line with a
non-zero exit status (1; 2 for a bad command line); set ``FASTANCHOR_DEBUG=1`` for tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Optional, Sequence

from . import anchors, check, demo, ssd, torchvision
from ._common import UI, YOLOV5_DEFAULT_ANCHORS, one_line
from ._guard import check_outputs
from .anchors import ROUNDING_TOLERANCE
from .ssd import TF_DEFAULT_ASPECT_RATIOS

__all__ = ["ROUNDING_TOLERANCE", "TF_DEFAULT_ASPECT_RATIOS", "YOLOV5_DEFAULT_ANCHORS", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``fastanchor`` command and its subcommands."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="fastanchor",
        description="Anchor boxes for object detectors, from annotation files to the model's config.",
        epilog="Examples:\n  fastanchor anchors --demo\n"
        "  fastanchor anchors data/VOC2007/Annotations --out anchors.yaml\n"
        "  fastanchor anchors coco128/data.yaml --model yolov5s.yaml --out yolov5s-coco128.yaml "
        "--plot anchors.png\n"
        "  fastanchor check coco128/data.yaml --model yolov5s.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fastanchor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    anchors.add_parser(sub)
    check.add_parser(sub)
    ssd.add_parser(sub)
    torchvision.add_parser(sub)
    demo.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (0 success, 1 error, 2 bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command in ("anchors", "ssd"):
        check_outputs(parser, args)  # never over an input; exit 2 before any work
    ui = UI(quiet=getattr(args, "quiet", False), json_mode=getattr(args, "json", False))
    debug = os.environ.get("FASTANCHOR_DEBUG", "") not in ("", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = ui.warning
        try:
            if args.command == "anchors":
                if args.demo and args.dataset:
                    parser.error("give a DATASET or --demo, not both")
                if not args.demo and not args.dataset:
                    parser.error("give a DATASET (a VOC folder, a COCO .json, a YOLO data.yaml), or --demo")
                return anchors.run(args, ui)
            if args.command == "check":
                return check.run(args, ui)
            if args.command == "ssd":
                return ssd.run(args, ui)
            if args.command == "torchvision":
                return torchvision.run(args, ui)
            return demo.run(args, ui)
        except KeyboardInterrupt:
            print("fastanchor: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # the reader went away (`fastanchor ... | head`): stop quietly
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            return 1
        except Exception as exc:  # one line, no traceback: the message says what and where
            if debug:
                raise
            print(f"fastanchor: error: {one_line(exc)}", file=sys.stderr)
            return 1
