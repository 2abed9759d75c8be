// fastanchor: the initialisations of a k-means fit: random distinct boxes, and greedy k-means++
// (its potential kernel potential_t; the AVX2 twin in init_avx2.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <unordered_map>
#include <vector>

#include "../common.hpp"
#include "../geometry.hpp"
#include "../iou.hpp"
#include "../random.hpp"
#include "problem.hpp"
#include "thread.hpp"

namespace fastanchor {
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

// The first k-means++ centre: a box drawn with probability proportional to its weight (the weights
// summed per chunk into cs, then searched in chunk order), or uniformly when the boxes are unweighted.
// P has weighted() and weight[]. The index is clamped: a search comes back empty only if the weights
// changed meanwhile.
template <class P>
index_t draw_first_centre(const P& p, index_t n, int n_threads, Rng& rng, ChunkedCumsum& cs) {
    if (!p.weighted()) return static_cast<index_t>(rng.below(static_cast<std::uint64_t>(n)));
    for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
        double s = 0.0;
        for (index_t i = b; i < e; ++i) s += p.weight[i];
        cs.chunk_total[c] = s;
    });
    const double total = std::accumulate(cs.chunk_total.begin(), cs.chunk_total.end(), 0.0);
    return std::clamp<index_t>(cs.search(n, rng.uniform() * total, [&](index_t i) { return p.weight[i]; }), 0, n - 1);
}

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
            q[l] = iou_wh(w[i + l], h[i + l], w[i + l] * h[i + l], cw, ch, ca);
        }
        for (int l = 0; l < kLanes; ++l) add(l, i + l, q[l]);
    }
    for (index_t i = nb; i < n; ++i) {
        add(static_cast<int>(i - nb), i, iou_wh(w[i], h[i], w[i] * h[i], cw, ch, ca));
    }
}

}  // namespace detail
}  // namespace fastanchor

#include "init_avx2.hpp"

namespace fastanchor {
namespace detail {

// The potential of boxes [b, e) (one chunk) if box c were added to the anchors (Store: and lower
// d2 to it), in float when the problem has a float scale. Blocks of 1024 boxes are loaded into
// `buf` (4 * 1024 doubles).
template <bool Store>
double potential_of(const Problem& p, float* d2, index_t b, index_t e, index_t c, double* buf, Isa isa) {
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
            if (wt)
                FASTANCHOR_SIMD(isa, (potential_avx2<true, Store>(fw, fh, d2 + s, wt, m, cwf, chf, acc)),
                                (potential_t<float, true, Store>(fw, fh, d2 + s, wt, m, cwf, chf, acc)));
            else
                FASTANCHOR_SIMD(isa, (potential_avx2<false, Store>(fw, fh, d2 + s, wt, m, cwf, chf, acc)),
                                (potential_t<float, false, Store>(fw, fh, d2 + s, wt, m, cwf, chf, acc)));
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
// D^2 is kept per box as a float.
inline WhSet init_kmeanspp(const Problem& p, int k, Rng& rng, int n_threads, Monitor& mon, int run) {
    const Isa isa = simd_isa();
    const index_t n = p.size();
    const index_t nc = n_chunks(n);
    const int trials = 2 + static_cast<int>(std::log(static_cast<double>(k)));
    WhSet out(k);
    std::vector<float> d2(n, 1.0f);  // (1 - IoU)^2 <= 1
    std::vector<double> scratch(static_cast<std::size_t>(chunk_threads(n, n_threads)) * 4 *
                                detail::LloydThread::kBlock);
    auto buf = [&]() {
        return scratch.data() + static_cast<std::size_t>(thread_index()) * 4 * detail::LloydThread::kBlock;
    };
    detail::ChunkedCumsum cs;
    cs.chunk_total.assign(nc, 0.0);
    auto box = [&](index_t i) {
        // A robust index: a search can only come back empty if the values changed meanwhile.
        return std::clamp<index_t>(i, 0, n - 1);
    };

    // First centre: drawn with probability proportional to the weight.
    const index_t first = detail::draw_first_centre(p, n, n_threads, rng, cs);
    out.set(0, p.value(0, first), p.value(1, first));
    // Adds box i as an anchor: lowers d2 and returns the new potential.
    auto lower_all = [&](index_t i) {
        for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
            cs.chunk_total[c] = detail::potential_of<true>(p, d2.data(), b, e, i, buf(), isa);
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
                    detail::potential_of<false>(p, d2.data(), b, e, cand[t], buf(), isa);
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

}  // namespace fastanchor
