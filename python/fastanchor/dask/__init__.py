"""Dask support: load annotation files in parallel (``pip install "fastanchor[dask]"``)."""

from ._loading import load, load_boxes

__all__ = ["load", "load_boxes"]
