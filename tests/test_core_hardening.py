"""The core's guarantees at the edges: sizes beyond any integer range (grid metrics), Ctrl-C
bounded in work (many anchors, large batches), fixed points of converged fits with exact IoU ties,
and results immune to a caller's array changed during the call."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from conftest import interrupt_latency
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastanchor

# --- grid metrics at any scale -------------------------------------------------------------------


@settings(max_examples=60)
@given(
    scale_exp=st.floats(0.0, 30.0),
    stride=st.sampled_from([1e-3, 0.5, 8.0, 32.0, 1e6]),
    box=st.tuples(st.floats(0.0, 0.4), st.floats(0.0, 0.4), st.floats(0.5, 0.95), st.floats(0.5, 0.95)),
    anchor=st.tuples(st.floats(0.05, 1.0), st.floats(0.05, 1.0)),
)
def test_grid_best_iou_at_any_image_scale_matches_reference(scale_exp, stride, box, anchor):
    # An image of up to 1e30 pixels over strides as fine as 1e-3: up to 1e33 cells per side,
    # far beyond any 64-bit count. The box and the anchor scale with the image, so the best IoU
    # is that of the anchor centred on the box whenever the cells are small against the box.
    size = 10.0**scale_exp
    b = np.array([box]) * size
    a = np.array([anchor]) * size
    img = np.array([[size, size]])
    got = fastanchor.grid_best_iou([a], b, img, strides=[stride])
    np.testing.assert_array_equal(got, ref.grid_best_iou([(stride, a)], b, img))
    w, h = b[0, 2] - b[0, 0], b[0, 3] - b[0, 1]
    centred = ref.wh_iou(np.array([[w, h]]), a)[0, 0]
    if stride < 1e-9 * size:  # cells negligible against the box: the anchor sits on its centre
        assert got[0] == pytest.approx(centred, rel=1e-6)
    assert 0.0 <= got[0] <= 1.0


@pytest.mark.parametrize("size", [640.0, 1e18, 1e20, 1e25, 1e30])
def test_grid_recall_of_a_scaled_problem_does_not_depend_on_the_scale(size):
    box = np.array([[0.1, 0.1, 0.6, 0.7]]) * size
    anchors = [np.array([[0.5, 0.6]]) * size]
    img = np.array([[size, size]])
    best = fastanchor.grid_best_iou(anchors, box, img, strides=[size / 640 * 8])
    small = fastanchor.grid_best_iou(
        [np.array([[320.0, 384.0]])], box / size * 640, np.array([[640.0, 640.0]]), strides=[8]
    )
    assert best[0] == pytest.approx(small[0], rel=1e-12)
    # with a fixed stride of 8 the cells shrink against the box: the best IoU tends to 1
    fine = fastanchor.grid_best_iou(anchors, box, img, strides=[8])
    assert fine[0] == pytest.approx(ref.grid_best_iou([(8.0, anchors[0])], box, img)[0], rel=1e-12)
    if size >= 1e18:
        assert fine[0] == pytest.approx(1.0, abs=1e-9)
        assert fastanchor.grid_recall(anchors, box, img, strides=[8]) == 1.0


def test_grid_stride_too_small_for_the_coordinates_is_a_clear_error():
    box = np.array([[0.0, 0.0, 1e29, 1e29]])
    with pytest.raises(ValueError, match=r"strides\[1\].*too small"):
        fastanchor.grid_best_iou([np.array([[1e29, 1e29]])] * 2, box, (1e30, 1e30), strides=[8, 1e-300])
    with pytest.raises(ValueError, match=r"strides\[0\].*too small"):
        fastanchor.grid_recall([np.array([[1e29, 1e29]])], box, (1e30, 1e30), strides=[1e-290])


# --- Ctrl-C after a bounded amount of work --------------------------------------------------------

# Generous: the core polls every 50 ms of work, a machine under load stretches that.
LATENCY_BOUND = 3.0


def _lognormal_boxes(n: int, seed: int = 0) -> np.ndarray:
    return np.exp(np.random.default_rng(seed).normal(3.0, 1.0, (n, 2)))


@pytest.mark.parametrize("n_threads", [1, 2])
def test_ctrl_c_stops_a_kmeans_with_many_anchors_promptly(n_threads):
    # k = 5,000 anchors over 100,000 boxes: one assignment is 5 * 10^8 IoUs (seconds of work)
    wh = _lognormal_boxes(100_000)
    lat = interrupt_latency(
        lambda: fastanchor.kmeans_iou(wh, 5_000, seed=0, n_init=1, init="random", n_threads=n_threads), after=0.5
    )
    assert lat < LATENCY_BOUND


@pytest.mark.parametrize("n_threads", [1, 2])
def test_ctrl_c_stops_an_evolve_with_a_large_batch_promptly(n_threads):
    # 100 anchors (past the pruned kernels) and batch 4096: one pass is 4096 * 100 * 50,000 ratios
    wh = _lognormal_boxes(50_000)
    init = np.exp(np.random.default_rng(1).normal(3.0, 1.0, (100, 2)))
    lat = interrupt_latency(
        lambda: fastanchor.evolve_anchors(init, wh, generations=10**6, batch=4096, seed=0, n_threads=n_threads),
        after=0.5,
    )
    assert lat < LATENCY_BOUND


def test_ctrl_c_stops_an_evolve_of_pruned_candidates_promptly():
    wh = _lognormal_boxes(100_000)
    init = np.exp(np.random.default_rng(2).normal(3.0, 1.0, (12, 2)))
    lat = interrupt_latency(
        lambda: fastanchor.evolve_anchors(init, wh, generations=10**7, batch=4096, seed=0), after=0.5
    )
    assert lat < LATENCY_BOUND


def test_check_points_change_no_result():
    # the sliced loops (many anchors, many candidates) give the results of one thread and of two
    wh = _lognormal_boxes(9_000, seed=3)
    a1 = fastanchor.kmeans_iou(wh, 300, seed=0, n_init=1, init="random", max_iter=5, n_threads=1)
    a2 = fastanchor.kmeans_iou(wh, 300, seed=0, n_init=1, init="random", max_iter=5, n_threads=2)
    np.testing.assert_array_equal(a1.anchors, a2.anchors)
    np.testing.assert_array_equal(a1.labels, a2.labels)
    assert a1.avg_iou == pytest.approx(ref.avg_iou(a1.anchors, wh), rel=1e-12)
    np.testing.assert_array_equal(a1.labels, ref.assign(a1.anchors, wh)[0])
    init = np.exp(np.random.default_rng(4).normal(3.0, 1.0, (80, 2)))
    e1 = fastanchor.evolve_anchors(init, wh, generations=300, batch=300, seed=0, n_threads=1)
    e2 = fastanchor.evolve_anchors(init, wh, generations=300, batch=300, seed=0, n_threads=2)
    np.testing.assert_array_equal(e1.anchors, e2.anchors)


# --- exact ties: a converged fit is a fixed point --------------------------------------------------


@settings(max_examples=120)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(6, 60),
    side=st.integers(2, 8),
    k=st.integers(2, 5),
    update=st.sampled_from(["median", "mean"]),
)
def test_converged_fit_of_integer_boxes_is_a_fixed_point(seed, n, side, k, update):
    # small integer sides: many boxes tie exactly between two anchors
    wh = np.random.default_rng(seed).integers(1, side + 1, (n, 2)).astype(np.float64)
    if len(np.unique(wh, axis=0)) < k:
        return
    r = fastanchor.kmeans_iou(wh, k, seed=seed, update=update)
    if not r.converged:
        return
    again = fastanchor.kmeans_iou(wh, k, init=r.anchors, update=update, n_init=1)
    np.testing.assert_array_equal(again.anchors, r.anchors)
    np.testing.assert_array_equal(again.labels, r.labels)
    assert again.converged and again.n_iter == 1
    # each anchor with boxes is the median (mean) of the boxes labelled with it
    for j in range(k):
        members = wh[r.labels == j]
        if len(members):
            centre = np.median(members, 0) if update == "median" else members.mean(0)
            np.testing.assert_allclose(r.anchors[j], centre, rtol=1e-15)
    # and the reference follows the same rule
    want = ref.lloyd(wh, r.anchors, update=update)
    np.testing.assert_array_equal(want["anchors"], r.anchors)
    assert want["converged"] and want["n_iter"] == 1


@settings(max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(6, 40), k=st.integers(2, 4))
def test_tie_rule_matches_the_reference_from_any_start(seed, n, k):
    rng = np.random.default_rng(seed)
    wh = rng.integers(1, 6, (n, 2)).astype(np.float64)
    assume(len(np.unique(wh, axis=0)) >= k)  # (fewer distinct boxes than k is an error, tested elsewhere)
    init = rng.integers(1, 6, (k, 2)).astype(np.float64)
    got = fastanchor.kmeans_iou(wh, k, init=init, n_init=1)
    want = ref.lloyd(wh, init)
    np.testing.assert_array_equal(got.anchors, want["anchors"])
    np.testing.assert_array_equal(got.labels, want["labels"])
    assert (got.n_iter, got.converged) == (want["n_iter"], want["converged"])


# --- an input changed and restored during the call -------------------------------------------------


class _ChangeAndUndo:
    """A progress hook that, inside the call, scales half the caller's rows at the first Lloyd
    step and restores them when the call closes it (before the call's final checksum)."""

    def __init__(self, x: np.ndarray) -> None:
        self.x, self.saved = x, x[: len(x) // 2].copy()
        self.changed = False

    def __call__(self, stage: str, run: int, step: int) -> None:
        if stage == "lloyd" and not self.changed:
            self.x[: len(self.x) // 2] *= 3.0
            self.changed = True

    def close(self) -> None:
        self.x[: len(self.x) // 2] = self.saved


@pytest.mark.parametrize("copy", [False, True])
def test_copy_makes_kmeans_immune_to_a_change_undone_during_the_call(monkeypatch, copy):
    import fastanchor._kmeans as km

    wh = _lognormal_boxes(50_000, seed=5)
    want = fastanchor.kmeans_iou(wh.copy(), 9, seed=0, n_init=1)
    x = wh.copy()
    hooks = []
    monkeypatch.setattr(km, "make_progress", lambda *a, **kw: hooks.append(_ChangeAndUndo(x)) or hooks[-1])
    got = fastanchor.kmeans_iou(x, 9, seed=0, n_init=1, copy=copy)
    assert hooks and hooks[0].changed
    np.testing.assert_array_equal(x, wh)  # restored: the checksum cannot see the change
    if copy:
        np.testing.assert_array_equal(got.anchors, want.anchors)
        np.testing.assert_array_equal(got.labels, want.labels)
    else:  # the documented limit of the in-place read
        assert not np.array_equal(got.anchors, want.anchors)


def test_copy_gives_the_in_place_result_for_every_dtype():
    wh = _lognormal_boxes(5_000, seed=6)
    for arr in (wh, wh.astype(np.float32), np.asfortranarray(wh)):
        a = fastanchor.kmeans_iou(arr, 5, seed=1)
        b = fastanchor.kmeans_iou(arr, 5, seed=1, copy=True)
        np.testing.assert_array_equal(a.anchors, b.anchors)
        np.testing.assert_array_equal(a.labels, b.labels)
    with pytest.raises(TypeError, match="copy"):
        fastanchor.kmeans_iou(wh, 5, copy="yes")


@pytest.mark.parametrize("k", [12, 80])
def test_sliced_fitness_batches_equal_the_sequential_search(k):
    # batch 600: a chunk's candidates (and, with k <= 64, its tiles) are scored in several slices
    # between check points; the fixed-point sums make the result YOLOv5's sequential search's
    from fastanchor._validation import resolve_seed

    wh = _lognormal_boxes(6_000, seed=8)
    anchors = np.exp(np.random.default_rng(9).normal(3.0, 1.0, (k, 2)))

    def fitness(a):
        return fastanchor.anchor_fitness(a, wh, n_threads=1).fitness

    expected = ref.yolov5_evolve(anchors, wh, generations=600, seed=resolve_seed(5), fitness=fitness)
    got = fastanchor.evolve_anchors(anchors, wh, generations=600, strategy="yolov5", batch=600, seed=5)
    np.testing.assert_array_equal(got.anchors, expected["anchors"])
    np.testing.assert_array_equal(got.history, expected["history"])
