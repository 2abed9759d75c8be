// fastanchor: stable LSD radix argsort of positive doubles.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.hpp"

namespace fastanchor {

namespace detail {

// Stable LSD radix sort of (key, index) pairs by key, 11-bit digits; all digit histograms come
// from one read of the keys, and a digit that is the same for every key is skipped. Index must
// hold n - 1.
template <class Index, class Key>
std::vector<Index> radix_argsort(std::vector<Key>& key, index_t n) {
    constexpr int kBits = 11;
    constexpr int kBuckets = 1 << kBits;
    constexpr int kPasses = (8 * sizeof(Key) + kBits - 1) / kBits;
    std::vector<std::array<index_t, kBuckets>> count(kPasses);
    for (auto& c : count) c.fill(0);
    for (index_t i = 0; i < n; ++i) {
        const Key k = key[i];
        for (int p = 0; p < kPasses; ++p) ++count[p][(k >> (p * kBits)) & (kBuckets - 1)];
    }
    std::vector<Index> idx(n), idx2(n);
    for (index_t i = 0; i < n; ++i) idx[i] = static_cast<Index>(i);
    std::vector<Key> key2(n);
    for (int p = 0; p < kPasses; ++p) {
        auto& c = count[p];
        const int shift = p * kBits;
        if (n == 0 || c[(key[0] >> shift) & (kBuckets - 1)] == n) continue;
        index_t sum = 0;
        for (auto& x : c) {
            const index_t t = x;
            x = sum;
            sum += t;
        }
        for (index_t i = 0; i < n; ++i) {
            const index_t dst = c[(key[i] >> shift) & (kBuckets - 1)]++;
            key2[dst] = key[i];
            idx2[dst] = idx[i];
        }
        key.swap(key2);
        idx.swap(idx2);
    }
    return idx;
}

}  // namespace detail

// Indices that sort x[0], x[stride], ..., x[(n - 1) * stride] ascending, ties in index order (a
// stable sort). Requires x > 0: the bit patterns of positive numbers, read as unsigned integers,
// sort as the values do. When every value is exactly a float32 (annotation data usually is),
// 32-bit keys halve the work.
template <class Index = index_t, class T>
std::vector<Index> argsort_positive(const T* x, index_t n, index_t stride = 1) {
    bool fits_float = true;
    for (index_t i = 0; i < n && fits_float; ++i) {
        const double v = static_cast<double>(x[i * stride]);
        fits_float = static_cast<double>(static_cast<float>(v)) == v;
    }
    if (fits_float) {
        std::vector<std::uint32_t> key(n);
        for (index_t i = 0; i < n; ++i) {
            const float f = static_cast<float>(x[i * stride]);
            std::memcpy(&key[i], &f, sizeof(float));
        }
        return detail::radix_argsort<Index>(key, n);
    }
    std::vector<std::uint64_t> key(n);
    for (index_t i = 0; i < n; ++i) {
        const double v = static_cast<double>(x[i * stride]);
        std::memcpy(&key[i], &v, sizeof(double));
    }
    return detail::radix_argsort<Index>(key, n);
}

}  // namespace fastanchor
