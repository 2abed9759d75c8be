"""fastanchor inside YOLOv5 (the ``yolov5`` package and YOLOv5-style forks).

>>> import fastanchor.integrations.yolov5 as fa_yolov5
>>> fa_yolov5.patch()                      # YOLOv5's check_anchors now runs fastanchor
>>> with fa_yolov5.patch():                # ... or only inside the block
...     train.run(data="data.yaml", cfg="yolov5s.yaml", weights="")

:func:`kmean_anchors` has the signature and return convention of YOLOv5's
``utils.autoanchor.kmean_anchors``: float32 anchors ``(n, 2)`` in pixels at ``img_size``, sorted
by area. YOLOv5's ``check_anchors`` keeps deciding when anchors are recomputed (best possible
recall below 0.98) and keeps them only when they have a higher best possible recall than the
model's; :func:`patch` only replaces the function it calls. Nothing here imports torch.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from types import ModuleType
from typing import Any, List, Optional, Tuple, Union

import numpy as np

from .._evolve import DROP_BELOW, STRATEGIES, autoanchor, evolve_anchors
from .._fitness import anchor_fitness
from .._validation import as_float, as_int, distinct_rows_at_least
from ._logging import warnings_to

__all__ = ["HOST_MODULES", "Patch", "dataset_wh", "kmean_anchors", "patch"]

#: Where :func:`patch` looks for YOLOv5's autoanchor module, in order: the ``yolov5`` package,
#: then a clone of the YOLOv5 repository (or a fork) whose root is on ``sys.path``.
HOST_MODULES = ("yolov5.utils.autoanchor", "utils.autoanchor")

_FALLBACK_PREFIX = "AutoAnchor: "


def _host_logger(host: Optional[ModuleType]) -> Tuple[logging.Logger, str]:
    """The host's LOGGER and message prefix; fastanchor's own logger when there is no host."""
    if host is None:
        for name in HOST_MODULES:
            mod = sys.modules.get(name)
            if mod is not None and isinstance(getattr(mod, "LOGGER", None), logging.Logger):
                host = mod
                break
    logger = getattr(host, "LOGGER", None) if host is not None else None
    if not isinstance(logger, logging.Logger):
        logger = logging.getLogger("fastanchor")
    prefix = getattr(host, "PREFIX", _FALLBACK_PREFIX) if host is not None else _FALLBACK_PREFIX
    return logger, str(prefix)


def dataset_wh(dataset: Any, img_size: float) -> np.ndarray:
    """Box widths and heights as YOLOv5's autoanchor sees them, from a YOLOv5 dataset object.

    Every image is letterboxed: scaled so that its longest side is ``img_size``, exactly as
    ``img_size * dataset.shapes / dataset.shapes.max(1, keepdims=True)`` in YOLOv5.

    Parameters
    ----------
    dataset : object
        Anything with ``shapes`` (M, 2: image width, height in pixels) and ``labels`` (M arrays
        of rows ``class, x, y, w, h`` with normalized sizes), as YOLOv5's ``LoadImagesAndLabels``.
    img_size : float
        The training image size (> 0).

    Returns
    -------
    ndarray (N, 2) float64
        Every label's width and height in pixels, in image order (degenerate boxes included).
    """
    size = as_float(img_size, "img_size")
    if not size > 0:
        raise ValueError(f"img_size must be > 0, got {img_size!r}")
    for attr in ("shapes", "labels"):
        if not hasattr(dataset, attr):
            raise TypeError(
                f"dataset must be a path or a YOLOv5 dataset with .shapes and .labels; "
                f"{type(dataset).__name__} has no .{attr}"
            )
    shapes = np.asarray(dataset.shapes, dtype=np.float64)
    labels = list(dataset.labels)
    if shapes.ndim != 2 or shapes.shape[1] != 2:
        raise ValueError(f"dataset.shapes must have shape (images, 2), got {shapes.shape}")
    if len(labels) != shapes.shape[0]:
        raise ValueError(f"dataset.shapes has {shapes.shape[0]} images but dataset.labels {len(labels)}")
    bad = np.flatnonzero(~(np.isfinite(shapes).all(1) & (shapes > 0).all(1)))
    if bad.size:
        raise ValueError(f"dataset.shapes[{bad[0]}] = {shapes[bad[0]].tolist()} is not a positive image size")
    scaled = size * shapes / shapes.max(1, keepdims=True)
    parts = []
    for i, (s, lab) in enumerate(zip(scaled, labels)):
        lab = np.asarray(lab, dtype=np.float64)
        if lab.size == 0:
            continue
        if lab.ndim != 2 or lab.shape[1] < 5:
            raise ValueError(f"dataset.labels[{i}] must have rows of (class, x, y, w, h), got shape {lab.shape}")
        parts.append(lab[:, 3:5] * s)
    return np.concatenate(parts) if parts else np.zeros((0, 2))


def _load_path(path: str, img_size: float) -> np.ndarray:
    from .. import datasets

    return datasets.load(path).letterbox(img_size)


def _fmt_anchors(anchors: np.ndarray) -> str:
    return ", ".join(f"{w:.1f},{h:.1f}" for w, h in anchors)


def kmean_anchors(
    dataset: Any = "./data/coco128.yaml",
    n: int = 9,
    img_size: int = 640,
    thr: float = 4.0,
    gen: int = 1000,
    verbose: bool = True,
    *,
    seed: Optional[int] = None,
    strategy: str = "anchorwise",
    logger: Optional[logging.Logger] = None,
    _host: Optional[ModuleType] = None,
) -> np.ndarray:
    """YOLOv5's ``kmean_anchors``, computed by fastanchor (IoU k-means, then the mutation search).

    Same signature, conventions and return value as ``yolov5.utils.autoanchor.kmean_anchors``:
    boxes are taken from ``dataset.shapes`` and ``dataset.labels`` letterboxed to ``img_size``;
    boxes with a side below 3 pixels are reported, those below 2 pixels on both sides dropped;
    ``n`` anchors are fitted by k-means and refined for ``gen`` generations on YOLOv5's fitness.
    Messages go to the host's logger (YOLOv5's ``LOGGER``), never to :mod:`warnings`, which
    YOLOv5 silences.

    Parameters
    ----------
    dataset : str or object
        A YOLOv5 dataset (``LoadImagesAndLabels`` or anything with ``shapes`` and ``labels``), or
        a dataset path (read with :func:`fastanchor.datasets.load`: a YOLO data.yaml or folder,
        VOC or COCO).
    n : int
        Number of anchors (``model.model[-1].anchors.numel() // 2``; 9 for three levels).
    img_size : int
        The training image size.
    thr : float
        YOLOv5's ``hyp['anchor_t']`` (> 1).
    gen : int
        Generations of the mutation search (>= 0).
    verbose : bool
        Also log the k-means anchors and the search's progress (the final anchors are always
        logged, as YOLOv5 does).
    seed : int, optional
        Seeds k-means and the search. Default: drawn from numpy's global generator, which
        YOLOv5's ``init_seeds`` seeds, so a seeded YOLOv5 run stays reproducible.
    strategy : {"anchorwise", "yolov5"}
        The mutation search (see :func:`fastanchor.evolve_anchors`).
    logger : logging.Logger, optional
        Where messages go; default: the host's ``LOGGER`` (YOLOv5's ``"yolov5"`` logger), else
        the ``"fastanchor"`` logger.

    Returns
    -------
    ndarray (n, 2) float32
        Anchor widths and heights in pixels at ``img_size``, sorted by area ascending.

    Raises
    ------
    ValueError
        When the dataset has no usable box (every box degenerate or below 2 pixels).
    """
    n = as_int(n, "n", minimum=1)
    size = as_float(img_size, "img_size")
    if not size > 0:
        raise ValueError(f"img_size must be > 0, got {img_size!r}")
    gen = as_int(gen, "gen", minimum=0)
    if not (isinstance(strategy, str) and strategy in STRATEGIES):
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    host_logger, prefix = _host_logger(_host)
    log = logger if logger is not None else host_logger
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))  # noqa: NPY002 - the global RNG that YOLOv5 init_seeds() seeds
    t0 = time.perf_counter()

    wh0 = _load_path(dataset, size) if isinstance(dataset, str) else dataset_wh(dataset, size)
    valid = np.isfinite(wh0).all(1) & (wh0 > 0).all(1)
    if not valid.all():
        log.info(f"{prefix}{int((~valid).sum())} of {len(wh0)} labels have a zero or negative size; not fitted")
        wh0 = wh0[valid]
    if len(wh0) == 0:
        raise ValueError("the dataset has no label with a positive width and height: no anchors to fit")
    wh = wh0[(wh0 >= DROP_BELOW).any(1)]
    if len(wh) == 0:
        raise ValueError(f"all {len(wh0)} labels are below {DROP_BELOW:g} pixels on both sides at img_size={size:g}")

    with warnings_to(log, prefix):
        if distinct_rows_at_least(wh, n) >= n:
            log.info(f"{prefix}fastanchor: k-means and {strategy} search for {n} anchors on {len(wh)} points...")
            res = autoanchor(wh0, n, thr=thr, generations=gen, strategy=strategy, seed=seed, progress=verbose)
            anchors, start = res.anchors, res.kmeans
            if verbose:
                log.info(f"{prefix}k-means: fitness {start.fitness:.4f}, {_fmt_anchors(res.kmeans_anchors)}")
        else:
            # YOLOv5's own fallback when there are fewer distinct boxes than anchors: random start
            log.warning(f"{prefix}WARNING fewer distinct boxes than {n} anchors: starting from random anchors")
            rng = np.random.default_rng(seed)
            init = np.sort(rng.random(2 * n)).reshape(n, 2) * size
            ev = evolve_anchors(init, wh, thr=thr, generations=gen, strategy=strategy, seed=seed, progress=verbose)
            anchors = ev.anchors

    fit = anchor_fitness(anchors, wh0, thr=thr)
    log.info(
        f"{prefix}fastanchor thr={1 / fit.thr:.2f}: {fit.bpr:.4f} best possible recall, "
        f"{fit.aat:.2f} anchors past thr, fitness {fit.fitness:.4f}, avg IoU {fit.avg_iou:.3f} "
        f"(n={n}, img_size={size:g}, {time.perf_counter() - t0:.2f} s): {_fmt_anchors(anchors)}"
    )
    return np.ascontiguousarray(anchors, dtype=np.float32)


def _resolve_hosts(module: Union[None, str, ModuleType, List[Any], Tuple[Any, ...]]) -> List[ModuleType]:
    if isinstance(module, (list, tuple)):
        out: List[ModuleType] = []
        for m in module:
            out.extend(_resolve_hosts(m))
        return out
    if isinstance(module, ModuleType):
        mods = [module]
    elif isinstance(module, str):
        mods = [importlib.import_module(module)]
    elif module is None:
        mods = [sys.modules[name] for name in HOST_MODULES if name in sys.modules]
        if not mods:
            try:
                mods = [importlib.import_module(HOST_MODULES[0])]
            except ImportError as exc:
                raise ImportError(
                    "patch() found no YOLOv5: install the yolov5 package (pip install fastanchor[yolov5]), or "
                    "import your YOLOv5 clone's utils.autoanchor first, or pass it: patch(module=...)"
                ) from exc
    else:
        raise TypeError(f"module must be a module, a module name or None, got {type(module).__name__}")
    for m in mods:
        if not (callable(getattr(m, "kmean_anchors", None)) and callable(getattr(m, "check_anchors", None))):
            raise TypeError(
                f"{m.__name__} is not a YOLOv5 autoanchor module (it needs kmean_anchors and check_anchors)"
            )
    return mods


class Patch:
    """YOLOv5's autoanchor running fastanchor: returned by :func:`patch`, already installed.

    Use it as a context manager to restore YOLOv5's own function on exit, or call
    :meth:`undo`. Attributes: ``modules`` (the patched modules) and ``options`` (the keyword
    arguments passed to :func:`kmean_anchors`).
    """

    def __init__(self, modules: List[ModuleType], options: dict) -> None:
        self.modules = modules
        self.options = options
        self._saved: List[Tuple[ModuleType, Any]] = []
        for m in modules:
            self._saved.append((m, m.kmean_anchors))
            m.kmean_anchors = self._bound(m)

    def _bound(self, host: ModuleType) -> Any:
        options = self.options

        def kmean_anchors_fastanchor(
            dataset: Any = "./data/coco128.yaml",
            n: int = 9,
            img_size: int = 640,
            thr: float = 4.0,
            gen: int = 1000,
            verbose: bool = True,
        ) -> np.ndarray:
            return kmean_anchors(dataset, n, img_size, thr, gen, verbose, _host=host, **options)

        kmean_anchors_fastanchor.__doc__ = kmean_anchors.__doc__
        kmean_anchors_fastanchor.fastanchor_patch = self  # type: ignore[attr-defined]
        return kmean_anchors_fastanchor

    def undo(self) -> None:
        """Restore the functions that were there before (idempotent)."""
        while self._saved:
            m, original = self._saved.pop()
            m.kmean_anchors = original

    def __enter__(self) -> Patch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.undo()

    def __repr__(self) -> str:
        state = "installed" if self._saved else "undone"
        return f"Patch({', '.join(m.__name__ for m in self.modules)}: {state})"


def patch(module: Any = None, *, seed: Optional[int] = None, strategy: str = "anchorwise") -> Patch:
    """Make YOLOv5's ``check_anchors`` (run by ``train.py``) compute anchors with fastanchor.

    Replaces ``kmean_anchors`` in YOLOv5's autoanchor module by :func:`kmean_anchors`, reporting
    through that module's ``LOGGER``. Works as a one-liner (``patch()``) and as a context
    manager (``with patch(): ...`` restores YOLOv5's function on exit).

    Parameters
    ----------
    module : module, str, list or None
        The autoanchor module(s) to patch. Default: every one already imported among
        :data:`HOST_MODULES` (``yolov5.utils.autoanchor``, a clone's ``utils.autoanchor``), else
        ``yolov5.utils.autoanchor`` imported now.
    seed, strategy
        Passed to :func:`kmean_anchors` on every call.

    Returns
    -------
    Patch
        Installed; a context manager.
    """
    if not (isinstance(strategy, str) and strategy in STRATEGIES):
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if seed is not None:
        seed = as_int(seed, "seed", minimum=0)
    return Patch(_resolve_hosts(module), {"seed": seed, "strategy": strategy})
