// fastanchor: IoU of corner-aligned boxes (width, height) and the assignment kernel.
//
// Exactness contract: every IoU is computed as
//     inter = min(w1, w2) * min(h1, h2);   iou = inter / ((w1 * h1 + w2 * h2) - inter)
// in IEEE double, one rounding per operation, no FMA contraction (the build passes
// -ffp-contract=off) — the same operations numpy performs, so values are bit-identical to it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.hpp"

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

inline double iou_wh(double w1, double h1, double a1, double w2, double h2, double a2) {
    const double inter = std::min(w1, w2) * std::min(h1, h2);
    return inter / ((a1 + a2) - inter);
}

namespace detail {

// Rows [r0, r1) of the N x M IoU matrix, written to out (row-major, M columns).
template <class Out>
FASTANCHOR_CLONES void iou_matrix_rows(const double* w1, const double* h1, const double* a1, index_t r0,
                                       index_t r1, const double* w2, const double* h2, const double* a2,
                                       index_t m, Out* out) {
    for (index_t i = r0; i < r1; ++i) {
        const double wi = w1[i], hi = h1[i], ai = a1[i];
        Out* row = out + i * m;
        for (index_t j = 0; j < m; ++j) {
            const double inter = std::min(wi, w2[j]) * std::min(hi, h2[j]);
            row[j] = static_cast<Out>(inter / ((ai + a2[j]) - inter));
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
inline constexpr int kLanes = 16;

// Label of one box by the exact rule (highest rounded IoU, lowest index on ties).
inline std::int32_t assign_exact(double w, double h, double a, const double* aw, const double* ah,
                                 const double* aa, int k, double* best_iou = nullptr) {
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

// Full blocks of kLanes boxes, vectorized across boxes, without divisions. A box whose decision
// fell inside the rounding margin at any anchor gets label -1 and is redone by assign_exact.
FASTANCHOR_CLONES inline index_t assign_blocks(const double* __restrict w, const double* __restrict h,
                                               const double* __restrict a, index_t n,
                                               const double* __restrict aw, const double* __restrict ah,
                                               const double* __restrict aa, int k,
                                               std::int32_t* __restrict labels) {
    const index_t nb = n / kLanes * kLanes;
    for (index_t i0 = 0; i0 < nb; i0 += kLanes) {
        double bi[kLanes], bu[kLanes], bl[kLanes], amb[kLanes];
        const double* wb = w + i0;
        const double* hb = h + i0;
        const double* ab = a + i0;
        for (int l = 0; l < kLanes; ++l) {
            const double inter = std::min(wb[l], aw[0]) * std::min(hb[l], ah[0]);
            bi[l] = inter;
            bu[l] = (ab[l] + aa[0]) - inter;
            bl[l] = 0.0;
            amb[l] = 0.0;
        }
        for (int j = 1; j < k; ++j) {
            const double awj = aw[j], ahj = ah[j], aaj = aa[j], jd = static_cast<double>(j);
            for (int l = 0; l < kLanes; ++l) {
                const double inter = std::min(wb[l], awj) * std::min(hb[l], ahj);
                const double u = (ab[l] + aaj) - inter;
                const double p = inter * bu[l];
                const double q = bi[l] * u;
                const bool better = p > q * kUp;
                const bool not_worse = p >= q * kDown;
                amb[l] = (not_worse && !better) ? 1.0 : amb[l];
                bi[l] = better ? inter : bi[l];
                bu[l] = better ? u : bu[l];
                bl[l] = better ? jd : bl[l];
            }
        }
        for (int l = 0; l < kLanes; ++l) {
            labels[i0 + l] = amb[l] != 0.0 ? -1 : static_cast<std::int32_t>(bl[l]);
        }
    }
    return nb;
}

// Best IoU of each box in [0, n) with any anchor (exact quotients; max is tie-insensitive).
FASTANCHOR_CLONES inline void best_iou_range(const double* __restrict w, const double* __restrict h,
                                             const double* __restrict a, index_t n,
                                             const double* __restrict aw, const double* __restrict ah,
                                             const double* __restrict aa, int k, double* __restrict out) {
    for (index_t i = 0; i < n; ++i) out[i] = 0.0;
    for (int j = 0; j < k; ++j) {
        const double awj = aw[j], ahj = ah[j], aaj = aa[j];
        for (index_t i = 0; i < n; ++i) {
            const double inter = std::min(w[i], awj) * std::min(h[i], ahj);
            const double q = inter / ((a[i] + aaj) - inter);
            out[i] = q > out[i] ? q : out[i];
        }
    }
}

}  // namespace detail

// Labels of boxes [b, e) of `boxes` against `anchors` written to out[0, e - b): highest IoU,
// lowest anchor index on ties, decided exactly as on the rounded IoU values.
inline void assign_range(const WhSet& boxes, index_t b, index_t e, const WhSet& anchors, std::int32_t* out) {
    const int k = static_cast<int>(anchors.size());
    const double *aw = anchors.w.data(), *ah = anchors.h.data(), *aa = anchors.a.data();
    const double *w = boxes.w.data() + b, *h = boxes.h.data() + b, *a = boxes.a.data() + b;
    const index_t n = e - b;
    const index_t nb = k > 1 ? detail::assign_blocks(w, h, a, n, aw, ah, aa, k, out) : 0;
    for (index_t i = 0; i < n; ++i) {
        if (i >= nb || out[i] < 0) out[i] = detail::assign_exact(w[i], h[i], a[i], aw, ah, aa, k);
    }
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
    const int nt = threads_for(n_threads, nc);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
    for (index_t c = 0; c < nc; ++c) {
        detail::iou_matrix_rows<Out>(s1.w.data(), s1.h.data(), s1.a.data(), c * rows, std::min(n, (c + 1) * rows),
                                     s2.w.data(), s2.h.data(), s2.a.data(), m, out);
    }
    (void)nt;
}

// Best IoU of every box with the anchors, in parallel.
inline void best_iou(const WhSet& boxes, const WhSet& anchors, double* out, int n_threads) {
    const int k = static_cast<int>(anchors.size());
    for_each_chunk(boxes.size(), n_threads, [&](index_t, index_t b, index_t e) {
        detail::best_iou_range(boxes.w.data() + b, boxes.h.data() + b, boxes.a.data() + b, e - b, anchors.w.data(),
                               anchors.h.data(), anchors.a.data(), k, out + b);
    });
}

// Weighted mean over boxes of the best IoU; weights may be null (unit weights).
// Per-chunk sums combined in chunk order: deterministic for any thread count.
inline double avg_best_iou(const WhSet& boxes, const double* weights, const WhSet& anchors, int n_threads) {
    const index_t n = boxes.size();
    const int k = static_cast<int>(anchors.size());
    std::vector<double> num(n_chunks(n), 0.0), den(n_chunks(n), 0.0);
    for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
        double buf[kChunk];
        detail::best_iou_range(boxes.w.data() + b, boxes.h.data() + b, boxes.a.data() + b, e - b, anchors.w.data(),
                               anchors.h.data(), anchors.a.data(), k, buf);
        double s = 0.0, sw = 0.0;
        if (weights) {
            for (index_t i = b; i < e; ++i) {
                s += weights[i] * buf[i - b];
                sw += weights[i];
            }
        } else {
            for (index_t i = b; i < e; ++i) s += buf[i - b];
            sw = static_cast<double>(e - b);
        }
        num[c] = s;
        den[c] = sw;
    });
    double s = 0.0, sw = 0.0;
    for (std::size_t c = 0; c < num.size(); ++c) {
        s += num[c];
        sw += den[c];
    }
    return s / sw;
}

}  // namespace fastanchor
