"""Loading one large COCO json: time against the json parse alone, and peak memory.

    python benchmarks/bench_coco_large.py                       # writes /tmp/coco_large.json once
    python benchmarks/bench_coco_large.py --json F --repeat 3
    python benchmarks/bench_coco_large.py --before /path/to/old/python   # also the old loader

The file is synthetic and COCO-train sized by default: 118,287 images and 860,001 boxes (the
counts of instances_train2017.json, without its segmentation polygons: about 119 MB). Every
measurement runs in a fresh process (``python -c``) so that its peak resident memory
(``ru_maxrss``) is its own:

* ``parse``: ``orjson.loads`` / ``json.loads`` of the file's bytes (the lower bound of any
  loader that parses the whole document);
* ``load``: ``fastanchor.datasets.load_coco`` with orjson, and with the json module;
* ``anchors``: the whole ``fastanchor anchors FILE --seed 0 --quiet`` command (load, k-means,
  evolution, report), timed from outside the process.

With ``--before DIR`` the ``load`` and ``anchors`` rows are repeated with ``PYTHONPATH=DIR``
(an older checkout's ``python`` folder), interleaved with the current ones.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

HERE = Path(__file__).resolve().parent
PYTHON_DIR = HERE.parent / "python"


def write_coco(path: Path, n_images: int = 118_287, n_boxes: int = 860_001, seed: int = 0) -> None:
    """A COCO-like detection file: images of typical sizes, boxes inside them, 80 categories."""
    rng = random.Random(seed)
    cat_ids = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
    with open(path, "w") as f:
        f.write('{"info": {"description": "synthetic COCO-like set", "version": "1.0", "year": 2017}, ')
        f.write('"licenses": [{"url": "http://example.org/", "id": 1, "name": "CC BY 4.0"}], "images": [')
        sizes = []
        for i in range(n_images):
            w, h = rng.choice(((640, 480), (640, 427), (480, 640), (500, 375), (640, 640), (612, 612)))
            sizes.append((w, h))
            sep = ", " if i else ""
            f.write(
                f'{sep}{{"license": 1, "file_name": "{i + 1:012d}.jpg", "coco_url": "", "height": {h}, '
                f'"width": {w}, "date_captured": "2013-11-14 11:18:45", "id": {i + 1}}}'
            )
        f.write('], "annotations": [')
        for k in range(n_boxes):
            img = rng.randrange(n_images)
            iw, ih = sizes[img]
            bw = round(min(iw, iw * rng.random() ** 2 + 1), 2)
            bh = round(min(ih, ih * rng.random() ** 2 + 1), 2)
            x = round(rng.random() * (iw - bw), 2)
            y = round(rng.random() * (ih - bh), 2)
            sep = ", " if k else ""
            f.write(
                f'{sep}{{"area": {round(bw * bh, 2)}, "iscrowd": {int(rng.random() < 0.01)}, "image_id": {img + 1}, '
                f'"bbox": [{x}, {y}, {bw}, {bh}], "category_id": {rng.choice(cat_ids)}, "id": {k + 1}}}'
            )
        f.write('], "categories": [')
        f.write(", ".join(f'{{"supercategory": "thing", "id": {c}, "name": "class{c}"}}' for c in cat_ids))
        f.write("]}")


_PROBE = """
import resource, sys, time, warnings
t0 = time.perf_counter()
{body}
t = time.perf_counter() - t0
print("RESULT", t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""

PARSE = """
data = open(sys.argv[1], "rb").read()
import {mod}
doc = {mod}.loads(data)
"""

LOAD = """
{block}
from fastanchor import datasets
warnings.simplefilter("ignore")
t0 = time.perf_counter()
b = datasets.load_coco(sys.argv[1])
"""


def run(code: str, path: Path, pythonpath: Optional[str] = None) -> Tuple[float, int]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(body=code), str(path)], env=env, capture_output=True, text=True, check=True
    ).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT")][-1].split()
    return float(line[1]), int(line[2])


def run_cli(path: Path, pythonpath: str) -> Tuple[float, int]:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    code = (
        "import resource, subprocess, sys, time\n"
        "t0 = time.perf_counter()\n"
        "subprocess.run([sys.executable, '-m', 'fastanchor', 'anchors', sys.argv[1], '--seed', '0', '--quiet'],"
        " check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "t = time.perf_counter() - t0\n"
        "print('RESULT', t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True, check=True
    ).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT")][-1].split()
    return float(line[1]), int(line[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=Path("/tmp/coco_large.json"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", help="the python folder of an older checkout, measured side by side")
    parser.add_argument("--no-cli", action="store_true", help="skip the whole `fastanchor anchors` runs")
    args = parser.parse_args()
    if not args.json.is_file():
        print(f"writing {args.json} ...", flush=True)
        write_coco(args.json)
    size = args.json.stat().st_size
    print(f"{args.json}: {size / 1e6:.1f} MB", flush=True)
    no_orjson = "sys.modules['orjson'] = None"
    cases: List[Tuple[str, str, Optional[str]]] = [
        ("parse, orjson", PARSE.format(mod="orjson"), None),
        ("parse, json", PARSE.format(mod="json"), None),
        ("load_coco, orjson", LOAD.format(block=""), str(PYTHON_DIR)),
        ("load_coco, json", LOAD.format(block=no_orjson), str(PYTHON_DIR)),
    ]
    if args.before:
        cases += [
            ("load_coco, orjson (before)", LOAD.format(block=""), args.before),
            ("load_coco, json (before)", LOAD.format(block=no_orjson), args.before),
        ]
    results = {name: [] for name, _, _ in cases}  # type: ignore[var-annotated]
    for _ in range(args.repeat):  # interleaved, so that a busy moment hits every case alike
        for name, code, pp in cases:
            results[name].append(run(code, args.json, pp))
    runs = [("anchors", str(PYTHON_DIR))] + ([("anchors (before)", args.before)] if args.before else [])
    if not args.no_cli:
        for name, _ in runs:
            results[name] = []
        for _ in range(args.repeat):
            for name, pp in runs:
                results[name].append(run_cli(args.json, pp))
    for name, rows in results.items():
        times = [t for t, _ in rows]
        rss = max(r for _, r in rows)
        print(
            f"{name:30s} median {statistics.median(times):6.2f} s  min {min(times):6.2f} s  "
            f"peak RSS {rss / 2**20:7.0f} MiB ({rss / size:.2f}x the file)",
            flush=True,
        )


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t:.0f} s)")
