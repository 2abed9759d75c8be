// fastanchor: the mutation search that refines anchors on the fitness (YOLOv5's evolution, or
// the anchor-wise strategy). evolve_search runs it with any scorer of candidate batches;
// evolve_anchors scores them on boxes in memory (fitness/tiles.hpp's fitness_batch and the IoU
// objectives), and a chunked caller scores them by passes over chunks of boxes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "common.hpp"
#include "fitness/metrics.hpp"
#include "fitness/grid_objective.hpp"
#include "fitness/objectives.hpp"
#include "fitness/tiles.hpp"
#include "geometry.hpp"
#include "random.hpp"

namespace fastanchor {

// ---------------------------------------------------------------------------------------------
// The mutation search.

enum class Strategy {
    // Per-anchor mutations with per-anchor step sizes and greedy combination (the default).
    Anchorwise,
    // YOLOv5's kmean_anchors mutation, exactly.
    YOLOv5,
};

struct EvolveOptions {
    double thr = 4.0;
    int generations = 1000;
    double mutation_prob = 0.9;
    double sigma = 0.1;
    double min_size = 2.0;
    Strategy strategy = Strategy::Anchorwise;
    int batch = 8;  // candidates evaluated per pass over the boxes
    std::uint64_t seed = 0;
    int n_threads = 1;
    Objective objective;  // what the search maximizes (default: YOLOv5's ratio fitness)
    // When set, an IoU objective is scored with the anchors on the detector's grids
    // (fitness/grid_objective.hpp) instead of corner-aligned; the boxes must be the same boxes.
    const GridBoxes* grid = nullptr;
    // Generations run after `generations` as restarts (anchorwise: rounds of restart_length
    // generations, each from a perturbation of the best anchors; yolov5: more generations).
    int extra_generations = 0;
    int restart_length = 200;
    double restart_sigma = 0.3;
};

struct EvolveOutput {
    std::vector<double> anchors;   // k rows (w, h), sorted by area ascending, ties by width
    FitnessMetrics metrics;        // of the returned anchors
    double objective = 0.0;        // the chosen objective's value of the returned anchors
    std::vector<double> history;   // best objective value after each generation run
    int n_improved = 0;            // generations whose candidate became the new best
    double initial_fitness = 0.0;  // the objective's value of the initial anchors
    bool stopped = false;          // the callback stopped the search
};

// Observes the search. tick() (from Monitor) runs once per pass and may throw to stop it (Ctrl-C).
class EvolveMonitor : public Monitor {
public:
    // After each pass: generations done and the best fitness so far.
    virtual void progress(int done, double fitness) {
        (void)done;
        (void)fitness;
    }
    // Whether generation() is to be called after every generation.
    virtual bool per_generation() const { return false; }
    // After generation g (1-based) with the best fitness and anchors so far; false stops the search.
    virtual bool generation(int g, double fitness, const RatioAnchors& best) {
        (void)g;
        (void)fitness;
        (void)best;
        return true;
    }
};

inline EvolveMonitor& null_evolve_monitor() {
    static EvolveMonitor m;
    return m;
}

namespace fitdetail {

// Stream of the search's generator, derived from the seed (k-means restarts use streams 0, 1, ...).
inline constexpr std::uint64_t kEvolveStream = 0x65766F6C7665ULL;  // "evolve"
// A mutation that leaves every value unchanged is redrawn, at most this many times; then the
// generation is skipped (only with a vanishing mutation_prob or sigma).
inline constexpr int kMaxRedraws = 1000;
// Step sizes of the anchorwise strategy: multiplied on success and failure (a success rate of
// about 1 in 5 keeps them steady), and kept within [kStepMin, max(kStepMax, sigma)].
inline constexpr double kStepUp = 1.6, kStepDown = 0.9, kStepMin = 1e-4, kStepMax = 0.5;

// YOLOv5's mutation factors for k anchors (2k values, rows (w, h)): per attempt 2k uniforms u,
// one rho, 2k normals z; v = clip(([u < mp] * rho) * z * sigma + 1, 0.3, 3.0), redrawn while
// every v == 1. False when every attempt left all values unchanged.
inline bool yolov5_factors(Rng& rng, int k, double mp, double sigma, double* v) {
    const int m = 2 * k;
    std::vector<double> u(m);
    for (int attempt = 0; attempt < kMaxRedraws; ++attempt) {
        for (int i = 0; i < m; ++i) u[i] = rng.uniform();
        const double rho = rng.uniform();
        bool all_one = true;
        for (int i = 0; i < m; ++i) {
            const double z = rng.normal();
            const double r = u[i] < mp ? rho : 0.0;
            const double x = std::min(std::max(r * z * sigma + 1.0, 0.3), 3.0);
            v[i] = x;
            all_one = all_one && x == 1.0;
        }
        if (!all_one) return true;
    }
    return false;
}

// The largest side a mutation may produce: the largest side every function accepts.
inline constexpr double kMaxSide = 1e30;

// A mutated side, kept within [min_size, kMaxSide].
inline double mutated_side(double x, double min_size) { return std::min(std::max(x, min_size), kMaxSide); }

inline void mutate_all(const RatioAnchors& parent, const double* v, double min_size, RatioAnchors& out) {
    for (int j = 0; j < parent.k; ++j)
        out.set(j, mutated_side(parent.w[j] * v[2 * j], min_size), mutated_side(parent.h[j] * v[2 * j + 1], min_size));
}

inline RatioAnchors sorted_anchors(const RatioAnchors& a) {
    const std::vector<int> order = area_order(a.w, a.a, a.k);
    RatioAnchors s(a.k);
    for (int j = 0; j < a.k; ++j) s.set(j, a.w[order[j]], a.h[order[j]]);
    return s;
}

// The search's bookkeeping shared by both strategies: best so far, history, callbacks.
struct SearchState {
    RatioAnchors best;
    double fitness = 0.0;
    int done = 0, n_improved = 0;
    bool stopped = false;
    std::vector<double> history;
    EvolveMonitor* mon = nullptr;

    // A search's current anchors (cur, f): they become the best when strictly better.
    void offer(const RatioAnchors& cur, double f) {
        if (f > fitness) {
            best = cur;
            fitness = f;
            ++n_improved;
        }
    }

    // Records one generation whose best is (anchors, f); returns false when the search must stop.
    bool record(double f) {
        ++done;
        history.push_back(f);
        if (mon->per_generation() && !mon->generation(done, f, sorted_anchors(best))) {
            stopped = true;
            return false;
        }
        return true;
    }
};

// Scores candidate anchor sets on the search's objective, on boxes in memory.
struct Scorer {
    const TiledBoxes& T;
    const EvolveOptions& o;
    void operator()(const RatioAnchors* cands, int count, double* out) const {
        if (o.objective.kind == ObjectiveKind::Fitness) fitness_batch(T, cands, count, o.thr, out, o.n_threads);
        else if (o.grid) grid_objective_batch(*o.grid, cands, count, o.objective, out, o.n_threads);
        else iou_objective_batch(T, cands, count, o.objective, out, o.n_threads);
    }
};

// Anchorwise: each pass scores `batch` candidates that each move one anchor (a random
// permutation of the anchors, cycled), by a log-normal factor exp(step_j * z) on each side
// (a side moves with probability mutation_prob, at least one side per candidate), with
// one step size per anchor: times 1.6 after a candidate of that anchor beat the current
// value, times 0.9 otherwise. The best candidate of the pass, if better, becomes the
// current anchors; when several candidates improved different anchors, their combination
// is scored in the first slot of the next pass. Runs `gens` generations from (cur, cur_fit)
// and offers the current anchors to the search's best after every generation.
template <class Score>
void anchorwise_run(const Score& score, SearchState& st, RatioAnchors cur, double cur_fit, int gens, Rng& rng,
                    const EvolveOptions& o, EvolveMonitor& mon, std::vector<RatioAnchors>& cands,
                    std::vector<double>& fit) {
    const int k = cur.k;
    const int batch = static_cast<int>(cands.size());
    const double step_max = std::max(kStepMax, o.sigma);
    std::vector<double> step(k, o.sigma);
    std::vector<int> order(k), moved(batch);
    RatioAnchors pending;
    bool has_pending = false;
    int done = 0;
    while (done < gens && !st.stopped) {
        const int nb = std::min(batch, gens - done);
        int count = 0;
        if (has_pending) {
            cands[count] = pending;
            moved[count++] = -1;
            has_pending = false;
        }
        std::iota(order.begin(), order.end(), 0);
        for (int i = 0; i + 1 < k; ++i) std::swap(order[i], order[i + static_cast<int>(rng.below(k - i))]);
        for (int q = 0; count < nb; ++q) {
            const int j = order[q % k];
            bool mw = false, mh = false;
            for (int attempt = 0; attempt < kMaxRedraws && !(mw || mh); ++attempt) {
                mw = rng.uniform() < o.mutation_prob;
                mh = rng.uniform() < o.mutation_prob;
            }
            const double zw = rng.normal(), zh = rng.normal();
            cands[count] = cur;
            const double fw = mw ? std::exp(step[j] * zw) : 1.0, fh = mh ? std::exp(step[j] * zh) : 1.0;
            cands[count].set(j, mutated_side(cur.w[j] * fw, o.min_size), mutated_side(cur.h[j] * fh, o.min_size));
            moved[count++] = j;
        }
        mon.tick("evolve", 0, st.done);
        score(cands.data(), count, fit.data());
        const double base = cur_fit;
        int winner = -1;
        for (int b = 0; b < count; ++b) {
            if (fit[b] > cur_fit) {
                cur = cands[b];
                cur_fit = fit[b];
                winner = b;
            }
            st.offer(cur, cur_fit);
            ++done;
            if (!st.record(st.fitness)) break;
        }
        if (st.stopped) break;
        for (int b = 0; b < count; ++b) {
            const int j = moved[b];
            if (j < 0) continue;
            step[j] = fit[b] > base ? std::min(step[j] * kStepUp, step_max) : std::max(step[j] * kStepDown, kStepMin);
        }
        if (winner >= 0 && moved[winner] >= 0) {
            // Other candidates that improved on other anchors: try them all together.
            std::vector<int> improving;
            for (int b = 0; b < count; ++b)
                if (b != winner && moved[b] >= 0 && moved[b] != moved[winner] && fit[b] > base) improving.push_back(b);
            std::stable_sort(improving.begin(), improving.end(), [&](int x, int y) { return fit[x] > fit[y]; });
            pending = cur;
            std::vector<char> taken(k, 0);
            taken[moved[winner]] = 1;
            int added = 0;
            for (int b : improving) {
                const int j = moved[b];
                if (taken[j]) continue;
                taken[j] = 1;
                pending.set(j, cands[b].w[j], cands[b].h[j]);
                ++added;
            }
            has_pending = added > 0;
        }
        mon.progress(st.done, st.fitness);
    }
}

}  // namespace fitdetail

// What the search found, before the metrics of its anchors.
struct SearchOutput {
    std::vector<double> anchors;   // k rows (w, h), sorted by area ascending, ties by width
    double objective = 0.0;        // the objective's value of the anchors
    std::vector<double> history;   // best objective value after each generation run
    int n_improved = 0;            // generations whose candidate became the new best
    double initial_fitness = 0.0;  // the objective's value of the initial anchors
    bool stopped = false;          // the callback stopped the search
};

// Refines `init` (k rows) by the mutation search on the objective computed by
// score(candidates, count, out) (out[c]: the value of candidates[c]; any scorer that returns the
// same values gives the same search, bit for bit). Anchors are first raised to min_size; a
// candidate replaces the best only when its value is strictly higher, so the objective never
// decreases. Deterministic for a seed. After `generations`, `extra_generations` more run as
// restarts (see EvolveOptions). See README.md for the strategies.
template <class Score>
SearchOutput evolve_search(const Score& score, const double* init, int k, const EvolveOptions& o, EvolveMonitor& mon) {
    if (k <= 0) throw std::invalid_argument("evolve_anchors: need anchors");
    Rng rng(derive_seed(o.seed, fitdetail::kEvolveStream));
    const int batch = std::max(1, o.batch);
    const int main_gens = std::max(o.generations, 0);
    const int extra = std::max(o.extra_generations, 0);

    fitdetail::SearchState st;
    st.mon = &mon;
    st.best = RatioAnchors(k);
    for (int j = 0; j < k; ++j)
        st.best.set(j, std::max(init[2 * j], o.min_size), std::max(init[2 * j + 1], o.min_size));
    score(&st.best, 1, &st.fitness);
    st.history.reserve(std::min(main_gens + static_cast<std::size_t>(extra), std::size_t{1} << 20));
    SearchOutput out;
    out.initial_fitness = st.fitness;

    std::vector<RatioAnchors> cands(batch, RatioAnchors(k));
    std::vector<double> fit(batch);

    if (o.strategy == Strategy::YOLOv5) {
        // Speculative batches: the mutation factors do not depend on the outcome, so the next
        // `batch` generations are drawn ahead and scored against the current anchors in one
        // pass. At the first acceptance the later candidates are void (their parent changed):
        // their factors are kept and scored again from the new anchors. The result is exactly
        // YOLOv5's sequential search. Extra generations continue the same search.
        const int total = main_gens + extra;
        std::vector<std::vector<double>> queue;  // factors of generations drawn, not yet run (empty: skipped)
        while (st.done < total && !st.stopped) {
            const int nb = std::min(batch, total - st.done);
            while (static_cast<int>(queue.size()) < nb) {
                std::vector<double> v(2 * k);
                if (!(o.mutation_prob > 0.0) || !fitdetail::yolov5_factors(rng, k, o.mutation_prob, o.sigma, v.data()))
                    v.clear();
                queue.push_back(std::move(v));
            }
            int count = 0;
            std::vector<int> slot(nb, -1);
            for (int b = 0; b < nb; ++b) {
                if (queue[b].empty()) continue;
                fitdetail::mutate_all(st.best, queue[b].data(), o.min_size, cands[count]);
                slot[b] = count++;
            }
            mon.tick("evolve", 0, st.done);
            score(cands.data(), count, fit.data());
            int consumed = 0;
            for (int b = 0; b < nb; ++b) {
                ++consumed;
                const bool accept = slot[b] >= 0 && fit[slot[b]] > st.fitness;
                if (accept) {
                    st.best = cands[slot[b]];
                    st.fitness = fit[slot[b]];
                    ++st.n_improved;
                }
                if (!st.record(st.fitness) || accept) break;
            }
            queue.erase(queue.begin(), queue.begin() + consumed);
            mon.progress(st.done, st.fitness);
        }
    } else {
        fitdetail::anchorwise_run(score, st, st.best, st.fitness, main_gens, rng, o, mon, cands, fit);
        // Restarts (an iterated local search): each round perturbs the best anchors by YOLOv5's
        // mutation with sigma = restart_sigma and runs restart_length anchorwise generations from
        // there, with fresh step sizes; the best anchors of every round are offered to the best.
        const int len = std::max(1, o.restart_length);
        std::vector<double> v(2 * static_cast<std::size_t>(k));
        RatioAnchors start(k);
        for (int left = extra; left > 0 && !st.stopped;) {
            const int g = std::min(left, len);
            if (o.mutation_prob > 0.0 && fitdetail::yolov5_factors(rng, k, o.mutation_prob, o.restart_sigma, v.data()))
                fitdetail::mutate_all(st.best, v.data(), o.min_size, start);
            else start = st.best;
            double f0 = 0.0;
            score(&start, 1, &f0);
            fitdetail::anchorwise_run(score, st, start, f0, g, rng, o, mon, cands, fit);
            left -= g;
        }
    }

    const RatioAnchors sorted = fitdetail::sorted_anchors(st.best);
    out.anchors.resize(2 * static_cast<std::size_t>(k));
    sorted.to_rows(out.anchors.data());
    out.objective = st.fitness;
    out.history = std::move(st.history);
    out.n_improved = st.n_improved;
    out.stopped = st.stopped;
    return out;
}

// The search on boxes laid out in memory (TiledBoxes::make of the rows and weights), scored in
// batches on the layout, and the report of its anchors on the same boxes. Deterministic for a
// seed, whatever the number of threads (fixed-point sums).
inline EvolveOutput evolve_anchors(const TiledBoxes& T, const double* init, int k, const EvolveOptions& o,
                                   EvolveMonitor& mon) {
    if (T.size() <= 0 || k <= 0) throw std::invalid_argument("evolve_anchors: need boxes and anchors");
    const PollScope poll(mon);  // mon.poll() at check points, every kPollInterval of work
    SearchOutput s = evolve_search(fitdetail::Scorer{T, o}, init, k, o, mon);
    EvolveOutput out;
    out.metrics = fitness_metrics(T, RatioAnchors::from_rows(s.anchors.data(), k), o.thr, o.n_threads);
    out.anchors = std::move(s.anchors);
    out.objective = s.objective;
    out.history = std::move(s.history);
    out.n_improved = s.n_improved;
    out.initial_fitness = s.initial_fitness;
    out.stopped = s.stopped;
    return out;
}

}  // namespace fastanchor
