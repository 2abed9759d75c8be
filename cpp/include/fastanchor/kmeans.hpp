// fastanchor: k-means of box shapes with the distance 1 - IoU (YOLOv2), Lloyd iterations with
// weighted median or mean updates, greedy k-means++ or random initialisation.
//
// Memory is O(N + k) beyond the input: no N x k matrix is ever formed. Every reduction runs over
// fixed chunks combined in chunk order, and every random draw comes from the seeded Rng on the
// calling thread, so results are bit-identical for any number of threads.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "common.hpp"
#include "iou.hpp"
#include "random.hpp"
#include "sort.hpp"

namespace fastanchor {

#ifdef __SIZEOF_INT128__
#define FASTANCHOR_HAVE_INT128 1
__extension__ typedef __int128 int128_t;
#else
#define FASTANCHOR_HAVE_INT128 0
#endif

enum class Update { Median, Mean };
enum class Init { KMeansPP, Random, Given };

struct KMeansOptions {
    int k = 9;
    Init init = Init::KMeansPP;
    Update update = Update::Median;
    int n_init = 1;
    int max_iter = 300;
    double tol = 0.0;
    std::uint64_t seed = 0;
    int n_threads = 1;
};

struct KMeansOutput {
    WhSet anchors;                     // k anchors sorted by area, ties by width
    std::vector<std::int32_t> labels;  // per box (input order), indexing the sorted anchors
    double avg_iou = 0.0;
    int n_iter = 0;
    bool converged = false;
    int best_run = 0;
};

// The storage order of the boxes sorts them by a 16-bit Morton (Z-curve) key of their shape:
// each coordinate's float32 bit pattern (monotone in the value and close to its logarithm) is
// scaled to 8 bits over the data's range and the two are interleaved. Boxes of similar shape
// then sit together, so the few boxes an iteration must recompute (those near the boundary
// between two clusters) share cache lines and blocks, and most blocks hold none.
inline std::vector<std::uint16_t> shape_keys(const double* wh, index_t n, int n_threads) {
    constexpr std::uint64_t kTop = 255;
    auto bits_of = [](double x) {
        const float f = static_cast<float>(x);
        std::uint32_t b;
        std::memcpy(&b, &f, sizeof b);
        return b;
    };
    std::uint32_t lo[2] = {0xffffffffu, 0xffffffffu}, hi[2] = {0u, 0u};
    for (index_t i = 0; i < 2 * n; ++i) {
        const std::uint32_t b = bits_of(wh[i]);
        lo[i & 1] = std::min(lo[i & 1], b);
        hi[i & 1] = std::max(hi[i & 1], b);
    }
    // (b - lo) * kTop / range as a multiply and shift: ((b - lo) * mul) >> 32 with
    // mul = floor(kTop * 2^32 / range) is monotone in b and at most kTop.
    std::uint64_t mul[2];
    for (int X = 0; X < 2; ++X) {
        const std::uint64_t range = hi[X] - lo[X];
        mul[X] = range == 0 ? 0 : (kTop << 32) / range;
    }
    auto spread = [](std::uint32_t x) {  // 8 bits -> the even positions of 16
        x = (x | (x << 4)) & 0x0f0fu;
        x = (x | (x << 2)) & 0x3333u;
        return (x | (x << 1)) & 0x5555u;
    };
    std::vector<std::uint16_t> key(n);
    for_each_chunk(n, n_threads, [&](index_t, index_t b, index_t e) {
        for (index_t i = b; i < e; ++i) {
            const auto qw = static_cast<std::uint32_t>((std::uint64_t{bits_of(wh[2 * i]) - lo[0]} * mul[0]) >> 32);
            const auto qh = static_cast<std::uint32_t>((std::uint64_t{bits_of(wh[2 * i + 1]) - lo[1]} * mul[1]) >> 32);
            key[i] = static_cast<std::uint16_t>(spread(qw) | (spread(qh) << 1));
        }
    });
    return key;
}

// The boxes as the algorithm stores them: sorted by shape_keys, with each one's input row. For
// the median update it also keeps, for each coordinate, the boxes' order by that coordinate
// (ties by storage index; a median's value does not depend on the order of equal values) and
// each box's position in that order.
struct Problem {
    using pos_t = std::uint32_t;  // the median update supports up to 2^32 - 1 boxes
    WhSet boxes;
    std::vector<double> weight;   // empty: unit weights
    const double* input_weight = nullptr;  // the caller's weights, input order (null: unit)
    std::vector<pos_t> input;     // input[s]: the input row of the box stored at s
    std::vector<pos_t> order[2];  // order[X][s]: the box at sorted position s of coordinate X (0: w, 1: h)
    std::vector<pos_t> pos[2];    // pos[X][i]: the sorted position of box i
    // Float copies of the boxes times fscale (a power of two) for detail::rank_float; empty when
    // the data's range does not fit in [kFloatLo, kFloatHi] with one scale.
    std::vector<float> fw, fh, fa;
    double fscale = 1.0;
    static constexpr double kFloatLo = 0x1p-60, kFloatHi = 0x1p60;
    // Exact sums (unit weights): every value is an integer multiple of 2^sum_exp (the last bit
    // of the smallest one's mantissa) below 2^kSumBits times it, so the sum of any set of up to
    // 2^32 boxes is a 128-bit integer, exact whatever the order of the additions.
    bool exact_sums = false;
    int sum_exp = 0;
    static constexpr int kSumBits = 94;

    bool has_float() const { return !fw.empty(); }

    index_t size() const { return boxes.size(); }
    bool weighted() const { return !weight.empty(); }
    double wt(index_t i) const { return weight.empty() ? 1.0 : weight[i]; }
    double value(int X, index_t i) const { return X == 0 ? boxes.w[i] : boxes.h[i]; }

    // Weighted mean over the boxes of the best IoU with `anchors`, summed in input order so that
    // it equals avg_best_iou on the caller's array bit for bit.
    double avg_iou(const WhSet& anchors, int n_threads) const {
        const index_t n = size();
        const int k = static_cast<int>(anchors.size());
        std::vector<double> ordered(n);
        for_each_chunk(n, n_threads, [&](index_t, index_t b, index_t e) {
            double buf[kChunk];
            detail::best_iou_range(boxes.w.data() + b, boxes.h.data() + b, boxes.a.data() + b, e - b,
                                   anchors.w.data(), anchors.h.data(), anchors.a.data(), k, buf);
            for (index_t s = b; s < e; ++s) ordered[input[s]] = buf[s - b];
        });
        return weighted_mean(ordered.data(), input_weight, n, n_threads);
    }

    // Whether the values in [lo, hi] allow exact sums (and the mean of such a sum stays finite).
    void set_exact_sums(double lo, double hi) {
#if FASTANCHOR_HAVE_INT128
        sum_exp = std::max(std::ilogb(lo), -1022) - (std::numeric_limits<double>::digits - 1);
        exact_sums = !weighted() && std::ilogb(hi) + 1 - sum_exp <= kSumBits && std::ilogb(hi) + 33 < 1000;
#else
        (void)lo;
        (void)hi;
#endif
    }

#if FASTANCHOR_HAVE_INT128
    // Box i's value along X as the integer value / 2^sum_exp (exact_sums only), from its bits:
    // a positive double is m * 2^e with the integer m of its mantissa field (and the implicit
    // bit when normal), and e >= sum_exp for every value of the data.
    int128_t fixed(int X, index_t i) const {
        const double v = value(X, i);
        std::uint64_t bits;
        std::memcpy(&bits, &v, sizeof bits);
        const int field = static_cast<int>(bits >> 52);
        const std::uint64_t frac = bits & ((std::uint64_t{1} << 52) - 1);
        const std::uint64_t m = field == 0 ? frac : frac | (std::uint64_t{1} << 52);
        const int e = (field == 0 ? 1 : field) - 1075;
        return static_cast<int128_t>(m) << (e - sum_exp);
    }
    // The mean of a set whose exact sum is `sum` (value / 2^sum_exp units) over `count` boxes.
    double fixed_mean(int128_t sum, index_t count) const {
        return std::ldexp(static_cast<double>(sum), sum_exp) / static_cast<double>(count);
    }
#endif

    void make_float(int n_threads) {
        const index_t n = size();
        if (n == 0) return;
        const double* w = boxes.w.data();
        const double* h = boxes.h.data();
        double lo = w[0], hi = w[0];
#pragma omp simd reduction(min : lo) reduction(max : hi)
        for (index_t i = 0; i < n; ++i) {
            lo = std::min(lo, std::min(w[i], h[i]));
            hi = std::max(hi, std::max(w[i], h[i]));
        }
        set_exact_sums(lo, hi);
        fscale = std::ldexp(1.0, -std::ilogb(std::sqrt(lo) * std::sqrt(hi)));
        if (!(lo * fscale >= kFloatLo && hi * fscale <= kFloatHi)) return;
        fw.resize(n);
        fh.resize(n);
        fa.resize(n);
        const double scale = fscale;
        for_each_chunk(n, n_threads, [&](index_t, index_t b, index_t e) {
            for (index_t i = b; i < e; ++i) {
                fw[i] = static_cast<float>(w[i] * scale);
                fh[i] = static_cast<float>(h[i] * scale);
                fa[i] = fw[i] * fh[i];
            }
        });
    }

    // wh: N rows (w, h), contiguous; weights: N values or null.
    static Problem make(const double* wh, const double* weights, index_t n, bool for_median, int n_threads) {
        if (static_cast<std::uint64_t>(n) > std::numeric_limits<pos_t>::max())
            throw std::invalid_argument("kmeans_iou supports at most 4,294,967,295 boxes");
        Problem p;
        p.input_weight = weights;
        {  // a stable counting sort by shape_keys, placing the boxes as it goes
            const std::vector<std::uint16_t> key = shape_keys(wh, n, n_threads);
            std::vector<pos_t> next(1u << 16, 0);
            for (index_t i = 0; i < n; ++i) ++next[key[i]];
            pos_t sum = 0;
            for (pos_t& x : next) {
                const pos_t t = x;
                x = sum;
                sum += t;
            }
            p.input.resize(n);
            p.boxes = WhSet(n);
            if (weights) p.weight.resize(n);
            for (index_t i = 0; i < n; ++i) {
                const pos_t s = next[key[i]]++;
                p.input[s] = static_cast<pos_t>(i);
                p.boxes.set(s, wh[2 * i], wh[2 * i + 1]);
                if (weights) p.weight[s] = weights[i];
            }
        }
        p.make_float(n_threads);
        if (!for_median) return p;
        auto sort_coordinate = [&](int X) {
            p.order[X] = argsort_positive<pos_t>(X == 0 ? p.boxes.w.data() : p.boxes.h.data(), n);
            p.pos[X].resize(n);
            for (index_t s = 0; s < n; ++s) p.pos[X][p.order[X][s]] = static_cast<pos_t>(s);
        };
#ifdef _OPENMP
        // Nothing may escape a parallel region: errors (bad_alloc) are carried out and rethrown.
        std::exception_ptr error[2];
#pragma omp parallel sections num_threads(2) if (n_threads > 1)
        {
#pragma omp section
            {
                try {
                    sort_coordinate(0);
                } catch (...) {
                    error[0] = std::current_exception();
                }
            }
#pragma omp section
            {
                try {
                    sort_coordinate(1);
                } catch (...) {
                    error[1] = std::current_exception();
                }
            }
        }
        for (auto& e : error)
            if (e) std::rethrow_exception(e);
#else
        (void)n_threads;
        sort_coordinate(0);
        sort_coordinate(1);
#endif
        return p;
    }
};

namespace detail {

// Weighted median of every cluster along one coordinate, in one pass over the boxes in
// ascending order of that coordinate (ties by input index). get(s) returns the s-th box's
// (label, value, weight). For cluster c with cumulative weights cum in that order and
// half = total / 2: the first box with cum >= half; when cum == half exactly and that box is
// not the cluster's last, the mean of it and the cluster's next value (numpy.median for unit
// weights).
struct MedianScratch {
    std::vector<double> cum, prev;
    std::vector<index_t> seen;
    std::vector<std::uint8_t> state;
    void reset(int k) {
        cum.assign(k, 0.0);
        prev.assign(k, 0.0);
        seen.assign(k, 0);
        state.assign(k, 0);
    }
};

template <class Get>
void median_pass(index_t n, int k, Get get, const double* total, const double* count, double* med,
                 MedianScratch& s) {
    s.reset(k);
    int remaining = 0;
    for (int c = 0; c < k; ++c) {
        if (count[c] > 0) ++remaining;
        else s.state[c] = 2;
    }
    for (index_t i = 0; i < n && remaining > 0; ++i) {
        std::int32_t c;
        double x, wt;
        get(i, c, x, wt);
        const std::uint8_t st = s.state[c];
        if (st == 2) continue;
        if (st == 1) {
            med[c] = (s.prev[c] + x) / 2.0;
            s.state[c] = 2;
            --remaining;
            continue;
        }
        s.cum[c] += wt;
        ++s.seen[c];
        const double half = total[c] / 2.0;
        if (s.cum[c] >= half) {
            if (s.cum[c] == half && static_cast<double>(s.seen[c]) < count[c]) {
                s.prev[c] = x;
                s.state[c] = 1;
            } else {
                med[c] = x;
                s.state[c] = 2;
                --remaining;
            }
        }
    }
}

}  // namespace detail

namespace detail {

// The bound test for boxes [0, n): writes to idx (and returns how many) the boxes whose bounds
// do not prove that they keep their label:
//     !(ub + D[label] + gap < min(lb2 - D[label2], lb3 - dm)).
FASTANCHOR_CLONES inline index_t bound_candidates_generic(const float* __restrict ub, const float* __restrict lb2,
                                                          const float* __restrict lb3,
                                                          const std::int32_t* __restrict lab,
                                                          const std::int32_t* __restrict lab2, index_t n,
                                                          const double* __restrict D, double dm, double gap,
                                                          std::int32_t* __restrict idx) {
    constexpr index_t kBlock = 64;
    index_t m = 0;
    for (index_t i0 = 0; i0 < n; i0 += kBlock) {
        const index_t e = std::min(n, i0 + kBlock);
        unsigned char need[kBlock];
        int any = 0;
#pragma omp simd reduction(| : any)
        for (index_t i = i0; i < e; ++i) {
            const double u = static_cast<double>(ub[i]) + D[lab[i]] + gap;
            const double l = std::min(static_cast<double>(lb2[i]) - D[lab2[i]], static_cast<double>(lb3[i]) - dm);
            const int nd = !(u < l);
            need[i - i0] = static_cast<unsigned char>(nd);
            any |= nd;
        }
        if (!any) continue;
        for (index_t i = i0; i < e; ++i) {  // branch-free compaction
            idx[m] = static_cast<std::int32_t>(i);
            m += need[i - i0];
        }
    }
    return m;
}

#if FASTANCHOR_HAVE_AVX512_PATH
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
// GCC 12 reports its own _mm512_undefined_* helpers in avx512fintrin.h as maybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// The same test with AVX-512: D[...] is a 16-entry table lookup in registers (k <= 16) and the
// candidates are compress-stored, eight boxes per step.
__attribute__((target("avx512f,avx512vl"))) inline index_t bound_candidates_avx512(
    const float* __restrict ub, const float* __restrict lb2, const float* __restrict lb3,
    const std::int32_t* __restrict lab, const std::int32_t* __restrict lab2, index_t n, const double* __restrict D,
    int k, double dm, double gap, std::int32_t* __restrict idx) {
    alignas(64) double table[16] = {0.0};
    for (int j = 0; j < k; ++j) table[j] = D[j];
    const __m512d lo_tab = _mm512_load_pd(table), hi_tab = _mm512_load_pd(table + 8);
    const __m512d vdm = _mm512_set1_pd(dm), vgap = _mm512_set1_pd(gap);
    const __m256i step = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    index_t m = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m512i l1 = _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(lab + i)));
        const __m512i l2 = _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(lab2 + i)));
        const __m512d u = _mm512_add_pd(
            _mm512_add_pd(_mm512_cvtps_pd(_mm256_loadu_ps(ub + i)), _mm512_permutex2var_pd(lo_tab, l1, hi_tab)), vgap);
        const __m512d low2 =
            _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(lb2 + i)), _mm512_permutex2var_pd(lo_tab, l2, hi_tab));
        const __m512d low3 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(lb3 + i)), vdm);
        const __mmask8 need = static_cast<__mmask8>(~_mm512_cmp_pd_mask(u, _mm512_min_pd(low2, low3), _CMP_LT_OQ));
        if (need) {
            const __m256i iv = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(i)), step);
            _mm256_mask_compressstoreu_epi32(idx + m, need, iv);
            m += __builtin_popcount(need);
        }
    }
    for (; i < n; ++i) {
        const double u = static_cast<double>(ub[i]) + D[lab[i]] + gap;
        const double l = std::min(static_cast<double>(lb2[i]) - D[lab2[i]], static_cast<double>(lb3[i]) - dm);
        idx[m] = static_cast<std::int32_t>(i);
        m += !(u < l);
    }
    return m;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

inline index_t bound_candidates(const float* ub, const float* lb2, const float* lb3, const std::int32_t* lab,
                                const std::int32_t* lab2, index_t n, const double* D, int k, double dm, double gap,
                                std::int32_t* idx) {
#if FASTANCHOR_HAVE_AVX512_PATH
    if (k <= 16 && cpu_has_avx512()) return bound_candidates_avx512(ub, lb2, lb3, lab, lab2, n, D, k, dm, gap, idx);
#endif
    (void)k;
    return bound_candidates_generic(ub, lb2, lb3, lab, lab2, n, D, dm, gap, idx);
}

// Floats rounded outward: never below (up) or above (down) the double they stand for.
inline float round_up(double x) { return static_cast<float>(x + (std::abs(x) + 1.0) * 2.5e-7); }
inline float round_down(double x) { return static_cast<float>(x - (std::abs(x) + 1.0) * 2.5e-7); }

// Bounds of a block of boxes: the largest ub, the smallest lb2 and lb3, and the sets of labels
// and second labels present (bit min(label, 31)).
struct Summary {
    float ub, lb2, lb3;
    std::uint32_t lab, lab2;
};

// Fresh bounds of n boxes from their ranking (IoUs within eps of the exact ones), relative to
// the cumulative drifts D (per anchor) and dm (the largest): ub on the distance 1 - IoU to the
// own anchor, lb2 to the second anchor, lb3 to every other; and the summary of every block of
// `block` boxes (the last one may be shorter).
FASTANCHOR_CLONES inline void store_bounds(Ranked r, index_t n, const double* __restrict D, double dm, double eps,
                                           float* __restrict ub, float* __restrict lb2, float* __restrict lb3,
                                           std::int32_t* __restrict lab2, index_t block, Summary* __restrict sum) {
    const std::int32_t* __restrict lab = r.label;
    const std::int32_t* __restrict l2 = r.second_label;
    const double* __restrict best = r.best;
    const double* __restrict second = r.second;
    const double* __restrict third = r.third;
#pragma omp simd
    for (index_t t = 0; t < n; ++t) {
        ub[t] = round_up(((1.0 - best[t]) + eps) - D[lab[t]]);
        lb2[t] = round_down(((1.0 - second[t]) - eps) + D[l2[t]]);
        lb3[t] = round_down(((1.0 - third[t]) - eps) + dm);
        lab2[t] = l2[t];
    }
    for (index_t s = 0; s < n; s += block) {
        const index_t e = std::min(n, s + block);
        float u = -std::numeric_limits<float>::max(), m2 = std::numeric_limits<float>::max(), m3 = m2;
        std::uint32_t s1 = 0, s2 = 0;
        for (index_t t = s; t < e; ++t) {
            u = std::max(u, ub[t]);
            m2 = std::min(m2, lb2[t]);
            m3 = std::min(m3, lb3[t]);
            s1 |= 1u << std::min(lab[t], 31);
            s2 |= 1u << std::min(l2[t], 31);
        }
        sum[s / block] = {u, m2, m3, s1, s2};
    }
}

}  // namespace detail

// One Lloyd run on a Problem.
//
// Assignment skips boxes that provably keep their label (Hamerly's bounds): 1 - IoU of
// corner-aligned boxes is the Jaccard distance of the rectangles [0, w] x [0, h], a metric, so
// when anchor j moves by d_j = 1 - IoU(old_j, new_j), a box's distance to its anchor grows by at
// most d_j and its distance to any other anchor shrinks by at most max_j d_j. Per box we keep an
// upper bound on the first, lower bounds on the second-closest anchor and on all others, stored
// relative to the cumulative drifts D_j and Dmax so that a pass over boxes that keep their
// label only reads them. Bounds are floats rounded outward with a margin, so a passing test
// proves the label's IoU exceeds every other by far more than rounding: the skipped box's exact
// label is unchanged.
//
// The bounds are tested block by block (kBlock boxes, neighbours in shape by the storage order):
// first a summary of the block's bounds, then, where that fails, the boxes' own; a block with
// any box in doubt is ranked again whole against every anchor. Ranking runs in float32 on
// scaled copies (detail::rank_float), with every box whose two best IoUs are too close for float
// redone exactly in double, so the labels are those of the exact rule.
//
// While the anchors still move far from one assignment to the next (early mean iterations
// move every anchor by 0.05-0.2 in 1 - IoU), bounds clear few boxes and cost more than they
// save: such a pass only labels every box (detail::label_top2, float, with the same exact
// fallback) and leaves the bounds invalid; the first pass after the moves settle renews them.
//
// The mean update with unit weights works from exact sums (Problem::exact_sums): per cluster, the
// sum of the boxes' values as 128-bit integers, moved with the boxes that changed cluster, so an
// iteration costs O(moves), not O(N), and the sums are the same whatever the order of the moves
// or the number of threads. Otherwise per-chunk statistics are recomputed for the chunks where a
// label changed (each chunk's sums run in box order exactly as a full pass would), then
// combined in chunk order.
//
// The median update with unit weights is incremental: for each cluster and coordinate it keeps a
// pointer to its median member in that coordinate's sorted order and the member's rank, moves
// the ranks by the boxes that changed cluster and walks the pointer to the new median rank.
class Lloyd {
public:
    // Per cluster and chunk: sum of weight * w, weight * h, weight, count.
    static constexpr int kStats = 4;

    Lloyd(const Problem& p, int k, Update update, int n_threads)
        : p_(p), k_(k), update_(update), nt_(n_threads), labels_(p.size(), -1), labels2_(p.size(), 0), ub_(p.size()),
          lb2_(p.size()), lb3_(p.size()),
          part_(static_cast<std::size_t>(n_chunks(p.size())) * k * kStats), changed_(n_chunks(p.size())),
          stats_(static_cast<std::size_t>(k) * kStats), drift_(k, 0.0),
          scratch_(static_cast<std::size_t>(chunk_threads(p.size(), n_threads)) * kScratch * kChunk),
          summary_((p.size() + kBlock - 1) / kBlock) {
#if FASTANCHOR_HAVE_INT128
        exact_mean_ = update == Update::Mean && p.exact_sums;
        if (exact_mean_) {
            const std::size_t parts = static_cast<std::size_t>(n_chunks(p.size())) * k;
            part_w_.assign(parts, 0);
            part_h_.assign(parts, 0);
            part_n_.assign(parts, 0);
        }
#endif
        if (incremental_median()) {
            move_off_.resize(p.size());
            move_from_.resize(p.size());
            move_count_.assign(n_chunks(p.size()), 0);
        }
    }

    // Assigns every box; returns how many labels changed.
    index_t assign(const WhSet& anchors) {
        const index_t n = p_.size();
        const int k = k_;
        use_float_ = set_float_anchors(anchors);
        // How far each anchor moved since the last assignment, and the farthest.
        std::vector<double> step(k, 0.0);
        double step_max = 0.0;
        if (!first_) {
            for (int j = 0; j < k; ++j) {
                step[j] = (1.0 - iou_wh(prev_anchors_.w[j], prev_anchors_.h[j], prev_anchors_.a[j], anchors.w[j],
                                        anchors.h[j], anchors.a[j])) +
                          kDriftSlack;
                step_max = std::max(step_max, step[j]);
            }
        }
        Pass pass = Pass::Bounded;
        if (first_) {
            pass = Pass::Full;
        } else if (use_float_ && step_max > kRelabelDrift) {
            pass = Pass::Relabel;
        } else if (!bounds_valid_ || drift_max_ + step_max > kMaxDrift || ++since_reset_ > kResetEvery) {
            pass = Pass::Full;
        }
        if (pass == Pass::Bounded) {
            for (int j = 0; j < k; ++j) drift_[j] += step[j];
            drift_max_ += step_max;
        } else if (pass == Pass::Full) {
            std::fill(drift_.begin(), drift_.end(), 0.0);
            drift_max_ = 0.0;
            since_reset_ = 0;
        }
        bounds_valid_ = pass != Pass::Relabel;
        last_pass_ = pass;
        first_ = false;
        prev_anchors_ = anchors;
        drift_tail_ = 0.0;
        for (int j = 31; j < k; ++j) drift_tail_ = std::max(drift_tail_, drift_[j]);
        for_each_chunk(n, nt_, [&](index_t c, index_t b, index_t e) {
            if (!move_count_.empty()) move_count_[c] = 0;
#if FASTANCHOR_HAVE_INT128
            if (exact_mean_) {
                const std::size_t at = static_cast<std::size_t>(c) * k;
                std::fill_n(part_w_.begin() + at, k, 0);
                std::fill_n(part_h_.begin() + at, k, 0);
                std::fill_n(part_n_.begin() + at, k, 0);
            }
#endif
            switch (pass) {
                case Pass::Full: changed_[c] = recompute(anchors, c, b, b, e); break;
                case Pass::Relabel: changed_[c] = relabel(anchors, c, b, e); break;
                case Pass::Bounded: changed_[c] = assign_chunk_bounded(anchors, c, b, e); break;
            }
            if (changed_[c] > 0 && !track_moves()) chunk_stats(c, b, e);
        });
        index_t changed = 0;
        for (std::size_t c = 0; c < changed_.size(); ++c) changed += changed_[c];
        if (!track_moves()) {
            std::fill(stats_.begin(), stats_.end(), 0.0);
            for (std::size_t c = 0; c < changed_.size(); ++c) {
                const double* st = part_.data() + c * k * kStats;
                for (std::size_t j = 0; j < stats_.size(); ++j) stats_[j] += st[j];
            }
        }
#if FASTANCHOR_HAVE_INT128
        if (exact_mean_) update_exact_sums();
#endif
        return changed;
    }

    // How the last assign() went through the boxes (0: Full, 1: Bounded, 2: Relabel; see Pass).
    int last_pass() const { return static_cast<int>(last_pass_); }
    // The label of every box after the last assign(), in storage order (Problem::input maps it).
    const std::vector<std::int32_t>& labels() const { return labels_; }

    // New anchors from the labels of the last assign(); `anchors` are those it used.
    WhSet update(const WhSet& anchors) {
        const int k = k_;
        WhSet out(k);
        std::vector<double> count(k), total(k), mw(k), mh(k);
        for (int c = 0; c < k; ++c) {
            total[c] = stats_[c * kStats + 2];
            count[c] = stats_[c * kStats + 3];
        }
        if (exact_mean_) {
#if FASTANCHOR_HAVE_INT128
            for (int c = 0; c < k; ++c) {
                count[c] = static_cast<double>(sum_n_[c]);
                if (sum_n_[c] > 0) {
                    mw[c] = p_.fixed_mean(sum_w_[c], sum_n_[c]);
                    mh[c] = p_.fixed_mean(sum_h_[c], sum_n_[c]);
                }
            }
#endif
        } else if (update_ == Update::Mean) {
            for (int c = 0; c < k; ++c) {
                if (count[c] > 0) {
                    const double sw = stats_[c * kStats + 0], sh = stats_[c * kStats + 1];
                    mw[c] = sw / total[c];
                    mh[c] = sh / total[c];
                    // Sums this small may hold products weight * value that underflowed
                    // (weights spanning 290 orders of magnitude and more).
                    if (!(sw >= kTinySum && sh >= kTinySum)) rescaled_mean(c, mw[c], mh[c]);
                }
            }
        } else if (incremental_median()) {
            incremental_median_update(count, mw, mh);  // also sets count
        } else {
            median_update(count, mw, mh);
        }
        std::vector<int> empty;
        for (int c = 0; c < k; ++c) {
            if (count[c] > 0) out.set(c, mw[c], mh[c]);
            else empty.push_back(c);
        }
        if (!empty.empty()) fill_empty(anchors, empty, out);
        return out;
    }

private:
    // Bounds are rebuilt from scratch once the cumulative drift makes them useless, and every
    // kResetEvery iterations so that rounding in the drift sums can never add up.
    static constexpr double kMaxDrift = 8.0;
    static constexpr int kResetEvery = 1024;
    // Added to every anchor's drift: covers the rounding of 1 - IoU.
    static constexpr double kDriftSlack = 1e-14;
    // When an anchor moved farther than this (in 1 - IoU) since the last assignment, the bounds
    // would send most boxes to be ranked again anyway (every box whose margin is below twice
    // the move), so the assignment is a plain labelling pass that keeps no bounds. Measured on
    // 1M COCO-like boxes (whole default fits, median and mean, thresholds 0 to 0.1): 0.01-0.02
    // is fastest; with 0 (never bounds) the median fit is 1.3x slower, with 0.1 1.1x.
    static constexpr double kRelabelDrift = 0.02;
    // u < l - kGap: the margin that makes a skipped box's best IoU strictly the largest.
    static constexpr double kGap = 1e-9;
    static constexpr int kScratch = 5;  // doubles per box of per-thread scratch
    static constexpr index_t kBlock = 64;  // boxes per block of the bound summaries

    bool incremental_median() const { return update_ == Update::Median && !p_.weighted(); }
    // Whether the update works from the boxes that changed cluster, as they change (the median's
    // move lists, the exact sums' per-chunk changes), instead of from chunk statistics.
    bool track_moves() const { return incremental_median() || exact_mean_; }

    // How a pass assigns the boxes: Full ranks every box and stores fresh bounds; Bounded ranks
    // only the blocks its bounds cannot clear; Relabel ranks every box for its label alone and
    // leaves the bounds invalid (the next Full pass renews them).
    enum class Pass { Full = 0, Bounded = 1, Relabel = 2 };

    double* scratch() { return scratch_.data() + static_cast<std::size_t>(thread_index()) * kScratch * kChunk; }

    // Scratch views of the calling thread.
    struct Scratch {
        double *best, *second, *third;
        std::int32_t *label, *label2, *amb, *idx;
        detail::Ranked ranked() { return {label, best, second, label2, third}; }
    };
    Scratch views() {
        double* s = scratch();
        std::int32_t* ints = reinterpret_cast<std::int32_t*>(s + 3 * kChunk);
        return {s, s + kChunk, s + 2 * kChunk, ints, ints + kChunk, ints + 2 * kChunk, ints + 3 * kChunk};
    }

    // Float copies of the anchors at the boxes' scale; false when the float ranking cannot serve
    // (no float copy of the boxes, k above the fixed-K kernels, an anchor out of range).
    bool set_float_anchors(const WhSet& anchors) {
        if (!p_.has_float() || k_ > detail::kMaxFixedK) return false;
        for (int j = 0; j < k_; ++j) {
            const double w = anchors.w[j] * p_.fscale, h = anchors.h[j] * p_.fscale;
            if (!(w >= Problem::kFloatLo && w <= Problem::kFloatHi && h >= Problem::kFloatLo && h <= Problem::kFloatHi))
                return false;
            faw_[j] = static_cast<float>(w);
            fah_[j] = static_cast<float>(h);
            faa_[j] = faw_[j] * fah_[j];
        }
        return true;
    }

    // Ranks boxes [r0, r1) of chunk c (which starts at b) against every anchor, stores their
    // labels and fresh bounds, and records the moves; returns how many labels changed.
    index_t recompute(const WhSet& anchors, index_t c, index_t b, index_t r0, index_t r1) {
        Scratch v = views();
        const index_t n = r1 - r0;
        const WhSet& B = p_.boxes;
        const double *aw = anchors.w.data(), *ah = anchors.h.data(), *aa = anchors.a.data();
        double eps = 0.0;  // how far the ranked IoUs may be from the exact ones
        if (use_float_) {
            detail::rank_float_k(p_.fw.data() + r0, p_.fh.data() + r0, p_.fa.data() + r0, n, faw_.data(),
                                 fah_.data(), faa_.data(), k_, v.ranked(), v.amb);
            eps = detail::kRankEps;
            for (index_t t = 0; t < n; ++t) {  // too close to call in float: exact
                if (!v.amb[t]) continue;
                const index_t i = r0 + t;
                detail::assign_full_generic(&B.w[i], &B.h[i], &B.a[i], 1, aw, ah, aa, k_,
                                            {v.label + t, v.best + t, v.second + t, v.label2 + t, v.third + t});
            }
        } else {
            detail::assign_full_k(B.w.data() + r0, B.h.data() + r0, B.a.data() + r0, n, aw, ah, aa, k_, v.ranked());
        }
        detail::store_bounds(v.ranked(), n, drift_.data(), drift_max_, eps, ub_.data() + r0, lb2_.data() + r0,
                             lb3_.data() + r0, labels2_.data() + r0, kBlock, summary_.data() + r0 / kBlock);
        return commit(c, b, r0, n, v.label);
    }

    // Chunk c = [b, e) labelled by the float pass alone (no bounds); boxes too close to call in
    // float are labelled exactly. Returns how many labels changed.
    index_t relabel(const WhSet& anchors, index_t c, index_t b, index_t e) {
        Scratch v = views();
        const index_t n = e - b;
        const WhSet& B = p_.boxes;
        std::uint8_t* flag = reinterpret_cast<std::uint8_t*>(v.amb);
        detail::label_float_k(p_.fw.data() + b, p_.fh.data() + b, n, faw_.data(), fah_.data(), faa_.data(), k_,
                              labels_.data() + b, v.label, flag);
        // The flagged boxes (a few percent, in runs: the storage order keeps similar shapes
        // together), listed without a branch per box; groups of 64 with no flag are skipped.
        std::int32_t* idx = v.idx;
        index_t m = 0;
        for (index_t t0 = 0; t0 < n; t0 += 64) {
            const index_t t1 = std::min(n, t0 + 64);
            std::uint8_t any = 0;
            for (index_t t = t0; t < t1; ++t) any |= flag[t];
            if (!any) continue;
            for (index_t t = t0; t < t1; ++t) {
                idx[m] = static_cast<std::int32_t>(t);
                m += flag[t] != 0;
            }
        }
        index_t changed = 0;
        for (index_t u = 0; u < m; ++u) {
            const index_t t = idx[u], i = b + t;
            const std::int32_t l = flag[t] == 1 ? detail::assign_exact(B.w[i], B.h[i], B.a[i], anchors.w.data(),
                                                                      anchors.h.data(), anchors.a.data(), k_)
                                                : v.label[t];
            changed += move(c, b, i, l);
        }
        return changed;
    }

    // New labels of boxes [r0, r0 + n) of chunk c (which starts at b); returns how many changed.
    index_t commit(index_t c, index_t b, index_t r0, index_t n, const std::int32_t* label) {
        index_t changed = 0;
        for (index_t t = 0; t < n; ++t) changed += move(c, b, r0 + t, label[t]);
        return changed;
    }

    // Gives box i of chunk c (which starts at b) label l; when that is a change, records the move
    // for the incremental median, or with exact sums moves the box's values between the chunk's
    // sums. Returns 1 for a change.
    int move(index_t c, index_t b, index_t i, std::int32_t l) {
        const std::int32_t from = labels_[i];
        if (l == from) return 0;
        labels_[i] = l;
        if (!move_count_.empty()) {
            const index_t slot = c * kChunk + move_count_[c]++;
            move_off_[slot] = static_cast<std::uint16_t>(i - b);
            move_from_[slot] = from;
        }
#if FASTANCHOR_HAVE_INT128
        if (exact_mean_ && from >= 0) {
            const std::size_t at = static_cast<std::size_t>(c) * k_;
            const int128_t w = p_.fixed(0, i), h = p_.fixed(1, i);
            part_w_[at + from] -= w;
            part_h_[at + from] -= h;
            --part_n_[at + from];
            part_w_[at + l] += w;
            part_h_[at + l] += h;
            ++part_n_[at + l];
        }
#endif
        return 1;
    }

#if FASTANCHOR_HAVE_INT128
    // The exact per-cluster sums of the mean update: from scratch after the first assignment,
    // then moved with the boxes that changed cluster (exact integers: the same sums as from
    // scratch, whatever the order of the moves and the number of threads).
    void update_exact_sums() {
        const index_t n = p_.size();
        const int k = k_;
        const std::size_t parts = part_n_.size();
        if (sum_n_.empty()) {  // the first assignment: every box's label is new
            for_each_chunk(n, nt_, [&](index_t c, index_t b, index_t e) {
                int128_t* sw = part_w_.data() + c * k;
                int128_t* sh = part_h_.data() + c * k;
                index_t* sn = part_n_.data() + c * k;
                for (index_t i = b; i < e; ++i) {
                    const std::int32_t l = labels_[i];
                    sw[l] += p_.fixed(0, i);
                    sh[l] += p_.fixed(1, i);
                    ++sn[l];
                }
            });
            sum_w_.assign(k, 0);
            sum_h_.assign(k, 0);
            sum_n_.assign(k, 0);
        }
        for (std::size_t t = 0; t < parts; ++t) {
            sum_w_[t % k] += part_w_[t];
            sum_h_[t % k] += part_h_[t];
            sum_n_[t % k] += part_n_[t];
        }
    }
#endif

    // The largest cumulative drift among the labels of a summary's set.
    double max_drift(std::uint32_t set) const {
        double m = 0.0;
        while (set) {
            const int j = __builtin_ctz(set);
            m = std::max(m, j == 31 ? drift_tail_ : drift_[j]);
            set &= set - 1;
        }
        return m;
    }

    // Whether block blk's summary (detail::Summary) proves, for every box in it at once, what
    // the per-box test proves:
    //     max ub + max D[labels] + gap < min(min lb2 - max D[second labels], min lb3 - Dmax).
    bool block_keeps(index_t blk) const {
        const detail::Summary& S = summary_[blk];
        const double u = static_cast<double>(S.ub) + max_drift(S.lab) + kGap;
        const double l =
            std::min(static_cast<double>(S.lb2) - max_drift(S.lab2), static_cast<double>(S.lb3) - drift_max_);
        return u < l;
    }

    // Chunk c = [b, e) with bounds: blocks whose summary passes are skipped whole; the others
    // get the per-box test, and a block with any box in doubt is recomputed whole (contiguous
    // SIMD work instead of gathers; its neighbours, boxes of similar shape by the storage order,
    // get fresh bounds on the way). Adjacent blocks to recompute go in one call.
    index_t assign_chunk_bounded(const WhSet& anchors, index_t c, index_t b, index_t e) {
        Scratch v = views();
        index_t changed = 0, run0 = b, run1 = b;  // pending run of blocks to recompute
        for (index_t s = b; s < e; s += kBlock) {
            const index_t se = std::min(e, s + kBlock);
            bool redo = false;
            if (!block_keeps(s / kBlock)) {
                redo = detail::bound_candidates(ub_.data() + s, lb2_.data() + s, lb3_.data() + s, labels_.data() + s,
                                                labels2_.data() + s, se - s, drift_.data(), k_, drift_max_, kGap,
                                                v.idx) > 0;
            }
            if (redo) {
                if (run1 != s) run0 = s;
                run1 = se;
                continue;
            }
            if (run1 > run0) changed += recompute(anchors, c, b, run0, run1);
            run0 = run1 = se;
        }
        if (run1 > run0) changed += recompute(anchors, c, b, run0, run1);
        return changed;
    }

    // Below this, a sum of weight * value may have lost precision to subnormal products (each
    // off by at most 2^-1075; above it, that is below 2^-74 relative for any n < 2^32).
    static constexpr double kTinySum = 0x1p-969;

    // Cluster c's weighted mean again, every weight divided by the cluster's largest, so that
    // the largest term is the value itself: for sums below kTinySum.
    void rescaled_mean(int c, double& mw, double& mh) const {
        const index_t n = p_.size();
        double top = 0.0;
        for (index_t i = 0; i < n; ++i)
            if (labels_[i] == c) top = std::max(top, p_.wt(i));
        double sw = 0.0, sh = 0.0, st = 0.0;
        for (index_t i = 0; i < n; ++i) {
            if (labels_[i] != c) continue;
            const double q = p_.wt(i) / top;
            sw += q * p_.boxes.w[i];
            sh += q * p_.boxes.h[i];
            st += q;
        }
        mw = sw / st;
        mh = sh / st;
    }

    // Chunk c's statistics, summed in box order.
    void chunk_stats(index_t c, index_t b, index_t e) {
        // Box i goes to copy i % kCopies of the sums, the copies then added in a fixed order:
        // consecutive boxes, which mostly share a cluster in the storage order, do not wait on
        // each other's additions.
        constexpr int kCopies = 4;
        const std::size_t per = static_cast<std::size_t>(k_) * kStats;
        double local[kCopies * detail::kMaxFixedK * kStats];
        std::vector<double> heap;
        double* acc = local;
        if (k_ > detail::kMaxFixedK) {
            heap.resize(kCopies * per);
            acc = heap.data();
        }
        std::fill(acc, acc + kCopies * per, 0.0);
        const std::int32_t* lab = labels_.data();
        const double* w = p_.boxes.w.data();
        const double* h = p_.boxes.h.data();
        const double* wt = p_.weighted() ? p_.weight.data() : nullptr;
        for (index_t i = b; i < e; ++i) {
            double* sl = acc + static_cast<std::size_t>(i % kCopies) * per + static_cast<std::size_t>(lab[i]) * kStats;
            const double wi = wt ? wt[i] : 1.0;
            sl[0] += wi * w[i];
            sl[1] += wi * h[i];
            sl[2] += wi;
            sl[3] += 1.0;
        }
        double* st = part_.data() + static_cast<std::size_t>(c) * per;
        for (std::size_t j = 0; j < per; ++j) st[j] = (acc[j] + acc[per + j]) + (acc[2 * per + j] + acc[3 * per + j]);
    }

    // Weighted medians: one full pass per coordinate in that coordinate's order, the two on two
    // threads. Each cluster's total weight is summed in the same order as its cumulative sums.
    void median_update(const std::vector<double>& count, std::vector<double>& mw, std::vector<double>& mh) {
        const index_t n = p_.size();
        const int k = k_;
        const std::int32_t* lab = labels_.data();
        const Problem& p = p_;
        std::vector<double> total[2] = {std::vector<double>(k, 0.0), std::vector<double>(k, 0.0)};
        detail::MedianScratch scratch[2];
        scratch[0].reset(k);
        scratch[1].reset(k);
        double* med[2] = {mw.data(), mh.data()};
        auto pass = [&](int X) {
            const Problem::pos_t* order = p.order[X].data();
            for (index_t s = 0; s < n; ++s) total[X][lab[order[s]]] += p.wt(order[s]);
            auto get = [&](index_t s, std::int32_t& c, double& x, double& wt) {
                const index_t i = order[s];
                c = lab[i];
                x = p.value(X, i);
                wt = p.wt(i);
            };
            detail::median_pass(n, k, get, total[X].data(), count.data(), med[X], scratch[X]);
        };
#ifdef _OPENMP
#pragma omp parallel sections num_threads(2) if (nt_ > 1)
        {
#pragma omp section
            pass(0);
#pragma omp section
            pass(1);
        }
#else
        pass(0);
        pass(1);
#endif
    }

    // ---- incremental median (unit weights) ----
    // Median rank of a cluster of cnt members: the first rank r (1-based) with r >= cnt / 2.
    static index_t median_rank(index_t cnt) { return (cnt + 1) / 2; }

    // Label and value of the box at sorted position s of coordinate X (0: width, 1: height).
    std::int32_t label_at(int X, index_t s) const { return labels_[p_.order[X][s]]; }
    double value_at(int X, index_t s) const { return p_.value(X, p_.order[X][s]); }

    // Pointers of both coordinates, one thread each.
    void rebuild_pointers() {
        for (auto& v : seen_) v.assign(k_, 0);  // allocated here: nothing may throw in the parallel region
#ifdef _OPENMP
#pragma omp parallel sections num_threads(2) if (nt_ > 1)
        {
#pragma omp section
            rebuild_pointers(0);
#pragma omp section
            rebuild_pointers(1);
        }
#else
        rebuild_pointers(0);
        rebuild_pointers(1);
#endif
    }

    // Pointers of every cluster from one pass over the sorted order of coordinate X.
    void rebuild_pointers(int X) {
        const index_t n = p_.size();
        std::vector<index_t>& seen = seen_[X];
        int remaining = 0;
        for (int c = 0; c < k_; ++c) {
            pos_[X][c] = -1;
            rank_[X][c] = 0;
            if (cnt_[c] > 0) ++remaining;
        }
        for (index_t s = 0; s < n && remaining > 0; ++s) {
            const std::int32_t c = label_at(X, s);
            if (++seen[c] == median_rank(cnt_[c])) {
                pos_[X][c] = s;
                rank_[X][c] = seen[c];
                --remaining;
            }
        }
    }

    // Walks cluster c's pointer in coordinate X to its median rank; returns the median value.
    double walk(int X, int c) {
        index_t& pos = pos_[X][c];
        index_t& rank = rank_[X][c];
        const index_t target = median_rank(cnt_[c]);
        if (pos >= 0 && label_at(X, pos) != c) {
            do --pos;
            while (pos >= 0 && label_at(X, pos) != c);
        }
        while (rank < target) {
            do ++pos;
            while (label_at(X, pos) != c);
            ++rank;
        }
        while (rank > target) {
            do --pos;
            while (label_at(X, pos) != c);
            --rank;
        }
        const double x = value_at(X, pos);
        if (cnt_[c] % 2 == 0) {  // cumulative count == half exactly: interpolate with the next member
            index_t s = pos + 1;
            while (label_at(X, s) != c) ++s;
            return (x + value_at(X, s)) / 2.0;
        }
        return x;
    }

    // Sets count (members per cluster, kept up to date from the boxes that moved) and the medians.
    void incremental_median_update(std::vector<double>& count, std::vector<double>& mw, std::vector<double>& mh) {
        const int k = k_;
        const index_t n = p_.size();
        if (pos_[0].empty()) {
            for (auto& v : pos_) v.assign(k, -1);
            for (auto& v : rank_) v.assign(k, 0);
            cnt_.assign(k, 0);
            for (index_t i = 0; i < n; ++i) ++cnt_[labels_[i]];
            rebuild_pointers();
        } else {
            // Counts and ranks move with the boxes that changed cluster in the last assignment.
            index_t moved = 0;
            for (std::size_t c = 0; c < move_count_.size(); ++c) {
                const index_t b = static_cast<index_t>(c) * kChunk;
                for (index_t t = 0; t < move_count_[c]; ++t) {
                    const index_t i = b + move_off_[b + t];
                    const std::int32_t to = labels_[i], from = move_from_[b + t];
                    --cnt_[from];
                    ++cnt_[to];
                    const index_t q[2] = {p_.pos[0][i], p_.pos[1][i]};
                    for (int X = 0; X < 2; ++X) {
                        if (q[X] <= pos_[X][from]) --rank_[X][from];
                        if (q[X] <= pos_[X][to]) ++rank_[X][to];
                    }
                }
                moved += move_count_[c];
            }
            // Many moves: one pass per coordinate is cheaper than long walks.
            if (moved > n / 16) rebuild_pointers();
        }
        for (int c = 0; c < k; ++c) {
            count[c] = static_cast<double>(cnt_[c]);
            if (cnt_[c] == 0) {
                // Emptied: its pointers restart from the beginning when it has members again.
                for (int X = 0; X < 2; ++X) {
                    pos_[X][c] = -1;
                    rank_[X][c] = 0;
                }
                continue;
            }
            mw[c] = walk(0, c);
            mh[c] = walk(1, c);
        }
    }

    // Empty clusters, in index order, take the boxes with the lowest IoU to their nearest
    // anchor, in increasing order of that IoU (ties by input index), one distinct box each.
    void fill_empty(const WhSet& anchors, const std::vector<int>& empty, WhSet& out) {
        const index_t n = p_.size();
        best_.resize(n);
        best_iou(p_.boxes, anchors, best_.data(), nt_);
        const std::size_t e = std::min<std::size_t>(empty.size(), static_cast<std::size_t>(n));
        // The e smallest (iou, input index) keys, kept sorted.
        std::vector<std::pair<double, index_t>> pick;  // (iou, input index)
        std::vector<index_t> where;
        for (index_t i = 0; i < n; ++i) {
            const std::pair<double, index_t> key{best_[i], p_.input[i]};
            if (pick.size() == e && !(key < pick.back())) continue;
            const auto it = std::upper_bound(pick.begin(), pick.end(), key);
            const auto at = it - pick.begin();
            pick.insert(it, key);
            where.insert(where.begin() + at, i);
            if (pick.size() > e) {
                pick.pop_back();
                where.pop_back();
            }
        }
        for (std::size_t t = 0; t < e; ++t) out.set(empty[t], p_.boxes.w[where[t]], p_.boxes.h[where[t]]);
    }

    const Problem& p_;
    int k_;
    Update update_;
    int nt_;
    std::vector<std::int32_t> labels_;
    std::vector<std::int32_t> labels2_;  // the second-closest anchor at the last full recompute
    std::vector<float> ub_, lb2_, lb3_;   // bounds on the distance to the own, second and other anchors
    std::vector<double> part_;
    std::vector<index_t> changed_;
    std::vector<double> stats_;
    std::vector<double> drift_;
    double drift_max_ = 0.0;
    bool first_ = true;
    bool bounds_valid_ = false;
    Pass last_pass_ = Pass::Full;
    int since_reset_ = 0;
    bool exact_mean_ = false;  // the mean update from exact sums (Problem::exact_sums)
#if FASTANCHOR_HAVE_INT128
    std::vector<int128_t> sum_w_, sum_h_;  // per cluster, in units of 2^sum_exp
    std::vector<index_t> sum_n_;
    std::vector<int128_t> part_w_, part_h_;  // per chunk and cluster: the sums' changes
    std::vector<index_t> part_n_;
#endif
    WhSet prev_anchors_;
    bool use_float_ = false;
    double drift_tail_ = 0.0;        // the largest drift of anchors 31 and up
    std::array<float, detail::kMaxFixedK> faw_{}, fah_{}, faa_{};
    std::vector<double> scratch_;
    std::vector<detail::Summary> summary_;  // per block of kBlock boxes
    std::vector<double> best_;
    // incremental median: the boxes that changed cluster in the last assignment, per chunk
    std::vector<std::uint16_t> move_off_;
    std::vector<std::int32_t> move_from_;
    std::vector<index_t> move_count_;
    std::vector<index_t> cnt_;
    std::vector<index_t> pos_[2], rank_[2], seen_[2];
};

namespace detail {

// Sum of weight * value over chunk c's boxes, for each chunk (deterministic partials).
struct ChunkedCumsum {
    std::vector<double> chunk_total;

    // Index drawn with probability proportional to v(i) (all v >= 0) given r in [0, total).
    template <class V>
    index_t search(index_t n, double r, V v) const {
        double acc = 0.0;
        for (std::size_t c = 0; c < chunk_total.size(); ++c) {
            if (chunk_total[c] <= 0.0) continue;
            const index_t b = static_cast<index_t>(c) * kChunk, e = std::min(n, b + kChunk);
            if (acc + chunk_total[c] > r || c + 1 == chunk_total.size()) {
                index_t last_positive = -1;
                for (index_t i = b; i < e; ++i) {
                    const double x = v(i);
                    if (x > 0.0) {
                        last_positive = i;
                        acc += x;
                        if (acc > r) return i;
                    }
                }
                if (last_positive >= 0) return last_positive;  // rounding: r fell at the chunk's end
            } else {
                acc += chunk_total[c];
            }
        }
        for (index_t i = n - 1; i >= 0; --i)
            if (v(i) > 0.0) return i;
        return -1;
    }
};

// Sums in eight interleaved lanes added in a fixed order: vectorizable, and the same for any
// number of threads (each chunk is summed alone).
inline double lane_total(const double* acc) {
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// sum_i wt_i * min(d2_i, (1 - IoU(box_i, c))^2) over [0, n) (wt null: unit weights); with
// Store, d2_i also takes that minimum. The IoUs are computed in T: double from the boxes
// themselves, or float from the scaled float copies (within 1e-6 of the double ones, iou.hpp;
// k-means++ owes no exact IoU, and the float division is several times cheaper). The sum runs
// in one lane per SIMD slot of T (8 for double, 16 for float), each chunk alone: the same for
// any number of threads.
template <class T, bool Weighted, bool Store>
FASTANCHOR_CLONES double potential_t(const T* __restrict w, const T* __restrict h, const T* __restrict a,
                                     double* __restrict d2, const double* __restrict wt, index_t n, T cw, T ch,
                                     T ca) {
    constexpr int kLanes = sizeof(T) == 4 ? 16 : 8;
    double acc[kLanes] = {};
    auto add = [&](int lane, index_t i, T q) {
        const double d = 1.0 - static_cast<double>(q);
        const double v = std::min(d2[i], d * d);
        if (Store) d2[i] = v;
        acc[lane] += Weighted ? wt[i] * v : v;
    };
    const index_t nb = n / kLanes * kLanes;
    for (index_t i = 0; i < nb; i += kLanes) {
        T q[kLanes];  // the IoUs first, in a loop of T alone: it vectorizes
        for (int l = 0; l < kLanes; ++l) {
            const T inter = std::min(w[i + l], cw) * std::min(h[i + l], ch);
            q[l] = inter / ((a[i + l] + ca) - inter);
        }
        for (int l = 0; l < kLanes; ++l) add(l, i + l, q[l]);
    }
    for (index_t i = nb; i < n; ++i) {
        const T inter = std::min(w[i], cw) * std::min(h[i], ch);
        add(static_cast<int>(i - nb), i, inter / ((a[i] + ca) - inter));
    }
    return kLanes == 16 ? lane_total(acc) + lane_total(acc + 8) : lane_total(acc);
}

// The potential of boxes [b, e) if box c were added to the anchors (Store: and lower d2 to it),
// in float when the problem has float copies.
template <bool Store>
double potential_of(const Problem& p, double* d2, index_t b, index_t e, index_t c) {
    const double* wt = p.weighted() ? p.weight.data() + b : nullptr;
    const index_t n = e - b;
    auto run = [&](auto* w, auto* h, auto* a) {
        using T = std::remove_const_t<std::remove_pointer_t<decltype(w)>>;
        return wt ? potential_t<T, true, Store>(w + b, h + b, a + b, d2 + b, wt, n, w[c], h[c], a[c])
                  : potential_t<T, false, Store>(w + b, h + b, a + b, d2 + b, wt, n, w[c], h[c], a[c]);
    };
    return p.has_float() ? run(p.fw.data(), p.fh.data(), p.fa.data())
                         : run(p.boxes.w.data(), p.boxes.h.data(), p.boxes.a.data());
}

inline bool same_as_any(const WhSet& set, int count, double w, double h) {
    for (int j = 0; j < count; ++j)
        if (set.w[j] == w && set.h[j] == h) return true;
    return false;
}

}  // namespace detail

// k distinct boxes (by value), uniformly at random: a partial Fisher-Yates shuffle that skips
// repeats of an already chosen value.
inline WhSet init_random(const Problem& p, int k, Rng& rng) {
    const index_t n = p.size();
    std::vector<index_t> idx(n);
    std::iota(idx.begin(), idx.end(), index_t{0});
    WhSet out(k);
    int chosen = 0;
    for (index_t i = 0; i < n && chosen < k; ++i) {
        const index_t j = i + static_cast<index_t>(rng.below(static_cast<std::uint64_t>(n - i)));
        std::swap(idx[i], idx[j]);
        const index_t b = idx[i];
        if (detail::same_as_any(out, chosen, p.boxes.w[b], p.boxes.h[b])) continue;
        out.set(chosen++, p.boxes.w[b], p.boxes.h[b]);
    }
    if (chosen < k) throw std::invalid_argument("k is larger than the number of distinct boxes");
    return out;
}

// Greedy k-means++ with D = 1 - best IoU: each step draws 2 + floor(ln k) candidates with
// probability proportional to weight * D^2 and keeps the one that lowers sum(weight * D^2) most.
inline WhSet init_kmeanspp(const Problem& p, int k, Rng& rng, int n_threads, Monitor& mon, int run) {
    const index_t n = p.size();
    const index_t nc = n_chunks(n);
    const int trials = 2 + static_cast<int>(std::log(static_cast<double>(k)));
    WhSet out(k);
    std::vector<double> d2(n);
    detail::ChunkedCumsum cs;
    cs.chunk_total.assign(nc, 0.0);

    // First centre: drawn with probability proportional to the weight.
    index_t first;
    if (p.weighted()) {
        for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
            double s = 0.0;
            for (index_t i = b; i < e; ++i) s += p.weight[i];
            cs.chunk_total[c] = s;
        });
        const double total = std::accumulate(cs.chunk_total.begin(), cs.chunk_total.end(), 0.0);
        first = cs.search(n, rng.uniform() * total, [&](index_t i) { return p.weight[i]; });
    } else {
        first = static_cast<index_t>(rng.below(static_cast<std::uint64_t>(n)));
    }
    out.set(0, p.boxes.w[first], p.boxes.h[first]);
    const double* W = p.boxes.w.data();
    const double* H = p.boxes.h.data();
    std::fill(d2.begin(), d2.end(), 1.0);  // (1 - IoU)^2 <= 1
    // Adds box i as an anchor: lowers d2 and returns the new potential.
    auto lower_all = [&](index_t i) {
        for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
            cs.chunk_total[c] = detail::potential_of<true>(p, d2.data(), b, e, i);
        });
        return std::accumulate(cs.chunk_total.begin(), cs.chunk_total.end(), 0.0);
    };
    double pot = lower_all(first);

    std::vector<index_t> cand(trials);
    std::vector<double> part(static_cast<std::size_t>(nc) * trials);
    auto v = [&](index_t i) { return p.wt(i) * d2[i]; };
    for (int step = 1; step < k; ++step) {
        mon.tick("init", run, step);
        if (!(pot > 0.0)) {
            // Every box sits on a chosen anchor as far as doubles can tell: take the first box
            // whose value is new (k <= number of distinct boxes is checked up front).
            index_t i = 0;
            while (i < n && detail::same_as_any(out, step, W[i], H[i])) ++i;
            if (i == n) throw std::invalid_argument("k is larger than the number of distinct boxes");
            out.set(step, W[i], H[i]);
            pot = lower_all(i);
            continue;
        }
        for (int t = 0; t < trials; ++t) cand[t] = cs.search(n, rng.uniform() * pot, v);
        for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
            for (int t = 0; t < trials; ++t) {
                part[static_cast<std::size_t>(c) * trials + t] = detail::potential_of<false>(p, d2.data(), b, e, cand[t]);
            }
        });
        int best = 0;
        double best_pot = 0.0;
        for (int t = 0; t < trials; ++t) {
            double s = 0.0;
            for (index_t c = 0; c < nc; ++c) s += part[static_cast<std::size_t>(c) * trials + t];
            if (t == 0 || s < best_pot) {
                best = t;
                best_pot = s;
            }
        }
        const index_t ci = cand[best];
        out.set(step, W[ci], H[ci]);
        pot = lower_all(ci);
    }
    return out;
}

// For tests: one Lloyd object driven through the given anchor sets. For each set s, assign()
// with it, then update(): the labels (input order), the updated anchors and the pass that
// assign() took. sets: n_sets x k x 2 values.
struct LloydTrace {
    std::vector<std::int32_t> labels;  // n_sets x n
    std::vector<double> updated;       // n_sets x k x 2
    std::vector<int> pass;             // n_sets
};

inline LloydTrace lloyd_trace(const double* wh, const double* weights, index_t n, const double* sets, int n_sets,
                              int k, Update update, int n_threads) {
    const Problem p = Problem::make(wh, weights, n, update == Update::Median, n_threads);
    Lloyd ll(p, k, update, n_threads);
    LloydTrace t;
    t.labels.resize(static_cast<std::size_t>(n_sets) * n);
    t.updated.resize(static_cast<std::size_t>(n_sets) * k * 2);
    for (int s = 0; s < n_sets; ++s) {
        const WhSet a = WhSet::from_rows(sets + static_cast<std::size_t>(s) * k * 2, k);
        ll.assign(a);
        t.pass.push_back(ll.last_pass());
        for (index_t i = 0; i < n; ++i) t.labels[static_cast<std::size_t>(s) * n + p.input[i]] = ll.labels()[i];
        const WhSet u = ll.update(a);
        for (int j = 0; j < k; ++j) {
            t.updated[(static_cast<std::size_t>(s) * k + j) * 2] = u.w[j];
            t.updated[(static_cast<std::size_t>(s) * k + j) * 2 + 1] = u.h[j];
        }
    }
    return t;
}

struct RunResult {
    WhSet anchors;
    double avg_iou = 0.0;
    int n_iter = 0;
    bool converged = false;
};

// Lloyd iterations from `init`: assign; stop when the labels repeat; else update (at most
// max_iter updates). With tol > 0, also stop once no anchor moved by more than tol relatively,
// after one last assignment.
inline RunResult lloyd(const Problem& p, const WhSet& init, const KMeansOptions& o, Monitor& mon, int run) {
    const int k = static_cast<int>(init.size());
    Lloyd ll(p, k, o.update, o.n_threads);
    RunResult r;
    r.anchors = init;
    for (;;) {
        const index_t changed = ll.assign(r.anchors);
        mon.tick("lloyd", run, r.n_iter);
        if (r.n_iter > 0 && changed == 0) {
            r.converged = true;
            break;
        }
        if (r.n_iter >= o.max_iter) break;
        WhSet next = ll.update(r.anchors);
        ++r.n_iter;
        double shift = 0.0;
        for (int j = 0; j < k; ++j) {
            shift = std::max(shift, std::abs(next.w[j] - r.anchors.w[j]) / r.anchors.w[j]);
            shift = std::max(shift, std::abs(next.h[j] - r.anchors.h[j]) / r.anchors.h[j]);
        }
        r.anchors = std::move(next);
        if (o.tol > 0.0 && shift <= o.tol) {
            ll.assign(r.anchors);
            r.converged = true;
            break;
        }
    }
    r.avg_iou = p.avg_iou(r.anchors, o.n_threads);
    return r;
}

// Order of anchors by area ascending, ties by width, then by index (stable).
inline std::vector<int> area_order(const WhSet& a) {
    std::vector<int> order(a.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int x, int y) {
        if (a.a[x] != a.a[y]) return a.a[x] < a.a[y];
        return a.w[x] < a.w[y];
    });
    return order;
}

// The whole fit. wh: N x 2 contiguous rows (validated by the caller: finite, positive, with at
// least k distinct boxes); weights: N positive values or null; init_anchors: k x 2 rows when
// o.init == Init::Given.
inline KMeansOutput kmeans_iou(const double* wh, const double* weights, index_t n, const KMeansOptions& o,
                               const double* init_anchors, Monitor& mon) {
    if (n <= 0 || o.k <= 0 || o.k > n) throw std::invalid_argument("kmeans_iou: need 0 < k <= n");
    const Problem p = Problem::make(wh, weights, n, o.update == Update::Median, o.n_threads);
    RunResult best;
    int best_run = 0;
    const int runs = o.init == Init::Given ? 1 : std::max(o.n_init, 1);
    for (int run = 0; run < runs; ++run) {
        Rng rng(derive_seed(o.seed, static_cast<std::uint64_t>(run)));
        WhSet init;
        switch (o.init) {
            case Init::Given: init = WhSet::from_rows(init_anchors, o.k); break;
            case Init::Random: init = init_random(p, o.k, rng); break;
            case Init::KMeansPP: init = init_kmeanspp(p, o.k, rng, o.n_threads, mon, run); break;
        }
        RunResult r = lloyd(p, init, o, mon, run);
        if (run == 0 || r.avg_iou > best.avg_iou) {
            best = std::move(r);
            best_run = run;
        }
    }
    KMeansOutput out;
    const std::vector<int> order = area_order(best.anchors);
    out.anchors.resize(o.k);
    for (int j = 0; j < o.k; ++j) out.anchors.set(j, best.anchors.w[order[j]], best.anchors.h[order[j]]);
    // Labels are the assignment to the returned (sorted) anchors: renumbering the last labels
    // would break the lowest-index rule for boxes tied between anchors that the sort reordered.
    out.labels.resize(n);
    for_each_chunk(n, o.n_threads, [&](index_t, index_t b, index_t e) {
        std::int32_t buf[kChunk];
        assign_range(p.boxes, b, e, out.anchors, buf);
        for (index_t s = b; s < e; ++s) out.labels[p.input[s]] = buf[s - b];
    });
    out.avg_iou = best.avg_iou;
    out.n_iter = best.n_iter;
    out.converged = best.converged;
    out.best_run = best_run;
    return out;
}

}  // namespace fastanchor
