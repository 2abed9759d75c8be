// fastanchor: corner boxes (x1, y1, x2, y2) and their IoU matrix. (SSD prior matching: match.hpp;
// the recall of anchors on a detector's grids: grid.hpp.)
//
// Exactness contract (geometry.hpp): the IoU of two corner boxes is
//     iw = max(min(x2a, x2b) - max(x1a, x1b), 0);  ih = (same for y)
//     inter = iw * ih;  area = (x2 - x1) * (y2 - y1);  iou = inter / ((area_a + area_b) - inter)
// in IEEE double, one rounding per operation, no FMA contraction (-ffp-contract=off): the
// operations of the numpy reference (tests/reference.py: box_iou), so values are bit-identical.
// Every decision (argmax, threshold) is made on those rounded values.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <vector>

#include "../common.hpp"
#include "../geometry.hpp"

namespace fastanchor {

// Corner boxes as structure of arrays; `a` caches the areas (x2 - x1) * (y2 - y1).
struct CornerSet {
    std::vector<double> x1, y1, x2, y2, a;

    CornerSet() = default;
    explicit CornerSet(index_t n) : x1(n), y1(n), x2(n), y2(n), a(n) {}

    index_t size() const { return static_cast<index_t>(x1.size()); }

    void set(index_t i, double bx1, double by1, double bx2, double by2) {
        x1[i] = bx1;
        y1[i] = by1;
        x2[i] = bx2;
        y2[i] = by2;
        a[i] = (bx2 - bx1) * (by2 - by1);
    }

    // From N rows (x1, y1, x2, y2), row-major.
    template <class T>
    static CornerSet from_rows(const T* data, index_t n) {
        CornerSet s(n);
        for (index_t i = 0; i < n; ++i) {
            const T* r = data + 4 * i;
            s.set(i, static_cast<double>(r[0]), static_cast<double>(r[1]), static_cast<double>(r[2]),
                  static_cast<double>(r[3]));
        }
        return s;
    }
};

namespace detail {

// out[j] = IoU of box (x1, y1, x2, y2, a) with boxes j of s, j in [0, m); vectorized over j.
template <class Out>
FASTANCHOR_CLONES void box_iou_row(double x1, double y1, double x2, double y2, double a, const double* __restrict bx1,
                                   const double* __restrict by1, const double* __restrict bx2,
                                   const double* __restrict by2, const double* __restrict ba, index_t m,
                                   Out* __restrict out) {
#pragma omp simd
    for (index_t j = 0; j < m; ++j) {
        out[j] = static_cast<Out>(iou_box(x1, y1, x2, y2, a, bx1[j], by1[j], bx2[j], by2[j], ba[j]));
    }
}

}  // namespace detail

// The N x M IoU matrix (row-major) of s1 against s2, rows in fixed chunks of about kChunk cells.
template <class Out>
void box_iou_matrix(const CornerSet& s1, const CornerSet& s2, Out* out, int n_threads) {
    const index_t n = s1.size(), m = s2.size();
    if (n == 0 || m == 0) return;
    const index_t rows = std::max<index_t>(1, kChunk / m);
    const index_t nc = (n + rows - 1) / rows;
    parallel_for(nc, n_threads, [&](index_t c) {
        const index_t e = std::min(n, (c + 1) * rows);
        for (index_t i = c * rows; i < e; ++i) {
            detail::box_iou_row<Out>(s1.x1[i], s1.y1[i], s1.x2[i], s1.y2[i], s1.a[i], s2.x1.data(), s2.y1.data(),
                                     s2.x2.data(), s2.y2.data(), s2.a.data(), m, out + i * m);
        }
    });
}

}  // namespace fastanchor
