"""Write anchors into the files detectors read them from, and read them back.

The format follows the file name:

========================  =====================================================================
``.yaml`` / ``.yml``      YOLOv5 model yaml: the top-level ``anchors:`` block of a
                          copy of the template (``--model``) is replaced, everything else
                          (comments included) is kept byte for byte. Without a template, a yaml
                          holding just the ``anchors:`` block.
``.cfg``                  darknet: the ``anchors=``, ``mask=`` and ``num=`` lines of every
                          ``[yolo]`` section of a copy of the template; without one, a snippet
                          of ``[yolo]`` sections to paste.
``.py``                   mmdetection: the ``base_sizes`` (and ``strides``) of the
                          ``YOLOAnchorGenerator`` in a copy of the template config; without one,
                          a ``prior_generator = dict(...)`` snippet.
``.json``                 ``{"anchors": [[[w, h], ...] per level], "strides": [...], ...}``.
========================  =====================================================================

Anchors are written rounded (:func:`round_anchors`); :func:`read_anchors` reads any of these
files back as per-level arrays, so what was written can be re-scored.

For SSD models, :func:`set_aspect_ratios` writes aspect ratios into the ``ssd_anchor_generator``
of a TensorFlow Object Detection API ``pipeline.config`` and :func:`config_image_size` reads its
input size.
"""

from __future__ import annotations

from ._formats import EXPORT_FORMATS, export_format, format_anchor_list, level_name, round_anchors
from ._read import ReadAnchors, parse_anchor_text, read_anchors
from ._tfconfig import config_aspect_ratios, config_image_size, set_aspect_ratios
from ._write import dumps_json, write_anchors

__all__ = [
    "EXPORT_FORMATS",
    "ReadAnchors",
    "config_aspect_ratios",
    "config_image_size",
    "dumps_json",
    "export_format",
    "format_anchor_list",
    "level_name",
    "parse_anchor_text",
    "read_anchors",
    "round_anchors",
    "set_aspect_ratios",
    "write_anchors",
]
