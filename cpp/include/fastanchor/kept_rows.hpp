// fastanchor: the rows autoanchor keeps. A box is dropped when its width and its height are both
// below drop_below (the rule of the k-means' skip_below, Problem::absent). The chunked engines scan
// each chunk once with scan_rows (its rows checked, the range of their float32 keys, the small and
// the kept boxes counted) and copy its kept rows with copy_kept_rows, each in one pass where numpy
// took several and 1.5 to 6 times as long (more on a Dask worker, where its temporaries are
// faulted in again each time).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

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
// with a side of at least drop_below. Every decision is that of a comparison of doubles.
struct RowScan {
    bool ok = true;
    std::uint32_t lo[2] = {~0u, ~0u}, hi[2] = {0u, 0u};
    index_t small = 0, kept = 0;
};

namespace detail {

// The histogram key of a side: its float32 bit pattern (a double rounded to the nearest float32).
inline std::uint32_t side_key(float x) {
    std::uint32_t key;
    std::memcpy(&key, &x, sizeof key);
    return key;
}
inline std::uint32_t side_key(double x) { return side_key(static_cast<float>(x)); }

// The smallest float32 >= t, and the largest <= t (t finite, within the float32 range): for a
// float32 x, x >= t exactly when x >= at_least(t), and x <= t exactly when x <= at_most(t).
inline float at_least(double t) {
    float f = static_cast<float>(t);
    if (static_cast<double>(f) < t) f = std::nextafter(f, std::numeric_limits<float>::infinity());
    return f;
}
inline float at_most(double t) {
    float f = static_cast<float>(t);
    if (static_cast<double>(f) > t) f = std::nextafter(f, -std::numeric_limits<float>::infinity());
    return f;
}

// scan_rows on rows of T compared with thresholds of T (branch-free, so that the compiler
// vectorizes it: a bad row is noted, not returned at once).
template <class T>
RowScan scan_rows_as(const T* wh, index_t n, T min_side, T max_side, T warn_below, T drop_below) {
    bool bad = false;
    std::uint32_t lo_w = ~0u, lo_h = ~0u, hi_w = 0u, hi_h = 0u;
    index_t small = 0, kept = 0;
    for (index_t i = 0; i < n; ++i) {
        const T w = wh[2 * i], h = wh[2 * i + 1];
        bad |= !(w >= min_side) | !(w <= max_side) | !(h >= min_side) | !(h <= max_side);
        const std::uint32_t kw = side_key(w), kh = side_key(h);
        lo_w = std::min(lo_w, kw);
        hi_w = std::max(hi_w, kw);
        lo_h = std::min(lo_h, kh);
        hi_h = std::max(hi_h, kh);
        small += !(std::min(w, h) >= warn_below);
        kept += std::max(w, h) >= drop_below;
    }
    return RowScan{!bad, {lo_w, lo_h}, {hi_w, hi_h}, small, kept};
}

}  // namespace detail

// Float32 rows are compared in float32, against thresholds that decide as the doubles do: one
// width through the loop, three times faster than converting each side to a double.
inline RowScan scan_rows(const float* wh, index_t n, double min_side, double max_side, double warn_below,
                         double drop_below) {
    return detail::scan_rows_as(wh, n, detail::at_least(min_side), detail::at_most(max_side),
                                detail::at_least(warn_below), detail::at_least(drop_below));
}

inline RowScan scan_rows(const double* wh, index_t n, double min_side, double max_side, double warn_below,
                         double drop_below) {
    return detail::scan_rows_as(wh, n, min_side, max_side, warn_below, drop_below);
}

}  // namespace fastanchor
