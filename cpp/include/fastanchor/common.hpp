// fastanchor: common definitions of the header-only core (index type, chunks, clones, 128-bit
// integers, monitoring). Threads are in parallel.hpp, SIMD detection and dispatch in simd.hpp.
// docs/design.md is the maintainer's map of the core.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

// Runtime CPU dispatch for the auto-vectorized loops: GCC compiles one clone per listed ISA and
// picks the best at load time (ifunc). Portable builds get AVX-512, AVX2 and baseline clones; a
// native build (FASTANCHOR_NATIVE) compiles for the host only. (Hand-written kernels dispatch
// through simd.hpp instead.)
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(FASTANCHOR_NO_CLONES)
#define FASTANCHOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTANCHOR_CLONES
#endif

#ifndef __SIZEOF_INT128__
#error "fastanchor needs a compiler with 128-bit integers (GCC or Clang on a 64-bit target): its exact sums use them"
#endif

namespace fastanchor {

using index_t = std::int64_t;
// Exact integer sums (the k-means mean's fixed-point sums, the fitness's fixed-point totals).
__extension__ typedef __int128 int128_t;

// Work is cut into fixed chunks of boxes whatever the number of threads; partial results are
// combined in chunk order, so every result is bit-identical for any thread count.
inline constexpr index_t kChunk = 4096;

inline index_t n_chunks(index_t n) { return (n + kChunk - 1) / kChunk; }

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
    // Checks for an interrupt only (no progress report): called on the calling thread every
    // kPollInterval or so while an operation runs under a PollScope (parallel.hpp), possibly
    // inside a parallel region. May throw to stop the operation.
    virtual void poll() {}
};

inline Monitor& null_monitor() {
    static Monitor m;
    return m;
}

}  // namespace fastanchor

#include "parallel.hpp"
#include "simd.hpp"
