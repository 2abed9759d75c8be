"""fastanchor in the OpenMMLab anchor flow (mmyolo and mmdetection ``optimize_anchors.py``).

Their ``tools/analysis_tools/optimize_anchors.py`` builds the training dataset from a config and
hands it to an anchor optimizer class. :class:`FastAnchorOptimizer` takes the same constructor
arguments as their ``YOLOV5KMeansAnchorOptimizer`` / ``YOLOKMeansAnchorOptimizer`` (it follows
their ``BaseAnchorOptimizer``: ``dataset``, ``input_shape``, ``num_anchor_per_level``, ``logger``,
``device``, ``out_dir``), reads the boxes the same way, and writes the same
``anchor_optimize_result.json``. Replace the class name in the script::

    from fastanchor.integrations.mmdet import FastAnchorOptimizer
    optimizer = FastAnchorOptimizer(dataset=dataset, input_shape=input_shape,
                                    num_anchor_per_level=num_anchor_per_level, iters=args.iters,
                                    prior_match_thr=args.prior_match_thr, logger=logger,
                                    out_dir=args.out_dir)
    optimizer.optimize()

:func:`fastanchor.export.read_anchors` reads the result file back. Nothing here imports torch or
an OpenMMLab package.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, List, Optional, Sequence

import numpy as np

from .._evolve import autoanchor
from .._fileio import atomic_write
from .._fitness import anchor_fitness
from .._kmeans import kmeans_iou
from .._validation import as_float, as_int
from ._logging import warnings_to

__all__ = ["ALGORITHMS", "FastAnchorOptimizer", "RESULT_FILE"]

#: The file mmyolo's optimizer writes into ``out_dir``.
RESULT_FILE = "anchor_optimize_result.json"
#: ``"v5-k-means"``: IoU k-means refined on YOLOv5's fitness (:func:`fastanchor.autoanchor`), the
#: counterpart of mmyolo's ``--algorithm v5-k-means``; ``"k-means"``: IoU k-means alone
#: (:func:`fastanchor.kmeans_iou`), the counterpart of ``--algorithm k-means``.
ALGORITHMS = ("v5-k-means", "k-means")


class FastAnchorOptimizer:
    """An anchor optimizer for the OpenMMLab ``optimize_anchors.py`` flow, computed by fastanchor.

    Parameters
    ----------
    dataset : mmengine dataset
        Anything with ``len()`` and ``get_data_info(i)`` returning ``width``, ``height`` and
        ``instances`` (each with ``bbox`` = ``[x1, y1, x2, y2]``), as mmdet's and mmyolo's datasets.
    input_shape : sequence of int
        The model's input ``[width, height]``. As in mmyolo, each image is scaled so that its
        longer side fits: a box's width is multiplied by ``width / longer side`` and its height
        by ``height / longer side``.
    num_anchor_per_level : sequence of int, optional
        Anchors per level, finest level first (``[3, 3, 3]``), as mmyolo passes them.
    num_anchors : int, optional
        The total instead, as mmdetection's script passes it; the result file is then a flat
        list of ``[w, h]``, as mmdetection writes it.
    logger : logging.Logger
        Where progress and results go (mmengine's ``MMLogger`` is a ``logging.Logger``).
    device : str
        Accepted for compatibility; fastanchor runs on the CPU.
    out_dir : str, optional
        Where :meth:`save_result` writes ``anchor_optimize_result.json``.
    iters : int
        Generations of the mutation search ("v5-k-means"); ignored by "k-means".
    prior_match_thr : float
        YOLOv5's ``anchor_t`` (mmyolo's ``prior_match_thr``).
    mutation_args : (float, float)
        ``(probability, sigma)`` of the mutation search.
    augment_args : sequence of float
        Accepted for compatibility (mmyolo uses it only to report its metric).
    algorithm : {"v5-k-means", "k-means"}
    strategy : {"anchorwise", "yolov5"}
        The mutation search of :func:`fastanchor.evolve_anchors`.
    seed : int
        The same input and seed give the same anchors.
    """

    def __init__(
        self,
        dataset: Any,
        input_shape: Sequence[int],
        num_anchor_per_level: Optional[Sequence[int]] = None,
        logger: Optional[logging.Logger] = None,
        device: str = "cuda:0",
        out_dir: Optional[str] = None,
        iters: int = 1000,
        prior_match_thr: float = 4.0,
        mutation_args: Sequence[float] = (0.9, 0.1),
        augment_args: Sequence[float] = (0.9, 1.1),
        algorithm: str = "v5-k-means",
        strategy: str = "anchorwise",
        seed: int = 0,
        num_anchors: Optional[int] = None,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        shape = [as_float(v, "input_shape") for v in input_shape]
        if len(shape) != 2 or not all(v > 0 for v in shape):
            raise ValueError(f"input_shape must be [width, height] > 0, got {list(input_shape)}")
        if num_anchor_per_level is None:
            if num_anchors is None:
                raise TypeError("give num_anchor_per_level (mmyolo) or num_anchors (mmdetection)")
            per_level = [as_int(num_anchors, "num_anchors", minimum=1)]
        else:
            per_level = [as_int(v, "num_anchor_per_level", minimum=1) for v in num_anchor_per_level]
            if not per_level:
                raise ValueError("num_anchor_per_level must list at least one level")
            if num_anchors is not None and as_int(num_anchors, "num_anchors") != sum(per_level):
                raise ValueError(f"num_anchors={num_anchors} but num_anchor_per_level sums to {sum(per_level)}")
        self._flat = num_anchor_per_level is None
        if len(mutation_args) != 2:
            raise ValueError(f"mutation_args must be (probability, sigma), got {list(mutation_args)}")
        self.dataset = dataset
        self.input_shape = list(input_shape)
        self.num_anchor_per_level = per_level
        self.num_anchors = sum(per_level)
        self.logger = logger if logger is not None else logging.getLogger("fastanchor")
        self.device = device
        self.out_dir = out_dir
        self.iters = as_int(iters, "iters", minimum=0)
        self.prior_match_thr = as_float(prior_match_thr, "prior_match_thr")
        self.mutation_prob, self.mutation_sigma = (float(v) for v in mutation_args)
        self.augment_args = list(augment_args)
        self.algorithm = algorithm
        self.strategy = strategy
        self.seed = seed
        bbox_whs, img_shapes = self.get_whs_and_shapes()
        ratios = img_shapes.max(1, keepdims=True) / np.array([shape])
        self.bbox_whs = bbox_whs / ratios

    def get_whs_and_shapes(self):
        """Box widths and heights and their images' sizes, ``(N, 2)`` each, ``[width, height]``.

        Boxes with a non-positive or non-finite side are left out (the logger counts them).
        """
        self.logger.info("Collecting bboxes from annotation...")
        whs: List[np.ndarray] = []
        shapes: List[np.ndarray] = []
        for idx in range(len(self.dataset)):
            info = self.dataset.get_data_info(idx)
            img = np.array([info["width"], info["height"]], dtype=np.float64)
            for j, inst in enumerate(info.get("instances", [])):
                bbox = np.asarray(inst["bbox"], dtype=np.float64)
                if bbox.shape != (4,):
                    raise ValueError(f"image {idx}, instance {j}: bbox must be [x1, y1, x2, y2], got {inst['bbox']!r}")
                whs.append(bbox[2:4] - bbox[0:2])
                shapes.append(img)
        wh = np.array(whs, dtype=np.float64).reshape(-1, 2)
        img_shapes = np.array(shapes, dtype=np.float64).reshape(-1, 2)
        ok = np.isfinite(wh).all(1) & (wh > 0).all(1) & np.isfinite(img_shapes).all(1) & (img_shapes > 0).all(1)
        if not ok.all():
            self.logger.warning(
                f"{int((~ok).sum())} of {len(wh)} boxes have a zero, negative or non-finite size "
                "(or image size) and are left out"
            )
            wh, img_shapes = wh[ok], img_shapes[ok]
        if len(wh) == 0:
            raise ValueError("the dataset has no box with a positive width and height")
        self.logger.info(f"Collected {wh.shape[0]} bboxes.")
        return wh, img_shapes

    def optimize(self) -> np.ndarray:
        """Compute the anchors, log their metrics, save them to ``out_dir``; return them.

        Returns
        -------
        ndarray (num_anchors, 2) float64
            Sorted by area, split over the levels in that order by :meth:`save_result`.
        """
        t0 = time.perf_counter()
        self.logger.info(f"fastanchor: {self.algorithm} for {self.num_anchors} anchors on {len(self.bbox_whs)} boxes")
        with warnings_to(self.logger, "fastanchor: "):
            if self.algorithm == "k-means":
                anchors = kmeans_iou(self.bbox_whs, self.num_anchors, seed=self.seed).anchors
            else:
                anchors = autoanchor(
                    self.bbox_whs,
                    self.num_anchors,
                    thr=self.prior_match_thr,
                    generations=self.iters,
                    mutation_prob=self.mutation_prob,
                    sigma=self.mutation_sigma,
                    strategy=self.strategy,
                    seed=self.seed,
                ).anchors
        fit = anchor_fitness(anchors, self.bbox_whs, thr=self.prior_match_thr)
        self.logger.info(
            f"fastanchor: fitness {fit.fitness:.4f}, {fit.bpr:.4f} best possible recall, {fit.aat:.2f} anchors "
            f"past thr, average IoU {fit.avg_iou:.4f} ({time.perf_counter() - t0:.2f} s)"
        )
        self.save_result(anchors, self.out_dir)
        return anchors

    def save_result(self, anchors: Any, path: Optional[str] = None) -> Optional[str]:
        """Log the anchors per level, rounded to integers, and write them to ``path`` (a folder).

        The file is ``anchor_optimize_result.json`` as mmyolo writes it (a list of levels, each a
        list of ``[w, h]``) or, with ``num_anchors``, as mmdetection does (one list of ``[w, h]``),
        written atomically. Returns its path, or None when ``path`` is None.
        """
        a = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
        if a.shape[0] != self.num_anchors:
            raise ValueError(f"expected {self.num_anchors} anchors, got {a.shape[0]}")
        levels: List[Any] = []
        start = 0
        for num in self.num_anchor_per_level:
            levels.append([[int(round(w)), int(round(h))] for w, h in a[start : start + num]])
            start += num
        if self._flat:
            levels = levels[0]
        self.logger.info(f"Anchor optimize result:{levels}")
        if not path:
            return None
        os.makedirs(path, exist_ok=True)
        target = os.path.join(path, RESULT_FILE)
        atomic_write(target, json.dumps(levels))
        self.logger.info(f"Result saved in {target}")
        return target
