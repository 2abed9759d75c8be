// fastanchor: the one fixed-K dispatch table. A kernel written for a compile-time number of
// anchors K is called through with_fixed_k(k, f), which calls f(std::integral_constant<int, K>{})
// for the K equal to k; it returns false (and calls nothing) when k has no fixed-K form.
#pragma once

#include <type_traits>
#include <utility>

#include "constants.hpp"

namespace fastanchor {

// The K with fixed kernels: every K up to kMaxFixedK (the IoU kernels), and a smaller list for
// the fitness kernels (the common anchor counts; code size grows with every K).
using FixedKs = std::integer_sequence<int, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16>;
static_assert(FixedKs::size() == kMaxFixedK, "FixedKs lists 1..kMaxFixedK");
using FitnessKs = std::integer_sequence<int, 1, 2, 3, 4, 5, 6, 8, 9, 12, 15>;

template <class F, int... Ks>
bool with_k_in(int k, F&& f, std::integer_sequence<int, Ks...>) {
    static_assert(((Ks >= 1 && Ks <= kMaxFixedK) && ...), "a fixed K lies in [1, kMaxFixedK]");
    return ((k == Ks ? (f(std::integral_constant<int, Ks>{}), true) : false) || ...);
}

template <class F>
bool with_fixed_k(int k, F&& f) {
    return with_k_in(k, std::forward<F>(f), FixedKs{});
}

}  // namespace fastanchor
