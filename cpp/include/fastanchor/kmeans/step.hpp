// fastanchor: the Lloyd step as a kernel over one chunk of boxes, with explicit buffers (the shape
// of scikit-learn's lloyd_iter_chunked_dense): it labels the chunk's boxes against the anchors by
// the exact rule and, unless assign-only, adds the chunk's share of the update to partials that
// merge in any order with bit-identical totals (integers only):
//   - the mean: per cluster, the count and the exact integer sums of w and h in units of
//     2^sum_exp (the last mantissa bit of the chunk's smallest value); merging aligns the units to
//     the smaller exponent by exact shifts, so the totals are the in-memory fit's exact sums;
//   - the median: per cluster and coordinate, a histogram of the values' float bit patterns
//     (Problem::key) over a layout every chunk shares; the bin holding the median rank follows from
//     the merged counts, and a second pass gathers that bin's values (as HistMedian does in memory).
// Out-of-core or distributed fits (a map-reduce over chunks) and log-space fits plug in here:
// docs/design.md, "The Lloyd step kernel". The in-memory fit keeps its incremental engine
// (kmeans/lloyd.hpp: only the boxes that change cluster move their share), and uses this kernel,
// assign-only, for its final labels.
#pragma once

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "../common.hpp"
#include "../iou.hpp"
#include "problem.hpp"
#include "windows.hpp"

namespace fastanchor {

enum class StepMode { AssignOnly, Mean, Median };

// The median histograms' bins, the same for every chunk: along coordinate X, a key (a value's
// float bit pattern) falls in bin min((key - key_lo[X]) >> shift[X], bins - 1) (keys below key_lo
// in bin 0).
struct HistLayout {
    std::uint32_t key_lo[2] = {0, 0};
    int shift[2] = {0, 0};
    int bins = 1;

    std::size_t bin(int X, std::uint32_t key) const {
        const std::uint32_t d = key >= key_lo[X] ? (key - key_lo[X]) >> shift[X] : 0u;
        return std::min<std::size_t>(d, static_cast<std::size_t>(bins - 1));
    }
    // The first key of the bin holding `key` (0 for bin 0, which holds every key below key_lo).
    std::uint32_t bin_start(int X, std::uint32_t key) const {
        const std::size_t b = bin(X, key);
        return b == 0 ? 0u : key_lo[X] + static_cast<std::uint32_t>(b << shift[X]);
    }
};

// A chunk's (or a merged set of chunks') share of one Lloyd update, for k clusters.
struct StepPartials {
    static constexpr int kNoExp = INT_MAX;  // the units of sums over no box
    int k = 0;
    std::vector<std::int64_t> count;     // per cluster: boxes
    std::vector<std::int64_t> weight;    // per cluster: integer weights (Problem::units; count if unit)
    int sum_exp = kNoExp;                // Mean: sums in units of 2^sum_exp
    std::vector<int128_t> sum_w, sum_h;  // Mean: per cluster
    std::vector<std::uint64_t> hist;     // Median: [X][cluster][bin]
    int bins = 0;
    // Mean with integer weights (one chunk's, not merged here: the chunked fits merge them as
    // Python integers): per cluster, the sums of weight times the high and the low kWSplit bits of
    // each value's integer in units of 2^sum_exp, w then h ([X][cluster]).
    static constexpr int kWSplit = 47;
    std::vector<int128_t> wsum_hi, wsum_lo;

    StepPartials() = default;
    StepPartials(int k_, StepMode mode, const HistLayout* layout) : k(k_), count(k_, 0), weight(k_, 0) {
        if (mode == StepMode::Mean) {
            sum_w.assign(k_, 0);
            sum_h.assign(k_, 0);
        } else if (mode == StepMode::Median) {
            if (!layout) throw std::invalid_argument("lloyd_step: the median needs a histogram layout");
            bins = layout->bins;
            hist.assign(2 * static_cast<std::size_t>(k_) * bins, 0);
        }
    }

    // Adds o (the same k and mode) into this: integer additions, and exact shifts that bring both
    // sums to the smaller unit, so any order of merges gives the same totals, bit for bit. Throws
    // std::overflow_error when the aligned sums would not fit (data spanning more binary orders
    // than the exact sums hold).
    void merge(const StepPartials& o) {
        if (o.k != k || o.sum_w.size() != sum_w.size() || o.hist.size() != hist.size())
            throw std::invalid_argument("StepPartials::merge: partials of different fits");
        for (int c = 0; c < k; ++c) {
            count[c] += o.count[c];
            weight[c] += o.weight[c];
        }
        for (std::size_t j = 0; j < hist.size(); ++j) hist[j] += o.hist[j];
        if (sum_w.empty() || o.sum_exp == kNoExp) return;
        if (sum_exp == kNoExp) {
            sum_exp = o.sum_exp;
            sum_w = o.sum_w;
            sum_h = o.sum_h;
            return;
        }
        const int e = std::min(sum_exp, o.sum_exp);
        for (int c = 0; c < k; ++c) {
            sum_w[c] = shifted(sum_w[c], sum_exp - e) + shifted(o.sum_w[c], o.sum_exp - e);
            sum_h[c] = shifted(sum_h[c], sum_exp - e) + shifted(o.sum_h[c], o.sum_exp - e);
        }
        sum_exp = e;
    }

    // Cluster c's mean (count > 0), as the in-memory fit computes it from the same exact sums.
    double mean(int X, int c) const {
        const int128_t s = X == 0 ? sum_w[c] : sum_h[c];
        return std::ldexp(static_cast<double>(s), sum_exp) / static_cast<double>(count[c]);
    }

private:
    // Sums are non-negative and below 2^126: a shift that would pass that bound throws.
    static int128_t shifted(int128_t v, int by) {
        if (v == 0) return 0;
        int bits = 0;
        for (int128_t t = v; t > 0; t >>= 1) ++bits;
        if (bits + by > 126) throw std::overflow_error("lloyd_step: the exact sums overflow (data range too wide)");
        return v << by;
    }
};

namespace detail {

// A positive float or double as m * 2^e, m its integer mantissa (with the implicit bit when normal).
template <class T>
inline void mantissa_exp(T v, std::uint64_t& m, int& e) {
    if constexpr (sizeof(T) == 4) {
        std::uint32_t bits;
        std::memcpy(&bits, &v, sizeof bits);
        const int field = static_cast<int>((bits >> 23) & 0xff);
        m = field == 0 ? (bits & 0x7fffffu) : ((bits & 0x7fffffu) | 0x800000u);
        e = (field == 0 ? 1 : field) - 150;
    } else {
        std::uint64_t bits;
        std::memcpy(&bits, &v, sizeof bits);
        const int field = static_cast<int>((bits >> 52) & 0x7ff);
        const std::uint64_t frac = bits & ((std::uint64_t{1} << 52) - 1);
        m = field == 0 ? frac : frac | (std::uint64_t{1} << 52);
        e = (field == 0 ? 1 : field) - 1075;
    }
}

// The smallest and largest exponent e of the chunk's values m * 2^e (mantissa_exp): its units.
template <class T>
void exponent_range(const T* __restrict rows, index_t n, int& e_min, int& e_max) {
    e_min = StepPartials::kNoExp;
    e_max = INT_MIN;
    for (index_t t = 0; t < 2 * n; ++t) {
        std::uint64_t m;
        int e;
        mantissa_exp(rows[t], m, e);
        e_min = std::min(e_min, e);
        e_max = std::max(e_max, e);
    }
}

// The weighted mean's partials of a chunk (StepPartials::wsum_hi, wsum_lo) into `out`, in the
// chunk's units: its values' integers below 2^(2 kWSplit), each half times a weight below 2^31,
// summed over fewer than 2^32 boxes within 2^110.
template <class T, class L>
void weighted_mean_rows(const T* __restrict rows, index_t n, const L* __restrict labels,
                        const std::uint32_t* __restrict units, int k, StepPartials& out) {
    constexpr int kDigits = sizeof(T) == 4 ? 24 : 53;
    constexpr int kSplit = StepPartials::kWSplit;
    int e_min, e_max;
    exponent_range(rows, n, e_min, e_max);
    if (n > 0 && ((e_max - e_min) + kDigits > 2 * kSplit || static_cast<std::uint64_t>(n) >> 32 != 0))
        throw std::overflow_error("lloyd_step: the chunk's values span too many binary orders for exact weighted sums");
    out.wsum_hi.assign(2 * static_cast<std::size_t>(k), 0);
    out.wsum_lo.assign(2 * static_cast<std::size_t>(k), 0);
    constexpr int128_t kMask = (int128_t{1} << kSplit) - 1;
    for (index_t i = 0; i < n; ++i) {
        for (int X = 0; X < 2; ++X) {
            std::uint64_t m;
            int e;
            mantissa_exp(rows[2 * i + X], m, e);
            const int128_t v = static_cast<int128_t>(m) << (e - e_min), u = units[i];
            const std::size_t j = static_cast<std::size_t>(X) * k + labels[i];
            out.wsum_hi[j] += u * (v >> kSplit);
            out.wsum_lo[j] += u * (v & kMask);
        }
    }
    if (n > 0) out.sum_exp = e_min;
}

template <class T, class L>
void accumulate_rows(const T* __restrict rows, index_t n, const L* __restrict labels, int k, StepMode mode,
                     const HistLayout* layout, const std::uint32_t* units, StepPartials& out);

template <class T>
void lloyd_step_rows(const T* __restrict rows, index_t n, const WhSet& anchors, std::int32_t* __restrict labels,
                     StepMode mode, const HistLayout* layout, const std::uint32_t* units, StepPartials& out) {
    const int k = static_cast<int>(anchors.size());
    // IN rows -> OUT labels: the exact rule (highest IoU, lowest index on ties), block by block.
    constexpr index_t kBlock = 1024;
    double w[kBlock], h[kBlock], a[kBlock];
    for (index_t s = 0; s < n; s += kBlock) {
        const index_t m = std::min(n - s, kBlock);
        for (index_t t = 0; t < m; ++t) {
            w[t] = static_cast<double>(rows[2 * (s + t)]);
            h[t] = static_cast<double>(rows[2 * (s + t) + 1]);
            a[t] = w[t] * h[t];
        }
        assign_rows(w, h, a, m, anchors.w.data(), anchors.h.data(), anchors.a.data(), k, labels + s);
    }
    if (mode == StepMode::AssignOnly) return;
    accumulate_rows(rows, n, labels, k, mode, layout, units, out);
}

// A chunk's partials of its labels (the counts and weights, the median's histograms or the
// mean's exact sums) into `out`. L: the label type (int32, or a chunk state's one-byte labels).
template <class T, class L>
void accumulate_rows(const T* __restrict rows, index_t n, const L* __restrict labels, int k, StepMode mode,
                     const HistLayout* layout, const std::uint32_t* units, StepPartials& out) {
    for (index_t i = 0; i < n; ++i) {
        ++out.count[labels[i]];
        out.weight[labels[i]] += units ? units[i] : 1;
    }
    if (mode == StepMode::Median) {
        for (index_t i = 0; i < n; ++i) {
            const std::uint64_t u = units ? units[i] : 1;
            for (int X = 0; X < 2; ++X) {
                const std::uint32_t key = Problem::key_of(static_cast<float>(rows[2 * i + X]));
                out.hist[(static_cast<std::size_t>(X) * k + labels[i]) * layout->bins + layout->bin(X, key)] += u;
            }
        }
        return;
    }
    // Mean: the chunk's units (its smallest exponent), then the exact sums in them.
    constexpr int kDigits = sizeof(T) == 4 ? 24 : 53;
    if (units) {
        weighted_mean_rows(rows, n, labels, units, k, out);
        return;
    }
    StepPartials mine(k, StepMode::Mean, nullptr);
    int e_min, e_max;
    exponent_range(rows, n, e_min, e_max);
    if (n > 0 && (e_max - e_min) + kDigits + 33 > 126)
        throw std::overflow_error("lloyd_step: the chunk's values span too many binary orders for exact sums");
    for (index_t i = 0; i < n; ++i) {
        for (int X = 0; X < 2; ++X) {
            std::uint64_t m;
            int e;
            mantissa_exp(rows[2 * i + X], m, e);
            const int128_t v = static_cast<int128_t>(m) << (e - e_min);
            (X == 0 ? mine.sum_w : mine.sum_h)[labels[i]] += v;
        }
    }
    if (n > 0) mine.sum_exp = e_min;
    mine.count.assign(k, 0);  // (counted above, into out)
    mine.weight.assign(k, 0);
    out.merge(mine);
}

}  // namespace detail

// One Lloyd step over a chunk of n boxes.
//   rows      IN READ-ONLY  the chunk's n rows (w, h): finite positive float32 or float64
//                           (exactly one pointer of BoxRows set)
//   anchors   IN READ-ONLY  the k anchors of this step
//   labels    OUT           n labels (the exact rule: highest IoU, lowest index on ties)
//   mode      IN            AssignOnly (labels only), Mean or Median (and the chunk's partials)
//   layout    IN READ-ONLY  the median's histogram layout, shared by every chunk (Median only)
//   partials  IN/OUT        the chunk's share added (StepPartials::merge), made with the same k and
//                           mode; untouched for AssignOnly
//   units     IN READ-ONLY  n integer weights (Problem::units; null: unit weights), which the
//                           median's histograms and the clusters' weights add up; the weighted
//                           mean's partials (wsum_hi, wsum_lo) are one chunk's, into empty partials
inline void lloyd_step(BoxRows rows, index_t n, const WhSet& anchors, std::int32_t* labels, StepMode mode,
                       const HistLayout* layout, StepPartials* partials, const std::uint32_t* units = nullptr) {
    if (anchors.size() < 1) throw std::invalid_argument("lloyd_step: need at least one anchor");
    const auto k = static_cast<std::size_t>(anchors.size());
    const bool fits = partials && static_cast<std::size_t>(partials->k) == k && partials->count.size() == k;
    if (mode != StepMode::AssignOnly && !fits)
        throw std::invalid_argument("lloyd_step: partials for k anchors are needed");
    if (mode == StepMode::Median && (!layout || partials->bins != layout->bins))
        throw std::invalid_argument("lloyd_step: the median needs the partials' histogram layout");
    if (mode == StepMode::Mean && units && !(partials->wsum_hi.empty() && partials->sum_exp == StepPartials::kNoExp))
        throw std::invalid_argument("lloyd_step: a weighted mean's partials are one chunk's");
    StepPartials none;
    StepPartials& out = partials ? *partials : none;
    if (rows.f32) detail::lloyd_step_rows(rows.f32, n, anchors, labels, mode, layout, units, out);
    else detail::lloyd_step_rows(rows.f64, n, anchors, labels, mode, layout, units, out);
}

// A chunk's partials from labels it already has (a ChunkLloyd's, weighted): what lloyd_step adds
// after labelling, into `out` (made for k anchors and the mode; fresh for a weighted mean).
template <class L>
void accumulate_partials(BoxRows rows, index_t n, const L* labels, int k, StepMode mode, const HistLayout* layout,
                         const std::uint32_t* units, StepPartials& out) {
    if (mode == StepMode::AssignOnly) return;
    if (rows.f32) detail::accumulate_rows(rows.f32, n, labels, k, mode, layout, units, out);
    else detail::accumulate_rows(rows.f64, n, labels, k, mode, layout, units, out);
}

// The median's selection pass over a chunk (python/fastanchor/_chunked.py, median_update): for each
// target t (a median rank, 0 or 1), coordinate X and cluster c, slot j = (t * 2 + X) * k + c, with
// mode[j] = 1 the values of cluster c along X whose float32 keys lie in [first[j], last[j]]
// (appended to values[t * 2 + X] with their labels, in row order), with mode[j] = 2 their
// histogram over `bins` bins of 2^shift[j] keys from first[j] (hist: [t][X][c][bin], added to);
// mode 0: nothing. One unsigned comparison per value finds the rare ones in either target's range.
// With integer weights (units, not null): each gathered value's weight goes to wts[t * 2 + X], and
// the histograms add weights.
struct SelectPlan {
    const std::int64_t* first = nullptr;
    const std::int64_t* last = nullptr;
    const std::int64_t* shift = nullptr;
    const std::int8_t* mode = nullptr;
    int bins = 1;
};

template <class L>
void select_values(BoxRows rows, index_t n, const L* labels, int k, const SelectPlan& plan,
                   std::vector<double> (&values)[4], std::vector<std::int32_t> (&labs)[4], std::uint64_t* hist,
                   const std::uint32_t* units = nullptr, std::vector<std::uint32_t>* wts = nullptr) {
    const std::size_t slots = 2 * static_cast<std::size_t>(k);
    // Per (X, c): the keys [lo, lo + span] that either target asks for (span 2^32 - 1 and lo 0
    // would pass all; lo = 2^32 - 1 with span 0 passes none but a NaN's key).
    std::vector<std::uint32_t> lo(slots, 0xFFFFFFFFu), span(slots, 0);
    for (int X = 0; X < 2; ++X) {
        for (int c = 0; c < k; ++c) {
            std::int64_t a = INT64_MAX, b = -1;
            for (int t = 0; t < 2; ++t) {
                const std::size_t j = (static_cast<std::size_t>(t) * 2 + X) * k + c;
                if (plan.mode[j] == 0 || plan.first[j] > plan.last[j]) continue;
                a = std::min(a, plan.first[j]);
                b = std::max(b, plan.last[j]);
            }
            if (b < 0) continue;
            const std::size_t s = static_cast<std::size_t>(X) * k + c;
            lo[s] = static_cast<std::uint32_t>(std::max<std::int64_t>(a, 0));
            span[s] = static_cast<std::uint32_t>(std::min<std::int64_t>(b, 0xFFFFFFFF) - lo[s]);
        }
    }
    for (index_t i = 0; i < n; ++i) {
        const int c = static_cast<int>(labels[i]);
        for (int X = 0; X < 2; ++X) {
            const std::size_t s = static_cast<std::size_t>(X) * k + c;
            const double v = rows.f32 ? static_cast<double>(rows.f32[2 * i + X]) : rows.f64[2 * i + X];
            const std::uint32_t key = Problem::key_of(static_cast<float>(v));
            if (__builtin_expect(key - lo[s] > span[s], 1)) continue;
            for (int t = 0; t < 2; ++t) {
                const std::size_t j = (static_cast<std::size_t>(t) * 2 + X) * k + c;
                if (plan.mode[j] == 0 || key < plan.first[j] || key > plan.last[j]) continue;
                if (plan.mode[j] == 1) {
                    values[t * 2 + X].push_back(v);
                    labs[t * 2 + X].push_back(c);
                    if (units) wts[t * 2 + X].push_back(units[i]);
                } else {
                    const std::int64_t b =
                        std::min<std::int64_t>((key - plan.first[j]) >> plan.shift[j], plan.bins - 1);
                    hist[j * static_cast<std::size_t>(plan.bins) + static_cast<std::size_t>(b)] += units ? units[i] : 1;
                }
            }
        }
    }
}

}  // namespace fastanchor
