// fastanchor: the histogram median's range flags: which boxes' keys fall in their cluster's
// target ranges (flag_in_ranges; its AVX2 twin in ranges_avx2.hpp) and the one dispatch
// (flag_ranges).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../common.hpp"
#include "../constants.hpp"

namespace fastanchor {
namespace detail {

// hit[t] (t < m) = bit 0: key of rows[2t] in [lo0[c], hi0[c]], bit 1: key of rows[2t + 1] in
// [lo1[c], hi1[c]], with c = lab[t] and the key of a value the bits of its float (Problem::key);
// returns whether any bit is set. Branch-free: a box is rarely in range.
template <class L, class T>
FASTANCHOR_CLONES std::uint8_t flag_in_ranges(const L* __restrict lab, const T* __restrict rows, index_t m,
                                              const std::int32_t* __restrict lo0, const std::int32_t* __restrict hi0,
                                              const std::int32_t* __restrict lo1, const std::int32_t* __restrict hi1,
                                              std::uint8_t* __restrict hit) {
    std::uint8_t any = 0;
#pragma omp simd reduction(| : any)
    for (index_t t = 0; t < m; ++t) {
        const std::int32_t c = static_cast<std::int32_t>(lab[t]);
        const float fw = static_cast<float>(rows[2 * t]), fh = static_cast<float>(rows[2 * t + 1]);
        std::int32_t kw, kh;
        std::memcpy(&kw, &fw, sizeof kw);
        std::memcpy(&kh, &fh, sizeof kh);
        const std::int32_t h = ((kw >= lo0[c]) & (kw <= hi0[c])) | (((kh >= lo1[c]) & (kh <= hi1[c])) << 1);
        hit[t] = static_cast<std::uint8_t>(h);
        any |= static_cast<std::uint8_t>(h);
    }
    return any;
}

}  // namespace detail
}  // namespace fastanchor

#include "ranges_avx2.hpp"

namespace fastanchor {
namespace detail {

// flag_in_ranges of the m boxes of float rows `rows` (labels lab): the AVX2 form for one-byte
// labels and k within its tables, the portable one otherwise.
template <class L>
std::uint8_t flag_ranges(Isa isa, const L* lab, const float* rows, index_t m, int k, const std::int32_t* lo0,
                         const std::int32_t* hi0, const std::int32_t* lo1, const std::int32_t* hi1, std::uint8_t* hit) {
    if constexpr (std::is_same_v<L, std::uint8_t>) {
        if (k <= kAvx2TableSize)
            return FASTANCHOR_SIMD(isa, flag_in_ranges_avx2(lab, rows, m, k, lo0, hi0, lo1, hi1, hit),
                                   flag_in_ranges(lab, rows, m, lo0, hi0, lo1, hi1, hit));
    }
    (void)isa;
    (void)k;
    return flag_in_ranges(lab, rows, m, lo0, hi0, lo1, hi1, hit);
}

}  // namespace detail
}  // namespace fastanchor
