"""What the commands share: where they write (:class:`UI`), the one-line error, the option
parsers and the dataset options, loading a dataset, and printing anchors and their metrics."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from .._fileio import excerpt
from ..export._formats import format_number

#: YOLOv5's default anchors (P3/8, P4/16, P5/32), at img-size 640.
YOLOV5_DEFAULT_ANCHORS = (
    ((10, 13), (16, 30), (33, 23)),
    ((30, 61), (62, 45), (59, 119)),
    ((116, 90), (156, 198), (373, 326)),
)
DEFAULT_IMG_SIZE = 640
DEFAULT_K = 9
DEFAULT_LEVELS = 3


class CLIError(Exception):
    """An error reported to the user as one line."""


@dataclass
class UI:
    """Where the command writes: the report to ``out``; notes, warnings and bars to ``err``."""

    quiet: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    json_mode: bool = False

    @property
    def progress(self) -> bool:
        return not self.quiet and not self.json_mode and isatty(self.err)

    def note(self, text: str) -> None:
        """Informational chatter (silenced by --quiet)."""
        if not self.quiet:
            print(text, file=self.err)

    def print(self, text: str = "") -> None:
        """The report itself (not printed in --json mode, where the json is the report)."""
        if not self.json_mode:
            print(text, file=self.out)

    def warning(
        self, message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        print(f"fastanchor: warning: {message}", file=self.err)


def isatty(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (False for streams without ``isatty``)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


#: Bounds of the options (argparse reports a value outside them with exit status 2, naming the
#: option). Sizes in pixels: no network input or stride comes near 100,000.
MAX_PIXELS = 100_000.0
MAX_ANCHORS = 100_000
MAX_LEVELS = 16
MAX_GENERATIONS = 10_000_000
MAX_SEED = 2**64 - 1
MAX_RATIOS = 1000
MAX_IMAGES = 10_000_000
#: Longest option text quoted back in an error.
_SHOWN = 40


def _shown(text: str) -> str:
    return excerpt(text, _SHOWN)


def int_in_range(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type: an integer from minimum to maximum."""

    def parse(text: str) -> int:
        if len(text.strip()) > 30:
            raise argparse.ArgumentTypeError(f"expected an integer from {minimum} to {maximum:,}, got {_shown(text)}")
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer from {minimum} to {maximum:,}, got {_shown(text)}"
            ) from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"expected an integer from {minimum} to {maximum:,}, got {value}")
        return value

    return parse


def float_in_range(minimum: float, maximum: float, *, open_below: bool = True) -> Callable[[str], float]:
    """An argparse type: a finite number above ``minimum`` (or equal, when not ``open_below``)
    and at most ``maximum``."""
    what = f"a finite number {'>' if open_below else '>='} {minimum:g} and <= {maximum:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {_shown(text)}") from None
        low_ok = value > minimum if open_below else value >= minimum
        if not (math.isfinite(value) and low_ok and value <= maximum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {_shown(text)}")
        return value

    return parse


positive_float = float_in_range(0.0, 1e6)
#: A size in pixels, as --min-size takes it.
non_negative_pixels = float_in_range(0.0, MAX_PIXELS, open_below=False)


def parse_img_size(text: str) -> Tuple[float, float]:
    """An argparse type: ``640`` or ``416x416`` as (width, height)."""
    parts = re.split(r"[x,X*]", text.strip())
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 640 or 416x416, got {_shown(text)}") from None
    if len(values) not in (1, 2) or not all(math.isfinite(v) and 0 < v <= MAX_PIXELS for v in values):
        raise argparse.ArgumentTypeError(
            f"expected a size such as 640 or 416x416 (each side above 0 and up to {MAX_PIXELS:,.0f}), "
            f"got {_shown(text)}"
        )
    return (values[0], values[-1])


def parse_strides(text: str) -> Tuple[float, ...]:
    """An argparse type: positive strides such as ``8,16,32``."""
    try:
        values = tuple(float(p) for p in text.replace(" ", "").split(",") if p)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected strides such as 8,16,32, got {_shown(text)}") from None
    if not values or len(values) > MAX_LEVELS or not all(math.isfinite(v) and 0 < v <= MAX_PIXELS for v in values):
        raise argparse.ArgumentTypeError(
            f"expected 1 to {MAX_LEVELS} positive strides up to {MAX_PIXELS:,.0f} such as 8,16,32, got {_shown(text)}"
        )
    return values


def add_dataset_options(p: argparse.ArgumentParser, *, demo: bool) -> None:
    """The dataset and output options every dataset command has (``demo``: DATASET optional, with ``--demo``)."""
    if demo:
        p.add_argument(
            "dataset", nargs="?", help="a Pascal VOC folder or .xml, a COCO .json, or a YOLO data.yaml or folder"
        )
        p.add_argument(
            "--demo",
            action="store_true",
            help="use a generated example dataset (1,000 images, written as Pascal VOC files to a temporary folder)",
        )
    else:
        p.add_argument("dataset", help="a Pascal VOC folder or .xml, a COCO .json, or a YOLO data.yaml or folder")
    g = p.add_argument_group("dataset")
    g.add_argument(
        "--format",
        default="auto",
        choices=("auto", "voc", "coco", "yolo"),
        help="annotation format (default: detected)",
    )
    g.add_argument("--split", default="train", help="YOLO: the data.yaml split to load (default: train)")
    g.add_argument("--classes", help="only these classes (comma-separated names or ids)")
    g.add_argument(
        "--min-size",
        type=non_negative_pixels,
        default=0.0,
        metavar="PX",
        help="drop boxes with a side below PX pixels of the original image",
    )
    g.add_argument(
        "--keep-difficult",
        action="store_true",
        help="keep VOC boxes flagged difficult (dropped by default, as YOLOv5's VOC conversion does)",
    )
    g.add_argument(
        "--keep-crowd",
        action="store_true",
        help="keep COCO iscrowd boxes (dropped by default, as Ultralytics' COCO conversion does)",
    )
    strict = g.add_mutually_exclusive_group()
    strict.add_argument(
        "--strict", action="store_true", help="degenerate boxes are errors (default: dropped with a warning)"
    )
    strict.add_argument(
        "--skip-bad-files", action="store_true", help="skip malformed files with a warning (default: error)"
    )
    g.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="load the files in parallel with Dask: the address of a running distributed scheduler "
        "(tcp://host:8786), or 'processes' or 'threads' for local workers (needs pip install \"fastanchor[dask]\")",
    )
    g.add_argument(
        "--img-size",
        type=parse_img_size,
        metavar="SIZE",
        help="network input size: 640 (letterbox, the default), or WxH with --resize stretch",
    )
    g.add_argument(
        "--resize",
        choices=("letterbox", "stretch"),
        help="letterbox: long side to img-size, YOLOv5 (default); stretch: every image to WxH, darknet/SSD "
        "(the default for a darknet --model, at its [net] size)",
    )
    g.add_argument(
        "--thr", type=positive_float, default=4.0, help="YOLOv5's anchor_t: the largest side ratio (default 4.0)"
    )
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print the report as json")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes")


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line, as the command prints an error."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    if not isinstance(exc, (CLIError, ValueError, OSError, TypeError, ImportError)):
        text = f"{type(exc).__name__}: {text}"
    return " ".join(text.split())


@dataclass
class Loaded:
    """A dataset as the commands use it: filtered, scaled, and described."""

    boxes: Any  # datasets.Boxes after filtering
    wh: np.ndarray  # scaled to the network input
    name: str
    scaling: str
    img_size: Tuple[float, float]
    resize: str
    dropped: Dict[str, int]
    seconds: float
    fmt: str


def load_dataset(
    args: argparse.Namespace, ui: UI, path: str, model_img: Optional[Tuple[int, int]], model_fmt: Optional[str]
) -> Loaded:
    """Load ``path`` with the dataset options, drop what they leave out (classes, difficult, crowd,
    small boxes, unknown image sizes) and scale the boxes to the network input (letterbox or
    stretch; a darknet ``--model`` gives its [net] size)."""
    from .. import datasets

    strict = True if args.strict else (False if args.skip_bad_files else None)
    t0 = time.perf_counter()
    if getattr(args, "scheduler", None):
        boxes = load_with_dask(path, args.scheduler, format=args.format, split=args.split, strict=strict)
    else:
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
    config_img = None  # the size the model config trains at, where it applies to this resize mode
    if model_img is not None and (resize == "stretch" or (model_fmt == "mmdet" and model_img[0] == model_img[1])):
        config_img = (float(model_img[0]), float(model_img[1]))
    if img is None:
        img = config_img if config_img is not None else (DEFAULT_IMG_SIZE,) * 2
        if config_img is not None:
            shown = f"{img[0]:g}" if resize == "letterbox" else f"{img[0]:g}x{img[1]:g}"
            ui.note(f"img-size {shown} from the model config ({resize})")
    elif config_img is not None and tuple(img) != config_img:
        warnings.warn(
            f"--img-size {img[0]:g}x{img[1]:g} differs from the model config's "
            f"{config_img[0]:g}x{config_img[1]:g}: "
            "the anchors are for the size you gave",
            UserWarning,
            stacklevel=1,
        )
    if resize == "letterbox":
        if img[0] != img[1]:
            raise CLIError(
                f"--img-size {img[0]:g}x{img[1]:g}: letterbox takes one size (the long side); "
                "use --resize stretch for WxH"
            )
        wh = boxes.letterbox(img[0])
        scaling = f"letterboxed to {img[0]:g}"
    else:
        wh = boxes.stretch(img[0], img[1])
        scaling = f"stretched to {img[0]:g}x{img[1]:g}"
    name = "demo dataset" if getattr(args, "demo", False) else path
    return Loaded(boxes, wh, name, scaling, img, resize, dropped, seconds, boxes.format)


#: --scheduler values that name a local Dask scheduler rather than a cluster's address.
LOCAL_SCHEDULERS = ("processes", "threads", "synchronous")
#: Seconds to wait for a --scheduler address to answer.
CONNECT_TIMEOUT = 10


def load_with_dask(path: str, scheduler: str, *, format: str, split: str, strict: Optional[bool]) -> Any:
    """``fastanchor.dask.load`` on a local scheduler or on the cluster at ``scheduler``."""
    try:
        from ..dask import _loading
    except ImportError as exc:
        raise CLIError(f'--scheduler needs Dask: pip install "fastanchor[dask]" ({exc.__cause__ or exc})') from None
    if scheduler in LOCAL_SCHEDULERS:
        return _loading.load(path, format=format, split=split, strict=strict, scheduler=scheduler)
    try:
        from distributed import Client  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:  # pragma: no cover - dask without distributed
        raise CLIError(
            f'--scheduler {scheduler}: connecting to a cluster needs distributed: pip install "fastanchor[dask]" '
            f"({exc}); or use --scheduler processes"
        ) from None
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, ValueError, TypeError) as exc:  # TimeoutError is an OSError
        raise CLIError(
            f"--scheduler {scheduler}: cannot connect to a Dask scheduler there ({one_line(exc)}); expected an "
            f"address such as tcp://host:8786, or one of {', '.join(LOCAL_SCHEDULERS)}"
        ) from None
    try:
        return _loading.load(path, format=format, split=split, strict=strict, client=client)
    finally:
        client.close()


FORMAT_NAMES = {"voc": "Pascal VOC", "coco": "COCO json", "yolo": "YOLO", "array": "array"}


def describe(ld: Loaded) -> str:
    """One line on the loaded dataset: boxes, images, classes, scaling and what was left out."""
    b = ld.boxes
    n_classes = len(np.unique(b.class_id)) if len(b) else 0
    text = (
        f"{ld.name} ({FORMAT_NAMES.get(ld.fmt, ld.fmt)}): {len(b):,} boxes in {b.n_images:,} images, "
        f"{n_classes} class{'es' if n_classes != 1 else ''}; {ld.scaling}"
    )
    dropped = [f"{v:,} {k}" for k, v in ld.dropped.items() if v]
    if dropped:
        text += f" (left out: {', '.join(dropped)})"
    return text


def read_model(path: str) -> Tuple[Optional[Any], Optional[int], Optional[Tuple[int, int]], str]:
    """(ReadAnchors or None, anchors per level when the yaml says ``anchors: N``, [net] size, format)."""
    from ..export import export_format, read_anchors

    fmt = export_format(path)
    if not os.path.lexists(path) or os.path.isdir(path):
        raise CLIError(f"no such model file: {path}")
    try:
        model = read_anchors(path)
        return model, None, model.img_size, fmt
    except ValueError as exc:
        m = re.search(r"'anchors: (\d+)' asks for", str(exc))
        if fmt == "yolov5" and m:
            return None, int(m.group(1)), None, fmt
        raise


def strides_for(n_levels: int) -> Tuple[float, ...]:
    """The strides 8, 16, 32, ... of ``n_levels`` levels."""
    return tuple(float(8 * 2**i) for i in range(n_levels))


def metrics_row(fit: Any) -> Dict[str, float]:
    """The four metrics of a FitnessResult or CheckResult, for the report table and json."""
    return {"fitness": fit.fitness, "bpr": fit.bpr, "aat": fit.aat, "avg_iou": fit.avg_iou}


def print_levels(
    ui: UI, levels: Sequence[np.ndarray], strides: Sequence[float], decimals: int, indent: str = "  "
) -> None:
    """The anchors of each level on one line, after the level's name."""
    from ..export import level_name

    cells = [
        [f"{format_number(w, decimals)},{format_number(h, decimals)}" for w, h in np.asarray(a).tolist()]
        for a in levels
    ]
    width = max(len(c) for row in cells for c in row)
    for s, row in zip(strides, cells):
        ui.print(f"{indent}{level_name(s):<9}" + "  ".join(c.rjust(width) for c in row))


def print_table(ui: UI, rows: List[Tuple[str, Dict[str, float]]], thr: float) -> None:
    """The metrics table, one row per set of anchors."""
    label_w = max(len(r[0]) for r in rows)
    ui.print(f"  {'':<{label_w}}  {'fitness':>8}  {'BPR':>7}  {'anchors/target':>14}  {'avg IoU':>8}")
    for label, m in rows:
        ui.print(
            f"  {label:<{label_w}}  {m['fitness']:>8.4f}  {m['bpr']:>7.4f}  {m['aat']:>14.3f}  {m['avg_iou']:>8.4f}"
        )
    ui.print(
        f"  (thr {thr:g}: BPR is the share of boxes within a side ratio of {thr:g} of some anchor; "
        f"anchors/target counts such anchors per box)"
    )
