// fastanchor: k-means of box shapes with the distance 1 - IoU (YOLOv2), Lloyd iterations with
// weighted median or mean updates, greedy k-means++ or random initialisation.
//
// Memory is O(N + k) beyond the input: no N x k matrix is ever formed. Every reduction runs over
// fixed chunks combined in chunk order, and every random draw comes from the seeded Rng on the
// calling thread, so results are bit-identical for any number of threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "common.hpp"
#include "iou.hpp"
#include "random.hpp"
#include "sort.hpp"

namespace fastanchor {

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

// The boxes as the algorithm stores them. For the median update they are kept sorted by width
// (ties by input index), so the width medians are one sequential pass; `h_order` lists them by
// height (ties by input index) for the height medians.
struct Problem {
    WhSet boxes;
    std::vector<double> weight;      // empty: unit weights
    std::vector<index_t> orig;       // internal position -> input index; empty: identity
    std::vector<index_t> h_order;    // internal positions sorted by (h, input index)
    std::vector<double> h_sorted;    // boxes.h[h_order[s]]
    std::vector<double> weight_h;    // weight[h_order[s]] (weighted only)

    index_t size() const { return boxes.size(); }
    bool weighted() const { return !weight.empty(); }
    double wt(index_t i) const { return weight.empty() ? 1.0 : weight[i]; }
    index_t input_index(index_t i) const { return orig.empty() ? i : orig[i]; }

    // wh: N rows (w, h), contiguous; weights: N values or null.
    static Problem make(const double* wh, const double* weights, index_t n, bool sorted_for_median,
                        int n_threads) {
        Problem p;
        if (!sorted_for_median) {
            p.boxes = WhSet::from_rows(wh, n);
            if (weights) p.weight.assign(weights, weights + n);
            return p;
        }
        std::vector<double> wcol(n), hcol(n);
        for (index_t i = 0; i < n; ++i) {
            wcol[i] = wh[2 * i];
            hcol[i] = wh[2 * i + 1];
        }
        std::vector<index_t> by_h;
#ifdef _OPENMP
#pragma omp parallel sections num_threads(std::min(2, std::max(n_threads, 1)))
        {
#pragma omp section
            p.orig = argsort_positive(wcol.data(), n);
#pragma omp section
            by_h = argsort_positive(hcol.data(), n);
        }
#else
        (void)n_threads;
        p.orig = argsort_positive(wcol.data(), n);
        by_h = argsort_positive(hcol.data(), n);
#endif
        p.boxes.resize(n);
        std::vector<index_t> pos(n);
        for (index_t i = 0; i < n; ++i) {
            const index_t src = p.orig[i];
            p.boxes.set(i, wcol[src], hcol[src]);
            pos[src] = i;
        }
        p.h_order.resize(n);
        p.h_sorted.resize(n);
        for (index_t s = 0; s < n; ++s) {
            p.h_order[s] = pos[by_h[s]];
            p.h_sorted[s] = hcol[by_h[s]];
        }
        if (weights) {
            p.weight.resize(n);
            p.weight_h.resize(n);
            for (index_t i = 0; i < n; ++i) p.weight[i] = weights[p.orig[i]];
            for (index_t s = 0; s < n; ++s) p.weight_h[s] = weights[by_h[s]];
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

}  // namespace detail

// One Lloyd run on a Problem.
class Lloyd {
public:
    // Per cluster and chunk: sum of weight * w, weight * h, weight, count.
    static constexpr int kStats = 4;

    Lloyd(const Problem& p, int k, Update update, int n_threads)
        : p_(p), k_(k), update_(update), nt_(n_threads), labels_(p.size(), -1),
          part_(static_cast<std::size_t>(n_chunks(p.size())) * k * kStats), changed_(n_chunks(p.size())),
          stats_(static_cast<std::size_t>(k) * kStats) {}

    const std::vector<std::int32_t>& labels() const { return labels_; }

    // Assigns every box; returns how many labels changed. Also gathers the per-chunk sums.
    index_t assign(const WhSet& anchors) {
        const bool mean = update_ == Update::Mean;
        const int k = k_;
        for_each_chunk(p_.size(), nt_, [&](index_t c, index_t b, index_t e) {
            std::int32_t tmp[kChunk];
            assign_range(p_.boxes, b, e, anchors, tmp);
            double* st = part_.data() + static_cast<std::size_t>(c) * k * kStats;
            std::fill(st, st + static_cast<std::size_t>(k) * kStats, 0.0);
            index_t changed = 0;
            std::int32_t* lab = labels_.data() + b;
            const double* w = p_.boxes.w.data() + b;
            const double* h = p_.boxes.h.data() + b;
            for (index_t i = 0; i < e - b; ++i) {
                const std::int32_t l = tmp[i];
                changed += lab[i] != l;
                lab[i] = l;
                double* sl = st + static_cast<std::size_t>(l) * kStats;
                const double wt = p_.wt(b + i);
                if (mean) {
                    sl[0] += wt * w[i];
                    sl[1] += wt * h[i];
                }
                sl[2] += wt;
                sl[3] += 1.0;
            }
            changed_[c] = changed;
        });
        // Combine chunks in chunk order.
        std::fill(stats_.begin(), stats_.end(), 0.0);
        index_t changed = 0;
        for (std::size_t c = 0; c < changed_.size(); ++c) {
            const double* st = part_.data() + c * k * kStats;
            for (std::size_t j = 0; j < stats_.size(); ++j) stats_[j] += st[j];
            changed += changed_[c];
        }
        return changed;
    }

    // New anchors from the labels of the last assign(); `anchors` are those it used.
    WhSet update(const WhSet& anchors) {
        const int k = k_;
        WhSet out(k);
        std::vector<double> count(k), total(k), mw(k), mh(k);
        for (int c = 0; c < k; ++c) {
            total[c] = stats_[c * kStats + 2];
            count[c] = stats_[c * kStats + 3];
        }
        if (update_ == Update::Mean) {
            for (int c = 0; c < k; ++c) {
                if (count[c] > 0) {
                    mw[c] = stats_[c * kStats + 0] / total[c];
                    mh[c] = stats_[c * kStats + 1] / total[c];
                }
            }
        } else {
            median_update(count, total, mw, mh);
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
    void median_update(const std::vector<double>& count, std::vector<double> total, std::vector<double>& mw,
                       std::vector<double>& mh) {
        const index_t n = p_.size();
        const int k = k_;
        const std::int32_t* lab = labels_.data();
        const Problem& p = p_;
        std::vector<double> total_h = total;
        if (p.weighted()) {
            // Totals summed in each coordinate's own order, exactly as its cumulative sums run.
            std::fill(total.begin(), total.end(), 0.0);
            std::fill(total_h.begin(), total_h.end(), 0.0);
            for (index_t i = 0; i < n; ++i) total[lab[i]] += p.weight[i];
            for (index_t s = 0; s < n; ++s) total_h[lab[p.h_order[s]]] += p.weight_h[s];
        }
        detail::MedianScratch sw, sh;
        sw.reset(k);
        sh.reset(k);
        auto by_w = [&](index_t i, std::int32_t& c, double& x, double& wt) {
            c = lab[i];
            x = p.boxes.w[i];
            wt = p.wt(i);
        };
        auto by_h = [&](index_t s, std::int32_t& c, double& x, double& wt) {
            c = lab[p.h_order[s]];
            x = p.h_sorted[s];
            wt = p.weight_h.empty() ? 1.0 : p.weight_h[s];
        };
#ifdef _OPENMP
#pragma omp parallel sections num_threads(std::min(2, std::max(nt_, 1))) if (nt_ > 1)
        {
#pragma omp section
            detail::median_pass(n, k, by_w, total.data(), count.data(), mw.data(), sw);
#pragma omp section
            detail::median_pass(n, k, by_h, total_h.data(), count.data(), mh.data(), sh);
        }
#else
        detail::median_pass(n, k, by_w, total.data(), count.data(), mw.data(), sw);
        detail::median_pass(n, k, by_h, total_h.data(), count.data(), mh.data(), sh);
#endif
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
            const std::pair<double, index_t> key{best_[i], p_.input_index(i)};
            if (pick.size() == e && !(key < pick.back())) continue;
            const auto it = std::upper_bound(pick.begin(), pick.end(), key);
            const auto pos = it - pick.begin();
            pick.insert(it, key);
            where.insert(where.begin() + pos, i);
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
    std::vector<double> part_;
    std::vector<index_t> changed_;
    std::vector<double> stats_;
    std::vector<double> best_;
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
    const double* A = p.boxes.a.data();
    for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
        double s = 0.0;
        for (index_t i = b; i < e; ++i) {
            const double d = 1.0 - iou_wh(W[i], H[i], A[i], out.w[0], out.h[0], out.a[0]);
            d2[i] = d * d;
            s += p.wt(i) * d2[i];
        }
        cs.chunk_total[c] = s;
    });
    double pot = std::accumulate(cs.chunk_total.begin(), cs.chunk_total.end(), 0.0);

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
            for (index_t j = 0; j < n; ++j) {
                const double d = 1.0 - iou_wh(W[j], H[j], A[j], W[i], H[i], A[i]);
                d2[j] = std::min(d2[j], d * d);
            }
            for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
                double s = 0.0;
                for (index_t j = b; j < e; ++j) s += v(j);
                cs.chunk_total[c] = s;
            });
            pot = std::accumulate(cs.chunk_total.begin(), cs.chunk_total.end(), 0.0);
            continue;
        }
        for (int t = 0; t < trials; ++t) cand[t] = cs.search(n, rng.uniform() * pot, v);
        for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
            for (int t = 0; t < trials; ++t) {
                const index_t ci = cand[t];
                const double cw = W[ci], ch = H[ci], ca = A[ci];
                double s = 0.0;
                for (index_t i = b; i < e; ++i) {
                    const double d = 1.0 - iou_wh(W[i], H[i], A[i], cw, ch, ca);
                    s += p.wt(i) * std::min(d2[i], d * d);
                }
                part[static_cast<std::size_t>(c) * trials + t] = s;
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
        for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
            for (index_t i = b; i < e; ++i) {
                const double d = 1.0 - iou_wh(W[i], H[i], A[i], out.w[step], out.h[step], out.a[step]);
                d2[i] = std::min(d2[i], d * d);
            }
            cs.chunk_total[c] = part[static_cast<std::size_t>(c) * trials + best];
        });
        pot = best_pot;
    }
    return out;
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
    r.avg_iou = avg_best_iou(p.boxes, p.weighted() ? p.weight.data() : nullptr, r.anchors, o.n_threads);
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
    std::vector<std::int32_t> labels(n);
    assign_all(p.boxes, out.anchors, labels.data(), o.n_threads);
    out.labels.resize(n);
    for (index_t i = 0; i < n; ++i) out.labels[p.input_index(i)] = labels[i];
    out.avg_iou = best.avg_iou;
    out.n_iter = best.n_iter;
    out.converged = best.converged;
    out.best_run = best_run;
    return out;
}

}  // namespace fastanchor
