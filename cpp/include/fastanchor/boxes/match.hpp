// fastanchor: SSD prior matching of corner boxes (match_batch; the row kernel's AVX2 twin in
// match_avx2.hpp).
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
#include "box_iou.hpp"

namespace fastanchor {

// ---- SSD prior matching ------------------------------------------------------------------------
//
// For one image with G ground-truth boxes and P priors (IoU matrix iou[g][p]):
//   1. Forced matches (greedy bipartite): min(G, P) rounds; each round takes the largest IoU
//      among the GT boxes and priors not yet taken, the lowest GT index and then the lowest
//      prior index on exact ties, and matches that prior to that GT. Every GT gets a prior of
//      its own (when P >= G), even with IoU 0.
//   2. Every other prior takes its best GT (the lowest GT index on ties) when that IoU is
//      >= threshold, else -1 (background).

// Images whose G x P IoU matrix has at most this many cells keep it for the greedy rounds
// (32 MB per thread); larger ones recompute a GT's row when its best prior is taken.
inline constexpr index_t kMaxStoredCells = index_t{1} << 22;

struct MatchScratch {
    std::vector<double> mat, buf, best_iou;
    std::vector<std::int32_t> best_gt;
    std::vector<char> taken;
    std::vector<double> g_iou;
    std::vector<std::int32_t> g_prior;
    std::vector<double> bmax;
    std::vector<std::uint8_t> live;
};

namespace detail {

// Index of the first maximum of x[0, n) (n >= 1). Blocks of 64 are reduced in 8 independent
// lanes, which the compiler vectorizes (an OpenMP max reduction did not vectorize with GCC and
// was 6x slower); the first block whose maximum is strictly the largest holds the first maximum,
// found there by a scan.
FASTANCHOR_CLONES inline index_t first_argmax(const double* __restrict x, index_t n, double* best) {
    constexpr index_t kB = 64;
    index_t bb = 0, b = 0;
    double bm = x[0];
    for (; b + kB <= n; b += kB) {
        double m[8];
        for (int l = 0; l < 8; ++l) m[l] = x[b + l];
        for (index_t j = 8; j < kB; j += 8) {
            for (int l = 0; l < 8; ++l) m[l] = m[l] > x[b + j + l] ? m[l] : x[b + j + l];
        }
        double r = m[0];
        for (int l = 1; l < 8; ++l) r = r > m[l] ? r : m[l];
        if (r > bm) {
            bm = r;
            bb = b;
        }
    }
    for (index_t j = b; j < n; ++j) {
        if (x[j] > bm) {
            bm = x[j];
            bb = j;
        }
    }
    index_t j = bb;
    while (x[j] != bm) ++j;
    *best = bm;
    return j;
}

// Bounding boxes of the priors' consecutive blocks of kMatchBlock: a GT box that misses a
// block's bounding box has an intersection of exactly 0 with every prior of the block, which
// the row kernels then skip (no intersection, no division: the divisions bound a row). SSD
// priors are laid out cell by cell, so a box misses most blocks of the fine layers: a quarter of
// the (GT, prior) pairs overlap at all, 36-46% of the blocks of 8 may overlap (by their bounding
// box) in SSD300 and ssd_mobilenet_v1 batches, 47-64% of those of 32.
inline constexpr index_t kMatchBlock = 8;

struct PriorBlocks {
    // Whole blocks only (the last P % kMatchBlock priors are always computed); the arrays are
    // padded to a multiple of 4 blocks (stride()) with boxes that overlap nothing (x1 = +inf,
    // x2 = -inf).
    index_t n = 0;
    std::vector<double> x1, y1, x2, y2;

    explicit PriorBlocks(const CornerSet& pri) : n(pri.size() / kMatchBlock) {
        const index_t padded = (n + 3) / 4 * 4;
        const double inf = std::numeric_limits<double>::infinity();
        x1.assign(padded, inf);
        y1.assign(padded, inf);
        x2.assign(padded, -inf);
        y2.assign(padded, -inf);
        for (index_t k = 0; k < n; ++k) {
            const index_t b = k * kMatchBlock, e = b + kMatchBlock;
            x1[k] = *std::min_element(pri.x1.begin() + b, pri.x1.begin() + e);
            y1[k] = *std::min_element(pri.y1.begin() + b, pri.y1.begin() + e);
            x2[k] = *std::max_element(pri.x2.begin() + b, pri.x2.begin() + e);
            y2[k] = *std::max_element(pri.y2.begin() + b, pri.y2.begin() + e);
        }
    }

    // False only when box (bx1, by1, bx2, by2) has an intersection of exactly 0 with every prior
    // of block k: if, say, x1[k] >= bx2, every prior has min(bx2, x2) <= bx2 <= x1[k] <=
    // max(bx1, x1), so the rounded difference is <= 0 and max(.., 0) makes the width 0; the
    // other three sides alike. The IoUs of such a block are 0 / union = 0 (unions are positive).
    bool may_overlap(index_t k, double bx1, double by1, double bx2, double by2) const {
        return (x1[k] < bx2) & (bx1 < x2[k]) & (y1[k] < by2) & (by1 < y2[k]);
    }

    index_t stride() const { return static_cast<index_t>(x1.size()); }
};

// One GT row of the matching: row[j] = IoU of the GT box with prior j, the priors' best GT so
// far updated (a strictly higher IoU replaces it: the lowest GT index wins ties), and the row's
// first maximum returned (its value in *best). A block that the GT box cannot overlap (see
// PriorBlocks) is not written at all: live[k] = 0 records that its IoUs are 0 (writing every
// zero of a stored matrix took 20% of the time with SSD300's priors). Nor does such a block
// change a best GT: best_iou starts at 0 with best GT 0 (what the first row, whose IoUs are all
// >= 0, would leave there), and 0 never beats it.
//
// Portable kernel: each block's maximum goes to bmax, so the row's first maximum is found in the
// first block whose maximum is the row's (the first prior of a skipped block, whose IoUs are all
// 0), without a second pass over the row.
FASTANCHOR_CLONES inline index_t match_row_portable(double x1, double y1, double x2, double y2, double a,
                                                    const CornerSet& pri, const PriorBlocks& blocks,
                                                    double* __restrict row, double* __restrict best_iou,
                                                    std::int32_t* __restrict best_gt, std::int32_t g,
                                                    std::uint8_t* __restrict live, double* __restrict bmax,
                                                    double* best) {
    constexpr index_t B = kMatchBlock;
    const index_t m = pri.size(), nb = blocks.n;
    const double* __restrict bx1 = pri.x1.data();
    const double* __restrict by1 = pri.y1.data();
    const double* __restrict bx2 = pri.x2.data();
    const double* __restrict by2 = pri.y2.data();
    const double* __restrict ba = pri.a.data();
    // Whole blocks (a constant trip count: GCC vectorizes them far better), then the rest.
    for (index_t k = 0; k < nb; ++k) {
        const index_t b = k * B;
        double mx = 0.0;
        live[k] = blocks.may_overlap(k, x1, y1, x2, y2);
        if (live[k]) {
#pragma omp simd reduction(max : mx)
            for (index_t l = 0; l < B; ++l) {
                const index_t j = b + l;
                const double v = iou_box(x1, y1, x2, y2, a, bx1[j], by1[j], bx2[j], by2[j], ba[j]);
                row[j] = v;
                mx = std::max(mx, v);
                const bool better = v > best_iou[j];
                best_iou[j] = better ? v : best_iou[j];
                best_gt[j] = better ? g : best_gt[j];
            }
        }
        bmax[k] = mx;
    }
    index_t nk = nb;
    if (nb * B < m) {
        double mx = 0.0;
        for (index_t j = nb * B; j < m; ++j) {
            const double v = iou_box(x1, y1, x2, y2, a, bx1[j], by1[j], bx2[j], by2[j], ba[j]);
            row[j] = v;
            mx = std::max(mx, v);
            const bool better = v > best_iou[j];
            best_iou[j] = better ? v : best_iou[j];
            best_gt[j] = better ? g : best_gt[j];
        }
        bmax[nk++] = mx;
    }
    index_t k = 0;
    for (index_t c = 1; c < nk; ++c) k = bmax[c] > bmax[k] ? c : k;
    index_t j = k * B;
    if (k == nb || live[k]) {
        while (row[j] != bmax[k]) ++j;
    }
    *best = bmax[k];
    return j;
}

}  // namespace detail
}  // namespace fastanchor

#include "match_avx2.hpp"

namespace fastanchor {
namespace detail {

// One GT row, with the kernel isa names.
inline index_t match_row(Isa isa, double x1, double y1, double x2, double y2, double a, const CornerSet& pri,
                         const PriorBlocks& blocks, double* row, double* best_iou, std::int32_t* best_gt,
                         std::int32_t g, std::uint8_t* live, double* bmax, double* best) {
    return FASTANCHOR_SIMD(
        isa, match_row_avx2(x1, y1, x2, y2, a, pri, blocks, row, best_iou, best_gt, g, live, best),
        match_row_portable(x1, y1, x2, y2, a, pri, blocks, row, best_iou, best_gt, g, live, bmax, best));
}

// Best prior among those not taken (lowest index on ties) of a GT whose row is stored, with
// the blocks that the row kernel skipped (live[k] = 0) read as zeros; in buf's storage.
inline std::int32_t best_free_stored(const double* row, const std::uint8_t* live, const PriorBlocks& blocks,
                                     const std::vector<char>& taken, index_t p, double* buf, double* best) {
    constexpr index_t B = kMatchBlock;
    for (index_t k = 0; k < blocks.n; ++k) {
        if (live[k]) {
            std::copy(row + k * B, row + (k + 1) * B, buf + k * B);
        } else {
            std::fill(buf + k * B, buf + (k + 1) * B, 0.0);
        }
    }
    std::copy(row + blocks.n * B, row + p, buf + blocks.n * B);
    const char* t = taken.data();
#pragma omp simd
    for (index_t j = 0; j < p; ++j) buf[j] = t[j] ? -1.0 : buf[j];
    return static_cast<std::int32_t>(first_argmax(buf, p, best));
}

// Best prior of GT box g among the priors not taken (lowest index on ties), in buf's storage.
inline std::int32_t best_free_prior(const CornerSet& pri, const double* g, double ga, const std::vector<char>& taken,
                                    double* buf, double* best) {
    const index_t p = pri.size();
    box_iou_row<double>(g[0], g[1], g[2], g[3], ga, pri.x1.data(), pri.y1.data(), pri.x2.data(), pri.y2.data(),
                        pri.a.data(), p, buf);
    const char* t = taken.data();
#pragma omp simd
    for (index_t j = 0; j < p; ++j) buf[j] = t[j] ? -1.0 : buf[j];
    return static_cast<std::int32_t>(first_argmax(buf, p, best));
}

}  // namespace detail

// Matches of one image: gt holds G rows (x1, y1, x2, y2); out receives P GT indices or -1.
// blocks = PriorBlocks(pri); isa: the row kernel's instruction set.
inline void match_image(const CornerSet& pri, const detail::PriorBlocks& blocks, const double* gt, index_t G,
                        double threshold, std::int32_t* out, MatchScratch& s, Isa isa,
                        index_t max_stored_cells = kMaxStoredCells) {
    const index_t P = pri.size();
    if (G == 0 || P == 0) {
        std::fill(out, out + P, -1);
        return;
    }
    s.buf.resize(P);
    s.bmax.resize(P / detail::kMatchBlock + 1);
    s.best_iou.assign(P, 0.0);  // as the first row leaves them (see match_row_portable)
    s.best_gt.assign(P, 0);
    s.taken.assign(P, 0);
    s.g_iou.resize(G);
    s.g_prior.resize(G);
    const bool stored = G * P <= max_stored_cells;
    if (stored) s.mat.resize(G * P);
    const index_t ls = blocks.stride();  // a row's entries in live
    s.live.resize((stored ? G : 1) * ls);
    std::vector<double> ga(G);
    for (index_t g = 0; g < G; ++g) {
        const double* b = gt + 4 * g;
        ga[g] = (b[2] - b[0]) * (b[3] - b[1]);
        double* row = stored ? s.mat.data() + g * P : s.buf.data();
        std::uint8_t* live = s.live.data() + (stored ? g * ls : 0);
        // Best prior of this GT: the first maximum.
        s.g_prior[g] = static_cast<std::int32_t>(
            detail::match_row(isa, b[0], b[1], b[2], b[3], ga[g], pri, blocks, row, s.best_iou.data(), s.best_gt.data(),
                              static_cast<std::int32_t>(g), live, s.bmax.data(), &s.g_iou[g]));
    }
    // Step 2 first, for every prior (a loop that skipped the taken priors would not vectorize):
    // its best GT when that reaches the threshold. The forced matches overwrite theirs.
#pragma omp simd
    for (index_t j = 0; j < P; ++j) out[j] = s.best_iou[j] >= threshold ? s.best_gt[j] : -1;
    // 1. Greedy forced matches. Invariant: g_prior[g] is GT g's best prior among those not
    // taken, g_iou[g] its IoU; -inf once GT g is matched, so the selection needs no other test.
    const index_t rounds = std::min(G, P);
    for (index_t r = 0; r < rounds; ++r) {
        index_t gs = 0;
        double gv = s.g_iou[0];
        for (index_t g = 1; g < G; ++g) {
            const bool better = s.g_iou[g] > gv;
            gv = better ? s.g_iou[g] : gv;
            gs = better ? g : gs;
        }
        const std::int32_t p = s.g_prior[gs];
        out[p] = static_cast<std::int32_t>(gs);
        s.taken[p] = 1;
        s.g_iou[gs] = -std::numeric_limits<double>::infinity();
        if (r + 1 == rounds) break;
        for (index_t g = 0; g < G; ++g) {
            if (s.g_prior[g] != p || s.g_iou[g] < 0.0) continue;  // not an open GT that wanted p
            s.g_prior[g] = stored ? detail::best_free_stored(s.mat.data() + g * P, s.live.data() + g * ls, blocks,
                                                             s.taken, P, s.buf.data(), &s.g_iou[g])
                                  : detail::best_free_prior(pri, gt + 4 * g, ga[g], s.taken, s.buf.data(), &s.g_iou[g]);
        }
    }
}

// Matches of B images: image b has gt rows [offsets[b], offsets[b + 1]) of gt; out is B x P.
// Images in parallel (each independent: results do not depend on the thread count); a batch of
// fewer than kMatchSerialCells IoU cells runs on the calling thread, where starting the team
// would cost more than the work. The row kernel's instruction set is simd_isa() when it starts.
inline constexpr index_t kMatchSerialCells = index_t{1} << 16;

inline void match_batch(const CornerSet& pri, const double* gt, const index_t* offsets, index_t n_images,
                        double threshold, std::int32_t* out, int n_threads,
                        index_t max_stored_cells = kMaxStoredCells) {
    const index_t P = pri.size();
    const index_t cells = (n_images > 0 ? offsets[n_images] - offsets[0] : 0) * P;
    const int nt = cells < kMatchSerialCells ? 1 : threads_for(n_threads, n_images);
    const detail::PriorBlocks blocks(pri);
    const Isa isa = simd_isa();
    std::vector<MatchScratch> scratch(static_cast<std::size_t>(nt));  // per thread
    parallel_for(
        n_images, nt,
        [&](index_t b) {
            MatchScratch& s = scratch[static_cast<std::size_t>(thread_index())];
            match_image(pri, blocks, gt + 4 * offsets[b], offsets[b + 1] - offsets[b], threshold, out + b * P, s, isa,
                        max_stored_cells);
        },
        Schedule::Dynamic);
}

}  // namespace fastanchor
