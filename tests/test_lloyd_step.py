"""The Lloyd step kernel over chunks (kmeans/step.hpp): labels by the exact rule, and partials that
merge in any order with bit-identical totals, equal to the in-memory fit's update."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st

import fastanchor
from fastanchor import _chunked


def _chunking(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    cuts = np.sort(rng.integers(0, n + 1, int(rng.integers(0, 12))))
    bounds = np.concatenate([[0], cuts, [n]]).astype(np.int64)
    return bounds, rng.permutation(len(bounds) - 1).astype(np.int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_chunks_label_exactly_and_merge_to_the_in_memory_mean(dtype):
    rng = np.random.default_rng(70)
    for trial in range(4):
        n, k = 3000 + trial, int(rng.integers(1, 12))
        wh = np.exp(rng.normal(2, 0.5 + trial / 2, (n, 2))).astype(dtype)
        if trial == 3:
            wh[: n // 2] = rng.integers(1, 9, (n // 2, 2))  # exact ties
        anchors = wh[rng.choice(n, k, replace=False)].astype(np.float64)
        labels, _ = ref.assign(anchors, wh.astype(np.float64))
        # the in-memory engine's mean update from the same anchors (exact sums, unit weights)
        want = fastanchor._core.lloyd_trace(wh, None, anchors[None], "mean", 1)
        results = []
        for _ in range(3):
            bounds, order = _chunking(rng, n)
            out = fastanchor._core._lloyd_step_chunks(wh, anchors, "mean", bounds, order, 0, 0, 1)
            np.testing.assert_array_equal(out["labels"], labels)
            np.testing.assert_array_equal(out["count"], np.bincount(labels, minlength=k))
            results.append(out["means"])
        for means in results[1:]:
            np.testing.assert_array_equal(means, results[0])  # any chunking, any merge order
        # The in-memory engine sums exactly while the values span at most 94 bits of units (the
        # last mantissa bit of the smallest value); it then gives the same means, bit for bit.
        digits = 24 if dtype == np.float32 else 53
        span = np.floor(np.log2(wh.max())) + 1 - (np.floor(np.log2(wh.min())) - (digits - 1))
        assert span <= 94
        filled = np.bincount(labels, minlength=k) > 0
        np.testing.assert_array_equal(results[0][filled], want["updated"][0][filled])


def test_step_chunks_median_histograms_count_every_key():
    rng = np.random.default_rng(71)
    n, k = 5000, 7
    wh = np.exp(rng.normal(3, 1.2, (n, 2))).astype(np.float32)
    anchors = wh[rng.choice(n, k, replace=False)].astype(np.float64)
    labels, _ = ref.assign(anchors, wh.astype(np.float64))
    keys = wh.view(np.uint32).astype(np.int64)
    key_lo, shift, bins = int(keys.min()), 16, 256
    want = np.zeros((2, k, bins), np.uint64)
    for X in range(2):
        b = np.minimum((keys[:, X] - key_lo) >> shift, bins - 1)
        np.add.at(want[X], (labels, b), 1)
    for _ in range(3):
        bounds, order = _chunking(rng, n)
        out = fastanchor._core._lloyd_step_chunks(wh, anchors, "median", bounds, order, key_lo, shift, bins)
        np.testing.assert_array_equal(out["labels"], labels)
        np.testing.assert_array_equal(out["hist"], want)


def test_step_chunks_assign_only_and_bad_arguments():
    rng = np.random.default_rng(72)
    wh = np.exp(rng.normal(2, 1, (500, 2)))
    anchors = wh[:5].copy()
    out = fastanchor._core._lloyd_step_chunks(wh, anchors, "assign", np.array([0, 200, 500]), np.array([1, 0]), 0, 0, 1)
    np.testing.assert_array_equal(out["labels"], ref.assign(anchors, wh)[0])
    with pytest.raises(ValueError, match="mode must be"):
        fastanchor._core._lloyd_step_chunks(wh, anchors, "medoid", np.array([0, 500]), np.array([0]), 0, 0, 1)
    with pytest.raises(ValueError, match="bounds must run"):
        fastanchor._core._lloyd_step_chunks(wh, anchors, "mean", np.array([0, 400]), np.array([0]), 0, 0, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_windows_gather_what_the_reference_does(dtype):
    # The Lloyd pass's median windows: random windows (some empty, some across a bin edge, some a
    # single key), repeated values, a tiny cap; the kernel against the numpy reference. Chunks of
    # one and of several of the kernel's blocks of 4096 rows (with a ragged last one), and more
    # clusters than its AVX2 tables hold.
    rng = np.random.default_rng(71)
    for trial in range(8):
        n = [2000, 9003, 4096, 12_289][trial % 4] + trial
        k = int(rng.integers(1, 7)) if trial < 4 else int(rng.integers(12, 40))
        wh = np.exp(rng.normal(2.5, 0.8, (n, 2))).astype(dtype)
        wh[rng.random(n) < 0.2, 1] = 12.5  # a spike of equal values
        anchors = wh[rng.choice(n, k, replace=False)].astype(np.float64)
        keys = wh.astype(np.float32).view(np.uint32).astype(np.int64)
        key_lo, shift, bins = [int(keys[:, X].min()) for X in range(2)], [int(rng.integers(10, 20))] * 2, 64
        centre = keys[rng.integers(0, n, (2, k)), [[0], [1]]]
        half = rng.integers(0, 1 << 20, (2, k)) * (trial > 0)
        lo, hi = centre - half, centre + half
        lo[0, 0], hi[0, 0] = 0xFFFFFFFF, 0  # no window
        cap = [1 << 30, 5][trial % 2]
        out = fastanchor._core._chunk_lloyd(
            wh=wh,
            anchors=anchors,
            prev_anchors=None,
            mode="median",
            key_lo_w=key_lo[0],
            key_lo_h=key_lo[1],
            shift_w=shift[0],
            shift_h=shift[1],
            bins=bins,
            want_labels=True,
            window_lo=lo.astype(np.uint32),
            window_hi=hi.astype(np.uint32),
            window_cap=cap,
        )
        want = ref.gather_windows(wh, out["labels"], k, lo, hi, key_lo, shift, bins, cap)
        got = [out[key] for key in ("window_values", "window_counts", "window_slots")]
        order = np.lexsort((got[0], got[2]))  # the kernel's order: by slot, then value
        np.testing.assert_array_equal(order, np.arange(order.size))
        for g, w in zip(got, want[:3]):
            np.testing.assert_array_equal(g, w)
        np.testing.assert_array_equal(out["window_below"], want[3])
        np.testing.assert_array_equal(out["window_overflow"], want[4])
        assert trial % 2 == 0 or want[4].any()  # the cap bites where it is tiny


def _window_run(rng: np.random.Generator, k: int, f32: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A gathered window run: distinct values per slot, ascending, with counts (from a small pool
    of values, so that runs share some; whole numbers or floats)."""
    values, counts, slots = [], [], []
    for j in sorted(rng.choice(2 * k, int(rng.integers(0, 2 * k + 1)), replace=False).tolist()):
        pool = rng.integers(1, 40, 60) if rng.random() < 0.5 else np.exp(rng.normal(2, 1, 60))
        pool = pool.astype(np.float32) if f32 else pool
        v = np.unique(rng.choice(pool, int(rng.integers(0, 30)))).astype(np.float64)
        values.append(v)
        counts.append(rng.integers(1, [2, 300, 1 << 40][int(rng.integers(0, 3))], v.size))
        slots.append(np.full(v.size, j))
    cat = [np.concatenate(p) if p else np.zeros(0) for p in (values, counts, slots)]
    return cat[0].astype(np.float64), cat[1].astype(np.int64), cat[2].astype(np.int32)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), runs=st.integers(0, 9), k=st.integers(1, 9), f32=st.booleans())
def test_merged_windows_are_the_union_of_the_runs(seed, runs, k, f32):
    rng = np.random.default_rng(seed)
    parts = [_window_run(rng, k, f32) for _ in range(runs)]
    want = ref.merge_windows(parts)
    got = fastanchor._core._merge_windows(parts)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
    # The Python run: the same union, and pickled compactly and back, the same arrays.
    merged = _chunked.WindowRun.merged(parts) if parts else _chunked.WindowRun(*want)
    back = pickle.loads(pickle.dumps(merged))
    for g, b, w in zip(merged, back, want):
        assert b.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
        np.testing.assert_array_equal(b, w)


def test_merged_windows_reject_a_run_out_of_order():
    run = (np.array([2.0, 1.0]), np.array([1, 1]), np.array([0, 0], np.int32))
    with pytest.raises(ValueError, match="not in \\(slot, value\\) order"):
        fastanchor._core._merge_windows([run])
    with pytest.raises(ValueError, match="one length"):
        fastanchor._core._merge_windows([(np.array([1.0]), np.array([1, 1]), np.array([0], np.int32))])
    # a value repeated within a slot is out of order too
    with pytest.raises(ValueError, match="order"):
        fastanchor._core._merge_windows([(np.array([1.0, 1.0]), np.array([1, 1]), np.array([0, 0], np.int32))])


def test_window_runs_pickle_compactly():
    rng = np.random.default_rng(5)
    values = np.sort(rng.random(10_000).astype(np.float32)).astype(np.float64)
    run = _chunked.WindowRun(values, np.ones(values.size, np.int64), np.repeat(np.arange(4, dtype=np.int32), 2500))
    assert len(pickle.dumps(run, protocol=5)) < 5.5 * values.size
    # float64 values that are not float32 stay float64, exactly
    wide = _chunked.WindowRun(values + 1e-12, run[1], run[2])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(wide))[0], values + 1e-12)


@pytest.mark.parametrize("n", [4096 + 5, 3, 8192])
def test_median_windows_that_hold_every_value_gather_each_row_once(n):
    # Windows over every key flag every row of every block of the kernel's: the last block's
    # flags end at its last row (a block shorter than the one before it).
    rng = np.random.default_rng(n)
    wh = np.exp(rng.normal(2, 0.5, (n, 2))).astype(np.float32)
    k = 3
    anchors = wh[:k].astype(np.float64)
    lo, hi = np.zeros((2, k), np.uint32), np.full((2, k), 0xFFFFFFFE, np.uint32)
    out = fastanchor._core._chunk_lloyd(
        wh=wh,
        anchors=anchors,
        prev_anchors=None,
        mode="median",
        key_lo_w=0,
        key_lo_h=0,
        shift_w=24,
        shift_h=24,
        bins=256,
        want_labels=True,
        window_lo=lo,
        window_hi=hi,
        window_cap=1 << 30,
    )
    want = ref.gather_windows(
        wh, out["labels"], k, lo.astype(np.int64), hi.astype(np.int64), [0, 0], [24, 24], 256, 1 << 30
    )
    assert int(out["window_counts"].sum()) == 2 * n
    for key, w in zip(("window_values", "window_counts", "window_slots"), want[:3]):
        np.testing.assert_array_equal(out[key], w)


def test_median_windows_bad_arguments():
    wh = np.exp(np.random.default_rng(72).normal(2, 0.5, (100, 2)))
    kw = dict(
        wh=wh,
        anchors=wh[:3],
        prev_anchors=None,
        key_lo_w=0,
        key_lo_h=0,
        shift_w=0,
        shift_h=0,
        bins=1,
        want_labels=False,
    )
    win = np.zeros((2, 3), np.uint32)
    with pytest.raises(ValueError, match="go together"):
        fastanchor._core._chunk_lloyd(mode="median", window_lo=win, **kw)
    with pytest.raises(ValueError, match="shape \\(2, k\\)"):
        fastanchor._core._chunk_lloyd(mode="median", window_lo=win[:1], window_hi=win[:1], **kw)
    with pytest.raises(ValueError, match="for mode 'median'"):
        fastanchor._core._chunk_lloyd(mode="mean", window_lo=win, window_hi=win, **kw)
    with pytest.raises(ValueError, match="window_cap"):
        fastanchor._core._chunk_lloyd(mode="median", window_lo=win, window_hi=win, window_cap=-1, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["mean", "median"])
@pytest.mark.parametrize("k", [5, 300])
def test_chunk_state_steps_give_the_stateless_kernels_partials(dtype, mode, k):
    # A chunk's Lloyd state (the in-memory engine's bounded assignment, kept between passes)
    # stepped through a sequence of anchor sets gives at every step the stateless kernel's labels
    # and partials, bit for bit, and the count of labels changed since its last step; one-byte
    # labels (k < 255) and int32 ones.
    rng = np.random.default_rng(73 + k)
    n = 4000
    wh = np.exp(rng.normal(2.5, 0.7, (n, 2))).astype(dtype)
    wh[: n // 4] = rng.integers(1, 30, (n // 4, 2))  # exact ties
    keys = wh.astype(np.float32).view(np.uint32)
    layout = dict(key_lo_w=int(keys[:, 0].min()), key_lo_h=int(keys[:, 1].min()), shift_w=14, shift_h=14, bins=512)
    state = fastanchor._core._chunk_state(wh=wh, k=k, mode=mode, **layout)
    assert state.exact and state.n == n and state.nbytes >= n
    anchors = wh[rng.choice(n, k, replace=False)].astype(np.float64)
    before = None
    for step in range(6):
        if step > 0:  # anchors that settle, as a fit's do
            anchors = anchors * np.exp(rng.normal(0, 0.2 / step, anchors.shape))
        win = {}
        if mode == "median":
            centre = anchors.astype(np.float32).view(np.uint32).T.astype(np.int64)
            win = dict(window_lo=(centre - 3000).astype(np.uint32), window_hi=(centre + 3000).astype(np.uint32))
            win["window_cap"] = 1 << 20
        got = state.step(anchors, **win)
        want = fastanchor._core._chunk_lloyd(
            wh=wh, anchors=anchors, prev_anchors=before, mode=mode, want_labels=True, **layout, **win
        )
        np.testing.assert_array_equal(state.labels(), want["labels"])
        assert got["changed"] == (n if before is None else want["changed"])
        for key in set(want) - {"labels", "changed"}:
            if key == "sum_exp":
                # (units may differ: the sums in the kernel's units are the same numbers)
                a = [int(h) << 64 | int(lo) for h, lo in got["sums"].reshape(-1, 2)]
                b = [int(h) << 64 | int(lo) for h, lo in want["sums"].reshape(-1, 2)]
                e = min(got["sum_exp"], want["sum_exp"])
                assert [x << (got["sum_exp"] - e) for x in a] == [x << (want["sum_exp"] - e) for x in b]
            elif key != "sums":
                np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        before = anchors


def test_chunk_state_bad_arguments():
    wh = np.exp(np.random.default_rng(74).normal(2, 0.5, (100, 2)))
    kw = dict(key_lo_w=0, key_lo_h=0, shift_w=0, shift_h=0, bins=1)
    with pytest.raises(ValueError, match="mode must be one of"):
        fastanchor._core._chunk_state(wh=wh, k=3, mode="assign", **kw)
    with pytest.raises(ValueError, match="at least one row"):
        fastanchor._core._chunk_state(wh=wh[:0], k=3, mode="mean", **kw)
    state = fastanchor._core._chunk_state(wh=wh, k=3, mode="mean", **kw)
    with pytest.raises(ValueError, match="anchors"):
        state.step(wh[:4])
    with pytest.raises(ValueError, match="for mode 'median'"):
        state.step(wh[:3], window_lo=np.zeros((2, 3), np.uint32), window_hi=np.zeros((2, 3), np.uint32))
