"""``fastanchor anchors``: anchors for a dataset (k-means + evolution), written into a model file."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._augment import as_scale_range
from .._chunked import kept_mask
from .._evolve import DEFAULT_BUDGET, DROP_BELOW, AutoAnchorResult
from .._fitness import DEFAULT_IOU_THR, OBJECTIVES, anchor_objective
from .._grid import DetectorGrid
from .._validation import rows_where
from ..datasets._yaml import load_yaml_file
from ..export._formats import MAX_DECIMALS
from ._common import (
    DEFAULT_K,
    DEFAULT_LEVELS,
    MAX_ANCHORS,
    MAX_GENERATIONS,
    MAX_LEVELS,
    MAX_SEED,
    UI,
    YOLOV5_DEFAULT_ANCHORS,
    CLIError,
    Loaded,
    add_dataset_options,
    describe,
    int_in_range,
    load_dataset,
    metrics_row,
    parse_strides,
    print_levels,
    print_table,
    read_model,
    strides_for,
)

#: The most fitness (and searched objective) that rounding the written anchors may cost when
#: --decimals is not given.
ROUNDING_TOLERANCE = 5e-4


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``anchors`` command to the subcommands ``sub``; returns its parser."""
    pa = sub.add_parser(
        "anchors",
        help="compute anchors for a dataset (k-means + evolution) and write them",
        description="Load a dataset, scale its boxes to the network input, run autoanchor (IoU k-means "
        "then YOLOv5's evolution) and report the anchors per level with their fitness, "
        "beside YOLOv5's defaults.",
    )
    add_dataset_options(pa, demo=True)
    a = pa.add_argument_group("anchors")
    a.add_argument(
        "-k", type=int_in_range(1, MAX_ANCHORS), help="number of anchors (default 9, or the --model's count)"
    )
    lv = a.add_mutually_exclusive_group()
    lv.add_argument(
        "--levels", type=int_in_range(1, MAX_LEVELS), help="detection levels, strides 8, 16, 32, ... (default 3)"
    )
    lv.add_argument("--strides", type=parse_strides, help="the levels' strides, finest first (e.g. 8,16,32)")
    a.add_argument(
        "--generations",
        type=int_in_range(0, MAX_GENERATIONS),
        default=1000,
        help="evolution generations (default 1000; small datasets get restarts on top, within --budget)",
    )
    a.add_argument(
        "--budget",
        type=int_in_range(0, 2**62),
        default=DEFAULT_BUDGET,
        help="work budget in box evaluations: while generations x boxes is below it, the search goes on with "
        f"restarts (default 2**{DEFAULT_BUDGET.bit_length() - 1}; 0 runs --generations only)",
    )
    a.add_argument(
        "--objective",
        choices=("auto",) + OBJECTIVES,
        default="auto",
        help="what the evolution maximizes: YOLOv5's ratio fitness, the average best IoU, or the recall at "
        "--iou-thr (default auto: from --model, fitness for YOLOv5 yaml and json, avg_iou for darknet cfg, "
        "recall for mmdetection configs, fitness without --model)",
    )
    a.add_argument("--iou-thr", type=float, default=DEFAULT_IOU_THR, help="the IoU of --objective recall (default 0.5)")
    a.add_argument(
        "--grid",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="score avg_iou and recall with the anchors placed on the detector's grids (cell centres per stride) "
        "instead of corner-aligned with the boxes (default: on for mmdetection configs, whose assigner matches "
        "anchors at grid positions; off otherwise)",
    )
    a.add_argument(
        "--scale",
        type=parse_scale,
        help="scale augmentation: fit the anchors to the boxes as training rescales them, by a factor uniform in "
        "[1-G, 1+G] (G: YOLOv5's hyp.scale, e.g. 0.5) or in LO,HI (e.g. 0.53,1 for mmdetection's 320-608 "
        "multi-scale at 608); the report gives every objective with and without it (default: from --hyp, or "
        "from an mmdetection --model's training pipeline when mmengine can read it; 0 for none)",
    )
    a.add_argument(
        "--hyp",
        metavar="FILE",
        help="a YOLOv5 hyperparameter yaml (hyp.scratch-low.yaml, ...): its 'scale' sets --scale when that is not given",
    )
    a.add_argument(
        "--seed", type=int_in_range(0, MAX_SEED), default=0, help="random seed (default 0; results are reproducible)"
    )
    a.add_argument(
        "--anchors", dest="compare", metavar="ANCHORS", help='anchors to compare with, e.g. "10,13, 16,30, 33,23, ..."'
    )
    a.add_argument(
        "--model",
        help="a model file (YOLOv5 .yaml, darknet .cfg, mmdetection .py, .json): its anchors are "
        "compared, and --out of the same type writes a copy of it with new anchors",
    )
    a.add_argument("--out", help="write the anchors: .yaml (YOLOv5 model), .cfg (darknet), .py (mmdetection), .json")
    a.add_argument(
        "--decimals",
        type=int_in_range(0, MAX_DECIMALS),
        help="decimal places written (default: whole pixels, as YOLOv5 writes them, unless rounding to them "
        f"costs more than {ROUNDING_TOLERANCE:g} fitness, as with tiny anchors: then the fewest that "
        "do not)",
    )
    a.add_argument("--plot", metavar="FILE", help="save a PNG of the box sizes with the anchors (needs matplotlib)")
    return pa


#: The objective of each target format: YOLOv5 assigns anchors by side ratio, darknet by the best
#: corner-aligned IoU, mmdetection's assigners by an IoU threshold.
OBJECTIVE_OF_FORMAT = {"yolov5": "fitness", "json": "fitness", "darknet": "avg_iou", "mmdet": "recall"}


def _objective(args: argparse.Namespace, model_fmt: object) -> Tuple[str, str]:
    """The objective and why it was chosen."""
    if args.objective != "auto":
        return args.objective, "--objective"
    if model_fmt is None:
        return "fitness", "the default without --model"
    return OBJECTIVE_OF_FORMAT.get(str(model_fmt), "fitness"), f"the {model_fmt} --model"


def _grid_of(ld: Loaded, strides: Sequence[float]) -> DetectorGrid:
    """The boxes' grid at the network input: stretched, or letterboxed into a square (centred, as
    YOLOv5's inference letterbox pads)."""
    b = ld.boxes
    if not np.isfinite(b.xy).all():
        raise CLIError(f"{ld.name}: --grid needs the boxes' positions, and some are unknown")
    img = b.image_wh
    if ld.resize == "letterbox":
        size = float(ld.img_size[0])
        r = size / img.max(axis=1)
        pad = (size - img * r[:, None]) / 2
        x1y1 = b.xy * r[:, None] + pad
        image = (size, size)
    else:
        r2 = np.array(ld.img_size, dtype=np.float64) / img
        x1y1 = b.xy * r2
        image = (float(ld.img_size[0]), float(ld.img_size[1]))
    xyxy = np.concatenate([x1y1, x1y1 + ld.wh], axis=1)
    return DetectorGrid(xyxy, image, tuple(strides))


def parse_scale(text: str) -> object:
    """An argparse type: YOLOv5's hyp.scale G (a number) or a range LO,HI."""
    parts = [p for p in text.replace(" ", "").split(",") if p]
    try:
        values = [float(p) for p in parts]
        if len(values) == 1:
            return as_scale_range(values[0], "--scale")
        if len(values) == 2:
            return as_scale_range(values, "--scale")
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    raise argparse.ArgumentTypeError(f"expected a number such as 0.5 or a range such as 0.5,1.5, got {text[:40]!r}")


def _scale_of(args: argparse.Namespace, model_fmt: object) -> Optional[Tuple[Tuple[float, float], str]]:
    """The scale range to fit for and where it came from, or None: --scale (0 for none), else
    --hyp's scale, else an mmdetection --model's multi-scale training pipeline."""
    if args.scale is not None:
        return None if args.scale == (1.0, 1.0) else (args.scale, "--scale")
    if args.hyp is None:
        if model_fmt == "mmdet" and args.model:
            from ..export._mmconfig import train_scale_range

            return train_scale_range(args.model)
        return None
    hyp = load_yaml_file(args.hyp)
    if not isinstance(hyp, dict) or "scale" not in hyp:
        raise CLIError(f"{args.hyp}: no 'scale' entry (expected a YOLOv5 hyperparameter yaml)")
    value = hyp["scale"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CLIError(f"{args.hyp}: 'scale' must be a number, got {value!r}")
    try:
        return as_scale_range(float(value), "scale"), f"hyp.scale {value:g} in {os.path.basename(args.hyp)}"
    except ValueError as exc:
        raise CLIError(f"{args.hyp}: {exc}") from None


def _generations_run(result: AutoAnchorResult, asked: int) -> str:
    """The generations the search ran, with those the work budget added."""
    ran = len(result.history)
    if ran <= asked:
        return f"{ran} generations"
    return f"{ran:,} generations ({asked} + {ran - asked:,} in restarts within the work budget)"


def _auto_decimals(levels: Sequence[np.ndarray], wh: np.ndarray, thr: float, **objective: object) -> int:
    """The fewest decimal places (0 to 3) whose rounding costs at most ROUNDING_TOLERANCE on the
    fitness and on the searched objective (``objective``: anchor_objective's arguments)."""
    from .. import anchor_fitness
    from ..export import round_anchors

    exact = np.concatenate(levels)
    target = anchor_fitness(exact, wh, thr=thr).fitness - ROUNDING_TOLERANCE
    goal = anchor_objective(exact, wh, thr=thr, **objective) - ROUNDING_TOLERANCE  # type: ignore[arg-type]
    for decimals in range(3):
        rounded = round_anchors(exact, decimals)
        if (
            anchor_fitness(rounded, wh, thr=thr).fitness >= target
            and anchor_objective(rounded, wh, thr=thr, **objective) >= goal  # type: ignore[arg-type]
        ):
            return decimals
    return 3


def _verify_written(
    ui: UI, path: str, written: Sequence[np.ndarray], strides: Sequence[float], wh: np.ndarray, thr: float
) -> None:
    """Read the written file back as a user's tools will, and re-score what it holds."""
    from .. import anchor_fitness
    from ..export import read_anchors

    back = read_anchors(path)
    expected = np.concatenate(written)
    if back.anchors.shape != expected.shape or not np.allclose(back.anchors, expected, rtol=1e-9, atol=0):
        raise CLIError(f"{path} was written, but reading it back gives other anchors: {back.anchors.tolist()}")
    if back.strides is not None and not np.allclose(back.strides, strides):
        raise CLIError(
            f"{path} was written, but reading it back gives strides {list(back.strides)}, not {list(strides)}"
        )
    fit = anchor_fitness(back.anchors, wh, thr=thr)
    ui.note(
        f"read {path} back: {back.anchors.shape[0]} anchors in {len(back.levels)} levels, "
        f"fitness {fit.fitness:.4f}, BPR {fit.bpr:.4f}"
    )


def _inherits(out: str, template: str) -> bool:
    """Whether the written mmdet config is an override (``_base_`` and ``model`` only)."""
    import ast

    with open(out, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = {
        t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)
    }
    return names == {"_base_", "model"}


def run(args: argparse.Namespace, ui: UI) -> int:
    """Run ``fastanchor anchors``: load, fit (autoanchor), report and write; returns the exit status."""
    from .. import anchor_fitness, autoanchor, split_levels
    from ..export import dumps_json, export_format, parse_anchor_text, round_anchors, write_anchors

    model = per_level = model_img = model_fmt = None
    if args.model:
        model, per_level, model_img, model_fmt = read_model(args.model)
    if args.out:
        export_format(args.out)  # fail on a bad file name before the work
    if args.plot:
        from ..plot import _matplotlib

        _matplotlib()

    # Levels and k: the options, else the model's layout, else 3 levels of 3.
    layout = None
    if args.model and model_fmt == "yolov5":
        from ..export._yolov5arch import yolov5_layout

        with open(args.model, encoding="utf-8") as f:
            layout = yolov5_layout(f.read(), args.model)
    if args.strides:
        strides = args.strides
    elif args.levels:
        strides = strides_for(args.levels)
    elif model is not None and model.strides:
        strides = model.strides
    elif layout is not None and layout.strides:
        strides = layout.strides
    elif model is not None:
        strides = strides_for(len(model.levels))
    else:
        strides = strides_for(DEFAULT_LEVELS)
    if layout is not None and layout.source == "well-known" and not (args.strides or args.levels):
        ui.note(
            f"{args.model}: strides {', '.join(f'{s:g}' for s in strides)} guessed from its "
            f"{layout.n_levels} detection levels (the architecture could not be walked); give --strides if wrong"
        )
    if layout is not None and (args.strides or args.levels) and len(strides) != layout.n_levels:
        raise CLIError(
            f"{args.model}: its Detect layer (line {layout.detect_line}) takes {layout.n_levels} levels, "
            f"but {'--strides' if args.strides else '--levels'} gives {len(strides)}"
        )
    if args.k is not None:
        k = args.k
    elif model is not None:
        k = int(model.anchors.shape[0])
    elif per_level is not None:
        k = per_level * len(strides)
    else:
        k = DEFAULT_K if len(strides) == DEFAULT_LEVELS else 3 * len(strides)
    if k % len(strides):
        given = f"-k {k} anchors" if args.k is not None else f"the {k} anchors of --model {args.model}"
        raise CLIError(f"{given} cannot be split evenly over {len(strides)} levels: use a multiple of {len(strides)}")
    compare = parse_anchor_text(args.compare) if args.compare else None

    tmp = None
    try:
        if args.demo:
            from .._demo import make_demo

            tmp = tempfile.TemporaryDirectory(prefix="fastanchor-demo-")
            path = make_demo(tmp.name, "voc", n_images=1000, seed=0)
            ui.note(
                "demo: wrote 1,000 example images' annotations (COCO-like boxes, 8 classes) as Pascal VOC XML "
                f"to {path}"
            )
        else:
            path = args.dataset
        ld = load_dataset(args, ui, path, model_img, model_fmt)
    finally:
        if tmp is not None:
            tmp.cleanup()
    ui.note(
        f"loaded {len(ld.boxes):,} boxes in {ld.seconds:.2f} s; computing {k} anchors ({args.generations} generations)"
    )

    objective, why = _objective(args, model_fmt)
    scaled = _scale_of(args, model_fmt)
    scale = None if scaled is None else scaled[0]
    on_grid = args.grid if args.grid is not None else (model_fmt == "mmdet" and objective != "fitness")
    grid = _grid_of(ld, strides) if on_grid else None
    if not 0.0 < args.iou_thr <= 1.0:
        raise CLIError(f"--iou-thr must be in (0, 1], got {args.iou_thr}")
    t0 = time.perf_counter()
    result = autoanchor(
        ld.wh,
        k,
        thr=args.thr,
        generations=args.generations,
        budget=args.budget,
        scale=scale,
        grid=grid,
        objective=objective,
        iou_thr=args.iou_thr,
        seed=args.seed,
        progress=ui.progress,
    )
    seconds = time.perf_counter() - t0
    keep = kept_mask(ld.wh, DROP_BELOW)  # the boxes autoanchor fitted; every row is scored on them
    fit_wh = rows_where(ld.wh, keep)
    fit_grid = None if grid is None else grid.subset(keep)

    levels = split_levels(result.anchors, strides)
    if args.decimals is None:
        args.decimals = _auto_decimals(
            levels,
            fit_wh,
            args.thr,
            objective=objective,
            iou_thr=args.iou_thr,
            scale=scale,
            grid=fit_grid if objective != "fitness" else None,
        )
    written = [round_anchors(a, args.decimals) for a in levels]
    written_all = np.concatenate(written)
    rows: List[Tuple[str, Dict[str, float]]] = [
        ("fastanchor", metrics_row(anchor_fitness(written_all, fit_wh, thr=args.thr))),
        ("k-means only", metrics_row(anchor_fitness(result.kmeans_anchors, fit_wh, thr=args.thr))),
        (
            "YOLOv5 default",
            metrics_row(anchor_fitness(np.array(YOLOV5_DEFAULT_ANCHORS).reshape(-1, 2), fit_wh, thr=args.thr)),
        ),
    ]
    if model is not None:
        rows.append(
            (
                f"--model {os.path.basename(args.model)}",
                metrics_row(anchor_fitness(model.anchors, fit_wh, thr=args.thr)),
            )
        )
    if compare is not None:
        rows.append(("--anchors", metrics_row(anchor_fitness(compare, fit_wh, thr=args.thr))))

    from .. import __version__

    ui.print(f"fastanchor {__version__}: {describe(ld)}")
    ui.print(
        f"{k} anchors by k-means + {_generations_run(result, args.generations)} of evolution (thr {args.thr:g}, "
        f"seed {args.seed}) in {seconds:.2f} s on {result.n_boxes:,} boxes"
    )
    ui.print()
    size = f"{ld.img_size[0]:g}" if ld.resize == "letterbox" else f"{ld.img_size[0]:g}x{ld.img_size[1]:g}"
    ui.print(f"anchors at img-size {size}, as written (width,height):")
    print_levels(ui, written, strides, args.decimals)
    ui.print()
    print_table(ui, rows, args.thr)
    ui.print()
    # The last column scores the anchors as written (rounded), as the table above does. Under scale
    # augmentation the search's values are means over the scales, and the plain values follow.
    written_objectives = {
        name: anchor_objective(
            written_all,
            fit_wh,
            name,
            thr=args.thr,
            iou_thr=args.iou_thr,
            scale=scale,
            grid=fit_grid if name != "fitness" else None,
        )
        for name in OBJECTIVES
    }
    under = "" if scaled is None else f", under scale augmentation {scale[0]:g}-{scale[1]:g} ({scaled[1]})"
    if grid is not None:
        under += ", IoU with the anchors on the detector's grids"
    ui.print(f"objective {objective} ({why}){under}; every objective, k-means -> evolved -> as written:")
    for name in OBJECTIVES:
        label = f"recall@{args.iou_thr:g}" if name == "recall" else name
        ui.print(
            f"  {label:12} {result.kmeans_objectives[name]:.4f} -> {result.evolved_objectives[name]:.4f}"
            f" -> {written_objectives[name]:.4f}"
        )
    plain_objectives = None
    if scaled is not None:
        plain_objectives = {
            name: anchor_objective(written_all, fit_wh, name, thr=args.thr, iou_thr=args.iou_thr) for name in OBJECTIVES
        }
        ui.print(
            "as written, without augmentation: "
            + ", ".join(f"{name} {value:.4f}" for name, value in plain_objectives.items())
        )

    header = (
        f"anchors by fastanchor {__version__} for {ld.name} at img-size {size} ({ld.resize}): "
        f"fitness {rows[0][1]['fitness']:.4f}, BPR {rows[0][1]['bpr']:.4f}, thr {args.thr:g}"
    )
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
        fmt = write_anchors(
            args.out, written, strides, template=template, decimals=args.decimals, header=header, metadata=meta
        )
        what = {"yolov5": "YOLOv5 model yaml", "darknet": "darknet cfg", "mmdet": "mmdetection config", "json": "json"}[
            fmt
        ]
        ui.print()
        if template and fmt == "mmdet" and _inherits(args.out, template):
            how = f", an override that inherits {template} through _base_"
        elif template:
            how = f", a copy of {template} with its anchors replaced"
        else:
            how = ""
        ui.print(f"wrote {args.out} ({what}{how})")
        _verify_written(ui, args.out, written, strides, fit_wh, args.thr)
    if args.plot:
        from ..plot import dataset_label, plot_anchors

        plot_anchors(
            fit_wh,
            written,
            args.plot,
            strides=strides,
            reference=[np.array(a, dtype=float) for a in YOLOV5_DEFAULT_ANCHORS],
            title=f"{dataset_label(ld.name)}: {len(fit_wh):,} boxes, {ld.scaling}",
            thr=args.thr,
            decimals=args.decimals,
        )
        ui.print(f"wrote {args.plot} (box sizes and anchors)")

    if ui.json_mode:
        doc = {
            "dataset": {
                "path": ld.name,
                "format": ld.fmt,
                "boxes": len(ld.boxes),
                "images": ld.boxes.n_images,
                "left_out": ld.dropped,
                "fitted_boxes": result.n_boxes,
            },
            "img_size": ld.img_size[0] if ld.resize == "letterbox" else list(ld.img_size),
            "resize": ld.resize,
            "k": k,
            "strides": list(strides),
            "thr": args.thr,
            "generations": args.generations,
            "budget": args.budget,
            "generations_run": len(result.history),
            "objective": objective,
            "iou_thr": args.iou_thr,
            "objectives": {
                "kmeans": result.kmeans_objectives,
                "evolved": result.evolved_objectives,
                "written": written_objectives,
            },
            "scale": None if scale is None else list(scale),
            "grid": grid is not None,
            "objectives_without_scale": plain_objectives,
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
