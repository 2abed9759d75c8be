"""fastanchor over Dask: exact k-means, the mutation search, autoanchor, average IoU and anchor
fitness of boxes held in a ``dask.array`` of shape (N, 2) chunked by rows or a Dask DataFrame with
width and height columns, with the results of the in-memory functions, bit for bit (see :doc:`/guides/scale`); and the
dataset loaders run in parallel over many annotation files (see :doc:`/guides/loading-at-scale`).

Needs Dask: ``pip install "fastanchor[dask]"``.
"""

from __future__ import annotations

try:
    import dask as _dask  # noqa: F401
    import dask.array as _da  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without dask installed
    raise ImportError(
        'fastanchor.dask needs Dask: install it with `pip install "fastanchor[dask]"` '
        "(the out-of-core functions without Dask are in fastanchor.out_of_core)"
    ) from exc

from ._api import anchor_fitness, as_dask_rows, autoanchor, avg_iou, evolve_anchors, kmeans_iou
from ._loading import load, load_boxes

__all__ = [
    "anchor_fitness",
    "as_dask_rows",
    "autoanchor",
    "avg_iou",
    "evolve_anchors",
    "kmeans_iou",
    "load",
    "load_boxes",
]
