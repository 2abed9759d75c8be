// The helpers the chunk bindings share (register_chunks.cpp, the Lloyd pass and the fit's states;
// register_chunk_scores.cpp, the scores and first passes of a chunk's rows).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "bindings.hpp"
#include "box_rows.hpp"
#include "fastanchor/iou.hpp"

namespace fastanchor_py {

using U64Array = py::array_t<std::uint64_t>;

inline const Array& checked_anchors(const Array& anchors, const char* name) {
    check_rows(anchors, name, 2);
    check_least(anchors, name, 1);
    return anchors;
}

// Non-negative 128-bit integers as (hi, lo) pairs of uint64 (Python rebuilds them exactly).
inline void put_u128(std::uint64_t* out, fa::int128_t v) {
    const auto u = static_cast<unsigned __int128>(v);
    out[0] = static_cast<std::uint64_t>(u >> 64);
    out[1] = static_cast<std::uint64_t>(u);
}

// Rows [0, n) as doubles w, h and areas a = w * h, the values every exact kernel reads.
inline void load_rows(const fa::BoxRows& rows, fa::index_t b, fa::index_t e, double* w, double* h, double* a) {
    for (fa::index_t i = b; i < e; ++i) {
        const double x = rows.f32 ? static_cast<double>(rows.f32[2 * i]) : rows.f64[2 * i];
        const double y = rows.f32 ? static_cast<double>(rows.f32[2 * i + 1]) : rows.f64[2 * i + 1];
        w[i - b] = x;
        h[i - b] = y;
        a[i - b] = x * y;
    }
}

// The best IoU of every row (exactly avg_best_iou's values), kChunk rows at a time.
inline std::vector<double> best_ious(const fa::BoxRows& rows, fa::index_t n, const fa::WhSet& A) {
    std::vector<double> q(static_cast<std::size_t>(n));
    std::vector<double> buf(3 * static_cast<std::size_t>(fa::kChunk));
    double *w = buf.data(), *h = w + fa::kChunk, *a = h + fa::kChunk;
    const int k = static_cast<int>(A.size());
    for (fa::index_t b = 0; b < n; b += fa::kChunk) {
        const fa::index_t e = std::min(n, b + fa::kChunk);
        load_rows(rows, b, e, w, h, a);
        fa::detail::best_iou_range(w, h, a, e - b, A.w.data(), A.h.data(), A.a.data(), k, q.data() + b);
    }
    return q;
}

}  // namespace fastanchor_py
