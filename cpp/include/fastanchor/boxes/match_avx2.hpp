// fastanchor: the AVX2 twin of boxes/match.hpp's match_row_portable (included by it, after the
// types it reads).
#pragma once

#include <cstdint>

#include "../common.hpp"

#if FASTANCHOR_HAVE_AVX2
namespace fastanchor {
namespace detail {

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
                                                                     const PriorBlocks& blocks, double* __restrict row,
                                                                     double* __restrict best_iou,
                                                                     std::int32_t* __restrict best_gt, std::int32_t g,
                                                                     std::uint8_t* __restrict live, double* best) {
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
    const __m256d X1 = _mm256_set1_pd(x1), Y1 = _mm256_set1_pd(y1), X2 = _mm256_set1_pd(x2), Y2 = _mm256_set1_pd(y2),
                  A = _mm256_set1_pd(a), Z = _mm256_setzero_pd();
    const __m256d lane = _mm256_setr_pd(0.0, 1.0, 2.0, 3.0);
    const __m128 G = _mm_castsi128_ps(_mm_set1_epi32(g));
    __m256d vmax = Z, vidx = lane;      // prior indices as doubles (exact below 2^53)
    alignas(16) std::int32_t hits[CB];  // pass 1 stores 4 at hits + n, n <= CB - 4
    for (index_t c = 0; c < nb; c += CB) {
        const index_t ce = std::min(c + CB, nb);
        // Pass 1. The padding of the bounding boxes never overlaps, so a chunk may end mid-vector
        // (live has the padded stride).
        int n = 0;
        for (index_t k = c; k < ce; k += 4) {
            const __m256d ov =
                _mm256_and_pd(_mm256_and_pd(_mm256_cmp_pd(_mm256_loadu_pd(blocks.x1.data() + k), X2, _CMP_LT_OQ),
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
                const __m256d v = _mm256_div_pd(inter, _mm256_sub_pd(_mm256_add_pd(A, _mm256_loadu_pd(ba + j)), inter));
                _mm256_storeu_pd(row + j, v);
                const __m256d bi = _mm256_loadu_pd(best_iou + j);
                const __m256d up = _mm256_cmp_pd(v, bi, _CMP_GT_OQ);
                _mm256_storeu_pd(best_iou + j, _mm256_max_pd(v, bi));  // v > bi ? v : bi
                // The 64-bit lane masks narrowed to the 32-bit lanes of the GT indices.
                const __m128 up32 =
                    _mm_shuffle_ps(_mm256_castps256_ps128(_mm256_castpd_ps(up)),
                                   _mm256_extractf128_ps(_mm256_castpd_ps(up), 1), _MM_SHUFFLE(2, 0, 2, 0));
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

}  // namespace detail
}  // namespace fastanchor
#endif  // FASTANCHOR_HAVE_AVX2
