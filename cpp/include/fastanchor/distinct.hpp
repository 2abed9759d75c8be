// fastanchor: the row indices of a sample without replacement. sample_index (Python) draws a
// sequence of row indices with repeats and keeps its first m distinct values, then sorts them.
// first_distinct finds them with an open-addressing hash set of at most twice as many slots as
// values kept (O(m) memory, one pass over the sequence), and sort_nonnegative sorts them by radix:
// numpy's unique (a stable sort of the whole sequence) and sort took about a quarter of a second
// per sample of 2^20 rows.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "common.hpp"

namespace fastanchor {

// Writes the first (at most m) distinct values of seq [0, len) to out in the order of their first
// occurrence and returns their number. Every value must be >= 0 (std::invalid_argument if not).
inline index_t first_distinct(const std::int64_t* seq, index_t len, index_t m, std::int64_t* out) {
    const index_t keep = std::min(len, m);
    if (keep <= 0) return 0;
    std::size_t slots = 16;
    int bits = 4;
    while (slots < 2 * static_cast<std::size_t>(keep)) {
        slots <<= 1;
        ++bits;
    }
    constexpr std::int64_t kEmpty = -1;
    std::vector<std::int64_t> table(slots, kEmpty);
    const std::size_t mask = slots - 1;
    index_t count = 0;
    for (index_t i = 0; i < len && count < m; ++i) {
        const std::int64_t v = seq[i];
        if (v < 0) throw std::invalid_argument("first_distinct: a negative value");
        // Fibonacci hashing: the top bits of the product spread consecutive indices apart.
        std::size_t h =
            static_cast<std::size_t>((static_cast<std::uint64_t>(v) * 0x9E3779B97F4A7C15ULL) >> (64 - bits));
        while (table[h] != v) {
            if (table[h] == kEmpty) {
                table[h] = v;
                out[count++] = v;
                break;
            }
            h = (h + 1) & mask;
        }
    }
    return count;
}

// Sorts a [0, n), every value >= 0, ascending: LSD radix sort by 11-bit digits, up to the highest
// digit any value has.
inline void sort_nonnegative(std::int64_t* a, index_t n) {
    constexpr int kBits = 11;
    constexpr std::size_t kBuckets = std::size_t{1} << kBits;
    std::uint64_t any = 0;
    for (index_t i = 0; i < n; ++i) {
        if (a[i] < 0) throw std::invalid_argument("sort_nonnegative: a negative value");
        any |= static_cast<std::uint64_t>(a[i]);
    }
    std::vector<std::int64_t> spare(static_cast<std::size_t>(n));
    std::int64_t *src = a, *dst = spare.data();
    for (int shift = 0; shift < 64 && (any >> shift) != 0; shift += kBits) {
        std::array<index_t, kBuckets> start{};
        for (index_t i = 0; i < n; ++i) ++start[(static_cast<std::uint64_t>(src[i]) >> shift) & (kBuckets - 1)];
        index_t sum = 0;
        for (auto& c : start) {
            const index_t t = c;
            c = sum;
            sum += t;
        }
        for (index_t i = 0; i < n; ++i)
            dst[start[(static_cast<std::uint64_t>(src[i]) >> shift) & (kBuckets - 1)]++] = src[i];
        std::swap(src, dst);
    }
    if (src != a) std::copy(src, src + n, a);
}

}  // namespace fastanchor
