"""Weighted boxes in the chunked engines: avg_iou, anchor_fitness and evolve_anchors out of core and
on Dask give the in-memory results bit for bit, whatever the chunking of the rows and of the
weights, and bad weights get the in-memory messages with their index in the whole array."""

from __future__ import annotations

import numpy as np
import pytest
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
    # the chunked k-means and autoanchor refuse weights, and say which functions take them
    with pytest.raises(ValueError, match="avg_iou, anchor_fitness and evolve_anchors take weights"):
        ooc.kmeans_iou(wh, 3, sample_weight=w)
    with pytest.raises(ValueError, match="avg_iou, anchor_fitness and evolve_anchors take weights"):
        ooc.autoanchor(wh, 3, sample_weight=w)


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
    with pytest.raises(ValueError, match="avg_iou, anchor_fitness and evolve_anchors take weights"):
        fd.kmeans_iou(x, 3, sample_weight=dw, client=client)
