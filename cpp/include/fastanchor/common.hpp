// fastanchor: common definitions of the header-only core (threads, chunks, monitoring).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

// Runtime CPU dispatch for the hot loops: GCC/Clang compile one clone per listed ISA and pick
// the best at load time (ifunc). Portable builds get AVX-512, AVX2 and baseline clones; a
// native build (FASTANCHOR_NATIVE) compiles for the host only.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(FASTANCHOR_NO_CLONES)
#define FASTANCHOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTANCHOR_CLONES
#endif

// Hand-written AVX2 kernels (the prior matching's row kernel; in the Lloyd fit the labelling,
// the bounded passes' slack test, the median's range flags and k-means++'s potential), each
// chosen at run time where the CPU has AVX2, the portable code otherwise.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(FASTANCHOR_NO_AVX2)
#define FASTANCHOR_HAVE_AVX2 1
#include <immintrin.h>
#else
#define FASTANCHOR_HAVE_AVX2 0
#endif

namespace fastanchor {

#if FASTANCHOR_HAVE_AVX2
// AVX2, and POPCNT beside it (the matching kernel counts bits).
inline bool cpu_has_avx2() {
    static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
    return has;
}
#endif

// Whether to run the AVX2 forms: built with them, the CPU has AVX2, and the caller did not ask
// for the portable ones (tests run both).
inline bool use_avx2(bool portable = false) {
#if FASTANCHOR_HAVE_AVX2
    return !portable && cpu_has_avx2();
#else
    (void)portable;
    return false;
#endif
}

using index_t = std::int64_t;

// Work is cut into fixed chunks of boxes whatever the number of threads; partial results are
// combined in chunk order, so every result is bit-identical for any thread count.
inline constexpr index_t kChunk = 4096;

inline index_t n_chunks(index_t n) { return (n + kChunk - 1) / kChunk; }

inline int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// Index of the calling thread inside a parallel region (0 outside, or without OpenMP).
inline int thread_index() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

inline bool has_openmp() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

// Number of threads worth starting for `work_items` independent items.
inline int threads_for(int n_threads, index_t work_items) {
    index_t t = std::min<index_t>(std::max(n_threads, 1), std::max<index_t>(work_items, 1));
    return static_cast<int>(t);
}

// Calls f(chunk, begin, end) for every chunk of [0, n), in parallel. f must not throw.
template <class F>
void for_each_chunk(index_t n, int n_threads, F&& f) {
    const index_t nc = n_chunks(n);
    const int nt = threads_for(n_threads, nc);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
    for (index_t c = 0; c < nc; ++c) {
        f(c, c * kChunk, std::min(n, (c + 1) * kChunk));
    }
    (void)nt;
}

// Threads for_each_chunk starts for n items (an upper bound on thread_index() + 1 inside it).
inline int chunk_threads(index_t n, int n_threads) { return threads_for(n_threads, n_chunks(n)); }

// Called by long operations between their steps, on the calling thread and outside any
// parallel region. An implementation may throw to stop the operation (e.g. on Ctrl-C); the
// core is exception-safe at these points.
class Monitor {
public:
    virtual ~Monitor() = default;
    // `stage` names the step ("init", "lloyd", ...), run is the restart index, step the count.
    virtual void tick(const char* stage, int run, index_t step) {
        (void)stage;
        (void)run;
        (void)step;
    }
};

inline Monitor& null_monitor() {
    static Monitor m;
    return m;
}

}  // namespace fastanchor
