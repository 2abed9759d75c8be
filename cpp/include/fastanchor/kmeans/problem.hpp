// fastanchor: the boxes of a k-means fit (Problem): the caller's rows read in place, and what
// the fit derives from their range once (the float scale of the ranking, the key range of the
// median's histograms, the units of the exact sums, the sort orders of the weighted median).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "../common.hpp"
#include "../iou.hpp"
#include "../sort.hpp"
#include "../weight_units.hpp"

namespace fastanchor {

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
    // 2^32 boxes is a 128-bit integer, exact whatever the order of the additions (docs/design.md,
    // "Fixed-point sums").
    bool exact_sums = false;
    // Exact weighted sums (weighted): the values as for exact_sums, each times its integer weight
    // (units()), summed in two halves of kSplitBits bits (MeanEngine).
    bool exact_wsums = false;
    bool fixed64 = false;    // every value's integer fits in 62 bits (most data: few binary orders)
    bool sums64 = false;     // fixed64, and n values' integers sum to less than 2^63 (fixed_max)
    double fixed_max = 0.0;  // 2^min(span, 62): no value's integer is larger
    int sum_exp = 0;
    double fixed_scale = 1.0;  // 2^-sum_exp, for fixed64
    static constexpr int kSumBits = 94;
    // Rows left out of the fit (skip_below > 0): a box whose width and height are both below
    // skip_below is absent. It is never labelled and never counted; the units of the exact sums
    // and the key range of the median's histograms are those of the present boxes alone, as for
    // a copy of them. (The float ranking's scale covers every row, so ranking an absent box
    // stays within float range; the labels are those of the exact rule whatever that scale.)
    double skip_below = 0.0;
    index_t present = 0;  // boxes not absent
    // For the sort-based median only (k above the histograms' limit): each
    // coordinate's order of the boxes (ties by index).
    std::vector<pos_t> order[2];
    // The integer weights of a weighted fit (its median's and its mean's): WeightUnits of
    // kWeightBits bits, so that the weights of up to 2^32 boxes sum exactly in 64 bits, as do the
    // histograms of the chunked fits (step.hpp).
    static constexpr int kWeightBits = 31;
    WeightUnits wunits;
    std::vector<std::uint32_t> wq;

    index_t size() const { return n; }
    bool skips() const { return skip_below > 0.0; }
    // Whether box i is left out (skips()); its exact values decide, as the caller's mask does.
    bool absent(index_t i) const { return value(0, i) < skip_below && value(1, i) < skip_below; }
    bool weighted() const { return weight != nullptr; }
    double wt(index_t i) const { return weight ? weight[i] : 1.0; }
    // Box i's integer weight (1 for unit weights; wq otherwise).
    std::uint32_t units(index_t i) const { return wq.empty() ? 1u : wq[i]; }
    double value(int X, index_t i) const { return f32 ? static_cast<double>(f32[2 * i + X]) : f64[2 * i + X]; }
    // Box i's value along X as a float, bit pattern read as an unsigned integer: monotone in the
    // value (float rounding is monotone, and positive floats order as their bits).
    std::uint32_t key(int X, index_t i) const {
        const float* fr = frows();  // (the copy holds the same roundings)
        return key_of(fr ? fr[2 * i + X] : static_cast<float>(f64[2 * i + X]));
    }
    // A float's bit pattern as an unsigned integer (the key of a value rounded to float).
    static std::uint32_t key_of(float f) {
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
        for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
            double* w = buf.data() + static_cast<std::size_t>(thread_index()) * 4 * kChunk;
            double *h = w + kChunk, *a = h + kChunk, *q = a + kChunk;
            load(b, e, w, h, a);
            f(c, b, e, w, h, a, q);
        });
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

    // The n rows of f64 rounded to float.
    static std::vector<float> to_float(const double* f64, index_t n, int n_threads) {
        std::vector<float> out(2 * static_cast<std::size_t>(n));
        for_each_chunk(n, n_threads, [&](index_t, index_t b, index_t e) {
            for (index_t t = 2 * b; t < 2 * e; ++t) out[t] = static_cast<float>(f64[t]);
        });
        return out;
    }

    // rows: the caller's boxes; weights: N values or null. need_orders: build the sort orders.
    // skip_below: leave out the boxes below it on both sides (0: none; unit weights only).
    static Problem make(BoxRows rows, const double* weights, index_t n, bool need_orders, int n_threads,
                        double skip_below = 0.0) {
        if (need_orders && static_cast<std::uint64_t>(n) > std::numeric_limits<pos_t>::max())
            throw std::invalid_argument("kmeans_iou's weighted median supports at most 4,294,967,295 boxes");
        if (skip_below > 0.0 && (weights || need_orders))
            throw std::invalid_argument("kmeans_iou: boxes are left out with unit weights and histograms only");
        Problem p;
        p.n = n;
        p.f32 = rows.f32;
        p.f64 = rows.f64;
        p.weight = weights;
        p.skip_below = skip_below > 0.0 ? skip_below : 0.0;
        p.present = n;
        if (n == 0) return p;
        // Per chunk: the range of the values of every row (both coordinates), and of the present
        // rows' values and each coordinate's keys.
        struct Range {
            double lo = std::numeric_limits<double>::infinity(), hi = 0.0;    // every row
            double plo = std::numeric_limits<double>::infinity(), phi = 0.0;  // present rows
            std::uint32_t klo[2] = {0xffffffffu, 0xffffffffu}, khi[2] = {0u, 0u};
            bool floats = true;  // every value is a float (float64 rows)
            index_t present = 0;
        };
        std::vector<Range> part(n_chunks(n));
        for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
            Range r;
            for (index_t i = b; i < e; ++i) {
                const bool here = !p.skips() || !p.absent(i);
                r.present += here;
                for (int X = 0; X < 2; ++X) {
                    const double v = p.value(X, i);
                    r.lo = std::min(r.lo, v);
                    r.hi = std::max(r.hi, v);
                    r.floats &= static_cast<double>(static_cast<float>(v)) == v;
                    if (!here) continue;
                    r.plo = std::min(r.plo, v);
                    r.phi = std::max(r.phi, v);
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
            all.plo = std::min(all.plo, r.plo);
            all.phi = std::max(all.phi, r.phi);
            all.floats &= r.floats;
            all.present += r.present;
            for (int X = 0; X < 2; ++X) {
                all.klo[X] = std::min(all.klo[X], r.klo[X]);
                all.khi[X] = std::max(all.khi[X], r.khi[X]);
            }
        }
        p.present = all.present;
        if (p.present == 0) throw std::invalid_argument("kmeans_iou: every box is left out");
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
        // Units: the last mantissa bit of the smallest present value, in the rows' own type.
        const int digits = p.f32 ? std::numeric_limits<float>::digits : std::numeric_limits<double>::digits;
        const int min_exp =
            p.f32 ? std::numeric_limits<float>::min_exponent - 1 : std::numeric_limits<double>::min_exponent - 1;
        p.sum_exp = std::max(std::ilogb(all.plo), min_exp) - (digits - 1);
        const int span = std::ilogb(all.phi) + 1 - p.sum_exp;  // bits of the largest value in those units
        const bool fits = span <= kSumBits && std::ilogb(all.phi) + 33 < 1000;
        p.exact_sums = !p.weighted() && fits;
        p.exact_wsums = p.weighted() && fits;
        p.fixed64 = span <= 62 && p.sum_exp >= -1022;  // (2^-sum_exp a finite double)
        p.fixed_scale = std::ldexp(1.0, -p.sum_exp);
        int n_bits = 0;  // n < 2^n_bits
        while (n_bits < 63 && (index_t{1} << n_bits) <= n) ++n_bits;
        p.sums64 = p.exact_sums && p.fixed64 && span + n_bits <= 63;
        p.fixed_max = std::ldexp(1.0, std::min(span, 62));
        p.fscale = std::ldexp(1.0, -std::ilogb(std::sqrt(all.lo) * std::sqrt(all.hi)));
        p.has_float = all.lo * p.fscale >= kFloatLo && all.hi * p.fscale <= kFloatHi &&
                      (p.f32 || (all.lo >= 0x1p-126 && all.hi <= 0x1p127));
        if (p.f64 && p.has_float) p.f64_as_f32 = to_float(p.f64, n, n_threads);
        if (p.weighted()) {
            double top = 0.0;
            for (index_t i = 0; i < n; ++i) top = std::max(top, weights[i]);
            if (!(top > 0.0) || !std::isfinite(top))
                throw std::invalid_argument("kmeans_iou: the weights must be finite and one of them positive");
            p.wunits = WeightUnits::of(top, kWeightBits);
            p.wq.resize(static_cast<std::size_t>(n));
            for_each_chunk(n, n_threads, [&](index_t, index_t b, index_t e) {
                for (index_t i = b; i < e; ++i) p.wq[i] = static_cast<std::uint32_t>(p.wunits(weights[i]));
            });
        }
        if (need_orders) {
            auto sort_coordinate = [&](int X) {
                p.order[X] =
                    p.f32 ? argsort_positive<pos_t>(p.f32 + X, n, 2) : argsort_positive<pos_t>(p.f64 + X, n, 2);
            };
            // The two coordinates on two threads.
            parallel_for(2, n_threads > 1 ? 2 : 1, [&](index_t X) { sort_coordinate(static_cast<int>(X)); });
        }
        return p;
    }
};

}  // namespace fastanchor
