"""The ``fastanchor`` command: from annotation files to anchors in the model's config.

::

    fastanchor anchors DATASET [-k 9] [--img-size 640] [--levels 3 | --strides 8,16,32] [--out FILE] ...
    fastanchor check DATASET (--anchors "10,13, 16,30, ..." | --model FILE)
    fastanchor demo FOLDER [--format voc|coco|yolo]
    fastanchor ssd DATASET [-n 4] [--image-size 300x300] [--config pipeline.config] [--out FILE]

Run ``fastanchor COMMAND --help`` for every option. Errors are reported on one line with a
non-zero exit status (1; 2 for a bad command line); set ``FASTANCHOR_DEBUG=1`` for tracebacks.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np

__all__ = ["main", "YOLOV5_DEFAULT_ANCHORS"]

#: YOLOv5's default anchors (P3/8, P4/16, P5/32), at img-size 640.
YOLOV5_DEFAULT_ANCHORS = (
    ((10, 13), (16, 30), (33, 23)),
    ((30, 61), (62, 45), (59, 119)),
    ((116, 90), (156, 198), (373, 326)),
)
_DEFAULT_IMG_SIZE = 640
_DEFAULT_K = 9
_DEFAULT_LEVELS = 3


class CLIError(Exception):
    """An error reported to the user as one line."""


# --- output --------------------------------------------------------------------------------------------


@dataclass
class UI:
    """Where the command writes: the report to ``out``; notes, warnings and bars to ``err``."""

    quiet: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    json_mode: bool = False

    @property
    def progress(self) -> bool:
        return not self.quiet and not self.json_mode and _isatty(self.err)

    def note(self, text: str) -> None:
        """Informational chatter (silenced by --quiet)."""
        if not self.quiet:
            print(text, file=self.err)

    def print(self, text: str = "") -> None:
        """The report itself (not printed in --json mode, where the json is the report)."""
        if not self.json_mode:
            print(text, file=self.out)

    def warning(self, message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        print(f"fastanchor: warning: {message}", file=self.err)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# --- argument parsing -------------------------------------------------------------------------------------


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _img_size(text: str) -> Tuple[float, float]:
    parts = re.split(r"[x,X*]", text.strip())
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 640 or 416x416, got {text!r}") from None
    if len(values) not in (1, 2) or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected a size such as 640 or 416x416, got {text!r}")
    return (values[0], values[-1])


def _strides(text: str) -> Tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.replace(" ", "").split(",") if p)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected strides such as 8,16,32, got {text!r}") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive strides such as 8,16,32, got {text!r}")
    return values


def _add_dataset_options(p: argparse.ArgumentParser, *, demo: bool) -> None:
    if demo:
        p.add_argument("dataset", nargs="?", help="a Pascal VOC folder or .xml, a COCO .json, or a YOLO data.yaml or folder")
        p.add_argument("--demo", action="store_true",
                       help="use a generated example dataset (1,000 images, written as Pascal VOC files to a temporary folder)")
    else:
        p.add_argument("dataset", help="a Pascal VOC folder or .xml, a COCO .json, or a YOLO data.yaml or folder")
    g = p.add_argument_group("dataset")
    g.add_argument("--format", default="auto", choices=("auto", "voc", "coco", "yolo"), help="annotation format (default: detected)")
    g.add_argument("--split", default="train", help="YOLO: the data.yaml split to load (default: train)")
    g.add_argument("--classes", help="only these classes (comma-separated names or ids)")
    g.add_argument("--min-size", type=float, default=0.0, metavar="PX",
                   help="drop boxes with a side below PX pixels of the original image")
    g.add_argument("--keep-difficult", action="store_true",
                   help="keep VOC boxes flagged difficult (dropped by default, as YOLOv5's VOC conversion does)")
    g.add_argument("--keep-crowd", action="store_true",
                   help="keep COCO iscrowd boxes (dropped by default, as Ultralytics' COCO conversion does)")
    strict = g.add_mutually_exclusive_group()
    strict.add_argument("--strict", action="store_true", help="degenerate boxes are errors (default: dropped with a warning)")
    strict.add_argument("--skip-bad-files", action="store_true", help="skip malformed files with a warning (default: error)")
    g.add_argument("--img-size", type=_img_size, metavar="SIZE",
                   help="network input size: 640 (letterbox, the default), or WxH with --resize stretch")
    g.add_argument("--resize", choices=("letterbox", "stretch"),
                   help="letterbox: long side to img-size, YOLOv5 (default); stretch: every image to WxH, darknet/SSD "
                        "(the default for a darknet --model, at its [net] size)")
    g.add_argument("--thr", type=_positive_float, default=4.0, help="YOLOv5's anchor_t: the largest side ratio (default 4.0)")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print the report as json")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="fastanchor",
        description="Anchor boxes for object detectors, from annotation files to the model's config.",
        epilog="Examples:\n  fastanchor anchors --demo\n  fastanchor anchors data/VOC2007/Annotations --out anchors.yaml\n"
               "  fastanchor anchors coco128/data.yaml --model yolov5s.yaml --out yolov5s-coco128.yaml --plot anchors.png\n"
               "  fastanchor check coco128/data.yaml --model yolov5s.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fastanchor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    pa = sub.add_parser("anchors", help="compute anchors for a dataset (k-means + evolution) and write them",
                        description="Load a dataset, scale its boxes to the network input, run autoanchor (IoU k-means "
                                    "then YOLOv5's evolution) and report the anchors per level with their fitness, "
                                    "beside YOLOv5's defaults.")
    _add_dataset_options(pa, demo=True)
    a = pa.add_argument_group("anchors")
    a.add_argument("-k", type=_positive_int, help="number of anchors (default 9, or the --model's count)")
    lv = a.add_mutually_exclusive_group()
    lv.add_argument("--levels", type=_positive_int, help="detection levels, strides 8, 16, 32, ... (default 3)")
    lv.add_argument("--strides", type=_strides, help="the levels' strides, finest first (e.g. 8,16,32)")
    a.add_argument("--generations", type=_non_negative_int, default=1000, help="evolution generations (default 1000)")
    a.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0; results are reproducible)")
    a.add_argument("--anchors", dest="compare", metavar="ANCHORS", help='anchors to compare with, e.g. "10,13, 16,30, 33,23, ..."')
    a.add_argument("--model", help="a model file (YOLOv5 .yaml, darknet .cfg, mmdetection .py, .json): its anchors are "
                                    "compared, and --out of the same type writes a copy of it with new anchors")
    a.add_argument("--out", help="write the anchors: .yaml (YOLOv5 model), .cfg (darknet), .py (mmdetection), .json")
    a.add_argument("--decimals", type=_non_negative_int,
                   help="decimal places written (default: whole pixels, as YOLOv5 writes them, unless rounding to them "
                        f"costs more than {ROUNDING_TOLERANCE:g} fitness, as with tiny anchors: then the fewest that do not)")
    a.add_argument("--plot", metavar="FILE", help="save a PNG of the box sizes with the anchors (needs matplotlib)")

    pc = sub.add_parser("check", help="check anchors against a dataset (best possible recall), as YOLOv5 does before training",
                        description="Score existing anchors on a dataset and say whether to recompute them (YOLOv5: "
                                    "when the best possible recall is below 0.98).")
    _add_dataset_options(pc, demo=False)
    src = pc.add_mutually_exclusive_group(required=True)
    src.add_argument("--anchors", dest="compare", metavar="ANCHORS", help='the anchors, e.g. "10,13, 16,30, 33,23, ..."')
    src.add_argument("--model", help="read the anchors from a YOLOv5 .yaml, darknet .cfg, mmdetection .py or .json")
    pc.add_argument("--strides", type=_strides, help="the levels' strides for the report (default 8, 16, 32, ...)")
    pc.add_argument("--bpr-threshold", type=float, default=0.98, help="recompute below this best possible recall (default 0.98)")

    ps = sub.add_parser("ssd", help="aspect ratios for an SSD anchor generator (TensorFlow pipeline.config)",
                        description="Load a dataset, stretch its boxes to the network input (SSD's resize), cluster "
                                    "their shapes at unit area into N aspect ratios and report them with the average "
                                    "IoU, beside TensorFlow's default ratios; --out writes them into the "
                                    "ssd_anchor_generator block of a pipeline config.")
    _add_dataset_options(ps, demo=False)
    ps.add_argument("--image-size", dest="img_size", type=_img_size, metavar="WxH",
                    help="network input size (default: the --config's fixed_shape_resizer, else 300x300); "
                         "the same as --img-size")
    s_ = ps.add_argument_group("aspect ratios")
    s_.add_argument("-n", type=_positive_int, default=4, help="number of aspect ratios (default 4)")
    s_.add_argument("--method", choices=("iou", "euclidean"), default="iou",
                    help="iou: k-means with 1 - IoU (default); euclidean: the TensorFlow notebook's k-means")
    s_.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    s_.add_argument("--config", help="a TensorFlow Object Detection API pipeline config (text proto): its image size "
                                     "is used, and --out writes a copy of it with new aspect ratios")
    s_.add_argument("--out", help="write a pipeline config whose ssd_anchor_generator has the new aspect_ratios lines "
                                  "(a copy of --config, or the file itself when it exists, everything else kept)")
    s_.add_argument("--decimals", type=_non_negative_int, default=4, help="decimal places written (default 4)")

    pd = sub.add_parser("demo", help="write the example dataset as real annotation files",
                        description="Write the generated example dataset (COCO-like boxes in 8 classes) to FOLDER.")
    pd.add_argument("folder")
    pd.add_argument("--format", default="voc", choices=("voc", "coco", "yolo"))
    pd.add_argument("--images", type=_positive_int, default=1000, help="number of images (default 1000)")
    pd.add_argument("--seed", type=_non_negative_int, default=0)
    return parser


# --- running -------------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (0 success, 1 error, 2 bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
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
                return _cmd_anchors(args, ui)
            if args.command == "check":
                return _cmd_check(args, ui)
            if args.command == "ssd":
                return _cmd_ssd(args, ui)
            return _cmd_demo(args, ui)
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
            print(f"fastanchor: error: {_one_line(exc)}", file=sys.stderr)
            return 1


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    if not isinstance(exc, (CLIError, ValueError, OSError, TypeError, ImportError)):
        text = f"{type(exc).__name__}: {text}"
    return " ".join(text.split())


@dataclass
class Loaded:
    boxes: Any  # datasets.Boxes after filtering
    wh: np.ndarray  # scaled to the network input
    name: str
    scaling: str
    img_size: Tuple[float, float]
    resize: str
    dropped: Dict[str, int]
    seconds: float
    fmt: str


def _load(args: argparse.Namespace, ui: UI, path: str, model_img: Optional[Tuple[int, int]], model_fmt: Optional[str]) -> Loaded:
    from . import datasets

    strict = True if args.strict else (False if args.skip_bad_files else None)
    t0 = time.perf_counter()
    boxes = datasets.load(path, format=args.format, split=args.split, strict=strict, progress=ui.progress)
    seconds = time.perf_counter() - t0
    dropped: Dict[str, int] = {}
    n0 = len(boxes)
    if args.classes:
        wanted: List[Any] = []
        for c in args.classes.split(","):
            c = c.strip()
            wanted.append(int(c) if c.isdigit() and c not in boxes.class_names else c)
        boxes = boxes.filter(wanted)
        dropped["other classes"] = n0 - len(boxes)
    if not args.keep_difficult and boxes.difficult.any():
        n = len(boxes)
        boxes = boxes.filter(drop_difficult=True)
        dropped["difficult"] = n - len(boxes)
    if not args.keep_crowd and boxes.crowd.any():
        n = len(boxes)
        boxes = boxes.filter(drop_crowd=True)
        dropped["crowd"] = n - len(boxes)
    if args.min_size > 0:
        n = len(boxes)
        boxes = boxes.filter(min_size=args.min_size)
        dropped[f"below {args.min_size:g} px"] = n - len(boxes)
    if len(boxes) == 0:
        raise CLIError(f"no boxes left in {path} after filtering ({n0} loaded)")
    unknown = ~np.isfinite(boxes.image_wh).all(axis=1)
    if unknown.any():
        dropped["no image size"] = int(unknown.sum())
        boxes = boxes[~unknown]
        if len(boxes) == 0:
            raise CLIError(f"no box in {path} has a known image size")

    resize = args.resize
    img = args.img_size
    if resize is None:
        resize = "stretch" if (model_fmt == "darknet" and img is None and model_img is not None) else "letterbox"
    if img is None:
        img = (float(model_img[0]), float(model_img[1])) if (resize == "stretch" and model_img) else (_DEFAULT_IMG_SIZE,) * 2
    if resize == "letterbox":
        if img[0] != img[1]:
            raise CLIError(f"--img-size {img[0]:g}x{img[1]:g}: letterbox takes one size (the long side); use --resize stretch for WxH")
        wh = boxes.letterbox(img[0])
        scaling = f"letterboxed to {img[0]:g}"
    else:
        wh = boxes.stretch(img[0], img[1])
        scaling = f"stretched to {img[0]:g}x{img[1]:g}"
    name = "demo dataset" if getattr(args, "demo", False) else path
    return Loaded(boxes, wh, name, scaling, img, resize, dropped, seconds, boxes.format)


_FORMAT_NAMES = {"voc": "Pascal VOC", "coco": "COCO json", "yolo": "YOLO", "array": "array"}


def _describe(ld: Loaded) -> str:
    b = ld.boxes
    n_classes = len(np.unique(b.class_id)) if len(b) else 0
    text = (
        f"{ld.name} ({_FORMAT_NAMES.get(ld.fmt, ld.fmt)}): {len(b):,} boxes in {b.n_images:,} images, "
        f"{n_classes} class{'es' if n_classes != 1 else ''}; {ld.scaling}"
    )
    dropped = [f"{v:,} {k}" for k, v in ld.dropped.items() if v]
    if dropped:
        text += f" (left out: {', '.join(dropped)})"
    return text


def _read_model(path: str) -> Tuple[Optional[Any], Optional[int], Optional[Tuple[int, int]], str]:
    """(ReadAnchors or None, anchors per level when the yaml says ``anchors: N``, [net] size, format)."""
    from .export import export_format, read_anchors

    fmt = export_format(path)
    if not os.path.isfile(path):
        raise CLIError(f"no such model file: {path}")
    try:
        model = read_anchors(path)
        return model, None, model.img_size, fmt
    except ValueError as exc:
        m = re.search(r"'anchors: (\d+)' asks for", str(exc))
        if fmt == "yolov5" and m:
            return None, int(m.group(1)), None, fmt
        raise


def _strides_for(n_levels: int) -> Tuple[float, ...]:
    return tuple(float(8 * 2**i) for i in range(n_levels))


def _metrics_row(fit: Any) -> Dict[str, float]:
    return {"fitness": fit.fitness, "bpr": fit.bpr, "aat": fit.aat, "avg_iou": fit.avg_iou}


def _print_levels(ui: UI, levels: Sequence[np.ndarray], strides: Sequence[float], decimals: int, indent: str = "  ") -> None:
    from .export import level_name

    cells = [[f"{_n(w, decimals)},{_n(h, decimals)}" for w, h in np.asarray(a).tolist()] for a in levels]
    width = max(len(c) for row in cells for c in row)
    for s, row in zip(strides, cells):
        ui.print(f"{indent}{level_name(s):<9}" + "  ".join(c.rjust(width) for c in row))


def _n(v: float, decimals: int) -> str:
    return f"{v:.{decimals}f}" if decimals > 0 else f"{int(round(v))}"


def _print_table(ui: UI, rows: List[Tuple[str, Dict[str, float]]], thr: float) -> None:
    label_w = max(len(r[0]) for r in rows)
    ui.print(f"  {'':<{label_w}}  {'fitness':>8}  {'BPR':>7}  {'anchors/target':>14}  {'avg IoU':>8}")
    for label, m in rows:
        ui.print(f"  {label:<{label_w}}  {m['fitness']:>8.4f}  {m['bpr']:>7.4f}  {m['aat']:>14.3f}  {m['avg_iou']:>8.4f}")
    ui.print(f"  (thr {thr:g}: BPR is the share of boxes within a side ratio of {thr:g} of some anchor; "
             f"anchors/target counts such anchors per box)")


#: The most fitness that rounding the written anchors may cost when --decimals is not given.
ROUNDING_TOLERANCE = 5e-4


def _auto_decimals(levels: Sequence[np.ndarray], wh: np.ndarray, thr: float) -> int:
    """The fewest decimal places (0 to 3) whose rounding costs at most ROUNDING_TOLERANCE fitness."""
    from . import anchor_fitness
    from .export import round_anchors

    exact = np.concatenate(levels)
    target = anchor_fitness(exact, wh, thr=thr).fitness - ROUNDING_TOLERANCE
    for decimals in range(3):
        if anchor_fitness(round_anchors(exact, decimals), wh, thr=thr).fitness >= target:
            return decimals
    return 3


def _cmd_anchors(args: argparse.Namespace, ui: UI) -> int:
    from . import anchor_fitness, autoanchor, split_levels
    from .export import dumps_json, export_format, parse_anchor_text, round_anchors, write_anchors

    model = per_level = model_img = model_fmt = None
    if args.model:
        model, per_level, model_img, model_fmt = _read_model(args.model)
    if args.out:
        export_format(args.out)  # fail on a bad file name before the work
    if args.plot:
        from .plot import _matplotlib

        _matplotlib()

    # Levels and k: the options, else the model's layout, else 3 levels of 3.
    if args.strides:
        strides = args.strides
    elif args.levels:
        strides = _strides_for(args.levels)
    elif model is not None:
        strides = model.strides or _strides_for(len(model.levels))
    else:
        strides = _strides_for(_DEFAULT_LEVELS)
    if args.k is not None:
        k = args.k
    elif model is not None:
        k = int(model.anchors.shape[0])
    elif per_level is not None:
        k = per_level * len(strides)
    else:
        k = _DEFAULT_K if len(strides) == _DEFAULT_LEVELS else 3 * len(strides)
    if k % len(strides):
        raise CLIError(f"-k {k} anchors cannot be split evenly over {len(strides)} levels: use a multiple of {len(strides)}")
    compare = parse_anchor_text(args.compare) if args.compare else None

    tmp = None
    try:
        if args.demo:
            from ._demo import make_demo

            tmp = tempfile.TemporaryDirectory(prefix="fastanchor-demo-")
            path = make_demo(tmp.name, "voc", n_images=1000, seed=0)
            ui.note(f"demo: wrote 1,000 example images' annotations (COCO-like boxes, 8 classes) as Pascal VOC XML to {path}")
        else:
            path = args.dataset
        ld = _load(args, ui, path, model_img, model_fmt)
    finally:
        if tmp is not None:
            tmp.cleanup()
    ui.note(f"loaded {len(ld.boxes):,} boxes in {ld.seconds:.2f} s; computing {k} anchors ({args.generations} generations)")

    t0 = time.perf_counter()
    result = autoanchor(ld.wh, k, thr=args.thr, generations=args.generations, seed=args.seed, progress=ui.progress)
    seconds = time.perf_counter() - t0
    keep = (ld.wh >= 2.0).any(axis=1)  # the boxes autoanchor fitted; every row is scored on them
    fit_wh = ld.wh[keep]

    levels = split_levels(result.anchors, strides)
    if args.decimals is None:
        args.decimals = _auto_decimals(levels, fit_wh, args.thr)
    written = [round_anchors(a, args.decimals) for a in levels]
    written_all = np.concatenate(written)
    rows: List[Tuple[str, Dict[str, float]]] = [
        ("fastanchor", _metrics_row(anchor_fitness(written_all, fit_wh, thr=args.thr))),
        ("k-means only", _metrics_row(result.kmeans)),
        ("YOLOv5 default", _metrics_row(anchor_fitness(np.array(YOLOV5_DEFAULT_ANCHORS).reshape(-1, 2), fit_wh, thr=args.thr))),
    ]
    if model is not None:
        rows.append((f"--model {os.path.basename(args.model)}", _metrics_row(anchor_fitness(model.anchors, fit_wh, thr=args.thr))))
    if compare is not None:
        rows.append(("--anchors", _metrics_row(anchor_fitness(compare, fit_wh, thr=args.thr))))

    from . import __version__

    ui.print(f"fastanchor {__version__}: {_describe(ld)}")
    ui.print(f"{k} anchors by k-means + {args.generations} generations of evolution (thr {args.thr:g}, seed {args.seed}) "
             f"in {seconds:.2f} s on {result.n_boxes:,} boxes")
    ui.print()
    size = f"{ld.img_size[0]:g}" if ld.resize == "letterbox" else f"{ld.img_size[0]:g}x{ld.img_size[1]:g}"
    ui.print(f"anchors at img-size {size}, as written (width,height):")
    _print_levels(ui, written, strides, args.decimals)
    ui.print()
    _print_table(ui, rows, args.thr)

    header = (f"anchors by fastanchor {__version__} for {ld.name} at img-size {size} ({ld.resize}): "
              f"fitness {rows[0][1]['fitness']:.4f}, BPR {rows[0][1]['bpr']:.4f}, thr {args.thr:g}")
    if args.out:
        template = args.model if (args.model and export_format(args.model) == export_format(args.out)) else None
        meta = {
            "fastanchor": __version__,
            "dataset": ld.name,
            "img_size": ld.img_size[0] if ld.resize == "letterbox" else list(ld.img_size),
            "resize": ld.resize,
            "thr": args.thr,
            "metrics": rows[0][1],
        }
        fmt = write_anchors(args.out, written, strides, template=template, decimals=args.decimals, header=header, metadata=meta)
        what = {"yolov5": "YOLOv5 model yaml", "darknet": "darknet cfg", "mmdet": "mmdetection config", "json": "json"}[fmt]
        ui.print()
        ui.print(f"wrote {args.out} ({what}{', a copy of ' + template + ' with its anchors replaced' if template else ''})")
    if args.plot:
        from .plot import plot_anchors

        plot_anchors(fit_wh, written, args.plot, strides=strides,
                     reference=[np.array(a, dtype=float) for a in YOLOV5_DEFAULT_ANCHORS],
                     title=f"{os.path.basename(str(ld.name).rstrip('/'))}: {len(fit_wh):,} boxes, {ld.scaling}")
        ui.print(f"wrote {args.plot} (box sizes and anchors)")

    if ui.json_mode:
        doc = {
            "dataset": {"path": ld.name, "format": ld.fmt, "boxes": len(ld.boxes), "images": ld.boxes.n_images,
                        "left_out": ld.dropped, "fitted_boxes": result.n_boxes},
            "img_size": ld.img_size[0] if ld.resize == "letterbox" else list(ld.img_size),
            "resize": ld.resize,
            "k": k,
            "strides": list(strides),
            "thr": args.thr,
            "generations": args.generations,
            "seed": args.seed,
            "decimals": args.decimals,
            "anchors": [a.tolist() for a in written],
            "anchors_exact": [a.tolist() for a in levels],
            "metrics": {label: m for label, m in rows},
            "out": args.out,
            "plot": args.plot,
            "seconds": {"load": ld.seconds, "autoanchor": seconds},
        }
        print(dumps_json(doc), file=ui.out)
    return 0


def _cmd_check(args: argparse.Namespace, ui: UI) -> int:
    from . import __version__, check_anchors, split_levels
    from .export import dumps_json, parse_anchor_text

    model_img = model_fmt = None
    if args.model:
        model, per_level, model_img, model_fmt = _read_model(args.model)
        if model is None:
            raise CLIError(f"{args.model} has 'anchors: {per_level}': the anchors are computed at training time, nothing to check")
        anchors = model.anchors
        source = args.model
        n_levels = len(model.levels)
        strides = args.strides or model.strides or _strides_for(n_levels)
    else:
        anchors = parse_anchor_text(args.compare)
        source = "--anchors"
        strides = args.strides or (_strides_for(_DEFAULT_LEVELS) if anchors.shape[0] % _DEFAULT_LEVELS == 0 else (8.0,))
    if anchors.shape[0] % len(strides):
        raise CLIError(f"{anchors.shape[0]} anchors cannot be split over {len(strides)} levels (strides {', '.join(f'{s:g}' for s in strides)})")
    ld = _load(args, ui, args.dataset, model_img, model_fmt)
    keep = (ld.wh >= 2.0).any(axis=1)
    fit_wh = ld.wh[keep]
    res = check_anchors(anchors, fit_wh, thr=args.thr, bpr_threshold=args.bpr_threshold)
    levels = split_levels(anchors, strides) if len(strides) > 1 else [anchors]

    ui.print(f"fastanchor {__version__} check: {_describe(ld)}")
    ui.print(f"anchors from {source}:")
    _print_levels(ui, levels, strides, 0 if np.all(anchors == np.round(anchors)) else 1)
    ui.print()
    _print_table(ui, [("anchors", _metrics_row(res))], args.thr)
    ui.print()
    if res.recommend_recompute:
        verdict = (f"recompute: the best possible recall {res.bpr:.4f} is below {res.bpr_threshold:g}; run "
                   f"`fastanchor anchors {args.dataset}{' --model ' + args.model + ' --out NEW' + os.path.splitext(args.model)[1] if args.model else ''}`")
    else:
        verdict = f"keep them: the best possible recall {res.bpr:.4f} is at least {res.bpr_threshold:g} (YOLOv5 would not recompute)"
    ui.print(verdict)
    if ui.json_mode:
        doc = {
            "dataset": {"path": ld.name, "format": ld.fmt, "boxes": len(ld.boxes), "images": ld.boxes.n_images,
                        "left_out": ld.dropped, "fitted_boxes": int(keep.sum())},
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


#: TensorFlow's default ssd_anchor_generator aspect ratios (its sample configs).
TF_DEFAULT_ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 0.3333)


def _find_block(text: str, name: str) -> Optional[Tuple[int, int]]:
    """(start of the block's opening line, index of its closing brace) of ``name { ... }`` in a
    text proto, braces in strings and comments aside (they do not occur in pipeline configs)."""
    m = re.search(r"(?m)^[ \t]*" + re.escape(name) + r"\s*\{", text)
    if m is None:
        return None
    depth, i = 0, m.end() - 1
    while i < len(text):
        c = text[i]
        if c == "#":
            nl = text.find("\n", i)
            i = len(text) if nl < 0 else nl
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return m.start(), i
        i += 1
    raise CLIError(f"unbalanced braces in the {name} block")


def config_image_size(text: str) -> Optional[Tuple[float, float]]:
    """(width, height) of a pipeline config's fixed_shape_resizer, if it has one."""
    span = _find_block(text, "fixed_shape_resizer")
    if span is None:
        return None
    block = text[span[0]:span[1]]
    h = re.search(r"\bheight\s*:\s*(\d+)", block)
    w = re.search(r"\bwidth\s*:\s*(\d+)", block)
    return (float(w.group(1)), float(h.group(1))) if h and w else None


def set_aspect_ratios(text: str, ratios: Sequence[float], decimals: int = 4) -> str:
    """The pipeline config ``text`` with the ``aspect_ratios`` lines of its ssd_anchor_generator
    block replaced by one line per ratio (at the first old line's place and indentation);
    everything else is kept byte for byte. Without such a block, just the block is returned."""
    values = [f"{r:.{decimals}f}" for r in ratios]
    span = _find_block(text, "ssd_anchor_generator")
    if span is None:
        if text.strip():
            raise CLIError("the config has no ssd_anchor_generator block")
        return "ssd_anchor_generator {\n" + "".join(f"  aspect_ratios: {v}\n" for v in values) + "}\n"
    start, end = span
    body_start = text.index("{", start) + 1
    body = text[body_start:end]
    newline = "\r\n" if "\r\n" in text else "\n"
    pattern = re.compile(r"(?m)^([ \t]*)aspect_ratios\s*:[^\n]*\n?")
    old = list(pattern.finditer(body))
    if old:
        indent = old[0].group(1)
        first = old[0].start()
    else:  # before the closing brace, indented like the block's other fields
        other = re.search(r"(?m)^([ \t]+)\S", body)
        indent = other.group(1) if other else "  "
        first = body.rfind("\n") + 1
    new_lines = "".join(f"{indent}aspect_ratios: {v}{newline}" for v in values)
    kept = pattern.sub("", body)
    # where the first old line was, counted in the body without the old lines
    pos = first - sum(len(m.group(0)) for m in old if m.start() < first)
    new_body = kept[:pos] + new_lines + kept[pos:]
    return text[:body_start] + new_body + text[end:]


def _cmd_ssd(args: argparse.Namespace, ui: UI) -> int:
    from . import __version__, avg_iou, ssd_aspect_ratios
    from ._ssd import unit_area
    from .export import dumps_json

    template = None
    if args.config:
        if not os.path.isfile(args.config):
            raise CLIError(f"no such config file: {args.config}")
        with open(args.config, encoding="utf-8", newline="") as f:
            template = f.read()
    elif args.out and os.path.isfile(args.out):
        with open(args.out, encoding="utf-8", newline="") as f:
            template = f.read()
    if args.resize == "letterbox":
        raise CLIError("SSD stretches every image to the input size: --resize letterbox does not apply")
    args.resize = "stretch"
    if args.img_size is None:
        args.img_size = (config_image_size(template) if template else None) or (300.0, 300.0)
    ld = _load(args, ui, args.dataset, None, None)
    res = ssd_aspect_ratios(ld.wh, args.n, method=args.method, seed=args.seed)
    other = ssd_aspect_ratios(ld.wh, args.n, method="euclidean" if args.method == "iou" else "iou", seed=args.seed)
    u = unit_area(ld.wh)
    tf_ratios = np.array(TF_DEFAULT_ASPECT_RATIOS)
    tf_iou = avg_iou(np.stack([np.sqrt(tf_ratios), 1 / np.sqrt(tf_ratios)], 1), u)
    written = [round(float(r), args.decimals) for r in res.aspect_ratios]

    ui.print(f"fastanchor {__version__} ssd: {_describe(ld)}")
    ui.print(f"aspect ratios (w/h), {args.method} k-means: " + ", ".join(f"{r:.{args.decimals}f}" for r in res.aspect_ratios))
    ui.print("avg IoU of the unit-area boxes with the unit-area anchors:")
    ui.print(f"  {args.method + ' k-means':<22} {res.avg_iou:.4f}")
    ui.print(f"  {other.method + ' k-means':<22} {other.avg_iou:.4f}  ({', '.join(f'{r:.3g}' for r in other.aspect_ratios)})")
    ui.print(f"  {'TensorFlow defaults':<22} {tf_iou:.4f}  ({', '.join(f'{r:.4g}' for r in tf_ratios)})")
    if args.out:
        text = set_aspect_ratios(template or "", written, args.decimals)
        with open(args.out, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        ui.note(f"wrote the aspect ratios into the ssd_anchor_generator of {args.out}")
    if ui.json_mode:
        doc = {
            "dataset": {"path": ld.name, "format": ld.fmt, "boxes": len(ld.boxes), "images": ld.boxes.n_images,
                        "left_out": ld.dropped},
            "img_size": list(ld.img_size),
            "method": args.method,
            "aspect_ratios": res.aspect_ratios.tolist(),
            "avg_iou": res.avg_iou,
            "other": {"method": other.method, "aspect_ratios": other.aspect_ratios.tolist(), "avg_iou": other.avg_iou},
            "tf_default": {"aspect_ratios": list(TF_DEFAULT_ASPECT_RATIOS), "avg_iou": tf_iou},
            "out": args.out,
        }
        print(dumps_json(doc), file=ui.out)
    return 0


def _cmd_demo(args: argparse.Namespace, ui: UI) -> int:
    from ._demo import make_demo

    path = make_demo(args.folder, args.format, n_images=args.images, seed=args.seed)
    print(f"wrote a demo dataset of {args.images:,} images ({args.format}) to {args.folder}; load it with "
          f"`fastanchor anchors {path}`", file=ui.out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
