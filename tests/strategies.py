"""hypothesis strategies for box arrays: ties and duplicates as well as continuous values."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# Small integers make exact IoU ties, duplicate boxes and empty clusters common.
small_ints = st.integers(1, 8).map(float)
# Continuous sizes over six orders of magnitude.
log_floats = st.floats(-6.0, 6.0, allow_nan=False).map(lambda e: float(np.exp(e)))
# Pixel-like sizes.
pixels = st.floats(1.0, 640.0, allow_nan=False, allow_subnormal=False)

sides = st.one_of(small_ints, log_floats, pixels)


@st.composite
def wh_arrays(draw, min_rows: int = 1, max_rows: int = 60, elements=None):
    n = draw(st.integers(min_rows, max_rows))
    elems = elements if elements is not None else draw(st.sampled_from([small_ints, log_floats, pixels]))
    return draw(hnp.arrays(np.float64, (n, 2), elements=elems))


def n_distinct(wh: np.ndarray) -> int:
    return int(np.unique(wh, axis=0).shape[0])


@st.composite
def boxes_and_k(draw, max_rows: int = 60, max_k: int = 7):
    wh = draw(wh_arrays(min_rows=1, max_rows=max_rows))
    k = draw(st.integers(1, min(max_k, n_distinct(wh))))
    return wh, k


@st.composite
def weights_for(draw, n: int):
    return draw(
        hnp.arrays(
            np.float64,
            (n,),
            elements=st.one_of(st.integers(1, 4).map(float), st.floats(0.01, 100.0, allow_nan=False)),
        )
    )
