// fastanchor: google-benchmark microbenchmarks of the header-only core.
//
// Every benchmark that takes a `threads` argument passes it to the core as n_threads (OpenMP
// inside the kernel; google-benchmark itself runs one thread) and is timed in real time.
// Sizes are 10^4, 10^5 and 10^6 boxes; --fastanchor_max_n=10000000 adds 10^7 (the whole fits,
// lloyd_run and kmeans_iou, always stop at 10^6). See README.md in this folder.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fastanchor/common.hpp>
#include <fastanchor/iou.hpp>
#include <fastanchor/kmeans.hpp>
#include <fastanchor/random.hpp>

namespace fa = fastanchor;

namespace {

// ---------------------------------------------------------------------------------------------
// Data: a simple log-normal model of COCO-like boxes letterboxed to 640 px (the Python generator
// benchmarks/datasets.py has the detailed one). sqrt(w * h) is log-normal with median 41.8 px and
// log sd 1.18, which puts 41% of box areas below 32^2 and 24% above 96^2 (COCO's size split);
// w / h is log-normal with median 0.85 and log sd 0.75. Each side is clipped to [1, 640] and
// rounded to float32, as boxes read from float32 arrays are.

constexpr double kImgSize = 640.0;
constexpr double kSizeMedian = 41.8, kSizeLogSd = 1.18;
constexpr double kAspectMedian = 0.85, kAspectLogSd = 0.75;

std::vector<double> make_rows(fa::index_t n, std::uint64_t seed) {
    fa::Rng rng(seed);
    std::vector<double> rows(static_cast<std::size_t>(2 * n));
    for (fa::index_t i = 0; i < n; ++i) {
        const double s = kSizeMedian * std::exp(kSizeLogSd * rng.normal());
        const double r = std::sqrt(kAspectMedian * std::exp(kAspectLogSd * rng.normal()));
        rows[2 * i] = static_cast<float>(std::clamp(s * r, 1.0, kImgSize));
        rows[2 * i + 1] = static_cast<float>(std::clamp(s / r, 1.0, kImgSize));
    }
    return rows;
}

// Inputs are built once per size and kept for the whole run (set-up is not timed).
struct Boxes {
    std::vector<double> rows;  // N x 2, row-major (w, h)
    fa::WhSet set;
};

const Boxes& boxes(fa::index_t n) {
    static std::map<fa::index_t, std::unique_ptr<Boxes>> cache;
    auto& slot = cache[n];
    if (!slot) {
        slot = std::make_unique<Boxes>();
        slot->rows = make_rows(n, 42);
        slot->set = fa::WhSet::from_rows(slot->rows.data(), n);
    }
    return *slot;
}

fa::BoxRows rows_of(const std::vector<double>& rows) {
    fa::BoxRows r;
    r.f64 = rows.data();
    return r;
}
fa::BoxRows rows_of(const Boxes& b) { return rows_of(b.rows); }

const fa::Problem& problem(fa::index_t n, fa::Update update) {
    static std::map<std::pair<fa::index_t, fa::Update>, std::unique_ptr<fa::Problem>> cache;
    auto& slot = cache[{n, update}];
    if (!slot) {
        slot = std::make_unique<fa::Problem>(
            fa::Problem::make(rows_of(boxes(n)), nullptr, n, fa::needs_orders(9, update), fa::max_threads()));
    }
    return *slot;
}

// Realistic anchors: the k-means result on a separate sample of 20,000 boxes.
const fa::WhSet& anchors(int k) {
    static std::map<int, fa::WhSet> cache;
    auto it = cache.find(k);
    if (it == cache.end()) {
        constexpr fa::index_t n = 20000;
        const std::vector<double> rows = make_rows(n, 7);
        fa::KMeansOptions o;
        o.k = k;
        o.n_threads = fa::max_threads();
        it = cache.emplace(k, fa::kmeans_iou(rows_of(rows), nullptr, n, o, nullptr, fa::null_monitor()).anchors).first;
    }
    return it->second;
}

struct float_anchors_t {
    float w[fa::kMaxFixedK], h[fa::kMaxFixedK], a[fa::kMaxFixedK];
};

void set_rates(benchmark::State& state, fa::index_t boxes_per_iter, fa::index_t pairs_per_iter) {
    const auto iters = static_cast<double>(state.iterations());
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * boxes_per_iter);
    state.counters["pairs/s"] =
        benchmark::Counter(iters * static_cast<double>(pairs_per_iter), benchmark::Counter::kIsRate);
}

// ---------------------------------------------------------------------------------------------
// Benchmarks. Arguments: {n, k, threads} unless noted.

// Labels of all boxes against k anchors (the assignment step alone).
void BM_assign_all(benchmark::State& state) {
    const fa::index_t n = state.range(0);
    const int k = static_cast<int>(state.range(1));
    const int threads = static_cast<int>(state.range(2));
    const fa::WhSet& set = boxes(n).set;
    const fa::WhSet& anc = anchors(k);
    std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
    for (auto _ : state) {
        fa::assign_all(set, anc, labels.data(), threads);
        benchmark::DoNotOptimize(labels.data());
        benchmark::ClobberMemory();
    }
    set_rates(state, n, n * k);
}

// The first iteration of a Lloyd run: every box assigned from scratch, every label new, so every
// box moves its share of the statistics (later iterations move only the boxes that changed
// cluster): the most expensive iteration (lloyd_run measures whole runs). Building the Lloyd
// state (O(n) allocations) is not timed.
template <fa::Update U>
void BM_lloyd_first_iteration(benchmark::State& state) {
    const fa::index_t n = state.range(0);
    const int k = static_cast<int>(state.range(1));
    const int threads = static_cast<int>(state.range(2));
    const fa::Problem& p = problem(n, U);
    const fa::WhSet& anc = anchors(k);
    std::unique_ptr<fa::Lloyd<std::uint8_t>> lloyd;
    for (auto _ : state) {
        state.PauseTiming();
        lloyd.reset();
        lloyd = std::make_unique<fa::Lloyd<std::uint8_t>>(p, k, U, threads);
        state.ResumeTiming();
        benchmark::DoNotOptimize(lloyd->assign(anc));
        fa::WhSet next = lloyd->update(anc);
        benchmark::DoNotOptimize(next.w.data());
        benchmark::ClobberMemory();
    }
    set_rates(state, n, n * k);
}

// A whole Lloyd run to convergence (labels repeat, at most 300 updates) from a fixed k-means++
// initialisation, with the final mean IoU; building the problem and the initialisation are not
// timed.
// Counters: n_iter (updates per run) and time/iter (mean time of one iteration).
template <fa::Update U>
void BM_lloyd_run(benchmark::State& state) {
    const fa::index_t n = state.range(0);
    const int k = static_cast<int>(state.range(1));
    const int threads = static_cast<int>(state.range(2));
    const fa::Problem& p = problem(n, U);
    fa::KMeansOptions o;
    o.k = k;
    o.update = U;
    o.n_threads = threads;
    fa::Rng rng(fa::derive_seed(o.seed, 0));
    const fa::WhSet init = fa::init_kmeanspp(p, k, rng, fa::max_threads(), fa::null_monitor(), 0);
    std::int64_t total_iter = 0;
    fa::RunResult r;
    for (auto _ : state) {
        r = fa::lloyd(p, init, o, fa::null_monitor(), 0);
        benchmark::DoNotOptimize(r.anchors.w.data());
        total_iter += r.n_iter;
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * n);
    state.counters["n_iter"] = r.n_iter;
    state.counters["time/iter"] = benchmark::Counter(static_cast<double>(std::max<std::int64_t>(total_iter, 1)),
                                                     benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// Mean best IoU of the boxes with k anchors (the fitness of a set of anchors).
void BM_avg_best_iou(benchmark::State& state) {
    const fa::index_t n = state.range(0);
    const int k = static_cast<int>(state.range(1));
    const int threads = static_cast<int>(state.range(2));
    const fa::WhSet& set = boxes(n).set;
    const fa::WhSet& anc = anchors(k);
    for (auto _ : state) {
        benchmark::DoNotOptimize(fa::avg_best_iou(set, nullptr, anc, threads));
    }
    set_rates(state, n, n * k);
}

// Set-up of a weighted-median fit: the range pass and both argsorts (radix). Arguments {n, threads}.
void BM_problem_make_median(benchmark::State& state) {
    const fa::index_t n = state.range(0);
    const int threads = static_cast<int>(state.range(1));
    const std::vector<double>& rows = boxes(n).rows;
    for (auto _ : state) {
        fa::Problem p = fa::Problem::make(rows_of(rows), nullptr, n, true, threads);
        benchmark::DoNotOptimize(p.order[0].data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * n);
}

// The whole fit: k = 9, k-means++ initialisation, Lloyd to convergence (labels repeat).
// Arguments {n, threads}; the counters report the iterations run and the mean best IoU.
template <fa::Update U>
void BM_kmeans_iou(benchmark::State& state) {
    const fa::index_t n = state.range(0);
    const int threads = static_cast<int>(state.range(1));
    const std::vector<double>& rows = boxes(n).rows;
    fa::KMeansOptions o;
    o.k = 9;
    o.update = U;
    o.n_threads = threads;
    fa::KMeansOutput out;
    for (auto _ : state) {
        out = fa::kmeans_iou(rows_of(rows), nullptr, n, o, nullptr, fa::null_monitor());
        benchmark::DoNotOptimize(out.anchors.w.data());
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * n);
    state.counters["n_iter"] = out.n_iter;
    state.counters["avg_iou"] = out.avg_iou;
}

// The dense IoU matrix of 1000 x 1000 boxes, stored as Out. Arguments {threads}.
template <class Out>
void BM_iou_matrix(benchmark::State& state) {
    constexpr fa::index_t n = 1000;
    const int threads = static_cast<int>(state.range(0));
    const std::vector<double> rows_a = make_rows(n, 1), rows_b = make_rows(n, 2);
    const fa::WhSet a = fa::WhSet::from_rows(rows_a.data(), n), b = fa::WhSet::from_rows(rows_b.data(), n);
    std::vector<Out> out(static_cast<std::size_t>(n * n));
    for (auto _ : state) {
        fa::iou_matrix(a, b, out.data(), threads);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    state.counters["cells/s"] =
        benchmark::Counter(static_cast<double>(state.iterations()) * n * n, benchmark::Counter::kIsRate);
}

// ---------------------------------------------------------------------------------------------
// Registration (at run time, so the largest size can be chosen on the command line).

const char kMaxNFlag[] = "--fastanchor_max_n=";

std::vector<std::int64_t> sizes(std::int64_t max_n) {
    std::vector<std::int64_t> out;
    for (std::int64_t n = 10000; n <= max_n; n *= 10) out.push_back(n);
    return out;
}

// The float kernel of the Lloyd assignment on one thread, over the problem's scaled floats (split
// from the rows once, outside the timing) in chunks of kChunk boxes: labels, and flags for the
// changed and too-close boxes; with Gap also the gap between the best two IoUs, from which the
// bounds are made. Arguments: {n, k}.
float_anchors_t float_anchors(const fa::Problem& p, int k) {
    const fa::WhSet& a = anchors(k);
    float_anchors_t f;
    for (int j = 0; j < k; ++j) {
        f.w[j] = static_cast<float>(a.w[j] * p.fscale);
        f.h[j] = static_cast<float>(a.h[j] * p.fscale);
        f.a[j] = f.w[j] * f.h[j];
    }
    return f;
}

// True (and the benchmark marked skipped) when an AVX2 form is asked for and cannot run.
bool no_avx2(benchmark::State& state, bool avx2) {
    if (avx2 && !fa::cpu_has_avx2()) {
        state.SkipWithError("no AVX2 in this build or on this CPU");
        return true;
    }
    return false;
}

fa::Isa isa_of(bool avx2) { return avx2 ? fa::Isa::Avx2 : fa::Isa::Portable; }

// The float labelling kernel (detail::label_float_k) on float rows in chunks, portable or AVX2
// (threads: 1).
template <bool Gap, bool Avx2>
void BM_float_label_top2(benchmark::State& state) {
    if (no_avx2(state, Avx2)) return;
    const fa::index_t n = state.range(0);
    const int k = static_cast<int>(state.range(1));
    const fa::Problem& p = problem(n, fa::Update::Mean);
    const float_anchors_t A = float_anchors(p, k);
    const std::vector<std::uint8_t> old(static_cast<std::size_t>(n), 0);
    std::vector<std::int32_t> label(fa::kChunk);
    std::vector<std::uint8_t> flag(fa::kChunk);
    std::vector<float> gap(fa::kChunk);
    for (auto _ : state) {
        for (fa::index_t b = 0; b < n; b += fa::kChunk) {
            const fa::index_t m = std::min(fa::kChunk, n - b);
            fa::detail::label_float_k(isa_of(Avx2), p.frows() + 2 * b, static_cast<float>(p.fscale), m, A.w, A.h, A.a,
                                      k, old.data() + b, label.data(), flag.data(), Gap ? gap.data() : nullptr);
            benchmark::DoNotOptimize(flag.data());
        }
        benchmark::ClobberMemory();
    }
    set_rates(state, n, n * k);
}

// The median's gathering pass: which boxes have a width or height key inside their cluster's
// target range (detail::flag_ranges), portable or AVX2 (threads: 1). The ranges hold the
// keys of sides in [30, 31) px for every cluster, the labels are uniform in [0, k).
template <bool Avx2>
void BM_flag_in_ranges(benchmark::State& state) {
    const fa::index_t n = state.range(0);
    const int k = static_cast<int>(state.range(1));
    const fa::Problem& p = problem(n, fa::Update::Median);
    fa::Rng rng(5);
    std::vector<std::uint8_t> lab(static_cast<std::size_t>(n));
    for (auto& l : lab) l = static_cast<std::uint8_t>(rng.below(static_cast<std::uint64_t>(k)));
    auto key = [](float v) {
        std::int32_t b;
        std::memcpy(&b, &v, sizeof b);
        return b;
    };
    const std::vector<std::int32_t> lo(static_cast<std::size_t>(k), key(30.0f)),
        hi(static_cast<std::size_t>(k), key(31.0f) - 1);
    std::vector<std::uint8_t> hit(fa::kChunk);
    if (no_avx2(state, Avx2)) return;
    for (auto _ : state) {
        std::uint8_t any = 0;
        for (fa::index_t b = 0; b < n; b += fa::kChunk) {
            const fa::index_t m = std::min(fa::kChunk, n - b);
            const float* rows = p.frows() + 2 * b;
            any |= fa::detail::flag_ranges(isa_of(Avx2), lab.data() + b, rows, m, k, lo.data(), hi.data(), lo.data(),
                                           hi.data(), hit.data());
        }
        benchmark::DoNotOptimize(any);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * n);
}

void register_all(std::int64_t max_n) {
    const std::vector<std::int64_t> ns = sizes(max_n);
    const std::vector<std::int64_t> ks = {5, 9, 15};
    const std::vector<std::int64_t> threads = {1, 2};
    // Whole fits stop at 10^6 boxes.
    const std::vector<std::int64_t> fit_ns = sizes(std::min<std::int64_t>(max_n, 1000000));

    benchmark::RegisterBenchmark("assign_all", BM_assign_all)
        ->ArgNames({"n", "k", "threads"})
        ->ArgsProduct({ns, ks, threads})
        ->UseRealTime();
    benchmark::RegisterBenchmark("lloyd_first_iteration/mean", BM_lloyd_first_iteration<fa::Update::Mean>)
        ->ArgNames({"n", "k", "threads"})
        ->ArgsProduct({ns, ks, threads})
        ->UseRealTime();
    benchmark::RegisterBenchmark("lloyd_first_iteration/median", BM_lloyd_first_iteration<fa::Update::Median>)
        ->ArgNames({"n", "k", "threads"})
        ->ArgsProduct({ns, ks, threads})
        ->UseRealTime();
    benchmark::RegisterBenchmark("lloyd_run/mean", BM_lloyd_run<fa::Update::Mean>)
        ->ArgNames({"n", "k", "threads"})
        ->ArgsProduct({fit_ns, ks, threads})
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("lloyd_run/median", BM_lloyd_run<fa::Update::Median>)
        ->ArgNames({"n", "k", "threads"})
        ->ArgsProduct({fit_ns, ks, threads})
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    const std::pair<const char*, void (*)(benchmark::State&)> single_thread[] = {
        {"float_label_top2", BM_float_label_top2<false, false>},
        {"float_label_top2_avx2", BM_float_label_top2<false, true>},
        {"float_label_top2_gap", BM_float_label_top2<true, false>},
        {"float_label_top2_gap_avx2", BM_float_label_top2<true, true>},
        {"flag_in_ranges", BM_flag_in_ranges<false>},
        {"flag_in_ranges_avx2", BM_flag_in_ranges<true>},
    };
    for (const auto& [name, fn] : single_thread)
        benchmark::RegisterBenchmark(name, fn)->ArgNames({"n", "k"})->ArgsProduct({ns, ks})->UseRealTime();
    benchmark::RegisterBenchmark("avg_best_iou", BM_avg_best_iou)
        ->ArgNames({"n", "k", "threads"})
        ->ArgsProduct({ns, {9}, threads})
        ->UseRealTime();
    benchmark::RegisterBenchmark("problem_make/median", BM_problem_make_median)
        ->ArgNames({"n", "threads"})
        ->ArgsProduct({ns, threads})
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("kmeans_iou/k9/median", BM_kmeans_iou<fa::Update::Median>)
        ->ArgNames({"n", "threads"})
        ->ArgsProduct({fit_ns, threads})
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("kmeans_iou/k9/mean", BM_kmeans_iou<fa::Update::Mean>)
        ->ArgNames({"n", "threads"})
        ->ArgsProduct({fit_ns, threads})
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("iou_matrix/1000x1000/f64", BM_iou_matrix<double>)
        ->ArgNames({"threads"})
        ->ArgsProduct({threads})
        ->UseRealTime();
    benchmark::RegisterBenchmark("iou_matrix/1000x1000/f32", BM_iou_matrix<float>)
        ->ArgNames({"threads"})
        ->ArgsProduct({threads})
        ->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
    // Take out our own flag before google-benchmark reads the rest.
    std::int64_t max_n = 1000000;
    int kept = 1;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg.rfind(kMaxNFlag, 0) == 0) {
            max_n = static_cast<std::int64_t>(std::atof(arg.c_str() + sizeof(kMaxNFlag) - 1));
        } else {
            if (arg == "--help") {
                std::cout << "fastanchor benchmarks:\n  " << kMaxNFlag
                          << "<n>  largest number of boxes (default 1000000; 1e7 adds 10^7)\n\n";
            }
            argv[kept++] = argv[i];
        }
    }
    argc = kept;

    register_all(max_n);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::AddCustomContext("fastanchor_openmp", fa::has_openmp() ? "yes" : "no");
    benchmark::AddCustomContext("fastanchor_max_threads", std::to_string(fa::max_threads()));
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
