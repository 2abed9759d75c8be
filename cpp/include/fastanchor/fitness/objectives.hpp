// fastanchor: the IoU objectives of the mutation search (average best IoU, recall at an IoU
// threshold), beside YOLOv5's ratio fitness (metrics.hpp), with the same exactness contract.
//
// Definitions (the numpy reference in tests/reference.py, iou_objective, is the specification).
// For box i (w, h) and anchor j (aw, ah), both corner-aligned, the IoU is geometry.hpp's
//     IoU_ij = min(w, aw) * min(h, ah) / ((w * h + aw * ah) - min(w, aw) * min(h, ah)),
// best_i = max_j IoU_ij, and with om_i the weight scaled to a largest weight of 1:
//     avg_iou = sum_i om_i * best_i / sum_i om_i
//     recall  = sum_i om_i * [best_i >= t] / sum_i om_i            (iou_weighted: om_i * best_i * [best_i >= t])
// Every IoU is computed by the reference's own operations (a division per pair, no shortcut), so
// best_i and every decision [best_i >= t] are the reference's bit for bit. Every term is rounded
// to a multiple of 2^-50 and the integers are added exactly (fitness/metrics.hpp's rule), so the
// value does not depend on the order of the boxes, the number of threads or the vector width.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "../common.hpp"
#include "../fixed_k.hpp"
#include "../geometry.hpp"
#include "../parallel.hpp"
#include "metrics.hpp"
#include "tiles.hpp"

namespace fastanchor {

enum class ObjectiveKind {
    Fitness,  // YOLOv5's ratio fitness (metrics.hpp)
    AvgIou,   // average best IoU
    Recall,   // recall at IoU >= iou_thr, optionally weighted by the IoU
};

struct Objective {
    ObjectiveKind kind = ObjectiveKind::Fitness;
    double iou_thr = 0.5;       // Recall: a box counts when its best IoU is >= iou_thr
    bool iou_weighted = false;  // Recall: a box counts with its best IoU instead of 1
};

namespace fitdetail {

// The objective's term of a box with best IoU `best` and scaled weight om, in units of 2^-50.
__attribute__((always_inline)) inline std::int64_t iou_term(double best, double om, bool recall, bool weighted_iou,
                                                            double t) {
    double z = best;
    if (recall) z = best >= t ? (weighted_iou ? best : 1.0) : 0.0;
    return fix_round(om * z * kFixScale);
}

// Fixed-point sum of the objective's terms over m boxes w, h with scaled weights om (read when
// Weighted; KT > 0 fixes k). A chunk holds at most kChunk = 2^12 terms of at most 2^50: the int64
// sum never overflows.
template <int KT, bool Weighted>
FASTANCHOR_CLONES std::int64_t iou_objective_sum(const double* wv, const double* hv, const double* om, index_t m_all,
                                                 const RatioAnchors& A, const Objective& ob) {
    const int k = KT > 0 ? KT : A.k;
    const double *aw = A.w.data(), *ah = A.h.data(), *aa = A.a.data();
    const bool recall = ob.kind == ObjectiveKind::Recall, weighted_iou = ob.iou_weighted;
    const double t = ob.iou_thr;
    std::int64_t total = 0;
    for (index_t i0 = 0; i0 < m_all; i0 += kLanes) {
        const int m = static_cast<int>(std::min<index_t>(kLanes, m_all - i0));
        double w[kLanes], h[kLanes], ar[kLanes], best[kLanes];
        for (int l = 0; l < kLanes; ++l) {
            const bool in = l < m;
            w[l] = in ? wv[i0 + l] : 1.0;
            h[l] = in ? hv[i0 + l] : 1.0;
            ar[l] = w[l] * h[l];
            best[l] = 0.0;
        }
        for (int j = 0; j < k; ++j) {
            const double awj = aw[j], ahj = ah[j], aaj = aa[j];
            for (int l = 0; l < kLanes; ++l) {
                const double v = iou_wh(w[l], h[l], ar[l], awj, ahj, aaj);
                best[l] = v > best[l] ? v : best[l];
            }
        }
        for (int l = 0; l < m; ++l) total += iou_term(best[l], Weighted ? om[i0 + l] : 1.0, recall, weighted_iou, t);
    }
    return total;
}

// The same sum, every anchor (KT fixed when k is one of FitnessKs).
inline std::int64_t iou_objective_rows(const double* w, const double* h, const double* om, index_t m,
                                       const RatioAnchors& A, const Objective& ob) {
    std::int64_t r = 0;
    const bool fixed = with_k_in(
        A.k,
        [&](auto K) {
            constexpr int KT = decltype(K)::value;
            r = om ? iou_objective_sum<KT, true>(w, h, om, m, A, ob) : iou_objective_sum<KT, false>(w, h, om, m, A, ob);
        },
        FitnessKs{});
    if (!fixed)
        r = om ? iou_objective_sum<0, true>(w, h, om, m, A, ob) : iou_objective_sum<0, false>(w, h, om, m, A, ob);
    return r;
}

// Over boxes [b, e) of B.
inline std::int64_t iou_objective_chunk(const FitBoxes& B, index_t b, index_t e, const RatioAnchors& A,
                                        const Objective& ob) {
    return iou_objective_rows(B.w.data() + b, B.h.data() + b, B.weighted() ? B.om.data() + b : nullptr, e - b, A, ob);
}

// Over the tiles [q0, q1) of the search's layout, every anchor.
inline std::int64_t iou_objective_plain_tiles(const TiledBoxes& T, index_t q0, index_t q1, const RatioAnchors& A,
                                              const Objective& ob) {
    std::int64_t r = 0;
    TileBoxes tb;
    for (index_t q = q0; q < q1; ++q) {
        T.gather<false>(q, tb);
        r += iou_objective_rows(tb.w, tb.h, T.weighted() ? tb.om : nullptr, tb.m, A, ob);
    }
    return r;
}

// The same sum over the tiles [q0, q1) of the search's layout, with per-tile pruning. The IoU of
// a box (w, h) with anchor (aw, ah) grows with w up to w = aw and falls beyond, whatever h, and
// likewise in h; so over a tile's rectangle [w0, w1] x [h0, h1] it is largest at the point
// nearest the anchor, (clamp(aw), clamp(ah)): U_j, and smallest at a corner: L_j. An anchor with
// U_j below max_j' L_j' never holds a box's best IoU in the tile and is skipped. Bounds are
// widened by the relative kBand (1e-12), far beyond the rounding of the IoU (a few units of
// 2^-53), so a skipped anchor's computed IoU is below an evaluated anchor's for every box: the
// best IoU is the unpruned value bit for bit.
template <int KT, bool Weighted>
FASTANCHOR_CLONES std::int64_t iou_objective_tiles(const TiledBoxes& T, index_t q0, index_t q1, const RatioAnchors& A,
                                                   const Objective& ob) {
    const int k = KT > 0 ? KT : A.k;
    const double *aw = A.w.data(), *ah = A.h.data(), *aa = A.a.data();
    const bool recall = ob.kind == ObjectiveKind::Recall, weighted_iou = ob.iou_weighted;
    const double t = ob.iou_thr;
    std::int64_t total = 0;
    double U[kMaxPruned];
    TileBoxes tb;
    for (index_t q = q0; q < q1; ++q) {
        const double w0 = T.w0[q], w1 = T.w1[q], h0 = T.h0[q], h1 = T.h1[q];
        const double a00 = w0 * h0, a01 = w0 * h1, a10 = w1 * h0, a11 = w1 * h1;
        double M = 0.0;
        for (int j = 0; j < k; ++j) {
            const double awj = aw[j], ahj = ah[j], aaj = aa[j];
            const double L = std::min(std::min(iou_wh(w0, h0, a00, awj, ahj, aaj), iou_wh(w0, h1, a01, awj, ahj, aaj)),
                                      std::min(iou_wh(w1, h0, a10, awj, ahj, aaj), iou_wh(w1, h1, a11, awj, ahj, aaj)));
            M = L > M ? L : M;
            const double cw = std::min(std::max(awj, w0), w1), ch = std::min(std::max(ahj, h0), h1);
            U[j] = iou_wh(cw, ch, cw * ch, awj, ahj, aaj);
        }
        M *= 1.0 - kBand;
        T.gather<false>(q, tb);
        const int m = tb.m;
        const double *w = tb.w, *h = tb.h;
        double best[kTile];
        for (int l = 0; l < kTile; ++l) best[l] = 0.0;
        for (int j = 0; j < k; ++j) {
            if (U[j] * (1.0 + kBand) < M) continue;
            const double awj = aw[j], ahj = ah[j], aaj = aa[j];
            for (int l = 0; l < m; ++l) {
                const double v = iou_wh(w[l], h[l], w[l] * h[l], awj, ahj, aaj);
                best[l] = v > best[l] ? v : best[l];
            }
        }
        for (int l = 0; l < m; ++l) total += iou_term(best[l], Weighted ? tb.om[l] : 1.0, recall, weighted_iou, t);
    }
    return total;
}

inline std::int64_t iou_objective_tiled_chunk(const TiledBoxes& T, index_t q0, index_t q1, const RatioAnchors& A,
                                              const Objective& ob) {
    std::int64_t r = 0;
    const bool w = T.weighted();
    const bool fixed = with_k_in(
        A.k,
        [&](auto K) {
            constexpr int KT = decltype(K)::value;
            r = w ? iou_objective_tiles<KT, true>(T, q0, q1, A, ob) : iou_objective_tiles<KT, false>(T, q0, q1, A, ob);
        },
        FitnessKs{});
    if (!fixed)
        r = w ? iou_objective_tiles<0, true>(T, q0, q1, A, ob) : iou_objective_tiles<0, false>(T, q0, q1, A, ob);
    return r;
}

}  // namespace fitdetail

// The IoU objective (avg_iou or recall) of `count` candidate anchor sets on the prepared boxes, in
// one pass over them (each chunk is scored against every candidate while in cache).
inline void iou_objective_batch(const FitBoxes& B, const RatioAnchors* candidates, int count, const Objective& ob,
                                double* out, int n_threads) {
    if (count <= 0) return;
    if (ob.kind == ObjectiveKind::Fitness) throw std::invalid_argument("iou_objective_batch: not an IoU objective");
    const index_t n = B.n;
    const index_t nc = n_chunks(n);
    std::vector<std::int64_t> part(static_cast<std::size_t>(nc) * count, 0);
    for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
        std::int64_t* out_c = part.data() + static_cast<std::size_t>(c) * count;
        checked_slices(count, (e - b) * candidates[0].k, [&](index_t s0, index_t s1) {
            for (index_t s = s0; s < s1; ++s) out_c[s] = fitdetail::iou_objective_chunk(B, b, e, candidates[s], ob);
        });
    });
    const double denom = static_cast<double>(B.denom);
    for (int s = 0; s < count; ++s) {
        int128_t total = 0;
        for (index_t c = 0; c < nc; ++c) total += part[static_cast<std::size_t>(c) * count + s];
        out[s] = static_cast<double>(total) / denom;
    }
}

// Fixed-point totals of the IoU objective of `count` candidates on the search's tiled layout
// (per-tile pruning up to 64 anchors): totals[c] / T.denom is the value of candidates[c], the
// same as iou_objective_batch's on the boxes, bit for bit. Totals of disjoint sets of boxes add
// up to the total of their union, exactly.
inline void iou_objective_totals(const TiledBoxes& T, const RatioAnchors* candidates, int count, const Objective& ob,
                                 int128_t* totals, int n_threads) {
    if (count <= 0) return;
    if (ob.kind == ObjectiveKind::Fitness) throw std::invalid_argument("iou_objective_totals: not an IoU objective");
    const bool pruned = candidates[0].k <= fitdetail::kMaxPruned;
    const index_t n = T.size();
    const index_t nc = n_chunks(n);
    std::vector<std::int64_t> part(static_cast<std::size_t>(nc) * count, 0);
    for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
        std::int64_t* out_c = part.data() + static_cast<std::size_t>(c) * count;
        const index_t q0 = b / fitdetail::kTile, q1 = (e + fitdetail::kTile - 1) / fitdetail::kTile;
        checked_slices(count, (e - b) * candidates[0].k, [&](index_t s0, index_t s1) {
            for (index_t s = s0; s < s1; ++s)
                out_c[s] = pruned ? fitdetail::iou_objective_tiled_chunk(T, q0, q1, candidates[s], ob)
                                  : fitdetail::iou_objective_plain_tiles(T, q0, q1, candidates[s], ob);
        });
    });
    for (int s = 0; s < count; ++s) {
        int128_t total = 0;
        for (index_t c = 0; c < nc; ++c) total += part[static_cast<std::size_t>(c) * count + s];
        totals[s] = total;
    }
}

// The IoU objective of `count` candidates on the search's tiled layout (the same values as
// iou_objective_batch on the boxes, bit for bit).
inline void iou_objective_batch(const TiledBoxes& T, const RatioAnchors* candidates, int count, const Objective& ob,
                                double* out, int n_threads) {
    if (count <= 0) return;
    std::vector<int128_t> totals(static_cast<std::size_t>(count));
    iou_objective_totals(T, candidates, count, ob, totals.data(), n_threads);
    const double denom = static_cast<double>(T.denom);
    for (int s = 0; s < count; ++s) out[s] = static_cast<double>(totals[s]) / denom;
}

// Fixed-point totals of any objective (the ratio fitness with threshold thr, or an IoU objective)
// of `count` candidates on the tiled boxes: totals[c] / T.denom is the value of candidates[c].
inline void objective_totals(const TiledBoxes& T, const RatioAnchors* candidates, int count, const Objective& ob,
                             double thr, int128_t* totals, int n_threads) {
    if (ob.kind == ObjectiveKind::Fitness) fitness_totals(T, candidates, count, thr, totals, n_threads);
    else iou_objective_totals(T, candidates, count, ob, totals, n_threads);
}

// The objective of anchors A on n rows (w, h) of the caller (weights: n values or null).
inline double objective_value(const double* wh, const double* weights, index_t n, const RatioAnchors& A,
                              const Objective& ob, double thr, int n_threads) {
    if (n <= 0 || A.k <= 0) throw std::invalid_argument("objective_value: need boxes and anchors");
    if (ob.kind == ObjectiveKind::Fitness) return fitness_metrics(wh, weights, n, A, thr, n_threads).fitness;
    const FitBoxes B = FitBoxes::make(wh, weights, n, n_threads);
    double v = 0.0;
    iou_objective_batch(B, &A, 1, ob, &v, n_threads);
    return v;
}

}  // namespace fastanchor
