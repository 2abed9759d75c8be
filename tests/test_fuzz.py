"""Fuzzing every public function over its whole input space (issue 7).

Every dtype numpy has, 0-d/1-d/2-d/3-d and empty arrays, Fortran order, non-contiguous,
negative-stride, zero-stride (broadcast) and read-only views, lists, sides from 1e-30 to 1e30 with
0, negatives, NaN, inf and out-of-range values at random places, k from -1 to N+1, weights with
zeros, negatives, NaN and extreme scales, and hostile scalar options. Each call must either give
the correct answer (checked against tests/reference.py or the function's documented properties)
or raise a ValueError/TypeError with a message; never crash, hang, return NaN or let a warning
out of numpy. An independent oracle (written here from the README's rules, not from
_validation.py) decides which of the two is expected.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import reference as ref
from hypothesis import event, given
from hypothesis import strategies as st

import fastanchor

MIN_SIDE, MAX_SIDE = 1e-30, 1e30

# ---------------------------------------------------------------------------------------------
# Strategies

#: Every kind of dtype numpy has: real ones (accepted) and the others (a TypeError).
REAL_DTYPES = [
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.longdouble,
]
OTHER_DTYPES = [
    np.bool_,
    np.complex64,
    np.complex128,
    np.clongdouble,
    object,
    "U6",
    "S6",
    "M8[s]",
    "m8[s]",
    [("w", "f8"), ("h", "f8")],
    "V16",
]
DTYPE_CLASSES = REAL_DTYPES + OTHER_DTYPES

#: Values injected at random places: out of range, non-finite, zero, negative, subnormal, huge.
SPECIALS = [
    0.0,
    -0.0,
    -1.0,
    -1e30,
    float("nan"),
    float("inf"),
    float("-inf"),
    1e-31,
    1.1e30,
    5e-324,
    1e308,
    1e-300,
    2.0**-1022,
]

#: Shapes: (N, 2) (the only valid one unless empty), and every other kind.
SHAPES = ["rows", "rows", "rows", "empty", "0d", "1d", "3d", "cols1", "cols3", "cols0"]
#: How the array reaches the function.
LAYOUTS = ["C", "F", "strided", "negative", "readonly", "broadcast", "list", "tuple"]

supported = st.one_of(
    st.floats(-30.0, 30.0).map(lambda e: 10.0**e),  # the whole supported range
    st.integers(1, 8).map(float),  # ties and duplicates
    st.sampled_from([MIN_SIDE, MAX_SIDE, 1e-6, 1e6]),  # its ends
)


def chance(draw, p: float) -> bool:
    """True with probability about p; False when shrinking (so minimal examples are valid ones)."""
    return draw(st.integers(0, 999)) >= 1000 * (1 - p)


@st.composite
def values(draw, shape, special_rate):
    size = int(np.prod(shape))
    out = np.array([draw(supported) for _ in range(size)], dtype=np.float64)
    if size and chance(draw, special_rate):
        for _ in range(draw(st.integers(1, 3))):
            out[draw(st.integers(0, size - 1))] = draw(st.sampled_from(SPECIALS))
    return out.reshape(shape)


def _cast(a: np.ndarray, dtype) -> np.ndarray:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dtype in ("U6", "S6"):
            return a.astype(dtype)
        if dtype in ("M8[s]", "m8[s]"):
            return np.nan_to_num(a, posinf=0, neginf=0).clip(-1e9, 1e9).astype(np.int64).astype(dtype)
        if isinstance(dtype, list) or dtype == "V16":
            out = np.zeros(a.shape, dtype=[("w", "f8"), ("h", "f8")])
            out["w"] = a
            out["h"] = a
            return out if isinstance(dtype, list) else out.view("V16")
        if np.dtype(dtype).kind in "iu":
            info = np.iinfo(dtype)
            return np.nan_to_num(a, posinf=info.max, neginf=info.min).clip(info.min, info.max).astype(dtype)
        return a.astype(dtype)


@st.composite
def arrays(draw, rows=(1, 10), special_rate=0.1, dtype_rate=0.2, shape_rate=0.06, square=2):
    """A hostile array-like meant as an (N, 2) array: mostly valid, with one fault at a time
    most of the time (a wrong dtype, shape or value) so the valid space is also covered."""
    n = draw(st.integers(*rows))
    kind = draw(st.sampled_from(SHAPES)) if chance(draw, shape_rate) else "rows"
    shape = {
        "rows": (n, square),
        "empty": (0, square),
        "0d": (),
        "1d": (n,),
        "3d": (n, 1, square),
        "cols1": (n, 1),
        "cols3": (n, 3),
        "cols0": (n, 0),
    }[kind]
    dtype = (
        draw(st.sampled_from(OTHER_DTYPES))
        if chance(draw, dtype_rate / 4)
        else draw(st.sampled_from(REAL_DTYPES))
        if chance(draw, dtype_rate)
        else np.float64
    )
    if np.dtype(dtype).kind in "iu" or dtype == np.float16:
        # values that dtype can hold (the others are covered by the float64 draws)
        size = int(np.prod(shape))
        a = np.array([draw(st.integers(1, 100)) for _ in range(size)], dtype=np.float64).reshape(shape)
        if size and chance(draw, special_rate):
            a.flat[draw(st.integers(0, size - 1))] = draw(st.sampled_from([0.0, -1.0, 1e6, float("nan")]))
    else:
        a = draw(values(shape, special_rate))
    return draw(presented(_cast(a, dtype)))


@st.composite
def presented(draw, a):
    """``a`` as it may reach a function: C or Fortran order, strided, negative- or zero-stride,
    read-only, or a nested list or tuple."""
    layout = draw(st.sampled_from(LAYOUTS + ["C"] * 4))
    if layout == "F":
        a = np.asfortranarray(a)
    elif layout == "strided" and a.ndim:
        big = np.zeros((a.shape[0] * 2,) + a.shape[1:], dtype=a.dtype)
        big[::2] = a
        a = big[::2]
    elif layout == "negative" and a.ndim:
        a = np.ascontiguousarray(a[::-1])[::-1]
    elif layout == "readonly":
        a = a.copy()
        a.setflags(write=False)
    elif layout == "broadcast" and a.ndim == 2 and a.shape[0]:
        a = np.broadcast_to(a[:1], a.shape)  # zero stride, read-only
    elif layout == "list":
        return a.tolist()
    elif layout == "tuple" and a.ndim:
        return tuple(tuple(r) if isinstance(r, list) else r for r in a.tolist())
    return a


@st.composite
def mostly(draw, good, bad, bad_rate=0.1):
    """Usually a value of ``good``; with probability ``bad_rate`` one of ``bad``."""
    return draw(bad) if chance(draw, bad_rate) else draw(good)


threads = mostly(st.sampled_from([None, 1, 2, -1, 10**6, np.int64(2)]), st.sampled_from([0, -100_000, 1.5, True, "2"]))
seeds = mostly(
    st.sampled_from([None, 0, 7, 2**64 - 1, 2**70, np.uint64(3)])
    | st.builds(np.random.default_rng, st.integers(0, 10)),
    st.sampled_from([-1, 1.5, "seed", True]),
)
weight_elems = st.one_of(
    st.floats(0.01, 100.0),
    st.just(0.0),
    st.just(1.0),
    st.sampled_from([1e-300, 5e-324, 1e300, 1e308, 1e-30, 1e30]),
    st.sampled_from([-1.0, float("nan"), float("inf")]),
)


@st.composite
def weights_for(draw, n):
    """None, or hostile weights for n boxes (wrong length, dtype or values sometimes)."""
    if draw(st.booleans()):
        return None
    if chance(draw, 0.5):
        return np.array([draw(st.floats(0.01, 100.0)) for _ in range(n)])
    length = draw(st.integers(0, n + 2)) if chance(draw, 0.1) else n
    if chance(draw, 0.3):
        scale = draw(st.sampled_from([1e-300, 5e-324, 1e300, 1e308]))
        w = np.full(length, scale) * np.array([draw(st.sampled_from([0.0, 0.5, 1.0])) for _ in range(length)])
    else:
        w = np.array([draw(weight_elems) for _ in range(length)], dtype=np.float64)
    if chance(draw, 0.1):
        w = _cast(w, draw(st.sampled_from(DTYPE_CLASSES)))
    if chance(draw, 0.05):
        w = w.reshape(-1, 1)
    if draw(st.booleans()) and w.ndim == 1:
        w = np.ascontiguousarray(w[::-1])[::-1]
    return w


def reals(lo=-10.0, hi=10.0, bad_rate=0.15):
    """A hostile real option: ordinary values in [lo, hi] (integers and numpy scalars too), and the
    boundaries, non-finite values and non-numbers."""
    return mostly(
        st.floats(lo, hi) | st.sampled_from([np.float32(2.0), np.int8(3), 4]),
        st.sampled_from(
            [
                0.0,
                1.0,
                -1.0,
                float("nan"),
                float("inf"),
                -float("inf"),
                1e308,
                5e-324,
                1e-30,
                1e30,
                "1",
                None,
                True,
                1j,
                [1.0],
            ]
        ),
        bad_rate,
    )


# ---------------------------------------------------------------------------------------------
# The oracle: what the README says is valid, computed independently of _validation.py.


class Invalid(Exception):
    pass


def real_array_oracle(x):
    """np.asarray(x) if it has a real dtype, else Invalid."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = np.asarray(x)
    except Exception:
        raise Invalid
    if a.dtype.kind not in "fiu":
        raise Invalid
    return a


def float64(a):
    """a as float64, silently (values beyond float64 become inf)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return a.astype(np.float64)


def wh_oracle(x, max_rows=None):
    """The float64 (N, 2) array an argument stands for, or Invalid."""
    a = real_array_oracle(x)
    if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] == 0:
        raise Invalid
    f = float64(a)
    if not (np.isfinite(f) & (f >= MIN_SIDE) & (f <= MAX_SIDE)).all():
        raise Invalid
    return f


def anchors_oracle(x):
    try:
        a = np.asarray(x)
    except Exception:
        raise Invalid
    if a.dtype.kind in "fiu" and (
        (a.ndim == 2 and a.shape[1] > 2 and a.shape[1] % 2 == 0) or (a.ndim == 3 and a.shape[2] == 2)
    ):
        a = a.reshape(-1, 2)
    return wh_oracle(a)


def weights_oracle(w, n):
    if w is None:
        return np.ones(n)
    a = np.asarray(w)
    if a.dtype.kind not in "fiu" or a.shape != (n,):
        raise Invalid
    with np.errstate(all="ignore"):
        f = a.astype(np.float64)
    if not (np.isfinite(f) & (f >= 0)).all() or not (f > 0).any():
        raise Invalid
    return f


def int_oracle(x, lo=None, hi=2**31 - 1):
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise Invalid
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        raise Invalid
    return int(x)


def real_oracle(x):
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise Invalid
    if not math.isfinite(float(x)):
        raise Invalid
    return float(x)


def threads_oracle(t):
    if t is None:
        return
    v = int_oracle(t, hi=None)
    if v == 0 or (v < 0 and fastanchor._core.max_threads() + 1 + v < 1):
        raise Invalid


def seed_oracle(s):
    if s is None or isinstance(s, np.random.Generator):
        return
    if int_oracle(s, lo=0, hi=None) < 0:
        raise Invalid


def distinct(wh, w=None):
    rows = wh if w is None else wh[w > 0]
    return np.unique(rows, axis=0).shape[0]


def scaled(w):
    """Weights divided by their largest (the reference then needs no extreme scales)."""
    with np.errstate(under="ignore"):
        return w / w.max()


# ---------------------------------------------------------------------------------------------
# The harness


def call(fn, *args, **kwargs):
    """(result, None) or (None, exception) for ValueError/TypeError with a message; any other
    exception and any warning that is not fastanchor's own UserWarning fail the test."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result, error = fn(*args, **kwargs), None
        except (ValueError, TypeError) as exc:
            result, error = None, exc
    for w in caught:
        assert w.category is UserWarning or issubclass(w.category, fastanchor.datasets.AnnotationWarning), (
            f"a {w.category.__name__} leaked: {w.message}"
        )
    if error is not None:
        assert len(str(error)) > 10, f"unhelpful message: {error!r}"
    return result, error


def expect(valid: bool, fn, *args, **kwargs):
    event("valid input" if valid else "invalid input")
    result, error = call(fn, *args, **kwargs)
    if valid:
        assert error is None, f"valid input refused: {error}"
    else:
        assert error is not None, f"invalid input accepted, returned {result!r}"
    return result


def oracle(check):
    """check() -> True if valid (computing the oracle values), False on Invalid."""
    try:
        return True, check()
    except Invalid:
        return False, None


def all_finite(*xs):
    return all(np.isfinite(np.asarray(x, dtype=np.float64)).all() for x in xs)


# ---------------------------------------------------------------------------------------------
# The functions


def check_pairwise_iou(fn, x1, x2, n_threads, input_oracle, reference, positive):
    """wh_iou and box_iou: float32 iff both inputs are float32 arrays, else float64; numpy's
    float64 values bit for bit (rounded once to float32), all in [0, 1]; with ``positive``, > 0 in
    float64 (float32 rounds IoUs below 1e-45, e.g. of 1e16 and 1e-30 sides, to 0)."""
    valid, vals = oracle(lambda: (input_oracle(x1), input_oracle(x2), threads_oracle(n_threads)))
    out = expect(valid, fn, x1, x2, n_threads=n_threads)
    if valid:
        a, b, _ = vals
        both32 = all(isinstance(x, np.ndarray) and x.dtype == np.float32 for x in (x1, x2))
        assert out.dtype == (np.float32 if both32 else np.float64) and out.shape == (len(a), len(b))
        np.testing.assert_array_equal(out, reference(a, b).astype(out.dtype))
        assert all_finite(out) and (out <= 1).all() and (out >= 0).all()
        if positive and out.dtype == np.float64:
            assert (out > 0).all()


@given(wh1=arrays(), wh2=arrays(), n_threads=threads)
def test_fuzz_wh_iou(wh1, wh2, n_threads):
    check_pairwise_iou(fastanchor.wh_iou, wh1, wh2, n_threads, wh_oracle, ref.wh_iou, positive=True)


@given(anchors=arrays(rows=(1, 6)), wh=arrays(), data=st.data(), n_threads=threads)
def test_fuzz_avg_iou(anchors, wh, data, n_threads):
    n = np.asarray(wh).shape[0] if np.ndim(np.asarray(wh, dtype=object)) else 1
    w = data.draw(weights_for(max(n, 1)))
    valid, vals = oracle(lambda: (wh_oracle(anchors), wh_oracle(wh), weights_oracle(w, n), threads_oracle(n_threads)))
    out = expect(valid, fastanchor.avg_iou, anchors, wh, sample_weight=w, n_threads=n_threads)
    if valid:
        a, b, wt, _ = vals
        assert isinstance(out, float) and math.isfinite(out) and 0 < out <= 1
        assert out == pytest.approx(ref.avg_iou(a, b, scaled(wt)), rel=1e-12, abs=1e-300)


@given(
    wh=arrays(rows=(1, 12)),
    k_offset=st.integers(-3, 3),
    k_kind=mostly(st.sampled_from(["int", "np"]), st.sampled_from(["float", "bool", "str", "big"])),
    data=st.data(),
    update=mostly(st.sampled_from(["median", "mean"]), st.sampled_from(["mode", None])),
    init=mostly(st.sampled_from(["k-means++", "random", "array"]), st.sampled_from(["bad", "kmeans"])),
    max_iter=mostly(st.sampled_from([0, 1, 5, 300]), st.sampled_from([-1, 2**31, 2.0])),
    n_init=mostly(st.sampled_from([None, 1, 2]), st.sampled_from([0, -1, 2**40])),
    tol=reals(0.0, 0.5, bad_rate=0.05),
    seed=seeds,
    n_threads=threads,
)
def test_fuzz_kmeans_iou(wh, k_offset, k_kind, data, update, init, max_iter, n_init, tol, seed, n_threads):
    rows = len(wh) if isinstance(wh, (list, tuple)) else (np.shape(wh)[0] if np.ndim(wh) else 0)
    k = max(-1, min(rows + 1, rows // 2 + k_offset))  # k from -1 to N+1
    k = {"int": k, "np": np.int32(k), "float": float(k), "bool": bool(k), "str": str(k), "big": 2**40}[k_kind]
    w = data.draw(weights_for(max(rows, 1)))
    init_arg = {"array": None, "bad": "bad"}.get(init, init)
    if init == "array":
        init_arg = data.draw(arrays(rows=(max(1, rows // 2), max(1, rows // 2)), special_rate=0.1))

    def check():
        boxes = wh_oracle(wh)
        kk = int_oracle(k, lo=1)
        wt = weights_oracle(w, boxes.shape[0])
        if update not in ("median", "mean") or init in ("bad", "kmeans"):
            raise Invalid
        if init == "array":
            ia = wh_oracle(init_arg)
            if ia.shape[0] != kk or n_init not in (None, 1):
                raise Invalid
        elif n_init is not None:
            int_oracle(n_init, lo=1)
        int_oracle(max_iter, lo=0)
        t = real_oracle(tol)
        if t < 0:
            raise Invalid
        threads_oracle(n_threads)
        seed_oracle(seed)
        if kk > distinct(boxes, None if w is None else wt):
            raise Invalid
        return boxes, kk, wt

    valid, vals = oracle(check)
    out = expect(
        valid,
        fastanchor.kmeans_iou,
        wh,
        k,
        init=init_arg,
        update=update,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        sample_weight=w,
        seed=seed,
        n_threads=n_threads,
    )
    if valid:
        boxes, kk, wt = vals
        assert out.anchors.shape == (kk, 2) and out.anchors.dtype == np.float64
        assert all_finite(out.anchors, out.avg_iou) and (out.anchors > 0).all()
        if not (init == "array" and max_iter == 0):  # else the anchors are medians/means of boxes, or boxes
            lo, hi = boxes.min(0), boxes.max(0)
            assert (out.anchors >= lo * (1 - 1e-12)).all() and (out.anchors <= hi * (1 + 1e-12)).all()
        area = out.anchors[:, 0] * out.anchors[:, 1]
        assert (np.diff(area) >= 0).all()
        assert out.labels.dtype == np.int32 and out.labels.shape == (boxes.shape[0],)
        np.testing.assert_array_equal(out.labels, ref.assign(out.anchors, boxes)[0])
        assert 0 < out.avg_iou <= 1
        assert out.avg_iou == pytest.approx(ref.avg_iou(out.anchors, boxes, scaled(wt)), rel=1e-9)


def _fitness_args(data, anchors):
    """Anchors in YOLOv5's per-level layouts too."""
    if (
        isinstance(anchors, np.ndarray)
        and anchors.ndim == 2
        and anchors.shape[1] == 2
        and anchors.shape[0] % 3 == 0
        and data.draw(st.booleans())
    ):
        layout = data.draw(st.sampled_from(["rows", "levels"]))
        m = anchors.shape[0] // 3
        return anchors.reshape(3, 2 * m) if layout == "rows" else anchors.reshape(3, m, 2)
    return anchors


@given(
    anchors=arrays(rows=(1, 9)),
    wh=arrays(),
    data=st.data(),
    thr=reals(1.0, 8.0, bad_rate=0.05),
    n_threads=threads,
    bpr_threshold=reals(-0.1, 1.1, bad_rate=0.05),
)
def test_fuzz_anchor_fitness_and_check_anchors(anchors, wh, data, thr, n_threads, bpr_threshold):
    anchors = _fitness_args(data, anchors)
    n = np.shape(wh)[0] if np.ndim(np.asarray(wh, dtype=object)) else 1
    w = data.draw(weights_for(max(n, 1)))

    def check():
        a, b = anchors_oracle(anchors), wh_oracle(wh)
        wt = weights_oracle(w, b.shape[0])
        t = real_oracle(thr)
        if not t > 1:
            raise Invalid
        threads_oracle(n_threads)
        return a, b, wt, t

    valid, vals = oracle(check)
    out = expect(valid, fastanchor.anchor_fitness, anchors, wh, thr=thr, sample_weight=w, n_threads=n_threads)
    if valid:
        a, b, wt, t = vals
        exp = ref.anchor_fitness(a, b, thr=t, sample_weight=scaled(wt))
        for key in ("fitness", "bpr", "aat", "avg_iou"):
            got = getattr(out, key)
            assert math.isfinite(got)
            assert got == pytest.approx(exp[key], rel=1e-9, abs=1e-12), key
        if w is None:  # threshold decisions are exact: counts are exact
            assert out.bpr == exp["bpr"] and out.aat == pytest.approx(exp["aat"], rel=1e-15)

    def check_level():
        if not 0 <= real_oracle(bpr_threshold) <= 1:
            raise Invalid

    level_ok, _ = oracle(check_level)
    res = expect(
        valid and level_ok,
        fastanchor.check_anchors,
        anchors,
        wh,
        thr=thr,
        bpr_threshold=bpr_threshold,
        sample_weight=w,
        n_threads=n_threads,
    )
    if res is not None:
        assert res.fitness == out.fitness and res.bpr == out.bpr
        assert res.recommend_recompute == (res.bpr < float(bpr_threshold))


@given(
    anchors=arrays(rows=(1, 6), special_rate=0.05, dtype_rate=0.1),
    wh=arrays(special_rate=0.05, dtype_rate=0.1),
    data=st.data(),
    thr=reals(1.0, 8.0, bad_rate=0.05),
    generations=mostly(st.sampled_from([0, 1, 7, 20]), st.sampled_from([-1, 2**31, 3.0])),
    mutation_prob=mostly(reals(0.0, 1.0, bad_rate=0.05), st.sampled_from([-0.1, 1.1])),
    sigma=mostly(reals(0.01, 3.0, bad_rate=0.05), st.sampled_from([0.0, -1.0])),
    min_size=mostly(
        st.sampled_from([2.0, 1e-30, 1e30]) | st.floats(0.1, 50),
        st.sampled_from([1e-31, 2e30, 0.0, -1.0, float("nan")]),
    ),
    strategy=mostly(st.sampled_from(["anchorwise", "yolov5"]), st.sampled_from(["YOLOv5", None])),
    batch=mostly(st.sampled_from([1, 3, 8, 4096]), st.sampled_from([0, 4097, 2.5])),
    seed=seeds,
    n_threads=threads,
)
def test_fuzz_evolve_anchors(
    anchors, wh, data, thr, generations, mutation_prob, sigma, min_size, strategy, batch, seed, n_threads
):
    n = np.shape(wh)[0] if np.ndim(np.asarray(wh, dtype=object)) else 1
    w = data.draw(weights_for(max(n, 1)))
    calls = []

    def check():
        a, b = anchors_oracle(anchors), wh_oracle(wh)
        wt = weights_oracle(w, b.shape[0])
        t = real_oracle(thr)
        g = int_oracle(generations, lo=0)
        mp = real_oracle(mutation_prob)
        s = real_oracle(sigma)
        m = real_oracle(min_size)
        if not (t > 1 and 0 <= mp <= 1 and s > 0 and MIN_SIDE <= m <= MAX_SIDE):
            raise Invalid
        if strategy not in ("anchorwise", "yolov5"):
            raise Invalid
        int_oracle(batch, lo=1, hi=4096)
        threads_oracle(n_threads)
        seed_oracle(seed)
        return a, b, wt, t, g, m

    valid, vals = oracle(check)
    out = expect(
        valid,
        fastanchor.evolve_anchors,
        anchors,
        wh,
        thr=thr,
        generations=generations,
        mutation_prob=mutation_prob,
        sigma=sigma,
        min_size=min_size,
        strategy=strategy,
        batch=batch,
        sample_weight=w,
        seed=seed,
        n_threads=n_threads,
        callback=lambda g, f, a: calls.append(g),
    )
    if valid:
        a, b, wt, t, g, m = vals
        assert out.anchors.shape == a.shape and all_finite(out.anchors, out.history)
        assert (out.anchors >= m).all()
        assert out.history.shape == (g,) and (np.diff(out.history) >= 0).all()
        assert calls == list(range(1, g + 1))
        assert all(math.isfinite(x) for x in (out.fitness, out.bpr, out.aat, out.avg_iou, out.initial_fitness))
        assert out.fitness >= out.initial_fitness
        again = fastanchor.anchor_fitness(out.anchors, b, thr=t, sample_weight=w)
        assert again.fitness == out.fitness and again.bpr == out.bpr


@given(
    wh=arrays(rows=(1, 12), special_rate=0.05, dtype_rate=0.1),
    k_offset=st.integers(-3, 3),
    data=st.data(),
    generations=mostly(st.sampled_from([0, 5]), st.just(-1)),
    n_init=mostly(st.sampled_from([1, 2]), st.sampled_from([0, 2**40])),
    tol=mostly(st.sampled_from([0.0, 1e-3]), st.sampled_from([-1.0, float("nan")])),
    seed=seeds,
)
def test_fuzz_autoanchor(wh, k_offset, data, generations, n_init, tol, seed):
    rows = len(wh) if isinstance(wh, (list, tuple)) else (np.shape(wh)[0] if np.ndim(wh) else 0)
    k = max(-1, min(rows + 1, rows // 2 + k_offset))
    w = data.draw(weights_for(max(rows, 1)))

    def check():
        boxes = wh_oracle(wh)
        kk = int_oracle(k, lo=1)
        wt = weights_oracle(w, boxes.shape[0])
        int_oracle(generations, lo=0)
        int_oracle(n_init, lo=1)
        if not (math.isfinite(tol) and tol >= 0):
            raise Invalid
        seed_oracle(seed)
        keep = (boxes >= 2.0).any(axis=1)
        if (
            not keep.any()
            or not (wt[keep] > 0).any()
            or kk > distinct(boxes[keep], wt[keep] if w is not None else None)
        ):
            raise Invalid
        return boxes[keep], kk, wt[keep]

    valid, vals = oracle(check)
    out = expect(
        valid, fastanchor.autoanchor, wh, k, generations=generations, n_init=n_init, tol=tol, sample_weight=w, seed=seed
    )
    if valid:
        boxes, kk, wt = vals
        assert out.anchors.shape == (kk, 2) and all_finite(out.anchors, out.kmeans_anchors, out.history)
        assert out.n_boxes == boxes.shape[0]
        # the search starts from the k-means anchors raised to min_size (2 px) and never loses fitness
        start = fastanchor.anchor_fitness(np.maximum(out.kmeans_anchors, 2.0), boxes, sample_weight=wt)
        assert out.evolved.fitness >= start.fitness
        for r in (out.kmeans, out.evolved):
            assert all(math.isfinite(x) for x in (r.fitness, r.bpr, r.aat, r.avg_iou))


strides_values = st.sampled_from([(8, 16, 32), [8], (8, 16), (1, 2, 4), np.array([1.0, 2.0, 3.0])]) | st.one_of(
    st.lists(
        st.sampled_from([8, 16, 32, 64.0, 4.5, 0, -8, float("nan"), float("inf"), True, "8", None]),
        min_size=0,
        max_size=4,
    ),
    st.sampled_from(
        [
            (8, 16, 32),
            [8],
            np.array([8, 16, 32]),
            np.array(8),
            np.array([[8, 16, 32]]),
            "8,16,32",
            8,
            None,
            {8, 16},
            (32, 16, 8),
            (8, 8, 8),
        ]
    ),
)


@given(anchors=arrays(rows=(1, 12)), data=st.data(), strides=strides_values)
def test_fuzz_split_levels(anchors, data, strides):
    anchors = _fitness_args(data, anchors)

    def check():
        a = anchors_oracle(anchors)
        if isinstance(strides, (str, bytes, set, int)) or strides is None:
            raise Invalid
        s = np.asarray(strides, dtype=object)
        if s.ndim != 1 or s.size == 0:
            raise Invalid
        for v in s:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise Invalid
            if not (math.isfinite(float(v)) and float(v) > 0):
                raise Invalid
        if a.shape[0] % s.size:
            raise Invalid
        return a, s.size

    valid, vals = oracle(check)
    out = expect(valid, fastanchor.split_levels, anchors, strides)
    if valid:
        a, levels = vals
        assert len(out) == levels and all(g.shape == (a.shape[0] // levels, 2) for g in out)
        np.testing.assert_array_equal(
            np.concatenate(out), a[np.lexsort((np.arange(len(a)), a[:, 0], a[:, 0] * a[:, 1]))]
        )


# ---------------------------------------------------------------------------------------------
# The box and SSD functions: corner boxes, center boxes, offsets, feature maps, matching, grids.

#: Coordinates: ties on a small integer grid, continuous values, pixels and the range's ends.
coords = st.one_of(st.integers(-4, 8).map(float), st.floats(-1e3, 1e3), st.sampled_from([-1e30, 0.0, 1e-30, 1e29]))
#: Box sides (x2 - x1): ties, continuous and extreme, within the supported range.
box_sides = st.one_of(
    st.integers(1, 6).map(float), st.floats(-6.0, 6.0).map(lambda e: 10.0**e), st.sampled_from([1e-30, 1e-3, 1e29])
)
#: Values that make a corner box bad: non-finite, beyond 1e30, and sides that are 0 or negative.
BOX_SPECIALS = [float("nan"), float("inf"), -float("inf"), 1.1e30, -1e31, 1e308, 5e-324]


@st.composite
def hostile(draw, a, special_rate=0.1, specials=SPECIALS, dtype_rate=0.15, shape_rate=0.06):
    """A valid float64 array ``a`` (of any shape) spoilt one way at a time, sometimes: values
    replaced by ``specials``, another real dtype (values cast, so they may change) or a
    non-real one, a wrong shape; then presented in any layout."""
    a = np.array(a, dtype=np.float64)
    if a.size and chance(draw, special_rate):
        for _ in range(draw(st.integers(1, 2))):
            a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from(specials))
    if chance(draw, shape_rate):
        kind = draw(st.sampled_from(["0d", "flat", "extra", "drop", "cols3", "cols5"]))
        a = {
            "0d": lambda: np.asarray(a.flat[0] if a.size else 1.0),
            "flat": lambda: a.ravel(),
            "extra": lambda: a[None],
            "drop": lambda: a[..., 0],
            "cols3": lambda: a[..., :3],
            "cols5": lambda: np.concatenate([a, a[..., :1]], -1),
        }[kind]()
    if chance(draw, dtype_rate / 4):
        a = _cast(a, draw(st.sampled_from(OTHER_DTYPES)))
    elif chance(draw, dtype_rate):
        a = _cast(a, draw(st.sampled_from(REAL_DTYPES)))
    return draw(presented(a))


@st.composite
def corner_boxes(draw, rows=(1, 8), special_rate=0.1, **kw):
    """(N, 4) corner boxes ``(x1, y1, x2, y2)`` (sometimes with a corner swapped) made hostile."""
    n = draw(st.integers(*rows))
    out = np.empty((n, 4))
    for i in range(n):
        x, y = draw(coords), draw(coords)
        # x2 > x1 even when the side is below x1's resolution (degenerate rows come from the swap below)
        x2, y2 = (min(max(c + draw(box_sides), np.nextafter(c, np.inf)), 1e30) for c in (x, y))
        out[i] = [x, y, x2, y2]
    if n and chance(draw, special_rate / 2):
        i = draw(st.integers(0, n - 1))
        out[i] = out[i][[2, 1, 0, 3]]  # x1 > x2
    return draw(hostile(out, special_rate, BOX_SPECIALS, **kw))


def boxes_oracle(x, allow_empty=False):
    """The float64 (N, 4) corner boxes an argument stands for, or Invalid (README: finite corners
    within [-1e30, 1e30], x1 < x2, y1 < y2 and a positive area in float64)."""
    a = real_array_oracle(x)
    if a.ndim != 2 or a.shape[1] != 4 or (a.shape[0] == 0 and not allow_empty):
        raise Invalid
    f = float64(a)
    with np.errstate(all="ignore"):
        ok = np.isfinite(f).all() and (np.abs(f) <= MAX_SIDE).all()
        ok = ok and (f[:, 2] > f[:, 0]).all() and (f[:, 3] > f[:, 1]).all()
        ok = ok and ((f[:, 2] - f[:, 0]) * (f[:, 3] - f[:, 1]) > 0).all()
    if not ok:
        raise Invalid
    return f


def positive_oracle(x):
    v = real_oracle(x)
    if not v > 0:
        raise Invalid
    return v


@given(b1=corner_boxes(), b2=corner_boxes(), n_threads=threads)
def test_fuzz_box_iou(b1, b2, n_threads):
    check_pairwise_iou(fastanchor.box_iou, b1, b2, n_threads, boxes_oracle, ref.box_iou, positive=False)


@st.composite
def any_boxes(draw):
    """(..., 4) boxes for the conversions: 1-d to 3-d, any values (huge ones overflow)."""
    shape = draw(st.sampled_from([(4,), (1, 4), (3, 4), (0, 4), (2, 3, 4)]))
    elems = st.one_of(st.floats(-1e3, 1e3), st.integers(-5, 5).map(float), st.sampled_from([1e308, -1.7e308, 6e4]))
    a = np.array([draw(elems) for _ in range(int(np.prod(shape)))]).reshape(shape)
    return draw(hostile(a, 0.1, SPECIALS, dtype_rate=0.3))


@pytest.mark.parametrize("name", ["to_corners", "to_center"])
@given(boxes=any_boxes())
def test_fuzz_to_corners_and_to_center(name, boxes):
    """Any shape (..., 4) and real dtype; float dtypes are kept. Non-finite values and results
    that overflow the dtype (1e308 sides, float16 beyond 65504) are a ValueError."""

    def check():
        a = real_array_oracle(boxes)
        if a.ndim < 1 or a.shape[-1] != 4:
            raise Invalid
        f = a if a.dtype.kind == "f" else a.astype(np.float64)
        with np.errstate(all="ignore"):
            if name == "to_corners":
                exp = np.concatenate([f[..., :2] - 0.5 * f[..., 2:], f[..., :2] + 0.5 * f[..., 2:]], -1)
            else:
                exp = np.concatenate([0.5 * (f[..., :2] + f[..., 2:]), f[..., 2:] - f[..., :2]], -1)
        if not (np.isfinite(f).all() and np.isfinite(exp).all()):
            raise Invalid
        return exp

    valid, exp = oracle(check)
    out = expect(valid, getattr(fastanchor, name), boxes)
    if valid:
        assert out.dtype == exp.dtype and out.shape == exp.shape
        np.testing.assert_array_equal(out, exp)


#: Pairs of variances: good ones and every kind of bad one.
variances_values = mostly(
    st.sampled_from([(0.1, 0.2), [1.0, 1.0], np.array([0.5, 0.25]), (np.float32(0.1), 2)]),
    st.sampled_from(
        [
            (0.0, 0.2),
            (0.1, -1.0),
            (float("nan"), 0.2),
            (0.1,),
            (0.1, 0.2, 0.3),
            0.1,
            "ab",
            None,
            (True, 0.2),
            (5e-324, 5e-324),
            (1e308, 1e308),
        ]
    ),
)


@st.composite
def center_priors(draw, rows=(1, 6)):
    """(P, 4) priors in center form (cx, cy, w, h), made hostile (w, h must be > 0)."""
    n = draw(st.integers(*rows))
    a = np.array([[draw(st.floats(-2, 2)), draw(st.floats(-2, 2)), draw(box_sides), draw(box_sides)] for _ in range(n)])
    return draw(hostile(a, 0.1, SPECIALS + [1e-300], dtype_rate=0.1))


def center_priors_oracle(x):
    a = real_array_oracle(x)
    if a.ndim != 2 or a.shape[1] != 4:
        raise Invalid
    f = float64(a)
    if not (np.isfinite(f).all() and (f[:, 2:] > 0).all()):
        raise Invalid
    return f


def variances_oracle(v):
    if isinstance(v, (str, bytes)) or np.ndim(v) != 1 or len(v) != 2:
        raise Invalid
    return positive_oracle(v[0]), positive_oracle(v[1])


def check_against_priors(fn, x, priors, variances, values_oracle, reference):
    """encode and decode: ``x`` (P, 4) or (B, P, 4) against (P, 4) center-form priors; the result is
    numpy's formula to rounding, finite. Results beyond float64, and priors whose scale
    ``d_wh * v0`` is not a finite positive float64 (even with nothing to encode), are a ValueError."""

    def check():
        d = center_priors_oracle(priors)
        v = variances_oracle(variances)
        a = real_array_oracle(x)
        if a.ndim not in (2, 3) or a.shape[-2:] != d.shape:
            raise Invalid
        return d, v, values_oracle(a)

    valid, vals = oracle(check)
    if valid:
        d, v, a = vals
        with np.errstate(all="ignore"):
            exp = reference(a, d, v)
            scale = d[:, 2:] * v[0]  # formed even when there is nothing to encode
        if not (np.isfinite(exp).all() and np.isfinite(scale).all() and (scale > 0).all()):
            valid = False
            event("result beyond float64")
    out = expect(valid, fn, x, priors, variances=variances)
    if valid:
        assert out.shape == a.shape and out.dtype == np.float64 and all_finite(out)
        np.testing.assert_allclose(out, exp, rtol=1e-15, atol=0)


def finite_oracle(a):
    f = float64(a)
    if not np.isfinite(f).all():
        raise Invalid
    return f


@given(priors=center_priors(), data=st.data(), variances=variances_values, batch=st.sampled_from([None, 0, 1, 2]))
def test_fuzz_encode(priors, data, variances, batch):
    p = np.shape(priors)[0] if np.ndim(np.asarray(priors, dtype=object)) else 1
    shape_rows = (p, p) if batch is None else (batch * p, batch * p)
    gt = data.draw(corner_boxes(rows=shape_rows, special_rate=0.05))
    if batch is not None and isinstance(gt, np.ndarray) and gt.shape == (batch * p, 4):
        gt = gt.reshape(batch, p, 4)
    check_against_priors(
        fastanchor.encode,
        gt,
        priors,
        variances,
        lambda g: boxes_oracle(g.reshape(-1, 4), allow_empty=True).reshape(g.shape),
        ref.ssd_encode,
    )


@given(priors=center_priors(), data=st.data(), variances=variances_values, batch=st.sampled_from([None, 0, 2]))
def test_fuzz_decode(priors, data, variances, batch):
    """Offsets so large that the boxes overflow float64 are to be a ValueError, never inf or NaN."""
    p = np.shape(priors)[0] if np.ndim(np.asarray(priors, dtype=object)) else 1
    shape = (p, 4) if batch is None else (batch, p, 4)
    elems = mostly(
        st.floats(-5, 5) | st.integers(-3, 3).map(float), st.sampled_from([-1e3, 1e3, 1e4, 1e308, -1e308]), 0.03
    )
    loc = np.array([data.draw(elems) for _ in range(int(np.prod(shape)))]).reshape(shape)
    loc = data.draw(hostile(loc, 0.05, SPECIALS, dtype_rate=0.1))
    check_against_priors(fastanchor.decode, loc, priors, variances, finite_oracle, ref.ssd_decode)


#: Coordinates in [0, 1] on a coarse grid (exact IoU ties) or continuous.
unit = st.one_of(st.integers(0, 4).map(lambda i: i / 4), st.floats(0, 1))


@st.composite
def unit_boxes(draw, n):
    out = np.empty((n, 4))
    for i in range(n):
        x1, x2 = sorted((draw(unit), draw(unit)))
        y1, y2 = sorted((draw(unit), draw(unit)))
        out[i] = [x1, y1, x2 + (x2 == x1) * 0.25, y2 + (y2 == y1) * 0.25]
    return out


@given(
    data=st.data(),
    n_priors=st.integers(1, 10),
    form=st.sampled_from(["single", "list", "padded", "padded_counts"]),
    images=st.integers(0, 3),
    threshold=reals(-0.1, 1.1, bad_rate=0.05),
    n_threads=threads,
)
def test_fuzz_match_priors(data, n_priors, form, images, threshold, n_threads):
    priors = data.draw(hostile(data.draw(unit_boxes(n_priors)), 0.05, BOX_SPECIALS, dtype_rate=0.05))
    sizes = [data.draw(st.integers(0, 4)) for _ in range(max(images, 1))]
    gts = [data.draw(unit_boxes(g)) for g in sizes]
    counts = None
    if form == "single":
        gt = data.draw(hostile(gts[0], 0.05, BOX_SPECIALS, dtype_rate=0.05, shape_rate=0.03))
    elif form == "list":
        gts = gts[:images]
        gt = [data.draw(hostile(g, 0.05, BOX_SPECIALS, dtype_rate=0.05, shape_rate=0.02)) for g in gts]
        if isinstance(gt, list) and data.draw(st.booleans()):
            gt = [np.asarray(g) if not isinstance(g, np.ndarray) else g for g in gt]
    else:
        gts = gts[:images]
        width = max(sizes[:images], default=0) + data.draw(st.integers(0, 1))
        padded = np.full((images, width, 4), data.draw(st.sampled_from([0.0, -1.0, float("nan")])))
        for b, g in enumerate(gts):
            padded[b, : len(g)] = g
        gt = data.draw(hostile(padded, 0.03, BOX_SPECIALS, dtype_rate=0.05, shape_rate=0.03))
        if form == "padded_counts":
            counts = np.array([len(g) for g in gts], dtype=np.int64)
            if chance(data.draw, 0.2):
                counts = data.draw(
                    st.sampled_from(
                        [
                            counts + 1,
                            counts - 1,
                            counts.astype(np.float64),
                            counts[:-1],
                            counts.reshape(-1, 1),
                            counts.astype(np.uint8),
                            counts.tolist(),
                            np.full(len(counts), 2**40),
                            "1",
                        ]
                    )
                )

    def check():
        p = boxes_oracle(priors)
        t = real_oracle(threshold)
        threads_oracle(n_threads)
        # a list (or tuple) of per-image arrays when its first element is 2-d (or it is empty)
        if isinstance(gt, (list, tuple)) and (len(gt) == 0 or np.ndim(np.asarray(gt[0], dtype=object)) == 2):
            if counts is not None:
                raise Invalid
            return p, t, [boxes_oracle(g, allow_empty=True) for g in gt], False
        a = real_array_oracle(gt)
        if a.ndim == 2:
            if counts is not None:
                raise Invalid
            return p, t, [boxes_oracle(a, allow_empty=True)], True
        if a.ndim != 3 or a.shape[2] != 4:
            raise Invalid
        n = [a.shape[1]] * a.shape[0]
        if counts is not None:
            c = real_array_oracle(counts)
            if c.dtype.kind not in "iu" or c.shape != (a.shape[0],) or (c < 0).any() or (c > a.shape[1]).any():
                raise Invalid
            n = [int(v) for v in c]
        return p, t, [boxes_oracle(a[b, : n[b]], allow_empty=True) for b in range(a.shape[0])], False

    valid, vals = oracle(check)
    result = expect(valid, fastanchor.match_priors, priors, gt, threshold=threshold, counts=counts, n_threads=n_threads)
    if valid:
        p, t, images_gt, single = vals
        exp = np.array([ref.match_priors(p, g, t) for g in images_gt]).reshape(len(images_gt), len(p))
        assert result.dtype == np.int32
        np.testing.assert_array_equal(result, exp[0] if single else exp)


map_sizes = mostly(
    st.lists(
        mostly(
            st.integers(1, 4) | st.tuples(st.integers(1, 3), st.integers(1, 3)) | st.just(np.int64(2)),
            st.sampled_from([0, -1, 2.0, True, "3", None, (1, 2, 3), (0, 2), [2, 2.5]]),
            0.05,
        ),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from([[], 3, "3", None, np.array([2, 1]), np.array([[2, 1], [1, 1]]), {2}, range(1, 3)]),
)
ratio_values = mostly(
    st.floats(0.2, 5.0) | st.sampled_from([1.0, 2.0, 0.5, np.float32(3.0)]),
    st.sampled_from([0.0, -1.0, float("nan"), float("inf"), "2", None, True, 1e308, 5e-324]),
    0.05,
)
aspect_ratio_lists = mostly(
    st.lists(ratio_values, min_size=0, max_size=3)
    | st.lists(st.lists(ratio_values, min_size=0, max_size=2), min_size=1, max_size=3),  # per layer
    st.sampled_from([2.0, "2", None, np.array([2.0, 3.0]), np.array(2.0), [[2.0], 3.0], ()]),
)


def feature_maps_oracle(sizes):
    if isinstance(sizes, (str, bytes, set, int)) or sizes is None or len(sizes) == 0:
        raise Invalid
    out = []
    for s in sizes:
        if isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)):
            out.append((int_oracle(s, lo=1), int_oracle(s, lo=1)))
        elif isinstance(s, (str, bytes)) or np.ndim(s) != 1 or len(s) != 2:
            raise Invalid
        else:
            out.append((int_oracle(s[0], lo=1), int_oracle(s[1], lo=1)))
    return out


def ratios_oracle(x):
    if isinstance(x, (str, bytes)) or np.ndim(np.asarray(x, dtype=object)) == 0 and not isinstance(x, (list, tuple)):
        raise Invalid
    return [positive_oracle(a) for a in x]


@given(
    sizes=map_sizes,
    ratios=aspect_ratio_lists,
    style=mostly(st.sampled_from(["ssd", "tf"]), st.sampled_from(["SSD", None])),
    scale_kind=st.sampled_from(["range"] * 3 + ["list"] * 3 + ["bad list"]),
    lo=reals(0.01, 1.0, bad_rate=0.05),
    hi=reals(0.01, 1.0, bad_rate=0.05),
    data=st.data(),
    image_size=mostly(
        st.sampled_from([None, 300, (300, 300), (640, 360), [512.0, 1024]]),
        st.sampled_from([0, -1, (0, 300), (300,), (1, 2, 3), "300", float("nan"), (1e308, 5e-324)]),
    ),
    clip=st.booleans(),
    reciprocals=st.booleans(),
    interp=reals(0.0, 3.0, bad_rate=0.05),
    reduce=st.booleans(),
)
def test_fuzz_ssd_default_boxes(
    sizes, ratios, style, scale_kind, lo, hi, data, image_size, clip, reciprocals, interp, reduce
):
    """ssd_default_boxes (style "ssd") and tf_anchor_generator (style "tf") on hostile arguments."""
    m = len(sizes) if isinstance(sizes, (list, np.ndarray)) else 1
    if isinstance(ratios, list) and ratios and all(isinstance(r, list) for r in ratios) and chance(data.draw, 0.8):
        ratios = [ratios[i % len(ratios)] for i in range(max(m, 1))]  # per layer: mostly one list per map
    scales = None
    if scale_kind == "list":
        scales = [data.draw(st.floats(0.05, 1.0)) for _ in range(m)]
    elif scale_kind == "bad list":
        scales = data.draw(st.sampled_from([[0.1] * (m + 1), [float("nan")] * m, [-0.1] * m, "0.1", 0.1, [1e308] * m]))
    # ssd_default_boxes takes the SSD paper's options, tf_anchor_generator TensorFlow's; a parameter
    # that does not apply (a TensorFlow field with style="ssd", scales with min_scale) is an error
    kwargs = dict(scales=scales) if scales is not None else dict(min_scale=lo, max_scale=hi)
    both_scales = scales is not None and chance(data.draw, 0.05)
    if both_scales:
        kwargs["min_scale"] = lo
    kwargs.update(image_size=image_size, clip=clip)
    misplaced = style != "tf" and chance(data.draw, 0.05)
    if style == "tf":
        make = fastanchor.tf_anchor_generator
        kwargs.update(interpolated_scale_aspect_ratio=interp, reduce_boxes_in_lowest_layer=reduce)
    else:
        make = fastanchor.ssd_default_boxes
        kwargs.update(style=style, reciprocals=reciprocals)
        if misplaced:
            kwargs["interpolated_scale_aspect_ratio"] = interp

    def check():
        # (a misplaced field given as None is a field not given)
        if style not in ("ssd", "tf") or (both_scales and lo is not None) or (misplaced and interp is not None):
            raise Invalid
        maps = feature_maps_oracle(sizes)
        # min_scale/max_scale of None mean "not given": the layout's defaults
        lo_v = 0.2 if lo is None else lo
        hi_v = (0.95 if style == "tf" else 0.9) if hi is None else hi
        if scales is None:
            positive_oracle(lo_v), positive_oracle(hi_v)
        else:
            if isinstance(scales, (str, bytes)) or np.ndim(scales) != 1 or len(scales) != len(maps):
                raise Invalid
            for v in scales:
                positive_oracle(v)
        nested = (
            isinstance(ratios, (list, tuple, np.ndarray))
            and np.ndim(np.asarray(ratios, dtype=object)) > 0
            and len(ratios) > 0
            and all(isinstance(r, (list, tuple, np.ndarray)) for r in ratios)
        )
        if nested:
            if style == "tf" or len(ratios) != len(maps):
                raise Invalid
            per_layer = [ratios_oracle(r) for r in ratios]
        else:
            per_layer = [ratios_oracle(ratios)] * len(maps)
        i = real_oracle(interp) if style == "tf" else 0.0  # a TensorFlow field: not passed otherwise
        if image_size is not None:
            if isinstance(image_size, (int, float)) and not isinstance(image_size, bool):
                positive_oracle(image_size)
            elif isinstance(image_size, (str, bytes)) or np.ndim(image_size) != 1 or len(image_size) != 2:
                raise Invalid
            else:
                positive_oracle(image_size[0]), positive_oracle(image_size[1])
        # the boxes of a location, layer by layer (README's rules), as (scale, ratio, turned)
        sc = (
            [positive_oracle(v) for v in scales]
            if scales is not None
            else [float(lo_v)]
            if len(maps) == 1
            else [float(lo_v) + (float(hi_v) - float(lo_v)) * k / (len(maps) - 1) for k in range(len(maps))]
        ) + [1.0]
        counts = []
        sides = []
        for k, r in enumerate(per_layer):
            extra = math.sqrt(sc[k] * sc[k + 1])
            if style == "tf":
                specs = (
                    [(0.1, 1.0, False), (sc[k], 2.0, False), (sc[k], 0.5, False)]
                    if (k == 0 and reduce)
                    else [(sc[k], a, False) for a in r] + ([(extra, i, False)] if i > 0 else [])
                )
            elif reciprocals:
                specs = [(sc[k], 1.0, False), (extra, 1.0, False)]
                specs += [(sc[k], a, t) for a in r if a != 1.0 for t in (False, True)]
            else:
                specs = [x for a in r for x in [(sc[k], a, False)] + ([(extra, 1.0, False)] if a == 1.0 else [])]
            if not specs:
                raise Invalid
            counts.append(len(specs))
            for s_, a, turned in specs:
                w_, h_ = s_ * math.sqrt(a), s_ / math.sqrt(a)
                sides += [h_, w_] if turned else [w_, h_]
        # with an image size, widths times min(W, H) / W and heights times min(W, H) / H
        if image_size is None or np.ndim(image_size) == 0:
            fw = fh = 1.0
        else:
            w_, h_ = float(image_size[0]), float(image_size[1])
            fw, fh = min(w_, h_) / w_, min(w_, h_) / h_
        sides = [v * (fh if j % 2 else fw) for j, v in enumerate(sides)]
        # a box side that overflows or vanishes in float64 (scales, ratios or image sizes near 1e308
        # or 5e-324) is a ValueError
        if not all(math.isfinite(v) and v > 0 for v in sides):
            event("box sides beyond float64")
            raise Invalid
        return sum(h * w * nb for (h, w), nb in zip(maps, counts))

    valid, n_rows = oracle(check)
    result, error = call(make, sizes, ratios, **kwargs)
    event("valid input" if valid else "invalid input")
    assert (error is None) == valid, f"valid={valid}, got {error!r}"
    if valid:
        assert result.shape == (n_rows, 4) and result.dtype == np.float64
        if clip:
            corners = fastanchor.to_corners(result)
            assert (corners >= -1e-15).all() and (corners <= 1 + 1e-15).all()
        simple = (
            style == "ssd"
            and reciprocals
            and scales is None
            and image_size is None
            and all(isinstance(s, (int, np.integer)) for s in sizes)
            and not any(isinstance(r, (list, tuple, np.ndarray)) for r in ratios)
        )
        if simple:
            exp = ref.ssd_default_boxes([int(s) for s in sizes], [float(r) for r in ratios], float(lo), float(hi), clip)
            np.testing.assert_allclose(result, exp, rtol=1e-14, atol=1e-15)


@given(
    wh=arrays(rows=(1, 10), dtype_rate=0.1),
    n_offset=st.integers(-3, 2),
    n_kind=mostly(st.just("int"), st.sampled_from(["float", "bool", "str"])),
    method=mostly(st.sampled_from(["iou", "euclidean"]), st.sampled_from(["IoU", None, "kmeans"])),
    data=st.data(),
    n_init=mostly(st.sampled_from([None, 1, 2]), st.sampled_from([0, -1, 2.0, 2**40])),
    max_iter=mostly(st.sampled_from([1, 5, 300]), st.sampled_from([0, -1, 2.0, 2**31])),
    seed=seeds,
    n_threads=threads,
)
def test_fuzz_ssd_aspect_ratios(wh, n_offset, n_kind, method, data, n_init, max_iter, seed, n_threads):
    rows = len(wh) if isinstance(wh, (list, tuple)) else (np.shape(wh)[0] if np.ndim(wh) else 0)
    n = max(-1, min(rows + 1, rows // 2 + 1 + n_offset))
    n = {"int": n, "float": float(n), "bool": bool(n), "str": str(n)}[n_kind]
    w = data.draw(weights_for(max(rows, 1)))

    def check():
        boxes = wh_oracle(wh)
        k = int_oracle(n, lo=1)
        wt = weights_oracle(w, boxes.shape[0])
        if method not in ("iou", "euclidean"):
            raise Invalid
        if n_init is not None:
            int_oracle(n_init, lo=1)
        int_oracle(max_iter, lo=0)
        threads_oracle(n_threads)
        seed_oracle(seed)
        # unit area, kept within [1e-30, 1e30] (a ratio of 1e60 rounds one ulp beyond)
        u = np.clip(boxes / np.sqrt(boxes[:, 0] * boxes[:, 1])[:, None], MIN_SIDE, MAX_SIDE)
        if k > distinct(u[wt > 0]):  # both methods: boxes of zero weight don't count
            raise Invalid
        return boxes, k, wt, u

    valid, vals = oracle(check)
    if valid:
        boxes, k, wt, u = vals
    result, error = call(
        fastanchor.ssd_aspect_ratios,
        wh,
        n,
        method=method,
        seed=seed,
        n_init=n_init,
        max_iter=max_iter,
        sample_weight=w,
        n_threads=n_threads,
    )
    event("valid input" if valid else "invalid input")
    assert (error is None) == valid, f"valid={valid}, got {error!r}"
    if valid:
        r = result.aspect_ratios
        assert r.shape == (k,) and all_finite(r, result.anchors, result.avg_iou) and (r > 0).all()
        assert (np.diff(r) >= 0).all() and result.method == method
        np.testing.assert_array_equal(
            result.anchors, np.clip(np.stack([np.sqrt(r), 1 / np.sqrt(r)], 1), MIN_SIDE, MAX_SIDE)
        )
        assert result.labels.shape == (boxes.shape[0],)
        np.testing.assert_array_equal(result.labels, ref.assign(result.anchors, u)[0])
        assert 0 < result.avg_iou <= 1
        assert result.avg_iou == pytest.approx(ref.avg_iou(result.anchors, u, scaled(wt)), rel=1e-9)


grid_strides = mostly(
    st.sampled_from([(8, 16, 32), (8,), (16, 32), (1.5, 3.0, 6.0), [64]]),
    st.sampled_from([(), (8, 0), (8, float("nan")), (-8,), "8", None, 8, (8, "16")]),
    0.1,
)


@given(
    data=st.data(),
    strides=grid_strides,
    per_level=st.booleans(),
    image=mostly(st.sampled_from(["one", "per box"]), st.sampled_from(["zero", "nan", "shape", "str"]), 0.1),
    iou=reals(0.0, 1.0, bad_rate=0.05),
    n_threads=threads,
)
def test_fuzz_grid_recall_and_grid_best_iou(data, strides, per_level, image, iou, n_threads):
    levels = len(strides) if isinstance(strides, (tuple, list)) and strides else 1
    per = data.draw(st.integers(1, 3))
    anchors_arr = np.array([[data.draw(st.floats(2, 400)), data.draw(st.floats(2, 400))] for _ in range(levels * per)])
    if per_level:
        anchors = [data.draw(hostile(anchors_arr[i::levels], 0.05, SPECIALS, dtype_rate=0.05)) for i in range(levels)]
        if data.draw(st.integers(0, 9)) == 0:
            anchors = anchors[:-1]
    else:
        anchors = data.draw(hostile(anchors_arr, 0.05, SPECIALS, dtype_rate=0.05))
        if data.draw(st.integers(0, 9)) == 0 and isinstance(anchors, np.ndarray) and anchors.ndim and len(anchors) > 1:
            anchors = anchors[:-1]
    n = data.draw(st.integers(1, 6))
    img_wh = np.array([[data.draw(st.floats(16, 700)), data.draw(st.floats(16, 700))] for _ in range(n)])
    raw = np.empty((n, 4))
    for i, (W, H) in enumerate(img_wh):
        x, y = data.draw(st.floats(-20, W)), data.draw(st.floats(-20, H))
        raw[i] = [x, y, x + data.draw(st.floats(1, W)), y + data.draw(st.floats(1, H))]
    boxes = data.draw(hostile(raw, 0.05, BOX_SPECIALS, dtype_rate=0.05))
    image_wh = {
        "one": img_wh[0],
        "per box": img_wh,
        "zero": np.zeros(2),
        "nan": np.array([np.nan, 5.0]),
        "shape": img_wh[:, :1],
        "str": "640",
    }[image]

    def check():
        s = np.asarray(strides, dtype=object) if not isinstance(strides, (str, int)) and strides is not None else None
        if s is None or s.ndim != 1 or s.size == 0:
            raise Invalid
        for v in s:
            if not (real_oracle(v) > 0):
                raise Invalid
        if (
            isinstance(anchors, (list, tuple))
            and anchors
            and all(np.ndim(np.asarray(a, dtype=object)) == 2 for a in anchors)
        ):
            groups = [wh_oracle(a) for a in anchors]
            if len(groups) != s.size:
                raise Invalid
        else:
            a = anchors_oracle(anchors)
            if a.shape[0] % s.size:
                raise Invalid
            a = ref.sort_by_area(a)
            step = a.shape[0] // s.size
            groups = [a[i * step : (i + 1) * step] for i in range(s.size)]
        b = boxes_oracle(boxes)
        img = real_array_oracle(image_wh).astype(np.float64)
        if img.shape == (2,):
            img = np.broadcast_to(img, (b.shape[0], 2))
        if img.shape != (b.shape[0], 2) or not (np.isfinite(img) & (img > 0)).all():
            raise Invalid
        threads_oracle(n_threads)
        return [(float(v), g) for v, g in zip(s, groups)], b, img

    valid, vals = oracle(check)
    out = expect(valid, fastanchor.grid_best_iou, anchors, boxes, image_wh, strides=strides, n_threads=n_threads)
    if valid:
        lv, b, img = vals
        assert out.shape == (b.shape[0],) and out.dtype == np.float64 and all_finite(out)
        np.testing.assert_allclose(out, ref.grid_best_iou(lv, b, img), rtol=1e-12, atol=0)
    thr_ok, _ = oracle(lambda: real_oracle(iou))
    rec = expect(
        valid and thr_ok,
        fastanchor.grid_recall,
        anchors,
        boxes,
        image_wh,
        strides=strides,
        iou=iou,
        n_threads=n_threads,
    )
    if rec is not None:
        assert rec == float(np.mean(out >= float(iou)))


# ---------------------------------------------------------------------------------------------
# Boundaries that cannot be fuzzed with real sizes: small fakes.


def test_the_anchor_count_limit_is_checked_before_any_copy(monkeypatch):
    """Anchor counts are C ints in the core (boxes are 64-bit): more than 2**31 - 1 anchors are a
    ValueError up front. Shown with the limit lowered, on a zero-stride view that a copy would
    have to expand."""
    import fastanchor._fitness as fit

    assert fit.MAX_ANCHORS == 2**31 - 1
    monkeypatch.setattr(fit, "MAX_ANCHORS", 5)
    huge = np.broadcast_to(np.array([3.0, 4.0]), (6, 2))
    wh = np.ones((4, 2))
    for fn in (fastanchor.anchor_fitness, fastanchor.check_anchors, fastanchor.evolve_anchors):
        with pytest.raises(ValueError, match="anchors has 6 rows: at most 5"):
            fn(huge, wh)
    with pytest.raises(ValueError, match="at most 5"):
        fastanchor.split_levels(huge, (8, 16, 32))
    assert math.isfinite(fastanchor.anchor_fitness(huge[:5], wh).fitness)


@pytest.mark.parametrize(
    "fn, kwargs, what",
    [
        (fastanchor.kmeans_iou, dict(k=1, max_iter=2**31), "max_iter must be <="),
        (fastanchor.kmeans_iou, dict(k=1, n_init=2**31), "n_init must be <="),
        (fastanchor.autoanchor, dict(k=1, n_init=2**40, generations=0), "n_init must be <="),
        (fastanchor.evolve_anchors, dict(anchors=[[1.0, 1.0]], generations=2**31), "generations must be < 2"),
    ],
)
def test_counts_beyond_a_c_int_are_a_value_error(fn, kwargs, what):
    """Counts the core holds in C ints: a clear ValueError, not pybind11's argument TypeError."""
    wh = np.array([[1.0, 2.0], [3.0, 4.0]])
    kwargs = dict(kwargs)
    args = (kwargs.pop("anchors"), wh) if "anchors" in kwargs else (wh,)
    with pytest.raises(ValueError, match=what):
        fn(*args, **kwargs)


def test_extreme_weight_scales_change_no_result():
    """Only the ratios of the weights matter. Weights 2**e times others give the same results bit
    for bit over the whole double range (subnormal ones included), where 1e300-scale weights
    overflowed the weighted mean of 1e30 sides (inf anchors) and subnormal ones lost precision
    (wrong averages) before the weights were brought into range."""
    wh = np.array([[1e30, 1e30], [5e29, 1e30], [1e30, 2e29], [1e29, 1e29], [3e29, 4e29]])
    v = np.array([1.0, 2.0, 3.0, 0.5, 1.5])
    base = {u: fastanchor.kmeans_iou(wh, 2, update=u, sample_weight=v, seed=0) for u in ("mean", "median")}
    avg = fastanchor.avg_iou(wh[:2], wh, sample_weight=v)
    fit = fastanchor.anchor_fitness(wh[:2], wh, sample_weight=v)
    evo = fastanchor.evolve_anchors(wh[:2], wh, generations=30, min_size=1e-30, sample_weight=v, seed=0)
    for e in (1000, 340, 101, 99, -99, -101, -1000, -1070):
        w = np.ldexp(v, e)
        for update, exp in base.items():
            got = fastanchor.kmeans_iou(wh, 2, update=update, sample_weight=w, seed=0)
            np.testing.assert_array_equal(got.anchors, exp.anchors)
            np.testing.assert_array_equal(got.labels, exp.labels)
            assert got.avg_iou == exp.avg_iou
        assert fastanchor.avg_iou(wh[:2], wh, sample_weight=w) == avg
        assert fastanchor.anchor_fitness(wh[:2], wh, sample_weight=w) == fit
        again = fastanchor.evolve_anchors(wh[:2], wh, generations=30, min_size=1e-30, sample_weight=w, seed=0)
        np.testing.assert_array_equal(again.anchors, evo.anchors)
        np.testing.assert_array_equal(again.history, evo.history)
    # any scale: finite anchors and the unit-weight average to rounding
    unit = fastanchor.avg_iou(wh[:2], wh)
    for scale in (1e308, 1e300, 1e-300, 5e-324):
        w = np.full(5, scale)
        assert np.isfinite(fastanchor.kmeans_iou(wh, 3, update="mean", sample_weight=w, seed=0).anchors).all()
        assert fastanchor.avg_iou(wh[:2], wh, sample_weight=w) == pytest.approx(unit, rel=1e-15)
    # a positive weight far below the largest stays positive: it is fitted, with a negligible share
    w = np.array([1e308, 1e308, 1e308, 5e-324, 1e308])
    r = fastanchor.kmeans_iou(wh, 5, sample_weight=w, seed=0, update="mean")
    assert np.isfinite(r.anchors).all() and sorted(map(tuple, r.anchors)) == sorted(map(tuple, wh))
