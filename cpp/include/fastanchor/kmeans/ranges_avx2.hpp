// fastanchor: the AVX2 twin of kmeans/ranges.hpp's flag_in_ranges (included by it,
// after the portable kernel, which handles the tails).
#pragma once

#include <cstdint>

#include "../common.hpp"
#include "../constants.hpp"

#if FASTANCHOR_HAVE_AVX2
namespace fastanchor {
namespace detail {

static_assert(kAvx2TableSize == 16, "lookup16 holds a 16-entry table in two registers of eight");

// The entries c (0-15) of a 16-entry table held as its two halves.
__attribute__((target("avx2"), always_inline)) inline __m256i lookup16(__m256i lo_half, __m256i hi_half, __m256i c,
                                                                       __m256i upper) {
    return _mm256_blendv_epi8(_mm256_permutevar8x32_epi32(lo_half, c), _mm256_permutevar8x32_epi32(hi_half, c), upper);
}

// flag_in_ranges for one-byte labels below 16 and float rows, eight boxes a step: the compiled
// portable loop fetches the four bounds of each box's cluster with four gathers, which cost more
// than the rest of the pass; here each is two in-register table lookups (vpermd, the tables of
// 16 bounds held in two registers each). The same comparisons, as int32.
__attribute__((target("avx2"))) inline std::uint8_t flag_in_ranges_avx2(
    const std::uint8_t* __restrict lab, const float* __restrict rows, index_t m, int k,
    const std::int32_t* __restrict lo0, const std::int32_t* __restrict hi0, const std::int32_t* __restrict lo1,
    const std::int32_t* __restrict hi1, std::uint8_t* __restrict hit) {
    alignas(32) std::int32_t tab[4][kAvx2TableSize];  // lo0, hi0, lo1, hi1; unused clusters: empty ranges
    for (int c = 0; c < kAvx2TableSize; ++c) {
        tab[0][c] = c < k ? lo0[c] : 1;
        tab[1][c] = c < k ? hi0[c] : 0;
        tab[2][c] = c < k ? lo1[c] : 1;
        tab[3][c] = c < k ? hi1[c] : 0;
    }
    __m256i lo_half[4], hi_half[4];
    for (int q = 0; q < 4; ++q) {
        lo_half[q] = _mm256_load_si256(reinterpret_cast<const __m256i*>(tab[q]));
        hi_half[q] = _mm256_load_si256(reinterpret_cast<const __m256i*>(tab[q] + 8));
    }
    const __m256i seven = _mm256_set1_epi32(7), one = _mm256_set1_epi32(1), two = _mm256_set1_epi32(2);
    __m256i any = _mm256_setzero_si256();
    index_t t = 0;
    for (; t + 8 <= m; t += 8) {
        const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(lab + t)));
        const __m256i upper = _mm256_cmpgt_epi32(c, seven);  // clusters 8-15: the second register
        // Rows (w, h) of boxes t..t+3 and t+4..t+7: the widths, then the heights, in box order.
        const __m256 r0 = _mm256_loadu_ps(rows + 2 * t), r1 = _mm256_loadu_ps(rows + 2 * t + 8);
        // (Per 128-bit lane the shuffle leaves pairs of boxes in the order 0, 2, 1, 3.)
        const __m256d w4 = _mm256_castps_pd(_mm256_shuffle_ps(r0, r1, 0x88)),
                      h4 = _mm256_castps_pd(_mm256_shuffle_ps(r0, r1, 0xdd));
        const __m256i kw = _mm256_castpd_si256(_mm256_permute4x64_pd(w4, 0xd8));
        const __m256i kh = _mm256_castpd_si256(_mm256_permute4x64_pd(h4, 0xd8));
        const __m256i lw = lookup16(lo_half[0], hi_half[0], c, upper), hw = lookup16(lo_half[1], hi_half[1], c, upper);
        const __m256i lh = lookup16(lo_half[2], hi_half[2], c, upper), hh = lookup16(lo_half[3], hi_half[3], c, upper);
        // Outside: below lo or above hi.
        const __m256i out_w = _mm256_or_si256(_mm256_cmpgt_epi32(lw, kw), _mm256_cmpgt_epi32(kw, hw));
        const __m256i out_h = _mm256_or_si256(_mm256_cmpgt_epi32(lh, kh), _mm256_cmpgt_epi32(kh, hh));
        const __m256i h = _mm256_or_si256(_mm256_andnot_si256(out_w, one), _mm256_andnot_si256(out_h, two));
        any = _mm256_or_si256(any, h);
        const __m128i h16 = _mm_packs_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(hit + t), _mm_packus_epi16(h16, h16));
    }
    const std::uint8_t tail = flag_in_ranges(lab + t, rows + 2 * t, m - t, lo0, hi0, lo1, hi1, hit + t);
    return static_cast<std::uint8_t>(tail | (_mm256_testz_si256(any, any) ? 0 : 1));
}

}  // namespace detail
}  // namespace fastanchor
#endif  // FASTANCHOR_HAVE_AVX2
