"""Type stub of the private compiled core. Use the public fastanchor API instead."""

from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import numpy.typing as npt

def max_threads() -> int: ...
def has_openmp() -> bool: ...

# ---- SIMD level of the hand-written kernels (for tests: tests/simd.py) ----
def _simd_level() -> str: ...
def _has_avx2() -> bool: ...
def _set_simd_level(level: str) -> str: ...
def wh_iou(
    wh1: npt.NDArray[np.float64], wh2: npt.NDArray[np.float64], out_float32: bool, n_threads: int
) -> np.ndarray: ...
def assign(anchors: npt.NDArray[np.float64], wh: npt.NDArray[np.float64], n_threads: int) -> npt.NDArray[np.int32]: ...
def avg_iou(
    anchors: npt.NDArray[np.float64],
    wh: npt.NDArray[np.float64],
    weights: Optional[npt.NDArray[np.float64]],
    n_threads: int,
) -> float: ...
def kmeans_iou(
    wh: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    weights: Optional[npt.NDArray[np.float64]],
    k: int,
    init: str,
    init_anchors: Optional[npt.NDArray[np.float64]],
    update: str,
    n_init: int,
    max_iter: int,
    tol: float,
    seed: int,
    n_threads: int,
    callback: Optional[Callable[[str, int, int], Any]],
    skip_below: float = ...,
) -> dict[str, Any]: ...
def kmeans_log(
    wh: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    weights: Optional[npt.NDArray[np.float64]],
    k: int,
    init: str,
    init_anchors: Optional[npt.NDArray[np.float64]],
    n_init: int,
    max_iter: int,
    tol: float,
    seed: int,
    n_threads: int,
    callback: Optional[Callable[[str, int, int], Any]],
) -> dict[str, Any]: ...
def log_assign(
    log_anchors: npt.NDArray[np.float64],
    wh: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    n_threads: int,
) -> npt.NDArray[np.int32]: ...
def lloyd_trace(
    wh: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    weights: Optional[npt.NDArray[np.float64]],
    sets: npt.NDArray[np.float64],
    update: str,
    n_threads: int,
) -> dict[str, Any]: ...
def _lloyd_step_chunks(
    wh: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    anchors: npt.NDArray[np.float64],
    mode: str,
    bounds: npt.NDArray[np.int64],
    order: npt.NDArray[np.int64],
    key_lo: int,
    shift: int,
    bins: int,
) -> dict[str, Any]: ...

# The chunk kernels of fastanchor._chunked (out of core, fastanchor.dask).
def _chunk_lloyd(
    wh: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    anchors: npt.NDArray[np.float64],
    prev_anchors: npt.NDArray[np.float64] | None,
    mode: str,
    key_lo_w: int,
    key_lo_h: int,
    shift_w: int,
    shift_h: int,
    bins: int,
    want_labels: bool,
    window_lo: npt.NDArray[np.uint32] | None = None,
    window_hi: npt.NDArray[np.uint32] | None = None,
    window_cap: int = 0,
    weights: npt.NDArray[np.float64] | None = None,
    weight_shift: int = 0,
) -> dict[str, Any]: ...

class _ChunkState:
    @property
    def exact(self) -> bool: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def n(self) -> int: ...
    def step(
        self,
        anchors: npt.NDArray[np.float64],
        window_lo: npt.NDArray[np.uint32] | None = None,
        window_hi: npt.NDArray[np.uint32] | None = None,
        window_cap: int = 0,
    ) -> dict[str, Any]: ...
    def select(
        self,
        first: npt.NDArray[np.int64],
        last: npt.NDArray[np.int64],
        mode: npt.NDArray[np.int8],
        shift: npt.NDArray[np.int64],
        bins: int,
    ) -> dict[str, Any]: ...
    def labels(self) -> npt.NDArray[np.int32]: ...

def _chunk_state(
    wh: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    k: int,
    mode: str,
    key_lo_w: int,
    key_lo_h: int,
    shift_w: int,
    shift_h: int,
    bins: int,
    weights: npt.NDArray[np.float64] | None = None,
    weight_shift: int = 0,
) -> _ChunkState: ...
def _chunk_select(
    wh: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    labels: Optional[npt.NDArray[np.int32]],
    anchors: npt.NDArray[np.float64],
    first: npt.NDArray[np.int64],
    last: npt.NDArray[np.int64],
    mode: npt.NDArray[np.int8],
    shift: npt.NDArray[np.int64],
    bins: int,
    weights: npt.NDArray[np.float64] | None = None,
    weight_shift: int = 0,
) -> dict[str, Any]: ...
def _merge_windows(
    runs: Sequence[Sequence[npt.NDArray[Any]]],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int32]]: ...
def _chunk_worst(
    wh: npt.NDArray[np.float32] | npt.NDArray[np.float64], anchors: npt.NDArray[np.float64], m: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]: ...
def _chunk_avg_iou(
    wh: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    anchors: npt.NDArray[np.float64],
    offset: int,
    n_total: int,
    weights: Optional[npt.NDArray[np.float64]] = None,
) -> dict[str, Any]: ...
def _chunk_fitness(
    wh: npt.NDArray[np.float64],
    anchors: npt.NDArray[np.float64],
    thr: float,
    weights: Optional[npt.NDArray[np.float64]] = None,
    top: float = 1.0,
) -> npt.NDArray[np.uint64]: ...
def _chunk_weight_total(weights: npt.NDArray[np.float64], top: float) -> npt.NDArray[np.uint64]: ...
def _first_distinct(seq: npt.NDArray[np.int64], m: int) -> npt.NDArray[np.int64]: ...
def _sorted_indices(a: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]: ...
def _chunk_scan_rows(
    wh: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    min_side: float,
    max_side: float,
    warn_below: float,
    drop_below: float,
) -> Dict[str, Any]: ...
def _chunk_kept_rows(
    wh: npt.NDArray[np.float32] | npt.NDArray[np.float64], drop_below: float, count: int
) -> npt.NDArray[np.float32] | npt.NDArray[np.float64]: ...
def _chunk_report(
    wh: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    anchor_sets: npt.NDArray[np.float64],
    thr: float,
    iou_thr: float,
    iou_weighted: bool,
    objectives: Sequence[str],
    skip_below: float,
) -> Dict[str, npt.NDArray[np.uint64]]: ...

class _SearchLayout:
    @property
    def nbytes(self) -> int: ...
    @property
    def n(self) -> int: ...

def _search_layout(
    wh: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    weights: Optional[npt.NDArray[np.float64]] = None,
    n_threads: int = 1,
    top: float = 0.0,
) -> _SearchLayout: ...
def _layout_metrics(
    layout: _SearchLayout, anchors: npt.NDArray[np.float64], thr: float, n_threads: int
) -> tuple[float, float, float, float]: ...
def _layout_objective(
    layout: _SearchLayout,
    anchors: npt.NDArray[np.float64],
    objective: str,
    thr: float,
    iou_thr: float,
    iou_weighted: bool,
    n_threads: int,
) -> float: ...
def _chunk_objective_batch(
    wh: Optional[npt.NDArray[np.float64]],
    layout: Optional[_SearchLayout],
    candidates: npt.NDArray[np.float64],
    objective: str,
    thr: float,
    iou_thr: float,
    iou_weighted: bool,
    n_threads: int,
    weights: Optional[npt.NDArray[np.float64]] = None,
    top: float = 1.0,
) -> npt.NDArray[np.uint64]: ...
def _evolve_scored(
    init: npt.NDArray[np.float64],
    score: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]],
    thr: float,
    generations: int,
    mutation_prob: float,
    sigma: float,
    min_size: float,
    strategy: str,
    batch: int,
    seed: int,
    progress: Optional[Callable[[int, float], Any]],
    callback: Optional[Callable[[int, float, npt.NDArray[np.float64]], Any]],
    objective: str,
    iou_thr: float,
    iou_weighted: bool,
    extra_generations: int,
    restart_length: int,
    restart_sigma: float,
) -> dict[str, Any]: ...
def _chunk_init(
    wh: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    k: int,
    init: str,
    seed: int,
    n_threads: int,
    run: int = 0,
    weights: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.float64]: ...
def anchor_fitness(
    anchors: npt.NDArray[np.float64],
    wh: npt.NDArray[np.float64],
    weights: Optional[npt.NDArray[np.float64]],
    thr: float,
    n_threads: int,
) -> tuple[float, float, float, float]: ...
def evolve_anchors(
    layout: _SearchLayout,
    weights: Optional[npt.NDArray[np.float64]],
    init: npt.NDArray[np.float64],
    thr: float,
    generations: int,
    mutation_prob: float,
    sigma: float,
    min_size: float,
    strategy: str,
    batch: int,
    seed: int,
    n_threads: int,
    progress: Optional[Callable[[int, float], Any]],
    callback: Optional[Callable[[int, float, npt.NDArray[np.float64]], Any]],
    objective: str = "fitness",
    iou_thr: float = 0.5,
    iou_weighted: bool = False,
    extra_generations: int = 0,
    restart_length: int = 200,
    restart_sigma: float = 0.3,
    grid_boxes: Optional[npt.NDArray[np.float64]] = None,
    grid_image_wh: Optional[npt.NDArray[np.float64]] = None,
    grid_strides: Optional[npt.NDArray[np.float64]] = None,
) -> dict[str, Any]: ...
def anchor_objective(
    anchors: npt.NDArray[np.float64],
    wh: npt.NDArray[np.float64],
    weights: Optional[npt.NDArray[np.float64]],
    objective: str,
    thr: float,
    iou_thr: float,
    iou_weighted: bool,
    n_threads: int,
    grid_boxes: Optional[npt.NDArray[np.float64]] = None,
    grid_image_wh: Optional[npt.NDArray[np.float64]] = None,
    grid_strides: Optional[npt.NDArray[np.float64]] = None,
) -> float: ...

# ---- SSD / corner boxes ----
def box_iou(
    boxes1: npt.NDArray[np.float64], boxes2: npt.NDArray[np.float64], out_float32: bool, n_threads: int
) -> np.ndarray: ...
def match_priors(
    priors: npt.NDArray[np.float64],
    gt: npt.NDArray[np.float64],
    offsets: npt.NDArray[np.int64],
    threshold: float,
    n_threads: int,
    max_stored_cells: int = ...,
) -> npt.NDArray[np.int32]: ...
def grid_best_iou(
    boxes: npt.NDArray[np.float64],
    image_wh: npt.NDArray[np.float64],
    levels: list[tuple[float, npt.NDArray[np.float64]]],
    n_threads: int,
) -> npt.NDArray[np.float64]: ...
