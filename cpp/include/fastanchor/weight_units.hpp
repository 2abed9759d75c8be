// fastanchor: integer weights (WeightUnits), for the fits that sum weights exactly.
//
// A weight w is read as the integer max(1, nearbyint(ldexp(w, s))), with s chosen from the largest
// weight so that it lies in [2^(bits-1), 2^bits). Only the weights' ratios matter; they are
// resolved to 2^-(bits-1) of the largest, and a smaller positive weight counts as one unit.
// Integer weights (counts) below 2^(bits-1) are read exactly, times a power of two, so their ties
// stay ties. Sums of these integers are exact in any order: partials of chunks merge to the
// in-memory totals bit for bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace fastanchor {

struct WeightUnits {
    int shift = 0;

    // The units of weights whose largest is `top` (positive, finite), with `bits` bits.
    static WeightUnits of(double top, int bits) { return WeightUnits{bits - 1 - std::ilogb(top)}; }

    // Weight w (positive, finite, at most the largest) in units.
    std::int64_t operator()(double w) const {
        return std::max<std::int64_t>(1, static_cast<std::int64_t>(std::nearbyint(std::ldexp(w, shift))));
    }
};

}  // namespace fastanchor
