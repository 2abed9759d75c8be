// fastanchor: IoU of corner-aligned boxes (width, height): the IoU matrix, the exact assignment
// kernels and the best IoU. Every IoU is geometry.hpp's iou_wh in double (its exactness contract:
// bit-identical to numpy); the division-free assignment proves its comparisons with margins.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.hpp"
#include "constants.hpp"
#include "fixed_k.hpp"
#include "geometry.hpp"

namespace fastanchor {

// Boxes or anchors as structure of arrays; `a` caches the areas w * h.
struct WhSet {
    std::vector<double> w, h, a;

    WhSet() = default;
    explicit WhSet(index_t n) : w(n), h(n), a(n) {}

    index_t size() const { return static_cast<index_t>(w.size()); }

    void resize(index_t n) {
        w.resize(n);
        h.resize(n);
        a.resize(n);
    }

    void set(index_t i, double wi, double hi) {
        w[i] = wi;
        h[i] = hi;
        a[i] = wi * hi;
    }

    // From an array of N rows (w, h), row stride `stride` elements.
    template <class T>
    static WhSet from_rows(const T* data, index_t n, index_t stride = 2) {
        WhSet s(n);
        for (index_t i = 0; i < n; ++i) {
            s.set(i, static_cast<double>(data[i * stride]), static_cast<double>(data[i * stride + 1]));
        }
        return s;
    }
};

namespace detail {

// Rows [r0, r1) of the N x M IoU matrix, written to out (row-major, M columns).
template <class Out>
FASTANCHOR_CLONES void iou_matrix_rows(const double* w1, const double* h1, const double* a1, index_t r0, index_t r1,
                                       const double* w2, const double* h2, const double* a2, index_t m, Out* out) {
    for (index_t i = r0; i < r1; ++i) {
        const double wi = w1[i], hi = h1[i], ai = a1[i];
        Out* row = out + i * m;
        for (index_t j = 0; j < m; ++j) {
            row[j] = static_cast<Out>(iou_wh(wi, hi, ai, w2[j], h2[j], a2[j]));
        }
    }
}

// Margins of the division-free comparison. For positive doubles the rounded cross products
// p = fl(inter_j * union_best) and q = fl(inter_best * union_j) differ from the exact ones by a
// relative 2^-53 at most; p > q * kUp then proves fl(inter_j / union_j) > fl(inter_best /
// union_best) (the exact ratio of the quotients exceeds 1 + 4 * 2^-53), and p < q * kDown proves
// the opposite. Between the two the comparison is decided by the rounded quotients themselves.
inline constexpr double kUp = 1.0 + 1e-12;
inline constexpr double kDown = 1.0 - 1e-12;

// K anchors copied into local arrays, so the compiler keeps them in registers.
template <int K>
struct FixedAnchors {
    double w[K], h[K], a[K];
    FixedAnchors(const double* aw, const double* ah, const double* aa) {
        for (int j = 0; j < K; ++j) {
            w[j] = aw[j];
            h[j] = ah[j];
            a[j] = aa[j];
        }
    }
};

// Label of one box by the exact rule (highest rounded IoU, lowest index on ties).
inline std::int32_t assign_exact(double w, double h, double a, const double* aw, const double* ah, const double* aa,
                                 int k, double* best_iou = nullptr) {
    std::int32_t best = 0;
    double bq = iou_wh(w, h, a, aw[0], ah[0], aa[0]);
    for (int j = 1; j < k; ++j) {
        const double q = iou_wh(w, h, a, aw[j], ah[j], aa[j]);
        if (q > bq) {
            bq = q;
            best = j;
        }
    }
    if (best_iou) *best_iou = bq;
    return best;
}

// Labels without divisions, vectorized over boxes. A box whose decision fell inside the rounding
// margin at some anchor gets label -1, to be redone by assign_exact.
template <int K>
FASTANCHOR_CLONES void assign_nodiv(const double* __restrict w, const double* __restrict h, const double* __restrict a,
                                    index_t n, const double* __restrict aw, const double* __restrict ah,
                                    const double* __restrict aa, std::int32_t* __restrict out) {
    const FixedAnchors<K> A(aw, ah, aa);
    const double *AW = A.w, *AH = A.h, *AA = A.a;
#pragma omp simd
    for (index_t i = 0; i < n; ++i) {
        const double wi = w[i], hi = h[i], ai = a[i];
        double bi = inter_wh(wi, hi, AW[0], AH[0]);
        double bu = (ai + AA[0]) - bi;
        std::int32_t bl = 0, amb = 0;
#pragma GCC unroll 16
        for (int j = 1; j < K; ++j) {
            const double inter = inter_wh(wi, hi, AW[j], AH[j]);
            const double u = (ai + AA[j]) - inter;
            const double p = inter * bu, q = bi * u;
            const bool better = p > q * kUp;
            const bool not_worse = p >= q * kDown;
            amb |= static_cast<std::int32_t>(not_worse & !better);
            bi = better ? inter : bi;
            bu = better ? u : bu;
            bl = better ? j : bl;
        }
        out[i] = amb ? -1 : bl;
    }
}

// Division-free labels of n boxes; returns false when k has no fixed-K kernel.
inline bool assign_nodiv_k(const double* w, const double* h, const double* a, index_t n, const double* aw,
                           const double* ah, const double* aa, int k, std::int32_t* out) {
    return with_fixed_k(k, [&](auto K) { assign_nodiv<decltype(K)::value>(w, h, a, n, aw, ah, aa, out); });
}

// Best IoU of each box in [0, n) with any anchor (exact quotients; max is tie-insensitive).
template <int K>
FASTANCHOR_CLONES void best_iou_fixed(const double* __restrict w, const double* __restrict h,
                                      const double* __restrict a, index_t n, const double* __restrict aw,
                                      const double* __restrict ah, const double* __restrict aa,
                                      double* __restrict out) {
    const FixedAnchors<K> A(aw, ah, aa);
#pragma omp simd
    for (index_t i = 0; i < n; ++i) {
        double b = 0.0;
#pragma GCC unroll 16
        for (int j = 0; j < K; ++j) {
            const double q = iou_wh(w[i], h[i], a[i], A.w[j], A.h[j], A.a[j]);
            b = q > b ? q : b;
        }
        out[i] = b;
    }
}

inline void best_iou_range(const double* w, const double* h, const double* a, index_t n, const double* aw,
                           const double* ah, const double* aa, int k, double* out) {
    if (with_fixed_k(k, [&](auto K) { best_iou_fixed<decltype(K)::value>(w, h, a, n, aw, ah, aa, out); })) return;
    checked_slices(n, k, [&](index_t b, index_t e) {
        for (index_t i = b; i < e; ++i) assign_exact(w[i], h[i], a[i], aw, ah, aa, k, out + i);
    });
}

// Labels of n boxes (w, h, a) against k anchors written to out[0, n): highest IoU, lowest anchor
// index on ties, decided exactly as on the rounded IoU values.
inline void assign_rows(const double* w, const double* h, const double* a, index_t n, const double* aw,
                        const double* ah, const double* aa, int k, std::int32_t* out) {
    if (assign_nodiv_k(w, h, a, n, aw, ah, aa, k, out)) {
        for (index_t i = 0; i < n; ++i)
            if (out[i] < 0) out[i] = assign_exact(w[i], h[i], a[i], aw, ah, aa, k);
    } else {
        checked_slices(n, k, [&](index_t b, index_t e) {
            for (index_t i = b; i < e; ++i) out[i] = assign_exact(w[i], h[i], a[i], aw, ah, aa, k);
        });
    }
}

}  // namespace detail

// Labels of boxes [b, e) of `boxes` against `anchors` written to out[0, e - b).
inline void assign_range(const WhSet& boxes, index_t b, index_t e, const WhSet& anchors, std::int32_t* out) {
    detail::assign_rows(boxes.w.data() + b, boxes.h.data() + b, boxes.a.data() + b, e - b, anchors.w.data(),
                        anchors.h.data(), anchors.a.data(), static_cast<int>(anchors.size()), out);
}

// Labels of all boxes, in parallel.
inline void assign_all(const WhSet& boxes, const WhSet& anchors, std::int32_t* labels, int n_threads) {
    for_each_chunk(boxes.size(), n_threads,
                   [&](index_t, index_t b, index_t e) { assign_range(boxes, b, e, anchors, labels + b); });
}

// N x M IoU matrix (row-major) of two box sets, computed in double, stored as Out.
template <class Out>
void iou_matrix(const WhSet& s1, const WhSet& s2, Out* out, int n_threads) {
    const index_t n = s1.size(), m = s2.size();
    if (n == 0 || m == 0) return;
    // Chunks of rows holding about kChunk output cells each.
    const index_t rows = std::max<index_t>(1, kChunk / std::max<index_t>(m, 1));
    const index_t nc = (n + rows - 1) / rows;
    parallel_for(nc, n_threads, [&](index_t c) {
        detail::iou_matrix_rows<Out>(s1.w.data(), s1.h.data(), s1.a.data(), c * rows, std::min(n, (c + 1) * rows),
                                     s2.w.data(), s2.h.data(), s2.a.data(), m, out);
    });
}

// Best IoU of every box with the anchors, in parallel.
inline void best_iou(const WhSet& boxes, const WhSet& anchors, double* out, int n_threads) {
    const int k = static_cast<int>(anchors.size());
    for_each_chunk(boxes.size(), n_threads, [&](index_t, index_t b, index_t e) {
        detail::best_iou_range(boxes.w.data() + b, boxes.h.data() + b, boxes.a.data() + b, e - b, anchors.w.data(),
                               anchors.h.data(), anchors.a.data(), k, out + b);
    });
}

namespace detail {

// Sums of weight * v[i] and of weight over [b, e), in order (weights null: unit weights).
inline void weighted_sums(const double* v, const double* weights, index_t b, index_t e, double& s, double& sw) {
    s = 0.0;
    sw = 0.0;
    if (weights) {
        for (index_t i = b; i < e; ++i) {
            s += weights[i] * v[i - b];
            sw += weights[i];
        }
    } else {
        for (index_t i = b; i < e; ++i) s += v[i - b];
        sw = static_cast<double>(e - b);
    }
}

// sum(weight * value) / sum(weight) from per-chunk partials combined in chunk order.
inline double chunked_mean(const std::vector<double>& num, const std::vector<double>& den) {
    double s = 0.0, sw = 0.0;
    for (std::size_t c = 0; c < num.size(); ++c) {
        s += num[c];
        sw += den[c];
    }
    return s / sw;
}

}  // namespace detail

// Weighted mean of v[0, n) (weights may be null: unit weights), summed per fixed chunk and
// combined in chunk order: deterministic for any thread count, and equal to avg_best_iou for
// the same values.
inline double weighted_mean(const double* v, const double* weights, index_t n, int n_threads) {
    std::vector<double> num(n_chunks(n), 0.0), den(n_chunks(n), 0.0);
    for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
        detail::weighted_sums(v + b, weights, b, e, num[c], den[c]);
    });
    return detail::chunked_mean(num, den);
}

// Weighted mean over boxes of the best IoU; weights may be null (unit weights).
inline double avg_best_iou(const WhSet& boxes, const double* weights, const WhSet& anchors, int n_threads) {
    const index_t n = boxes.size();
    const int k = static_cast<int>(anchors.size());
    std::vector<double> num(n_chunks(n), 0.0), den(n_chunks(n), 0.0);
    for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
        double buf[kChunk];
        detail::best_iou_range(boxes.w.data() + b, boxes.h.data() + b, boxes.a.data() + b, e - b, anchors.w.data(),
                               anchors.h.data(), anchors.a.data(), k, buf);
        detail::weighted_sums(buf, weights, b, e, num[c], den[c]);
    });
    return detail::chunked_mean(num, den);
}

}  // namespace fastanchor
