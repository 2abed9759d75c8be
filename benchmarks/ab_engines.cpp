// fastanchor: two builds of the Lloyd engine in one process, alternated repetition by repetition,
// so that a shared, noisy machine slows both alike. Built and run by ab_engines.sh, which copies
// the old commit's headers under the namespace fa_a and the working tree's under fa_b.
//
// Times one Lloyd iteration as run.py does (iterations 2-11 of a fit from the same init, on the
// same COCO-like boxes), for float32 and float64 rows and both updates.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "fa_a/kmeans.hpp"
#include "fa_b/kmeans.hpp"

namespace {

using Clock = std::chrono::steady_clock;

// Milliseconds per iteration over iterations 2-11 (the first assignment and update untimed).
template <class Lloyd, class WhSet, class Problem, class Update>
double iteration_ms(const Problem& p, const std::vector<double>& init, Update update, int threads) {
    Lloyd ll(p, static_cast<int>(init.size() / 2), update, threads);
    WhSet a = WhSet::from_rows(init.data(), static_cast<std::int64_t>(init.size() / 2));
    ll.assign(a);
    a = ll.update(a);
    const auto t0 = Clock::now();
    for (int it = 0; it < 10; ++it) {
        ll.assign(a);
        a = ll.update(a);
    }
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count() / 10;
}

template <class T>
std::vector<T> read_file(const char* path) {
    std::FILE* f = std::fopen(path, "rb");
    if (!f) {
        std::perror(path);
        std::exit(1);
    }
    std::vector<T> v;
    T x;
    while (std::fread(&x, sizeof x, 1, f) == 1) v.push_back(x);
    std::fclose(f);
    return v;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s BOXES.f32 INIT.f64 [REPEATS] [THREADS]\n", argv[0]);
        return 2;
    }
    const std::vector<float> rows32 = read_file<float>(argv[1]);
    const std::vector<double> rows64(rows32.begin(), rows32.end()), init = read_file<double>(argv[2]);
    const int repeats = argc > 3 ? std::atoi(argv[3]) : 10, threads = argc > 4 ? std::atoi(argv[4]) : 2;
    const auto n = static_cast<std::int64_t>(rows32.size() / 2);
    std::printf("%lld boxes, k = %zu, %d threads, %d repeats: ms per iteration, median (min)\n",
                static_cast<long long>(n), init.size() / 2, threads, repeats);
    for (const bool f64 : {false, true}) {
        fa_a::BoxRows ra;
        fa_b::BoxRows rb;
        if (f64) {
            ra.f64 = rb.f64 = rows64.data();
        } else {
            ra.f32 = rb.f32 = rows32.data();
        }
        const fa_a::Problem pa = fa_a::Problem::make(ra, nullptr, n, false, threads);
        const fa_b::Problem pb = fa_b::Problem::make(rb, nullptr, n, false, threads);
        for (const bool med : {false, true}) {
            std::vector<double> ta, tb;
            for (int r = 0; r < repeats; ++r) {
                ta.push_back(iteration_ms<fa_a::Lloyd<std::uint8_t>, fa_a::WhSet>(
                    pa, init, med ? fa_a::Update::Median : fa_a::Update::Mean, threads));
                tb.push_back(iteration_ms<fa_b::Lloyd<std::uint8_t>, fa_b::WhSet>(
                    pb, init, med ? fa_b::Update::Median : fa_b::Update::Mean, threads));
            }
            std::printf("%s rows, %-6s update: old %.3f (%.3f)  new %.3f (%.3f)  new/old %.2f\n",
                        f64 ? "float64" : "float32", med ? "median" : "mean", median(ta),
                        *std::min_element(ta.begin(), ta.end()), median(tb), *std::min_element(tb.begin(), tb.end()),
                        median(tb) / median(ta));
        }
    }
    return 0;
}
