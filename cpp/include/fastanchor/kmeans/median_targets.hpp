// fastanchor: the histogram median's selection targets (detail::SelectTarget) and the rank
// lookups it shares with its cached runs: the bin holding a rank in a histogram of counts or
// weights, and the value holding a unit of weight among weighted values.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "../common.hpp"

namespace fastanchor {
namespace detail {

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

// A request for the rank-th smallest value (1-based; up to two consecutive ranks, in units of
// weight for a weighted fit) of cluster c along coordinate X among its boxes whose key
// (Problem::key) lies in [lo, hi]; `count` of its boxes do. A target of one histogram bin has
// hi = lo + 2^shift - 1 and may be refined into a finer bin; a `whole` target (a run of bins,
// gathered whole) may keep the values it gathered.
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
    std::vector<std::pair<double, std::uint32_t>> wkept;  // a weighted fit's: (value, units), sorted
};

// A value gathered for a target, with its box's integer weight.
struct Gathered {
    std::int32_t target;
    std::uint32_t units;
    double value;
};

// The value of the rank-th unit (1-based) of (value, units) pairs sorted by value; false when
// they hold fewer units.
inline bool unit_value(const std::vector<std::pair<double, std::uint32_t>>& v, index_t rank, double& out) {
    index_t cum = 0;
    for (const auto& [x, u] : v) {
        cum += static_cast<index_t>(u);
        if (cum >= rank) {
            out = x;
            return true;
        }
    }
    return false;
}

// A gather target's values of a weighted fit, `v` (value, units): the values of its ranks,
// counted in units of weight (kept sorted in T.wkept when T.keep); `empty` for both when nothing
// was gathered (only if the values changed behind the fit's back).
inline void select_weighted(SelectTarget& T, std::vector<std::pair<double, std::uint32_t>>& v, double empty) {
    if (v.empty()) {
        T.value[0] = T.value[1] = empty;
        return;
    }
    std::sort(v.begin(), v.end());
    index_t units = 0;
    for (const auto& e : v) units += static_cast<index_t>(e.second);
    const index_t r0 = std::clamp<index_t>(T.rank[0], 1, units);
    unit_value(v, r0, T.value[0]);
    unit_value(v, std::min<index_t>(r0 + 1, units), T.value[1]);
    if (T.keep) T.wkept = std::move(v);
}

}  // namespace detail
}  // namespace fastanchor
