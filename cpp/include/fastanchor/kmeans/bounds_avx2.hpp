// fastanchor: the AVX2 twin of kmeans/bounds.hpp's slack test (need_rank + compact_flagged).
#pragma once

#include <cstdint>

#include "../common.hpp"
#include "../constants.hpp"

#if FASTANCHOR_HAVE_AVX2
namespace fastanchor {
namespace detail {

static_assert(kAvx2TableSize == 16, "need_rank_avx2 looks thresholds up with one vpshufb (16 bytes)");

// need_rank and compact_flagged in one, for labels below 16, 32 boxes a step: each box's
// threshold is two in-register byte lookups (vpshufb of the thresholds' low and high bytes),
// the comparisons' mask read as bits (vpmovmskb). Writes the t < m with
// slack[t] <= threshold[lab[t]] to idx in increasing order; returns how many.
__attribute__((target("avx2"))) inline index_t need_rank_avx2(const std::uint16_t* __restrict slack,
                                                              const std::uint8_t* __restrict lab, index_t m,
                                                              const std::uint16_t* __restrict threshold,
                                                              std::int32_t* __restrict idx) {
    alignas(16) std::uint8_t lo[kAvx2TableSize], hi[kAvx2TableSize];
    for (int c = 0; c < kAvx2TableSize; ++c) {
        lo[c] = static_cast<std::uint8_t>(threshold[c] & 0xff);
        hi[c] = static_cast<std::uint8_t>(threshold[c] >> 8);
    }
    const __m256i tab_lo = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(lo)));
    const __m256i tab_hi = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(hi)));
    index_t n = 0, t = 0;
    for (; t + 32 <= m; t += 32) {
        const __m256i l = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lab + t));
        const __m256i tl = _mm256_shuffle_epi8(tab_lo, l), th = _mm256_shuffle_epi8(tab_hi, l);
        // Per 128-bit lane: thresholds of boxes 0-7 and 16-23 (lo), 8-15 and 24-31 (hi).
        const __m256i thr_lo = _mm256_unpacklo_epi8(tl, th), thr_hi = _mm256_unpackhi_epi8(tl, th);
        const __m256i s0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(slack + t));
        const __m256i s1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(slack + t + 16));
        const __m256i a = _mm256_permute2x128_si256(s0, s1, 0x20), b = _mm256_permute2x128_si256(s0, s1, 0x31);
        // slack <= threshold (unsigned): max(slack, threshold) == threshold.
        const __m256i le_a = _mm256_cmpeq_epi16(_mm256_max_epu16(a, thr_lo), thr_lo);
        const __m256i le_b = _mm256_cmpeq_epi16(_mm256_max_epu16(b, thr_hi), thr_hi);
        // Packed per lane as a's then b's eight: boxes 0-31 in order.
        auto bits = static_cast<std::uint32_t>(_mm256_movemask_epi8(_mm256_packs_epi16(le_a, le_b)));
        for (; bits; bits &= bits - 1) idx[n++] = static_cast<std::int32_t>(t + __builtin_ctz(bits));
    }
    for (; t < m; ++t)
        if (slack[t] <= threshold[lab[t]]) idx[n++] = static_cast<std::int32_t>(t);
    return n;
}

}  // namespace detail
}  // namespace fastanchor
#endif  // FASTANCHOR_HAVE_AVX2
