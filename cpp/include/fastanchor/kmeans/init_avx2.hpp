// fastanchor: the AVX2 twin of kmeans/init.hpp's potential_t (included by it, after the portable
// kernel, which handles the tails).
#pragma once

#include <cstdint>

#include "../common.hpp"

#if FASTANCHOR_HAVE_AVX2
namespace fastanchor {
namespace detail {

// potential_t for floats, written out for AVX2 (GCC leaves the portable loop scalar): the same
// operations on the same values, each box's term added to the same one of the 16 lanes, so the
// same sums bit for bit. 16 boxes a step: four registers of four double lanes.
template <bool Weighted, bool Store>
__attribute__((target("avx2"))) void potential_avx2(const float* __restrict w, const float* __restrict h,
                                                    float* __restrict d2, const double* __restrict wt, index_t n,
                                                    float cw, float ch, double* __restrict acc) {
    const __m256 vcw = _mm256_set1_ps(cw), vch = _mm256_set1_ps(ch), vca = _mm256_set1_ps(cw * ch);
    const __m256d one = _mm256_set1_pd(1.0);
    __m256d lane[4];
    for (int q = 0; q < 4; ++q) lane[q] = _mm256_loadu_pd(acc + 4 * q);
    const index_t nb = n / 16 * 16;
    for (index_t i = 0; i < nb; i += 8) {
        const __m256 wi = _mm256_loadu_ps(w + i), hi = _mm256_loadu_ps(h + i);
        const __m256 inter = _mm256_mul_ps(_mm256_min_ps(wi, vcw), _mm256_min_ps(hi, vch));
        const __m256 q = _mm256_div_ps(inter, _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(wi, hi), vca), inter));
        const __m256d d_lo = _mm256_sub_pd(one, _mm256_cvtps_pd(_mm256_castps256_ps128(q)));
        const __m256d d_hi = _mm256_sub_pd(one, _mm256_cvtps_pd(_mm256_extractf128_ps(q, 1)));
        const __m256 dd =
            _mm256_set_m128(_mm256_cvtpd_ps(_mm256_mul_pd(d_hi, d_hi)), _mm256_cvtpd_ps(_mm256_mul_pd(d_lo, d_lo)));
        const __m256 v = _mm256_min_ps(dd, _mm256_loadu_ps(d2 + i));  // std::min(d2, dd)
        if (Store) _mm256_storeu_ps(d2 + i, v);
        __m256d v_lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), v_hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        if (Weighted) {
            v_lo = _mm256_mul_pd(_mm256_loadu_pd(wt + i), v_lo);
            v_hi = _mm256_mul_pd(_mm256_loadu_pd(wt + i + 4), v_hi);
        }
        const int q0 = (i % 16 == 0) ? 0 : 2;  // boxes i % 16 + 0..7: lanes q0 * 4 + 0..7
        lane[q0] = _mm256_add_pd(lane[q0], v_lo);
        lane[q0 + 1] = _mm256_add_pd(lane[q0 + 1], v_hi);
    }
    for (int q = 0; q < 4; ++q) _mm256_storeu_pd(acc + 4 * q, lane[q]);
    if (nb < n)
        potential_t<float, Weighted, Store>(w + nb, h + nb, d2 + nb, Weighted ? wt + nb : nullptr, n - nb, cw, ch, acc);
}

}  // namespace detail
}  // namespace fastanchor
#endif  // FASTANCHOR_HAVE_AVX2
