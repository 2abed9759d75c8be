// fastanchor: the anchor fitness of YOLOv5's autoanchor (the side-ratio metric, geometry.hpp's
// ratio_exact and ratio_fast) and its report (fitness, best possible recall, anchors above
// threshold, average IoU). The search's tiled layout is in tiles.hpp, the search in evolve.hpp.
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

#include "../common.hpp"
#include "../fixed_k.hpp"
#include "../geometry.hpp"

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

// The largest of n weights, which must be positive (the weights are scaled by it to om in [0, 1]).
inline double largest_weight(const double* w, index_t n, int n_threads) {
    std::vector<double> part(n_chunks(n), 0.0);
    for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
        double m = 0.0;
        for (index_t i = b; i < e; ++i) m = std::max(m, w[i]);
        part[c] = m;
    });
    const double top = *std::max_element(part.begin(), part.end());
    if (!(top > 0.0)) throw std::invalid_argument("the weights must have a positive sum");
    return top;
}

// The fixed-point total weight: the sum of round(w / top * 2^50), exact in any order.
inline int128_t weight_total(const double* w, index_t n, double top, int n_threads) {
    std::vector<std::int64_t> part(n_chunks(n), 0);
    for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
        std::int64_t d = 0;
        for (index_t i = b; i < e; ++i) d += fix_round(w[i] / top * kFixScale);
        part[c] = d;
    });
    int128_t total = 0;
    for (const std::int64_t d : part) total += d;
    return total;
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

// Boxes prepared for the IoU objectives: structure of arrays, and the weights scaled to a largest
// value of 1 (om; empty for unit weights).
struct FitBoxes {
    index_t n = 0;
    std::vector<double> w, h, om;
    // Sum over boxes of round(om * 2^50) (n * 2^50 for unit weights): the fixed-point total weight.
    int128_t denom = 0;

    bool weighted() const { return !om.empty(); }

    static FitBoxes make(const double* wh, const double* weights, index_t n, int n_threads = 1) {
        FitBoxes b;
        b.n = n;
        b.w.resize(n);
        b.h.resize(n);
        const double top = weights ? fitdetail::largest_weight(weights, n, n_threads) : 1.0;
        if (weights) b.om.resize(n);
        for_each_chunk(n, n_threads, [&](index_t, index_t lo, index_t hi) {
            for (index_t i = lo; i < hi; ++i) {
                b.w[i] = wh[2 * i];
                b.h[i] = wh[2 * i + 1];
                if (weights) b.om[i] = weights[i] / top;
            }
        });
        b.denom = weights ? fitdetail::weight_total(weights, n, top, n_threads)
                          : static_cast<int128_t>(n) * (INT64_C(1) << 50);
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
    int128_t fit = 0, bpr = 0, aat = 0, iou = 0, den = 0;
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

// Boxes per block of the report kernel, as one vector of 4 doubles (GCC/Clang vector extensions:
// a ymm register with AVX2 and AVX-512, two xmm otherwise; every lane rounds as a scalar double
// would, so the results do not depend on the instruction set). Not 8: GCC 12 compiled the
// compares and selects of 8-double vectors lane by lane through the stack in the AVX2 clone (AVX2
// has no 512-bit compare), and anchor_fitness took 215 ms instead of 18.5 ms on 2^20 boxes.
inline constexpr int kBlock = 4;
typedef double VBd __attribute__((vector_size(32)));
typedef std::int64_t VBi __attribute__((vector_size(32)));
// (No function takes or returns a vector by value, so the vector ABI, on which GCC warns for the
// baseline clone, never matters.)
#define FASTANCHOR_VMIN(a, b) ((b) < (a) ? (b) : (a))
#define FASTANCHOR_VMAX(a, b) ((a) < (b) ? (b) : (a))

// acc += fix_round(z), every lane.
__attribute__((always_inline)) inline void vfix_add(VBi& acc, const VBd& z) {
    const VBd y = z + 0x1p52;
    VBi q;
    std::memcpy(&q, &y, sizeof q);
    acc += q - INT64_C(0x4330000000000000);
}

struct BlockSums {
    VBi fit = {}, bpr = {}, aat = {}, iou = {}, den = {};
};

// Every metric on one block of kBlock boxes against every anchor (KT > 0 fixes k at compile time,
// unrolling the anchor loop). om holds the weights scaled to a largest value of 1 (1 for unit
// weights, 0 in the padding of a tail block); m is the number of real boxes.
template <int KT>
__attribute__((always_inline)) inline void metrics_block(const VBd& w, const VBd& h, const VBd& iw, const VBd& ih,
                                                         const VBd& om, int m, const RatioAnchors& A, const double* aw,
                                                         const double* ah, const double* aiw, const double* aih,
                                                         const double* aa, const Threshold& th, double aat_scale,
                                                         BlockSums& acc) {
    const int k = KT > 0 ? KT : A.k;
    const VBd zero = {}, one = zero + 1.0;
    const double t = th.t;
    const VBd area = w * h;
    VBd best = zero, cnt = zero, dist = zero + HUGE_VAL;
    const VBd aw0 = zero + aw[0], ah0 = zero + ah[0];
    VBd bi = FASTANCHOR_VMIN(w, aw0) * FASTANCHOR_VMIN(h, ah0);
    VBd bu = (area + aa[0]) - bi;
    for (int j = 0; j < k; ++j) {
        const double awj = aw[j], ahj = ah[j], iwj = aiw[j], ihj = aih[j], aaj = aa[j];
        const VBd rw = w * iwj, sw = awj * iw, rh = h * ihj, sh = ahj * ih;
        const VBd xw = FASTANCHOR_VMIN(rw, sw), xh = FASTANCHOR_VMIN(rh, sh);
        const VBd x = FASTANCHOR_VMIN(xw, xh);
        best = FASTANCHOR_VMAX(best, x);
        cnt += x > t ? one : zero;
        const VBd d = x - t, ad = d < 0.0 ? -d : d;
        dist = FASTANCHOR_VMIN(dist, ad);
        // Highest IoU, compared by cross products (no division).
        const VBd awv = zero + awj, ahv = zero + ahj;
        const VBd inter = FASTANCHOR_VMIN(w, awv) * FASTANCHOR_VMIN(h, ahv);
        const VBd u = (area + aaj) - inter;
        const VBi better = inter * bu > bi * u;
        bi = better ? inter : bi;
        bu = better ? u : bu;
    }
    VBd above = best > t ? one : zero;
    const VBi amb = dist <= th.band;
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

// Where the report kernel reads its boxes: the caller's rows (w, h), with the reciprocals and
// scaled weights computed on the fly (tiles.hpp's LayoutBoxes reads a search layout the same way).
template <class Row>
struct RowBoxes {
    const Row* wh;          // float or double
    const double* weights;  // null: unit weights
    double top;             // the largest weight
    bool weighted() const { return weights != nullptr; }
    __attribute__((always_inline)) void load(index_t i0, int m, VBd& w, VBd& h, VBd& iw, VBd& ih, VBd& om) const {
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
// are flushed to the 128-bit totals every 64 boxes (16 terms of at most 2^50 per lane).
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
        VBd w, h, iw, ih, om;
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
    const bool fixed =
        with_k_in(A.k, [&](auto K) { metrics_range<decltype(K)::value>(src, b, e, A, th, out); }, FitnessKs{});
    if (!fixed) metrics_range<0>(src, b, e, A, th, out);
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
    m.aat =
        src.weighted() ? static_cast<double>(s.aat) * A.k / denom : static_cast<double>(s.aat) / static_cast<double>(n);
    m.avg_iou = static_cast<double>(s.iou) / denom;
    return m;
}

#undef FASTANCHOR_VMIN
#undef FASTANCHOR_VMAX

}  // namespace fitdetail

// Fitness, best possible recall, anchors above threshold and average IoU of `A` on n rows (w, h)
// of the caller (float or double; weights: n values or null).
template <class Row>
FitnessMetrics fitness_metrics(const Row* wh, const double* weights, index_t n, const RatioAnchors& A, double thr,
                               int n_threads) {
    const double top = weights ? fitdetail::largest_weight(weights, n, n_threads) : 1.0;
    return fitdetail::metrics_of(fitdetail::RowBoxes<Row>{wh, weights, top}, n, A, thr, n_threads);
}

}  // namespace fastanchor
