// fastanchor: the one parallel loop of the core. Every parallel region goes through
// parallel_for: work items are numbered, results are written per item (or per fixed chunk) and
// combined in item order by the caller, so results never depend on the number of threads. An
// exception thrown by an item is caught inside the region (nothing may leave an OpenMP region)
// and rethrown afterwards with its type (the lowest item's, when several threw); the items not yet
// started are skipped once one has thrown.
#pragma once

#include <algorithm>
#include <atomic>
#include <exception>
#include <vector>

#include "common.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastanchor {

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

enum class Schedule { Static, Dynamic };

// Calls f(i) for every i in [0, count) on up to threads_for(n_threads, count) threads (Static:
// contiguous blocks of items per thread; Dynamic: one item at a time, for items of uneven cost).
// Exceptions are carried out as described above.
template <class F>
void parallel_for(index_t count, int n_threads, F&& f, Schedule schedule = Schedule::Static) {
    const int nt = threads_for(n_threads, count);
    if (nt <= 1) {
        for (index_t i = 0; i < count; ++i) f(i);
        return;
    }
    std::vector<std::exception_ptr> error(static_cast<std::size_t>(nt));
    std::vector<index_t> error_item(static_cast<std::size_t>(nt), count);
    std::atomic<bool> failed{false};
    auto run = [&](index_t i) {
        if (failed.load(std::memory_order_relaxed)) return;
        try {
            f(i);
        } catch (...) {
            const auto t = static_cast<std::size_t>(thread_index());
            if (i < error_item[t]) {
                error_item[t] = i;
                error[t] = std::current_exception();
            }
            failed.store(true, std::memory_order_relaxed);
        }
    };
#ifdef _OPENMP
    if (schedule == Schedule::Dynamic) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
        for (index_t i = 0; i < count; ++i) run(i);
    } else {
#pragma omp parallel for schedule(static) num_threads(nt)
        for (index_t i = 0; i < count; ++i) run(i);
    }
#else
    (void)schedule;
    for (index_t i = 0; i < count; ++i) run(i);
#endif
    if (!failed.load()) return;
    std::size_t first = 0;
    for (std::size_t t = 1; t < error.size(); ++t)
        if (error_item[t] < error_item[first]) first = t;
    std::rethrow_exception(error[first]);
}

// Calls f(chunk, begin, end) for every chunk of kChunk items of [0, n), in parallel.
template <class F>
void for_each_chunk(index_t n, int n_threads, F&& f) {
    parallel_for(n_chunks(n), n_threads, [&](index_t c) { f(c, c * kChunk, std::min(n, (c + 1) * kChunk)); });
}

// Threads for_each_chunk starts for n items (an upper bound on thread_index() + 1 inside it).
inline int chunk_threads(index_t n, int n_threads) { return threads_for(n_threads, n_chunks(n)); }

}  // namespace fastanchor
