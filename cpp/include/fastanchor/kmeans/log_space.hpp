// fastanchor: k-means of box shapes with the squared Euclidean distance in log space,
// d = (log w - log a_w)^2 + (log h - log a_h)^2; every anchor moves to the weighted geometric mean
// of its boxes (the weighted mean of their logs). This is the fixed point of the online-clustering
// term of "Anchor Box Optimization for Object Detection" (Zhong et al., WACV 2020).
//
// The contract, which tests/reference.py (kmeans_log) states in numpy:
// - Logs: computed once per box in double with std::log (the reference uses math.log, i.e. the same
//   libm, per element; numpy's vectorized np.log may differ in the last bit on some CPUs).
// - Fixed point: each log is rounded (half to even) to an integer number of units 2^-kLogFracBits:
//   q = nearbyint(ldexp(log x, kLogFracBits)); |log x| < 745 so |q| < 2^50.
// - Weights: unit weights count 1; otherwise weights are integers wq = max(1, nearbyint(ldexp(w,
//   s))) with s chosen so that the largest weight lies in [2^(kWeightBits-1), 2^kWeightBits).
//   Only weight ratios matter; a weight below 2^-kWeightBits of the largest counts as one unit.
// - Sums: per cluster W = sum wq and S = sum wq * q in 128-bit integers (|S| < 2^31 * 2^40 * 2^50 =
//   2^121 for up to 2^31 boxes): exact, so partials merge in any order.
// - Mean: log anchor = ldexp(double(S) / double(W), -kLogFracBits) (two correct roundings and one
//   division); a cluster with W = 0 keeps its anchor. A moved anchor is exp(log anchor) (std::exp);
//   one never moved keeps its given or drawn value.
// - Assignment: the distance in double, d = dw * dw + dh * dh with dw = lw - law (no FMA), lowest
//   anchor index on an exact tie.
// So results are bit-identical for any number of threads, and equal to the reference bit for bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "../common.hpp"
#include "../geometry.hpp"
#include "../iou.hpp"
#include "../random.hpp"
#include "../weight_units.hpp"
#include "init.hpp"
#include "problem.hpp"

namespace fastanchor {

inline constexpr int kLogFracBits = 40;
inline constexpr int kWeightBits = 40;
// Up to 2^31 boxes: 31 + kWeightBits + 50 bits of |S| must stay below 127.
static_assert(31 + kWeightBits + 50 < 127, "log-space sums must fit in 128-bit integers");

// The boxes of a log-space fit: logs and their fixed-point units, integer weights.
struct LogProblem {
    index_t n = 0;
    std::vector<double> lw, lh;        // log w, log h (std::log, double)
    std::vector<std::int64_t> qw, qh;  // round(ldexp(log, kLogFracBits))
    std::vector<std::int64_t> wq;      // integer weights (empty: unit weights)
    const double* weight = nullptr;    // the caller's weights (null: unit), for the inertia and draws
    BoxRows rows;                      // the caller's rows (an anchor drawn from a box keeps its value)

    double side(int c, index_t i) const {
        return rows.f32 ? static_cast<double>(rows.f32[2 * i + c]) : rows.f64[2 * i + c];
    }

    bool weighted() const { return weight != nullptr; }
    double wt(index_t i) const { return weight ? weight[i] : 1.0; }

    static std::int64_t fixed(double log_value) {
        return static_cast<std::int64_t>(std::nearbyint(std::ldexp(log_value, kLogFracBits)));
    }

    static LogProblem make(BoxRows rows, const double* weights, index_t n, int n_threads) {
        LogProblem p;
        p.n = n;
        p.lw.resize(n);
        p.lh.resize(n);
        p.qw.resize(n);
        p.qh.resize(n);
        p.weight = weights;
        p.rows = rows;
        for_each_chunk(n, n_threads, [&](index_t, index_t b, index_t e) {
            for (index_t i = b; i < e; ++i) {
                p.lw[i] = std::log(p.side(0, i));
                p.lh[i] = std::log(p.side(1, i));
                p.qw[i] = fixed(p.lw[i]);
                p.qh[i] = fixed(p.lh[i]);
            }
        });
        if (weights) {
            double wmax = 0.0;
            for (index_t i = 0; i < n; ++i) wmax = std::max(wmax, weights[i]);
            if (!(wmax > 0.0)) throw std::invalid_argument("kmeans_log: weights must be positive");
            const WeightUnits units = WeightUnits::of(wmax, kWeightBits);
            p.wq.resize(n);
            for (index_t i = 0; i < n; ++i) p.wq[i] = units(weights[i]);
        }
        return p;
    }

    double dist(index_t i, double aw, double ah) const {
        const double dw = lw[i] - aw, dh = lh[i] - ah;
        return dw * dw + dh * dh;
    }
};

// A chunk's share of one log-space Lloyd step: per cluster the integer weight total and the
// weighted fixed-point sums of the logs. Integers only: merge in any order, same totals.
struct LogPartials {
    std::vector<int128_t> weight, sum_w, sum_h;
    index_t changed = 0;

    explicit LogPartials(int k = 0) : weight(k, 0), sum_w(k, 0), sum_h(k, 0) {}

    void merge(const LogPartials& o) {
        for (std::size_t j = 0; j < weight.size(); ++j) {
            weight[j] += o.weight[j];
            sum_w[j] += o.sum_w[j];
            sum_h[j] += o.sum_h[j];
        }
        changed += o.changed;
    }

    // The log anchor of cluster j (only when weight[j] > 0).
    double mean(int coord, int j) const {
        const int128_t s = coord == 0 ? sum_w[j] : sum_h[j];
        return std::ldexp(static_cast<double>(s) / static_cast<double>(weight[j]), -kLogFracBits);
    }
};

// The nearest log anchor of box i (lowest index on an exact tie).
inline std::int32_t nearest_log(const LogProblem& p, index_t i, const std::vector<double>& aw,
                                const std::vector<double>& ah) {
    const int k = static_cast<int>(aw.size());
    std::int32_t best = 0;
    double bd = p.dist(i, aw[0], ah[0]);
    for (int j = 1; j < k; ++j) {
        const double d = p.dist(i, aw[j], ah[j]);
        if (d < bd) {
            bd = d;
            best = j;
        }
    }
    return best;
}

// The log-space Lloyd step over boxes [b, e): labels by the nearest log anchor (counting those
// that change), and, when `part` is given, the chunk's partial sums.
inline void log_step(const LogProblem& p, index_t b, index_t e, const std::vector<double>& aw,
                     const std::vector<double>& ah, std::int32_t* labels, LogPartials* part) {
    for (index_t i = b; i < e; ++i) {
        const std::int32_t j = nearest_log(p, i, aw, ah);
        if (!part) {
            labels[i] = j;
            continue;
        }
        if (labels[i] != j) ++part->changed;
        labels[i] = j;
        const std::int64_t wq = p.wq.empty() ? 1 : p.wq[i];
        part->weight[j] += wq;
        part->sum_w[j] += static_cast<int128_t>(wq) * p.qw[i];
        part->sum_h[j] += static_cast<int128_t>(wq) * p.qh[i];
    }
}

// Sum of weight * min_j d(box, anchor j) in chunk order (bit-identical for any thread count).
inline double log_inertia(const LogProblem& p, const std::vector<double>& aw, const std::vector<double>& ah,
                          int n_threads) {
    std::vector<double> part(static_cast<std::size_t>(n_chunks(p.n)), 0.0);
    for_each_chunk(p.n, n_threads, [&](index_t c, index_t b, index_t e) {
        double s = 0.0;
        for (index_t i = b; i < e; ++i) {
            const std::int32_t j = nearest_log(p, i, aw, ah);
            s += p.wt(i) * p.dist(i, aw[j], ah[j]);
        }
        part[static_cast<std::size_t>(c)] = s;
    });
    return std::accumulate(part.begin(), part.end(), 0.0);
}

// The anchors of a log-space fit: their logs, and their values (the given or drawn values until an
// update moves them, then the exp of their logs).
struct LogAnchors {
    std::vector<double> aw, ah, w, h;

    explicit LogAnchors(int k = 0) : aw(k, 0.0), ah(k, 0.0), w(k, 0.0), h(k, 0.0) {}

    void set_box(const LogProblem& p, int j, index_t b) {
        aw[j] = p.lw[b];
        ah[j] = p.lh[b];
        w[j] = p.side(0, b);
        h[j] = p.side(1, b);
    }
};

struct LogRun {
    LogAnchors a;
    std::vector<std::int32_t> labels;
    double inertia = 0.0;
    int n_iter = 0;
    bool converged = false;
};

namespace detail {

inline bool same_log_as_any(const std::vector<double>& aw, const std::vector<double>& ah, int count, double w,
                            double h) {
    for (int j = 0; j < count; ++j)
        if (aw[j] == w && ah[j] == h) return true;
    return false;
}

}  // namespace detail

// k boxes with distinct logs drawn uniformly (a partial Fisher-Yates shuffle skipping repeats).
inline void init_log_random(const LogProblem& p, int k, Rng& rng, LogAnchors& out) {
    std::vector<index_t> idx(p.n);
    std::iota(idx.begin(), idx.end(), index_t{0});
    int chosen = 0;
    for (index_t i = 0; i < p.n && chosen < k; ++i) {
        const index_t j = i + static_cast<index_t>(rng.below(static_cast<std::uint64_t>(p.n - i)));
        std::swap(idx[i], idx[j]);
        const index_t b = idx[i];
        if (detail::same_log_as_any(out.aw, out.ah, chosen, p.lw[b], p.lh[b])) continue;
        out.set_box(p, chosen++, b);
    }
    if (chosen < k) throw std::invalid_argument("k is larger than the number of boxes with distinct logs");
}

// Greedy k-means++ in log space: the first centre drawn proportionally to the weight, then each
// step draws 2 + floor(ln k) candidates with probability proportional to weight * D (D the
// squared log distance to the nearest chosen centre) and keeps the one that lowers sum(weight * D)
// most. Sums in chunk order.
inline void init_log_kmeanspp(const LogProblem& p, int k, Rng& rng, int n_threads, Monitor& mon, int run,
                              LogAnchors& out) {
    const index_t n = p.n, nc = n_chunks(n);
    const int trials = 2 + static_cast<int>(std::log(static_cast<double>(k)));
    std::vector<double> d(n, 0.0);
    detail::ChunkedCumsum cs;
    cs.chunk_total.assign(nc, 0.0);
    auto box = [&](index_t i) { return std::clamp<index_t>(i, 0, n - 1); };
    const index_t first = detail::draw_first_centre(p, n, n_threads, rng, cs);
    // Adds box c as a centre (Store: lowers d) and returns the potential, summed in chunk order.
    std::vector<double> part(static_cast<std::size_t>(nc) * trials);
    auto potential = [&](index_t c, bool store, bool fresh, double* out) {
        const double cw = p.lw[c], ch = p.lh[c];
        for_each_chunk(n, n_threads, [&](index_t ci, index_t b, index_t e) {
            double s = 0.0;
            for (index_t i = b; i < e; ++i) {
                const double x = p.dist(i, cw, ch);
                const double v = fresh ? x : std::min(d[i], x);
                if (store) d[i] = v;
                s += p.wt(i) * v;
            }
            out[ci] = s;
        });
    };
    out.set_box(p, 0, first);
    potential(first, true, true, cs.chunk_total.data());
    double pot = std::accumulate(cs.chunk_total.begin(), cs.chunk_total.end(), 0.0);
    std::vector<index_t> cand(trials);
    std::vector<double> tpart(static_cast<std::size_t>(nc));
    auto v = [&](index_t i) { return p.wt(i) * d[i]; };
    for (int step = 1; step < k; ++step) {
        mon.tick("init", run, step);
        index_t pick = -1;
        if (!(pot > 0.0)) {
            index_t i = 0;
            while (i < n && detail::same_log_as_any(out.aw, out.ah, step, p.lw[i], p.lh[i])) ++i;
            if (i == n) throw std::invalid_argument("k is larger than the number of boxes with distinct logs");
            pick = i;
        } else {
            for (int t = 0; t < trials; ++t) cand[t] = box(cs.search(n, rng.uniform() * pot, v));
            double best_pot = 0.0;
            for (int t = 0; t < trials; ++t) {
                potential(cand[t], false, false, tpart.data());
                const double s = std::accumulate(tpart.begin(), tpart.end(), 0.0);
                if (t == 0 || s < best_pot) {
                    best_pot = s;
                    pick = cand[t];
                }
            }
        }
        out.set_box(p, step, pick);
        potential(pick, true, false, cs.chunk_total.data());
        pot = std::accumulate(cs.chunk_total.begin(), cs.chunk_total.end(), 0.0);
    }
}

// Lloyd iterations in log space from the log anchors (aw, ah): assign; stop when no label
// changes; else move every anchor with boxes to their mean log (at most max_iter updates). With
// tol > 0, also stop once no log anchor moved by more than tol, after one last assignment.
inline LogRun lloyd_log(const LogProblem& p, LogAnchors init, int max_iter, double tol, int n_threads, Monitor& mon,
                        int run) {
    const int k = static_cast<int>(init.aw.size());
    const index_t nc = n_chunks(p.n);
    LogRun r;
    r.a = std::move(init);
    std::vector<double>& aw = r.a.aw;
    std::vector<double>& ah = r.a.ah;
    r.labels.assign(p.n, -1);
    std::vector<LogPartials> part(static_cast<std::size_t>(nc), LogPartials(k));
    for (;;) {
        for_each_chunk(p.n, n_threads, [&](index_t c, index_t b, index_t e) {
            LogPartials& pc = part[static_cast<std::size_t>(c)];
            pc = LogPartials(k);
            log_step(p, b, e, aw, ah, r.labels.data(), &pc);
        });
        LogPartials total(k);
        for (const LogPartials& pc : part) total.merge(pc);
        mon.tick("lloyd", run, r.n_iter);
        if (r.n_iter > 0 && total.changed == 0) {
            r.converged = true;
            break;
        }
        if (r.n_iter >= max_iter) break;
        double shift = 0.0;
        for (int j = 0; j < k; ++j) {
            if (total.weight[j] <= 0) continue;  // an empty cluster keeps its anchor
            const double nw = total.mean(0, j), nh = total.mean(1, j);
            shift = std::max({shift, std::abs(nw - aw[j]), std::abs(nh - ah[j])});
            aw[j] = nw;
            ah[j] = nh;
            r.a.w[j] = std::exp(nw);
            r.a.h[j] = std::exp(nh);
        }
        ++r.n_iter;
        if (tol > 0.0 && shift <= tol) {
            for_each_chunk(p.n, n_threads,
                           [&](index_t, index_t b, index_t e) { log_step(p, b, e, aw, ah, r.labels.data(), nullptr); });
            r.converged = true;
            break;
        }
    }
    r.inertia = log_inertia(p, aw, ah, n_threads);
    return r;
}

// Labels of rows by the nearest of the log anchors (aw, ah) (the fit's rule, for boxes left out of
// a fit such as zero-weight ones).
inline void log_assign(BoxRows rows, index_t n, const std::vector<double>& aw, const std::vector<double>& ah,
                       std::int32_t* labels, int n_threads) {
    const LogProblem p = LogProblem::make(rows, nullptr, n, n_threads);
    for_each_chunk(n, n_threads, [&](index_t, index_t b, index_t e) { log_step(p, b, e, aw, ah, labels, nullptr); });
}

struct LogKMeansOutput {
    WhSet anchors;                     // exp of the log anchors, sorted by area, ties by width
    std::vector<double> log_w, log_h;  // the log anchors in the same order
    std::vector<std::int32_t> labels;  // per box, indexing the sorted anchors
    double inertia = 0.0;
    int n_iter = 0;
    bool converged = false;
    int best_run = 0;
};

// The whole log-space fit: restarts (the lowest inertia wins, the first on a tie), init, Lloyd.
// init: 0 k-means++, 1 random, 2 given (init_anchors: k x 2 positive rows, logged with std::log).
inline LogKMeansOutput kmeans_log(BoxRows rows, const double* weights, index_t n, int k, int init,
                                  const double* init_anchors, int n_init, int max_iter, double tol, std::uint64_t seed,
                                  int n_threads, Monitor& mon) {
    if (n <= 0 || k <= 0 || k > n) throw std::invalid_argument("kmeans_log: need 0 < k <= n");
    const LogProblem p = LogProblem::make(rows, weights, n, n_threads);
    LogRun best;
    int best_run = 0;
    const int runs = init == 2 ? 1 : std::max(n_init, 1);
    for (int run = 0; run < runs; ++run) {
        Rng rng(derive_seed(seed, static_cast<std::uint64_t>(run)));
        LogAnchors a(k);
        if (init == 2) {
            for (int j = 0; j < k; ++j) {
                a.w[j] = init_anchors[2 * j];
                a.h[j] = init_anchors[2 * j + 1];
                a.aw[j] = std::log(a.w[j]);
                a.ah[j] = std::log(a.h[j]);
            }
        } else if (init == 1) {
            init_log_random(p, k, rng, a);
        } else {
            init_log_kmeanspp(p, k, rng, n_threads, mon, run, a);
        }
        LogRun r = lloyd_log(p, std::move(a), max_iter, tol, n_threads, mon, run);
        if (run == 0 || r.inertia < best.inertia) {
            best = std::move(r);
            best_run = run;
        }
    }
    LogKMeansOutput out;
    WhSet raw(k);
    for (int j = 0; j < k; ++j) raw.set(j, best.a.w[j], best.a.h[j]);
    const std::vector<int> order = area_order(raw.w, raw.a, k);
    out.anchors.resize(k);
    out.log_w.resize(k);
    out.log_h.resize(k);
    for (int j = 0; j < k; ++j) {
        out.anchors.set(j, raw.w[order[j]], raw.h[order[j]]);
        out.log_w[j] = best.a.aw[order[j]];
        out.log_h[j] = best.a.ah[order[j]];
    }
    // Labels against the sorted log anchors (the lowest-index rule in the returned order).
    out.labels.resize(n);
    for_each_chunk(n, n_threads, [&](index_t, index_t b, index_t e) {
        log_step(p, b, e, out.log_w, out.log_h, out.labels.data(), nullptr);
    });
    out.inertia = best.inertia;
    out.n_iter = best.n_iter;
    out.converged = best.converged;
    out.best_run = best_run;
    return out;
}

}  // namespace fastanchor
