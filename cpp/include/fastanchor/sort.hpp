// fastanchor: stable LSD radix argsort of positive doubles.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "common.hpp"

namespace fastanchor {

// Indices that sort x[0, n) ascending, ties in index order (a stable sort). Requires x > 0 (or
// +0): the bit patterns of non-negative doubles, read as unsigned integers, sort as the values
// do. Four passes of 16-bit digits; a pass whose digit is the same for every key is skipped
// (the low digits of values that came from float32 are all zero).
inline std::vector<index_t> argsort_positive(const double* x, index_t n) {
    std::vector<std::uint64_t> key(n), key2(n);
    std::vector<index_t> idx(n), idx2(n);
    for (index_t i = 0; i < n; ++i) {
        std::memcpy(&key[i], &x[i], sizeof(double));
        idx[i] = i;
    }
    std::vector<index_t> count(1 << 16);
    for (int pass = 0; pass < 4; ++pass) {
        const int shift = 16 * pass;
        std::fill(count.begin(), count.end(), 0);
        for (index_t i = 0; i < n; ++i) ++count[(key[i] >> shift) & 0xFFFF];
        if (n == 0 || count[(key[0] >> shift) & 0xFFFF] == n) continue;
        index_t sum = 0;
        for (auto& c : count) {
            const index_t t = c;
            c = sum;
            sum += t;
        }
        for (index_t i = 0; i < n; ++i) {
            const index_t dst = count[(key[i] >> shift) & 0xFFFF]++;
            key2[dst] = key[i];
            idx2[dst] = idx[i];
        }
        key.swap(key2);
        idx.swap(idx2);
    }
    return idx;
}

}  // namespace fastanchor
