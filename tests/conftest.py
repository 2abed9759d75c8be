"""Shared test setup: hypothesis profiles, the reference module, the real-data folder."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

TESTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS_DIR))  # `import reference` (tests run with --import-mode=importlib)

#: Real annotation data, beside the repository (absent in a user's fresh clone: tests skip).
DATA_DIR = TESTS_DIR.parents[1] / "shared" / "data"

settings.register_profile("default", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=100,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("quick", deadline=None, max_examples=20, derandomize=True)
settings.register_profile("thorough", deadline=None, max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))


def real_box_files() -> list[Path]:
    folder = DATA_DIR / "boxes"
    return sorted(folder.glob("*.npz")) if folder.is_dir() else []


def load_real(path: Path, img_size: int | None = None) -> np.ndarray:
    """Box (w, h) of a real dataset, optionally letterboxed to img_size (YOLOv5 convention)."""
    with np.load(path) as z:
        wh = z["wh"].astype(np.float64)
        img = z["img_wh"].astype(np.float64)
    if img_size is not None:
        wh = wh * (img_size / img.max(1))[:, None]
    return wh


def clean(wh: np.ndarray) -> np.ndarray:
    """Rows with finite, strictly positive sides."""
    return wh[np.isfinite(wh).all(1) & (wh > 0).all(1)]


needs_data = pytest.mark.skipif(not real_box_files(), reason=f"real data folder {DATA_DIR} is absent")


def tied_boxes(seed: int, n: int, dtype=np.float64, ties: bool = True) -> np.ndarray:
    """Log-normal (w, h) rows, the first third small integers (exact ties and repeated values): the
    chunked engines' test data."""
    rng = np.random.default_rng(seed)
    wh = np.exp(rng.normal(3, 0.9, (n, 2)))
    if ties:
        wh[: n // 3] = rng.integers(1, 40, (n // 3, 2))
    return wh.astype(dtype)


@pytest.fixture(scope="module")
def cluster():
    """A distributed LocalCluster of two single-threaded worker processes and its client, started
    once per test module."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0", silence_logs=40
        ) as cl,
        distributed.Client(cl, set_as_default=False) as client,
    ):
        yield cl, client


@pytest.fixture
def header_parses_off_the_main_thread(monkeypatch) -> list[str]:
    """The names of the threads other than the main one that parse a .npy header during the test
    (numpy parses it with ast.literal_eval, which CPython 3.11 cannot run on two threads at once)."""
    import ast
    import threading

    seen, parse = [], ast.literal_eval

    def spy(node):
        if threading.current_thread() is not threading.main_thread():
            seen.append(threading.current_thread().name)
        return parse(node)

    monkeypatch.setattr(ast, "literal_eval", spy)
    return seen


# A worker process killed by a test is started again by its nanny. Under the sanitizers, on a
# loaded machine, a new worker has taken more than a minute to arrive.
WORKER_RESTART_TIMEOUT = 900


def both_workers(client) -> None:
    """Waits until the cluster fixture's two workers are up again after a test killed one."""
    client.wait_for_workers(2, timeout=WORKER_RESTART_TIMEOUT)


def interrupt_latency(call, after: float = 0.3) -> float:
    """Runs call() while a timer thread sends this process SIGINT after `after` seconds; asserts
    that the call raises KeyboardInterrupt and returns the seconds from the signal to the raise.

    Python's own SIGINT handler is installed for the call and the previous one restored after:
    a process started with SIGINT ignored (background jobs of a non-interactive shell, some CI
    agents) would otherwise never see the signal, and the call would run to its end."""
    sent = {}

    def interrupt():
        sent["t"] = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(after, interrupt)
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            call()
        return time.perf_counter() - sent["t"]
    finally:
        timer.cancel()
        timer.join()
        signal.signal(signal.SIGINT, previous)


# The versions a run tested against, first in its output: every dependency and optional extra
# (an extra that is not installed says so), and whether the interpreter runs without the GIL.
_REPORTED_DISTRIBUTIONS = (
    "numpy",
    "tqdm",
    "PyYAML",
    "matplotlib",
    "orjson",
    "hypothesis",
    "pytest",
    "scikit-learn",
    "scipy",
    "torch",
    "torchvision",
    "yolov5",
    "ultralytics",
    "dask",
)


def _reported_distributions() -> list[str]:
    """The list above, and every requirement of every extra the installed fastanchor declares."""
    import re
    from importlib import metadata

    names = list(_REPORTED_DISTRIBUTIONS)
    try:
        requires = metadata.requires("fastanchor") or []
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        requires = []
    known = {n.lower().replace("_", "-") for n in names}
    for req in requires:
        m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
        if m and m.group(0).lower().replace("_", "-") not in known:
            known.add(m.group(0).lower().replace("_", "-"))
            names.append(m.group(0))
    return names


def _distribution_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def pytest_report_header(config) -> list[str]:
    import platform
    import sysconfig

    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    try:
        import fastanchor

        fa = f"fastanchor {fastanchor.__version__} from {Path(fastanchor.__file__).parent}"
    except ImportError as exc:  # the suite will fail on it; say why here too
        fa = f"fastanchor: not importable ({exc})"
    versions = ", ".join(f"{name} {_distribution_version(name)}" for name in _reported_distributions())
    return [
        fa,
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"free-threaded build: {'yes' if free_threaded else 'no'}, GIL enabled: {'yes' if gil else 'no'}",
        f"dependencies and extras: {versions}",
    ]
