// fastanchor: the AVX2 twin of kmeans/label.hpp's label_top2 (called through label_float_k only).
#pragma once

#include <algorithm>
#include <cstdint>

#include "../common.hpp"
#include "../constants.hpp"

#if FASTANCHOR_HAVE_AVX2
namespace fastanchor {
namespace detail {

// label_top2_avx2 (below) is label_top2 written out for AVX2, eight boxes a step (label8_avx2,
// the anchors broadcast once into Avx2Anchors). The compiled portable loop runs 32 boxes
// a step (its one-byte labels and flags set the vector width), so its K IoUs, of four registers
// each, do not fit in the 16 registers and go through the stack; here they stay in registers.
//
// With Gap (passes that keep bounds): the same operations in the same order on the same floats
// as label_top2 (no contraction into FMA), so the same labels, flags and gaps, bit for bit.
//
// Without Gap (passes that rank every box for its label alone): each anchor is ranked by
// r = inter / (a + A) = IoU / (1 + IoU), which increases with the IoU, computed with vrcpps and
// a product instead of a division (the divisions took about half the kernel's time): 0.7x the
// time of label_top2 per box. Margin: inter and a + A carry a relative error of at most 3u and
// 4u as in label_top2 (u = 2^-24), vrcpps at most 1.5 * 2^-12 (Intel's manual; 1.29 * 2^-12
// measured on AMD Zen 3 over every mantissa), the product u: so r' = r (1 + e) with
// |e| < eps = 2^-11, with room. A box is flagged (1) unless every other anchor's r' lies below
// fl(b' (1 - kRcpTie)) - 2^-126, b' the best r'. Then r_j < r_b (1 + eps)(1 - kRcpTie)(1 + u) /
// (1 - eps) < r_b, as kRcpTie = 1.1e-3 > 2 eps + u + 2 eps^2; the 2^-126 covers the absolute
// error of subnormal products (at most 2^-150), so a box whose best r' is subnormal is always
// flagged. (1 - IoU ranks as -r; the exact rule decides every flagged box.) About 0.2% of 10^6
// COCO-like boxes are flagged, against 0.003% with the division's margin.
// (docs/design.md, "The vrcpps tie margin".)
template <int K>
struct Avx2Anchors {
    __m256 w[K], h[K], a[K];
    __m256i tag[K];  // kTieUnit + j
};

// label_top2_avx2's step: boxes 0-7 of rows, old, lab, flag, gap.
template <int K, bool Gap>
__attribute__((target("avx2"), always_inline)) inline void label8_avx2(const Avx2Anchors<K>& A, __m256 scale,
                                                                       const float* rows, const std::uint8_t* old,
                                                                       std::int32_t* lab, std::uint8_t* flag,
                                                                       float* gap) {
    // Rows (w, h) of boxes 0-7 into widths and heights in box order (as flag_in_ranges_avx2).
    const __m256 r0 = _mm256_loadu_ps(rows), r1 = _mm256_loadu_ps(rows + 8);
    const __m256 w = _mm256_mul_ps(
        _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(r0, r1, 0x88)), 0xd8)), scale);
    const __m256 h = _mm256_mul_ps(
        _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(r0, r1, 0xdd)), 0xd8)), scale);
    const __m256 a = _mm256_mul_ps(w, h);
    __m256 q[K];
    for (int j = 0; j < K; ++j) {
        const __m256 inter = _mm256_mul_ps(_mm256_min_ps(w, A.w[j]), _mm256_min_ps(h, A.h[j]));
        if (Gap) q[j] = _mm256_div_ps(inter, _mm256_sub_ps(_mm256_add_ps(a, A.a[j]), inter));
        else q[j] = _mm256_mul_ps(inter, _mm256_rcp_ps(_mm256_add_ps(a, A.a[j])));
    }
    __m256 b = q[0], second = K == 1 ? q[0] : _mm256_setzero_ps();
    for (int j = 1; j < K; ++j) {
        if (Gap) second = _mm256_max_ps(second, _mm256_min_ps(b, q[j]));
        b = _mm256_max_ps(b, q[j]);
    }
    const __m256 near_b =
        Gap ? _mm256_sub_ps(b, _mm256_set1_ps(static_cast<float>(2.0 * kRankEps)))
            : _mm256_sub_ps(_mm256_mul_ps(b, _mm256_set1_ps(1.0f - kRcpTie)), _mm256_set1_ps(0x1p-126f));
    __m256i near = _mm256_setzero_si256();
    for (int j = 0; j < K; ++j) {
        const __m256i is_near = _mm256_castps_si256(_mm256_cmp_ps(q[j], near_b, _CMP_GE_OQ));
        near = _mm256_add_epi32(near, _mm256_and_si256(is_near, A.tag[j]));
    }
    const __m256i amb = _mm256_cmpgt_epi32(near, _mm256_set1_epi32(2 * kTieUnit - 1));
    const __m256i l = _mm256_andnot_si256(amb, _mm256_and_si256(near, _mm256_set1_epi32(kTieUnit - 1)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(lab), l);
    const __m256i was = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(old)));
    const __m256i kept = _mm256_cmpeq_epi32(l, was);
    const __m256i f = _mm256_or_si256(_mm256_and_si256(amb, _mm256_set1_epi32(1)),
                                      _mm256_andnot_si256(_mm256_or_si256(amb, kept), _mm256_set1_epi32(2)));
    const __m128i f16 = _mm_packs_epi32(_mm256_castsi256_si128(f), _mm256_extracti128_si256(f, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(flag), _mm_packus_epi16(f16, f16));
    if (Gap) _mm256_storeu_ps(gap, _mm256_sub_ps(b, second));
}

template <int K, bool Gap>
__attribute__((target("avx2"))) void label_top2_avx2(const float* __restrict rows, float scale, index_t n,
                                                     const float* __restrict aw, const float* __restrict ah,
                                                     const float* __restrict aa, const std::uint8_t* __restrict old,
                                                     std::int32_t* __restrict lab, std::uint8_t* __restrict flag,
                                                     float* __restrict gap) {
    static_assert(K >= 1 && K <= kMaxFixedK, "an anchor index must fit in the tie sum's low bits");
    Avx2Anchors<K> A;
    for (int j = 0; j < K; ++j) {
        A.w[j] = _mm256_set1_ps(aw[j]);
        A.h[j] = _mm256_set1_ps(ah[j]);
        A.a[j] = _mm256_set1_ps(aa[j]);
        A.tag[j] = _mm256_set1_epi32(kTieUnit + j);
    }
    const __m256 vscale = _mm256_set1_ps(scale);
    index_t i = 0;
    for (; i + 8 <= n; i += 8)
        label8_avx2<K, Gap>(A, vscale, rows + 2 * i, old + i, lab + i, flag + i, Gap ? gap + i : nullptr);
    if (i == n) return;
    // The last 1-7 boxes as a step of eight, padded with copies of the last box (the bounded
    // passes rank a few boxes a block: a call of the portable kernel for their tails cost half
    // as much as the AVX2 steps).
    const index_t r = n - i;
    alignas(32) float tr[16];
    alignas(32) std::int32_t tl[8];
    alignas(32) float tg[8];
    std::uint8_t to[8], tf[8];
    for (int t = 0; t < 8; ++t) {
        const index_t src = i + std::min<index_t>(t, r - 1);
        tr[2 * t] = rows[2 * src];
        tr[2 * t + 1] = rows[2 * src + 1];
        to[t] = old[src];
    }
    label8_avx2<K, Gap>(A, vscale, tr, to, tl, tf, tg);
    for (index_t t = 0; t < r; ++t) {
        lab[i + t] = tl[t];
        flag[i + t] = tf[t];
        if (Gap) gap[i + t] = tg[t];
    }
}

}  // namespace detail
}  // namespace fastanchor
#endif  // FASTANCHOR_HAVE_AVX2
