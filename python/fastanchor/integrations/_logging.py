"""Warnings raised inside a framework's run, re-routed to the framework's logger."""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterator


@contextlib.contextmanager
def warnings_to(logger: logging.Logger, prefix: str = "") -> Iterator[None]:
    """Record every warning raised in the block and log it as a warning when the block ends.

    Frameworks silence warnings (YOLOv5 ignores every ``UserWarning``) or leave them unseen among
    their log lines; their logger is where users look.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        logger.warning(f"{prefix}WARNING {w.message}")
