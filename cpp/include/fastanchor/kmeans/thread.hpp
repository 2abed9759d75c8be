// fastanchor: a Lloyd thread's state: its partials of one assignment (what the boxes that changed
// cluster change in the per-cluster statistics: counts, exact sums, histogram counts, moves into
// the median's cached ranges), merged in thread order after the pass (integers: their total is
// the same in any order), and its scratch for a block of boxes.
#pragma once

#include <cstdint>
#include <vector>

#include "../common.hpp"

namespace fastanchor {
namespace detail {

// Per thread: what the boxes that changed cluster in one assignment change in the per-cluster
// statistics (integers: their sum is the same in any order), and scratch for a block of boxes.
//
// Every move writes these, so no two threads' data may share a cache line (false sharing made a
// move cost about 50 ns): the struct is cache-line aligned and its small arrays padded.
template <class T>
struct PaddedArray {
    static constexpr std::size_t kPad = (64 + sizeof(T) - 1) / sizeof(T);
    std::vector<T> store;
    std::size_t n = 0;
    void assign(std::size_t size, T v) {
        store.assign(size + 2 * kPad, v);
        n = size;
    }
    T& operator[](std::size_t i) { return store[kPad + i]; }
    const T& operator[](std::size_t i) const { return store[kPad + i]; }
    T* begin() { return store.data() + kPad; }
    T* end() { return store.data() + kPad + n; }
};

struct alignas(64) LloydThread {
    static constexpr index_t kBlock = 1024;  // boxes labelled together (their scratch fits in L1)
    PaddedArray<index_t> count;              // per cluster
    PaddedArray<int128_t> sum_w, sum_h;      // per cluster (exact sums)
    PaddedArray<int128_t> sum_u;             // per cluster (the exact weighted sums' weights)
    PaddedArray<std::int32_t> hist;          // [X][cluster][bin] (the median's box counts)
    PaddedArray<std::int64_t> whist;         // [X][cluster][bin] (the weighted median's integer weights)
    struct Logged {
        std::uint32_t slot;   // X * k + cluster
        std::uint32_t units;  // the box's integer weight (1: unit weights)
        bool add;
        double value;
    };
    std::vector<Logged> log;  // moves into and out of the median's cached ranges
    bool any = false;
    std::vector<double> w, h, a;
    std::vector<float> frows, gap;  // gathered float rows (w, h); float gaps
    std::vector<std::int32_t> lab, idx;
    std::vector<std::uint8_t> flag, need, old;
    struct Flagged {  // a box flagged by the float ranking (detail::label_top2), to commit
        index_t i;
        std::int32_t label;
        std::uint8_t flag;
    };
    std::vector<Flagged> pending;  // a chunk's flagged boxes, in order (assign_chunk)
    std::vector<std::uint16_t> slack;
    // The exact unit-weight mean's moves with one-byte labels (Lloyd::move_mean): count and
    // exact sums by label, all 256 of them, so that label 255 (none: the first assignment's
    // moves come from it) has a slot to write to and a move needs no branch. Nothing reads it.
    // The sums in 64 bits when every sum of the data fits in them (Problem::sums64).
    template <class Sum>
    struct MeanMoves {
        std::int64_t count[256] = {};
        Sum w[256] = {}, h[256] = {};
    };
    MeanMoves<std::int64_t> mean64;
    MeanMoves<int128_t> mean128;
    // whist_size: the weighted median's histograms (0: unit weights, or no histogram median).
    void allocate(int k, bool sums, std::size_t hist_size, std::size_t whist_size = 0) {
        count.assign(k, 0);
        if (sums) {
            sum_w.assign(k, 0);
            sum_h.assign(k, 0);
            sum_u.assign(k, 0);
        }
        hist.assign(hist_size, 0);
        whist.assign(whist_size, 0);
        w.resize(kBlock);
        h.resize(kBlock);
        a.resize(kBlock);
        lab.resize(kBlock);
        idx.resize(kBlock);
        flag.resize(kBlock);
        need.resize(kBlock);
        old.resize(kBlock);
        slack.resize(kBlock);
        frows.resize(2 * kBlock);
        gap.resize(kBlock);
        pending.resize(kChunk);
    }
};

}  // namespace detail
}  // namespace fastanchor
