// fastanchor: IoU of corner-aligned boxes (width, height) and the assignment kernel.
//
// Exactness contract: every IoU is computed as
//     inter = min(w1, w2) * min(h1, h2);   iou = inter / ((w1 * h1 + w2 * h2) - inter)
// in IEEE double, one rounding per operation, no FMA contraction (the build passes
// -ffp-contract=off) — the same operations numpy performs, so values are bit-identical to it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.hpp"

namespace fastanchor {

// Boxes or anchors as structure of arrays; `a` caches the areas w * h.
struct WhSet {
    std::vector<double> w, h, a;

    WhSet() = default;
    explicit WhSet(index_t n) : w(n), h(n), a(n) {}

    index_t size() const { return static_cast<index_t>(w.size()); }

    void resize(index_t n) {
        w.resize(n);
        h.resize(n);
        a.resize(n);
    }

    void set(index_t i, double wi, double hi) {
        w[i] = wi;
        h[i] = hi;
        a[i] = wi * hi;
    }

    // From an array of N rows (w, h), row stride `stride` elements.
    template <class T>
    static WhSet from_rows(const T* data, index_t n, index_t stride = 2) {
        WhSet s(n);
        for (index_t i = 0; i < n; ++i) {
            s.set(i, static_cast<double>(data[i * stride]), static_cast<double>(data[i * stride + 1]));
        }
        return s;
    }
};

inline double iou_wh(double w1, double h1, double a1, double w2, double h2, double a2) {
    const double inter = std::min(w1, w2) * std::min(h1, h2);
    return inter / ((a1 + a2) - inter);
}

namespace detail {

// Rows [r0, r1) of the N x M IoU matrix, written to out (row-major, M columns).
template <class Out>
FASTANCHOR_CLONES void iou_matrix_rows(const double* w1, const double* h1, const double* a1, index_t r0,
                                       index_t r1, const double* w2, const double* h2, const double* a2,
                                       index_t m, Out* out) {
    for (index_t i = r0; i < r1; ++i) {
        const double wi = w1[i], hi = h1[i], ai = a1[i];
        Out* row = out + i * m;
        for (index_t j = 0; j < m; ++j) {
            const double inter = std::min(wi, w2[j]) * std::min(hi, h2[j]);
            row[j] = static_cast<Out>(inter / ((ai + a2[j]) - inter));
        }
    }
}

// Margins of the division-free comparison. For positive doubles the rounded cross products
// p = fl(inter_j * union_best) and q = fl(inter_best * union_j) differ from the exact ones by a
// relative 2^-53 at most; p > q * kUp then proves fl(inter_j / union_j) > fl(inter_best /
// union_best) (the exact ratio of the quotients exceeds 1 + 4 * 2^-53), and p < q * kDown proves
// the opposite. Between the two the comparison is decided by the rounded quotients themselves.
inline constexpr double kUp = 1.0 + 1e-12;
inline constexpr double kDown = 1.0 - 1e-12;

// Kernels come in two forms: with the number of anchors K fixed at compile time (K <= kMaxFixedK,
// the anchor loop fully unrolled inside a SIMD loop over boxes: about 4x faster with GCC) and a
// generic one for larger k.
inline constexpr int kMaxFixedK = 16;

// K anchors copied into local arrays, so the compiler keeps them in registers.
template <int K>
struct FixedAnchors {
    double w[K], h[K], a[K];
    FixedAnchors(const double* aw, const double* ah, const double* aa) {
        for (int j = 0; j < K; ++j) {
            w[j] = aw[j];
            h[j] = ah[j];
            a[j] = aa[j];
        }
    }
};

// Label of one box by the exact rule (highest rounded IoU, lowest index on ties).
inline std::int32_t assign_exact(double w, double h, double a, const double* aw, const double* ah,
                                 const double* aa, int k, double* best_iou = nullptr) {
    std::int32_t best = 0;
    double bq = iou_wh(w, h, a, aw[0], ah[0], aa[0]);
    for (int j = 1; j < k; ++j) {
        const double q = iou_wh(w, h, a, aw[j], ah[j], aa[j]);
        if (q > bq) {
            bq = q;
            best = j;
        }
    }
    if (best_iou) *best_iou = bq;
    return best;
}

// Labels without divisions, vectorized over boxes. A box whose decision fell inside the rounding
// margin at some anchor gets label -1, to be redone by assign_exact.
template <int K>
FASTANCHOR_CLONES void assign_nodiv(const double* __restrict w, const double* __restrict h,
                                    const double* __restrict a, index_t n, const double* __restrict aw,
                                    const double* __restrict ah, const double* __restrict aa,
                                    std::int32_t* __restrict out) {
    const FixedAnchors<K> A(aw, ah, aa);
    const double *AW = A.w, *AH = A.h, *AA = A.a;
#pragma omp simd
    for (index_t i = 0; i < n; ++i) {
        const double wi = w[i], hi = h[i], ai = a[i];
        double bi = std::min(wi, AW[0]) * std::min(hi, AH[0]);
        double bu = (ai + AA[0]) - bi;
        std::int32_t bl = 0, amb = 0;
#pragma GCC unroll 16
        for (int j = 1; j < K; ++j) {
            const double inter = std::min(wi, AW[j]) * std::min(hi, AH[j]);
            const double u = (ai + AA[j]) - inter;
            const double p = inter * bu, q = bi * u;
            const bool better = p > q * kUp;
            const bool not_worse = p >= q * kDown;
            amb |= static_cast<std::int32_t>(not_worse & !better);
            bi = better ? inter : bi;
            bu = better ? u : bu;
            bl = better ? j : bl;
        }
        out[i] = amb ? -1 : bl;
    }
}

// ---- Labels in float, for the Lloyd iterations ----
//
// Box and anchor sides scaled by one power of two into float's comfortable range (values in
// [2^-60, 2^60]) and rounded once to float32. With u = 2^-24: inter and both areas carry a
// relative error of at most 3u, their sum 4u, the union (never below half that sum, since
// inter <= min(a1, a2)) 12u, the quotient 16u. So each float IoU is within 16u < 1e-6 of the
// double IoU (IoU <= 1), and kRankEps = 4e-6 leaves a factor four for second-order terms. A box
// whose best and second float IoU lie within 2 * kRankEps may have its label decided
// differently by the double values: it is flagged and the caller decides it exactly.
inline constexpr double kRankEps = 4e-6;

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
FASTANCHOR_CLONES void label_top2(const float* __restrict rows, float scale, index_t n,
                                  const float* __restrict aw, const float* __restrict ah,
                                  const float* __restrict aa, const std::uint8_t* __restrict old,
                                  std::int32_t* __restrict lab, std::uint8_t* __restrict flag,
                                  float* __restrict gap) {
    static_assert(K >= 1 && K <= 16, "an anchor index must fit in the last 4 bits of the tie sum");
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
            const float inter = std::min(wi, AW[j]) * std::min(hi, AH[j]);
            q[j] = inter / ((ai + AA[j]) - inter);
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
        for (int j = 0; j < K; ++j) near += q[j] >= near_b ? 16 + j : 0;
        // Two or more near the best: 1; else a new label: 2; else 0 (arithmetic: a select would
        // stop the vectorizer).
        const std::int32_t amb = near >= 32, l = (near & 15) * (1 - amb);
        lab[i] = l;
        const std::int32_t moved = l != static_cast<std::int32_t>(old[i]);
        flag[i] = static_cast<std::uint8_t>(amb + ((1 - amb) * moved << 1));
        if (Gap) gap[i] = b - second;
    }
}

#if FASTANCHOR_HAVE_AVX2
// The no-gap AVX2 kernel's tie margin, relative (label_top2_avx2).
inline constexpr float kRcpTie = 1.1e-3f;

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
template <int K>
struct Avx2Anchors {
    __m256 w[K], h[K], a[K];
    __m256i tag[K];  // 16 + j
};

// label_top2_avx2's step: boxes 0-7 of rows, old, lab, flag, gap.
template <int K, bool Gap>
__attribute__((target("avx2"), always_inline)) inline void label8_avx2(const Avx2Anchors<K>& A, __m256 scale,
                                                                       const float* rows, const std::uint8_t* old,
                                                                       std::int32_t* lab, std::uint8_t* flag, float* gap) {
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
    const __m256 near_b = Gap ? _mm256_sub_ps(b, _mm256_set1_ps(static_cast<float>(2.0 * kRankEps)))
                              : _mm256_sub_ps(_mm256_mul_ps(b, _mm256_set1_ps(1.0f - kRcpTie)), _mm256_set1_ps(0x1p-126f));
    __m256i near = _mm256_setzero_si256();
    for (int j = 0; j < K; ++j) {
        const __m256i is_near = _mm256_castps_si256(_mm256_cmp_ps(q[j], near_b, _CMP_GE_OQ));
        near = _mm256_add_epi32(near, _mm256_and_si256(is_near, A.tag[j]));
    }
    const __m256i amb = _mm256_cmpgt_epi32(near, _mm256_set1_epi32(31));
    const __m256i l = _mm256_andnot_si256(amb, _mm256_and_si256(near, _mm256_set1_epi32(15)));
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
    static_assert(K >= 1 && K <= 16, "an anchor index must fit in the last 4 bits of the tie sum");
    Avx2Anchors<K> A;
    for (int j = 0; j < K; ++j) {
        A.w[j] = _mm256_set1_ps(aw[j]);
        A.h[j] = _mm256_set1_ps(ah[j]);
        A.a[j] = _mm256_set1_ps(aa[j]);
        A.tag[j] = _mm256_set1_epi32(16 + j);
    }
    const __m256 vscale = _mm256_set1_ps(scale);
    index_t i = 0;
    for (; i + 8 <= n; i += 8) label8_avx2<K, Gap>(A, vscale, rows + 2 * i, old + i, lab + i, flag + i, Gap ? gap + i : nullptr);
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
#endif

#define FASTANCHOR_K_CASES(X)                                                                       \
    X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16)

// label_top2 or, with avx2 (use_avx2()), label_top2_avx2; with gaps unless gap is null.
template <int K>
void label_top2_any(const float* rows, float scale, index_t n, const float* aw, const float* ah, const float* aa,
                    const std::uint8_t* old, std::int32_t* lab, std::uint8_t* flag, float* gap, bool avx2) {
#if FASTANCHOR_HAVE_AVX2
    if (avx2) {
        if (gap) label_top2_avx2<K, true>(rows, scale, n, aw, ah, aa, old, lab, flag, gap);
        else label_top2_avx2<K, false>(rows, scale, n, aw, ah, aa, old, lab, flag, nullptr);
        return;
    }
#else
    (void)avx2;
#endif
    if (gap) label_top2<K, true>(rows, scale, n, aw, ah, aa, old, lab, flag, gap);
    else label_top2<K, false>(rows, scale, n, aw, ah, aa, old, lab, flag, nullptr);
}

// Float labels of n boxes (label_top2_any); returns false when k has no fixed-K kernel.
inline bool label_float_k(const float* rows, float scale, index_t n, const float* aw, const float* ah,
                          const float* aa, int k, const std::uint8_t* old, std::int32_t* lab, std::uint8_t* flag,
                          float* gap, bool avx2) {
    switch (k) {
#define FASTANCHOR_CASE(K)                                                          \
    case K:                                                                         \
        label_top2_any<K>(rows, scale, n, aw, ah, aa, old, lab, flag, gap, avx2);   \
        return true;
        FASTANCHOR_K_CASES(FASTANCHOR_CASE)
#undef FASTANCHOR_CASE
        default:
            return false;
    }
}

// Division-free labels of n boxes; returns false when k has no fixed-K kernel.
inline bool assign_nodiv_k(const double* w, const double* h, const double* a, index_t n, const double* aw,
                           const double* ah, const double* aa, int k, std::int32_t* out) {
    switch (k) {
#define FASTANCHOR_CASE(K)                              \
    case K:                                             \
        assign_nodiv<K>(w, h, a, n, aw, ah, aa, out);   \
        return true;
        FASTANCHOR_K_CASES(FASTANCHOR_CASE)
#undef FASTANCHOR_CASE
        default:
            return false;
    }
}

// Best IoU of each box in [0, n) with any anchor (exact quotients; max is tie-insensitive).
template <int K>
FASTANCHOR_CLONES void best_iou_fixed(const double* __restrict w, const double* __restrict h,
                                      const double* __restrict a, index_t n, const double* __restrict aw,
                                      const double* __restrict ah, const double* __restrict aa,
                                      double* __restrict out) {
    const FixedAnchors<K> A(aw, ah, aa);
#pragma omp simd
    for (index_t i = 0; i < n; ++i) {
        double b = 0.0;
#pragma GCC unroll 16
        for (int j = 0; j < K; ++j) {
            const double inter = std::min(w[i], A.w[j]) * std::min(h[i], A.h[j]);
            const double q = inter / ((a[i] + A.a[j]) - inter);
            b = q > b ? q : b;
        }
        out[i] = b;
    }
}

inline void best_iou_range(const double* w, const double* h, const double* a, index_t n, const double* aw,
                           const double* ah, const double* aa, int k, double* out) {
    switch (k) {
#define FASTANCHOR_CASE(K)                                  \
    case K:                                                 \
        best_iou_fixed<K>(w, h, a, n, aw, ah, aa, out);     \
        return;
        FASTANCHOR_K_CASES(FASTANCHOR_CASE)
#undef FASTANCHOR_CASE
        default:
            for (index_t i = 0; i < n; ++i) assign_exact(w[i], h[i], a[i], aw, ah, aa, k, out + i);
    }
}

}  // namespace detail

namespace detail {

// Labels of n boxes (w, h, a) against k anchors written to out[0, n): highest IoU, lowest anchor
// index on ties, decided exactly as on the rounded IoU values.
inline void assign_rows(const double* w, const double* h, const double* a, index_t n, const double* aw,
                        const double* ah, const double* aa, int k, std::int32_t* out) {
    if (assign_nodiv_k(w, h, a, n, aw, ah, aa, k, out)) {
        for (index_t i = 0; i < n; ++i)
            if (out[i] < 0) out[i] = assign_exact(w[i], h[i], a[i], aw, ah, aa, k);
    } else {
        for (index_t i = 0; i < n; ++i) out[i] = assign_exact(w[i], h[i], a[i], aw, ah, aa, k);
    }
}

}  // namespace detail

// Labels of boxes [b, e) of `boxes` against `anchors` written to out[0, e - b).
inline void assign_range(const WhSet& boxes, index_t b, index_t e, const WhSet& anchors, std::int32_t* out) {
    detail::assign_rows(boxes.w.data() + b, boxes.h.data() + b, boxes.a.data() + b, e - b, anchors.w.data(),
                        anchors.h.data(), anchors.a.data(), static_cast<int>(anchors.size()), out);
}

// Labels of all boxes, in parallel.
inline void assign_all(const WhSet& boxes, const WhSet& anchors, std::int32_t* labels, int n_threads) {
    for_each_chunk(boxes.size(), n_threads,
                   [&](index_t, index_t b, index_t e) { assign_range(boxes, b, e, anchors, labels + b); });
}

// N x M IoU matrix (row-major) of two box sets, computed in double, stored as Out.
template <class Out>
void iou_matrix(const WhSet& s1, const WhSet& s2, Out* out, int n_threads) {
    const index_t n = s1.size(), m = s2.size();
    if (n == 0 || m == 0) return;
    // Chunks of rows holding about kChunk output cells each.
    const index_t rows = std::max<index_t>(1, kChunk / std::max<index_t>(m, 1));
    const index_t nc = (n + rows - 1) / rows;
    const int nt = threads_for(n_threads, nc);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
    for (index_t c = 0; c < nc; ++c) {
        detail::iou_matrix_rows<Out>(s1.w.data(), s1.h.data(), s1.a.data(), c * rows, std::min(n, (c + 1) * rows),
                                     s2.w.data(), s2.h.data(), s2.a.data(), m, out);
    }
    (void)nt;
}

// Best IoU of every box with the anchors, in parallel.
inline void best_iou(const WhSet& boxes, const WhSet& anchors, double* out, int n_threads) {
    const int k = static_cast<int>(anchors.size());
    for_each_chunk(boxes.size(), n_threads, [&](index_t, index_t b, index_t e) {
        detail::best_iou_range(boxes.w.data() + b, boxes.h.data() + b, boxes.a.data() + b, e - b, anchors.w.data(),
                               anchors.h.data(), anchors.a.data(), k, out + b);
    });
}

namespace detail {

// Sums of weight * v[i] and of weight over [b, e), in order (weights null: unit weights).
inline void weighted_sums(const double* v, const double* weights, index_t b, index_t e, double& s, double& sw) {
    s = 0.0;
    sw = 0.0;
    if (weights) {
        for (index_t i = b; i < e; ++i) {
            s += weights[i] * v[i - b];
            sw += weights[i];
        }
    } else {
        for (index_t i = b; i < e; ++i) s += v[i - b];
        sw = static_cast<double>(e - b);
    }
}

// sum(weight * value) / sum(weight) from per-chunk partials combined in chunk order.
inline double chunked_mean(const std::vector<double>& num, const std::vector<double>& den) {
    double s = 0.0, sw = 0.0;
    for (std::size_t c = 0; c < num.size(); ++c) {
        s += num[c];
        sw += den[c];
    }
    return s / sw;
}

}  // namespace detail

// Weighted mean of v[0, n) (weights may be null: unit weights), summed per fixed chunk and
// combined in chunk order: deterministic for any thread count, and equal to avg_best_iou for
// the same values.
inline double weighted_mean(const double* v, const double* weights, index_t n, int n_threads) {
    std::vector<double> num(n_chunks(n), 0.0), den(n_chunks(n), 0.0);
    for_each_chunk(n, n_threads,
                   [&](index_t c, index_t b, index_t e) { detail::weighted_sums(v + b, weights, b, e, num[c], den[c]); });
    return detail::chunked_mean(num, den);
}

// Weighted mean over boxes of the best IoU; weights may be null (unit weights).
inline double avg_best_iou(const WhSet& boxes, const double* weights, const WhSet& anchors, int n_threads) {
    const index_t n = boxes.size();
    const int k = static_cast<int>(anchors.size());
    std::vector<double> num(n_chunks(n), 0.0), den(n_chunks(n), 0.0);
    for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
        double buf[kChunk];
        detail::best_iou_range(boxes.w.data() + b, boxes.h.data() + b, boxes.a.data() + b, e - b, anchors.w.data(),
                               anchors.h.data(), anchors.a.data(), k, buf);
        detail::weighted_sums(buf, weights, b, e, num[c], den[c]);
    });
    return detail::chunked_mean(num, den);
}

}  // namespace fastanchor
