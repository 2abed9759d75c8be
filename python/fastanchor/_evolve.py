"""The mutation search that refines anchors on YOLOv5's fitness, and the autoanchor pipeline."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import numpy.typing as npt

from . import _chunked, _core
from ._augment import DEFAULT_SCALE_STEPS, as_scale_range, scale_augment, scale_grid
from ._fitness import (
    DEFAULT_IOU_THR,
    DEFAULT_THR,
    FitnessResult,
    _all_objectives,
    _metrics,
    as_anchors,
    as_iou_thr,
    as_objective,
    as_thr,
)
from ._grid import DetectorGrid, as_grid
from ._kmeans import kmeans_iou, kmeans_present
from ._results import Result
from ._validation import (
    CHECK_ROWS,
    INT_MAX,
    MAX_SIDE,
    MIN_SIDE,
    SeedLike,
    as_float,
    as_int,
    as_weights,
    as_wh,
    as_wh_rows,
    distinct_rows_at_least,
    resolve_seed,
    resolve_threads,
    rows_where,
    sample_index,
    unchanged_since,
)

#: The strategies of :func:`evolve_anchors`.
STRATEGIES = ("anchorwise", "yolov5")
#: autoanchor's default work budget (box evaluations): on sets of fewer than BUDGET / generations
#: boxes the search goes on with restarts until generations x boxes reaches it (measured in
#: benchmarks/RESULTS.md: about 0.1 to 0.5 s).
DEFAULT_BUDGET = 2**26
#: The most generations the budget adds.
MAX_EXTRA_GENERATIONS = 2**19
#: The work of scoring one box on the detector's grids, in corner-aligned box evaluations (measured
#: on the small real sets: about 30; the budget divides by it).
GRID_COST = 32
#: Generations per restart, and the scale of the mutation that starts each restart.
RESTART_LENGTH = 500
RESTART_SIGMA = 0.3
#: autoanchor drops boxes smaller than this on both sides (pixels), as YOLOv5 does ...
DROP_BELOW = 2.0
#: ... and warns about boxes smaller than this on either side.
WARN_BELOW = 3.0
#: autoanchor runs k-means on a uniform sample of this many boxes first when it fits more, and
#: refines the sample's anchors on all of them (a few Lloyd passes from a start that close).
DEFAULT_INIT_SAMPLE = 1 << 20
#: autoanchor's search scores its candidates on a uniform sample of this many boxes when it has
#: more (every reported value is then computed on all of them): the candidates of a generation are
#: compared on the same sample, whose noise they share, so it steers the search about as all boxes
#: would (benchmarks/RESULTS.md, "autoanchor's search on a sample").
DEFAULT_SEARCH_SAMPLE = 1 << 20
#: Rows per block of autoanchor's reports on all boxes after a search on a sample.
REPORT_BLOCK_ROWS = 1 << 18
#: autoanchor leaves dropped boxes out in place (no copy of the kept ones) for k up to this: the
#: core's one-byte labels.
IN_PLACE_MAX_K = 254

Callback = Callable[[int, float, np.ndarray], Any]


@dataclass(frozen=True, eq=False, repr=False)
class EvolveResult(Result):
    """The outcome of :func:`evolve_anchors`.

    Immutable, with read-only arrays, and compared by identity (so hashable).
    The repr shows ``history`` by its shape.

    Attributes
    ----------
    anchors : ndarray (k, 2) float64
        The best anchors found, sorted by area ascending (ties by width).
    fitness : float
        The value of the searched ``objective`` for these anchors (exactly what
        ``anchor_objective(anchors, wh, objective)`` returns; for "fitness", what
        ``anchor_fitness(anchors, wh).fitness`` returns).
    bpr, aat, avg_iou : float
        Their other metrics on the boxes (:func:`anchor_fitness`).
    history : ndarray (generations,) float64
        The best objective value after each generation; non-decreasing. Shorter than the
        generations asked for when the callback stopped the search; longer when the work budget
        added restarts.
    n_improved : int
        Generations whose candidate became the new best.
    initial_fitness : float
        The objective's value of the initial anchors (raised to ``min_size``).
    stopped : bool
        Whether the callback stopped the search before the last generation.
    objective : str
        The objective the search maximized ("fitness", "avg_iou" or "recall").
    """

    _summarized = ("history",)

    anchors: npt.NDArray[np.float64]
    fitness: float
    bpr: float
    aat: float
    avg_iou: float
    history: npt.NDArray[np.float64]
    n_improved: int
    initial_fitness: float
    stopped: bool
    objective: str = "fitness"


@dataclass(frozen=True, eq=False, repr=False)
class AutoAnchorResult(Result):
    """The outcome of :func:`autoanchor`.

    Immutable, with read-only arrays, and compared by identity (so hashable).
    The repr shows ``history`` by its shape.

    Attributes
    ----------
    anchors : ndarray (k, 2) float64
        The evolved anchors, sorted by area ascending (ties by width); split them over the
        detection levels with :func:`split_levels`.
    kmeans_anchors : ndarray (k, 2) float64
        The k-means anchors the evolution started from (sorted likewise).
    kmeans, evolved : FitnessResult
        Fitness, best possible recall, anchors above threshold and average IoU of the k-means
        and of the evolved anchors, on the boxes that were fitted (those kept).
    history : ndarray float64
        The best fitness after each generation of the evolution.
    n_boxes : int
        Boxes fitted.
    n_dropped : int
        Boxes dropped because both sides are below 2 pixels.
    n_small : int
        Boxes with a side below 3 pixels (counted before dropping; a warning reports them).
    objective : str
        The objective the evolution maximized ("fitness", "avg_iou" or "recall").
    kmeans_objectives, evolved_objectives : dict
        Every objective's value (:func:`anchor_objective`, keys "fitness", "avg_iou" and
        "recall") for the k-means and the evolved anchors: what the choice of objective traded.
    scale : (float, float) or None
        The scale range the boxes were augmented over (``scale=``), or None. With a range, every
        metric and objective above is the mean over the scales.
    """

    _summarized = ("history",)

    anchors: npt.NDArray[np.float64]
    kmeans_anchors: npt.NDArray[np.float64]
    kmeans: FitnessResult
    evolved: FitnessResult
    history: npt.NDArray[np.float64]
    n_boxes: int
    n_dropped: int
    n_small: int
    objective: str = "fitness"
    kmeans_objectives: Dict[str, float] = field(default_factory=dict)
    evolved_objectives: Dict[str, float] = field(default_factory=dict)
    scale: Optional[Tuple[float, float]] = None

    @property
    def value(self) -> float:
        """The evolved anchors' value on the searched objective."""
        return self.evolved_objectives[self.objective]

    @property
    def fitness(self) -> float:
        """The evolved anchors' fitness (``evolved.fitness``)."""
        return self.evolved.fitness

    @property
    def bpr(self) -> float:
        """The evolved anchors' best possible recall (``evolved.bpr``)."""
        return self.evolved.bpr

    @property
    def aat(self) -> float:
        """The evolved anchors' anchors above threshold (``evolved.aat``)."""
        return self.evolved.aat

    @property
    def avg_iou(self) -> float:
        """The evolved anchors' average IoU (``evolved.avg_iou``)."""
        return self.evolved.avg_iou


class _EvolveProgress:
    """A tqdm bar over generations showing the best fitness, fed after each pass of the core."""

    def __init__(self, total: int, desc: str) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=desc, unit="gen", dynamic_ncols=True)

    def __call__(self, done: int, fitness: float) -> None:
        self._bar.set_postfix_str(f"fitness {fitness:.5f}", refresh=False)
        self._bar.update(done - self._bar.n)  # redraws at most every 0.1 s

    def close(self) -> None:
        self._bar.close()


def _as_probability(x: Any, name: str) -> float:
    value = as_float(x, name)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def _as_positive(x: Any, name: str) -> float:
    value = as_float(x, name)
    if not value > 0.0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _check_search_args(
    generations: Any, mutation_prob: Any, sigma: Any, min_size: Any, strategy: Any, batch: Any, callback: Any
) -> Tuple[int, float, float, float, int]:
    generations = as_int(generations, "generations", minimum=0)
    if generations >= 2**31:
        raise ValueError(f"generations must be < 2**31, got {generations}")
    mutation_prob = _as_probability(mutation_prob, "mutation_prob")
    sigma = _as_positive(sigma, "sigma")
    min_size = _as_positive(min_size, "min_size")
    if not MIN_SIDE <= min_size <= MAX_SIDE:
        raise ValueError(f"min_size must be within [{MIN_SIDE:g}, {MAX_SIDE:g}], got {min_size}")
    if not (isinstance(strategy, str) and strategy in STRATEGIES):
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    batch = as_int(batch, "batch", minimum=1)
    if batch > 4096:
        raise ValueError(f"batch must be <= 4096, got {batch}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    return generations, mutation_prob, sigma, min_size, batch


def _check_objective_args(objective: Any, iou_thr: Any, iou_weighted: Any, budget: Any) -> Tuple[str, float, bool, int]:
    objective = as_objective(objective)
    iou_thr = as_iou_thr(iou_thr)
    if not isinstance(iou_weighted, (bool, np.bool_)):
        raise TypeError(f"iou_weighted must be a bool, got {type(iou_weighted).__name__}")
    budget = as_int(budget, "budget", minimum=0)
    return objective, iou_thr, bool(iou_weighted), budget


def _scaled_grid(grid: Optional[DetectorGrid], scale: Any, steps: int) -> Optional[DetectorGrid]:
    """The grid that goes with scale_augment's boxes (the images resized by each scale)."""
    if grid is None or scale is None:
        return grid
    return grid.scaled(scale_grid(scale, steps))


def _extra_generations(budget: int, n: int, generations: int) -> int:
    """Generations the work budget adds after ``generations`` on ``n`` boxes."""
    return int(min(max(budget // n - generations, 0), MAX_EXTRA_GENERATIONS))


def _evolve(
    anchors: Any,
    boxes: Any,
    weights: Any,
    thr: float,
    generations: int,
    mutation_prob: float,
    sigma: float,
    min_size: float,
    strategy: str,
    batch: int,
    seed: int,
    threads: int,
    progress: bool,
    callback: Any,
    objective: str = "fitness",
    iou_thr: float = DEFAULT_IOU_THR,
    iou_weighted: bool = False,
    budget: int = 0,
    grid: Any = None,
    *,
    layout: Any,
) -> EvolveResult:
    """The search on ``boxes`` (validated rows, with optional weights), scored on ``layout``
    (:func:`_layout` of the same boxes)."""
    grid_kw = grid.core_args(boxes.shape[0], anchors.shape[0]) if grid is not None and objective != "fitness" else {}
    # A grid-scored box costs about GRID_COST corner-aligned ones: the budget counts it so.
    cost = GRID_COST if grid_kw else 1
    extra = _extra_generations(budget, boxes.shape[0] * cost, generations)
    total = generations + extra
    bar = _EvolveProgress(total, f"evolve_anchors ({strategy}, {objective})") if progress else None
    try:
        out = _core.evolve_anchors(
            layout=layout,
            weights=weights,
            init=anchors,
            thr=thr,
            generations=generations,
            mutation_prob=mutation_prob,
            sigma=sigma,
            min_size=min_size,
            strategy=strategy,
            batch=batch,
            seed=seed,
            n_threads=threads,
            progress=bar,
            callback=callback,
            objective=objective,
            iou_thr=iou_thr,
            iou_weighted=iou_weighted,
            extra_generations=extra,
            restart_length=RESTART_LENGTH,
            restart_sigma=RESTART_SIGMA,
            **grid_kw,
        )
    finally:
        if bar is not None:
            bar.close()
    return _search_result(out, float(out["bpr"]), float(out["aat"]), float(out["avg_iou"]), objective)


def _layout(
    boxes: np.ndarray, weights: Optional[np.ndarray], threads: int, checksum: Optional[int] = None, name: str = ""
) -> Any:
    """The search's layout of validated rows (float32 or float64) and weights: its own copy of them
    (about 9 bytes per float32 box, 17 per float64 one), sorted for the search's pruning. With a
    ``checksum`` of ``boxes`` (as_wh_rows: the caller's array read in place), checks that they did
    not change while the copy was made; the search and every report then read the copy only."""
    layout = _core._search_layout(wh=boxes, weights=weights, n_threads=threads)
    unchanged_since(boxes, checksum, "wh", name)
    return layout


def _search_result(out: Dict[str, Any], bpr: float, aat: float, avg_iou: float, objective: str) -> EvolveResult:
    """The EvolveResult of the core's search output and the metrics of its anchors."""
    return EvolveResult(
        anchors=out["anchors"],
        fitness=float(out["objective"]),
        bpr=bpr,
        aat=aat,
        avg_iou=avg_iou,
        history=out["history"],
        n_improved=int(out["n_improved"]),
        initial_fitness=float(out["initial_fitness"]),
        stopped=bool(out["stopped"]),
        objective=objective,
    )


def evolve_anchors(
    anchors: npt.ArrayLike,
    wh: npt.ArrayLike,
    *,
    thr: float = DEFAULT_THR,
    generations: int = 1000,
    mutation_prob: float = 0.9,
    sigma: float = 0.1,
    min_size: float = 2.0,
    strategy: str = "anchorwise",
    batch: int = 8,
    objective: str = "fitness",
    iou_thr: float = DEFAULT_IOU_THR,
    iou_weighted: bool = False,
    budget: int = 0,
    sample_weight: Optional[npt.ArrayLike] = None,
    scale: Any = None,
    scale_steps: int = DEFAULT_SCALE_STEPS,
    grid: Any = None,
    seed: SeedLike = None,
    n_threads: Optional[int] = None,
    progress: bool = False,
    callback: Optional[Callback] = None,
) -> EvolveResult:
    """Refine anchors by a mutation search on an objective: YOLOv5's anchor fitness (see
    :func:`anchor_fitness`), the average best IoU or the recall at an IoU threshold (see
    :func:`anchor_objective`).

    A generation scores one candidate: a mutation of the best anchors so far, with every side
    kept within ``[min_size, 1e30]`` (1e30 is the largest side any fastanchor function accepts).
    The candidate replaces the best anchors only if its value is strictly higher, so the
    objective never decreases.

    Parameters
    ----------
    anchors : array_like, shape (k, 2)
        The initial anchors, e.g. ``kmeans_iou(wh, k).anchors`` (sides below ``min_size`` are
        first raised to it).
    wh : array_like, shape (N, 2)
        Box widths and heights in pixels: finite and strictly positive. The search scores its own
        sorted copy of them (9 bytes per box for float32 rows, 17 for float64 and other dtypes, 8
        more with ``sample_weight``). A C-contiguous float32 or float64 array is read in place
        while that copy is made: a change made to it meanwhile raises RuntimeError; later changes
        (from ``callback``, say) do not reach the search.
    thr : float
        YOLOv5's ``anchor_t`` (> 1).
    generations : int
        Candidates to score (>= 0).
    mutation_prob : float
        In [0, 1]: the probability that a coordinate is mutated.
    sigma : float
        > 0: the scale of the mutations (the initial step size of "anchorwise").
    min_size : float
        The smallest anchor side (YOLOv5: 2 pixels).
    strategy : {"anchorwise", "yolov5"}
        "yolov5": YOLOv5's ``kmean_anchors`` mutation, exactly: per generation one
        ``rho ~ U(0, 1)``; per coordinate ``v = clip(1 + [U < mutation_prob] * rho * N(0, 1) *
        sigma, 0.3, 3.0)``, redrawn while every ``v == 1``; candidate ``max(anchors * v,
        min_size)``. "anchorwise" (default): each candidate moves one anchor, both sides (each
        with probability ``mutation_prob``) by a factor ``exp(step_j * N(0, 1))`` with a step size
        per anchor that starts at ``sigma`` and adapts (x1.6 after a success, x0.9 after a failure,
        within [1e-4, max(0.5, sigma)]); anchors are visited in random order, and when several
        candidates of a pass improved different anchors, their combination is the first candidate
        of the next pass. It reaches a higher fitness than "yolov5" with the same number of
        generations (benchmarks/RESULTS.md).
    batch : int
        Candidates scored per pass over the boxes (a speed setting: "yolov5" gives the same
        result for every batch size; "anchorwise" draws a pass's candidates from the same best
        anchors, so the batch size is part of its definition).
    objective : {"fitness", "avg_iou", "recall"}
        What the search maximizes (:func:`anchor_objective`): YOLOv5's ratio fitness (for
        detectors that assign by side ratio, as YOLOv5), the average best IoU, or the share of boxes
        whose best IoU is at least ``iou_thr`` (for detectors that assign by IoU: darknet,
        mmdetection, SSD, torchvision).
    iou_thr : float
        In (0, 1]: the IoU threshold of "recall".
    iou_weighted : bool
        "recall": count each recalled box with its IoU instead of 1.
    budget : int
        A work budget in box evaluations (>= 0; default 0: none). When ``generations`` times the
        number of boxes is below it, the search goes on up to ``budget // N`` generations in all
        (at most 2**19 more): "anchorwise" by restarts, each from a perturbation of the best
        anchors (YOLOv5's mutation with sigma 0.3) followed by 500 anchorwise generations;
        "yolov5" by more generations. On small sets a generation costs microseconds, and the
        restarts escape the local optima a single search ends in.
    sample_weight : array_like, shape (N,), optional
        Finite, non-negative weights with a positive sum (default: all ones).
    scale, scale_steps : float or (float, float), int
        Scale augmentation: with a range ``(lo, hi)`` (or YOLOv5's ``hyp.scale`` ``g``, meaning
        ``(1 - g, 1 + g)``), the objective is its mean over a uniform random rescaling of the
        boxes, computed on the boxes at ``scale_steps`` scales (:func:`scale_augment`; default
        None, no augmentation). The history and the result's values are those means.
    grid : DetectorGrid, optional
        Score "avg_iou" and "recall" with the anchors placed on the detector's grids
        (:class:`DetectorGrid`, of the same boxes as ``wh``; ``k`` must split evenly over its
        levels) instead of corner-aligned. Each evaluation then places every anchor at the four
        cells nearest each box: about four times the work of the corner-aligned objective, with
        no pruning. With ``scale``, the images are resized by each scale (boxes, image sizes and
        so the cell counts scale; the strides do not), as multi-scale training resizes them.
    seed : int, numpy.random.Generator, numpy.random.SeedSequence or None
        The same input and seed give bit-identical results for any ``n_threads``.
    n_threads : int, optional
        None for all threads (honours ``OMP_NUM_THREADS``), a positive count, or a negative one
        counting back from the maximum (-1 = all).
    progress : bool
        Show a tqdm progress bar with the best value.
    callback : callable, optional
        ``callback(generation, fitness, anchors)`` after every generation (1-based count, best
        fitness and best anchors so far, sorted by area); returning False stops the search (None
        or a true value continues).

    Returns
    -------
    EvolveResult

    Notes
    -----
    Ctrl-C raises KeyboardInterrupt: the core checks for it about every 50 ms of work, inside a
    pass too (whatever ``batch`` and the number of anchors); the GIL is released while the core
    runs. The boxes are visited in a spatially sorted order in tiles of
    64, and per tile only the anchors that can hold a box's best ratio are evaluated (about one of
    nine on COCO-like data); the fitness is an exact fixed-point sum, so this changes no bit of it.
    """
    a = as_anchors(anchors)
    # A C-contiguous float32/float64 array is read in place, once, into the search's layout.
    boxes, checksum = as_wh_rows(wh) if scale is None else (as_wh(wh), None)
    weights = as_weights(sample_weight, boxes.shape[0])
    grid = _scaled_grid(as_grid(grid), scale, scale_steps)
    if scale is not None:
        boxes, weights = scale_augment(boxes, scale, steps=scale_steps, sample_weight=weights)
    t = as_thr(thr)
    generations, mutation_prob, sigma, min_size, batch = _check_search_args(
        generations, mutation_prob, sigma, min_size, strategy, batch, callback
    )
    objective, iou_thr, iou_weighted, budget = _check_objective_args(objective, iou_thr, iou_weighted, budget)
    threads = resolve_threads(n_threads)
    return _evolve(
        a,
        boxes,
        weights,
        t,
        generations,
        mutation_prob,
        sigma,
        min_size,
        strategy,
        batch,
        resolve_seed(seed),
        threads,
        progress,
        callback,
        objective,
        iou_thr,
        iou_weighted,
        budget,
        grid,
        layout=_layout(boxes, weights, threads, checksum, "evolve_anchors"),
    )


def _small_boxes(boxes: np.ndarray) -> Tuple[int, int]:
    """The number of boxes with a side below WARN_BELOW, and of those kept (a side of at least
    DROP_BELOW), counted block by block (a few MB of temporaries whatever N)."""
    n_small = n_kept = 0
    for b in range(0, boxes.shape[0], CHECK_ROWS):
        block = boxes[b : b + CHECK_ROWS]
        n_small += _chunked.small_count(block, WARN_BELOW)
        n_kept += int(np.count_nonzero(_chunked.kept_mask(block, DROP_BELOW)))
    return n_small, n_kept


def _kept_mask(boxes: np.ndarray) -> np.ndarray:
    """The mask of the boxes kept (a side of at least DROP_BELOW), made block by block."""
    keep = np.empty(boxes.shape[0], dtype=bool)
    for b in range(0, boxes.shape[0], CHECK_ROWS):
        keep[b : b + CHECK_ROWS] = _chunked.kept_mask(boxes[b : b + CHECK_ROWS], DROP_BELOW)
    return keep


def sampled_start(
    n: int,
    take: Callable[[np.ndarray], Tuple[np.ndarray, Optional[np.ndarray]]],
    k: int,
    n_init: int,
    tol: float,
    gen: np.random.Generator,
    init_sample: int,
    threads: int,
    progress: bool,
) -> Optional[np.ndarray]:
    """autoanchor's k-means on a sample of its ``n`` boxes (``n > init_sample``), shared by the
    in-memory and chunked engines so that both draw the same rows: ``init_sample`` sorted row
    indices from ``gen``, their rows and weights by ``take(index)``, then ``n_init`` runs seeded
    from ``gen``. The anchors that start the run on all boxes, or None when the sample holds fewer
    than ``k`` distinct boxes of positive weight."""
    sample, sample_weight = take(sample_index(gen, n, init_sample))
    fitted = sample if sample_weight is None else sample[sample_weight > 0]
    if distinct_rows_at_least(fitted, k) < k:
        return None
    km = kmeans_iou(
        sample, k, n_init=n_init, tol=tol, sample_weight=sample_weight, seed=gen, n_threads=threads, progress=progress
    )
    return km.anchors


def _taker(
    boxes: np.ndarray, weights: Optional[np.ndarray]
) -> Callable[[np.ndarray], Tuple[np.ndarray, Optional[np.ndarray]]]:
    """The in-memory ``take`` of sampled_start and search_rows: the rows and weights at an index."""

    def take(index: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        return boxes[index], None if weights is None else weights[index]

    return take


def search_rows(
    n: int,
    take: Callable[[np.ndarray], Tuple[np.ndarray, Optional[np.ndarray]]],
    gen: np.random.Generator,
    search_sample: int,
) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
    """autoanchor's search sample of its ``n`` boxes, shared by the in-memory and chunked engines:
    ``search_sample`` sorted row indices drawn from ``gen`` (after k-means' draws), with their rows
    and weights by ``take(index)``; (None, None, None) when ``n <= search_sample`` (the search then
    runs on all boxes and nothing is drawn)."""
    index = search_index(n, gen, search_sample)
    if index is None:
        return None, None, None
    rows, weights = take(index)
    return index, rows, weights


def search_index(n: int, gen: np.random.Generator, search_sample: int) -> Optional[np.ndarray]:
    """The row indices of search_rows' sample (None, and nothing drawn, when ``n <= search_sample``)."""
    return None if n <= search_sample else sample_index(gen, n, search_sample)


def _search_sample(
    boxes: np.ndarray, weights: Optional[np.ndarray], grid: Optional[DetectorGrid], gen: np.random.Generator, size: int
) -> Optional[Tuple[np.ndarray, Optional[np.ndarray], Optional[DetectorGrid]]]:
    """The in-memory autoanchor's search sample (rows, weights, grid rows), or None when the search
    runs on all boxes: there are at most ``size`` of them, or the sample holds no weight."""
    index, rows, sample_weight = search_rows(boxes.shape[0], _taker(boxes, weights), gen, size)
    if index is None or rows is None or (sample_weight is not None and not sample_weight.sum() > 0):
        return None
    return rows, sample_weight, None if grid is None else grid.subset(index)


def _kmeans_stage(
    boxes: np.ndarray,
    weights: Optional[np.ndarray],
    k: int,
    n_init: int,
    tol: float,
    gen: np.random.Generator,
    init_sample: int,
    threads: int,
    progress: bool,
) -> np.ndarray:
    """autoanchor's k-means anchors: from its sample's anchors when it has more than
    ``init_sample`` boxes (and the sample has ``k`` distinct ones), else ``n_init`` runs from the
    seed on all boxes. Only the anchors are returned: the fit's labels (4 bytes per box) are freed
    before the search lays its boxes out."""
    n = boxes.shape[0]
    if n > init_sample:
        start = sampled_start(n, _taker(boxes, weights), k, n_init, tol, gen, init_sample, threads, progress)
        if start is not None:
            return kmeans_iou(
                boxes, k, init=start, tol=tol, sample_weight=weights, n_threads=threads, progress=progress
            ).anchors
    return kmeans_iou(
        boxes, k, n_init=n_init, tol=tol, sample_weight=weights, seed=gen, n_threads=threads, progress=progress
    ).anchors


def _autoanchor_in_place(
    rows: np.ndarray,
    k: int,
    s: _chunked.SearchArgs,
    n_init: int,
    tol: float,
    gen: np.random.Generator,
    init_sample: int,
    search_sample: int,
    threads: int,
    progress: bool,
    callback: Optional[Callback],
) -> AutoAnchorResult:
    """autoanchor of rows of which some are dropped, read in place: the chunked engine over blocks
    of the rows (the kept ones found block by block), with the k-means of all kept rows run by
    the core on the rows, leaving the dropped ones out (kmeans_present). The same draws from
    ``gen`` as the in-memory pipeline, so its result bit for bit."""

    def fit_all(start: Optional[np.ndarray], g: np.random.Generator, runs: int) -> np.ndarray:
        if start is None:  # the sample holds fewer than k distinct boxes: runs on all (a copy)
            kept = rows_where(rows, _chunked.kept_mask(rows, DROP_BELOW))
            return kmeans_iou(kept, k, n_init=runs, tol=tol, seed=g, n_threads=threads, progress=progress).anchors
        return kmeans_present(rows, k, start, tol=tol, skip_below=DROP_BELOW, n_threads=threads, progress=progress)

    ex = _chunked.LocalExecutor([rows], REPORT_BLOCK_ROWS, threads)
    result: AutoAnchorResult = _chunked.autoanchor(
        ex,
        k,
        s,
        n_init,
        tol,
        None,
        init_sample,
        search_sample,
        progress,
        callback,
        lambda index: rows if index is None else rows[index],
        "autoanchor",
        threads=threads,
        gen=gen,
        fit_all=fit_all,
        stacklevel=4,  # autoanchor's caller
    )
    return result


def autoanchor(
    wh: npt.ArrayLike,
    k: int = 9,
    *,
    thr: float = DEFAULT_THR,
    generations: int = 1000,
    strategy: str = "anchorwise",
    mutation_prob: float = 0.9,
    sigma: float = 0.1,
    min_size: float = 2.0,
    n_init: int = 1,
    tol: float = 1e-3,
    init_sample: int = DEFAULT_INIT_SAMPLE,
    search_sample: int = DEFAULT_SEARCH_SAMPLE,
    batch: int = 8,
    objective: str = "fitness",
    iou_thr: float = DEFAULT_IOU_THR,
    iou_weighted: bool = False,
    budget: int = DEFAULT_BUDGET,
    sample_weight: Optional[npt.ArrayLike] = None,
    scale: Any = None,
    scale_steps: int = DEFAULT_SCALE_STEPS,
    grid: Any = None,
    seed: SeedLike = None,
    n_threads: Optional[int] = None,
    progress: bool = False,
    callback: Optional[Callback] = None,
) -> AutoAnchorResult:
    """YOLOv5's autoanchor: k-means anchors refined by the mutation search, for a dataset's boxes.

    1. Boxes with a side below 3 pixels are counted (a warning reports them, as YOLOv5's
       "extremely small objects"); boxes below 2 pixels on both sides are dropped.
    2. :func:`kmeans_iou` computes ``k`` anchors (``n_init`` runs). On more than ``init_sample``
       boxes it runs on a uniform sample of ``init_sample`` of them first, and its anchors start
       one run on all of them.
    3. :func:`evolve_anchors` refines them on ``objective`` for ``generations`` generations, and
       on small sets for more, within the work ``budget``. On more than ``search_sample`` boxes
       the search scores its candidates on a uniform sample of that many; every value reported
       is computed on all boxes.

    Parameters
    ----------
    wh : array_like, shape (N, 2)
        Box widths and heights in pixels at the training size (letterboxed: YOLOv5 scales each
        image's longest side to the image size). A C-contiguous float32 or float64 array is read
        in place by the checks and k-means, then copied for the search (as in
        :func:`evolve_anchors`); a change made to it before that copy raises RuntimeError. When
        some boxes are dropped, the kept ones are read in place too, among the dropped ones
        (with ``k`` < 255, without ``sample_weight``, ``scale`` or ``grid``, and with more kept
        boxes than ``init_sample`` and ``search_sample``); otherwise they are copied in their
        dtype.
    k : int
        Number of anchors (9 for YOLOv5's three levels of three).
    thr, generations, strategy, mutation_prob, sigma, min_size, batch, callback
        As in :func:`evolve_anchors`.
    objective, iou_thr, iou_weighted
        As in :func:`evolve_anchors`: "fitness" for detectors that assign anchors by side ratio
        (YOLOv5), "avg_iou" or "recall" for those that assign by IoU.
    budget : int
        As in :func:`evolve_anchors`, default ``2**26`` box evaluations: sets of fewer than about
        67,000 boxes get restarts (at most 0.1 to 0.5 s more); larger sets run ``generations``
        only.
    n_init, tol : int, float
        Passed to :func:`kmeans_iou`: k-means runs (the best average IoU wins), and the relative
        anchor shift below which a run stops. One run stopped at a shift of 1e-3 is enough: the
        evolution refines the anchors anyway (on 1,000,000 COCO-like boxes k-means creeps for
        hundreds of iterations; stopping at 1e-3 takes 70 and evolves to the same fitness).
    init_sample : int
        The size of the uniform sample (row indices drawn from ``seed``) that k-means fits first
        when there are more boxes (default 2**20; after scale augmentation, of the augmented set).
        From the sample's anchors the run on all boxes takes a few Lloyd iterations, where one from
        k-means++ takes tens to hundreds: on 10^8 boxes each costs about 0.2 s. The evolution
        refines either start to the same fitness. The run falls back to all boxes when the sample
        holds fewer than ``k`` distinct boxes (of positive weight).
    search_sample : int
        The size of the uniform sample (row indices drawn from ``seed`` after k-means) on which
        the search scores its candidates when there are more boxes (default 2**20; with their
        weights and grid rows). The objectives are means over boxes, and candidates compared on
        one sample share its noise: on 10^7 and 10^8 COCO-like boxes, anchors evolved on a
        sample of 2**20 scored within 6e-5 of those evolved on all boxes (on all boxes), where
        different seeds end up to 5e-4 apart, and the 1000 generations took 0.7 s instead of
        5-7 s and 64 s. The search's ``history`` is on the sample; ``kmeans``, ``evolved`` and the
        objectives are on all boxes. Pass a value of at least N to search on all boxes. The
        search runs on all boxes too when the sample's weights are all zero.
    sample_weight : array_like, shape (N,), optional
        Weights for k-means and the fitness (those of dropped boxes are dropped too).
    scale, scale_steps : float or (float, float), int
        Scale augmentation, as in :func:`evolve_anchors`: k-means, the search and every reported
        value run on the kept boxes at ``scale_steps`` scales of the range (:func:`scale_augment`),
        so the anchors fit the box sizes the network sees when training rescales its images
        (YOLOv5: ``scale=hyp["scale"]``). Default None: the boxes as given.
    grid : DetectorGrid, optional
        As in :func:`evolve_anchors` (of the same boxes as ``wh``; the rows dropped from ``wh``
        are dropped from it too); the objectives reported are then grid-scored as well.
    seed : int, numpy.random.Generator, numpy.random.SeedSequence or None
        Seeds both stages; the same input and seed give bit-identical results for any
        ``n_threads``.
    n_threads : int, optional
        As in :func:`evolve_anchors`.
    progress : bool
        Show tqdm progress bars for both stages.

    Returns
    -------
    AutoAnchorResult
        The evolved anchors sorted by area, and fitness, bpr, aat and average IoU after k-means
        and after evolution (on the boxes kept), with every objective's value.

    Warns
    -----
    UserWarning
        When some boxes have a side below 3 pixels (with the counts of those and of the boxes
        dropped).
    """
    # A C-contiguous float32/float64 array is read in place (checked unchanged after each read).
    rows, checksum = as_wh_rows(wh)
    boxes = rows
    n = boxes.shape[0]
    k = as_int(k, "k", minimum=1)
    weights = as_weights(sample_weight, n)
    t = as_thr(thr)
    generations, mutation_prob, sigma, min_size, batch = _check_search_args(
        generations, mutation_prob, sigma, min_size, strategy, batch, callback
    )
    objective, iou_thr, iou_weighted, budget = _check_objective_args(objective, iou_thr, iou_weighted, budget)
    n_init = as_int(n_init, "n_init", minimum=1, maximum=INT_MAX)
    tol = as_float(tol, "tol")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    init_sample = as_int(init_sample, "init_sample", minimum=1)
    search_sample = as_int(search_sample, "search_sample", minimum=1)
    threads = resolve_threads(n_threads)
    gen = np.random.default_rng(resolve_seed(seed))

    n_small, n_kept = _small_boxes(boxes)
    n_dropped = n - n_kept
    if (
        0 < n_dropped < n
        and weights is None
        and scale is None
        and grid is None
        and k <= IN_PLACE_MAX_K
        and n_kept > max(init_sample, search_sample)
    ):
        # Boxes are dropped, and the kept ones would be copied (8 bytes per box): they are read in
        # place instead, by the chunked engine with the rows in memory, whose results are these.
        checked = _chunked.SearchArgs(
            t, generations, mutation_prob, sigma, min_size, strategy, batch, objective, iou_thr, iou_weighted, budget
        )
        result = _autoanchor_in_place(
            rows,
            k,
            checked,
            n_init,
            tol,
            gen,
            init_sample,
            search_sample,
            threads,
            progress,
            callback,
        )
        unchanged_since(rows, checksum, "wh", "autoanchor")
        return result
    if n_small:
        warnings.warn(
            f"{n_small} of {n} boxes are smaller than {WARN_BELOW:g} pixels in width or height (extremely small "
            f"objects); the {n_dropped} below {DROP_BELOW:g} pixels on both sides are dropped",
            UserWarning,
            stacklevel=2,
        )
    if n_dropped == n:
        raise ValueError(f"all {n} boxes are smaller than {DROP_BELOW:g} pixels on both sides: nothing to fit")
    keep = _kept_mask(rows) if n_dropped else None
    if keep is not None:
        # A private copy of the kept rows, in their dtype (float32 stays float32).
        boxes = rows_where(boxes, keep)
        unchanged_since(rows, checksum, "wh", "autoanchor")
        checksum = None
        if weights is not None:
            weights = np.ascontiguousarray(weights[keep])
            if not weights.sum() > 0:
                raise ValueError("every box with a positive weight is smaller than 2 pixels on both sides")

    grid = as_grid(grid)
    if grid is not None and keep is not None:
        grid = grid.subset(keep)
    del keep
    n_fitted = int(boxes.shape[0])
    scale_range = None
    if scale is not None:
        scale_range = as_scale_range(scale)
        boxes, weights = scale_augment(boxes, scale_range, steps=scale_steps, sample_weight=weights)
        unchanged_since(rows, checksum, "wh", "autoanchor")
        checksum = None
        grid = _scaled_grid(grid, scale_range, scale_steps)

    km_anchors = _kmeans_stage(boxes, weights, k, n_init, tol, gen, init_sample, threads, progress)

    sample = _search_sample(boxes, weights, grid, gen, search_sample)
    s_boxes, s_weights, s_grid = (boxes, weights, grid) if sample is None else sample
    layout = _layout(s_boxes, s_weights, threads, checksum if sample is None else None, "autoanchor")
    ev = _evolve(
        km_anchors,
        s_boxes,
        s_weights,
        t,
        generations,
        mutation_prob,
        sigma,
        min_size,
        strategy,
        batch,
        resolve_seed(gen),
        threads,
        progress,
        callback,
        objective,
        iou_thr,
        iou_weighted,
        budget,
        s_grid,
        layout=layout,
    )
    # Every report is on all boxes: without a sample on the search's layout of them, with one on
    # the rows (read in place, or autoanchor's own copy), the sample's layout freed first.
    reports = layout if sample is None else None
    del layout, sample, s_boxes, s_weights, s_grid
    if reports is None and weights is None and grid is None:
        # All reports in one pass over blocks of the rows, as the chunked autoanchor makes them
        # (the same values bit for bit), with a float64 copy of one block per thread at a time.
        ex = _chunked.LocalExecutor([boxes], REPORT_BLOCK_ROWS, threads)
        (km_m, km_obj), (ev_m, ev_obj) = _chunked.report(
            ex, [km_anchors, ev.anchors], len(boxes), t, iou_thr, iou_weighted
        )
        kmeans, evolved = FitnessResult(*km_m, thr=t), FitnessResult(*ev_m, thr=t)
        objectives = [km_obj, ev_obj]
    else:
        on = boxes if reports is None else reports
        if objective == "fitness" and reports is not None:
            evolved = FitnessResult(fitness=ev.fitness, bpr=ev.bpr, aat=ev.aat, avg_iou=ev.avg_iou, thr=t)
        else:
            evolved = _metrics(ev.anchors, on, weights, t, threads)
        kmeans = _metrics(km_anchors, on, weights, t, threads)
        objectives = [
            _all_objectives(a, boxes, weights, t, iou_thr, iou_weighted, threads, grid, reports, fitness=m.fitness)
            for a, m in ((km_anchors, kmeans), (ev.anchors, evolved))
        ]
    result = AutoAnchorResult(
        anchors=ev.anchors,
        kmeans_anchors=km_anchors,
        kmeans=kmeans,
        evolved=evolved,
        history=ev.history,
        n_boxes=n_fitted,
        n_dropped=n_dropped,
        n_small=n_small,
        objective=objective,
        kmeans_objectives=objectives[0],
        evolved_objectives=objectives[1],
        scale=scale_range,
    )
    if reports is None:
        unchanged_since(rows, checksum, "wh", "autoanchor")
    return result
