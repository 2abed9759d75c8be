// fastanchor: k-means of box shapes with the distance 1 - IoU (YOLOv2), Lloyd iterations with
// weighted median or mean updates, greedy k-means++ or random initialisation.
//
// Memory: the caller's array is read in place (float32 or float64 rows), never copied. Per box
// the fit keeps one label (one byte for k < 255) and, during k-means++, one float; the unit-weight
// median works from per-cluster histograms of the values' float bit patterns instead of sort
// orders. No N x k matrix is ever formed. Every reduction runs over fixed chunks combined in chunk
// order (or is an integer sum), and every random draw comes from the seeded Rng on the calling
// thread, so results are bit-identical for any number of threads.
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
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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
    bool portable = false;  // the portable float kernels even where the AVX2 ones run (for tests)
};

struct KMeansOutput {
    WhSet anchors;                     // k anchors sorted by area, ties by width
    std::vector<std::int32_t> labels;  // per box, indexing the sorted anchors (empty when the caller gave a buffer)
    double avg_iou = 0.0;
    int n_iter = 0;
    bool converged = false;
    int best_run = 0;
};

// The caller's boxes: N contiguous rows (w, h) of float32 or of float64 (exactly one pointer set).
// They are read in place for the whole fit and must not change meanwhile.
struct BoxRows {
    const float* f32 = nullptr;
    const double* f64 = nullptr;
};

namespace detail {

// Float rows (w, h) times `scale` into w and h.
FASTANCHOR_CLONES inline void split_rows(const float* __restrict rows, index_t m, float scale, float* __restrict w,
                                         float* __restrict h) {
#pragma omp simd
    for (index_t t = 0; t < m; ++t) {
        w[t] = rows[2 * t] * scale;
        h[t] = rows[2 * t + 1] * scale;
    }
}

}  // namespace detail

// Boxes of a fit: the caller's rows and weights, read in place, and what is derived from their
// range. Values are exact doubles (a float32 row converts exactly).
struct Problem {
    using pos_t = std::uint32_t;  // sort orders index up to 2^32 - 1 boxes
    index_t n = 0;
    const float* f32 = nullptr;
    const double* f64 = nullptr;
    const double* weight = nullptr;  // the caller's weights (null: unit)
    // The float ranking reads every box as a float times fscale (a power of two) from float rows:
    // f32 itself, or for float64 rows a copy rounded to float (4 bytes a value: half the bytes
    // of a pass, and no conversion in it), made when has_float. has_float is false when the
    // data's range does not fit in [kFloatLo, kFloatHi] with one scale, or when a float64 value
    // is not a normal float (then a rounded value times fscale could differ from the scaled
    // value rounded). The exact values (sums, ties, medians) are read from the rows, except
    // when every float64 value is a float: then the copy holds the same values and make()
    // points f32 at it (f64 null), so a Problem of these rows is that of float32 rows.
    std::vector<float> f64_as_f32;
    // A move keeps f64_as_f32's buffer, a copy would not: a Problem is moved only.
    Problem() = default;
    Problem(Problem&&) = default;
    Problem& operator=(Problem&&) = default;
    Problem(const Problem&) = delete;
    Problem& operator=(const Problem&) = delete;
    const float* frows() const { return f32 ? f32 : f64_as_f32.empty() ? nullptr : f64_as_f32.data(); }
    bool has_float = false;
    double fscale = 1.0;
    static constexpr double kFloatLo = 0x1p-60, kFloatHi = 0x1p60;
    // The range of each coordinate's float bit pattern (Problem::key): the median's histograms.
    std::uint32_t key_lo[2] = {0, 0}, key_hi[2] = {0, 0};
    // Exact sums (unit weights): every value is an integer multiple of 2^sum_exp (the last bit
    // of the smallest one's mantissa) below 2^kSumBits times it, so the sum of any set of up to
    // 2^32 boxes is a 128-bit integer, exact whatever the order of the additions.
    bool exact_sums = false;
    bool fixed64 = false;  // every value's integer fits in 62 bits (most data: few binary orders)
    bool sums64 = false;   // fixed64, and n values' integers sum to less than 2^63 (fixed_max)
    double fixed_max = 0.0;  // 2^min(span, 62): no value's integer is larger
    int sum_exp = 0;
    double fixed_scale = 1.0;  // 2^-sum_exp, for fixed64
    static constexpr int kSumBits = 94;
    // For the sort-based median only (weighted, or k above the histograms' limit): each
    // coordinate's order of the boxes (ties by index).
    std::vector<pos_t> order[2];

    index_t size() const { return n; }
    bool weighted() const { return weight != nullptr; }
    double wt(index_t i) const { return weight ? weight[i] : 1.0; }
    double value(int X, index_t i) const {
        return f32 ? static_cast<double>(f32[2 * i + X]) : f64[2 * i + X];
    }
    // Box i's value along X as a float, bit pattern read as an unsigned integer: monotone in the
    // value (float rounding is monotone, and positive floats order as their bits).
    std::uint32_t key(int X, index_t i) const {
        const float* fr = frows();  // (the copy holds the same roundings)
        const float f = fr ? fr[2 * i + X] : static_cast<float>(f64[2 * i + X]);
        std::uint32_t b;
        std::memcpy(&b, &f, sizeof b);
        return b;
    }
    static double key_value(std::uint32_t key) {
        float f;
        std::memcpy(&f, &key, sizeof f);
        return static_cast<double>(f);
    }
    // Starts fetching box i's exact row when the passes read floats from a copy (float64 rows),
    // for a read of value() or fixed() a little later.
    void prefetch_row(index_t i) const {
        if (f64) __builtin_prefetch(f64 + 2 * i);
    }
    // Box i's value along X as the float ranking reads it (has_float).
    float scaled(int X, index_t i) const { return frows()[2 * i + X] * static_cast<float>(fscale); }

    // Exact doubles of boxes [b, e): widths, heights and areas.
    void load(index_t b, index_t e, double* __restrict w, double* __restrict h, double* __restrict a) const {
        const index_t m = e - b;
        if (f32) {
            const float* s = f32 + 2 * b;
            for (index_t t = 0; t < m; ++t) {
                w[t] = static_cast<double>(s[2 * t]);
                h[t] = static_cast<double>(s[2 * t + 1]);
                a[t] = w[t] * h[t];
            }
        } else {
            const double* s = f64 + 2 * b;
            for (index_t t = 0; t < m; ++t) {
                w[t] = s[2 * t];
                h[t] = s[2 * t + 1];
                a[t] = w[t] * h[t];
            }
        }
    }
    // Scaled floats of boxes [b, e) (has_float), as scaled() reads them.
    void load_float(index_t b, index_t e, float* __restrict w, float* __restrict h) const {
        detail::split_rows(frows() + 2 * b, e - b, static_cast<float>(fscale), w, h);
    }

    // The float rows of boxes s + idx[0, m) (has_float), gathered into out (2m floats).
    void gather_float_rows(index_t s, const std::int32_t* __restrict idx, index_t m, float* __restrict out) const {
        const float* r = frows() + 2 * s;
        for (index_t u = 0; u < m; ++u) {
            out[2 * u] = r[2 * idx[u]];
            out[2 * u + 1] = r[2 * idx[u] + 1];
        }
    }

    // Calls f(c, b, e, w, h, a, q) for every chunk c = [b, e), in parallel, with the chunk's exact
    // doubles loaded (load) and q scratch for kChunk results; per-thread scratch is allocated
    // once. An exception thrown by f is carried out of the parallel region and rethrown.
    template <class F>
    void for_each_loaded_chunk(int n_threads, F&& f) const {
        std::vector<double> buf(static_cast<std::size_t>(chunk_threads(n, n_threads)) * 4 * kChunk);
        std::vector<std::exception_ptr> error(n_chunks(n));
        for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
            try {
                double* w = buf.data() + static_cast<std::size_t>(thread_index()) * 4 * kChunk;
                double *h = w + kChunk, *a = h + kChunk, *q = a + kChunk;
                load(b, e, w, h, a);
                f(c, b, e, w, h, a, q);
            } catch (...) {
                error[c] = std::current_exception();
            }
        });
        for (auto& x : error)
            if (x) std::rethrow_exception(x);
    }

    // Weighted mean over the boxes of the best IoU with `anchors`: avg_best_iou's sums, bit for bit.
    double avg_iou(const WhSet& anchors, int n_threads) const {
        const int k = static_cast<int>(anchors.size());
        std::vector<double> num(n_chunks(n), 0.0), den(n_chunks(n), 0.0);
        for_each_loaded_chunk(n_threads, [&](index_t c, index_t b, index_t e, const double* w, const double* h,
                                             const double* a, double* q) {
            detail::best_iou_range(w, h, a, e - b, anchors.w.data(), anchors.h.data(), anchors.a.data(), k, q);
            detail::weighted_sums(q, weight, b, e, num[c], den[c]);
        });
        return detail::chunked_mean(num, den);
    }

#if FASTANCHOR_HAVE_INT128
    // Box i's value along X as the integer value / 2^sum_exp (exact_sums only). With fixed64 a
    // product and a conversion; otherwise from its bits: a positive float or double is m * 2^e
    // with the integer m of its mantissa field (and the implicit bit when normal), and
    // e >= sum_exp for every value of the data. (Both are guarded so that even values changed
    // behind the fit's back cannot make them undefined.)
    int128_t fixed(int X, index_t i) const {
        if (fixed64) {
            // value * 2^-sum_exp is then an integer below 2^62: exact as a double (a power-of-two
            // scaling) and as an int64. A value changed behind the fit's back reads as 0.
            const double y = value(X, i) * fixed_scale;
            return static_cast<int128_t>(static_cast<std::int64_t>(y >= 0.0 && y < 0x1p62 ? y : 0.0));
        }
        std::uint64_t m;
        int e, digits;
        if (f32) {  // float32 rows: units from the float's own 24-bit mantissa
            std::uint32_t bits;
            std::memcpy(&bits, &f32[2 * i + X], sizeof bits);
            const int field = static_cast<int>((bits >> 23) & 0xff);
            const std::uint32_t frac = bits & ((1u << 23) - 1);
            m = field == 0 ? frac : frac | (1u << 23);
            e = (field == 0 ? 1 : field) - 150;
            digits = 24;
        } else {
            std::uint64_t bits;
            std::memcpy(&bits, &f64[2 * i + X], sizeof bits);
            const int field = static_cast<int>((bits >> 52) & 0x7ff);
            const std::uint64_t frac = bits & ((std::uint64_t{1} << 52) - 1);
            m = field == 0 ? frac : frac | (std::uint64_t{1} << 52);
            e = (field == 0 ? 1 : field) - 1075;
            digits = 53;
        }
        const int shift = std::clamp(e - sum_exp, 0, kSumBits - digits);
        return static_cast<int128_t>(m) << shift;
    }
    // fixed() when sums64, without a branch: clamped to [0, fixed_max] (a value changed behind
    // the fit's back, NaN included, cannot make a sum overflow).
    std::int64_t fixed_small(int X, index_t i) const {
        return static_cast<std::int64_t>(std::min(std::max(0.0, value(X, i) * fixed_scale), fixed_max));
    }
    // The mean of a set whose exact sum is `sum` (value / 2^sum_exp units) over `count` boxes.
    double fixed_mean(int128_t sum, index_t count) const {
        return std::ldexp(static_cast<double>(sum), sum_exp) / static_cast<double>(count);
    }
#endif

    // The n rows of f64 rounded to float.
    static std::vector<float> to_float(const double* f64, index_t n, int n_threads) {
        std::vector<float> out(2 * static_cast<std::size_t>(n));
        for_each_chunk(n, n_threads, [&](index_t, index_t b, index_t e) {
            for (index_t t = 2 * b; t < 2 * e; ++t) out[t] = static_cast<float>(f64[t]);
        });
        return out;
    }

    // rows: the caller's boxes; weights: N values or null. need_orders: build the sort orders.
    static Problem make(BoxRows rows, const double* weights, index_t n, bool need_orders, int n_threads) {
        if (need_orders && static_cast<std::uint64_t>(n) > std::numeric_limits<pos_t>::max())
            throw std::invalid_argument("kmeans_iou's weighted median supports at most 4,294,967,295 boxes");
        Problem p;
        p.n = n;
        p.f32 = rows.f32;
        p.f64 = rows.f64;
        p.weight = weights;
        if (n == 0) return p;
        // The range of the values (both coordinates) and of each coordinate's keys, per chunk.
        struct Range {
            double lo = std::numeric_limits<double>::infinity(), hi = 0.0;
            std::uint32_t klo[2] = {0xffffffffu, 0xffffffffu}, khi[2] = {0u, 0u};
            bool floats = true;  // every value is a float (float64 rows)
        };
        std::vector<Range> part(n_chunks(n));
        for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
            Range r;
            for (index_t i = b; i < e; ++i) {
                for (int X = 0; X < 2; ++X) {
                    const double v = p.value(X, i);
                    r.lo = std::min(r.lo, v);
                    r.hi = std::max(r.hi, v);
                    r.floats &= static_cast<double>(static_cast<float>(v)) == v;
                    const std::uint32_t key = p.key(X, i);
                    r.klo[X] = std::min(r.klo[X], key);
                    r.khi[X] = std::max(r.khi[X], key);
                }
            }
            part[c] = r;
        });
        Range all;
        for (const Range& r : part) {
            all.lo = std::min(all.lo, r.lo);
            all.hi = std::max(all.hi, r.hi);
            all.floats &= r.floats;
            for (int X = 0; X < 2; ++X) {
                all.klo[X] = std::min(all.klo[X], r.klo[X]);
                all.khi[X] = std::max(all.khi[X], r.khi[X]);
            }
        }
        // Float64 rows that hold floats (float32 data made float64, integer pixel sizes) are
        // read as the float32 rows of their copy: the same values, so the same fit, with half
        // the bytes wherever exact values are read. (A mean iteration on 10^6 boxes took
        // 0.3-0.5 ms longer on float64 rows than on float32 ones, mostly in reading the moved
        // boxes' float64 rows.)
        if (p.f64 && all.floats) {
            p.f64_as_f32 = to_float(p.f64, n, n_threads);
            p.f32 = p.f64_as_f32.data();
            p.f64 = nullptr;
        }
        for (int X = 0; X < 2; ++X) {
            p.key_lo[X] = all.klo[X];
            p.key_hi[X] = all.khi[X];
        }
#if FASTANCHOR_HAVE_INT128
        // Units: the last mantissa bit of the smallest value, in the rows' own type.
        const int digits = p.f32 ? std::numeric_limits<float>::digits : std::numeric_limits<double>::digits;
        const int min_exp = p.f32 ? std::numeric_limits<float>::min_exponent - 1 : std::numeric_limits<double>::min_exponent - 1;
        p.sum_exp = std::max(std::ilogb(all.lo), min_exp) - (digits - 1);
        const int span = std::ilogb(all.hi) + 1 - p.sum_exp;  // bits of the largest value in those units
        p.exact_sums = !p.weighted() && span <= kSumBits && std::ilogb(all.hi) + 33 < 1000;
        p.fixed64 = span <= 62 && p.sum_exp >= -1022;  // (2^-sum_exp a finite double)
        p.fixed_scale = std::ldexp(1.0, -p.sum_exp);
        int n_bits = 0;  // n < 2^n_bits
        while (n_bits < 63 && (index_t{1} << n_bits) <= n) ++n_bits;
        p.sums64 = p.exact_sums && p.fixed64 && span + n_bits <= 63;
        p.fixed_max = std::ldexp(1.0, std::min(span, 62));
#endif
        p.fscale = std::ldexp(1.0, -std::ilogb(std::sqrt(all.lo) * std::sqrt(all.hi)));
        p.has_float = all.lo * p.fscale >= kFloatLo && all.hi * p.fscale <= kFloatHi &&
                      (p.f32 || (all.lo >= 0x1p-126 && all.hi <= 0x1p127));
        if (p.f64 && p.has_float) p.f64_as_f32 = to_float(p.f64, n, n_threads);
        if (need_orders) {
            auto sort_coordinate = [&](int X) {
                p.order[X] = p.f32 ? argsort_positive<pos_t>(p.f32 + X, n, 2) : argsort_positive<pos_t>(p.f64 + X, n, 2);
            };
#ifdef _OPENMP
            // Nothing may escape a parallel region: errors (bad_alloc) are carried out and rethrown.
            std::exception_ptr error[2];
#pragma omp parallel for num_threads(2) if (n_threads > 1)
            for (int X = 0; X < 2; ++X) {
                try {
                    sort_coordinate(X);
                } catch (...) {
                    error[X] = std::current_exception();
                }
            }
            for (auto& e : error)
                if (e) std::rethrow_exception(e);
#else
            (void)n_threads;
            sort_coordinate(0);
            sort_coordinate(1);
#endif
        }
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

// Per thread: what the boxes that changed cluster in one assignment change in the per-cluster
// statistics (integers: their sum is the same in any order), and scratch for a block of boxes.
//
// Every move writes these, so no two threads' data may share a cache line (false sharing made a
// move cost about 50 ns): the struct is cache-line aligned and its small arrays padded.
template <class T>
struct PaddedArray {
    static constexpr std::size_t kPad = (64 + sizeof(T) - 1) / sizeof(T);
    std::vector<T> store;
    std::size_t n = 0;
    void assign(std::size_t size, T v) {
        store.assign(size + 2 * kPad, v);
        n = size;
    }
    T& operator[](std::size_t i) { return store[kPad + i]; }
    const T& operator[](std::size_t i) const { return store[kPad + i]; }
    T* begin() { return store.data() + kPad; }
    T* end() { return store.data() + kPad + n; }
};

struct alignas(64) LloydThread {
    static constexpr index_t kBlock = 1024;  // boxes labelled together (their scratch fits in L1)
    PaddedArray<index_t> count;              // per cluster
#if FASTANCHOR_HAVE_INT128
    PaddedArray<int128_t> sum_w, sum_h;      // per cluster (exact sums)
#endif
    PaddedArray<std::int32_t> hist;          // [X][cluster][bin] (unit-weight median)
    struct Logged {
        std::uint32_t slot;  // X * k + cluster
        bool add;
        double value;
    };
    std::vector<Logged> log;                 // moves into and out of the median's cached ranges
    bool any = false;
    std::vector<double> w, h, a;
    std::vector<float> frows, gap;  // gathered float rows (w, h); float gaps
    std::vector<std::int32_t> lab, idx;
    std::vector<std::uint8_t> flag, need, old;
    struct Flagged {  // a box flagged by the float ranking (detail::label_top2), to commit
        index_t i;
        std::int32_t label;
        std::uint8_t flag;
    };
    std::vector<Flagged> pending;            // a chunk's flagged boxes, in order (assign_chunk)
    std::vector<std::uint16_t> slack;
#if FASTANCHOR_HAVE_INT128
    // The exact unit-weight mean's moves with one-byte labels (Lloyd::move_mean): count and
    // exact sums by label, all 256 of them, so that label 255 (none: the first assignment's
    // moves come from it) has a slot to write to and a move needs no branch. Nothing reads it.
    // The sums in 64 bits when every sum of the data fits in them (Problem::sums64).
    template <class Sum>
    struct MeanMoves {
        std::int64_t count[256] = {};
        Sum w[256] = {}, h[256] = {};
    };
    MeanMoves<std::int64_t> mean64;
    MeanMoves<int128_t> mean128;
#endif
    void allocate(int k, bool sums, std::size_t hist_size) {
        count.assign(k, 0);
#if FASTANCHOR_HAVE_INT128
        if (sums) {
            sum_w.assign(k, 0);
            sum_h.assign(k, 0);
        }
#else
        (void)sums;
#endif
        hist.assign(hist_size, 0);
        w.resize(kBlock);
        h.resize(kBlock);
        a.resize(kBlock);
        lab.resize(kBlock);
        idx.resize(kBlock);
        flag.resize(kBlock);
        need.resize(kBlock);
        old.resize(kBlock);
        slack.resize(kBlock);
        frows.resize(2 * kBlock);
        gap.resize(kBlock);
        pending.resize(kChunk);
    }
};

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

// The boxes of [0, m) whose slack does not prove their label (need[t] = 1), with thresholds by
// label; returns whether there is any.
FASTANCHOR_CLONES inline std::uint8_t need_rank(const std::uint16_t* __restrict slack, const std::uint8_t* __restrict lab,
                                                index_t m, const std::uint16_t* __restrict threshold,
                                                std::uint8_t* __restrict need) {
    std::uint8_t any = 0;
#pragma omp simd reduction(| : any)
    for (index_t t = 0; t < m; ++t) {
        const std::uint8_t x = static_cast<std::uint8_t>(slack[t] <= threshold[lab[t]]);
        need[t] = x;
        any |= x;
    }
    return any;
}

#if FASTANCHOR_HAVE_AVX2
// need_rank and compact_flagged in one, for labels below 16, 32 boxes a step: each box's
// threshold is two in-register byte lookups (vpshufb of the thresholds' low and high bytes),
// the comparisons' mask read as bits (vpmovmskb). Writes the t < m with
// slack[t] <= threshold[lab[t]] to idx in increasing order; returns how many.
__attribute__((target("avx2"))) inline index_t need_rank_avx2(const std::uint16_t* __restrict slack,
                                                              const std::uint8_t* __restrict lab, index_t m,
                                                              const std::uint16_t* __restrict threshold,
                                                              std::int32_t* __restrict idx) {
    alignas(16) std::uint8_t lo[16], hi[16];
    for (int c = 0; c < 16; ++c) {
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
#endif

// slack[t] = (gap[t] - eps + base[lab[t]]) * unit - 1, truncated to an integer in [0, 2^16 - 1]
// (0 where flag[t] == 1): a lower bound in units of 1 / unit.
FASTANCHOR_CLONES inline void slack_units(const float* __restrict gap, const std::int32_t* __restrict lab,
                                          const std::uint8_t* __restrict flag, const float* __restrict base,
                                          index_t m, float eps, float unit, std::uint16_t* __restrict slack) {
#pragma omp simd
    for (index_t t = 0; t < m; ++t) {
        const float units = ((gap[t] - eps) + base[lab[t]]) * unit - 1.0f;
        const float capped = std::min(std::max(units, 0.0f), 65535.0f) * static_cast<float>(flag[t] != 1);
        slack[t] = static_cast<std::uint16_t>(static_cast<std::int32_t>(capped));
    }
}

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

#if FASTANCHOR_HAVE_AVX2
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
    alignas(32) std::int32_t tab[4][16];  // lo0, hi0, lo1, hi1; unused clusters: empty ranges
    for (int c = 0; c < 16; ++c) {
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
        const __m256d w4 = _mm256_castps_pd(_mm256_shuffle_ps(r0, r1, 0x88)), h4 = _mm256_castps_pd(_mm256_shuffle_ps(r0, r1, 0xdd));
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
#endif

// The bin of counts h[0, n) holding the rank-th (1-based) counted item, and its rank within that
// bin; the last bin when the counts fall short (they cannot unless the values changed behind the
// fit's back).
template <class Count>
std::pair<std::size_t, index_t> rank_in_counts(const Count* h, std::size_t n, index_t rank) {
    index_t below = 0;
    for (std::size_t b = 0; b < n; ++b) {
        if (below + static_cast<index_t>(h[b]) >= rank) return {b, rank - below};
        below += static_cast<index_t>(h[b]);
    }
    return {n - 1, std::max<index_t>(1, rank - below)};
}

// A request for the rank-th smallest value (1-based; up to two consecutive ranks) of cluster c
// along coordinate X among its boxes whose key (Problem::key) lies in [lo, hi]; `count` of its
// boxes do. A target of one histogram bin has hi = lo + 2^shift - 1 and may be refined into a
// finer bin; a `whole` target (a run of bins, gathered whole) may keep the values it gathered.
struct SelectTarget {
    int X = 0, c = 0;
    std::uint32_t lo = 0, hi = 0;
    int shift = 0;
    index_t count = 0;
    index_t rank[2] = {0, 0};
    int ranks = 1;
    double value[2] = {0.0, 0.0};
    bool whole = false;
    bool keep = false;  // whole, and its values to be kept (sorted) in `kept`
    std::vector<double> kept;
};

}  // namespace detail

// One Lloyd run on a Problem; L is the label type (std::uint8_t for k < 255, else std::int32_t).
//
// Assignment ranks boxes in float32 (detail::label_top2, boxes scaled by one power of two) and
// decides exactly in double every box whose two best float IoUs are too close to call, so the
// labels are those of the exact rule. Once the anchors move little, only the boxes whose 16-bit
// bound (choose_pass) cannot prove their label are ranked again.
//
// Every box that changed cluster moves its contribution between the clusters' statistics at once:
// counts, the exact sums of the unit-weight mean (Problem::exact_sums: 128-bit integers, so an
// update costs O(moves) and the sums are the same for any order of the moves), and the
// histograms of the unit-weight median. The weighted mean is summed again, per chunk in box
// order, for the chunks where a label changed; the weighted median is one pass over each
// coordinate's sort order.
//
// The unit-weight median: per cluster and coordinate, a histogram of the boxes' keys (a value's
// float bit pattern, monotone in the value) over `bins_` bins of 2^shift keys each. The bin of
// the median rank is found from the counts; one pass over the boxes then collects the values
// of that bin's members (refined by a finer histogram first when the bin holds too many), and
// the median is selected among them. So the median is exact, with no sort order kept. Once a
// median stays in its bin, the values around it are cached (Cached) and kept up to date by the
// moves, and the pass is skipped while the median stays inside them.
template <class L>
class Lloyd {
public:
    static constexpr L kNone = std::is_signed<L>::value ? static_cast<L>(-1) : std::numeric_limits<L>::max();
    // The largest k with a histogram median, and the budget of histogram bins per coordinate.
    static constexpr int kMaxHistK = 4096;
    static constexpr index_t kHistBudget = index_t{1} << 20;
    // A bin holding more boxes of a cluster than this is refined before its values are collected.
    static constexpr index_t kGatherCap = index_t{1} << 15;
    static constexpr int kRefineBits = 12;
    // Per cluster and chunk: sum of weight * w, weight * h, weight (mean without exact sums).
    static constexpr int kStats = 3;

    Lloyd(const Problem& p, int k, Update update, int n_threads)
        : p_(p), k_(k), update_(update), nt_(n_threads), labels_(p.size(), kNone), cnt_(k, 0),
          changed_(n_chunks(p.size()), 0) {
#if FASTANCHOR_HAVE_INT128
        exact_mean_ = update == Update::Mean && p.exact_sums;
        if (exact_mean_) {
            sum_w_.assign(k, 0);
            sum_h_.assign(k, 0);
        }
#endif
        hist_median_ = update == Update::Median && !p.weighted() && k <= kMaxHistK;
        if (hist_median_) {
            bins_ = 4096;
            while (bins_ > 16 && static_cast<index_t>(bins_) * k > kHistBudget) bins_ /= 2;
            for (int X = 0; X < 2; ++X) {
                shift_[X] = 0;
                while (((p.key_hi[X] - p.key_lo[X]) >> shift_[X]) >= static_cast<std::uint32_t>(bins_)) ++shift_[X];
            }
            hist_.assign(2 * static_cast<std::size_t>(k) * bins_, 0);
            cache_.resize(2 * static_cast<std::size_t>(k));
            last_bin_.assign(2 * static_cast<std::size_t>(k), 0xffffffffu);
        }
        slot_mean_ = std::is_same_v<L, std::uint8_t> && exact_mean_;
        if (stats_mean()) part_.assign(static_cast<std::size_t>(n_chunks(p.size())) * k * kStats, 0.0);
        drift_.assign(k, 0.0);
        if (std::is_same_v<L, std::uint8_t> && p.has_float && k <= detail::kMaxFixedK) slack_.resize(p.size());
        threads_.resize(chunk_threads(p.size(), n_threads));
        for (auto& t : threads_) t.allocate(k, exact_mean_ && !slot_mean_, hist_.size());
    }

    // Assigns every box; returns how many labels changed.
    index_t assign(const WhSet& anchors) {
        use_float_ = set_float_anchors(anchors);
        choose_pass(anchors);
        std::vector<std::exception_ptr> error(changed_.size());  // bad_alloc of a log, carried out
        for_each_chunk(p_.size(), nt_, [&](index_t c, index_t b, index_t e) {
            try {
                changed_[c] = assign_chunk(anchors, b, e);
                if (changed_[c] > 0 && stats_mean()) chunk_stats(c, b, e);
            } catch (...) {
                error[c] = std::current_exception();
            }
        });
        for (auto& x : error)
            if (x) std::rethrow_exception(x);
        index_t changed = 0;
        for (const index_t x : changed_) changed += x;
        for (auto& t : threads_) {
            if (!t.any) continue;
#if FASTANCHOR_HAVE_INT128
            if (slot_mean_) {
                auto merge = [&](auto& d) {
                    for (int c = 0; c < k_; ++c) {
                        cnt_[c] += d.count[c];
                        sum_w_[c] += d.w[c];
                        sum_h_[c] += d.h[c];
                    }
                    d = {};
                };
                if (p_.sums64) merge(t.mean64);
                else merge(t.mean128);
                t.any = false;
                continue;
            }
#endif
            for (int c = 0; c < k_; ++c) cnt_[c] += t.count[c];
            std::fill(t.count.begin(), t.count.end(), 0);
#if FASTANCHOR_HAVE_INT128
            if (exact_mean_) {
                for (int c = 0; c < k_; ++c) {
                    sum_w_[c] += t.sum_w[c];
                    sum_h_[c] += t.sum_h[c];
                }
                std::fill(t.sum_w.begin(), t.sum_w.end(), 0);
                std::fill(t.sum_h.begin(), t.sum_h.end(), 0);
            }
#endif
            if (hist_median_) {
                for (std::size_t j = 0; j < hist_.size(); ++j) hist_[j] += static_cast<std::uint32_t>(t.hist[j]);
                std::fill(t.hist.begin(), t.hist.end(), 0);
            }
            t.any = false;
        }
        return changed;
    }

    // The portable float kernels even where the AVX2 ones run (for tests: lloyd_trace).
    void use_portable_kernels() { avx2_ = false; }

    // The label of box i after the last assign().
    std::int32_t label(index_t i) const { return static_cast<std::int32_t>(labels_[i]); }
    // How the last assign() went through the boxes (for tests): 0 ranked every box and stored its
    // bound, 1 ranked only those whose bounds could not prove their label, 2 ranked every box for
    // its label alone (bounds left invalid).
    int last_pass() const { return bounded_ ? 1 : keep_bounds_ ? 0 : 2; }

    // New anchors from the labels of the last assign(); `anchors` are those it used.
    WhSet update(const WhSet& anchors) {
        const int k = k_;
        WhSet out(k);
        std::vector<double> mw(k), mh(k);
        if (exact_mean_) {
#if FASTANCHOR_HAVE_INT128
            for (int c = 0; c < k; ++c) {
                if (cnt_[c] > 0) {
                    mw[c] = p_.fixed_mean(sum_w_[c], cnt_[c]);
                    mh[c] = p_.fixed_mean(sum_h_[c], cnt_[c]);
                }
            }
#endif
        } else if (update_ == Update::Mean) {
            std::vector<double> st(static_cast<std::size_t>(k) * kStats, 0.0);
            for (std::size_t c = 0; c < changed_.size(); ++c) {
                const double* pc = part_.data() + c * k * kStats;
                for (std::size_t j = 0; j < st.size(); ++j) st[j] += pc[j];
            }
            for (int c = 0; c < k; ++c) {
                if (cnt_[c] == 0) continue;
                const double sw = st[c * kStats], sh = st[c * kStats + 1], total = st[c * kStats + 2];
                mw[c] = sw / total;
                mh[c] = sh / total;
                // Sums this small may hold products weight * value that underflowed
                // (weights spanning 290 orders of magnitude and more).
                if (!(sw >= kTinySum && sh >= kTinySum)) rescaled_mean(c, mw[c], mh[c]);
            }
        } else if (hist_median_) {
            histogram_median(mw, mh);
        } else {
            sorted_median(mw, mh);
        }
        std::vector<int> empty;
        for (int c = 0; c < k; ++c) {
            if (cnt_[c] > 0) out.set(c, mw[c], mh[c]);
            else empty.push_back(c);
        }
        if (!empty.empty()) fill_empty(anchors, empty, out);
        return out;
    }

private:
    using Thread = detail::LloydThread;
    static constexpr index_t kBlock = Thread::kBlock;

    bool stats_mean() const { return update_ == Update::Mean && !exact_mean_; }
    Thread& thread() { return threads_[static_cast<std::size_t>(thread_index())]; }

    // Float copies of the anchors at the boxes' scale; false when the float ranking cannot serve
    // (the data's range, k above the fixed-K kernels, an anchor out of range).
    bool set_float_anchors(const WhSet& anchors) {
        if (!std::is_same_v<L, std::uint8_t> || !p_.has_float || k_ > detail::kMaxFixedK) return false;
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

    // Bounds are renewed by a full pass once the cumulative drift reaches kMaxDrift (it keeps the
    // slack's thresholds within 16 bits), and every kResetEvery passes so that rounding in the
    // drift sums can never add up.
    static constexpr double kMaxDrift = 0.5;
    static constexpr int kResetEvery = 1024;
    // Added to every anchor's drift: covers the rounding of 1 - IoU.
    static constexpr double kDriftSlack = 1e-14;
    // When an anchor moved farther than this (in 1 - IoU) since the last assignment, the bounds
    // would send most boxes to be ranked again anyway: the pass ranks every box for its label
    // alone and keeps no bounds. (Chosen with the previous engine, whose bounds differed: on 1M
    // COCO-like boxes, whole default fits with thresholds 0 to 0.1, 0.01-0.02 was fastest.)
    static constexpr double kRelabelDrift = 0.02;
    // The margin that makes a skipped box's best IoU strictly the largest.
    static constexpr double kGap = 1e-9;
    // Slacks are stored in units of 2^-kSlackBits of 1 - IoU, in 16 bits.
    static constexpr int kSlackBits = 15;
    // How far below the float gap of the best two IoUs the true gap may lie: the float IoUs'
    // errors (1e-6 each, iou.hpp), the rounding of their difference and of the sum with the base.
    static constexpr float kSlackEps = static_cast<float>(2.0 * detail::kRankEps + 1e-6);

    // The pass of this assignment (bounded_) and, for a bounded one, the drifts and thresholds.
    //
    // Bounds (Hamerly's, compacted): 1 - IoU of corner-aligned boxes is the Jaccard distance of the
    // rectangles [0, w] x [0, h], a metric, so when anchor j moves by d_j = 1 - IoU(old_j, new_j),
    // a box's distance to its anchor grows by at most d_j and its distance to any other anchor
    // shrinks by at most max_j d_j. With D_j and Dmax the sums of d_j and max_j d_j since the last
    // full pass, a box ranked at time t0 with label a and a gap g(t0) between its distance to any
    // other anchor and to a keeps label a at time t while
    //     g(t0) + D_a(t0) + Dmax(t0) > D_a(t) + Dmax(t) + kGap,
    // so one number per box is stored: the left side, rounded down to 16 bits (rank_block, from
    // detail::label_top2's gap), tested against the right side rounded up (threshold_). A box that
    // passes keeps its exact label.
    void choose_pass(const WhSet& anchors) {
        const int k = k_;
        std::vector<double> step(k, 0.0);
        double step_max = 0.0;
        if (!first_) {
            for (int j = 0; j < k; ++j) {
                step[j] = (1.0 - iou_wh(prev_.w[j], prev_.h[j], prev_.a[j], anchors.w[j], anchors.h[j], anchors.a[j])) +
                          kDriftSlack;
                step_max = std::max(step_max, step[j]);
            }
        }
        bounded_ = use_float_ && bounds_valid_ && !first_ && step_max <= kRelabelDrift &&
                   drift_max_ + step_max <= kMaxDrift && ++since_reset_ <= kResetEvery;
        // While anchors move far, the next pass will rank every box again anyway: this one keeps
        // no bounds (the kernel without gaps, about 1.3x as fast); the first pass after the moves
        // settle renews them.
        keep_bounds_ = use_float_ && (bounded_ || step_max <= kRelabelDrift);
        first_ = false;
        prev_ = anchors;
        if (bounded_) {
            drift_max_ += step_max;
            for (int j = 0; j < k; ++j) drift_[j] += step[j];
        } else {
            std::fill(drift_.begin(), drift_.end(), 0.0);
            drift_max_ = 0.0;
            since_reset_ = 0;
        }
        bounds_valid_ = keep_bounds_;
        if (!use_float_) return;  // bounds exist on the float path only (k <= kMaxFixedK)
        constexpr double kUnit = double(1 << kSlackBits);
        for (int j = 0; j < k; ++j) {
            const double base = drift_[j] + drift_max_;
            base_[j] = std::nextafter(static_cast<float>(base), 0.0f);  // never above
            const double need = std::ceil((base + kGap) * kUnit);
            threshold_[j] = static_cast<std::uint16_t>(std::min(need, 65535.0));
        }
    }

    // Ranks the m boxes of the float rows `rows` (labels `old`) against the anchors: labels and
    // flags (detail::label_top2) into T.lab, T.flag, and their slacks into T.slack: in units of
    // 2^-kSlackBits, a lower bound on the gap between the distance to any other anchor and to
    // the label's, plus the label's base (detail::label_top2's float gap, less what float
    // rounding may have added; 0 for the ties decided exactly).
    void rank_block(Thread& T, const float* rows, index_t m, const std::uint8_t* old) {
        detail::label_float_k(rows, static_cast<float>(p_.fscale), m, faw_.data(), fah_.data(), faa_.data(), k_, old,
                              T.lab.data(), T.flag.data(), keep_bounds_ ? T.gap.data() : nullptr, avx2_);
        if (!keep_bounds_) return;
        detail::slack_units(T.gap.data(), T.lab.data(), T.flag.data(), base_.data(), m, kSlackEps,
                            static_cast<float>(1 << kSlackBits), T.slack.data());
    }

    // One box in kDenseRanks ranked again is enough for the rows of the next block to be fetched
    // whole (a 64-byte line holds 8 boxes' rows).
    static constexpr index_t kDenseRanks = 32;

    // The boxes t of block [s, s + m) (labels lab) whose slack does not prove their label, into
    // T.idx in increasing order; returns how many.
    index_t boxes_to_rank(Thread& T, index_t s, const std::uint8_t* lab, index_t m) const {
#if FASTANCHOR_HAVE_AVX2
        if (avx2_) return detail::need_rank_avx2(slack_.data() + s, lab, m, threshold_.data(), T.idx.data());
#endif
        if (!detail::need_rank(slack_.data() + s, lab, m, threshold_.data(), T.need.data())) return 0;
        return detail::compact_flagged(T.need.data(), m, T.idx.data());
    }

    // Boxes of a bounded pass in [b, e): those whose slack fails are gathered and ranked again.
    index_t assign_chunk_bounded(const WhSet& anchors, index_t b, index_t e) {
        Thread& T = thread();
        index_t changed = 0;
        for (index_t s = b; s < e; s += kBlock) {
            const index_t m = std::min(e, s + kBlock) - s;
            const std::uint8_t* lab = nullptr;
            if constexpr (std::is_same_v<L, std::uint8_t>) lab = labels_.data() + s;
            else return changed;  // (bounds exist for one-byte labels only)
            const index_t nc = boxes_to_rank(T, s, lab, m);
            if (nc == 0) continue;
            const std::int32_t* idx = T.idx.data();
            // A few percent of a block's boxes ranked again touch most of its rows' cache lines,
            // in an order the hardware does not prefetch: the next block's rows are fetched
            // while this one is ranked.
            if (nc * kDenseRanks >= m && s + kBlock < e) {
                const float* next = p_.frows() + 2 * (s + kBlock);
                const index_t floats = 2 * (std::min(e, s + 2 * kBlock) - (s + kBlock));
                for (index_t j = 0; j < floats; j += 16) __builtin_prefetch(next + j);
            }
            std::uint8_t* old = T.old.data();
            p_.gather_float_rows(s, idx, nc, T.frows.data());
            for (index_t u = 0; u < nc; ++u) old[u] = lab[idx[u]];
            rank_block(T, T.frows.data(), nc, old);
            for (index_t u = 0; u < nc; ++u) {
                const index_t i = s + idx[u];
                slack_[i] = T.slack[u];
                changed += commit(T, anchors, i, T.lab[u], T.flag[u]);
            }
        }
        return changed;
    }

    // Box i ranked in float with label l and flag f (detail::label_top2): a tie too close to call
    // in float is decided exactly. Returns 1 for a change.
    int commit(Thread& T, const WhSet& anchors, index_t i, std::int32_t l, std::uint8_t f) {
        if (f == 0) return 0;
        if (f == 1) {
            const double w = p_.value(0, i), h = p_.value(1, i);
            l = detail::assign_exact(w, h, w * h, anchors.w.data(), anchors.h.data(), anchors.a.data(), k_);
        }
        return give(T, i, l);
    }

    // Labels boxes [b, e) (one chunk) block by block; returns how many labels changed.
    //
    // On the float path, with float32 rows, a block's flagged boxes are committed as soon as it
    // is ranked: the values a commit reads (exact sums, exact ties) are the rows just ranked.
    // With float64 rows (the ranking reads their float copy) they are committed after all the
    // chunk's blocks are ranked: the rows a commit reads are prefetched as they are found, and
    // arrive while the next blocks are ranked.
    index_t assign_chunk(const WhSet& anchors, index_t b, index_t e) {
        if (bounded_) return assign_chunk_bounded(anchors, b, e);
        Thread& T = thread();
        const double *aw = anchors.w.data(), *ah = anchors.h.data(), *aa = anchors.a.data();
        index_t changed = 0, pending = 0;
        for (index_t s = b; s < e; s += kBlock) {
            const index_t m = std::min(e, s + kBlock) - s;
            if (!use_float_) {
                p_.load(s, s + m, T.w.data(), T.h.data(), T.a.data());
                detail::assign_rows(T.w.data(), T.h.data(), T.a.data(), m, aw, ah, aa, k_, T.lab.data());
                for (index_t t = 0; t < m; ++t) changed += give(T, s + t, T.lab[t]);
                continue;
            }
            if constexpr (std::is_same_v<L, std::uint8_t>) {  // k <= kMaxFixedK: one-byte labels
                rank_block(T, p_.frows() + 2 * s, m, labels_.data() + s);
                if (keep_bounds_) std::copy(T.slack.begin(), T.slack.begin() + m, slack_.begin() + s);
            }
            // The flagged boxes: new labels, and the few too close to call in float.
            const std::uint8_t* flag = T.flag.data();
            if (p_.f32) {
                std::int32_t* idx = T.idx.data();
                const index_t nc = detail::compact_flagged(flag, m, idx);
                for (index_t u = 0; u < nc; ++u) changed += commit(T, anchors, s + idx[u], T.lab[idx[u]], flag[idx[u]]);
                continue;
            }
            detail::for_each_flagged(flag, m, [&](index_t t) {
                p_.prefetch_row(s + t);
                T.pending[static_cast<std::size_t>(pending++)] = {s + t, T.lab[t], flag[t]};
            });
        }
        for (index_t u = 0; u < pending; ++u) {
            const auto& q = T.pending[static_cast<std::size_t>(u)];
            changed += commit(T, anchors, q.i, q.label, q.flag);
        }
        return changed;
    }

    // Histogram bin of a key along X (clamped: a value changed behind the fit's back cannot
    // index out of range).
    std::size_t bin(int X, int c, std::uint32_t key) const {
        const std::uint32_t b = std::min<std::uint32_t>((key - p_.key_lo[X]) >> shift_[X], bins_ - 1);
        return (static_cast<std::size_t>(X) * k_ + c) * bins_ + b;
    }

    // Gives box i label l (move_mean or move); returns 1 for a change.
    __attribute__((always_inline)) int give(Thread& T, index_t i, std::int32_t l) {
#if FASTANCHOR_HAVE_INT128
        if (slot_mean_) return p_.sums64 ? move_mean(T, T.mean64, i, l) : move_mean(T, T.mean128, i, l);
#endif
        return move(T, i, l);
    }

#if FASTANCHOR_HAVE_INT128
    // move() for the exact unit-weight mean with one-byte labels (slot_mean_), into d (T's
    // mean64 or mean128): small enough to be inlined into the loops over the flagged boxes, and
    // without a branch once the label changes (LloydThread::MeanMoves).
    template <class Moves>
    __attribute__((always_inline)) int move_mean(Thread& T, Moves& d, index_t i, std::int32_t l) {
        const L from = labels_[i];
        if (static_cast<std::int32_t>(from) == l) return 0;
        labels_[i] = static_cast<L>(l);
        T.any = true;
        const auto f = static_cast<std::uint8_t>(from);  // (slot_mean_: L is one byte)
        using Sum = std::remove_reference_t<decltype(d.w[0])>;
        Sum w, h;
        if constexpr (std::is_same_v<Sum, std::int64_t>) {
            w = p_.fixed_small(0, i);
            h = p_.fixed_small(1, i);
        } else {
            w = p_.fixed(0, i);
            h = p_.fixed(1, i);
        }
        ++d.count[l];
        --d.count[f];
        d.w[l] += w;
        d.w[f] -= w;
        d.h[l] += h;
        d.h[f] -= h;
        return 1;
    }
#endif

    // Gives box i label l; a change moves the box's share of the statistics. Returns 1 for a change.
    // (Not for slot_mean_: give.)
    int move(Thread& T, index_t i, std::int32_t l) {
        const L from = labels_[i];
        if (from != kNone && static_cast<std::int32_t>(from) == l) return 0;
        labels_[i] = static_cast<L>(l);
        T.any = true;
        ++T.count[l];
        if (from != kNone) --T.count[from];
#if FASTANCHOR_HAVE_INT128
        if (exact_mean_) {
            const int128_t w = p_.fixed(0, i), h = p_.fixed(1, i);
            T.sum_w[l] += w;
            T.sum_h[l] += h;
            if (from != kNone) {
                T.sum_w[from] -= w;
                T.sum_h[from] -= h;
            }
        }
#endif
        if (hist_median_) {
            for (int X = 0; X < 2; ++X) {
                const std::uint32_t key = p_.key(X, i);
                ++T.hist[bin(X, l, key)];
                if (from != kNone) --T.hist[bin(X, from, key)];
                const std::int32_t sk = static_cast<std::int32_t>(key);
                const std::uint32_t to_slot = static_cast<std::uint32_t>(X * k_ + l);
                const Cached& in = cache_[to_slot];
                if (in.valid && sk >= in.lo && sk <= in.hi) T.log.push_back({to_slot, true, p_.value(X, i)});
                if (from != kNone) {
                    const std::uint32_t from_slot = static_cast<std::uint32_t>(X * k_ + from);
                    const Cached& out = cache_[from_slot];
                    if (out.valid && sk >= out.lo && sk <= out.hi) T.log.push_back({from_slot, false, p_.value(X, i)});
                }
            }
        }
        return 1;
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
            if (label(i) == c) top = std::max(top, p_.wt(i));
        double sw = 0.0, sh = 0.0, st = 0.0;
        for (index_t i = 0; i < n; ++i) {
            if (label(i) != c) continue;
            const double q = p_.wt(i) / top;
            sw += q * p_.value(0, i);
            sh += q * p_.value(1, i);
            st += q;
        }
        mw = sw / st;
        mh = sh / st;
    }

    // Chunk c's statistics (mean without exact sums), summed in box order. Box i goes to copy
    // i % kCopies of the sums, the copies then added in a fixed order: consecutive boxes, which
    // often share a cluster, do not wait on each other's additions.
    void chunk_stats(index_t c, index_t b, index_t e) {
        constexpr int kCopies = 4;
        const std::size_t per = static_cast<std::size_t>(k_) * kStats;
        std::vector<double> acc(kCopies * per, 0.0);
        for (index_t i = b; i < e; ++i) {
            double* sl = acc.data() + static_cast<std::size_t>(i % kCopies) * per + static_cast<std::size_t>(label(i)) * kStats;
            const double wi = p_.wt(i);
            sl[0] += wi * p_.value(0, i);
            sl[1] += wi * p_.value(1, i);
            sl[2] += wi;
        }
        double* st = part_.data() + static_cast<std::size_t>(c) * per;
        for (std::size_t j = 0; j < per; ++j) st[j] = (acc[j] + acc[per + j]) + (acc[2 * per + j] + acc[3 * per + j]);
    }

    // Weighted medians: one full pass per coordinate in that coordinate's order, the two on two
    // threads. Each cluster's total weight is summed in the same order as its cumulative sums.
    void sorted_median(std::vector<double>& mw, std::vector<double>& mh) {
        const index_t n = p_.size();
        const int k = k_;
        const Problem& p = p_;
        std::vector<double> count(k);
        for (int c = 0; c < k; ++c) count[c] = static_cast<double>(cnt_[c]);
        std::vector<double> total[2] = {std::vector<double>(k, 0.0), std::vector<double>(k, 0.0)};
        detail::MedianScratch scratch[2];
        scratch[0].reset(k);
        scratch[1].reset(k);
        double* med[2] = {mw.data(), mh.data()};
        auto pass = [&](int X) {
            const Problem::pos_t* order = p.order[X].data();
            for (index_t s = 0; s < n; ++s) total[X][label(order[s])] += p.wt(order[s]);
            auto get = [&](index_t s, std::int32_t& c, double& x, double& wt) {
                const index_t i = order[s];
                c = label(i);
                x = p.value(X, i);
                wt = p.wt(i);
            };
            detail::median_pass(n, k, get, total[X].data(), count.data(), med[X], scratch[X]);
        };
#ifdef _OPENMP
#pragma omp parallel for num_threads(2) if (nt_ > 1)
        for (int X = 0; X < 2; ++X) pass(X);
#else
        pass(0);
        pass(1);
#endif
    }

    // ---- the histogram median (unit weights) ----

    // The bin of cluster c's histogram along X holding its rank-th smallest key (1-based), and
    // the rank within that bin.
    std::pair<std::uint32_t, index_t> find_rank(int X, int c, index_t rank) const {
        const auto [b, q] = detail::rank_in_counts(hist_.data() + (static_cast<std::size_t>(X) * k_ + c) * bins_,
                                                   static_cast<std::size_t>(bins_), rank);
        return {static_cast<std::uint32_t>(b), q};
    }

    // The values gathered for cluster c along X: every member with a key in bins [bin0, bin1]
    // (keys [lo, hi]), sorted, kept up to date by the moves (Thread::log) so that a median that
    // stays in these bins needs no pass over the boxes.
    struct Cached {
        bool valid = false;
        std::uint32_t bin0 = 0, bin1 = 0;
        std::int32_t lo = 1, hi = 0;
        std::vector<double> values;
    };
    // Bins gathered on each side of the median's (when they hold at most kGatherCap members).
    static constexpr std::uint32_t kMargin = 2;

    // The moves since the last update into and out of the cached ranges, merged into the sorted
    // values (O(values + moves) per range that had any).
    void apply_logs() {
        std::vector<std::vector<double>> add(cache_.size()), del(cache_.size());
        bool any = false;
        for (auto& t : threads_) {
            for (const auto& e : t.log) (e.add ? add : del)[e.slot].push_back(e.value);
            any |= !t.log.empty();
            t.log.clear();
        }
        if (!any) return;
        std::vector<double> kept, merged;
        for (std::size_t sl = 0; sl < cache_.size(); ++sl) {
            Cached& C = cache_[sl];
            if (!C.valid || (add[sl].empty() && del[sl].empty())) continue;
            std::sort(add[sl].begin(), add[sl].end());
            std::sort(del[sl].begin(), del[sl].end());
            kept.clear();
            std::set_difference(C.values.begin(), C.values.end(), del[sl].begin(), del[sl].end(), std::back_inserter(kept));
            if (kept.size() + del[sl].size() != C.values.size()) {  // only if the values changed meanwhile
                C.valid = false;
                continue;
            }
            merged.clear();
            std::merge(kept.begin(), kept.end(), add[sl].begin(), add[sl].end(), std::back_inserter(merged));
            C.values.swap(merged);
        }
    }

    void histogram_median(std::vector<double>& mw, std::vector<double>& mh) {
        apply_logs();
        std::vector<detail::SelectTarget> targets;
        // (target, rank slot) of each cluster's lower and upper median, per coordinate (first
        // -1: found in the cache, set at once).
        constexpr int kCachedHit = -1;
        std::vector<std::array<std::pair<int, int>, 2>> where(2 * static_cast<std::size_t>(k_));
        for (int X = 0; X < 2; ++X) {
            double* med = X == 0 ? mw.data() : mh.data();
            for (int c = 0; c < k_; ++c) {
                const index_t cnt = cnt_[c];
                const std::size_t sl = static_cast<std::size_t>(X) * k_ + c;
                Cached& C = cache_[sl];
                if (cnt <= 0) {
                    C.valid = false;
                    continue;
                }
                const index_t r1 = (cnt + 1) / 2;  // the lower median's rank
                const bool two = cnt % 2 == 0;     // and the upper one's: r1 + 1
                const std::uint32_t* h = hist_.data() + sl * bins_;
                const auto [b1, q1] = find_rank(X, c, r1);
                // The upper median shares the lower one's bin, or is the first member of the next
                // non-empty bin.
                const bool shared = !two || q1 < static_cast<index_t>(h[b1]);
                const std::uint32_t b2 = shared ? b1 : find_rank(X, c, r1 + 1).first;
                auto members = [&](std::uint32_t from, std::uint32_t to) {
                    index_t m = 0;
                    for (std::uint32_t b = from; b <= to; ++b) m += h[b];
                    return m;
                };
                if (C.valid && C.bin0 <= b1 && b2 <= C.bin1) {
                    const index_t below = C.bin0 > 0 ? members(0, C.bin0 - 1) : 0, inside = members(C.bin0, C.bin1);
                    if (inside == static_cast<index_t>(C.values.size()) && r1 > below && r1 - below + two <= inside) {
                        const double lo = C.values[r1 - below - 1], hi = two ? C.values[r1 - below] : lo;
                        // cnt even: the cumulative count reaches half exactly at the lower median,
                        // so the median is the mean of it and the next member (numpy.median).
                        med[c] = two ? (lo + hi) / 2.0 : lo;
                        where[sl][0].first = kCachedHit;
                        continue;
                    }
                }
                C.valid = false;
                auto& w = where[sl];
                // A target for the members of cluster c in bins [B0, B1] along X.
                auto add = [&](std::uint32_t B0, std::uint32_t B1, index_t count, index_t rank) {
                    detail::SelectTarget t;
                    t.X = X;
                    t.c = c;
                    t.lo = p_.key_lo[X] + (B0 << shift_[X]);
                    t.hi = static_cast<std::uint32_t>(std::min<std::uint64_t>(
                        std::uint64_t{p_.key_lo[X]} + (std::uint64_t{B1 + 1} << shift_[X]) - 1, 0xffffffffu));
                    t.shift = shift_[X];
                    t.count = count;
                    t.rank[0] = rank;
                    targets.push_back(std::move(t));
                    return std::make_pair(static_cast<int>(targets.size()) - 1, 0);
                };
                // A run of bins around the median, gathered whole, when small enough; cached (with
                // kMargin bins on each side) once the median stays in its bin from one update to
                // the next (before that, the moves would soon take it out of any cached run).
                const bool settled = last_bin_[sl] == b1;
                last_bin_[sl] = b1;
                const std::uint32_t last = static_cast<std::uint32_t>(bins_ - 1);
                bool gathered = false;
                for (std::uint32_t margin : {settled ? kMargin : 0u, 0u}) {
                    const std::uint32_t B0 = b1 > margin ? b1 - margin : 0, B1 = std::min(last, b2 + margin);
                    const index_t count = members(B0, B1);
                    if (count > kGatherCap) continue;
                    const index_t below = B0 > 0 ? members(0, B0 - 1) : 0;
                    w[0] = add(B0, B1, count, r1 - below);
                    w[1] = {w[0].first, two ? 1 : 0};
                    detail::SelectTarget& t = targets[w[0].first];
                    t.rank[1] = r1 - below + 1;
                    t.ranks = two ? 2 : 1;
                    t.whole = true;
                    t.keep = settled;
                    C.bin0 = B0;
                    C.bin1 = B1;
                    gathered = true;
                    break;
                }
                if (!gathered) {
                    // Crowded: one target per bin, refined by finer histograms if need be.
                    w[0] = add(b1, b1, h[b1], q1);
                    if (!two) {
                        w[1] = w[0];
                    } else if (shared) {
                        auto& t = targets[w[0].first];
                        t.rank[1] = q1 + 1;
                        t.ranks = 2;
                        w[1] = {w[0].first, 1};
                    } else {
                        w[1] = add(b2, b2, h[b2], 1);
                    }
                }
            }
        }
        if (targets.empty()) return;
        select(targets);
        for (int X = 0; X < 2; ++X) {
            double* med = X == 0 ? mw.data() : mh.data();
            for (int c = 0; c < k_; ++c) {
                const std::size_t sl = static_cast<std::size_t>(X) * k_ + c;
                const auto& w = where[sl];
                if (cnt_[c] <= 0 || w[0].first == kCachedHit) continue;
                detail::SelectTarget& t0 = targets[w[0].first];
                const double lo = t0.value[w[0].second];
                const double hi = targets[w[1].first].value[w[1].second];
                med[c] = cnt_[c] % 2 == 1 ? lo : (lo + hi) / 2.0;
                if (t0.keep) {  // kept for the next updates (sorted by select)
                    Cached& C = cache_[sl];
                    C.values = std::move(t0.kept);
                    C.lo = static_cast<std::int32_t>(t0.lo);
                    C.hi = static_cast<std::int32_t>(std::min<std::uint32_t>(t0.hi, 0x7fffffffu));
                    C.valid = true;
                }
            }
        }
    }

    // Whether a target's members are gathered (a run of whole bins, a small bin, or one key), not
    // refined by a finer histogram first.
    static bool gathers(const detail::SelectTarget& T) {
        return T.whole || T.count <= kGatherCap || T.shift == 0;
    }

    // detail::flag_in_ranges of the m boxes from s0 (the AVX2 form where it serves).
    std::uint8_t flag_block(const L* lab, index_t s0, index_t m, const std::int32_t* lo0, const std::int32_t* hi0,
                            const std::int32_t* lo1, const std::int32_t* hi1, std::uint8_t* hit) const {
        const float* fr = p_.frows();
        if (!fr) return detail::flag_in_ranges(lab, p_.f64 + 2 * s0, m, lo0, hi0, lo1, hi1, hit);
#if FASTANCHOR_HAVE_AVX2
        if constexpr (std::is_same_v<L, std::uint8_t>) {
            if (k_ <= 16 && avx2_)
                return detail::flag_in_ranges_avx2(lab, fr + 2 * s0, m, k_, lo0, hi0, lo1, hi1, hit);
        }
#endif
        return detail::flag_in_ranges(lab, fr + 2 * s0, m, lo0, hi0, lo1, hi1, hit);
    }

    // Resolves every target: one pass over the boxes per round collects the values of the small
    // targets and a finer histogram (2^kRefineBits bins) of the large ones, which become smaller
    // targets for the next round.
    void select(std::vector<detail::SelectTarget>& targets) {
        const index_t n = p_.size();
        std::vector<int> pending(targets.size());
        std::iota(pending.begin(), pending.end(), 0);
        std::vector<std::pair<int, int>> split;  // (parent, target of its upper rank)
        while (!pending.empty()) {
            std::vector<int> gather, refine;
            for (const int t : pending) {
                detail::SelectTarget& T = targets[t];
                if (!T.whole && T.shift == 0 && p_.f32) {  // one key: one float32 value
                    T.value[0] = T.value[1] = Problem::key_value(T.lo);
                } else if (gathers(T)) {
                    gather.push_back(t);
                } else {
                    refine.push_back(t);
                }
            }
            if (gather.empty() && refine.empty()) break;
            // Per cluster and coordinate, the targets to look at (at most two in a round).
            constexpr int kNoTarget = -1;
            std::vector<std::array<int, 2>> table(2 * static_cast<std::size_t>(k_), {kNoTarget, kNoTarget});
            std::vector<int> role(targets.size(), -1);  // a refined target's index in refine
            auto enter = [&](int t) {
                auto& slot = table[static_cast<std::size_t>(targets[t].X) * k_ + targets[t].c];
                slot[slot[0] == kNoTarget ? 0 : 1] = t;
            };
            for (const int t : gather) enter(t);
            for (std::size_t r = 0; r < refine.size(); ++r) {
                role[refine[r]] = static_cast<int>(r);
                enter(refine[r]);
            }
            constexpr std::size_t kSub = std::size_t{1} << kRefineBits;
            const int nt = static_cast<int>(threads_.size());
            std::vector<std::vector<std::pair<std::int32_t, double>>> found(nt);
            std::vector<std::vector<index_t>> sub(nt, std::vector<index_t>(refine.size() * kSub, 0));
            std::vector<std::exception_ptr> error(n_chunks(n));
            // Per cluster and coordinate, the key range of its targets in this round (empty: lo >
            // hi). Keys of positive floats are below 2^31, so they compare as int32 (vectorizable).
            std::vector<std::int32_t> range_lo(2 * static_cast<std::size_t>(k_), 1), range_hi(2 * static_cast<std::size_t>(k_), 0);
            for (std::size_t slot = 0; slot < table.size(); ++slot) {
                for (const int t : table[slot]) {
                    if (t == kNoTarget) continue;
                    const std::int64_t lo = targets[t].lo;
                    const std::int64_t hi = std::min<std::int64_t>(targets[t].hi, std::numeric_limits<std::int32_t>::max());
                    const bool first = range_lo[slot] > range_hi[slot];
                    range_lo[slot] = static_cast<std::int32_t>(first ? lo : std::min<std::int64_t>(range_lo[slot], lo));
                    range_hi[slot] = static_cast<std::int32_t>(first ? hi : std::max<std::int64_t>(range_hi[slot], hi));
                }
            }
            const std::int32_t *lo0 = range_lo.data(), *hi0 = range_hi.data();
            const std::int32_t *lo1 = range_lo.data() + k_, *hi1 = range_hi.data() + k_;
            for_each_chunk(n, nt_, [&](index_t ch, index_t b, index_t e) {
                try {
                    Thread& TH = thread();
                    auto& out = found[static_cast<std::size_t>(thread_index())];
                    index_t* hs = sub[static_cast<std::size_t>(thread_index())].data();
                    std::uint8_t* hit = TH.flag.data();
                    // (target, box i, X) of the values to gather: read at the end of the chunk,
                    // prefetched when found (float64 rows: the pass reads their float copy).
                    std::vector<std::tuple<int, index_t, int>> at;
                    for (index_t s0 = b; s0 < e; s0 += kBlock) {
                        const index_t m = std::min(e, s0 + kBlock) - s0;
                        const L* lab = labels_.data() + s0;
                        const std::uint8_t any = flag_block(lab, s0, m, lo0, hi0, lo1, hi1, hit);
                        if (!any) continue;
                        detail::for_each_flagged(hit, m, [&](index_t t) {
                            const index_t i = s0 + t;
                            const int c = label(i);
                            for (int X = 0; X < 2; ++X) {
                                if (!(hit[t] >> X & 1)) continue;
                                const std::uint32_t key = p_.key(X, i);
                                for (const int tg : table[static_cast<std::size_t>(X) * k_ + c]) {
                                    if (tg == kNoTarget) break;
                                    const detail::SelectTarget& T = targets[tg];
                                    const std::uint32_t off = key - T.lo;
                                    if (off > T.hi - T.lo) continue;
                                    if (gathers(T)) {
                                        p_.prefetch_row(i);
                                        at.emplace_back(tg, i, X);
                                    } else {
                                        const int fine = std::max(0, T.shift - kRefineBits);
                                        ++hs[static_cast<std::size_t>(role[tg]) * kSub + (off >> fine)];
                                    }
                                    break;
                                }
                            }
                        });
                    }
                    for (const auto& [tg, i, X] : at) out.emplace_back(tg, p_.value(X, i));
                } catch (...) {
                    error[ch] = std::current_exception();
                }
            });
            for (auto& e : error)
                if (e) std::rethrow_exception(e);
            // The gathered values, target by target; the ranks selected among them. The values
            // of a target are the same set whatever the threads, so the selection is too.
            std::vector<std::vector<double>> values(targets.size());
            for (auto& list : found)
                for (const auto& [t, v] : list) values[t].push_back(v);
            for (const int t : gather) {
                detail::SelectTarget& T = targets[t];
                std::vector<double>& v = values[t];
                if (v.empty()) {  // only if the values changed behind the fit's back
                    T.value[0] = T.value[1] = Problem::key_value(T.lo);
                    continue;
                }
                const index_t r0 = std::clamp<index_t>(T.rank[0], 1, static_cast<index_t>(v.size())) - 1;
                if (T.keep) {
                    std::sort(v.begin(), v.end());
                    T.value[0] = v[r0];
                    T.value[1] = v[std::min<index_t>(r0 + 1, static_cast<index_t>(v.size()) - 1)];
                    T.kept = std::move(v);
                    continue;
                }
                std::nth_element(v.begin(), v.begin() + r0, v.end());
                T.value[0] = v[r0];
                if (T.ranks == 2) {
                    T.value[1] = r0 + 1 < static_cast<index_t>(v.size()) ? *std::min_element(v.begin() + r0 + 1, v.end())
                                                                         : v[r0];
                }
            }
            // Refined targets: each rank goes to its finer bin (a second rank may fall in the next
            // non-empty one: then it becomes a target of its own).
            std::vector<int> next;
            for (std::size_t r = 0; r < refine.size(); ++r) {
                const int t = refine[r];
                std::vector<index_t> h(kSub, 0);
                for (auto& s : sub)
                    for (std::size_t j = 0; j < kSub; ++j) h[j] += s[r * kSub + j];
                const detail::SelectTarget parent = targets[t];
                const int fine = std::max(0, parent.shift - kRefineBits);
                // parent narrowed to its finer bin j, holding the rank-th of that bin
                auto narrowed = [&](std::size_t j, index_t rank) {
                    detail::SelectTarget u = parent;
                    u.lo = parent.lo + (static_cast<std::uint32_t>(j) << fine);
                    u.hi = u.lo + ((std::uint32_t{1} << fine) - 1);
                    u.shift = fine;
                    u.count = h[j];
                    u.rank[0] = rank;
                    u.ranks = 1;
                    return u;
                };
                const auto [j0, q0] = detail::rank_in_counts(h.data(), kSub, parent.rank[0]);
                targets[t] = narrowed(j0, q0);
                next.push_back(t);
                if (parent.ranks == 2) {
                    const auto [j1, q1] = detail::rank_in_counts(h.data(), kSub, parent.rank[1]);
                    if (j1 == j0) {
                        targets[t].rank[1] = q1;
                        targets[t].ranks = 2;
                    } else {
                        // The upper rank is the first of a later bin: a separate target whose
                        // value is copied back below.
                        targets.push_back(narrowed(j1, q1));
                        split.push_back({t, static_cast<int>(targets.size()) - 1});
                        next.push_back(static_cast<int>(targets.size()) - 1);
                    }
                }
            }
            pending = std::move(next);
        }
        // Upper ranks resolved in targets of their own go back to their parent's second value.
        for (auto it = split.rbegin(); it != split.rend(); ++it) {
            targets[it->first].value[1] = targets[it->second].value[0];
            targets[it->first].ranks = 2;
        }
    }

    // Empty clusters, in index order, take the boxes with the lowest IoU to their nearest
    // anchor, in increasing order of that IoU (ties by index), one box each.
    void fill_empty(const WhSet& anchors, const std::vector<int>& empty, WhSet& out) {
        const index_t n = p_.size();
        const std::size_t e = std::min<std::size_t>(empty.size(), static_cast<std::size_t>(n));
        using Key = std::pair<double, index_t>;  // (best IoU, index)
        // The e smallest keys of every chunk, then of all of them.
        std::vector<std::vector<Key>> part(n_chunks(n));
        const int k = static_cast<int>(anchors.size());
        p_.for_each_loaded_chunk(nt_, [&](index_t c, index_t b, index_t end, const double* w, const double* h,
                                          const double* a, double* q) {
            detail::best_iou_range(w, h, a, end - b, anchors.w.data(), anchors.h.data(), anchors.a.data(), k, q);
            std::vector<Key>& keys = part[c];
            keys.reserve(end - b);
            for (index_t i = b; i < end; ++i) keys.emplace_back(q[i - b], i);
            const std::size_t m = std::min(e, keys.size());
            std::partial_sort(keys.begin(), keys.begin() + m, keys.end());
            keys.resize(m);
            keys.shrink_to_fit();
        });
        std::vector<Key> all;
        for (const auto& keys : part) all.insert(all.end(), keys.begin(), keys.end());
        std::partial_sort(all.begin(), all.begin() + e, all.end());
        for (std::size_t t = 0; t < e; ++t) out.set(empty[t], p_.value(0, all[t].second), p_.value(1, all[t].second));
    }

    const Problem& p_;
    int k_;
    Update update_;
    int nt_;
    std::vector<L> labels_;
    std::vector<index_t> cnt_;        // members per cluster
    std::vector<index_t> changed_;    // per chunk, in the last assignment
    std::vector<double> part_;        // per chunk and cluster: kStats sums (mean without exact sums)
    bool exact_mean_ = false;         // the mean update from exact sums (Problem::exact_sums)
    bool slot_mean_ = false;          // ... moved by move_mean (one-byte labels)
#if FASTANCHOR_HAVE_INT128
    std::vector<int128_t> sum_w_, sum_h_;  // per cluster, in units of 2^sum_exp
#endif
    bool hist_median_ = false;
    int bins_ = 0;
    int shift_[2] = {0, 0};
    std::vector<std::uint32_t> hist_;  // [X][cluster][bin]
    std::vector<Cached> cache_;        // [X][cluster]
    std::vector<std::uint32_t> last_bin_;  // [X][cluster]: the lower median's bin at the last update
    std::vector<Thread> threads_;
    bool use_float_ = false;
    bool avx2_ = use_avx2();  // the AVX2 kernels (use_portable_kernels)
    std::array<float, detail::kMaxFixedK> faw_{}, fah_{}, faa_{};
    // bounds (float path only): the slack of every box, the drifts since the last full pass
    std::vector<std::uint16_t> slack_;
    std::vector<double> drift_;
    double drift_max_ = 0.0;
    std::array<float, detail::kMaxFixedK> base_{};
    std::array<std::uint16_t, 256> threshold_{};  // by label (one byte)
    WhSet prev_;
    bool first_ = true, bounds_valid_ = false, bounded_ = false, keep_bounds_ = false;
    int since_reset_ = 0;
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

// Adds wt_i * min(d2_i, (1 - IoU(box_i, c))^2) over [0, n) to the lanes acc (wt null: unit
// weights, lane i % kLanes); with Store, d2_i also takes that minimum (a float). The IoUs are
// computed in T: double from the exact values, or float from the scaled floats (within 1e-6 of
// the double ones, iou.hpp; k-means++ owes no exact IoU, and the float division is several times
// cheaper).
template <class T, bool Weighted, bool Store>
FASTANCHOR_CLONES void potential_t(const T* __restrict w, const T* __restrict h, float* __restrict d2,
                                   const double* __restrict wt, index_t n, T cw, T ch, double* __restrict acc) {
    constexpr int kLanes = 16;
    const T ca = cw * ch;
    auto add = [&](int lane, index_t i, T q) {
        const double d = 1.0 - static_cast<double>(q);
        const float v = std::min(d2[i], static_cast<float>(d * d));
        if (Store) d2[i] = v;
        acc[lane] += Weighted ? wt[i] * static_cast<double>(v) : static_cast<double>(v);
    };
    const index_t nb = n / kLanes * kLanes;
    for (index_t i = 0; i < nb; i += kLanes) {
        T q[kLanes];  // the IoUs first, in a loop of T alone: it vectorizes
        for (int l = 0; l < kLanes; ++l) {
            const T inter = std::min(w[i + l], cw) * std::min(h[i + l], ch);
            q[l] = inter / ((w[i + l] * h[i + l] + ca) - inter);
        }
        for (int l = 0; l < kLanes; ++l) add(l, i + l, q[l]);
    }
    for (index_t i = nb; i < n; ++i) {
        const T inter = std::min(w[i], cw) * std::min(h[i], ch);
        add(static_cast<int>(i - nb), i, inter / ((w[i] * h[i] + ca) - inter));
    }
}

#if FASTANCHOR_HAVE_AVX2
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
        const __m256 dd = _mm256_set_m128(_mm256_cvtpd_ps(_mm256_mul_pd(d_hi, d_hi)), _mm256_cvtpd_ps(_mm256_mul_pd(d_lo, d_lo)));
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
    if (nb < n) potential_t<float, Weighted, Store>(w + nb, h + nb, d2 + nb, Weighted ? wt + nb : nullptr, n - nb, cw, ch, acc);
}
#endif

// The potential of boxes [b, e) (one chunk) if box c were added to the anchors (Store: and lower
// d2 to it), in float when the problem has a float scale. Blocks of 1024 boxes are loaded into
// `buf` (4 * 1024 doubles).
template <bool Store>
double potential_of(const Problem& p, float* d2, index_t b, index_t e, index_t c, double* buf, bool avx2) {
    (void)avx2;  // (unused without the AVX2 forms)
    constexpr index_t kBlock = LloydThread::kBlock;
    double acc[16] = {};
    const bool use_float = p.has_float;
    const float cwf = use_float ? p.scaled(0, c) : 0.0f, chf = use_float ? p.scaled(1, c) : 0.0f;
    const double cw = p.value(0, c), ch = p.value(1, c);
    for (index_t s = b; s < e; s += kBlock) {
        const index_t m = std::min(e, s + kBlock) - s;
        const double* wt = p.weighted() ? p.weight + s : nullptr;
        if (use_float) {
            float* fw = reinterpret_cast<float*>(buf);
            float* fh = fw + kBlock;
            p.load_float(s, s + m, fw, fh);
#if FASTANCHOR_HAVE_AVX2
            if (avx2) {
                if (wt) potential_avx2<true, Store>(fw, fh, d2 + s, wt, m, cwf, chf, acc);
                else potential_avx2<false, Store>(fw, fh, d2 + s, wt, m, cwf, chf, acc);
                continue;
            }
#endif
            if (wt) potential_t<float, true, Store>(fw, fh, d2 + s, wt, m, cwf, chf, acc);
            else potential_t<float, false, Store>(fw, fh, d2 + s, wt, m, cwf, chf, acc);
        } else {
            double *w = buf, *h = buf + kBlock, *a = buf + 2 * kBlock;
            p.load(s, s + m, w, h, a);
            if (wt) potential_t<double, true, Store>(w, h, d2 + s, wt, m, cw, ch, acc);
            else potential_t<double, false, Store>(w, h, d2 + s, wt, m, cw, ch, acc);
        }
    }
    return lane_total(acc) + lane_total(acc + 8);
}

inline bool same_as_any(const WhSet& set, int count, double w, double h) {
    for (int j = 0; j < count; ++j)
        if (set.w[j] == w && set.h[j] == h) return true;
    return false;
}

}  // namespace detail

// k distinct boxes (by value), uniformly at random: a partial Fisher-Yates shuffle that skips
// repeats of an already chosen value. The shuffled positions are kept in a hash map (O(draws)
// memory), turned into a full array only if the draws come near n.
inline WhSet init_random(const Problem& p, int k, Rng& rng) {
    const index_t n = p.size();
    std::unordered_map<index_t, index_t> moved;
    std::vector<index_t> dense;
    auto at = [&](index_t i) {
        if (!dense.empty()) return dense[i];
        const auto it = moved.find(i);
        return it == moved.end() ? i : it->second;
    };
    auto put = [&](index_t i, index_t v) {
        if (!dense.empty()) dense[i] = v;
        else moved[i] = v;
    };
    WhSet out(k);
    int chosen = 0;
    for (index_t i = 0; i < n && chosen < k; ++i) {
        if (dense.empty() && static_cast<index_t>(moved.size()) > n / 8) {
            std::vector<index_t> all(n);
            for (index_t t = 0; t < n; ++t) all[t] = at(t);
            dense.swap(all);
            moved.clear();
        }
        const index_t j = i + static_cast<index_t>(rng.below(static_cast<std::uint64_t>(n - i)));
        const index_t b = at(j);
        put(j, at(i));  // position i is never read again
        const double w = p.value(0, b), h = p.value(1, b);
        if (detail::same_as_any(out, chosen, w, h)) continue;
        out.set(chosen++, w, h);
    }
    if (chosen < k) throw std::invalid_argument("k is larger than the number of distinct boxes");
    return out;
}

// Greedy k-means++ with D = 1 - best IoU: each step draws 2 + floor(ln k) candidates with
// probability proportional to weight * D^2 and keeps the one that lowers sum(weight * D^2) most.
// D^2 is kept per box as a float. portable: the portable potential even where the AVX2 one runs.
inline WhSet init_kmeanspp(const Problem& p, int k, Rng& rng, int n_threads, Monitor& mon, int run,
                           bool portable = false) {
    const bool avx2 = use_avx2(portable);
    const index_t n = p.size();
    const index_t nc = n_chunks(n);
    const int trials = 2 + static_cast<int>(std::log(static_cast<double>(k)));
    WhSet out(k);
    std::vector<float> d2(n, 1.0f);  // (1 - IoU)^2 <= 1
    std::vector<double> scratch(static_cast<std::size_t>(chunk_threads(n, n_threads)) * 4 * detail::LloydThread::kBlock);
    auto buf = [&]() { return scratch.data() + static_cast<std::size_t>(thread_index()) * 4 * detail::LloydThread::kBlock; };
    detail::ChunkedCumsum cs;
    cs.chunk_total.assign(nc, 0.0);
    auto box = [&](index_t i) {
        // A robust index: a search can only come back empty if the values changed meanwhile.
        return std::clamp<index_t>(i, 0, n - 1);
    };

    // First centre: drawn with probability proportional to the weight.
    index_t first;
    if (p.weighted()) {
        for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
            double s = 0.0;
            for (index_t i = b; i < e; ++i) s += p.weight[i];
            cs.chunk_total[c] = s;
        });
        const double total = std::accumulate(cs.chunk_total.begin(), cs.chunk_total.end(), 0.0);
        first = box(cs.search(n, rng.uniform() * total, [&](index_t i) { return p.weight[i]; }));
    } else {
        first = static_cast<index_t>(rng.below(static_cast<std::uint64_t>(n)));
    }
    out.set(0, p.value(0, first), p.value(1, first));
    // Adds box i as an anchor: lowers d2 and returns the new potential.
    auto lower_all = [&](index_t i) {
        for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
            cs.chunk_total[c] = detail::potential_of<true>(p, d2.data(), b, e, i, buf(), avx2);
        });
        return std::accumulate(cs.chunk_total.begin(), cs.chunk_total.end(), 0.0);
    };
    double pot = lower_all(first);

    std::vector<index_t> cand(trials);
    std::vector<double> part(static_cast<std::size_t>(nc) * trials);
    auto v = [&](index_t i) { return p.wt(i) * static_cast<double>(d2[i]); };
    for (int step = 1; step < k; ++step) {
        mon.tick("init", run, step);
        if (!(pot > 0.0)) {
            // Every box sits on a chosen anchor as far as floats can tell: take the first box
            // whose value is new (k <= number of distinct boxes is checked up front).
            index_t i = 0;
            while (i < n && detail::same_as_any(out, step, p.value(0, i), p.value(1, i))) ++i;
            if (i == n) throw std::invalid_argument("k is larger than the number of distinct boxes");
            out.set(step, p.value(0, i), p.value(1, i));
            pot = lower_all(i);
            continue;
        }
        for (int t = 0; t < trials; ++t) cand[t] = box(cs.search(n, rng.uniform() * pot, v));
        for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
            for (int t = 0; t < trials; ++t) {
                part[static_cast<std::size_t>(c) * trials + t] =
                    detail::potential_of<false>(p, d2.data(), b, e, cand[t], buf(), avx2);
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
        out.set(step, p.value(0, ci), p.value(1, ci));
        pot = lower_all(ci);
    }
    return out;
}

// Runs f(lloyd) with a Lloyd object whose label type fits k.
template <class F>
decltype(auto) with_lloyd(const Problem& p, int k, Update update, int n_threads, F&& f) {
    if (k < 255) {
        Lloyd<std::uint8_t> ll(p, k, update, n_threads);
        return f(ll);
    }
    Lloyd<std::int32_t> ll(p, k, update, n_threads);
    return f(ll);
}

// Whether the median update needs the sort orders (Lloyd uses histograms otherwise).
inline bool needs_orders(const double* weights, int k, Update update) {
    return update == Update::Median && (weights != nullptr || k > Lloyd<std::int32_t>::kMaxHistK);
}

// For tests: one Lloyd object driven through the given anchor sets. For each set s, assign()
// with it, then update(): the labels, the updated anchors and the pass that assign() took.
// sets: n_sets x k x 2 values. portable: the portable float kernels even where the AVX2 ones
// run (Lloyd::use_portable_kernels).
struct LloydTrace {
    std::vector<std::int32_t> labels;  // n_sets x n
    std::vector<double> updated;       // n_sets x k x 2
    std::vector<int> pass;             // n_sets: Lloyd::last_pass()
};

inline LloydTrace lloyd_trace(BoxRows rows, const double* weights, index_t n, const double* sets, int n_sets, int k,
                              Update update, int n_threads, bool portable = false) {
    const Problem p = Problem::make(rows, weights, n, needs_orders(weights, k, update), n_threads);
    LloydTrace t;
    t.labels.resize(static_cast<std::size_t>(n_sets) * n);
    t.updated.resize(static_cast<std::size_t>(n_sets) * k * 2);
    with_lloyd(p, k, update, n_threads, [&](auto& ll) {
        if (portable) ll.use_portable_kernels();
        for (int s = 0; s < n_sets; ++s) {
            const WhSet a = WhSet::from_rows(sets + static_cast<std::size_t>(s) * k * 2, k);
            ll.assign(a);
            t.pass.push_back(ll.last_pass());
            for (index_t i = 0; i < n; ++i) t.labels[static_cast<std::size_t>(s) * n + i] = ll.label(i);
            const WhSet u = ll.update(a);
            for (int j = 0; j < k; ++j) {
                t.updated[(static_cast<std::size_t>(s) * k + j) * 2] = u.w[j];
                t.updated[(static_cast<std::size_t>(s) * k + j) * 2 + 1] = u.h[j];
            }
        }
        return 0;
    });
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
    RunResult r;
    r.anchors = init;
    with_lloyd(p, k, o.update, o.n_threads, [&](auto& ll) {
        if (o.portable) ll.use_portable_kernels();
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
        return 0;
    });
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

// The whole fit. rows: the caller's N boxes (validated by the caller: finite, positive, with at
// least k distinct boxes), read in place; weights: N positive values or null; init_anchors: k x 2
// rows when o.init == Init::Given. labels: N slots for the labels, or null to return them in the
// output.
inline KMeansOutput kmeans_iou(BoxRows rows, const double* weights, index_t n, const KMeansOptions& o,
                               const double* init_anchors, Monitor& mon, std::int32_t* labels = nullptr) {
    if (n <= 0 || o.k <= 0 || o.k > n) throw std::invalid_argument("kmeans_iou: need 0 < k <= n");
    const Problem p = Problem::make(rows, weights, n, needs_orders(weights, o.k, o.update), o.n_threads);
    RunResult best;
    int best_run = 0;
    const int runs = o.init == Init::Given ? 1 : std::max(o.n_init, 1);
    for (int run = 0; run < runs; ++run) {
        Rng rng(derive_seed(o.seed, static_cast<std::uint64_t>(run)));
        WhSet init;
        switch (o.init) {
            case Init::Given: init = WhSet::from_rows(init_anchors, o.k); break;
            case Init::Random: init = init_random(p, o.k, rng); break;
            case Init::KMeansPP: init = init_kmeanspp(p, o.k, rng, o.n_threads, mon, run, o.portable); break;
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
    if (!labels) {
        out.labels.resize(n);
        labels = out.labels.data();
    }
    p.for_each_loaded_chunk(o.n_threads, [&](index_t, index_t b, index_t e, const double* w, const double* h,
                                             const double* a, double*) {
        detail::assign_rows(w, h, a, e - b, out.anchors.w.data(), out.anchors.h.data(), out.anchors.a.data(), o.k,
                            labels + b);
    });
    out.avg_iou = best.avg_iou;
    out.n_iter = best.n_iter;
    out.converged = best.converged;
    out.best_run = best_run;
    return out;
}

}  // namespace fastanchor
