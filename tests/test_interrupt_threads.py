"""Ctrl-C stops a long fit promptly; the GIL is released; concurrent calls agree."""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import interrupt_latency

import fastanchor


def long_problem(n=400_000):
    rng = np.random.default_rng(0)
    return np.exp(rng.normal(3.0, 1.0, (n, 2)))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_interrupts_kmeans_promptly():
    wh = long_problem()
    latency = interrupt_latency(lambda: fastanchor.kmeans_iou(wh, 15, n_init=1000, seed=0))
    assert latency < 2.0
    # the process is still usable
    assert fastanchor.kmeans_iou(wh[:1000], 3, seed=0).converged


def test_gil_is_released_during_a_fit():
    wh = long_problem(300_000)
    done = threading.Event()
    ticks = 0

    def fit():
        fastanchor.kmeans_iou(wh, 9, n_init=2, seed=0, n_threads=1)
        done.set()

    t = threading.Thread(target=fit)
    t.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    t.join()
    # a fit that held the GIL would leave this loop no chance to run meanwhile
    assert ticks > 20


def test_concurrent_calls_give_the_single_threaded_results():
    rng = np.random.default_rng(1)
    problems = [np.exp(rng.normal(3.0, 1.0, (20_000, 2))) for _ in range(4)]
    expected = [fastanchor.kmeans_iou(wh, 9, seed=i, n_threads=1) for i, wh in enumerate(problems)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: fastanchor.kmeans_iou(problems[i], 9, seed=i), range(4)))
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a.anchors, b.anchors)
        np.testing.assert_array_equal(a.labels, b.labels)
