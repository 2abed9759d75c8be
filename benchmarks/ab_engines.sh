#!/bin/bash
# The Lloyd engine of an old commit against the working tree's, in one process (ab_engines.cpp),
# on run.py's data: 1M COCO-like boxes and the init run.py's iteration rows use. Run on demand:
#
#     benchmarks/ab_engines.sh OLD_COMMIT [REPEATS] [THREADS] [BOXES]
#
# (CI runs it on 20,000 boxes against HEAD, once, so that it never rots.)
# Needs g++ with OpenMP and an installed fastanchor (for the init). Builds in a temporary folder.
set -euo pipefail
old=${1:?usage: ab_engines.sh OLD_COMMIT [REPEATS] [THREADS] [BOXES]}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/a/fa_a" "$tmp/b/fa_b" "$tmp/old"
# Each build's headers (the whole tree under cpp/include/fastanchor, flat or in folders) under its
# own namespace and macro prefix, so both link into one binary.
git -C "$repo" archive "$old" cpp/include/fastanchor | tar -x -C "$tmp/old"
rename_tree() {  # rename_tree SRC DST PREFIX: copies every header of SRC to DST, renamed
    (cd "$1" && find . -name '*.hpp') | while read -r f; do
        mkdir -p "$2/$(dirname "$f")"
        # The marker line makes every copy's bytes differ: GCC's #pragma once takes two files with the
        # same bytes and time stamp (kmeans.hpp is only includes) for one file and skips the second.
        { echo "// $3 copy"; sed "s/namespace fastanchor/namespace $3/g; s/fastanchor::/$3::/g; s/FASTANCHOR_/$(tr a-z A-Z <<<"$3")_/g" \
            "$1/$f"; } > "$2/$f"
    done
}
rename_tree "$tmp/old/cpp/include/fastanchor" "$tmp/a/fa_a" fa_a
rename_tree "$repo/cpp/include/fastanchor" "$tmp/b/fa_b" fa_b
g++ -O3 -std=c++17 -fopenmp -DNDEBUG -Wall -Wextra -ffp-contract=off -fno-trapping-math -fopenmp-simd \
    -I"$tmp/a" -I"$tmp/b" "$here/ab_engines.cpp" -o "$tmp/ab_engines"
python - "$tmp" "$here" "${4:-1000000}" <<'PY'
import sys
import numpy as np
sys.path.insert(0, sys.argv[2])
import fastanchor
from datasets import coco_like
wh = coco_like(int(sys.argv[3]), seed=0)
wh.astype(np.float32).tofile(f"{sys.argv[1]}/boxes.f32")
fastanchor.kmeans_iou(wh[:20_000].astype(np.float64), 9, seed=0).anchors.tofile(f"{sys.argv[1]}/init.f64")
PY
"$tmp/ab_engines" "$tmp/boxes.f32" "$tmp/init.f64" "${2:-10}" "${3:-2}"
