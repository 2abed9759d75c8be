// fastanchor: scans of byte flags (which boxes a kernel flagged), 64 at a time. nonzero_bits uses
// SSE2, the x86-64 baseline (so a compile-time form, no runtime dispatch), a plain loop elsewhere.
#pragma once

#include <algorithm>
#include <cstdint>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../common.hpp"

namespace fastanchor {
namespace detail {

// Bit t of the result: flag[t] != 0, for t < m <= 64. SSE2 (every x86-64) compares 16 flags
// a step; elsewhere a plain loop.
inline std::uint64_t nonzero_bits(const std::uint8_t* flag, index_t m) {
    std::uint64_t bits = 0;
    index_t t = 0;
#if defined(__SSE2__)
    const __m128i zero = _mm_setzero_si128();
    for (; t + 16 <= m; t += 16) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(flag + t));
        const auto is_zero = static_cast<std::uint32_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, zero)));
        bits |= static_cast<std::uint64_t>(~is_zero & 0xffffu) << t;
    }
#endif
    for (; t < m; ++t) bits |= static_cast<std::uint64_t>(flag[t] != 0) << t;
    return bits;
}

// Calls f(t) for every t < m with flag[t] != 0, in increasing order, 64 flags at a time: the
// cost follows the number of flags set (a few to a few tens of percent in the Lloyd passes),
// with one branch per flag set rather than one per flag.
template <class F>
void for_each_flagged(const std::uint8_t* flag, index_t m, F&& f) {
    for (index_t t0 = 0; t0 < m; t0 += 64) {
        for (std::uint64_t bits = nonzero_bits(flag + t0, std::min<index_t>(64, m - t0)); bits; bits &= bits - 1)
            f(t0 + __builtin_ctzll(bits));
    }
}

// The t < m with flag[t] != 0, in increasing order, written to idx; returns how many.
inline index_t compact_flagged(const std::uint8_t* __restrict flag, index_t m, std::int32_t* __restrict idx) {
    index_t n = 0;
    for_each_flagged(flag, m, [&](index_t t) { idx[n++] = static_cast<std::int32_t>(t); });
    return n;
}

}  // namespace detail
}  // namespace fastanchor
