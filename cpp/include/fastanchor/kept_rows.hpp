// fastanchor: the rows autoanchor keeps. A box is dropped when its width and its height are both
// below drop_below (the rule of the k-means' skip_below, Problem::absent). The chunked engines scan
// each chunk once with scan_rows (its rows checked, the range of their float32 keys, the small and
// the kept boxes counted) and copy its kept rows with copy_kept_rows, each in one pass where numpy
// took several (about four times as long).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common.hpp"

namespace fastanchor {

// Copies the first `capacity` rows (w, h) of wh [0, n) with a side of at least drop_below to out,
// in order, and returns the number of such rows (all of them, also those beyond capacity). The
// sides are compared as doubles (a float32 side converts exactly).
template <class Row>
index_t copy_kept_rows(const Row* wh, index_t n, double drop_below, Row* out, index_t capacity) {
    index_t m = 0;
    for (index_t i = 0; i < n; ++i) {
        const Row w = wh[2 * i], h = wh[2 * i + 1];
        if (static_cast<double>(w) < drop_below && static_cast<double>(h) < drop_below) continue;
        if (m < capacity) {
            out[2 * m] = w;
            out[2 * m + 1] = h;
        }
        ++m;
    }
    return m;
}

// A chunk's first pass: whether every side lies in [min_side, max_side] (NaN does not), the range
// of the sides' float32 bit patterns per column (the median's histogram keys: a double rounds to
// the nearest float32, as numpy's cast does), the boxes with a side below warn_below and those
// with a side of at least drop_below. All comparisons are on doubles.
struct RowScan {
    bool ok = true;
    std::uint32_t lo[2] = {~0u, ~0u}, hi[2] = {0u, 0u};
    index_t small = 0, kept = 0;
};

template <class Row>
RowScan scan_rows(const Row* wh, index_t n, double min_side, double max_side, double warn_below, double drop_below) {
    RowScan s;
    for (index_t i = 0; i < n; ++i) {
        const double w = wh[2 * i], h = wh[2 * i + 1];
        if (!(w >= min_side && w <= max_side && h >= min_side && h <= max_side)) {
            s.ok = false;
            return s;
        }
        const double side[2] = {w, h};
        for (int c = 0; c < 2; ++c) {
            const float f = static_cast<float>(side[c]);
            std::uint32_t key;
            std::memcpy(&key, &f, sizeof key);
            s.lo[c] = std::min(s.lo[c], key);
            s.hi[c] = std::max(s.hi[c], key);
        }
        s.small += std::min(w, h) < warn_below;
        s.kept += std::max(w, h) >= drop_below;
    }
    return s;
}

}  // namespace fastanchor
