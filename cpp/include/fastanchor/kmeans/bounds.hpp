// fastanchor: the bounded Lloyd passes (Hamerly's bounds, compacted to one 16-bit slack per
// box): which pass an assignment takes, the per-box slacks and the per-label thresholds, and the
// kernels that test them (need_rank; its AVX2 twin in bounds_avx2.hpp) and store them
// (slack_units). The proof is in Bounds::choose; docs/design.md, "The 16-bit Hamerly slack".
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../common.hpp"
#include "../constants.hpp"
#include "../iou.hpp"
#include "bounds_avx2.hpp"
#include "flags.hpp"

namespace fastanchor {
namespace detail {

// The boxes of [0, m) whose slack does not prove their label (need[t] = 1), with thresholds by
// label; returns whether there is any.
FASTANCHOR_CLONES inline std::uint8_t need_rank(const std::uint16_t* __restrict slack,
                                                const std::uint8_t* __restrict lab, index_t m,
                                                const std::uint16_t* __restrict threshold,
                                                std::uint8_t* __restrict need) {
    std::uint8_t any = 0;
#pragma omp simd reduction(| : any)
    for (index_t t = 0; t < m; ++t) {
        const std::uint8_t x = static_cast<std::uint8_t>(slack[t] <= threshold[lab[t]]);
        need[t] = x;
        any |= x;
    }
    return any;
}

// slack[t] = (gap[t] - eps + base[lab[t]]) * unit - 1, truncated to an integer in [0, 2^16 - 1]
// (0 where flag[t] == 1): a lower bound in units of 1 / unit.
FASTANCHOR_CLONES inline void slack_units(const float* __restrict gap, const std::int32_t* __restrict lab,
                                          const std::uint8_t* __restrict flag, const float* __restrict base, index_t m,
                                          float eps, float unit, std::uint16_t* __restrict slack) {
#pragma omp simd
    for (index_t t = 0; t < m; ++t) {
        const float units = ((gap[t] - eps) + base[lab[t]]) * unit - 1.0f;
        const float capped = std::min(std::max(units, 0.0f), 65535.0f) * static_cast<float>(flag[t] != 1);
        slack[t] = static_cast<std::uint16_t>(static_cast<std::int32_t>(capped));
    }
}

// The boxes t of [0, m) (labels lab) whose slack does not prove their label, into idx in
// increasing order; returns how many. need: scratch for m flags (the portable form).
inline index_t boxes_to_rank(Isa isa, const std::uint16_t* slack, const std::uint8_t* lab, index_t m,
                             const std::uint16_t* threshold, std::uint8_t* need, std::int32_t* idx) {
    return FASTANCHOR_SIMD(isa, need_rank_avx2(slack, lab, m, threshold, idx),
                           (need_rank(slack, lab, m, threshold, need) ? compact_flagged(need, m, idx) : 0));
}

}  // namespace detail

// Which pass each assignment of one Lloyd run takes, and the bounds of the bounded passes (on the
// float path only, k <= kMaxFixedK).
class Bounds {
public:
    // Bounds are renewed by a full pass once the cumulative drift reaches kMaxDrift (it keeps the
    // slack's thresholds within 16 bits), and every kResetEvery passes so that rounding in the
    // drift sums can never add up.
    static constexpr double kMaxDrift = 0.5;
    static constexpr int kResetEvery = 1024;
    // Added to every anchor's drift: covers the rounding of 1 - IoU.
    static constexpr double kDriftSlack = 1e-14;
    // When an anchor moved farther than this (in 1 - IoU) since the last assignment, the bounds
    // would send most boxes to be ranked again anyway: the pass ranks every box for its label
    // alone and keeps no bounds. (Chosen with the previous engine, whose bounds differed: on 1M
    // COCO-like boxes, whole default fits with thresholds 0 to 0.1, 0.01-0.02 was fastest.)
    static constexpr double kRelabelDrift = 0.02;
    // The margin that makes a skipped box's best IoU strictly the largest.
    static constexpr double kGap = 1e-9;
    static_assert(kMaxDrift * 2 + kGap < 65536.0 / (1 << kSlackBits), "thresholds fit in 16 bits");

    // n boxes, k anchors; slacks are kept only when `slacks` (one-byte labels on the float path).
    Bounds(index_t n, int k, bool slacks) : k_(k), drift_(k, 0.0) {
        if (slacks) slack_.resize(n);
    }

    // Chooses the pass of the assignment with `anchors` (use_float: the float ranking serves it)
    // and, for a bounded one, the drifts and thresholds.
    //
    // Bounds (Hamerly's, compacted): 1 - IoU of corner-aligned boxes is the Jaccard distance of the
    // rectangles [0, w] x [0, h], a metric, so when anchor j moves by d_j = 1 - IoU(old_j, new_j),
    // a box's distance to its anchor grows by at most d_j and its distance to any other anchor
    // shrinks by at most max_j d_j. With D_j and Dmax the sums of d_j and max_j d_j since the last
    // full pass, a box ranked at time t0 with label a and a gap g(t0) between its distance to any
    // other anchor and to a keeps label a at time t while
    //     g(t0) + D_a(t0) + Dmax(t0) > D_a(t) + Dmax(t) + kGap,
    // so one number per box is stored: the left side, rounded down to 16 bits (slack_units, from
    // detail::label_top2's gap), tested against the right side rounded up (threshold()). A box that
    // passes keeps its exact label.
    void choose(const WhSet& anchors, bool use_float) {
        const int k = k_;
        std::vector<double> step(k, 0.0);
        double step_max = 0.0;
        if (!first_) {
            for (int j = 0; j < k; ++j) {
                step[j] = (1.0 - iou_wh(prev_.w[j], prev_.h[j], prev_.a[j], anchors.w[j], anchors.h[j], anchors.a[j])) +
                          kDriftSlack;
                step_max = std::max(step_max, step[j]);
            }
        }
        bounded_ = use_float && valid_ && !first_ && step_max <= kRelabelDrift && drift_max_ + step_max <= kMaxDrift &&
                   ++since_reset_ <= kResetEvery;
        // While anchors move far, the next pass will rank every box again anyway: this one keeps
        // no bounds (the kernel without gaps, about 1.3x as fast); the first pass after the moves
        // settle renews them.
        keep_ = use_float && (bounded_ || step_max <= kRelabelDrift);
        first_ = false;
        prev_ = anchors;
        if (bounded_) {
            drift_max_ += step_max;
            for (int j = 0; j < k; ++j) drift_[j] += step[j];
        } else {
            std::fill(drift_.begin(), drift_.end(), 0.0);
            drift_max_ = 0.0;
            since_reset_ = 0;
        }
        valid_ = keep_;
        if (!use_float) return;  // bounds exist on the float path only (k <= kMaxFixedK)
        constexpr double kUnit = double(1 << kSlackBits);
        for (int j = 0; j < k; ++j) {
            const double base = drift_[j] + drift_max_;
            base_[j] = std::nextafter(static_cast<float>(base), 0.0f);  // never above
            const double need = std::ceil((base + kGap) * kUnit);
            threshold_[j] = static_cast<std::uint16_t>(std::min(need, 65535.0));
        }
    }

    // This pass ranks only the boxes whose slack fails.
    bool bounded() const { return bounded_; }
    // This pass stores every ranked box's slack.
    bool keep() const { return keep_; }
    // Per box: the stored slack. Per label: the base added to a new slack, the threshold a slack
    // must exceed.
    std::uint16_t* slack() { return slack_.data(); }
    const float* base() const { return base_.data(); }
    const std::uint16_t* threshold() const { return threshold_.data(); }

    // The slacks of m ranked boxes (float gaps, labels, flags) into out (slack_units).
    void slacks(const float* gap, const std::int32_t* lab, const std::uint8_t* flag, index_t m,
                std::uint16_t* out) const {
        detail::slack_units(gap, lab, flag, base_.data(), m, kSlackEps, static_cast<float>(1 << kSlackBits), out);
    }

private:
    int k_;
    std::vector<std::uint16_t> slack_;
    std::vector<double> drift_;
    double drift_max_ = 0.0;
    std::array<float, kMaxFixedK> base_{};
    std::array<std::uint16_t, kByteLabelSlots> threshold_{};  // by one-byte label
    WhSet prev_;
    bool first_ = true, valid_ = false, bounded_ = false, keep_ = false;
    int since_reset_ = 0;
};

}  // namespace fastanchor
