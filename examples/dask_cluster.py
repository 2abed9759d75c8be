"""fastanchor on a Dask cluster: YOLOv5's autoanchor over boxes stored as .npy shards, computed on
a LocalCluster of two worker processes, and the same computation out of core (no Dask), which
gives the same anchors bit for bit.

Run: pip install "fastanchor[dask]" && python examples/dask_cluster.py [N_BOXES]
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fastanchor import out_of_core


def coco_like_boxes(n: int, seed: int = 0) -> np.ndarray:
    """Box (width, height) in pixels of a 640-pixel letterboxed image: log-normal sizes with tall,
    square and wide aspect ratios."""
    rng = np.random.default_rng(seed)
    size = np.exp(rng.normal(np.log(60), 1.0, n))
    ratio = np.exp(rng.choice(np.log([0.45, 1.0, 1.8]), n, p=[0.35, 0.4, 0.25]) + rng.normal(0, 0.35, n))
    wh = np.stack([size * np.sqrt(ratio), size / np.sqrt(ratio)], axis=1)
    return np.clip(wh, 1.0, 640.0).astype(np.float32)


def main(n: int) -> None:
    import dask.array as da
    from distributed import Client, LocalCluster

    import fastanchor.dask as fd

    with tempfile.TemporaryDirectory() as tmp:
        # The dataset as shards on disk, as a conversion job over many annotation files writes it.
        shards = []
        for i, part in enumerate(np.array_split(coco_like_boxes(n), 4)):
            shards.append(Path(tmp) / f"boxes-{i}.npy")
            np.save(shards[-1], part)

        with (
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
            Client(cluster) as client,
        ):
            # One dask array over the memory-mapped shards, held in the workers' memory.
            wh = da.concatenate([da.from_array(np.load(p, mmap_mode="r"), chunks=(2**18, 2)) for p in shards])
            wh = wh.persist()
            t0 = time.perf_counter()
            on_dask = fd.autoanchor(wh, 9, seed=0, client=client)
            t_dask = time.perf_counter() - t0

        t0 = time.perf_counter()
        local = out_of_core.autoanchor(shards, 9, seed=0, budget=0, block_rows=2**18)
        t_local = time.perf_counter() - t0

    print(f"{on_dask.n_boxes:,} boxes kept ({on_dask.n_dropped} dropped), k = 9")
    print(f"Dask, 2 workers: {t_dask:.1f} s; out of core: {t_local:.1f} s")
    print(f"fitness after k-means {on_dask.kmeans.fitness:.4f}, after the search {on_dask.evolved.fitness:.4f}")
    print("anchors (w, h):", np.round(on_dask.anchors, 1).tolist())
    same = np.array_equal(on_dask.anchors, local.anchors) and on_dask.evolved == local.evolved
    print("Dask and out of core agree bit for bit:", same)
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
