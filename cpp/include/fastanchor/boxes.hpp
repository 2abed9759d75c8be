// fastanchor: corner boxes (x1, y1, x2, y2): their IoU matrix, SSD prior matching and the
// recall of anchors placed on a detector's grids.
//
// Exactness contract (as iou.hpp): the IoU of two corner boxes is
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

#include "common.hpp"

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

inline double iou_box(double ax1, double ay1, double ax2, double ay2, double aa, double bx1, double by1, double bx2,
                      double by2, double ba) {
    const double iw = std::max(std::min(ax2, bx2) - std::max(ax1, bx1), 0.0);
    const double ih = std::max(std::min(ay2, by2) - std::max(ay1, by1), 0.0);
    const double inter = iw * ih;
    return inter / ((aa + ba) - inter);
}

namespace detail {

// out[j] = IoU of box (x1, y1, x2, y2, a) with boxes j of s, j in [0, m); vectorized over j.
template <class Out>
FASTANCHOR_CLONES void box_iou_row(double x1, double y1, double x2, double y2, double a,
                                   const double* __restrict bx1, const double* __restrict by1,
                                   const double* __restrict bx2, const double* __restrict by2,
                                   const double* __restrict ba, index_t m, Out* __restrict out) {
#pragma omp simd
    for (index_t j = 0; j < m; ++j) {
        const double iw = std::max(std::min(x2, bx2[j]) - std::max(x1, bx1[j]), 0.0);
        const double ih = std::max(std::min(y2, by2[j]) - std::max(y1, by1[j]), 0.0);
        const double inter = iw * ih;
        out[j] = static_cast<Out>(inter / ((a + ba[j]) - inter));
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
    const int nt = threads_for(n_threads, nc);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
    for (index_t c = 0; c < nc; ++c) {
        const index_t e = std::min(n, (c + 1) * rows);
        for (index_t i = c * rows; i < e; ++i) {
            detail::box_iou_row<Out>(s1.x1[i], s1.y1[i], s1.x2[i], s1.y2[i], s1.a[i], s2.x1.data(), s2.y1.data(),
                                     s2.x2.data(), s2.y2.data(), s2.a.data(), m, out + i * m);
        }
    }
    (void)nt;
}

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
                const double iw = std::max(std::min(x2, bx2[j]) - std::max(x1, bx1[j]), 0.0);
                const double ih = std::max(std::min(y2, by2[j]) - std::max(y1, by1[j]), 0.0);
                const double inter = iw * ih;
                const double v = inter / ((a + ba[j]) - inter);
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

#if FASTANCHOR_HAVE_AVX2
// The row kernel in AVX2 intrinsics (the whole matching runs 1.6-1.8x faster than with the
// portable kernel, whose branches and reductions GCC compiles poorly), in chunks of kMatchChunk
// priors and two passes each, without a data-dependent branch (one per block mispredicted at
// every edge of a box's footprint): first the blocks that may overlap are listed, 4 bounding
// boxes a vector; then those blocks are computed whole, 4 priors a vector. The same operations
// in the same order as the portable kernel: _mm256_min_pd(b, x2) is b < x2 ? b : x2, which is
// std::min(x2, b), and _mm256_max_pd(0, d) is std::max(d, 0). Each lane keeps its first maximum
// (strictly greater replaces it); the lanes are merged by value, then lowest prior.
inline constexpr index_t kMatchChunk = 512;

__attribute__((target("avx2,popcnt"))) inline index_t match_row_avx2(double x1, double y1, double x2, double y2,
                                                                    double a, const CornerSet& pri,
                                                                    const PriorBlocks& blocks,
                                                                    double* __restrict row,
                                                                    double* __restrict best_iou,
                                                                    std::int32_t* __restrict best_gt,
                                                                    std::int32_t g, std::uint8_t* __restrict live,
                                                                    double* best) {
    static_assert(kMatchBlock == 8 && kMatchChunk % (4 * kMatchBlock) == 0, "2 vectors a block, 4 blocks a test");
    constexpr index_t CB = kMatchChunk / kMatchBlock;  // blocks per chunk
    // kSetBits[mask] lists the set bits of a 4-bit mask, lowest first.
    alignas(16) static const std::int32_t kSetBits[16][4] = {
        {0, 0, 0, 0}, {0, 0, 0, 0}, {1, 0, 0, 0}, {0, 1, 0, 0}, {2, 0, 0, 0}, {0, 2, 0, 0}, {1, 2, 0, 0}, {0, 1, 2, 0},
        {3, 0, 0, 0}, {0, 3, 0, 0}, {1, 3, 0, 0}, {0, 1, 3, 0}, {2, 3, 0, 0}, {0, 2, 3, 0}, {1, 2, 3, 0}, {0, 1, 2, 3}};
    const index_t m = pri.size(), nb = blocks.n;
    const double* __restrict bx1 = pri.x1.data();
    const double* __restrict by1 = pri.y1.data();
    const double* __restrict bx2 = pri.x2.data();
    const double* __restrict by2 = pri.y2.data();
    const double* __restrict ba = pri.a.data();
    const __m256d X1 = _mm256_set1_pd(x1), Y1 = _mm256_set1_pd(y1), X2 = _mm256_set1_pd(x2),
                  Y2 = _mm256_set1_pd(y2), A = _mm256_set1_pd(a), Z = _mm256_setzero_pd();
    const __m256d lane = _mm256_setr_pd(0.0, 1.0, 2.0, 3.0);
    const __m128 G = _mm_castsi128_ps(_mm_set1_epi32(g));
    __m256d vmax = Z, vidx = lane;  // prior indices as doubles (exact below 2^53)
    alignas(16) std::int32_t hits[CB];  // pass 1 stores 4 at hits + n, n <= CB - 4
    for (index_t c = 0; c < nb; c += CB) {
        const index_t ce = std::min(c + CB, nb);
        // Pass 1. The padding of the bounding boxes never overlaps, so a chunk may end mid-vector
        // (live has the padded stride).
        int n = 0;
        for (index_t k = c; k < ce; k += 4) {
            const __m256d ov = _mm256_and_pd(
                _mm256_and_pd(_mm256_cmp_pd(_mm256_loadu_pd(blocks.x1.data() + k), X2, _CMP_LT_OQ),
                              _mm256_cmp_pd(X1, _mm256_loadu_pd(blocks.x2.data() + k), _CMP_LT_OQ)),
                _mm256_and_pd(_mm256_cmp_pd(_mm256_loadu_pd(blocks.y1.data() + k), Y2, _CMP_LT_OQ),
                              _mm256_cmp_pd(Y1, _mm256_loadu_pd(blocks.y2.data() + k), _CMP_LT_OQ)));
            const int mask = _mm256_movemask_pd(ov);
            // Bit l of the mask to byte l: the four shifted copies do not overlap.
            const std::uint32_t bytes = (static_cast<std::uint32_t>(mask) * 0x204081u) & 0x01010101u;
            std::memcpy(live + k, &bytes, 4);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(hits + n),
                             _mm_add_epi32(_mm_set1_epi32(static_cast<int>(k)),
                                           _mm_load_si128(reinterpret_cast<const __m128i*>(kSetBits[mask]))));
            n += __builtin_popcount(static_cast<unsigned>(mask));
        }
        // Pass 2.
        for (int h = 0; h < n; ++h) {
            for (index_t j = hits[h] * kMatchBlock, e = j + kMatchBlock; j < e; j += 4) {
                const __m256d iw = _mm256_max_pd(Z, _mm256_sub_pd(_mm256_min_pd(_mm256_loadu_pd(bx2 + j), X2),
                                                                  _mm256_max_pd(_mm256_loadu_pd(bx1 + j), X1)));
                const __m256d ih = _mm256_max_pd(Z, _mm256_sub_pd(_mm256_min_pd(_mm256_loadu_pd(by2 + j), Y2),
                                                                  _mm256_max_pd(_mm256_loadu_pd(by1 + j), Y1)));
                const __m256d inter = _mm256_mul_pd(iw, ih);
                const __m256d v =
                    _mm256_div_pd(inter, _mm256_sub_pd(_mm256_add_pd(A, _mm256_loadu_pd(ba + j)), inter));
                _mm256_storeu_pd(row + j, v);
                const __m256d bi = _mm256_loadu_pd(best_iou + j);
                const __m256d up = _mm256_cmp_pd(v, bi, _CMP_GT_OQ);
                _mm256_storeu_pd(best_iou + j, _mm256_max_pd(v, bi));  // v > bi ? v : bi
                // The 64-bit lane masks narrowed to the 32-bit lanes of the GT indices.
                const __m128 up32 = _mm_shuffle_ps(_mm256_castps256_ps128(_mm256_castpd_ps(up)),
                                                   _mm256_extractf128_ps(_mm256_castpd_ps(up), 1),
                                                   _MM_SHUFFLE(2, 0, 2, 0));
                auto* bg = reinterpret_cast<__m128i*>(best_gt + j);
                _mm_storeu_si128(bg, _mm_castps_si128(_mm_blendv_ps(_mm_castsi128_ps(_mm_loadu_si128(bg)), G, up32)));
                const __m256d nm = _mm256_cmp_pd(v, vmax, _CMP_GT_OQ);
                vmax = _mm256_max_pd(v, vmax);
                vidx = _mm256_blendv_pd(vidx, _mm256_add_pd(_mm256_set1_pd(static_cast<double>(j)), lane), nm);
            }
        }
    }
    alignas(32) double lv[4], li[4];
    _mm256_store_pd(lv, vmax);
    _mm256_store_pd(li, vidx);
    // A lane that never took a value holds (0, lane): merged, that gives prior 0 when the maximum
    // is 0 (right: every IoU is 0 then), and loses to any positive maximum.
    double bv = lv[0];
    index_t bj = static_cast<index_t>(li[0]);
    for (int l = 1; l < 4; ++l) {
        const index_t i = static_cast<index_t>(li[l]);
        if (lv[l] > bv || (lv[l] == bv && i < bj)) {
            bv = lv[l];
            bj = i;
        }
    }
    // The priors after the last whole block, one at a time.
    for (index_t j = nb * kMatchBlock; j < m; ++j) {
        const double v = iou_box(x1, y1, x2, y2, a, bx1[j], by1[j], bx2[j], by2[j], ba[j]);
        row[j] = v;
        if (v > best_iou[j]) {
            best_iou[j] = v;
            best_gt[j] = g;
        }
        if (v > bv) {
            bv = v;
            bj = j;
        }
    }
    *best = bv;
    return bj;
}
#endif

// One GT row, with the AVX2 kernel where the CPU has it unless `portable` asks for the other.
inline index_t match_row(bool portable, double x1, double y1, double x2, double y2, double a, const CornerSet& pri,
                         const PriorBlocks& blocks, double* row, double* best_iou, std::int32_t* best_gt,
                         std::int32_t g, std::uint8_t* live, double* bmax, double* best) {
#if FASTANCHOR_HAVE_AVX2
    if (use_avx2(portable))
        return match_row_avx2(x1, y1, x2, y2, a, pri, blocks, row, best_iou, best_gt, g, live, best);
#endif
    (void)portable;
    return match_row_portable(x1, y1, x2, y2, a, pri, blocks, row, best_iou, best_gt, g, live, bmax, best);
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
// blocks = PriorBlocks(pri); `portable` runs the portable row kernel where the AVX2 one could
// run too (for the tests).
inline void match_image(const CornerSet& pri, const detail::PriorBlocks& blocks, const double* gt, index_t G,
                        double threshold, std::int32_t* out, MatchScratch& s,
                        index_t max_stored_cells = kMaxStoredCells, bool portable = false) {
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
        s.g_prior[g] = static_cast<std::int32_t>(detail::match_row(portable, b[0], b[1], b[2], b[3], ga[g], pri,
                                                                   blocks, row, s.best_iou.data(), s.best_gt.data(),
                                                                   static_cast<std::int32_t>(g), live, s.bmax.data(),
                                                                   &s.g_iou[g]));
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
                                  : detail::best_free_prior(pri, gt + 4 * g, ga[g], s.taken, s.buf.data(),
                                                            &s.g_iou[g]);
        }
    }
}

// Matches of B images: image b has gt rows [offsets[b], offsets[b + 1]) of gt; out is B x P.
// Images in parallel (each independent: results do not depend on the thread count); a batch of
// fewer than kMatchSerialCells IoU cells runs on the calling thread, where starting the team
// would cost more than the work. An allocation failure inside the parallel loop is caught there
// and rethrown afterwards.
inline constexpr index_t kMatchSerialCells = index_t{1} << 16;

inline void match_batch(const CornerSet& pri, const double* gt, const index_t* offsets, index_t n_images,
                        double threshold, std::int32_t* out, int n_threads,
                        index_t max_stored_cells = kMaxStoredCells, bool portable = false) {
    const index_t P = pri.size();
    const index_t cells = (n_images > 0 ? offsets[n_images] - offsets[0] : 0) * P;
    const int nt = cells < kMatchSerialCells ? 1 : threads_for(n_threads, n_images);
    const detail::PriorBlocks blocks(pri);
    int failed = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
        MatchScratch s;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (index_t b = 0; b < n_images; ++b) {
            try {
                match_image(pri, blocks, gt + 4 * offsets[b], offsets[b + 1] - offsets[b], threshold, out + b * P, s,
                            max_stored_cells, portable);
            } catch (...) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
                failed = 1;
            }
        }
    }
    (void)nt;
    if (failed) throw std::bad_alloc();
}

// ---- recall of anchors on a detector's grids ---------------------------------------------------
//
// Level l has stride s and anchors (w, h). An image W x H has ceil(W / s) x ceil(H / s) cells,
// the cell (i, j) centred at ((i + 0.5) * s, (j + 0.5) * s); the anchor placed there is the corner
// box (cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h). The IoU of a box with such an
// anchor only grows as the centres get closer in x and in y separately (the overlap in x is a
// non-increasing function of |dx|, the same in y, and IoU increases with the overlap), so the
// best cell is among the (at most) two columns and two rows nearest the box centre; those four
// cells are evaluated and the best IoU kept.

struct GridLevel {
    double stride;
    std::vector<double> w, h;
};

inline double cell_center(double stride, index_t i) { return (static_cast<double>(i) + 0.5) * stride; }

// Best IoU of every box with any anchor of any level on its image's grids.
inline void grid_best_iou(const CornerSet& boxes, const double* image_wh, const std::vector<GridLevel>& levels,
                          double* out, int n_threads) {
    for_each_chunk(boxes.size(), n_threads, [&](index_t, index_t b, index_t e) {
        for (index_t i = b; i < e; ++i) {
            const double W = image_wh[2 * i], H = image_wh[2 * i + 1];
            const double cx = 0.5 * (boxes.x1[i] + boxes.x2[i]), cy = 0.5 * (boxes.y1[i] + boxes.y2[i]);
            double best = 0.0;
            for (const GridLevel& L : levels) {
                const double s = L.stride;
                const index_t nx = std::max<index_t>(1, static_cast<index_t>(std::ceil(W / s)));
                const index_t ny = std::max<index_t>(1, static_cast<index_t>(std::ceil(H / s)));
                const double tx = std::floor(cx / s - 0.5), ty = std::floor(cy / s - 0.5);
                index_t cols[2], rows[2];
                for (int d = 0; d < 2; ++d) {
                    const double fx = std::min(std::max(tx + d, 0.0), static_cast<double>(nx - 1));
                    const double fy = std::min(std::max(ty + d, 0.0), static_cast<double>(ny - 1));
                    cols[d] = static_cast<index_t>(fx);
                    rows[d] = static_cast<index_t>(fy);
                }
                const index_t k = static_cast<index_t>(L.w.size());
                for (index_t a = 0; a < k; ++a) {
                    const double hw = 0.5 * L.w[a], hh = 0.5 * L.h[a];
                    for (int dx = 0; dx < 2; ++dx) {
                        const double ax = cell_center(s, cols[dx]);
                        const double ax1 = ax - hw, ax2 = ax + hw;
                        for (int dy = 0; dy < 2; ++dy) {
                            const double ay = cell_center(s, rows[dy]);
                            const double ay1 = ay - hh, ay2 = ay + hh;
                            const double aa = (ax2 - ax1) * (ay2 - ay1);
                            const double v = iou_box(boxes.x1[i], boxes.y1[i], boxes.x2[i], boxes.y2[i], boxes.a[i],
                                                     ax1, ay1, ax2, ay2, aa);
                            best = std::max(best, v);
                        }
                    }
                }
            }
            out[i] = best;
        }
    });
}

}  // namespace fastanchor
