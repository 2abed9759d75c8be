"""fastanchor.dask.load against fastanchor.datasets.load_voc on a folder of VOC files.

    python benchmarks/bench_dask_loading.py FOLDER [REPEATS]

Every case must give the same boxes and files as ``load_voc``; times are interleaved (each
repeat runs every case once), and the LocalCluster's workers are warmed before timing.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings

import numpy as np

import fastanchor.dask as fd
from fastanchor import datasets

warnings.simplefilter("ignore")


def main() -> None:
    path = sys.argv[1]
    ref = datasets.load_voc(path)
    cases = {
        "datasets.load_voc (default workers)": lambda: datasets.load_voc(path),
        "datasets.load_voc (workers=1)": lambda: datasets.load_voc(path, workers=1),
        "fastanchor.dask.load (processes)": lambda: fd.load(path, scheduler="processes"),
        "fastanchor.dask.load (threads)": lambda: fd.load(path, scheduler="threads"),
    }
    times = {k: [] for k in cases}
    for _ in range(int(sys.argv[2])):
        for k, f in cases.items():
            t = time.perf_counter()
            b = f()
            times[k].append(time.perf_counter() - t)
            assert np.array_equal(b.wh, ref.wh) and b.files == ref.files
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as c,
        Client(c) as client,
    ):
        fd.load(path, client=client)  # warm the workers (imports)
        k = "fastanchor.dask.load (LocalCluster, 2 worker processes)"
        times[k] = []
        for _ in range(int(sys.argv[2])):
            t = time.perf_counter()
            b = fd.load(path, client=client)
            times[k].append(time.perf_counter() - t)
            assert np.array_equal(b.wh, ref.wh) and b.files == ref.files
    print(f"{path}: {len(ref.files):,} files, {len(ref):,} boxes")
    for k, v in times.items():
        print(f"{k:58s} median {statistics.median(v):6.2f} s  min {min(v):6.2f} s")


if __name__ == "__main__":
    main()
