"""The SIMD level of the compiled core's hand-written kernels, for tests that run both forms."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from fastanchor import _core


@contextlib.contextmanager
def simd_level(level: str) -> Iterator[None]:
    """Run the block with the core's hand-written kernels at `level`.

    Parameters
    ----------
    level : {"auto", "avx2", "portable"}
        ``"portable"`` runs the portable twin of every hand-written kernel even where the AVX2 one
        would run; ``"auto"`` the best the CPU has. The level is process-wide and read by each
        operation when it starts; the previous level is restored on exit.
    """
    previous = _core._set_simd_level(level)
    try:
        yield
    finally:
        _core._set_simd_level(previous)


def portable(enabled: bool = True) -> contextlib.AbstractContextManager[None]:
    """``simd_level("portable")`` when `enabled`, else a block that changes nothing."""
    return simd_level("portable") if enabled else contextlib.nullcontext()
