"""Speed of the dataset loaders (fastanchor.datasets) on real annotation files.

    python benchmarks/bench_loaders.py                 # every case, 5 repeats each
    python benchmarks/bench_loaders.py --repeat 9 --only voc

Cases (each skipped when its data is absent; a synthetic VOC folder of the same size stands in
for WIDER FACE):

* ``voc``: the 16,106 Pascal VOC XML files of ``../shared/data/raw/widerface_voc.tar.gz``
  (199,132 boxes), extracted once to a temporary folder (extraction not timed); default workers
  (all CPUs on Linux) and ``workers=1``. Target: <= 1.5 s on 2 cores.
* ``coco``: ``voc_coco_json/pascal_train2012.json`` and ``pascal_test2007.json`` with orjson
  (when installed) and with the standard json module.
* ``yolo``: ``coco128_yolo`` train2017 with blank PNG images written at the sizes of
  ``image_sizes.csv``.

Each timing is a full ``load_*`` call in this process, cold page cache not enforced (the files
are read once before timing). Prints min and median seconds.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, List

from fastanchor import datasets
from fastanchor._demo import demo_images, write_blank_png, write_voc

RAW = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "raw"


def timeit(fn: Callable[[], object], repeat: int) -> List[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def report(name: str, times: List[float], extra: str = "") -> None:
    print(f"{name:58s} min {min(times):6.3f} s   median {statistics.median(times):6.3f} s  {extra}", flush=True)


def quiet(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", datasets.AnnotationWarning)
            return fn()

    return run


def bench_voc(tmp: Path, repeat: int) -> None:
    archive = RAW / "widerface_voc.tar.gz"
    folder = tmp / "voc"
    if archive.is_file():
        with tarfile.open(archive) as tar:
            if sys.version_info >= (3, 12):
                tar.extractall(folder, filter="data")
            else:
                tar.extractall(folder)
        label = "WIDER FACE VOC, 16,106 files"
    else:
        print(f"({archive} is absent: timing a synthetic VOC folder of 16,106 files instead)")
        write_voc(str(folder), demo_images(16106, seed=0, boxes_per_image=12.4))
        label = "synthetic VOC, 16,106 files"
    boxes = quiet(lambda: datasets.load_voc(folder))()  # warm the page cache
    n = f"{len(boxes):,} boxes, {os.cpu_count()} CPUs"
    report(f"load_voc({label})", timeit(quiet(lambda: datasets.load_voc(folder)), repeat), n)
    report(f"load_voc({label}, workers=1)", timeit(quiet(lambda: datasets.load_voc(folder, workers=1)), repeat), n)


def bench_coco(repeat: int) -> None:
    for name in ("pascal_train2012.json", "pascal_test2007.json"):
        path = RAW / "voc_coco_json" / name
        if not path.is_file():
            print(f"({path} is absent: skipped)")
            continue
        n = f"{len(datasets.load_coco(path)):,} boxes"
        try:
            import orjson  # noqa: F401

            report(f"load_coco({name}) with orjson", timeit(lambda: datasets.load_coco(path), repeat), n)
        except ImportError:
            print("(orjson is not installed: `pip install 'fastanchor[fast]'`)")
        saved = sys.modules.get("orjson")
        sys.modules["orjson"] = None  # type: ignore[assignment]  # import fails: json is used
        try:
            report(f"load_coco({name}) with json", timeit(lambda: datasets.load_coco(path), repeat), n)
        finally:
            if saved is None:
                del sys.modules["orjson"]
            else:
                sys.modules["orjson"] = saved


def bench_yolo(tmp: Path, repeat: int) -> None:
    src = RAW / "coco128_yolo"
    if not src.is_dir():
        print(f"({src} is absent: skipped)")
        return
    root = tmp / "coco128"
    shutil.copytree(src / "labels", root / "labels")
    shutil.copy(src / "data.yaml", root / "data.yaml")
    with open(src / "image_sizes.csv", newline="") as f:
        for row in csv.DictReader(f):
            p = root / "images" / row["image"]
            p.parent.mkdir(parents=True, exist_ok=True)
            write_blank_png(str(p), int(row["width"]), int(row["height"]))
    n = f"{len(quiet(lambda: datasets.load_yolo(root))()):,} boxes"
    report("load_yolo(coco128 train2017, 128 images)", timeit(quiet(lambda: datasets.load_yolo(root)), repeat), n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=("voc", "coco", "yolo"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-loaders-") as tmp:
        if args.only in (None, "voc"):
            bench_voc(Path(tmp), args.repeat)
        if args.only in (None, "coco"):
            bench_coco(args.repeat)
        if args.only in (None, "yolo"):
            bench_yolo(Path(tmp), args.repeat)


if __name__ == "__main__":
    main()
