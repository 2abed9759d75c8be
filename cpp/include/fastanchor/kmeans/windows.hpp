// fastanchor: the median's key windows over chunks. A chunked fit puts a window of keys around
// each cluster's anchor along each coordinate; a Lloyd pass gathers the chunk's values in it
// (gather_windows), and the values of every chunk, merged (merge_windows), give each median rank
// that falls in its window without a selection pass. python/fastanchor/_chunked.py, Windows and
// median_update; docs/design.md, "The Lloyd step kernel".
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include "../common.hpp"
#include "../simd.hpp"
#include "problem.hpp"
#include "ranges.hpp"

namespace fastanchor {

// The values of a chunk's boxes in each slot's key window, run-length coded: per slot (X * k + c,
// ascending), its distinct values ascending with their counts (gather_windows; with integer
// weights, the sums of the weights of each value's boxes).
struct WindowValues {
    std::vector<double> values;
    std::vector<std::int64_t> counts;
    std::vector<std::int32_t> slots;
};

namespace detail {

template <class T, class L>
void gather_windows_rows(const T* __restrict rows, index_t n, const L* __restrict labels, int k,
                         const std::uint32_t* lo_in, const std::uint32_t* hi_in, const std::uint32_t* from_in,
                         index_t cap, WindowValues& out, std::int64_t* below, std::int64_t* overflow,
                         const std::uint32_t* units) {
    const std::size_t slots = 2 * static_cast<std::size_t>(k);
    // The rare keys in [from, hi] of their cluster's window are flagged a block of rows at a time
    // (flag_in_ranges: branch-free, in AVX2 for float32 rows and one-byte labels), then visited:
    // those below lo are counted, the rest gathered. Keys compare as int32, as the flags do: a
    // valid side (positive, finite) has a key below 2^31.
    std::vector<std::int32_t> bound[4];  // [from, hi] of width then height, per cluster
    for (auto& v : bound) v.assign(static_cast<std::size_t>(k), 0);
    std::vector<std::uint32_t> lo(lo_in, lo_in + slots);
    for (int X = 0; X < 2; ++X) {
        for (int c = 0; c < k; ++c) {
            const std::size_t j = static_cast<std::size_t>(X) * k + c;
            constexpr std::uint32_t kTop = 0x7FFFFFFFu;
            const bool none = lo[j] > hi_in[j] || std::min(from_in[j], lo[j]) > kTop;
            bound[2 * X][c] = none ? 1 : static_cast<std::int32_t>(std::min(from_in[j], lo[j]));
            bound[2 * X + 1][c] = none ? 0 : static_cast<std::int32_t>(std::min(hi_in[j], kTop));
        }
    }
    std::vector<std::int64_t> under(slots, 0);
    // The gathered values with their weights: for float32 rows, key << 32 | weight, which sorts by
    // value as an integer (a valid side's key orders as its value); for float64 rows, pairs.
    constexpr bool kF32 = std::is_same_v<T, float>;
    using Entry = std::conditional_t<kF32, std::uint64_t, std::pair<double, std::uint32_t>>;
    std::vector<std::vector<Entry>> in(slots);
    // A window that collects far more values than its cap of distinct ones stops collecting
    // (then it overflows, unless so many were repeats): a window misplaced in dense data costs
    // little more than a full one.
    const std::size_t limit = static_cast<std::size_t>(cap) * 8 + 1024;
    std::vector<char> full(slots, 0);
    // A flagged row i: its flagged values (bit X of flags) below lo counted, the others gathered.
    auto visit = [&](index_t i, unsigned flags) {
        const std::size_t c = static_cast<std::size_t>(labels[i]);
        const std::uint32_t u = units ? units[i] : 1u;
        for (int X = 0; X < 2; ++X) {
            if (!(flags >> X & 1u)) continue;
            const std::size_t j = static_cast<std::size_t>(X) * k + c;
            const T v = rows[2 * i + X];
            const std::uint32_t key = Problem::key_of(static_cast<float>(v));
            if (key < lo[j]) {
                under[j] += u;
            } else if (!full[j]) {
                if constexpr (kF32) in[j].push_back(std::uint64_t{key} << 32 | u);
                else in[j].emplace_back(static_cast<double>(v), u);
                full[j] = in[j].size() > limit;
            }
        }
    };
    constexpr index_t kBlock = 4096;  // (a multiple of 8)
    std::vector<std::uint8_t> hit(static_cast<std::size_t>(kBlock), 0);
    const Isa isa = simd_isa();
    for (index_t b = 0; b < n; b += kBlock) {
        const index_t m = std::min(kBlock, n - b);
        std::uint8_t any;
        if constexpr (std::is_same_v<T, float>) {
            any = flag_ranges(isa, labels + b, rows + 2 * b, m, k, bound[0].data(), bound[1].data(), bound[2].data(),
                              bound[3].data(), hit.data());
        } else {
            any = flag_in_ranges(labels + b, rows + 2 * b, m, bound[0].data(), bound[1].data(), bound[2].data(),
                                 bound[3].data(), hit.data());
        }
        if (!any) continue;
        // The flags eight at a time (most words are zero), each set one by its lowest bit.
        for (index_t t0 = 0; t0 < m; t0 += 8) {
            std::uint64_t word;
            std::memcpy(&word, hit.data() + t0, sizeof word);
            if (m - t0 < 8) word &= (std::uint64_t{1} << (8 * (m - t0))) - 1;  // (past m: the last block's)
            while (word) {
                const int at = __builtin_ctzll(word) >> 3;
                const unsigned flags = static_cast<unsigned>(word >> (8 * at)) & 0xFFu;
                word &= ~(std::uint64_t{0xFF} << (8 * at));
                visit(b + t0 + at, flags);
            }
        }
    }
    for (std::size_t j = 0; j < slots; ++j) {
        below[j] += under[j];
        std::vector<Entry>& v = in[j];
        if (full[j]) {
            ++overflow[j];
            continue;
        }
        auto value = [](const Entry& e) -> double {
            if constexpr (kF32) return static_cast<double>(Problem::key_value(static_cast<std::uint32_t>(e >> 32)));
            else return e.first;
        };
        auto units_of = [](const Entry& e) -> std::uint32_t {
            if constexpr (kF32) return static_cast<std::uint32_t>(e);
            else return e.second;
        };
        std::sort(v.begin(), v.end());
        index_t distinct = 0;
        for (std::size_t q = 0; q < v.size(); ++q) distinct += q == 0 || value(v[q]) != value(v[q - 1]) ? 1 : 0;
        if (distinct > cap) {
            ++overflow[j];
            continue;
        }
        for (std::size_t q = 0; q < v.size(); ++q) {
            if (q > 0 && value(v[q]) == value(v[q - 1])) {
                out.counts.back() += units_of(v[q]);
                continue;
            }
            out.values.push_back(value(v[q]));
            out.counts.push_back(units_of(v[q]));
            out.slots.push_back(static_cast<std::int32_t>(j));
        }
    }
}

}  // namespace detail

// The median's speculative gather over a chunk: for each slot j = X * k + c, the values along X
// of cluster c's boxes whose key (the value's float32 bit pattern) lies in [lo[j], hi[j]] (lo > hi:
// no window), run-length coded into `out` (at most `cap` distinct values per slot, and at most
// 8 * cap + 1024 values, else none and overflow[j] counts the chunk); and the count of the
// cluster's keys in [from[j], lo[j]) added to below[j] (from: the first key of the histogram bin
// holding lo, whose counts give the rest of those below). Integers and sets of values: merged in
// any order they give each value's rank in its cluster. The chunked fits put each window around
// the cluster's anchor: once the anchors settle, the new median lies in it, and the Lloyd pass
// that gathers it needs no selection pass. labels: the chunk's labels (from lloyd_step, or a
// ChunkLloyd's). units: the rows' integer weights (null: unit weights), which the counts and
// below[j] then add instead of boxes, as the weighted median counts its ranks.
template <class L>
void gather_windows(BoxRows rows, index_t n, const L* labels, int k, const std::uint32_t* lo, const std::uint32_t* hi,
                    const std::uint32_t* from, index_t cap, WindowValues& out, std::int64_t* below,
                    std::int64_t* overflow, const std::uint32_t* units = nullptr) {
    if (rows.f32) detail::gather_windows_rows(rows.f32, n, labels, k, lo, hi, from, cap, out, below, overflow, units);
    else detail::gather_windows_rows(rows.f64, n, labels, k, lo, hi, from, cap, out, below, overflow, units);
}

// A run of WindowValues read in place (a chunk's gather, or a merge of several): its values,
// counts and slots, `size` of each, ordered by (slot, value) with no (slot, value) twice.
struct WindowRun {
    const double* values = nullptr;
    const std::int64_t* counts = nullptr;
    const std::int32_t* slots = nullptr;
    std::size_t size = 0;

    static WindowRun of(const WindowValues& w) {
        return {w.values.data(), w.counts.data(), w.slots.data(), w.values.size()};
    }
    // A copy of the run's values, counts and slots.
    WindowValues copy() const {
        WindowValues w;
        w.values.assign(values, values + size);
        w.counts.assign(counts, counts + size);
        w.slots.assign(slots, slots + size);
        return w;
    }
    // Whether (slot, value) increases strictly along the run.
    bool ordered() const {
        for (std::size_t i = 1; i < size; ++i) {
            if (slots[i] < slots[i - 1] || (slots[i] == slots[i - 1] && !(values[i] > values[i - 1]))) return false;
        }
        return true;
    }
};

namespace detail {

// The union of two runs into `out`, in (slot, value) order, the counts of a value in both added.
inline void merge_window_pair(const WindowRun& a, const WindowRun& b, WindowValues& out) {
    const std::size_t cap = a.size + b.size;
    out.values.resize(cap);
    out.counts.resize(cap);
    out.slots.resize(cap);
    double* __restrict v = out.values.data();
    std::int64_t* __restrict n = out.counts.data();
    std::int32_t* __restrict s = out.slots.data();
    std::size_t i = 0, j = 0, m = 0;
    // (branches: on random interleavings a branch-free form was a third slower, its loads waiting
    // on the last comparison)
    while (i < a.size && j < b.size) {
        const std::int32_t sa = a.slots[i], sb = b.slots[j];
        const double va = a.values[i], vb = b.values[j];
        if (sa == sb && va == vb) {
            v[m] = va;
            s[m] = sa;
            n[m] = a.counts[i++] + b.counts[j++];
        } else if (sa < sb || (sa == sb && va < vb)) {
            v[m] = va;
            s[m] = sa;
            n[m] = a.counts[i++];
        } else {
            v[m] = vb;
            s[m] = sb;
            n[m] = b.counts[j++];
        }
        ++m;
    }
    for (; i < a.size; ++i, ++m) {
        v[m] = a.values[i];
        n[m] = a.counts[i];
        s[m] = a.slots[i];
    }
    for (; j < b.size; ++j, ++m) {
        v[m] = b.values[j];
        n[m] = b.counts[j];
        s[m] = b.slots[j];
    }
    out.values.resize(m);
    out.counts.resize(m);
    out.slots.resize(m);
}

}  // namespace detail

// The union of the runs (each ordered by (slot, value), no (slot, value) twice: as gather_windows
// gives them), in that order, each value once with the sum of its counts: the windows' values of
// all the chunks, as one run. Pairs of runs are merged level by level (each level one linear pass
// over all values), so R runs of V values in all cost about V * log2(R) steps. Throws
// std::invalid_argument for a run out of order.
inline WindowValues merge_windows(const std::vector<WindowRun>& runs) {
    for (const WindowRun& r : runs) {
        if (!r.ordered()) throw std::invalid_argument("merge_windows: a run is not in (slot, value) order");
    }
    std::vector<WindowValues> level;
    std::vector<WindowRun> views = runs;
    if (views.empty()) return {};
    while (views.size() > 1) {
        std::vector<WindowValues> next((views.size() + 1) / 2);
        for (std::size_t q = 0; q + 1 < views.size(); q += 2)
            detail::merge_window_pair(views[q], views[q + 1], next[q / 2]);
        if (views.size() % 2 == 1) next.back() = views.back().copy();  // the odd one out goes up as it is
        level = std::move(next);
        views.clear();
        for (const WindowValues& w : level) views.push_back(WindowRun::of(w));
    }
    return level.empty() ? views.front().copy() : std::move(level.front());
}

}  // namespace fastanchor
