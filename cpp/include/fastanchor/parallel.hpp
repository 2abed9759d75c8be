// fastanchor: the one parallel loop of the core. Every parallel region goes through
// parallel_for: work items are numbered, results are written per item (or per fixed chunk) and
// combined in item order by the caller, so results never depend on the number of threads. An
// exception thrown by an item is caught inside the region (nothing may leave an OpenMP region)
// and rethrown afterwards with its type (the lowest item's, when several threw); the items not yet
// started are skipped once one has thrown.
//
// Interrupts (Ctrl-C) are noticed after a bounded amount of work, not once per iteration: an
// operation opens a PollScope with its Monitor; inside it every item of parallel_for, and every
// check_point() a kernel places in its inner loops (at most ~10^6 box-anchor evaluations apart),
// is a check point. On the calling thread a check point calls Monitor::poll() once kPollInterval
// has passed since the last poll; when poll() throws, the other threads of the operation stop at
// their next check point (they throw Stopped, which parallel_for drops in favour of the poll's
// exception). Check points only read a clock and a flag: results never depend on them.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
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

// ---- interrupts at bounded work ------------------------------------------------------------------

inline constexpr std::chrono::milliseconds kPollInterval{50};

// Thrown at a check point of a thread whose operation was interrupted on another thread.
struct Stopped : std::exception {
    const char* what() const noexcept override { return "fastanchor: the operation was interrupted"; }
};

namespace detail {
struct PollContext {
    Monitor* mon;
    std::atomic<bool> stop{false};
    std::chrono::steady_clock::time_point last;
};
// This thread's operation (null outside any PollScope) and whether this thread started it.
struct PollThread {
    PollContext* ctx = nullptr;
    bool owner = false;
};
inline PollThread& poll_thread() {
    thread_local PollThread t;
    return t;
}
}  // namespace detail

// A check point: see above. Cheap (a thread-local read, then a flag and a clock).
inline void check_point() {
    const detail::PollThread& t = detail::poll_thread();
    if (!t.ctx) return;
    if (t.ctx->stop.load(std::memory_order_relaxed)) throw Stopped();
    if (!t.owner) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - t.ctx->last < kPollInterval) return;
    t.ctx->last = now;
    try {
        t.ctx->mon->poll();
    } catch (...) {
        t.ctx->stop.store(true, std::memory_order_relaxed);
        throw;
    }
}

// The work between two check points of a kernel's inner loop, in box-anchor evaluations (about a
// millisecond of one thread's time).
inline constexpr index_t kCheckWork = index_t{1} << 20;

// Calls f(b, e) over [0, n) in consecutive slices of about kCheckWork / cost items (cost: the
// work of one item), with a check point after each slice.
template <class F>
void checked_slices(index_t n, index_t cost, F&& f) {
    const index_t step = std::max<index_t>(1, kCheckWork / std::max<index_t>(cost, 1));
    for (index_t b = 0; b < n; b += step) {
        f(b, std::min(n, b + step));
        check_point();
    }
}

// Makes `mon` the interrupt poll of the calling thread's check points until the scope ends.
class PollScope {
public:
    explicit PollScope(Monitor& mon) : saved_(detail::poll_thread()) {
        ctx_.mon = &mon;
        ctx_.last = std::chrono::steady_clock::now();
        detail::poll_thread() = {&ctx_, true};
    }
    ~PollScope() { detail::poll_thread() = saved_; }
    PollScope(const PollScope&) = delete;
    PollScope& operator=(const PollScope&) = delete;

private:
    detail::PollContext ctx_;
    detail::PollThread saved_;
};

enum class Schedule { Static, Dynamic };

// Calls f(i) for every i in [0, count) on up to threads_for(n_threads, count) threads (Static:
// contiguous blocks of items per thread; Dynamic: one item at a time, for items of uneven cost).
// Exceptions are carried out as described above.
template <class F>
void parallel_for(index_t count, int n_threads, F&& f, Schedule schedule = Schedule::Static) {
    const int nt = threads_for(n_threads, count);
    if (nt <= 1) {
        for (index_t i = 0; i < count; ++i) {
            check_point();
            f(i);
        }
        return;
    }
    std::vector<std::exception_ptr> error(static_cast<std::size_t>(nt));
    std::vector<index_t> error_item(static_cast<std::size_t>(nt), count);
    std::vector<char> error_stopped(static_cast<std::size_t>(nt), 0);
    std::atomic<bool> failed{false};
    detail::PollContext* const poll = detail::poll_thread().ctx;
    auto run = [&](index_t i) {
        if (failed.load(std::memory_order_relaxed)) return;
        // The region's other threads take part in the caller's operation (thread 0 is the caller).
        detail::PollThread& pt = detail::poll_thread();
        const detail::PollThread saved = pt;
        if (thread_index() != 0) pt = {poll, false};
        const auto t = static_cast<std::size_t>(thread_index());
        auto record = [&](bool stopped) {
            // A Stopped only echoes the interrupt of another thread: any other error comes first.
            const bool before = error[t] == nullptr || (error_stopped[t] && !stopped) ||
                                (stopped == static_cast<bool>(error_stopped[t]) && i < error_item[t]);
            if (before) {
                error_item[t] = i;
                error[t] = std::current_exception();
                error_stopped[t] = stopped;
            }
            failed.store(true, std::memory_order_relaxed);
        };
        try {
            check_point();
            f(i);
        } catch (const Stopped&) {
            record(true);
        } catch (...) {
            record(false);
        }
        pt = saved;
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
    std::size_t first = error.size();
    for (std::size_t t = 0; t < error.size(); ++t) {
        if (error[t] == nullptr) continue;
        if (first == error.size() || (error_stopped[first] && !error_stopped[t]) ||
            (error_stopped[first] == error_stopped[t] && error_item[t] < error_item[first]))
            first = t;
    }
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
