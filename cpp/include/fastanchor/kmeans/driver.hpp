// fastanchor: k-means of box shapes with the distance 1 - IoU (YOLOv2): the whole fit
// (kmeans_iou: restarts, initialisation, Lloyd iterations, the sorted result), and lloyd_trace for
// the tests.
//
// Memory: the caller's array is read in place (float32 or float64 rows), never copied. Per box
// the fit keeps one label (one byte for k < 255) and, during k-means++, one float; the unit-weight
// median works from per-cluster histograms of the values' float bit patterns instead of sort
// orders. No N x k matrix is ever formed. Every reduction runs over fixed chunks combined in chunk
// order (or is an integer sum), and every random draw comes from the seeded Rng on the calling
// thread, so results are bit-identical for any number of threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

#include "../common.hpp"
#include "../geometry.hpp"
#include "../iou.hpp"
#include "../random.hpp"
#include "init.hpp"
#include "lloyd.hpp"
#include "problem.hpp"
#include "step.hpp"

namespace fastanchor {

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
    // Leave out the boxes below this on both sides (Problem::skips; 0: none): a fit of the
    // present boxes read in place, as of a copy of them, from given anchors. It gives the anchors,
    // n_iter and converged only: no labels and no average IoU (NaN).
    double skip_below = 0.0;
};

struct KMeansOutput {
    WhSet anchors;                     // k anchors sorted by area, ties by width
    std::vector<std::int32_t> labels;  // per box, indexing the sorted anchors (empty when the caller gave a buffer)
    double avg_iou = 0.0;
    int n_iter = 0;
    bool converged = false;
    int best_run = 0;
};

// Runs f(lloyd) with a Lloyd object whose label type fits k.
template <class F>
decltype(auto) with_lloyd(const Problem& p, int k, Update update, int n_threads, F&& f) {
    if (k < kByteLabelNone) {
        Lloyd<std::uint8_t> ll(p, k, update, n_threads);
        return f(ll);
    }
    Lloyd<std::int32_t> ll(p, k, update, n_threads);
    return f(ll);
}

// Whether the median update needs the sort orders (Lloyd uses histograms otherwise).
inline bool needs_orders(int k, Update update) {
    return update == Update::Median && !HistMedian<std::int32_t>::serves(k);
}

// For tests: one Lloyd object driven through the given anchor sets. For each set s, assign()
// with it, then update(): the labels, the updated anchors and the pass that assign() took.
// sets: n_sets x k x 2 values.
struct LloydTrace {
    std::vector<std::int32_t> labels;  // n_sets x n
    std::vector<double> updated;       // n_sets x k x 2
    std::vector<int> pass;             // n_sets: Lloyd::last_pass()
};

inline LloydTrace lloyd_trace(BoxRows rows, const double* weights, index_t n, const double* sets, int n_sets, int k,
                              Update update, int n_threads) {
    const Problem p = Problem::make(rows, weights, n, needs_orders(k, update), n_threads);
    LloydTrace t;
    t.labels.resize(static_cast<std::size_t>(n_sets) * n);
    t.updated.resize(static_cast<std::size_t>(n_sets) * k * 2);
    with_lloyd(p, k, update, n_threads, [&](auto& ll) {
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
//
// Converged means a fixed point of the returned anchors: labels repeat only with the anchors in
// area order (area_order). Ties go to the lowest anchor index, so the order decides where a box
// tied between two anchors goes; were the anchors converged in another order, the result, sorted
// by area, would assign such boxes elsewhere and its anchors would not be the medians (means) of
// their boxes. So when the labels repeat with the anchors out of order, the anchors are put in
// area order and the iterations go on (within max_iter): refitting from a converged result
// returns it again, converged after one update.
inline RunResult lloyd(const Problem& p, const WhSet& init, const KMeansOptions& o, Monitor& mon, int run) {
    const int k = static_cast<int>(init.size());
    RunResult r;
    r.anchors = init;
    with_lloyd(p, k, o.update, o.n_threads, [&](auto& ll) {
        for (;;) {
            const index_t changed = ll.assign(r.anchors);
            mon.tick("lloyd", run, r.n_iter);
            if (r.n_iter > 0 && changed == 0) {
                const std::vector<int> order = area_order(r.anchors.w, r.anchors.a, k);
                bool sorted = true;
                for (int j = 0; j < k; ++j) sorted = sorted && order[j] == j;
                if (sorted) {
                    r.converged = true;
                    break;
                }
                WhSet in_order(k);
                for (int j = 0; j < k; ++j) in_order.set(j, r.anchors.w[order[j]], r.anchors.h[order[j]]);
                r.anchors = std::move(in_order);
                continue;  // assign again with the anchors in area order
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
    r.avg_iou = p.skips() ? std::numeric_limits<double>::quiet_NaN() : p.avg_iou(r.anchors, o.n_threads);
    return r;
}

// The whole fit. rows: the caller's N boxes (validated by the caller: finite, positive, with at
// least k distinct boxes), read in place; weights: N positive values or null; init_anchors: k x 2
// rows when o.init == Init::Given. labels: N slots for the labels, or null to return them in the
// output.
inline KMeansOutput kmeans_iou(BoxRows rows, const double* weights, index_t n, const KMeansOptions& o,
                               const double* init_anchors, Monitor& mon, std::int32_t* labels = nullptr) {
    if (n <= 0 || o.k <= 0 || o.k > n) throw std::invalid_argument("kmeans_iou: need 0 < k <= n");
    const PollScope poll(mon);  // mon.poll() at check points, every kPollInterval of work
    if (o.skip_below > 0.0 && o.init != Init::Given)
        throw std::invalid_argument("kmeans_iou: boxes are left out only in a fit from given anchors");
    const Problem p = Problem::make(rows, weights, n, needs_orders(o.k, o.update), o.n_threads, o.skip_below);
    if (o.k > p.present) throw std::invalid_argument("kmeans_iou: need k <= the number of boxes not left out");
    RunResult best;
    int best_run = 0;
    const int runs = o.init == Init::Given ? 1 : std::max(o.n_init, 1);
    for (int run = 0; run < runs; ++run) {
        Rng rng(derive_seed(o.seed, static_cast<std::uint64_t>(run)));
        WhSet init;
        switch (o.init) {
            case Init::Given:
                init = WhSet::from_rows(init_anchors, o.k);
                break;
            case Init::Random:
                init = init_random(p, o.k, rng);
                break;
            case Init::KMeansPP:
                init = init_kmeanspp(p, o.k, rng, o.n_threads, mon, run);
                break;
        }
        RunResult r = lloyd(p, init, o, mon, run);
        if (run == 0 || r.avg_iou > best.avg_iou) {
            best = std::move(r);
            best_run = run;
        }
    }
    KMeansOutput out;
    const std::vector<int> order = area_order(best.anchors.w, best.anchors.a, o.k);
    out.anchors.resize(o.k);
    for (int j = 0; j < o.k; ++j) out.anchors.set(j, best.anchors.w[order[j]], best.anchors.h[order[j]]);
    out.avg_iou = best.avg_iou;
    out.n_iter = best.n_iter;
    out.converged = best.converged;
    out.best_run = best_run;
    if (p.skips()) return out;
    // Labels are the assignment to the returned (sorted) anchors: renumbering the last labels
    // would break the lowest-index rule for boxes tied between anchors that the sort reordered.
    if (!labels) {
        out.labels.resize(n);
        labels = out.labels.data();
    }
    for_each_chunk(n, o.n_threads, [&](index_t, index_t b, index_t e) {
        BoxRows chunk;
        if (p.f32) chunk.f32 = p.f32 + 2 * b;
        else chunk.f64 = p.f64 + 2 * b;
        lloyd_step(chunk, e - b, out.anchors, labels + b, StepMode::AssignOnly, nullptr, nullptr);
    });
    return out;
}

}  // namespace fastanchor
