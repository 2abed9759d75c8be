// fastanchor: the sort-based weighted median of the Lloyd update (weighted boxes, or k above the
// histogram median's limit): one pass over each coordinate's sort order (Problem::order).
#pragma once

#include <cstdint>
#include <vector>

#include "../common.hpp"
#include "problem.hpp"

namespace fastanchor {
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
void median_pass(index_t n, int k, Get get, const double* total, const double* count, double* med, MedianScratch& s) {
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

// The weighted median update.
struct SortedMedian {
    // Weighted medians: one full pass per coordinate in that coordinate's order, the two on two
    // threads. Each cluster's total weight is summed in the same order as its cumulative sums.
    template <class Label>
    static void update(const Problem& p, int k, const std::vector<index_t>& cnt, Label label, int n_threads,
                       std::vector<double>& mw, std::vector<double>& mh) {
        const index_t n = p.size();
        std::vector<double> count(k);
        for (int c = 0; c < k; ++c) count[c] = static_cast<double>(cnt[c]);
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
        parallel_for(2, n_threads > 1 ? 2 : 1, [&](index_t X) { pass(static_cast<int>(X)); });
    }
};

}  // namespace fastanchor
