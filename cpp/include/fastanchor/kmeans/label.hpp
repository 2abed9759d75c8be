// fastanchor: the Lloyd iterations' labelling kernel, in float32 (label_top2; its AVX2 twin in
// label_avx2.hpp), and its one dispatch (label_float_k).
#pragma once

#include <algorithm>
#include <cstdint>

#include "../common.hpp"
#include "../constants.hpp"
#include "../fixed_k.hpp"
#include "../geometry.hpp"
#include "label_avx2.hpp"

namespace fastanchor {
namespace detail {

// Box and anchor sides scaled by one power of two into float's comfortable range (values in
// [2^-60, 2^60]) and rounded once to float32. With u = 2^-24: inter and both areas carry a
// relative error of at most 3u, their sum 4u, the union (never below half that sum, since
// inter <= min(a1, a2)) 12u, the quotient 16u. So each float IoU is within 16u < 1e-6 of the
// double IoU (IoU <= 1: kFloatIouError), and kRankEps = 4e-6 leaves a factor four for second-order
// terms (constants.hpp). A box whose best and second float IoU lie within 2 * kRankEps may have its
// label decided differently by the double values: it is flagged and the caller decides it exactly.
// (docs/design.md, "The float ranking bound".)

// Labels in float of n boxes, rows (w, h) of floats times `scale` (a power of two: their sides
// are the values times one power of two, rounded to float), read interleaved as they are stored
// (about 10% faster than splitting them into two arrays first): each box's best of K anchors
// compared with its label old[i] (a value of K or more: none).
// flag[i] is 0 when the float ranking keeps the old label, 2 when it gives another (then lab[i]
// holds it), 1 when another anchor's float IoU comes within 2 * kRankEps of the best one (the
// caller decides those exactly; lab[i] is then 0). With Gap, gap[i] is the best float IoU minus
// the second best (0 for K = 1: there is no other). All K IoUs first, then their maximum, the
// anchors within the tie margin of it and the largest of the others: no chain of selections
// from one anchor to the next (about twice as fast as a running top-two), and the areas
// computed from the sides. K <= 16 (kMaxFixedK).
//
// Margin: a flag of 0 means every other float IoU is below fl(best - 2 * kRankEps) >= best -
// 2 * kRankEps - 2^-24 (best <= 1), more than 2 * 1e-6 below the best: the double IoUs, each
// within 1e-6 of the float ones, rank the same anchor first.
template <int K, bool Gap>
FASTANCHOR_CLONES void label_top2(const float* __restrict rows, float scale, index_t n, const float* __restrict aw,
                                  const float* __restrict ah, const float* __restrict aa,
                                  const std::uint8_t* __restrict old, std::int32_t* __restrict lab,
                                  std::uint8_t* __restrict flag, float* __restrict gap) {
    static_assert(K >= 1 && K <= kMaxFixedK, "an anchor index must fit in the tie sum's low bits");
    float AW[K], AH[K], AA[K];
    for (int j = 0; j < K; ++j) {
        AW[j] = aw[j];
        AH[j] = ah[j];
        AA[j] = aa[j];
    }
    constexpr float kTie = static_cast<float>(2.0 * kRankEps);
#pragma omp simd
    for (index_t i = 0; i < n; ++i) {
        const float wi = rows[2 * i] * scale, hi = rows[2 * i + 1] * scale, ai = wi * hi;
        float q[K];
#pragma GCC unroll 16
        for (int j = 0; j < K; ++j) {
            q[j] = iou_wh(wi, hi, ai, AW[j], AH[j], AA[j]);
        }
        // The largest and (with Gap) the second largest: min(b, q) is what q or the old b leaves
        // for second place. Two equal largest values give second == b.
        float b = q[0], second = K == 1 ? q[0] : 0.0f;  // K = 1: no other anchor (gap 0)
#pragma GCC unroll 16
        for (int j = 1; j < K; ++j) {
            if (Gap) second = std::max(second, std::min(b, q[j]));
            b = std::max(b, q[j]);
        }
        // One sum says both how many anchors come within the tie margin of the best (sum / 16)
        // and, when only one does (that is the best), which (sum % 16): three operations an
        // anchor where a count and a first-argmax took four (8-10% faster).
        const float near_b = b - kTie;
        std::int32_t near = 0;
#pragma GCC unroll 16
        for (int j = 0; j < K; ++j) near += q[j] >= near_b ? kTieUnit + j : 0;
        // Two or more near the best: 1; else a new label: 2; else 0 (arithmetic: a select would
        // stop the vectorizer).
        const std::int32_t amb = near >= 2 * kTieUnit, l = (near & (kTieUnit - 1)) * (1 - amb);
        lab[i] = l;
        const std::int32_t moved = l != static_cast<std::int32_t>(old[i]);
        flag[i] = static_cast<std::uint8_t>(amb + ((1 - amb) * moved << 1));
        if (Gap) gap[i] = b - second;
    }
}

// label_top2 (portable) or label_top2_avx2, as isa says; with gaps unless gap is null.
template <int K>
void label_top2_any(Isa isa, const float* rows, float scale, index_t n, const float* aw, const float* ah,
                    const float* aa, const std::uint8_t* old, std::int32_t* lab, std::uint8_t* flag, float* gap) {
    if (gap)
        FASTANCHOR_SIMD(isa, (label_top2_avx2<K, true>(rows, scale, n, aw, ah, aa, old, lab, flag, gap)),
                        (label_top2<K, true>(rows, scale, n, aw, ah, aa, old, lab, flag, gap)));
    else
        FASTANCHOR_SIMD(isa, (label_top2_avx2<K, false>(rows, scale, n, aw, ah, aa, old, lab, flag, nullptr)),
                        (label_top2<K, false>(rows, scale, n, aw, ah, aa, old, lab, flag, nullptr)));
}

// Float labels of n boxes (label_top2_any); returns false when k has no fixed-K kernel.
inline bool label_float_k(Isa isa, const float* rows, float scale, index_t n, const float* aw, const float* ah,
                          const float* aa, int k, const std::uint8_t* old, std::int32_t* lab, std::uint8_t* flag,
                          float* gap) {
    return with_fixed_k(
        k, [&](auto K) { label_top2_any<decltype(K)::value>(isa, rows, scale, n, aw, ah, aa, old, lab, flag, gap); });
}

}  // namespace detail
}  // namespace fastanchor
