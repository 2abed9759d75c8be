"""Weighted boxes in the chunked engines: avg_iou, anchor_fitness, evolve_anchors, kmeans_iou and
autoanchor out of core and on Dask give the in-memory results bit for bit, whatever the chunking of
the rows and of the weights, and bad weights get the in-memory messages with their index in the
whole array."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from conftest import clean, load_real, needs_data, real_box_files, tied_boxes
from hypothesis import given, settings
from hypothesis import strategies as st

import fastanchor
from fastanchor import _chunked
from fastanchor import out_of_core as ooc

# distributed's servers leave sockets for the garbage collector.
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:Port .* is already in use:UserWarning"),
]

#: Scales of the weights: as they are, and far outside the range the functions bring them into.
SCALES = [1.0, 1e-200, 1e250]


def _weights(seed: int, n: int, scale: float = 1.0, kind: str = "floats") -> np.ndarray:
    """Weights with zeros among them: floats spanning four orders of magnitude, or small integers."""
    rng = np.random.default_rng(seed)
    if kind == "ints":
        w = rng.integers(0, 5, n).astype(np.float64)
    else:
        w = np.exp(rng.uniform(-5.0, 4.0, n))
        w[rng.random(n) < 0.1] = 0.0
    w[0] = 1.0  # at least one positive weight
    return w * scale


def _in_memory(anchors, wh, w, thr=4.0):
    return fastanchor.avg_iou(anchors, wh, sample_weight=w), fastanchor.anchor_fitness(
        anchors, wh, thr=thr, sample_weight=w
    )


def _partials(task, merge, wh, w, args, rng):
    """Partials of a random chunking of (wh, w), merged in a random tree."""
    n = len(wh)
    cuts = np.sort(rng.integers(0, n + 1, int(rng.integers(1, 9))))
    bounds = np.unique(np.concatenate([[0], cuts, [n]]))
    parts = [task(_chunked.WeightedBlock(wh[b:e], w[b:e]), int(b), *args) for b, e in zip(bounds[:-1], bounds[1:])]
    parts = [parts[i] for i in rng.permutation(len(parts))]
    while len(parts) > 1:
        i = int(rng.integers(0, len(parts) - 1))
        parts[i : i + 2] = [merge(parts[i], parts[i + 1])]
    return parts[0]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 13_000),
    dtype=st.sampled_from([np.float32, np.float64]),
    scale=st.sampled_from(SCALES),
    kind=st.sampled_from(["floats", "ints"]),
)
def test_weighted_partials_merge_to_the_in_memory_values(seed, n, dtype, scale, kind):
    rng = np.random.default_rng(seed)
    wh = tied_boxes(seed % 1000, n, dtype)
    w = _weights(seed, n, scale, kind)
    anchors = wh[rng.choice(n, min(n, 5), replace=False)].astype(np.float64)
    want_iou, want_fit = _in_memory(anchors, wh, w)
    ws = _chunked.WeightScale.of(float(w.max()))
    part = _partials(_chunked.task_avg_iou, _chunked.merge_avg_iou, wh, w, (anchors, n, ws), rng)
    assert _chunked.finish_avg_iou(part, n) == want_iou
    part = _partials(_chunked.task_fitness, _chunked.merge_fitness, wh, w, (anchors, 4.0, ws), rng)
    got = _chunked.finish_fitness(part, n, len(anchors))
    assert got == (want_fit.fitness, want_fit.bpr, want_fit.aat, want_fit.avg_iou)
    # The chunks' fixed-point total weight: the sum of every scaled weight / the largest, in units
    # of 2**-50 rounded to nearest even (each term below 2**51, so numpy's rint is exact).
    total = _partials(_chunked.task_weight_total, _chunked.merge_totals, wh, w, (ws,), rng)["totals"][0]
    scaled = fastanchor._validation.as_weights(w, n)
    assert total == sum(int(t) for t in np.rint(scaled / scaled.max() * 2.0**50).astype(np.int64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", SCALES)
def test_weighted_scores_out_of_core_are_the_in_memory_ones(tmp_path, dtype, scale):
    wh = tied_boxes(3, 20_000, dtype)
    w = _weights(4, 20_000, scale)
    anchors = fastanchor.kmeans_iou(wh, 9, seed=0).anchors
    want_iou, want_fit = _in_memory(anchors, wh, w, thr=3.0)
    # weights as an array, a memmap of a .npy file, its path, and shards cut elsewhere than the rows'
    np.save(tmp_path / "w.npy", w)
    np.save(tmp_path / "w0.npy", w[:7001])
    np.save(tmp_path / "w1.npy", w[7001:])
    shards = [wh[:12_345], wh[12_345:]]
    for rows, weights, block_rows in [
        (wh, w, 4096),
        (wh, np.load(tmp_path / "w.npy", mmap_mode="r"), 1000),
        (shards, tmp_path / "w.npy", 5000),
        (shards, [tmp_path / "w0.npy", tmp_path / "w1.npy"], 3333),
        (wh, list(w), 20_000),
    ]:
        assert ooc.avg_iou(anchors, rows, sample_weight=weights, block_rows=block_rows, n_threads=2) == want_iou
        got = ooc.anchor_fitness(anchors, rows, thr=3.0, sample_weight=weights, block_rows=block_rows)
        assert got == want_fit


@pytest.mark.parametrize("objective", ["fitness", "avg_iou", "recall"])
@pytest.mark.parametrize("cache_bytes", [0, 1 << 30])
def test_weighted_search_out_of_core_is_the_in_memory_search(objective, cache_bytes):
    wh = tied_boxes(5, 12_000, np.float32)
    w = _weights(6, 12_000, kind="ints")
    anchors = fastanchor.kmeans_iou(wh, 6, seed=1).anchors
    kw = dict(generations=40, seed=7, objective=objective, sample_weight=w)
    want = fastanchor.evolve_anchors(anchors, wh, **kw)
    got = ooc.evolve_anchors(anchors, wh, block_rows=2500, cache_bytes=cache_bytes, n_threads=2, **kw)
    np.testing.assert_array_equal(got.anchors, want.anchors)
    assert (got.fitness, got.bpr, got.aat, got.avg_iou) == (want.fitness, want.bpr, want.aat, want.avg_iou)
    assert (got.objective, got.initial_fitness, got.n_improved) == (
        want.objective,
        want.initial_fitness,
        want.n_improved,
    )
    np.testing.assert_array_equal(got.history, want.history)
    # the weights matter: unit weights give another search
    unit = ooc.evolve_anchors(anchors, wh, block_rows=2500, generations=40, seed=7, objective=objective)
    assert unit.initial_fitness != got.initial_fitness


def _message(call) -> str:
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    return f"{type(info.value).__name__}: {info.value}"


def test_bad_weights_get_the_in_memory_messages(tmp_path):
    wh = tied_boxes(7, 9000)
    anchors = wh[:4]
    w = _weights(8, 9000)
    nan_late = w.copy()
    nan_late[[7777, 8000]] = [np.nan, -2.0]
    bad = [
        nan_late,
        -w,
        np.zeros(9000),
        w[:-1],
        np.r_[w, 1.0],
        np.ones(9000, dtype=bool),
    ]
    for weights in bad:
        want = _message(lambda: fastanchor.avg_iou(anchors, wh, sample_weight=weights))
        got = _message(lambda: ooc.avg_iou(anchors, wh, sample_weight=weights, block_rows=1000))
        assert got == want
        got = _message(lambda: ooc.anchor_fitness(anchors, wh, sample_weight=weights, block_rows=4096))
        assert got == want
    assert "the first is index 7777: nan" in _message(lambda: ooc.avg_iou(anchors, wh, sample_weight=nan_late))
    with pytest.raises(ValueError, match="one-dimensional"):
        ooc.avg_iou(anchors, wh, sample_weight=np.ones((9000, 1)))
    with pytest.raises(FileNotFoundError):
        ooc.avg_iou(anchors, wh, sample_weight=tmp_path / "absent.npy")
    # the fit's errors: bad weights as above, too few boxes of positive weight
    for weights in bad:
        want = _message(lambda: fastanchor.avg_iou(anchors, wh, sample_weight=weights))
        assert _message(lambda: ooc.kmeans_iou(wh, 3, sample_weight=weights, block_rows=1000)) == want
    few = np.zeros(9000)
    few[[5, 6000]] = 1.0
    with pytest.raises(ValueError, match=r"k=3 is larger than the number of boxes with positive weight \(2\)"):
        ooc.kmeans_iou(wh, 3, init=anchors[:3], sample_weight=few)
    with pytest.raises(ValueError, match="distinct boxes with positive weight"):
        fastanchor.kmeans_iou(wh, 3, sample_weight=few)
    for weights in bad:
        want = _message(lambda: fastanchor.autoanchor(wh, 3, sample_weight=weights, generations=5))
        assert _message(lambda: ooc.autoanchor(wh, 3, sample_weight=weights, generations=5, block_rows=999)) == want
    # every box of positive weight dropped (below 2 pixels on both sides)
    tiny = wh.copy()
    tiny[:, :] = np.where(few[:, None] > 0, 1.5, tiny)
    with pytest.warns(UserWarning):
        want = _message(lambda: fastanchor.autoanchor(tiny, 3, sample_weight=few, generations=5))
    with pytest.warns(UserWarning):
        assert _message(lambda: ooc.autoanchor(tiny, 3, sample_weight=few, generations=5, block_rows=999)) == want


@needs_data
def test_real_data_weighted_by_size():
    paths = [p for p in real_box_files() if p.stem == "voc2007_train"]
    if not paths:
        pytest.skip("voc2007_train is absent")
    wh = clean(load_real(paths[0], 640))
    # rebalanced by size: each box weighted by the inverse frequency of its area's decile
    area = wh[:, 0] * wh[:, 1]
    decile = np.searchsorted(np.quantile(area, np.linspace(0.1, 0.9, 9)), area)
    w = 1.0 / np.bincount(decile)[decile]
    anchors = fastanchor.kmeans_iou(wh, 9, seed=0).anchors
    want_iou, want_fit = _in_memory(anchors, wh, w)
    assert ooc.avg_iou(anchors, wh, sample_weight=w, block_rows=777) == want_iou
    assert ooc.anchor_fitness(anchors, wh, thr=4.0, sample_weight=w, block_rows=777) == want_fit
    # the weighted k-means from those anchors, both updates
    for update in ("median", "mean"):
        want = fastanchor.kmeans_iou(wh, 9, init=anchors, sample_weight=w, update=update)
        got = ooc.kmeans_iou(wh, 9, init=anchors, sample_weight=w, update=update, block_rows=1234)
        np.testing.assert_array_equal(got.anchors, want.anchors)
        np.testing.assert_array_equal(got.labels, want.labels)
        assert (got.avg_iou, got.n_iter) == (want.avg_iou, want.n_iter)


# --------------------------------------------------------------------------------------------
# Dask: the weights as a dask array, a Series, a DataFrame column or a numpy array; persisted
# with the rows (a pass on held chunks) or not (a task per chunk and a tree of merges).


def test_weighted_scores_on_dask_schedulers(tmp_path):
    da = pytest.importorskip("dask.array")
    fd = pytest.importorskip("fastanchor.dask")
    wh = tied_boxes(9, 15_000, np.float32)
    w = _weights(10, 15_000, 1e-200)
    anchors = fastanchor.kmeans_iou(wh, 7, seed=2).anchors
    want_iou, want_fit = _in_memory(anchors, wh, w)
    x = da.from_array(wh, chunks=(4000, 2))
    np.save(tmp_path / "w0.npy", w[:6000])
    np.save(tmp_path / "w1.npy", w[6000:])
    shards = [str(tmp_path / "w0.npy"), tmp_path / "w1.npy"]
    for weights in (w, da.from_array(w, chunks=2500), da.from_array(w, chunks=15_000), shards):
        assert fd.avg_iou(anchors, x, sample_weight=weights, scheduler="sync") == want_iou
        assert fd.anchor_fitness(anchors, x, thr=4.0, sample_weight=weights, scheduler="threads") == want_fit
    with pytest.raises(ValueError, match=r"must have shape \(15000,\) to match the boxes, got shape \(14999,\)"):
        fd.avg_iou(anchors, x, sample_weight=da.from_array(w[1:]), scheduler="sync")
    with pytest.raises(ValueError, match="one-dimensional"):
        fd.avg_iou(anchors, x, sample_weight=da.ones((15_000, 2)), scheduler="sync")
    bad = w.copy()
    bad[12_001] = np.inf
    want = _message(lambda: fastanchor.avg_iou(anchors, wh, sample_weight=bad))
    assert _message(lambda: fd.avg_iou(anchors, x, sample_weight=da.from_array(bad, chunks=999))) == want


def test_weighted_scores_and_search_on_a_cluster(cluster):
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    fd = pytest.importorskip("fastanchor.dask")
    from fastanchor.dask._api import DaskExecutor

    _, client = cluster
    wh = tied_boxes(11, 24_000, np.float32)
    w = _weights(12, 24_000, kind="ints")
    anchors = fastanchor.kmeans_iou(wh, 6, seed=3).anchors
    want_iou, want_fit = _in_memory(anchors, wh, w)
    kw = dict(generations=30, seed=5, sample_weight=w)
    want = fastanchor.evolve_anchors(anchors, wh, **kw)
    # persisted together: each pass runs on the chunks where they are held, rows with their weights
    x, dw = client.persist([da.from_array(wh, chunks=(5000, 2)), da.from_array(w, chunks=5000)])
    client.gather(distributed.futures_of(x) + distributed.futures_of(dw))
    assert DaskExecutor(x, client, None, dw)._held_groups() is not None
    assert fd.avg_iou(anchors, x, sample_weight=dw, client=client) == want_iou
    assert fd.anchor_fitness(anchors, x, thr=4.0, sample_weight=dw, client=client) == want_fit
    kw["sample_weight"] = dw
    got = fd.evolve_anchors(anchors, x, client=client, **kw)
    np.testing.assert_array_equal(got.anchors, want.anchors)
    assert (got.fitness, got.bpr, got.aat, got.avg_iou) == (want.fitness, want.bpr, want.aat, want.avg_iou)
    np.testing.assert_array_equal(got.history, want.history)
    # weights chunked otherwise than the rows, not persisted: a task per chunk
    assert (
        fd.anchor_fitness(anchors, x, thr=4.0, sample_weight=da.from_array(w, chunks=7000), client=client) == want_fit
    )
    # a DataFrame's column, and a Series
    df = dd.from_pandas(pd.DataFrame({"w": wh[:, 0], "h": wh[:, 1], "weight": w}), npartitions=5)
    assert fd.avg_iou(anchors, df, sample_weight="weight", client=client) == want_iou
    assert fd.anchor_fitness(anchors, df, thr=4.0, sample_weight=df["weight"], client=client) == want_fit
    with pytest.raises(ValueError, match="no column 'wt'"):
        fd.avg_iou(anchors, df, sample_weight="wt", client=client)
    # the weighted k-means from given anchors, and seeded (the same for any chunking)
    init = wh[[0, 100, 2000, 9000, 15000, 23000]].astype(np.float64)
    want_fit = fastanchor.kmeans_iou(wh, 6, init=init, sample_weight=w)
    got_fit = fd.kmeans_iou(x, 6, init=init, sample_weight=dw, client=client)
    _same_fit(got_fit, want_fit, client.compute(got_fit.labels).result())
    seeded = fd.kmeans_iou(x, 6, seed=4, sample_weight=dw, client=client, init_sample=6000)
    other = ooc.kmeans_iou(wh, 6, seed=4, sample_weight=w, block_rows=3333, init_sample=6000)
    _same_fit(seeded, other, client.compute(seeded.labels).result())


# --------------------------------------------------------------------------------------------
# The weighted k-means over chunks (the median update): its integer weights' sums merge exactly,
# so it is the in-memory fit bit for bit from given anchors, and the same for any chunking from a
# seed.


def _same_fit(got, want, labels=None) -> None:
    np.testing.assert_array_equal(got.anchors, want.anchors)
    np.testing.assert_array_equal(got.labels if labels is None else labels, want.labels)
    assert (got.avg_iou, got.n_iter, got.converged) == (want.avg_iou, want.n_iter, want.converged)


def _fit_weights(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    if kind == "ints":  # counts: ties of exact halves, as repeated boxes make them
        w = rng.integers(0, 4, n).astype(np.float64)
    elif kind == "equal":  # equal positive weights among zeros: the unit-weight fit of the others
        w = np.where(rng.random(n) < 0.2, 0.0, 3.0)
    else:  # floats over eight orders of magnitude, a tenth of them zero
        w = np.exp(rng.uniform(-9.0, 9.0, n))
        w[rng.random(n) < 0.1] = 0.0
    w[int(rng.integers(0, n))] = 2.5
    return w


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(40, 3000),
    k=st.integers(1, 9),
    dtype=st.sampled_from([np.float32, np.float64]),
    kind=st.sampled_from(["ints", "floats", "equal"]),
    coarse=st.booleans(),
    update=st.sampled_from(["median", "mean"]),
)
def test_weighted_kmeans_out_of_core_is_the_in_memory_fit(seed, n, k, dtype, kind, coarse, update):
    rng = np.random.default_rng(seed)
    wh = rng.lognormal(3.0, 0.7, (n, 2))
    if coarse:  # few distinct values: many equal keys, medians inside one float32 key for float64 rows
        wh = np.round(wh / 4.0) * 4.0 + 1.0 + (dtype == np.float64) * 1e-9 * rng.integers(0, 3, (n, 2))
    wh = wh.astype(dtype)
    w = _fit_weights(rng, n, kind)
    positive = np.unique(wh[w > 0], axis=0)
    if positive.shape[0] < k:
        return
    init = positive[rng.choice(positive.shape[0], k, replace=False)].astype(np.float64)
    want = fastanchor.kmeans_iou(wh, k, init=init, sample_weight=w, update=update)
    block = int(rng.integers(1, n + 1))
    cache = int(rng.integers(0, 2)) << 30
    got = ooc.kmeans_iou(wh, k, init=init, sample_weight=w, update=update, block_rows=block, cache_bytes=cache)
    _same_fit(got, want)


@pytest.mark.parametrize("scale", SCALES + [1e-300])
@pytest.mark.parametrize("update", ["median", "mean"])
def test_weighted_kmeans_at_any_scale_of_the_weights(scale, update):
    """Weights far outside the range the in-memory functions bring them into: the same integer
    weights, so the same fit, from given anchors and from a seed (no more rows than the sample)."""
    rng = np.random.default_rng(3)
    wh = rng.lognormal(3.0, 0.8, (20_000, 2)).astype(np.float32)
    w = np.exp(rng.uniform(-9.0, 9.0, 20_000)) * scale
    w[rng.random(20_000) < 0.1] = 0.0
    init = wh[rng.choice(20_000, 7, replace=False)].astype(np.float64)
    kw = dict(sample_weight=w, update=update)
    _same_fit(ooc.kmeans_iou(wh, 7, init=init, block_rows=3000, **kw), fastanchor.kmeans_iou(wh, 7, init=init, **kw))
    _same_fit(ooc.kmeans_iou(wh, 7, seed=1, block_rows=3000, **kw), fastanchor.kmeans_iou(wh, 7, seed=1, **kw))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, "float64 floats"])
@pytest.mark.parametrize("mode", ["median", "mean"])
def test_a_weighted_chunk_state_gives_the_kernels_partials(dtype, mode):
    """A weighted chunk state (the bounded engine's labels, its partials made from them and the
    weights) gives the stateless kernel's partials, pass after pass: the same counts, weights and
    histograms, and mean sums of the same value (in its own units)."""
    from fractions import Fraction

    from fastanchor import _core

    rng = np.random.default_rng(12)
    wh = rng.lognormal(3.0, 0.8, (5000, 2))
    wh = wh.astype(np.float32).astype(np.float64) if dtype == "float64 floats" else wh.astype(dtype)
    w = np.exp(rng.uniform(-5.0, 5.0, 5000))
    shift = _chunked.weight_shift(float(w.max()))
    layout = _chunked.Layout.of([0x3F000000, 0x3F000000], [0x45000000, 0x45000000], 256)
    args = dict(key_lo_w=layout.lo[0], key_lo_h=layout.lo[1], shift_w=layout.shift[0], shift_h=layout.shift[1])
    state = _core._chunk_state(wh=wh, k=6, mode=mode, bins=layout.bins, weights=w, weight_shift=shift, **args)
    assert state.exact

    def value(out):
        exp, hi, lo = out["sum_exp"], _chunked._u128(out["sums_hi"]), _chunked._u128(out["sums_lo"])
        return [Fraction((h << 47) + low) * Fraction(2) ** exp for h, low in zip(hi, lo)]

    anchors = wh[rng.choice(5000, 6, replace=False)].astype(np.float64)
    for _ in range(4):
        got = state.step(anchors=anchors)
        want = _core._chunk_lloyd(
            wh=wh,
            anchors=anchors,
            prev_anchors=None,
            mode=mode,
            bins=layout.bins,
            want_labels=False,
            weights=w,
            weight_shift=shift,
            **args,
        )
        np.testing.assert_array_equal(got["count"], want["count"])
        np.testing.assert_array_equal(got["weight"], want["weight"])
        if mode == "median":
            np.testing.assert_array_equal(got["hist"], want["hist"])
        else:
            assert value(got) == value(want)
        anchors = anchors * rng.uniform(0.9, 1.1, anchors.shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weighted_windows_and_selection_count_weights(dtype):
    """A weighted Lloyd pass's windows hold each distinct value with the integer weights of its
    boxes, and below each window the weight of its cluster's keys from the start of the window's
    first bin: in the stateless kernel and a chunk state alike (whose histograms are then the
    kernel's too). A chunk state's selection pass gives the stateless pass's values, labels,
    weights and histograms, with weights and without."""
    from fastanchor import _core

    rng = np.random.default_rng(14)
    n, k = 6000, 5
    wh = rng.lognormal(3.0, 0.8, (n, 2)).astype(dtype)
    wh[:2000] = rng.integers(5, 30, (2000, 2))  # repeated values
    exact = wh.astype(np.float64)
    w = rng.integers(1, 9, n) * rng.choice([1.0, 0.37], n)
    shift = _chunked.weight_shift(float(w.max()))
    units = ref.median_int_weights(w)
    layout = _chunked.Layout.of([0x3F000000, 0x3F000000], [0x45000000, 0x45000000], 256)
    args = dict(key_lo_w=layout.lo[0], key_lo_h=layout.lo[1], shift_w=layout.shift[0], shift_h=layout.shift[1])
    anchors = np.array([[8.0, 9.0], [15.0, 25.0], [22.0, 14.0], [40.0, 35.0], [90.0, 70.0]])
    lo = (anchors * 0.9).astype(np.float32).view(np.uint32).T.copy()
    hi = (anchors * 1.1).astype(np.float32).view(np.uint32).T.copy()
    win = dict(window_lo=lo, window_hi=hi, window_cap=10**6)
    weighted = dict(weights=w, weight_shift=shift)
    out = _core._chunk_lloyd(
        wh=wh, anchors=anchors, prev_anchors=None, mode="median", want_labels=True, bins=256, **args, **win, **weighted
    )
    labels, _ = ref.assign(anchors, exact)
    np.testing.assert_array_equal(out["labels"], labels)
    keys = wh.astype(np.float32).view(np.uint32)
    gathered = 0
    for X in range(2):
        for c in range(k):
            j = X * k + c
            inside = (labels == c) & (keys[:, X] >= lo[X, c]) & (keys[:, X] <= hi[X, c])
            values, at = np.unique(exact[inside, X], return_inverse=True)
            mine = out["window_slots"] == j
            np.testing.assert_array_equal(out["window_values"][mine], values)
            np.testing.assert_array_equal(out["window_counts"][mine], np.bincount(at, weights=units[inside]))
            b = layout.bin(X, int(lo[X, c]))
            start = layout.key_range(X, b, b)[0]
            below = (labels == c) & (keys[:, X] >= start) & (keys[:, X] < lo[X, c])
            assert out["window_below"][X, c] == units[below].sum() and out["window_overflow"][X, c] == 0
            gathered += int(inside.sum())
    assert gathered > 1000
    state = _core._chunk_state(wh=wh, k=k, mode="median", bins=256, **args, **weighted)
    got = state.step(anchors=anchors, **win)
    for key in ("count", "weight", "hist", "window_values", "window_counts", "window_slots", "window_below"):
        np.testing.assert_array_equal(got[key], out[key], err_msg=key)
    # A selection pass: gather one rank's window, refine the other's range.
    first = np.stack([lo, lo]).astype(np.int64)
    last = np.stack([hi, hi]).astype(np.int64)
    mode = np.stack([np.ones((2, k)), 2 * np.ones((2, k))]).astype(np.int8)
    plan = dict(first=first, last=last, mode=mode, shift=np.full((2, 2, k), 8, np.int64), bins=64)
    for state_args in (weighted, {}):
        st = _core._chunk_state(wh=wh, k=k, mode="median", bins=256, **args, **state_args)
        st.step(anchors=anchors)
        mine = st.select(**plan)
        want = _core._chunk_select(wh=wh, labels=None, anchors=anchors, **plan, **state_args)
        assert mine.keys() == want.keys() and ("weights" in mine) == bool(state_args)
        np.testing.assert_array_equal(mine["hist"], want["hist"])
        assert mine["hist"].sum() > 0
        for key in ("values", "labels") + (("weights",) if state_args else ()):
            for a, b in zip(mine[key], want[key]):
                np.testing.assert_array_equal(a, b, err_msg=key)


def test_weighted_mean_sums_beyond_128_bits():
    """float64 sides over twelve orders of magnitude, weights over five: the exact sums of weight
    times value pass 2^128 (two halves), and their rounding to a double is the in-memory one."""
    rng = np.random.default_rng(11)
    for _ in range(10):
        wh = np.exp(rng.uniform(np.log(1e-6), np.log(1e6), (5000, 2)))
        w = rng.random(5000) * 1e5
        init = wh[rng.choice(5000, 3, replace=False)]
        want = fastanchor.kmeans_iou(wh, 3, init=init, sample_weight=w, update="mean", max_iter=5)
        _same_fit(ooc.kmeans_iou(wh, 3, init=init, sample_weight=w, update="mean", max_iter=5, block_rows=777), want)


@pytest.mark.parametrize("kind", ["ints", "floats"])
def test_weighted_kmeans_from_a_seed_is_the_same_for_any_chunking(tmp_path, kind):
    rng = np.random.default_rng(4)
    wh = tied_boxes(13, 20_000, np.float32)
    w = _fit_weights(rng, 20_000, kind)
    np.save(tmp_path / "w0.npy", w[:7000])
    np.save(tmp_path / "w1.npy", w[7000:])
    fits = [
        ooc.kmeans_iou(wh, 7, seed=8, sample_weight=w, block_rows=b, init_sample=5000, n_init=2)
        for b in (1000, 6001, 20_000)
    ]
    fits.append(
        ooc.kmeans_iou(
            wh, 7, seed=8, sample_weight=[tmp_path / "w0.npy", tmp_path / "w1.npy"], init_sample=5000, n_init=2
        )
    )
    for f in fits[1:]:
        _same_fit(f, fits[0])
    # with no more rows of positive weight than the sample, the in-memory fit from the same seed
    # (the best of n_init runs by the same average IoU, over the same boxes)
    small = ooc.kmeans_iou(wh[:3000], 5, seed=8, sample_weight=w[:3000], block_rows=700, n_init=3)
    _same_fit(small, fastanchor.kmeans_iou(wh[:3000], 5, seed=8, sample_weight=w[:3000], n_init=3))
    n_pos = int(np.count_nonzero(w > 0))
    fit = ooc.kmeans_iou(wh, 5, seed=9, sample_weight=w, block_rows=4096, init_sample=n_pos, n_init=2)
    _same_fit(fit, fastanchor.kmeans_iou(wh, 5, seed=9, sample_weight=w, n_init=2))


def test_weighted_median_is_exact_in_integer_weights():
    """The in-memory weighted median adds integer weights (2^-30 of the largest): the reference's,
    and a weight of 2 is two boxes of weight 1, also where the float sums of the weights round."""
    from reference import median_int_weights, weighted_median

    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(1, 12))
        x = rng.integers(1, 6, n).astype(np.float64)
        w = rng.choice([0.1, 0.2, 0.3, 0.7, 1.1], n)
        got = fastanchor.kmeans_iou(np.c_[x, x], 1, init=[[3.0, 3.0]], sample_weight=w, max_iter=1).anchors
        units = median_int_weights(w)
        assert got[0, 0] == weighted_median(x, units)
    # integer weights are repeated boxes
    x = np.array([1.0, 2.0, 3.0, 4.0])
    w = np.array([3.0, 1.0, 2.0, 2.0])
    got = fastanchor.kmeans_iou(np.c_[x, x], 1, init=[[1.0, 1.0]], sample_weight=w, max_iter=1).anchors[0, 0]
    assert got == np.median(np.repeat(x, w.astype(int))) == 2.5


# --------------------------------------------------------------------------------------------
# The weighted autoanchor over chunks: from the same seed, the in-memory autoanchor bit for bit,
# with small boxes dropped, samples for the k-means and the search or not.


def _same_auto(got, want) -> None:
    np.testing.assert_array_equal(got.anchors, want.anchors)
    np.testing.assert_array_equal(got.kmeans_anchors, want.kmeans_anchors)
    np.testing.assert_array_equal(got.history, want.history)
    assert (got.kmeans, got.evolved) == (want.kmeans, want.evolved)
    assert (got.kmeans_objectives, got.evolved_objectives) == (want.kmeans_objectives, want.evolved_objectives)
    assert (got.n_boxes, got.n_dropped, got.n_small) == (want.n_boxes, want.n_dropped, want.n_small)


@pytest.mark.parametrize("kind", ["ints", "floats", "equal"])
@pytest.mark.parametrize("samples", [(3000, 5000), (100_000, 100_000), (3000, 100_000), (100_000, 5000)])
def test_weighted_autoanchor_out_of_core_is_the_in_memory_one(kind, samples):
    rng = np.random.default_rng(6)
    n = 20_000
    wh = rng.lognormal(3.0, 1.0, (n, 2)).astype(np.float32)
    wh[rng.random(n) < 0.02] = 1.5  # dropped
    w = _fit_weights(rng, n, kind)
    init_sample, search_sample = samples
    kw = dict(seed=3, generations=40, sample_weight=w, init_sample=init_sample, search_sample=search_sample, budget=0)
    with pytest.warns(UserWarning, match="extremely small"):
        want = fastanchor.autoanchor(wh, 6, objective="avg_iou", **kw)
    with pytest.warns(UserWarning, match="extremely small"):
        got = ooc.autoanchor(wh, 6, objective="avg_iou", block_rows=3001, **kw)
    _same_auto(got, want)


def test_weighted_autoanchor_on_dask(cluster):
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    fd = pytest.importorskip("fastanchor.dask")
    _, client = cluster
    rng = np.random.default_rng(7)
    n = 30_000
    wh = (rng.lognormal(3.0, 1.0, (n, 2)) + 3.0).astype(np.float32)  # (no small boxes)
    w = _fit_weights(rng, n, "floats")
    kw = dict(seed=4, generations=30, sample_weight=w, init_sample=8000, search_sample=10_000)
    want = fastanchor.autoanchor(wh, 9, budget=0, **kw)
    x, dw = client.persist([da.from_array(wh, chunks=(7000, 2)), da.from_array(w, chunks=7000)])
    client.gather(distributed.futures_of(x) + distributed.futures_of(dw))
    kw["sample_weight"] = dw
    _same_auto(fd.autoanchor(x, 9, client=client, **kw), want)
    # the same with the weights chunked otherwise, and on one thread in this process
    kw["sample_weight"] = da.from_array(w, chunks=4000)
    _same_auto(fd.autoanchor(da.from_array(wh, chunks=(11_000, 2)), 9, scheduler="sync", **kw), want)
