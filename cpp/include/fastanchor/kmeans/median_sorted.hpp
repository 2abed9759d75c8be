// fastanchor: the sort-based weighted median of the Lloyd update (weighted boxes, or k above the
// histogram median's limit): one pass over each coordinate's sort order (Problem::order), with
// the boxes' integer weights (Problem::units, weight_units.hpp).
#pragma once

#include <cstdint>
#include <vector>

#include "../common.hpp"
#include "problem.hpp"

namespace fastanchor {
namespace detail {

// Weighted median of every cluster along one coordinate, in one pass over the boxes in
// ascending order of that coordinate (ties by input index). get(s, c, x, u) gives the s-th box's
// label, value and integer weight (Problem::units). For cluster c with total weight T and
// cumulative weights cum in that order: the first box with 2 * cum >= T; when 2 * cum == T
// exactly and that box is not the cluster's last, the mean of its value and the cluster's next
// one (numpy.median for unit weights). The integers are exact, so the medians depend only on the
// multiset of (value, weight) of each cluster: the chunked fits find the same ones from
// histograms of weights (step.hpp).
struct MedianScratch {
    std::vector<std::uint64_t> cum;
    std::vector<double> prev;
    std::vector<index_t> seen;
    std::vector<std::uint8_t> state;
    void reset(int k) {
        cum.assign(k, 0);
        prev.assign(k, 0.0);
        seen.assign(k, 0);
        state.assign(k, 0);
    }
};

template <class Get>
void median_pass(index_t n, int k, Get get, const std::uint64_t* total, const index_t* count, double* med,
                 MedianScratch& s) {
    s.reset(k);
    int remaining = 0;
    for (int c = 0; c < k; ++c) {
        if (count[c] > 0) ++remaining;
        else s.state[c] = 2;
    }
    for (index_t i = 0; i < n && remaining > 0; ++i) {
        std::int32_t c;
        double x;
        std::uint64_t u;
        get(i, c, x, u);
        const std::uint8_t st = s.state[c];
        if (st == 2) continue;
        if (st == 1) {
            med[c] = (s.prev[c] + x) / 2.0;
            s.state[c] = 2;
            --remaining;
            continue;
        }
        s.cum[c] += u;
        ++s.seen[c];
        // 2 * cum >= T, as cum >= T - cum (T < 2^63: no overflow).
        const std::uint64_t rest = total[c] - s.cum[c];
        if (s.cum[c] >= rest) {
            if (s.cum[c] == rest && s.seen[c] < count[c]) {
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

// The weighted median update.
struct SortedMedian {
    // Weighted medians: one full pass per coordinate in that coordinate's order, the two on two
    // threads. Each cluster's total weight is an exact integer sum, taken in box order.
    template <class Label>
    static void update(const Problem& p, int k, const std::vector<index_t>& cnt, Label label, int n_threads,
                       std::vector<double>& mw, std::vector<double>& mh) {
        const index_t n = p.size();
        std::vector<std::uint64_t> total(k, 0);
        for (index_t i = 0; i < n; ++i) total[label(i)] += p.units(i);
        detail::MedianScratch scratch[2];
        scratch[0].reset(k);
        scratch[1].reset(k);
        double* med[2] = {mw.data(), mh.data()};
        auto pass = [&](int X) {
            const Problem::pos_t* order = p.order[X].data();
            auto get = [&](index_t s, std::int32_t& c, double& x, std::uint64_t& u) {
                const index_t i = order[s];
                c = label(i);
                x = p.value(X, i);
                u = p.units(i);
            };
            detail::median_pass(n, k, get, total.data(), cnt.data(), med[X], scratch[X]);
        };
        parallel_for(2, n_threads > 1 ? 2 : 1, [&](index_t X) { pass(static_cast<int>(X)); });
    }
};

}  // namespace fastanchor
