// fastanchor: the anchor fitness of YOLOv5's autoanchor (the side-ratio metric), its report
// (fitness, best possible recall, anchors above threshold, average IoU) and the mutation
// search that refines anchors on it.
//
// Definitions (the numpy reference in tests/reference.py is the specification). For box i and
// anchor j, per side r = wh_i / anchor_j and x_ij = min over (w, h) of min(r, 1 / r); the best
// ratio of a box is best_i = max_j x_ij; with t = 1 / thr:
//     fitness = mean_i best_i * [best_i > t]     bpr = mean_i [best_i > t]
//     aat     = mean_i #{j : x_ij > t}           avg_iou = mean_i max_j IoU_ij
// (means weighted by the sample weights).
//
// Exactness. The kernels never divide per (box, anchor) pair: x_ij is computed from cached
// reciprocals as min(w * (1/aw), aw * (1/w), h * (1/ah), ah * (1/h)). Each of these four
// products is within a factor (1 +- u)^2 of the exact ratio (u = 2^-53), and so is every term the
// reference computes (fl(w / aw) and fl(1 / fl(w / aw))); min and max are monotone, so the fast
// value of x_ij and of best_i is within a relative 5u of the reference's. A discrete decision
// ([x > t]) is therefore taken on the fast value only outside the band t * (1 +- 1e-12); inside
// it (ties such as a side ratio of exactly thr) the box is redone with the reference's own
// divisions, so every decision is bit-for-bit the reference's.
//
// Reproducibility. Every sum is fixed point: each box's term (in [0, 1], the weight scaled to a
// largest weight of 1 included) is rounded to a multiple of 2^-50 and the integers are added
// exactly (anchor counts with unit weights are added as they are). The sums are therefore
// independent of the order of the boxes, of the number of threads and of the SIMD width, so the
// search (which visits the boxes in a spatially sorted order and skips anchors per tile) and the
// report (input order, every anchor) give the same fitness to the last bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "common.hpp"
#include "random.hpp"

namespace fastanchor {

namespace fitdetail {

// Relative half-width of the band around the threshold in which decisions are redone exactly;
// far above the 5u (5.6e-16) that separates the fast ratio from the reference's.
inline constexpr double kBand = 1e-12;
// Fixed point: a term z in [0, 1] counts as round(z * 2^50); a lane of 16 accumulates at most
// 4096 / 16 terms per chunk (< 2^58), a chunk at most 2^62: int64 never overflows.
inline constexpr double kFixScale = 0x1p50;
inline constexpr int kLanes = 16;
// Boxes per tile of the sorted layout (a chunk holds kChunk / kTile tiles).
inline constexpr int kTile = 64;
inline constexpr int kTilesPerChunk = static_cast<int>(kChunk / kTile);
// Anchor sets larger than this are evaluated without per-tile pruning (masks are 64-bit).
inline constexpr int kMaxPruned = 64;

// round(z) for z in [0, 2^52) as an integer: adding 2^52 leaves an integer ulp, so the sum is
// rounded to the nearest integer (ties to even) and its low mantissa bits are that integer.
inline std::int64_t fix_round(double z) {
    const double y = z + 0x1p52;
    std::int64_t q;
    std::memcpy(&q, &y, sizeof q);
    return q - INT64_C(0x4330000000000000);
}

// The reference's ratio metric, with its divisions: min over sides of min(r, 1 / r).
inline double ratio_exact(double w, double h, double aw, double ah) {
    const double rw = w / aw, rh = h / ah;
    return std::min(std::min(rw, 1.0 / rw), std::min(rh, 1.0 / rh));
}

inline double ratio_fast(double w, double h, double iw, double ih, double aw, double ah, double iaw, double iah) {
    return std::min(std::min(w * iaw, aw * iw), std::min(h * iah, ah * ih));
}

}  // namespace fitdetail

// The threshold t = 1 / thr (as numpy computes it) and the half-width of the band of exact
// re-evaluation: a fast ratio x with |x - t| > band decides [x > t] as the reference does.
struct Threshold {
    double t, band, lo;
    explicit Threshold(double thr) : t(1.0 / thr), band(t * fitdetail::kBand), lo(t * (1.0 - fitdetail::kBand)) {}
};

// k anchors as structure of arrays with reciprocals and areas.
struct RatioAnchors {
    int k = 0;
    std::vector<double> w, h, iw, ih, a;

    RatioAnchors() = default;
    explicit RatioAnchors(int k_) : k(k_), w(k_), h(k_), iw(k_), ih(k_), a(k_) {}

    void set(int j, double wj, double hj) {
        w[j] = wj;
        h[j] = hj;
        iw[j] = 1.0 / wj;
        ih[j] = 1.0 / hj;
        a[j] = wj * hj;
    }

    // From k rows (w, h), contiguous.
    static RatioAnchors from_rows(const double* rows, int k) {
        RatioAnchors r(k);
        for (int j = 0; j < k; ++j) r.set(j, rows[2 * j], rows[2 * j + 1]);
        return r;
    }

    void to_rows(double* rows) const {
        for (int j = 0; j < k; ++j) {
            rows[2 * j] = w[j];
            rows[2 * j + 1] = h[j];
        }
    }
};

// Boxes prepared for the fitness: structure of arrays with reciprocals, and the weights scaled to
// a largest value of 1 (om; empty for unit weights).
struct FitBoxes {
    index_t n = 0;
    std::vector<double> w, h, iw, ih, om;
    // Sum over boxes of round(om * 2^50) (n * 2^50 for unit weights): the fixed-point total weight.
    __int128 denom = 0;

    bool weighted() const { return !om.empty(); }

    // Box j of the prepared order is row src[j] of the input (src null: identity).
    static FitBoxes make(const double* wh, const double* weights, index_t n, const index_t* src = nullptr,
                         int n_threads = 1) {
        FitBoxes b;
        b.n = n;
        b.w.resize(n);
        b.h.resize(n);
        b.iw.resize(n);
        b.ih.resize(n);
        double top = 0.0;
        if (weights) {
            for (index_t i = 0; i < n; ++i) top = std::max(top, weights[i]);
            if (!(top > 0.0)) throw std::invalid_argument("the weights must have a positive sum");
            b.om.resize(n);
        }
        std::vector<std::int64_t> part(n_chunks(n), 0);
        for_each_chunk(n, n_threads, [&](index_t c, index_t lo, index_t hi) {
            std::int64_t d = 0;
            for (index_t i = lo; i < hi; ++i) {
                const index_t s = src ? src[i] : i;
                b.w[i] = wh[2 * s];
                b.h[i] = wh[2 * s + 1];
                b.iw[i] = 1.0 / b.w[i];
                b.ih[i] = 1.0 / b.h[i];
                if (weights) {
                    b.om[i] = weights[s] / top;
                    d += fitdetail::fix_round(b.om[i] * fitdetail::kFixScale);
                }
            }
            part[c] = d;
        });
        if (weights) {
            for (const std::int64_t d : part) b.denom += d;
        } else {
            b.denom = static_cast<__int128>(n) * (INT64_C(1) << 50);
        }
        return b;
    }
};

// The report on a set of anchors.
struct FitnessMetrics {
    double fitness = 0.0, bpr = 0.0, aat = 0.0, avg_iou = 0.0;
};

namespace fitdetail {

// The fixed-point scale of the anchors-above-threshold terms om * count: with unit weights the
// counts themselves (exact), else om * count / k (in [0, 1]) in units of 2^-50.
inline double aat_scale(bool weighted, int k) { return weighted ? kFixScale / k : 1.0; }

struct ChunkMetrics {
    __int128 fit = 0, bpr = 0, aat = 0, iou = 0, den = 0;
};

// Exact re-evaluation of one box: whether best > t and the number of anchors with x > t, by the
// reference's operations.
inline void exact_box(double w, double h, const RatioAnchors& A, double t, bool& above, int& count) {
    double best = 0.0;
    count = 0;
    for (int j = 0; j < A.k; ++j) {
        const double x = ratio_exact(w, h, A.w[j], A.h[j]);
        best = std::max(best, x);
        count += x > t ? 1 : 0;
    }
    above = best > t;
}

// Boxes per block of the report kernel, as one vector of 8 doubles (GCC/Clang vector extensions:
// a zmm register with AVX-512, two ymm with AVX2, four xmm otherwise; every lane rounds as a
// scalar double would, so the results do not depend on the instruction set).
inline constexpr int kBlock = 8;
typedef double V8d __attribute__((vector_size(64)));
typedef std::int64_t V8i __attribute__((vector_size(64)));
// (No function takes or returns a vector by value, so the vector ABI, on which GCC warns for the
// baseline clone, never matters.)
#define FASTANCHOR_VMIN(a, b) ((b) < (a) ? (b) : (a))
#define FASTANCHOR_VMAX(a, b) ((a) < (b) ? (b) : (a))

__attribute__((always_inline)) inline void vload(V8d& v, const double* p) { std::memcpy(&v, p, sizeof v); }

// acc += fix_round(z), every lane.
__attribute__((always_inline)) inline void vfix_add(V8i& acc, const V8d& z) {
    const V8d y = z + 0x1p52;
    V8i q;
    std::memcpy(&q, &y, sizeof q);
    acc += q - INT64_C(0x4330000000000000);
}

struct BlockSums {
    V8i fit = {}, bpr = {}, aat = {}, iou = {}, den = {};
};

// Every metric on one block of 8 boxes against every anchor (KT > 0 fixes k at compile time,
// unrolling the anchor loop). om holds the weights scaled to a largest value of 1 (1 for unit
// weights, 0 in the padding of a tail block); m is the number of real boxes.
template <int KT>
__attribute__((always_inline)) inline void metrics_block(const V8d& w, const V8d& h, const V8d& iw, const V8d& ih,
                                                         const V8d& om, int m, const RatioAnchors& A, const double* aw,
                                                         const double* ah, const double* aiw, const double* aih,
                                                         const double* aa, const Threshold& th, double aat_scale,
                                                         BlockSums& acc) {
    const int k = KT > 0 ? KT : A.k;
    const V8d zero = {}, one = zero + 1.0;
    const double t = th.t;
    const V8d area = w * h;
    V8d best = zero, cnt = zero, dist = zero + HUGE_VAL;
    const V8d aw0 = zero + aw[0], ah0 = zero + ah[0];
    V8d bi = FASTANCHOR_VMIN(w, aw0) * FASTANCHOR_VMIN(h, ah0);
    V8d bu = (area + aa[0]) - bi;
    for (int j = 0; j < k; ++j) {
        const double awj = aw[j], ahj = ah[j], iwj = aiw[j], ihj = aih[j], aaj = aa[j];
        const V8d rw = w * iwj, sw = awj * iw, rh = h * ihj, sh = ahj * ih;
        const V8d xw = FASTANCHOR_VMIN(rw, sw), xh = FASTANCHOR_VMIN(rh, sh);
        const V8d x = FASTANCHOR_VMIN(xw, xh);
        best = FASTANCHOR_VMAX(best, x);
        cnt += x > t ? one : zero;
        const V8d d = x - t, ad = d < 0.0 ? -d : d;
        dist = FASTANCHOR_VMIN(dist, ad);
        // Highest IoU, compared by cross products (no division).
        const V8d awv = zero + awj, ahv = zero + ahj;
        const V8d inter = FASTANCHOR_VMIN(w, awv) * FASTANCHOR_VMIN(h, ahv);
        const V8d u = (area + aaj) - inter;
        const V8i better = inter * bu > bi * u;
        bi = better ? inter : bi;
        bu = better ? u : bu;
    }
    V8d above = best > t ? one : zero;
    const V8i amb = dist <= th.band;
    bool any_amb = false;
    for (int l = 0; l < kBlock; ++l) any_amb |= amb[l] != 0;
    if (any_amb) {
        // The boxes with a ratio in the band: the exact decisions.
        for (int l = 0; l < m; ++l) {
            if (amb[l] == 0) continue;
            bool ab;
            int c;
            exact_box(w[l], h[l], A, th.t, ab, c);
            above[l] = ab ? 1.0 : 0.0;
            cnt[l] = c;
        }
    }
    // om is 1 for unit weights (exact products) and 0 in the padding.
    vfix_add(acc.fit, above * om * best * kFixScale);
    vfix_add(acc.bpr, above * om * kFixScale);
    vfix_add(acc.aat, om * cnt * aat_scale);
    vfix_add(acc.iou, om * (bi / bu) * kFixScale);
    vfix_add(acc.den, om * kFixScale);
}

// Where the report kernel reads its boxes. PreparedBoxes: a FitBoxes (reciprocals and scaled
// weights cached). RowBoxes: the caller's rows (w, h), with the reciprocals and scaled weights
// computed on the fly by the same operations, so both give the same bits.
struct PreparedBoxes {
    const FitBoxes& B;
    bool weighted() const { return B.weighted(); }
    __attribute__((always_inline)) void load(index_t i0, int m, V8d& w, V8d& h, V8d& iw, V8d& ih, V8d& om) const {
        if (m == kBlock) {
            vload(w, B.w.data() + i0);
            vload(h, B.h.data() + i0);
            vload(iw, B.iw.data() + i0);
            vload(ih, B.ih.data() + i0);
            if (B.weighted())
                vload(om, B.om.data() + i0);
            else
                om = V8d{} + 1.0;
            return;
        }
        // The tail, padded with unit boxes of weight 0.
        for (int l = 0; l < kBlock; ++l) {
            const bool in = l < m;
            w[l] = in ? B.w[i0 + l] : 1.0;
            h[l] = in ? B.h[i0 + l] : 1.0;
            iw[l] = in ? B.iw[i0 + l] : 1.0;
            ih[l] = in ? B.ih[i0 + l] : 1.0;
            om[l] = in ? (B.weighted() ? B.om[i0 + l] : 1.0) : 0.0;
        }
    }
};

struct RowBoxes {
    const double* wh;
    const double* weights;  // null: unit weights
    double top;             // the largest weight
    bool weighted() const { return weights != nullptr; }
    __attribute__((always_inline)) void load(index_t i0, int m, V8d& w, V8d& h, V8d& iw, V8d& ih, V8d& om) const {
        for (int l = 0; l < kBlock; ++l) {
            const bool in = l < m;
            w[l] = in ? wh[2 * (i0 + l)] : 1.0;
            h[l] = in ? wh[2 * (i0 + l) + 1] : 1.0;
            om[l] = in ? (weights ? weights[i0 + l] : 1.0) : 0.0;
        }
        iw = 1.0 / w;
        ih = 1.0 / h;
        if (weights) om = om / top;
    }
};

// Every metric on boxes [b, e) of `src` against the anchors aw..aa, every anchor. All sums are
// fixed point, so they depend neither on the vector width nor on the order of the boxes; lanes
// are flushed to the 128-bit totals every 64 boxes (8 terms of at most 2^50 per lane).
__attribute__((always_inline)) inline void flush(ChunkMetrics& r, BlockSums& acc) {
    for (int l = 0; l < kBlock; ++l) {
        r.fit += acc.fit[l];
        r.bpr += acc.bpr[l];
        r.aat += acc.aat[l];
        r.iou += acc.iou[l];
        r.den += acc.den[l];
    }
    acc = BlockSums();
}

template <int KT, class Src>
__attribute__((always_inline)) inline void metrics_boxes(const Src& src, index_t b, index_t e, const RatioAnchors& A,
                                                         const double* aw, const double* ah, const double* aiw,
                                                         const double* aih, const double* aa, const Threshold& th,
                                                         ChunkMetrics& out) {
    const double as = aat_scale(src.weighted(), A.k);
    ChunkMetrics r;
    BlockSums acc;
    index_t since_flush = 0;
    for (index_t i0 = b; i0 < e; i0 += kBlock) {
        const int m = static_cast<int>(std::min<index_t>(kBlock, e - i0));
        V8d w, h, iw, ih, om;
        src.load(i0, m, w, h, iw, ih, om);
        metrics_block<KT>(w, h, iw, ih, om, m, A, aw, ah, aiw, aih, aa, th, as, acc);
        if (++since_flush == kTile / kBlock) {
            flush(r, acc);
            since_flush = 0;
        }
    }
    flush(r, acc);
    out = r;
}

template <int KT, class Src>
FASTANCHOR_CLONES void metrics_range(const Src& src, index_t b, index_t e, const RatioAnchors& A, const Threshold& th,
                                     ChunkMetrics& out) {
    if constexpr (KT > 0) {
        // The anchors in local arrays: the compiler then sees that no store of a block aliases
        // them (with pointers into A it versions the loops on run-time alias checks).
        double aw[KT], ah[KT], aiw[KT], aih[KT], aa[KT];
        for (int j = 0; j < KT; ++j) {
            aw[j] = A.w[j];
            ah[j] = A.h[j];
            aiw[j] = A.iw[j];
            aih[j] = A.ih[j];
            aa[j] = A.a[j];
        }
        metrics_boxes<KT>(src, b, e, A, aw, ah, aiw, aih, aa, th, out);
    } else {
        metrics_boxes<KT>(src, b, e, A, A.w.data(), A.h.data(), A.iw.data(), A.ih.data(), A.a.data(), th, out);
    }
}

template <class Src>
void metrics_chunk(const Src& src, index_t b, index_t e, const RatioAnchors& A, const Threshold& th,
                   ChunkMetrics& out) {
    switch (A.k) {
        case 1: return metrics_range<1>(src, b, e, A, th, out);
        case 2: return metrics_range<2>(src, b, e, A, th, out);
        case 3: return metrics_range<3>(src, b, e, A, th, out);
        case 4: return metrics_range<4>(src, b, e, A, th, out);
        case 5: return metrics_range<5>(src, b, e, A, th, out);
        case 6: return metrics_range<6>(src, b, e, A, th, out);
        case 8: return metrics_range<8>(src, b, e, A, th, out);
        case 9: return metrics_range<9>(src, b, e, A, th, out);
        case 12: return metrics_range<12>(src, b, e, A, th, out);
        case 15: return metrics_range<15>(src, b, e, A, th, out);
        default: return metrics_range<0>(src, b, e, A, th, out);
    }
}

template <class Src>
FitnessMetrics metrics_of(const Src& src, index_t n, const RatioAnchors& A, double thr, int n_threads) {
    if (n <= 0 || A.k <= 0) throw std::invalid_argument("fitness_metrics: need boxes and anchors");
    const Threshold th(thr);
    std::vector<ChunkMetrics> part(n_chunks(n));
    for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) { metrics_chunk(src, b, e, A, th, part[c]); });
    ChunkMetrics s;
    for (const auto& p : part) {
        s.fit += p.fit;
        s.bpr += p.bpr;
        s.aat += p.aat;
        s.iou += p.iou;
        s.den += p.den;
    }
    // The total weight: sum of round(om * 2^50); n * 2^50 for unit weights.
    const double denom = static_cast<double>(s.den);
    FitnessMetrics m;
    m.fitness = static_cast<double>(s.fit) / denom;
    m.bpr = static_cast<double>(s.bpr) / denom;
    m.aat = src.weighted() ? static_cast<double>(s.aat) * A.k / denom
                           : static_cast<double>(s.aat) / static_cast<double>(n);
    m.avg_iou = static_cast<double>(s.iou) / denom;
    return m;
}

#undef FASTANCHOR_VMIN
#undef FASTANCHOR_VMAX

}  // namespace fitdetail

// Fitness, best possible recall, anchors above threshold and average IoU of `A` on the boxes.
inline FitnessMetrics fitness_metrics(const FitBoxes& B, const RatioAnchors& A, double thr, int n_threads) {
    return fitdetail::metrics_of(fitdetail::PreparedBoxes{B}, B.n, A, thr, n_threads);
}

// The same on n rows (w, h) of the caller (weights: n values or null), without a prepared copy.
inline FitnessMetrics fitness_metrics(const double* wh, const double* weights, index_t n, const RatioAnchors& A,
                                      double thr, int n_threads) {
    double top = 1.0;
    if (weights) {
        std::vector<double> part(n_chunks(n), 0.0);
        for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
            double t = 0.0;
            for (index_t i = b; i < e; ++i) t = std::max(t, weights[i]);
            part[c] = t;
        });
        top = *std::max_element(part.begin(), part.end());
        if (!(top > 0.0)) throw std::invalid_argument("the weights must have a positive sum");
    }
    return fitdetail::metrics_of(fitdetail::RowBoxes{wh, weights, top}, n, A, thr, n_threads);
}

// ---------------------------------------------------------------------------------------------
// The search's layout: boxes sorted along a Z-order curve of (log w, log h) and cut into tiles
// of 64 consecutive boxes, each with its bounding rectangle. For one candidate anchor set, the
// ratio of any box of a tile to anchor j lies between
//     L_j = min(w0 / aw, aw / w1, h0 / ah, ah / h1)   (the rectangle's farthest corner) and
//     U_j = min(1, w1 / aw, aw / w0, 1, h1 / ah, ah / h0)   (its nearest point),
// so anchor j can be skipped in the tile when U_j < max_j' L_j' (another anchor beats it for
// every box) or U_j <= t (it never passes the threshold). On COCO-like data about 1.1 anchors per
// tile remain of 9. Bounds are computed with the cached reciprocals and widened by 1e-12, far
// beyond their rounding, so a skipped anchor is never the maximum of the fast ratios: the best
// ratio of every box is the same value the full evaluation gets, bit for bit.
struct TiledBoxes {
    FitBoxes boxes;  // sorted
    index_t n_tiles = 0;
    // Tile bounds: smallest and largest width and height, and their reciprocals.
    std::vector<double> w0, w1, h0, h1, iw0, iw1, ih0, ih1;

    index_t size() const { return boxes.n; }

    static TiledBoxes make(const double* wh, const double* weights, index_t n, int n_threads = 1) {
        // Z-order key of 10-bit cells over the data's range of (log w, log h); the log is the
        // double's exponent and top mantissa bits (piecewise linear in log2, monotone). Only the
        // speed depends on this order: the fitness is summed exactly in any order.
        std::vector<std::uint32_t> lw(n), lh(n);
        const index_t nc = n_chunks(n);
        std::vector<std::uint32_t> lo_w(nc, ~0u), hi_w(nc, 0u), lo_h(nc, ~0u), hi_h(nc, 0u);
        for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
            for (index_t i = b; i < e; ++i) {
                lw[i] = log_bits(wh[2 * i]);
                lh[i] = log_bits(wh[2 * i + 1]);
                lo_w[c] = std::min(lo_w[c], lw[i]);
                hi_w[c] = std::max(hi_w[c], lw[i]);
                lo_h[c] = std::min(lo_h[c], lh[i]);
                hi_h[c] = std::max(hi_h[c], lh[i]);
            }
        });
        const std::uint32_t w0 = *std::min_element(lo_w.begin(), lo_w.end());
        const std::uint32_t w1 = *std::max_element(hi_w.begin(), hi_w.end());
        const std::uint32_t h0 = *std::min_element(lo_h.begin(), lo_h.end());
        const std::uint32_t h1 = *std::max_element(hi_h.begin(), hi_h.end());
        const double sw = w1 > w0 ? 1023.0 / (w1 - w0) : 0.0, sh = h1 > h0 ? 1023.0 / (h1 - h0) : 0.0;
        std::vector<std::uint32_t> key(n);
        for_each_chunk(n, n_threads, [&](index_t, index_t b, index_t e) {
            for (index_t i = b; i < e; ++i) {
                const auto qw = static_cast<std::uint32_t>(std::min(1023.0, (lw[i] - w0) * sw));
                const auto qh = static_cast<std::uint32_t>(std::min(1023.0, (lh[i] - h0) * sh));
                key[i] = interleave(qw) | (interleave(qh) << 1);
            }
        });
        const std::vector<index_t> order = sort_keys(key);
        TiledBoxes t;
        t.boxes = FitBoxes::make(wh, weights, n, order.data(), n_threads);
        t.n_tiles = (n + fitdetail::kTile - 1) / fitdetail::kTile;
        for (auto* v : {&t.w0, &t.w1, &t.h0, &t.h1, &t.iw0, &t.iw1, &t.ih0, &t.ih1}) v->resize(t.n_tiles);
        const FitBoxes& B = t.boxes;
        for_each_chunk(n, n_threads, [&](index_t, index_t b, index_t e) {
            for (index_t q = b / fitdetail::kTile; q * fitdetail::kTile < e; ++q) {
                const index_t qb = q * fitdetail::kTile, qe = std::min(n, qb + fitdetail::kTile);
                double a0 = B.w[qb], a1 = B.w[qb], c0 = B.h[qb], c1 = B.h[qb];
                for (index_t i = qb + 1; i < qe; ++i) {
                    a0 = std::min(a0, B.w[i]);
                    a1 = std::max(a1, B.w[i]);
                    c0 = std::min(c0, B.h[i]);
                    c1 = std::max(c1, B.h[i]);
                }
                t.w0[q] = a0;
                t.w1[q] = a1;
                t.h0[q] = c0;
                t.h1[q] = c1;
                t.iw0[q] = 1.0 / a0;
                t.iw1[q] = 1.0 / a1;
                t.ih0[q] = 1.0 / c0;
                t.ih1[q] = 1.0 / c1;
            }
        });
        return t;
    }

private:
    // The high 32 bits of a positive double: 11 exponent and 20 mantissa bits, monotone.
    static std::uint32_t log_bits(double x) {
        std::uint64_t u;
        std::memcpy(&u, &x, sizeof u);
        return static_cast<std::uint32_t>(u >> 32);
    }

    // The bits of a 10-bit value spread to the even positions of 20 bits.
    static std::uint32_t interleave(std::uint32_t x) {
        x = (x | (x << 8)) & 0x00FF00FFu;
        x = (x | (x << 4)) & 0x0F0F0F0Fu;
        x = (x | (x << 2)) & 0x33333333u;
        x = (x | (x << 1)) & 0x55555555u;
        return x;
    }

    // Stable argsort of 20-bit keys: two counting passes of 10 bits.
    static std::vector<index_t> sort_keys(const std::vector<std::uint32_t>& key) {
        const index_t n = static_cast<index_t>(key.size());
        std::vector<index_t> a(n), b(n);
        std::vector<index_t> count(1024);
        for (int pass = 0; pass < 2; ++pass) {
            const int shift = 10 * pass;
            std::fill(count.begin(), count.end(), 0);
            for (index_t i = 0; i < n; ++i) ++count[(key[i] >> shift) & 1023u];
            index_t sum = 0;
            for (auto& c : count) {
                const index_t x = c;
                c = sum;
                sum += x;
            }
            for (index_t i = 0; i < n; ++i) {
                const index_t src = pass == 0 ? i : a[i];
                b[count[(key[src] >> shift) & 1023u]++] = src;
            }
            a.swap(b);
        }
        return a;
    }
};

namespace fitdetail {

// Pruning masks of one candidate for the tiles [q0, q1) of a chunk: bit j of mask[q] is set when
// anchor j may hold the best ratio of some box of tile q above the threshold band's floor.
//
// sure[q] is set when every box of tile q has its best ratio above the band's ceiling (the
// largest lower bound exceeds it), so no box of the tile needs a threshold check.
FASTANCHOR_CLONES inline void tile_masks(const TiledBoxes& T, index_t q0, index_t q1, const RatioAnchors& A,
                                         const Threshold& th, std::uint64_t* mask, std::uint8_t* sure) {
    const int k = A.k;
    const int nq = static_cast<int>(q1 - q0);
    const double *aw = A.w.data(), *ah = A.h.data(), *aiw = A.iw.data(), *aih = A.ih.data();
    const double lo = th.lo;
    double M[kTilesPerChunk];
    const double *w0 = T.w0.data() + q0, *w1 = T.w1.data() + q0, *h0 = T.h0.data() + q0, *h1 = T.h1.data() + q0;
    const double *iw0 = T.iw0.data() + q0, *iw1 = T.iw1.data() + q0, *ih0 = T.ih0.data() + q0, *ih1 = T.ih1.data() + q0;
    for (int q = 0; q < nq; ++q) {
        M[q] = 0.0;
        mask[q] = 0;
    }
    for (int j = 0; j < k; ++j) {
        const double awj = aw[j], ahj = ah[j], iwj = aiw[j], ihj = aih[j];
        for (int q = 0; q < nq; ++q) {
            const double L = std::min(std::min(w0[q] * iwj, awj * iw1[q]), std::min(h0[q] * ihj, ahj * ih1[q]));
            M[q] = L > M[q] ? L : M[q];
        }
    }
    for (int q = 0; q < nq; ++q) {
        M[q] *= 1.0 - kBand;
        sure[q] = M[q] > th.t + th.band ? 1 : 0;
    }
    for (int j = 0; j < k; ++j) {
        const double awj = aw[j], ahj = ah[j], iwj = aiw[j], ihj = aih[j];
        const std::uint64_t bit = std::uint64_t{1} << j;
        for (int q = 0; q < nq; ++q) {
            const double cw = std::min(1.0, std::min(w1[q] * iwj, awj * iw0[q]));
            const double ch = std::min(1.0, std::min(h1[q] * ihj, ahj * ih0[q]));
            const double U = std::min(cw, ch) * (1.0 + kBand);
            mask[q] |= (U >= M[q] && U > lo) ? bit : std::uint64_t{0};
        }
    }
}

// Fixed-point fitness sums of `count` candidates over the tiles [q0, q1) of one chunk: each tile
// is loaded once and scored against every candidate (its active anchors only) while in cache.
template <bool Weighted>
FASTANCHOR_CLONES void tiled_sums(const TiledBoxes& T, index_t q0, index_t q1, const RatioAnchors* cands, int count,
                                  const Threshold& th, const std::uint64_t* masks, const std::uint8_t* sures,
                                  std::int64_t* acc /* count x 16 */,
                                  std::int64_t* extra /* count */) {
    const FitBoxes& B = T.boxes;
    const double t = th.t, band = th.band;
    const int nq = static_cast<int>(q1 - q0);
    for (int q = 0; q < nq; ++q) {
        const index_t b = (q0 + q) * kTile;
        const index_t m = std::min<index_t>(kTile, B.n - b);
        const double *w = B.w.data() + b, *h = B.h.data() + b, *iw = B.iw.data() + b, *ih = B.ih.data() + b;
        const double* om = Weighted ? B.om.data() + b : nullptr;
        for (int s = 0; s < count; ++s) {
            std::uint64_t mk = masks[static_cast<std::size_t>(s) * kTilesPerChunk + q];
            if (mk == 0) continue;
            const RatioAnchors& A = cands[s];
            const double *aw = A.w.data(), *ah = A.h.data(), *aiw = A.iw.data(), *aih = A.ih.data();
            std::int64_t* a = acc + static_cast<std::size_t>(s) * kLanes;
            const bool sure = sures[static_cast<std::size_t>(s) * kTilesPerChunk + q] != 0;
            if (m == kTile && sure && (mk & (mk - 1)) == 0) {
                // The common case: one anchor holds every box's best ratio, all above the band.
                const int j = __builtin_ctzll(mk);
                const double awj = aw[j], ahj = ah[j], iwj = aiw[j], ihj = aih[j];
                for (int l0 = 0; l0 < kTile; l0 += kLanes) {
                    for (int l = 0; l < kLanes; ++l) {
                        const int i = l0 + l;
                        const double x = std::min(std::min(w[i] * iwj, awj * iw[i]), std::min(h[i] * ihj, ahj * ih[i]));
                        a[l] += fix_round((Weighted ? om[i] * x : x) * kFixScale);
                    }
                }
            } else if (m == kTile) {
                double best[kTile];
                {
                    const int j = __builtin_ctzll(mk);
                    mk &= mk - 1;
                    const double awj = aw[j], ahj = ah[j], iwj = aiw[j], ihj = aih[j];
                    for (int l = 0; l < kTile; ++l)
                        best[l] = std::min(std::min(w[l] * iwj, awj * iw[l]), std::min(h[l] * ihj, ahj * ih[l]));
                }
                while (mk != 0) {
                    const int j = __builtin_ctzll(mk);
                    mk &= mk - 1;
                    const double awj = aw[j], ahj = ah[j], iwj = aiw[j], ihj = aih[j];
                    for (int l = 0; l < kTile; ++l) {
                        const double x = std::min(std::min(w[l] * iwj, awj * iw[l]), std::min(h[l] * ihj, ahj * ih[l]));
                        best[l] = x > best[l] ? x : best[l];
                    }
                }
                double above[kTile];
                int n_amb = 0;
                for (int l = 0; l < kTile; ++l) {
                    above[l] = best[l] > t ? 1.0 : 0.0;
                    n_amb += std::abs(best[l] - t) <= band ? 1 : 0;
                }
                if (n_amb != 0) {
                    for (int l = 0; l < kTile; ++l) {
                        if (!(std::abs(best[l] - t) <= band)) continue;
                        bool ab;
                        int c;
                        exact_box(w[l], h[l], A, th.t, ab, c);
                        above[l] = ab ? 1.0 : 0.0;
                    }
                }
                for (int l0 = 0; l0 < kTile; l0 += kLanes) {
                    for (int l = 0; l < kLanes; ++l) {
                        const double bl = best[l0 + l];
                        const double z = Weighted ? om[l0 + l] * bl : bl;
                        a[l] += fix_round(above[l0 + l] != 0.0 ? z * kFixScale : 0.0);
                    }
                }
            } else {
                for (index_t i = 0; i < m; ++i) {
                    double bl = 0.0;
                    for (std::uint64_t r = mk; r != 0; r &= r - 1) {
                        const int j = __builtin_ctzll(r);
                        bl = std::max(bl, ratio_fast(w[i], h[i], iw[i], ih[i], aw[j], ah[j], aiw[j], aih[j]));
                    }
                    bool ab = bl > t;
                    if (std::abs(bl - t) <= band) {
                        int c;
                        exact_box(w[i], h[i], A, th.t, ab, c);
                    }
                    if (ab) extra[s] += fix_round((Weighted ? om[i] * bl : bl) * kFixScale);
                }
            }
        }
    }
}

// Fitness sums without pruning (more than 64 anchors): every anchor, boxes in tiles as above.
template <bool Weighted>
FASTANCHOR_CLONES std::int64_t plain_sum(const FitBoxes& B, index_t b, index_t e, const RatioAnchors& A,
                                         const Threshold& th) {
    const int k = A.k;
    const double *aw = A.w.data(), *ah = A.h.data(), *aiw = A.iw.data(), *aih = A.ih.data();
    std::int64_t total = 0;
    for (index_t i0 = b; i0 < e; i0 += kLanes) {
        const int m = static_cast<int>(std::min<index_t>(kLanes, e - i0));
        double best[kLanes];
        for (int l = 0; l < kLanes; ++l) best[l] = 0.0;
        for (int j = 0; j < k; ++j) {
            for (int l = 0; l < m; ++l) {
                const index_t i = i0 + l;
                best[l] = std::max(best[l], ratio_fast(B.w[i], B.h[i], B.iw[i], B.ih[i], aw[j], ah[j], aiw[j], aih[j]));
            }
        }
        for (int l = 0; l < m; ++l) {
            const index_t i = i0 + l;
            bool ab = best[l] > th.t;
            if (std::abs(best[l] - th.t) <= th.band) {
                int c;
                exact_box(B.w[i], B.h[i], A, th.t, ab, c);
            }
            if (ab) total += fix_round((Weighted ? B.om[i] * best[l] : best[l]) * kFixScale);
        }
    }
    return total;
}

}  // namespace fitdetail

// Fitness of `count` candidate anchor sets in one pass over the boxes (each chunk of boxes is
// visited once and scored against every candidate while it is in cache). out[c] = fitness of
// candidates[c].
inline void fitness_batch(const TiledBoxes& T, const RatioAnchors* candidates, int count, double thr, double* out,
                          int n_threads) {
    if (count <= 0) return;
    const Threshold th(thr);
    const index_t n = T.size();
    const index_t nc = n_chunks(n);
    std::vector<std::int64_t> part(static_cast<std::size_t>(nc) * count);
    const bool weighted = T.boxes.weighted();
    const bool pruned = candidates[0].k <= fitdetail::kMaxPruned;
    // Per-thread scratch, allocated here: nothing may throw inside the parallel region.
    const std::size_t tiles = static_cast<std::size_t>(count) * fitdetail::kTilesPerChunk;
    const std::size_t lanes = static_cast<std::size_t>(count) * fitdetail::kLanes;
    const std::size_t threads = static_cast<std::size_t>(chunk_threads(n, n_threads));
    std::vector<std::uint64_t> all_masks(pruned ? threads * tiles : 0);
    std::vector<std::uint8_t> all_sures(pruned ? threads * tiles : 0);
    std::vector<std::int64_t> all_acc(pruned ? threads * lanes : 0);
    for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
        std::int64_t* out_c = part.data() + static_cast<std::size_t>(c) * count;
        if (!pruned) {
            for (int s = 0; s < count; ++s)
                out_c[s] = weighted ? fitdetail::plain_sum<true>(T.boxes, b, e, candidates[s], th)
                                    : fitdetail::plain_sum<false>(T.boxes, b, e, candidates[s], th);
            return;
        }
        const index_t q0 = b / fitdetail::kTile, q1 = (e + fitdetail::kTile - 1) / fitdetail::kTile;
        const std::size_t t = static_cast<std::size_t>(thread_index());
        std::uint64_t* masks = all_masks.data() + t * tiles;
        std::uint8_t* sures = all_sures.data() + t * tiles;
        std::int64_t* acc = all_acc.data() + t * lanes;
        std::fill(acc, acc + lanes, std::int64_t{0});
        for (int s = 0; s < count; ++s) {
            const std::size_t at = static_cast<std::size_t>(s) * fitdetail::kTilesPerChunk;
            fitdetail::tile_masks(T, q0, q1, candidates[s], th, masks + at, sures + at);
        }
        for (int s = 0; s < count; ++s) out_c[s] = 0;
        if (weighted)
            fitdetail::tiled_sums<true>(T, q0, q1, candidates, count, th, masks, sures, acc, out_c);
        else
            fitdetail::tiled_sums<false>(T, q0, q1, candidates, count, th, masks, sures, acc, out_c);
        for (int s = 0; s < count; ++s)
            for (int l = 0; l < fitdetail::kLanes; ++l)
                out_c[s] += acc[static_cast<std::size_t>(s) * fitdetail::kLanes + l];
    });
    const double denom = static_cast<double>(T.boxes.denom);
    for (int s = 0; s < count; ++s) {
        __int128 total = 0;
        for (index_t c = 0; c < nc; ++c) total += part[static_cast<std::size_t>(c) * count + s];
        out[s] = static_cast<double>(total) / denom;
    }
}

// ---------------------------------------------------------------------------------------------
// The mutation search.

enum class Strategy {
    // Per-anchor mutations with per-anchor step sizes and greedy combination (the default).
    Anchorwise,
    // YOLOv5's kmean_anchors mutation, exactly.
    YOLOv5,
};

struct EvolveOptions {
    double thr = 4.0;
    int generations = 1000;
    double mutation_prob = 0.9;
    double sigma = 0.1;
    double min_size = 2.0;
    Strategy strategy = Strategy::Anchorwise;
    int batch = 8;  // candidates evaluated per pass over the boxes
    std::uint64_t seed = 0;
    int n_threads = 1;
};

struct EvolveOutput {
    std::vector<double> anchors;  // k rows (w, h), sorted by area ascending, ties by width
    FitnessMetrics metrics;       // of the returned anchors
    std::vector<double> history;  // best fitness after each generation run
    int n_improved = 0;           // generations whose candidate became the new best
    double initial_fitness = 0.0;
};

// Observes the search. tick() (from Monitor) runs once per pass and may throw to stop it (Ctrl-C).
class EvolveMonitor : public Monitor {
public:
    // After each pass: generations done and the best fitness so far.
    virtual void progress(int done, double fitness) {
        (void)done;
        (void)fitness;
    }
    // Whether generation() is to be called after every generation.
    virtual bool per_generation() const { return false; }
    // After generation g (1-based) with the best fitness and anchors so far; false stops the search.
    virtual bool generation(int g, double fitness, const RatioAnchors& best) {
        (void)g;
        (void)fitness;
        (void)best;
        return true;
    }
};

inline EvolveMonitor& null_evolve_monitor() {
    static EvolveMonitor m;
    return m;
}

namespace fitdetail {

// Stream of the search's generator, derived from the seed (k-means restarts use streams 0, 1, ...).
inline constexpr std::uint64_t kEvolveStream = 0x65766F6C7665ULL;  // "evolve"
// A mutation that leaves every value unchanged is redrawn, at most this many times; then the
// generation is skipped (only with a vanishing mutation_prob or sigma).
inline constexpr int kMaxRedraws = 1000;
// Step sizes of the anchorwise strategy: multiplied on success and failure (a success rate of
// about 1 in 5 keeps them steady), and kept within [kStepMin, max(kStepMax, sigma)].
inline constexpr double kStepUp = 1.6, kStepDown = 0.9, kStepMin = 1e-4, kStepMax = 0.5;

// YOLOv5's mutation factors for k anchors (2k values, rows (w, h)): per attempt 2k uniforms u,
// one rho, 2k normals z; v = clip(([u < mp] * rho) * z * sigma + 1, 0.3, 3.0), redrawn while
// every v == 1. False when every attempt left all values unchanged.
inline bool yolov5_factors(Rng& rng, int k, double mp, double sigma, double* v) {
    const int m = 2 * k;
    std::vector<double> u(m);
    for (int attempt = 0; attempt < kMaxRedraws; ++attempt) {
        for (int i = 0; i < m; ++i) u[i] = rng.uniform();
        const double rho = rng.uniform();
        bool all_one = true;
        for (int i = 0; i < m; ++i) {
            const double z = rng.normal();
            const double r = u[i] < mp ? rho : 0.0;
            const double x = std::min(std::max(r * z * sigma + 1.0, 0.3), 3.0);
            v[i] = x;
            all_one = all_one && x == 1.0;
        }
        if (!all_one) return true;
    }
    return false;
}

// The largest side a mutation may produce: the largest side every function accepts.
inline constexpr double kMaxSide = 1e30;

// A mutated side, kept within [min_size, kMaxSide].
inline double mutated_side(double x, double min_size) { return std::min(std::max(x, min_size), kMaxSide); }

inline void mutate_all(const RatioAnchors& parent, const double* v, double min_size, RatioAnchors& out) {
    for (int j = 0; j < parent.k; ++j)
        out.set(j, mutated_side(parent.w[j] * v[2 * j], min_size), mutated_side(parent.h[j] * v[2 * j + 1], min_size));
}

// Order of anchors by area ascending, ties by width, then by index.
inline std::vector<int> anchor_order(const RatioAnchors& a) {
    std::vector<int> order(a.k);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int x, int y) {
        if (a.a[x] != a.a[y]) return a.a[x] < a.a[y];
        return a.w[x] < a.w[y];
    });
    return order;
}

inline RatioAnchors sorted_anchors(const RatioAnchors& a) {
    const std::vector<int> order = anchor_order(a);
    RatioAnchors s(a.k);
    for (int j = 0; j < a.k; ++j) s.set(j, a.w[order[j]], a.h[order[j]]);
    return s;
}

// The search's bookkeeping shared by both strategies: best so far, history, callbacks.
struct SearchState {
    RatioAnchors best;
    double fitness = 0.0;
    int done = 0, n_improved = 0;
    bool stopped = false;
    std::vector<double> history;
    EvolveMonitor* mon = nullptr;

    // Records one generation whose best is (anchors, f); returns false when the search must stop.
    bool record(double f) {
        ++done;
        history.push_back(f);
        if (mon->per_generation() && !mon->generation(done, f, sorted_anchors(best))) {
            stopped = true;
            return false;
        }
        return true;
    }
};

}  // namespace fitdetail

// Refines `init` (k rows) by the mutation search on the fitness of the boxes (n rows, weights
// optional). Anchors are first raised to min_size; a candidate replaces the best only when its
// fitness is strictly higher, so the fitness never decreases. Deterministic for a seed, whatever
// the number of threads (fixed-point sums). See README.md for the strategies.
inline EvolveOutput evolve_anchors(const double* wh, const double* weights, index_t n, const double* init, int k,
                                   const EvolveOptions& o, EvolveMonitor& mon) {
    if (n <= 0 || k <= 0) throw std::invalid_argument("evolve_anchors: need boxes and anchors");
    const TiledBoxes T = TiledBoxes::make(wh, weights, n, o.n_threads);
    Rng rng(derive_seed(o.seed, fitdetail::kEvolveStream));
    const int batch = std::max(1, o.batch);

    fitdetail::SearchState st;
    st.mon = &mon;
    st.best = RatioAnchors(k);
    for (int j = 0; j < k; ++j)
        st.best.set(j, std::max(init[2 * j], o.min_size), std::max(init[2 * j + 1], o.min_size));
    fitness_batch(T, &st.best, 1, o.thr, &st.fitness, o.n_threads);
    st.history.reserve(std::min(std::max(o.generations, 0), 1 << 20));
    EvolveOutput out;
    out.initial_fitness = st.fitness;

    std::vector<RatioAnchors> cands(batch, RatioAnchors(k));
    std::vector<double> fit(batch);
    const int total = std::max(o.generations, 0);

    if (o.strategy == Strategy::YOLOv5) {
        // Speculative batches: the mutation factors do not depend on the outcome, so the next
        // `batch` generations are drawn ahead and scored against the current anchors in one
        // pass. At the first acceptance the later candidates are void (their parent changed):
        // their factors are kept and scored again from the new anchors. The result is exactly
        // YOLOv5's sequential search.
        std::vector<std::vector<double>> queue;  // factors of generations drawn, not yet run (empty: skipped)
        while (st.done < total && !st.stopped) {
            const int nb = std::min(batch, total - st.done);
            while (static_cast<int>(queue.size()) < nb) {
                std::vector<double> v(2 * k);
                if (!(o.mutation_prob > 0.0) || !fitdetail::yolov5_factors(rng, k, o.mutation_prob, o.sigma, v.data()))
                    v.clear();
                queue.push_back(std::move(v));
            }
            int count = 0;
            std::vector<int> slot(nb, -1);
            for (int b = 0; b < nb; ++b) {
                if (queue[b].empty()) continue;
                fitdetail::mutate_all(st.best, queue[b].data(), o.min_size, cands[count]);
                slot[b] = count++;
            }
            mon.tick("evolve", 0, st.done);
            fitness_batch(T, cands.data(), count, o.thr, fit.data(), o.n_threads);
            int consumed = 0;
            for (int b = 0; b < nb; ++b) {
                ++consumed;
                const bool accept = slot[b] >= 0 && fit[slot[b]] > st.fitness;
                if (accept) {
                    st.best = cands[slot[b]];
                    st.fitness = fit[slot[b]];
                    ++st.n_improved;
                }
                if (!st.record(st.fitness) || accept) break;
            }
            queue.erase(queue.begin(), queue.begin() + consumed);
            mon.progress(st.done, st.fitness);
        }
    } else {
        // Anchorwise: each pass scores `batch` candidates that each move one anchor (a random
        // permutation of the anchors, cycled), by a log-normal factor exp(step_j * z) on each side
        // (a side moves with probability mutation_prob, at least one side per candidate), with
        // one step size per anchor: times 1.6 after a candidate of that anchor beat the current
        // fitness, times 0.9 otherwise. The best candidate of the pass, if better, becomes the
        // current anchors; when several candidates improved different anchors, their combination
        // is scored in the first slot of the next pass.
        const double step_max = std::max(fitdetail::kStepMax, o.sigma);
        std::vector<double> step(k, o.sigma);
        std::vector<int> order(k), moved(batch);
        RatioAnchors pending;
        bool has_pending = false;
        while (st.done < total && !st.stopped) {
            const int nb = std::min(batch, total - st.done);
            int count = 0;
            if (has_pending) {
                cands[count] = pending;
                moved[count++] = -1;
                has_pending = false;
            }
            std::iota(order.begin(), order.end(), 0);
            for (int i = 0; i + 1 < k; ++i) std::swap(order[i], order[i + static_cast<int>(rng.below(k - i))]);
            for (int q = 0; count < nb; ++q) {
                const int j = order[q % k];
                bool mw = false, mh = false;
                for (int attempt = 0; attempt < fitdetail::kMaxRedraws && !(mw || mh); ++attempt) {
                    mw = rng.uniform() < o.mutation_prob;
                    mh = rng.uniform() < o.mutation_prob;
                }
                const double zw = rng.normal(), zh = rng.normal();
                cands[count] = st.best;
                const double fw = mw ? std::exp(step[j] * zw) : 1.0, fh = mh ? std::exp(step[j] * zh) : 1.0;
                cands[count].set(j, fitdetail::mutated_side(st.best.w[j] * fw, o.min_size),
                                 fitdetail::mutated_side(st.best.h[j] * fh, o.min_size));
                moved[count++] = j;
            }
            mon.tick("evolve", 0, st.done);
            fitness_batch(T, cands.data(), count, o.thr, fit.data(), o.n_threads);
            const double base = st.fitness;
            int winner = -1;
            for (int b = 0; b < count; ++b) {
                if (fit[b] > st.fitness) {
                    st.best = cands[b];
                    st.fitness = fit[b];
                    ++st.n_improved;
                    winner = b;
                }
                if (!st.record(st.fitness)) break;
            }
            if (st.stopped) break;
            for (int b = 0; b < count; ++b) {
                const int j = moved[b];
                if (j < 0) continue;
                step[j] = fit[b] > base ? std::min(step[j] * fitdetail::kStepUp, step_max)
                                        : std::max(step[j] * fitdetail::kStepDown, fitdetail::kStepMin);
            }
            if (winner >= 0 && moved[winner] >= 0) {
                // Other candidates that improved on other anchors: try them all together.
                std::vector<int> improving;
                for (int b = 0; b < count; ++b)
                    if (b != winner && moved[b] >= 0 && moved[b] != moved[winner] && fit[b] > base)
                        improving.push_back(b);
                std::stable_sort(improving.begin(), improving.end(), [&](int x, int y) { return fit[x] > fit[y]; });
                pending = st.best;
                std::vector<char> taken(k, 0);
                taken[moved[winner]] = 1;
                int added = 0;
                for (int b : improving) {
                    const int j = moved[b];
                    if (taken[j]) continue;
                    taken[j] = 1;
                    pending.set(j, cands[b].w[j], cands[b].h[j]);
                    ++added;
                }
                has_pending = added > 0;
            }
            mon.progress(st.done, st.fitness);
        }
    }

    const RatioAnchors sorted = fitdetail::sorted_anchors(st.best);
    out.anchors.resize(2 * static_cast<std::size_t>(k));
    sorted.to_rows(out.anchors.data());
    out.metrics = fitness_metrics(T.boxes, sorted, o.thr, o.n_threads);
    out.history = std::move(st.history);
    out.n_improved = st.n_improved;
    return out;
}

}  // namespace fastanchor
