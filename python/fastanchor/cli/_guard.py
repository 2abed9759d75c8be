"""Checks of the files a command will write, made before any work: never over an input.

The rule, for ``--out`` and ``--plot``:

- a file that does not exist yet is always fine (its folder is created when it is written);
- an existing file is refused when it is an input of the run: the dataset (the file given, or
  any file inside the dataset folder given, such as its data.yaml, COCO json, XML or label
  files), the ``--model``, the ``--config``, or the other output;
- the one exception is updating a model or config in place: ``--out`` equal to ``--model``
  (``anchors``) or to ``--config`` (``ssd``) writes a copy of that file with new anchors over it,
  atomically (a failure part way leaves it as it was);
- something that is not a regular file (a folder, a FIFO, a device) is refused.

A refusal is a command-line error (exit status 2) that names the option and the input.
"""

from __future__ import annotations

import argparse
import os
import stat
from typing import List, Optional, Tuple

from .._fileio import same_file, sanitize


def _inside(path: str, folder: str) -> bool:
    try:
        real, top = os.path.realpath(path), os.path.realpath(folder)
    except (OSError, ValueError):
        return False
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def _inputs(args: argparse.Namespace) -> List[Tuple[str, str]]:
    """(option, path) of every input of the run that exists."""
    out = []
    dataset = getattr(args, "dataset", None)
    if dataset:
        out.append(("the dataset", dataset))
    for option in ("model", "config"):
        value = getattr(args, option, None)
        if value:
            out.append((f"--{option}", value))
    return out


def refusal(
    args: argparse.Namespace,
    option: str,
    path: Optional[str],
    other: Optional[Tuple[str, str]] = None,
    in_place: Optional[str] = None,
) -> Optional[str]:
    """Why ``path`` (the value of ``option``) must not be written, or None when it may be.
    ``in_place`` names the input option it may update in place; ``other`` is the other output."""
    if not path:
        return None
    shown = sanitize(path, 300)
    if not os.path.lexists(path):
        parent = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            return f"{shown}: {sanitize(parent, 300)} is not a folder"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"{shown}: the folder {sanitize(parent, 300)} is not writable"
        if other is not None and os.path.abspath(other[1]) == os.path.abspath(path):
            return f"{shown} is also {other[0]}: give each output its own file"
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:  # a broken or looping link
        return f"{shown} cannot be written over ({exc.strerror or exc})"
    if not stat.S_ISREG(mode):
        return f"{shown} exists and is not a regular file"
    if other is not None and same_file(other[1], path):
        return f"{shown} is also {other[0]}: give each output its own file"
    for what, source in _inputs(args):
        if what == in_place and same_file(source, path):
            continue  # updating the model (or config) in place, atomically
        if same_file(source, path):
            return f"{shown} is {what} of this run: writing there would destroy it; choose another file"
        if what == "the dataset" and os.path.isdir(source) and _inside(path, source):
            return (
                f"{shown} is inside the dataset folder {sanitize(source, 300)}, an input of this run: "
                f"choose a file outside it"
            )
    return None


def check_outputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with status 2 (``parser.error``) when ``--out`` or ``--plot`` would be written over an
    input of the run, or cannot be written at all."""
    out = getattr(args, "out", None)
    plot = getattr(args, "plot", None)
    in_place = "--model" if args.command == "anchors" else "--config"
    why = refusal(args, "--out", out, ("--plot", plot) if plot else None, in_place)
    if why:
        parser.error(f"argument --out: {why}")
    why = refusal(args, "--plot", plot, ("--out", out) if out else None)
    if why:
        parser.error(f"argument --plot: {why}")
